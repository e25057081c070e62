import COpenSSL
import CStapleGateShim

/// The `SSL_CTX` for connections StapleGate opens itself (HTTPS OCSP responders). It trusts
/// either a configured CA bundle (private CAs run their own responders) or, when none is
/// configured, the system's trust store; every connection also checks the server's name.
/// Built once, then only read, which OpenSSL allows from any thread.
public final class ClientTLSContext: @unchecked Sendable {
    let context: OpaquePointer
    /// "CA bundle /etc/staplegate/ocsp-ca.pem" or "the system trust store": for error messages.
    public let trustDescription: String

    /// Trusts exactly `trustedCAs`.
    public init(trustedCAs: [X509Certificate], bundlePath: String) {
        context = Self.makeContext()
        trustDescription = "CA bundle \(bundlePath)"
        let store = SSL_CTX_get_cert_store(context)
        for ca in trustedCAs { X509_STORE_add_cert(store, ca.pointer) }
        ERR_clear_error()  // a CA listed twice is harmless
    }

    /// Trusts the system's default CA locations (OpenSSL's `SSL_CTX_set_default_verify_paths`).
    public init() {
        context = Self.makeContext()
        trustDescription = "the system trust store"
        _ = SSL_CTX_set_default_verify_paths(context)
        ERR_clear_error()
    }

    /// Loads and checks a CA bundle (each certificate must be a CA).
    public convenience init(caBundleAt path: String) throws(PEMFileError) {
        self.init(trustedCAs: try PEMFile.caBundle(at: path), bundlePath: path)
    }

    /// Presents `chain` (leaf first) and `key` when the server asks for a client certificate:
    /// a responder behind mutual TLS, or a device in tests. Throws when OpenSSL refuses the pair.
    public func useClientCertificate(chain: [X509Certificate], key: PrivateKey) throws(OpenSSLError) {
        let intermediates = sg_sk_X509_new_null()
        for certificate in chain.dropFirst() { _ = sg_sk_X509_push(intermediates, certificate.pointer) }
        defer { sg_sk_X509_free(intermediates) }
        ERR_clear_error()
        guard let leaf = chain.first, SSL_CTX_use_cert_and_key(context, leaf.pointer, key.pointer, intermediates, 1) == 1 else {
            throw OpenSSLError.drain(operation: "SSL_CTX_use_cert_and_key")
        }
    }

    /// Shared by every responder without a bundle of its own.
    public static let systemTrust = ClientTLSContext()

    deinit { SSL_CTX_free(context) }

    private static func makeContext() -> OpaquePointer {
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            fatalError("SSL_CTX_new failed: \(OpenSSLError.drain(operation: "SSL_CTX_new"))")
        }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        _ = sg_SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION)
        SSL_CTX_set_options(context, SG_SSL_OP_NO_RENEGOTIATION | SG_SSL_OP_NO_COMPRESSION)
        return context
    }

    /// A fresh `SSL` that will accept only a server certificate valid for `serverName` (a DNS
    /// name, or an IP address literal without brackets), and sends it as SNI when it is a name.
    func makeSSL(serverName: String) -> OpaquePointer? {
        guard let ssl = SSL_new(context) else { return nil }
        let isIPAddress = serverName.contains(":") || serverName.allSatisfy { $0.isNumber || $0 == "." }
        let checked: Int32
        if isIPAddress {
            // An IP literal is matched against the certificate's IP SANs; SNI must not carry it.
            checked = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName)
        } else {
            _ = sg_SSL_set_tlsext_host_name(ssl, serverName)
            checked = SSL_set1_host(ssl, serverName)
        }
        guard checked == 1 else {
            SSL_free(ssl)
            return nil
        }
        return ssl
    }
}
