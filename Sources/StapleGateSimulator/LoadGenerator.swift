import CMosquitto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `staplegate load`: many libmosquitto sessions driven by a few threads, to measure a front
/// (StapleGate, nginx stream, Mosquitto's own TLS listener) from a separate process. Opens the
/// sessions with a bounded number of handshakes in flight, then holds them (sessions mode) or
/// publishes QoS 0 messages to subscribers (throughput and latency modes), then disconnects
/// them all cleanly; reports the figures and the CPU it used itself.
public struct LoadGenerator {
    public let options: LoadOptions
    private let note: (String) -> Void

    /// `note` receives a line per phase as it starts (the CLI prints them on stderr).
    public init(options: LoadOptions, note: @escaping (String) -> Void = { _ in }) {
        self.options = options
        self.note = note
    }

    /// Longest wait for the SUBACKs before publishing anyway.
    static let subscribeTimeout: UInt64 = 10_000_000_000
    /// Publishing stops being waited for (in the drain phase) once nothing arrived for this long.
    static let drainQuiet: UInt64 = 1_000_000_000

    public func run() throws(LoadOptionsError) -> LoadReport {
        let options = try self.options.validated()
        // libmosquitto and OpenSSL write with write(2): a front closing a session while it is
        // written to must end that session, not the whole process.
        signal(SIGPIPE, SIG_IGN)
        let openFiles = Self.raiseOpenFilesLimit()
        try options.checkDescriptors(limit: openFiles)
        mosquitto_lib_init()
        defer { mosquitto_lib_cleanup() }
        let contexts = try LoadTLSContext.contexts(for: options)

        let workerCount = min(options.threads, options.sessionCount)
        let sessions = Self.assign(options: options, contexts: contexts, workers: workerCount)
        let control = LoadControl(workers: workerCount)
        let publishersInTotal = options.mode == .sessions ? 0 : options.publishers
        let workers = sessions.enumerated().map { index, share in
            let limit = options.mode == .sessions
                ? options.concurrency / workerCount + (index < options.concurrency % workerCount ? 1 : 0)
                : share.count
            return LoadWorker(index: index, options: options, control: control, sessions: share, maximumInFlight: limit,
                              publishersInTotal: publishersInTotal)
        }

        let security = options.useTLS ? "TLS \(options.tlsVersion.rawValue)" : "plain MQTT"
        note("opening \(options.sessionCount) sessions to \(options.host):\(options.port) (\(security)) on \(workerCount) thread\(workerCount == 1 ? "" : "s")"
            + (options.mode == .sessions ? ", at most \(options.concurrency) in flight" : ""))
        let startUsage = ResourceUsage.now()
        let startWall = monotonicNanoseconds()
        control.phase = .connect
        let done = DispatchGroup()
        for worker in workers {
            done.enter()
            let thread = Thread {
                worker.run()
                done.leave()
            }
            thread.name = "load-\(worker.index)"
            thread.stackSize = 1 << 20
            thread.start()
        }

        wait(control) { $0.allSatisfy(\.connectFinished) }
        let openUsage = ResourceUsage.now()
        let opened = control.snapshot.reduce(0) { $0 + $1.opened }
        note("\(opened) of \(options.sessionCount) sessions open")

        var publishStartUsage: ResourceUsage?
        var publishEndUsage: ResourceUsage?
        var subscribersReady: Int?
        switch options.mode {
        case .sessions:
            if options.hold > 0 {
                note("holding them for \(formatSeconds(options.hold)) s")
                control.phase = .hold
                let until = monotonicNanoseconds() + UInt64(options.hold * 1e9)
                wait(control) { _ in monotonicNanoseconds() >= until }
            }
        case .throughput, .latency:
            control.phase = .subscribe
            let deadline = monotonicNanoseconds() + Self.subscribeTimeout
            wait(control) { progress in
                progress.reduce(0) { $0 + $1.subscribed } >= progress.reduce(0) { $0 + $1.subscribersConnected }
                    || monotonicNanoseconds() >= deadline
            }
            subscribersReady = control.snapshot.reduce(0) { $0 + $1.subscribed }
            let rate = options.rate.map { "\(formatSeconds($0)) msg/s" } ?? "as fast as possible"
            note("publishing for \(formatSeconds(options.duration)) s, \(rate)")
            publishStartUsage = ResourceUsage.now()
            let start = monotonicNanoseconds() + 10_000_000
            control.phase = .publish(start: start, end: start + UInt64(options.duration * 1e9))
            wait(control) { $0.allSatisfy(\.publishFinished) }
            control.phase = .drain
            // Until every subscriber has every message, or nothing more arrived for a while.
            let drainEnd = monotonicNanoseconds() + UInt64(options.drainTimeout * 1e9)
            var lastCount: UInt64 = 0
            var lastChange = monotonicNanoseconds()
            wait(control) { progress in
                let now = monotonicNanoseconds()
                let received = progress.reduce(0) { $0 + $1.received }
                let expected = progress.reduce(0) { $0 + $1.sent } * UInt64(subscribersReady ?? 0)
                if received != lastCount {
                    lastCount = received
                    lastChange = now
                }
                return received >= expected || now >= drainEnd || now - lastChange >= Self.drainQuiet
            }
            publishEndUsage = ResourceUsage.now()
        }

        note("disconnecting")
        control.phase = .disconnect
        done.wait()
        let endWall = monotonicNanoseconds()
        let endUsage = ResourceUsage.now()
        return Self.report(options: options, results: control.finishedResults, contexts: contexts.count, threads: workerCount,
                           subscribersReady: subscribersReady, openFiles: openFiles,
                           usage: (start: startUsage, open: openUsage, publishStart: publishStartUsage, publishEnd: publishEndUsage, end: endUsage),
                           wallSeconds: Double(endWall - startWall) / 1e9)
    }

    /// Polls the workers' progress every 2 ms until `condition` holds.
    private func wait(_ control: LoadControl, until condition: ([WorkerProgress]) -> Bool) {
        while !condition(control.snapshot) { usleep(2_000) }
    }

    /// Spreads the sessions over the workers. With two threads or more, subscribers get threads
    /// of their own (half of them at most) so that receiving never waits behind publishing.
    static func assign(options: LoadOptions, contexts: [LoadTLSContext], workers: Int) -> [[LoadWorker.Session]] {
        var shares = Array(repeating: [LoadWorker.Session](), count: workers)
        func tls(_ number: Int) -> LoadTLSContext? { contexts.isEmpty ? nil : contexts[number % contexts.count] }
        func id(_ number: Int) -> String { "\(options.clientIDPrefix)-\(number + 1)" }
        switch options.mode {
        case .sessions:
            for number in 0..<options.sessions {
                shares[number % workers].append(.init(clientID: id(number), role: .idle, tls: tls(number)))
            }
        case .throughput, .latency:
            let subscriberWorkers = workers >= 2 && options.subscribers > 0 ? max(1, min(options.subscribers, workers / 2)) : 0
            let publisherWorkers = workers - subscriberWorkers
            for number in 0..<options.subscribers {
                let worker = subscriberWorkers > 0 ? number % subscriberWorkers : 0
                shares[worker].append(.init(clientID: id(number), role: .subscriber, tls: tls(number)))
            }
            for index in 0..<options.publishers {
                let number = options.subscribers + index
                shares[subscriberWorkers + index % publisherWorkers].append(
                    .init(clientID: id(number), role: .publisher(index: UInt32(index)), tls: tls(number)))
            }
        }
        return shares
    }

    /// Raises the soft open-files limit to the hard one; returns the limit in force.
    static func raiseOpenFilesLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(min(limit.rlim_cur, rlim_t(Int32.max)))  // RLIM_INFINITY is the largest value
    }

    // swiftlint:disable:next function_parameter_count
    static func report(options: LoadOptions, results: [WorkerResult], contexts: Int, threads: Int, subscribersReady: Int?,
                       openFiles: Int,
                       usage: (start: ResourceUsage, open: ResourceUsage, publishStart: ResourceUsage?, publishEnd: ResourceUsage?, end: ResourceUsage),
                       wallSeconds: Double) -> LoadReport {
        let progress = results.map(\.progress)
        func sum<T: AdditiveArithmetic>(_ field: (WorkerProgress) -> T) -> T { progress.reduce(.zero) { $0 + field($1) } }
        var reasons: [String: Int] = [:]
        var connectTimes = LatencyHistogram()
        var latencies = LatencyHistogram()
        for result in results {
            reasons.merge(result.failureReasons, uniquingKeysWith: +)
            connectTimes.merge(result.connectTimes)
            latencies.merge(result.latencies)
        }
        let opened = sum(\.opened)
        let firstStart = progress.map(\.firstConnectStart).min() ?? .max
        let lastConnack = progress.map(\.lastConnack).max() ?? 0
        let openSeconds = opened > 0 && lastConnack > firstStart ? Double(lastConnack - firstStart) / 1e9 : nil
        // Milliseconds to the microsecond, microseconds to the tenth: the histogram's precision is 0.8 % anyway.
        func milliseconds(_ percentile: Double) -> Double? {
            connectTimes.value(atPercentile: percentile).map { (Double($0) / 1e3).rounded() / 1e3 }
        }
        func microseconds(_ value: UInt64?) -> Double? { value.map { (Double($0) / 1e2).rounded() / 10 } }
        let totalCPU = usage.end - usage.start

        var report = LoadReport(
            mode: options.mode.rawValue, target: "\(options.host):\(options.port)", tls: options.useTLS,
            tlsVersion: options.useTLS ? options.tlsVersion.rawValue : nil, clientCertificates: options.identity == .none ? 0 : contexts,
            threads: threads, sessionsRequested: options.sessionCount, sessionsOpened: opened, sessionsFailed: sum(\.failed),
            sessionsDropped: sum(\.dropped), sessionsDisconnectedCleanly: sum(\.disconnectedCleanly), failureReasons: reasons,
            openSeconds: openSeconds.map(round), sessionsOpenedPerSecond: openSeconds.map { round(Double(opened) / $0) },
            connectP50Milliseconds: milliseconds(50), connectP99Milliseconds: milliseconds(99), connectMaxMilliseconds: milliseconds(100),
            openCPUSeconds: round((usage.open - usage.start).total),
            wallSeconds: round(wallSeconds), cpuUserSeconds: round(totalCPU.user), cpuSystemSeconds: round(totalCPU.system),
            cpuSeconds: round(totalCPU.total), cpuPercentOfOneCore: round(totalCPU.total / max(wallSeconds, 1e-9) * 100),
            maxRSSKibibytes: usage.end.maxRSSKibibytes, openFilesLimit: openFiles)

        switch options.mode {
        case .sessions:
            report.concurrency = options.concurrency
            report.holdSeconds = options.hold
        case .throughput, .latency:
            let sent = sum(\.sent)
            let received = sum(\.received)
            let expected = sent * UInt64(subscribersReady ?? 0)
            let firstPublish = progress.map(\.firstPublish).min() ?? .max
            let lastPublish = progress.map(\.lastPublish).max() ?? 0
            let lastReceive = progress.map(\.lastReceive).max() ?? 0
            report.publishers = options.publishers
            report.subscribers = options.subscribers
            report.subscribersReady = subscribersReady
            report.topic = options.topic
            report.payloadBytes = options.payloadSize
            report.targetMessagesPerSecond = options.rate
            report.messagesSent = sent
            report.messagesReceived = received
            report.messagesExpected = expected
            report.messagesMissing = expected > received ? expected - received : 0
            if sent > 0, lastPublish > firstPublish {
                let seconds = Double(lastPublish - firstPublish) / 1e9
                report.publishSeconds = round(seconds)
                report.sentMessagesPerSecond = round(Double(sent) / seconds)
                report.sentBytesPerSecond = round(Double(sum(\.sentBytes)) / seconds)
            }
            if received > 0, firstPublish != .max, lastReceive > firstPublish {
                let seconds = Double(lastReceive - firstPublish) / 1e9
                report.messagesPerSecond = round(Double(received) / seconds)
                report.bytesPerSecond = round(Double(sum(\.receivedBytes)) / seconds)
            }
            if let begin = usage.publishStart, let end = usage.publishEnd { report.publishCPUSeconds = round((end - begin).total) }
            if options.payloadSize >= PayloadStamp.size {
                report.latencyCount = latencies.count
                report.latencyMinMicroseconds = microseconds(latencies.isEmpty ? nil : latencies.minimum)
                report.latencyMeanMicroseconds = latencies.mean.map { ($0 / 1e2).rounded() / 10 }
                report.latencyP50Microseconds = microseconds(latencies.value(atPercentile: 50))
                report.latencyP90Microseconds = microseconds(latencies.value(atPercentile: 90))
                report.latencyP99Microseconds = microseconds(latencies.value(atPercentile: 99))
                report.latencyP999Microseconds = microseconds(latencies.value(atPercentile: 99.9))
                report.latencyMaxMicroseconds = microseconds(latencies.isEmpty ? nil : latencies.maximum)
            }
        }
        return report
    }

    /// Six decimals: enough for every figure, short in the JSON.
    static func round(_ value: Double) -> Double { (value * 1e6).rounded() / 1e6 }
}

/// This process's CPU time (all threads) and peak memory, from getrusage.
struct ResourceUsage: Sendable {
    var user: Double
    var system: Double
    var maxRSSKibibytes: Int

    var total: Double { user + system }

    static func now() -> ResourceUsage {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return ResourceUsage(user: seconds(usage.ru_utime), system: seconds(usage.ru_stime), maxRSSKibibytes: Int(usage.ru_maxrss))
    }

    static func - (end: ResourceUsage, start: ResourceUsage) -> ResourceUsage {
        ResourceUsage(user: end.user - start.user, system: end.system - start.system, maxRSSKibibytes: end.maxRSSKibibytes)
    }
}
