import NIOCore
import NIOPosix

/// Dials one session's brokers in its plan's order until one accepts, on the device channel's
/// event loop (so the glue pair that follows never crosses threads). Each connect's outcome goes
/// to the shared `BrokerHealth` and the broker's connect counter.
struct BrokerDialer {
    let upstream: UpstreamConfiguration
    let health: BrokerHealth

    struct Connected {
        let channel: Channel
        let broker: UpstreamConfiguration.Endpoint
        /// Of the connect that succeeded.
        let duration: Duration
    }

    /// No broker of the plan could be reached (or the device left before one was).
    struct Exhausted: Error {
        /// Each broker tried and why it failed, in order.
        let attempts: [(broker: UpstreamConfiguration.Endpoint, failure: BrokerConnectFailure)]
    }

    /// - Parameter attemptFailed: called on the event loop when a broker failed and another is
    ///   left to try (the failed broker, why, the next one); returning false stops there (the
    ///   device has gone).
    func dial(_ plan: BrokerHealth.Plan, on eventLoop: EventLoop,
              attemptFailed: @escaping (UpstreamConfiguration.Endpoint, BrokerConnectFailure, UpstreamConfiguration.Endpoint) -> Bool)
        -> EventLoopFuture<Connected> {
        let promise = eventLoop.makePromise(of: Connected.self)
        attempt(0, of: plan, on: eventLoop, failures: [], promise: promise, attemptFailed: attemptFailed)
        return promise.futureResult
    }

    private func attempt(_ index: Int, of plan: BrokerHealth.Plan, on eventLoop: EventLoop,
                         failures: [(broker: UpstreamConfiguration.Endpoint, failure: BrokerConnectFailure)],
                         promise: EventLoopPromise<Connected>,
                         attemptFailed: @escaping (UpstreamConfiguration.Endpoint, BrokerConnectFailure, UpstreamConfiguration.Endpoint) -> Bool) {
        let candidate = plan.candidates[index]
        let started = NIODeadline.now()
        connect(to: candidate.broker, on: eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case let .success(channel):
                candidate.metrics?.counted(.ok)
                if !candidate.wasUp { health.record(candidate.broker, failure: nil, downTime: upstream.downTime) }
                releaseTrials(after: index, of: plan)
                promise.succeed(Connected(channel: channel, broker: candidate.broker,
                                          duration: .nanoseconds((NIODeadline.now() - started).nanoseconds)))
            case let .failure(error):
                let failure = BrokerConnectFailure(error)
                candidate.metrics?.counted(failure.result)
                health.record(candidate.broker, failure: failure, downTime: upstream.downTime)
                let failures = failures + [(candidate.broker, failure)]
                let next = index + 1
                guard next < plan.candidates.count, attemptFailed(candidate.broker, failure, plan.candidates[next].broker) else {
                    releaseTrials(after: index, of: plan)
                    promise.fail(Exhausted(attempts: failures))
                    return
                }
                attempt(next, of: plan, on: eventLoop, failures: failures, promise: promise, attemptFailed: attemptFailed)
            }
        }
    }

    private func releaseTrials(after index: Int, of plan: BrokerHealth.Plan) {
        for candidate in plan.candidates[(index + 1)...] where candidate.isTrial {
            health.release(candidate.broker)
        }
    }

    private func connect(to broker: UpstreamConfiguration.Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(upstream.connectTimeout))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.recvAllocator, value: SessionReceiveBuffers.allocator)
        switch broker {
        case let .tcp(host, port):
            return bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case let .unixSocket(path):
            return bootstrap.connect(unixDomainSocketPath: path)
        }
    }
}
