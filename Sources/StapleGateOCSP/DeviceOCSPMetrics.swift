import CoreMetrics

/// What device checks report through swift-metrics (exported by the gateway's metrics backend):
/// - `staplegate_device_ocsp_lookups_total{result}`: each certificate judged, `result` one of
///   good, revoked, unknown, unavailable, no_responder;
/// - `staplegate_device_ocsp_cache_hits_total`, `staplegate_device_ocsp_cache_misses_total`;
/// - `staplegate_device_ocsp_responder_latency_seconds` (timer), per answered request;
/// - `staplegate_device_ocsp_requests_in_flight`, `staplegate_device_ocsp_requests_queued`;
/// - `staplegate_device_ocsp_cache_entries`.
struct DeviceOCSPMetrics: Sendable {
    private let hits: Counter
    private let misses: Counter
    private let latency: Timer
    private let inFlight: Gauge
    private let queued: Gauge
    private let entries: Gauge
    /// One counter per result, made once: making a counter is a registry lookup under a lock,
    /// which per handshake was half the cost of a cache-hit check.
    private let lookups: [String: Counter]
    private let factory: any MetricsFactory

    init(factory: any MetricsFactory) {
        self.factory = factory
        hits = Counter(label: "staplegate_device_ocsp_cache_hits_total", factory: factory)
        misses = Counter(label: "staplegate_device_ocsp_cache_misses_total", factory: factory)
        latency = Timer(label: "staplegate_device_ocsp_responder_latency_seconds", factory: factory)
        inFlight = Gauge(label: "staplegate_device_ocsp_requests_in_flight", factory: factory)
        queued = Gauge(label: "staplegate_device_ocsp_requests_queued", factory: factory)
        entries = Gauge(label: "staplegate_device_ocsp_cache_entries", factory: factory)
        lookups = Dictionary(uniqueKeysWithValues: DeviceCheckFinding.resultLabels.map { result in
            (result, Counter(label: "staplegate_device_ocsp_lookups_total", dimensions: [("result", result)], factory: factory))
        })
    }

    func lookup(_ result: String) {
        guard let counter = lookups[result] else {
            return Counter(label: "staplegate_device_ocsp_lookups_total", dimensions: [("result", result)], factory: factory).increment()
        }
        counter.increment()
    }

    func cacheHit() { hits.increment() }
    func cacheMiss() { misses.increment() }
    func responderLatency(_ duration: Duration) { latency.recordNanoseconds(Int64(duration.timeInterval * 1e9)) }
    func cacheSize(_ count: Int) { entries.record(count) }

    func requestQueued(_ limiter: OCSPRequestLimiter) { update(limiter) }
    func requestStarted(_ limiter: OCSPRequestLimiter) { update(limiter) }
    func requestFinished(_ limiter: OCSPRequestLimiter) { update(limiter) }

    private func update(_ limiter: OCSPRequestLimiter) {
        inFlight.record(limiter.inFlight)
        queued.record(limiter.queued)
    }
}
