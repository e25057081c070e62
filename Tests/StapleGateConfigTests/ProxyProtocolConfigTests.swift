import Foundation
import NIOCore
@testable import StapleGateConfig
import StapleGateProxyProtocol
import XCTest

/// `listen.proxy_protocol`, `listen.trusted_proxies` and `upstream.proxy_protocol`: off by
/// default, every form applied, and every mistake named by file, line and key.
final class ProxyProtocolConfigTests: ConfigTestCase {
    func testOffByDefault() throws {
        let configuration = try load(yaml()).configuration
        XCTAssertNil(configuration.listen.proxyProtocol)
        XCTAssertEqual(configuration.listen.trustedProxies, TrustedProxies([]))
        XCTAssertFalse(configuration.upstream.sendsProxyProtocol)
    }

    func testEveryFormIsApplied() throws {
        for (word, expected) in [("v1", ProxyHeaderParser.AcceptedVersions.v1), ("v2", .v2), ("any", .any)] {
            let configuration = try load(yaml(listen: "proxy_protocol: \(word)\ntrusted_proxies: [10.0.0.0/8, \"fd00::/8\", 192.0.2.7]",
                                              upstream: "address: 127.0.0.1\nproxy_protocol: v2")).configuration
            XCTAssertEqual(configuration.listen.proxyProtocol, expected, word)
            XCTAssertEqual(configuration.listen.trustedProxies.blocks.map(\.description),
                           ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"])
            XCTAssertTrue(configuration.upstream.sendsProxyProtocol)
        }
        // A bare `off` is YAML 1.1's false: read as the word it is.
        let off = try load(yaml(listen: "proxy_protocol: off", upstream: "address: 127.0.0.1\nproxy_protocol: off")).configuration
        XCTAssertNil(off.listen.proxyProtocol)
        XCTAssertFalse(off.upstream.sendsProxyProtocol)
    }

    func testMistakesNameTheirKeyAndLine() {
        assertError(yaml(listen: "proxy_protocol: v2"), key: "listen", lineContaining: "listen:",
                    reasonContains: ["proxy_protocol is on, so trusted_proxies must list the balancers' addresses"])
        assertError(yaml(listen: "proxy_protocol: v3\ntrusted_proxies: [10.0.0.1]"), key: "listen.proxy_protocol",
                    lineContaining: "proxy_protocol:", reasonContains: ["must be off, v1, v2 or any, not \"v3\""])
        assertError(yaml(listen: "proxy_protocol: v2\ntrusted_proxies: [10.0.0.0/8, 10.0.0.300]"), key: "listen.trusted_proxies[1]",
                    lineContaining: "trusted_proxies:", reasonContains: ["\"10.0.0.300\" is not an IPv4 or IPv6 address"])
        assertError(yaml(listen: "proxy_protocol: v2\ntrusted_proxies: [10.0.0.0/33]"), key: "listen.trusted_proxies[0]",
                    lineContaining: "trusted_proxies:", reasonContains: ["the prefix length must be a number from 0 to 32"])
        assertError(yaml(listen: "proxy_protocol: v2\ntrusted_proxies: []"), key: "listen.trusted_proxies",
                    lineContaining: "trusted_proxies:", reasonContains: ["lists no address"])
        assertError(yaml(upstream: "address: 127.0.0.1\nproxy_protocol: v1"), key: "upstream.proxy_protocol",
                    lineContaining: "proxy_protocol:", reasonContains: ["must be off or v2"])
    }
}

/// Which peers may send a PROXY header: CIDR blocks, IPv4-mapped IPv6 peers as IPv4.
final class TrustedProxiesTests: XCTestCase {
    private func address(_ text: String) throws -> SocketAddress { try SocketAddress(ipAddress: text, port: 1234) }

    func testBlocksContainWhatTheyShould() throws {
        let trusted = TrustedProxies(["10.1.0.0/16", "192.0.2.7", "2001:db8::/32", "::1"].compactMap(CIDRBlock.init))
        XCTAssertEqual(trusted.blocks.count, 4)
        for inside in ["10.1.255.3", "10.1.0.0", "192.0.2.7", "2001:db8:ffff::9", "::1", "::ffff:10.1.2.3"] {
            XCTAssertTrue(trusted.contains(try address(inside)), inside)
        }
        for outside in ["10.2.0.1", "192.0.2.8", "2001:db9::1", "::2", "::ffff:10.2.0.1", "127.0.0.1"] {
            XCTAssertFalse(trusted.contains(try address(outside)), outside)
        }
        XCTAssertFalse(trusted.contains(nil))
        XCTAssertFalse(trusted.contains(try SocketAddress(unixDomainSocketPath: "/tmp/x")))
    }

    func testWholeAndZeroPrefixes() throws {
        XCTAssertTrue(try XCTUnwrap(CIDRBlock("0.0.0.0/0")).contains(try address("203.0.113.9")))
        XCTAssertFalse(try XCTUnwrap(CIDRBlock("0.0.0.0/0")).contains(try address("2001:db8::1")), "v4 blocks hold no v6 address")
        XCTAssertTrue(try XCTUnwrap(CIDRBlock("::/0")).contains(try address("2001:db8::1")))
        XCTAssertTrue(try XCTUnwrap(CIDRBlock("2001:db8::1/128")).contains(try address("2001:db8::1")))
        XCTAssertFalse(try XCTUnwrap(CIDRBlock("2001:db8::1/128")).contains(try address("2001:db8::2")))
        XCTAssertTrue(try XCTUnwrap(CIDRBlock("2001:db8::/65")).contains(try address("2001:db8::7fff:0:0:1")))
        XCTAssertFalse(try XCTUnwrap(CIDRBlock("2001:db8::/65")).contains(try address("2001:db8::8000:0:0:1")))
        XCTAssertEqual(CIDRBlock("10.9.8.7/8")?.description, "10.0.0.0/8", "host bits are cleared")
    }

    func testWhatIsNotABlockIsNamed() {
        for text in ["", "10.0.0", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "::/129", "host.example", "010.0.0.1"] {
            XCTAssertNil(CIDRBlock(text), text)
            XCTAssertNotNil(CIDRBlock.problem(text), text)
        }
    }
}
