import Foundation
import Logging
import NIOCore
import NIOPosix
import StapleGateTLS
import TestSupport

/// One soak device, for the whole run: connects (mutual TLS with its own certificate, MQTT
/// 3.1.1 CONNECT with its name as client id), publishes numbered QoS 1 messages, leaves cleanly
/// after its session's time, and comes back; refused, it retries later. Its numbers go on across
/// sessions, and a message a session ended without a PUBACK for is sent again on the next one,
/// as an MQTT client keeping its promise does.
///
/// Lives on one event loop: every method and callback runs there, so there is no lock.
final class SoakDevice: @unchecked Sendable {
    let name: String
    private let context: ClientTLSContext
    private let port: Int
    private let plan: SoakPlan
    private let recorder: SoakRecorder
    let eventLoop: EventLoop

    private enum State {
        case waiting(Scheduled<Void>?)
        case connecting(started: Double)
        case inSession(Channel)
        case stopped
    }

    private var state: State = .waiting(nil)
    private var stopping = false
    private var stoppedPromise: EventLoopPromise<Void>?
    private var nextNumber = 1
    /// Sent on a session that ended before its PUBACK came: sent again on the next one.
    private var unacknowledged: [Int] = []

    init(name: String, context: ClientTLSContext, port: Int, plan: SoakPlan, recorder: SoakRecorder, eventLoop: EventLoop) {
        self.name = name
        self.context = context
        self.port = port
        self.plan = plan
        self.recorder = recorder
        self.eventLoop = eventLoop
    }

    /// First connect after `delay` seconds (the ramp).
    func start(after delay: Double) {
        eventLoop.execute { self.schedule(after: delay) }
    }

    /// No new connection; an open session leaves cleanly (its messages acknowledged first).
    /// Completes once the device holds no connection.
    func stop() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.stopping = true
            switch self.state {
            case let .waiting(scheduled):
                scheduled?.cancel()
                self.state = .stopped
                return self.eventLoop.makeSucceededFuture(())
            case .stopped:
                return self.eventLoop.makeSucceededFuture(())
            case let .inSession(channel):
                // The promise first: a session with nothing in flight ends within the event.
                let promise = self.stoppedPromise ?? self.eventLoop.makePromise()
                self.stoppedPromise = promise
                channel.pipeline.fireUserInboundEventTriggered(SoakSession.Leave())
                return promise.futureResult
            case .connecting:
                let promise = self.stoppedPromise ?? self.eventLoop.makePromise()
                self.stoppedPromise = promise
                return promise.futureResult
            }
        }
    }

    private func schedule(after delay: Double) {
        guard !stopping else {
            state = .stopped
            stoppedPromise?.succeed(())
            return
        }
        state = .waiting(eventLoop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) { self.connect() })
    }

    private func connect() {
        guard case .waiting = state, !stopping else { return }
        let started = recorder.now
        state = .connecting(started: started)
        let session = SoakSession(device: self, connectStarted: started, resend: unacknowledged, plan: plan)
        unacknowledged = []
        let context = context
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(Int64(plan.stuckAfterSeconds)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Its warnings ("TLS error from server: … alert certificate revoked") are the reason
                    // a refused connection gives.
                    let logger = Logger.recording(into: session.alerts, label: "soak-device", level: .warning)
                    let tls = try OpenSSLClientHandler(context: context, serverName: "localhost", logger: logger)
                    try channel.pipeline.syncOperations.addHandlers([tls, session])
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .whenFailure { error in session.ended(.refused("cannot connect: \(error)")) }
    }

    // MARK: From the session (on this event loop)

    func sessionOpened(_ channel: Channel, connectStarted: Double) -> Int {
        state = .inSession(channel)
        return recorder.admitted(name, connectStarted: connectStarted)
    }

    /// Where the device is, for a run that does not end.
    func describeState() -> EventLoopFuture<String> {
        eventLoop.submit {
            switch self.state {
            case .waiting: return "waiting"
            case let .connecting(started): return "connecting since \(Int(started)) s"
            case .inSession: return "in session"
            case .stopped: return "stopped"
            }
        }
    }

    /// The run is ending: a session just admitted leaves at once.
    var isStopping: Bool { stopping }

    func takeNumber() -> Int {
        defer { nextNumber += 1 }
        return nextNumber
    }

    func sessionEnded(_ outcome: SoakSession.Outcome, admission: Int?, unacknowledged left: [Int]) {
        if let admission { recorder.closed(admission: admission) }
        unacknowledged = left
        var delay = Double.random(in: plan.reconnectDelaySeconds)
        switch outcome {
        case .refused where stopping, .cut where stopping:
            break  // the run's end closed it
        case .left:
            break
        case let .refused(reason):
            recorder.failed(name, "refused: \(reason)")
            delay = Double.random(in: plan.retryDelaySeconds)
        case let .cut(reason):
            recorder.failed(name, "closed: \(reason)")
        case let .stuck(what):
            recorder.failed(name, "stuck: \(what)")
        }
        schedule(after: delay)
    }

    var recorderForSession: SoakRecorder { recorder }
}
