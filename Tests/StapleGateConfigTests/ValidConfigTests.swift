import Foundation
import XCTest
@testable import StapleGateConfig
import StapleGateProxy
import StapleGateTLS

final class ValidConfigTests: ConfigTestCase {
    func testMinimalConfigAppliesDefaultsAndResolvesRelativePaths() throws {
        let loaded = try load(yaml())
        let configuration = loaded.configuration
        XCTAssertEqual(configuration.listen, ListenConfiguration(address: "0.0.0.0", port: 8883, backlog: 1024))
        let tls = configuration.tls
        XCTAssertEqual(tls.certificates, [.init(chainPath: pki.path("server.pem"), keyPath: pki.path("server.key"))])
        XCTAssertEqual(tls.deviceCABundlePath, pki.path("ca.pem"))
        XCTAssertTrue(tls.deviceCABundlePath.hasPrefix("/"))
        XCTAssertEqual(tls.verifyDepth, 4)
        XCTAssertEqual(tls.minimumVersion, .tls12)
        XCTAssertNil(tls.tls13Ciphersuites)
        XCTAssertNil(tls.tls12Ciphers)
        XCTAssertNil(tls.groups)
        XCTAssertEqual(tls.handshakeTimeout, .seconds(10))
        XCTAssertEqual(tls.sessionCacheSize, 20_480)
        XCTAssertEqual(configuration.upstream,
                       UpstreamConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 1883), connectTimeout: .seconds(5), idleTimeout: .seconds(3600)))
        XCTAssertEqual(configuration.logLevel, .info)
        XCTAssertEqual(loaded.tlsMaterial.identities.count, 1)
        XCTAssertEqual(loaded.tlsMaterial.deviceCAs.count, 1)
        XCTAssertEqual(loaded.tlsMaterial.identities[0].chain.count, 2)
        XCTAssertEqual(loaded.warnings, [])
        XCTAssertEqual(loaded.serverContext.configuration, tls)
    }

    func testTheSessionCacheSizeIsTaken() throws {
        XCTAssertEqual(try load(yaml(tls: "session_cache_size: 500")).configuration.tls.sessionCacheSize, 500)
    }

    func testFullConfigWithEveryKey() throws {
        try FileManager.default.createDirectory(atPath: pki.path("run"), withIntermediateDirectories: true)
        let text = """
        listen:
          address: "::1"
          port: 0
          backlog: 16
        tls:
          certificates:
            - certificate: server.pem
              key: server.key
            - certificate: rsa.pem
              key: rsa.key
          device_ca: ca.pem
          verify_depth: 2
          min_version: "1.3"
          tls13_ciphersuites: "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
          tls12_ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384"
          groups: "P-256:X25519"
          handshake_timeout: 500ms
        upstream:
          unix_socket: run/mosquitto.sock
          connect_timeout: 2m
          idle_timeout: 0
        logging:
          level: debug
        """
        let configuration = try load(text).configuration
        XCTAssertEqual(configuration.listen, ListenConfiguration(address: "::1", port: 0, backlog: 16))
        let expectedTLS = TLSServerConfiguration(
            certificates: [.init(chainPath: pki.path("server.pem"), keyPath: pki.path("server.key")),
                           .init(chainPath: pki.path("rsa.pem"), keyPath: pki.path("rsa.key"))],
            deviceCABundlePath: pki.path("ca.pem"),
            verifyDepth: 2,
            minimumVersion: .tls13,
            tls13Ciphersuites: "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
            tls12Ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384",
            groups: "P-256:X25519",
            handshakeTimeout: .milliseconds(500))
        XCTAssertEqual(configuration.tls, expectedTLS)
        XCTAssertEqual(configuration.upstream,
                       UpstreamConfiguration(endpoint: .unixSocket(path: pki.path("run/mosquitto.sock")),
                                             connectTimeout: .seconds(120), idleTimeout: nil))
        XCTAssertEqual(configuration.logLevel, .debug)
    }

    func testECDSAAndRSACertificatesAreAcceptedTogether() throws {
        let loaded = try load(yaml(certificates: """
            - certificate: rsa.pem
              key: rsa.key
            - certificate: server.pem
              key: server.key
            """))
        XCTAssertEqual(loaded.tlsMaterial.identities.map(\.leaf.keyAlgorithm), [.rsa, .ecdsa])
    }

    func testOptionalSectionsWithEveryKeyCommentedOutMeanDefaults() throws {
        let loaded = try load("listen:\n  # port: 8884\n" + yaml() + "logging:\n  # level: debug\n")
        XCTAssertEqual(loaded.configuration.listen, ListenConfiguration())
        XCTAssertEqual(loaded.configuration.logLevel, .info)
    }

    func testUnquotedMinVersionNumbersAreAccepted() throws {
        XCTAssertEqual(try load(yaml(tls: "min_version: 1.3")).configuration.tls.minimumVersion, .tls13)
        XCTAssertEqual(try load(yaml(tls: "min_version: 1.2")).configuration.tls.minimumVersion, .tls12)
    }

    func testDurationsAcceptBareSecondsAndEveryUnit() throws {
        let configuration = try load(yaml(tls: "handshake_timeout: 3", upstream: """
            address: broker.example
            port: 1884
            connect_timeout: 1500ms
            idle_timeout: 1d
            """)).configuration
        XCTAssertEqual(configuration.tls.handshakeTimeout, .seconds(3))
        XCTAssertEqual(configuration.upstream.brokers, [.tcp(host: "broker.example", port: 1884)])
        XCTAssertEqual(configuration.upstream.connectTimeout, .milliseconds(1500))
        XCTAssertEqual(configuration.upstream.idleTimeout, .seconds(86_400))
    }

    func testPathsAreResolvedAgainstTheConfigFilesFolderNotTheWorkingDirectory() throws {
        let folder = pki.path("conf")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let text = yaml(certificates: "- certificate: ../server.pem\n  key: ./../server.key", deviceCA: pki.path("ca.pem"))
        let configuration = try ConfigLoader.load(yaml: text, path: folder + "/staplegate.yaml").configuration
        XCTAssertEqual(configuration.tls.certificates[0].chainPath, pki.path("server.pem"))
        XCTAssertEqual(configuration.tls.certificates[0].keyPath, pki.path("server.key"))
        XCTAssertEqual(configuration.tls.deviceCABundlePath, pki.path("ca.pem"))
    }

    func testARelativeConfigPathStillYieldsAbsolutePaths() {
        let schema = ConfigSchema(file: "config/staplegate.yaml")
        let cwd = FileManager.default.currentDirectoryPath
        XCTAssertEqual(schema.resolve("../certs/out/server.pem"),
                       URL(fileURLWithPath: cwd).appendingPathComponent("certs/out/server.pem").standardizedFileURL.path)
        XCTAssertEqual(schema.resolve("/etc/ssl/a.pem"), "/etc/ssl/a.pem")
    }

    func testAnExpiringServerCertificateLoadsWithAWarning() throws {
        let loaded = try load(yaml(certificates: "- certificate: expiring.pem\n  key: expiring.key"))
        XCTAssertEqual(loaded.warnings.count, 1, "\(loaded.warnings)")
        let warning = try XCTUnwrap(loaded.warnings.first)
        XCTAssertTrue(warning.hasPrefix("tls.certificates[0].certificate: "), warning)
        XCTAssertTrue(warning.contains(pki.path("expiring.pem")), warning)
        XCTAssertTrue(warning.contains("expires in 5 days"), warning)
    }

    func testExpiredCertificatesAndCAsAreWarnedAbout() throws {
        let loaded = try load(yaml())
        let later = Date().addingTimeInterval(400 * 86_400)
        let warnings = ExpiryWarnings.check(loaded.tlsMaterial, configuration: loaded.configuration.tls, now: later)
        XCTAssertEqual(warnings.count, 2, "\(warnings)")
        XCTAssertTrue(warnings.contains { $0.hasPrefix("tls.certificates[0].certificate: ") && $0.contains("expired on") }, "\(warnings)")
        XCTAssertTrue(warnings.contains { $0.hasPrefix("tls.device_ca: ") && $0.contains("expired on") && $0.contains("Test Device CA") }, "\(warnings)")
    }

    /// The documented example must stay loadable: copy it next to a stand-in for the demo PKI.
    func testTheDocumentedExampleLoads() throws {
        let example = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/staplegate.yaml")
        let text = try String(contentsOf: example, encoding: .utf8)
        let out = pki.path("certs/out")
        try FileManager.default.createDirectory(atPath: pki.path("config"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for (from, to) in [("server.pem", "server.pem"), ("server.key", "server.key"), ("ca.pem", "ca-chain.pem")] {
            try FileManager.default.copyItem(atPath: pki.path(from), toPath: out + "/" + to)
        }
        let path = pki.path("config/staplegate.yaml")
        try pki.write("config/staplegate.yaml", text)
        let loaded = try ConfigLoader.load(path: path)
        XCTAssertEqual(loaded.configuration.listen, ListenConfiguration(address: "0.0.0.0", port: 8883, backlog: 1024))
        XCTAssertEqual(loaded.configuration.tls.certificates[0].chainPath, out + "/server.pem")
        XCTAssertEqual(loaded.configuration.upstream.brokers, [.tcp(host: "127.0.0.1", port: 1883)])
        // Every key of the schema is documented, the alternatives at least in a comment.
        for key in ["address:", "port:", "backlog:", "certificates:", "certificate:", "key:", "device_ca:",
                    "verify_depth:", "min_version:", "tls13_ciphersuites:", "tls12_ciphers:", "groups:",
                    "handshake_timeout:", "session_ticket_keys:", "unix_socket:", "connect_timeout:", "idle_timeout:", "level:", "server-rsa.pem"] {
            XCTAssertTrue(text.contains(key), "the example does not show \(key)")
        }
    }
}
