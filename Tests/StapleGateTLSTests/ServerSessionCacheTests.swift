import COpenSSL
import Foundation
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The session cache used without `tls.session_ticket_keys`, in real TLS 1.3 handshakes
/// (`TicketHandshake`: `SSLConnection` against an OpenSSL client, in memory), and its bounds
/// on sessions made here.
final class ServerSessionCacheTests: SharedPKITestCase {
    private func context(_ cache: ServerSessionCache?, gate: (any DeviceCertificateGate)? = nil) throws -> ServerContext {
        try serverContext(resumption: cache, gate: gate)
    }

    /// One cache serves every context a process builds (a reload); another process's cache
    /// does not know the session. The ticket only names the session: nothing sealed in it.
    /// Each server connection here is freed without sending close_notify, as after a reset:
    /// its session still resumes.
    func testASessionResumesOnEveryContextSharingTheCacheAndNowhereElse() throws {
        let cache = ServerSessionCache()
        let issued = try XCTUnwrap(TicketHandshake(context: context(cache), pki: pki).ticket)
        XCTAssertLessThanOrEqual(issued.ticketLength, 32, "a session id, not a sealed session")
        XCTAssertEqual(cache.count, 1)
        XCTAssertTrue(try TicketHandshake(context: context(cache), pki: pki, offering: issued).resumed, "after a reload")
        XCTAssertFalse(try TicketHandshake(context: context(ServerSessionCache()), pki: pki, offering: issued).resumed,
                       "after a restart, or on another gateway")

        let sealed = try XCTUnwrap(TicketHandshake(context: context(nil), pki: pki).ticket)
        XCTAssertGreaterThan(sealed.ticketLength, 100, "negative control: OpenSSL's own tickets carry the session")
    }

    /// No session comes back without the gate's leave: refused, the resumption becomes a full,
    /// checked handshake.
    func testTheGateDecidesEveryResumption() throws {
        let cache = ServerSessionCache()
        let issued = try XCTUnwrap(TicketHandshake(context: context(cache, gate: ResumptionGate(allows: true)), pki: pki).ticket)
        let allowed = try TicketHandshake(context: context(cache, gate: ResumptionGate(allows: true)), pki: pki, offering: issued)
        XCTAssertTrue(allowed.resumed, "negative control")
        XCTAssertEqual(allowed.questions, ["resumption"])
        let refused = try TicketHandshake(context: context(cache, gate: ResumptionGate(allows: false)), pki: pki, offering: issued)
        XCTAssertFalse(refused.resumed)
        XCTAssertEqual(refused.questions, ["resumption", "chain"])
    }

    /// The issuing CA a device sends with its certificate served only to build the chain: the
    /// session does not keep it, and the session still resumes, asking the gate about the device.
    func testTheCertificatesADeviceSentBesidesItsOwnAreNotKept() throws {
        let cache = ServerSessionCache()
        let gate = ResumptionGate(allows: true)
        // The test client sends the whole file (SSL_CTX_use_certificate_chain_file).
        XCTAssertEqual(try PEMFile.certificateChain(at: pki.path("device-1.pem")).count, 2, "negative control")
        let first = try TicketHandshake(context: context(cache, gate: gate), pki: pki)
        XCTAssertEqual(first.sentChainAfterwards, 0)
        XCTAssertEqual(first.chains.first?.count, 3, "the verified chain is whole")
        let again = try TicketHandshake(context: context(cache, gate: gate), pki: pki, offering: XCTUnwrap(first.ticket))
        XCTAssertTrue(again.resumed)
        XCTAssertEqual(again.questions, ["resumption"])
    }

    /// At capacity the oldest session goes: its device makes a full handshake, the newer ones resume.
    func testAtCapacityTheOldestSessionMakesRoom() throws {
        let cache = ServerSessionCache(capacity: 2)
        let serving = try context(cache)
        let sessions = try (0..<3).map { _ in try XCTUnwrap(TicketHandshake(context: serving, pki: pki).ticket) }
        XCTAssertEqual(cache.count, 2)
        XCTAssertFalse(try TicketHandshake(context: serving, pki: pki, offering: sessions[0]).resumed)
        XCTAssertTrue(try TicketHandshake(context: serving, pki: pki, offering: sessions[2]).resumed)
    }

    /// `tls.session_cache_size` changed by a reload: a smaller size drops the oldest at once, the
    /// newest still resume; a larger one lets more in.
    func testResizingKeepsTheNewestSessions() throws {
        let cache = ServerSessionCache(capacity: 3)
        let serving = try context(cache)
        let sessions = try (0..<3).map { _ in try XCTUnwrap(TicketHandshake(context: serving, pki: pki).ticket) }
        cache.resize(to: 1)
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(cache.capacity, 1)
        XCTAssertFalse(try TicketHandshake(context: serving, pki: pki, offering: sessions[1]).resumed, "dropped by the resize")
        cache.resize(to: 4)
        let more = try (0..<3).map { _ in try XCTUnwrap(TicketHandshake(context: serving, pki: pki).ticket) }
        XCTAssertEqual(cache.count, 4)
        XCTAssertTrue(try TicketHandshake(context: serving, pki: pki, offering: more[0]).resumed)
    }

    /// A session lives as long as its ticket: found before its timeout, dropped at it, and
    /// expired sessions at the front are dropped when another is kept.
    func testExpiredSessionsAreNeitherFoundNorKept() throws {
        let cache = ServerSessionCache(capacity: 10)
        let start: time_t = 1_000_000
        func session(_ id: UInt8, at time: time_t) -> OpaquePointer {
            let session = SSL_SESSION_new()!
            _ = SSL_SESSION_set1_id(session, [id, 1, 2, 3], 4)
            _ = SSL_SESSION_set_time(session, Int(time))
            _ = SSL_SESSION_set_timeout(session, 100)
            return session
        }
        cache.keep(session(1, at: start), now: start)
        cache.keep(session(2, at: start + 50), now: start + 50)
        let found = try XCTUnwrap(cache.find([1, 1, 2, 3], now: start + 99))
        SSL_SESSION_free(found)
        XCTAssertNil(cache.find([1, 1, 2, 3], now: start + 100))
        XCTAssertEqual(cache.count, 1, "the expired session was dropped when asked for")
        XCTAssertNil(cache.find([9, 9], now: start))

        cache.keep(session(3, at: start + 160), now: start + 160)
        XCTAssertEqual(cache.count, 1, "session 2 expired at +150 and went when session 3 came")
        XCTAssertNil(cache.find([2, 1, 2, 3], now: start + 160))
        let third = try XCTUnwrap(cache.find([3, 1, 2, 3], now: start + 160))
        SSL_SESSION_free(third)
    }
}
