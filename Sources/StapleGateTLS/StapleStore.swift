import COpenSSL
import CStapleGateShim
import Foundation
import NIOConcurrencyHelpers

/// The OCSP responses to staple, one slot per configured server certificate (ECDSA and RSA each
/// get their own). The stapling service swaps a slot's bytes when a newly verified response
/// arrives; handshakes only read them. Nothing is re-encoded per handshake: OpenSSL is handed a
/// copy of the stored DER because it frees whatever it is given.
public final class StapleStore: Sendable {
    private struct Staple {
        let der: [UInt8]
        /// The response's nextUpdate: from then on it is not stapled.
        let validUntil: Date?
    }

    private let slots: [NIOLockedValueBox<Staple?>]

    init(certificateCount: Int) {
        slots = (0..<certificateCount).map { _ in NIOLockedValueBox(nil) }
    }

    /// Installs (or, with nil, withdraws) the staple for the certificate at `index` in
    /// `TLSServerConfiguration.certificates`, stapled until `validUntil` (its nextUpdate).
    /// Takes effect from the next handshake.
    public func setStaple(_ der: [UInt8]?, validUntil: Date? = nil, forCertificateAt index: Int) {
        slots[index].withLockedValue { $0 = der.map { Staple(der: $0, validUntil: validUntil) } }
    }

    /// The staple for a handshake at `now`. The stapling service withdraws a staple at its
    /// nextUpdate, but on a timer, which runs on the monotonic clock: when the wall clock is
    /// stepped past nextUpdate (NTP, a VM resumed) the timer has not fired yet. Checked here
    /// too, against the wall clock of each handshake, so an expired response is never stapled.
    public func staple(forCertificateAt index: Int, now: Date = Date()) -> [UInt8]? {
        slots[index].withLockedValue { staple in
            guard let staple else { return nil }
            if let validUntil = staple.validUntil, validUntil <= now { return nil }
            return staple.der
        }
    }
}

extension ServerContext {
    /// OpenSSL calls this during handshakes whose ClientHello carried status_request, after it
    /// has chosen which of our certificates to present.
    static let statusCallback: sg_status_callback = { ssl, argument in
        guard let ssl, let argument else { return SSL_TLSEXT_ERR_NOACK }
        let context = Unmanaged<ServerContext>.fromOpaque(argument).takeUnretainedValue()
        return context.attachStaple(to: ssl)
    }

    func installStatusCallback() {
        _ = sg_SSL_CTX_set_tlsext_status_cb(context, Self.statusCallback)
        // Unretained: the SSL_CTX holding this pointer is owned (and freed) by this very object.
        _ = sg_SSL_CTX_set_tlsext_status_arg(context, Unmanaged.passUnretained(self).toOpaque())
    }

    private func attachStaple(to ssl: OpaquePointer) -> Int32 {
        guard let presented = SSL_get_certificate(ssl),
              let index = material.identities.firstIndex(where: { $0.leaf.pointer == presented }),
              let der = staples.staple(forCertificateAt: index) else {
            return SSL_TLSEXT_ERR_NOACK
        }
        let attached = der.withUnsafeBufferPointer { sg_SSL_staple_copy(ssl, $0.baseAddress, $0.count) }
        return attached == 1 ? SSL_TLSEXT_ERR_OK : SSL_TLSEXT_ERR_NOACK
    }
}
