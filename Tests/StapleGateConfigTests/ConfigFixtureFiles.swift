import Foundation

/// Real certificate and key files, made with the openssl CLI the way operators make theirs, in
/// a temporary folder that also holds the config files under test.
final class ConfigFixtureFiles {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("staplegate-config-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do { try generate() } catch { remove(); throw error }
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    func write(_ name: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path(name)))
    }

    func concatenate(_ names: [String], into name: String) throws {
        let joined = try names.map { try String(contentsOfFile: path($0), encoding: .utf8) }.joined()
        try write(name, joined)
    }

    private func generate() throws {
        // The device CA; it also issues the server certificates, which is enough for loading.
        try openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "ca.key", "-out", "ca.pem", "-days", "365", "-subj", "/CN=Test Device CA")
        try write("leaf.ext", "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:9/\n")
        try leaf("server", key: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], days: 365, serial: 2)
        try leaf("server2", key: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], days: 365, serial: 3)
        try leaf("rsa", key: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], days: 365, serial: 4)
        try leaf("expiring", key: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], days: 5, serial: 5)
        // Parses and matches, but is below OpenSSL's default security level.
        try leaf("weak-rsa", key: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"], days: 365, serial: 6)

        try openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key")
        try openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:x", "-out", "encrypted.key")
        try openssl("genpkey", "-algorithm", "ed25519", "-out", "ed25519.key")
        try openssl("req", "-x509", "-key", "ed25519.key", "-subj", "/CN=Ed25519 Server", "-days", "30", "-out", "ed25519.pem")

        // A second CA, not in the device CA bundle (ca.pem) unless a test configures two-cas.pem.
        try openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "365", "-subj", "/CN=Other Device CA")

        try concatenate(["ca.pem", "server-leaf.pem"], into: "ca-with-leaf.pem")
        try concatenate(["ca.pem", "other-ca.pem"], into: "two-cas.pem")
        try write("garbage.pem", "-----BEGIN CERTIFICATE-----\nthis is not base64 at all!\n-----END CERTIFICATE-----\n")
        try write("notes.txt", "just some text, no PEM in here\n")
        try write("empty.pem", "")
        try FileManager.default.createDirectory(atPath: path("a-directory"), withIntermediateDirectories: true)
    }

    /// `<name>.key`, `<name>-leaf.pem` (the certificate alone) and `<name>.pem` (leaf + CA).
    private func leaf(_ name: String, key: [String], days: Int, serial: Int) throws {
        try openssl(["genpkey"] + key + ["-out", "\(name).key"])
        try openssl("req", "-new", "-key", "\(name).key", "-subj", "/CN=localhost \(name)", "-out", "\(name).csr")
        try openssl("x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-set_serial", String(serial), "-days", String(days), "-extfile", "leaf.ext", "-out", "\(name)-leaf.pem")
        try concatenate(["\(name)-leaf.pem", "ca.pem"], into: "\(name).pem")
    }

    private func openssl(_ arguments: String...) throws { try openssl(arguments) }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = directory
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "openssl", code: Int(process.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "openssl \(arguments.joined(separator: " ")) failed: \(text)"])
        }
    }
}
