@testable import StapleGateSimulator
import TestSupport
import XCTest

/// The latency histogram: exact below 256, within 1/128 above, nearest-rank percentiles.
final class LoadGeneratorHistogramTests: XCTestCase {
    func testAnEmptyHistogramHasNoPercentiles() {
        let histogram = LatencyHistogram()
        XCTAssertTrue(histogram.isEmpty)
        XCTAssertNil(histogram.value(atPercentile: 50))
        XCTAssertNil(histogram.mean)
    }

    func testSmallValuesAreCountedExactly() {
        var histogram = LatencyHistogram()
        for value in UInt64(1)...100 { histogram.record(value) }
        XCTAssertEqual(histogram.count, 100)
        XCTAssertEqual(histogram.value(atPercentile: 0), 1)
        XCTAssertEqual(histogram.value(atPercentile: 1), 1)
        XCTAssertEqual(histogram.value(atPercentile: 50), 50)
        XCTAssertEqual(histogram.value(atPercentile: 90), 90)
        XCTAssertEqual(histogram.value(atPercentile: 99), 99)
        XCTAssertEqual(histogram.value(atPercentile: 99.9), 100)
        XCTAssertEqual(histogram.value(atPercentile: 100), 100)
        XCTAssertEqual(histogram.mean, 50.5)
    }

    /// 0.999 × 1000 is 999.0000000000001 in floating point: the rank must still be 999.
    func testNearestRankIsNotPushedUpByFloatingPointNoise() {
        var histogram = LatencyHistogram()
        for _ in 0..<999 { histogram.record(5) }
        histogram.record(200)
        XCTAssertEqual(histogram.value(atPercentile: 99.9), 5)
        XCTAssertEqual(histogram.value(atPercentile: 100), 200)

        var tenThousand = LatencyHistogram()
        for _ in 0..<9_990 { tenThousand.record(7) }
        for _ in 0..<10 { tenThousand.record(250) }
        XCTAssertEqual(tenThousand.value(atPercentile: 99.9), 7)
        XCTAssertEqual(tenThousand.value(atPercentile: 99.91), 250)
    }

    func testBucketsCoverEveryValueWithoutGapsOrOverlaps() {
        XCTAssertEqual(LatencyHistogram.bucket(of: 0), 0)
        XCTAssertEqual(LatencyHistogram.bucket(of: 255), 255)
        XCTAssertEqual(LatencyHistogram.bucket(of: 256), 256)
        XCTAssertEqual(LatencyHistogram.bucket(of: .max), LatencyHistogram.bucketCount - 1)
        for bucket in 0..<(LatencyHistogram.bucketCount - 1) {
            let range = LatencyHistogram.range(ofBucket: bucket)
            XCTAssertEqual(LatencyHistogram.bucket(of: range.lowerBound), bucket)
            XCTAssertEqual(LatencyHistogram.bucket(of: range.upperBound), bucket)
            XCTAssertEqual(range.upperBound + 1, LatencyHistogram.range(ofBucket: bucket + 1).lowerBound, "after bucket \(bucket)")
        }
        XCTAssertEqual(LatencyHistogram.range(ofBucket: LatencyHistogram.bucketCount - 1).upperBound, .max)
    }

    /// Against exact nearest-rank percentiles of the same values: never below, at most 1/128 above.
    func testPercentilesOfWideRangingValuesAreWithinTheBucketPrecision() {
        var generator = SplitMix64(seed: 42)
        var values: [UInt64] = []
        var histogram = LatencyHistogram()
        for _ in 0..<20_000 {
            // 1 µs … 10 s, log-uniform, as latencies spread.
            let value = UInt64(pow(10, 3 + 7 * Double(generator.next() % 1_000_000) / 1_000_000))
            values.append(value)
            histogram.record(value)
        }
        values.sort()
        for percentile in [1.0, 10, 50, 90, 99, 99.9, 99.99, 100] {
            let rank = Int((percentile / 100 * Double(values.count)).rounded(.up)) - 1
            let exact = values[max(0, rank)]
            let reported = histogram.value(atPercentile: percentile)!
            XCTAssertGreaterThanOrEqual(reported, exact, "p\(percentile)")
            XCTAssertLessThanOrEqual(Double(reported - exact), Double(exact) / 128, "p\(percentile): \(reported) for \(exact)")
        }
        XCTAssertEqual(histogram.minimum, values.first)
        XCTAssertEqual(histogram.maximum, values.last)
    }

    func testMergingEqualsRecordingEverythingInOne() {
        var first = LatencyHistogram()
        var second = LatencyHistogram()
        var all = LatencyHistogram()
        for value in stride(from: UInt64(10), to: 5_000_000, by: 977) {
            if value % 3 == 0 { first.record(value) } else { second.record(value) }
            all.record(value)
        }
        first.merge(second)
        XCTAssertEqual(first, all)
        first.merge(LatencyHistogram())
        XCTAssertEqual(first, all)
    }
}
