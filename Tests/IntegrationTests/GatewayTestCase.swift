import Foundation
import StapleGateProxy
import TestSupport
import XCTest

/// Base class of the integration suites: one demo PKI and one real Mosquitto per test class
/// (tests keep apart by unique topics and client ids), a fresh in-process gateway per test.
/// Every process a test starts is terminated when it finishes (`ProcessRegistry`).
class GatewayTestCase: XCTestCase {
    /// Which listeners the class's broker has.
    class var brokerHasTCPListener: Bool { true }
    class var brokerHasUnixSocketListener: Bool { false }

    private struct Shared {
        let pki: TestPKI
        let broker: MosquittoBroker
    }

    private static let sharedLock = NSLock()
    private static var shared: [ObjectIdentifier: Result<Shared, Error>] = [:]

    override class func setUp() {
        super.setUp()
        ProcessRegistry.install()
        let result = Result { () throws -> Shared in
            let pki = try TestPKI()
            do {
                let broker = try MosquittoBroker.startBlocking(tcp: brokerHasTCPListener, unixSocket: brokerHasUnixSocketListener)
                return Shared(pki: pki, broker: broker)
            } catch {
                pki.remove()
                throw error
            }
        }
        sharedLock.withLock { shared[ObjectIdentifier(self)] = result }
    }

    override class func tearDown() {
        let result = sharedLock.withLock { shared.removeValue(forKey: ObjectIdentifier(self)) }
        if case let .success(fixture)? = result {
            fixture.broker.remove()
            fixture.pki.remove()
        }
        super.tearDown()
    }

    private(set) var pki: TestPKI!
    private(set) var broker: MosquittoBroker!

    override func setUp() async throws {
        try await super.setUp()
        let result = Self.sharedLock.withLock { Self.shared[ObjectIdentifier(Self.self)] }
        guard let fixture = try result?.get() else {
            throw XCTSkip("class-level setUp did not run")
        }
        pki = fixture.pki
        broker = fixture.broker
        // A test that stopped the broker must not leave it down for the next one.
        if !broker.isRunning { try await broker.start() }
    }

    /// A gateway forwarding to the class's broker (or to `upstream`), stopped at the end of the test.
    func startGateway(handshakeTimeout: Duration = .seconds(10),
                      upstream: UpstreamConfiguration.Endpoint? = nil) async throws -> GatewayUnderTest {
        let gateway = try await GatewayUnderTest.start(pki: pki, upstream: upstream ?? broker.endpoint,
                                                       handshakeTimeout: handshakeTimeout)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.log.text)\n--- broker log ---\n\(self?.broker.log ?? "")")
            }
            try await gateway.stop()
        }
        return gateway
    }

    /// A folder for this test's files, removed at its end.
    func makeTemporaryDirectory() throws -> TemporaryDirectory {
        let directory = try TemporaryDirectory(prefix: "test")
        addTeardownBlock { directory.remove() }
        return directory
    }

    /// A topic no other test uses.
    func uniqueTopic(_ prefix: String) -> String {
        "\(prefix)/\(UUID().uuidString.prefix(8).lowercased())"
    }
}
