// The kernels of every elementwise update rule, of the whole-tensor rules written as passes
// (TensorPassRule), of Prodigy's chunk loops (ProdigyKernels), of the matrix multiply and of the transformer's element-wise and row-wise
// passes (TransformerKernels), compiled once per
// instruction set: this one file is the source of both OptimKernelsAVX2 (-target-cpu x86-64-v3)
// and OptimKernelsAVX512 (-target-cpu x86-64-v4; its Kernels.swift is a symlink to this file).
// The arithmetic is Optim's own: each rule's `update` and `updateCollecting` (and the loops and
// kernels under them) are `@inlinable @inline(__always)`, so they are inlined and compiled here,
// for this module's CPU. Optim finds the installer below through a weak reference and calls it
// once, when it chooses the path (KernelDispatch).
//
// The elementwise and tensor-pass rules come from the optimizer list, which this module compiles
// too (OptimizerList.swift here is a symlink to Sources/Optim/Registry/OptimizerList.swift): a new
// optimizer needs no line here.
import Optim

#if arch(x86_64)
func compiledKernels() -> KernelTable {
    var table = KernelTable()
    RuleCompiler.addRules(to: &table)
    table.setProdigyKernels(ProdigyKernels(firstPass: { Prodigy.firstPassChunk($0, $1, $2, dot: &$3, absolute: &$4) },
                                           secondPass: { Prodigy.secondPassChunk($0, $1, $2, collecting: $3) }))
    table.setMatrixMultiply { MatMul.block($0, rows: $1, columns: $2, scratch: $3) }
    table.setBFloat16Conversions(.init(widen: { BFloat16State.widen($0, into: $1, count: $2) },
                                       narrow: { BFloat16State.narrow($0, into: $1, count: $2) },
                                       roundNearest: { BFloat16Parameters.roundNearest($0, count: $1) },
                                       roundStochastically: { BFloat16Parameters.roundStochastically($0, count: $1, first: $2, key0: $3, key1: $4) },
                                       roundCompensated: { BFloat16Parameters.roundCompensated($0, compensation: $1, count: $2) },
                                       joinMaster: { BFloat16Parameters.joinMaster($0, remainders: $1, count: $2) },
                                       splitMaster: { BFloat16Parameters.splitMaster($0, remainders: $1, count: $2) }))
    table.setTransformerKernels(TransformerKernelSet(
        gelu: { TransformerKernels.gelu($0, $1, tanhOut: $2, count: $3) },
        geluBackward: { TransformerKernels.geluBackward($0, tanh: $1, $2, count: $3) },
        layerNorm: { TransformerKernels.layerNorm($0, $1, mean: $2, rstd: $3, gamma: $4, beta: $5, rows: $6, width: $7) },
        layerNormBackward: { TransformerKernels.layerNormBackward($0, $1, mean: $2, rstd: $3, gamma: $4, dx: $5, dGamma: $6, dBeta: $7, rows: $8, width: $9) },
        causalSoftmax: { TransformerKernels.causalSoftmax($0, length: $1, scale: $2) },
        causalSoftmaxBackward: { TransformerKernels.causalSoftmaxBackward($0, $1, length: $2, scale: $3) }))
    return table
}

#if OPTIM_KERNELS_AVX512
@_cdecl("optim_install_kernels_avx512")
public func optimInstallKernels() {
    KernelDispatch.register(.avx512, compiledKernels())
}
#else
@_cdecl("optim_install_kernels_avx2")
public func optimInstallKernels() {
    KernelDispatch.register(.avx2, compiledKernels())
}
#endif
#endif
