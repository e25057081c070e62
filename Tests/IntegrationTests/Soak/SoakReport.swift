import Foundation
import TestSupport

/// A soak run's verdicts, and the Markdown report and chart that show them.
struct SoakReport {
    let plan: SoakPlan
    let ledger: SoakLedger
    let samples: [SoakSample]
    let received: [String: [Int: Int]]
    /// When the devices had all left.
    let end: Double
    let gatewaySessionsAtEnd: Double
    let reloadsSent: Int
    let reloadsApplied: Int
    let reloadsRefused: Int
    let operatorProblems: [String]
    let samplerError: String?
    let gatewayBinary: String

    /// Judged over the run proper: once the devices leave at its end, the gateway empties.
    private var running: [SoakSample] { samples.filter { $0.time <= plan.seconds } }
    var rss: SoakFlatness { SoakFlatness.judge(running.map { ($0.time, $0.rssKiB) }, after: plan.warmUpSeconds) }
    var descriptors: SoakFlatness { SoakFlatness.judge(running.map { ($0.time, $0.descriptors) }, after: plan.warmUpSeconds) }
    /// Descriptors per open session: each session holds two (device and broker), so the raw
    /// count follows how many devices happen to be connected (fewer on a busy machine, where
    /// they reconnect slower); a leak shows as more per session.
    var descriptorsPerSession: SoakFlatness {
        SoakFlatness.judge(running.filter { $0.gatewaySessions > 0 }.map { ($0.time, $0.descriptors / $0.gatewaySessions) },
                           after: plan.warmUpSeconds)
    }
    var lost: [String: [Int]] { ledger.lost(received: received) }
    var duplicates: [String: [Int]] { ledger.unexplainedDuplicates(received: received) }
    var allowedDuplicates: Int {
        received.reduce(0) { total, entry in total + entry.value.filter { $0.value > 1 }.count } - duplicates.values.reduce(0) { $0 + $1.count }
    }
    var refusedAfterRevocation: Int {
        ledger.failures.filter { failure in ledger.revocationVisible[failure.device].map { failure.at > $0 } ?? false }.count
    }

    /// Every criterion that failed, said in a line each; empty when the run passed.
    var failures: [String] {
        var failures: [String] = []
        func check(_ passed: Bool, _ line: @autoclosure () -> String) { if !passed { failures.append(line()) } }
        check(rss.isFlat, "RSS not flat after warm-up: window means \(rss.windowMeans.map { Int($0) }) KiB, spread \(percent(rss.spread)) > 10 %")
        check(descriptorsPerSession.isFlat, "descriptors per session not flat after warm-up: window means "
              + "\(descriptorsPerSession.windowMeans.map { String(format: "%.2f", $0) }), spread \(percent(descriptorsPerSession.spread))")
        check(ledger.revokedAdmitted.isEmpty, "revoked devices admitted after the gateway knew: \(ledger.revokedAdmitted.prefix(10))")
        check(ledger.revokedSessionsKept(now: end).isEmpty, "revoked devices' sessions kept open: \(ledger.revokedSessionsKept(now: end).prefix(10))")
        check(ledger.revocationVisible.count == plan.revokedDevices, "\(ledger.revocationVisible.count) of \(plan.revokedDevices) revocations reached the gateway")
        check(refusedAfterRevocation > 0, "no revoked device was seen retrying and refused")
        check(ledger.unexplainedFailures.isEmpty, "\(ledger.unexplainedFailures.count) failures of good devices while the responder was up: \(ledger.unexplainedFailures.prefix(10))")
        check(lost.isEmpty, "acknowledged messages lost: \(lost.prefix(10))")
        check(duplicates.isEmpty, "messages delivered twice that were sent once: \(duplicates.prefix(10))")
        check(ledger.unknownMessages(received: received) == 0, "\(ledger.unknownMessages(received: received)) messages no device sent")
        check(gatewaySessionsAtEnd == 0, "the gateway still held \(Int(gatewaySessionsAtEnd)) sessions 30 s after every device left")
        check(reloadsApplied == reloadsSent && reloadsRefused == 0, "\(reloadsApplied) reloads applied and \(reloadsRefused) refused of \(reloadsSent) sent")
        check(ledger.admissions.count > plan.devices, "no churn: \(ledger.admissions.count) admissions for \(plan.devices) devices")
        check(operatorProblems.isEmpty, "operator steps that failed: \(operatorProblems)")
        return failures
    }

    var passed: Bool { failures.isEmpty }

    var summary: String {
        "\(passed ? "PASSED" : "FAILED") — \(plan.devices) devices, \(Int(plan.minutes)) min, \(ledger.admissions.count) sessions, "
            + "\(ledger.messagesAcknowledged) messages acknowledged, RSS spread \(percent(rss.spread)), descriptors per session spread \(percent(descriptorsPerSession.spread))"
    }

    /// Writes soak.md, samples.tsv and soak.png into the plan's report folder; returns soak.md's path.
    func write() throws -> String {
        let folder = plan.reportDirectory
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try ([SoakSample.header] + samples.map(\.line)).joined(separator: "\n").appending("\n")
            .write(toFile: "\(folder)/samples.tsv", atomically: true, encoding: .utf8)
        let chart = drawChart(in: folder)
        let path = "\(folder)/soak.md"
        try markdown(chartNote: chart).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func markdown(chartNote: String?) -> String {
        let settled = running.filter { $0.time >= plan.warmUpSeconds }
        func range(_ values: [Double], scale: Double = 1) -> String {
            guard let low = values.min(), let high = values.max() else { return "—" }
            return String(format: "%.1f – %.1f", low / scale, high / scale)
        }
        let kinds = Dictionary(grouping: ledger.failures) { failure -> String in
            let reason = failure.reason
            if ledger.revocationVisible[failure.device].map({ failure.at > $0 }) ?? false {
                return "revoked device, after the recheck: \(reason.prefix(100))"
            }
            if ledger.revokedAtCA[failure.device].map({ failure.at >= $0 }) ?? false { return "revoked device, before the recheck" }
            if reason.hasPrefix("stuck") { return "stuck" }
            return ledger.unexplainedFailures.contains(failure) ? "good device, responder up: \(reason.prefix(60))"
                : "good device during a responder outage: \(reason.prefix(60))"
        }.mapValues(\.count).sorted { $0.key < $1.key }
        var text = """
        # StapleGate soak run

        **\(passed ? "Passed" : "Failed")**, \(ISO8601DateFormatter().string(from: Date())), gateway `\(gatewayBinary)`.

        \(plan.devices) devices for \(fmt(plan.minutes)) minutes (warm-up \(Int(plan.warmUpSeconds)) s): each session lasts \
        \(Int(plan.sessionSeconds.lowerBound))–\(Int(plan.sessionSeconds.upperBound)) s and publishes a numbered QoS 1 message every \
        \(Int(plan.publishEverySeconds)) s; \(plan.revokedDevices) devices revoked along the way; a reload every \
        \(Int(plan.reloadEverySeconds)) s; the responder down \(Int(plan.responderDownSeconds)) s at \
        \(plan.responderRestarts.map { "\(Int($0)) s" }.joined(separator: " and ")). The gateway runs the example's defaults \
        (traces, device OCSP, stapling, admin listener, info logging)\(plan.sessionCacheSize.map { "; tls.session_cache_size \($0) (a short run: the default 20 480 would still be filling when it ends)" } ?? "").

        | criterion | result |
        |---|---|
        | RSS after warm-up, window means (KiB) | \(rss.windowMeans.map { "\(Int($0))" }.joined(separator: ", ")): spread \(percent(rss.spread)) (≤ 10 %) |
        | descriptors per open session after warm-up, window means | \(descriptorsPerSession.windowMeans.map { String(format: "%.2f", $0) }.joined(separator: ", ")): spread \(percent(descriptorsPerSession.spread)) (≤ 10 %) |
        | descriptors after warm-up, window means | \(descriptors.windowMeans.map { "\(Int($0))" }.joined(separator: ", ")): spread \(percent(descriptors.spread)) (they follow the sessions open) |
        | revoked devices admitted after the gateway knew | \(ledger.revokedAdmitted.count) (refused retries after it: \(refusedAfterRevocation)) |
        | revoked devices' sessions left open | \(ledger.revokedSessionsKept(now: end).count) |
        | QoS 1 messages published / acknowledged / lost | \(ledger.messagesPublished) / \(ledger.messagesAcknowledged) / \(lost.values.reduce(0) { $0 + $1.count }) |
        | duplicates: of a message sent again / unexplained | \(allowedDuplicates) / \(duplicates.values.reduce(0) { $0 + $1.count }) |
        | good devices refused or cut with the responder up | \(ledger.unexplainedFailures.count) |
        | sessions at the gateway after every device left | \(Int(gatewaySessionsAtEnd)) |
        | reloads sent / applied / refused | \(reloadsSent) / \(reloadsApplied) / \(reloadsRefused) |
        | sessions (admissions) | \(ledger.admissions.count) |

        After warm-up: RSS \(range(settled.map(\.rssKiB), scale: 1024)) MiB, descriptors \(range(settled.map(\.descriptors))), \
        gateway sessions \(range(settled.map(\.gatewaySessions))).

        ## Refusals and closed sessions, by kind

        | kind | count |
        |---|---|
        \(kinds.map { "| \($0.key.replacingOccurrences(of: "|", with: "/")) | \($0.value) |" }.joined(separator: "\n"))

        """
        if !failures.isEmpty { text += "\n## What failed\n\n" + failures.map { "- \($0)" }.joined(separator: "\n") + "\n" }
        if let samplerError { text += "\nThe last failed sample: \(samplerError)\n" }
        text += chartNote.map { "\n\($0)\n" } ?? "\n![RSS, descriptors, sessions and handshakes over time](soak.png)\n"
        return text
    }

    /// soak.png with gnuplot (gnuplot-nox, installed by `make deps`); nil when drawn, else why not.
    private func drawChart(in folder: String) -> String? {
        let script = """
        set terminal pngcairo size 1400,900 font ",10"
        set output '\(folder)/soak.png'
        set datafile separator tab
        set key top left
        set grid
        set xlabel 'seconds'
        set multiplot layout 2,2 title 'StapleGate soak: \(plan.devices) devices, \(fmt(plan.minutes)) min (warm-up ends at \(Int(plan.warmUpSeconds)) s)'
        set arrow from \(plan.warmUpSeconds), graph 0 to \(plan.warmUpSeconds), graph 1 nohead dt 2
        set title 'gateway RSS (MiB)'
        plot '\(folder)/samples.tsv' skip 1 using 1:($2/1024) with lines lw 2 title 'RSS'
        set title 'gateway open descriptors'
        plot '\(folder)/samples.tsv' skip 1 using 1:3 with lines lw 2 title 'descriptors'
        set title 'sessions'
        plot '\(folder)/samples.tsv' skip 1 using 1:4 with lines lw 2 title 'gateway', '' skip 1 using 1:6 with lines title 'devices'
        set title 'handshakes per second'
        prev = NaN; prevt = NaN
        plot '\(folder)/samples.tsv' skip 1 using 1:(d = ($5 - prev) / ($1 - prevt), prev = $5, prevt = $1, d) with lines lw 2 title 'handshakes/s'
        unset multiplot
        """
        do {
            let path = try TemporaryDirectory(prefix: "soak-chart").write("soak.gnuplot", script)
            let gnuplot = try ManagedProcess("gnuplot", [path])
            let status = try gnuplot.waitForExitBlocking(timeout: .seconds(60))
            return status.succeeded ? nil : "(no chart: gnuplot \(status): \(gnuplot.output))"
        } catch {
            return "(no chart: \(error))"
        }
    }

    private func percent(_ value: Double) -> String { value.isFinite ? String(format: "%.1f %%", value * 100) : "—" }
    private func fmt(_ value: Double) -> String { value == value.rounded() ? "\(Int(value))" : String(format: "%.1f", value) }
}
