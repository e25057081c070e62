/// What the TLS handler tells the handlers after it, as user inbound events.
public enum TLSEvent: Sendable {
    case handshakeCompleted(TLSHandshakeSummary)
    /// The handler has already logged the reason and is closing the connection.
    case handshakeFailed(reason: String)
    /// The `DeviceCertificateGate` judged the device's verified certificate; fired before the
    /// handshake completes or fails with that verdict, so traces know who was refused and why.
    /// `evidence`: what the gate based it on, when it consulted something.
    case deviceCertificateJudged(certificate: X509Certificate, verdict: DeviceCertificateVerdict,
                                 evidence: (any DeviceCheckEvidence)? = nil)
}

public struct TLSHandshakeSummary: Sendable {
    /// "TLSv1.3" or "TLSv1.2".
    public let protocolVersion: String
    public let cipher: String
    public let resumed: Bool
    public let duration: Duration
    /// The verified device certificate (always present: a client certificate is required).
    public let deviceCertificate: X509Certificate?
    /// What the `DeviceCertificateGate` found ("OCSP good (cached)"), when one judged the device.
    public let certificateCheck: String?

    /// The name logs and traces use for the device until a richer identity is known.
    public var deviceIdentity: String {
        guard let certificate = deviceCertificate else { return "-" }
        return certificate.commonName ?? certificate.subject
    }
}
