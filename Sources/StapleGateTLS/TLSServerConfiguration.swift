/// What the TLS engine needs to terminate device connections. Paths are absolute by the time
/// they reach here (the config loader resolves them against the config file's folder).
public struct TLSServerConfiguration: Sendable, Equatable {
    /// A server certificate chain (leaf first, then intermediates) and its private key.
    /// One ECDSA and one RSA pair may be configured together; OpenSSL picks per handshake.
    public struct CertificateKeyPair: Sendable, Equatable {
        public var chainPath: String
        public var keyPath: String
        public init(chainPath: String, keyPath: String) {
            self.chainPath = chainPath
            self.keyPath = keyPath
        }
    }

    public enum ProtocolVersion: String, Sendable, Equatable, CaseIterable {
        case tls12 = "1.2"
        case tls13 = "1.3"
    }

    public var certificates: [CertificateKeyPair]
    /// The CAs whose devices may connect (PEM bundle); every device must present a certificate.
    public var deviceCABundlePath: String
    /// Maximum number of intermediate CAs between a device certificate and a trusted CA.
    public var verifyDepth: Int
    public var minimumVersion: ProtocolVersion
    /// TLS 1.3 ciphersuites (OpenSSL `SSL_CTX_set_ciphersuites` syntax); nil keeps OpenSSL's default.
    public var tls13Ciphersuites: String?
    /// TLS 1.2 cipher list (OpenSSL `SSL_CTX_set_cipher_list` syntax); nil keeps a modern AEAD-only list.
    public var tls12Ciphers: String?
    /// Key exchange groups, e.g. "X25519:P-256"; nil keeps OpenSSL's default.
    public var groups: String?
    /// A device that has not completed its handshake by then is disconnected.
    public var handshakeTimeout: Duration
    /// `tls.session_cache_size`: the most TLS sessions kept for resumption when no ticket keys
    /// are shared (`ServerSessionCache`).
    public var sessionCacheSize = ServerSessionCache.defaultCapacity
    /// `tls.session_ticket_keys`: where session ticket keys come from.
    public enum SessionTicketKeys: Sendable, Equatable {
        /// Not set: sessions kept in this process (`ServerSessionCache`; tickets only name them,
        /// and resume across reloads, not restarts).
        case process
        /// A key file (`SessionTicketKeyFile`) shared by every gateway given it.
        case file(String)
        /// `fleet`: rotated by the fleet through its database (`FleetTicketKeys`).
        case fleet
    }

    public var sessionTicketKeys: SessionTicketKeys = .process

    /// `tls.open_key_files`: what to do with a private key file open to more than its owner and
    /// group readers: refuse it (default, as ssh refuses such keys), or use it with a warning.
    public enum OpenKeyFiles: String, Sendable, Equatable, CaseIterable {
        case refuse
        case warn
    }

    public var openKeyFiles: OpenKeyFiles = .refuse

    /// The key file, when the keys come from one.
    public var sessionTicketKeysPath: String? {
        if case let .file(path) = sessionTicketKeys { return path }
        return nil
    }

    /// Forward-secret AEAD suites only: what TLS 1.2 devices in the field actually offer.
    public static let defaultTLS12Ciphers =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

    public init(
        certificates: [CertificateKeyPair],
        deviceCABundlePath: String,
        verifyDepth: Int = 4,
        minimumVersion: ProtocolVersion = .tls12,
        tls13Ciphersuites: String? = nil,
        tls12Ciphers: String? = nil,
        groups: String? = nil,
        handshakeTimeout: Duration = .seconds(10)
    ) {
        self.certificates = certificates
        self.deviceCABundlePath = deviceCABundlePath
        self.verifyDepth = verifyDepth
        self.minimumVersion = minimumVersion
        self.tls13Ciphersuites = tls13Ciphersuites
        self.tls12Ciphers = tls12Ciphers
        self.groups = groups
        self.handshakeTimeout = handshakeTimeout
    }
}
