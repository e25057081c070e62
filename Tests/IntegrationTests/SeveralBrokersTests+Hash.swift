import Foundation
import StapleGateProxy
import StapleGateTrace
import TestSupport
import XCTest

/// `balance: client_id_hash` over three real brokers, and what SeveralBrokersTests share.
extension SeveralBrokersTests {
    // MARK: client_id_hash

    /// Each client id reaches the broker the ranking predicts (`RendezvousHash`, over the
    /// brokers' names as configured) on every connect, and the ids spread over the brokers. When
    /// an id's broker stops, that id moves to its second choice and no other id moves.
    func testClientIDHashSendsEachClientIDToItsOwnBrokerOnEveryConnect() async throws {
        let brokers = try await startBrokers(3)
        let names = brokers.map(name)
        let gateway = try await startGateway(brokers, balance: "client_id_hash")
        let ids = (1...9).map { uniqueClientID("shard-\($0)") }
        let home = Dictionary(uniqueKeysWithValues: ids.map { ($0, RendezvousHash.ranking(of: names, key: $0)) })

        for _ in 1...3 {
            for id in ids { try await publish(through: gateway, clientID: id) }
        }
        for id in ids {
            let expected = home[id]![0]
            try await waitForConnects(of: id, to: brokers[expected], count: 3)
            for (index, broker) in brokers.enumerated() where index != expected {
                XCTAssertEqual(connects(of: id, to: broker), 0, "\(id) belongs on \(names[expected]), reached \(names[index])")
            }
        }
        let used = Set(ids.map { home[$0]![0] })
        XCTAssertGreaterThanOrEqual(used.count, 2, "9 client ids over 3 brokers: \(ids.map { names[home[$0]![0]] })")

        // The first id's broker stops: it goes to its second choice; an id homed elsewhere stays.
        let moved = ids[0]
        let down = home[moved]![0]
        await brokers[down].stop()
        try await publish(through: gateway, clientID: moved)
        try await waitForConnects(of: moved, to: brokers[home[moved]![1]], count: 1)
        if let stayer = ids.first(where: { home[$0]![0] != down }) {
            try await publish(through: gateway, clientID: stayer)
            try await waitForConnects(of: stayer, to: brokers[home[stayer]![0]], count: 4)
        }
    }

    // MARK: - Helpers

    /// `count` Mosquittos of this test's own, removed at its end.
    func startBrokers(_ count: Int) async throws -> [MosquittoBroker] {
        var brokers: [MosquittoBroker] = []
        for _ in 0..<count {
            let broker = try await MosquittoBroker.start()
            addTeardownBlock { broker.remove() }
            brokers.append(broker)
        }
        return brokers
    }

    /// The broker's name as the configuration lists it (and logs, /readyz and metrics show it).
    func name(_ broker: MosquittoBroker) -> String { "127.0.0.1:\(broker.port!)" }

    /// The real binary forwarding to `brokers` (`upstream.brokers`), device OCSP off.
    /// - Parameter names: the list as configured, when not just `brokers`' names.
    func startGateway(_ brokers: [MosquittoBroker], names: [String]? = nil, balance: String, downTime: String = "30s",
                      connectTimeout: String = "5s") async throws -> StapleGateProcess {
        let list = (names ?? brokers.map(name)).map { "\"\($0)\"" }.joined(separator: ", ")
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: brokers[0], directory: try makeTemporaryDirectory(), sections: ["device_ocsp: { enabled: false }"],
            upstream: "{ brokers: [\(list)], balance: \(balance), down_time: \(downTime), connect_timeout: \(connectTimeout) }")
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output.suffix(40_000))")
                for broker in brokers { print("--- broker \(self?.name(broker) ?? "") log ---\n\(broker.log.suffix(10_000))") }
            }
            await gateway.stop()
        }
        return gateway
    }

    /// device-1 publishes one message through the gateway as `clientID`, which must succeed.
    func publish(through gateway: StapleGateProcess, clientID: String) async throws {
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("brokers"),
                                            message: "hello", clientID: clientID)
        XCTAssertEqual(result.status, .exited(0), "\(clientID) could not publish:\n\(result)")
    }

    /// How often `clientID` connected to `broker`, by the broker's own log.
    func connects(of clientID: String, to broker: MosquittoBroker) -> Int {
        broker.log.components(separatedBy: " as \(clientID) (").count - 1
    }

    func waitForConnects(of clientID: String, to broker: MosquittoBroker, count: Int) async throws {
        try await waitUntil(timeout: .seconds(10), "\(clientID) to connect \(count) × to \(name(broker))",
                            details: { broker.log.suffix(4000).description }) {
            self.connects(of: clientID, to: broker) >= count
        }
        XCTAssertEqual(connects(of: clientID, to: broker), count, "\(clientID) on \(name(broker))")
    }

    func logLines(_ gateway: StapleGateProcess, containing text: String) -> [String] {
        gateway.output.split(separator: "\n").filter { $0.contains(text) }.map(String.init)
    }

    /// The gateway's /metrics, as the reference parser reads it.
    func scrape(_ gateway: StapleGateProcess) async throws -> [PrometheusSample] {
        let response = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        return try await PrometheusParser.parse(response.body, in: try makeTemporaryDirectory()).get()
    }

    func connectsTotal(_ samples: [PrometheusSample], _ broker: MosquittoBroker, _ result: String) -> Double? {
        samples.value("staplegate_upstream_connects_total", ["broker": name(broker), "result": result])
    }

    /// `staplegate trace DEVICE --json`, once `condition` holds (events are written in batches).
    func traceEvents(_ gateway: StapleGateProcess, device: String, until condition: ([TraceEvent]) -> Bool) async throws -> [TraceEvent] {
        var events: [TraceEvent] = []
        var printed = ""
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "the trace of \(device)", details: { printed }) {
            let result = try await gateway.command(["trace", device, "--json"])
            printed = "\(result)"
            guard result.status.succeeded else { return false }
            events = try result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }
                .map { try TraceTimeline.jsonDecoder().decode(TraceEvent.self, from: Data($0.utf8)) }
            return condition(events)
        }
        return events
    }

    /// `events` by connection, in the order the connections first appear.
    func sessions(_ events: [TraceEvent]) -> [[TraceEvent]] {
        Dictionary(grouping: events, by: \.connectionID).values.sorted { $0[0].connectionID < $1[0].connectionID }
    }
}
