import Foundation

/// What one measurement of a front gave.
struct HandshakeResult {
    var handshakes: Int
    var perSecond: Double
    /// The front's CPU per handshake, µs.
    var cpuMicroseconds: Double
    /// Share of the handshakes that were resumptions (s_time prints `r` for each).
    var resumedFraction: Double
    /// CPU of the OCSP responder per handshake, µs (only asked for on StapleGate's first-connect path).
    var responderCPUMicroseconds: Double?
}

struct LoadResult {
    /// `staplegate load --json`'s report.
    var report: [String: Any]
    /// The front's CPU from "publishing" to "disconnecting" (throughput, latency), seconds.
    var frontCPUSeconds: Double?
    /// The front's VmRSS before the load generator started, and with every session open (KiB).
    var residentBefore: Int
    var residentWithSessions: Int?
    /// The front's CPU from the generator's first connect to its last CONNACK (sessions), seconds.
    var openCPUSeconds: Double?

    func number(_ key: String) -> Double? { (report[key] as? NSNumber)?.doubleValue }
}

/// Drives `openssl s_time` and `staplegate load` against one front, as separate processes,
/// reading the front's CPU and memory around them.
struct Measurer {
    let environment: BenchEnvironment
    let settings: BenchSettings
    let log: (String) -> Void
    private var work: String { environment.work }

    /// One connection, to put the device's OCSP answer in StapleGate's cache before a cache-hit figure.
    func warm(_ front: RunningFront) throws {
        let client = try ChildProcess("openssl s_client", "openssl", [
            "s_client", "-connect", "127.0.0.1:\(front.port)", "-tls1_3", "-cert", environment.deviceCertificate,
            "-key", environment.deviceKey, "-CAfile", environment.caChain, "-brief",
        ], logPath: "\(work)/warm-\(front.port).log", cpus: environment.placement.clients)
        _ = client.waitForExit(timeout: 20)
    }

    /// QoS 0 publishers → one subscriber through the front, as fast as they go (`rate` nil) or at a fixed rate.
    func publish(_ front: RunningFront, mode: String, payloadSize: Int, rate: Double?, seconds: Double,
                 label: String) throws -> LoadResult {
        var arguments = ["--publishers", String(settings.publishers), "--subscribers", "1", "--payload-size", String(payloadSize),
                         "--duration", String(seconds)]
        if let rate { arguments += ["--rate", String(rate)] }
        return try load(front, mode: mode, arguments: arguments, label: label)
    }

    /// `settings.sessions` idle sessions, held long enough to read the front's memory with all of them open.
    func sessions(_ front: RunningFront, label: String) throws -> LoadResult {
        try load(front, mode: "sessions", arguments: [
            "--sessions", String(settings.sessions), "--concurrency", String(settings.sessionConcurrency),
            "--hold", String(Self.settleSeconds + 2), "--connect-timeout", "120",
        ], label: label)
    }

    /// Time for memory to settle after the last CONNACK (buffers freed, the broker's side done).
    static let settleSeconds = 1.0

    /// `identity`: the generator's identity options (default: every session presents device-1).
    func load(_ front: RunningFront, mode: String, arguments: [String], label: String, identity: [String]? = nil) throws -> LoadResult {
        let output = "\(work)/\(label).json"
        let notes = Pipe()
        let pids = front.pids
        let residentBefore = ProcessStats.residentKiB(pids)
        let generator = try ChildProcess("staplegate load", environment.staplegate, ["load", mode,
            "--host", "127.0.0.1", "--port", String(front.port), "--server-name", "localhost", "--cafile", environment.caChain,
            "--groups", "X25519", "--tls-version", "1.3", "--client-id-prefix", "bench-\(label)", "--json"]
            + (identity ?? ["--cert", environment.deviceCertificate, "--key", environment.deviceKey]) + arguments,
            logPath: "\(work)/\(label).log", stdoutPath: output, stderrPipe: notes, cpus: environment.placement.clients)
        let logHandle = FileHandle(forWritingAtPath: generator.logPath)
        var meter: CPUMeter?
        var openMeter: CPUMeter?
        var openCPU: Double?
        var frontCPU: Double?
        var residentWithSessions: Int?
        var pending = ""
        // The generator's progress notes (stderr) mark the phases to measure between.
        while true {
            let data = notes.fileHandleForReading.availableData
            if data.isEmpty { break }
            logHandle?.write(data)
            pending += String(decoding: data, as: UTF8.self)
            while let newline = pending.firstIndex(of: "\n") {
                let line = String(pending[..<newline])
                pending = String(pending[pending.index(after: newline)...])
                if line.contains("opening ") {
                    openMeter = CPUMeter(pids: pids)
                } else if line.contains(" sessions open"), let started = openMeter, openCPU == nil {
                    openCPU = started.read().cpu
                }
                if line.contains("publishing for") {
                    meter = CPUMeter(pids: pids)
                } else if line.contains("disconnecting"), let started = meter, frontCPU == nil {
                    frontCPU = started.read().cpu
                } else if mode == "sessions", identity == nil, line.contains("sessions open") {
                    usleep(UInt32(Self.settleSeconds * 1e6))
                    residentWithSessions = ProcessStats.residentKiB(front.pids)
                }
            }
        }
        try? logHandle?.close()
        guard generator.waitForExit(timeout: 600) != nil else { throw BenchFailure("staplegate load \(mode) did not finish; \(generator.logPath)") }
        guard let data = FileManager.default.contents(atPath: output),
              let report = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw BenchFailure("staplegate load \(mode) against \(front.kind.title) printed no report; \(generator.logPath):\n\(generator.logTail())")
        }
        let failed = (report["sessions_failed"] as? NSNumber)?.intValue ?? 0
        let dropped = (report["sessions_dropped"] as? NSNumber)?.intValue ?? 0
        if failed + dropped > 0 {
            log("    warning: \(failed) sessions failed, \(dropped) dropped (\(report["failure_reasons"] ?? [:])); see \(output)")
        }
        return LoadResult(report: report, frontCPUSeconds: frontCPU, residentBefore: residentBefore,
                          residentWithSessions: residentWithSessions, openCPUSeconds: openCPU)
    }
}
