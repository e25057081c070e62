import Logging
import NIOCore

/// One half of a pair that joins two channels (device and broker) into a byte pipe.
///
/// Backpressure: a side only asks its channel for more bytes while the partner channel is
/// writable, so a slow broker stops reads from the device and vice versa. Half-close: the end of
/// one side's input becomes an output shutdown on the other. Anything else that ends one channel
/// closes the other. Both halves live on the same event loop, so they call each other directly.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var readRequestedWhilePartnerBlocked = false
    private var inputClosed = false
    private var outputClosed = false
    private let side: String
    private let logger: Logger
    /// What this side read and handed to its partner; nil when metrics are not wanted.
    private var relayed: RelayTally?
    /// On the device side, once the broker finished sending: the end of the device's grace.
    private var closeGrace: Scheduled<Void>?

    /// How long a device may keep its side open after the broker finished sending (and its
    /// output to the device was shut). An MQTT session is over once the broker closes; a device
    /// that never closes its side (asleep, broken, hostile) would hold both descriptors and its
    /// session until the idle timeout, an hour by default.
    static let deviceCloseGrace: TimeAmount = .seconds(10)

    private init(side: String, logger: Logger, relayed: RelayTally?) {
        self.side = side
        self.logger = logger
        self.relayed = relayed
    }

    /// Two glue handlers that know each other: install one in each channel's pipeline.
    static func matchedPair(logger: Logger, metrics: ProxyMetrics? = nil) -> (device: GlueHandler, upstream: GlueHandler) {
        let device = GlueHandler(side: "device", logger: logger,
                                 relayed: metrics.map { RelayTally(counters: $0.counters(.toBroker)) })
        let upstream = GlueHandler(side: "broker", logger: logger,
                                   relayed: metrics.map { RelayTally(counters: $0.counters(.toDevice)) })
        device.partner = upstream
        upstream.partner = device
        return (device, upstream)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeGrace?.cancel()
        closeGrace = nil
        relayed?.publish()
        self.context = nil
        partner = nil
    }

    // MARK: Called by the partner

    private func partnerWrite(_ data: ByteBuffer) {
        context?.write(wrapOutboundOut(data), promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    /// The partner's input ended: nothing more will be written here, so shut our output.
    private func partnerInputEnded() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        // A channel whose both directions are finished has nothing left to do.
        context.close(mode: inputClosed ? .all : .output, promise: nil)
        guard side == "device", !inputClosed else { return }
        closeGrace = context.eventLoop.scheduleTask(in: Self.deviceCloseGrace) { [weak self] in
            guard let self, let context = self.context else { return }
            self.logger.info("the device had not closed its side \(Self.deviceCloseGrace.nanoseconds / 1_000_000_000) s after the broker closed; closing")
            self.announceEnding(closedBy: "broker", reason: "the broker closed its connection "
                                + "(the device had not closed its side \(Self.deviceCloseGrace.nanoseconds / 1_000_000_000) s later)")
            context.close(promise: nil)
        }
    }

    private func partnerClosed() {
        announceEnding(closedBy: partner?.side ?? "broker", reason: "the \(partner?.side ?? "broker") closed its connection")
        context?.close(promise: nil)
    }

    /// Tells the device pipeline's observers (traces) why the session ends; the broker side's
    /// pipeline has none.
    private func announceEnding(closedBy: String, reason: String) {
        guard side == "device", let context else { return }
        context.pipeline.fireUserInboundEventTriggered(ProxyEvent.sessionEnding(closedBy: closedBy, reason: reason))
    }

    private func partnerWritabilityChanged(isWritable: Bool) {
        if isWritable, readRequestedWhilePartnerBlocked {
            readRequestedWhilePartnerBlocked = false
            context?.read()
        }
    }

    private var partnerIsWritable: Bool {
        partner?.context?.channel.isWritable ?? false
    }

    // MARK: Own channel

    /// Bytes that reached the partner without passing this handler (the device's CONNECT and
    /// whatever came with it, held while the broker connection opened), counted as relayed.
    func countRelayed(_ buffer: ByteBuffer) {
        relayed?.count(buffer)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        relayed?.count(buffer)
        partner?.partnerWrite(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        relayed?.publish()
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        relayed?.publish()
        partner?.partnerClosed()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            logger.debug("\(side) finished sending")
            partner?.partnerInputEnded()
            if outputClosed { context.close(promise: nil) }
        } else if let event = event as? IdleStateHandler.IdleStateEvent, event == .all {
            logger.info("session idle too long; closing")
            announceEnding(closedBy: "gateway", reason: "no traffic for longer than the idle timeout")
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let reason = ProxySessionHandler.describe(error)
        logger.info("\(side) connection error: \(reason)")
        announceEnding(closedBy: side, reason: "\(side) connection error: \(reason)")
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        partner?.partnerWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partnerIsWritable {
            context.read()
        } else {
            readRequestedWhilePartnerBlocked = true
        }
    }
}
