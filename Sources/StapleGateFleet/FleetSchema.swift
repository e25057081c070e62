import Logging
import PostgresNIO

/// The fleet's tables in PostgreSQL, versioned: each migration runs once per database, in
/// order, recorded in `staplegate_schema_migrations`. Every gateway of a fleet runs this at
/// start, often several at once (a rolling deploy, a whole site rebooting): the migrations run
/// in one transaction holding a transaction-scoped advisory lock, so one gateway migrates and
/// the others, waiting on the lock, then find nothing left to do.
enum FleetSchema {
    /// The advisory lock's key: any constant the fleet's database has no other use for
    /// ("SGATE" in ASCII).
    static let migrationLock: Int64 = 0x53_47_41_54_45

    struct Migration {
        let version: Int
        let name: String
        let statements: [PostgresQuery]
    }

    /// Append only: a released migration never changes (gateways of the older version may be
    /// running against the same database). Versions: 1 device statuses, 2 lookup leases and
    /// instances, 3 staples, 4 ticket keys, 5 traces.
    static let migrations: [Migration] = [
        Migration(version: 1, name: "device_ocsp_status", statements: [
            """
            CREATE TABLE IF NOT EXISTS device_ocsp_status (
                issuer_name_hash bytea NOT NULL,
                issuer_key_hash bytea NOT NULL,
                serial bytea NOT NULL,
                serial_hex text NOT NULL,
                outcome text NOT NULL,
                revoked_at timestamptz,
                revocation_reason text,
                this_update timestamptz,
                next_update timestamptz,
                checked_at timestamptz NOT NULL,
                expires_at timestamptz NOT NULL,
                responder_url text NOT NULL,
                subject text NOT NULL,
                identity text,
                written_by text NOT NULL,
                PRIMARY KEY (issuer_name_hash, issuer_key_hash, serial)
            )
            """,
            "CREATE INDEX IF NOT EXISTS device_ocsp_status_on_serial_hex ON device_ocsp_status (serial_hex)",
            "CREATE INDEX IF NOT EXISTS device_ocsp_status_on_identity ON device_ocsp_status (identity)",
            "CREATE INDEX IF NOT EXISTS device_ocsp_status_on_expires_at ON device_ocsp_status (expires_at)",
        ]),
        // Who asks the responder about a certificate while the other gateways wait (a lease,
        // taken over once it runs out), and the failure it got, which stands fleet-wide for the
        // failure cache lifetime; and each gateway's heartbeat.
        Migration(version: 2, name: "fleet_coordination", statements: [
            """
            CREATE TABLE IF NOT EXISTS device_ocsp_lookup (
                issuer_name_hash bytea NOT NULL,
                issuer_key_hash bytea NOT NULL,
                serial bytea NOT NULL,
                holder text NOT NULL,
                lease_until timestamptz NOT NULL,
                failure text,
                failure_until timestamptz,
                PRIMARY KEY (issuer_name_hash, issuer_key_hash, serial)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS fleet_instance (
                instance text PRIMARY KEY,
                seen_at timestamptz NOT NULL,
                started_at timestamptz NOT NULL
            )
            """,
        ]),
        // The verified staple of each server certificate (`PostgresStapleArchive`), keyed by
        // the certificate's SHA-256 fingerprint; re-verified by whoever reads it.
        Migration(version: 3, name: "staples", statements: [
            """
            CREATE TABLE IF NOT EXISTS staples (
                certificate_sha256 text PRIMARY KEY,
                der bytea NOT NULL,
                cert_status text NOT NULL,
                produced_at timestamptz NOT NULL,
                this_update timestamptz NOT NULL,
                next_update timestamptz,
                written_at timestamptz NOT NULL,
                written_by text NOT NULL
            )
            """,
        ]),
        // The fleet's session ticket keys (`PostgresTicketKeyStore`): the key's public name as
        // its id, and the key itself only sealed (AES-256-GCM under `fleet.secret_file`).
        Migration(version: 4, name: "ticket_keys", statements: [
            """
            CREATE TABLE IF NOT EXISTS ticket_keys (
                id text PRIMARY KEY,
                created_at timestamptz NOT NULL,
                active_from timestamptz NOT NULL,
                sealed bytea NOT NULL,
                created_by text NOT NULL
            )
            """,
            "CREATE INDEX IF NOT EXISTS ticket_keys_on_created_at ON ticket_keys (created_at)",
        ]),
        Migration(version: 5, name: "trace_events", statements: TraceRow.tables),
    ]

    /// Brings the database to the newest version; returns the versions this call applied.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withTransaction(logger: logger) { connection in
            _ = try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
            _ = try await connection.query("""
                CREATE TABLE IF NOT EXISTS staplegate_schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """, logger: logger)
            var applied: Set<Int> = []
            for try await version in try await connection.query("SELECT version FROM staplegate_schema_migrations",
                                                                logger: logger).decode(Int.self) {
                applied.insert(version)
            }
            var ran: [Int] = []
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.statements { _ = try await connection.query(statement, logger: logger) }
                _ = try await connection.query("""
                    INSERT INTO staplegate_schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))
                    """, logger: logger)
                ran.append(migration.version)
            }
            return ran
        }
    }
}
