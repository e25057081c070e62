import Foundation
import NIOCore
import StapleGateAdmission

/// While message trace is on for a device: records each PUBLISH both ways (direction, topic,
/// QoS, size; never the payload). Observes the plaintext between TLS and the proxy without
/// altering or holding a byte; a stream it cannot follow switches it off, not the session.
final class MessageTraceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private var fromDevice: MQTTPacketFramer
    private var toDevice: MQTTPacketFramer
    private let tracer: ConnectionTracer
    /// Until when the operator's switch (`trace enable … --for`) is on now, read per packet so
    /// that `trace disable` (or a new `enable`) applies to this session too: nil when off. Once
    /// it is off or over, the handler removes itself.
    private let until: () -> Date?

    init(version: MQTTProtocolVersion, until: @escaping () -> Date?, tracer: ConnectionTracer) {
        fromDevice = MQTTPacketFramer(protocolVersion: version, direction: .deviceToBroker)
        toDevice = MQTTPacketFramer(protocolVersion: version, direction: .brokerToDevice)
        self.until = until
        self.tracer = tracer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let expired = expireIfDue()
        if !done { record(fromDevice.feed(unwrapInboundIn(data))) }
        context.fireChannelRead(data)
        // Only after the bytes went on: a removed handler can no longer pass anything along.
        if expired { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let expired = expireIfDue()
        if !done { record(toDevice.feed(unwrapOutboundIn(data))) }
        context.write(data, promise: promise)
        if expired { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }

    /// Set once the trace period is over; the handler then leaves the pipeline.
    private var done = false

    /// True the first time the trace period is found over (the caller then removes the handler,
    /// after passing its bytes on).
    private func expireIfDue() -> Bool {
        guard !done else { return false }
        let switchedOn = until()
        if let switchedOn, Date() < switchedOn { return false }
        done = true
        tracer.record(.publish, switchedOn == nil ? "message trace ended (switched off)" : "message trace ended (its time ran out)")
        return true
    }

    private func record(_ summaries: [MQTTPacketSummary]) {
        for summary in summaries {
            switch summary {
            case let .publish(publish):
                tracer.record(.publish,
                              "PUBLISH \(publish.direction) \"\(publish.topic)\" QoS \(publish.qos.rawValue)\(publish.retain ? " retained" : ""), \(publish.payloadSize) bytes",
                              details: ["direction": publish.direction.rawValue, "topic": publish.topic,
                                        "qos": "\(publish.qos.rawValue)", "retain": "\(publish.retain)",
                                        "payload_bytes": "\(publish.payloadSize)", "packet_bytes": "\(publish.size)"])
            case let .desynchronised(reason):
                tracer.record(.publish, "message trace stopped for this session: \(reason)", failure: true)
            case .packet:
                break
            }
        }
    }
}
