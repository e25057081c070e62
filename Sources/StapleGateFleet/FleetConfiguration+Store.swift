import Logging
import StapleGateOCSP

extension FleetConfiguration {
    /// The device-status store this configuration names: the one place that knows there is
    /// more than one kind. `sqlitePath` is the state directory's file, for `store: sqlite`.
    public func openDeviceStatusStore(sqlitePath: String, logger: Logger) throws -> any DeviceStatusStore {
        switch store {
        case .sqlite:
            return try OCSPCacheStore(path: sqlitePath)
        case .postgres:
            guard let postgres else {
                throw PostgresStoreError("fleet.store is postgres, but no fleet.url says where the database is")
            }
            return try PostgresDeviceStatusStore(settings: postgres, logger: logger)
        }
    }
}
