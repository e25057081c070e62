import COpenSSL
import Foundation
import StapleGateOCSP
import StapleGateTLS

/// The PKI the `ocsp-verify` seeds were made with (`certs/make-demo-pki.sh`, then `openssl ocsp`
/// answering for device-1: good, revoked, unknown, signed by the CA or a delegated signer, with
/// and without nextUpdate or a nonce). Certificates only: no key is needed to verify, and none
/// is kept. The seeds' validity windows start at `seedTime` minus an hour and run ten years.
enum FuzzPKI {
    static let issuingCA = """
        -----BEGIN CERTIFICATE-----
        MIIBozCCAUmgAwIBAgIIUhu6TImt/SowCgYIKoZIzj0EAwIwIjEgMB4GA1UEAwwX
        U3RhcGxlR2F0ZSBEZW1vIFJvb3QgQ0EwHhcNMjYxMjA3MjIwNTMyWhcNMzExMjA2
        MjIwNTMyWjAlMSMwIQYDVQQDDBpTdGFwbGVHYXRlIERlbW8gSXNzdWluZyBDQTBZ
        MBMGByqGSM49AgEGCCqGSM49AwEHA0IABI3Xz1yhRAnyEDNdAhUHLNi3UoIgsALm
        ZaW54KSxJWBjgXzNLvByUyEScvJ2TimGgZcHG/xmteOnoAmApH87zhmjZjBkMBIG
        A1UdEwEB/wQIMAYBAf8CAQAwDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSsjwCz
        5ZCEFFJwePDrlGSBxCrcbDAfBgNVHSMEGDAWgBTmtDooyAQFbw9dxqpqrjx0SF24
        PzAKBggqhkjOPQQDAgNIADBFAiEAhv7O6uDyN2TPlhUAddwDFqPYcIj1PfJQ7T2W
        GSD8p38CIGIEkQYPkaPvKsPE3HC+E0ecdSYxttOyNdWr38qjdUGv
        -----END CERTIFICATE-----
        """

    static let device = """
        -----BEGIN CERTIFICATE-----
        MIIB2jCCAX+gAwIBAgIIdI2dxo094YYwCgYIKoZIzj0EAwIwJTEjMCEGA1UEAwwa
        U3RhcGxlR2F0ZSBEZW1vIElzc3VpbmcgQ0EwHhcNMjYxMjA3MjIwNTMyWhcNMjcx
        MjA3MjIwNTMyWjATMREwDwYDVQQDDAhkZXZpY2UtMTBZMBMGByqGSM49AgEGCCqG
        SM49AwEHA0IABFmCsk4MYVEGUzkDQixlE6UvDrosydaNyV4zEXKmduqJuYny0g3c
        687WSQgFYgp0XH2CN076RQXT4cQeTaI59LGjgaowgacwDAYDVR0TAQH/BAIwADAO
        BgNVHQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwIwMgYIKwYBBQUHAQEE
        JjAkMCIGCCsGAQUFBzABhhZodHRwOi8vMTI3LjAuMC4xOjE4OTk5MB0GA1UdDgQW
        BBSGJruEXd8cLgQywV7kUKfqSyNBpzAfBgNVHSMEGDAWgBSsjwCz5ZCEFFJwePDr
        lGSBxCrcbDAKBggqhkjOPQQDAgNJADBGAiEA6tpHIRqPuniZ0cAIUnKuGdmzx9aC
        OkjYbp5nIzA0nR4CIQD41T7J4HNpTgA+C0KudQhkcefwX4C3MrVOfD9tB9j1/Q==
        -----END CERTIFICATE-----
        """

    /// An hour after the seeds were made (2026-12-07T22:05:44Z).
    static let seedTime = Date(timeIntervalSince1970: 1_796_684_744)
    /// The nonce of the seed request that asked for one (`good-with-nonce.der` echoes it).
    static let seedNonce: [UInt8] = [0x66, 0xD0, 0xB9, 0xDD, 0x33, 0xB1, 0x1C, 0x77, 0x07, 0xD0, 0x4A, 0x0B, 0xDE, 0x82, 0xDF, 0xC6]

    static let issuer = certificate(issuingCA)
    static let deviceCertID: CertID = {
        do { return try CertID(certificate: certificate(device), issuer: issuer) } catch { fatalError("seed CertID: \(error)") }
    }()
    static let policy = OCSPVerificationPolicy(issuer: issuer)

    private static func certificate(_ pem: String) -> X509Certificate {
        let bytes = Array(pem.utf8)
        let parsed = bytes.withUnsafeBytes { raw -> OpaquePointer? in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_X509(bio, nil, nil, nil)
        }
        guard let parsed else { fatalError("a seed certificate does not parse") }
        return X509Certificate(taking: parsed)
    }
}
