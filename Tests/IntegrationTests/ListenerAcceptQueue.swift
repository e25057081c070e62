import Foundation

/// The listener's accept queue on `port` (Recv-Q of `ss -ltn`): connections the kernel
/// completed that the gateway has not accepted.
func listenerAcceptQueue(port: Int) throws -> Int {
    let ss = Process()
    ss.executableURL = URL(fileURLWithPath: "/usr/bin/ss")
    ss.arguments = ["-ltnH", "sport = :\(port)"]
    let pipe = Pipe()
    ss.standardOutput = pipe
    try ss.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    ss.waitUntilExit()
    let fields = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace)
    guard fields.count >= 2, let queued = Int(fields[1]) else {
        throw AdminHTTPError("ss printed no listener on port \(port): \(String(decoding: data, as: UTF8.self))")
    }
    return queued
}
