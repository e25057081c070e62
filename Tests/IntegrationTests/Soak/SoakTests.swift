import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StapleGateTLS
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The soak run (issue 16 point 6): the real `staplegate run` with the example's defaults
/// (traces, device OCSP, stapling, admin, info logging), a real Mosquitto and `openssl ocsp`,
/// and a fleet of devices (default 2 000) that connect with their own certificates, publish
/// numbered QoS 1 messages, leave and come back; meanwhile 1 % of them are revoked (at the CA,
/// then `staplegate ocsp recheck --device`, as the README tells operators), the configuration is
/// reloaded and the responder restarted twice. Passes when memory and descriptors stay flat
/// after warm-up, no revoked device is admitted once the gateway knows, no acknowledged message
/// is lost or duplicated beyond what QoS 1 allows, no good device is refused or cut while the
/// responder is up, and nothing is stuck.
///
/// `make test` runs 2 minutes; `make soak` runs SOAK_MINUTES (default 60). Writes
/// `soak.md`, `soak.png` and `samples.tsv` to SOAK_REPORT_DIR (default .build/soak).
final class SoakTests: XCTestCase {
    func testTheGatewayHoldsAFleetWithChurnRevocationsReloadsAndResponderRestarts() async throws {
        ProcessRegistry.install()
        let plan = try SoakPlan.fromEnvironment(ProcessInfo.processInfo.environment, repository: Repository.root)
        try Self.raiseOpenFilesLimit(toHold: plan.devices)
        let directory = try TemporaryDirectory(prefix: "soak")
        defer { directory.remove() }
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let names = plan.deviceNames
        let identities = try pki.issueDevices(count: plan.devices, prefix: "soak")

        // Mosquitto as tests run it, minus a log line per connection (hundreds of thousands in
        // an hour), with no cap on the subscriber's queue: a loss must be the gateway's.
        let broker = try await MosquittoBroker.start(extraConfiguration: ["connection_messages false", "max_queued_messages 0"])
        defer { broker.stopBlocking(); broker.remove() }
        let responder = try await OCSPResponder.start(pki: pki)
        defer { responder.stopBlocking() }
        // Info logging writes lines per session: to a file, not this process's memory.
        try FileManager.default.createDirectory(atPath: plan.reportDirectory, withIntermediateDirectories: true)
        let gatewayLog = "\(plan.reportDirectory)/gateway.log"
        try? FileManager.default.removeItem(atPath: gatewayLog)
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        tls: plan.sessionCacheSize.map { ["session_cache_size: \($0)"] } ?? [],
                                                        logging: "{ level: info }", stapling: true, logFile: gatewayLog)
        let adminPort = try XCTUnwrap(gateway.adminPort)
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "soak/#",
                                                             clientID: "soak-subscriber")

        let recorder = SoakRecorder()
        let sampler = SoakSampler()
        sampler.start(pid: gateway.process.pid, adminPort: adminPort, interval: plan.sampleEverySeconds, recorder: recorder)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        addTeardownBlock { try? await group.shutdownGracefully() }
        var devices: [SoakDevice] = []
        for (index, identity) in identities.enumerated() {
            let context = try ClientTLSContext(caBundleAt: pki.caChain)
            try context.useClientCertificate(chain: PEMFile.certificateChain(at: identity.certificate),
                                             key: PEMFile.privateKey(at: identity.key))
            let device = SoakDevice(name: names[index], context: context, port: gateway.port, plan: plan,
                                    recorder: recorder, eventLoop: group.next())
            device.start(after: plan.rampSeconds * Double(index) / Double(plan.devices))
            devices.append(device)
        }

        recorder.progress("\(plan.devices) devices started, for \(plan.minutes) min; report in \(plan.reportDirectory)")
        let operatorLog = try await SoakOperator(plan: plan, pki: pki, responder: responder, gateway: gateway,
                                                 recorder: recorder).run()

        // The end: every device leaves cleanly, then nothing may be left open or undelivered.
        recorder.progress("the run's time is up: every device leaves")
        let left = NIOLockedValueBox(Set<Int>())
        for (index, device) in devices.enumerated() {
            device.stop().whenComplete { _ in left.withLockedValue { _ = $0.insert(index) } }
        }
        do {
            try await waitUntil(timeout: .seconds(Int64(plan.stuckAfterSeconds) + 30), pollEvery: .milliseconds(100),
                                "every device to leave") { left.withLockedValue { $0.count } == devices.count }
        } catch {
            let stayed = left.withLockedValue { done in devices.indices.filter { !done.contains($0) } }
            for index in stayed {
                let state = try await devices[index].describeState().get()
                recorder.failed(devices[index].name, "stuck: did not finish leaving (\(state))")
            }
        }
        recorder.progress("\(left.withLockedValue { $0.count }) of \(devices.count) devices left")
        let end = recorder.now
        var gatewaySessions = -1.0
        try? await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(200), "the gateway to hold no session") {
            gatewaySessions = SoakSample.metrics(try await adminRequest(port: adminPort, "/metrics").body,
                                                 gauge: "staplegate_sessions_active", counter: "").gauge
            return gatewaySessions == 0
        }
        await sampler.stop()
        recorder.progress("every device left; the gateway holds \(Int(gatewaySessions)) sessions")
        let acknowledged = recorder.read { $0.acknowledged }
        var received: [String: [Int: Int]] = [:]
        try? await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(200), "every acknowledged message delivered") {
            received = SoakLedger.parseReceived(Substring(subscriber.process.stdout.text))
            return acknowledged.allSatisfy { device, numbers in numbers.allSatisfy { (received[device]?[$0] ?? 0) > 0 } }
        }
        await subscriber.process.terminate()
        let reloadsApplied = try await Self.count("configuration reloaded from", in: gatewayLog)
        let reloadsRefused = try await Self.count("reload refused", in: gatewayLog)

        let ledger = recorder.read { $0 }
        let report = SoakReport(plan: plan, ledger: ledger, samples: sampler.all, received: received, end: end,
                                gatewaySessionsAtEnd: gatewaySessions, reloadsSent: operatorLog.reloads,
                                reloadsApplied: reloadsApplied, reloadsRefused: reloadsRefused,
                                operatorProblems: operatorLog.problems, samplerError: sampler.error,
                                gatewayBinary: try CommandLineTests.findExecutable())
        let written = try report.write()
        print("soak: \(report.summary)\nsoak report: \(written)")
        if !report.passed {
            XCTFail("the soak failed; see \(written)\n\(report.failures.joined(separator: "\n"))\n--- gateway log (end) ---\n"
                    + (try await Self.tail(gatewayLog)))
        }
        await gateway.stop()
    }

    /// Lines of the log containing `text` (grep: the log of an hour is hundreds of megabytes).
    private static func count(_ text: String, in log: String) async throws -> Int {
        let result = try await ManagedProcess("grep", ["-c", "-F", text, log]).commandResult(timeout: .seconds(120))
        return Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    private static func tail(_ log: String) async throws -> String {
        try await ManagedProcess("tail", ["-n", "60", log]).commandResult(timeout: .seconds(30)).stdout
    }

    /// Each device holds a socket here, in Mosquitto and two in the gateway (which raises its
    /// own limit): children inherit this process's soft limit.
    private static func raiseOpenFilesLimit(toHold devices: Int) throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let needed = rlim_t(devices * 3 + 512)
        guard limit.rlim_cur >= needed else {
            throw SoakPlanError("SOAK_DEVICES=\(devices) needs about \(needed) open files; the hard limit is \(limit.rlim_max) (ulimit -Hn)")
        }
    }
}
