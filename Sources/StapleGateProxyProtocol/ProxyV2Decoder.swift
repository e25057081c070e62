import NIOCore

/// The binary header (proxy-protocol.txt §2.2): a 16-byte prefix (signature, version and
/// command, family and transport, length), the address block, then TLVs to the announced end.
enum ProxyV2Decoder {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let prefixLength = 16

    /// The address families this gateway relays: TCP over IPv4 or IPv6, and UNIX streams.
    enum AddressBlock: Sendable {
        case inet, inet6, unix

        /// §2.2: 2*4 + 2*2, 2*16 + 2*2 and 2*108 bytes.
        var length: Int {
            switch self {
            case .inet: 12
            case .inet6: 36
            case .unix: 216
            }
        }

        var familyByte: UInt8 {
            switch self {
            case .inet: 0x11
            case .inet6: 0x21
            case .unix: 0x31
            }
        }

        var name: String {
            switch self {
            case .inet: "TCP over IPv4"
            case .inet6: "TCP over IPv6"
            case .unix: "UNIX stream"
            }
        }
    }

    static let unixPathLength = 108

    /// The header and its length, or nil while it is incomplete. Each field is checked as soon
    /// as it has arrived, so that garbage is refused without waiting for the announced length.
    static func decode(_ buffer: ByteBuffer, maximumHeaderSize: Int) throws(ProxyHeaderError) -> DecodedHeader? {
        let view = buffer.readableBytesView
        func byte(_ offset: Int) -> UInt8 { view[view.startIndex + offset] }

        for offset in 0..<min(signature.count, view.count) where byte(offset) != signature[offset] {
            throw ProxyHeaderError(
                .noHeader,
                "no PROXY protocol header (the connection starts with bytes \(Printable.hex(view.prefix(offset + 1))), "
                    + "not the PROXY v2 signature)")
        }
        guard view.count > 12 else { return nil }
        let versionCommand = byte(12)
        guard versionCommand >> 4 == 2 else {
            throw .malformed(
                "PROXY v2 version is \(versionCommand >> 4) (byte 13 is 0x\(Printable.hex(versionCommand))), only 2 exists")
        }
        let command: ProxyHeader.Command
        switch versionCommand & 0x0F {
        case 0x0: command = .local
        case 0x1: command = .proxy
        case let other:
            throw .malformed(
                "PROXY v2 command 0x\(String(other, radix: 16, uppercase: true)) is neither LOCAL (0x0) nor PROXY (0x1)")
        }

        guard view.count > 13 else { return nil }
        // §2.2: for LOCAL the receiver must "discard the protocol block including the family
        // which is ignored", so only PROXY headers have their family checked.
        let block = command == .proxy ? try addressBlock(byte(13)) : nil

        guard view.count >= prefixLength else { return nil }
        let length = Int(byte(14)) << 8 | Int(byte(15))
        let total = prefixLength + length
        guard total <= maximumHeaderSize else {
            throw ProxyHeaderError(
                .tooLarge, "PROXY v2 header announces \(total) bytes, more than the \(maximumHeaderSize) allowed")
        }
        if let block, length < block.length {
            throw .malformed("PROXY v2 length \(length) is shorter than the \(block.length)-byte \(block.name) address block")
        }
        guard view.count >= total, var header = buffer.getSlice(at: buffer.readerIndex, length: total) else { return nil }

        // LOCAL, and PROXY for AF_UNSPEC: the connection's own endpoints stand, and the block
        // (whatever it holds: UNSPEC defines no layout for it) is skipped by its length.
        guard let block else { return (ProxyHeader(version: .v2, command: command), total) }
        let whole = header
        header.moveReaderIndex(forwardBy: prefixLength)
        let (source, destination) = try readAddresses(block, from: &header)
        let (tlvs, checksumOffset) = try ProxyTLVDecoder.readTLVs(&header)
        if let checksumOffset { try verifyChecksum(whole, at: checksumOffset) }
        return (ProxyHeader(version: .v2, command: .proxy, source: source, destination: destination, tlvs: tlvs), total)
    }

    /// The 14th byte, for a PROXY header; nil for AF_UNSPEC.
    ///
    /// Datagram families are valid v2 but refused here: a TLS listener for MQTT carries streams,
    /// and a balancer announcing UDP is misconfigured. The spec would let a receiver fall back
    /// to UNSPEC for them, which would hide the client's address without a word.
    static func addressBlock(_ familyTransport: UInt8) throws(ProxyHeaderError) -> AddressBlock? {
        let family = familyTransport >> 4
        let transport = familyTransport & 0x0F
        guard family <= 3 else {
            throw .malformed(
                "PROXY v2 address family 0x\(String(family, radix: 16, uppercase: true)) is not UNSPEC, INET, INET6 or UNIX")
        }
        guard transport <= 2 else {
            throw .malformed(
                "PROXY v2 transport protocol 0x\(String(transport, radix: 16, uppercase: true)) is not UNSPEC, STREAM or DGRAM")
        }
        let familyName = ["AF_UNSPEC", "AF_INET", "AF_INET6", "AF_UNIX"][Int(family)]
        let block: AddressBlock
        switch family {
        case 0: return nil
        case 1: block = .inet
        case 2: block = .inet6
        default: block = .unix
        }
        switch transport {
        case 1:
            return block
        case 2:
            throw ProxyHeaderError(
                .unsupported, "PROXY v2 header is for a datagram connection (\(familyName) DGRAM); this gateway relays streams")
        default:
            throw ProxyHeaderError(
                .unsupported,
                "PROXY v2 header gives \(familyName) addresses over an unspecified transport; this gateway relays streams")
        }
    }

    /// Source address, destination address, then the ports (§2.2, `union proxy_addr`).
    private static func readAddresses(
        _ block: AddressBlock, from header: inout ByteBuffer
    ) throws(ProxyHeaderError) -> (ProxyEndpoint, ProxyEndpoint) {
        // The announced length covers the block (checked before), so these reads succeed.
        let truncated = ProxyHeaderError.malformed("PROXY v2 header ends inside its \(block.name) address block")
        switch block {
        case .inet:
            guard let source = header.readInteger(as: UInt32.self), let destination = header.readInteger(as: UInt32.self),
                let sourcePort = header.readInteger(as: UInt16.self), let destinationPort = header.readInteger(as: UInt16.self)
            else { throw truncated }
            return (
                .ipv4(ProxyIPv4Address(value: source), port: sourcePort),
                .ipv4(ProxyIPv4Address(value: destination), port: destinationPort)
            )
        case .inet6:
            guard let sourceBytes = header.readBytes(length: 16), let source = ProxyIPv6Address(bytes: sourceBytes),
                let destinationBytes = header.readBytes(length: 16), let destination = ProxyIPv6Address(bytes: destinationBytes),
                let sourcePort = header.readInteger(as: UInt16.self), let destinationPort = header.readInteger(as: UInt16.self)
            else { throw truncated }
            return (.ipv6(source, port: sourcePort), .ipv6(destination, port: destinationPort))
        case .unix:
            guard let source = header.readBytes(length: unixPathLength),
                let destination = header.readBytes(length: unixPathLength)
            else { throw truncated }
            return (.unix(path: unixPath(source)), .unix(path: unixPath(destination)))
        }
    }

    /// A sun_path field without its padding: a filesystem path ends at its first NUL (the
    /// bytes after it are whatever the sender's sockaddr held); an abstract name starts with a
    /// NUL and runs to the end, so only trailing NULs go. All NULs: an unnamed socket, [].
    static func unixPath(_ field: [UInt8]) -> [UInt8] {
        guard field.first == 0 else { return Array(field.prefix { $0 != 0 }) }
        guard let last = field.lastIndex(where: { $0 != 0 }) else { return [] }
        return Array(field[...last])
    }

    /// §2.2.3: the checksum of the whole header with the checksum field zeroed. `header` holds
    /// exactly the header's bytes, readable from index 0.
    private static func verifyChecksum(_ header: ByteBuffer, at offset: Int) throws(ProxyHeaderError) {
        var bytes = Array(header.readableBytesView)
        guard offset >= 0, offset + 4 <= bytes.count, let sent = header.getInteger(at: offset, as: UInt32.self) else {
            throw .malformed("PROXY v2 CRC32C TLV lies outside the header")
        }
        bytes.replaceSubrange(offset..<offset + 4, with: [0, 0, 0, 0])
        let computed = CRC32C.checksum(bytes)
        guard computed == sent else {
            throw ProxyHeaderError(
                .checksumMismatch,
                "PROXY v2 CRC32C TLV says 0x\(hex32(sent)) but the header's checksum is 0x\(hex32(computed))")
        }
    }

    static func hex32(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}
