import CoreMetrics

/// What the fleet database reports through swift-metrics (exported by the gateway's backend):
/// - `staplegate_fleet_database_up` (gauge): 1 while the database is reachable and its tables
///   are set up, 0 while connecting or unreachable;
/// - `staplegate_fleet_store_write_failures_total`: batches of device statuses that could not
///   be written (each one transaction; their answers stay in the gateway's memory only).
struct FleetMetrics: Sendable {
    private let up: Gauge
    private let writeFailures: Counter

    init(factory: any MetricsFactory) {
        up = Gauge(label: "staplegate_fleet_database_up", factory: factory)
        writeFailures = Counter(label: "staplegate_fleet_store_write_failures_total", factory: factory)
        // Both exist from the start, so a dashboard or an alert sees 0 before the first change.
        up.record(0)
        writeFailures.increment(by: 0)
    }

    func databaseUp(_ isUp: Bool) { up.record(isUp ? 1 : 0) }
    func writeFailed() { writeFailures.increment() }
}
