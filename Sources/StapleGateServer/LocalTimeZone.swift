import Foundation

/// Has the C library read the local time zone once, instead of at every log line.
///
/// With `TZ` unset, glibc checks /etc/localtime again (a stat, and a read when it changed) on
/// every `localtime` call, and swift-log's text handler stamps each line that way: at the default
/// info level a device session writes two lines or more, and that stat was 1 % of the gateway's
/// CPU per handshake in a profile. `TZ=:/etc/localtime` names the same file, which glibc then
/// reads once. Foundation does not take that form of `TZ` and reads /etc/localtime itself, so
/// log lines and traces keep the host's zone either way. A zone changed while the gateway runs
/// is seen at its next restart (nginx's workers behave alike). An operator's own `TZ` is kept.
public enum LocalTimeZone {
    /// Sets `TZ` when unset; before any thread that may read the environment starts.
    /// Returns whether it did.
    @discardableResult
    public static func readOnce() -> Bool {
        guard getenv("TZ") == nil else { return false }
        return setenv("TZ", ":/etc/localtime", 0) == 0
    }
}
