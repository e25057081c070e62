import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

extension FleetDatabase {
    /// One connection of its own, opened when the pool fails: the pool only reports that no
    /// connection came in time (or that its circuit breaker tripped), never why, and an
    /// operator needs the why — refused, a certificate not trusted or not naming the host, the
    /// server's own refusal (pg_hba.conf, a wrong password).
    struct Diagnosis: Sendable {
        let settings: PostgresSettings
        let configuration: PostgresConnection.Configuration
        let logger: Logger

        init(settings: PostgresSettings, password: String?, tls: TLSConfiguration?, logger: Logger) throws {
            self.settings = settings
            self.logger = logger
            let mode: PostgresConnection.Configuration.TLS
            if let tls {
                do {
                    mode = .require(try NIOSSLContext(configuration: tls))
                } catch {
                    throw PostgresStoreError("cannot set up TLS for \(settings.redactedURL): \(error)")
                }
            } else {
                mode = .disable
            }
            var configuration = PostgresConnection.Configuration(
                host: settings.host, port: settings.port, username: settings.user, password: password,
                database: settings.database, tls: mode)
            // Below the attempt's deadline, so that the connect fails (and says why) before it.
            configuration.options.connectTimeout = .seconds(4)
            self.configuration = configuration
        }

        /// Why a connection cannot be made now, or nil when one can (the failure was then
        /// something else, e.g. a migration's SQL, and its own error says more).
        func reason() async -> String? {
            do {
                let connection = try await withDeadline(FleetDatabase.attemptTimeout, "connect to \(settings.redactedURL)") {
                    [configuration, logger] in
                    try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
                }
                try? await connection.close()
                return nil
            } catch {
                return FleetErrorText(settings: settings).describe(error)
            }
        }
    }
}

/// Errors of the database connection in an operator's words. PSQLError's own description hides
/// the server's message (it may hold data); the server's message text is what an operator
/// needs, and holds none of ours. TLS failures say which check failed and against what.
struct FleetErrorText {
    /// nil: the words cannot name the host or the CA file.
    let settings: PostgresSettings?

    func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if error.code == .sslUnsupported {
                return "the server does not offer TLS (its ssl setting is off), and fleet.tls is \(settings?.tls.rawValue ?? "not disable")"
            }
            if let underlying = error.underlying { return describe(underlying) }
            return "\(error.code)"
        }
        if let ssl = error as? NIOSSLError, case let .handshakeFailed(inner) = ssl {
            let text = "\(inner)"
            guard text.contains("CERTIFICATE_VERIFY_FAILED") else { return "TLS handshake failed: \(text)" }
            let roots = settings?.caFile.map { "fleet.ca_file \($0)" } ?? "the system's trust store"
            // BoringSSL's text ends with its source file and line: the reason's name is enough.
            return "TLS: the server's certificate is not trusted: it does not chain to \(roots) (CERTIFICATE_VERIFY_FAILED)"
        }
        if "\(error)".contains("failedToValidateHostname") {
            return "TLS: the server's certificate does not name \(settings?.host ?? "the host of fleet.url") (the host of fleet.url)"
        }
        if let error = error as? NIOConnectionError {
            // "Connection refused", not NIO's "connection reset (error set): ... (errno: 111)".
            let causes = error.connectionErrors.map { failure -> String in
                guard let io = failure.error as? IOError else { return "\(failure.target): \(failure.error)" }
                return "\(failure.target): \(String(cString: strerror(io.errnoCode)))"
            }
            return causes.isEmpty ? "cannot connect to \(error.host):\(error.port)" : "cannot connect (\(causes.joined(separator: "; ")))"
        }
        return "\(error)"
    }
}
