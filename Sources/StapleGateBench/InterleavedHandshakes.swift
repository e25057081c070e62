import Foundation

/// One front's part in an interleaved handshake measurement.
struct HandshakeSubject {
    let front: RunningFront
    let label: String
    /// Whether the OCSP responder's CPU during this front's slices is its own (a first-connect
    /// gateway: nothing else asks the responder while its slice runs).
    var measureResponder = false
    /// Whether every handshake should be a device-OCSP cache hit (checked on its metrics).
    var expectsCacheHits = false
}

extension Measurer {
    /// Handshake figures of several fronts, measured in alternation: `settings.handshakeRounds`
    /// rounds, each giving every front one `openssl s_time` slice, the order turned by one front
    /// each round. On a shared machine the speed drifts by a fifth between minutes; fronts
    /// measured one after the other for 10 s each saw different machines, and a ratio of two such
    /// figures (or a feature's cost, a difference of a few %) moved more between runs than the
    /// effects measured. Slices spread each front over the whole span instead, so drift falls
    /// on all alike.
    ///
    /// A front's CPU is read from before the first slice to after the last (idle fronts use
    /// none), so work a front finishes after its slice (the trace writer's batch) is its own.
    func interleavedHandshakes(_ subjects: [HandshakeSubject], resume: Bool) throws -> [HandshakeResult] {
        let rounds = max(1, settings.handshakeRounds)
        let sliceSeconds = max(1, Int((Double(settings.handshakeSeconds) / Double(rounds)).rounded()))
        let meters = subjects.map { CPUMeter(pids: $0.front.pids) }
        let missesBefore = try subjects.map { subject in
            try subject.expectsCacheHits ? subject.front.adminPort.map { try AdminMetrics.scrape(port: $0)[AdminMetrics.cacheMisses] ?? 0 } : nil
        }
        var totals = [SliceCount](repeating: SliceCount(), count: subjects.count)
        var responderCPU = [Double](repeating: 0, count: subjects.count)
        for round in 0..<rounds {
            for offset in 0..<subjects.count {
                let index = (round + offset) % subjects.count
                let subject = subjects[index]
                let responderMeter = subject.measureResponder ? environment.responder.map { CPUMeter(pids: [$0.pid]) } : nil
                let slice = try sTime(subject.front, resume: resume, seconds: sliceSeconds, label: "\(subject.label)-\(round + 1)")
                totals[index].add(slice)
                responderCPU[index] += responderMeter?.read().cpu ?? 0
            }
        }
        // The trace writer gathers events for 100 ms before a batch: let the last one land.
        usleep(300_000)
        return try subjects.indices.map { index in
            let subject = subjects[index]
            let count = totals[index]
            guard count.handshakes > 0 else {
                throw BenchFailure("openssl s_time made no handshake with \(subject.front.kind.title) (\(subject.label)); "
                    + "\(subject.front.process.logPath):\n\(subject.front.process.logTail())")
            }
            if let before = missesBefore[index], let adminPort = subject.front.adminPort {
                let misses = (try AdminMetrics.scrape(port: adminPort)[AdminMetrics.cacheMisses] ?? 0) - before
                if misses > 0 { log("    warning: \(Int(misses)) device-OCSP cache misses during \(subject.label), which should all be hits") }
            }
            let cpu = meters[index].read().cpu
            return HandshakeResult(handshakes: count.handshakes, perSecond: Double(count.handshakes) / count.seconds,
                                   cpuMicroseconds: cpu / Double(count.handshakes) * 1e6,
                                   resumedFraction: count.marks == 0 ? 0 : Double(count.resumedMarks) / Double(count.marks),
                                   responderCPUMicroseconds: subject.measureResponder
                                       ? responderCPU[index] / Double(count.handshakes) * 1e6 : nil)
        }
    }

    /// One front alone, in the same slices.
    func handshakes(_ front: RunningFront, resume: Bool, label: String, measureResponder: Bool = false) throws -> HandshakeResult {
        try interleavedHandshakes([HandshakeSubject(front: front, label: label, measureResponder: measureResponder)],
                                  resume: resume)[0]
    }

    /// One `openssl s_time` loop: full (`-new`) or resumed (`-reuse`) TLS 1.3 handshakes with the
    /// device certificate. `-www /` makes s_time send one request and read until the front
    /// closes: without that read it never processes the TLS 1.3 ticket, which arrives after the
    /// handshake, and `-reuse` would resume nothing. Every front rejects that non-MQTT request
    /// and closes, the same small cost for each.
    private func sTime(_ front: RunningFront, resume: Bool, seconds: Int, label: String) throws -> SliceCount {
        let output = "\(environment.work)/\(label).out"
        let arguments = ["s_time", "-connect", "127.0.0.1:\(front.port)", resume ? "-reuse" : "-new", "-www", "/",
                         "-time", String(seconds), "-tls1_3", "-cert", environment.deviceCertificate,
                         "-key", environment.deviceKey, "-CAfile", environment.caChain]
        let started = monotonicSeconds()
        let sTime = try ChildProcess("openssl s_time", "openssl", arguments, logPath: "\(environment.work)/\(label).log",
                                     stdoutPath: output, cpus: environment.placement.clients)
        guard sTime.waitForExit(timeout: Double(seconds) + 60) != nil else {
            throw BenchFailure("openssl s_time against \(front.kind.rawValue) did not finish; \(output)")
        }
        let wall = monotonicSeconds() - started
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        // "1131 connections in 1.15s; 983.48 connections/user sec, bytes read 0": the last one
        // is the timed loop (with -reuse, after one untimed first connection).
        let counts = text.split(separator: "\n").compactMap { line -> Int? in
            guard line.contains(" connections in "), line.contains("s;") else { return nil }
            return Int(line.split(separator: " ").first ?? "")
        }
        // One mark per connection: r resumed, * a full TLS 1.2+ handshake.
        let marks = text.split(separator: "\n").filter { !$0.isEmpty && $0.allSatisfy { "r*t3".contains($0) } }.joined()
        return SliceCount(handshakes: counts.last ?? 0, seconds: wall, marks: marks.count,
                          resumedMarks: marks.filter { $0 == "r" }.count)
    }
}

/// What s_time slices of one front added up to.
struct SliceCount {
    var handshakes = 0
    /// Wall time of the slices (s_time's own start included, as before slicing).
    var seconds = 0.0
    var marks = 0
    var resumedMarks = 0

    mutating func add(_ other: SliceCount) {
        handshakes += other.handshakes
        seconds += other.seconds
        marks += other.marks
        resumedMarks += other.resumedMarks
    }
}
