@testable import StapleGateProxy
import XCTest

/// The balancing rules as pure logic: the order one session tries the brokers in, for each
/// `upstream.balance`, with some brokers marked down; and the client-id hash's stability and
/// how few client ids move when a broker is added or removed.
final class BrokerRankingTests: XCTestCase {
    private let three: [UpstreamConfiguration.Endpoint] = [
        .tcp(host: "10.0.0.5", port: 1883), .tcp(host: "10.0.0.6", port: 1883), .tcp(host: "10.0.0.7", port: 1883),
    ]

    private func order(_ balance: UpstreamConfiguration.Balance, available: [Bool] = [true, true, true],
                       key: String = "sensor-7", turn: UInt64 = 0, brokers: [UpstreamConfiguration.Endpoint]? = nil) -> [Int] {
        BrokerRanking.order(of: brokers ?? three, balance: balance, available: available, hashKey: key, turn: turn)
    }

    // MARK: failover

    func testFailoverTriesTheListInOrderWithBrokersMarkedDownLast() {
        XCTAssertEqual(order(.failover), [0, 1, 2])
        XCTAssertEqual(order(.failover, turn: 7), [0, 1, 2], "the turn plays no part")
        XCTAssertEqual(order(.failover, key: "another"), [0, 1, 2], "nor the client id")
        XCTAssertEqual(order(.failover, available: [false, true, true]), [1, 2, 0])
        XCTAssertEqual(order(.failover, available: [false, false, true]), [2, 0, 1])
        XCTAssertEqual(order(.failover, available: [true, false, false]), [0, 1, 2])
        XCTAssertEqual(order(.failover, available: [false, false, false]), [0, 1, 2], "all down: every broker, in list order")
    }

    // MARK: round_robin

    func testRoundRobinRotatesOverEveryBroker() {
        let firsts = (0..<6).map { order(.roundRobin, turn: UInt64($0))[0] }
        XCTAssertEqual(firsts, [0, 1, 2, 0, 1, 2])
        XCTAssertEqual(order(.roundRobin, turn: 1), [1, 2, 0], "the rest follow, so a failed connect moves on")
    }

    func testRoundRobinSkipsABrokerMarkedDownAndSharesItsTurnsEvenly() {
        let available = [true, false, true]
        let orders = (0..<6).map { order(.roundRobin, available: available, turn: UInt64($0)) }
        XCTAssertEqual(orders.map { $0[0] }, [0, 2, 0, 2, 0, 2], "never the down broker, and no broker twice in a row")
        XCTAssertTrue(orders.allSatisfy { $0.last == 1 }, "the down broker last, as a last resort: \(orders)")
        XCTAssertTrue(orders.allSatisfy { Set($0) == [0, 1, 2] }, "every broker once")
    }

    func testRoundRobinWithEveryBrokerDownStillTriesThemAll() {
        let orders = (0..<3).map { order(.roundRobin, available: [false, false, false], turn: UInt64($0)) }
        XCTAssertEqual(orders, [[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    }

    // MARK: client_id_hash

    /// Pinned values: a persistent session's shard must not move with a new release. The
    /// expected numbers were computed independently (FNV-1a 64 + MurmurHash3 fmix64 in Python).
    func testTheHashIsFNV1a64WithAFixedFinaliserAndDoesNotChange() {
        XCTAssertEqual(RendezvousHash.fnv1a64("".utf8), 0xcbf2_9ce4_8422_2325)
        XCTAssertEqual(RendezvousHash.fnv1a64("a".utf8), 0xaf63_dc4c_8601_ec8c)
        XCTAssertEqual(RendezvousHash.fnv1a64("foobar".utf8), 0x8594_4171_f739_67e8)
        XCTAssertEqual(RendezvousHash.score(broker: "10.0.0.5:1883", key: "sensor-7"), 0xa2d9_fefb_c92a_bd21)
        XCTAssertEqual(RendezvousHash.score(broker: "10.0.0.6:1883", key: "sensor-7"), 0xe3ff_1116_eaf1_7aaf)
        XCTAssertEqual(RendezvousHash.score(broker: "10.0.0.7:1883", key: "sensor-7"), 0x7e74_96f6_8157_3e2f)
        XCTAssertEqual(order(.clientIDHash), [1, 0, 2])
    }

    func testTheSameClientIDAlwaysGetsTheSameOrderWhateverTheTurn() {
        for n in 0..<200 {
            let key = "device-\(n)"
            let first = order(.clientIDHash, key: key)
            XCTAssertEqual(Set(first), [0, 1, 2])
            for turn in [1, 2, 99] as [UInt64] {
                XCTAssertEqual(order(.clientIDHash, key: key, turn: turn), first, key)
            }
        }
    }

    func testABrokerMarkedDownHandsItsClientIDsToTheNextByTheSameRanking() {
        for n in 0..<300 {
            let key = "device-\(n)"
            let ranking = order(.clientIDHash, key: key)
            var available = [true, true, true]
            available[ranking[0]] = false
            XCTAssertEqual(order(.clientIDHash, available: available, key: key), [ranking[1], ranking[2], ranking[0]], key)
            available[ranking[1]] = false
            XCTAssertEqual(order(.clientIDHash, available: available, key: key), [ranking[2], ranking[0], ranking[1]], key)
            XCTAssertEqual(order(.clientIDHash, available: [false, false, false], key: key), ranking, "all down: by rank")
        }
    }

    func testClientIDsSpreadEvenlyOverThreeBrokers() {
        let ids = (0..<3000).map { "device-\($0)" }
        var counts = [0, 0, 0]
        for id in ids { counts[order(.clientIDHash, key: id)[0]] += 1 }
        for count in counts {
            XCTAssertTrue((850...1150).contains(count), "each broker takes about a third: \(counts)")
        }
    }

    func testAddingAThirdBrokerMovesAboutAThirdOfTheClientIDsAllToTheNewBroker() {
        let two = Array(three.prefix(2))
        let ids = (0..<3000).map { "device-\($0)" }
        var moved = 0
        for id in ids {
            let before = two[order(.clientIDHash, available: [true, true], key: id, brokers: two)[0]]
            let after = three[order(.clientIDHash, key: id)[0]]
            guard before != after else { continue }
            moved += 1
            XCTAssertEqual(after, three[2], "\(id) moved between the old brokers (\(before) → \(after))")
        }
        let share = Double(moved) / Double(ids.count)
        XCTAssertTrue((0.25...0.42).contains(share), "\(moved) of \(ids.count) client ids moved (\(share))")
    }

    func testRemovingABrokerMovesOnlyItsOwnClientIDs() {
        let withoutMiddle = [three[0], three[2]]
        let ids = (0..<3000).map { "device-\($0)" }
        var moved = 0
        for id in ids {
            let before = three[order(.clientIDHash, key: id)[0]]
            let after = withoutMiddle[order(.clientIDHash, available: [true, true], key: id, brokers: withoutMiddle)[0]]
            if before == three[1] {
                moved += 1
            } else {
                XCTAssertEqual(after, before, "\(id) was on \(before), which stayed, yet moved to \(after)")
            }
        }
        XCTAssertGreaterThan(moved, 800, "the removed broker had its third")
    }

    func testEveryRuleTriesEachBrokerExactlyOnce() {
        for balance in UpstreamConfiguration.Balance.allCases {
            for mask in 0..<8 {
                let available = (0..<3).map { mask & (1 << $0) != 0 }
                for turn in 0..<4 as Range<UInt64> {
                    let tried = order(balance, available: available, turn: turn)
                    XCTAssertEqual(tried.sorted(), [0, 1, 2], "\(balance) \(available) \(turn)")
                    let firstDown = tried.firstIndex { !available[$0] } ?? tried.count
                    XCTAssertTrue(tried[firstDown...].allSatisfy { !available[$0] }, "down brokers last: \(balance) \(tried)")
                }
            }
        }
    }
}
