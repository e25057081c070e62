import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StapleGateProxy

/// Whether the broker accepts connections, for readiness: a connect (TCP or Unix socket)
/// closed at once. The answer is kept for `maximumAge`, and concurrent askers share one probe,
/// so frequent scrapes cost Mosquitto at most one connection per `maximumAge`.
public final class UpstreamProbe: Sendable {
    /// Read at each probe: a reload may point the gateway at another broker.
    private let endpoint: @Sendable () -> UpstreamConfiguration.Endpoint
    private let timeout: TimeAmount
    private let maximumAge: TimeAmount
    private let group: EventLoopGroup
    private let state = NIOLockedValueBox(State())

    private struct State {
        /// When the last probe ended and its failure (nil: the broker answered).
        var last: (at: NIODeadline, failure: String?)?
        var inFlight: EventLoopFuture<String?>?
    }

    public convenience init(endpoint: UpstreamConfiguration.Endpoint, group: EventLoopGroup,
                            timeout: TimeAmount = .seconds(1), maximumAge: TimeAmount = .seconds(1)) {
        self.init(currentEndpoint: { endpoint }, group: group, timeout: timeout, maximumAge: maximumAge)
    }

    public init(currentEndpoint: @escaping @Sendable () -> UpstreamConfiguration.Endpoint, group: EventLoopGroup,
                timeout: TimeAmount = .seconds(1), maximumAge: TimeAmount = .seconds(1)) {
        self.endpoint = currentEndpoint
        self.group = group
        self.timeout = timeout
        self.maximumAge = maximumAge
    }

    /// Nil when the broker accepts connections, otherwise why not.
    public func failure() async -> String? {
        let now = NIODeadline.now()
        let pending = state.withLockedValue { state -> EventLoopFuture<String?> in
            if let last = state.last, now - last.at < maximumAge {
                return group.any().makeSucceededFuture(last.failure)
            }
            if let inFlight = state.inFlight { return inFlight }
            let probe = connect()
            state.inFlight = probe
            return probe
        }
        do {
            return try await pending.get()
        } catch {
            return "the probe failed: \(error)"  // not expected: every failure is recovered into a reason
        }
    }

    private func connect() -> EventLoopFuture<String?> {
        let bootstrap = ClientBootstrap(group: group).connectTimeout(timeout)
        let endpoint = self.endpoint()
        let connecting: EventLoopFuture<Channel> = switch endpoint {
        case let .tcp(host, port): bootstrap.connect(host: host, port: port)
        case let .unixSocket(path): bootstrap.connect(unixDomainSocketPath: path)
        }
        return connecting
            .flatMap { channel in channel.close().map { nil as String? }.recover { _ in nil } }
            .recover { error in "broker unreachable at \(endpoint): \(ProxySessionHandler.describe(error))" }
            .always { [state] result in
                let failure = (try? result.get()) ?? nil
                state.withLockedValue { state in
                    state.last = (NIODeadline.now(), failure)
                    state.inFlight = nil
                }
            }
    }
}
