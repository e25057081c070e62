import COpenSSL
import CStapleGateShim
import NIOConcurrencyHelpers

/// The OCSP responses to staple, one slot per configured server certificate (ECDSA and RSA each
/// get their own). The stapling service swaps a slot's bytes when a newly verified response
/// arrives; handshakes only read them. Nothing is re-encoded per handshake: OpenSSL is handed a
/// copy of the stored DER because it frees whatever it is given.
public final class StapleStore: Sendable {
    private let slots: [NIOLockedValueBox<[UInt8]?>]

    init(certificateCount: Int) {
        slots = (0..<certificateCount).map { _ in NIOLockedValueBox(nil) }
    }

    /// Installs (or, with nil, withdraws) the staple for the certificate at `index` in
    /// `TLSServerConfiguration.certificates`. Takes effect from the next handshake.
    public func setStaple(_ der: [UInt8]?, forCertificateAt index: Int) {
        slots[index].withLockedValue { $0 = der }
    }

    public func staple(forCertificateAt index: Int) -> [UInt8]? {
        slots[index].withLockedValue { $0 }
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
