import StapleGateConfig
import StapleGateFleet
@testable import StapleGateServer
import StapleGateTLS
import XCTest

/// What a reload cannot apply in place is named, and nothing else is.
final class RestartOnlySettingsTests: XCTestCase {
    private func configuration() -> GatewayConfiguration {
        GatewayConfiguration(listen: ListenConfiguration(), tls: TLSServerConfiguration(certificates: [], deviceCABundlePath: "ca.pem"),
                             upstream: .init(endpoint: .tcp(host: "127.0.0.1", port: 1883)))
    }

    func testReloadableChangesAreNotNamed() {
        let old = configuration()
        var new = old
        new.listen.drainGracePeriod = .seconds(5)
        new.stapling.reloadStapleWait = .seconds(1)
        new.upstream = .init(endpoint: .tcp(host: "127.0.0.1", port: 1884))
        XCTAssertEqual(RestartOnlySettings.changed(from: old, to: new), [])
        // Several brokers, another balance, down time: all for new sessions, none restart-only.
        new.upstream = .init(brokers: [.tcp(host: "10.0.0.5", port: 1883), .unixSocket(path: "/run/mosquitto/mosquitto.sock")],
                             balance: .clientIDHash, downTime: .seconds(1))
        new.deviceOCSP.defaultPolicy.enabled = false
        XCTAssertEqual(RestartOnlySettings.changed(from: old, to: new), [])
    }

    func testEachRestartOnlySettingIsNamed() {
        let old = configuration()
        var new = old
        new.listen.port = 9999
        new.listen.maxSessions = .fixed(3)
        new.stateDirectory = "/elsewhere"
        new.logLevel = .debug
        new.trace.enabled = false
        new.admin.port = 1
        new.deviceOCSP.cacheCapacity = 5
        new.fleet = FleetConfiguration(store: .postgres, postgres: PostgresSettings(host: "db", user: "gw", database: "fleet"))
        let changed = RestartOnlySettings.changed(from: old, to: new)
        XCTAssertEqual(changed.map { String($0.prefix { $0 != " " }) },
                       ["listen", "listen.max_sessions", "state_directory", "logging", "trace", "admin", "device_ocsp.cache_size", "fleet"])
        XCTAssertTrue(changed.allSatisfy { $0.hasSuffix("changed: takes effect at the next restart") }, "\(changed)")
    }
}
