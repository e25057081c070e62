import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// 100 SIGHUPs in about ten seconds while a device publishes QoS 1 messages and new devices
/// connect: the gateway stays up, reports an outcome for every reload it starts, drops no
/// session, loses no acknowledged message, keeps admitting devices, and still applies the next
/// reload that changes something. Stapling is on, so each reload builds a stapling service and
/// asks the responder again, as in production.
extension FaultInjectionTests {
    func testAStormOfReloadsDropsNoSessionAndLosesNoMessage() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let directory = try makeTemporaryDirectory()
        let gateway = try await startStapleGate(directory: directory, stapling: true)
        let root = uniqueTopic("fault/reloads")

        // The session that must survive: numbered QoS 1 messages, one every 10 ms, all along.
        let (subscriber, publisher, publishing) = try await steadySession(through: gateway, root: root, directory: directory)
        try await waitUntil(timeout: .seconds(30), "the first messages acknowledged") {
            publisher.acknowledgements().acknowledged.count >= 5
        }

        // The storm: 100 SIGHUPs, one every 100 ms (the operator's pace, not a wait for anything);
        // every 20th, a new device connects and publishes while the storm goes on.
        var newDevices: [Task<Void, Error>] = []
        for signal in 1...100 {
            gateway.process.signal(SIGHUP)
            if signal % 20 == 0 {
                let device = ["device-2", "device-3"][(signal / 20) % 2]
                newDevices.append(Task {
                    try await self.newDevicePublishes(device, through: gateway, to: subscriber, topic: "\(root)/new",
                                                      message: "admitted during the storm \(signal)")
                })
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertTrue(gateway.process.isRunning, "the gateway exited during the storm\n\(gateway.output)")
        for device in newDevices { try await device.value }
        let sentDuringStorm = publisher.sent
        // New handshakes are still stapled: no reload left the gateway without its staple.
        let stapled = try await OpenSSLClient(port: gateway.port, pki: pki, device: "device-2", extraArgs: ["-status"])
            .finish(timeout: .seconds(15))
        XCTAssertTrue(stapled.output.contains("Cert Status: good"), "no good staple after the storm\n\(stapled.output)")
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/new",
                                     message: "admitted after the storm")

        // The next reload that changes something is applied: the rogue CA joins tls.device_ca,
        // and a device it issued, refused until now, is admitted.
        let rogueTopic = "\(root)/rogue"
        let refused = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-rogue", topic: rogueTopic,
                                             message: "before", timeout: .seconds(30))
        XCTAssertNotEqual(refused.status, .exited(0), "negative control: the rogue device was admitted before the reload\n\(refused)")
        let bundle = try directory.write("device-cas.pem", try String(contentsOfFile: pki.caChain, encoding: .utf8)
                                         + String(contentsOfFile: pki.path("rogue-ca.pem"), encoding: .utf8))
        let original = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        let widened = original.replacingOccurrences(of: "device_ca: \"\(pki.caChain)\"", with: "device_ca: \"\(bundle)\"")
        XCTAssertNotEqual(widened, original)
        try widened.write(toFile: gateway.configPath, atomically: true, encoding: .utf8)
        gateway.process.signal(SIGHUP)
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(500), "the rogue device admitted after the reload",
                            details: { gateway.output.suffix(5_000).description }) {
            let result = try await mosquittoPub(port: gateway.port, pki: self.pki, device: "device-rogue", topic: rogueTopic,
                                                message: "after", timeout: .seconds(30))
            return result.status == .exited(0)
        }

        // Every message the device sent was acknowledged and delivered, on the one session it opened.
        try await publishing.stop()
        try await publisher.waitUntilAllDone()
        let acknowledgements = publisher.acknowledgements()
        XCTAssertEqual(acknowledgements.repeated, [], "an acknowledgement came twice")
        XCTAssertEqual(acknowledgements.acknowledged, Set(1...publisher.sent))
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(50), "every acknowledged message at the subscriber",
                            details: { "missing: \(acknowledgements.acknowledged.subtracting(publisher.numbers(receivedBy: subscriber)).sorted().prefix(20))" }) {
            acknowledgements.acknowledged.isSubset(of: publisher.numbers(receivedBy: subscriber))
        }
        XCTAssertTrue(publisher.isConnected, "the device's session was dropped\n\(publisher.client.process.output)")
        let sessionLines = brokerLines(naming: publisher.clientID)
        XCTAssertEqual(sessionLines.filter { $0.contains("New client connected") }.count, 1, "\(sessionLines)")
        XCTAssertFalse(sessionLines.contains { $0.contains("closed its connection") || $0.contains("disconnected") }, "\(sessionLines)")

        // Every reload started was reported: applied, or refused with a reason. Signals that
        // arrive while one is pending merge into it (POSIX), so there may be fewer than 101.
        let started = logLines(gateway, containing: "SIGHUP: reloading").count
        let applied = logLines(gateway, containing: "configuration reloaded from").count
        let refusedReloads = logLines(gateway, containing: "reload refused").count
        XCTAssertEqual(refusedReloads, 0, "the configuration never changed for the worse")
        XCTAssertEqual(applied, started, "reloads started and reloads reported")
        XCTAssertGreaterThan(started, 1, "the storm's reloads ran")
        XCTAssertLessThanOrEqual(started, 101)
        XCTAssertTrue(gateway.process.isRunning)
        print("FaultInjectionTests reload storm: \(started) reloads for 101 SIGHUPs, all applied; \(publisher.sent) QoS 1 messages "
              + "(\(sentDuringStorm) by the storm's end) all acknowledged and delivered on one session")
    }
}
