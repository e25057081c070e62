import CEpoll
import CMosquitto
import COpenSSL
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A thread driving its share of the sessions with libmosquitto's external-loop API: every
/// client's socket in one epoll set (level-triggered), `mosquitto_loop_read` when readable,
/// `mosquitto_loop_write` when libmosquitto wants to write and the socket can take it,
/// `mosquitto_loop_misc` once a second for keepalives. With TLS, libmosquitto runs the
/// handshake inside `mosquitto_loop_read` (not `_write`) until it is finished, so a handshaking
/// client is read on every event, writable ones included.
final class LoadWorker: @unchecked Sendable {
    struct Session {
        let clientID: String
        let role: SessionRole
        let tls: LoadTLSContext?
    }

    let index: Int
    let options: LoadOptions
    let control: LoadControl
    /// Most sessions of this worker between connect start and CONNACK at once.
    let maximumInFlight: Int
    private let sessions: [Session]
    private var clients: [LoadClient] = []
    private var epoll: Int32 = -1

    // State of the loop (worker thread only).
    var progress = WorkerProgress()
    private var failureReasons: [String: Int] = [:]
    private var connectTimes = LatencyHistogram()
    private var latencies = LatencyHistogram()
    private var nextToStart = 0
    private var inFlight: [Int] = []
    private var publisherSlots: [Int] = []
    private var subscribeIssued = false
    private var disconnectDeadline: UInt64?
    private var closing = 0
    private var payload: [UInt8]
    private let topic: String
    private let publishInterval: UInt64?
    private let connectTimeout: UInt64

    init(index: Int, options: LoadOptions, control: LoadControl, sessions: [Session], maximumInFlight: Int,
         publishersInTotal: Int) {
        self.index = index
        self.options = options
        self.control = control
        self.sessions = sessions
        self.maximumInFlight = max(1, maximumInFlight)
        topic = options.topic
        payload = [UInt8](repeating: UInt8(ascii: "x"), count: options.payloadSize)
        // Each publisher sends at rate / publishers.
        publishInterval = options.rate.map { UInt64(1e9 * Double(publishersInTotal) / $0) }.map { max($0, 1) }
        connectTimeout = UInt64(options.connectTimeout * 1e9)
    }

    /// Runs on the worker's own thread until the disconnect phase is over.
    func run() {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epoll >= 0, "epoll_create1: \(String(cString: strerror(errno)))")
        defer { close(epoll) }
        clients = sessions.enumerated().map { slot, session in
            LoadClient(slot: slot, clientID: session.clientID, role: session.role, tls: session.tls, worker: self)
        }
        publisherSlots = clients.filter(\.isPublisher).map(\.slot)

        var events = [epoll_event](repeating: epoll_event(), count: 512)
        var lastMisc = monotonicNanoseconds()
        var lastReport: UInt64 = 0
        var lastTimeoutCheck: UInt64 = 0
        while true {
            let now = monotonicNanoseconds()
            let phase = control.phase
            var timeout: Int32 = 10
            switch phase {
            case .connect:
                startConnections()
                if now &- lastTimeoutCheck > 50_000_000 {
                    lastTimeoutCheck = now
                    failTimedOutConnections(now: now)
                }
                progress.connectFinished = nextToStart == clients.count && inFlight.isEmpty
            case .hold, .drain:
                break
            case .subscribe:
                subscribeOnce()
            case let .publish(start, end):
                if now >= end {
                    progress.publishFinished = true
                } else if now >= start {
                    timeout = publishDue(now: now, end: end)
                } else {
                    timeout = Int32(min(10, (start - now) / 1_000_000))
                }
            case .disconnect:
                if disconnectAll(now: now) {
                    finish()
                    return
                }
            }

            let ready = epoll_wait(epoll, &events, Int32(events.count), timeout)
            if ready > 0 {
                for event in events.prefix(Int(ready)) {
                    handle(clients[Int(event.data.u64)], events: event.events)
                }
            }

            let after = monotonicNanoseconds()
            if after &- lastMisc >= 1_000_000_000 {
                lastMisc = after
                for client in clients where client.state == .connected {
                    let code = mosquitto_loop_misc(client.handle)
                    afterCall(client, code: code, errno: errno)
                }
            }
            if after &- lastReport >= 2_000_000 {
                lastReport = after
                control.report(worker: index, progress)
            }
        }
    }

    // MARK: Connecting

    private func startConnections() {
        while inFlight.count < maximumInFlight, nextToStart < clients.count {
            let client = clients[nextToStart]
            nextToStart += 1
            start(client)
        }
    }

    private func start(_ client: LoadClient) {
        guard let handle = mosquitto_new(client.clientID, true, Unmanaged.passUnretained(client).toOpaque()) else {
            fail(client, reason: "libmosquitto cannot make a client (mosquitto_new: \(String(cString: strerror(errno))))")
            return
        }
        client.handle = handle
        LoadClient.installCallbacks(on: handle)
        // Small messages go out at once: Nagle's algorithm would add the generator's own delay.
        _ = mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1)
        if let tls = client.tls {
            // Used as built: libmosquitto would otherwise apply its defaults (which need a CA file
            // of its own) over the shared context.
            _ = mosquitto_int_option(handle, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0)
            let code = mosquitto_void_option(handle, MOSQ_OPT_SSL_CTX, UnsafeMutableRawPointer(tls.context))
            guard code == MOSQ_ERR_SUCCESS.rawValue else {
                fail(client, reason: "libmosquitto refuses the TLS context: \(String(cString: mosquitto_strerror(code)))")
                return
            }
        }
        client.state = .connecting
        client.connectStart = monotonicNanoseconds()
        progress.firstConnectStart = min(progress.firstConnectStart, client.connectStart)
        inFlight.append(client.slot)
        // Non-blocking TCP connect; with TLS the ClientHello goes out as soon as the socket is
        // connected, and the rest of the handshake happens in mosquitto_loop_read.
        let code = mosquitto_connect_async(handle, options.host, Int32(options.port), Int32(options.keepalive))
        afterCall(client, code: code, errno: errno)
    }

    private func failTimedOutConnections(now: UInt64) {
        for slot in inFlight {
            let client = clients[slot]
            if client.state == .connecting, now > client.connectStart, now - client.connectStart > connectTimeout {
                fail(client, reason: client.failureReason("no CONNACK within \(formatSeconds(options.connectTimeout)) s"))
            }
        }
    }

    /// Called (inside a libmosquitto call) when CONNACK accepted the session.
    func sessionOpened(_ client: LoadClient) {
        let now = monotonicNanoseconds()
        client.state = .connected
        progress.opened += 1
        progress.lastConnack = max(progress.lastConnack, now)
        connectTimes.record(now &- client.connectStart)
        if client.role == .subscriber { progress.subscribersConnected += 1 }
        removeFromInFlight(client)
    }

    func sessionDropped(_ client: LoadClient, reason: String) {
        progress.dropped += 1
        if client.role == .subscriber { progress.subscribersConnected -= 1 }
        failureReasons[reason, default: 0] += 1
    }

    func sessionClosed(_ client: LoadClient) {
        progress.disconnectedCleanly += 1
        closing -= 1
    }

    private func fail(_ client: LoadClient, reason: String) {
        guard client.state == .connecting || client.state == .waiting else { return }
        client.state = .failed
        progress.failed += 1
        failureReasons[reason, default: 0] += 1
        removeFromInFlight(client)
        destroy(client)
    }

    private func removeFromInFlight(_ client: LoadClient) {
        if let position = inFlight.firstIndex(of: client.slot) { inFlight.remove(at: position) }
    }

    private func destroy(_ client: LoadClient) {
        if let handle = client.handle {
            // Closes the socket, which leaves the epoll set with it.
            mosquitto_destroy(handle)
            client.handle = nil
        }
        client.socket = -1
        client.registeredEvents = 0
    }

    // MARK: I/O

    private func handle(_ client: LoadClient, events: UInt32) {
        guard let handle = client.handle, client.socket >= 0 else { return }  // closed since epoll_wait
        let handshaking = client.tls != nil && client.state == .connecting && !client.handshakeFinished
        let trouble = events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
        if trouble, client.state == .connecting, let error = pendingSocketError(client.socket) {
            // Refused or reset before libmosquitto read it (which would clear it).
            fail(client, reason: client.failureReason(String(cString: strerror(error))))
            return
        }
        if events & EPOLLIN.rawValue != 0 || trouble || handshaking {
            // One packet per mosquitto_loop_read on plain TCP (more with TLS records in hand):
            // read until the socket is drained, a bounded number of times to stay fair.
            for _ in 0..<64 {
                errno = 0
                let code = mosquitto_loop_read(handle, 1)
                let error = errno
                if handshaking, client.handle != nil, let ssl = mosquitto_ssl_get(handle), SSL_is_init_finished(OpaquePointer(ssl)) == 1 {
                    client.handshakeFinished = true
                }
                afterCall(client, code: code, errno: error, register: false)
                if client.handle == nil || client.socket < 0 || code != MOSQ_ERR_SUCCESS.rawValue || error == EAGAIN
                    || error == EWOULDBLOCK || handshaking { break }
            }
        }
        if client.handle != nil, client.socket >= 0, mosquitto_want_write(handle) {
            errno = 0
            let code = mosquitto_loop_write(handle, 64)
            afterCall(client, code: code, errno: errno, register: false)
        }
        // A refused or reset connection during the handshake: libmosquitto keeps waiting
        // (OpenSSL reports it as a system call error, which libmosquitto retries).
        if trouble, client.state == .connecting, client.handle != nil, client.socket >= 0 {
            let error = pendingSocketError(client.socket)
            fail(client, reason: client.failureReason(error.map { String(cString: strerror($0)) } ?? "the server closed the connection"))
            return
        }
        updateRegistration(client)
    }

    private func pendingSocketError(_ socket: Int32) -> Int32? {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(socket, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error != 0 else { return nil }
        return error
    }

    /// After any libmosquitto call on `client`: act on a failure while connecting, and keep the
    /// epoll registration in step with the client's socket and wish to write.
    private func afterCall(_ client: LoadClient, code: Int32, errno error: Int32, register: Bool = true) {
        if client.state == .connecting {
            if let failure = client.pendingFailure {
                fail(client, reason: failure)
                return
            }
            if code != MOSQ_ERR_SUCCESS.rawValue {
                fail(client, reason: client.describe(code: code, errno: error))
                return
            }
            if let handle = client.handle, mosquitto_socket(handle) < 0 {
                fail(client, reason: client.failureReason("connection closed"))
                return
            }
        }
        if register { updateRegistration(client) }
    }

    private func updateRegistration(_ client: LoadClient) {
        let socket = client.handle.map { mosquitto_socket($0) } ?? -1
        if socket != client.socket {
            // A socket libmosquitto closed left the epoll set by itself.
            client.socket = socket
            client.registeredEvents = 0
            guard socket >= 0 else { return }
            var event = epoll_event()
            event.events = wantedEvents(client)
            event.data.u64 = UInt64(client.slot)
            if epoll_ctl(epoll, EPOLL_CTL_ADD, socket, &event) == 0 {
                client.registeredEvents = event.events
            } else if client.state == .connecting {
                fail(client, reason: "epoll_ctl: \(String(cString: strerror(errno)))")
            }
            return
        }
        guard socket >= 0 else { return }
        let wanted = wantedEvents(client)
        if wanted != client.registeredEvents {
            var event = epoll_event()
            event.events = wanted
            event.data.u64 = UInt64(client.slot)
            if epoll_ctl(epoll, EPOLL_CTL_MOD, socket, &event) == 0 { client.registeredEvents = wanted }
        }
    }

    private func wantedEvents(_ client: LoadClient) -> UInt32 {
        guard let handle = client.handle else { return 0 }
        if client.tls != nil, client.state == .connecting, !client.handshakeFinished, let ssl = mosquitto_ssl_get(handle) {
            // libmosquitto's wish to write stays set from a ClientHello that met a socket still
            // connecting; asking OpenSSL avoids waking on a writable socket for the whole handshake.
            return EPOLLIN.rawValue | (SSL_want(OpaquePointer(ssl)) == SSL_WRITING ? EPOLLOUT.rawValue : 0)
        }
        return EPOLLIN.rawValue | (mosquitto_want_write(handle) ? EPOLLOUT.rawValue : 0)
    }

    // MARK: Subscribing and publishing

    private func subscribeOnce() {
        guard !subscribeIssued else { return }
        subscribeIssued = true
        for client in clients where client.role == .subscriber && client.state == .connected {
            let code = mosquitto_subscribe(client.handle, nil, topic, 0)
            afterCall(client, code: code, errno: errno)
        }
    }

    /// Sends what is due; returns how long epoll may wait (ms) before the next message is due.
    private func publishDue(now: UInt64, end: UInt64) -> Int32 {
        var soonest = UInt64.max
        for (position, slot) in publisherSlots.enumerated() {
            let client = clients[slot]
            guard client.state == .connected, let handle = client.handle else { continue }
            if let interval = publishInterval {
                if client.nextDue == 0 {
                    // Publishers start staggered over one interval.
                    client.nextDue = now + interval / UInt64(publisherSlots.count) * UInt64(position)
                }
                var burst = 0
                while client.nextDue <= now, client.nextDue < end, burst < 256, !mosquitto_want_write(handle) {
                    guard publish(client, handle) else { break }
                    client.nextDue += interval
                    burst += 1
                }
                soonest = min(soonest, client.nextDue)
            } else {
                // As fast as the connection takes them: a burst while libmosquitto has nothing
                // queued, then wait for the socket to drain.
                var burst = 0
                while burst < 32, !mosquitto_want_write(handle) {
                    guard publish(client, handle) else { break }
                    burst += 1
                }
                if burst > 0 { soonest = now }
            }
            updateRegistration(client)
        }
        guard soonest != .max else { return 10 }
        if soonest <= now { return 0 }
        return Int32(min(10, (soonest - now + 999_999) / 1_000_000))
    }

    private func publish(_ client: LoadClient, _ handle: OpaquePointer) -> Bool {
        let sentAt = monotonicNanoseconds()
        let count = payload.count
        let code = payload.withUnsafeMutableBytes { bytes -> Int32 in
            if count >= PayloadStamp.size {
                PayloadStamp(publisher: client.publisherIndex, sequence: client.sequence, sentNanoseconds: sentAt).write(into: bytes)
            }
            return mosquitto_publish(handle, nil, topic, Int32(count), bytes.baseAddress, 0, false)
        }
        guard code == MOSQ_ERR_SUCCESS.rawValue else { return false }
        client.sequence += 1
        progress.sent += 1
        progress.sentBytes += UInt64(count)
        progress.firstPublish = min(progress.firstPublish, sentAt)
        progress.lastPublish = sentAt
        return true
    }

    /// Called (inside mosquitto_loop_read) for each message a subscriber receives.
    func messageReceived(payload: UnsafeMutableRawPointer?, length: Int) {
        let now = monotonicNanoseconds()
        progress.received += 1
        progress.receivedBytes += UInt64(length)
        progress.lastReceive = now
        if let payload, length >= PayloadStamp.size,
           let stamp = PayloadStamp(reading: UnsafeRawBufferPointer(start: payload, count: length)), stamp.sentNanoseconds <= now {
            latencies.record(now - stamp.sentNanoseconds)
        }
    }

    // MARK: Ending

    /// Sends DISCONNECT on every open session once, then waits (at most 5 s) for libmosquitto
    /// to close them. True when every client is freed.
    private func disconnectAll(now: UInt64) -> Bool {
        if disconnectDeadline == nil {
            disconnectDeadline = now + 5_000_000_000
            for client in clients {
                switch client.state {
                case .connected:
                    client.state = .disconnecting
                    closing += 1
                    let code = mosquitto_disconnect(client.handle)
                    if code != MOSQ_ERR_SUCCESS.rawValue, client.state == .disconnecting {
                        client.state = .closed
                        closing -= 1
                    }
                    updateRegistration(client)
                case .waiting, .connecting:
                    fail(client, reason: "the run ended before the session opened")
                case .disconnecting, .failed, .closed:
                    break
                }
            }
        }
        guard closing <= 0 || now >= disconnectDeadline! else { return false }
        for client in clients { destroy(client) }
        return true
    }

    private func finish() {
        progress.finished = true
        control.finish(worker: index, WorkerResult(progress: progress, failureReasons: failureReasons,
                                                   connectTimes: connectTimes, latencies: latencies))
    }
}

func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.3g", seconds)
}
