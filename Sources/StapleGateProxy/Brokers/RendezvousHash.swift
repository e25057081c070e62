/// Rendezvous (highest random weight) hashing of client ids onto brokers: every broker gets a
/// score for the client id, and the highest score wins; the others, by score, are where the
/// device goes when that broker is down. Adding a broker moves only the ids it now outscores
/// (about 1/N of them) and removing one moves only its own ids, with no ring or virtual nodes
/// to tune; N is a handful of brokers, so scoring each per connect costs nothing worth noticing.
///
/// The hash must give the same answer in every process and after every restart or upgrade, or
/// persistent sessions would land on another shard: FNV-1a 64 (fixed offset and prime) with
/// MurmurHash3's 64-bit finaliser, never Swift's `Hasher`, which is seeded anew per process.
public enum RendezvousHash {
    /// The score of `broker` for `key`: the hash of the broker's name, a separator, and the key.
    public static func score(broker: String, key: String) -> UInt64 {
        var hash = fnv1a64(broker.utf8)
        hash = fnv1a64(CollectionOfOne(0), continuing: hash)  // "a:b" + "c" must differ from "a" + ":bc"
        hash = fnv1a64(key.utf8, continuing: hash)
        // FNV's last step spreads the final bytes' bits upwards only; the finaliser mixes them all,
        // so near-identical keys (sensor-1, sensor-2) still score independently.
        return finalize(hash)
    }

    /// `brokers`' indices, highest score for `key` first; ties (never seen in practice) by list order.
    public static func ranking(of brokers: [String], key: String) -> [Int] {
        let scores = brokers.map { score(broker: $0, key: key) }
        return brokers.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    static let fnvOffsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    static let fnvPrime: UInt64 = 0x0000_0100_0000_01b3

    static func fnv1a64<Bytes: Sequence>(_ bytes: Bytes, continuing hash: UInt64 = fnvOffsetBasis) -> UInt64
    where Bytes.Element == UInt8 {
        var hash = hash
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* fnvPrime
        }
        return hash
    }

    /// MurmurHash3's fmix64.
    static func finalize(_ value: UInt64) -> UInt64 {
        var x = value
        x ^= x >> 33
        x = x &* 0xff51_afd7_ed55_8ccd
        x ^= x >> 33
        x = x &* 0xc4ce_b9fe_1a85_ec53
        x ^= x >> 33
        return x
    }
}
