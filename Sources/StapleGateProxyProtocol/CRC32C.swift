/// CRC-32C (Castagnoli), the checksum of PP2_TYPE_CRC32C, "as described in RFC 4960, Appendix
/// B": the reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF.
/// crc32c("123456789") is 0xE3069283.
public enum CRC32C {
    /// One entry per byte value: the CRC of that byte alone, so that each input byte costs one
    /// lookup instead of eight shifts. A header is at most 64 KiB; no wider tables are needed.
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 {
            crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
        }
        return crc
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        update(0, with: bytes)
    }

    /// Continues `crc` (a finished checksum of earlier bytes, or 0 to start) over `bytes`.
    public static func update(_ crc: UInt32, with bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = ~crc
        for byte in bytes {
            crc = table[Int(UInt8(truncatingIfNeeded: crc) ^ byte)] ^ (crc >> 8)
        }
        return ~crc
    }
}
