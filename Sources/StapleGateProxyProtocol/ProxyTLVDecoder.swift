import NIOCore

/// The TLVs after the address block (proxy-protocol.txt §2.2): `struct pp2_tlv { uint8_t type;
/// uint8_t length_hi; uint8_t length_lo; uint8_t value[0]; }`, back to back up to the end the
/// header's length announces.
enum ProxyTLVDecoder {
    /// Every TLV from the reader index to the end of `header`, and where the CRC32C value lies
    /// in it (relative to the start of the header), if one was sent.
    ///
    /// The TLVs must end exactly at the header's end (as HAProxy checks): a TLV that overruns
    /// it, or bytes too few for a TLV, mean the sender and we disagree on where the client's
    /// bytes start.
    static func readTLVs(_ header: inout ByteBuffer) throws(ProxyHeaderError) -> (tlvs: [ProxyTLV], checksumOffset: Int?) {
        var tlvs: [ProxyTLV] = []
        var seen: Set<UInt8> = []
        var checksumOffset: Int?
        while header.readableBytes > 0 {
            guard header.readableBytes >= 3, let type = header.readInteger(as: UInt8.self),
                let length = header.readInteger(as: UInt16.self)
            else {
                throw .malformed(
                    "PROXY v2 header ends with \(stray(header.readableBytes)) after its last TLV (a TLV takes at least 3)")
            }
            let what = "TLV \(PP2Type.name(type))"
            guard let value = header.readSlice(length: Int(length)) else {
                throw .malformed(
                    "PROXY v2 \(what) announces \(length) bytes but only \(header.readableBytes) remain in the header")
            }
            // A registered type sent twice leaves it open which one counts: a second SSL TLV
            // could get one CN past a check that reads the other.
            if isRegistered(type) && type != PP2Type.noop && !seen.insert(type).inserted {
                throw .malformed("PROXY v2 \(what) appears twice")
            }
            switch type {
            case PP2Type.alpn:
                tlvs.append(.alpn(Array(value.readableBytesView)))
            case PP2Type.authority:
                tlvs.append(.authority(try text(value, what, ascii: false)))
            case PP2Type.crc32c:
                guard length == 4, let checksum = value.getInteger(at: value.readerIndex, as: UInt32.self) else {
                    throw .malformed("PROXY v2 \(what) is \(length) bytes long, not 4")
                }
                checksumOffset = header.readerIndex - 4
                tlvs.append(.crc32c(checksum))
            case PP2Type.noop:
                tlvs.append(.noop(length: Int(length)))
            case PP2Type.uniqueID:
                guard length <= ProxyTLV.maximumUniqueIDLength else {
                    throw .malformed(
                        "PROXY v2 \(what) is \(length) bytes long, more than the \(ProxyTLV.maximumUniqueIDLength) allowed")
                }
                tlvs.append(.uniqueID(Array(value.readableBytesView)))
            case PP2Type.ssl:
                tlvs.append(.ssl(try readSSL(value)))
            case PP2Type.netns:
                tlvs.append(.networkNamespace(try text(value, what, ascii: true)))
            default:
                tlvs.append(.unknown(type: type, value: Array(value.readableBytesView)))
            }
        }
        return (tlvs, checksumOffset)
    }

    static func isRegistered(_ type: UInt8) -> Bool {
        [PP2Type.alpn, PP2Type.authority, PP2Type.crc32c, PP2Type.noop, PP2Type.uniqueID, PP2Type.ssl, PP2Type.netns]
            .contains(type)
    }

    /// §2.2.6: `struct pp2_tlv_ssl { uint8_t client; uint32_t verify; struct pp2_tlv sub_tlv[0]; }`,
    /// the sub-TLVs filling the rest of the SSL TLV exactly.
    private static func readSSL(_ value: ByteBuffer) throws(ProxyHeaderError) -> ProxySSLInfo {
        var value = value
        let total = value.readableBytes
        guard let client = value.readInteger(as: UInt8.self), let verify = value.readInteger(as: UInt32.self) else {
            throw .malformed("PROXY v2 TLV 0x20 (SSL) is \(total) bytes long, too short for its client and verify fields (5)")
        }
        var subTLVs: [ProxySSLInfo.SubTLV] = []
        var seen: Set<UInt8> = []
        while value.readableBytes > 0 {
            guard value.readableBytes >= 3, let type = value.readInteger(as: UInt8.self),
                let length = value.readInteger(as: UInt16.self)
            else {
                throw .malformed("PROXY v2 TLV 0x20 (SSL) ends with \(stray(value.readableBytes)) after its last sub-TLV")
            }
            let what = "SSL sub-TLV \(PP2SSLSubtype.name(type))"
            guard let subValue = value.readSlice(length: Int(length)) else {
                throw .malformed(
                    "PROXY v2 \(what) announces \(length) bytes but only \(value.readableBytes) remain in the SSL TLV")
            }
            if (PP2SSLSubtype.version...PP2SSLSubtype.keyAlgorithm).contains(type) && !seen.insert(type).inserted {
                throw .malformed("PROXY v2 \(what) appears twice")
            }
            switch type {
            case PP2SSLSubtype.version: subTLVs.append(.version(try text(subValue, what, ascii: true)))
            case PP2SSLSubtype.commonName: subTLVs.append(.commonName(try text(subValue, what, ascii: false)))
            case PP2SSLSubtype.cipher: subTLVs.append(.cipher(try text(subValue, what, ascii: true)))
            case PP2SSLSubtype.signatureAlgorithm: subTLVs.append(.signatureAlgorithm(try text(subValue, what, ascii: true)))
            case PP2SSLSubtype.keyAlgorithm: subTLVs.append(.keyAlgorithm(try text(subValue, what, ascii: true)))
            default: subTLVs.append(.unknown(type: type, value: Array(subValue.readableBytesView)))
            }
        }
        return ProxySSLInfo(client: ProxySSLInfo.ClientFlags(rawValue: client), verify: verify, subTLVs: subTLVs)
    }

    private static func text(_ value: ByteBuffer, _ what: String, ascii: Bool) throws(ProxyHeaderError) -> String {
        let bytes = value.readableBytesView
        if let problem = TLVText.problem(in: bytes, ascii: ascii) {
            throw .malformed("PROXY v2 \(what) \(problem): \(Printable.quoted(bytes))")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func stray(_ count: Int) -> String {
        count == 1 ? "1 stray byte" : "\(count) stray bytes"
    }
}
