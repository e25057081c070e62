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
}

/// The feature-cost figures of one run (StapleGate only): the defaults' full-handshake CPU, and
/// the same with one feature off or on its slow path; then the stripped configuration's device-OCSP
/// paths. Every gateway runs at once and they are measured in alternation
/// (`Measurer.interleavedHandshakes`): a cost of a few % is a difference between neighbours in
/// time, not between minutes on a machine whose speed drifts by more than that.
struct FeatureMeasurer {
    let measurer: Measurer
    let environment: BenchEnvironment
    let log: (String) -> Void

    /// The gateways, in the order they are measured in each round.
    private static let profiles: [(StapleGateProfile, FeatureFigure)] = [
        (.defaults(.asShipped), .defaultsCPU), (.defaults(.traceOff), .traceOffCPU), (.defaults(.deviceOCSPOff), .deviceOCSPOffCPU),
        (.defaults(.firstConnect), .firstConnectCPU), (.stripped(.off), .strippedOffCPU), (.stripped(.cacheHit), .strippedCacheHitCPU),
        (.stripped(.firstConnect), .strippedFirstConnectCPU),
    ]

    func measure(run: Int, into samples: inout BenchSamples) throws {
        var fronts: [RunningFront] = []
        defer { fronts.forEach { $0.stop() } }
        var subjects: [HandshakeSubject] = []
        for (profile, _) in Self.profiles {
            let front = try environment.startStapleGate(profile)
            fronts.append(front)
            // Warmed, the first-connect variants too: the warm-up's lookup is then not in the
            // figure, and the checks see the responder asked.
            let asksResponder = if case .defaults(let variant) = profile { variant.asksResponder } else { true }
            try measurer.prepare(front, asksResponder: asksResponder)
            let firstConnect = switch profile {
            case .defaults(.firstConnect), .stripped(.firstConnect): true
            default: false
            }
            subjects.append(HandshakeSubject(front: front, label: "run\(run)-features-\(profile.label)", measureResponder: firstConnect,
                                             expectsCacheHits: !firstConnect))
        }
        let results = try measurer.interleavedHandshakes(subjects, resume: false)
        // Every profile has its figure, so each lookup below finds its result.
        let measured = Dictionary(uniqueKeysWithValues: zip(Self.profiles.map(\.1), results))
        for (_, figure) in Self.profiles { add(figure, measured[figure]?.cpuMicroseconds, into: &samples) }
        log("  " + Self.profiles.map { "\($0.0.label) \(Int(measured[$0.1]?.cpuMicroseconds ?? 0)) µs" }.joined(separator: ", "))
        let cpu = { (figure: FeatureFigure) in measured[figure]?.cpuMicroseconds }
        addCost(.traceCost, with: cpu(.defaultsCPU), without: cpu(.traceOffCPU), into: &samples)
        addCost(.deviceOCSPCacheHitCost, with: cpu(.defaultsCPU), without: cpu(.deviceOCSPOffCPU), into: &samples)
        addCost(.strippedCacheHitCost, with: cpu(.strippedCacheHitCPU), without: cpu(.strippedOffCPU), into: &samples)

        let (first, strippedFirst, defaults) = (measured[.firstConnectCPU], measured[.strippedFirstConnectCPU], cpu(.defaultsCPU) ?? .nan)
        add(.firstConnectPerSecond, first?.perSecond, into: &samples)
        add(.firstConnectExtraCPU, first.map { $0.cpuMicroseconds - defaults }, into: &samples)
        add(.firstConnectResponderCPU, first?.responderCPUMicroseconds, into: &samples)
        add(.strippedFirstConnectResponderCPU, strippedFirst?.responderCPUMicroseconds, into: &samples)
        log("  first connect: +\(Int((first?.cpuMicroseconds ?? 0) - (cpu(.defaultsCPU) ?? 0))) µs over a cache hit, \(Int(first?.perSecond ?? 0))/s, "
            + "responder \(Int(first?.responderCPUMicroseconds ?? 0)) µs; stripped: responder \(Int(strippedFirst?.responderCPUMicroseconds ?? 0)) µs")
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
