import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A StapleGate of the fleet figures: the shared PostgreSQL store under an instance name, and
/// its admin port, for its metrics.
struct FleetMember {
    let url: String
    let instance: String
    let adminPort: Int
}

/// The fleet figures (issue 14): StapleGate's device-status cache on the shared PostgreSQL store.
enum FleetFigure: String, CaseIterable {
    case postgresCacheHitCPU = "postgres_cache_hit_handshake_cpu_us"
    case sqliteCacheHitCPU = "sqlite_cache_hit_handshake_cpu_us"
    case cacheHitRatio = "postgres_to_sqlite_cache_hit_ratio"
    case localHitSessionCPU = "local_hit_session_cpu_us"
    case tableMissSessionCPU = "table_miss_session_cpu_us"
    case tableReadAddedCPU = "table_read_added_cpu_us"
    case tableMissRatio = "table_miss_to_local_hit_ratio"
    case tableMissDatabaseCPU = "table_miss_database_cpu_us"
    case localHitShare = "local_hit_share_of_sessions"
    case tableMissShare = "table_miss_share_of_sessions"
    case tableMissResponderRequests = "table_miss_responder_requests"

    var title: String {
        switch self {
        case .postgresCacheHitCPU: "PostgreSQL store, local cache hit: CPU per full handshake (µs)"
        case .sqliteCacheHitCPU: "SQLite store, local cache hit (the stripped cache-hit figure): CPU per full handshake (µs)"
        case .cacheHitRatio: "Local cache hit, PostgreSQL ÷ SQLite"
        case .localHitSessionCPU: "Many devices, every one a local cache hit: CPU per session (µs)"
        case .tableMissSessionCPU: "Many devices, every one a local miss answered by the shared table: CPU per session (µs)"
        case .tableReadAddedCPU: "Shared-table read: CPU added per session (µs)"
        case .tableMissRatio: "Local miss answered by the table ÷ local hit"
        case .tableMissDatabaseCPU: "Local miss: PostgreSQL server CPU per session (µs)"
        case .localHitShare: "Check: share of the hit run's sessions that were local hits"
        case .tableMissShare: "Check: share of the miss run's sessions that missed memory"
        case .tableMissResponderRequests: "Check: responder requests during the miss run"
        }
    }

    var digits: Int {
        switch self {
        case .cacheHitRatio, .tableMissRatio, .localHitShare, .tableMissShare: 2
        default: 0
        }
    }
}

extension BenchEnvironment {
    /// Where the fleet figures' device certificates are: `<prefix>-N.pem` (leaf + issuing CA)
    /// with one shared key, as `staplegate load --devices-dir` takes them.
    var fleetDevices: String { "\(work)/fleet-devices" }
    static let fleetDevicePrefix = "bench-fleet"

    /// Issues `count` good device certificates through the PKI's `openssl ca` database (so the
    /// responder answers "good" for each), as make-demo-pki.sh issues its devices. One shared
    /// key and one `openssl ca -infiles` run keep it to a few seconds for hundreds.
    func issueFleetDevices(count: Int) throws {
        let script = """
            set -euo pipefail
            cd "$1"; count=$2 dest=$3 prefix=$4
            mkdir -p "$dest"; tmp=$(mktemp -d "$dest/.issue.XXXXXX")
            key="$dest/$prefix-shared.key"
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key"
            chmod 0600 "$key"
            mkdir "$tmp/csr" "$tmp/out"
            seq 1 "$count" | xargs -P 4 -I{} openssl req -config ca.cnf -new -key "$key" -subj "/CN=$prefix-{}" -out "$tmp/csr/{}.csr"
            openssl ca -config ca.cnf -batch -notext -extensions ext_device -days 365 -outdir "$tmp/out" -infiles "$tmp"/csr/*.csr >/dev/null
            i=0
            for f in "$tmp"/out/*.pem; do i=$((i + 1)); cat "$f" issuing-ca.pem >"$dest/$prefix-$i.pem"; done
            rm -rf "$tmp"
            [ "$i" -eq "$count" ] || { echo "issued $i of $count" >&2; exit 1; }
            """
        let issue = try ChildProcess("issuing fleet devices", "bash", ["-c", script, "bash", pki, String(count), fleetDevices,
                                                                       Self.fleetDevicePrefix], logPath: "\(work)/fleet-devices.log")
        guard issue.waitForExit(timeout: 300) == 0 else {
            throw BenchFailure("issuing \(count) fleet devices failed; \(issue.logPath):\n\(issue.logTail())")
        }
    }
}

/// Measures the fleet figures of one run against a PostgreSQL the bench started.
struct FleetMeasurer {
    let database: BenchPostgres
    let measurer: Measurer
    let environment: BenchEnvironment
    let log: (String) -> Void
    private var settings: BenchSettings { measurer.settings }
    private var group: String { BenchSamples.fleetGroup }

    /// One gateway, the reader, takes the figure-B loads. It starts first, on an empty table, so
    /// its start-up warm-up holds none of this run's answers; a second gateway then asks the
    /// responder about every fleet device (good answers are not announced to the fleet, only
    /// written to the table). The reader's first pass over the devices is then all local misses
    /// answered by the table; its second pass over the same devices, all local hits: the same
    /// gateway, load and devices, so the difference is the table read. (An LRU smaller than the
    /// devices would make every session miss too, but the revocation monitor asks the responder
    /// each second about live sessions whose entry is gone, evicted or expired alike.)
    func measure(run: Int, into samples: inout BenchSamples) throws {
        try emptyTable()
        let readerName = "bench-reader-run\(run)"
        let reader = try start(instance: readerName)
        defer { reader.stop() }
        let filled = try measureCacheHit(run: run, into: &samples)
        // The same load once with device-1 alone (its answer is in the table too), so that the
        // miss pass does not also pay the gateway's first-load costs (pool connections, memory).
        _ = try measurer.load(reader.running, mode: "sessions", arguments: [
            "--sessions", String(settings.fleetDevices), "--concurrency", String(min(settings.fleetConcurrency, settings.fleetDevices)),
            "--hold", "0", "--connect-timeout", "120",
        ], label: "run\(run)-fleet-reader-warm-up")
        let miss = try measureSessions(reader, instance: readerName, label: "run\(run)-fleet-table-miss")
        let hit = try measureSessions(reader, instance: readerName, label: "run\(run)-fleet-local-hit")
        reader.stop()
        let opened = { (result: SessionsRun) in result.load.number("sessions_opened") ?? 0 }
        samples.add(group, FleetFigure.localHitShare.rawValue, opened(hit) > 0 ? hit.hits / opened(hit) : nil)
        samples.add(group, FleetFigure.tableMissShare.rawValue, opened(miss) > 0 ? miss.misses / opened(miss) : nil)
        samples.add(group, FleetFigure.tableMissResponderRequests.rawValue, miss.responderRequests)

        // Each figure only when the run was what it claims: every session a local hit, or every
        // session a local miss answered by the table without a responder request.
        let hitValid = opened(hit) > 0 && hit.hits == opened(hit) && hit.misses == 0
        let missValid = opened(miss) > 0 && miss.misses == opened(miss) && miss.hits == 0 && miss.responderRequests == 0
            && miss.rowsWritten == 0 && filled
        if !hitValid {
            log("  warning: local-hit run not all hits (\(Int(hit.hits)) hits, \(Int(hit.misses)) misses, \(Int(opened(hit))) sessions); figure left out")
        }
        if !missValid {
            log("  warning: table-miss run not all table answers (\(Int(miss.misses)) misses, \(Int(miss.hits)) hits, "
                + "\(Int(opened(miss))) sessions, \(Int(miss.responderRequests)) responder requests, \(miss.rowsWritten) rows written"
                + "\(filled ? "" : ", the writer's requests not counted by its metrics")); figure left out")
        }
        let hitCPU = hitValid ? hit.cpuPerSession : nil
        let missCPU = missValid ? miss.cpuPerSession : nil
        samples.add(group, FleetFigure.localHitSessionCPU.rawValue, hitCPU)
        samples.add(group, FleetFigure.tableMissSessionCPU.rawValue, missCPU)
        samples.add(group, FleetFigure.tableMissDatabaseCPU.rawValue, missValid ? miss.databaseCPUPerSession : nil)
        if let hitCPU, let missCPU {
            samples.add(group, FleetFigure.tableReadAddedCPU.rawValue, missCPU - hitCPU)
            samples.add(group, FleetFigure.tableMissRatio.rawValue, missCPU / hitCPU)
        }
        progress("  \(Int(opened(miss))) sessions, each a local miss answered by the table: "
            + String(format: "%.0f µs CPU per session vs %.0f µs all local hits; PostgreSQL %.0f µs; ",
                     miss.cpuPerSession ?? .nan, hit.cpuPerSession ?? .nan, miss.databaseCPUPerSession ?? .nan)
            + "responder asked \(Int(miss.responderRequests)) times")
    }

    /// Figure A: the device-OCSP cache-hit figure, on the PostgreSQL store. Then this gateway
    /// asks the responder about every fleet device once, so their answers are in the table.
    /// Returns whether its metrics counted those requests: if they did not, a count of 0 in
    /// the miss run would prove nothing.
    private func measureCacheHit(run: Int, into samples: inout BenchSamples) throws -> Bool {
        let writer = "bench-writer-run\(run)"
        let fleetFront = try start(instance: writer)
        let front = fleetFront.running
        defer { front.stop() }
        try measurer.warm(front)
        let hit = try measurer.handshakes(front, resume: false, label: "run\(run)-fleet-postgres-cache-hit")
        samples.add(group, FleetFigure.postgresCacheHitCPU.rawValue, hit.cpuMicroseconds)
        // Against this run's SQLite cache-hit figure (the same stripped configuration), so that
        // both come from the same conditions.
        let sqlite = samples.latest(.strippedCacheHitCPU)
        samples.add(group, FleetFigure.sqliteCacheHitCPU.rawValue, sqlite)
        if let sqlite { samples.add(group, FleetFigure.cacheHitRatio.rawValue, hit.cpuMicroseconds / sqlite) }
        progress("  PostgreSQL store, cache hit: \(Int(hit.cpuMicroseconds)) µs CPU per handshake"
            + (sqlite.map { String(format: " (SQLite %.0f µs, ratio %.2f)", $0, hit.cpuMicroseconds / $0) } ?? ""))

        let before = try AdminMetrics.scrape(port: fleetFront.adminPort)
        _ = try load(front, sessions: settings.fleetDevices, label: "run\(run)-fleet-fill")
        let after = try AdminMetrics.scrape(port: fleetFront.adminPort)
        let asked = (after[AdminMetrics.responderRequests] ?? 0) - (before[AdminMetrics.responderRequests] ?? 0)
        if asked < Double(settings.fleetDevices) {
            log("  warning: the writer's metrics count \(Int(asked)) responder requests for \(settings.fleetDevices) new devices")
        }
        // The store writes in the background: wait for every device's row, written by this gateway.
        let rows = "SELECT count(*) FROM device_ocsp_status WHERE written_by = '\(writer)' "
            + "AND subject LIKE '%\(BenchEnvironment.fleetDevicePrefix)-%'"
        let deadline = Date().addingTimeInterval(60)
        var count = 0
        while true {
            count = try database.count(rows, label: "fleet-rows")
            if count >= settings.fleetDevices { break }
            guard Date() < deadline else {
                throw BenchFailure("after 60 s the shared table holds \(count) of the \(settings.fleetDevices) fleet devices' answers; "
                    + "\(front.process.logPath):\n\(front.process.logTail())")
            }
            usleep(100_000)
        }
        return asked >= Double(settings.fleetDevices)
    }

    /// Every run starts from an empty table (there once a gateway has migrated): its answers are
    /// then this run's, valid for the responder's 10 minutes throughout, and "every device has
    /// its row" means this run's writer wrote them all.
    private func emptyTable() throws {
        _ = try database.query("""
            DO $$ BEGIN
              IF to_regclass('public.device_ocsp_status') IS NOT NULL THEN DELETE FROM device_ocsp_status; END IF;
              IF to_regclass('public.device_ocsp_lookup') IS NOT NULL THEN DELETE FROM device_ocsp_lookup; END IF;
            END $$
            """, label: "fleet-empty")
    }

    private struct SessionsRun {
        var load: LoadResult
        var hits: Double
        var misses: Double
        var responderRequests: Double
        var rowsWritten: Int
        var databaseCPUSeconds: Double

        var cpuPerSession: Double? {
            let opened = load.number("sessions_opened") ?? 0
            return load.openCPUSeconds.flatMap { opened > 0 ? $0 / opened * 1e6 : nil }
        }

        var databaseCPUPerSession: Double? {
            let opened = load.number("sessions_opened") ?? 0
            return opened > 0 ? databaseCPUSeconds / opened * 1e6 : nil
        }
    }

    /// One session per fleet device on `front`, with its metrics and the PostgreSQL server's CPU
    /// around them, and the rows it has written to the table (its own responder answers).
    private func measureSessions(_ front: FleetFront, instance: String, label: String) throws -> SessionsRun {
        let adminPort = front.adminPort
        let before = try AdminMetrics.scrape(port: adminPort)
        let databaseBefore = Dictionary(database.pids.map { ($0, ProcessStats.cpuSeconds([$0])) }, uniquingKeysWith: { a, _ in a })
        let result = try load(front.running, sessions: settings.fleetDevices, label: label)
        // Per process: backends of a gateway that stopped meanwhile leave, new ones count whole.
        let databaseCPU = database.pids.reduce(0.0) { $0 + ProcessStats.cpuSeconds([$1]) - (databaseBefore[$1] ?? 0) }
        let after = try AdminMetrics.scrape(port: adminPort)
        let delta = { (name: String) in (after[name] ?? 0) - (before[name] ?? 0) }
        // An answer this gateway got from the responder is written to the table under its name.
        let written = try database.count("SELECT count(*) FROM device_ocsp_status WHERE written_by = '\(instance)'",
                                         label: "fleet-written")
        return SessionsRun(load: result, hits: delta(AdminMetrics.cacheHits), misses: delta(AdminMetrics.cacheMisses),
                           responderRequests: delta(AdminMetrics.responderRequests),
                           rowsWritten: written, databaseCPUSeconds: databaseCPU)
    }

    private struct FleetFront {
        let running: RunningFront
        let adminPort: Int
        func stop() { running.stop() }
    }

    private func start(instance: String) throws -> FleetFront {
        let member = FleetMember(url: database.url, instance: instance, adminPort: try LoopbackPort.free())
        // Stripped, as the SQLite figure it is compared with; startStapleGate waits for the admin listener too.
        let front = try environment.startStapleGate(.stripped(.cacheHit), fleet: member)
        return FleetFront(running: front, adminPort: member.adminPort)
    }

    /// Sessions round robin over the fleet devices (with `sessions` = devices, each once).
    private func load(_ front: RunningFront, sessions: Int, label: String) throws -> LoadResult {
        let concurrency = min(settings.fleetConcurrency, settings.fleetDevices)
        return try measurer.load(front, mode: "sessions", arguments: [
            "--sessions", String(sessions), "--concurrency", String(concurrency), "--hold", "0",
            "--connect-timeout", "120",
        ], label: label, identity: ["--devices-dir", environment.fleetDevices, "--device-prefix", BenchEnvironment.fleetDevicePrefix])
    }

    private func progress(_ line: String) { log(line) }
}

/// The gateway's Prometheus metrics, read from its admin listener's /metrics.
enum AdminMetrics {
    static let cacheHits = "staplegate_device_ocsp_cache_hits_total"
    static let cacheMisses = "staplegate_device_ocsp_cache_misses_total"
    /// 1 per server certificate whose handshakes are stapled.
    static let stapleServing = "staplegate_staple_serving"
    /// A histogram of the answered requests: its count is the number of requests answered.
    static let responderRequests = "staplegate_device_ocsp_responder_latency_seconds_count"

    /// Every sample, summed over its labels, by metric name.
    static func scrape(port: Int, timeout: Double = 5) throws -> [String: Double] {
        let text = try get(port: port, path: "/metrics", timeout: timeout)
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            let name = series.split(separator: "{", maxSplits: 1).first.map(String.init) ?? String(series)
            values[name, default: 0] += value
        }
        return values
    }

    /// The body of an HTTP/1.0 GET (the server closes after answering).
    private static func get(port: Int, path: String, timeout: Double) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var wait = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchFailure("admin listener 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { throw BenchFailure("admin listener: send failed") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { break }
            guard count > 0 else { throw BenchFailure("admin listener 127.0.0.1:\(port)\(path): no complete answer within \(Int(timeout)) s") }
            response += buffer[..<count]
            // Done when the body is as long as the header says (should the server keep the connection).
            if let (headerEnd, length) = contentLength(response), response.count >= headerEnd + length { break }
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.") && text.contains(" 200 "), let split = text.range(of: "\r\n\r\n") else {
            throw BenchFailure("admin listener 127.0.0.1:\(port)\(path): unexpected answer \(text.prefix(200))")
        }
        return String(text[split.upperBound...])
    }

    private static func contentLength(_ response: [UInt8]) -> (headerEnd: Int, length: Int)? {
        let text = String(decoding: response.prefix(4096), as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let header = text[..<split.lowerBound].lowercased()
        guard let line = header.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
              let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) else { return nil }
        return (text.utf8.distance(from: text.startIndex, to: split.upperBound), length)
    }
}
