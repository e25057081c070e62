import NIOCore
import ServiceLifecycle

/// Sends systemd "WATCHDOG=1" at half the watchdog interval, but only once every event loop
/// has run a task since the last one: a loop stuck in a busy handshake or a deadlock stops the
/// pings, and systemd restarts the gateway.
public struct WatchdogKeepAlive: Service {
    let notifier: SystemdNotifier
    let interval: Duration
    let group: EventLoopGroup

    public init(notifier: SystemdNotifier, interval: Duration, group: EventLoopGroup) {
        self.notifier = notifier
        self.interval = interval
        self.group = group
    }

    public func run() async throws {
        let loops = Array(group.makeIterator())
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let answered = loops.map { $0.submit {} }
                // Every loop answered: alive. Otherwise this round sends nothing.
                if (try? await EventLoopFuture.andAllSucceed(answered, on: loops[0]).get()) != nil {
                    notifier.notify("WATCHDOG=1")
                }
                do { try await Task.sleep(for: interval / 2) } catch { return }
            }
        }
    }
}
