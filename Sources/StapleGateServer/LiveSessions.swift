import NIOConcurrencyHelpers
import NIOCore
import StapleGateTLS

/// The device sessions admitted to the broker right now, with the certificate each presented,
/// so that a certificate found revoked later can be cut off wherever it is connected.
public final class LiveSessions: Sendable {
    public struct Session: Sendable {
        public let channel: Channel
        public let certificate: X509Certificate
        /// Subject CN, or the subject when there is no CN.
        public let identity: String
        /// Connection number, as in the log.
        public let connectionID: UInt64
    }

    private let sessions = NIOLockedValueBox<[ObjectIdentifier: Session]>([:])

    public init() {}

    func admitted(_ channel: Channel, certificate: X509Certificate, identity: String, connectionID: UInt64) {
        let key = ObjectIdentifier(channel)
        sessions.withLockedValue { $0[key] = Session(channel: channel, certificate: certificate, identity: identity,
                                                     connectionID: connectionID) }
        channel.closeFuture.whenComplete { [sessions] _ in
            sessions.withLockedValue { _ = $0.removeValue(forKey: key) }
        }
    }

    public var all: [Session] { sessions.withLockedValue { Array($0.values) } }
    public var count: Int { sessions.withLockedValue { $0.count } }

    /// Sessions whose certificate has this serial (hex, any case).
    public func sessions(serialHex: String) -> [Session] {
        let wanted = serialHex.uppercased()
        return all.filter { $0.certificate.serialHex.uppercased() == wanted }
    }

    public func sessions(identity: String) -> [Session] {
        all.filter { $0.identity == identity }
    }
}
