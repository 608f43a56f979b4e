// swift-tools-version: 6.2
import PackageDescription

// The kernels compiled again for wider instruction sets, one module each, chosen at run time
// (Sources/Optim/Kernels/Dispatch.swift). Both modules compile the same file
// (Sources/OptimKernelsAVX2/Kernels.swift; the AVX-512 module's is a symlink to it), and the
// optimizer list (both modules' OptimizerList.swift are symlinks to Optim's), and are
// always optimised, also in debug builds, so that tests exercise the code that runs.
// `-target-cpu` names an x86-64 level, which no other architecture accepts, and a manifest
// condition cannot test the architecture; the manifest is compiled for the machine that builds,
// so `#if arch(x86_64)` selects them on x86-64 hosts. (A cross-compilation from x86-64 to another
// architecture would get them too: not supported.)
#if arch(x86_64)
let kernelModules: [(name: String, cpu: String, define: String)] = [
    ("OptimKernelsAVX2", "haswell", "OPTIM_KERNELS_AVX2"),
    ("OptimKernelsAVX512", "skylake-avx512", "OPTIM_KERNELS_AVX512"),
]
#else
let kernelModules: [(name: String, cpu: String, define: String)] = []
#endif
let kernelTargets: [Target] = kernelModules.map { module in
    .target(name: module.name, dependencies: ["Optim"],
            swiftSettings: [.define(module.define), .unsafeFlags(["-target-cpu", module.cpu, "-O"])])
}
/// Optim with its kernel modules, for targets that link a program.
let optimLinked: [Target.Dependency] = ["Optim"] + kernelModules.map { .target(name: $0.name) }

let package = Package(
    name: "swift-optim",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Optim", targets: ["Optim"] + kernelModules.map(\.name)),
        .library(name: "OptimDistributed", targets: ["OptimDistributed"]),
        .library(name: "OptimMPI", targets: ["OptimMPI"]),
        .executable(name: "optim", targets: ["optim"]),
    ],
    traits: [
        .trait(name: "MPI", description: "Distributed training over Open MPI (OptimMPI): needs libopenmpi-dev (pkg-config ompi-c)"),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // `swift package generate-documentation` (the DocC catalogs under Sources/*/*.docc; CI).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // Vector operations the Swift standard library scalarises (header-only).
        .target(name: "COptimSIMD"),
        // Core types, optimizers, kernels and the registry.
        .target(
            name: "Optim",
            dependencies: [
                "COptimSIMD", "Safetensors",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // The safetensors file format, depending on nothing of ours.
        .target(name: "Safetensors"),
        .target(name: "OptimDistributed", dependencies: ["Optim", "Safetensors"]),
        // Reading and replaying `optim-fixture/1` trajectory files.
        .target(name: "OptimFixtures", dependencies: ["Optim"]),
        // A small example model for the CLI's training jobs: data sets (the embedded digits, CSV,
        // IDX), an MLP with hand-written forward and backward passes, and the matrix multiply;
        // Jane Austen's novels and a character-level GPT.
        .target(
            name: "ExampleModel",
            dependencies: ["Optim"],
            exclude: ["Resources/DIGITS.md", "Resources/AUSTEN.md"],
            resources: [.copy("Resources/digits.csv"), .copy("Resources/austen.txt")]
        ),
        // The training loop around an optimizer and a model: run folders, charts, reports.
        .target(
            name: "Training",
            dependencies: [
                "Optim", "OptimDistributed", "ExampleModel", "Safetensors",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The command-line tool.
        .executableTarget(
            name: "optim",
            dependencies: optimLinked + [
                "OptimFixtures", "OptimDistributed", "Safetensors", "ExampleModel", "Training", "OptimMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            // The C reference kernels are compiled by `optim bench` itself, never by the build.
            resources: [.copy("Resources/reference_kernels.c")]
        ),
        .testTarget(
            name: "OptimTests",
            dependencies: optimLinked + [
                "OptimFixtures", "OptimDistributed", "OptimMPI",
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            exclude: []
        ),
        // Open MPI's C API, for the MPI trait only: pkg-config `ompi-c` and a shim for the
        // handles Swift cannot import (MPI_COMM_WORLD, MPI_SUM, MPI_FLOAT, …).
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"]), .brew(["open-mpi"])]),
        // MPICommunicator over Open MPI with `--traits MPI`; without it, only the stubs that say so.
        .target(name: "OptimMPI", dependencies: ["Optim", .target(name: "CMPI", condition: .when(traits: ["MPI"]))]),
        // The MPI test runner, under mpirun (tools/mpi/run-tests.sh) or in-process (`--local N`).
        .executableTarget(
            name: "optim-mpi-tests",
            dependencies: optimLinked + ["OptimDistributed", "OptimMPI", .target(name: "CMPI", condition: .when(traits: ["MPI"]))],
            path: "Tests/MPITests"
        ),
        .testTarget(name: "SafetensorsTests", dependencies: ["Safetensors"]),
        .testTarget(name: "ExampleModelTests", dependencies: optimLinked + ["ExampleModel", "Safetensors"]),
        .testTarget(name: "TrainingTests", dependencies: optimLinked + ["OptimDistributed", "Training", "ExampleModel", "Safetensors"]),
    ] + kernelTargets
)
