import Foundation
import NIOConcurrencyHelpers
@testable import StapleGateServer
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// systemd's notify protocol, with a fake NOTIFY_SOCKET: the real binary says READY=1 once it
/// listens, pings the watchdog while its event loops answer, RELOADING=1 / READY=1 around each
/// reload (applied or refused), and STOPPING=1 on SIGTERM.
final class SystemdNotifyTests: GatewayTestCase {
    func testTheGatewayReportsReadyReloadingWatchdogAndStoppingInOrder() async throws {
        let directory = try makeTemporaryDirectory()
        let socket = try NotifySocket(path: directory.file("notify.sock"))
        defer { socket.close() }
        let port = try FreePort.next()
        let configText = configuration(port: port, stapling: "{ enabled: false }", in: directory)
        let configPath = try directory.write("staplegate.yaml", configText)
        let gateway = try ManagedProcess(try CommandLineTests.findExecutable(), ["run", "--config", configPath],
                                         environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000"])
        try await waitUntil(timeout: .seconds(20), "READY=1 and two watchdog pings after it", details: { "\(socket.messages)\n\(gateway.output)" }) {
            let messages = socket.messages
            guard let ready = messages.firstIndex(where: { $0.hasPrefix("READY=1") }) else { return false }
            return messages[ready...].filter { $0 == "WATCHDOG=1" }.count >= 2
        }
        XCTAssertTrue(socket.messages.first { $0.hasPrefix("READY=1") }?.contains("STATUS=listening for devices on 127.0.0.1:\(port)") ?? false,
                      "\(socket.messages)")
        XCTAssertTrue(MosquittoBroker.acceptsTCP(port: port), "READY=1 came before the listener was up")

        // SIGHUP (what `systemctl reload` sends): RELOADING=1, then READY=1 once it is applied.
        gateway.signal(SIGHUP)
        try await waitUntil(timeout: .seconds(15), "RELOADING=1 then READY=1", details: { "\(socket.messages)\n\(gateway.output)" }) {
            socket.messages.contains { $0.contains("last reload: applied") }
        }
        // A reload of a broken file says so and is READY=1 again, on the configuration it had.
        try configText.replacingOccurrences(of: "port: \(broker.port!)", with: "port: not-a-port")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        try await waitUntil(timeout: .seconds(15), "READY=1 after the refused reload", details: { "\(socket.messages)\n\(gateway.output)" }) {
            socket.messages.contains { $0.contains("last reload: refused") }
        }
        XCTAssertTrue(gateway.output.contains("reload refused, nothing changed"), gateway.output)
        XCTAssertTrue(MosquittoBroker.acceptsTCP(port: port), "the refused reload stopped the listener")

        gateway.signal(SIGTERM)
        let exit = try await gateway.waitForExit(timeout: .seconds(15))
        XCTAssertEqual(exit, .exited(0), gateway.output)
        let messages = socket.messages
        let states = messages.map { $0.split(separator: "\n").first.map(String.init) ?? "" }.filter { $0 != "WATCHDOG=1" }
        XCTAssertEqual(states, ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], "\(messages)")
        let reloading = try XCTUnwrap(messages.first { $0.hasPrefix("RELOADING=1") })
        XCTAssertNotNil(reloading.range(of: #"MONOTONIC_USEC=\d+"#, options: .regularExpression),
                        "Type=notify-reload needs the monotonic time of the reload: \(reloading)")
        let stopping = try XCTUnwrap(messages.firstIndex { $0.hasPrefix("STOPPING=1") })
        XCTAssertTrue(messages[..<stopping].contains("WATCHDOG=1"), "\(messages)")
    }

    /// Under a strict staple policy the gateway is not ready until it holds a staple: systemd
    /// (and whatever waits on the unit) sees it start only once devices can really connect.
    func testUnderAStrictStaplePolicyReadyWaitsForTheStaple() async throws {
        let directory = try makeTemporaryDirectory()
        let socket = try NotifySocket(path: directory.file("notify.sock"))
        defer { socket.close() }
        let configPath = try directory.write("staplegate.yaml", configuration(
            port: 0, stapling: "{ policy: strict, retry_min: 1s, retry_max: 1s, timeout: 1s }", in: directory))
        let gateway = try ManagedProcess(try CommandLineTests.findExecutable(), ["run", "--config", configPath],
                                         environment: ["NOTIFY_SOCKET": socket.path])
        // The responder is down: listening, but waiting, and saying what for.
        try await gateway.waitForOutput("listening for devices", timeout: .seconds(20))
        try await waitUntil(timeout: .seconds(15), "STATUS=waiting", details: { "\(socket.messages)\n\(gateway.output)" }) {
            socket.messages.contains { $0.hasPrefix("STATUS=waiting: no valid OCSP staple held") }
        }
        XCTAssertFalse(socket.messages.contains { $0.hasPrefix("READY=1") }, "\(socket.messages)")

        let responder = try await OCSPResponder.start(pki: pki)
        defer { responder.stopBlocking() }
        try await waitUntil(timeout: .seconds(20), "READY=1 once stapled", details: { "\(socket.messages)\n\(gateway.output)" }) {
            socket.messages.contains { $0.hasPrefix("READY=1") }
        }
        XCTAssertTrue(gateway.output.contains("OCSP staple refreshed"), gateway.output)
        gateway.signal(SIGTERM)
        let exit = try await gateway.waitForExit(timeout: .seconds(15))
        XCTAssertEqual(exit, .exited(0), gateway.output)
    }

    /// A gateway on `port` (0: any) with this `stapling` section, device checks off.
    private func configuration(port: Int, stapling: String, in directory: TemporaryDirectory) -> String {
        """
        listen: { address: "127.0.0.1", port: \(port), drain_grace_period: 5s }
        tls:
          certificates:
            - { certificate: "\(pki.certificate("server"))", key: "\(pki.key("server"))" }
          device_ca: "\(pki.caChain)"
        upstream: { address: 127.0.0.1, port: \(broker.port!) }
        state_directory: "\(directory.file("state"))"
        stapling: \(stapling)
        device_ocsp: { enabled: false }
        admin: { port: 0 }

        """
    }

    func testWithoutNotifySocketNothingIsSentAndTheWatchdogIsOff() {
        XCTAssertNil(SystemdNotifier(environment: [:]))
        XCTAssertNil(SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/path"]))
        let other = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"])
        XCTAssertNil(other?.watchdogInterval, "the watchdog of another process")
        let ours = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000"])
        XCTAssertEqual(ours?.watchdogInterval, .seconds(1))
    }

    func testAnAbstractNamespaceSocketIsReached() throws {
        let name = "staplegate-test-\(UUID().uuidString.prefix(8))"
        let socket = try NotifySocket(abstractName: name)
        defer { socket.close() }
        let notifier = try XCTUnwrap(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@\(name)"]))
        XCTAssertTrue(notifier.notify("READY=1"))
        try waitUntilBlocking(timeout: .seconds(5), "the datagram") { socket.messages == ["READY=1"] }
    }
}

/// A datagram socket standing in for systemd's: collects what is sent to it, on a thread of its own.
private final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let received = NIOLockedValueBox<[String]>([])
    private let thread: Thread

    var messages: [String] { received.withLockedValue { $0 } }

    convenience init(path: String) throws {
        try self.init(address: Array(path.utf8), path: path)
    }

    convenience init(abstractName: String) throws {
        try self.init(address: [0] + Array(abstractName.utf8), path: "@\(abstractName)")
    }

    private init(address bytes: [UInt8], path: String) throws {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXFailure("socket", errno) }
        self.fd = fd
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            _ = Glibc.close(fd)
            throw POSIXFailure("bind \(path)", errno)
        }
        let (descriptor, box) = (fd, received)
        thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                guard count > 0 else { return }  // closed
                box.withLockedValue { $0.append(String(decoding: buffer.prefix(count), as: UTF8.self)) }
            }
        }
        thread.start()
    }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        _ = Glibc.close(fd)
        if path.hasPrefix("/") { unlink(path) }
    }
}
