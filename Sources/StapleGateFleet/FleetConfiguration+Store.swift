import Logging
import StapleGateOCSP
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
        guard let database else { return try OCSPCacheStore(path: sqlitePath) }
        return PostgresDeviceStatusStore(database: database, logger: logger)
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
