import Foundation

/// What one soak run does and when, from its length and fleet size: the same shape whether it
/// lasts 2 minutes (`make test`) or an hour (`make soak`), so the short run is the long one
/// compressed, not a different test.
///
/// The schedule, in seconds from the start: devices ramp in over `rampSeconds`; each session
/// lasts `sessionSeconds` then the device leaves cleanly and comes back (churn); revocations
/// spread over the middle of the run; the responder is restarted at 1/3 and 2/3; a reload every
/// `reloadEverySeconds`. Memory and descriptors are judged only after `warmUpSeconds`.
struct SoakPlan: Equatable {
    var minutes: Double
    var devices: Int
    /// Where the report, the samples and the chart go.
    var reportDirectory: String

    /// The run's length in seconds.
    var seconds: Double { minutes * 60 }
    /// New devices a second while the fleet first comes up.
    var rampSeconds: Double { min(30, max(5, Double(devices) / 100)) }
    /// A session's length: a device stays this long (uniformly), then disconnects and reconnects.
    var sessionSeconds: ClosedRange<Double> { minutes < 10 ? 10...30 : 20...60 }
    /// A connected device publishes one QoS 1 message this often.
    var publishEverySeconds: Double { 5 }
    /// A good device waits this long after its session ends before connecting again.
    var reconnectDelaySeconds: ClosedRange<Double> { 0.5...2 }
    /// A refused device waits longer (a revoked device keeps retrying, as real ones do).
    var retryDelaySeconds: ClosedRange<Double> { 3...6 }
    /// 1 % of the fleet, at least 2 (one revoked while connected is likely, one while not).
    var revokedDevices: Int { max(2, devices / 100) }
    var reloadEverySeconds: Double { minutes < 10 ? 30 : 300 }
    /// How long the responder stays down at each restart.
    var responderDownSeconds: Double { minutes < 10 ? 3 : 10 }
    var sampleEverySeconds: Double { minutes < 10 ? 2 : 5 }
    /// The fleet is up, every device has been through at least one reconnect, and the stores
    /// and caches have their working set.
    var warmUpSeconds: Double { max(rampSeconds + sessionSeconds.upperBound + 10, seconds / 5) }
    /// `tls.session_cache_size` for the run, nil: the default (20 480). The cache grows by
    /// every full handshake until full, about 5 KiB each: an hour's run fills it in its first
    /// minutes, but a short one would still be filling when it ends, which looks like a leak.
    /// Short runs size it to the fleet, as the example configuration advises, so it is full
    /// by the end of warm-up.
    var sessionCacheSize: Int? { minutes < 10 ? devices : nil }
    /// A message or CONNACK not answered within this is a stuck session.
    var stuckAfterSeconds: Double { 30 }

    /// When the responder goes down (it comes back `responderDownSeconds` later).
    var responderRestarts: [Double] { [seconds / 3, 2 * seconds / 3] }

    /// When SIGHUP is sent.
    var reloads: [Double] { Array(stride(from: reloadEverySeconds, to: seconds - 5, by: reloadEverySeconds)) }

    /// When each revoked device is revoked: evenly over 20 %…80 % of the run, clear of the
    /// responder's down time (a revocation needs the responder to say so).
    var revocations: [Double] {
        let first = seconds * 0.2, last = seconds * 0.8
        let step = revokedDevices > 1 ? (last - first) / Double(revokedDevices - 1) : 0
        return (0..<revokedDevices).map { index in
            var at = first + Double(index) * step
            for down in responderRestarts where at >= down - 2 && at <= down + responderDownSeconds + 2 {
                at = down + responderDownSeconds + 3
            }
            return at
        }
    }

    /// The device names: `soak-1` … `soak-N`; the last `revokedDevices` are the ones revoked.
    var deviceNames: [String] { (1...devices).map { "soak-\($0)" } }
    var revokedNames: [String] { Array(deviceNames.suffix(revokedDevices)) }

    /// From SOAK_MINUTES (default 2), SOAK_DEVICES (default 2000) and SOAK_REPORT_DIR
    /// (default `<repository>/.build/soak`); a bad value names the variable.
    static func fromEnvironment(_ environment: [String: String], repository: String) throws -> SoakPlan {
        func number(_ name: String, default value: Double, range: ClosedRange<Double>) throws -> Double {
            guard let text = environment[name], !text.isEmpty else { return value }
            guard let parsed = Double(text), range.contains(parsed) else {
                throw SoakPlanError("\(name)=\(text): must be a number from \(range.lowerBound) to \(range.upperBound)")
            }
            return parsed
        }
        let minutes = try number("SOAK_MINUTES", default: 2, range: 1...1440)
        let devices = try number("SOAK_DEVICES", default: 2000, range: 10...6000)
        guard devices == devices.rounded() else { throw SoakPlanError("SOAK_DEVICES=\(devices): must be a whole number") }
        let directory = environment["SOAK_REPORT_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(repository)/.build/soak"
        return SoakPlan(minutes: minutes, devices: Int(devices), reportDirectory: directory)
    }
}

struct SoakPlanError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
