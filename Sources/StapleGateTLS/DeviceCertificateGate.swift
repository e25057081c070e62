import COpenSSL

/// Decides, inside the TLS handshake, whether a device whose certificate chain has verified may
/// finish it. The TLS engine only asks; what is checked (OCSP, in the gateway) lives elsewhere.
/// While an answer is awaited the handshake is paused (OpenSSL's async job) and the event loop
/// serves other connections; a refusal becomes the TLS alert that fits it.
public protocol DeviceCertificateGate: Sendable {
    /// An answer available at once (a cache hit, a disabled check), or nil when `verdict(for:)`
    /// must be awaited. Called on the connection's event loop: must not block.
    func immediateVerdict(for chain: [X509Certificate]) -> DeviceCertificateVerdict?

    /// The answer for `chain` (leaf first, trust anchor last), however long it takes within
    /// reason; the handshake timeout bounds the wait in any case.
    func verdict(for chain: [X509Certificate]) async -> DeviceCertificateVerdict

    /// Whether a session for `certificate` may be resumed from a ticket without a full check.
    /// False makes the device do a full handshake, which `verdict(for:)` then judges: resumption
    /// never bypasses revocation. Called on the event loop: must not block.
    func allowsResumption(of certificate: X509Certificate) -> Bool

    /// `immediateVerdict(for:)` with what it was based on, for the device's trace.
    func immediateJudgement(for chain: [X509Certificate]) -> DeviceCertificateJudgement?

    /// `verdict(for:)` with what it was based on, for the device's trace.
    func judgement(for chain: [X509Certificate]) async -> DeviceCertificateJudgement
}

extension DeviceCertificateGate {
    /// A gate with nothing to show but its verdict.
    public func immediateJudgement(for chain: [X509Certificate]) -> DeviceCertificateJudgement? {
        immediateVerdict(for: chain).map { DeviceCertificateJudgement(verdict: $0) }
    }

    public func judgement(for chain: [X509Certificate]) async -> DeviceCertificateJudgement {
        DeviceCertificateJudgement(verdict: await verdict(for: chain))
    }
}

/// What a gate found besides its verdict (the OCSP answer behind it), handed to the device's
/// trace as the gate holds it: the trace neither looks the answer up again nor reads the
/// verdict's text to learn whether it was cached, and an untraced gateway formats nothing.
public protocol DeviceCheckEvidence: Sendable {
    /// Whether the answer was held before this handshake (a cache hit).
    var fromCache: Bool { get }
    /// The fields a device trace shows ("ocsp.status", "ocsp.responder", …).
    var traceDetails: [String: String] { get }
}

/// A gate's verdict and, when it consulted something, what.
public struct DeviceCertificateJudgement: Sendable {
    public var verdict: DeviceCertificateVerdict
    public var evidence: (any DeviceCheckEvidence)?

    public init(verdict: DeviceCertificateVerdict, evidence: (any DeviceCheckEvidence)? = nil) {
        self.verdict = verdict
        self.evidence = evidence
    }
}

public enum DeviceCertificateVerdict: Sendable, Equatable {
    /// Finish the handshake. `note` says what was found ("OCSP good (cached)"), for the log.
    case accept(note: String)
    /// Fail the handshake; `reason` is for the log ("responder timed out after 5 s").
    case reject(DeviceCertificateRefusal, reason: String)

    public var reason: String {
        switch self {
        case let .accept(note): note
        case let .reject(_, reason): reason
        }
    }
}

/// Why a device was refused, which decides the alert it receives.
public enum DeviceCertificateRefusal: Sendable, Equatable {
    /// certificate_revoked (44): the only alert that tells the device its certificate is revoked.
    case revoked
    /// The responder does not know the certificate.
    case statusUnknown
    /// No verified answer could be had (responder down, timed out, invalid answer).
    case statusUnavailable
    /// The certificate names no responder and none is configured.
    case noResponder

    /// The verification error OpenSSL turns into the alert: 44 for revoked; the others map to
    /// certificate_unknown (46).
    var verifyError: Int32 {
        switch self {
        case .revoked: X509_V_ERR_CERT_REVOKED
        case .statusUnknown: X509_V_ERR_OCSP_CERT_UNKNOWN
        case .statusUnavailable: X509_V_ERR_OCSP_VERIFY_FAILED
        case .noResponder: X509_V_ERR_OCSP_VERIFY_NEEDED
        }
    }
}
