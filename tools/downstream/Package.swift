// swift-tools-version: 6.2
// A package that uses swift-optim as a versioned dependency, as another project would: CI tags a
// clone of this repository and points OPTIM_PACKAGE_URL at it (tools/downstream/run.sh). It checks
// that the kernel modules (built with -target-cpu through unsafeFlags) come along and are chosen,
// and that the distributed modules are products another package can import.
import PackageDescription

let url = Context.environment["OPTIM_PACKAGE_URL"] ?? "https://github.com/swift-optim/swift-optim"
let version = Version(stringLiteral: Context.environment["OPTIM_PACKAGE_VERSION"] ?? "0.1.0")

let package = Package(
    name: "downstream",
    platforms: [.macOS(.v15)],
    dependencies: [.package(url: url, exact: version)],
    targets: [
        .executableTarget(name: "downstream", dependencies: [
            .product(name: "Optim", package: "swift-optim"),
            .product(name: "OptimDistributed", package: "swift-optim"),
            .product(name: "OptimMPI", package: "swift-optim"),
        ]),
    ]
)
