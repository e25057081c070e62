import CMosquitto
import COpenSSL
import CStapleGateShim
import Foundation
import StapleGateOCSP
import StapleGateTLS

/// A device as fleets build them: libmosquitto with TLS, a client certificate and — by default —
/// `MOSQ_OPT_TLS_OCSP_REQUIRED`, so it refuses a gateway that staples no valid response. It
/// connects, reports the staple it was given, subscribes, publishes and waits for its message to
/// come back. Operators run it to check a deployment end to end.
public struct DeviceSimulator {
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        public var caFile: String
        public var certificate: String
        public var key: String
        public var clientID: String
        public var topic: String
        public var message: String
        public var requireOCSP: Bool
        public var timeout: Duration

        public init(host: String, port: Int, caFile: String, certificate: String, key: String, clientID: String,
                    topic: String, message: String, requireOCSP: Bool = true, timeout: Duration = .seconds(10)) {
            self.host = host
            self.port = port
            self.caFile = caFile
            self.certificate = certificate
            self.key = key
            self.clientID = clientID
            self.topic = topic
            self.message = message
            self.requireOCSP = requireOCSP
            self.timeout = timeout
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private let options: Options
    private let report: (String) -> Void

    /// `report` receives one line per step, as it happens.
    public init(options: Options, report: @escaping (String) -> Void) {
        self.options = options
        self.report = report
    }

    public func run() throws(Failure) {
        mosquitto_lib_init()
        defer { mosquitto_lib_cleanup() }
        let session = SimulatorSession()
        guard let client = mosquitto_new(options.clientID, true, Unmanaged.passUnretained(session).toOpaque()) else {
            throw Failure(description: "cannot create a libmosquitto client")
        }
        defer { mosquitto_destroy(client) }
        SimulatorSession.install(on: client)

        try check(mosquitto_tls_set(client, options.caFile, nil, options.certificate, options.key, nil), "TLS settings", session)
        try check(mosquitto_int_option(client, MOSQ_OPT_TLS_OCSP_REQUIRED, options.requireOCSP ? 1 : 0), "OCSP option", session)

        // libmosquitto completes the TLS handshake inside its loop, so a refusal (e.g. no valid
        // staple) can surface at connect or while waiting for CONNACK.
        let connectionFailure = { (code: Int32) -> Failure in
            let why = session.errors.isEmpty ? "" : " (\(session.errors.joined(separator: "; ")))"
            return Failure(description: "cannot connect to \(self.options.host):\(self.options.port): \(String(cString: mosquitto_strerror(code)))\(why)"
                + (self.options.requireOCSP ? "; OCSP stapling is required (use --no-ocsp-required to connect without)" : ""))
        }
        let connected = mosquitto_connect(client, options.host, Int32(options.port), 30)
        guard connected == MOSQ_ERR_SUCCESS.rawValue else { throw connectionFailure(connected) }

        let deadline = ContinuousClock.now + options.timeout
        func loop(until done: () -> Bool, _ what: String) throws(Failure) {
            while !done() {
                guard ContinuousClock.now < deadline else { throw Failure(description: "timed out waiting for \(what)") }
                let result = mosquitto_loop(client, 100, 1)
                guard result == MOSQ_ERR_SUCCESS.rawValue else {
                    throw Failure(description: "connection lost while waiting for \(what): \(String(cString: mosquitto_strerror(result)))")
                }
            }
        }
        do { try loop(until: { session.connackCode != nil }, "CONNACK") } catch {
            throw session.connackCode == nil && !session.errors.isEmpty ? connectionFailure(MOSQ_ERR_TLS.rawValue) : error
        }
        describeTLS(client)
        guard session.connackCode == 0 else {
            throw Failure(description: "the broker refused the connection: \(String(cString: mosquitto_connack_string(session.connackCode!)))")
        }
        report("connected as \(options.clientID)")

        try check(mosquitto_subscribe(client, nil, options.topic, 1), "subscribe", session)
        try loop(until: { session.subscribed }, "SUBACK")
        report("subscribed to \(options.topic)")

        try check(mosquitto_publish(client, nil, options.topic, Int32(options.message.utf8.count), options.message, 1, false),
                  "publish", session)
        try loop(until: { session.received.contains(options.message) }, "the message to come back")
        report("published \"\(options.message)\" and received it back")
        mosquitto_disconnect(client)
    }

    private func check(_ result: Int32, _ step: String, _ session: SimulatorSession) throws(Failure) {
        guard result != MOSQ_ERR_SUCCESS.rawValue else { return }
        throw Failure(description: "\(step): \(String(cString: mosquitto_strerror(result)))"
            + (session.errors.isEmpty ? "" : " (\(session.errors.joined(separator: "; ")))"))
    }

    /// Reads the negotiated parameters and the stapled OCSP response from libmosquitto's `SSL`.
    private func describeTLS(_ client: OpaquePointer) {
        guard let raw = mosquitto_ssl_get(client) else { return }
        let ssl = OpaquePointer(raw)
        let cipher = SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "?"
        report("TLS established with \(options.host):\(options.port): \(String(cString: SSL_get_version(ssl))), \(cipher)")
        report(StapleDescription(ssl: ssl).text)
    }
}

/// What the callbacks learn, read by the loop on the same thread.
final class SimulatorSession {
    var connackCode: Int32?
    var subscribed = false
    var received: [String] = []
    var errors: [String] = []

    static func session(_ userdata: UnsafeMutableRawPointer?) -> SimulatorSession {
        Unmanaged<SimulatorSession>.fromOpaque(userdata!).takeUnretainedValue()
    }

    static func install(on client: OpaquePointer) {
        mosquitto_connect_callback_set(client) { _, userdata, code in SimulatorSession.session(userdata).connackCode = code }
        mosquitto_subscribe_callback_set(client) { _, userdata, _, _, _ in SimulatorSession.session(userdata).subscribed = true }
        mosquitto_message_callback_set(client) { _, userdata, message in
            guard let message = message?.pointee, let payload = message.payload else { return }
            let bytes = UnsafeRawBufferPointer(start: payload, count: Int(message.payloadlen))
            SimulatorSession.session(userdata).received.append(String(decoding: bytes, as: UTF8.self))
        }
        // libmosquitto reports OpenSSL's reasons (e.g. the OCSP verdict) only through its log.
        mosquitto_log_callback_set(client) { _, userdata, level, text in
            guard level & Int32(MOSQ_LOG_ERR) != 0, let text else { return }
            SimulatorSession.session(userdata).errors.append(String(cString: text))
        }
    }
}

/// The stapled response a device received, decoded and verified the way the device would.
struct StapleDescription {
    let text: String

    init(ssl: OpaquePointer) {
        var der: UnsafePointer<UInt8>?
        let length = sg_SSL_get_tlsext_status_ocsp_resp(ssl, &der)
        guard length > 0, let der else {
            text = "stapled OCSP response: none"
            return
        }
        let bytes = Array(UnsafeBufferPointer(start: der, count: length))
        guard let chain = SSL_get_peer_cert_chain(ssl), sg_sk_X509_num(chain) >= 2,
              let leafPointer = sg_sk_X509_value(chain, 0), let issuerPointer = sg_sk_X509_value(chain, 1) else {
            text = "stapled OCSP response: \(length) bytes (the server sent no issuer certificate to check it against)"
            return
        }
        let leaf = X509Certificate(borrowing: leafPointer)
        let issuer = X509Certificate(borrowing: issuerPointer)
        do {
            let certID = try CertID(certificate: leaf, issuer: issuer)
            switch OCSPVerificationPolicy(issuer: issuer).verify(der: bytes, for: certID) {
            case let .success(response):
                let format = ISO8601DateFormatter()
                text = "stapled OCSP response: \(response.status) for serial \(leaf.serialHex), thisUpdate \(format.string(from: response.thisUpdate)), "
                    + "nextUpdate \(response.nextUpdate.map { format.string(from: $0) } ?? "none"), responder \(response.responderID)"
            case let .failure(rejection):
                text = "stapled OCSP response: INVALID (\(rejection))"
            }
        } catch {
            text = "stapled OCSP response: cannot be checked (\(error))"
        }
    }
}
