import Foundation

extension Duration {
    /// Seconds as a TimeInterval, for arithmetic with Dates.
    public var timeInterval: TimeInterval {
        TimeInterval(components.seconds) + TimeInterval(components.attoseconds) / 1e18
    }

    /// For log fields such as `tls.handshake_ms`: to the microsecond, without float noise.
    public var milliseconds: Double { (timeInterval * 1_000_000).rounded() / 1000 }
}
