#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// IPv6 addresses as text: parsed by the C library's inet_pton, so that a v1 line is read
/// exactly as HAProxy (which uses it) reads it; written in the RFC 5952 form.
enum IPv6Text {
    /// The longest text inet_pton can accept: eight groups, or six and a dotted quad.
    static let maximumLength = 45

    /// Sixteen bytes in network order, or nil if `text` is not an IPv6 address.
    static func parse(_ text: [UInt8]) -> [UInt8]? {
        // inet_pton reads a C string: a NUL inside the field would end it early and let
        // "::1\0junk" through as ::1. Only the characters an address has may reach it.
        guard !text.isEmpty, text.count <= maximumLength, text.allSatisfy(isAddressCharacter) else { return nil }
        var address = in6_addr()
        let cText = text.map { CChar(bitPattern: $0) } + [0]
        let result = cText.withUnsafeBufferPointer { characters in
            withUnsafeMutableBytes(of: &address) { storage in
                inet_pton(AF_INET6, characters.baseAddress, storage.baseAddress)
            }
        }
        guard result == 1 else { return nil }
        return withUnsafeBytes(of: address) { Array($0) }
    }

    private static func isAddressCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"),
            UInt8(ascii: ":"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }

    /// RFC 5952: lower-case hex without heading zeroes, the longest run of two or more zero
    /// groups (the first of equal runs) as "::", and IPv4-mapped addresses with a dotted quad.
    static func format(_ bytes: [UInt8]) -> String {
        guard bytes.count == 16 else { return "" }
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        if groups[0..<5].allSatisfy({ $0 == 0 }) && groups[5] == 0xFFFF {
            return "::ffff:" + bytes[12...].map(String.init).joined(separator: ".")
        }
        var best: Range<Int>?
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            let start = index
            while index < 8 && groups[index] == 0 { index += 1 }
            if index - start >= 2 && index - start > (best?.count ?? 0) { best = start..<index }
        }
        let hex = groups.map { String($0, radix: 16) }
        guard let best else { return hex.joined(separator: ":") }
        return hex[..<best.lowerBound].joined(separator: ":") + "::" + hex[best.upperBound...].joined(separator: ":")
    }
}
