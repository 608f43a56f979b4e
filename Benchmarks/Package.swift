// swift-tools-version: 6.3
// package-benchmark suite for the optimizer kernels: `cd Benchmarks && swift package benchmark`.
// A package of its own, so building or testing swift-optim never compiles package-benchmark.
import PackageDescription

let package = Package(
    name: "swift-optim-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-optim", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "OptimizerSteps",
            dependencies: [
                .product(name: "Optim", package: "swift-optim"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "OptimizerSteps",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
