import Foundation
import TestSupport
import XCTest

/// `admin.token_file` on the real `staplegate run` binary: what the admin listener then gives
/// to a request without the token, with a wrong one and with the right one, the probes that stay
/// open, a reload that changes the token, and the start refused for an open address or key.
final class AdminTokenTests: GatewayTestCase {
    private func writeToken(_ directory: TemporaryDirectory, _ name: String, _ token: String) throws -> String {
        let path = try directory.write(name, token + "\n")
        XCTAssertEqual(chmod(path, 0o600), 0)
        return path
    }

    private func startGateway(admin: String, directory: TemporaryDirectory) async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        sections: ["device_ocsp: { enabled: false }"], admin: admin)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output)")
            }
            await gateway.stop()
        }
        return gateway
    }

    func testTheTokenGuardsMetricsOCSPAndTracesButNotTheProbes() async throws {
        let directory = try makeTemporaryDirectory()
        let token = "0123456789abcdef0123456789abcdef"
        let tokenFile = try writeToken(directory, "admin.token", token)
        let gateway = try await startGateway(admin: "{ port: 0, token_file: \"\(tokenFile)\" }", directory: directory)
        let port = try XCTUnwrap(gateway.adminPort)
        XCTAssertTrue(gateway.output.contains("(bearer token required, but for /healthz and /readyz)"), gateway.output)
        // A device whose trace there is to read.
        let topic = uniqueTopic("admin/token")
        let published = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "hi")
        XCTAssertEqual(published.status, .exited(0), "\(published)")

        for path in ["/metrics", "/ocsp", "/devices/device-1/trace", "/no-such-route"] {
            let bare = try await adminRequest(port: port, path)
            XCTAssertEqual(bare.status, 401, "\(path) without a token: \(bare)")
            XCTAssertEqual(bare.headers["www-authenticate"], "Bearer realm=\"staplegate admin\"")
            XCTAssertTrue(bare.body.contains("needs the admin token (admin.token_file)"), bare.body)
            XCTAssertFalse(bare.body.contains("device-1"), "nothing of the trace leaks: \(bare.body)")
            for wrong in ["Bearer " + token.dropLast() + "0", "Bearer " + token + "0", "Basic " + token, "Bearer"] {
                let refused = try await adminRequest(port: port, path, headers: ["Authorization: \(wrong)"])
                XCTAssertEqual(refused.status, 401, "\(path) with \(wrong): \(refused)")
            }
        }
        // Refused before the method is looked at: no route is confirmed to a stranger.
        let post = try await adminRequest(port: port, "/metrics", method: "POST")
        XCTAssertEqual(post.status, 401, "\(post)")

        for probe in ["/healthz", "/readyz"] {
            let open = try await adminRequest(port: port, probe)
            XCTAssertEqual(open.status, 200, "\(probe) stays open to balancers and service managers: \(open)")
        }
        let authorized = ["Authorization: Bearer \(token)"]
        let trace = try await adminRequest(port: port, "/devices/device-1/trace", headers: authorized)
        XCTAssertEqual(trace.status, 200, "\(trace)")
        let events = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(trace.body.utf8)) as? [[String: Any]], trace.body)
        XCTAssertTrue(events.contains { $0["device"] as? String == "device-1" }, trace.body)
        let ocsp = try await adminRequest(port: port, "/ocsp", headers: ["authorization: bearer \(token)"])
        XCTAssertEqual(ocsp.status, 200, "header name and scheme in any case: \(ocsp)")
        let scrape = try await adminRequest(port: port, "/metrics", headers: authorized)
        XCTAssertEqual(scrape.status, 200, "\(scrape)")
        let samples = try await PrometheusParser.parse(scrape.body, in: directory).get()
        // 4 paths × (no header + 4 wrong ones) + the POST.
        XCTAssertEqual(samples.value("staplegate_admin_requests_unauthorized_total"), 21)
        try await gateway.waitForOutput("admin listener: refused 1 request(s) without a valid admin token since the last such line")
    }

    func testAReloadAppliesANewTokenAndRetiresTheOld() async throws {
        let directory = try makeTemporaryDirectory()
        let old = "old-token-0123456789abcdef", new = "new-token-fedcba9876543210"
        let tokenFile = try writeToken(directory, "admin.token", old)
        let gateway = try await startGateway(admin: "{ port: 0, token_file: \"\(tokenFile)\" }", directory: directory)
        let port = try XCTUnwrap(gateway.adminPort)
        let before = try await adminRequest(port: port, "/ocsp", headers: ["Authorization: Bearer \(old)"])
        XCTAssertEqual(before.status, 200, "\(before)")

        _ = try writeToken(directory, "admin.token", new)
        let reload = try await gateway.command(["reload"])
        XCTAssertEqual(reload.status, .exited(0), "\(reload)")
        XCTAssertFalse(reload.output.contains("admin"), "the token is no restart-only setting: \(reload)")

        let retired = try await adminRequest(port: port, "/ocsp", headers: ["Authorization: Bearer \(old)"])
        XCTAssertEqual(retired.status, 401, "the old token still opens the listener: \(retired)")
        let current = try await adminRequest(port: port, "/ocsp", headers: ["Authorization: Bearer \(new)"])
        XCTAssertEqual(current.status, 200, "\(current)")
    }

    /// The refusals at start, as an operator meets them: exit 78 (EX_CONFIG), the key named.
    func testAnOpenAddressWithoutATokenOrAnOpenKeyRefusesTheStart() async throws {
        let directory = try makeTemporaryDirectory()
        let executable = try CommandLineTests.findExecutable()
        let base = """
        listen: { address: "127.0.0.1", port: 0 }
        tls:
          certificates:
            - { certificate: "\(pki.certificate("server"))", key: "KEY" }
          device_ca: "\(pki.caChain)"
        upstream: { address: 127.0.0.1, port: \(broker.port!) }
        state_directory: "\(directory.file("state"))"
        device_ocsp: { enabled: false }

        """
        let openAdmin = try directory.write("open-admin.yaml", base.replacingOccurrences(of: "KEY", with: pki.key("server"))
            + "admin: { address: 0.0.0.0, port: 0 }\n")
        let refused = try await ManagedProcess(executable, ["run", "--config", openAdmin]).commandResult(timeout: .seconds(20))
        XCTAssertEqual(refused.status, .exited(78), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("admin.address: \"0.0.0.0\" is not a loopback address"), refused.stderr)

        let openKey = directory.file("open.key")
        try FileManager.default.copyItem(atPath: pki.key("server"), toPath: openKey)
        XCTAssertEqual(chmod(openKey, 0o644), 0)
        let openKeyConfig = try directory.write("open-key.yaml", base.replacingOccurrences(of: "KEY", with: openKey)
            + "admin: { enabled: false }\n")
        let keyRefused = try await ManagedProcess(executable, ["run", "--config", openKeyConfig]).commandResult(timeout: .seconds(20))
        XCTAssertEqual(keyRefused.status, .exited(78), "\(keyRefused)")
        XCTAssertTrue(keyRefused.stderr.contains("tls.certificates[0].key: \(openKey): mode 644 opens the private key to other users"),
                      keyRefused.stderr)
    }
}
