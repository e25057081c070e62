import StapleGateOCSP

/// What the control socket answers. Routes:
/// - `GET /ocsp/cache`: the device-status cache, most recently used first;
/// - `POST /ocsp/recheck?serial=HEX` or `?device=IDENTITY`: forget the cached status, ask the
///   responder again for connected devices, close the sessions now refused.
public struct ControlRoutes: Sendable {
    let checker: DeviceStatusChecker?
    let monitor: SessionRevocationMonitor?

    public init(checker: DeviceStatusChecker?, monitor: SessionRevocationMonitor?) {
        self.checker = checker
        self.monitor = monitor
    }

    public func handle(_ request: ControlRequest) async -> ControlResponse {
        switch (request.method, request.path) {
        case ("GET", "/ocsp/cache"):
            guard let checker else { return .error("device OCSP checks are off", status: 409) }
            return .json(checker.cache.entries().map(\.listing))
        case ("POST", "/ocsp/recheck"):
            guard let monitor else { return .error("device OCSP checks are off", status: 409) }
            if let serial = request.query["serial"], !serial.isEmpty {
                guard serial.allSatisfy(\.isHexDigit) else { return .error("serial must be hexadecimal: \(serial)", status: 400) }
                return .json(await monitor.recheck(serialHex: serial))
            }
            if let device = request.query["device"], !device.isEmpty {
                return .json(await monitor.recheck(identity: device))
            }
            return .error("give serial=HEX or device=IDENTITY", status: 400)
        default:
            return .error("no such route: \(request.method) \(request.path)", status: 404)
        }
    }
}
