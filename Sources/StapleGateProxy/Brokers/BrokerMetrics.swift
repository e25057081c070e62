import CoreMetrics

/// One broker's metrics, labelled `broker` with its name as configured (`127.0.0.1:1883`,
/// `unix:/run/mosquitto/mosquitto.sock`):
/// - `staplegate_upstream_broker_up` (gauge): 1 unless the broker is marked down;
/// - `staplegate_upstream_connects_total{result}`: sessions' connects to it, by result (every
///   result exported at 0 from the start). Readiness probes are not counted.
struct BrokerMetrics: Sendable {
    let up: Gauge
    private let connects: [BrokerConnectResult: Counter]

    init(broker: String, factory: any MetricsFactory) {
        up = Gauge(label: "staplegate_upstream_broker_up", dimensions: [("broker", broker)], factory: factory)
        connects = Dictionary(uniqueKeysWithValues: BrokerConnectResult.allCases.map { result in
            (result, Counter(label: "staplegate_upstream_connects_total",
                             dimensions: [("broker", broker), ("result", result.rawValue)], factory: factory))
        })
    }

    func counted(_ result: BrokerConnectResult) { connects[result]?.increment() }

    /// A broker no longer configured: its series leave /metrics.
    func destroy() {
        up.destroy()
        for counter in connects.values { counter.destroy() }
    }
}
