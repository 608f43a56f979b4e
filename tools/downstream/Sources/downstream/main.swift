// Steps AdamW over a million parameters and multiplies two matrices, on the path the library
// chose, and prints it; exits with 1 if a path this CPU supports is missing. Then trains two
// in-process ranks data parallel with sharded AdamW state (OptimDistributed), and asks OptimMPI
// whether this build binds MPI; exits with 1 if the ranks disagree.
import Optim
import OptimDistributed
import OptimMPI
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let weight = try Parameter(name: "w", shape: [1024, 1024], values: (0..<(1 << 20)).map { Float($0 % 97) / 97 - 0.5 })
let optimizer = try AdamW([weight], hyperparameters: .init(learningRate: 1e-3))
for _ in 0..<5 {
    let gradient = weight.gradientStorage()
    for i in gradient.indices { gradient[i] = weight.values[i] }
    try optimizer.step()
}
var c = [Float](repeating: 0, count: 64 * 64)
let a = [Float](repeating: 1, count: 64 * 64)
a.withUnsafeBufferPointer { a in
    c.withUnsafeMutableBufferPointer { c in MatMul.gemm(m: 64, n: 64, k: 64, a, transposeA: false, a, transposeB: false, c) }
}
print("downstream: adamw ran on \(optimizer.instructionSet.rawValue); available \(KernelDispatch.available.map(\.rawValue)); CPU supports \(KernelDispatch.supportedByCPU.map(\.rawValue)); w[0] = \(weight.values[0]), c[0] = \(c[0])")
if KernelDispatch.available != KernelDispatch.supportedByCPU || c[0] != 64 {
    print("downstream: the kernel modules of a path this CPU supports are missing")
    exit(1)
}

let ranks = try LocalCommunicatorGroup(size: 2)
let results = ranks.run { communicator in
    let weight = try Parameter(name: "w", shape: [1000], repeating: 1)
    let dataParallel = try DataParallel([weight], communicator: communicator)
    let optimizer = try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: [weight], communicator: communicator)
    for step in 0..<3 {
        try weight.setGradient((0..<1000).map { Float(($0 + step * 7 + communicator.rank * 13) % 11) - 5 })
        try dataParallel.averageGradients()
        try optimizer.step()
    }
    return weight.valueArray
}
let values = try results.map { try $0.get() }
print("downstream: 2 ranks, sharded AdamW: w[0] = \(values[0][0]) on both; OptimMPI binds MPI: \(MPIRuntime.isAvailable)")
if values[0].map(\.bitPattern) != values[1].map(\.bitPattern) || values[0][0] == 1 {
    print("downstream: the two ranks disagree, or did not step")
    exit(1)
}
