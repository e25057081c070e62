import Foundation
import StapleGateProxy
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `upstream` section: one broker (`address` + `port`, or `unix_socket`) or several
/// (`brokers`, with `balance`), and how connects to them are timed.
extension ConfigSchema {
    static let upstreamKeys = [
        "address", "port", "unix_socket", "connect_timeout", "idle_timeout", "brokers", "balance", "down_time", "proxy_protocol",
    ]

    func upstream(_ section: YAMLValue) throws(ConfigError) -> UpstreamConfiguration {
        let keys = try section.mapping(knownKeys: Self.upstreamKeys)
        var upstream = UpstreamConfiguration(brokers: try brokers(keys, section: section))
        if let value = keys["balance"] { upstream.balance = try choice(value) }
        if let value = keys["connect_timeout"] { upstream.connectTimeout = try positiveDuration(value) }
        if let value = keys["idle_timeout"] {
            let idle = try duration(value)
            upstream.idleTimeout = idle == .zero ? nil : idle
        }
        if let value = keys["down_time"] { upstream.downTime = try positiveDuration(value) }
        if let value = keys["proxy_protocol"] { upstream.sendsProxyProtocol = try upstreamProxyProtocol(value) }
        return upstream
    }

    /// `brokers`, or the single form's one broker as a list of one.
    private func brokers(_ keys: YAMLMapping, section: YAMLValue) throws(ConfigError) -> [UpstreamConfiguration.Endpoint] {
        if let list = keys["brokers"] {
            // Both forms at once: which one was meant is anyone's guess.
            for key in ["address", "port", "unix_socket"] {
                if let single = keys[key] {
                    throw single.error("give either brokers or \(key == "unix_socket" ? "unix_socket" : "address (with port)"), not both; a single broker can be listed as brokers: [\"host:port\"]")
                }
            }
            return try brokerList(list)
        }
        switch (keys["address"], keys["unix_socket"]) {
        case (nil, nil):
            throw section.error("needs either address (with port) to reach the broker over TCP, or unix_socket, or brokers to list several")
        case (.some, let socket?):
            throw socket.error("give either address (with port) or unix_socket, not both")
        case (let address?, nil):
            let port = try keys["port"]?.integer(in: 1...65535) ?? 1883
            return [.tcp(host: try host(address), port: port)]
        case (nil, let socket?):
            if let port = keys["port"] { throw port.error("port only applies together with address; remove it when using unix_socket") }
            return [.unixSocket(path: try socketPath(filePath(socket), at: socket))]
        }
    }

    private func brokerList(_ value: YAMLValue) throws(ConfigError) -> [UpstreamConfiguration.Endpoint] {
        let items = try value.list()
        guard !items.isEmpty else { throw value.error("must list at least one broker, e.g. [\"127.0.0.1:1883\"]") }
        var brokers: [UpstreamConfiguration.Endpoint] = []
        for item in items {
            let broker = try self.broker(item)
            // Twice in the list would give that broker two shares of round_robin and of the hash.
            if let first = brokers.firstIndex(of: broker) {
                throw item.error("lists \(broker) a second time (also upstream.brokers[\(first)]); each broker once")
            }
            brokers.append(broker)
        }
        return brokers
    }

    /// "host:port", "[IPv6]:port" or "unix:/path".
    private func broker(_ item: YAMLValue) throws(ConfigError) -> UpstreamConfiguration.Endpoint {
        let text = try item.string()
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard !path.isEmpty else { throw item.error("\"unix:\" needs the socket's path, e.g. \"unix:/run/mosquitto/mosquitto.sock\"") }
            return .unixSocket(path: try socketPath(resolve(path), at: item))
        }
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw item.error("\"\(text)\" opens a bracket it does not close; write IPv6 brokers as \"[::1]:1883\"")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            var storage = in6_addr()
            guard inet_pton(AF_INET6, host, &storage) == 1 else {
                throw item.error("\"\(host)\" in brackets is not an IPv6 address")
            }
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw item.error("\"\(text)\" has no port; write [address]:port, e.g. \"[\(host)]:1883\"")
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw item.error("\"\(text)\" has no port; write host:port, e.g. \"\(text):1883\", or unix:/path for a Unix socket")
            }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw item.error("\"\(text)\": write IPv6 addresses in brackets, e.g. \"[::1]:1883\"")
            }
            guard Self.isIPLiteral(host) || Self.isHostName(host) else {
                throw item.error("\"\(host)\" is neither an IP address nor a host name")
            }
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText),
              (1...65535).contains(port) else {
            throw item.error("the port of \"\(text)\" must be a number from 1 to 65535, not \"\(portText)\"")
        }
        return .tcp(host: host, port: port)
    }

    /// The socket may appear after the gateway starts (Mosquitto starting later), but a missing
    /// folder means a typo, which would otherwise only show as connection failures.
    private func socketPath(_ path: String, at value: YAMLValue) throws(ConfigError) -> String {
        // sun_path holds 108 bytes on Linux and 104 on macOS, including the terminating NUL.
        let limit = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1
        guard path.utf8.count <= limit else {
            throw value.error("\(path) is \(path.utf8.count) bytes long; Unix socket paths can be at most \(limit)")
        }
        let folder = (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw value.error("the folder \(folder) does not exist (the socket itself may appear later, but its folder must exist)")
        }
        return path
    }

    private func host(_ value: YAMLValue) throws(ConfigError) -> String {
        let host = try value.string()
        guard Self.isIPLiteral(host) || Self.isHostName(host) else {
            var hint = Self.bracketHint(host)
            if hint.isEmpty, host.contains(":") { hint = "; give the port separately as upstream.port" }
            throw value.error("\"\(host)\" is neither an IP address nor a host name\(hint)")
        }
        return host
    }
}
