import Foundation
@testable import StapleGateFuzzHarness
import StapleGateAdmission
import StapleGateOCSP
import XCTest

/// The harness itself: its seeds must reach the code they are meant to open up (a verify seed
/// that no longer verified would leave the fuzzer knocking at the DER parser), and a broken
/// invariant must be noticed.
final class FuzzHarnessTests: XCTestCase {
    private func seed(_ target: FuzzTarget, _ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: FuzzCorpusReplayTests.fuzzFolder.appendingPathComponent("Corpus/\(target.rawValue)/\(name)")))
    }

    func testTheOCSPSeedsVerifyForTheHarnessDevice() throws {
        let cases: [(String, String)] = [("good-delegated.der", "good"), ("good-ca-signed.der", "good"),
                                         ("good-resp-key-id.der", "good"), ("good-no-next-update.der", "good"),
                                         ("revoked-key-compromise.der", "revoked"), ("unknown.der", "unknown")]
        for (name, status) in cases {
            let verdict = FuzzPKI.policy.verify(der: try seed(.ocspVerify, name), for: FuzzPKI.deviceCertID, now: FuzzPKI.seedTime)
            guard case let .success(response) = verdict else { return XCTFail("\(name): \(verdict)") }
            XCTAssertTrue(response.status.description.hasPrefix(status), "\(name): \(response.status)")
        }
        let nonce = FuzzPKI.policy.verify(der: try seed(.ocspVerify, "good-with-nonce.der"), for: FuzzPKI.deviceCertID,
                                          nonce: FuzzPKI.seedNonce, now: FuzzPKI.seedTime)
        XCTAssertNoThrow(try nonce.get(), "the nonce seed must match the harness nonce")
    }

    /// Negative control: an answer about another certificate is refused by the path the fuzzer drives.
    func testTheHarnessRefusesAnAnswerAboutAnotherCertificate() throws {
        let verdict = FuzzPKI.policy.verify(der: try seed(.ocspVerify, "revoked-for-other-cert.der"), for: FuzzPKI.deviceCertID,
                                            now: FuzzPKI.seedTime)
        guard case .failure = verdict else { return XCTFail("verified an answer about another certificate") }
    }

    func testTheCONNECTSeedIsAWholeCONNECT() throws {
        let outcome = MQTTConnectParser.parse(try seed(.mqttConnect, "v311-clean"), maximumPacketSize: MQTTFuzzing.maximumPacketSize)
        guard case .connect = outcome else { return XCTFail("the CONNECT seed is not one: \(outcome)") }
    }
}
