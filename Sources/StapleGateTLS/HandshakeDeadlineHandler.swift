import Logging
import NIOCore

/// Closes a connection whose TLS handshake has not finished in time, so a device that connects
/// and sends nothing (or trickles bytes) cannot hold a socket and a handshake state forever.
/// Sits right after `OpenSSLServerHandler` and removes itself once the handshake has ended.
public final class HandshakeDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private let logger: Logger
    /// Thins the timeout lines during a flood (shared by a gateway's connections); nil logs each.
    private let failureLog: HandshakeFailureLog?
    private var deadline: Scheduled<Void>?

    public init(timeout: TimeAmount, logger: Logger, failureLog: HandshakeFailureLog? = nil) {
        self.timeout = timeout
        self.logger = logger
        self.failureLog = failureLog
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Pass the event on before leaving: a removed handler's context no longer reaches the next.
        context.fireUserInboundEventTriggered(event)
        if event is TLSEvent {
            disarm()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let timeout = self.timeout
        let logger = self.logger
        let failureLog = self.failureLog
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            let message: Logger.Message = "TLS handshake not completed within \(Self.describe(timeout)); closing"
            if let failureLog {
                failureLog.log(logger, level: .warning, message, on: context.eventLoop)
            } else {
                logger.warning(message)
            }
            context.close(promise: nil)
        }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }

    public static func describe(_ amount: TimeAmount) -> String {
        let milliseconds = amount.nanoseconds / 1_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}
