import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The operator's side of a soak run, on the plan's schedule: reloads (SIGHUP), responder
/// restarts, and revocations done the way the README says: revoke at the CA, and once the
/// responder says so, `staplegate ocsp recheck --device NAME` so the gateway knows at once.
struct SoakOperator {
    let plan: SoakPlan
    let pki: TestPKI
    let responder: OCSPResponder
    let gateway: StapleGateProcess
    let recorder: SoakRecorder

    struct Log {
        var reloads = 0
        /// A step that did not do what it should (named, with what happened).
        var problems: [String] = []
    }

    private enum Step {
        case reload
        case restartResponder
        case revoke(String)
    }

    func run() async throws -> Log {
        var steps: [(at: Double, step: Step)] = plan.reloads.map { ($0, .reload) }
            + plan.responderRestarts.map { ($0, .restartResponder) }
        steps += zip(plan.revocations, plan.revokedNames).map { ($0, .revoke($1)) }
        steps.sort { $0.at < $1.at }
        var log = Log()
        for (at, step) in steps {
            try await sleep(until: at)
            recorder.progress("\(step); \(recorder.openSessions) sessions open")
            switch step {
            case .reload:
                gateway.process.signal(SIGHUP)
                log.reloads += 1
            case .restartResponder:
                // Down from the moment it is told to stop: it refuses while it goes.
                let down = recorder.now
                await responder.stop()
                try await sleep(until: down + plan.responderDownSeconds)
                do {
                    try await responder.start()
                } catch {
                    log.problems.append("responder restart at \(Int(down)) s: \(error)")
                }
                let up = recorder.now
                recorder.update { $0.responderDown.append(down...up) }
                recorder.progress("responder up again")
            case let .revoke(name):
                if let problem = try await revoke(name) {
                    recorder.progress(problem)
                    log.problems.append(problem)
                }
            }
        }
        try await sleep(until: plan.seconds)
        return log
    }

    /// Nil when the gateway was told; otherwise what went wrong.
    private func revoke(_ name: String) async throws -> String? {
        let at = recorder.now
        recorder.update { $0.revokedAtCA[name] = at }
        try await pki.revoke(name, reason: "keyCompromise")
        // Each `-multi` worker serves one stale answer after the index changes: three in a row.
        var answers: [String] = []
        do {
            try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(50), "the responder to answer revoked for \(name)",
                                details: { answers.suffix(5).joined(separator: ", ") }) {
                answers.append(try await responderStatus(of: name))
                return answers.suffix(3) == ["revoked", "revoked", "revoked"]
            }
        } catch {
            return "revoking \(name): \(error)"
        }
        let recheck = try await gateway.command(["ocsp", "recheck", "--device", name], timeout: .seconds(30))
        // Exit 3: revoked, cache and sessions updated. Exit 4: the gateway never saw the device
        // (it connects for the first time later in the ramp), so its first lookup asks the
        // responder, which already says revoked.
        guard recheck.status == .exited(3) || recheck.status == .exited(4) else {
            return "ocsp recheck --device \(name): \(recheck)"
        }
        let visible = recorder.now
        recorder.update { $0.revocationVisible[name] = visible }
        return nil
    }

    private func responderStatus(of name: String) async throws -> String {
        try await OCSPResponder.status(of: name, in: pki, port: responder.port)
    }

    /// Sleeps until `seconds` from the run's start (a schedule, not a wait for a condition).
    private func sleep(until seconds: Double) async throws {
        let left = seconds - recorder.now
        if left > 0 { try await Task.sleep(for: .milliseconds(Int(left * 1000))) }
    }
}
