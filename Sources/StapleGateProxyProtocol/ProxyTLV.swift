/// The TLV type codes registered in proxy-protocol.txt §2.2, under their spec names.
public enum PP2Type {
    public static let alpn: UInt8 = 0x01  // PP2_TYPE_ALPN
    public static let authority: UInt8 = 0x02  // PP2_TYPE_AUTHORITY
    public static let crc32c: UInt8 = 0x03  // PP2_TYPE_CRC32C
    public static let noop: UInt8 = 0x04  // PP2_TYPE_NOOP
    public static let uniqueID: UInt8 = 0x05  // PP2_TYPE_UNIQUE_ID
    public static let ssl: UInt8 = 0x20  // PP2_TYPE_SSL
    public static let netns: UInt8 = 0x30  // PP2_TYPE_NETNS

    /// "0x20 (SSL)", "0xE1": how a TLV is named in errors.
    static func name(_ type: UInt8) -> String {
        let label: String? =
            switch type {
            case alpn: "ALPN"
            case authority: "AUTHORITY"
            case crc32c: "CRC32C"
            case noop: "NOOP"
            case uniqueID: "UNIQUE_ID"
            case ssl: "SSL"
            case netns: "NETNS"
            default: nil
            }
        return "0x" + Printable.hex(type) + (label.map { " (\($0))" } ?? "")
    }
}

/// The second-level types inside a PP2_TYPE_SSL TLV (§2.2.6).
public enum PP2SSLSubtype {
    public static let version: UInt8 = 0x21  // PP2_SUBTYPE_SSL_VERSION
    public static let commonName: UInt8 = 0x22  // PP2_SUBTYPE_SSL_CN
    public static let cipher: UInt8 = 0x23  // PP2_SUBTYPE_SSL_CIPHER
    public static let signatureAlgorithm: UInt8 = 0x24  // PP2_SUBTYPE_SSL_SIG_ALG
    public static let keyAlgorithm: UInt8 = 0x25  // PP2_SUBTYPE_SSL_KEY_ALG

    static func name(_ type: UInt8) -> String {
        let label: String? =
            switch type {
            case version: "VERSION"
            case commonName: "CN"
            case cipher: "CIPHER"
            case signatureAlgorithm: "SIG_ALG"
            case keyAlgorithm: "KEY_ALG"
            default: nil
            }
        return "0x" + Printable.hex(type) + (label.map { " (\($0))" } ?? "")
    }
}

/// One v2 TLV: the registered types decoded, any other kept as its raw type and value.
public enum ProxyTLV: Sendable, Hashable {
    /// The ALPN protocol name as bytes (§2.2.1).
    case alpn([UInt8])
    /// The host name the client asked for, UTF-8 (§2.2.2).
    case authority(String)
    /// The header's CRC32c (§2.2.3). The encoder writes the computed checksum in its place,
    /// whatever value this holds.
    case crc32c(UInt32)
    /// Padding of `length` bytes, to be ignored (§2.2.4); written as zeroes.
    case noop(length: Int)
    /// The balancer's opaque connection identifier, at most 128 bytes (§2.2.5).
    case uniqueID([UInt8])
    /// The client's TLS connection to the balancer (§2.2.6).
    case ssl(ProxySSLInfo)
    /// The network namespace name, US-ASCII (§2.2.7).
    case networkNamespace(String)
    /// A type this library does not decode: custom (0xE0-0xEF, such as AWS's 0xEA and Azure's
    /// 0xEE), experimental, future or unassigned.
    case unknown(type: UInt8, value: [UInt8])

    public var type: UInt8 {
        switch self {
        case .alpn: PP2Type.alpn
        case .authority: PP2Type.authority
        case .crc32c: PP2Type.crc32c
        case .noop: PP2Type.noop
        case .uniqueID: PP2Type.uniqueID
        case .ssl: PP2Type.ssl
        case .networkNamespace: PP2Type.netns
        case .unknown(let type, _): type
        }
    }

    /// §2.2.5: "an opaque byte sequence of up to 128 bytes".
    public static let maximumUniqueIDLength = 128
}

/// The PP2_TYPE_SSL value: `struct pp2_tlv_ssl { uint8_t client; uint32_t verify; struct
/// pp2_tlv sub_tlv[0]; }` (§2.2.6).
public struct ProxySSLInfo: Sendable, Hashable {
    /// The <client> bit field.
    public struct ClientFlags: OptionSet, Sendable, Hashable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// PP2_CLIENT_SSL: the client connected over TLS.
        public static let ssl = ClientFlags(rawValue: 0x01)
        /// PP2_CLIENT_CERT_CONN: the client sent a certificate on this connection.
        public static let certificateOnConnection = ClientFlags(rawValue: 0x02)
        /// PP2_CLIENT_CERT_SESS: the client sent a certificate at least once in this TLS session.
        public static let certificateInSession = ClientFlags(rawValue: 0x04)
    }

    /// A second-level TLV.
    public enum SubTLV: Sendable, Hashable {
        /// US-ASCII TLS version, such as "TLSv1.3".
        case version(String)
        /// The client certificate's subject Common Name, UTF-8.
        case commonName(String)
        /// US-ASCII cipher name, such as "TLS_AES_256_GCM_SHA384".
        case cipher(String)
        /// US-ASCII algorithm that signed the balancer's certificate, such as "RSA-SHA256".
        case signatureAlgorithm(String)
        /// US-ASCII algorithm of the balancer's certificate key, such as "RSA2048".
        case keyAlgorithm(String)
        case unknown(type: UInt8, value: [UInt8])

        public var type: UInt8 {
            switch self {
            case .version: PP2SSLSubtype.version
            case .commonName: PP2SSLSubtype.commonName
            case .cipher: PP2SSLSubtype.cipher
            case .signatureAlgorithm: PP2SSLSubtype.signatureAlgorithm
            case .keyAlgorithm: PP2SSLSubtype.keyAlgorithm
            case .unknown(let type, _): type
            }
        }
    }

    public var client: ClientFlags
    /// Zero if the client presented a certificate and it verified; non-zero otherwise (the
    /// X509_V_ERR code, from HAProxy). HAProxy also sends zero when no certificate was presented,
    /// so read it only with `.certificateInSession`: see `clientCertificateVerified`.
    public var verify: UInt32
    /// Sub-TLVs in the order they were sent.
    public var subTLVs: [SubTLV]

    public init(client: ClientFlags, verify: UInt32, subTLVs: [SubTLV]) {
        self.client = client
        self.verify = verify
        self.subTLVs = subTLVs
    }

    /// The sub-TLVs that are present, in the order HAProxy sends them (`send-proxy-v2-ssl-cn`
    /// with `proxy-v2-options ssl-cipher,cert-sig,cert-key`): version, CN, key, signature, cipher.
    public init(
        client: ClientFlags, verify: UInt32, version: String? = nil, commonName: String? = nil,
        keyAlgorithm: String? = nil, signatureAlgorithm: String? = nil, cipher: String? = nil
    ) {
        var subTLVs: [SubTLV] = []
        if let version { subTLVs.append(.version(version)) }
        if let commonName { subTLVs.append(.commonName(commonName)) }
        if let keyAlgorithm { subTLVs.append(.keyAlgorithm(keyAlgorithm)) }
        if let signatureAlgorithm { subTLVs.append(.signatureAlgorithm(signatureAlgorithm)) }
        if let cipher { subTLVs.append(.cipher(cipher)) }
        self.init(client: client, verify: verify, subTLVs: subTLVs)
    }

    /// The client sent a certificate in this session and the balancer verified it.
    public var clientCertificateVerified: Bool { client.contains(.certificateInSession) && verify == 0 }

    public var version: String? {
        for case .version(let value) in subTLVs { return value }
        return nil
    }

    public var commonName: String? {
        for case .commonName(let value) in subTLVs { return value }
        return nil
    }

    public var cipher: String? {
        for case .cipher(let value) in subTLVs { return value }
        return nil
    }

    public var signatureAlgorithm: String? {
        for case .signatureAlgorithm(let value) in subTLVs { return value }
        return nil
    }

    public var keyAlgorithm: String? {
        for case .keyAlgorithm(let value) in subTLVs { return value }
        return nil
    }
}

/// The text rules of the string TLVs, shared by the parser and the encoder so that what one
/// writes the other reads.
enum TLVText {
    /// What is wrong with `bytes` as a UTF-8 (or, with `ascii`, US-ASCII) TLV string; nil if
    /// nothing. A NUL is refused in both: C consumers downstream (logs, HAProxy's own fetches)
    /// would end the string there and see "public" where "public\0x" was sent.
    static func problem(in bytes: some Collection<UInt8>, ascii: Bool) -> String? {
        if bytes.contains(0) { return "contains a NUL byte" }
        if ascii {
            return bytes.allSatisfy { (0x20...0x7E).contains($0) } ? nil : "is not printable US-ASCII"
        }
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return nil
            case .error: return "is not valid UTF-8"
            }
        }
    }
}
