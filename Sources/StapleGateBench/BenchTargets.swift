import Foundation

/// One of the issue's targets, judged on the medians of this bench's runs, each against the peer
/// measured in the same bench (never against figures from another machine or day).
struct TargetVerdict: Codable {
    let name: String
    let goal: String
    let value: Double?
    let limit: Double?
    let pass: Bool
    /// "12.3 % below 0.85 × nginx", "0.4 µs over", "slow mode in run 3", or why it could not be judged.
    let margin: String

    /// `value` must be at most `limit`; the margin is relative (% of the limit) when `relative`,
    /// else in `unit`.
    static func judge(_ name: String, goal: String, value: Double?, limit: Double?, relative: Bool, unit: String,
                      against: String) -> TargetVerdict {
        guard let value, let limit else {
            return TargetVerdict(name: name, goal: goal, value: value, limit: limit, pass: false, margin: "not measured")
        }
        let difference = relative ? abs(value - limit) / abs(limit) * 100 : abs(value - limit)
        let amount = relative ? String(format: "%.1f %%", difference) : String(format: "%.2f %@", difference, unit)
        let side = value < limit ? "below" : (value == limit ? "equal to" : "above")
        return TargetVerdict(name: name, goal: goal, value: value, limit: limit, pass: value <= limit, margin: "\(amount) \(side) \(against)")
    }

    /// Runs whose value is more than 1.5 × the median of all runs: a slow mode (issue 15 saw one
    /// run in five of the 4 KiB figure at twice the others).
    static let slowModeFactor = 1.5

    /// CPU per message: the median against `factor` × nginx's, and no run of StapleGate's in a slow mode.
    private static func perMessage(_ samples: BenchSamples, _ figure: Figure, name: String, size: String,
                                   factor: Double) -> TargetVerdict {
        let nginx = samples.median(.nginx, figure)
        let verdict = judge(name, goal: "front CPU per message, \(size): ≤ \(factor) × nginx's, no slow mode in any run",
                            value: samples.median(.staplegate, figure), limit: nginx.map { $0 * factor }, relative: true,
                            unit: "µs", against: "\(factor) × nginx")
        guard let spread = samples.spread(.staplegate, figure) else { return verdict }
        let slow = spread.runs.enumerated().filter { $0.element > slowModeFactor * spread.median }.map { $0.offset + 1 }
        guard !slow.isEmpty else { return verdict }
        let runs = slow.map(String.init).joined(separator: ", ")
        return TargetVerdict(name: name, goal: verdict.goal, value: verdict.value, limit: verdict.limit, pass: false,
                             margin: "slow mode in run\(slow.count == 1 ? "" : "s") \(runs) (above \(slowModeFactor) × the median); "
                                 + "median \(verdict.margin)")
    }

    static func all(_ samples: BenchSamples) -> [TargetVerdict] {
        let nginx = { (figure: Figure) in samples.median(.nginx, figure) }
        let mosquitto = { (figure: Figure) in samples.median(.mosquitto, figure) }
        return [
            judge("full_handshake_cpu", goal: "CPU per full mTLS handshake (defaults) ≤ 0.85 × nginx stream's",
                  value: samples.median(.staplegate, .fullHandshakeCPU), limit: nginx(.fullHandshakeCPU).map { $0 * 0.85 },
                  relative: true, unit: "µs", against: "0.85 × nginx"),
            judge("resumed_handshake_cpu", goal: "CPU per resumed handshake (defaults) ≤ 0.85 × nginx's resumed",
                  value: samples.median(.staplegate, .resumedHandshakeCPU), limit: nginx(.resumedHandshakeCPU).map { $0 * 0.85 },
                  relative: true, unit: "µs", against: "0.85 × nginx"),
            judge("trace_cost", goal: "traces add ≤ 5 % to the handshake CPU",
                  value: samples.median(.traceCost), limit: 5, relative: false, unit: "points", against: "5 %"),
            judge("device_ocsp_cache_hit_cost", goal: "a device-OCSP cache hit adds ≤ 2 % to the handshake CPU",
                  value: samples.median(.deviceOCSPCacheHitCost), limit: 2, relative: false, unit: "points", against: "2 %"),
            judge("first_connect_extra_cpu", goal: "a first connect (cache miss, loopback responder) adds ≤ 500 µs of gateway CPU over a cache hit",
                  value: samples.median(.firstConnectExtraCPU), limit: 500, relative: false, unit: "µs", against: "500 µs"),
            perMessage(samples, .cpuPerMessage64, name: "cpu_per_message_64B", size: "64 B", factor: 0.75),
            perMessage(samples, .cpuPerMessage4K, name: "cpu_per_message_4KiB", size: "4 KiB", factor: 0.75),
            judge("rss_per_idle_session", goal: "RSS per idle session (defaults) ≤ 0.8 × Mosquitto's own TLS listener",
                  value: samples.median(.staplegate, .rssPerSession), limit: mosquitto(.rssPerSession).map { $0 * 0.8 },
                  relative: true, unit: "KiB", against: "0.8 × Mosquitto TLS"),
            judge("sessions_open_time", goal: "time to open the sessions (defaults) ≤ 0.9 × Mosquitto TLS's",
                  value: samples.median(.staplegate, .sessionsOpenSeconds), limit: mosquitto(.sessionsOpenSeconds).map { $0 * 0.9 },
                  relative: true, unit: "s", against: "0.9 × Mosquitto TLS"),
            judge("latency_p99", goal: "latency p99 at the latency rate (defaults) ≤ nginx's",
                  value: samples.median(.staplegate, .latencyP99), limit: nginx(.latencyP99), relative: true, unit: "µs",
                  against: "nginx"),
        ]
    }

    /// The table row each target's verdict is shown on, in results.md.
    static let frontFigure: [Figure: String] = [
        .fullHandshakeCPU: "full_handshake_cpu", .resumedHandshakeCPU: "resumed_handshake_cpu",
        .cpuPerMessage64: "cpu_per_message_64B", .cpuPerMessage4K: "cpu_per_message_4KiB",
        .rssPerSession: "rss_per_idle_session", .sessionsOpenSeconds: "sessions_open_time", .latencyP99: "latency_p99",
    ]
    static let featureFigure: [FeatureFigure: String] = [
        .traceCost: "trace_cost", .deviceOCSPCacheHitCost: "device_ocsp_cache_hit_cost", .firstConnectExtraCPU: "first_connect_extra_cpu",
    ]
}
