import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// Stapling end to end: the real `staplegate` binary, a real `openssl ocsp` responder and real
/// `openssl s_client -status` devices.
final class StaplingTests: GatewayTestCase {
    private var executable: String!
    private var responder: OCSPResponder?
    private var gateways: [ManagedProcess] = []

    override func setUp() async throws {
        try await super.setUp()
        executable = try CommandLineTests.findExecutable()
    }

    override func tearDown() async throws {
        for gateway in gateways where gateway.isRunning { await gateway.terminate() }
        await responder?.stop()
        try await super.tearDown()
    }

    /// A config for `certificate` (a demo PKI name) with `stapling` lines, its state in `state`.
    private func writeConfiguration(port: Int, certificate: String = "server", also: String? = nil, stapling: [String] = [],
                                    state: TemporaryDirectory, pki: TestPKI? = nil) throws -> String {
        let pki = pki ?? self.pki!
        let second = also.map { "\n    - { certificate: \"\(pki.certificate($0))\", key: \"\(pki.key($0))\" }" } ?? ""
        let text = """
        listen: { address: "127.0.0.1", port: \(port) }
        tls:
          certificates:
            - { certificate: "\(pki.certificate(certificate))", key: "\(pki.key(certificate))" }\(second)
          device_ca: "\(pki.caChain)"
        upstream: { address: 127.0.0.1, port: \(broker.port!) }
        state_directory: "\(state.file("state"))"
        # Device checks are DeviceRevocationTests' subject; here the responder is sometimes down.
        device_ocsp: { enabled: false }
        admin: { port: 0 }
        stapling:
        \(stapling.map { "  \($0)\n" }.joined())  retry_min: 1s
          retry_max: 2s

        """
        return try state.write("staplegate.yaml", text)
    }

    private func startGateway(configPath: String, port: Int) async throws -> ManagedProcess {
        let gateway = try ManagedProcess(executable, ["run", "--config", configPath])
        gateways.append(gateway)
        try await gateway.waitForOutput("listening for devices", timeout: .seconds(20))
        return gateway
    }

    /// One device handshake asking for a staple; returns everything s_client printed.
    private func handshakeAskingForStatus(port: Int, extraArgs: [String] = [], pki: TestPKI? = nil) async throws -> String {
        let client = try OpenSSLClient(port: port, pki: pki ?? self.pki, device: "device-1", extraArgs: ["-status"] + extraArgs)
        let result = try await client.finish(timeout: .seconds(10))
        return result.stdout + result.stderr
    }

    func testTheFirstHandshakeAfterAStartIsStapledWithAVerifiedGoodResponse() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let state = try makeTemporaryDirectory()
        let gateway = try await startGateway(configPath: try writeConfiguration(port: port, state: state), port: port)

        let output = try await handshakeAskingForStatus(port: port)

        XCTAssertTrue(output.contains("OCSP Response Status: successful"), output)
        XCTAssertTrue(output.contains("Cert Status: good"), output)
        XCTAssertTrue(output.contains("Responder Id: CN = StapleGate Demo OCSP Signer"), output)
        XCTAssertTrue(gateway.stderr.contains("OCSP staple refreshed"), gateway.output)
        let status = try String(contentsOfFile: state.file("state/ocsp-status.json"), encoding: .utf8)
        XCTAssertTrue(status.contains("\"certStatus\" : \"good\""), status)
        XCTAssertTrue(status.contains("\"serving\" : true"), status)

        // What an operator reads: `staplegate ocsp status`.
        let configPath = state.file("staplegate.yaml")
        let shown = try await ManagedProcess(executable, ["ocsp", "status", "--config", configPath]).commandResult(timeout: .seconds(20))
        XCTAssertEqual(shown.status, .exited(0), "\(shown)")
        XCTAssertTrue(shown.stdout.contains("cert status:   good, stapled"), shown.stdout)
        XCTAssertTrue(shown.stdout.contains("responder:     \(pki.ocspURL)"), shown.stdout)
        XCTAssertTrue(shown.stdout.contains("failures:      0 in a row"), shown.stdout)
        XCTAssertEqual(shown.stderr, "", "a running gateway's status carries no warning")
        let asJSON = try await ManagedProcess(executable, ["ocsp", "status", "--state-dir", state.file("state"), "--json"])
            .commandResult(timeout: .seconds(20))
        let decoded = try JSONSerialization.jsonObject(with: Data(asJSON.stdout.utf8)) as? [[String: Any]]
        XCTAssertEqual(decoded?.first?["certStatus"] as? String, "good", asJSON.stdout)

        // Stopped, the gateway's last status is still shown, but not as if it were live.
        await gateway.terminate()
        let stale = try await ManagedProcess(executable, ["ocsp", "status", "--config", configPath]).commandResult(timeout: .seconds(20))
        XCTAssertEqual(stale.status, .exited(0), "\(stale)")
        XCTAssertTrue(stale.stdout.contains("cert status:   good, stapled"), stale.stdout)
        XCTAssertTrue(stale.stderr.contains("the gateway is not running: this is the status it last wrote, at "), stale.stderr)
    }

    func testOCSPStatusSaysSoWhenTheGatewayKeepsNoState() async throws {
        let empty = try makeTemporaryDirectory()
        let shown = try await ManagedProcess(executable, ["ocsp", "status", "--state-dir", empty.file("none")]).commandResult(timeout: .seconds(20))
        XCTAssertEqual(shown.status, .exited(1), "\(shown)")
        XCTAssertTrue(shown.stderr.contains("no OCSP status in"), shown.stderr)
    }

    func testRFC5019GetRequestsAreUsedWhenConfigured() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["method: get"], state: try makeTemporaryDirectory())
        let gateway = try await startGateway(configPath: path, port: port)

        let output = try await handshakeAskingForStatus(port: port)

        XCTAssertTrue(output.contains("Cert Status: good"), output)
        XCTAssertTrue(gateway.stderr.contains("OCSP staple refreshed"), gateway.output)
    }

    func testWithStaplingOffNoStapleIsSent() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["enabled: false"], state: try makeTemporaryDirectory())
        _ = try await startGateway(configPath: path, port: port)

        let output = try await handshakeAskingForStatus(port: port)

        XCTAssertTrue(output.contains("OCSP response: no response sent"), output)
        XCTAssertFalse(output.contains("Cert Status"), output)
    }

    func testAPersistedStapleIsServedAtOnceAfterARestartWhileTheResponderIsDown() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let state = try makeTemporaryDirectory()
        let path = try writeConfiguration(port: port, state: state)
        let first = try await startGateway(configPath: path, port: port)
        let firstOutput = try await handshakeAskingForStatus(port: port)
        XCTAssertTrue(firstOutput.contains("Cert Status: good"), firstOutput)
        first.signal(SIGTERM)
        let exit = try await first.waitForExit(timeout: .seconds(10))
        XCTAssertEqual(exit, .exited(0), first.output)

        await responder?.stop()
        responder = nil
        let second = try await startGateway(configPath: path, port: port)
        let output = try await handshakeAskingForStatus(port: port)

        XCTAssertTrue(output.contains("Cert Status: good"), output)
        XCTAssertTrue(second.stderr.contains("installed the persisted OCSP staple"), second.output)
    }

    func testNothingIsStapledWhileTheResponderIsDownAndNothingWasPersisted() async throws {
        let port = try FreePort.next()
        let gateway = try await startGateway(configPath: try writeConfiguration(port: port, state: try makeTemporaryDirectory()), port: port)

        let output = try await handshakeAskingForStatus(port: port)

        XCTAssertTrue(output.contains("OCSP response: no response sent"), output)
        XCTAssertTrue(output.contains("Verification: OK") || output.contains("Verify return code: 0"), "lenient: still served\n\(output)")
        XCTAssertTrue(gateway.stderr.contains("OCSP staple refresh failed: cannot connect to the responder"), gateway.output)
    }

    func testStrictPolicyRefusesHandshakesUntilAStapleArrivesThenServesThem() async throws {
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["policy: strict"], state: try makeTemporaryDirectory())
        let gateway = try await startGateway(configPath: path, port: port)

        let refused = try OpenSSLClient(port: port, pki: pki, device: "device-1", extraArgs: ["-status"])
        _ = try await refused.waitUntilRefused()
        try await gateway.waitForOutput("refusing device connection: no valid OCSP staple held", timeout: .seconds(5))

        responder = try await OCSPResponder.start(pki: pki)
        try await gateway.waitForOutput("OCSP staple refreshed", timeout: .seconds(15))
        let output = try await handshakeAskingForStatus(port: port)
        XCTAssertTrue(output.contains("Cert Status: good"), output)
    }

    func testARevokedServerCertificateIsStapledAsRevokedAfterTheNextRefresh() async throws {
        // A PKI of its own: revoking its server certificate must not touch the other tests'.
        let ownPKI = try TestPKI.make()
        defer { ownPKI.remove() }
        responder = try await OCSPResponder.start(pki: ownPKI)
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["max_refresh_interval: 1s"],
                                          state: try makeTemporaryDirectory(), pki: ownPKI)
        let gateway = try await startGateway(configPath: path, port: port)
        let before = try await handshakeAskingForStatus(port: port, pki: ownPKI)
        XCTAssertTrue(before.contains("Cert Status: good"), before)

        try await ownPKI.revoke("server", reason: "keyCompromise")

        var output = ""
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(250), "a revoked staple", details: { output + gateway.output }) {
            output = try await handshakeAskingForStatus(port: port, pki: ownPKI)
            return output.contains("Cert Status: revoked")
        }
        XCTAssertTrue(output.contains("Revocation Reason: keyCompromise"), output)
        XCTAssertTrue(gateway.stderr.contains("our own certificate is REVOKED"), gateway.output)
    }

    func testAMustStapleCertificateDefaultsToRefusingHandshakesWithoutAStaple() async throws {
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, certificate: "server-muststaple", state: try makeTemporaryDirectory())
        let gateway = try await startGateway(configPath: path, port: port)

        let refused = try OpenSSLClient(port: port, pki: pki, device: "device-1", extraArgs: ["-status"])
        _ = try await refused.waitUntilRefused()
        try await gateway.waitForOutput("(stapling policy must)", timeout: .seconds(5))

        responder = try await OCSPResponder.start(pki: pki)
        try await gateway.waitForOutput("OCSP staple refreshed", timeout: .seconds(15))
        let output = try await handshakeAskingForStatus(port: port)
        XCTAssertTrue(output.contains("Cert Status: good"), output)
    }

    func testAMisbehavingResponderIsRejectedWithItsReasonAndTheGoodStapleIsKept() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["max_refresh_interval: 1s"], state: try makeTemporaryDirectory())
        let gateway = try await startGateway(configPath: path, port: port)
        let first = try await handshakeAskingForStatus(port: port)
        XCTAssertTrue(first.contains("Cert Status: good"), first)

        for (arguments, reason) in [(["-badsig"], "response signature invalid"), (["-resp_no_certs"], "signer certificate not found")] {
            await responder?.stop()
            try await responder?.start(extraArguments: arguments)
            try await gateway.waitForOutput("OCSP staple refresh failed: \(reason)", timeout: .seconds(15))
            let output = try await handshakeAskingForStatus(port: port)
            XCTAssertTrue(output.contains("Cert Status: good"), "the previous good staple is still served\n\(output)")
        }
    }

    func testECDSAAndRSACertificatesEachGetTheirOwnStaple() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, also: "server-rsa", state: try makeTemporaryDirectory())
        _ = try await startGateway(configPath: path, port: port)

        for (name, cipher) in [("server", "ECDHE-ECDSA-AES128-GCM-SHA256"), ("server-rsa", "ECDHE-RSA-AES128-GCM-SHA256")] {
            let serial = try PEMFile.certificateChain(at: pki.certificate(name))[0].serialHex
            let output = try await handshakeAskingForStatus(port: port, extraArgs: ["-tls1_2", "-cipher", cipher])
            XCTAssertTrue(output.contains("Cert Status: good"), output)
            XCTAssertTrue(output.contains("Serial Number: \(serial)"), "\(name)'s own staple\n\(output)")
        }
    }

    // MARK: An https:// responder (a real TLS front, socat, before openssl ocsp)

    func testAnHTTPSResponderIsTrustedThroughTheConfiguredCABundle() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let front = try await SocatListener.tlsFront(certificate: pki.certificate("server"), key: pki.key("server"),
                                                     forwardingTo: pki.ocspPort)
        defer { Task { await front.stop() } }
        let port = try FreePort.next()
        let url = "https://localhost:\(front.port)/ocsp"
        let state = try makeTemporaryDirectory()
        let path = try writeConfiguration(port: port, stapling: ["responder: \(url)", "ca_bundle: \(pki.path("root-ca.pem"))"],
                                          state: state)
        let gateway = try await startGateway(configPath: path, port: port)

        let output = try await handshakeAskingForStatus(port: port)
        XCTAssertTrue(output.contains("Cert Status: good"), output)
        XCTAssertTrue(gateway.stderr.contains("OCSP staple refreshed"), gateway.output)
        let shown = try await ManagedProcess(executable, ["ocsp", "status", "--state-dir", state.file("state")])
            .commandResult(timeout: .seconds(20))
        XCTAssertTrue(shown.stdout.contains("responder:     \(url)"), shown.stdout)
    }

    func testAnHTTPSResponderOutsideTheCABundleIsNotStapledAndTheLogSaysWhy() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let front = try await SocatListener.tlsFront(certificate: pki.certificate("server"), key: pki.key("server"),
                                                     forwardingTo: pki.ocspPort)
        defer { Task { await front.stop() } }
        let port = try FreePort.next()
        let path = try writeConfiguration(
            port: port, stapling: ["responder: https://localhost:\(front.port)/", "ca_bundle: \(pki.path("rogue-ca.pem"))"],
            state: try makeTemporaryDirectory())
        let gateway = try await startGateway(configPath: path, port: port)

        try await gateway.waitForOutput("OCSP staple refresh failed: TLS with the responder failed", timeout: .seconds(15))
        XCTAssertTrue(gateway.stderr.contains("server certificate: unable to get local issuer certificate"), gateway.output)
        let output = try await handshakeAskingForStatus(port: port)
        XCTAssertTrue(output.contains("OCSP response: no response sent"), output)
    }

    // MARK: The device simulator (libmosquitto with MOSQ_OPT_TLS_OCSP_REQUIRED)

    private func simulate(port: Int, _ extra: [String] = []) async throws -> CommandResult {
        try await ManagedProcess(executable, [
            "simulate", "--port", "\(port)", "--cafile", pki.caChain,
            "--cert", pki.certificate("device-1"), "--key", pki.key("device-1"), "--client-id", "sim-\(port)",
        ] + extra).commandResult(timeout: .seconds(30))
    }

    func testTheSimulatorConnectsWithOCSPRequiredAndReportsTheStaple() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        _ = try await startGateway(configPath: try writeConfiguration(port: port, state: try makeTemporaryDirectory()), port: port)

        let result = try await simulate(port: port)

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertTrue(result.stdout.contains("stapled OCSP response: good for serial"), result.stdout)
        XCTAssertTrue(result.stdout.contains("responder CN=StapleGate Demo OCSP Signer"), result.stdout)
        XCTAssertTrue(result.stdout.contains("received it back"), result.stdout)
    }

    func testTheSimulatorFailsAgainstAGatewayThatDoesNotStaple() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["enabled: false"], state: try makeTemporaryDirectory())
        _ = try await startGateway(configPath: path, port: port)

        let required = try await simulate(port: port)
        XCTAssertEqual(required.status, .exited(1), "\(required)")
        XCTAssertTrue(required.stderr.contains("OCSP stapling is required"), required.stderr)

        // Negative control: the same gateway serves a device that does not require a staple.
        let relaxed = try await simulate(port: port, ["--no-ocsp-required"])
        XCTAssertEqual(relaxed.status, .exited(0), "\(relaxed)")
        XCTAssertTrue(relaxed.stdout.contains("stapled OCSP response: none"), relaxed.stdout)
    }

    // MARK: A real Mosquitto bridge with bridge_require_ocsp

    /// A second Mosquitto bridging `bridge/#` to the gateway as device-1, requiring a staple.
    private func startBridge(toGatewayPort gatewayPort: Int) async throws -> (ManagedProcess, Int) {
        let folder = try makeTemporaryDirectory()
        chmod(folder.path, 0o755)
        // Mosquitto drops root for user mosquitto before it reads the bridge key.
        let key = try folder.write("bridge.key", try Data(contentsOf: URL(fileURLWithPath: pki.key("device-1"))))
        try FileManager.default.setAttributes([.ownerAccountName: "mosquitto", .posixPermissions: 0o600], ofItemAtPath: key)
        let port = try FreePort.next()
        let configuration = try folder.write("bridge.conf", """
        listener \(port) 127.0.0.1
        allow_anonymous true
        log_dest stderr
        log_type all
        connection gateway
        address localhost:\(gatewayPort)
        bridge_cafile \(pki.caChain)
        bridge_certfile \(pki.certificate("device-1"))
        bridge_keyfile \(key)
        bridge_require_ocsp true
        topic bridge/# out 1

        """)
        let bridge = try ManagedProcess("mosquitto", ["-c", configuration])
        gateways.append(bridge)
        return (bridge, port)
    }

    func testAMosquittoBridgeRequiringOCSPConnectsThroughTheGatewayAndRelays() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let port = try FreePort.next()
        _ = try await startGateway(configPath: try writeConfiguration(port: port, state: try makeTemporaryDirectory()), port: port)
        let topic = "bridge/\(uniqueTopic("ocsp"))"
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let (bridge, bridgePort) = try await startBridge(toGatewayPort: port)
        try await bridge.waitForOutput("OCSP: SSL certificate status: good", timeout: .seconds(15))
        try await bridge.waitForOutput("Received CONNACK", timeout: .seconds(15))
        let published = try await ManagedProcess("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(bridgePort)", "-t", topic,
                                                                  "-m", "over the bridge", "-q", "1"]).commandResult(timeout: .seconds(15))
        XCTAssertEqual(published.status, .exited(0), "\(published)")

        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["over the bridge"])
    }

    func testAMosquittoBridgeRequiringOCSPRefusesAGatewayThatDoesNotStaple() async throws {
        let port = try FreePort.next()
        let path = try writeConfiguration(port: port, stapling: ["enabled: false"], state: try makeTemporaryDirectory())
        _ = try await startGateway(configPath: path, port: port)

        let (bridge, _) = try await startBridge(toGatewayPort: port)

        try await bridge.waitForOutput("OCSP: no response", timeout: .seconds(15))
        XCTAssertFalse(bridge.stderr.contains("Received CONNACK"), bridge.output)
    }
}
