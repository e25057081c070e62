import Foundation
import Yams

/// How StapleGate checks device certificates in the stripped configuration (column a′ and the
/// stripped device-OCSP figures).
enum DeviceOCSPMode: String, CaseIterable, Codable, Sendable {
    /// `device_ocsp.enabled: false`: the chain is checked, no responder is asked.
    case off
    /// Answers trusted for 24 h; the cache is warmed first, so every handshake is a hit.
    case cacheHit = "cache_hit"
    /// `cache_lifetime: 1ms`: every handshake asks the responder, as a device's first connect does.
    case firstConnect = "first_connect"
}

/// The example configuration with one feature changed, for the feature-cost figures: each
/// differs from `asShipped` by exactly one key, so their difference is that feature's cost.
enum DefaultsVariant: String, CaseIterable, Sendable {
    case asShipped = "defaults"
    case traceOff = "defaults-trace-off"
    case deviceOCSPOff = "defaults-device-ocsp-off"
    /// `device_ocsp.cache_lifetime: 1ms`: every handshake asks the responder (trace on).
    case firstConnect = "defaults-first-connect"

    /// The key changed, as `dotted.path`, and its value.
    var change: (path: String, value: String)? {
        switch self {
        case .asShipped: nil
        case .traceOff: ("trace.enabled", "false")
        case .deviceOCSPOff: ("device_ocsp.enabled", "false")
        case .firstConnect: ("device_ocsp.cache_lifetime", "1ms")
        }
    }

    /// Whether the device's OCSP answer is looked up, so the front must be warmed and checked.
    var asksResponder: Bool { self != .deviceOCSPOff }
}

/// Which configuration a StapleGate of the bench runs.
enum StapleGateProfile: Sendable {
    /// config/staplegate.yaml, with only what this machine needs changed (column a and its variants).
    case defaults(DefaultsVariant)
    /// The bench's own minimal configuration (column a′): trace off, admin off, logging error,
    /// TLS 1.3 only, X25519; device OCSP as given.
    case stripped(DeviceOCSPMode)

    var label: String {
        switch self {
        case .defaults(let variant): variant.rawValue
        case .stripped(let mode): "stripped-\(mode.rawValue)"
        }
    }
}

/// The example configuration, config/staplegate.yaml, read once per bench and written out per
/// gateway with the machine's values in place of its own. Everything else is kept as shipped, so
/// column (a) costs what an operator who starts from the example pays.
struct ExampleConfiguration {
    let path: String
    private let root: Node

    /// What the bench changes in the example, and why: each is something of this machine (ports,
    /// files, folders) that the example cannot know, or quick stopping between figures.
    static let machineOverrides = [
        "listen.address → 127.0.0.1 (every process of the bench is on loopback)",
        "listen.port, admin.port → free ports (8883 and 9883 may be taken, and each gateway needs its own)",
        "listen.drain_grace_period → 0 (stops between figures at once instead of waiting up to 30 s)",
        "tls.certificates[0] certificate and key, tls.device_ca → the bench's PKI (made with --ocsp-url naming the bench's responder, "
            + "so stapling and device OCSP ask it through the certificates' AIA, as the example's defaults do)",
        "upstream.port → the bench's Mosquitto",
        "state_directory → the work folder (/var/lib/staplegate is the installed gateway's)",
    ]

    init(path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchFailure("\(path): cannot read the example configuration, which column (a) runs")
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw BenchFailure("\(path): not valid YAML: \(error)")
        }
        guard let node, node.mapping != nil, node["tls"]?.mapping != nil, node["upstream"]?.mapping != nil else {
            throw BenchFailure("\(path): not a StapleGate configuration (a mapping with tls and upstream sections)")
        }
        self.path = path
        root = node
    }

    /// The example's value at a dotted path, as written there, or nil when it leaves the key out
    /// (the gateway's default then applies).
    func value(_ dotted: String) -> String? {
        var node: Node? = root
        for key in dotted.split(separator: ".") {
            node = Int(key).flatMap { index in node?.sequence.flatMap { $0.indices.contains(index) ? $0[index] : nil } }
                ?? node?.mapping.flatMap { Self.entry(String(key), in: $0).map { $0.value } }
        }
        return node?.scalar?.string
    }

    /// The example with `changes` (dotted path → value) applied, as YAML. A missing mapping key
    /// is added; a missing list entry is an error naming the example, as the certificates must be there.
    func written(with changes: [(path: String, value: String)]) throws -> String {
        var node = root
        for (dotted, value) in changes {
            node = try Self.setting(Node(value), at: dotted.split(separator: ".").map(String.init)[...], in: node, path: dotted,
                                    file: path)
        }
        do {
            // width -1: no folding of the long cipher strings; scalar styles (the quoted "1.2") are kept.
            return "# Written by staplegate-bench from \(path), with this machine's ports, files and folders.\n"
                + (try Yams.serialize(node: node, width: -1))
        } catch {
            throw BenchFailure("\(path): cannot write it back out: \(error)")
        }
    }

    private static func setting(_ value: Node, at keys: ArraySlice<String>, in node: Node, path: String, file: String) throws -> Node {
        guard let key = keys.first else { return value }
        let rest = keys.dropFirst()
        if let index = Int(key) {
            guard var sequence = node.sequence, sequence.indices.contains(index) else {
                throw BenchFailure("\(file): \(path): the example has no entry \(index) there")
            }
            sequence[index] = try setting(value, at: rest, in: sequence[index], path: path, file: file)
            return .sequence(sequence)
        }
        guard var mapping = node.mapping else { throw BenchFailure("\(file): \(path): \(key)'s parent is not a mapping") }
        if let (index, old) = entry(key, in: mapping) {
            mapping[index] = (key: mapping[index].key, value: try setting(value, at: rest, in: old, path: path, file: file))
        } else {
            mapping[Node(key)] = try setting(value, at: rest, in: Node([(Node, Node)]()), path: path, file: file)
        }
        return .mapping(mapping)
    }

    /// A mapping's entry by its key's text (not by resolved tag, so `port` matches however it was written).
    private static func entry(_ key: String, in mapping: Node.Mapping) -> (index: Int, value: Node)? {
        mapping.indices.first { mapping[$0].key.scalar?.string == key }.map { ($0, mapping[$0].value) }
    }

    /// One line on what column (a) runs, read from the example (its defaults where it leaves a key out).
    var summary: String {
        func shown(_ dotted: String, default fallback: String) -> String { value(dotted) ?? "\(fallback) (default)" }
        return "trace \(shown("trace.enabled", default: "true")), device OCSP \(shown("device_ocsp.enabled", default: "true")) "
            + "(responder: \(value("device_ocsp.responder") ?? "the certificate's AIA")), "
            + "stapling \(shown("stapling.enabled", default: "true")), admin \(shown("admin.enabled", default: "true")), "
            + "logging \(shown("logging.level", default: "info")) \(shown("logging.format", default: "text")), "
            + "TLS min \(shown("tls.min_version", default: "1.2")), groups \(shown("tls.groups", default: "OpenSSL's"))"
    }
}

extension BenchEnvironment {
    /// column (a) and its variants: the example with this machine's values, and the variant's one change.
    func defaultsConfiguration(_ variant: DefaultsVariant, port: Int, adminPort: Int, label: String) throws -> String {
        var changes: [(path: String, value: String)] = [
            ("listen.address", "127.0.0.1"), ("listen.port", String(port)), ("listen.drain_grace_period", "0"),
            ("tls.certificates.0.certificate", "\(pki)/server.pem"), ("tls.certificates.0.key", "\(pki)/server.key"),
            ("tls.device_ca", caChain), ("upstream.port", String(brokerPort)), ("state_directory", "\(work)/\(label)-state"),
            ("admin.port", String(adminPort)),
        ]
        if let change = variant.change { changes.append(change) }
        return try example.written(with: changes)
    }

    /// Column (a′), the bench's configuration before issue 15: TLS 1.3 only, X25519, stapling on,
    /// trace off, admin off but for the fleet figures, responders named explicitly.
    func strippedConfiguration(_ deviceOCSP: DeviceOCSPMode, port: Int, label: String, fleet: FleetMember?) -> String {
        let cacheLifetime = deviceOCSP == .firstConnect ? "1ms" : "24h"
        let admin = fleet.map { "admin:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: \($0.adminPort)" }
            ?? "admin:\n  enabled: false"
        let fleetSection = fleet.map {
            "fleet:\n  store: postgres\n  url: \"\($0.url)\"\n  tls: disable\n  instance: \($0.instance)\n"
        } ?? ""
        return """
        # Written by staplegate-bench: TLS 1.3 only, X25519, stapling on, trace off, admin off but for the fleet figures.
        listen:
          address: "127.0.0.1"
          port: \(port)
          drain_grace_period: 0
        tls:
          certificates:
            - certificate: \(pki)/server.pem
              key: \(pki)/server.key
          device_ca: \(caChain)
          min_version: "1.3"
          groups: "X25519"
        upstream:
          address: 127.0.0.1
          port: \(brokerPort)
        logging:
          level: error
        state_directory: \(work)/\(label)-state
        stapling:
          enabled: true
          responder: http://127.0.0.1:\(responderPort)
        device_ocsp:
          enabled: \(deviceOCSP != .off)
          responder: http://127.0.0.1:\(responderPort)
          cache_lifetime: \(cacheLifetime)
          failure_cache_lifetime: 0
        trace:
          enabled: false
        \(admin)
        \(fleetSection)
        """
    }
}
