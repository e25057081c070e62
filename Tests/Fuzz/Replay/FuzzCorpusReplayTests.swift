import Foundation
import StapleGateFuzzHarness
import XCTest

/// Every input `make fuzz` keeps, run again through the same harness without libFuzzer: the
/// corpus (what covers each target's code; the seeds among it) and every crash reproducer ever
/// found (Tests/Fuzz/Regressions/TARGET/). A fixed crash that came back fails here, in `make test`.
final class FuzzCorpusReplayTests: XCTestCase {
    static let fuzzFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()

    private func inputs(_ kind: String, _ target: FuzzTarget) throws -> [URL] {
        let folder = Self.fuzzFolder.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
        guard FileManager.default.fileExists(atPath: folder.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    private func replay(_ target: FuzzTarget, file: StaticString = #filePath, line: UInt = #line) throws {
        let corpus = try inputs("Corpus", target)
        XCTAssertFalse(corpus.isEmpty, "no corpus for \(target.rawValue): run `make fuzz` or add seeds", file: file, line: line)
        for input in corpus + (try inputs("Regressions", target)) {
            target.run(Array(try Data(contentsOf: input)))
        }
    }

    func testMQTTConnectCorpus() throws { try replay(.mqttConnect) }
    func testMQTTPacketsCorpus() throws { try replay(.mqttPackets) }
    func testProxyHeaderCorpus() throws { try replay(.proxyHeader) }
    func testOCSPHTTPCorpus() throws { try replay(.ocspHTTP) }
    func testOCSPVerifyCorpus() throws { try replay(.ocspVerify) }
    func testConfigYAMLCorpus() throws { try replay(.configYAML) }
    func testControlHTTPCorpus() throws { try replay(.controlHTTP) }
    func testAdminHTTPCorpus() throws { try replay(.adminHTTP) }

    func testEveryTargetHasATest() {
        let names = Set(FuzzTarget.allCases.map(\.rawValue))
        XCTAssertEqual(names.count, 8, "a new target needs its replay test here")
    }
}
