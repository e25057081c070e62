/// Counts of non-negative values (the load generator records nanoseconds) in log-linear buckets,
/// as HdrHistogram does: values below 256 are counted exactly; above, each power of two is split
/// into 128 equal buckets, so any value read back is within 1/128 (< 0.8 %) of a recorded one.
/// Fixed memory (7 424 counters, 58 KiB) whatever is recorded; recording is an index computation and
/// an increment. Each worker thread keeps its own and they are merged at the end.
public struct LatencyHistogram: Sendable, Equatable {
    /// Buckets per power of two above the exact range.
    static let subBucketCount = 128
    /// Values below this are counted exactly (one bucket each).
    static let exactLimit: UInt64 = 256
    static let bucketCount = 58 * subBucketCount  // the largest UInt64 falls in bucket 7 423

    private var counts: [UInt64]
    public private(set) var count: UInt64 = 0
    /// Exact smallest and largest recorded values (0 when nothing was recorded).
    public private(set) var minimum: UInt64 = .max
    public private(set) var maximum: UInt64 = 0
    private var sum: Double = 0

    public init() {
        counts = Array(repeating: 0, count: Self.bucketCount)
    }

    public var isEmpty: Bool { count == 0 }

    /// The bucket a value falls in: its own below 256; above, `shift` = how far the value must be
    /// shifted right to fall in [128, 256), and the bucket is `shift * 128 + (value >> shift)`.
    static func bucket(of value: UInt64) -> Int {
        if value < exactLimit { return Int(value) }
        let shift = (63 - value.leadingZeroBitCount) - 7
        return shift * subBucketCount + Int(value >> UInt64(shift))
    }

    /// The values that fall in `bucket`.
    static func range(ofBucket bucket: Int) -> ClosedRange<UInt64> {
        if bucket < Int(exactLimit) { return UInt64(bucket)...UInt64(bucket) }
        let shift = bucket / subBucketCount - 1
        let low = UInt64(bucket - shift * subBucketCount) << UInt64(shift)
        return low...(low + ((UInt64(1) << UInt64(shift)) - 1))
    }

    public mutating func record(_ value: UInt64) {
        counts[Self.bucket(of: value)] &+= 1
        count &+= 1
        if value < minimum { minimum = value }
        if value > maximum { maximum = value }
        sum += Double(value)
    }

    public mutating func merge(_ other: LatencyHistogram) {
        guard !other.isEmpty else { return }
        for index in counts.indices where other.counts[index] != 0 {
            counts[index] &+= other.counts[index]
        }
        count &+= other.count
        minimum = Swift.min(minimum, other.minimum)
        maximum = Swift.max(maximum, other.maximum)
        sum += other.sum
    }

    public var mean: Double? { isEmpty ? nil : sum / Double(count) }

    /// The smallest value such that at least `percentile` % of the recorded values are at or
    /// below it (nearest-rank), reported as the highest value of its bucket — never above the
    /// largest recorded value. `percentile` 0 gives the minimum, 100 the maximum; nil when empty.
    public func value(atPercentile percentile: Double) -> UInt64? {
        guard !isEmpty else { return nil }
        precondition((0...100).contains(percentile), "a percentile is between 0 and 100")
        if percentile == 0 { return minimum }
        // Nearest rank: ceil(p/100 × n), computed so that 99.9 % of 1000 is rank 999, not 1000
        // (0.999 × 1000 is 999.0000000000001 in binary floating point).
        let exact = percentile / 100 * Double(count)
        let rank = Swift.max(1, UInt64((exact - exact * 1e-12 - 1e-9).rounded(.up)))
        var seen: UInt64 = 0
        for (bucket, bucketCount) in counts.enumerated() where bucketCount != 0 {
            seen += bucketCount
            if seen >= rank {
                return Swift.min(Swift.max(Self.range(ofBucket: bucket).upperBound, minimum), maximum)
            }
        }
        return maximum
    }
}
