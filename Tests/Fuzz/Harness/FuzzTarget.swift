/// What StapleGate reads from others, each as one libFuzzer target: bytes a device sends before
/// its certificate is judged, what a balancer or a responder sends, what an operator writes.
/// `run` must neither crash nor hang on any input, and checks the invariants each target names
/// (a broken one stops the process, which libFuzzer reports as a crash). `make fuzz` runs them
/// under libFuzzer with AddressSanitizer; `make test` replays every corpus file and every crash
/// reproducer through the same `run` (FuzzCorpusReplayTests).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A device's first packet, judged before the broker is dialled.
    case mqttConnect = "mqtt-connect"
    /// Both directions of a session as message trace frames them (PUBLISH topics, sizes) and the
    /// per-session packet count every session runs.
    case mqttPackets = "mqtt-packets"
    /// The PROXY protocol v1/v2 header a balancer puts before the TLS bytes.
    case proxyHeader = "proxy-header"
    /// An OCSP responder's HTTP answer, as the OCSP client's pipeline collects it.
    case ocspHTTP = "ocsp-http"
    /// An OCSP response body: DER in, verdict out (signature, signer, CertID, nonce, window).
    case ocspVerify = "ocsp-verify"
    /// The configuration file.
    case configYAML = "config-yaml"
    /// A request on the control socket (`staplegate reload`, `ocsp recheck`, `trace`).
    case controlHTTP = "control-http"
    /// A request on the admin listener from someone without the admin token.
    case adminHTTP = "admin-http"

    public func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .mqttConnect: MQTTFuzzing.connect(bytes)
        case .mqttPackets: MQTTFuzzing.packets(bytes)
        case .proxyHeader: ProxyHeaderFuzzing.parse(bytes)
        case .ocspHTTP: OCSPFuzzing.collectHTTP(bytes)
        case .ocspVerify: OCSPFuzzing.verify(bytes)
        case .configYAML: ConfigFuzzing.load(bytes)
        case .controlHTTP: HTTPRequestFuzzing.control(bytes)
        case .adminHTTP: HTTPRequestFuzzing.admin(bytes)
        }
    }

    public func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { run($0) }
    }
}

/// An invariant the code under test broke: stops the process so that libFuzzer (or the replay
/// test) reports the input.
func invariant(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant broken: \(message())") }
}
