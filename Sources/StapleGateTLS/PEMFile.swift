import COpenSSL
import Foundation

/// A PEM file that is missing, unreadable, or does not hold what it should.
public struct PEMFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// Loads the PEM files the gateway is configured with, failing with a reason an operator can act on.
public enum PEMFile {
    /// A certificate chain: the leaf first, then any intermediates.
    public static func certificateChain(at path: String) throws(PEMFileError) -> [X509Certificate] {
        let certificates = try certificates(at: path)
        guard !certificates.isEmpty else {
            throw PEMFileError(path: path, reason: "contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
        }
        return certificates
    }

    /// A bundle of trusted CA certificates; each must be a CA certificate.
    public static func caBundle(at path: String) throws(PEMFileError) -> [X509Certificate] {
        let certificates = try certificateChain(at: path)
        if let notCA = certificates.first(where: { !$0.isCA }) {
            throw PEMFileError(path: path, reason: "certificate '\(notCA.subject)' is not a CA certificate")
        }
        return certificates
    }

    /// A private key in PEM (PKCS#8, traditional RSA or EC). Encrypted keys are refused: the
    /// gateway starts unattended, so there is no one to type a passphrase.
    public static func privateKey(at path: String) throws(PEMFileError) -> PrivateKey {
        let bio = try open(path)
        defer { BIO_free(bio) }
        ERR_clear_error()
        // A callback that supplies no passphrase: without it OpenSSL would prompt on the terminal.
        guard let key = PEM_read_bio_PrivateKey(bio, nil, { _, _, _, _ in -1 }, nil) else {
            let error = OpenSSLError.drain(operation: "PEM_read_bio_PrivateKey")
            let text = error.description
            if text.contains("bad decrypt") || text.contains("interrupted or cancelled") || text.contains("bad password") {
                throw PEMFileError(path: path, reason: "is an encrypted private key; StapleGate needs an unencrypted key (protect it with file permissions)")
            }
            throw PEMFileError(path: path, reason: "contains no readable PEM private key (\(text))")
        }
        return PrivateKey(taking: key)
    }

    static func certificates(at path: String) throws(PEMFileError) -> [X509Certificate] {
        let bio = try open(path)
        defer { BIO_free(bio) }
        var certificates: [X509Certificate] = []
        ERR_clear_error()
        while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
            certificates.append(X509Certificate(taking: certificate))
        }
        // Reading stops with "no start line" at the end of the file; anything else is damage.
        let error = OpenSSLError.drain(operation: "PEM_read_bio_X509")
        if let damage = error.reasons.first(where: { !$0.contains("no start line") }) {
            throw PEMFileError(path: path, reason: "is not a valid PEM certificate file (\(damage))")
        }
        return certificates
    }

    /// Opens a file for OpenSSL once `FileAccess` has found nothing wrong with it.
    static func open(_ path: String) throws(PEMFileError) -> OpaquePointer {
        if let problem = FileAccess.problem(at: path) {
            throw PEMFileError(path: path, reason: problem)
        }
        guard let bio = BIO_new_file(path, "r") else {
            throw PEMFileError(path: path, reason: "could not be opened (\(OpenSSLError.drain(operation: "BIO_new_file")))")
        }
        return bio
    }
}

/// Why a file the configuration names cannot be read, checked in the order an operator would
/// check by hand: there at all, a file rather than a folder, readable by this user.
public enum FileAccess {
    public static func problem(at path: String) -> String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return "no such file" }
        guard !isDirectory.boolValue else { return "is a directory, not a file" }
        guard access(path, R_OK) == 0 else { return "is not readable (\(String(cString: strerror(errno))))" }
        return nil
    }
}
