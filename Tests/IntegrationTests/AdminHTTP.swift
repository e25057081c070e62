import Foundation
import TestSupport
import XCTest

/// One HTTP/1.1 exchange with the admin listener over a plain socket (the gateway closes each
/// connection after its answer).
struct AdminHTTPResponse: CustomStringConvertible {
    let status: Int
    let headers: [String: String]
    let body: String

    var description: String { "HTTP \(status) \(headers)\n\(body)" }

    func json() throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], "not a JSON object: \(body)")
    }
}

func adminRequest(port: Int, _ target: String, method: String = "GET", headers: [String] = []) async throws -> AdminHTTPResponse {
    let client = try RawTCPClient(port: port)
    let extra = headers.map { $0 + "\r\n" }.joined()
    try client.send("\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(extra)Connection: close\r\nContent-Length: 0\r\n\r\n")
    let text = String(decoding: try await client.waitForClose(timeout: .seconds(10)).received, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw AdminHTTPError("no complete response head:\n\(text)") }
    let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
    let statusLine = lines[0].split(separator: " ")
    guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw AdminHTTPError("bad status line: \(lines[0])") }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return AdminHTTPResponse(status: status, headers: headers, body: String(text[split.upperBound...]))
}

struct AdminHTTPError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One sample of a scrape, as the real Prometheus client library parsed it.
struct PrometheusSample: Decodable {
    let name: String
    let labels: [String: String]
    let value: Double
}

/// Parses Prometheus text with Debian's python3-prometheus-client (the reference parser),
/// not with our own code: the samples, or the parser's error.
enum PrometheusParser {
    private static let script = """
    import json, sys
    from prometheus_client.parser import text_string_to_metric_families
    samples = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        for sample in family.samples:
            samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
    print(json.dumps(samples))
    """

    static func parse(_ text: String, in directory: TemporaryDirectory) async throws -> Result<[PrometheusSample], AdminHTTPError> {
        let input = try directory.write("scrape-\(UUID().uuidString).txt", text)
        let result = try await ManagedProcess("/usr/bin/python3", ["-c", script], input: .file(input))
            .commandResult(timeout: .seconds(30))
        guard result.status == .exited(0) else { return .failure(AdminHTTPError("the parser refused the text:\n\(result)")) }
        return .success(try JSONDecoder().decode([PrometheusSample].self, from: Data(result.stdout.utf8)))
    }
}

extension Array where Element == PrometheusSample {
    /// The value of the sample `name` with exactly these labels (nil: absent).
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { $0.name == name && $0.labels == labels }?.value
    }

    func names() -> Set<String> { Set(map(\.name)) }
}
