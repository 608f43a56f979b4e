// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "swift-optim",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Optim", targets: ["Optim"]),
        .executable(name: "optim", targets: ["optim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Core types, optimizers, kernels and the registry.
        .target(
            name: "Optim",
            dependencies: [.product(name: "Logging", package: "swift-log")]
        ),
        // Reading and replaying `optim-fixture/1` trajectory files.
        .target(name: "OptimFixtures", dependencies: ["Optim"]),
        // The command-line tool.
        .executableTarget(
            name: "optim",
            dependencies: [
                "Optim", "OptimFixtures",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "OptimTests",
            dependencies: ["Optim", "OptimFixtures", .product(name: "InMemoryLogging", package: "swift-log")],
            exclude: []
        ),
    ]
)
