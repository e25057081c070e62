import CoreMetrics
import Logging
import NIOCore
import Prometheus
import StapleGateConfig
import StapleGateFleet
import StapleGateOCSP
import StapleGateServer
import StapleGateTrace

/// The metrics backend of `staplegate run`: Prometheus, exported on the admin listener's
/// /metrics. Bootstrapped before anything creates a metric (metrics made earlier stay no-ops).
enum PrometheusMetrics {
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = GatewayMetrics.durationBuckets
        MetricsSystem.bootstrap(factory)
        return registry
    }
}

/// The admin listener the configuration asks for, or nil (and a log line) when it is off.
func makeAdminServer(_ configuration: GatewayConfiguration, gateway: Gateway, traceStore: (any TraceStore)?, fleetDatabase: FleetDatabase?,
                     registry: PrometheusCollectorRegistry, eventLoops: EventLoopGroup, logger: Logger) -> AdminServer? {
    guard configuration.admin.enabled else {
        logger.notice("admin listener off (admin.enabled: false)")
        return nil
    }
    let routes = AdminRoutes(
        isAcceptingDevices: { gateway.isAcceptingDevices },
        upstream: UpstreamProbe(currentUpstream: { gateway.configuration.upstream }, health: gateway.brokerHealth,
                                group: eventLoops),
        generation: { gateway.currentGeneration },
        traceStore: traceStore,
        eventLoops: eventLoops,
        // The start's setting: the fleet section is restart-only, as the database it opened.
        fleetDatabase: fleetDatabase, fleetDatabaseRequired: configuration.fleet.requiredForReadiness,
        // The serving configuration's: a reload that names a new token file applies it.
        token: { gateway.configuration.admin.token }, logger: logger,
        metricsText: { registry.emitToBuffer() })
    return AdminServer(configuration: configuration.admin, group: eventLoops, logger: logger, routes: routes)
}
