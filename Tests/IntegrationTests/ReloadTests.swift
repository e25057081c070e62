import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Reload (SIGHUP and `staplegate reload`) end to end: the real `staplegate` binary with
/// stapling on, a real `openssl ocsp` responder, real Mosquitto and real mosquitto_pub /
/// mosquitto_sub / `openssl s_client -status` clients. Tests that change the server certificate
/// use a PKI of their own, whose extra server certificates are issued before its responder
/// starts (so the responder knows them as good), and replace its `server.pem` / `server.key`
/// in place, as an operator renewing the certificate would.
final class ReloadTests: GatewayTestCase {
    var responder: OCSPResponder?
    var ownPKIs: [TestPKI] = []

    override func tearDown() async throws {
        await responder?.stop()
        responder = nil
        for pki in ownPKIs { pki.remove() }
        ownPKIs = []
        try await super.tearDown()
    }

    // MARK: 1. Under load

    /// 200 devices stay connected and publishing through two reloads that each switch in a new
    /// server certificate (the first by SIGHUP, the second by `staplegate reload`): no device is
    /// dropped or reconnects, no message is lost, and new handshakes get the new certificate
    /// with a good staple for it.
    func testTwoHundredDevicesKeepPublishingThroughReloadsWhileNewHandshakesGetTheNewCertificateAndItsStaple() async throws {
        let deviceCount = 200
        let roundsPerPhase = 3
        let started = ContinuousClock.now
        let pki = try makeOwnPKI()
        let certificates = try pki.issueDevices(count: deviceCount, prefix: "fleet")
        let second = try pki.issueServerCertificate("server-second")
        let third = try pki.issueServerCertificate("server-third")
        let serials = try [pki.certificate("server"), second.certificate, third.certificate].map(TestPKI.serialHex(ofCertificateAt:))
        XCTAssertEqual(Set(serials).count, 3, "three distinct serials: \(serials)")
        responder = try await OCSPResponder.start(pki: pki)
        let directory = try makeTemporaryDirectory()
        // Device checks stay on (the default): every device is checked by OCSP in its handshake.
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        sections: ["stapling: { retry_min: 1s, retry_max: 2s }"],
                                                        logging: "{ level: info }", stapling: true)
        printLogsOnFailure(gateway)
        let setUpDone = ContinuousClock.now

        let root = uniqueTopic("loadtest")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "\(root)/#")
        let fleet = try await ReloadFleet.connect(certificates: certificates, pki: pki, gatewayPort: gateway.port, topicRoot: root,
                                            pipes: try TemporaryDirectory(prefix: "fleet-pipes"), broker: broker)
        defer { fleet.removePipes() }
        let connected = ContinuousClock.now

        // Phase 1, before any reload.
        for _ in 0..<roundsPerPhase { fleet.publishRound() }
        try await fleet.waitUntilDelivered(to: subscriber)
        let before = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(before.serial, serials[0], "negative control: before the reload, the old certificate\n\(before.output)")
        XCTAssertEqual(before.stapledSerial, serials[0], before.output)
        XCTAssertEqual(before.stapledStatus, "good", before.output)
        let phase1Done = ContinuousClock.now

        // Reload 1: SIGHUP, with the files replaced in place; devices publish all along.
        try pki.replaceCertificate("server", with: second)
        let firstReload = try await fleet.publishing(to: subscriber) {
            gateway.process.signal(SIGHUP)
            try await self.waitForLogCount("configuration reloaded from", 1, in: gateway, timeout: .seconds(60))
        }
        XCTAssertTrue(gateway.output.contains("configuration reloaded from \(gateway.configPath): 1 new server certificate(s)"),
                      gateway.output)
        let afterFirst = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(afterFirst.serial, serials[1], "after the SIGHUP reload, the new certificate\n\(afterFirst.output)")
        XCTAssertEqual(afterFirst.stapledSerial, serials[1], "the staple is the new certificate's\n\(afterFirst.output)")
        XCTAssertEqual(afterFirst.stapledStatus, "good", afterFirst.output)

        // Phase 2.
        for _ in 0..<roundsPerPhase { fleet.publishRound() }
        try await fleet.waitUntilDelivered(to: subscriber)

        // Reload 2: `staplegate reload` (the control socket), devices publishing all along.
        try pki.replaceCertificate("server", with: third)
        var reloadCommand: CommandResult?
        let secondReload = try await fleet.publishing(to: subscriber) {
            reloadCommand = try await gateway.command(["reload"], timeout: .seconds(90))
        }
        let command = try XCTUnwrap(reloadCommand)
        XCTAssertEqual(command.status, .exited(0), "\(command)")
        XCTAssertTrue(command.stdout.contains("configuration reloaded from \(gateway.configPath): 1 new server certificate(s)"),
                      "\(command)")
        XCTAssertFalse(command.stderr.contains("warning:"), "no warning expected with the responder up\n\(command)")
        let afterSecond = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(afterSecond.serial, serials[2], "after `staplegate reload`, the new certificate\n\(afterSecond.output)")
        XCTAssertEqual(afterSecond.stapledSerial, serials[2], afterSecond.output)
        XCTAssertEqual(afterSecond.stapledStatus, "good", afterSecond.output)

        // Phase 3.
        for _ in 0..<roundsPerPhase { fleet.publishRound() }
        try await fleet.waitUntilDelivered(to: subscriber)
        let published = ContinuousClock.now

        // No message lost (QoS 1: duplicates allowed, counted), nothing unexpected.
        let tally = fleet.tally(subscriber)
        XCTAssertEqual(tally.missing, [], "messages lost")
        XCTAssertEqual(tally.unexpected, [], "messages nobody published")
        // None of the 200 exited, none reconnected: the broker saw each client id connect once
        // and never leave; the gateway joined exactly 200 sessions.
        let exited = fleet.devices.filter { !$0.process.isRunning }
        XCTAssertEqual(exited.map(\.clientID), [], "devices whose mosquitto_pub exited: \(exited.map { "\($0.clientID): \($0.process.output)" })")
        let mentions = fleet.brokerLinesByClient(broker.log)
        for device in fleet.devices {
            let lines = mentions[device.clientID] ?? []
            XCTAssertEqual(lines.count, 1, "\(device.clientID) should connect once and never disconnect: \(lines)")
            XCTAssertTrue(lines.first?.contains("New client connected") ?? false, "\(lines)")
        }
        let metrics = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        XCTAssertEqual(Self.metric("staplegate_sessions_total", in: metrics.body), Double(deviceCount), metrics.body)
        XCTAssertEqual(Self.metric("staplegate_sessions_active", in: metrics.body), Double(deviceCount), metrics.body)
        XCTAssertEqual(countOccurrences("reload refused", in: gateway.output), 0, gateway.output)
        XCTAssertFalse(gateway.output.contains("without an OCSP staple"), gateway.output)

        // The devices end cleanly: end of input, every queued message acknowledged, exit 0.
        fleet.closeInputs()
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(100), "all 200 mosquitto_pub to exit",
                            details: { "\(fleet.devices.filter(\.process.isRunning).count) still running" }) {
            fleet.devices.allSatisfy { !$0.process.isRunning }
        }
        let failed = fleet.devices.filter { $0.process.exitStatus != .exited(0) }
        XCTAssertEqual(failed.map(\.clientID), [], "\(failed.prefix(3).map { "\($0.process.exitStatus!): \($0.process.output)" })")

        func ms(_ from: ContinuousClock.Instant, _ to: ContinuousClock.Instant) -> Int {
            Int((to - from).seconds * 1000)
        }
        print("""
            ReloadTests load numbers: \(deviceCount) devices, \(tally.received) messages received for \(tally.expected) published \
            (\(tally.duplicates) duplicates), set-up (PKI, \(deviceCount) certificates, responder, gateway) \(ms(started, setUpDone)) ms, \
            connecting \(deviceCount) devices \(ms(setUpDone, connected)) ms, phase 1 (\(roundsPerPhase) rounds + handshake) \
            \(ms(connected, phase1Done)) ms, SIGHUP reload \(firstReload.reloadMilliseconds) ms with \(firstReload.roundsDuring) \
            rounds (\(firstReload.roundsDuring * deviceCount) messages) published while it ran and \(firstReload.rounds) around it, \
            `staplegate reload` \(secondReload.reloadMilliseconds) ms with \(secondReload.roundsDuring) rounds while it ran and \
            \(secondReload.rounds) around it, everything published and delivered at \(ms(started, published)) ms
            """)
    }

    // MARK: 2. A broken configuration

    /// Each broken file names the new certificate too: had anything been applied, the handshakes
    /// would show it. Nothing is: the open session relays, new handshakes get the old
    /// certificate and its staple; the fixed file then reloads.
    func testABrokenConfigurationOnReloadChangesNothingAndTheFixedOneThenReloads() async throws {
        let pki = try makeOwnPKI()
        let next = try pki.issueServerCertificate("server-next")
        let oldSerial = try TestPKI.serialHex(ofCertificateAt: pki.certificate("server"))
        let newSerial = try TestPKI.serialHex(ofCertificateAt: next.certificate)
        responder = try await OCSPResponder.start(pki: pki)
        let directory = try makeTemporaryDirectory()
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        logging: "{ level: info }", stapling: true)
        printLogsOnFailure(gateway)
        let original = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        let renewed = original.replacingOccurrences(of: pki.certificate("server"), with: next.certificate)
            .replacingOccurrences(of: pki.key("server"), with: next.key)
        XCTAssertNotEqual(renewed, original)

        // An open device session: device-1 publishing line by line, a subscriber on the broker.
        let topic = uniqueTopic("reload/refused")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let input = try NamedPipeInput(in: directory, name: "device-1.fifo")
        let clientID = uniqueClientID("reload-refused")
        let device = try startMosquittoPub(.gateway(port: gateway.port, pki: pki, device: "device-1"), topic: topic,
                                           payload: .linesOf(input.path), clientID: clientID)
        try await broker.waitForLog("as \(clientID) (", timeout: .seconds(15))
        var relayed: [String] = []
        func relays(_ message: String) async throws {
            relayed.append(message)
            try input.write(Array("\(message)\n".utf8))
            let received = try await subscriber.waitForMessages(relayed.count)
            XCTAssertEqual(received.map(\.payload), relayed)
        }
        func servesTheOldCertificate(_ when: String) async throws {
            let presented = try await handshake(port: gateway.port, pki: pki)
            XCTAssertEqual(presented.serial, oldSerial, "\(when): still the old certificate\n\(presented.output)")
            XCTAssertEqual(presented.stapledSerial, oldSerial, "\(when): with its staple\n\(presented.output)")
            XCTAssertEqual(presented.stapledStatus, "good", "\(when)\n\(presented.output)")
            XCTAssertTrue(device.isRunning, "\(when): the device session was dropped\n\(device.output)")
            try await relays("after \(when)")
        }
        try await servesTheOldCertificate("start")

        // (a) A certificate file that does not exist.
        let missing = directory.file("missing/server.pem")
        try write(renewed.replacingOccurrences(of: next.certificate, with: missing), to: gateway.configPath)
        //   `staplegate reload --config`: checked by the command itself, the gateway is not asked.
        let byFile = try await ManagedProcess(try CommandLineTests.findExecutable(), ["reload", "--config", gateway.configPath])
            .commandResult(timeout: .seconds(20))
        XCTAssertEqual(byFile.status, .exited(78), "\(byFile)")
        XCTAssertTrue(byFile.stderr.contains("not reloaded, the gateway keeps its configuration"), "\(byFile)")
        XCTAssertTrue(byFile.stderr.contains(gateway.configPath), "names the file\n\(byFile)")
        XCTAssertTrue(byFile.stderr.contains("tls.certificates[0].certificate"), "names the key\n\(byFile)")
        XCTAssertTrue(byFile.stderr.contains(missing), "names the missing file\n\(byFile)")
        XCTAssertEqual(countOccurrences("SIGHUP: reloading", in: gateway.output)
                       + countOccurrences("reload refused", in: gateway.output), 0, "the gateway was asked\n\(gateway.output)")
        //   `staplegate reload --state-dir`: the gateway refuses it.
        let byState = try await gateway.command(["reload"])
        XCTAssertEqual(byState.status, .exited(78), "\(byState)")
        XCTAssertTrue(byState.stderr.contains("staplegate: reload refused, nothing changed: \(gateway.configPath)"), "\(byState)")
        XCTAssertTrue(byState.stderr.contains("tls.certificates[0].certificate"), "\(byState)")
        XCTAssertTrue(byState.stderr.contains(missing), "\(byState)")
        XCTAssertEqual(byState.stdout, "", "\(byState)")
        try await waitForLogCount("reload refused, nothing changed", 1, in: gateway)
        XCTAssertTrue(logLines(gateway, containing: "reload refused, nothing changed").last?.contains(missing) ?? false, gateway.output)
        try await servesTheOldCertificate("a reload refused for a missing certificate file")

        // (b) An unknown key (a typo), by SIGHUP.
        try write(renewed + "stapling: { reload_staple_wiat: 2s }\n", to: gateway.configPath)
        gateway.process.signal(SIGHUP)
        try await waitForLogCount("reload refused, nothing changed", 2, in: gateway)
        let unknownKey = try XCTUnwrap(logLines(gateway, containing: "reload refused, nothing changed").last)
        XCTAssertTrue(unknownKey.contains(gateway.configPath) && unknownKey.contains("reload_staple_wiat"), unknownKey)
        try await servesTheOldCertificate("a reload refused for an unknown key")

        // (c) A YAML syntax error (an unclosed flow mapping), by SIGHUP.
        let upstream = "upstream: { address: 127.0.0.1, port: \(broker.port!) }"
        XCTAssertTrue(renewed.contains(upstream), renewed)
        try write(renewed.replacingOccurrences(of: upstream, with: "upstream: { address: 127.0.0.1, port: \(broker.port!)"),
                  to: gateway.configPath)
        gateway.process.signal(SIGHUP)
        try await waitForLogCount("reload refused, nothing changed", 3, in: gateway)
        let syntax = try XCTUnwrap(logLines(gateway, containing: "reload refused, nothing changed").last)
        XCTAssertTrue(syntax.contains(gateway.configPath), syntax)
        try await servesTheOldCertificate("a reload refused for a YAML syntax error")
        XCTAssertEqual(countOccurrences("configuration reloaded from", in: gateway.output), 0, gateway.output)

        // Fixed: it reloads, the new certificate with its staple for new handshakes, the open
        // session untouched.
        try write(renewed, to: gateway.configPath)
        let fixed = try await gateway.command(["reload"], timeout: .seconds(90))
        XCTAssertEqual(fixed.status, .exited(0), "\(fixed)")
        XCTAssertTrue(fixed.stdout.contains("configuration reloaded from \(gateway.configPath): 1 new server certificate(s)"), "\(fixed)")
        let presented = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(presented.serial, newSerial, presented.output)
        XCTAssertEqual(presented.stapledSerial, newSerial, presented.output)
        XCTAssertEqual(presented.stapledStatus, "good", presented.output)
        try await relays("after the fixed reload")
        XCTAssertTrue(device.isRunning, device.output)
        XCTAssertEqual(broker.log.components(separatedBy: "as \(clientID) (").count - 1, 1, "the device reconnected\n\(broker.log)")
    }

    // MARK: 3. Waiting for the new certificate's staple

    /// With the responder down, a new certificate is switched in only after
    /// `stapling.reload_staple_wait`, with a warning and without a staple; handshakes during the
    /// wait get the old certificate (and its staple). With the responder up, a reload completes
    /// without that warning and the new certificate is stapled from the first handshake.
    func testANewCertificateWaitsForItsStapleUpToReloadStapleWaitThenIsSwitchedInWithAWarning() async throws {
        let wait = 2.0
        let pki = try makeOwnPKI()
        let second = try pki.issueServerCertificate("server-second")
        let third = try pki.issueServerCertificate("server-third")
        let serials = try [pki.certificate("server"), second.certificate, third.certificate].map(TestPKI.serialHex(ofCertificateAt:))
        responder = try await OCSPResponder.start(pki: pki)
        let directory = try makeTemporaryDirectory()
        // Device checks off: they are not the subject, and the responder goes down here.
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: directory,
            sections: ["device_ocsp: { enabled: false }", "stapling: { reload_staple_wait: 2s, retry_min: 1s, retry_max: 2s }"],
            logging: "{ level: info }", stapling: true)
        printLogsOnFailure(gateway)
        let initial = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(initial.serial, serials[0], initial.output)
        XCTAssertEqual(initial.stapledSerial, serials[0], initial.output)
        XCTAssertEqual(initial.stapledStatus, "good", initial.output)

        // The responder goes away; the new certificate cannot be stapled.
        await responder?.stop()
        try pki.replaceCertificate("server", with: second)
        let signalled = ContinuousClock.now
        gateway.process.signal(SIGHUP)
        try await gateway.waitForOutput("SIGHUP: reloading")
        let during = try await handshake(port: gateway.port, pki: pki)
        let duringEnded = ContinuousClock.now
        let switchedAlready = gateway.output.contains("configuration reloaded from")
        XCTAssertFalse(switchedAlready, "the handshake meant for the wait came too late (\((duringEnded - signalled).seconds) s)")
        XCTAssertEqual(during.serial, serials[0], "during the wait: the old certificate\n\(during.output)")
        XCTAssertEqual(during.stapledSerial, serials[0], "during the wait: with its staple\n\(during.output)")
        XCTAssertEqual(during.stapledStatus, "good", during.output)

        let warning = "switched to the new server certificate without an OCSP staple after waiting"
        try await gateway.waitForOutput(warning, timeout: .seconds(30))
        let waited = (ContinuousClock.now - signalled).seconds
        XCTAssertGreaterThanOrEqual(waited, wait - 0.1, "switched before stapling.reload_staple_wait was over")
        let warningLine = try XCTUnwrap(logLines(gateway, containing: warning).first)
        XCTAssertTrue(warningLine.contains("(stapling.reload_staple_wait)") && warningLine.contains("CN=localhost"), warningLine)
        try await waitForLogCount("configuration reloaded from", 1, in: gateway)
        XCTAssertTrue(gateway.output.contains("configuration reloaded from \(gateway.configPath): 1 new server certificate(s)"),
                      gateway.output)
        let after = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(after.serial, serials[1], "after the wait: the new certificate\n\(after.output)")
        XCTAssertNil(after.stapledSerial, "no staple for it yet\n\(after.output)")
        XCTAssertTrue(after.output.contains("OCSP response: no response sent"), after.output)

        // With the responder up, the next new certificate is switched in with its staple, without the warning.
        try await responder?.start()
        try pki.replaceCertificate("server", with: third)
        let reload = try await gateway.command(["reload"], timeout: .seconds(90))
        XCTAssertEqual(reload.status, .exited(0), "\(reload)")
        XCTAssertTrue(reload.stdout.contains("1 new server certificate(s)"), "\(reload)")
        XCTAssertFalse(reload.stderr.contains("without an OCSP staple"), "\(reload)")
        XCTAssertEqual(countOccurrences(warning, in: gateway.output), 1, gateway.output)
        let stapled = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(stapled.serial, serials[2], stapled.output)
        XCTAssertEqual(stapled.stapledSerial, serials[2], stapled.output)
        XCTAssertEqual(stapled.stapledStatus, "good", stapled.output)
    }

    /// Under a strict policy a certificate without its staple would refuse every device, which
    /// is worse than the certificate serving now: such a reload is refused and nothing changes.
    func testUnderAStrictPolicyANewCertificateWithoutItsStapleIsNotSwitchedIn() async throws {
        let pki = try makeOwnPKI()
        let second = try pki.issueServerCertificate("server-second")
        let serial = try TestPKI.serialHex(ofCertificateAt: pki.certificate("server"))
        responder = try await OCSPResponder.start(pki: pki)
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
            sections: ["device_ocsp: { enabled: false }",
                       "stapling: { policy: strict, reload_staple_wait: 1s, timeout: 1s, retry_min: 1s, retry_max: 2s }"],
            logging: "{ level: info }", stapling: true)
        printLogsOnFailure(gateway)
        let before = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(before.stapledStatus, "good", before.output)

        await responder?.stop()
        try pki.replaceCertificate("server", with: second)
        let reload = try await gateway.command(["reload"], timeout: .seconds(60))
        XCTAssertEqual(reload.status, .exited(78), "\(reload)")
        XCTAssertTrue(reload.stderr.contains("reload refused, nothing changed: the new configuration would refuse every device (no valid OCSP staple held for CN=localhost (stapling policy strict))"),
                      "\(reload)")
        let after = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(after.serial, serial, "the old certificate stays\n\(after.output)")
        XCTAssertEqual(after.stapledSerial, serial, after.output)
        XCTAssertEqual(after.stapledStatus, "good", after.output)
    }

    /// A reload that keeps the server certificate builds a new stapling service too: it must
    /// take the staple over (from the state directory) rather than start without one, even with
    /// the responder down.
    func testAReloadKeepingTheCertificateKeepsServingItsStapleWhileTheResponderIsDown() async throws {
        let pki = try makeOwnPKI()
        let serial = try TestPKI.serialHex(ofCertificateAt: pki.certificate("server"))
        responder = try await OCSPResponder.start(pki: pki)
        let directory = try makeTemporaryDirectory()
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        sections: ["device_ocsp: { enabled: false }"],
                                                        logging: "{ level: info }", stapling: true)
        printLogsOnFailure(gateway)
        await responder?.stop()

        let reload = try await gateway.command(["reload"], timeout: .seconds(60))
        XCTAssertEqual(reload.status, .exited(0), "\(reload)")
        XCTAssertTrue(reload.stdout.contains("configuration reloaded from \(gateway.configPath): same server certificates"), "\(reload)")
        XCTAssertEqual(reload.stderr, "", "\(reload)")
        let presented = try await handshake(port: gateway.port, pki: pki)
        XCTAssertEqual(presented.serial, serial, presented.output)
        XCTAssertEqual(presented.stapledSerial, serial, "the staple survived the reload\n\(presented.output)")
        XCTAssertEqual(presented.stapledStatus, "good", presented.output)
    }

    // MARK: 4. Restart-only settings

    func testAReloadChangingTheListenPortWarnsThatItTakesARestartAndKeepsTheOldPort() async throws {
        let directory = try makeTemporaryDirectory()
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        sections: ["device_ocsp: { enabled: false }"], logging: "{ level: info }")
        printLogsOnFailure(gateway)
        let otherPort = try FreePort.next()
        let original = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        let moved = original.replacingOccurrences(of: "port: \(gateway.port) }", with: "port: \(otherPort) }")
        XCTAssertNotEqual(moved, original)
        try write(moved, to: gateway.configPath)

        let reload = try await gateway.command(["reload"])
        XCTAssertEqual(reload.status, .exited(0), "\(reload)")
        XCTAssertTrue(reload.stdout.contains("configuration reloaded from \(gateway.configPath): same server certificates"), "\(reload)")
        let warning = "listen (address, port, backlog) changed: takes effect at the next restart"
        XCTAssertTrue(reload.stderr.contains("warning: \(warning)"), "\(reload)")
        try await gateway.waitForOutput("reload: \(warning)")

        // Still on the old port, not on the new one: a device gets through.
        XCTAssertFalse(MosquittoBroker.acceptsTCP(port: otherPort), "the gateway moved to the new port")
        let topic = uniqueTopic("reload/port")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let published = try await mosquittoPub(port: gateway.port, pki: pki, topic: topic, message: "still on the old port")
        XCTAssertEqual(published.status, .exited(0), "\(published)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["still on the old port"])
    }
}
