import Foundation
import TestSupport

/// One look at the gateway: its memory and descriptors from /proc, its sessions and handshakes
/// from its own /metrics, and the sessions the devices hold.
struct SoakSample: Equatable {
    var time: Double
    var rssKiB: Double
    var descriptors: Double
    /// staplegate_sessions_active.
    var gatewaySessions: Double
    /// staplegate_handshakes_total, every result summed.
    var handshakes: Double
    var deviceSessions: Double

    static let header = "seconds\trss_kib\tdescriptors\tgateway_sessions\thandshakes_total\tdevice_sessions"
    var line: String {
        [time, rssKiB, descriptors, gatewaySessions, handshakes, deviceSessions]
            .map { String(format: "%.1f", $0) }.joined(separator: "\t")
    }

    /// VmRSS of /proc/PID/status, in KiB.
    static func residentKiB(pid: Int32) throws -> Double {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Double($0) })
        else { throw SoakPlanError("no VmRSS in /proc/\(pid)/status") }
        return value
    }

    static func descriptors(pid: Int32) throws -> Double {
        Double(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count)
    }

    /// The values of unlabelled `gauge` and of every series of `counter` summed, from a scrape.
    /// Only these two names are read, as the exposition format writes them (`name{labels} value`).
    static func metrics(_ scrape: String, gauge: String, counter: String) -> (gauge: Double, counter: Double) {
        var gaugeValue = 0.0, counterTotal = 0.0
        for line in scrape.split(separator: "\n") where !line.hasPrefix("#") {
            guard let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            let name = line.prefix { $0 != " " && $0 != "{" }
            if name == gauge { gaugeValue = value }
            if name == counter { counterTotal += value }
        }
        return (gaugeValue, counterTotal)
    }
}

/// Samples every `interval` seconds until stopped; the samples so far on request.
final class SoakSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var samples: [SoakSample] = []
    private var task: Task<Void, Never>?
    private var lastError: String?

    var all: [SoakSample] { lock.withLock { samples } }
    var error: String? { lock.withLock { lastError } }

    func start(pid: Int32, adminPort: Int, interval: Double, recorder: SoakRecorder) {
        task = Task {
            while !Task.isCancelled {
                do {
                    let scrape = try await adminRequest(port: adminPort, "/metrics").body
                    let (sessions, handshakes) = SoakSample.metrics(scrape, gauge: "staplegate_sessions_active",
                                                                    counter: "staplegate_handshakes_total")
                    let sample = SoakSample(time: recorder.now, rssKiB: try SoakSample.residentKiB(pid: pid),
                                            descriptors: try SoakSample.descriptors(pid: pid), gatewaySessions: sessions,
                                            handshakes: handshakes, deviceSessions: Double(recorder.openSessions))
                    lock.withLock { samples.append(sample) }
                } catch {
                    lock.withLock { lastError = "\(error)" }
                }
                try? await Task.sleep(for: .seconds(interval))
            }
        }
    }

    func stop() async {
        task?.cancel()
        await task?.value
    }
}
