import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import StapleGateOCSP

/// Carries what the other gateways of the fleet learn to this gateway's sessions: an answer
/// that refuses a device (got in a handshake, a background recheck or an operator's recheck on
/// any gateway) closes that device's sessions here too, within the time a notification takes;
/// and an operator's recheck elsewhere gets a reply saying what was closed here.
public final class FleetRevocationRelay: Service, Sendable {
    private let fleet: any DeviceStatusFleet
    private let monitor: SessionRevocationMonitor
    private let logger: Logger
    /// Sessions closed lately per certificate: the refusal itself usually arrives just before
    /// the operator's close request, and the reply must count what the refusal closed.
    private let recentlyClosed = NIOLockedValueBox<[CertID: (at: ContinuousClock.Instant, addresses: [String])]>([:])
    static let rememberClosed: Duration = .seconds(30)

    public init(fleet: any DeviceStatusFleet, monitor: SessionRevocationMonitor, logger: Logger) {
        self.fleet = fleet
        self.monitor = monitor
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            for await announcement in self.fleet.announcements() {
                await self.apply(announcement)
            }
        }
    }

    func apply(_ announcement: FleetAnnouncement) async {
        let certID = announcement.certID
        let closed = await monitor.applyFleetAnswer(for: certID)
        let now = ContinuousClock.now
        let all = recentlyClosed.withLockedValue { recent -> [String] in
            recent = recent.filter { now - $0.value.at < Self.rememberClosed }
            let addresses = (recent[certID]?.addresses ?? []) + closed
            if !closed.isEmpty { recent[certID] = (now, addresses) }
            return addresses
        }
        if !closed.isEmpty {
            logger.notice("closed \(closed.count) session(s) refused by an answer from \(announcement.origin)", metadata: [
                "serial": "\(certID.serialHex)",
            ])
        }
        if case let .closeRequest(request) = announcement.kind {
            await fleet.reply(to: request, FleetSessionsClosed(instance: fleet.instance, serial: certID.serialHex,
                                                               closed: all.count, addresses: all))
        }
    }
}
