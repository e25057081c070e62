import Foundation
import StapleGateOCSP
import StapleGateTrace

/// What the control socket answers. Routes:
/// - `GET /ocsp/cache`: the device-status cache, most recently used first;
/// - `POST /ocsp/recheck?serial=HEX` or `?device=IDENTITY`: ask the responder again now about
///   every certificate known for it (cached or connected), cache the answers, close the
///   sessions now refused; answers a `RecheckReport`;
/// - `POST /reload`: re-read the configuration (as SIGHUP does) and answer how it went;
/// - `POST /trace/enable?device=ID&seconds=N`, `POST /trace/disable?device=ID`: message trace;
/// - `GET /ping`: answers while the gateway runs.
public struct ControlRoutes: Sendable {
    let monitor: SessionRevocationMonitor
    let traceStore: (any TraceStore)?
    let maximumMessageTrace: Duration
    /// `POST /reload`: what `staplegate reload` asks for.
    let reload: (@Sendable () async -> ReloadOutcome)?

    public init(monitor: SessionRevocationMonitor, traceStore: (any TraceStore)? = nil,
                maximumMessageTrace: Duration = .seconds(24 * 3600),
                reload: (@Sendable () async -> ReloadOutcome)? = nil) {
        self.monitor = monitor
        self.reload = reload
        self.traceStore = traceStore
        self.maximumMessageTrace = maximumMessageTrace
    }

    public struct MessageTraceState: Codable, Sendable {
        public let device: String
        public let until: Date?
    }

    public func handle(_ request: ControlRequest) async -> ControlResponse {
        switch (request.method, request.path) {
        case ("GET", "/ping"):
            // Whether the gateway runs at all: commands that read state files say when it does not.
            return .json(["running": true])
        case ("POST", "/reload"):
            guard let reload else { return .error("this gateway cannot reload", status: 409) }
            let outcome = await reload()
            return .json(outcome, status: outcome.applied ? 200 : 422)
        case ("GET", "/ocsp/cache"):
            guard let checker = monitor.checker else { return .error("device OCSP checks are off", status: 409) }
            return .json(checker.cache.entries().map(\.listing))
        case ("POST", "/ocsp/recheck"):
            guard monitor.checker != nil else { return .error("device OCSP checks are off", status: 409) }
            let selector: CertificateSelector
            if let serial = request.query["serial"], !serial.isEmpty {
                guard let parsed = CertificateSelector.serial(parsing: serial) else {
                    return .error(CertificateSelector.serialProblem(serial) ?? "bad serial", status: 400)
                }
                selector = parsed
            } else if let device = request.query["device"], !device.isEmpty {
                selector = .identity(device)
            } else {
                return .error("give serial=HEX or device=IDENTITY", status: 400)
            }
            return .json(await monitor.recheck(selector))
        case ("POST", "/trace/enable"), ("POST", "/trace/disable"):
            guard let traceStore else { return .error("tracing is off (trace.enabled: false, or the store could not be opened)", status: 409) }
            guard let device = request.query["device"], !device.isEmpty else { return .error("give device=IDENTITY", status: 400) }
            if request.path == "/trace/disable" {
                traceStore.disableMessageTrace(device: device)
                return .json(MessageTraceState(device: device, until: nil))
            }
            guard let seconds = request.query["seconds"].flatMap(Double.init), seconds > 0 else {
                return .error("give seconds=N (how long to trace, more than 0)", status: 400)
            }
            guard seconds <= maximumMessageTrace.timeInterval else {
                return .error("at most \(Int(maximumMessageTrace.timeInterval)) s (trace.max_message_trace)", status: 400)
            }
            let until = Date().addingTimeInterval(seconds)
            traceStore.enableMessageTrace(device: device, until: until)
            return .json(MessageTraceState(device: device, until: until))
        default:
            return .error("no such route: \(request.method) \(request.path)", status: 404)
        }
    }
}
