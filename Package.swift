// swift-tools-version: 6.1
// sluice: sensor batches from edge devices into PostgreSQL. See README.md and DESIGN.md.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sluiced", targets: ["sluiced"]),
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceClient", targets: ["SluiceClient"]),
        .library(name: "CSluice", targets: ["CSluice"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // System libraries, found through pkg-config (tools/test installs the -dev packages).
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),

        // libsluice, the C client library; also built standalone by clients/c/Makefile.
        .target(
            name: "CSluice",
            path: "clients/c",
            exclude: ["Makefile", "tests", "examples", "libsluice.pc.in", "README.md"],
            sources: ["src"],
            publicHeadersPath: "include",
            cSettings: [.headerSearchPath("src/generated"), .headerSearchPath("src")],
            linkerSettings: [.linkedLibrary("protobuf-c"), .linkedLibrary("zstd")]),

        // Wire format: generated messages, framing, zstd, limits, status codes, series encoding. No sockets.
        .target(
            name: "SluiceProtocol",
            dependencies: [
                "CZstd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: swiftSettings),
        // Pure logic: credit ledger, session state machine, validation. No I/O.
        .target(
            name: "SluiceCore",
            dependencies: ["SluiceProtocol"],
            swiftSettings: swiftSettings),
        // PostgreSQL: libpq writer threads, COPY binary encoder, schema. Blocking I/O on its own threads.
        .target(
            name: "SluiceStore",
            dependencies: [
                "CLibPQ", "SluiceCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // The ingest server: SwiftNIO listener, channel handlers, pipeline, drain.
        .target(
            name: "SluiceServer",
            dependencies: [
                "SluiceCore", "SluiceStore", "SluiceProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings),
        // The Swift client library the CLI is built on.
        .target(
            name: "SluiceClient",
            dependencies: [
                "SluiceProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "sluiced",
            dependencies: [
                "SluiceServer", "SluiceStore", "SluiceCore",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceClient", "SluiceCore",
                .product(name: "NIOPosix", package: "swift-nio"),  // spool inspect: file reads on its thread pool
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // Store benchmark: raw binary COPY vs the WriterPool on the same rows (tools/bench-store runs it).
        .executableTarget(
            name: "sluice-store-bench",
            dependencies: ["SluiceStore", "CLibPQ", .product(name: "Logging", package: "swift-log")],
            path: "Sources/sluice-store-bench",
            swiftSettings: swiftSettings),

        // Shared by the test targets: the private PostgreSQL that tools/test started, and helpers.
        .target(
            name: "SluiceTestSupport",
            dependencies: [
                "CLibPQ", "SluiceProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/SluiceTestSupport",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SluiceProtocolTests",
            dependencies: [
                "SluiceProtocol", "SluiceTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SluiceCoreTests",
            dependencies: ["SluiceCore", "SluiceProtocol"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SluiceStoreTests",
            dependencies: [
                "SluiceStore", "SluiceCore", "SluiceTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SluiceServerTests",
            dependencies: [
                "SluiceServer", "SluiceStore", "SluiceCore", "SluiceProtocol", "SluiceTestSupport",
                "SluiceClient",  // TLSReloadTests: a client that verifies the reloaded certificate
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SluiceClientTests",
            dependencies: [
                "SluiceClient", "SluiceServer", "SluiceStore", "SluiceCore", "SluiceProtocol", "SluiceTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // End to end: the built `sluiced` and `sluice` executables, driven as a user would.
        .testTarget(
            name: "SluiceEndToEndTests",
            dependencies: ["SluiceTestSupport", "SluiceProtocol"],
            swiftSettings: swiftSettings),
        // Faults and abuse: state-machine random walks, hostile clients, kills and database restarts.
        .testTarget(
            name: "SluiceChaosTests",
            dependencies: [
                "SluiceServer", "SluiceCore", "SluiceProtocol", "SluiceStore", "SluiceTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // Operating sluiced: systemd notify, the unit file, stall detection.
        .testTarget(
            name: "SluiceOperationsTests",
            dependencies: [
                "SluiceServer", "SluiceTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),
    ]
)
