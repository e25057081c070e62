import StapleGateProxyProtocol

/// `listen.proxy_protocol` / `listen.trusted_proxies` (a balancer in front) and
/// `upstream.proxy_protocol` (the broker is told who the device is).
extension ConfigSchema {
    func proxyProtocol(_ keys: YAMLMapping, section: YAMLValue, into listen: inout ListenConfiguration) throws(ConfigError) {
        if let value = keys["proxy_protocol"] {
            switch try word(value) {
            case "off": listen.proxyProtocol = nil
            case "v1": listen.proxyProtocol = .v1
            case "v2": listen.proxyProtocol = .v2
            case "any": listen.proxyProtocol = .any
            case let other: throw value.error("must be off, v1, v2 or any, not \"\(other)\"")
            }
        }
        if let value = keys["trusted_proxies"] {
            var blocks: [CIDRBlock] = []
            for item in try value.list() {
                let text = try item.string()
                guard let block = CIDRBlock(text) else { throw item.error(CIDRBlock.problem(text) ?? "not a CIDR block") }
                blocks.append(block)
            }
            guard !blocks.isEmpty || listen.proxyProtocol == nil else {
                throw value.error("lists no address: with proxy_protocol on, name the balancers' addresses (such as 10.0.0.0/24)")
            }
            listen.trustedProxies = TrustedProxies(blocks)
        }
        // Without the list, anyone could claim any address: refused rather than defaulted.
        if listen.proxyProtocol != nil, keys["trusted_proxies"] == nil {
            throw section.error("proxy_protocol is on, so trusted_proxies must list the balancers' addresses or networks (such as [10.0.0.0/24, \"fd00::/8\"]): a PROXY header from anyone else is refused")
        }
    }

    func upstreamProxyProtocol(_ value: YAMLValue) throws(ConfigError) -> Bool {
        switch try word(value) {
        case "off": return false
        case "v2": return true
        case let other: throw value.error("must be off or v2 (the broker reads PROXY protocol v2), not \"\(other)\"")
        }
    }

    /// The word as written: YAML 1.1 reads a bare `off` as false, which here means the word.
    private func word(_ value: YAMLValue) throws(ConfigError) -> String {
        if value.node.tagName == .bool, let scalar = value.node.scalar?.string { return scalar.lowercased() }
        return try value.string()
    }
}
