import COpenSSL
import CStapleGateShim
import Foundation
import StapleGateTLS

/// The `SSL_CTX` libmosquitto clients of one identity share (`MOSQ_OPT_SSL_CTX`). libmosquitto's
/// own `mosquitto_tls_set` builds a context per client — reading and parsing the CA file,
/// certificate and key thousands of times, and keeping one trust store each — and cannot set
/// TLS 1.3 suites or key exchange groups; a shared context does both. It is set up as
/// libmosquitto sets up its own (peer verification, no compression, released buffers) plus
/// the server name check libmosquitto would otherwise do in its verify callback. Only read once
/// built (`SSL_new` takes a reference), which OpenSSL allows from any thread.
final class LoadTLSContext: @unchecked Sendable {
    let context: OpaquePointer

    /// The trust store every context shares: the --cafile bundle, loaded once.
    final class TrustStore: @unchecked Sendable {
        let store: OpaquePointer

        init(caFile: String) throws(LoadOptionsError) {
            guard FileManager.default.isReadableFile(atPath: caFile) else {
                throw LoadOptionsError("--cafile", "\(caFile) cannot be read")
            }
            store = X509_STORE_new()
            ERR_clear_error()
            guard X509_STORE_load_file(store, caFile) == 1 else {
                // deinit frees the store: every property is set.
                let error = OpenSSLError.drain(operation: "X509_STORE_load_file")
                throw LoadOptionsError("--cafile", "\(caFile) holds no usable CA certificate (\(error))")
            }
        }

        deinit { X509_STORE_free(store) }
    }

    /// - Parameters:
    ///   - identity: the certificate chain and key files, with the option that named them.
    init(options: LoadOptions, trust: TrustStore, identity: (certificate: String, key: String, option: String)?) throws(LoadOptionsError) {
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw LoadOptionsError("--cafile", "OpenSSL cannot make a TLS context (\(OpenSSLError.drain(operation: "SSL_CTX_new")))")
        }
        self.context = context
        ERR_clear_error()
        SSL_CTX_set1_cert_store(context, trust.store)
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        SSL_CTX_set_options(context, SG_SSL_OP_NO_COMPRESSION)
        _ = sg_SSL_CTX_set_mode(context, Int(SSL_MODE_RELEASE_BUFFERS))

        let name = options.serverName ?? options.host
        let nameOption = options.serverName == nil ? "--host" : "--server-name"
        let isIPAddress = name.contains(":") || name.allSatisfy { $0.isNumber || $0 == "." }
        let parameters = SSL_CTX_get0_param(context)
        let checked = isIPAddress ? X509_VERIFY_PARAM_set1_ip_asc(parameters, name) : X509_VERIFY_PARAM_set1_host(parameters, name, 0)
        guard checked == 1 else { throw LoadOptionsError(nameOption, "\(name) is neither a host name nor an IP address") }

        let version = options.tlsVersion == .v1_3 ? TLS1_3_VERSION : TLS1_2_VERSION
        _ = sg_SSL_CTX_set_min_proto_version(context, version)
        _ = sg_SSL_CTX_set_max_proto_version(context, version)
        if let suites = options.ciphersuites, SSL_CTX_set_ciphersuites(context, suites) != 1 {
            throw LoadOptionsError("--ciphersuites", "\"\(suites)\" names no TLS 1.3 suite OpenSSL knows, e.g. TLS_AES_128_GCM_SHA256 (\(OpenSSLError.drain(operation: "SSL_CTX_set_ciphersuites")))")
        }
        if let ciphers = options.ciphers, SSL_CTX_set_cipher_list(context, ciphers) != 1 {
            throw LoadOptionsError("--ciphers", "\"\(ciphers)\" names no TLS 1.2 cipher OpenSSL knows, e.g. ECDHE-ECDSA-AES128-GCM-SHA256 (\(OpenSSLError.drain(operation: "SSL_CTX_set_cipher_list")))")
        }
        if let groups = options.groups, sg_SSL_CTX_set1_groups_list(context, groups) != 1 {
            throw LoadOptionsError("--groups", "\"\(groups)\" is not a list of key exchange groups OpenSSL knows, such as X25519:P-256 (\(OpenSSLError.drain(operation: "SSL_CTX_set1_groups_list")))")
        }
        if let identity {
            guard SSL_CTX_use_certificate_chain_file(context, identity.certificate) == 1 else {
                throw LoadOptionsError(identity.option, "\(identity.certificate): not a usable certificate chain (\(OpenSSLError.drain(operation: "SSL_CTX_use_certificate_chain_file")))")
            }
            guard SSL_CTX_use_PrivateKey_file(context, identity.key, SSL_FILETYPE_PEM) == 1 else {
                let keyOption = identity.option == "--cert" ? "--key" : identity.option
                throw LoadOptionsError(keyOption, "\(identity.key): not a usable private key (\(OpenSSLError.drain(operation: "SSL_CTX_use_PrivateKey_file")))")
            }
            guard SSL_CTX_check_private_key(context) == 1 else {
                let keyOption = identity.option == "--cert" ? "--key" : identity.option
                throw LoadOptionsError(keyOption, "\(identity.key) is not the key of \(identity.certificate)")
            }
        }
    }

    deinit { SSL_CTX_free(context) }

    /// One context per identity the options name (one without a client certificate when they
    /// name none); sessions take them round robin. Empty without TLS.
    static func contexts(for options: LoadOptions) throws(LoadOptionsError) -> [LoadTLSContext] {
        guard options.useTLS, let caFile = options.caFile else { return [] }
        let trust = try TrustStore(caFile: caFile)
        switch options.identity {
        case .none:
            return [try LoadTLSContext(options: options, trust: trust, identity: nil)]
        case let .single(certificate, key):
            return [try LoadTLSContext(options: options, trust: trust, identity: (certificate, key, "--cert"))]
        case let .directory(path, prefix):
            let identities = try deviceFiles(in: path, prefix: prefix)
            var contexts: [LoadTLSContext] = []
            contexts.reserveCapacity(min(identities.count, options.sessionCount))
            // A session count below the device count uses only the first devices.
            for identity in identities.prefix(options.sessionCount) {
                contexts.append(try LoadTLSContext(options: options, trust: trust, identity: (identity.certificate, identity.key, "--devices-dir")))
            }
            return contexts
        }
    }

    /// `<prefix>-1.pem`, `<prefix>-2.pem`, … up to the first number missing, each with its key.
    static func deviceFiles(in folder: String, prefix: String) throws(LoadOptionsError) -> [(certificate: String, key: String)] {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
            throw LoadOptionsError("--devices-dir", "\(folder) is not a folder")
        }
        let shared = "\(folder)/\(prefix)-shared.key"
        var found: [(certificate: String, key: String)] = []
        while true {
            let number = found.count + 1
            let certificate = "\(folder)/\(prefix)-\(number).pem"
            guard FileManager.default.fileExists(atPath: certificate) else { break }
            let own = "\(folder)/\(prefix)-\(number).key"
            if FileManager.default.fileExists(atPath: own) {
                found.append((certificate, own))
            } else if FileManager.default.fileExists(atPath: shared) {
                found.append((certificate, shared))
            } else {
                throw LoadOptionsError("--devices-dir", "\(certificate) has no key: neither \(own) nor \(shared) exists")
            }
        }
        guard !found.isEmpty else {
            throw LoadOptionsError("--devices-dir", "\(folder) holds no \(prefix)-1.pem (device certificates are named \(prefix)-N.pem with \(prefix)-N.key; see --device-prefix)")
        }
        return found
    }
}
