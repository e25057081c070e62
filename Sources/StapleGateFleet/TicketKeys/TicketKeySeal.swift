import COpenSSL
import StapleGateTLS

/// Why a sealed ticket key from the database cannot be opened.
public enum TicketKeySealError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not a blob this version wrote (too short, unknown format version).
    case malformed(String)
    /// The GCM tag does not match: another fleet secret sealed it, or the blob (or its id) was
    /// changed. The two cannot be told apart, by design of an AEAD.
    case notOpened(path: String)
    /// It opened, but holds a key whose name is not its id (a row copied under another id).
    case wrongName

    public var description: String {
        switch self {
        case let .malformed(reason):
            "not a sealed ticket key (\(reason))"
        case let .notOpened(path):
            "cannot be opened with fleet.secret_file \(path): the key was sealed with another secret (every gateway of the fleet needs the same file), or the row was altered"
        case .wrongName:
            "holds a key whose name is not its id: the row was altered"
        }
    }
}

/// How a session ticket key is kept in the fleet's database: AES-256-GCM (OpenSSL EVP) under
/// the key derived from `fleet.secret_file`, with the key's id as associated data so a blob
/// moved to another row does not open. Layout: format version (1) ‖ 12-byte random nonce ‖
/// the 80 sealed bytes ‖ 16-byte tag.
enum TicketKeySeal {
    static let version: UInt8 = 1
    static let nonceLength = 12
    static let tagLength = 16
    static let sealedLength = 1 + nonceLength + SessionTicketKey.length + tagLength

    static func seal(_ key: SessionTicketKey, id: String, with secret: FleetSecret) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: nonceLength)
        guard RAND_bytes(&nonce, Int32(nonceLength)) == 1 else { fatalError("RAND_bytes failed") }
        return seal(key.secretBytes, id: id, nonce: nonce, sealingKey: secret.sealingKey)
    }

    /// With the nonce given: for the tests, which check the blob's layout.
    static func seal(_ plaintext: [UInt8], id: String, nonce: [UInt8], sealingKey: [UInt8]) -> [UInt8] {
        let context = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(context) }
        let aad = Array(id.utf8)
        var ciphertext = [UInt8](repeating: 0, count: plaintext.count + 16)
        var tag = [UInt8](repeating: 0, count: tagLength)
        var written: Int32 = 0
        var total = 0
        var ok = EVP_EncryptInit_ex(context, EVP_aes_256_gcm(), nil, sealingKey, nonce) == 1
        ok = ok && EVP_EncryptUpdate(context, nil, &written, aad, Int32(aad.count)) == 1
        ok = ok && ciphertext.withUnsafeMutableBufferPointer { output in
            EVP_EncryptUpdate(context, output.baseAddress, &written, plaintext, Int32(plaintext.count)) == 1
        }
        total = Int(written)
        ok = ok && ciphertext.withUnsafeMutableBufferPointer { output in
            EVP_EncryptFinal_ex(context, output.baseAddress! + total, &written) == 1
        }
        total += Int(written)
        ok = ok && EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_GET_TAG, Int32(tagLength), &tag) == 1
        // Sealing with a well-formed key cannot fail short of a broken libcrypto.
        precondition(ok, "AES-256-GCM sealing failed")
        return [version] + nonce + ciphertext.prefix(total) + tag
    }

    static func open(_ sealed: [UInt8], id: String, with secret: FleetSecret) throws(TicketKeySealError) -> SessionTicketKey {
        let plaintext = try open(sealed, id: id, sealingKey: secret.sealingKey, path: secret.path)
        guard let key = SessionTicketKey(bytes: plaintext) else { throw .malformed("\(plaintext.count) bytes inside, not \(SessionTicketKey.length)") }
        guard key.nameHex == id else { throw .wrongName }
        return key
    }

    static func open(_ sealed: [UInt8], id: String, sealingKey: [UInt8], path: String) throws(TicketKeySealError) -> [UInt8] {
        guard sealed.count > 1 + nonceLength + tagLength else { throw .malformed("\(sealed.count) bytes") }
        guard sealed[0] == version else { throw .malformed("format version \(sealed[0]), this gateway reads \(version)") }
        let nonce = Array(sealed[1..<(1 + nonceLength)])
        let ciphertext = Array(sealed[(1 + nonceLength)..<(sealed.count - tagLength)])
        var tag = Array(sealed.suffix(tagLength))
        let aad = Array(id.utf8)
        let context = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(context) }
        var plaintext = [UInt8](repeating: 0, count: ciphertext.count + 16)
        var written: Int32 = 0
        var total = 0
        var ok = EVP_DecryptInit_ex(context, EVP_aes_256_gcm(), nil, sealingKey, nonce) == 1
        ok = ok && EVP_DecryptUpdate(context, nil, &written, aad, Int32(aad.count)) == 1
        ok = ok && plaintext.withUnsafeMutableBufferPointer { output in
            EVP_DecryptUpdate(context, output.baseAddress, &written, ciphertext, Int32(ciphertext.count)) == 1
        }
        total = Int(written)
        ok = ok && EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_SET_TAG, Int32(tagLength), &tag) == 1
        // The tag is checked here: a wrong key, nonce, id or any changed byte fails.
        ok = ok && plaintext.withUnsafeMutableBufferPointer { output in
            EVP_DecryptFinal_ex(context, output.baseAddress! + total, &written) == 1
        }
        ERR_clear_error()
        guard ok else {
            plaintext.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            throw .notOpened(path: path)
        }
        total += Int(written)
        return Array(plaintext.prefix(total))
    }
}
