import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Every child process the tests start, so none outlives its test: processes started during a
/// test are terminated when that test finishes (even after a failed assertion), processes
/// started outside a test (class-level fixtures) when their test class finishes, and whatever
/// is left is killed when the test runner exits.
public enum ProcessRegistry {
    public enum Scope { case test, testClass }

    private static let lock = NSLock()
    private static var processes: [ObjectIdentifier: (process: ManagedProcess, scope: Scope)] = [:]
    private static var insideTest = false
    private static var installed = false

    /// Hooks the registry into XCTest and process exit. Idempotent; called by every
    /// `ManagedProcess`, and best called once before the first test starts.
    public static func install() {
        lock.lock()
        defer { lock.unlock() }
        guard !installed else { return }
        installed = true
        atexit { ProcessRegistry.killEverythingNow() }
        let observer = Observer()
        if Thread.isMainThread {
            XCTestObservationCenter.shared.addTestObserver(observer)
        } else {
            DispatchQueue.main.async { XCTestObservationCenter.shared.addTestObserver(observer) }
        }
    }

    static func register(_ process: ManagedProcess) {
        install()
        lock.lock()
        defer { lock.unlock() }
        processes[ObjectIdentifier(process)] = (process, insideTest ? .test : .testClass)
    }

    static func unregister(_ process: ManagedProcess) {
        lock.lock()
        defer { lock.unlock() }
        processes[ObjectIdentifier(process)] = nil
    }

    /// Terminates (SIGTERM, then SIGKILL after the grace period) every process of `scope`
    /// still running, and waits for them.
    public static func terminateAll(_ scope: Scope) {
        lock.lock()
        let victims = processes.values.filter { $0.scope == scope }.map(\.process)
        lock.unlock()
        // All at once: one grace period for everybody, not one each.
        for process in victims { process.signal(SIGTERM) }
        try? waitUntilBlocking(timeout: .seconds(3), "processes to exit after SIGTERM") {
            victims.allSatisfy { !$0.isRunning }
        }
        for process in victims { process.signal(SIGKILL) }
        for process in victims { _ = try? process.waitForExitBlocking(timeout: .seconds(5)) }
        for process in victims {
            process.closeInput()
            unregister(process)
        }
    }

    fileprivate static func setInsideTest(_ value: Bool) {
        lock.lock()
        insideTest = value
        lock.unlock()
    }

    /// At exit there is no time for grace periods. (Only processes not yet seen to exit: their
    /// pid cannot have been reused.)
    private static func killEverythingNow() {
        lock.lock()
        let remaining = processes.values.map(\.process).filter(\.isRunning)
        lock.unlock()
        for process in remaining { kill(process.pid, SIGKILL) }
    }

    private final class Observer: NSObject, XCTestObservation {
        func testCaseWillStart(_ testCase: XCTestCase) {
            ProcessRegistry.setInsideTest(true)
        }

        func testCaseDidFinish(_ testCase: XCTestCase) {
            ProcessRegistry.terminateAll(.test)
            ProcessRegistry.setInsideTest(false)
        }

        func testSuiteDidFinish(_ testSuite: XCTestSuite) {
            ProcessRegistry.terminateAll(.test)
            ProcessRegistry.terminateAll(.testClass)
        }
    }
}
