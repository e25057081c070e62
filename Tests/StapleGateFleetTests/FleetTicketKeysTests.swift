import Foundation
import Logging
@testable import StapleGateFleet
import StapleGateTLS
import TestSupport
import XCTest

/// `tls.session_ticket_keys: fleet` against a real PostgreSQL 15: gateways (here, several
/// `FleetDatabase`s and `FleetTicketKeys` of one test process, as several gateways open them)
/// agree on one key, make one key when they race to rotate, and swap a rotated key into their
/// rings while the previous one still decrypts. The database holds the keys sealed only.
final class FleetTicketKeysTests: FleetStoreTestCase {
    private var running: [FleetTicketKeys] = []
    private let secret = FleetSecret(secret: Array("the test fleet's secret: thirty-two bytes and more".utf8), path: "/test/fleet.secret")

    override func tearDown() async throws {
        for keys in running { keys.close() }
        running = []
        try await super.tearDown()
    }

    private func start(_ instance: String, rotation: Duration = .seconds(12 * 3600), secret: FleetSecret? = nil) throws -> FleetTicketKeys {
        let keys = FleetTicketKeys(database: try openDatabase(instance: instance), secret: secret ?? self.secret,
                                   rotation: TicketKeyRotation(rotation: rotation), logger: Logger(label: "test.\(instance)"))
        running.append(keys)
        return keys
    }

    private func rowCount() async throws -> Int {
        Int(try await postgres.psql("SELECT count(*) FROM ticket_keys", database: database)
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    func testGatewaysRacingToRotateMakeOneKey() async throws {
        let stores = try (0..<3).map { PostgresTicketKeyStore(database: try openDatabase(instance: "gw-\($0)"), logger: Logger(label: "test")) }
        let rotation = TicketKeyRotation()
        let secret = self.secret
        let made = try await withThrowingTaskGroup(of: TicketKeyEntry?.self) { group in
            for round in 0..<9 {
                let store = stores[round % stores.count]
                group.addTask {
                    try await store.rotateIfDue(rotation, instance: "gw-\(round)") { TicketKeySeal.seal($0, id: $0.nameHex, with: secret) }
                }
            }
            return try await group.reduce(into: [String]()) { if let entry = $1 { $0.append(entry.id) } }
        }
        XCTAssertEqual(made.count, 1, "one of nine rotations made the key: \(made)")
        let count = try await rowCount()
        XCTAssertEqual(count, 1)
        // Negative control: once the newest key is a rotation old, the next attempt makes one.
        _ = try await postgres.psql("UPDATE ticket_keys SET created_at = created_at - interval '13 hours'", database: database)
        let next = try await stores[0].rotateIfDue(rotation, instance: "gw-0") { TicketKeySeal.seal($0, id: $0.nameHex, with: secret) }
        XCTAssertNotNil(next)
        let afterRotation = try await rowCount()
        XCTAssertEqual(afterRotation, 2)
    }

    func testTwoGatewaysEncryptWithTheSameKeyAndTheDatabaseHoldsItSealedOnly() async throws {
        let gatewayA = try start("gw-a")
        let gatewayB = try start("gw-b")
        try await waitUntil(timeout: .seconds(15), "both rings to hold the fleet's keys", details: { "\(gatewayA.phase) / \(gatewayB.phase)" }) {
            gatewayA.ring.isShared && gatewayB.ring.isShared
        }
        let key = gatewayA.ring.encryptionKey
        XCTAssertEqual(gatewayB.ring.encryptionKey, key)
        XCTAssertEqual(gatewayA.ring.keys.count, 2, "the fleet's key, then the key made at start")
        let count = try await rowCount()
        XCTAssertEqual(count, 1)

        // What a dump of the database gives away: the key's public name, not its secret part.
        let server = try postgres
        let dump = try await ManagedProcess("runuser", [
            "-u", PostgresServer.user, "--", "\(PostgresServer.binaries)/pg_dump", "-h", "127.0.0.1", "-p", "\(server.port)",
            "--data-only", "--table", "ticket_keys", database,
        ]).commandResult(timeout: .seconds(30))
        XCTAssertTrue(dump.status.succeeded, "\(dump)")
        XCTAssertTrue(dump.stdout.contains(key.nameHex), "the id is the key's name\n\(dump.stdout)")
        let secretHex = key.secretBytes.dropFirst(SessionTicketKey.nameLength).map { String(format: "%02x", $0) }.joined()
        // No 8-byte run of the HMAC secret or the AES key, in hex, anywhere in the dump.
        for start in stride(from: 0, through: secretHex.count - 16, by: 2) {
            let window = String(secretHex.dropFirst(start).prefix(16))
            XCTAssertFalse(dump.stdout.lowercased().contains(window), "secret bytes \(start / 2) in the clear\n\(dump.stdout)")
        }
        XCTAssertTrue(dump.stdout.contains("\\\\x01"), "the sealed blob, format 1, is there\n\(dump.stdout)")
    }

    func testAGatewayWithAnotherSecretKeepsItsStartKeyAndSaysWhichFileIsWrong() async throws {
        let gatewayA = try start("gw-a")
        try await waitUntil(timeout: .seconds(15), "gateway A to share the fleet's key") { gatewayA.ring.isShared }
        let other = FleetSecret(secret: Array("some other secret of thirty-two bytes or more".utf8), path: "/test/other.secret")
        let gatewayB = try start("gw-b", secret: other)
        let refreshed = await gatewayB.refresh()
        XCTAssertFalse(refreshed)
        XCTAssertFalse(gatewayB.ring.isShared)
        XCTAssertNotEqual(gatewayB.ring.encryptionKey, gatewayA.ring.encryptionKey)
        guard case let .failing(reason) = gatewayB.phase else { return XCTFail("\(gatewayB.phase)") }
        XCTAssertTrue(reason.contains("cannot be opened with fleet.secret_file /test/other.secret"), reason)
    }

    func testARotatedKeyIsSwappedInAndThePreviousOneStillDecrypts() async throws {
        let gatewayA = try start("gw-a", rotation: .seconds(5))
        let gatewayB = try start("gw-b", rotation: .seconds(5))
        try await waitUntil(timeout: .seconds(15), "the first fleet key") { gatewayA.ring.isShared && gatewayB.ring.isShared }
        let first = gatewayA.ring.encryptionKey
        try await waitUntil(timeout: .seconds(30), "a rotation on both gateways", details: { "\(gatewayA.phase) / \(gatewayB.phase)" }) {
            gatewayA.ring.encryptionKey != first && gatewayB.ring.encryptionKey == gatewayA.ring.encryptionKey
        }
        for gateway in [gatewayA, gatewayB] {
            XCTAssertTrue(gateway.ring.keys.contains(first), "the previous key still decrypts")
        }
        let count = try await rowCount()
        XCTAssertEqual(count, 2, "one new key for both gateways")
    }
}
