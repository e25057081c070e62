import CoreMetrics
import Foundation
import StapleGateTLS
import StapleGateTrace

/// Puts each recheck answer where operators look afterwards: the device's trace (an
/// `ocsp_recheck` event) and the metrics:
/// - `staplegate_ocsp_rechecks_total{trigger, answer}`: `trigger` is `operator` (`staplegate
///   ocsp recheck`), `expiry` (a connected device's cached status ran out) or `fleet` (another
///   gateway's answer refused a device connected here), `answer` one of
///   `CertificateRecheck.Answer`;
/// - `staplegate_ocsp_recheck_sessions_closed_total{trigger}`: sessions closed by an answer.
struct RecheckRecorder: Sendable {
    enum Trigger: String, Sendable, CaseIterable {
        case `operator`
        case expiry
        /// Another gateway of the fleet got an answer that refuses the certificate.
        case fleet

        /// The `why` the log gives for a session closed by this trigger.
        var logReason: String {
            switch self {
            case .operator: "recheck requested"
            case .expiry: "cached status expired"
            case .fleet: "another gateway of the fleet got an answer refusing it"
            }
        }

        /// How the trace event's summary starts.
        var traceText: String {
            switch self {
            case .operator: "operator's recheck"
            case .expiry: "recheck (cached status expired)"
            case .fleet: "answer from another gateway of the fleet"
            }
        }
    }

    private let traceStore: (any TraceStore)?
    /// Every (trigger, answer) series made up front, at 0, so alerts see them before the first.
    private let rechecks: [String: Counter]
    private let sessionsClosed: [Trigger: Counter]

    init(traceStore: (any TraceStore)?, factory: any MetricsFactory) {
        self.traceStore = traceStore
        var rechecks: [String: Counter] = [:]
        for trigger in Trigger.allCases {
            for answer in CertificateRecheck.Answer.allCases {
                rechecks["\(trigger.rawValue) \(answer.rawValue)"] = Counter(
                    label: "staplegate_ocsp_rechecks_total",
                    dimensions: [("trigger", trigger.rawValue), ("answer", answer.rawValue)], factory: factory)
            }
        }
        self.rechecks = rechecks
        sessionsClosed = Dictionary(uniqueKeysWithValues: Trigger.allCases.map { trigger in
            (trigger, Counter(label: "staplegate_ocsp_recheck_sessions_closed_total",
                              dimensions: [("trigger", trigger.rawValue)], factory: factory))
        })
    }

    func record(_ result: CertificateRecheck, trigger: Trigger) {
        rechecks["\(trigger.rawValue) \(result.answer.rawValue)"]?.increment()
        if result.sessionsClosed > 0 { sessionsClosed[trigger]?.increment(by: result.sessionsClosed) }
        traceStore?.record(TraceEvent(
            kind: .ocspRecheck, device: result.device, serial: result.serial, connectionID: 0, remoteAddress: "",
            isFailure: result.refused || result.answer == .unavailable || result.answer == .issuerUnknown,
            summary: "\(trigger.traceText): \(result.summary)",
            details: Self.details(result, trigger: trigger)))
    }

    private static func details(_ result: CertificateRecheck, trigger: Trigger) -> [String: String] {
        var details = ["recheck.trigger": trigger.rawValue, "ocsp.status": result.answer.rawValue,
                       "verdict": result.verdict, "refused": "\(result.refused)",
                       "sessions_closed": "\(result.sessionsClosed)", "sessions_kept": "\(result.sessionsKept)"]
        if let responder = result.responder { details["ocsp.responder"] = responder }
        if let revokedAt = result.revokedAt { details["ocsp.revoked_at"] = revokedAt.iso8601String }
        if let reason = result.revocationReason { details["ocsp.revocation_reason"] = reason }
        if let failure = result.failure { details["ocsp.failure"] = failure }
        if let cachedUntil = result.cachedUntil { details["ocsp.cached_until"] = cachedUntil.iso8601String }
        return details
    }
}
