import Foundation
import StapleGateOCSP
import StapleGateTLS

/// Loads the files the `tls` section names and builds the `SSL_CTX`, pinning each failure to
/// the key that named the file or setting (and its line), since the TLS layer knows neither.
struct TLSFileChecks {
    let file: String
    /// Line of every key in the config file by dotted path (see `YAMLValue.keyLines`).
    let keyLines: [String: Int]

    func material(for tls: TLSServerConfiguration) throws(ConfigError) -> TLSMaterial {
        do {
            return try TLSMaterial.load(tls)
        } catch {
            let (key, reason) = Self.describe(error, tls)
            throw ConfigError(file: file, key: key, line: keyLines[key], reason: reason)
        }
    }

    /// Private key files open to more than their owner and group readers (SecretFile's rule):
    /// refused, or with `tls.open_key_files: warn` returned as warnings. After the keys loaded: a
    /// path to a folder or to something that is no key is the first thing to say.
    func keyFilePermissions(for tls: TLSServerConfiguration) throws(ConfigError) -> [String] {
        var warnings: [String] = []
        for (index, pair) in tls.certificates.enumerated() {
            var status = stat()
            // A missing or unreadable file: loading it names what is wrong.
            guard stat(pair.keyPath, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            let mode = status.st_mode & 0o7777
            guard mode & SecretFile.forbiddenModeBits != 0 else { continue }
            let key = "tls.certificates[\(index)].key"
            let problem = "\(pair.keyPath): mode \(String(mode, radix: 8)) opens the private key to other users; chmod 600 (or 640 with the gateway's group)"
            switch tls.openKeyFiles {
            case .refuse:
                throw ConfigError(file: file, key: key, line: keyLines[key],
                                  reason: problem + ", or set tls.open_key_files: warn to use it as it is")
            case .warn:
                warnings.append("\(key): \(problem) (used anyway: tls.open_key_files: warn)")
            }
        }
        return warnings
    }

    /// The keys `tls.session_ticket_keys` names, or nil when it is not set.
    func sessionTicketKeys(for tls: TLSServerConfiguration) throws(ConfigError) -> SessionTicketKeyRing? {
        guard let path = tls.sessionTicketKeysPath else { return nil }
        do {
            return try SessionTicketKeyFile.load(at: path)
        } catch {
            let key = "tls.session_ticket_keys"
            throw ConfigError(file: file, key: key, line: keyLines[key], reason: error.description)
        }
    }

    func serverContext(for tls: TLSServerConfiguration, material: TLSMaterial,
                       ticketKeys: SessionTicketKeyRing?) throws(ConfigError) -> ServerContext {
        do {
            return try ServerContext(configuration: tls, material: material, resumption: ticketKeys)
        } catch {
            let key = Self.key(for: error.setting)
            throw ConfigError(file: file, key: key, line: keyLines[key], reason: error.description)
        }
    }

    func staplingTargets(for context: ServerContext, configuration: StaplingConfiguration) throws(ConfigError) {
        do {
            try StaplingService.validate(serverContext: context, configuration: configuration)
        } catch {
            let key = "tls.certificates[\(error.certificateIndex)].certificate"
            throw ConfigError(file: file, key: key, line: keyLines[key], reason: error.description)
        }
    }

    static func key(for setting: TLSSettingError.Setting) -> String {
        switch setting {
        case .tls13Ciphersuites: "tls.tls13_ciphersuites"
        case .tls12Ciphers: "tls.tls12_ciphers"
        case .groups: "tls.groups"
        case .verifyDepth: "tls.verify_depth"
        case let .certificate(index): "tls.certificates[\(index)].certificate"
        }
    }

    /// The key that named the failing file, and a reason that names the file itself.
    static func describe(_ error: TLSMaterial.LoadError, _ tls: TLSServerConfiguration) -> (key: String, reason: String) {
        func entry(_ index: Int) -> String { "tls.certificates[\(index)]" }
        switch error {
        case let .certificateChain(index, fileError):
            return ("\(entry(index)).certificate", fileError.description)
        case let .privateKey(index, fileError):
            return ("\(entry(index)).key", fileError.description)
        case let .keyMismatch(index, _, _):
            return ("\(entry(index)).key", error.description)
        case let .duplicateKeyAlgorithm(index, _), let .unsupportedKeyAlgorithm(index, _):
            return ("\(entry(index)).certificate", "\(tls.certificates[index].chainPath): \(error.description)")
        case let .deviceCABundle(fileError):
            return ("tls.device_ca", fileError.description)
        case .noCertificates:
            return ("tls.certificates", error.description)
        }
    }
}
