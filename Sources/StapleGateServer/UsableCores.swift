import CStapleGateShim
import NIOCore

/// How many cores this process may run on: NIO's count (cgroup quota or cpuset, else every
/// online core) further limited by the CPU affinity mask, which NIO does not read. Under
/// `taskset -c 1` or systemd's `CPUAffinity=1` one event loop per allowed core, not per core
/// of the machine: two loops on one core only add switches between them.
public enum UsableCores {
    public static var count: Int {
        let affinity = Int(sg_allowed_cpu_count())
        return max(1, affinity > 0 ? min(System.coreCount, affinity) : System.coreCount)
    }
}
