import NIOCore

/// Writes PROXY protocol headers, as a balancer does (HAProxy's `send-proxy`, `send-proxy-v2`,
/// `send-proxy-v2-ssl-cn`): for tests of what receives them, and for relaying one onward.
///
/// It refuses what `ProxyHeaderParser` would refuse or read back differently, so that every
/// header it writes parses to the value it was given.
public enum ProxyHeaderEncoder {
    /// Writes `header` in the format of its `version`. `addingCRC32C` applies to v2 only.
    public static func encode(
        _ header: ProxyHeader, addingCRC32C: Bool = false, into buffer: inout ByteBuffer
    ) throws(ProxyHeaderEncodingError) {
        switch header.version {
        case .v1: try encodeV1(header, into: &buffer)
        case .v2: try encodeV2(header, addingCRC32C: addingCRC32C, into: &buffer)
        }
    }

    /// The encoded header as bytes.
    public static func bytes(_ header: ProxyHeader, addingCRC32C: Bool = false) throws(ProxyHeaderEncodingError) -> [UInt8] {
        var buffer = ByteBuffer()
        try encode(header, addingCRC32C: addingCRC32C, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// The v1 line (§2.1). It has no LOCAL command and no TLVs; an endpoint-less header
    /// becomes "PROXY UNKNOWN".
    public static func encodeV1(_ header: ProxyHeader, into buffer: inout ByteBuffer) throws(ProxyHeaderEncodingError) {
        guard header.command == .proxy else {
            throw ProxyHeaderEncodingError("PROXY v1 has no LOCAL command (a v2 header has)")
        }
        guard header.tlvs.isEmpty else { throw ProxyHeaderEncodingError("PROXY v1 carries no TLVs (a v2 header does)") }
        let line: String
        switch (header.source, header.destination) {
        case (nil, nil):
            line = "PROXY UNKNOWN\r\n"
        case (.ipv4(let source, let sourcePort), .ipv4(let destination, let destinationPort)):
            line = "PROXY TCP4 \(source) \(destination) \(sourcePort) \(destinationPort)\r\n"
        case (.ipv6(let source, let sourcePort), .ipv6(let destination, let destinationPort)):
            line = "PROXY TCP6 \(source) \(destination) \(sourcePort) \(destinationPort)\r\n"
        case (.unix, _), (_, .unix):
            throw ProxyHeaderEncodingError("PROXY v1 has no UNIX sockets (a v2 header has)")
        default:
            throw mismatchedFamilies(header)
        }
        buffer.writeString(line)
    }

    /// The v2 header (§2.2): prefix, address block, TLVs in the order given. A `.crc32c` TLV is
    /// written with the header's computed checksum, whatever value it holds; `addingCRC32C`
    /// appends one if `tlvs` has none.
    public static func encodeV2(
        _ header: ProxyHeader, addingCRC32C: Bool = false, into buffer: inout ByteBuffer
    ) throws(ProxyHeaderEncodingError) {
        var block: [UInt8] = []
        let familyByte: UInt8
        switch (header.source, header.destination) {
        case (nil, nil):
            // LOCAL, or PROXY for AF_UNSPEC: the receiver skips the whole block, TLVs included.
            guard header.tlvs.isEmpty && !addingCRC32C else {
                throw ProxyHeaderEncodingError(
                    "PROXY v2 TLVs need an address family: a receiver discards the block of a LOCAL or AF_UNSPEC header")
            }
            familyByte = 0x00
        case _ where header.command == .local:
            throw ProxyHeaderEncodingError("PROXY v2 LOCAL header carries no addresses: a receiver discards them")
        case (.ipv4(let source, let sourcePort), .ipv4(let destination, let destinationPort)):
            familyByte = ProxyV2Decoder.AddressBlock.inet.familyByte
            block = source.bytes + destination.bytes + bigEndian(sourcePort) + bigEndian(destinationPort)
        case (.ipv6(let source, let sourcePort), .ipv6(let destination, let destinationPort)):
            familyByte = ProxyV2Decoder.AddressBlock.inet6.familyByte
            block = source.bytes + destination.bytes + bigEndian(sourcePort) + bigEndian(destinationPort)
        case (.unix(let source), .unix(let destination)):
            familyByte = ProxyV2Decoder.AddressBlock.unix.familyByte
            block = try unixField(source, "source") + unixField(destination, "destination")
        default:
            throw mismatchedFamilies(header)
        }

        var tlvs = header.tlvs
        if addingCRC32C && !tlvs.contains(where: { $0.type == PP2Type.crc32c }) { tlvs.append(.crc32c(0)) }
        let (tlvBytes, checksumOffset) = try ProxyTLVEncoder.encode(tlvs)
        let length = block.count + tlvBytes.count
        guard length <= Int(UInt16.max) else {
            throw ProxyHeaderEncodingError(
                "PROXY v2 header would be \(length) bytes after its prefix, more than its length field holds (65535)")
        }

        let command: UInt8 = header.command == .local ? 0x20 : 0x21
        var bytes = ProxyV2Decoder.signature + [command, familyByte] + bigEndian(UInt16(length)) + block + tlvBytes
        if let checksumOffset {
            let offset = ProxyV2Decoder.prefixLength + block.count + checksumOffset
            bytes.replaceSubrange(offset..<offset + 4, with: bigEndian(CRC32C.checksum(bytes)))
        }
        buffer.writeBytes(bytes)
    }

    /// A 108-byte sun_path field, NUL-padded.
    private static func unixField(_ path: [UInt8], _ side: String) throws(ProxyHeaderEncodingError) -> [UInt8] {
        let maximum = ProxyV2Decoder.unixPathLength
        guard path.count <= maximum else {
            throw ProxyHeaderEncodingError(
                "PROXY v2 UNIX \(side) path is \(path.count) bytes, longer than the \(maximum) of sun_path")
        }
        // A filesystem path ends at its first NUL when read back; an abstract name (leading
        // NUL) loses its trailing NULs, and one that is nothing but NULs reads back as unnamed.
        if (path.first != 0 && path.contains(0)) || (path.first == 0 && path.last == 0) {
            throw ProxyHeaderEncodingError("PROXY v2 UNIX \(side) path \(Printable.quoted(path)) would not read back the same")
        }
        return path + [UInt8](repeating: 0, count: maximum - path.count)
    }

    private static func mismatchedFamilies(_ header: ProxyHeader) -> ProxyHeaderEncodingError {
        let describe = { (endpoint: ProxyEndpoint?) in endpoint.map { "\($0)" } ?? "none" }
        return ProxyHeaderEncodingError(
            "PROXY header endpoints must be of one family: source \(describe(header.source)), "
                + "destination \(describe(header.destination))")
    }
}

func bigEndian(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(truncatingIfNeeded: value)] }

func bigEndian(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }

/// The TLV area of a v2 header, under the rules `ProxyTLVDecoder` reads it by.
enum ProxyTLVEncoder {
    /// The bytes, and where the CRC32C value lies in them (zeroes, to be filled in).
    static func encode(_ tlvs: [ProxyTLV]) throws(ProxyHeaderEncodingError) -> (bytes: [UInt8], checksumOffset: Int?) {
        var bytes: [UInt8] = []
        var seen: Set<UInt8> = []
        var checksumOffset: Int?
        for tlv in tlvs {
            let what = "TLV \(PP2Type.name(tlv.type))"
            if tlv.type != PP2Type.noop && ProxyTLVDecoder.isRegistered(tlv.type) && !seen.insert(tlv.type).inserted {
                throw ProxyHeaderEncodingError("PROXY v2 \(what) given twice (a receiver refuses that)")
            }
            let value: [UInt8]
            switch tlv {
            case .alpn(let name): value = name
            case .authority(let name): value = try text(name, what, ascii: false)
            case .crc32c:
                checksumOffset = bytes.count + 3
                value = [0, 0, 0, 0]
            case .noop(let length):
                guard length >= 0 else { throw ProxyHeaderEncodingError("PROXY v2 \(what) length \(length) is negative") }
                value = [UInt8](repeating: 0, count: length)
            case .uniqueID(let id):
                guard id.count <= ProxyTLV.maximumUniqueIDLength else {
                    throw ProxyHeaderEncodingError(
                        "PROXY v2 \(what) is \(id.count) bytes, more than the \(ProxyTLV.maximumUniqueIDLength) allowed")
                }
                value = id
            case .ssl(let info): value = try ssl(info)
            case .networkNamespace(let name): value = try text(name, what, ascii: true)
            case .unknown(let type, let raw):
                guard !ProxyTLVDecoder.isRegistered(type) else {
                    throw ProxyHeaderEncodingError("PROXY v2 \(what) is registered: give it as its own case, not as unknown")
                }
                value = raw
            }
            bytes += try tlvBytes(tlv.type, value, what)
        }
        return (bytes, checksumOffset)
    }

    /// The SSL value: client, verify, then the sub-TLVs in the order given.
    private static func ssl(_ info: ProxySSLInfo) throws(ProxyHeaderEncodingError) -> [UInt8] {
        var bytes = [info.client.rawValue] + bigEndian(info.verify)
        var seen: Set<UInt8> = []
        for sub in info.subTLVs {
            let what = "SSL sub-TLV \(PP2SSLSubtype.name(sub.type))"
            let known = (PP2SSLSubtype.version...PP2SSLSubtype.keyAlgorithm).contains(sub.type)
            if known && !seen.insert(sub.type).inserted {
                throw ProxyHeaderEncodingError("PROXY v2 \(what) given twice (a receiver refuses that)")
            }
            let value: [UInt8]
            switch sub {
            case .version(let text), .cipher(let text), .signatureAlgorithm(let text), .keyAlgorithm(let text):
                value = try Self.text(text, what, ascii: true)
            case .commonName(let name):
                value = try text(name, what, ascii: false)
            case .unknown(_, let raw):
                guard !known else {
                    throw ProxyHeaderEncodingError("PROXY v2 \(what) is registered: give it as its own case, not as unknown")
                }
                value = raw
            }
            bytes += try tlvBytes(sub.type, value, what)
        }
        return bytes
    }

    private static func tlvBytes(_ type: UInt8, _ value: [UInt8], _ what: String) throws(ProxyHeaderEncodingError) -> [UInt8] {
        guard value.count <= Int(UInt16.max) else {
            throw ProxyHeaderEncodingError("PROXY v2 \(what) value is \(value.count) bytes, more than a TLV holds (65535)")
        }
        return [type] + bigEndian(UInt16(value.count)) + value
    }

    private static func text(_ string: String, _ what: String, ascii: Bool) throws(ProxyHeaderEncodingError) -> [UInt8] {
        let bytes = Array(string.utf8)
        if let problem = TLVText.problem(in: bytes, ascii: ascii) {
            throw ProxyHeaderEncodingError("PROXY v2 \(what) \(problem): \(Printable.quoted(bytes))")
        }
        return bytes
    }
}
