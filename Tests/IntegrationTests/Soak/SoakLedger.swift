import Foundation

/// Everything the soak's devices and operator saw, in seconds from the run's start, and the
/// verdicts drawn from it. Pure data: the judging is unit-tested without a gateway.
struct SoakLedger {
    struct Admission: Equatable {
        var device: String
        /// When the device began its TCP connect: a connection begun after the revocation was
        /// visible must never be admitted.
        var connectStarted: Double
        var admitted: Double
        /// When the session ended (nil: still open when the ledger was read).
        var closed: Double?
    }

    struct Failure: Equatable {
        var device: String
        var at: Double
        /// "refused: …" (TLS alert or CONNACK) or "closed: …" (an admitted session ended by the
        /// other side), or "stuck: …".
        var reason: String
    }

    /// Messages by device and sequence number: sent (at least once), sent again after the
    /// session carrying them ended unacknowledged, and acknowledged by the broker (PUBACK).
    var published: [String: Set<Int>] = [:]
    var resent: [String: Set<Int>] = [:]
    var acknowledged: [String: Set<Int>] = [:]
    var admissions: [Admission] = []
    var failures: [Failure] = []
    /// A device's certificate revoked at the CA (index.txt changed).
    var revokedAtCA: [String: Double] = [:]
    /// The responder answered "revoked" and the operator's `ocsp recheck` returned: from here
    /// on the gateway knows.
    var revocationVisible: [String: Double] = [:]
    /// The responder's down times (stop → start returned).
    var responderDown: [ClosedRange<Double>] = []
    /// After the responder is back, a device whose lookup failed during the outage may be
    /// refused for the failure cache's lifetime (device_ocsp.failure_cache_lifetime).
    var failureCacheSeconds: Double = 30
    /// How long the gateway has to close a revoked device's open session after the recheck
    /// (the recheck closes it itself; this is the margin for the close to reach the device).
    var sessionCloseGraceSeconds: Double = 5

    // MARK: Verdicts

    /// Admissions of a connection begun after the device's revocation was visible.
    var revokedAdmitted: [Admission] {
        admissions.filter { admission in
            revocationVisible[admission.device].map { admission.connectStarted > $0 } ?? false
        }
    }

    /// Sessions of a revoked device that outlived its revocation's visibility by more than the grace.
    func revokedSessionsKept(now: Double) -> [Admission] {
        admissions.filter { admission in
            guard let visible = revocationVisible[admission.device], admission.connectStarted <= visible else { return false }
            return (admission.closed ?? now) > visible + sessionCloseGraceSeconds
        }
    }

    /// Failures of a device in good standing outside the responder's outages: with the
    /// responder up, a good device is never refused and its session never cut.
    var unexplainedFailures: [Failure] {
        failures.filter { failure in
            if failure.reason.hasPrefix("stuck") { return true }
            if let revoked = revokedAtCA[failure.device], failure.at >= revoked { return false }
            return !responderDown.contains { down in
                (down.lowerBound - 1)...(down.upperBound + failureCacheSeconds + 15) ~= failure.at
            }
        }
    }

    /// Acknowledged messages the subscriber never got: lost.
    func lost(received: [String: [Int: Int]]) -> [String: [Int]] {
        var lost: [String: [Int]] = [:]
        for (device, numbers) in acknowledged {
            let missing = numbers.filter { (received[device]?[$0] ?? 0) == 0 }
            if !missing.isEmpty { lost[device] = missing.sorted() }
        }
        return lost
    }

    /// Messages received more than once that the device sent only once: QoS 1 allows a
    /// duplicate only of a message sent again.
    func unexplainedDuplicates(received: [String: [Int: Int]]) -> [String: [Int]] {
        var duplicates: [String: [Int]] = [:]
        for (device, counts) in received {
            let again = counts.filter { $0.value > 1 && !(resent[device]?.contains($0.key) ?? false) }.map(\.key)
            if !again.isEmpty { duplicates[device] = again.sorted() }
        }
        return duplicates
    }

    /// Messages received that no device sent (a gateway inventing or mangling a PUBLISH).
    func unknownMessages(received: [String: [Int: Int]]) -> Int {
        received.reduce(0) { total, entry in
            total + entry.value.keys.filter { !(published[entry.key]?.contains($0) ?? false) }.count
        }
    }

    var messagesAcknowledged: Int { acknowledged.values.reduce(0) { $0 + $1.count } }
    var messagesPublished: Int { published.values.reduce(0) { $0 + $1.count } }

    /// "soak/soak-17 42" lines (mosquitto_sub -v) → received counts by device and number.
    static func parseReceived(_ text: Substring) -> [String: [Int: Int]] {
        var received: [String: [Int: Int]] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].hasPrefix("soak/"), let number = Int(parts[1]) else { continue }
            received[String(parts[0].dropFirst(5)), default: [:]][number, default: 0] += 1
        }
        return received
    }
}

/// Whether a series stayed flat after warm-up: the run after warm-up is cut into `windows`
/// equal parts and the highest part's mean may exceed the lowest one's by `tolerance` at most.
/// Means, not points: a single sample taken during a reconnect wave is not a trend.
struct SoakFlatness: Equatable {
    var windowMeans: [Double]
    var tolerance: Double

    var spread: Double {
        guard let low = windowMeans.min(), let high = windowMeans.max(), low > 0 else { return .infinity }
        return high / low - 1
    }

    var isFlat: Bool { windowMeans.count >= 2 && spread <= tolerance }

    static func judge(_ samples: [(time: Double, value: Double)], after warmUp: Double, windows: Int = 5,
                      tolerance: Double = 0.10) -> SoakFlatness {
        let settled = samples.filter { $0.time >= warmUp }
        guard let first = settled.first?.time, let last = settled.last?.time, last > first, windows >= 2 else {
            return SoakFlatness(windowMeans: [], tolerance: tolerance)
        }
        let width = (last - first) / Double(windows)
        let means = (0..<windows).compactMap { index -> Double? in
            let low = first + Double(index) * width
            let high = index == windows - 1 ? last : low + width
            let values = settled.filter { $0.time >= low && (index == windows - 1 ? $0.time <= high : $0.time < high) }.map(\.value)
            return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
        }
        return SoakFlatness(windowMeans: means, tolerance: tolerance)
    }
}
