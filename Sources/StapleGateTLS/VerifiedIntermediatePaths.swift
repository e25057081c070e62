import COpenSSL
import CStapleGateShim
import Foundation

/// The device CA bundle's intermediates, each verified up to its root once, when the context is
/// built, so that a device's chain may end at its issuing CA (`X509_V_FLAG_PARTIAL_CHAIN`) with
/// the verdict the full chain would give.
///
/// Every handshake otherwise checks the issuing CA's signature by the root again, and the chain
/// above the issuing CA never changes between handshakes: only the clock does. As a bare flag,
/// PARTIAL_CHAIN would change what the bundle trusts (an intermediate whose root is missing,
/// expired or constrained would become an anchor of its own). So the shortcut is taken only when
///  - every intermediate in the bundle verified to a root of the bundle at load, with the trust,
///    security level and flags the handshake uses;
///  - nothing above an intermediate says anything about the certificates below it that this
///    type does not recheck per handshake: no name constraints, no RFC 3779 resources, CA and
///    ssl_client purpose as OpenSSL demands of any CA in a device chain; path lengths and the
///    depth limit are rechecked against the device's part of the chain after it verified;
///  - the clock is inside every certificate's validity above the intermediates.
/// Outside that, the handshake verifies the full chain as before. The verified chain handed on
/// (to the device-OCSP gate, the session, traces) is the full one: the intermediate's parents
/// are appended to it, so nothing downstream can tell the difference.
final class VerifiedIntermediatePaths: @unchecked Sendable {
    /// One bundle intermediate and what lies above it, up to and including its root.
    struct Path {
        let intermediate: X509Certificate
        /// Issuer first, root last.
        let parents: [X509Certificate]
        /// How many certificates that are not self-issued, below the intermediate's parents and
        /// above the device, the parents' pathLenConstraints leave room for (Int.max: no limit).
        let pathLengthAllowance: Int
    }

    let paths: [Path]
    /// The span in which every parent is within its validity (seconds since 1970, inclusive).
    let validFrom: time_t
    let validUntil: time_t
    /// `tls.verify_depth`: a full chain may hold this many certificates plus two.
    let verifyDepth: Int

    private init(paths: [Path], validFrom: time_t, validUntil: time_t, verifyDepth: Int) {
        self.paths = paths
        self.validFrom = validFrom
        self.validUntil = validUntil
        self.verifyDepth = verifyDepth
    }

    /// Why the shortcut is not taken for a bundle; the full chain is verified then.
    enum Ineligibility: Error, Equatable, CustomStringConvertible {
        case noIntermediates
        case policyChecking
        /// `subject` did not verify to a root of the bundle (OpenSSL's reason).
        case unverified(subject: String, reason: String)
        /// A certificate above `subject` carries what only a full verification applies.
        case constrainedParent(subject: String, parent: String, what: String)

        var description: String {
            switch self {
            case .noIntermediates: "the device CA bundle holds no intermediate"
            case .policyChecking: "certificate policy checking is on"
            case let .unverified(subject, reason): "\(subject) does not verify to a root of the bundle: \(reason)"
            case let .constrainedParent(subject, parent, what): "\(parent), above \(subject), carries \(what)"
            }
        }
    }

    /// Verifies every intermediate in `context`'s certificate store (the device CA bundle) to a
    /// root there, as a device's handshake would. nil, and why, when any of them does not qualify.
    static func build(for context: OpaquePointer, deviceCAs: [X509Certificate],
                      verifyDepth: Int) -> Result<VerifiedIntermediatePaths, Ineligibility> {
        guard let store = SSL_CTX_get_cert_store(context) else { return .failure(.noIntermediates) }
        if let parameters = SSL_CTX_get0_param(context),
           X509_VERIFY_PARAM_get_flags(parameters) & UInt(X509_V_FLAG_POLICY_CHECK) != 0 {
            return .failure(.policyChecking)
        }
        // Only a self-signed certificate is an anchor in a full verification (OpenSSL's trust
        // check); every other bundle certificate, self-issued key rollovers included, is verified.
        let intermediates = deviceCAs.filter { X509_get_extension_flags($0.pointer) & UInt32(EXFLAG_SS) == 0 }
        guard !intermediates.isEmpty else { return .failure(.noIntermediates) }
        var paths: [Path] = []
        var validFrom = time_t.min
        var validUntil = time_t.max
        for intermediate in intermediates {
            let parents: [X509Certificate]
            switch verifiedParents(of: intermediate, in: store, securityLevel: SSL_CTX_get_security_level(context)) {
            case let .success(found): parents = found
            case let .failure(failure): return .failure(.unverified(subject: intermediate.subject, reason: failure.reason))
            }
            var allowance = Int.max
            var notSelfIssuedBelow = 0
            for parent in parents {
                if let what = unrecheckedConstraint(of: parent) {
                    return .failure(.constrainedParent(subject: intermediate.subject, parent: parent.subject, what: what))
                }
                let pathLength = X509_get_pathlen(parent.pointer)
                if pathLength >= 0 { allowance = min(allowance, pathLength - notSelfIssuedBelow) }
                if X509_get_extension_flags(parent.pointer) & UInt32(EXFLAG_SI) == 0 { notSelfIssuedBelow += 1 }
                guard let from = parent.notBefore.map({ time_t($0.timeIntervalSince1970) }),
                      let until = parent.notAfter.map({ time_t($0.timeIntervalSince1970) }) else {
                    return .failure(.constrainedParent(subject: intermediate.subject, parent: parent.subject, what: "an unreadable validity"))
                }
                validFrom = max(validFrom, from)
                validUntil = min(validUntil, until)
            }
            paths.append(Path(intermediate: intermediate, parents: parents, pathLengthAllowance: allowance))
        }
        return .success(VerifiedIntermediatePaths(paths: paths, validFrom: validFrom, validUntil: validUntil, verifyDepth: verifyDepth))
    }

    /// `intermediate`'s chain above it, verified now against `store` alone: signatures, validity,
    /// the CA flag, key and signature strength at `securityLevel`, and a root trusted for
    /// ssl_client (what a device handshake demands of the same certificates).
    private static func verifiedParents(of intermediate: X509Certificate, in store: OpaquePointer,
                                        securityLevel: Int32) -> Result<[X509Certificate], VerificationFailure> {
        guard let storeContext = X509_STORE_CTX_new() else { return .failure(VerificationFailure(reason: "out of memory")) }
        defer { X509_STORE_CTX_free(storeContext) }
        guard X509_STORE_CTX_init(storeContext, store, intermediate.pointer, nil) == 1 else {
            return .failure(VerificationFailure(reason: OpenSSLError.drain(operation: "X509_STORE_CTX_init").description))
        }
        _ = X509_STORE_CTX_set_trust(storeContext, X509_TRUST_SSL_CLIENT)
        X509_VERIFY_PARAM_set_auth_level(X509_STORE_CTX_get0_param(storeContext), securityLevel)
        defer { ERR_clear_error() }
        guard X509_verify_cert(storeContext) == 1 else {
            return .failure(VerificationFailure(reason: String(cString: X509_verify_cert_error_string(Int(X509_STORE_CTX_get_error(storeContext))))))
        }
        guard let chain = X509_STORE_CTX_get0_chain(storeContext) else { return .failure(VerificationFailure(reason: "no chain")) }
        let parents = (1..<max(1, sg_sk_X509_num(chain))).compactMap { index in
            sg_sk_X509_value(chain, index).map { X509Certificate(borrowing: $0) }
        }
        return parents.isEmpty ? .failure(VerificationFailure(reason: "no issuer")) : .success(parents)
    }

    struct VerificationFailure: Error { let reason: String }

    /// What a certificate above a bundle intermediate carries that a chain ending at the
    /// intermediate would no longer apply to the device, or nil.
    private static func unrecheckedConstraint(of parent: X509Certificate) -> String? {
        for (nid, name) in [(NID_name_constraints, "name constraints"), (NID_sbgp_ipAddrBlock, "RFC 3779 IP address blocks"),
                            (NID_sbgp_autonomousSysNum, "RFC 3779 AS numbers")]
        where X509_get_ext_by_NID(parent.pointer, nid, -1) >= 0 {
            return name
        }
        let flags = X509_get_extension_flags(parent.pointer)
        if flags & UInt32(EXFLAG_CRITICAL) != 0 { return "an unhandled critical extension" }
        if flags & UInt32(EXFLAG_PROXY) != 0 { return "a proxy certificate" }
        guard X509_check_ca(parent.pointer) == 1 else { return "no CA basic constraint" }
        // OpenSSL demands the ssl_client purpose of every CA in a device's chain.
        guard X509_check_purpose(parent.pointer, X509_PURPOSE_SSL_CLIENT, 1) == 1 else { return "a purpose other than TLS client" }
        return nil
    }

    // MARK: In the handshake (inside OpenSSL's async job, on its small stack: keep it light)

    /// Verifies the device chain in `storeContext` as `X509_verify_cert` would, ending it at a
    /// bundle intermediate when the paths above are known good now. Returns 1 or 0 (the error
    /// set on `storeContext`), as `X509_verify_cert` does.
    func verify(_ storeContext: OpaquePointer, now: time_t = time(nil)) -> Int32 {
        // A second's margin on each side: OpenSSL reads the clock itself, a moment later.
        guard now > validFrom, now < validUntil else { return X509_verify_cert(storeContext) }
        X509_STORE_CTX_set_flags(storeContext, UInt(X509_V_FLAG_PARTIAL_CHAIN))
        guard X509_verify_cert(storeContext) == 1 else { return 0 }
        guard let chain = X509_STORE_CTX_get0_chain(storeContext) else { return 0 }
        let count = Int(sg_sk_X509_num(chain))
        guard count > 0, let anchor = sg_sk_X509_value(chain, Int32(count - 1)) else { return 0 }
        // Ended at a root (never one of `paths`, which are the bundle's other certificates): the
        // chain is the full one already.
        if X509_get_extension_flags(anchor) & UInt32(EXFLAG_SS) != 0 { return 1 }
        guard let path = paths.first(where: { $0.intermediate.pointer == anchor })
            ?? paths.first(where: { X509_cmp($0.intermediate.pointer, anchor) == 0 }) else {
            // Only bundle certificates end a chain, and each is a root or has a path: not reached.
            return fail(storeContext, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, depth: count - 1)
        }
        // The depth limit, as the full chain would meet it.
        guard count + path.parents.count <= verifyDepth + 2 else {
            return fail(storeContext, X509_V_ERR_CERT_CHAIN_TOO_LONG, depth: count - 1)
        }
        // The parents' pathLenConstraints count the chain's CAs below them, the device excepted.
        if path.pathLengthAllowance != Int.max {
            let notSelfIssued = (1..<count).count { index in
                sg_sk_X509_value(chain, Int32(index)).map { X509_get_extension_flags($0) & UInt32(EXFLAG_SI) == 0 } ?? true
            }
            guard notSelfIssued <= path.pathLengthAllowance else {
                return fail(storeContext, X509_V_ERR_PATH_LENGTH_EXCEEDED, depth: count)
            }
        }
        for parent in path.parents {
            X509_up_ref(parent.pointer)
            guard sg_sk_X509_push(chain, parent.pointer) > 0 else {
                X509_free(parent.pointer)
                return fail(storeContext, X509_V_ERR_OUT_OF_MEM, depth: 0)
            }
        }
        return 1
    }

    private func fail(_ storeContext: OpaquePointer, _ error: Int32, depth: Int) -> Int32 {
        X509_STORE_CTX_set_error(storeContext, error)
        X509_STORE_CTX_set_error_depth(storeContext, Int32(depth))
        return 0
    }
}
