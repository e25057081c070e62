import Logging
import StapleGateOCSP
import StapleGateTLS
import StapleGateTrace

extension FleetConfiguration {
    /// The fleet's database, opened once per process with `store: postgres` (nil with
    /// `store: sqlite`). It connects in the background: a database that is down does not stop
    /// the start. Throws only for what is wrong on this machine (password or CA file).
    public func openDatabase(logger: Logger) throws -> FleetDatabase? {
        switch store {
        case .sqlite:
            return nil
        case .postgres:
            guard let postgres else {
                throw PostgresStoreError("fleet.store is postgres, but no fleet.url says where the database is")
            }
            return try FleetDatabase(settings: postgres, logger: logger)
        }
    }
}

/// The stores of each fleet part, chosen once at start from `FleetDatabase?`: the fleet's
/// PostgreSQL implementations with one, the gateway's own files without. The one place that
/// knows there is more than one kind.
public enum FleetStores {
    /// Device statuses: the SQLite file at `sqlitePath`, or the fleet's shared table.
    public static func deviceStatus(database: FleetDatabase?, sqlitePath: String, logger: Logger) throws -> any DeviceStatusStore {
        guard let database else { return try OCSPCacheStore(path: sqlitePath, logger: logger) }
        return PostgresDeviceStatusStore(database: database, logger: logger)
    }

    /// Staples of the gateway's own certificates: the state directory's files, or the fleet's
    /// table (which a new or restarted gateway staples from while the responder is down).
    public static func staples(database: FleetDatabase?, stateDirectory: String, logger: Logger) -> any StapleArchive {
        guard let database else { return StaplePersistence(directory: stateDirectory) }
        return PostgresStapleArchive(database: database, logger: logger)
    }

    /// `tls.session_ticket_keys: fleet`: the fleet's rotated keys, refreshed in the background
    /// from now on. Needs the database (the config loader already refuses the setting without
    /// `fleet.store: postgres`; a reload cannot add the database, only a restart) and the secret.
    public static func ticketKeys(database: FleetDatabase?, configuration: FleetConfiguration,
                                  logger: Logger) throws -> FleetTicketKeys {
        guard let database else {
            throw FleetTicketKeyError("tls.session_ticket_keys: fleet needs the fleet's database, and this gateway started without one (fleet.store: postgres needs a restart)")
        }
        guard let path = configuration.secretFile else {
            throw FleetTicketKeyError("tls.session_ticket_keys: fleet needs fleet.secret_file")
        }
        let secret = try FleetSecret.load(at: path)
        return FleetTicketKeys(database: database, secret: secret,
                               rotation: TicketKeyRotation(rotation: configuration.ticketKeyRotation), logger: logger)
    }
}

extension FleetStores {
    /// The other gateways, as device checks see them: nil for a gateway on its own.
    public static func deviceStatusFleet(database: FleetDatabase?, logger: Logger) -> (any DeviceStatusFleet)? {
        database.map { PostgresDeviceStatusFleet(database: $0, logger: logger) }
    }

    /// Trace events and message trace switches: the gateway's own `trace.sqlite` at
    /// `sqlitePath`, or the fleet's tables, where every gateway writes and any reads them all.
    public static func trace(database: FleetDatabase?, sqlitePath: String, configuration: TraceConfiguration,
                             logger: Logger) throws -> any TraceStore {
        guard let database else {
            return try SQLiteTraceStore(path: sqlitePath, retention: configuration.retention,
                                        maximumBytes: configuration.maximumBytes, queueCapacity: configuration.queueCapacity,
                                        logger: logger)
        }
        return PostgresTraceStore(database: database, configuration: configuration, logger: logger)
    }

    /// What `staplegate trace` reads: the file of one gateway (`--state-dir`, or a config
    /// without a fleet database), or the fleet's events.
    public static func traceReader(database: FleetDatabase?, sqlitePath: String) throws -> any TraceReading {
        guard let database else { return try SQLiteTraceStore.openForReading(path: sqlitePath) }
        return PostgresTraceReader(database: database)
    }
}
