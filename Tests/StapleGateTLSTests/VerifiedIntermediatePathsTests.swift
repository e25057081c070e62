import COpenSSL
import CStapleGateShim
import Foundation
@testable import StapleGateTLS
import TestSupport
import XCTest

/// Ending device chains at the issuing CA must give the verdict OpenSSL's full verification
/// gives, for every bundle: each case here runs both on the same store with the settings a
/// handshake uses (full: `X509_verify_cert`; shortcut: the handshake's own verify callback) and
/// compares. The bundles are made by `openssl` with what a shortcut could get wrong: a root's
/// path length, name constraints, purpose, a missing root, the depth limit, and a root that
/// expires while the gateway runs.
final class VerifiedIntermediatePathsTests: SharedPKITestCase {
    nonisolated(unsafe) private static var lab: TemporaryDirectory?
    private var lab: TemporaryDirectory { Self.lab! }

    override class func setUp() {
        super.setUp()
        lab = try! makeChains()
    }

    override class func tearDown() {
        lab?.remove()
        lab = nil
        super.tearDown()
    }

    // MARK: Bundles that keep the shortcut: same verdicts, same chains

    func testAPlainBundleVerifiesFromTheIssuingCAUpWithTheFullChainHandedOn() throws {
        let context = try serving("plain")
        XCTAssertNoThrow(try context.intermediatePaths.get(), context.deviceChainSummary)
        let device = try outcome(context, "plain-device")
        XCTAssertEqual(device.shortcut, device.full)
        XCTAssertEqual(device.shortcut.chain, ["plain-device", "plain-int", "plain-root"], "the root is handed on")
        XCTAssertTrue(device.shortcut.verified)
        let underSub = try outcome(context, "plain-subdevice", sending: ["plain-sub"])
        XCTAssertEqual(underSub.shortcut, underSub.full)
        XCTAssertTrue(underSub.shortcut.verified)
        let stranger = try outcome(context, "stranger-device")
        XCTAssertEqual(stranger.shortcut, stranger.full)
        XCTAssertFalse(stranger.shortcut.verified, "negative control: another CA's device")
    }

    /// pathlen:0 on the root forbids any CA below it: the full chain fails at the root, which a
    /// chain ended at the intermediate never reaches. The shortcut rechecks it.
    func testARootsPathLengthStillRefusesTheChainsItForbids() throws {
        let none = try serving("pathlen0")
        XCTAssertNoThrow(try none.intermediatePaths.get())
        let device = try outcome(none, "pathlen0-device")
        XCTAssertEqual(device.shortcut, device.full)
        XCTAssertFalse(device.shortcut.verified)
        XCTAssertEqual(device.shortcut.error, X509_V_ERR_PATH_LENGTH_EXCEEDED)

        let one = try serving("pathlen1")
        let direct = try outcome(one, "pathlen1-device")
        XCTAssertTrue(direct.shortcut.verified, "negative control: one CA below the root is allowed")
        XCTAssertEqual(direct.shortcut, direct.full)
        let deeper = try outcome(one, "pathlen1-subdevice", sending: ["pathlen1-sub"])
        XCTAssertEqual(deeper.shortcut, deeper.full)
        XCTAssertFalse(deeper.shortcut.verified, "two CAs below a pathlen:1 root")
    }

    func testTheDepthLimitCountsTheWholeChain() throws {
        let zero = try serving("plain", verifyDepth: 0)
        let device = try outcome(zero, "plain-device")
        XCTAssertEqual(device.shortcut, device.full)
        XCTAssertFalse(device.shortcut.verified, "device, intermediate and root need a depth of 1")

        let one = try serving("plain", verifyDepth: 1)
        XCTAssertTrue(try outcome(one, "plain-device").shortcut.verified, "negative control")
        let deeper = try outcome(one, "plain-subdevice", sending: ["plain-sub"])
        XCTAssertEqual(deeper.shortcut, deeper.full)
        XCTAssertFalse(deeper.shortcut.verified)
    }

    /// The root expires while the gateway runs (before the intermediate it issued): past it,
    /// the shortcut steps aside and the full verification refuses, as it would have without it.
    func testPastARootsValidityTheFullChainIsVerifiedAgain() throws {
        let context = try serving("short")
        try assertRefusedBothWays(context, "short-device", at: context.intermediatePaths.get().validUntil + 60)
    }

    /// The intermediate itself expires first: OpenSSL checks an anchor's validity too, so the
    /// chain ended there is refused as the full one is.
    func testPastTheIntermediatesValidityTheDeviceIsRefused() throws {
        let context = try serving("long")
        let paths = try context.intermediatePaths.get()
        let intermediate = try XCTUnwrap(paths.paths.first?.intermediate.notAfter)
        let later = time_t(intermediate.timeIntervalSince1970) + 60
        XCTAssertLessThan(later, paths.validUntil, "the root is still valid then")
        try assertRefusedBothWays(context, "long-device", at: later)
    }

    /// Accepted now (the negative control); at `later`, refused as expired by the full
    /// verification and by the shortcut alike.
    private func assertRefusedBothWays(_ context: ServerContext, _ device: String, at later: time_t,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        let paths = try context.intermediatePaths.get()
        let within = try verify(context, device, at: time(nil)) { paths.verify($0) }
        XCTAssertTrue(within.verified, "negative control", file: file, line: line)
        let full = try verify(context, device, at: later) { X509_verify_cert($0) }
        let shortcut = try verify(context, device, at: later) { paths.verify($0, now: later) }
        XCTAssertFalse(full.verified, file: file, line: line)
        XCTAssertEqual(full.error, X509_V_ERR_CERT_HAS_EXPIRED, file: file, line: line)
        XCTAssertEqual(shortcut, full, file: file, line: line)
    }

    // MARK: Bundles that turn it off: verified in full, as before

    func testBundlesWhoseRootsSayMoreAreVerifiedInFull() throws {
        let constrained = try serving("nc")
        XCTAssertThrowsError(try constrained.intermediatePaths.get()) { error in
            XCTAssertEqual(error as? VerifiedIntermediatePaths.Ineligibility,
                           .constrainedParent(subject: "CN=nc-int", parent: "CN=nc-root", what: "name constraints"))
        }
        XCTAssertTrue(constrained.deviceChainSummary.hasPrefix("in full on every handshake (CN=nc-root, above CN=nc-int, carries name constraints"),
                      constrained.deviceChainSummary)
        let inside = try outcome(constrained, "nc-device")
        XCTAssertEqual(inside.shortcut, inside.full)
        XCTAssertTrue(inside.shortcut.verified, "negative control: a name the root permits")
        let outside = try outcome(constrained, "nc-outsider")
        XCTAssertEqual(outside.shortcut, outside.full)
        XCTAssertFalse(outside.shortcut.verified, "a name the root does not permit")

        let serverOnly = try serving("eku")
        XCTAssertThrowsError(try serverOnly.intermediatePaths.get())
        let device = try outcome(serverOnly, "eku-device")
        XCTAssertEqual(device.shortcut, device.full)
        XCTAssertFalse(device.shortcut.verified, "a root for TLS servers only")
    }

    /// Without its root the intermediate is no anchor: its devices stay refused.
    func testAnIntermediateWithoutItsRootIsNoAnchor() throws {
        let context = try serving("plain", bundle: ["plain-int"])
        XCTAssertThrowsError(try context.intermediatePaths.get()) { error in
            guard case .unverified(subject: "CN=plain-int", _)? = error as? VerifiedIntermediatePaths.Ineligibility else {
                return XCTFail("\(error)")
            }
        }
        let device = try outcome(context, "plain-device")
        XCTAssertEqual(device.shortcut, device.full)
        XCTAssertFalse(device.shortcut.verified)

        let rootsOnly = try serving("plain", bundle: ["plain-root"])
        XCTAssertEqual(rootsOnly.deviceChainSummary, "in full on every handshake (the device CA bundle holds no intermediate)")
    }

    /// A real TLS 1.3 handshake with the demo PKI: the gate is handed the full chain.
    func testTheGateIsHandedTheChainUpToTheRoot() throws {
        let context = try serverContext(resumption: nil, gate: ResumptionGate(allows: true))
        XCTAssertNoThrow(try context.intermediatePaths.get())
        let handshake = try TicketHandshake(context: context, pki: pki)
        XCTAssertEqual(handshake.chains, [["device-1", "StapleGate Demo Issuing CA", "StapleGate Demo Root CA"]])
    }

    // MARK: Helpers

    struct Verdict: Equatable {
        let verified: Bool
        let error: Int32
        let chain: [String]
    }

    private func serving(_ family: String, bundle: [String]? = nil, verifyDepth: Int = 4) throws -> ServerContext {
        let names = bundle ?? ["\(family)-root", "\(family)-int"]
        let bundlePath = try lab.write("bundle-\(names.joined(separator: "+")).pem",
                                       names.map { try String(contentsOfFile: lab.file("\($0).pem"), encoding: .utf8) }.joined())
        let configuration = TLSServerConfiguration(
            certificates: [.init(chainPath: pki.path("server.pem"), keyPath: pki.path("server.key"))],
            deviceCABundlePath: bundlePath, verifyDepth: verifyDepth)
        return try ServerContext(configuration: configuration, material: TLSMaterial.load(configuration))
    }

    /// The device's verdict both ways: OpenSSL's full verification, and the handshake's callback.
    private func outcome(_ context: ServerContext, _ device: String, sending: [String] = [],
                         file: StaticString = #filePath, line: UInt = #line) throws -> (full: Verdict, shortcut: Verdict) {
        let full = try verify(context, device, sending: sending) { X509_verify_cert($0) }
        let argument = (try? context.intermediatePaths.get()).map { Unmanaged.passUnretained($0).toOpaque() }
        let shortcut = try verify(context, device, sending: sending) { HandshakeVerdictSlot.certificateVerifyCallback($0, argument) }
        return (full, shortcut)
    }

    /// A store context set up as OpenSSL's server sets one up for a client certificate.
    private func verify(_ context: ServerContext, _ device: String, sending: [String] = [], at time: time_t? = nil,
                        _ run: (OpaquePointer) -> Int32) throws -> Verdict {
        let leaf = try XCTUnwrap(PEMFile.certificateChain(at: lab.file("\(device).pem")).first)
        let sent = try sending.map { try XCTUnwrap(PEMFile.certificateChain(at: lab.file("\($0).pem")).first) }
        let untrusted = sg_sk_X509_new_null()
        defer { sg_sk_X509_free(untrusted) }
        for certificate in sent { _ = sg_sk_X509_push(untrusted, certificate.pointer) }
        let storeContext = try XCTUnwrap(X509_STORE_CTX_new())
        defer { X509_STORE_CTX_free(storeContext) }
        XCTAssertEqual(X509_STORE_CTX_init(storeContext, SSL_CTX_get_cert_store(context.context), leaf.pointer, untrusted), 1)
        XCTAssertEqual(X509_STORE_CTX_set_default(storeContext, "ssl_client"), 1)
        let parameters = X509_STORE_CTX_get0_param(storeContext)
        XCTAssertEqual(X509_VERIFY_PARAM_set1(parameters, SSL_CTX_get0_param(context.context)), 1)
        X509_VERIFY_PARAM_set_auth_level(parameters, SSL_CTX_get_security_level(context.context))
        if let time { X509_STORE_CTX_set_time(storeContext, 0, time) }
        let verified = run(storeContext) == 1
        defer { ERR_clear_error() }
        let chain = X509_STORE_CTX_get0_chain(storeContext).map { stack in
            (0..<sg_sk_X509_num(stack)).compactMap { sg_sk_X509_value(stack, $0).flatMap { X509Certificate(borrowing: $0).commonName } }
        } ?? []
        return Verdict(verified: verified, error: verified ? X509_V_OK : X509_STORE_CTX_get_error(storeContext),
                       chain: verified ? chain : [])
    }

    /// Root, intermediate, a second-level CA (sent by its devices, never in a bundle) and
    /// devices, for each kind of root; EC P-256 throughout.
    private static func makeChains() throws -> TemporaryDirectory {
        let directory = try TemporaryDirectory(prefix: "chains")
        let script = try directory.write("make.sh", """
            set -eu
            cd "$(dirname "$0")"
            cat > ext.cnf <<'EOF'
            [req]
            distinguished_name = dn
            [dn]
            [root]
            basicConstraints = critical,CA:true
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            [root_pathlen0]
            basicConstraints = critical,CA:true,pathlen:0
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            [root_pathlen1]
            basicConstraints = critical,CA:true,pathlen:1
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            [root_nc]
            basicConstraints = critical,CA:true
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            nameConstraints = critical,permitted;DNS:.example.com
            [root_eku]
            basicConstraints = critical,CA:true
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            extendedKeyUsage = serverAuth
            [ca]
            basicConstraints = critical,CA:true
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            authorityKeyIdentifier = keyid
            [device]
            basicConstraints = CA:false
            keyUsage = critical,digitalSignature
            extendedKeyUsage = clientAuth
            subjectAltName = DNS:device.example.com
            [outsider]
            basicConstraints = CA:false
            keyUsage = critical,digitalSignature
            extendedKeyUsage = clientAuth
            subjectAltName = DNS:device.example.org
            EOF
            key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
            root() { key "$1"; openssl req -x509 -new -key "$1.key" -subj "/CN=$1" -days "${3:-30}" -config ext.cnf -extensions "$2" -out "$1.pem"; }
            issue() { # name issuer section [days]
              key "$1"; openssl req -new -key "$1.key" -subj "/CN=$1" -config ext.cnf -out "$1.csr"
              openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "${4:-30}" \\
                -extfile ext.cnf -extensions "$3" -out "$1.pem" 2>/dev/null
            }
            for family in plain pathlen0 pathlen1 nc eku; do
              case $family in plain) section=root ;; *) section=root_$family ;; esac
              root "$family-root" "$section"
              issue "$family-int" "$family-root" ca
              issue "$family-sub" "$family-int" ca
              issue "$family-device" "$family-int" device
              issue "$family-subdevice" "$family-sub" device
              issue "$family-outsider" "$family-int" outsider
            done
            root stranger-root root
            issue stranger-device stranger-root device
            # A root that expires before the CA it issued.
            root short-root root 10
            issue short-int short-root ca
            issue short-device short-int device
            # An intermediate that expires before its root.
            root long-root root 30
            issue long-int long-root ca 10
            issue long-device long-int device
            """)
        let process = try ManagedProcess("/bin/bash", [script])
        let status = try process.waitForExitBlocking(timeout: .seconds(120))
        guard status.succeeded else {
            directory.remove()
            throw TicketHandshakeFailure("making the test chains failed (\(status))\n\(process.output)")
        }
        return directory
    }
}
