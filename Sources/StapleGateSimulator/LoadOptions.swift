/// Everything `staplegate load` is told: where to connect, as whom, and what load to make.
/// `validated()` checks the combination and names the option at fault.
public struct LoadOptions: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Open many idle sessions, hold them, close them.
        case sessions
        /// Publishers send as fast as they can (or at a total rate); subscribers count.
        case throughput
        /// Publishers send at a fixed total rate; subscribers measure publish → deliver time.
        case latency
    }

    /// The client certificate(s) the sessions present.
    public enum Identity: Sendable, Equatable {
        /// No client certificate (plain MQTT, or a front that does not ask for one).
        case none
        /// One certificate chain and key for every session.
        case single(certificate: String, key: String)
        /// `<prefix>-1.pem`, `<prefix>-2.pem`, … in a folder, used round robin; each with
        /// `<prefix>-N.key`, or `<prefix>-shared.key` when there is no key of its own.
        case directory(path: String, prefix: String)
    }

    public enum TLSVersion: String, Sendable, CaseIterable {
        case v1_2 = "1.2"
        case v1_3 = "1.3"
    }

    public var mode: Mode
    public var host = "127.0.0.1"
    public var port = 8883
    /// The name the server certificate must carry (default: `host`).
    public var serverName: String?
    public var useTLS = true
    public var caFile: String?
    public var identity: Identity = .none
    /// The only protocol version offered.
    public var tlsVersion: TLSVersion = .v1_3
    /// TLS 1.3 cipher suites (OpenSSL's `SSL_CTX_set_ciphersuites` syntax).
    public var ciphersuites: String?
    /// TLS 1.2 cipher list (`SSL_CTX_set_cipher_list` syntax).
    public var ciphers: String?
    /// Key exchange groups, e.g. "X25519:P-256" (`SSL_CTX_set1_groups_list`).
    public var groups: String?
    public var clientIDPrefix: String
    /// MQTT keepalive, seconds (0: none).
    public var keepalive = 60
    /// Worker threads, each with its own epoll set and share of the sessions.
    public var threads: Int
    /// Seconds a session may take from its TCP connect to its CONNACK.
    public var connectTimeout = 30.0

    // sessions
    public var sessions = 1000
    /// Sessions between connect and CONNACK at once, over all threads.
    public var concurrency = 64
    public var hold = 10.0

    // throughput and latency
    public var publishers = 4
    public var subscribers = 1
    public var topic: String
    public var payloadSize = 64
    /// Messages per second over all publishers; nil: as fast as possible.
    public var rate: Double?
    public var duration = 10.0
    /// Longest wait, after publishing stopped, for the last messages to arrive.
    public var drainTimeout = 5.0

    public init(mode: Mode, clientIDPrefix: String, topic: String, threads: Int) {
        self.mode = mode
        self.clientIDPrefix = clientIDPrefix
        self.topic = topic
        self.threads = threads
    }

    /// Options that only some modes use: naming one in another mode is a mistake worth reporting.
    public static let modeSpecificOptions: [String: Set<Mode>] = [
        "--sessions": [.sessions], "--concurrency": [.sessions], "--hold": [.sessions],
        "--publishers": [.throughput, .latency], "--subscribers": [.throughput, .latency],
        "--topic": [.throughput, .latency], "--payload-size": [.throughput, .latency],
        "--rate": [.throughput, .latency], "--duration": [.throughput, .latency],
        "--drain-timeout": [.throughput, .latency],
    ]

    /// The identity from the command line's --cert / --key / --devices-dir / --device-prefix.
    public static func identity(certificate: String?, key: String?, devicesDirectory: String?,
                                devicePrefix: String?) throws(LoadOptionsError) -> Identity {
        switch (certificate, key, devicesDirectory) {
        case (nil, nil, nil):
            if devicePrefix != nil { throw LoadOptionsError("--device-prefix", "needs --devices-dir") }
            return .none
        case let (certificate?, key?, nil):
            if devicePrefix != nil { throw LoadOptionsError("--device-prefix", "needs --devices-dir, not --cert") }
            return .single(certificate: certificate, key: key)
        case (_?, nil, nil): throw LoadOptionsError("--cert", "needs --key (the certificate's private key)")
        case (nil, _?, nil): throw LoadOptionsError("--key", "needs --cert (the certificate chain it belongs to)")
        case let (nil, nil, directory?): return .directory(path: directory, prefix: devicePrefix ?? "device")
        case (_, _, _?): throw LoadOptionsError("--devices-dir", "cannot be combined with --cert/--key: give one identity or a folder of them")
        }
    }

    /// Every session this run opens.
    public var sessionCount: Int { mode == .sessions ? sessions : publishers + subscribers }

    /// Descriptors each libmosquitto client holds: its socket and the socket pair it opens to
    /// wake its own threaded loop (made by `mosquitto_new` whether or not that loop is used).
    public static let descriptorsPerSession = 3
    /// Descriptors kept for everything else (files, epoll sets, standard streams).
    public static let descriptorReserve = 64

    /// Checks the options against each other. `given` is the options the user named (for
    /// mode-specific ones named in the wrong mode).
    public func validated(given: Set<String> = []) throws(LoadOptionsError) -> LoadOptions {
        for option in given.sorted() {
            if let modes = Self.modeSpecificOptions[option], !modes.contains(mode) {
                throw LoadOptionsError(option, "applies to \(modes.map(\.rawValue).sorted().joined(separator: " and ")) mode, not \(mode.rawValue)")
            }
        }
        guard !host.isEmpty else { throw LoadOptionsError("--host", "must not be empty") }
        guard (1...65_535).contains(port) else { throw LoadOptionsError("--port", "must be between 1 and 65535, not \(port)") }
        if useTLS {
            guard let caFile, !caFile.isEmpty else {
                throw LoadOptionsError("--cafile", "is required to verify the server (or use --no-tls for plain MQTT)")
            }
            if let serverName, serverName.isEmpty { throw LoadOptionsError("--server-name", "must not be empty") }
            if ciphersuites != nil, tlsVersion != .v1_3 {
                throw LoadOptionsError("--ciphersuites", "sets TLS 1.3 suites; with --tls-version \(tlsVersion.rawValue) use --ciphers")
            }
            if ciphers != nil, tlsVersion == .v1_3 {
                throw LoadOptionsError("--ciphers", "sets TLS 1.2 ciphers; with --tls-version 1.3 use --ciphersuites")
            }
            if case let .directory(path, prefix) = identity {
                guard !path.isEmpty else { throw LoadOptionsError("--devices-dir", "must not be empty") }
                guard !prefix.isEmpty, !prefix.contains("/") else {
                    throw LoadOptionsError("--device-prefix", "must be a file name prefix such as \"device\"")
                }
            }
        } else {
            let tlsOnly: [(String, Bool)] = [
                ("--cafile", caFile != nil), ("--server-name", serverName != nil), ("--ciphersuites", ciphersuites != nil),
                ("--ciphers", ciphers != nil), ("--groups", groups != nil),
                ("--cert", { if case .single = identity { return true } else { return false } }()),
                ("--devices-dir", { if case .directory = identity { return true } else { return false } }()),
            ]
            if let (option, _) = tlsOnly.first(where: { $0.1 }) {
                throw LoadOptionsError(option, "is a TLS setting; it cannot be combined with --no-tls")
            }
        }
        guard !clientIDPrefix.isEmpty else { throw LoadOptionsError("--client-id-prefix", "must not be empty") }
        guard keepalive == 0 || (5...65_535).contains(keepalive) else {
            throw LoadOptionsError("--keepalive", "must be 0 (none) or between 5 and 65535 seconds, not \(keepalive)")
        }
        guard (1...256).contains(threads) else { throw LoadOptionsError("--threads", "must be between 1 and 256, not \(threads)") }
        guard connectTimeout > 0 else { throw LoadOptionsError("--connect-timeout", "must be more than 0 seconds") }

        switch mode {
        case .sessions:
            guard sessions >= 1 else { throw LoadOptionsError("--sessions", "must be at least 1, not \(sessions)") }
            guard concurrency >= 1 else { throw LoadOptionsError("--concurrency", "must be at least 1, not \(concurrency)") }
            guard hold >= 0 else { throw LoadOptionsError("--hold", "must not be negative") }
        case .throughput, .latency:
            guard publishers >= 1 else { throw LoadOptionsError("--publishers", "must be at least 1, not \(publishers)") }
            let fewestSubscribers = mode == .latency ? 1 : 0
            guard subscribers >= fewestSubscribers else {
                throw LoadOptionsError("--subscribers", "must be at least \(fewestSubscribers) in \(mode.rawValue) mode, not \(subscribers)")
            }
            guard !topic.isEmpty, !topic.contains("+"), !topic.contains("#") else {
                throw LoadOptionsError("--topic", "must be a topic name without wildcards (+, #)")
            }
            guard payloadSize >= 0, payloadSize <= 16 * 1024 * 1024 else {
                throw LoadOptionsError("--payload-size", "must be between 0 and 16777216 bytes, not \(payloadSize)")
            }
            if mode == .latency, payloadSize < PayloadStamp.size {
                throw LoadOptionsError("--payload-size", "must be at least \(PayloadStamp.size) bytes in latency mode (the payload carries a sequence number and the send time)")
            }
            if let rate {
                guard rate > 0, rate.isFinite else { throw LoadOptionsError("--rate", "must be more than 0 messages per second") }
            } else if mode == .latency {
                throw LoadOptionsError("--rate", "is required in latency mode: a fixed total rate, below saturation")
            }
            guard duration > 0 else { throw LoadOptionsError("--duration", "must be more than 0 seconds") }
            guard drainTimeout >= 0 else { throw LoadOptionsError("--drain-timeout", "must not be negative") }
        }
        return self
    }

    /// Checks that the sessions fit in `descriptorLimit` open files.
    public func checkDescriptors(limit descriptorLimit: Int) throws(LoadOptionsError) {
        let needed = sessionCount * Self.descriptorsPerSession + Self.descriptorReserve
        guard needed <= descriptorLimit else {
            let option = mode == .sessions ? "--sessions" : "--publishers"
            let most = max(0, (descriptorLimit - Self.descriptorReserve) / Self.descriptorsPerSession)
            throw LoadOptionsError(option, "\(sessionCount) sessions need about \(needed) open files (libmosquitto holds "
                + "\(Self.descriptorsPerSession) per client) but the limit is \(descriptorLimit); at most \(most) sessions fit "
                + "(raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)")
        }
    }
}

/// An option value that cannot be used, with the option's name.
public struct LoadOptionsError: Error, CustomStringConvertible, Equatable, Sendable {
    public let option: String
    public let reason: String

    public init(_ option: String, _ reason: String) {
        self.option = option
        self.reason = reason
    }

    public var description: String { "\(option) \(reason)" }
}
