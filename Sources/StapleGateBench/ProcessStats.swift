import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// CPU time and resident memory of a front's processes, from /proc: what the kernel charged
/// them, whoever drove the load. A front is one process (StapleGate, Mosquitto) or a master and
/// its workers (nginx), so every reading sums over the process and its children.
enum ProcessStats {
    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// `pid` and its direct children (nginx's workers; StapleGate and Mosquitto have none).
    static func processTree(_ pid: Int32) -> [Int32] {
        var pids = [pid]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let child = Int32(entry), child != pid, let stat = statFields(child), stat.count > 1,
                  Int32(stat[1]) == pid else { continue }
            pids.append(child)
        }
        return pids
    }

    /// utime + stime of every thread of `pids`, in seconds (clock-tick resolution: 10 ms at
    /// 100 Hz, which is why every measurement runs for seconds, not milliseconds).
    static func cpuSeconds(_ pids: [Int32]) -> Double {
        pids.reduce(0) { total, pid in
            guard let fields = statFields(pid), fields.count > 12,
                  let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
            return total + (user + system) / ticksPerSecond
        }
    }

    /// VmRSS of `pids`, in KiB.
    static func residentKiB(_ pids: [Int32]) -> Int {
        pids.reduce(0) { total, pid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else {
                return total
            }
            return total + kib
        }
    }

    /// /proc/PID/stat after the command name (which may hold spaces): field 0 is the state
    /// (stat's 3rd), 1 the parent pid, 11 utime and 12 stime (stat's 14th and 15th).
    private static func statFields(_ pid: Int32) -> [Substring]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let closing = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: closing)...].split(separator: " ")
    }
}

/// A front's CPU over a span of the bench, read at its start and at its end.
struct CPUMeter {
    let pids: [Int32]
    let startCPU: Double
    let startWall: Double

    init(pids: [Int32]) {
        self.pids = pids
        startCPU = ProcessStats.cpuSeconds(pids)
        startWall = monotonicSeconds()
    }

    /// (CPU seconds, wall seconds) since `init`.
    func read() -> (cpu: Double, wall: Double) {
        (ProcessStats.cpuSeconds(pids) - startCPU, monotonicSeconds() - startWall)
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
