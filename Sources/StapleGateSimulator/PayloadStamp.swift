#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the load generator writes at the start of each PUBLISH payload so a subscriber can tell
/// how long the message took: which publisher sent it, its sequence number, and the send time on
/// the monotonic clock (shared by every process of a machine, so a subscriber in another process
/// could read it too). 24 bytes, big-endian: "SGL1", publisher (UInt32), sequence (UInt64),
/// sent at (UInt64 nanoseconds). The rest of the payload is filler.
public struct PayloadStamp: Equatable, Sendable {
    public static let size = 24
    static let magic: UInt32 = 0x5347_4C31  // "SGL1"

    public var publisher: UInt32
    public var sequence: UInt64
    public var sentNanoseconds: UInt64

    public init(publisher: UInt32, sequence: UInt64, sentNanoseconds: UInt64) {
        self.publisher = publisher
        self.sequence = sequence
        self.sentNanoseconds = sentNanoseconds
    }

    /// Writes the stamp over the first `size` bytes of `payload` (which must hold them).
    public func write(into payload: UnsafeMutableRawBufferPointer) {
        precondition(payload.count >= Self.size, "a payload stamp needs \(Self.size) bytes")
        payload.storeBytes(of: Self.magic.bigEndian, toByteOffset: 0, as: UInt32.self)
        payload.storeBytes(of: publisher.bigEndian, toByteOffset: 4, as: UInt32.self)
        payload.storeBytes(of: sequence.bigEndian, toByteOffset: 8, as: UInt64.self)
        payload.storeBytes(of: sentNanoseconds.bigEndian, toByteOffset: 16, as: UInt64.self)
    }

    /// The stamp at the start of `payload`; nil when it is too short or was not written by `write`.
    public init?(reading payload: UnsafeRawBufferPointer) {
        guard payload.count >= Self.size,
              UInt32(bigEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == Self.magic else { return nil }
        publisher = UInt32(bigEndian: payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        sequence = UInt64(bigEndian: payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        sentNanoseconds = UInt64(bigEndian: payload.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
    }

    public init?(reading bytes: [UInt8]) {
        guard let stamp = bytes.withUnsafeBytes({ PayloadStamp(reading: $0) }) else { return nil }
        self = stamp
    }

    /// A payload of `size` bytes carrying this stamp (filler after it), for tests and callers
    /// that do not reuse a buffer.
    public func payload(size: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        bytes.withUnsafeMutableBytes { write(into: $0) }
        return bytes
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of payload stamps and of every duration measured.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
