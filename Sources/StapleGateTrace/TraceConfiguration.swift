/// Where and how long per-device trace events are kept.
public struct TraceConfiguration: Sendable, Equatable {
    public var enabled = true
    /// Events older than this are deleted.
    public var retention: Duration = .seconds(3 * 24 * 3600)
    /// The store is kept under this size by deleting the oldest events.
    public var maximumBytes: Int64 = 256 * 1024 * 1024
    /// Events waiting to be written; beyond it new events are dropped (and counted) rather
    /// than slowing MQTT traffic.
    public var queueCapacity = 10_000
    /// The longest `staplegate trace enable DEVICE --for …` accepted.
    public var maximumMessageTraceDuration: Duration = .seconds(24 * 3600)

    public init() {}
}
