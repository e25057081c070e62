import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finding what the bench runs, checking the machine has it, and describing the machine.
extension StapleGateBench {
    /// An executable next to this one: `swift build` puts every product of the package in one folder.
    static func sibling(_ name: String) throws -> String {
        let folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = [folder.appendingPathComponent(name).path, Bundle.main.bundleURL.appendingPathComponent(name).path]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchFailure("\(name) is not next to staplegate-bench (looked for \(candidates.joined(separator: ", "))); "
                + "build it (`swift build -c release --product \(name)`) or pass --staplegate PATH")
        }
        return found
    }

    /// A file of the repository, looked for above this executable (.build/<config>/) and above the
    /// current directory.
    static func repositoryFile(_ relativePath: String) throws -> String {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for start in [executable, URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)] {
            var folder = start
            for _ in 0..<6 {
                let candidate = folder.appendingPathComponent(relativePath).path
                if FileManager.default.fileExists(atPath: candidate) { return candidate }
                folder = folder.deletingLastPathComponent()
            }
        }
        throw BenchFailure("\(relativePath) not found above \(executable.path) nor the current directory: run from the repository")
    }

    /// Everything the fronts and load need, named with the Debian package that has it: a missing
    /// one fails here with that name, not halfway through a run.
    static func checkPrerequisites() throws {
        var missing: [String] = []
        for (executable, package) in [("openssl", "openssl"), ("mosquitto", "mosquitto"), ("nginx", "nginx"), ("gnuplot", "gnuplot-nox")]
            where (try? ChildProcess.resolve(executable)) == nil {
            missing.append("\(executable) (Debian package \(package))")
        }
        if !FileManager.default.fileExists(atPath: "/usr/lib/nginx/modules/ngx_stream_module.so") {
            missing.append("nginx's stream module /usr/lib/nginx/modules/ngx_stream_module.so (Debian package libnginx-mod-stream)")
        }
        guard missing.isEmpty else {
            throw BenchFailure("missing: \(missing.joined(separator: "; ")). `make deps` installs them "
                + "(apt-get install nginx libnginx-mod-stream gnuplot-nox mosquitto openssl)")
        }
    }

    static func openFilesLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_cur, rlim_t(Int32.max)))
    }

    /// .build/bench/results/<timestamp> in the repository (or the current directory).
    static func defaultOutput(_ date: Date) throws -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        formatter.locale = Locale(identifier: "en_US_POSIX")
        let package = (try? repositoryFile("Package.swift")).map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
            ?? FileManager.default.currentDirectoryPath
        return "\(package)/.build/bench/results/\(formatter.string(from: date))"
    }

    /// results/latest → the newest results folder.
    static func pointLatest(at folder: String) {
        let url = URL(fileURLWithPath: folder)
        let link = url.deletingLastPathComponent().appendingPathComponent("latest").path
        try? FileManager.default.removeItem(atPath: link)
        try? FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: url.lastPathComponent)
    }

    /// Cores, kernel and the versions of everything measured, for the table's heading.
    static func machine() -> [String: String] {
        func firstLine(_ executable: String, _ arguments: [String]) -> String {
            let pipe = Pipe()
            let process = Process()
            guard let path = try? ChildProcess.resolve(executable) else { return "?" }
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            process.standardOutput = pipe
            process.standardError = pipe
            guard (try? process.run()) != nil else { return "?" }
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "?"
        }
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        let nginx = firstLine("nginx", ["-v"]).replacingOccurrences(of: "nginx version: nginx/", with: "")
        let mosquitto = firstLine("mosquitto", ["-h"]).replacingOccurrences(of: "mosquitto version ", with: "")
        return ["cores": String(ProcessInfo.processInfo.activeProcessorCount), "kernel": "Linux \(kernel)",
                "openssl": firstLine("openssl", ["version"]), "nginx": nginx, "mosquitto": mosquitto]
    }
}
