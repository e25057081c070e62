import Foundation
import Logging
import StapleGateFleet
import TestSupport
import XCTest

/// `fleet.password_file` against a server that asks for a password: the right one works, a
/// wrong one is refused with the server's reason, and no message holds the password.
final class PostgresPasswordTests: FleetStoreTestCase {
    private func settings(passwordIn file: String) throws -> PostgresSettings {
        var settings = try self.settings
        settings.user = "gw_\(database)"
        settings.passwordFile = file
        return settings
    }

    func testThePasswordFileIsUsedAndAWrongPasswordIsRefusedWithoutShowingIt() async throws {
        let user = "gw_\(database)"
        try await postgres.addPasswordUser(user, password: "right-pw-1", database: database)
        let right = directory.file("right")
        try "right-pw-1\n".write(toFile: right, atomically: true, encoding: .utf8)
        let store = try PostgresDeviceStatusStore(settings: try settings(passwordIn: right), logger: Logger(label: "test.fleet-store"))
        defer { store.close() }
        store.save(status(certID(1)))
        store.flush()
        XCTAssertNil(store.lastWriteError)
        let writer = try await postgres.psql("SELECT current_user, written_by FROM device_ocsp_status", database: database)
        XCTAssertFalse(writer.isEmpty)

        let wrong = directory.file("wrong")
        try "wrong-pw-2\n".write(toFile: wrong, atomically: true, encoding: .utf8)
        let settings = try settings(passwordIn: wrong)
        XCTAssertThrowsError(try PostgresDeviceStatusStore(settings: settings, logger: Logger(label: "test.fleet-store"))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("cannot set up the fleet database postgres://\(user)@127.0.0.1:"), text)
            XCTAssertTrue(text.contains("password authentication failed for user \"\(user)\""), text)
            XCTAssertFalse(text.contains("wrong-pw-2"), text)
        }
    }
}
