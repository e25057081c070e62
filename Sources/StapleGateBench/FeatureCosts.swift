import Foundation

extension Measurer {
    /// Before a StapleGate's figures: one connection, so that the device's OCSP answer is cached
    /// and the figures are cache hits. Where the admin listener is on (the defaults), also checks
    /// that the gateway staples and that its device check asked the responder: both take the
    /// responder from the certificates' AIA there, and a figure without them would not be what
    /// its column says.
    func prepare(_ front: RunningFront, asksResponder: Bool = true) throws {
        try warm(front)
        guard let adminPort = front.adminPort else { return }
        let deadline = Date().addingTimeInterval(10)
        var missing: [String] = []
        repeat {
            let metrics = try AdminMetrics.scrape(port: adminPort)
            missing = []
            if (metrics[AdminMetrics.stapleServing] ?? 0) < 1 { missing.append("holds no OCSP staple") }
            if asksResponder, (metrics[AdminMetrics.responderRequests] ?? 0) < 1 { missing.append("never asked the responder about the device") }
            if missing.isEmpty { return }
            usleep(100_000)
        } while Date() < deadline
        throw BenchFailure("StapleGate (\(front.process.logPath)) \(missing.joined(separator: " and ")) 10 s after start, "
            + "though its certificates name the bench's responder:\n\(front.process.logTail())")
    }

    /// Full handshakes on a StapleGate whose device answer is cached; warns when some were not
    /// cache hits after all (the figure is then not the cache-hit figure it claims to be).
    func cacheHitHandshakes(_ front: RunningFront, label: String) throws -> HandshakeResult {
        let before = try front.adminPort.map { try AdminMetrics.scrape(port: $0) }
        let result = try handshakes(front, resume: false, label: label)
        if let adminPort = front.adminPort, let before {
            let after = try AdminMetrics.scrape(port: adminPort)
            let misses = (after[AdminMetrics.cacheMisses] ?? 0) - (before[AdminMetrics.cacheMisses] ?? 0)
            if misses > 0 { log("    warning: \(Int(misses)) device-OCSP cache misses during \(label), which should all be hits") }
        }
        return result
    }
}

/// The feature-cost figures of one run (StapleGate only): the defaults' full-handshake CPU, then
/// the same with one feature off or on its slow path, each on a fresh gateway. The defaults figure
/// is measured again here, just before its variants, so each difference is between neighbours in
/// time rather than minutes apart.
struct FeatureMeasurer {
    let measurer: Measurer
    let environment: BenchEnvironment
    let log: (String) -> Void

    func measure(run: Int, into samples: inout BenchSamples) throws {
        let defaults = try handshakeCPU(.defaults(.asShipped), label: "run\(run)-features-defaults")
        samples.add(BenchSamples.featuresGroup, FeatureFigure.defaultsCPU.rawValue, defaults.cpuMicroseconds)
        log("  defaults: \(Int(defaults.cpuMicroseconds)) µs CPU per full handshake")

        let traceOff = try handshakeCPU(.defaults(.traceOff), label: "run\(run)-features-trace-off")
        add(.traceOffCPU, traceOff.cpuMicroseconds, into: &samples)
        addCost(.traceCost, with: defaults.cpuMicroseconds, without: traceOff.cpuMicroseconds, into: &samples)

        let ocspOff = try handshakeCPU(.defaults(.deviceOCSPOff), label: "run\(run)-features-device-ocsp-off")
        add(.deviceOCSPOffCPU, ocspOff.cpuMicroseconds, into: &samples)
        addCost(.deviceOCSPCacheHitCost, with: defaults.cpuMicroseconds, without: ocspOff.cpuMicroseconds, into: &samples)

        let first = try handshakeCPU(.defaults(.firstConnect), label: "run\(run)-features-first-connect", measureResponder: true)
        add(.firstConnectCPU, first.cpuMicroseconds, into: &samples)
        add(.firstConnectPerSecond, first.perSecond, into: &samples)
        add(.firstConnectExtraCPU, first.cpuMicroseconds - defaults.cpuMicroseconds, into: &samples)
        add(.firstConnectResponderCPU, first.responderCPUMicroseconds, into: &samples)
        log("  defaults, first connect: \(Int(first.cpuMicroseconds)) µs CPU per handshake "
            + "(+\(Int(first.cpuMicroseconds - defaults.cpuMicroseconds)) µs), \(Int(first.perSecond))/s, "
            + "responder \(Int(first.responderCPUMicroseconds ?? 0)) µs")

        // The stripped configuration's device-OCSP paths, as before issue 15; the cache hit
        // against this run's (a′) figure, device OCSP off.
        let strippedHit = try handshakeCPU(.stripped(.cacheHit), label: "run\(run)-features-stripped-cache-hit")
        add(.strippedCacheHitCPU, strippedHit.cpuMicroseconds, into: &samples)
        addCost(.strippedCacheHitCost, with: strippedHit.cpuMicroseconds, without: samples.latest(.staplegateStripped, .fullHandshakeCPU),
                into: &samples)
        let strippedFirst = try handshakeCPU(.stripped(.firstConnect), label: "run\(run)-features-stripped-first-connect",
                                             measureResponder: true)
        add(.strippedFirstConnectCPU, strippedFirst.cpuMicroseconds, into: &samples)
        add(.strippedFirstConnectResponderCPU, strippedFirst.responderCPUMicroseconds, into: &samples)
        log("  stripped: cache hit \(Int(strippedHit.cpuMicroseconds)) µs, first connect \(Int(strippedFirst.cpuMicroseconds)) µs "
            + "(responder \(Int(strippedFirst.responderCPUMicroseconds ?? 0)) µs)")
    }

    /// A fresh gateway with `profile`, warmed (its first-connect variants too: the warm-up's
    /// lookup is then not in the figure, and the checks see the responder asked).
    private func handshakeCPU(_ profile: StapleGateProfile, label: String, measureResponder: Bool = false) throws -> HandshakeResult {
        let front = try environment.startStapleGate(profile)
        defer { front.stop() }
        let asksResponder = if case .defaults(let variant) = profile { variant.asksResponder } else { true }
        try measurer.prepare(front, asksResponder: asksResponder)
        if measureResponder { return try measurer.handshakes(front, resume: false, label: label, measureResponder: true) }
        return try measurer.cacheHitHandshakes(front, label: label)
    }

    private func add(_ figure: FeatureFigure, _ value: Double?, into samples: inout BenchSamples) {
        samples.add(BenchSamples.featuresGroup, figure.rawValue, value)
    }

    /// A feature's cost in % of the handshake CPU without it: (with − without) / without, this run's.
    private func addCost(_ cost: FeatureFigure, with: Double?, without: Double?, into samples: inout BenchSamples) {
        guard let with, let without, without > 0 else { return }
        let percent = (with - without) / without * 100
        samples.add(BenchSamples.featuresGroup, cost.rawValue, percent)
        log("  " + String(format: "%@: %.0f µs with, %.0f µs without: %.1f %%", cost.title, with, without, percent))
    }
}
