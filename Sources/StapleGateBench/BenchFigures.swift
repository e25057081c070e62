import Foundation

/// The sizes of one bench. `smoke` is small enough for a test to run the whole bench in seconds.
struct BenchSettings: Codable {
    /// Five: the issue judges "no slow mode in any of 5 runs".
    var runs = 5
    var handshakeSeconds = 10
    /// Slices each handshake figure is measured in, alternating with the fronts (or gateways)
    /// it is compared with (see `Measurer.interleavedHandshakes`).
    var handshakeRounds = 5
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

    static let smoke = BenchSettings(runs: 1, handshakeSeconds: 1, handshakeRounds: 1, throughputSeconds: 1, latencySeconds: 1, latencyRate: 500,
                                     sessions: 50, sessionConcurrency: 16, publishers: 2, fleetDevices: 24,
                                     fleetConcurrency: 4)

    enum CodingKeys: String, CodingKey {
        case runs, handshakeSeconds = "handshake_seconds", handshakeRounds = "handshake_rounds", throughputSeconds = "throughput_seconds"
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

/// StapleGate's features, each one's full-handshake CPU (s_time, as the front figures) with the
/// feature off or on its slow path, and its cost beside it. Every cost is computed within one run,
/// between gateways measured in alternation; the table shows its median.
enum FeatureFigure: String, CaseIterable {
    case defaultsCPU = "defaults_handshake_cpu_us"
    case traceOffCPU = "defaults_trace_off_handshake_cpu_us"
    case traceCost = "trace_cost_percent"
    case deviceOCSPOffCPU = "defaults_device_ocsp_off_handshake_cpu_us"
    case deviceOCSPCacheHitCost = "device_ocsp_cache_hit_cost_percent"
    case firstConnectCPU = "defaults_first_connect_handshake_cpu_us"
    case firstConnectPerSecond = "defaults_first_connect_handshakes_per_s"
    case firstConnectExtraCPU = "first_connect_extra_cpu_us"
    case firstConnectResponderCPU = "first_connect_responder_cpu_us"
    case strippedOffCPU = "stripped_device_ocsp_off_handshake_cpu_us"
    case strippedCacheHitCPU = "stripped_cache_hit_handshake_cpu_us"
    case strippedCacheHitCost = "stripped_cache_hit_cost_percent"
    case strippedFirstConnectCPU = "stripped_first_connect_handshake_cpu_us"
    case strippedFirstConnectResponderCPU = "stripped_first_connect_responder_cpu_us"

    var title: String {
        switch self {
        case .defaultsCPU: "Defaults (trace on, device OCSP cache hit): CPU per full handshake (µs)"
        case .traceOffCPU: "Defaults with trace.enabled: false (µs)"
        case .traceCost: "Trace cost: added to the handshake CPU (%)"
        case .deviceOCSPOffCPU: "Defaults with device_ocsp.enabled: false (µs)"
        case .deviceOCSPCacheHitCost: "Device OCSP cache hit cost: added to the handshake CPU (%)"
        case .firstConnectCPU: "Defaults, first connect (cache_lifetime 1ms: the responder asked every time, trace on) (µs)"
        case .firstConnectPerSecond: "Defaults, first connect: handshakes/s"
        case .firstConnectExtraCPU: "First connect: gateway CPU added over a cache hit (µs)"
        case .firstConnectResponderCPU: "First connect: responder (openssl ocsp) CPU per handshake (µs)"
        case .strippedOffCPU: "Stripped, device OCSP off (the (a′) configuration) (µs)"
        case .strippedCacheHitCPU: "Stripped, device OCSP cache hit (µs)"
        case .strippedCacheHitCost: "Stripped: cache hit added over device OCSP off (%)"
        case .strippedFirstConnectCPU: "Stripped, first connect (µs)"
        case .strippedFirstConnectResponderCPU: "Stripped, first connect: responder CPU per handshake (µs)"
        }
    }

    var digits: Int {
        switch self {
        case .traceCost, .deviceOCSPCacheHitCost, .strippedCacheHitCost: 1
        default: 0
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

/// Every value of every run, by group ("staplegate", "staplegate_stripped", "nginx", "mosquitto",
/// "staplegate_features", "staplegate_fleet") and figure.
struct BenchSamples {
    private(set) var values: [String: [String: [Double]]] = [:]

    mutating func add(_ group: String, _ figure: String, _ value: Double?) {
        guard let value, value.isFinite else { return }
        values[group, default: [:]][figure, default: []].append(value)
    }

    func spread(_ group: String, _ figure: String) -> Spread? { Spread(values[group]?[figure] ?? []) }

    func spread(_ front: FrontKind, _ figure: Figure) -> Spread? { spread(front.rawValue, figure.rawValue) }
    func spread(_ figure: FeatureFigure) -> Spread? { spread(Self.featuresGroup, figure.rawValue) }
    func median(_ front: FrontKind, _ figure: Figure) -> Double? { spread(front, figure)?.median }
    func median(_ figure: FeatureFigure) -> Double? { spread(figure)?.median }

    /// This run's value of a figure: the last one added.
    func latest(_ front: FrontKind, _ figure: Figure) -> Double? { values[front.rawValue]?[figure.rawValue]?.last }
    func latest(_ figure: FeatureFigure) -> Double? { values[Self.featuresGroup]?[figure.rawValue]?.last }

    static let featuresGroup = "staplegate_features"
    static let fleetGroup = "staplegate_fleet"
}
