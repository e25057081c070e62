import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension PostgresServer {
    /// A server certificate for `ssl=on` (e.g. from `TestPKI.issueServerCertificate`, or the
    /// PKI's `server`: CN=localhost, SAN localhost/127.0.0.1/::1), and whether clients must use TLS.
    public struct TLS {
        /// PEM: the leaf, then its issuing CA.
        public var certificate: String
        public var key: String
        /// Only `hostssl` lines in pg_hba.conf: the server itself refuses a client without TLS
        /// ("no pg_hba.conf entry ... no encryption"), as a production server that demands it.
        public var required: Bool

        public init(certificate: String, key: String, required: Bool = false) {
            self.certificate = certificate
            self.key = key
            self.required = required
        }
    }

    /// The copies of the certificate and key in the cluster's directory: PostgreSQL refuses a
    /// key that its user does not own or that others may read.
    var certificateCopy: String { directory.file("server.crt") }
    var keyCopy: String { directory.file("server.key") }

    var tlsArguments: [String] {
        guard tls != nil else { return [] }
        return ["-c", "ssl=on", "-c", "ssl_cert_file=\(certificateCopy)", "-c", "ssl_key_file=\(keyCopy)"]
    }

    /// After initdb: the certificate and key owned by postgres (key 0600), and with `required`
    /// a pg_hba.conf that accepts TCP clients over TLS only (psql and createdb use TLS by
    /// default, sslmode=prefer).
    func installTLS() throws {
        guard let tls else { return }
        for (source, target, mode) in [(tls.certificate, certificateCopy, 0o644), (tls.key, keyCopy, 0o600)] {
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.copyItem(atPath: source, toPath: target)
            try chown(target)
            guard chmod(target, mode_t(mode)) == 0 else { throw POSIXFailure("chmod \(target)", errno) }
        }
        guard tls.required else { return }
        let hba = dataDirectory + "/pg_hba.conf"
        try """
            # Written by the tests: TCP clients must use TLS.
            local all all trust
            hostssl all all 127.0.0.0/8 trust
            hostssl all all ::1/128 trust

            """.write(toFile: hba, atomically: false, encoding: .utf8)
        try chown(hba)
    }
}
