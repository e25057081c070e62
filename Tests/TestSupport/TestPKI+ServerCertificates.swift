import Foundation
import StapleGateTLS
#if canImport(Glibc)
import Glibc
#endif

extension TestPKI {
    /// Issues another server certificate as `certs/make-demo-pki.sh` issues `server`: a new
    /// ECDSA P-256 key, CN=localhost with the `ext_server` extensions of the PKI's ca.cnf (SAN
    /// localhost/127.0.0.1/::1, the AIA OCSP URL, 730 days) through `openssl ca`, so it gets a
    /// serial of its own and index.txt lists it valid ("V"). Written as `<name>.pem` (leaf +
    /// issuing CA, like `server.pem`) and `<name>.key` (0600) in the PKI folder.
    ///
    /// A running `openssl ocsp -multi` responder sees the new entry one request late per worker:
    /// issue before starting the responder. Not for concurrent use on one PKI.
    @discardableResult
    public func issueServerCertificate(_ name: String) throws -> (certificate: String, key: String) {
        precondition(!name.isEmpty && name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" },
                     "the name becomes file names: letters, digits, - and _ only")
        let work = try directory.subdirectory("server-\(name)")
        defer { try? FileManager.default.removeItem(atPath: work) }
        // Relative to the PKI folder, as ca.cnf's own paths are.
        let script = """
            set -euo pipefail
            name=$1 work=$2
            openssl req -config ca.cnf -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
                -keyout "$name.key" -out "$work/$name.csr" -subj "/CN=localhost"
            openssl ca -config ca.cnf -batch -notext -extensions ext_server -days 730 \
                -in "$work/$name.csr" -out "$work/$name.crt"
            cat "$work/$name.crt" issuing-ca.pem >"$name.pem"
            chmod 0600 "$name.key"
            chmod 0644 "$name.pem"
            """
        let process = try ManagedProcess("bash", ["-c", script, "bash", name, work], currentDirectory: folder)
        let status = try process.waitForExitBlocking(timeout: .seconds(60))
        guard status.succeeded else {
            throw ManagedProcess.LaunchError(command: "issuing server certificate \(name)", reason: "failed (\(status))\n\(process.output)")
        }
        return (certificate(name), key(name))
    }

    /// The serial number (upper-case hex, as `openssl x509 -serial` and `openssl ocsp -text`
    /// print it) of the first certificate in the PEM file at `path`.
    public static func serialHex(ofCertificateAt path: String) throws -> String {
        guard let leaf = try PEMFile.certificateChain(at: path).first else {
            throw ManagedProcess.LaunchError(command: "reading \(path)", reason: "no certificate in it")
        }
        return leaf.serialHex
    }

    /// Replaces the certificate `name` (`<name>.pem` and `<name>.key` in the PKI folder) with
    /// the files of `source` — in place, as an operator (or certbot) renews a certificate: each
    /// file is written beside its target and renamed over it, so a reader never sees half a file.
    public func replaceCertificate(_ name: String, with source: (certificate: String, key: String)) throws {
        try Self.replaceFile(at: certificate(name), withContentsOf: source.certificate, mode: 0o644)
        try Self.replaceFile(at: key(name), withContentsOf: source.key, mode: 0o600)
    }

    static func replaceFile(at target: String, withContentsOf source: String, mode: mode_t) throws {
        let staged = "\(target).new-\(getpid())"
        try Data(contentsOf: URL(fileURLWithPath: source)).write(to: URL(fileURLWithPath: staged))
        chmod(staged, mode)
        guard rename(staged, target) == 0 else { throw POSIXFailure("rename \(staged) \(target)", errno) }
    }
}
