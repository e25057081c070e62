import COpenSSL

/// A failure reported by OpenSSL, with the reasons OpenSSL queued for it (its error queue is
/// per-thread, so it is drained right where the failing call returned).
public struct OpenSSLError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The OpenSSL call or step that failed, e.g. "SSL_do_handshake".
    public let operation: String
    /// Human-readable reasons, most specific last, e.g. ["SSL routines: certificate verify failed"].
    public let reasons: [String]

    public init(operation: String, reasons: [String]) {
        self.operation = operation
        self.reasons = reasons
    }

    public var description: String {
        reasons.isEmpty ? "\(operation) failed" : reasons.joined(separator: "; ")
    }

    /// Takes every queued error off this thread's OpenSSL error queue.
    public static func drain(operation: String, extra: [String] = []) -> OpenSSLError {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            reasons.append(describe(code))
        }
        return OpenSSLError(operation: operation, reasons: reasons + extra)
    }

    /// Empties this thread's error queue, as `SSL_get_error` needs before every TLS I/O call.
    /// Peeks first: OpenSSL 3.0's `ERR_clear_error` frees the strings of all sixteen slots (32
    /// `free` calls) even when the queue is empty, which was 6 % of the gateway's CPU per
    /// relayed message; the queue is empty unless the last call failed.
    @inline(__always)
    static func clearQueue() {
        if ERR_peek_error() != 0 { ERR_clear_error() }
    }

    static func describe(_ code: UInt) -> String {
        let library = ERR_lib_error_string(code).map { String(cString: $0) }
        let reason = ERR_reason_error_string(code).map { String(cString: $0) }
        switch (library, reason) {
        case let (library?, reason?): return "\(library): \(reason)"
        case let (nil, reason?): return reason
        default:
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// The OpenSSL the binary runs with (what operators need in a bug report).
public enum OpenSSLLibrary {
    public static var version: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }
}
