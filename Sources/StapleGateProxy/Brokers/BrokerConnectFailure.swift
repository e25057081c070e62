#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix

/// How one connect to a broker ended, as `staplegate_upstream_connects_total` labels it.
public enum BrokerConnectResult: String, Sendable, CaseIterable {
    case ok
    /// Nothing listens there (ECONNREFUSED; a Unix socket path that does not exist).
    case refused
    /// No answer within `upstream.connect_timeout`.
    case timeout
    /// Anything else: no route, name resolution, permissions.
    case error
}

/// Why a broker could not be reached, in operators' words.
public struct BrokerConnectFailure: Error, Sendable, Equatable {
    public let result: BrokerConnectResult
    public let reason: String

    public init(result: BrokerConnectResult, reason: String) {
        self.result = result
        self.reason = reason
    }

    public init(_ error: Error) {
        self.init(result: Self.classify(error), reason: ProxySessionHandler.describe(error))
    }

    private static func classify(_ error: Error) -> BrokerConnectResult {
        if let error = error as? ChannelError, case .connectTimeout = error { return .timeout }
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return classify(first.error)
        }
        if let error = error as? IOError, error.errnoCode == ECONNREFUSED || error.errnoCode == ENOENT { return .refused }
        return .error
    }
}
