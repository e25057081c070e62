import Foundation

/// Where the gateways of one fleet share what they learn (issue 14): `store: sqlite` keeps
/// today's behaviour (a file in each gateway's state directory, shared with nobody);
/// `store: postgres` puts device statuses in one PostgreSQL database for every gateway.
public struct FleetConfiguration: Sendable, Equatable {
    public enum Store: String, Sendable, CaseIterable {
        case sqlite
        case postgres
    }

    /// How the connection to PostgreSQL is protected, named as libpq's `sslmode` names them.
    public enum TLSMode: String, Sendable, CaseIterable {
        /// Plain TCP: only for a database on this host or a private link.
        case disable
        /// TLS, without checking who answers (protects against listening, not impersonation).
        case require
        /// TLS, and the server's certificate must chain to `ca_file` (or the system's trust
        /// store) and name the URL's host.
        case verifyFull = "verify-full"
    }

    public var store: Store
    /// Required with `store: postgres`.
    public var postgres: PostgresSettings?
    /// Whether `/readyz` answers 503 while the database is not reachable. Off by default: a
    /// gateway without its database still admits the devices it knows and asks the responder
    /// about the others, and serving beats refusing the fleet; a balancer that takes every
    /// gateway out at once when the database fails would refuse the whole fleet instead.
    public var requiredForReadiness: Bool
    /// `fleet.secret_file`: seals the fleet's session ticket keys in the database; required by
    /// `tls.session_ticket_keys: fleet`.
    public var secretFile: String?
    /// `fleet.ticket_key_rotation`: how old the newest fleet ticket key gets before the next.
    public var ticketKeyRotation: Duration = TicketKeyRotation.defaultRotation

    public init(store: Store = .sqlite, postgres: PostgresSettings? = nil, requiredForReadiness: Bool = false) {
        self.store = store
        self.postgres = postgres
        self.requiredForReadiness = requiredForReadiness
    }
}

/// How to reach the fleet's PostgreSQL database (`fleet.url` and the keys beside it).
public struct PostgresSettings: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    /// A file holding the password (first line), so that the config file can be world-readable;
    /// nil for trust or peer authentication.
    public var passwordFile: String?
    public var tls: FleetConfiguration.TLSMode
    /// PEM CA bundle for `verify-full`; nil: the system's trust store.
    public var caFile: String?
    /// This gateway's name in the fleet's tables (who wrote a row); the host name by default.
    public var instance: String
    /// The most connections this gateway opens to the database.
    public var poolSize: Int

    public static let defaultPort = 5432
    public static let defaultPoolSize = 4

    public init(host: String, port: Int = defaultPort, user: String, database: String, passwordFile: String? = nil,
                tls: FleetConfiguration.TLSMode = .verifyFull, caFile: String? = nil,
                instance: String = PostgresSettings.defaultInstance, poolSize: Int = defaultPoolSize) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.passwordFile = passwordFile
        self.tls = tls
        self.caFile = caFile
        self.instance = instance
        self.poolSize = poolSize
    }

    /// This machine's host name.
    public static var defaultInstance: String { ProcessInfo.processInfo.hostName }

    /// "postgres://user@host:port/database": the URL without any secret, for logs and messages.
    public var redactedURL: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    /// The parts of a `postgres://` (or `postgresql://`) URL, or why it is not one. A password
    /// in the URL is refused: it belongs in `password_file`, out of the config file.
    public static func parse(url text: String) -> Result<(host: String, port: Int, user: String, database: String), URLProblem> {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "postgres" || scheme == "postgresql" else {
            return .failure(URLProblem("\"\(text)\" is not a postgres:// URL (e.g. postgres://staplegate@db.example.net:5432/staplegate)"))
        }
        guard components.password == nil else {
            return .failure(URLProblem("must not hold a password; put it in fleet.password_file"))
        }
        guard let host = components.host, !host.isEmpty else {
            return .failure(URLProblem("\"\(text)\" names no host (postgres://user@HOST:port/database)"))
        }
        guard let user = components.user, !user.isEmpty else {
            return .failure(URLProblem("\"\(text)\" names no user (postgres://USER@host:port/database)"))
        }
        let port = components.port ?? defaultPort
        guard (1...65535).contains(port) else { return .failure(URLProblem("port \(port) is not between 1 and 65535")) }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        guard !path.contains("/") else {
            return .failure(URLProblem("\"\(text)\": the path must be just the database name"))
        }
        return .success((host: host, port: port, user: user, database: path.isEmpty ? user : path))
    }

    public struct URLProblem: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }
}

extension FleetConfiguration {
    /// This gateway's name in the fleet; nil for a gateway on its own (`store: sqlite`).
    public var instance: String? { store == .postgres ? postgres?.instance : nil }

    /// One line for `check-config`: where device statuses go, and with whom they are shared.
    /// `sqlitePath` is the state directory's file.
    public func summary(sqlitePath: String) -> String {
        guard store == .postgres, let postgres else { return "sqlite \(sqlitePath) (this gateway only)" }
        return "postgres \(postgres.redactedURL) (shared by the fleet; tls \(postgres.tls.rawValue), instance "
            + "\(postgres.instance), pool \(postgres.poolSize)\(postgres.passwordFile == nil ? "" : ", password from \(postgres.passwordFile!)")"
            + (requiredForReadiness ? "; /readyz fails while it is unreachable)" : "; /readyz stays ready without it)")
    }
}
