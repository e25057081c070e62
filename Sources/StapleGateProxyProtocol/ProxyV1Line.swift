import NIOCore

/// The human-readable header (proxy-protocol.txt §2.1):
/// "PROXY TCP4|TCP6|UNKNOWN <source> <destination> <source port> <destination port>\r\n".
enum ProxyV1Line {
    static let signature = Array("PROXY ".utf8)
    /// The worst case of §2.1, "PROXY UNKNOWN" with two full IPv6 addresses, CRLF included.
    static let maximumLength = 107

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let space = UInt8(ascii: " ")

    /// The header and its length, or nil while the CRLF has not arrived. `searched` carries
    /// over, between calls on the same growing buffer, how far the CRLF search has got.
    static func decode(_ buffer: ByteBuffer, searched: inout Int) throws(ProxyHeaderError) -> DecodedHeader? {
        let view = buffer.readableBytesView
        func byte(_ offset: Int) -> UInt8 { view[view.startIndex + offset] }

        // Each byte of "PROXY " is checked as it arrives: an HTTP "POST" fails at its "O".
        for offset in 0..<min(signature.count, view.count) where byte(offset) != signature[offset] {
            let start = Printable.quoted(view.prefix(offset + 1))
            throw ProxyHeaderError(.noHeader, "no PROXY protocol header (the connection starts with \(start), not \"PROXY \")")
        }
        guard view.count > signature.count else { return nil }

        // §2.1: the line ends at the first CRLF within 107 bytes, and "the receiver must not
        // tolerate a single CR or LF character to end the line".
        let limit = min(view.count, maximumLength)
        // A buffer shorter than the last one (not the same connection's bytes) starts over.
        var offset = max(searched <= view.count ? searched : 0, signature.count)
        while offset < limit {
            let current = byte(offset)
            if byte(offset - 1) == cr {
                guard current == lf else { throw .malformed("PROXY v1 line has a CR that is not followed by LF") }
                let line = Array(view[(view.startIndex + signature.count)..<(view.startIndex + offset - 1)])
                return (try parse(line), offset + 1)
            }
            if current == lf { throw .malformed("PROXY v1 line ends with a bare LF (CRLF is required)") }
            offset += 1
        }
        searched = offset
        if view.count >= maximumLength {
            throw ProxyHeaderError(
                .tooLarge, "PROXY v1 line has no CRLF within its first \(maximumLength) bytes (the longest a v1 line can be)")
        }
        return nil
    }

    /// The fields after "PROXY " and before the CRLF, separated by exactly one space each.
    static func parse(_ line: [UInt8]) throws(ProxyHeaderError) -> ProxyHeader {
        let fields = line.split(separator: space, omittingEmptySubsequences: false)
        let protocolField = fields.first ?? []
        let isIPv6: Bool
        if protocolField.elementsEqual("UNKNOWN".utf8) {
            // §2.1: "the receiver must ignore anything presented before the CRLF".
            return ProxyHeader(version: .v1, command: .proxy)
        } else if protocolField.elementsEqual("TCP4".utf8) {
            isIPv6 = false
        } else if protocolField.elementsEqual("TCP6".utf8) {
            isIPv6 = true
        } else {
            throw .malformed("PROXY v1 protocol \(Printable.quoted(protocolField)) is not TCP4, TCP6 or UNKNOWN")
        }

        let names = ["source address", "destination address", "source port", "destination port"]
        guard fields.count >= 5 else { throw .malformed("PROXY v1 line ends before the \(names[fields.count - 1])") }
        guard fields.count == 5 else {
            let rest = line[fields[4].endIndex...]
            throw .malformed("PROXY v1 line goes on after the destination port: \(Printable.quoted(rest))")
        }
        // Fields are checked in line order, so that the error names the first bad one.
        let sourceAddress = try address(fields[1], "source", isIPv6: isIPv6)
        let destinationAddress = try address(fields[2], "destination", isIPv6: isIPv6)
        let sourcePort = try port(fields[3], "source")
        let destinationPort = try port(fields[4], "destination")
        return ProxyHeader(
            version: .v1, command: .proxy,
            source: sourceAddress.endpoint(port: sourcePort), destination: destinationAddress.endpoint(port: destinationPort))
    }

    private enum Address {
        case v4(ProxyIPv4Address)
        case v6(ProxyIPv6Address)

        func endpoint(port: UInt16) -> ProxyEndpoint {
            switch self {
            case .v4(let address): .ipv4(address, port: port)
            case .v6(let address): .ipv6(address, port: port)
            }
        }
    }

    private static func address(_ field: ArraySlice<UInt8>, _ side: String, isIPv6: Bool) throws(ProxyHeaderError) -> Address {
        let text = Array(field)
        if isIPv6, let bytes = IPv6Text.parse(text), let address = ProxyIPv6Address(bytes: bytes) { return .v6(address) }
        if !isIPv6, let address = ProxyIPv4Address(utf8: text) { return .v4(address) }
        let family = isIPv6 ? "IPv6" : "IPv4"
        throw .malformed(
            "PROXY v1 \(side) address \(Printable.quoted(field)) is not an \(family) address "
                + "(the line says TCP\(isIPv6 ? 6 : 4))")
    }

    private static func port(_ field: ArraySlice<UInt8>, _ side: String) throws(ProxyHeaderError) -> UInt16 {
        guard let port = DecimalText.value(of: field, maximum: Int(UInt16.max)) else {
            throw .malformed("PROXY v1 \(side) port \(Printable.quoted(field)) is not a port")
        }
        return UInt16(port)
    }
}
