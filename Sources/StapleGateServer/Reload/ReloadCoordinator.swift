#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import StapleGateConfig
import StapleGateOCSP
import UnixSignals

/// Reloads on SIGHUP (what `systemctl reload` sends) and on `staplegate reload`: re-reads the
/// configuration file and everything it names (certificates, keys, CA bundles), builds a new
/// generation beside the serving one and hands it over. Nothing changes unless the whole file
/// is good. Sessions already open are untouched: they keep the TLS context they were made with.
public final class ReloadCoordinator: Service, Sendable {
    public struct Participants: Sendable {
        public let gateway: Gateway
        public let builder: GatewayGenerationBuilder
        public let stapling: StaplingRefresher
        public let monitor: SessionRevocationMonitor

        public init(gateway: Gateway, builder: GatewayGenerationBuilder, stapling: StaplingRefresher,
                    monitor: SessionRevocationMonitor) {
            self.gateway = gateway
            self.builder = builder
            self.stapling = stapling
            self.monitor = monitor
        }
    }

    private let configPath: String
    private let participants: Participants
    private let systemd: SystemdNotifier?
    private let logger: Logger
    /// The last reload asked for: each new one starts when it ends, so two never interleave.
    private let latest = NIOLockedValueBox<Task<ReloadOutcome, Never>?>(nil)

    public init(configPath: String, participants: Participants, systemd: SystemdNotifier?, logger: Logger) {
        self.configPath = configPath
        self.participants = participants
        self.systemd = systemd
        self.logger = logger
    }

    public func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in hangups {
                self.logger.notice("SIGHUP: reloading \(self.configPath)")
                _ = await self.reload()
            }
        }
    }

    /// Reloads after any reload already under way, and says how it went.
    public func reload() async -> ReloadOutcome {
        let task = latest.withLockedValue { latest -> Task<ReloadOutcome, Never> in
            let previous = latest
            let next = Task { _ = await previous?.value; return await self.performReload() }
            latest = next
            return next
        }
        return await task.value
    }

    private func performReload() async -> ReloadOutcome {
        systemd?.notify("RELOADING=1\nMONOTONIC_USEC=\(Self.monotonicMicroseconds())\nSTATUS=reloading \(configPath)")
        let outcome = await apply()
        if outcome.applied {
            logger.notice("\(outcome.message)")
            for warning in outcome.warnings { logger.warning("reload: \(warning)") }
        } else {
            logger.error("\(outcome.message)")
        }
        let listening = participants.gateway.localAddress?.displayText ?? "?"
        systemd?.notify("READY=1\nSTATUS=listening for devices on \(listening); last reload: \(outcome.applied ? "applied" : "refused")")
        return outcome
    }

    private func apply() async -> ReloadOutcome {
        let loaded: LoadedConfiguration
        do { loaded = try ConfigLoader.load(path: configPath) } catch { return .refused(error.description) }
        let current = participants.gateway.currentGeneration
        let next: GatewayGeneration
        do { next = try participants.builder.build(loaded) } catch { return .refused("\(error)") }
        var warnings = RestartOnlySettings.changed(from: current.configuration, to: loaded.configuration) + loaded.warnings
        let newCertificates = Set(next.serverCertificateFingerprints).subtracting(current.serverCertificateFingerprints)
        // A reload never cuts sessions: say so where an operator may expect it to.
        let removedCAs = current.deviceCASubjects.filter { next.deviceCASubjects[$0.key] == nil }.values.sorted()
        if !removedCAs.isEmpty {
            warnings.append("device CA certificate(s) removed from tls.device_ca: \(removedCAs.joined(separator: "; ")); sessions of their devices that are open now stay open until they disconnect, and their reconnects are refused")
        }
        if let stapling = next.stapling {
            await stapling.loadPersisted()
            if let unstapled = await waitForStaples(stapling, of: newCertificates, upTo: loaded.configuration.stapling.reloadStapleWait) {
                warnings.append("switched to the new server certificate without an OCSP staple after waiting \(loaded.configuration.stapling.reloadStapleWait) (stapling.reload_staple_wait): \(unstapled)")
            }
        }
        // Under a strict or must policy, a certificate without its staple refuses every device:
        // worse than the configuration serving now, so that one stays.
        if current.refusalReason() == nil, let refusal = next.refusalReason() {
            return .refused("the new configuration would refuse every device (\(refusal)); keeping the current one: reload again once the new certificate's OCSP staple can be fetched")
        }
        participants.gateway.adopt(next)
        participants.stapling.switchTo(next.stapling)
        participants.monitor.use(next.checker)
        let certificates = newCertificates.isEmpty ? "same server certificates" : "\(newCertificates.count) new server certificate(s)"
        return ReloadOutcome(
            applied: true,
            message: "configuration reloaded from \(configPath): \(certificates), \(loaded.tlsMaterial.deviceCAs.count) device CA certificates, session tickets: \(next.resumptionSummary); new connections use it, open sessions are untouched",
            warnings: warnings)
    }

    /// Primes `stapling` until every certificate in `fingerprints` holds a staple or `wait` is
    /// over. nil when they all hold one; otherwise why not, for the warning. A fetch under way
    /// when the wait ends is let finish, so the worst case is the wait plus `stapling.timeout`.
    private func waitForStaples(_ stapling: StaplingService, of fingerprints: Set<String>, upTo wait: Duration) async -> String? {
        let deadline = ContinuousClock.now + wait
        await stapling.prime()
        while !stapling.fingerprintsWithoutStaple().isDisjoint(with: fingerprints) {
            guard ContinuousClock.now < deadline else {
                let missing = stapling.statuses().filter { fingerprints.contains($0.fingerprint) && !$0.serving }
                return missing.map { "\($0.subject): \($0.lastResult ?? "no answer yet")" }.joined(separator: "; ")
            }
            do { try await Task.sleep(for: min(.seconds(1), deadline - ContinuousClock.now)) } catch { return "cancelled" }
            await stapling.prime()
        }
        return nil
    }

    private static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}
