import Foundation
import StapleGateOCSP

/// What one gateway tells the others, as the JSON payload of a notification (PostgreSQL caps
/// a payload at 8000 bytes; these stay far below, the address lists being capped).
struct FleetMessage: Codable, Sendable, Equatable {
    enum Kind: String, Codable, Sendable {
        /// A fresh answer (or failure) about `key` was written: waiters read it; `refused` ones
        /// close the device's sessions everywhere.
        case answer
        /// An operator's recheck asks every gateway to judge `key`'s sessions again and reply.
        case close
        /// A reply to `close`.
        case closed
    }

    var kind: Kind
    var origin: String
    var key: String?
    var refused: Bool?
    var request: UUID?
    var closed: FleetSessionsClosed?

    /// The most addresses a reply lists (the count stays exact).
    static let maximumAddresses = 40

    var payload: String { String(decoding: try! JSONEncoder().encode(self), as: UTF8.self) }

    init(kind: Kind, origin: String, key: String? = nil, refused: Bool? = nil, request: UUID? = nil,
         closed: FleetSessionsClosed? = nil) {
        self.kind = kind
        self.origin = origin
        self.key = key
        self.refused = refused
        self.request = request
        self.closed = closed
    }

    /// Nil for a payload that is not one (a newer version's kind, or another program's).
    init?(payload: String) {
        guard let message = try? JSONDecoder().decode(FleetMessage.self, from: Data(payload.utf8)) else { return nil }
        self = message
    }
}

extension CertID {
    /// The CertID as one printable string: the hashes and the serial in hex, for notifications.
    var fleetKey: String {
        [issuerNameHash, issuerKeyHash, serialNumber].map { bytes in bytes.map { String(format: "%02x", $0) }.joined() }
            .joined(separator: ".")
    }

    init?(fleetKey: String) {
        let parts = fleetKey.split(separator: ".", omittingEmptySubsequences: false).map { Self.bytes(hex: $0) }
        guard parts.count == 3, let name = parts[0], let key = parts[1], let serial = parts[2],
              !name.isEmpty, !key.isEmpty, !serial.isEmpty else { return nil }
        self.init(issuerNameHash: name, issuerKeyHash: key, serialNumber: serial)
    }

    private static func bytes(hex: Substring) -> [UInt8]? {
        guard hex.count % 2 == 0, hex.count <= 256 else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }
}
