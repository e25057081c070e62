import NIOConcurrencyHelpers
import ServiceLifecycle
import StapleGateOCSP

/// Runs the serving generation's stapling service under swift-service-lifecycle: refreshing
/// until the gateway shuts down. A reload hands over the new generation's service (or none,
/// when stapling was turned off); the previous one's refresh loop stops then.
public final class StaplingRefresher: Service, Sendable {
    private let handovers: AsyncStream<StaplingService?>
    private let handover: AsyncStream<StaplingService?>.Continuation
    private let initial: StaplingService?

    public init(stapling: StaplingService?) {
        initial = stapling
        (handovers, handover) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// From now on, `stapling` is the service kept fresh.
    public func switchTo(_ stapling: StaplingService?) {
        handover.yield(stapling)
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var running = self.initial.map(Self.refreshing)
            for await next in self.handovers {
                running?.cancel()
                running = next.map(Self.refreshing)
            }
            running?.cancel()
        }
    }

    private static func refreshing(_ stapling: StaplingService) -> Task<Void, Never> {
        Task { await stapling.run() }
    }
}
