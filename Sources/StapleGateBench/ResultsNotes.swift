/// How each figure is measured: printed under the tables of results.md and kept in results.json.
extension ResultsReport {
    static let notes = [
        "Same PKI (ECDSA P-256 server and device certificates), client certificate required everywhere, all on 127.0.0.1. "
            + "Every client speaks TLS 1.3 with X25519. (a) accepts TLS 1.2 too and offers X25519:P-256, as the example "
            + "configuration does; (a′) and nginx accept TLS 1.3 and X25519 only; Mosquitto 2.0.11 TLS 1.3 only and has "
            + "no groups option (OpenSSL's default picks X25519).",
        "(a) StapleGate defaults: config/staplegate.yaml loaded and written back with only the listen address and port, "
            + "the admin port, the certificate, key and device CA files, the broker's port, the state directory and "
            + "`listen.drain_grace_period: 0` changed. Stapling and device OCSP ask the bench's responder through the "
            + "certificates' AIA (the bench checks the AIA URL, that a staple is served and that the responder was asked). "
            + "Its trace store (SQLite in its state directory), admin listener and info-level log are on, as shipped.",
        "Server CPU: utime + stime from /proc/PID/stat of the front's own processes (StapleGate; nginx master + workers; "
            + "the TLS Mosquitto), read before and after, divided by the work done. Clock ticks are 10 ms, hence runs of seconds.",
        "Handshakes: `openssl s_time -new` (full) or `-reuse` (TLS 1.3 ticket resumption) with `-www /`: each connection sends "
            + "one non-MQTT request and reads until the front closes, which s_time needs to take in the TLS 1.3 ticket; every "
            + "front rejects it, nginx after dialling Mosquitto (it proxies before any byte arrives), StapleGate without dialling. "
            + "With the defaults, StapleGate logs each refusal (a warning line) and traces it, as it would a device's "
            + "CONNECT (an info line and its events); the stripped configuration does neither. The four fronts run side by "
            + "side and are measured in alternation: `handshake_rounds` rounds of one s_time slice each "
            + "(`handshake_seconds` / rounds, the order turned each round), and a front's CPU is read from before its first "
            + "slice to after its last, so the machine's drift over minutes falls on every front alike.",
        "StapleGate staples its OCSP response (local `openssl ocsp` responder); nginx and Mosquitto do not staple.",
        "Throughput and latency: `staplegate load` (libmosquitto) publishers → one subscriber, QoS 0, through the front. "
            + "Each message crosses the front twice (publisher → broker, broker → subscriber); CPU per message = front CPU "
            + "from the first publish to the last delivery / ((messages published + messages delivered) / 2). As fast as "
            + "they go, the publishers outrun the one subscriber and the broker drops QoS 0 messages, which crossed the "
            + "front once: dividing by deliveries alone charged them to the front that let the most through (at 4 KiB a "
            + "front passed 645 000 messages and 165 000 were delivered). With nothing dropped both are the same. "
            + "For (a), (a′) and (b) the broker behind "
            + "is not counted; for (c) the broker is the front, so its CPU includes the broker's own routing work.",
        "Latency: publish → deliver at a fixed total rate below saturation (the rate is in results.json's settings). "
            + "Both Mosquittos run with `set_tcp_nodelay true`: with their default, Nagle and delayed ACKs put every "
            + "front's p99.9 at 10–20 ms.",
        "Cores: with two or more, the server side (the front, the broker behind it, the OCSP responder) runs on one "
            + "half of the cores and the load generators on the other (taskset; `--no-pin` turns it off), so the "
            + "generators' own TLS work (≈ 1.3 ms of client CPU per session) does not compete with the front's and the "
            + "time to open the sessions measures the front. nginx gets one worker per server core, as StapleGate one "
            + "event loop per core it may run on.",
        "Where two fronts' min–max ranges overlap, their difference is within run-to-run noise (larger on a "
            + "machine shared with other work); a target judged on such medians is not settled.",
        "RSS per idle session: (VmRSS of the front's processes with every session open, 1 s after the last CONNACK − VmRSS "
            + "before) / sessions. All sessions present the same device certificate with distinct client ids. "
            + "Time to open: first connect → last CONNACK, at most `session_concurrency` in flight.",
        "Targets: judged on the medians of this bench's runs, each against the peer measured in the same bench. CPU per "
            + "message also fails on a slow mode: any run of (a) above 1.5 × (a)'s own median.",
        "StapleGate features: each row a gateway of its own, all seven running at once, warmed by one connection, then "
            + "s_time full handshakes in alternation as for the fronts. Defaults = (a)'s configuration; each variant changes one "
            + "key: trace.enabled false; device_ocsp.enabled false; device_ocsp.cache_lifetime 1ms (every handshake asks the "
            + "loopback responder, as a device's first connect does: s_time presents one certificate, so a new device each "
            + "time is approximated by an expired cache entry; trace on). Costs: (defaults − variant) / variant, first-connect "
            + "extra = first connect − defaults, each within one run, then the median over runs. The responder's CPU (during "
            + "a first-connect gateway's slices) is shown apart and not counted in StapleGate's. The stripped rows are the "
            + "device-OCSP figures before issue 15, the cache hit against the stripped configuration with device OCSP off.",
        "StapleGate fleet (issue 14), against a PostgreSQL 15 the bench starts (fsync off, on the fronts' cores), on the "
            + "stripped configuration: the cache-hit figure again with `fleet.store: postgres` (a local hit must not touch the "
            + "database), beside the same run's stripped SQLite figure. Then a reader gateway started on an empty table, a writer "
            + "gateway asking the responder about `fleet_devices` certificates (good answers go to the table, not to the other "
            + "gateways), and the reader taking one session per certificate (`staplegate load sessions --devices-dir`): every "
            + "one a local miss answered by the table; then the same load again on the reader: every one a local hit. A first "
            + "load with one certificate takes the reader's first-load costs out of the miss pass. CPU per session = the "
            + "reader's CPU from the first connect to the last CONNACK / sessions: full handshake + MQTT CONNECT/CONNACK "
            + "through to the broker (+ the table read). The check rows come from the reader's metrics (hits, misses, "
            + "responder requests) and the table (rows it wrote): a pass that is not all hits, or not all table answers "
            + "without a responder request, leaves its figure out.",
    ]
}
