import NIOCore

/// `upstream.idle_timeout` on the device's channel: when nothing has been read from the device
/// and nothing flushed to it for `timeout`, fires `IdleStateHandler.IdleStateEvent.all`, which
/// the glue turns into the session's end.
///
/// Why not NIO's `IdleStateHandler`: it hangs a promise and a callback on every write to note
/// when the write completed, about 2 % of the gateway's CPU per relayed message. Here activity is
/// a timestamp taken once per read batch and once per flush. A flush stands in for a completed
/// write: a device that stops reading stops the flushes too, because the glue stops reading from
/// the broker while the device's channel is not writable. One timer per session, re-armed from
/// the last activity when it fires, as NIO's is.
final class SessionIdleHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    private let timeout: TimeAmount
    private var lastActivity = NIODeadline.distantPast
    /// Inside a read batch: reads are activity until the batch ends.
    private var reading = false
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if reading {
            reading = false
            lastActivity = context.eventLoop.now
        }
        context.fireChannelReadComplete()
    }

    func flush(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        context.flush()
    }

    private func start(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        lastActivity = context.eventLoop.now
        arm(context: context, deadline: lastActivity + timeout)
    }

    private func stop() {
        timer?.cancel()
        timer = nil
    }

    private func arm(context: ChannelHandlerContext, deadline: NIODeadline) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            check(context: context)
        }
    }

    private func check(context: ChannelHandlerContext) {
        timer = nil
        guard context.channel.isActive else { return }
        let now = context.eventLoop.now
        if !reading, now - lastActivity >= timeout {
            arm(context: context, deadline: now + timeout)
            context.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.all)
        } else {
            arm(context: context, deadline: reading ? now + timeout : lastActivity + timeout)
        }
    }
}
