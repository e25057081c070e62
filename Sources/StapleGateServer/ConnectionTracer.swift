import Foundation
import NIOCore
import StapleGateTrace

/// Writes one connection's trace events, stamped with who the device is once that is known.
/// Shared by the handlers of one channel, so used on its event loop only.
final class ConnectionTracer {
    private let store: (any TraceStore)?
    let connectionID: UInt64
    let remoteAddress: String
    /// Set once the device's certificate has been seen (see `identify`).
    private(set) var device: String?
    var serial: String?
    /// When the TCP connection was accepted: recorded once the device is known, so that it
    /// opens the device's timeline; connections that never identify themselves (port scans,
    /// health checks) leave no trace but their failures.
    private let acceptedAt = Date()

    init(store: (any TraceStore)?, connectionID: UInt64, remoteAddress: String) {
        self.store = store
        self.connectionID = connectionID
        self.remoteAddress = remoteAddress
    }

    /// Names the device from here on; the first time, records when its connection was accepted.
    func identify(device: String, serial: String) {
        self.serial = serial
        guard self.device == nil else { return }
        self.device = device
        store?.record(TraceEvent(time: acceptedAt, kind: .accepted, device: device, serial: serial, connectionID: connectionID,
                                 remoteAddress: remoteAddress, summary: "connection accepted from \(remoteAddress)"))
    }

    func record(_ kind: TraceEvent.Kind, _ summary: String, failure: Bool = false, details: [String: String] = [:]) {
        guard let store else { return }
        store.record(TraceEvent(kind: kind, device: device, serial: serial, connectionID: connectionID,
                                remoteAddress: remoteAddress, isFailure: failure, summary: summary, details: details))
    }
}
