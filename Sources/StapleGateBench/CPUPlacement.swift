import Foundation

/// Which cores the bench's processes run on. The server side (the front under test, the broker
/// behind it and the OCSP responder) gets one half, the clients (`openssl s_time`,
/// `staplegate load`) the other. Sharing cores, the load generator's own TLS work (≈ 1.3 ms per
/// session) competed with the fronts', and the time to open 5 000 sessions measured the
/// generator more than the front.
struct CPUPlacement: Codable, Equatable {
    /// taskset lists ("1", "2-3"); nil: anywhere (one core, or pinning turned off).
    var servers: String?
    var clients: String?
    /// Cores the server side may use: nginx gets one worker per core, as StapleGate one event
    /// loop per core it is allowed on.
    var serverCores: Int

    static func unpinned(cores: Int) -> CPUPlacement {
        CPUPlacement(servers: nil, clients: nil, serverCores: cores)
    }

    /// Clients on the lower half of `cores`, servers on the rest (the larger half when odd).
    static func split(_ cores: [Int]) -> CPUPlacement {
        guard cores.count >= 2 else { return .unpinned(cores: max(cores.count, 1)) }
        let clients = Array(cores.prefix(cores.count / 2))
        let servers = Array(cores.dropFirst(cores.count / 2))
        return CPUPlacement(servers: servers.map(String.init).joined(separator: ","),
                            clients: clients.map(String.init).joined(separator: ","), serverCores: servers.count)
    }

    /// The cores this process may run on, from /proc/self/status (which honours taskset and
    /// cpusets), e.g. "0-3,6" → [0, 1, 2, 3, 6]; nil if unreadable.
    static func allowedCores(status: String? = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) -> [Int]? {
        guard let line = status?.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return nil }
        return parseList(line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces))
    }

    /// The kernel's CPU list syntax: comma-separated numbers and inclusive ranges.
    static func parseList(_ list: String) -> [Int]? {
        var cores: [Int] = []
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1: guard let core = bounds[0] else { return nil }; cores.append(core)
            case 2:
                guard let low = bounds[0], let high = bounds[1], low <= high else { return nil }
                cores += Array(low...high)
            default: return nil
            }
        }
        return cores.isEmpty ? nil : cores
    }
}
