import Foundation
import StapleGateProxy
import StapleGateTrace
import TestSupport
import XCTest

/// `upstream.brokers` with the real `staplegate` binary, real Mosquittos of each test's own and
/// real devices (mosquitto_pub): where each device lands is read from each broker's own log
/// ("New client connected from … as CLIENT-ID (…"). Failover around a stopped broker and back,
/// every broker down, shards by client id (SeveralBrokersTests+Hash.swift) and a reloaded list.
final class SeveralBrokersTests: GatewayTestCase {
    // MARK: failover

    func testFailoverSendsNewDevicesToTheSecondBrokerWhileTheFirstIsDownAndBackOnceItAnswers() async throws {
        let brokers = try await startBrokers(2)
        let (first, second) = (brokers[0], brokers[1])
        let gateway = try await startGateway(brokers, balance: "failover")
        let adminPort = try XCTUnwrap(gateway.adminPort)
        let ids = (1...4).map { uniqueClientID("failover-\($0)") }

        // Both up: the first in list order.
        try await publish(through: gateway, clientID: ids[0])
        try await waitForConnects(of: ids[0], to: first, count: 1)
        XCTAssertEqual(connects(of: ids[0], to: second), 0)

        // The first stops: the next device tries it, is refused, and lands on the second; the one
        // after that skips the first (marked down) and goes straight to the second.
        await first.stop()
        try await publish(through: gateway, clientID: ids[1])
        try await publish(through: gateway, clientID: ids[2])
        try await waitForConnects(of: ids[1], to: second, count: 1)
        try await waitForConnects(of: ids[2], to: second, count: 1)
        let tried = logLines(gateway, containing: "broker unreachable at \(name(first))")
        XCTAssertEqual(tried.count, 1, "tried once, then skipped: \(tried)")
        XCTAssertTrue(tried.first?.contains(": Connection refused; trying \(name(second))") == true, "\(tried)")
        XCTAssertEqual(logLines(gateway, containing: "connected to broker \(name(second))").count, 2)

        // /readyz: ready on the second, the first listed as down with its error.
        let readiness = try await adminRequest(port: adminPort, "/readyz")
        XCTAssertEqual(readiness.status, 200, "\(readiness)")
        let json = try readiness.json()
        XCTAssertEqual((json["failing"] as? [Any])?.count, 0, "\(readiness)")
        let listed = try XCTUnwrap(json["brokers"] as? [[String: Any]], "\(readiness)")
        XCTAssertEqual(listed.map { $0["broker"] as? String }, [name(first), name(second)])
        XCTAssertEqual(listed.map { $0["up"] as? Bool }, [false, true])
        XCTAssertEqual(listed[0]["lastError"] as? String, "Connection refused")
        XCTAssertNotNil(listed[0]["since"] as? String)

        let samples = try await scrape(gateway)
        XCTAssertEqual(samples.value("staplegate_upstream_broker_up", ["broker": name(first)]), 0)
        XCTAssertEqual(samples.value("staplegate_upstream_broker_up", ["broker": name(second)]), 1)
        XCTAssertEqual(connectsTotal(samples, first, "ok"), 1)
        XCTAssertEqual(connectsTotal(samples, first, "refused"), 1)
        XCTAssertEqual(connectsTotal(samples, second, "ok"), 2)
        XCTAssertEqual(connectsTotal(samples, second, "timeout"), 0, "every result is there from the start")
        XCTAssertEqual(samples.value("staplegate_upstream_failures_total"), 0, "no device was turned away")

        // The trace of the device that was moved: the first broker, then the second.
        let events = try await traceEvents(gateway, device: "device-1") { events in
            events.filter { $0.kind == .upstream }.count == 4
        }
        let session = try XCTUnwrap(sessions(events).first { $0.contains { $0.kind == .connect && $0.details["client_id"] == ids[1] } })
        let upstream = session.filter { $0.kind == .upstream }
        XCTAssertEqual(upstream.map { $0.details["endpoint"] }, [name(first), name(second)], "\(upstream)")
        XCTAssertEqual(upstream.map(\.isFailure), [false, false], "the session was served: \(upstream)")
        XCTAssertEqual(upstream[0].details["reason"], "Connection refused")
        XCTAssertEqual(upstream[0].details["next"], name(second))

        // The first is back: /readyz's probe finds it, and new devices go to it again.
        try await first.start()
        try await waitUntil(timeout: .seconds(10), pollEvery: .milliseconds(200), "/readyz to see the first broker back") {
            let brokers = try await adminRequest(port: adminPort, "/readyz").json()["brokers"] as? [[String: Any]]
            return brokers?.first?["up"] as? Bool == true
        }
        try await publish(through: gateway, clientID: ids[3])
        try await waitForConnects(of: ids[3], to: first, count: 1)
        XCTAssertEqual(connects(of: ids[3], to: second), 0)
    }

    /// A broker that does not answer (a full accept queue: the kernel drops the SYNs) costs the
    /// first device `connect_timeout`, then is skipped like one that refuses.
    func testABrokerThatDoesNotAnswerWithinTheConnectTimeoutIsSkippedLikeOneThatRefuses() async throws {
        let silent = try UnansweringListener()
        addTeardownBlock { silent.close() }
        let second = try await startBrokers(1)[0]
        let silentName = "127.0.0.1:\(silent.port)"
        let gateway = try await startGateway([second], names: [silentName, name(second)], balance: "failover",
                                             connectTimeout: "500ms")
        let ids = (1...2).map { uniqueClientID("silent-\($0)") }

        try await publish(through: gateway, clientID: ids[0])
        try await publish(through: gateway, clientID: ids[1])
        try await waitForConnects(of: ids[0], to: second, count: 1)
        try await waitForConnects(of: ids[1], to: second, count: 1)
        let tried = logLines(gateway, containing: "broker unreachable at \(silentName)")
        XCTAssertEqual(tried.count, 1, "waited for once, then skipped: \(tried)")
        XCTAssertTrue(tried.first?.contains(": connect timed out; trying \(name(second))") == true, "\(tried)")

        let samples = try await scrape(gateway)
        XCTAssertEqual(samples.value("staplegate_upstream_connects_total", ["broker": silentName, "result": "timeout"]), 1)
        XCTAssertEqual(samples.value("staplegate_upstream_broker_up", ["broker": silentName]), 0)
        XCTAssertEqual(connectsTotal(samples, second, "ok"), 2)

        // /readyz asks it too, with its own 1 s limit, and says so.
        let readiness = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/readyz")
        XCTAssertEqual(readiness.status, 200, "\(readiness)")
        let listed = try XCTUnwrap(try readiness.json()["brokers"] as? [[String: Any]], "\(readiness)")
        XCTAssertEqual(listed.map { $0["up"] as? Bool }, [false, true])
        XCTAssertEqual(listed[0]["lastError"] as? String, "no answer within 1000 ms to the readiness probe")
    }

    // MARK: every broker down

    func testWithEveryBrokerDownEachIsTriedAndTheDeviceIsAnsweredServerUnavailable() async throws {
        let brokers = try await startBrokers(2)
        let gateway = try await startGateway(brokers, balance: "round_robin")
        let adminPort = try XCTUnwrap(gateway.adminPort)
        for broker in brokers { await broker.stop() }

        let refused311 = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("brokers/down"),
                                                message: "lost", clientID: uniqueClientID("down-311"), extraArgs: ["-V", "mqttv311", "-d"])
        XCTAssertEqual(refused311.status, .exited(0x03), "\(refused311)")
        XCTAssertTrue(refused311.stderr.contains("Connection Refused: broker unavailable."), "\(refused311)")
        XCTAssertTrue(refused311.stdout.contains("received CONNACK"), "the CONNACK itself (-d):\n\(refused311)")
        let refused5 = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("brokers/down"),
                                              message: "lost", clientID: uniqueClientID("down-5"), extraArgs: ["-V", "mqttv5", "-d"])
        XCTAssertEqual(refused5.status, .exited(0x88), "\(refused5)")
        XCTAssertTrue(refused5.stderr.contains("Server unavailable"), "\(refused5)")

        // Each device tried both brokers before being turned away.
        let exhausted = logLines(gateway, containing: "every broker tried (")
        XCTAssertEqual(exhausted.count, 2, "\(exhausted)")
        for line in exhausted {
            XCTAssertTrue(line.contains(name(brokers[0])) && line.contains(name(brokers[1])) && line.contains("; disconnecting device"), line)
        }
        XCTAssertEqual(logLines(gateway, containing: ": Connection refused; trying ").count, 2)

        let readiness = try await adminRequest(port: adminPort, "/readyz")
        XCTAssertEqual(readiness.status, 503, "\(readiness)")
        let json = try readiness.json()
        let failing = try XCTUnwrap(json["failing"] as? [[String: String]], "\(readiness)")
        XCTAssertEqual(failing.map { $0["check"] }, ["upstream"])
        XCTAssertEqual(failing.first?["reason"],
                       "no broker reachable: \(name(brokers[0])): Connection refused; \(name(brokers[1])): Connection refused")
        XCTAssertEqual((json["brokers"] as? [[String: Any]])?.map { $0["up"] as? Bool }, [false, false])

        let samples = try await scrape(gateway)
        XCTAssertEqual(samples.value("staplegate_upstream_failures_total"), 2)
        for broker in brokers {
            XCTAssertEqual(connectsTotal(samples, broker, "refused"), 2)
            XCTAssertEqual(samples.value("staplegate_upstream_broker_up", ["broker": name(broker)]), 0)
        }

        // A broker that comes back is found by the next device, though still marked down.
        try await brokers[1].start()
        let back = uniqueClientID("down-back")
        try await publish(through: gateway, clientID: back)
        try await waitForConnects(of: back, to: brokers[1], count: 1)
    }

    // MARK: reload

    func testAReloadedBrokerListAppliesToNewSessionsWhileOpenOnesStay() async throws {
        let brokers = try await startBrokers(2)
        let (old, new) = (brokers[0], brokers[1])
        let gateway = try await startGateway([old], balance: "failover")
        let topic = uniqueTopic("brokers/reload")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: "device-2"),
                                                             broker: old, topic: topic)

        let text = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "[\"\(name(old))\"]", with: "[\"\(name(new))\"]")
            .write(toFile: gateway.configPath, atomically: true, encoding: .utf8)
        let reload = try await gateway.command(["reload"], timeout: .seconds(60))
        XCTAssertEqual(reload.status, .exited(0), "\(reload)")
        XCTAssertTrue(reload.stdout.contains("configuration reloaded"), "\(reload)")
        XCTAssertFalse(reload.output.contains("upstream"), "no restart-only warning about upstream: \(reload)")

        let id = uniqueClientID("reloaded")
        try await publish(through: gateway, clientID: id)
        try await waitForConnects(of: id, to: new, count: 1)
        XCTAssertEqual(connects(of: id, to: old), 0)

        // The subscriber admitted before the reload is still on the old broker.
        let direct = try await mosquittoPub(.broker(old), topic: topic, payload: .message("still here"))
        XCTAssertEqual(direct.status, .exited(0), "\(direct)")
        let delivered = try await subscriber.waitForMessages(1)
        XCTAssertEqual(delivered.map(\.payload), ["still here"])

        let readiness = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/readyz").json()
        XCTAssertEqual((readiness["brokers"] as? [[String: Any]])?.map { $0["broker"] as? String }, [name(new)])
        let samples = try await scrape(gateway)
        XCTAssertEqual(samples.value("staplegate_upstream_broker_up", ["broker": name(new)]), 1)
        XCTAssertNil(samples.value("staplegate_upstream_broker_up", ["broker": name(old)]), "the removed broker's series is gone")
        await subscriber.stop()
    }
}
