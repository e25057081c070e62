import Foundation
import StapleGateTLS

extension TestPKI {
    /// Issues `count` distinct good device certificates from the issuing CA, as
    /// `certs/make-demo-pki.sh` issues its devices (`openssl ca` with the `ext_device` extensions
    /// of the PKI's ca.cnf: clientAuth, the AIA OCSP URL, 365 days), so each is listed valid
    /// ("V") in index.txt and a responder started afterwards answers "good" for it.
    ///
    /// Named `<prefix>-1` … `<prefix>-<count>`: `certificate("<prefix>-7")` is the chain file
    /// (leaf + issuing CA, like the script's devices) and `revoke("<prefix>-7")` works. To be
    /// fast they all share one key, `<prefix>-shared.key`; the CSRs are made in parallel and
    /// signed by one `openssl ca -infiles` run (about 2 s for 300).
    ///
    /// A running `openssl ocsp -multi` responder sees the new entries one request late per
    /// worker: start the responder after issuing. Not for concurrent use on one PKI (the CA
    /// database is a plain file).
    public func issueDevices(count: Int, prefix: String) throws -> [(certificate: String, key: String)] {
        precondition(count > 0, "issue at least one device")
        precondition(!prefix.isEmpty && prefix.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" },
                     "the prefix becomes file names and a CN: letters, digits, - and _ only")
        let work = try directory.subdirectory("bulk-\(prefix)")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let key = path("\(prefix)-shared.key")
        // Relative to the PKI folder, as ca.cnf's own paths are.
        let script = """
            set -euo pipefail
            prefix=$1 count=$2 work=$3 key=$4
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key"
            chmod 0600 "$key"
            mkdir "$work/csr" "$work/out"
            seq 1 "$count" | xargs -P 8 -I{} \
                openssl req -config ca.cnf -new -key "$key" -subj "/CN=$prefix-{}" -out "$work/csr/$prefix-{}.csr"
            openssl ca -config ca.cnf -batch -notext -extensions ext_device -days 365 -outdir "$work/out" \
                -infiles "$work"/csr/*.csr
            """
        let process = try ManagedProcess("bash", ["-c", script, "bash", prefix, "\(count)", work, key],
                                         currentDirectory: folder)
        let status = try process.waitForExitBlocking(timeout: .seconds(120))
        guard status.succeeded else {
            throw ManagedProcess.LaunchError(command: "issuing \(count) devices \(prefix)-*", reason: "failed (\(status))\n\(process.output)")
        }

        // `openssl ca -outdir` names each certificate by its serial: find each device by its CN.
        let issuingCA = try String(contentsOfFile: path("issuing-ca.pem"), encoding: .utf8)
        var files: [String: String] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: "\(work)/out") where file.hasSuffix(".pem") {
            let leafPath = "\(work)/out/\(file)"
            guard let name = try PEMFile.certificateChain(at: leafPath).first?.commonName else { continue }
            let leaf = try String(contentsOfFile: leafPath, encoding: .utf8)
            let chainPath = certificate(name)
            try (leaf + issuingCA).write(toFile: chainPath, atomically: true, encoding: .utf8)
            chmod(chainPath, 0o644)
            files[name] = chainPath
        }
        return try (1...count).map { index in
            let name = "\(prefix)-\(index)"
            guard let chain = files[name] else {
                throw ManagedProcess.LaunchError(command: "issuing \(count) devices \(prefix)-*",
                                                 reason: "no certificate came out for \(name)\n\(process.output)")
            }
            return (certificate: chain, key: key)
        }
    }

    /// Issues one more good device certificate with the subject CN `commonName` into the file
    /// `name` (`certificate(name)`, `key(name)`): a device's renewed certificate, say, which
    /// shares its identity with the first. The demo CA allows repeated subjects. `ocspURL`
    /// replaces the PKI's responder URL in this certificate's AIA (a responder elsewhere, or a
    /// host name that does not resolve); the CA database lists it like any other.
    public func issueDevice(_ name: String, commonName: String, ocspURL: String? = nil) throws {
        precondition(!(ocspURL ?? "").contains("|"), "the URL goes through sed")
        let script = """
            set -euo pipefail
            name=$1 cn=$2 url=$3
            config=ca.cnf
            if [ -n "$url" ]; then
                config="$name.cnf"
                sed "s|^OCSP_URL = .*|OCSP_URL = $url|" ca.cnf >"$config"
            fi
            openssl req -config ca.cnf -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
                -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn"
            openssl ca -config "$config" -batch -notext -extensions ext_device -days 365 -in "$name.csr" -out "$name.crt"
            cat "$name.crt" issuing-ca.pem >"$name.pem"
            rm "$name.csr" "$name.crt"
            [ "$config" = ca.cnf ] || rm "$config"
            chmod 0600 "$name.key"
            """
        let process = try ManagedProcess("bash", ["-c", script, "bash", name, commonName, ocspURL ?? ""],
                                         currentDirectory: folder)
        let status = try process.waitForExitBlocking(timeout: .seconds(60))
        guard status.succeeded else {
            throw ManagedProcess.LaunchError(command: "issuing \(name) (CN=\(commonName))", reason: "failed (\(status))\n\(process.output)")
        }
    }
}
