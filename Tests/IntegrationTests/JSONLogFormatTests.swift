import Foundation
import TestSupport
import XCTest

/// `logging: { format: json }` with the real binary: everything it logs on stderr, from start to
/// stop and a device session in between, is one JSON object per line.
final class JSONLogFormatTests: GatewayTestCase {
    func testEveryLineTheGatewayLogsIsAJSONObject() async throws {
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: ["device_ocsp: { enabled: false }"],
                                                        logging: "{ level: debug, format: json }")
        let topic = uniqueTopic("logs/json")
        let observer = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let published = try await mosquittoPub(port: gateway.port, pki: pki, topic: topic, message: "logged as json")
        XCTAssertEqual(published.status, .exited(0), "\(published)")
        _ = try await observer.waitForMessages(1)
        try await gateway.waitForOutput("connection closed")
        await gateway.stop()

        XCTAssertEqual(gateway.process.stdout.text, "", "logs go to stderr only")
        let lines = gateway.process.stderr.text.split(separator: "\n").map(String.init)
        var records: [[String: Any]] = []
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            guard let object else {
                XCTFail("not a JSON object: \(line)")
                continue
            }
            records.append(object)
        }
        for record in records {
            XCTAssertEqual(Set(record.keys).subtracting(["metadata"]), ["timestamp", "level", "label", "message"], "\(record)")
        }
        let listening = try XCTUnwrap(records.first { $0["message"] as? String == "listening for devices" }, "\(lines)")
        XCTAssertEqual(listening["level"] as? String, "notice")
        XCTAssertEqual((listening["metadata"] as? [String: String])?["listen"], "127.0.0.1:\(gateway.port)")
        // A session's records carry the connection's metadata.
        let admitted = try XCTUnwrap(records.first { $0["message"] as? String == "admitted as device-1" }, "\(lines)")
        let metadata = try XCTUnwrap(admitted["metadata"] as? [String: String])
        XCTAssertEqual(metadata["device"], "device-1")
        XCTAssertNotNil(metadata["conn"])
        XCTAssertEqual(metadata["mqtt.protocol"], "3.1.1")
        XCTAssertTrue(records.contains { $0["message"] as? String == "stopped" }, "\(lines)")
    }

    /// Negative control: the default text format is not JSON, so the test above can tell.
    func testTheDefaultTextFormatIsNotJSON() async throws {
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: ["device_ocsp: { enabled: false }"])
        await gateway.stop()
        let line = try XCTUnwrap(gateway.process.stderr.lines.first { $0.contains("listening for devices") })
        XCTAssertNil(try? JSONSerialization.jsonObject(with: Data(line.utf8)), line)
    }
}
