import CMosquitto
import COpenSSL
import Foundation

/// One libmosquitto client of the load generator. Touched only by its worker's thread: by the
/// worker's loop and by libmosquitto's callbacks, which run inside the worker's calls to
/// `mosquitto_loop_read` / `_write` / `_misc` / `mosquitto_publish` / `mosquitto_disconnect`.
final class LoadClient {
    enum State {
        /// Not connected yet (waiting for a free handshake slot).
        case waiting
        /// Between `mosquitto_connect_async` and CONNACK.
        case connecting
        case connected
        /// DISCONNECT sent or queued; waiting for libmosquitto to close the socket.
        case disconnecting
        /// Never opened; the reason is counted.
        case failed
        /// Closed after having been open (cleanly, or dropped).
        case closed
    }

    /// Index in the worker's client list: the epoll event's data.
    let slot: Int
    let clientID: String
    let role: SessionRole
    let tls: LoadTLSContext?
    unowned(unsafe) let worker: LoadWorker

    var handle: OpaquePointer?
    /// The socket registered in the worker's epoll set (-1: none).
    var socket: Int32 = -1
    var registeredEvents: UInt32 = 0
    var state = State.waiting
    var connectStart: UInt64 = 0
    var handshakeFinished = false
    /// libmosquitto's error log lines while connecting (OpenSSL's reasons come only that way).
    var errors: [String] = []
    /// Set by a callback when the session cannot open; acted on once libmosquitto returns.
    var pendingFailure: String?
    var subscribed = false
    // Publishers
    var sequence: UInt64 = 0
    var nextDue: UInt64 = 0

    init(slot: Int, clientID: String, role: SessionRole, tls: LoadTLSContext?, worker: LoadWorker) {
        self.slot = slot
        self.clientID = clientID
        self.role = role
        self.tls = tls
        self.worker = worker
    }

    var isPublisher: Bool {
        if case .publisher = role { return true }
        return false
    }

    var publisherIndex: UInt32 {
        if case let .publisher(index) = role { return index }
        return 0
    }

    static func client(_ userdata: UnsafeMutableRawPointer?) -> LoadClient {
        Unmanaged<LoadClient>.fromOpaque(userdata!).takeUnretainedValue()
    }

    /// The callbacks every load client has. The log callback is removed once the session is
    /// open: with one set, libmosquitto formats a line for every packet sent and received.
    static func installCallbacks(on handle: OpaquePointer) {
        mosquitto_connect_callback_set(handle) { _, userdata, code in
            LoadClient.client(userdata).connackReceived(code: code)
        }
        mosquitto_disconnect_callback_set(handle) { _, userdata, code in
            let error = errno
            LoadClient.client(userdata).disconnected(code: code, errno: error)
        }
        mosquitto_subscribe_callback_set(handle) { _, userdata, _, _, _ in
            let client = LoadClient.client(userdata)
            if !client.subscribed {
                client.subscribed = true
                client.worker.progress.subscribed += 1
            }
        }
        mosquitto_message_callback_set(handle) { _, userdata, message in
            guard let message = message?.pointee else { return }
            LoadClient.client(userdata).worker.messageReceived(payload: message.payload, length: Int(message.payloadlen))
        }
        mosquitto_log_callback_set(handle) { _, userdata, level, text in
            guard level & Int32(MOSQ_LOG_ERR) != 0, let text else { return }
            let client = LoadClient.client(userdata)
            var line = String(cString: text)
            // "OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed"
            if line.hasPrefix("OpenSSL Error["), let colon = line.firstIndex(of: ":") {
                line = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
            }
            if client.errors.count < 4, !client.errors.contains(line) { client.errors.append(line) }
        }
    }

    private func connackReceived(code: Int32) {
        guard state == .connecting else { return }
        if code == 0 {
            if let handle { mosquitto_log_callback_set(handle, nil) }
            worker.sessionOpened(self)
        } else {
            pendingFailure = "the server refused the session: CONNACK \(code) (\(String(cString: mosquitto_connack_string(code))))"
        }
    }

    private func disconnected(code: Int32, errno error: Int32) {
        switch state {
        case .connecting:
            if pendingFailure == nil { pendingFailure = describe(code: code, errno: error) }
        case .connected:
            state = .closed
            worker.sessionDropped(self, reason: "dropped after opening: " + LoadClient.describe(code: code, errno: error))
        case .disconnecting:
            state = .closed
            worker.sessionClosed(self)
        case .waiting, .failed, .closed:
            break
        }
    }

    /// libmosquitto's word for a result code (the system's for MOSQ_ERR_ERRNO).
    static func describe(code: Int32, errno error: Int32) -> String {
        if code == MOSQ_ERR_ERRNO.rawValue, error != 0 { return String(cString: strerror(error)) }
        if code == MOSQ_ERR_SUCCESS.rawValue { return "connection closed" }
        return String(cString: mosquitto_strerror(code))
    }

    /// Why this session could not open: the stage it reached, libmosquitto's result, the
    /// server certificate's verification result and OpenSSL's reasons. No client id in it, so
    /// equal failures of many sessions count as one reason.
    func describe(code: Int32, errno error: Int32) -> String {
        failureReason(LoadClient.describe(code: code, errno: error))
    }

    func failureReason(_ what: String) -> String {
        var details = errors
        if tls != nil, let handle, let ssl = mosquitto_ssl_get(handle) {
            let verification = SSL_get_verify_result(OpaquePointer(ssl))
            if verification != X509_V_OK {
                details.insert("server certificate: \(String(cString: X509_verify_cert_error_string(verification)))", at: 0)
            }
        }
        let stage: String
        if tls == nil {
            stage = "before CONNACK"
        } else {
            stage = handshakeFinished ? "after the TLS handshake, before CONNACK" : "during the TLS handshake"
        }
        return "\(stage): \(what)" + (details.isEmpty ? "" : " (\(details.joined(separator: "; ")))")
    }
}
