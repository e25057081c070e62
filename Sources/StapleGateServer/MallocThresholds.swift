import CStapleGateShim
import Foundation

/// Keeps the proxy's freed buffers in the process instead of handing them back to the kernel
/// after every burst.
///
/// A busy session moves ciphertext and plaintext through buffers of 64–256 KB. With glibc's
/// defaults the 128 KB and larger ones were each a fresh mmap (page faults, zeroed pages, then
/// munmap), and freeing the others left more than the 128 KB trim threshold free at the top of
/// an event loop's heap, which glibc returned with madvise only to fault it back in on the
/// next read. Profiled with one event loop at 4 KiB messages: page faults and madvise were 9 %
/// of the gateway's CPU per message, and the CPU per 4 KiB message halved without them. Requests
/// below 1 MB now come from the heap, and up to 16 MB free at the top of each heap stays for
/// reuse (one heap per event loop): bounded, and no change to the memory an idle session holds.
/// The default build allocates with mimalloc (Package.swift), which leaves glibc's heap unused:
/// this matters to builds with `STAPLEGATE_MALLOC=system` (sanitizer runs).
public enum MallocThresholds {
    static let mmapThreshold: Int32 = 1 << 20
    static let trimThreshold: Int32 = 16 << 20

    /// Applies them, unless the operator tuned malloc through GLIBC_TUNABLES. Before the event
    /// loops start: mallopt is meant to be called before the allocations it should shape.
    @discardableResult
    public static func apply(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        if let tunables = environment["GLIBC_TUNABLES"], tunables.contains("glibc.malloc.") { return false }
        return sg_malloc_thresholds(mmapThreshold, trimThreshold) == 1
    }
}
