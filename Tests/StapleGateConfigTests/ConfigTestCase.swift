import Foundation
import XCTest
@testable import StapleGateConfig

/// Shared set-up: one PKI per test class (openssl is slow enough that once per test would
/// dominate the run), and helpers that check every error names the file, key and line.
class ConfigTestCase: XCTestCase {
    private static var sharedPKI: ConfigFixtureFiles?

    var pki: ConfigFixtureFiles { Self.sharedPKI! }
    /// Where each test writes its config; relative paths in it resolve to the PKI files.
    var configPath: String { pki.path("staplegate.yaml") }

    override func setUpWithError() throws {
        try super.setUpWithError()
        if Self.sharedPKI == nil { Self.sharedPKI = try ConfigFixtureFiles() }
    }

    override class func tearDown() {
        sharedPKI?.remove()
        sharedPKI = nil
        super.tearDown()
    }

    /// A valid config with the given parts replaced; each part is the body of its section.
    func yaml(
        listen: String? = nil,
        certificates: String = "- certificate: server.pem\n  key: server.key",
        tls: String = "",
        deviceCA: String = "ca.pem",
        upstream: String = "address: 127.0.0.1",
        logging: String? = nil
    ) -> String {
        var text = ""
        if let listen { text += "listen:\n" + indent(listen) }
        text += "tls:\n  certificates:\n" + indent(certificates, by: 4)
        text += "  device_ca: \(deviceCA)\n" + indent(tls)
        text += "upstream:\n" + indent(upstream)
        if let logging { text += "logging:\n" + indent(logging) }
        return text
    }

    private func indent(_ body: String, by spaces: Int = 2) -> String {
        guard !body.isEmpty else { return "" }
        let pad = String(repeating: " ", count: spaces)
        return body.split(separator: "\n", omittingEmptySubsequences: false).map { pad + $0 }.joined(separator: "\n") + "\n"
    }

    /// 1-based line of the first line of `yaml` containing `fragment`.
    func line(of fragment: String, in yaml: String, file: StaticString = #filePath, line: UInt = #line) -> Int? {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        guard let index = lines.firstIndex(where: { $0.contains(fragment) }) else {
            XCTFail("\(fragment) not in the YAML", file: file, line: line)
            return nil
        }
        return index + 1
    }

    /// Writes `yaml` to the config path and loads it from there, as the gateway does.
    @discardableResult
    func load(_ yaml: String) throws -> LoadedConfiguration {
        try pki.write("staplegate.yaml", yaml)
        return try ConfigLoader.load(path: configPath)
    }

    /// The error loading `yaml` fails with, or nil (and a test failure) when it loads.
    func loadError(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigError? {
        do {
            try pki.write("staplegate.yaml", yaml)
        } catch {
            XCTFail("cannot write the config: \(error)", file: file, line: line)
            return nil
        }
        return configError(path: configPath, file: file, line: line)
    }

    func configError(path: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigError? {
        let result = Result { () throws(ConfigError) in try ConfigLoader.load(path: path) }
        switch result {
        case .success:
            XCTFail("loaded, but should have failed", file: file, line: line)
            return nil
        case let .failure(error):
            return error
        }
    }

    /// Loading `yaml` fails naming the config file, `key` and the line of `lineContaining`
    /// (nil: no line), with a reason containing each of `reasonContains`.
    func assertError(
        _ yaml: String, key: String?, lineContaining: String?, reasonContains: [String],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let error = loadError(yaml, file: file, line: line) else { return }
        let expectedLine = lineContaining.flatMap { self.line(of: $0, in: yaml, file: file, line: line) }
        assertError(error, key: key, line: expectedLine, reasonContains: reasonContains, file: file, line: line)
    }

    func assertError(
        _ error: ConfigError, path: String? = nil, key: String?, line expectedLine: Int?, reasonContains: [String],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let path = path ?? configPath
        XCTAssertEqual(error.file, path, "file in \(error)", file: file, line: line)
        XCTAssertEqual(error.key, key, "key in \(error)", file: file, line: line)
        XCTAssertEqual(error.line, expectedLine, "line in \(error)", file: file, line: line)
        let prefix = expectedLine.map { "\(path):\($0):" } ?? "\(path):"
        XCTAssertTrue(error.description.hasPrefix(prefix), "\(error) should start with \(prefix)", file: file, line: line)
        if let key {
            XCTAssertTrue(error.description.contains(" \(key): "), "\(error) should name \(key)", file: file, line: line)
        }
        for fragment in reasonContains {
            XCTAssertTrue(error.reason.contains(fragment), "\"\(error.reason)\" should contain \"\(fragment)\"", file: file, line: line)
        }
    }
}
