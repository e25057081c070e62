import Foundation
import TestSupport
import XCTest

/// `make fleet-demo` as an operator runs it (issue 14): the script brings up PostgreSQL,
/// HAProxy, three gateways, Mosquitto and a responder, revokes a device connected through two
/// gateways, rechecks it on the third, and itself fails unless both sessions closed and every
/// gateway then refuses the device (DEMO_EXIT=1 stops it once shown).
final class FleetDemoTests: XCTestCase {
    func testTheFleetDemoCutsARevokedDeviceOffOnEveryGateway() async throws {
        let directory = try TemporaryDirectory(prefix: "fleet-demo")
        defer { directory.remove() }
        // PostgreSQL runs as the postgres user, which must reach its data folder in here.
        XCTAssertEqual(chmod(directory.path, 0o755), 0)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let demo = try ManagedProcess("bash", ["\(root)/config/fleet-demo.sh"], environment: [
            "DEMO_EXIT": "1", "STAPLEGATE_BIN": try CommandLineTests.findExecutable(), "DEMO_DIR": directory.file("fleet"),
        ])
        let result = try await demo.commandResult(timeout: .seconds(240))
        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertTrue(result.stdout.contains("on gw-b: 1 session closed"), result.stdout)
        XCTAssertTrue(result.stdout.contains("on gw-c: 1 session closed"), result.stdout)
        for gateway in ["gw-a", "gw-b", "gw-c"] {
            XCTAssertTrue(result.stdout.contains("\(gateway): alert certificate revoked"), result.stdout)
        }
        XCTAssertTrue(result.stdout.contains("all fleet demo processes stopped"), result.stdout)
    }
}
