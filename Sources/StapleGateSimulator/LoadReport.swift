import Foundation

/// Every figure of one `staplegate load` run. `--json` prints it as one JSON object whose keys
/// carry their units; figures a mode does not measure are left out.
public struct LoadReport: Codable, Sendable, Equatable {
    public var mode: String
    public var target: String
    public var tls: Bool
    public var tlsVersion: String?
    /// Client certificates in use (round robin over the sessions).
    public var clientCertificates: Int
    public var threads: Int

    public var sessionsRequested: Int
    public var sessionsOpened: Int
    public var sessionsFailed: Int
    /// Open sessions closed by the other side (or by an error) before the run ended.
    public var sessionsDropped: Int
    public var sessionsDisconnectedCleanly: Int
    /// Why sessions failed or were dropped, with how many each.
    public var failureReasons: [String: Int]
    /// First connect started → last CONNACK received.
    public var openSeconds: Double?
    public var sessionsOpenedPerSecond: Double?
    /// Connect started → CONNACK, per session.
    public var connectP50Milliseconds: Double?
    public var connectP99Milliseconds: Double?
    public var connectMaxMilliseconds: Double?
    /// CPU this process used while opening the sessions.
    public var openCPUSeconds: Double
    public var concurrency: Int?
    public var holdSeconds: Double?

    public var publishers: Int?
    public var subscribers: Int?
    /// Subscribers whose SUBACK arrived before publishing started.
    public var subscribersReady: Int?
    public var topic: String?
    public var payloadBytes: Int?
    /// The total publish rate asked for; absent: as fast as possible.
    public var targetMessagesPerSecond: Double?
    /// First message sent → last message sent.
    public var publishSeconds: Double?
    public var messagesSent: UInt64?
    /// Over all subscribers (each receives every message).
    public var messagesReceived: UInt64?
    /// Sent × subscribers ready.
    public var messagesExpected: UInt64?
    public var messagesMissing: UInt64?
    public var sentMessagesPerSecond: Double?
    public var sentBytesPerSecond: Double?
    /// Messages delivered to subscribers per second (first send → last delivery).
    public var messagesPerSecond: Double?
    /// Payload bytes delivered to subscribers per second.
    public var bytesPerSecond: Double?
    /// CPU this process used while publishing (and receiving).
    public var publishCPUSeconds: Double?

    /// Publish → deliver, over the messages that carried a stamp.
    public var latencyCount: UInt64?
    public var latencyMinMicroseconds: Double?
    public var latencyMeanMicroseconds: Double?
    public var latencyP50Microseconds: Double?
    public var latencyP90Microseconds: Double?
    public var latencyP99Microseconds: Double?
    public var latencyP999Microseconds: Double?
    public var latencyMaxMicroseconds: Double?

    public var wallSeconds: Double
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    public var cpuSeconds: Double
    /// CPU over wall time: 100 is one core busy.
    public var cpuPercentOfOneCore: Double
    public var maxRSSKibibytes: Int
    public var openFilesLimit: Int

    enum CodingKeys: String, CodingKey {
        case mode, target, tls, tlsVersion = "tls_version", clientCertificates = "client_certificates", threads
        case sessionsRequested = "sessions_requested", sessionsOpened = "sessions_opened", sessionsFailed = "sessions_failed"
        case sessionsDropped = "sessions_dropped", sessionsDisconnectedCleanly = "sessions_disconnected_cleanly"
        case failureReasons = "failure_reasons", openSeconds = "open_seconds", sessionsOpenedPerSecond = "sessions_opened_per_second"
        case connectP50Milliseconds = "connect_p50_ms", connectP99Milliseconds = "connect_p99_ms", connectMaxMilliseconds = "connect_max_ms"
        case openCPUSeconds = "open_cpu_seconds", concurrency, holdSeconds = "hold_seconds"
        case publishers, subscribers, subscribersReady = "subscribers_ready", topic, payloadBytes = "payload_bytes"
        case targetMessagesPerSecond = "target_messages_per_second", publishSeconds = "publish_seconds"
        case messagesSent = "messages_sent", messagesReceived = "messages_received", messagesExpected = "messages_expected"
        case messagesMissing = "messages_missing", sentMessagesPerSecond = "sent_messages_per_second"
        case sentBytesPerSecond = "sent_bytes_per_second", messagesPerSecond = "messages_per_second", bytesPerSecond = "bytes_per_second"
        case publishCPUSeconds = "publish_cpu_seconds"
        case latencyCount = "latency_count", latencyMinMicroseconds = "latency_min_us", latencyMeanMicroseconds = "latency_mean_us"
        case latencyP50Microseconds = "latency_p50_us", latencyP90Microseconds = "latency_p90_us", latencyP99Microseconds = "latency_p99_us"
        case latencyP999Microseconds = "latency_p999_us", latencyMaxMicroseconds = "latency_max_us"
        case wallSeconds = "wall_seconds", cpuUserSeconds = "cpu_user_seconds", cpuSystemSeconds = "cpu_system_seconds"
        case cpuSeconds = "cpu_seconds", cpuPercentOfOneCore = "cpu_percent_of_one_core", maxRSSKibibytes = "max_rss_kib"
        case openFilesLimit = "open_files_limit"
    }

    /// Whether every session opened and stayed open: the run's exit status.
    public var succeeded: Bool { sessionsFailed == 0 && sessionsDropped == 0 && sessionsOpened == sessionsRequested }

    /// One line of JSON, keys sorted.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every field is a number, string, bool or string-keyed map: encoding cannot fail.
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// The summary for people.
    public var text: String {
        var lines: [String] = []
        let security = tls ? "TLS \(tlsVersion ?? "?"), \(clientCertificates == 0 ? "no" : String(clientCertificates)) client certificate\(clientCertificates == 1 ? "" : "s")" : "plain MQTT"
        lines.append("staplegate load \(mode) → \(target) (\(security)), \(threads) thread\(threads == 1 ? "" : "s")")
        lines.append("sessions: \(sessionsOpened) of \(sessionsRequested) opened, \(sessionsFailed) failed, \(sessionsDropped) dropped, \(sessionsDisconnectedCleanly) disconnected cleanly at the end")
        if let openSeconds {
            var line = "opened in \(Self.format(openSeconds)) s"
            if let rate = sessionsOpenedPerSecond { line += " (\(Self.format(rate, digits: 0)) sessions/s)" }
            if let p50 = connectP50Milliseconds, let p99 = connectP99Milliseconds, let max = connectMaxMilliseconds {
                line += "; connect → CONNACK p50 \(Self.format(p50)) ms, p99 \(Self.format(p99)) ms, max \(Self.format(max)) ms"
            }
            if let concurrency { line += "; at most \(concurrency) in flight" }
            lines.append(line)
        }
        for (reason, count) in failureReasons.sorted(by: { $0.value > $1.value }) {
            lines.append("  \(count) × \(reason)")
        }
        if let holdSeconds, holdSeconds > 0 { lines.append("held for \(Self.format(holdSeconds)) s") }
        if let publishers, let subscribers, let payloadBytes {
            let rate = targetMessagesPerSecond.map { "\(Self.format($0, digits: 0)) msg/s in total" } ?? "as fast as possible"
            lines.append("publishing: \(publishers) publisher\(publishers == 1 ? "" : "s") → \(subscribersReady ?? 0) of \(subscribers) subscriber\(subscribers == 1 ? "" : "s"), QoS 0, \(payloadBytes)-byte payloads, \(rate), on \(topic ?? "?")")
        }
        if let sent = messagesSent, let received = messagesReceived {
            var line = "sent \(sent)"
            if let publishSeconds, let rate = sentMessagesPerSecond, let bytes = sentBytesPerSecond {
                line += " in \(Self.format(publishSeconds)) s (\(Self.format(rate, digits: 0)) msg/s, \(Self.format(bytes / 1_000_000)) MB/s)"
            }
            line += "; received \(received) of \(messagesExpected ?? 0) expected"
            if let rate = messagesPerSecond, let bytes = bytesPerSecond {
                line += " (\(Self.format(rate, digits: 0)) msg/s, \(Self.format(bytes / 1_000_000)) MB/s)"
            }
            if let missing = messagesMissing, missing > 0 { line += "; \(missing) missing" }
            lines.append(line)
        }
        if let count = latencyCount, count > 0, let p50 = latencyP50Microseconds, let p90 = latencyP90Microseconds,
           let p99 = latencyP99Microseconds, let p999 = latencyP999Microseconds, let max = latencyMaxMicroseconds {
            lines.append("latency publish → deliver over \(count) messages: p50 \(Self.format(p50, digits: 1)) µs, p90 \(Self.format(p90, digits: 1)) µs, "
                + "p99 \(Self.format(p99, digits: 1)) µs, p99.9 \(Self.format(p999, digits: 1)) µs, max \(Self.format(max, digits: 1)) µs")
        }
        var cpu = "load generator: \(Self.format(cpuSeconds)) s CPU (\(Self.format(cpuUserSeconds)) user, \(Self.format(cpuSystemSeconds)) system) "
            + "in \(Self.format(wallSeconds)) s = \(Self.format(cpuPercentOfOneCore, digits: 1)) % of one core"
        cpu += "; opening \(Self.format(openCPUSeconds)) s CPU"
        if let publishCPUSeconds { cpu += ", publishing \(Self.format(publishCPUSeconds)) s CPU" }
        cpu += "; max RSS \(maxRSSKibibytes / 1024) MiB; open files limit \(openFilesLimit)"
        lines.append(cpu)
        return lines.joined(separator: "\n")
    }

    static func format(_ value: Double, digits: Int = 3) -> String {
        String(format: "%.\(digits)f", value)
    }
}
