import CoreMetrics
import Foundation

/// What stapling reports through swift-metrics, per certificate (dimension `serial`, the
/// certificate's serial in hex). The gateway's metrics backend exports them; with none
/// bootstrapped they cost nothing.
///
/// - `staplegate_staple_refreshes_total{serial,result}`: every refresh attempt, `result` one of
///   good, revoked, unknown (answered, not stapled) or failed (fetch or verification failed).
/// - `staplegate_staple_status{serial,status}`: 1 for the status of the response held now
///   (good, revoked, unknown or none), 0 for the others, so an alert can match `status="revoked"`.
/// - `staplegate_staple_serving{serial}`: 1 while handshakes are stapled.
/// - `staplegate_staple_next_update_timestamp_seconds{serial}`: the held response's nextUpdate
///   (Unix time; 0 without one), and `staplegate_staple_seconds_to_next_update{serial}` as of
///   the last change or check.
/// - `staplegate_staple_consecutive_failures{serial}`.
struct StaplingMetrics: Sendable {
    enum RefreshResult: String, CaseIterable {
        case good, revoked, unknown, failed
    }

    static let statuses = ["good", "revoked", "unknown", "none"]

    private let factory: any MetricsFactory

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    func countRefresh(serial: String, result: RefreshResult) {
        Counter(label: "staplegate_staple_refreshes_total",
                dimensions: [("serial", serial), ("result", result.rawValue)], factory: factory).increment()
    }

    func update(_ status: StapleStatus, now: Date) {
        let serial = [("serial", status.serial)]
        for candidate in Self.statuses {
            Gauge(label: "staplegate_staple_status", dimensions: serial + [("status", candidate)], factory: factory)
                .record(candidate == status.certStatus ? 1 : 0)
        }
        Gauge(label: "staplegate_staple_serving", dimensions: serial, factory: factory).record(status.serving ? 1 : 0)
        Gauge(label: "staplegate_staple_next_update_timestamp_seconds", dimensions: serial, factory: factory)
            .record(status.nextUpdate?.timeIntervalSince1970 ?? 0)
        Gauge(label: "staplegate_staple_seconds_to_next_update", dimensions: serial, factory: factory)
            .record(status.nextUpdate.map { max($0.timeIntervalSince(now), 0) } ?? 0)
        Gauge(label: "staplegate_staple_consecutive_failures", dimensions: serial, factory: factory)
            .record(status.consecutiveFailures)
    }
}
