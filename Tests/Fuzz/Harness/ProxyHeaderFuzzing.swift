import NIOCore
import StapleGateProxyProtocol

enum ProxyHeaderFuzzing {
    /// Parsed whole and as two arrivals (the balancer's bytes may come in any pieces), the
    /// header or the error must be the same, and a header leaves the reader just past itself.
    static func parse(_ bytes: UnsafeRawBufferPointer) {
        let all = Array(bytes)
        for accepted in [ProxyHeaderParser.AcceptedVersions.any, .v1, .v2] {
            let whole = outcome(of: [all], accepting: accepted)
            let split = all.count / 2
            let pieces = outcome(of: [Array(all[..<split]), Array(all[split...])], accepting: accepted)
            invariant(whole == pieces, "parsed whole: \(whole); in two pieces: \(pieces)")
        }
    }

    private enum Outcome: Equatable {
        case header(ProxyHeader, rest: Int)
        case needsMore
        case error(ProxyHeaderError)
    }

    private static func outcome(of arrivals: [[UInt8]], accepting accepted: ProxyHeaderParser.AcceptedVersions) -> Outcome {
        var parser = ProxyHeaderParser(accepting: accepted)
        var buffer = ByteBuffer()
        for (index, arrival) in arrivals.enumerated() {
            buffer.writeBytes(arrival)
            do {
                if let header = try parser.parse(&buffer) {
                    let later = arrivals[(index + 1)...].reduce(0) { $0 + $1.count }
                    return .header(header, rest: buffer.readableBytes + later)
                }
            } catch {
                return .error(error)
            }
        }
        return .needsMore
    }
}
