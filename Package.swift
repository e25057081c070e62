// swift-tools-version:6.0
import Foundation
import PackageDescription

// Libraries are split by concept; data flows device → TLS → (admission) → proxy → broker,
// so each target depends only on the ones before it in that flow (the proxy uses admission's
// MQTT packet counter for its relayed-message metrics).
let strictSwift: [SwiftSetting] = [.swiftLanguageMode(.v6)]
let testSwift: [SwiftSetting] = [.swiftLanguageMode(.v5)]

// The gateway allocates with mimalloc (Debian's libmimalloc2.0) instead of glibc's malloc.
// OpenSSL 3.0 makes thousands of small allocations per handshake (its decoders, stacks and
// BIGNUMs), and the event loops and the trace writer free each other's buffers: run side by side,
// the example configuration took 10–12 % less CPU per full mutual-TLS handshake with it, and no
// more memory per idle session (the README's benchmark section has the figures). Linked by its
// soname so that only the runtime package is needed. STAPLEGATE_MALLOC=system builds with glibc's
// malloc, as sanitizers need (they bring their own).
let allocator: [LinkerSetting] = ProcessInfo.processInfo.environment["STAPLEGATE_MALLOC"] == "system"
    ? [] : [.unsafeFlags(["-Xlinker", "-l:libmimalloc.so.2"], .when(platforms: [.linux]))]

let package = Package(
    name: "StapleGate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "staplegate", targets: ["StapleGateCLI"]),
        .executable(name: "staplegate-bench", targets: ["StapleGateBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // Named only for its TLSConfiguration, which postgres-nio's TLS settings take.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // The system OpenSSL (libssl + libcrypto). One TLS stack in the binary: this one.
        .systemLibrary(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // libmosquitto, as devices use it: the device simulator connects through it.
        .systemLibrary(
            name: "CMosquitto",
            path: "Sources/CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // OpenSSL API that exists only as C macros (SSL_CTX_set_mode, SSL_set_tlsext_*, ...).
        .target(
            name: "CStapleGateShim",
            dependencies: ["COpenSSL"],
            path: "Sources/CStapleGateShim"
        ),
        .target(
            name: "StapleGateTLS",
            dependencies: [
                "COpenSSL", "CStapleGateShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/StapleGateTLS",
            swiftSettings: strictSwift
        ),
        // OCSP for both jobs: stapling our own certificate and checking devices' (one fetch /
        // verify / cache core, as in nginx's ngx_event_openssl_stapling.c).
        .target(
            name: "StapleGateOCSP",
            dependencies: [
                "COpenSSL", "CStapleGateShim", "StapleGateTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Sources/StapleGateOCSP",
            swiftSettings: strictSwift
        ),
        // One fleet, many gateways (issue 14): the device-status store, the staples, the session
        // ticket keys and the traces on PostgreSQL, shared by every gateway of a fleet; chosen once
        // at start in place of the state directory's files. Ticket keys are sealed with libcrypto.
        .target(
            name: "StapleGateFleet",
            dependencies: [
                "StapleGateOCSP", "StapleGateTLS", "StapleGateTrace", "COpenSSL",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Sources/StapleGateFleet",
            swiftSettings: strictSwift
        ),
        .target(
            name: "StapleGateProxy",
            dependencies: [
                "StapleGateAdmission",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Sources/StapleGateProxy",
            swiftSettings: strictSwift
        ),
        // MQTT-aware admission: the device's CONNECT read and judged before the broker is dialled.
        .target(
            name: "StapleGateAdmission",
            dependencies: [
                "StapleGateTLS",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Sources/StapleGateAdmission",
            swiftSettings: strictSwift
        ),
        // HAProxy's PROXY protocol (v1 and v2), for a gateway behind a TCP balancer: the header
        // read from the first bytes of a connection, and written for tests. Pure logic.
        .target(
            name: "StapleGateProxyProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/StapleGateProxyProtocol",
            swiftSettings: strictSwift
        ),
        // Per-device trace events, stored off the event loops: the store protocol, its SQLite
        // implementation (the PostgreSQL one is in StapleGateFleet), the timeline format.
        .target(
            name: "StapleGateTrace",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, for the one insert the writer runs per event (see TraceEvent.bind).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Sources/StapleGateTrace",
            swiftSettings: strictSwift
        ),
        .target(
            name: "StapleGateConfig",
            dependencies: [
                "StapleGateTLS", "StapleGateProxy", "StapleGateOCSP", "StapleGateAdmission", "StapleGateTrace",
                "StapleGateProxyProtocol", "StapleGateFleet",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/StapleGateConfig",
            swiftSettings: strictSwift
        ),
        .target(
            name: "StapleGateServer",
            dependencies: [
                "StapleGateTLS", "StapleGateProxy", "StapleGateConfig", "StapleGateOCSP", "StapleGateAdmission",
                "StapleGateTrace", "StapleGateProxyProtocol", "StapleGateFleet", "CStapleGateShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Sources/StapleGateServer",
            swiftSettings: strictSwift
        ),
        // Linux epoll for the load generator (`staplegate load`), which Glibc's module leaves out.
        .systemLibrary(
            name: "CEpoll",
            path: "Sources/StapleGateSimulator/CEpoll"
        ),
        // A device on libmosquitto with OCSP required: what operators run to check a deployment;
        // and the load generator, many such devices driven by a few threads.
        .target(
            name: "StapleGateSimulator",
            dependencies: [
                "CMosquitto", "COpenSSL", "CStapleGateShim", "StapleGateTLS", "StapleGateOCSP", "CEpoll",
            ],
            path: "Sources/StapleGateSimulator",
            exclude: ["CEpoll"],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "StapleGateCLI",
            dependencies: [
                "StapleGateServer", "StapleGateConfig", "StapleGateOCSP", "StapleGateSimulator", "StapleGateTrace",
                "StapleGateFleet",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/StapleGateCLI",
            swiftSettings: strictSwift,
            linkerSettings: allocator
        ),

        // `make bench` (issue 7): StapleGate, nginx stream and Mosquitto's own TLS listener side
        // by side. Its own executable, driving every front and load generator as separate
        // processes, so nothing of it is linked into the gateway. Yams: column (a) runs
        // config/staplegate.yaml itself, read and written back with this machine's ports and files.
        .executableTarget(
            name: "StapleGateBench",
            dependencies: [
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Sources/StapleGateBench",
            // The README's benchmark figures: results.md and chart.png of the run it quotes.
            exclude: ["Results"],
            swiftSettings: strictSwift
        ),

        // Helpers shared by the test suites: real processes, free ports, deadlines.
        .target(
            name: "TestSupport",
            dependencies: [
                "StapleGateServer", "StapleGateConfig", "StapleGateTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateTLSTests",
            dependencies: [
                "StapleGateTLS", "TestSupport", "COpenSSL", "CStapleGateShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/StapleGateTLSTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateOCSPTests",
            dependencies: [
                "StapleGateOCSP", "StapleGateTLS", "TestSupport", "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            path: "Tests/StapleGateOCSPTests",
            swiftSettings: testSwift
        ),
        // The device-status store contract, run against both stores (a SQLite file, a real
        // PostgreSQL 15 the tests start), and what only the shared store does.
        .testTarget(
            name: "StapleGateFleetTests",
            dependencies: [
                "StapleGateFleet", "StapleGateOCSP", "StapleGateTLS", "StapleGateTrace", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            path: "Tests/StapleGateFleetTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateProxyTests",
            dependencies: [
                "StapleGateProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            path: "Tests/StapleGateProxyTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateAdmissionTests",
            dependencies: [
                "StapleGateAdmission", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Tests/StapleGateAdmissionTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateProxyProtocolTests",
            dependencies: ["StapleGateProxyProtocol", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/StapleGateProxyProtocolTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateTraceTests",
            dependencies: [
                "StapleGateTrace", "TestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            path: "Tests/StapleGateTraceTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "StapleGateConfigTests",
            dependencies: ["StapleGateConfig", "StapleGateAdmission", "StapleGateTrace", "StapleGateProxyProtocol", "StapleGateFleet",
                           "TestSupport"],
            path: "Tests/StapleGateConfigTests",
            swiftSettings: testSwift
        ),
        // Unit tests of the server's parts that need no gateway running: the session cap's
        // counting, its metrics and log, the JSON log format, the gateway metrics, the broker probe.
        .testTarget(
            name: "StapleGateServerTests",
            dependencies: [
                "StapleGateServer", "StapleGateConfig", "StapleGateTLS", "StapleGateProxy", "StapleGateFleet", "StapleGateTrace",
                "TestSupport",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            path: "Tests/StapleGateServerTests",
            swiftSettings: testSwift
        ),
        // The load generator's pure parts (`staplegate load`): the latency histogram's
        // percentiles, the payload stamp, option checks, the report's JSON. Its end-to-end tests
        // are IntegrationTests/LoadGeneratorTests.
        .testTarget(
            name: "StapleGateSimulatorTests",
            dependencies: ["StapleGateSimulator", "TestSupport"],
            path: "Tests/StapleGateSimulatorTests",
            swiftSettings: testSwift
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "StapleGateServer", "StapleGateConfig", "StapleGateProxyProtocol", "StapleGateFleet", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/IntegrationTests",
            exclude: ["Soak/Results"],  // the last hour's soak report and chart (README)
            swiftSettings: testSwift
        ),
    ]
)

// Fuzzing (issue 16, `make fuzz`): the harness is an ordinary library, so `make test` replays
// every corpus file and crash reproducer through it (FuzzCorpusReplayTests). The fuzz binary
// exists only in the fuzz build (STAPLEGATE_FUZZ=1, with -sanitize=fuzzer): it calls libFuzzer's
// driver, which a plain build does not link.
package.targets += [
    .target(
        name: "StapleGateFuzzHarness",
        dependencies: [
            "StapleGateAdmission", "StapleGateProxyProtocol", "StapleGateOCSP", "StapleGateTLS", "StapleGateConfig",
            "StapleGateServer", "COpenSSL",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Tests/Fuzz/Harness",
        swiftSettings: testSwift
    ),
    .testTarget(
        name: "StapleGateFuzzTests",
        dependencies: ["StapleGateFuzzHarness", "StapleGateOCSP", "StapleGateAdmission"],
        path: "Tests/Fuzz/Replay",
        swiftSettings: testSwift
    ),
]
if ProcessInfo.processInfo.environment["STAPLEGATE_FUZZ"] == "1" {
    package.products.append(.executable(name: "staplegate-fuzz", targets: ["StapleGateFuzz"]))
    package.targets += [
        .target(name: "CFuzzDriver", path: "Tests/Fuzz/CFuzzDriver"),
        .executableTarget(
            name: "StapleGateFuzz",
            dependencies: ["StapleGateFuzzHarness", "CFuzzDriver"],
            path: "Tests/Fuzz/Entry",
            swiftSettings: testSwift
        ),
    ]
}
