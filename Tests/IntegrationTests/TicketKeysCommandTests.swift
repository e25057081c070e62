import Foundation
import TestSupport
import XCTest

/// `staplegate ticket-keys generate` and `rotate`, run as the real binary: the files they write
/// are what the gateway accepts, and they never clobber keys by accident. (Rotation with a
/// running gateway and real tickets: SessionTicketKeyTests.)
final class TicketKeysCommandTests: GatewayTestCase {
    func testGenerateWritesAFileOfMode0600TheGatewayAcceptsAndRefusesToOverwriteIt() async throws {
        let file = try makeTemporaryDirectory().file("fleet.keys")

        let generated = try await staplegate(["ticket-keys", "generate", file])
        XCTAssertEqual(generated.status, .exited(0), "\(generated)")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int, 0o600)
        let original = try String(contentsOfFile: file, encoding: .utf8)
        let keys = keyLines(original)
        XCTAssertEqual(keys.count, 1, original)
        XCTAssertEqual(Data(base64Encoded: keys[0])?.count, 80, original)
        let shortName = try XCTUnwrap(Data(base64Encoded: keys[0])).prefix(8).map { String(format: "%02x", $0) }.joined()
        XCTAssertTrue(generated.stdout.contains("wrote \(file): 1 key (\(shortName)), mode 0600"), "\(generated)")
        XCTAssertFalse(generated.output.contains(keys[0]), "the key itself is never printed")

        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
            sections: ["device_ocsp: { enabled: false }"], tls: ["session_ticket_keys: \"\(file)\""])
        addTeardownBlock { await gateway.stop() }
        try await gateway.waitForOutput("session tickets: 1 key(s) from \(file), new tickets under key \(shortName)")
        XCTAssertFalse(gateway.output.contains(keys[0]), "the key itself is never logged")

        let again = try await staplegate(["ticket-keys", "generate", file])
        XCTAssertEqual(again.status, .exited(1), "\(again)")
        XCTAssertTrue(again.stderr.contains("\(file): already exists; --force replaces it"), "\(again)")
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), original, "untouched")

        let forced = try await staplegate(["ticket-keys", "generate", file, "--force"])
        XCTAssertEqual(forced.status, .exited(0), "\(forced)")
        let replaced = keyLines(try String(contentsOfFile: file, encoding: .utf8))
        XCTAssertEqual(replaced.count, 1)
        XCTAssertNotEqual(replaced, keys, "a fresh key")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int, 0o600)
    }

    func testCheckConfigNamesTheKeyFileAndRefusesOneOthersCanRead() async throws {
        let directory = try makeTemporaryDirectory()
        let file = directory.file("fleet.keys")
        let generated = try await staplegate(["ticket-keys", "generate", file])
        XCTAssertEqual(generated.status, .exited(0), "\(generated)")
        let config = try directory.write("staplegate.yaml", """
            tls:
              certificates: [{ certificate: "\(pki.certificate("server"))", key: "\(pki.key("server"))" }]
              device_ca: "\(pki.caChain)"
              session_ticket_keys: fleet.keys
            upstream: { address: 127.0.0.1, port: \(broker.port!) }
            state_directory: state
            device_ocsp: { enabled: false }

            """)

        let accepted = try await staplegate(["check-config", "--config", config])
        XCTAssertEqual(accepted.status, .exited(0), "\(accepted)")
        XCTAssertTrue(accepted.stdout.contains("tickets:   1 key(s) from \(file)"), "\(accepted)")

        XCTAssertEqual(chmod(file, 0o644), 0)
        let refused = try await staplegate(["check-config", "--config", config])
        XCTAssertEqual(refused.status, .exited(78), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("\(config):4: tls.session_ticket_keys: \(file): mode 0644 is wider than 0640"),
                      "\(refused)")
        let rotate = try await staplegate(["ticket-keys", "rotate", file])
        XCTAssertEqual(rotate.status, .exited(1), "the file is refused as the gateway refuses it\n\(rotate)")
    }

    func testRotatePutsANewKeyFirstAndDropsTheOldest() async throws {
        let file = try makeTemporaryDirectory().file("fleet.keys")
        let generated = try await staplegate(["ticket-keys", "generate", file])
        XCTAssertEqual(generated.status, .exited(0), "\(generated)")
        var history = [keyLines(try String(contentsOfFile: file, encoding: .utf8))[0]]
        for _ in 0..<3 {
            let rotated = try await staplegate(["ticket-keys", "rotate", file])
            XCTAssertEqual(rotated.status, .exited(0), "\(rotated)")
            history.insert(keyLines(try String(contentsOfFile: file, encoding: .utf8))[0], at: 0)
        }
        // --keep 3 by default: the newest three, newest first.
        XCTAssertEqual(keyLines(try String(contentsOfFile: file, encoding: .utf8)), Array(history.prefix(3)))
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int, 0o600)

        let tooFew = try await staplegate(["ticket-keys", "rotate", file, "--keep", "1"])
        XCTAssertNotEqual(tooFew.status, .exited(0), "\(tooFew)")
        XCTAssertTrue(tooFew.stderr.contains("--keep must be from 2 to 32"), "\(tooFew)")
    }

    // MARK: Helpers

    private func keyLines(_ text: String) -> [String] {
        text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.map(String.init)
    }

    private func staplegate(_ arguments: [String]) async throws -> CommandResult {
        try await ManagedProcess(try CommandLineTests.findExecutable(), arguments).commandResult(timeout: .seconds(20))
    }
}
