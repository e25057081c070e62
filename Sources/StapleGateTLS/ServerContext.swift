import COpenSSL
import CStapleGateShim

/// A TLS setting OpenSSL refused.
public struct TLSSettingError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Setting: Sendable, Equatable {
        case tls13Ciphersuites, tls12Ciphers, groups, verifyDepth
        /// The certificate at this index in `TLSServerConfiguration.certificates`.
        case certificate(index: Int)
    }
    public let setting: Setting
    public let value: String
    public let reason: String
    public var description: String { "'\(value)': \(reason)" }
}

/// The one `SSL_CTX` every device connection is made from. Built once at start (and again on
/// reload), then only read, which OpenSSL allows from any thread.
public final class ServerContext: @unchecked Sendable {
    let context: OpaquePointer
    public let configuration: TLSServerConfiguration
    public let material: TLSMaterial
    /// What each certificate's handshakes staple; empty until the stapling service fills it.
    public let staples: StapleStore
    /// Judges each device's verified chain inside the handshake (device OCSP), when set.
    public let deviceCertificateGate: (any DeviceCertificateGate)?
    /// How devices resume sessions. nil: tickets sealed with OpenSSL's random keys of this
    /// `SSL_CTX` alone (a check of the settings, tests); the gateway always gives one, so that
    /// sessions outlive the context (reloads) and, with a shared key file, the process.
    public let resumption: (any SessionResumption)?
    /// The device CA bundle's intermediates verified to their roots at load, so that handshakes
    /// verify device chains from the issuing CA up; or why every handshake verifies the full chain.
    /// Set once in init, after the store is filled.
    private(set) var intermediatePaths: Result<VerifiedIntermediatePaths, VerifiedIntermediatePaths.Ineligibility> = .failure(.noIntermediates)
    /// The ticket keys, when sessions resume from sealed tickets.
    public var ticketKeys: SessionTicketKeyRing? { resumption as? SessionTicketKeyRing }

    public init(configuration: TLSServerConfiguration, material: TLSMaterial, resumption: (any SessionResumption)? = nil,
                deviceCertificateGate: (any DeviceCertificateGate)? = nil) throws(TLSSettingError) {
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            fatalError("SSL_CTX_new failed: \(OpenSSLError.drain(operation: "SSL_CTX_new"))")
        }
        self.context = context
        self.configuration = configuration
        self.material = material
        self.staples = StapleStore(certificateCount: material.identities.count)
        self.deviceCertificateGate = deviceCertificateGate
        self.resumption = resumption
        try configure()
        intermediatePaths = VerifiedIntermediatePaths.build(for: context, deviceCAs: material.deviceCAs,
                                                            verifyDepth: configuration.verifyDepth)
        installStatusCallback()
        resumption?.install(on: context)
        installCertificateVerification()
    }

    /// How device chains are verified, for the start log.
    public var deviceChainSummary: String {
        switch intermediatePaths {
        case let .success(paths):
            "from the issuing CA up; \(paths.paths.count) bundle intermediate(s) verified to their roots at load"
        case let .failure(reason):
            "in full on every handshake (\(reason))"
        }
    }

    /// The same configuration and material, with `gate` judging device certificates.
    public func with(deviceCertificateGate gate: any DeviceCertificateGate) throws(TLSSettingError) -> ServerContext {
        try ServerContext(configuration: configuration, material: material, resumption: resumption, deviceCertificateGate: gate)
    }

    /// The same configuration and material, with `resumption` for resumed sessions and `gate`
    /// (if any) judging device certificates: what the gateway serves with.
    public func with(resumption: any SessionResumption,
                     deviceCertificateGate gate: (any DeviceCertificateGate)?) throws(TLSSettingError) -> ServerContext {
        try ServerContext(configuration: configuration, material: material, resumption: resumption, deviceCertificateGate: gate)
    }

    deinit { SSL_CTX_free(context) }

    /// A fresh `SSL` for one accepted device connection.
    func makeSSL() -> OpaquePointer? {
        SSL_new(context)
    }

    private func configure() throws(TLSSettingError) {
        // Renegotiation is a CPU lever for attackers and no MQTT client needs it.
        SSL_CTX_set_options(context, SG_SSL_OP_NO_RENEGOTIATION | SG_SSL_OP_CIPHER_SERVER_PREFERENCE | SG_SSL_OP_NO_COMPRESSION)
        // Idle MQTT sessions are the common case: give their read/write buffers back to the heap.
        _ = sg_SSL_CTX_set_mode(context, Int(SSL_MODE_RELEASE_BUFFERS))
        _ = sg_SSL_CTX_set_min_proto_version(
            context, configuration.minimumVersion == .tls13 ? TLS1_3_VERSION : TLS1_2_VERSION)
        // One ticket is enough for a device that reconnects; each one costs an encryption.
        SSL_CTX_set_num_tickets(context, 1)
        // Resumption with client certificates needs a session id context, or OpenSSL refuses it.
        let sessionContext = Array("staplegate".utf8)
        _ = SSL_CTX_set_session_id_context(context, sessionContext, UInt32(sessionContext.count))

        try applyCipherSettings()
        applyDeviceVerification()
        try applyServerIdentities()
    }

    private func applyCipherSettings() throws(TLSSettingError) {
        ERR_clear_error()
        if let suites = configuration.tls13Ciphersuites {
            guard SSL_CTX_set_ciphersuites(context, suites) == 1 else {
                throw TLSSettingError(setting: .tls13Ciphersuites, value: suites,
                                      reason: "OpenSSL accepts none of these TLS 1.3 ciphersuites (\(OpenSSLError.drain(operation: "SSL_CTX_set_ciphersuites")))")
            }
        }
        let ciphers = configuration.tls12Ciphers ?? TLSServerConfiguration.defaultTLS12Ciphers
        guard SSL_CTX_set_cipher_list(context, ciphers) == 1 else {
            throw TLSSettingError(setting: .tls12Ciphers, value: ciphers,
                                  reason: "OpenSSL accepts none of these TLS 1.2 ciphers (\(OpenSSLError.drain(operation: "SSL_CTX_set_cipher_list")))")
        }
        if let groups = configuration.groups {
            guard sg_SSL_CTX_set1_groups_list(context, groups) == 1 else {
                throw TLSSettingError(setting: .groups, value: groups,
                                      reason: "not a list of key exchange groups OpenSSL knows, such as X25519:P-256 (\(OpenSSLError.drain(operation: "SSL_CTX_set1_groups_list")))")
            }
        }
        guard (0...100).contains(configuration.verifyDepth) else {
            throw TLSSettingError(setting: .verifyDepth, value: String(configuration.verifyDepth),
                                  reason: "must be between 0 and 100")
        }
    }

    private func applyDeviceVerification() {
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE, nil)
        SSL_CTX_set_verify_depth(context, Int32(configuration.verifyDepth))
        let store = SSL_CTX_get_cert_store(context)
        for ca in material.deviceCAs {
            X509_STORE_add_cert(store, ca.pointer)
            // Devices holding several certificates pick the one these CAs issued.
            SSL_CTX_add_client_CA(context, ca.pointer)
        }
        ERR_clear_error()  // a CA listed twice in the bundle is harmless
    }

    private func installCertificateVerification() {
        // Unretained: every SSL made from this context holds the context (SSLConnection.context).
        let paths = try? intermediatePaths.get()
        if paths != nil || deviceCertificateGate != nil {
            SSL_CTX_set_cert_verify_callback(context, HandshakeVerdictSlot.certificateVerifyCallback,
                                             paths.map { Unmanaged.passUnretained($0).toOpaque() })
        }
        guard deviceCertificateGate != nil else { return }
        if let resumption {
            resumption.gate(on: context)
        } else {
            HandshakeVerdictSlot.gateSealedTickets(on: context)
        }
    }

    private func applyServerIdentities() throws(TLSSettingError) {
        for (index, identity) in material.identities.enumerated() {
            let chain = sg_sk_X509_new_null()
            for intermediate in identity.chain.dropFirst() { _ = sg_sk_X509_push(chain, intermediate.pointer) }
            // OpenSSL takes its own references to the leaf, the key and each chain certificate.
            let accepted = SSL_CTX_use_cert_and_key(context, identity.leaf.pointer, identity.key.pointer, chain, 1)
            sg_sk_X509_free(chain)
            guard accepted == 1 else {
                // e.g. an RSA key below OpenSSL's security level ("ee key too small")
                throw TLSSettingError(setting: .certificate(index: index), value: configuration.certificates[index].chainPath,
                                      reason: "OpenSSL refuses this certificate and key (\(OpenSSLError.drain(operation: "SSL_CTX_use_cert_and_key")))")
            }
        }
    }
}

extension ServerContext {
    /// Loads the material (and the session ticket keys, when the configuration names a file) and
    /// builds the context in one step (for callers without a config file).
    public convenience init(configuration: TLSServerConfiguration) throws {
        let material = try TLSMaterial.load(configuration)
        let ticketKeys = try configuration.sessionTicketKeysPath.map { path throws(SessionTicketKeyFileError) in
            try SessionTicketKeyFile.load(at: path)
        }
        try self.init(configuration: configuration, material: material, resumption: ticketKeys)
    }
}
