import Foundation

extension ManagedProcess {
    /// Waits until the process has exited (and its output is fully read) and returns how it
    /// ended with everything it printed.
    public func commandResult(timeout: Duration) async throws -> CommandResult {
        let status = try await waitForExit(timeout: timeout)
        return CommandResult(status: status, stdout: stdout.text, stderr: stderr.text)
    }
}
