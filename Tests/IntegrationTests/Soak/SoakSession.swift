import Foundation
import NIOCore
import StapleGateTLS
import TestSupport

/// One connection of a `SoakDevice`, after its TLS handler: MQTT CONNECT on the handshake,
/// numbered QoS 1 PUBLISHes while admitted, DISCONNECT once every PUBACK is in at the
/// session's end. Tells the device once how the connection ended. On the channel's event loop.
final class SoakSession: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Asks the session to leave now (the run is ending).
    struct Leave {}

    enum Outcome {
        /// The device left cleanly: every message acknowledged, DISCONNECT sent.
        case left
        /// Never admitted: the TLS alert, the CONNACK's code, or how the connection ended.
        case refused(String)
        /// Admitted, then the other side closed.
        case cut(String)
        /// No CONNACK or PUBACK within the plan's limit.
        case stuck(String)
    }

    private enum State {
        case handshaking
        case awaitingConnack(since: Double)
        case publishing
        /// Waiting for the last PUBACKs, then DISCONNECT.
        case leaving(since: Double)
        case ended
    }

    private unowned let device: SoakDevice
    private let connectStarted: Double
    private let plan: SoakPlan
    private var state: State = .handshaking
    private var channel: Channel?
    private var admission: Int?
    /// Messages not acknowledged yet: packet id → number, and when each was sent.
    private var inFlight: [UInt16: (number: Int, sent: Double)] = [:]
    private var nextPacketID: UInt16 = 1
    private var resend: [Int]
    private var received = ByteBuffer()
    /// What the TLS handler warned of: the last is why the connection ended.
    let alerts = LogRecorder()
    private var noted: String?
    private var lastAlert: String? { alerts.entries.last?.message ?? noted }
    private var timers: [RepeatedTask] = []
    private var lifetime: Scheduled<Void>?

    init(device: SoakDevice, connectStarted: Double, resend: [Int], plan: SoakPlan) {
        self.device = device
        self.connectStarted = connectStarted
        self.resend = resend
        self.plan = plan
    }

    private var now: Double { device.recorderForSession.now }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        // Stuck checks, once a second: a CONNACK or a PUBACK overdue ends the connection.
        timers.append(context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            self.checkOverdue()
        })
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is Leave {
            leave()
            return
        }
        guard let event = event as? TLSEvent else { return context.fireUserInboundEventTriggered(event) }
        switch event {
        case .handshakeCompleted:
            state = .awaitingConnack(since: now)
            write(SoakMQTT.connect(clientID: device.name))
        case let .handshakeFailed(reason):
            ended(.refused(lastAlert ?? reason))
        case .deviceCertificateJudged:
            break
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        while let packet = SoakMQTT.nextPacket(&received) {
            handle(packet)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .handshaking: ended(.refused(lastAlert ?? "closed during the TLS handshake"))
        case .awaitingConnack: ended(.refused(lastAlert ?? "closed before CONNACK"))
        case .publishing, .leaving: ended(.cut(lastAlert ?? "connection closed by the gateway"))
        case .ended: break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        noted = noted ?? "\(error)"
        context.close(promise: nil)
    }

    private func handle(_ packet: SoakMQTT.Packet) {
        switch (packet, state) {
        case let (.connack(code), .awaitingConnack):
            guard code == 0, let channel else { return ended(.refused("CONNACK return code \(code)")) }
            state = .publishing
            admission = device.sessionOpened(channel, connectStarted: connectStarted)
            for number in resend { publish(number, again: true) }
            resend = []
            let first = Double.random(in: 0..<plan.publishEverySeconds)
            timers.append(channel.eventLoop.scheduleRepeatedTask(initialDelay: .nanoseconds(Int64(first * 1e9)),
                                                                 delay: .nanoseconds(Int64(plan.publishEverySeconds * 1e9))) { _ in
                if case .publishing = self.state { self.publish(self.device.takeNumber(), again: false) }
            })
            let stay = Double.random(in: plan.sessionSeconds)
            lifetime = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(stay * 1e9))) { self.leave() }
            if device.isStopping { leave() }
        case let (.puback(id), .publishing), let (.puback(id), .leaving):
            guard let message = inFlight.removeValue(forKey: id) else { return }
            device.recorderForSession.acknowledged(device.name, message.number)
            if case .leaving = state, inFlight.isEmpty { disconnect() }
        default:
            ended(.cut("unexpected packet \(packet) in \(state)"))
        }
    }

    private func publish(_ number: Int, again: Bool) {
        let id = nextPacketID
        nextPacketID = nextPacketID == UInt16.max ? 1 : nextPacketID + 1
        inFlight[id] = (number, now)
        device.recorderForSession.published(device.name, number, again: again)
        write(SoakMQTT.publish(topic: "soak/\(device.name)", packetID: id, payload: "\(number)"))
    }

    private func leave() {
        switch state {
        case .publishing:
            state = .leaving(since: now)
            if inFlight.isEmpty { disconnect() }
        case .handshaking, .awaitingConnack:
            channel?.close(promise: nil)  // reported as refused: the run is ending
        case .leaving, .ended:
            break
        }
    }

    private func disconnect() {
        write(SoakMQTT.disconnect)
        ended(.left)
    }

    private func checkOverdue() {
        let limit = plan.stuckAfterSeconds
        switch state {
        case let .awaitingConnack(since) where now - since > limit:
            ended(.stuck("no CONNACK in \(Int(limit)) s"))
        case .publishing, .leaving:
            if let oldest = inFlight.values.map(\.sent).min(), now - oldest > limit {
                ended(.stuck("no PUBACK in \(Int(limit)) s"))
            }
        default:
            break
        }
    }

    private func write(_ bytes: [UInt8]) {
        guard let channel else { return }
        channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
    }

    /// Once per connection: stops the timers, closes, tells the device.
    func ended(_ outcome: Outcome) {
        guard !{ if case .ended = state { return true } else { return false } }() else { return }
        state = .ended
        timers.forEach { $0.cancel() }
        lifetime?.cancel()
        channel?.close(promise: nil)
        let left = inFlight.values.map(\.number).sorted() + resend
        device.sessionEnded(outcome, admission: admission, unacknowledged: left)
    }
}
