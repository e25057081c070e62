import ServiceLifecycle
import StapleGateOCSP

/// Runs the stapling service under swift-service-lifecycle: refreshing until the gateway shuts down.
public struct StaplingRefresher: Service {
    public let stapling: StaplingService

    public init(stapling: StaplingService) {
        self.stapling = stapling
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await stapling.run()
        }
    }
}
