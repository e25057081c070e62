/// The certificates and keys named by a `TLSServerConfiguration`, loaded and cross-checked.
/// Loading is separate from building the `SSL_CTX` so that each failure can be pinned to the
/// setting that named the file.
public struct TLSMaterial: Sendable {
    public struct ServerIdentity: Sendable {
        public let chain: [X509Certificate]
        public let key: PrivateKey
        public var leaf: X509Certificate { chain[0] }
    }

    public let identities: [ServerIdentity]
    public let deviceCAs: [X509Certificate]

    public enum LoadError: Error, CustomStringConvertible, Sendable, Equatable {
        /// `index` is the position in `TLSServerConfiguration.certificates`.
        case certificateChain(index: Int, PEMFileError)
        case privateKey(index: Int, PEMFileError)
        case keyMismatch(index: Int, chainPath: String, keyPath: String)
        case duplicateKeyAlgorithm(index: Int, algorithm: String)
        case unsupportedKeyAlgorithm(index: Int, algorithm: String)
        case deviceCABundle(PEMFileError)
        case noCertificates

        public var description: String {
            switch self {
            case let .certificateChain(_, error), let .privateKey(_, error), let .deviceCABundle(error):
                error.description
            case let .keyMismatch(_, chainPath, keyPath):
                "\(keyPath): private key does not match the certificate in \(chainPath)"
            case let .duplicateKeyAlgorithm(_, algorithm):
                "a second \(algorithm) certificate; configure at most one ECDSA and one RSA certificate"
            case let .unsupportedKeyAlgorithm(_, algorithm):
                "\(algorithm) keys are not supported; use an ECDSA or RSA certificate"
            case .noCertificates:
                "no server certificate configured"
            }
        }
    }

    public static func load(_ configuration: TLSServerConfiguration) throws(LoadError) -> TLSMaterial {
        guard !configuration.certificates.isEmpty else { throw .noCertificates }
        var identities: [ServerIdentity] = []
        var algorithms: [X509Certificate.KeyAlgorithm] = []
        for (index, pair) in configuration.certificates.enumerated() {
            let chain: [X509Certificate]
            do { chain = try PEMFile.certificateChain(at: pair.chainPath) } catch { throw .certificateChain(index: index, error) }
            let key: PrivateKey
            do { key = try PEMFile.privateKey(at: pair.keyPath) } catch { throw .privateKey(index: index, error) }
            guard key.matches(chain[0]) else {
                throw .keyMismatch(index: index, chainPath: pair.chainPath, keyPath: pair.keyPath)
            }
            let algorithm = chain[0].keyAlgorithm
            guard algorithm == .rsa || algorithm == .ecdsa else {
                throw .unsupportedKeyAlgorithm(index: index, algorithm: algorithm.description)
            }
            guard !algorithms.contains(algorithm) else {
                throw .duplicateKeyAlgorithm(index: index, algorithm: algorithm.description)
            }
            algorithms.append(algorithm)
            identities.append(ServerIdentity(chain: chain, key: key))
        }
        let deviceCAs: [X509Certificate]
        do { deviceCAs = try PEMFile.caBundle(at: configuration.deviceCABundlePath) } catch { throw .deviceCABundle(error) }
        return TLSMaterial(identities: identities, deviceCAs: deviceCAs)
    }
}
