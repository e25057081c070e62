import Foundation

/// The fronts compared, each terminating the same device mTLS in front of Mosquitto: StapleGate
/// twice, as operators run it (the example configuration's defaults) and stripped of every feature
/// the peers lack, then the two peers.
enum FrontKind: String, CaseIterable, Codable, Sendable {
    case staplegate, staplegateStripped = "staplegate_stripped", nginx, mosquitto

    var title: String {
        switch self {
        case .staplegate: "(a) StapleGate defaults → Mosquitto"
        case .staplegateStripped: "(a′) StapleGate stripped → Mosquitto"
        case .nginx: "(b) nginx stream → Mosquitto"
        case .mosquitto: "(c) Mosquitto TLS listener"
        }
    }

    /// For the chart's axis, short enough for four clusters side by side.
    var shortTitle: String {
        switch self {
        case .staplegate: "(a) defaults"
        case .staplegateStripped: "(a′) stripped"
        case .nginx: "(b) nginx"
        case .mosquitto: "(c) Mosquitto"
        }
    }
}

/// A front that listens: its port and the processes whose CPU and memory are its cost.
struct RunningFront {
    let kind: FrontKind
    let port: Int
    let process: ChildProcess
    /// StapleGate's admin listener, where its configuration enables it (the defaults, the fleet figures).
    var adminPort: Int?

    /// nginx's master and workers; StapleGate or Mosquitto alone.
    var pids: [Int32] { ProcessStats.processTree(process.pid) }

    func stop() { process.stop() }
}

/// Everything the fronts share for one bench: the work folder, the PKI, the local OCSP responder
/// and the Mosquitto broker behind (a) and (b). Front (c) is a second Mosquitto with its own TLS
/// listener, so the broker behind a and b does not count in c's figures nor c's in theirs.
final class BenchEnvironment {
    let work: String
    let pki: String
    let staplegate: String
    /// Cores for the server side (fronts, broker, responder) and for the load generators.
    let placement: CPUPlacement
    private let pkiScript: String
    private(set) var brokerPort = 0
    private(set) var responderPort = 0
    private(set) var responder: ChildProcess?
    private(set) var broker: ChildProcess?
    /// config/staplegate.yaml, which column (a) runs.
    let example: ExampleConfiguration
    private var started = 0

    /// The device identity every client presents (chain: device + issuing CA). One certificate
    /// for all 5 000 sessions is enough: every front authenticates the chain, not the client id,
    /// and Mosquitto's `use_identity_as_username` is off, so distinct client ids keep the
    /// sessions apart.
    var deviceCertificate: String { "\(pki)/device-1.pem" }
    var deviceKey: String { "\(pki)/device-1.key" }
    var caChain: String { "\(pki)/ca-chain.pem" }

    init(work: String, staplegate: String, pkiScript: String, example: ExampleConfiguration, placement: CPUPlacement) {
        self.work = work
        self.placement = placement
        self.pki = "\(work)/pki"
        self.staplegate = staplegate
        self.pkiScript = pkiScript
        self.example = example
    }

    /// PKI (with `fleetDevices` more device certificates for the fleet figures), OCSP responder, broker.
    func setUp(fleetDevices: Int = 0) throws {
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        responderPort = try LoopbackPort.free()
        let pkiLog = "\(work)/make-demo-pki.log"
        let make = try ChildProcess("make-demo-pki.sh", pkiScript,
                                    ["--out", pki, "--ocsp-url", "http://127.0.0.1:\(responderPort)", "--force"], logPath: pkiLog)
        guard make.waitForExit(timeout: 120) == 0 else { throw BenchFailure("\(pkiScript) failed; \(pkiLog):\n\(make.logTail())") }
        // Before the responder starts: it reads index.txt then, and would see later entries late.
        if fleetDevices > 0 { try issueFleetDevices(count: fleetDevices) }
        try checkResponderInCertificates()

        // openssl ocsp has no listen-address option: it binds every interface, on a free port.
        let ocsp = try ChildProcess("openssl ocsp", "openssl", [
            "ocsp", "-index", "\(pki)/index.txt", "-CA", "\(pki)/issuing-ca.pem", "-rsigner", "\(pki)/ocsp-signer.pem",
            "-rkey", "\(pki)/ocsp-signer.key", "-port", String(responderPort), "-nmin", "10",
        ], logPath: "\(work)/ocsp-responder.log", cpus: placement.servers)
        // Not probed with a connection: openssl ocsp 3.0 without -multi hangs on a connection
        // closed without a request, and every OCSP lookup after it would time out.
        try waitForLog(of: ocsp, containing: "waiting for OCSP client connections")
        responder = ocsp

        brokerPort = try LoopbackPort.free()
        let configuration = try write("mosquitto-broker.conf", Self.mosquittoCommon + ["listener \(brokerPort) 127.0.0.1"])
        let mosquitto = try ChildProcess("mosquitto (broker)", "mosquitto", ["-c", configuration], logPath: "\(work)/mosquitto-broker.log",
                                        cpus: placement.servers)
        try LoopbackPort.waitUntilListening(brokerPort, by: mosquitto)
        broker = mosquitto
    }

    /// Starts `kind` on a free port and waits until it listens: StapleGate with the example's
    /// defaults (a) or stripped (a′).
    func start(_ kind: FrontKind) throws -> RunningFront {
        switch kind {
        case .staplegate: try startStapleGate(.defaults(.asShipped))
        case .staplegateStripped: try startStapleGate(.stripped(.off))
        case .nginx, .mosquitto: try startPeer(kind)
        }
    }

    /// A StapleGate with `profile`; `fleet`: one of the fleet figures (stripped only: shared
    /// PostgreSQL store, admin listener for its metrics).
    func startStapleGate(_ profile: StapleGateProfile, fleet: FleetMember? = nil) throws -> RunningFront {
        let port = try LoopbackPort.free()
        started += 1
        let label = "staplegate-\(started)-\(profile.label)"
        let text: String
        var adminPort = fleet?.adminPort
        switch profile {
        case .defaults(let variant):
            let admin = try LoopbackPort.free()
            adminPort = admin
            text = try defaultsConfiguration(variant, port: port, adminPort: admin, label: label)
        case .stripped(let mode):
            text = strippedConfiguration(mode, port: port, label: label, fleet: fleet)
        }
        let configuration = try write("\(label).yaml", text)
        let process = try ChildProcess("staplegate", staplegate, ["run", "--config", configuration], logPath: "\(work)/\(label).log",
                                       cpus: placement.servers)
        let kind: FrontKind = if case .defaults = profile { .staplegate } else { .staplegateStripped }
        var front = RunningFront(kind: kind, port: port, process: process)
        front.adminPort = adminPort
        do {
            try LoopbackPort.waitUntilListening(port, by: process)
            if let adminPort { try LoopbackPort.waitUntilListening(adminPort, by: process) }
        } catch {
            process.stop()
            throw error
        }
        return front
    }

    private func startPeer(_ kind: FrontKind) throws -> RunningFront {
        let port = try LoopbackPort.free()
        started += 1
        let label = "\(kind.rawValue)-\(started)"
        let process: ChildProcess
        switch kind {
        case .staplegate, .staplegateStripped:
            preconditionFailure("StapleGate starts with startStapleGate")
        case .nginx:
            let prefix = "\(work)/\(label)"
            try FileManager.default.createDirectory(atPath: "\(prefix)/logs", withIntermediateDirectories: true)
            let configuration = try write("\(label)/nginx.conf", nginxConfiguration(port: port, prefix: prefix))
            // daemon off: the master stays our child, so its pid is the one to stop and to measure.
            process = try ChildProcess("nginx", "nginx", ["-p", prefix, "-c", configuration, "-e", "\(prefix)/logs/error.log"],
                                       logPath: "\(work)/\(label).log", cpus: placement.servers)
        case .mosquitto:
            let configuration = try write("\(label).conf", Self.mosquittoCommon + [
                "listener \(port) 127.0.0.1", "cafile \(caChain)", "certfile \(pki)/server.pem", "keyfile \(pki)/server.key",
                "require_certificate true", "tls_version tlsv1.3",
            ])
            process = try ChildProcess("mosquitto (TLS front)", "mosquitto", ["-c", configuration], logPath: "\(work)/\(label).log",
                                       cpus: placement.servers)
        }
        do {
            try LoopbackPort.waitUntilListening(port, by: process)
        } catch {
            process.stop()
            throw error
        }
        // nginx forks its workers after it listens; wait until they are there to be measured.
        if kind == .nginx {
            let deadline = Date().addingTimeInterval(10)
            while ProcessStats.processTree(process.pid).count < 1 + placement.serverCores, Date() < deadline {
                usleep(20_000)
            }
        }
        return RunningFront(kind: kind, port: port, process: process)
    }

    /// Column (a) asks no responder by name: stapling and device OCSP take the URL from the
    /// certificates' AIA, as the example's defaults do. Check that the PKI put this bench's
    /// responder there, so that (a)'s OCSP traffic really goes to it.
    private func checkResponderInCertificates() throws {
        let expected = "http://127.0.0.1:\(responderPort)"
        for certificate in ["\(pki)/server.pem", deviceCertificate] {
            let output = "\(work)/ocsp-uri.out"
            let x509 = try ChildProcess("openssl x509", "openssl", ["x509", "-noout", "-ocsp_uri", "-in", certificate],
                                        logPath: "\(work)/ocsp-uri.log", stdoutPath: output)
            _ = x509.waitForExit(timeout: 20)
            let named = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard named == expected else {
                throw BenchFailure("\(certificate) names the OCSP responder \"\(named)\" in its AIA, not the bench's \(expected): "
                    + "column (a) would ask another responder (\(pkiScript) --ocsp-url)")
            }
        }
    }

    private func waitForLog(of child: ChildProcess, containing text: String, timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !((try? String(contentsOfFile: child.logPath, encoding: .utf8))?.contains(text) ?? false) {
            guard child.isRunning, Date() < deadline else {
                throw BenchFailure("\(child.name) did not start; \(child.logPath):\n\(child.logTail())")
            }
            usleep(50_000)
        }
    }

    func tearDown() {
        broker?.stop()
        responder?.stop()
    }

    /// Both Mosquittos: anonymous (the fronts authenticate), no persistence, errors only in the
    /// log, as root (`user root`: the bench's key files are readable by root only). TCP_NODELAY:
    /// with Mosquitto's default (Nagle on) every front's p99.9 latency is 10–20 ms of Nagle and
    /// delayed ACKs on the broker's sockets, which hides the fronts' own differences.
    private static let mosquittoCommon = [
        "user root", "allow_anonymous true", "persistence false", "log_dest stderr", "log_type error", "log_type warning",
        "connection_messages false", "set_tcp_nodelay true",
    ]

    private func nginxConfiguration(port: Int, prefix: String) -> String {
        """
        # Written by staplegate-bench: Debian's nginx stream module terminating the same mTLS.
        load_module /usr/lib/nginx/modules/ngx_stream_module.so;
        worker_processes \(placement.serverCores);
        worker_rlimit_nofile 20000;
        daemon off;
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/logs/error.log error;
        events { worker_connections 20000; }
        stream {
            server {
                listen 127.0.0.1:\(port) ssl;
                ssl_certificate \(pki)/server.pem;
                ssl_certificate_key \(pki)/server.key;
                ssl_verify_client on;
                ssl_client_certificate \(caChain);
                ssl_protocols TLSv1.3;
                ssl_ecdh_curve X25519;
                ssl_session_tickets on;
                proxy_pass 127.0.0.1:\(brokerPort);
            }
        }

        """
    }

    private func write(_ name: String, _ lines: [String]) throws -> String {
        try write(name, lines.joined(separator: "\n") + "\n")
    }

    private func write(_ name: String, _ text: String) throws -> String {
        let path = "\(work)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
