import Foundation
@testable import StapleGateConfig
import StapleGateAdmission
import StapleGateTrace
import XCTest

/// The `admission` and `trace` sections: defaults, every key applied, mistakes named by key and line.
final class AdmissionConfigTests: ConfigTestCase {
    func testDefaultsWhenAbsentOrEmpty() throws {
        let configuration = try load(yaml()).configuration
        XCTAssertEqual(configuration.admission, AdmissionConfiguration())
        XCTAssertEqual(configuration.trace, TraceConfiguration())
        let empty = try load(yaml() + "admission:\ntrace:\n").configuration
        XCTAssertEqual(empty.admission, AdmissionConfiguration())
        XCTAssertEqual(empty.trace, TraceConfiguration())
        XCTAssertEqual(AdmissionConfiguration().identity, .cn)
        XCTAssertEqual(AdmissionConfiguration().maximumConnectBytes, 65_536)
        XCTAssertEqual(TraceConfiguration().retention, .seconds(3 * 24 * 3600))
    }

    func testEveryKeyIsApplied() throws {
        let configuration = try load(yaml() + """
        admission:
          identity: san_uri
          client_id_must_match_identity: true
          username_from_certificate: true
          max_connect_size: 4096
          connect_timeout: 3s
        trace:
          enabled: false
          retention: 12h
          max_size_mb: 64
          queue_capacity: 500
          max_message_trace: 2h
        """).configuration
        let admission = configuration.admission
        XCTAssertEqual(admission.identity, .sanURI)
        XCTAssertTrue(admission.clientIDMustMatchIdentity)
        XCTAssertTrue(admission.usernameFromCertificate)
        XCTAssertEqual(admission.maximumConnectBytes, 4096)
        XCTAssertEqual(admission.connectTimeout, .seconds(3))
        let trace = configuration.trace
        XCTAssertFalse(trace.enabled)
        XCTAssertEqual(trace.retention, .seconds(12 * 3600))
        XCTAssertEqual(trace.maximumBytes, 64 * 1024 * 1024)
        XCTAssertEqual(trace.queueCapacity, 500)
        XCTAssertEqual(trace.maximumMessageTraceDuration, .seconds(7200))
        XCTAssertTrue(configuration.traceStorePath.hasSuffix("/trace.sqlite"))
    }

    func testBadValuesNameTheirKey() {
        let cases: [(String, String, String)] = [
            ("admission:\n  identity: email", "admission.identity", "must be cn, san_uri or san_dns"),
            ("admission:\n  max_connect_size: 10", "admission.max_connect_size", "between 64 and 268435455"),
            ("admission:\n  connect_timeout: 0s", "admission.connect_timeout", "longer than 0"),
            ("admission:\n  username_from_certficate: true", "admission.username_from_certficate", "did you mean \"username_from_certificate\""),
            ("trace:\n  retention: forever", "trace.retention", "a whole number followed by"),
            ("trace:\n  max_size_mb: 0", "trace.max_size_mb", "between 1 and 1048576"),
            ("trace:\n  queue_capacity: 5", "trace.queue_capacity", "between 100 and 10000000"),
            ("trace:\n  enabled: maybe", "trace.enabled", "expected true or false"),
        ]
        for (body, key, reason) in cases {
            let keyName = String(key.split(separator: ".").last!)
            assertError(yaml() + body + "\n", key: key, lineContaining: "\(keyName):", reasonContains: [reason])
        }
    }
}
