import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StapleGateProxy

/// Whether the brokers accept connections, for readiness: a connect (TCP or Unix socket) to each
/// configured broker at once, closed straight away. The answer is kept for `maximumAge`, and
/// concurrent askers share one probe, so frequent scrapes cost each broker at most one
/// connection per `maximumAge`.
///
/// What a probe learns is recorded in the shared `BrokerHealth` as a session's connect would be:
/// a broker that answers is up again at once (not only after `upstream.down_time`), one that
/// refuses or stays silent for `timeout` is marked down before devices are sent to it.
public final class UpstreamProbe: Sendable {
    /// What readiness shows.
    public struct Report: Sendable {
        /// Each configured broker, in configuration order, as the gateway sees it after the probe.
        public let brokers: [BrokerHealth.Status]
        /// nil while at least one broker accepts connections; otherwise why none does.
        public let failure: String?
    }

    /// Read at each probe: a reload may change the brokers.
    private let upstream: @Sendable () -> UpstreamConfiguration
    /// Where answers are recorded; nil: kept to this probe.
    private let health: BrokerHealth?
    private let timeout: TimeAmount
    private let maximumAge: TimeAmount
    private let group: EventLoopGroup
    private let state = NIOLockedValueBox(State())

    private struct Answer: Sendable {
        let broker: UpstreamConfiguration.Endpoint
        /// nil: the broker accepted the connection.
        let failure: BrokerConnectFailure?
    }

    private struct State {
        /// When the last probe ended and what each broker answered.
        var last: (at: NIODeadline, answers: [Answer])?
        var inFlight: EventLoopFuture<[Answer]>?
    }

    /// One broker, answers kept to the probe.
    public convenience init(endpoint: UpstreamConfiguration.Endpoint, group: EventLoopGroup,
                            timeout: TimeAmount = .seconds(1), maximumAge: TimeAmount = .seconds(1)) {
        let upstream = UpstreamConfiguration(endpoint: endpoint)
        self.init(currentUpstream: { upstream }, health: nil, group: group, timeout: timeout, maximumAge: maximumAge)
    }

    public init(currentUpstream: @escaping @Sendable () -> UpstreamConfiguration, health: BrokerHealth?, group: EventLoopGroup,
                timeout: TimeAmount = .seconds(1), maximumAge: TimeAmount = .seconds(1)) {
        self.upstream = currentUpstream
        self.health = health
        self.group = group
        self.timeout = timeout
        self.maximumAge = maximumAge
    }

    /// Nil while at least one broker accepts connections, otherwise why none does.
    public func failure() async -> String? {
        await report().failure
    }

    public func report() async -> Report {
        let configuration = upstream()
        let now = NIODeadline.now()
        let pending = state.withLockedValue { state -> EventLoopFuture<[Answer]> in
            // A kept answer is only good for the brokers it asked (a reload may have changed them).
            if let last = state.last, now - last.at < maximumAge, last.answers.map(\.broker) == configuration.brokers {
                return group.any().makeSucceededFuture(last.answers)
            }
            if let inFlight = state.inFlight { return inFlight }
            let probe = probe(configuration)
            state.inFlight = probe
            return probe
        }
        // Every failure is recovered into an answer, so this does not throw.
        let answers = (try? await pending.get()) ?? []
        let reachable = answers.contains { $0.failure == nil }
        let failure = reachable ? nil : Self.describeFailure(answers)
        let brokers = health?.statuses(of: answers.map(\.broker)) ?? answers.map { answer in
            BrokerHealth.Status(broker: answer.broker, up: answer.failure == nil, since: .now, lastError: answer.failure?.reason)
        }
        return Report(brokers: brokers, failure: failure)
    }

    /// "broker unreachable at A: reason" for one broker; all of them for several.
    private static func describeFailure(_ answers: [Answer]) -> String {
        let each = answers.map { "\($0.broker): \($0.failure?.reason ?? "?")" }
        return answers.count == 1 ? "broker unreachable at \(each[0])" : "no broker reachable: \(each.joined(separator: "; "))"
    }

    private func probe(_ configuration: UpstreamConfiguration) -> EventLoopFuture<[Answer]> {
        let loop = group.any()
        let answers = configuration.brokers.map { broker in
            connect(broker, on: loop)
                .flatMap { channel in channel.close().recover { _ in } }
                .map { Answer(broker: broker, failure: nil) }
                .recover { error in Answer(broker: broker, failure: self.failure(error)) }
        }
        return EventLoopFuture.whenAllSucceed(answers, on: loop)
            .always { [state, health] result in
                let answers = (try? result.get()) ?? []
                for answer in answers {
                    health?.record(answer.broker, failure: answer.failure, downTime: configuration.downTime)
                }
                state.withLockedValue { state in
                    state.last = (NIODeadline.now(), answers)
                    state.inFlight = nil
                }
            }
    }

    private func connect(_ broker: UpstreamConfiguration.Endpoint, on loop: EventLoop) -> EventLoopFuture<Channel> {
        let bootstrap = ClientBootstrap(group: loop).connectTimeout(timeout)
        return switch broker {
        case let .tcp(host, port): bootstrap.connect(host: host, port: port)
        case let .unixSocket(path): bootstrap.connect(unixDomainSocketPath: path)
        }
    }

    /// The probe's own timeout is shorter than sessions' `connect_timeout`: say which one passed.
    private func failure(_ error: Error) -> BrokerConnectFailure {
        let failure = BrokerConnectFailure(error)
        guard failure.result == .timeout else { return failure }
        return BrokerConnectFailure(result: .timeout,
                                    reason: "no answer within \(timeout.nanoseconds / 1_000_000) ms to the readiness probe")
    }
}
