import Logging
import StapleGateOCSP

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
}

extension FleetStores {
    /// The other gateways, as device checks see them: nil for a gateway on its own.
    public static func deviceStatusFleet(database: FleetDatabase?, logger: Logger) -> (any DeviceStatusFleet)? {
        database.map { PostgresDeviceStatusFleet(database: $0, logger: logger) }
    }
}
