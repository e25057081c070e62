import Foundation

/// A real HTTP server (Debian's python3, one thread per connection) standing where an OCSP
/// responder should be, and misbehaving in one of the ways a real one can: answering one byte a
/// second (a slowloris responder), or sending a body far over any sane size. It reads each
/// request's head, then answers, and watches the connection while it does, so the test learns
/// from the server's side how long the gateway held on and how much of the answer it let in:
/// one `ended` line per connection, with the seconds from accept to the end, why it ended
/// ("finished" or "closed by the client") and the bytes sent.
public final class MisbehavingResponder: @unchecked Sendable {
    public enum Behaviour: Sendable {
        /// A plausible `200 application/ocsp-response` head and body, one byte per second.
        case trickle
        /// `200 application/ocsp-response` with `bytes` of body, 16 KiB every 10 ms (a MiB in
        /// about 0.7 s, so that a client hanging up early is seen before everything is sent);
        /// `announced`: with a Content-Length.
        case large(bytes: Int, announced: Bool)
    }

    /// One connection's end, as the server saw it.
    public struct Ending: Sendable, CustomStringConvertible {
        public let seconds: Double
        /// "finished", or "closed by the client (…)".
        public let reason: String
        public let bytesSent: Int
        public var closedByClient: Bool { reason.hasPrefix("closed by the client") }
        public var description: String { "after \(seconds) s: \(reason), \(bytesSent) bytes sent" }
    }

    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let process: ManagedProcess

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Listens on 127.0.0.1:`port` (a free one by default; a PKI's `ocspPort` to stand where its
    /// certificates' AIA points, once the real responder there is stopped).
    public static func start(_ behaviour: Behaviour, port: Int? = nil) async throws -> MisbehavingResponder {
        let port = try port ?? FreePort.next()
        let arguments: [String]
        switch behaviour {
        case .trickle: arguments = ["trickle", "\(port)"]
        case let .large(bytes, announced): arguments = ["large", "\(port)", "\(bytes)", announced ? "announced" : "unannounced"]
        }
        let process = try ManagedProcess("/usr/bin/python3", ["-u", "-c", script] + arguments)
        process.killProcessGroupAtExit()
        let responder = MisbehavingResponder(port: port, process: process)
        do {
            // Its own "listening" line, not a probe: a probe would count as a connection.
            try await waitUntil(timeout: .seconds(20), "the misbehaving responder to listen on \(port)",
                                details: { process.output }) {
                guard process.isRunning else { throw Failure(description: "python3 exited\n\(process.output)") }
                return process.stdout.contains("listening")
            }
        } catch {
            await responder.stop()
            throw error
        }
        return responder
    }

    private init(port: Int, process: ManagedProcess) {
        self.port = port
        self.process = process
    }

    /// Requests whose head it has read.
    public var requests: Int { process.stdout.lines.filter { $0.hasPrefix("request ") }.count }

    /// The connections that ended, in order.
    public var endings: [Ending] {
        process.stdout.lines.compactMap { line in
            // "ended 3 4.021 4 closed by the client (EOF)"
            let fields = line.split(separator: " ", maxSplits: 4)
            guard fields.count == 5, fields[0] == "ended", let seconds = Double(fields[2]), let sent = Int(fields[3]) else {
                return nil
            }
            return Ending(seconds: seconds, reason: String(fields[4]), bytesSent: sent)
        }
    }

    public var log: String { process.output }

    public func stop() async {
        await process.terminateProcessGroup(grace: .milliseconds(200))
    }

    private static let script = #"""
    import select, socket, sys, threading, time

    mode, port = sys.argv[1], int(sys.argv[2])
    OCSP_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nConnection: close\r\n"

    def answer():
        if mode == "trickle":
            body = b"\x30" * 100
            return (OCSP_HEAD + "Content-Length: %d\r\n\r\n" % len(body)).encode() + body, 1, 1.0
        size, announced = int(sys.argv[3]), sys.argv[4] == "announced"
        head = OCSP_HEAD + ("Content-Length: %d\r\n" % size if announced else "") + "\r\n"
        return head.encode() + b"\x30" * size, 16384, 0.01

    def serve(conn, number):
        started = time.monotonic()
        sent, reason = 0, "finished"
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    raise ConnectionError("EOF before the request head ended")
                request += chunk
            print("request %d" % number, flush=True)
            data, step, pause = answer()
            while sent < len(data):
                conn.sendall(data[sent:sent + step])
                sent = min(len(data), sent + step)
                deadline = time.monotonic() + pause
                while time.monotonic() < deadline:
                    # Wakes at once when the client hangs up, so the end is timed to the moment;
                    # what else is readable is the rest of the request, ignored.
                    readable, _, _ = select.select([conn], [], [], max(0, deadline - time.monotonic()))
                    if readable and conn.recv(65536) == b"":
                        raise ConnectionError("EOF")
        except (OSError, ConnectionError) as error:
            reason = "closed by the client (%s)" % (error.strerror if isinstance(error, OSError) and error.strerror else error)
        finally:
            conn.close()
        print("ended %d %.3f %d %s" % (number, time.monotonic() - started, sent, reason), flush=True)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("listening on %d" % port, flush=True)
    number = 0
    while True:
        conn, _ = listener.accept()
        number += 1
        threading.Thread(target=serve, args=(conn, number), daemon=True).start()
    """#
}
