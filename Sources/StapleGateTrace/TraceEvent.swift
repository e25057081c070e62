import Foundation
import GRDB
import GRDBSQLite

/// One thing that happened to one device connection, as operators read it in
/// `staplegate trace DEVICE`: when, what, for which device and connection, and the details.
public struct TraceEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// TCP connection accepted.
        case accepted
        /// TLS handshake done (version, cipher, resumed, duration).
        case tlsHandshake = "tls_handshake"
        /// TLS handshake failed (OpenSSL's reason).
        case tlsFailed = "tls_failed"
        /// The device's certificate (subject, issuer, serial, notAfter).
        case clientCertificate = "client_certificate"
        /// An OCSP check of the device certificate (cache hit or miss, responder, status…).
        case ocspCheck = "ocsp_check"
        /// The device certificate asked about again, outside a connection: by the operator
        /// (`staplegate ocsp recheck`) or because a connected device's cached status expired.
        case ocspRecheck = "ocsp_recheck"
        /// The device's CONNECT (client id, protocol, keepalive).
        case connect
        /// Admitted or refused, and why.
        case admission
        /// Broker connection made or failed.
        case upstream
        /// The session ended (who closed, why, duration, bytes and packets each way).
        case disconnect
        /// A PUBLISH (direction, topic, QoS, size; never the payload), while message trace is on.
        case publish
    }

    /// Row id in the store; nil until stored.
    public var id: Int64?
    public var time: Date
    public var kind: Kind
    /// The device identity once known (nil for events before the certificate was seen).
    public var device: String?
    /// The device certificate's serial (hex), once known.
    public var serial: String?
    public var connectionID: UInt64
    public var remoteAddress: String
    /// Whether this event is a refusal or failure (what `trace --failures` lists).
    public var isFailure: Bool
    /// One human line: "TLS handshake done: TLSv1.3 TLS_AES_256_GCM_SHA384, 7 ms".
    public var summary: String
    /// Structured fields, for --json and for tests ("ocsp.status": "revoked", …).
    public var details: [String: String]
    /// The gateway that recorded it, in a fleet (`fleet.instance`): connection ids are per
    /// gateway, and a device's timeline crosses gateways. Nil in a gateway's own SQLite file.
    public var instance: String?

    public init(id: Int64? = nil, time: Date = Date(), kind: Kind, device: String?, serial: String?, connectionID: UInt64,
                remoteAddress: String, isFailure: Bool = false, summary: String, details: [String: String] = [:],
                instance: String? = nil) {
        self.id = id
        self.time = time
        self.kind = kind
        self.device = device
        self.serial = serial
        self.connectionID = connectionID
        self.remoteAddress = remoteAddress
        self.isFailure = isFailure
        self.summary = summary
        self.details = details
        self.instance = instance
    }
}

// MARK: - Storage (SQLiteTraceStore's `trace_event` rows)

extension TraceEvent {
    /// The insert `storageArguments` fills. The time goes in as seconds since 1970 and SQLite
    /// writes it as GRDB's own date text ("2026-12-07 06:21:48.123", UTC), so old and new rows
    /// compare and sort alike: Foundation's DateFormatter was a fifth of the writer's time.
    static let insertSQL = """
        INSERT INTO trace_event (time, kind, device, serial, connection_id, remote_address, is_failure, summary, details)
        VALUES (strftime('%Y-%m-%d %H:%M:%f', ?, 'unixepoch'), ?, ?, ?, ?, ?, ?, ?, ?)
        """

    /// Binds this event to `insertSQL`'s parameters, through SQLite's own API: the writer runs
    /// that insert for every event, and GRDB's `StatementArguments` (an array of boxed values,
    /// then GRDB's binding of each) cost the writer more than SQLite's insert itself.
    /// `details` go in as a JSON object, so that sqlite3 users can query it with json_extract().
    func bind(to statement: Statement) {
        let handle = statement.sqliteStatement
        sqlite3_reset(handle)
        sqlite3_bind_double(handle, 1, time.timeIntervalSince1970)
        Self.bind(kind.rawValue, 2, handle)
        Self.bind(device, 3, handle)
        Self.bind(serial, 4, handle)
        // SQLite integers are signed: the bit pattern keeps every UInt64 id distinct.
        sqlite3_bind_int64(handle, 5, Int64(bitPattern: connectionID))
        Self.bind(remoteAddress, 6, handle)
        sqlite3_bind_int(handle, 7, isFailure ? 1 : 0)
        Self.bind(summary, 8, handle)
        Self.bind(Self.json(details), 9, handle)
    }

    /// SQLITE_TRANSIENT: SQLite copies the text before `withCString` ends (a C macro Swift does not import).
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    private static func bind(_ text: String?, _ index: Int32, _ handle: SQLiteStatement) {
        guard let text else {
            sqlite3_bind_null(handle, index)
            return
        }
        _ = text.withCString { sqlite3_bind_text(handle, index, $0, -1, transient) }
    }

    /// `details` as a JSON object, keys sorted, for both stores. Written by hand: JSONEncoder was
    /// most of a trace writer's time per event, and a flat map of strings needs only escaping.
    /// NUL becomes U+FFFD: PostgreSQL's jsonb refuses it, and a device can put one in its CONNECT.
    public static func json(_ details: [String: String]) -> String {
        var out = "{"
        for (index, key) in details.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            appendString(key, to: &out)
            out += ":"
            appendString(details[key]!, to: &out)
        }
        return out + "}"
    }

    private static func appendString(_ text: String, to out: inout String) {
        out += "\""
        // Almost every value needs no escape: one scan, one append.
        guard text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            out += text
            out += "\""
            return
        }
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{0}": out += "\u{FFFD}"
            case _ where scalar.value < 0x20:
                out += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// Nil for a row this version cannot read (a kind added by a newer version).
    init?(row: Row, decoder: JSONDecoder) {
        guard let kind = Kind(rawValue: row["kind"] ?? ""), let time = row["time"] as Date? else { return nil }
        let json: String = row["details"] ?? "{}"
        // Details a newer version wrote in another shape are shown as they are, not lost.
        let details = (try? decoder.decode([String: String].self, from: Data(json.utf8))) ?? ["details": json]
        self.init(id: row["id"], time: time, kind: kind, device: row["device"], serial: row["serial"],
                  connectionID: UInt64(bitPattern: row["connection_id"] ?? 0),
                  remoteAddress: row["remote_address"] ?? "", isFailure: row["is_failure"] ?? false,
                  summary: row["summary"] ?? "", details: details)
    }
}
