import Foundation
@testable import StapleGateSimulator
import XCTest

/// `staplegate load`'s option checks: every refusal names the option at fault.
final class LoadGeneratorOptionsTests: XCTestCase {
    private func options(_ mode: LoadOptions.Mode, _ change: (inout LoadOptions) -> Void = { _ in }) -> LoadOptions {
        var options = LoadOptions(mode: mode, clientIDPrefix: "load", topic: "load/test", threads: 2)
        options.caFile = "/etc/ssl/ca.pem"
        if mode == .latency { options.rate = 100 }
        change(&options)
        return options
    }

    private func assertRefused(_ options: LoadOptions, given: Set<String> = [], naming option: String,
                               containing text: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try options.validated(given: given)
            XCTFail("accepted; expected \(option) to be refused", file: file, line: line)
        } catch {
            XCTAssertEqual(error.option, option, "\(error)", file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix(option + " "), error.description, file: file, line: line)
            if let text { XCTAssertTrue(error.description.contains(text), error.description, file: file, line: line) }
        }
    }

    func testTheDefaultsOfEveryModeAreAccepted() throws {
        for mode in LoadOptions.Mode.allCases {
            XCTAssertNoThrow(try options(mode).validated(), "\(mode)")
        }
        XCTAssertNoThrow(try options(.throughput) { $0.useTLS = false; $0.caFile = nil; $0.subscribers = 0 }.validated())
        XCTAssertNoThrow(try options(.sessions).validated(given: ["--sessions", "--hold", "--concurrency"]))
        XCTAssertNoThrow(try options(.latency).validated(given: ["--rate", "--payload-size", "--publishers"]))
    }

    func testTLSNeedsACAFileAndPlainMQTTTakesNoTLSSettings() {
        assertRefused(options(.sessions) { $0.caFile = nil }, naming: "--cafile", containing: "--no-tls")
        assertRefused(options(.sessions) { $0.useTLS = false }, naming: "--cafile", containing: "--no-tls")
        assertRefused(options(.sessions) { $0.useTLS = false; $0.caFile = nil; $0.identity = .single(certificate: "c", key: "k") },
                      naming: "--cert")
        assertRefused(options(.sessions) { $0.useTLS = false; $0.caFile = nil; $0.groups = "X25519" }, naming: "--groups")
        assertRefused(options(.sessions) { $0.useTLS = false; $0.caFile = nil; $0.identity = .directory(path: "/d", prefix: "device") },
                      naming: "--devices-dir")
    }

    func testCipherSettingsMustMatchTheTLSVersion() {
        assertRefused(options(.sessions) { $0.tlsVersion = .v1_2; $0.ciphersuites = "TLS_AES_128_GCM_SHA256" }, naming: "--ciphersuites")
        assertRefused(options(.sessions) { $0.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256" }, naming: "--ciphers")
        XCTAssertNoThrow(try options(.sessions) { $0.tlsVersion = .v1_2; $0.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256" }.validated())
    }

    func testTheIdentityOptionsGoTogether() throws {
        XCTAssertEqual(try LoadOptions.identity(certificate: nil, key: nil, devicesDirectory: nil, devicePrefix: nil), .none)
        XCTAssertEqual(try LoadOptions.identity(certificate: "c.pem", key: "c.key", devicesDirectory: nil, devicePrefix: nil),
                       .single(certificate: "c.pem", key: "c.key"))
        XCTAssertEqual(try LoadOptions.identity(certificate: nil, key: nil, devicesDirectory: "/d", devicePrefix: nil),
                       .directory(path: "/d", prefix: "device"))
        let refusals: [(String?, String?, String?, String?, String)] = [
            ("c.pem", nil, nil, nil, "--cert"),
            (nil, "c.key", nil, nil, "--key"),
            ("c.pem", "c.key", "/d", nil, "--devices-dir"),
            (nil, nil, nil, "device", "--device-prefix"),
        ]
        for (certificate, key, folder, prefix, option) in refusals {
            XCTAssertThrowsError(try LoadOptions.identity(certificate: certificate, key: key, devicesDirectory: folder, devicePrefix: prefix)) {
                XCTAssertEqual(($0 as? LoadOptionsError)?.option, option, "\($0)")
            }
        }
    }

    func testLatencyModeNeedsARateAndRoomForTheStamp() {
        assertRefused(options(.latency) { $0.rate = nil }, naming: "--rate", containing: "required")
        assertRefused(options(.latency) { $0.payloadSize = 23 }, naming: "--payload-size", containing: "24")
        assertRefused(options(.latency) { $0.subscribers = 0 }, naming: "--subscribers")
        XCTAssertNoThrow(try options(.throughput) { $0.payloadSize = 0 }.validated())
        assertRefused(options(.throughput) { $0.rate = 0 }, naming: "--rate")
        assertRefused(options(.throughput) { $0.rate = -5 }, naming: "--rate")
    }

    func testOutOfRangeValuesAreNamed() {
        assertRefused(options(.sessions) { $0.port = 0 }, naming: "--port")
        assertRefused(options(.sessions) { $0.port = 70_000 }, naming: "--port")
        assertRefused(options(.sessions) { $0.keepalive = 3 }, naming: "--keepalive", containing: "5")
        assertRefused(options(.sessions) { $0.threads = 0 }, naming: "--threads")
        assertRefused(options(.sessions) { $0.sessions = 0 }, naming: "--sessions")
        assertRefused(options(.sessions) { $0.concurrency = 0 }, naming: "--concurrency")
        assertRefused(options(.sessions) { $0.hold = -1 }, naming: "--hold")
        assertRefused(options(.sessions) { $0.connectTimeout = 0 }, naming: "--connect-timeout")
        assertRefused(options(.sessions) { $0.clientIDPrefix = "" }, naming: "--client-id-prefix")
        assertRefused(options(.throughput) { $0.publishers = 0 }, naming: "--publishers")
        assertRefused(options(.throughput) { $0.duration = 0 }, naming: "--duration")
        assertRefused(options(.throughput) { $0.topic = "load/#" }, naming: "--topic", containing: "wildcard")
        assertRefused(options(.throughput) { $0.payloadSize = -1 }, naming: "--payload-size")
    }

    func testAnOptionOfAnotherModeIsRefused() {
        assertRefused(options(.throughput), given: ["--hold"], naming: "--hold", containing: "sessions mode")
        assertRefused(options(.sessions), given: ["--rate"], naming: "--rate", containing: "latency and throughput")
    }

    func testSessionsMustFitTheOpenFilesLimit() throws {
        XCTAssertNoThrow(try options(.sessions) { $0.sessions = 5000 }.checkDescriptors(limit: 20_000))
        XCTAssertThrowsError(try options(.sessions) { $0.sessions = 7000 }.checkDescriptors(limit: 20_000)) {
            let error = $0 as? LoadOptionsError
            XCTAssertEqual(error?.option, "--sessions")
            XCTAssertTrue(error?.reason.contains("at most 6645 sessions") ?? false, "\($0)")
        }
    }

    // MARK: Files

    func testUnusableTLSFilesAreNamed() throws {
        let folder = try makeFolder()
        XCTAssertThrowsError(try LoadTLSContext.contexts(for: options(.sessions) { $0.caFile = "\(folder)/missing.pem" })) {
            XCTAssertEqual(($0 as? LoadOptionsError)?.option, "--cafile", "\($0)")
        }
        let garbage = "\(folder)/garbage.pem"
        try "not a certificate\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LoadTLSContext.contexts(for: options(.sessions) { $0.caFile = garbage })) {
            XCTAssertEqual(($0 as? LoadOptionsError)?.option, "--cafile", "\($0)")
        }

        let (certificate, key) = try makeSelfSigned(in: folder, name: "device-1")
        let good = options(.sessions) { $0.caFile = certificate; $0.identity = .single(certificate: certificate, key: key) }
        XCTAssertEqual(try LoadTLSContext.contexts(for: good).count, 1)
        let cases: [(String, (inout LoadOptions) -> Void)] = [
            ("--groups", { $0.groups = "X25519:NoSuchCurve" }),
            ("--ciphersuites", { $0.ciphersuites = "TLS_NO_SUCH_SUITE" }),
            ("--key", { $0.identity = .single(certificate: certificate, key: garbage) }),
            ("--cert", { $0.identity = .single(certificate: garbage, key: key) }),
            ("--devices-dir", { $0.identity = .directory(path: "\(folder)/nowhere", prefix: "device") }),
            ("--devices-dir", { $0.identity = .directory(path: folder, prefix: "sensor") }),
        ]
        for (option, change) in cases {
            var bad = good
            change(&bad)
            XCTAssertThrowsError(try LoadTLSContext.contexts(for: bad), option) {
                XCTAssertEqual(($0 as? LoadOptionsError)?.option, option, "\($0)")
            }
        }
    }

    func testADevicesFolderIsReadUpToTheFirstMissingNumberWithSharedKeys() throws {
        let folder = try makeFolder()
        let (certificate, key) = try makeSelfSigned(in: folder, name: "unit-1")
        for number in 2...3 { try FileManager.default.copyItem(atPath: certificate, toPath: "\(folder)/unit-\(number).pem") }
        try FileManager.default.copyItem(atPath: certificate, toPath: "\(folder)/unit-5.pem")
        try FileManager.default.copyItem(atPath: key, toPath: "\(folder)/unit-shared.key")

        let files = try LoadTLSContext.deviceFiles(in: folder, prefix: "unit")
        XCTAssertEqual(files.map(\.certificate), (1...3).map { "\(folder)/unit-\($0).pem" })
        XCTAssertEqual(files.map(\.key), [key, "\(folder)/unit-shared.key", "\(folder)/unit-shared.key"])

        let contexts = try LoadTLSContext.contexts(for: options(.sessions) {
            $0.caFile = certificate
            $0.identity = .directory(path: folder, prefix: "unit")
            $0.sessions = 2
        })
        XCTAssertEqual(contexts.count, 2, "no more contexts than sessions")
    }

    // MARK: Distribution and report

    func testSubscribersGetThreadsOfTheirOwn() {
        let throughput = options(.throughput) { $0.publishers = 5; $0.subscribers = 2 }
        let shares = LoadGenerator.assign(options: throughput, contexts: [], workers: 4)
        XCTAssertEqual(shares.map { $0.map(\.role) }, [
            [.subscriber], [.subscriber],
            [.publisher(index: 0), .publisher(index: 2), .publisher(index: 4)], [.publisher(index: 1), .publisher(index: 3)],
        ])
        XCTAssertEqual(Set(shares.flatMap { $0.map(\.clientID) }).count, 7, "client ids are unique")

        let single = LoadGenerator.assign(options: throughput, contexts: [], workers: 1)
        XCTAssertEqual(single[0].count, 7)

        let sessions = LoadGenerator.assign(options: options(.sessions) { $0.sessions = 5 }, contexts: [], workers: 2)
        XCTAssertEqual(sessions.map(\.count), [3, 2])
        XCTAssertEqual(sessions[0].map(\.clientID), ["load-1", "load-3", "load-5"])
    }

    func testTheJSONReportCarriesUnitsInItsKeysAndLeavesOutWhatWasNotMeasured() throws {
        let report = LoadReport(
            mode: "latency", target: "127.0.0.1:8883", tls: true, tlsVersion: "1.3", clientCertificates: 1, threads: 2,
            sessionsRequested: 2, sessionsOpened: 2, sessionsFailed: 0, sessionsDropped: 0, sessionsDisconnectedCleanly: 2,
            failureReasons: [:], openSeconds: 0.5, sessionsOpenedPerSecond: 4, connectP50Milliseconds: 1, connectP99Milliseconds: 2,
            connectMaxMilliseconds: 3, openCPUSeconds: 0.1, messagesSent: 10, messagesReceived: 10, messagesPerSecond: 5,
            latencyP99Microseconds: 250, wallSeconds: 3, cpuUserSeconds: 0.2, cpuSystemSeconds: 0.1, cpuSeconds: 0.3,
            cpuPercentOfOneCore: 10, maxRSSKibibytes: 1024, openFilesLimit: 20_000)
        XCTAssertFalse(report.json.contains("\n"), "one line")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        XCTAssertEqual(object["open_seconds"] as? Double, 0.5)
        XCTAssertEqual(object["messages_per_second"] as? Double, 5)
        XCTAssertEqual(object["latency_p99_us"] as? Double, 250)
        XCTAssertEqual(object["connect_p99_ms"] as? Double, 2)
        XCTAssertEqual(object["cpu_seconds"] as? Double, 0.3)
        XCTAssertNil(object["hold_seconds"], "not measured in latency mode")
        XCTAssertNil(object["latency_p50_us"])
        XCTAssertTrue(report.succeeded)
        XCTAssertTrue(report.text.contains("2 of 2 opened"), report.text)
    }

    // MARK: Helpers

    private func makeFolder() throws -> String {
        let folder = NSTemporaryDirectory() + "load-options-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        return folder
    }

    /// A self-signed P-256 certificate (also usable as a CA file) and its key, by the openssl CLI.
    private func makeSelfSigned(in folder: String, name: String) throws -> (certificate: String, key: String) {
        let certificate = "\(folder)/\(name).pem"
        let key = "\(folder)/\(name).key"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                             "-keyout", key, "-out", certificate, "-subj", "/CN=\(name)", "-days", "1"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "openssl req")
        return (certificate, key)
    }
}
