import NIOCore

/// The receive buffers of a session's two channels (device and broker). NIO keeps each
/// channel's last receive buffer for the next read, so its size is memory every idle session
/// holds twice: start small (an idle MQTT session reads a few dozen bytes per keepalive) and
/// let the adaptive allocator grow it for sessions that stream.
public enum SessionReceiveBuffers {
    public static let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
}
