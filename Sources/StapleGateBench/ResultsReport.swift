import Foundation

/// Writes results.json, results.md and chart.png for one bench into its results folder.
struct ResultsReport {
    let samples: BenchSamples
    let settings: BenchSettings
    let placement: CPUPlacement
    let smoke: Bool
    let startedAt: Date
    let elapsedSeconds: Double
    let machine: [String: String]
    /// Why the fleet figures were not measured (PostgreSQL 15 missing), or nil.
    let fleetSkipped: String?
    /// What column (a) ran.
    let example: ExampleConfiguration

    var targets: [TargetVerdict] { TargetVerdict.all(samples) }

    func json() throws -> Data {
        func figures(_ group: String, _ names: [String]) -> [String: Any] {
            var out: [String: Any] = [:]
            for name in names {
                guard let spread = samples.spread(group, name) else { continue }
                out[name] = ["median": spread.median, "min": spread.min, "max": spread.max, "runs": spread.runs]
            }
            return out
        }
        var fronts: [String: Any] = [:]
        for front in FrontKind.allCases {
            fronts[front.rawValue] = ["title": front.title, "figures": figures(front.rawValue, Figure.allCases.map(\.rawValue))]
        }
        let targetObjects = targets.map { target -> [String: Any] in
            ["name": target.name, "goal": target.goal, "value": target.value ?? NSNull(), "limit": target.limit ?? NSNull(),
             "pass": target.pass, "margin": target.margin]
        }
        let settingsObject = try JSONSerialization.jsonObject(with: JSONEncoder().encode(settings))
        let placementObject: [String: Any] = ["servers": placement.servers ?? NSNull(), "clients": placement.clients ?? NSNull(),
                                              "server_cores": placement.serverCores]
        let object: [String: Any] = [
            "bench": "staplegate-bench", "smoke": smoke, "started_at": ISO8601DateFormatter().string(from: startedAt),
            "elapsed_seconds": elapsedSeconds.rounded(), "settings": settingsObject, "machine": machine,
            "cpu_placement": placementObject, "fronts": fronts,
            BenchSamples.featuresGroup: ["figures": figures(BenchSamples.featuresGroup, FeatureFigure.allCases.map(\.rawValue))],
            "staplegate_defaults": ["example": example.path, "as_shipped": example.summary,
                                    "changed_for_the_bench": ExampleConfiguration.machineOverrides],
            BenchSamples.fleetGroup: ["figures": figures(BenchSamples.fleetGroup, FleetFigure.allCases.map(\.rawValue)),
                                      "skipped": fleetSkipped.map { $0 as Any } ?? NSNull()],
            "targets": targetObjects, "notes": Self.notes,
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    var markdown: String {
        let runs = settings.runs
        var lines = [
            "# StapleGate bench\(smoke ? " (smoke: tiny sizes, not figures to quote)" : "")", "",
            "\(ISO8601DateFormatter().string(from: startedAt)); \(machine["cores"] ?? "?") cores, \(machine["kernel"] ?? "?"); "
                + "\(machine["openssl"] ?? "openssl ?"), nginx \(machine["nginx"] ?? "?"), Mosquitto \(machine["mosquitto"] ?? "?"). "
                + "\(runs) run\(runs == 1 ? "" : "s"): median\(runs > 1 ? " (min–max)" : ""); took \(Int(elapsedSeconds)) s. "
                + placementText, "",
            "(a) runs \(example.path) as shipped (\(example.summary)), with only this machine's ports, files and "
                + "folders changed (see the notes); its handshakes are device-OCSP cache hits. (a′) is the stripped "
                + "configuration: trace off, admin off, device OCSP off, logging error, TLS 1.3 only, X25519.", "",
            "| Figure | \(FrontKind.allCases.map(\.title).joined(separator: " | ")) | Target |",
            "|---|" + String(repeating: "---:|", count: FrontKind.allCases.count) + "---|",
        ]
        let verdicts = Dictionary(uniqueKeysWithValues: targets.map { ($0.name, $0) })
        for figure in Figure.allCases {
            let cells = FrontKind.allCases.map { samples.spread($0, figure)?.text(digits: figure.digits) ?? "–" }
            let target = TargetVerdict.frontFigure[figure].flatMap { verdicts[$0] }.map(Self.verdictText) ?? ""
            lines.append("| \(figure.title) | \(cells.joined(separator: " | ")) | \(target) |")
        }
        lines += ["", "| StapleGate features: CPU per full handshake (s_time), and each feature's cost | "
            + "\(runs == 1 ? "value" : "median (min–max)") | Target |", "|---|---:|---|"]
        for figure in FeatureFigure.allCases {
            let target = TargetVerdict.featureFigure[figure].flatMap { verdicts[$0] }.map(Self.verdictText) ?? ""
            lines.append("| \(figure.title) | \(samples.spread(figure)?.text(digits: figure.digits) ?? "–") | \(target) |")
        }
        lines += ["", "| StapleGate fleet (PostgreSQL store, issue 14) | \(runs == 1 ? "value" : "median (min–max)") |", "|---|---:|"]
        if let fleetSkipped {
            lines.append("| \(fleetSkipped) | – |")
        } else {
            for figure in FleetFigure.allCases {
                lines.append("| \(figure.title) | \(samples.spread(BenchSamples.fleetGroup, figure.rawValue)?.text(digits: figure.digits) ?? "–") |")
            }
        }
        lines += ["", "Targets (issue 15), on this bench's medians, each against the peer measured alongside: "
            + "\(targets.filter(\.pass).count) of \(targets.count) met.", ""]
        lines += targets.map { "- \($0.pass ? "PASS" : "MISS"): \($0.goal) — \($0.margin)" }
        lines += ["", "Notes:"] + Self.notes.map { "- \($0)" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Where the processes ran, for the heading.
    private var placementText: String {
        guard let servers = placement.servers, let clients = placement.clients else { return "Every process on any core." }
        return "Fronts, broker and responder on core\(servers.contains(",") ? "s" : "") \(servers); "
            + "load generators on core\(clients.contains(",") ? "s" : "") \(clients)."
    }

    static func verdictText(_ verdict: TargetVerdict) -> String {
        "\(verdict.pass ? "✅ pass" : "❌ miss"): \(verdict.margin)"
    }

    /// chart.png: throughput and CPU per message per front (both StapleGate columns) at both payload
    /// sizes, and RSS per idle session.
    func writeChart(folder: String) throws -> String? {
        func value(_ front: FrontKind, _ figure: Figure) -> String {
            samples.median(front, figure).map { String(format: "%.3f", $0) } ?? "?"
        }
        let rows = FrontKind.allCases.map { front in
            ["\"\(front.shortTitle)\"", value(front, .throughput64), value(front, .throughput4K), value(front, .cpuPerMessage64),
             value(front, .cpuPerMessage4K), value(front, .rssPerSession)].joined(separator: " ")
        }
        let data = "\(folder)/chart.dat"
        try (["# front throughput64 throughput4K cpu64_us cpu4K_us rss_per_session_kib"] + rows).joined(separator: "\n")
            .appending("\n").write(toFile: data, atomically: true, encoding: .utf8)
        let script = """
        set terminal pngcairo size 1800,520 font ",10"
        set output "\(folder)/chart.png"
        set datafile missing "?"
        set style data histogram
        set style histogram clustered gap 1
        set style fill solid 0.8 border -1
        set boxwidth 0.9
        set grid ytics
        set yrange [0:*]
        set key top right
        set multiplot layout 1,3 title "StapleGate bench, medians of \(settings.runs) run\(settings.runs == 1 ? "" : "s"): (a) StapleGate defaults, (a′) StapleGate stripped, (b) nginx stream, (c) Mosquitto TLS listener"
        set title "QoS 0 throughput (messages/s)"
        plot "\(data)" using 2:xtic(1) title "64 B", "" using 3 title "4 KiB"
        set title "Front CPU per message (µs)"
        plot "\(data)" using 4:xtic(1) title "64 B", "" using 5 title "4 KiB"
        set title "RSS per idle session (KiB)"
        plot "\(data)" using 6:xtic(1) title "idle session"
        unset multiplot

        """
        let scriptPath = "\(folder)/chart.gnuplot"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let gnuplot = try ChildProcess("gnuplot", "gnuplot", [scriptPath], logPath: "\(folder)/chart.log")
        guard gnuplot.waitForExit(timeout: 60) == 0 else {
            return "gnuplot failed; \(folder)/chart.log:\n\(gnuplot.logTail())"
        }
        return nil
    }
}
