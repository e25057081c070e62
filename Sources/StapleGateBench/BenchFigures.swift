import Foundation

/// The sizes of one bench. `smoke` is small enough for a test to run the whole bench in seconds.
struct BenchSettings: Codable {
    var runs = 3
    var handshakeSeconds = 10
    var throughputSeconds = 10.0
    var latencySeconds = 10.0
    /// Messages per second over all publishers for the latency figure: well below every front's
    /// saturation (tens of thousands per second at 64 B on 2 cores), so queues stay empty.
    var latencyRate = 2000.0
    var sessions = 5000
    var sessionConcurrency = 64
    var publishers = 4
    /// Fleet figures: distinct device certificates, one session each per pass (each session's
    /// CPU is measured, so enough of them for the 10 ms clock ticks), and sessions in flight.
    var fleetDevices = 1000
    var fleetConcurrency = 16

    static let smoke = BenchSettings(runs: 1, handshakeSeconds: 1, throughputSeconds: 1, latencySeconds: 1, latencyRate: 500,
                                     sessions: 50, sessionConcurrency: 16, publishers: 2, fleetDevices: 24,
                                     fleetConcurrency: 4)

    enum CodingKeys: String, CodingKey {
        case runs, handshakeSeconds = "handshake_seconds", throughputSeconds = "throughput_seconds"
        case latencySeconds = "latency_seconds", latencyRate = "latency_rate_msg_per_s", sessions
        case sessionConcurrency = "session_concurrency", publishers
        case fleetDevices = "fleet_devices", fleetConcurrency = "fleet_concurrency"
    }
}

/// Every figure measured for each front, with its unit and whether more or less is better.
enum Figure: String, CaseIterable {
    case fullHandshakesPerSecond = "full_handshakes_per_s"
    case fullHandshakeCPU = "full_handshake_cpu_us"
    case resumedHandshakesPerSecond = "resumed_handshakes_per_s"
    case resumedHandshakeCPU = "resumed_handshake_cpu_us"
    case resumedFraction = "resumed_fraction"
    case throughput64 = "throughput_64B_msg_per_s"
    case cpuPerMessage64 = "cpu_per_message_64B_us"
    case throughput4K = "throughput_4KiB_msg_per_s"
    case cpuPerMessage4K = "cpu_per_message_4KiB_us"
    case latencyP50 = "latency_p50_us"
    case latencyP99 = "latency_p99_us"
    case latencyP999 = "latency_p999_us"
    case rssPerSession = "rss_per_idle_session_kib"
    case sessionsOpenSeconds = "sessions_open_s"
    case sessionsFailed = "sessions_failed"

    var title: String {
        switch self {
        case .fullHandshakesPerSecond: "Full mTLS handshakes/s"
        case .fullHandshakeCPU: "Server CPU per full handshake (µs)"
        case .resumedHandshakesPerSecond: "Resumed handshakes/s"
        case .resumedHandshakeCPU: "Server CPU per resumed handshake (µs)"
        case .resumedFraction: "Share of s_time -reuse handshakes resumed"
        case .throughput64: "QoS 0 throughput, 64 B (msg/s)"
        case .cpuPerMessage64: "Front CPU per message, 64 B (µs)"
        case .throughput4K: "QoS 0 throughput, 4 KiB (msg/s)"
        case .cpuPerMessage4K: "Front CPU per message, 4 KiB (µs)"
        case .latencyP50: "Latency p50 (µs)"
        case .latencyP99: "Latency p99 (µs)"
        case .latencyP999: "Latency p99.9 (µs)"
        case .rssPerSession: "RSS per idle session (KiB)"
        case .sessionsOpenSeconds: "Time to open the sessions (s)"
        case .sessionsFailed: "Sessions that failed to open"
        }
    }

    /// Digits after the point in the table.
    var digits: Int {
        switch self {
        case .resumedFraction: 2
        case .cpuPerMessage64, .cpuPerMessage4K, .rssPerSession, .sessionsOpenSeconds: 2
        default: 0
        }
    }
}

/// StapleGate's handshake CPU on each device-OCSP path (every figure in µs, but the overhead in %).
enum OCSPFigure: String, CaseIterable {
    case offCPU = "off_handshake_cpu_us"
    case cacheHitCPU = "cache_hit_handshake_cpu_us"
    case cacheHitOverhead = "cache_hit_overhead_percent"
    case firstConnectCPU = "first_connect_handshake_cpu_us"
    case firstConnectPerSecond = "first_connect_handshakes_per_s"
    case firstConnectResponderCPU = "first_connect_responder_cpu_us"

    var title: String {
        switch self {
        case .offCPU: "Device OCSP off: CPU per full handshake (µs)"
        case .cacheHitCPU: "Cache hit: CPU per full handshake (µs)"
        case .cacheHitOverhead: "Cache hit: added to the handshake CPU (%)"
        case .firstConnectCPU: "First connect (responder asked every time): CPU per handshake (µs)"
        case .firstConnectPerSecond: "First connect: handshakes/s"
        case .firstConnectResponderCPU: "First connect: responder (openssl ocsp) CPU per handshake (µs)"
        }
    }
}

/// Median, min and max of one figure over the runs.
struct Spread: Codable {
    let median: Double
    let min: Double
    let max: Double
    let runs: [Double]

    init?(_ values: [Double]) {
        let sorted = values.filter(\.isFinite).sorted()
        guard !sorted.isEmpty else { return nil }
        let middle = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        min = sorted[0]
        max = sorted[sorted.count - 1]
        runs = values
    }

    /// "1234 (1200–1300)", one run: "1234".
    func text(digits: Int) -> String {
        let format = { (value: Double) in String(format: "%.\(digits)f", value) }
        return runs.count > 1 ? "\(format(median)) (\(format(min))–\(format(max)))" : format(median)
    }
}

/// Every value of every run, by group ("staplegate", "nginx", "mosquitto", "staplegate_device_ocsp",
/// "staplegate_fleet") and figure.
struct BenchSamples {
    private(set) var values: [String: [String: [Double]]] = [:]

    mutating func add(_ group: String, _ figure: String, _ value: Double?) {
        guard let value, value.isFinite else { return }
        values[group, default: [:]][figure, default: []].append(value)
    }

    func spread(_ group: String, _ figure: String) -> Spread? { Spread(values[group]?[figure] ?? []) }

    func median(_ front: FrontKind, _ figure: Figure) -> Double? { spread(front.rawValue, figure.rawValue)?.median }
    func median(_ figure: OCSPFigure) -> Double? { spread(Self.ocspGroup, figure.rawValue)?.median }

    static let ocspGroup = "staplegate_device_ocsp"
    static let fleetGroup = "staplegate_fleet"
}

/// One of the issue's targets, judged on the medians.
struct TargetVerdict: Codable {
    let name: String
    let goal: String
    let value: Double?
    let limit: Double?
    let pass: Bool
    /// "12.3 % below nginx", "0.4 µs over", or why it could not be judged.
    let margin: String

    /// `value` must be below `limit` (`inclusive`: at most); the margin is relative (% of the limit)
    /// when `relative`, else in `unit`.
    static func judge(_ name: String, goal: String, value: Double?, limit: Double?, inclusive: Bool = false,
                      relative: Bool, unit: String, against: String) -> TargetVerdict {
        guard let value, let limit else {
            return TargetVerdict(name: name, goal: goal, value: value, limit: limit, pass: false, margin: "not measured")
        }
        let pass = inclusive ? value <= limit : value < limit
        let difference = relative ? abs(value - limit) / limit * 100 : abs(value - limit)
        let amount = relative ? String(format: "%.1f %%", difference) : String(format: "%.2f %@", difference, unit)
        let side = value < limit ? "below" : (value == limit ? "equal to" : "above")
        return TargetVerdict(name: name, goal: goal, value: value, limit: limit, pass: pass, margin: "\(amount) \(side) \(against)")
    }

    static func all(_ samples: BenchSamples) -> [TargetVerdict] {
        let openedBy: (FrontKind) -> Double? = { samples.median($0, .sessionsOpenSeconds) }
        let otherOpen = [openedBy(.nginx), openedBy(.mosquitto)].compactMap(\.self).min()
        let overhead = samples.median(.cacheHitOverhead)
        return [
            judge("full_handshake_cpu", goal: "CPU per full mTLS handshake below nginx's",
                  value: samples.median(.staplegate, .fullHandshakeCPU), limit: samples.median(.nginx, .fullHandshakeCPU),
                  relative: true, unit: "µs", against: "nginx"),
            judge("resumed_handshake_cpu", goal: "CPU per resumed handshake below nginx's",
                  value: samples.median(.staplegate, .resumedHandshakeCPU), limit: samples.median(.nginx, .resumedHandshakeCPU),
                  relative: true, unit: "µs", against: "nginx"),
            judge("cpu_per_message_64B", goal: "≤ 2.5 µs CPU per proxied message at 64 B",
                  value: samples.median(.staplegate, .cpuPerMessage64), limit: 2.5, inclusive: true,
                  relative: false, unit: "µs", against: "2.5 µs"),
            judge("rss_per_idle_session", goal: "≤ 20 KiB RSS per idle session",
                  value: samples.median(.staplegate, .rssPerSession), limit: 20, inclusive: true,
                  relative: false, unit: "KiB", against: "20 KiB"),
            judge("sessions_open_time", goal: "sessions opened faster than nginx and Mosquitto TLS",
                  value: openedBy(.staplegate), limit: otherOpen, relative: true, unit: "s", against: "the faster of b and c"),
            judge("cache_hit_ocsp_overhead", goal: "a cache-hit OCSP check adds < 2 % to handshake CPU",
                  value: overhead, limit: overhead == nil ? nil : 2, relative: false, unit: "points", against: "2 %"),
        ]
    }
}
