import Foundation
import TestSupport
import XCTest

/// The `staplegate` binary allocates with mimalloc (Package.swift links Debian's libmimalloc2.0):
/// OpenSSL, SQLite and the Swift runtime must all take their memory from it, or the handshake
/// CPU that `make bench` measured with it is not what operators run. Shown by the dynamic
/// linker's own account of where each library's `malloc` and `free` were bound.
final class AllocatorTests: XCTestCase {
    func testOpenSSLSQLiteAndSwiftAllocateThroughMimalloc() async throws {
        let bindings = try await allocatorBindings()
        let environment = ProcessInfo.processInfo.environment
        let systemBuild = environment["STAPLEGATE_MALLOC"] == "system"
        // `make test-asan` / `test-tsan` (STAPLEGATE_SANITIZER): the sanitizer's runtime, linked into
        // the executable, takes every allocation.
        let expected = environment["STAPLEGATE_SANITIZER"] != nil ? "staplegate" : systemBuild ? "libc.so.6" : "libmimalloc.so.2"
        for library in ["libcrypto.so.3", "libssl.so.3", "libsqlite3.so.0", "libswiftCore.so"] {
            let targets = Set(bindings.filter { $0.from.hasSuffix("/" + library) }.map(\.to))
            // libssl allocates through libcrypto's OPENSSL_malloc, so it may bind no malloc itself.
            if library == "libssl.so.3" && targets.isEmpty { continue }
            XCTAssertEqual(targets.map { ($0 as NSString).lastPathComponent }, [expected],
                           "\(library)'s malloc/free are bound to \(targets)")
        }
        if !systemBuild {
            // The negative: nothing at all allocates from glibc's heap beside mimalloc's.
            let toLibc = bindings.filter { $0.to.hasSuffix("/libc.so.6") && !$0.from.hasSuffix("/libc.so.6") }
            XCTAssertEqual(toLibc.map(\.from), [], "these libraries still allocate with glibc's malloc")
        }
    }

    /// (library that calls, library that defines) for every `malloc` and `free` the dynamic
    /// linker bound while `staplegate version` ran.
    private func allocatorBindings() async throws -> [(from: String, to: String)] {
        let executable = try CommandLineTests.findExecutable()
        let result = try await ManagedProcess(executable, ["version"], environment: ["LD_DEBUG": "bindings"])
            .commandResult(timeout: .seconds(20))
        XCTAssertEqual(result.status, .exited(0), "\(result)")
        // "  1234:\tbinding file /lib/x86_64-linux-gnu/libcrypto.so.3 [0] to /lib/…/libmimalloc.so.2 [0]: normal symbol `malloc' [GLIBC_2.2.5]"
        let bindings: [(from: String, to: String)] = result.stderr.split(separator: "\n").compactMap { line in
            guard line.contains("symbol `malloc'") || line.contains("symbol `free'"),
                  let file = line.range(of: "binding file "), let to = line.range(of: " to ") else { return nil }
            let from = line[file.upperBound..<to.lowerBound].split(separator: " ").first.map(String.init) ?? ""
            let target = line[to.upperBound...].split(separator: " ").first.map(String.init) ?? ""
            return (from, target)
        }
        XCTAssertFalse(bindings.isEmpty, "LD_DEBUG=bindings reported no malloc binding:\n\(result.stderr.prefix(2000))")
        return bindings
    }
}
