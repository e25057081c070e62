import Foundation
import TestSupport
import XCTest

/// What ReloadTests share: their own PKIs, log reading, and one device handshake with
/// `openssl s_client -status`, reduced to what it was given.
extension ReloadTests {
    // MARK: Helpers

    /// A PKI of the test's own, removed after it.
    func makeOwnPKI() throws -> TestPKI {
        let pki = try TestPKI.make()
        ownPKIs.append(pki)
        return pki
    }

    func printLogsOnFailure(_ gateway: StapleGateProcess) {
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output.suffix(60_000))\n--- broker log (end) ---\n\(self?.broker.log.suffix(20_000) ?? "")")
            }
        }
    }

    func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func countOccurrences(_ text: String, in output: String) -> Int {
        output.components(separatedBy: text).count - 1
    }

    func logLines(_ gateway: StapleGateProcess, containing text: String) -> [String] {
        gateway.output.split(separator: "\n").filter { $0.contains(text) }.map(String.init)
    }

    func waitForLogCount(_ text: String, _ count: Int, in gateway: StapleGateProcess,
                                 timeout: Duration = .seconds(30)) async throws {
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(50), "\(count) × \"\(text)\" in the gateway log",
                            details: { gateway.output.suffix(20_000).description }) {
            if !gateway.process.isRunning { throw ReloadTestFailure("staplegate run exited\n\(gateway.output)") }
            return self.countOccurrences(text, in: gateway.output) >= count
        }
    }

    /// What one new device handshake (`openssl s_client -status`, presenting device-1) was given.
    struct Presented {
        let output: String
        /// The server certificate's serial (upper-case hex).
        let serial: String?
        /// The serial in the stapled OCSP response's CertID; nil when nothing was stapled.
        let stapledSerial: String?
        /// "good", "revoked", "unknown"; nil when nothing was stapled.
        let stapledStatus: String?
    }

    func handshake(port: Int, pki: TestPKI) async throws -> Presented {
        let client = try OpenSSLClient(port: port, pki: pki, device: "device-1", extraArgs: ["-status"])
        let result = try await client.finish(timeout: .seconds(15))
        let output = result.stdout + result.stderr
        var serial: String?
        if let begin = output.range(of: "Server certificate\n-----BEGIN CERTIFICATE-----"),
           let end = output.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<output.endIndex) {
            let pem = String(output[output.index(begin.lowerBound, offsetBy: "Server certificate\n".count)..<end.upperBound]) + "\n"
            let file = try makeTemporaryDirectory().write("presented.pem", pem)
            serial = try TestPKI.serialHex(ofCertificateAt: file)
        }
        return Presented(output: output, serial: serial,
                         stapledSerial: Self.firstMatch(#"Serial Number: ([0-9A-Fa-f]+)"#, in: output)?.uppercased(),
                         stapledStatus: Self.firstMatch(#"Cert Status: (\w+)"#, in: output))
    }

    static func firstMatch(_ pattern: String, in text: String) -> String? {
        guard let expression = try? NSRegularExpression(pattern: pattern),
              let match = expression.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
              let range = Range(match.range(at: 1), in: text) else { return nil }
        return String(text[range])
    }

    /// The value of the unlabelled sample `name` in Prometheus text.
    static func metric(_ name: String, in text: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix("\(name) ") }
            .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
    }
}
