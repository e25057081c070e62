/// The order in which one session tries the brokers, from the balance rule, which brokers are
/// available (not marked down), the client id and the round-robin turn. Pure: the rules are
/// tested without sockets or clocks, and `BrokerHealth` supplies what changes.
///
/// Available brokers come first, in the rule's order; the brokers marked down follow, in the
/// same rule's order, as a last resort: a device is only told "server unavailable" once every
/// broker has been tried. (With every broker down and refusing, that costs a refused connect
/// each; a broker that came back is found by the next device, not after `down_time`.)
public enum BrokerRanking {
    /// Indices into `brokers`, in the order to try them.
    /// - Parameters:
    ///   - available: per broker, whether it may be tried first (not marked down).
    ///   - hashKey: what `client_id_hash` ranks by (the MQTT client id).
    ///   - turn: the round-robin position; the caller advances it once per session.
    public static func order(of brokers: [UpstreamConfiguration.Endpoint], balance: UpstreamConfiguration.Balance,
                             available: [Bool], hashKey: String, turn: UInt64) -> [Int] {
        precondition(available.count == brokers.count, "one availability per broker")
        let preferred: [Int]
        switch balance {
        case .failover, .roundRobin:
            preferred = Array(brokers.indices)
        case .clientIDHash:
            preferred = RendezvousHash.ranking(of: brokers.map(\.description), key: hashKey)
        }
        var first = preferred.filter { available[$0] }
        var last = preferred.filter { !available[$0] }
        if balance == .roundRobin {
            // Rotating the available brokers only: a broker marked down must not hand its turns
            // to its neighbour in the list, which would then take twice its share.
            first = rotated(first, by: turn)
            last = rotated(last, by: turn)
        }
        return first + last
    }

    private static func rotated(_ indices: [Int], by turn: UInt64) -> [Int] {
        guard !indices.isEmpty else { return indices }
        let start = Int(turn % UInt64(indices.count))
        return Array(indices[start...] + indices[..<start])
    }
}
