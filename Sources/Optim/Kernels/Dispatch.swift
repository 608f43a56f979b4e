import COptimSIMD
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An instruction set the kernels are compiled for.
///
/// `baseline` is the code of the `Optim` module itself, built for whatever the package is built
/// for (x86-64 without `-target-cpu`: SSE2, four lanes, no FMA; arm64: NEON). The others are the
/// same Swift kernels compiled again by the kernel modules `OptimKernelsAVX2`
/// (`-target-cpu haswell`: AVX2, FMA, BMI1/2, F16C, MOVBE, LZCNT — the x86-64-v3 level, which
/// Swift's `-target-cpu` does not accept by that name) and `OptimKernelsAVX512`
/// (`-target-cpu skylake-avx512`: v3 plus AVX-512 F/CD/BW/DQ/VL, the x86-64-v4 level), chosen
/// once at start-up from what the CPU reports (``KernelDispatch``). The kernels do the same
/// arithmetic on every path, bit for bit: Swift never contracts a multiply and an add into a
/// fused multiply-add (no `vfmadd` is emitted for `a * b + c`), square roots and divisions are
/// correctly rounded in every instruction set, and the explicit fused multiply-adds of the 8-bit
/// kernels (``Elementwise/fusedMultiplyAdd(_:_:_:)``) round once on every path.
public enum InstructionSet: String, CaseIterable, Sendable, CustomStringConvertible {
    /// The `Optim` module's own code, the x86-64-v3 (AVX2) kernels, or the x86-64-v4 (AVX-512) ones.
    case baseline, avx2, avx512

    var code: Int32 {
        switch self {
        case .baseline: OPTIM_ISA_BASELINE
        case .avx2: OPTIM_ISA_AVX2
        case .avx512: OPTIM_ISA_AVX512
        }
    }

    /// The instruction set's name with its level, `-target-cpu` and vector width.
    public var description: String {
        switch self {
        case .baseline: "baseline (the build's own target)"
        case .avx2: "avx2 (x86-64-v3 level, -target-cpu haswell: 8-lane vectors)"
        case .avx512: "avx512 (x86-64-v4 level, -target-cpu skylake-avx512: 16-lane vectors)"
        }
    }
}

/// One update rule's kernels as compiled for one instruction set (the range-wise update, the
/// update that also sums the metrics, and a chunk of a ``TensorPassRule``'s passes): function
/// values filled in by a kernel module.
public struct RuleKernels<Coefficients>: @unchecked Sendable {
    /// The range-wise update (`UpdateRule.update`).
    public let update: (KernelOperands, Range<Int>, Coefficients) -> Void
    /// The range-wise update that also sums the metrics (`UpdateRule.updateCollecting`).
    public let updateCollecting: (KernelOperands, Range<Int>, Coefficients) -> MetricAccumulator
    /// A chunk of one of a tensor-wise rule's passes (`UpdateRule.pass`).
    public let pass: (KernelOperands, Range<Int>, Coefficients, TensorPass) -> PassResult
    /// The update on 8-bit or 4-bit state (``UpdateRule/updateQuantized(_:_:_:collectingMetrics:)``; the
    /// last argument: whether to collect the metrics), for a rule that keeps it; else nil.
    public let updateQuantized: ((KernelOperands, Range<Int>, Coefficients, Bool) -> MetricAccumulator)?

    /// The kernels from their function values; `updateQuantized` only for a rule that keeps quantized state.
    public init(update: @escaping (KernelOperands, Range<Int>, Coefficients) -> Void,
                updateCollecting: @escaping (KernelOperands, Range<Int>, Coefficients) -> MetricAccumulator,
                pass: @escaping (KernelOperands, Range<Int>, Coefficients, TensorPass) -> PassResult,
                updateQuantized: ((KernelOperands, Range<Int>, Coefficients, Bool) -> MetricAccumulator)? = nil) {
        self.update = update
        self.updateCollecting = updateCollecting
        self.pass = pass
        self.updateQuantized = updateQuantized
    }

    /// The rule's kernels as compiled into `Optim` itself: the baseline path.
    static func baseline<Rule: UpdateRule>(_ rule: Rule.Type) -> RuleKernels<Rule.Coefficients> {
        RuleKernels<Rule.Coefficients>(update: { Rule.update($0, $1, $2) }, updateCollecting: { Rule.updateCollecting($0, $1, $2) },
                                       pass: { Rule.pass($0, $1, $2, $3) },
                                       updateQuantized: Rule.stateDTypes.contains(where: \.isQuantized) ? { Rule.updateQuantized($0, $1, $2, collectingMetrics: $3) } : nil)
    }
}

/// The kernels a kernel module registers for its instruction set.
public struct KernelTable: @unchecked Sendable {
    var rules: [ObjectIdentifier: Any] = [:]
    var ruleNames: Set<String> = []
    var gemmBlock: MatMul.BlockKernel?
    var transformer: TransformerKernelSet?
    var prodigy: ProdigyKernels?
    var bfloat16: BFloat16State.Conversions?

    /// An empty table.
    public init() {}

    /// Adds a rule's kernels.
    public mutating func add<Rule: UpdateRule>(_ rule: Rule.Type, _ kernels: RuleKernels<Rule.Coefficients>) {
        rules[ObjectIdentifier(rule)] = kernels
        ruleNames.insert(Rule.name)
    }

    /// Sets the matrix multiply's block loop, as compiled by the calling module.
    public mutating func setMatrixMultiply(_ block: @escaping MatMul.BlockKernel) {
        gemmBlock = block
    }

    /// Sets ``Prodigy``'s chunk loops, as compiled by the calling module.
    public mutating func setProdigyKernels(_ kernels: ProdigyKernels) {
        prodigy = kernels
        ruleNames.insert(Prodigy.name)
    }

    /// Sets the bfloat16 state's widening and rounding loops, as compiled by the calling module.
    public mutating func setBFloat16Conversions(_ conversions: BFloat16State.Conversions) {
        bfloat16 = conversions
    }

    /// Sets the transformer's element-wise and row-wise kernels, as compiled by the calling module.
    public mutating func setTransformerKernels(_ kernels: TransformerKernelSet) {
        transformer = kernels
    }
}

/// Chooses, once at start-up, the instruction set the kernels run with: the widest one that the
/// CPU reports and whose kernel module is linked, unless the environment variable `OPTIM_ISA`
/// (`baseline`, `avx2`, `avx512`) forces one. A forced path the CPU cannot run is refused with a
/// message (it would stop on an illegal instruction).
public enum KernelDispatch {
    private static let tables = Mutex<[String: KernelTable]>([:])
    /// The tables once ``available`` has installed the modules (read without a lock after).
    private static let installed: [String: KernelTable] = {
        _ = available
        return tables.withLock { $0 }
    }()

    /// Called by a kernel module's installer.
    public static func register(_ instructionSet: InstructionSet, _ table: KernelTable) {
        tables.withLock { $0[instructionSet.rawValue] = table }
    }

    /// The instruction sets this CPU can run and this program has kernels for, narrowest first
    /// (always starting with `baseline`).
    public static let available: [InstructionSet] = {
        var result: [InstructionSet] = [.baseline]
        for isa in [InstructionSet.avx2, .avx512] where optim_cpu_supports(isa.code) != 0 {
            if optim_install_kernels(isa.code) != 0 { result.append(isa) }
        }
        return result
    }()

    /// The instruction sets this CPU can run, whether or not their kernels are linked.
    public static var supportedByCPU: [InstructionSet] {
        InstructionSet.allCases.filter { optim_cpu_supports($0.code) != 0 }
    }

    /// The path chosen at start-up (`OPTIM_ISA`, else the widest available).
    public static let selected: InstructionSet = {
        guard let forced = getenv("OPTIM_ISA").map({ String(cString: $0) }), !forced.isEmpty else { return available.last! }
        guard let isa = InstructionSet(rawValue: forced.lowercased()) else {
            fatalError("OPTIM_ISA=\(forced): expected one of \(InstructionSet.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard available.contains(isa) else {
            fatalError("OPTIM_ISA=\(forced): this CPU and build run only \(available.map(\.rawValue).joined(separator: ", "))")
        }
        return isa
    }()

    @TaskLocal static var override: InstructionSet?

    /// The path optimizers built now (and matrix products run now) use: ``selected``, or the one
    /// of an enclosing ``withInstructionSet(_:_:)``.
    public static var current: InstructionSet { override ?? selected }

    /// Runs `body` with `instructionSet` as the ``current`` path (tests run every path this way).
    /// The path must be one of ``available``.
    public static func withInstructionSet<T>(_ instructionSet: InstructionSet, _ body: () throws -> T) rethrows -> T {
        precondition(available.contains(instructionSet), "\(instructionSet.rawValue) is not available here: \(available.map(\.rawValue))")
        return try $override.withValue(instructionSet, operation: body)
    }

    /// The table of a path, once the kernel modules are installed.
    static func table(_ instructionSet: InstructionSet) -> KernelTable? {
        guard instructionSet != .baseline, available.contains(instructionSet) else { return nil }
        return installed[instructionSet.rawValue]
    }

    /// A rule's kernels on `instructionSet` and the path they really are: the kernel module's,
    /// or the baseline for a rule the module does not compile (the whole-tensor rules other than
    /// ``TensorPassRule``s: Adafactor, Muon, SOAP, whose loops run on the baseline path; Prodigy
    /// has its own, ``prodigyKernels(on:)``).
    static func kernels<Rule: UpdateRule>(_ rule: Rule.Type, on instructionSet: InstructionSet) -> (RuleKernels<Rule.Coefficients>, InstructionSet) {
        if let found = table(instructionSet)?.rules[ObjectIdentifier(rule)] as? RuleKernels<Rule.Coefficients> {
            return (found, instructionSet)
        }
        return (RuleKernels<Rule.Coefficients>.baseline(rule), .baseline)
    }

    /// The bfloat16 state's widening and rounding loops on `instructionSet` (Optim's own when the
    /// path has none).
    static func bfloat16Conversions(on instructionSet: InstructionSet) -> BFloat16State.Conversions {
        table(instructionSet)?.bfloat16 ?? .baseline
    }

    /// ``Prodigy``'s chunk loops on `instructionSet` and the path they really are.
    static func prodigyKernels(on instructionSet: InstructionSet) -> (ProdigyKernels, InstructionSet) {
        if let found = table(instructionSet)?.prodigy { return (found, instructionSet) }
        return (.baseline, .baseline)
    }

    /// The registry names of the rules a path has compiled kernels for (`baseline`: all).
    public static func compiledRules(_ instructionSet: InstructionSet) -> Set<String>? {
        table(instructionSet)?.ruleNames
    }

    /// The matrix multiply's block loop on `instructionSet`, and the path it really is.
    static func gemmBlock(_ instructionSet: InstructionSet) -> (MatMul.BlockKernel, InstructionSet) {
        if let block = table(instructionSet)?.gemmBlock { return (block, instructionSet) }
        return (MatMul.baselineBlock, .baseline)
    }

    /// The ``TransformerKernels`` compiled for `instructionSet` (by default ``current``), or the
    /// baseline ones when its kernel module has none.
    public static func transformerKernels(_ instructionSet: InstructionSet = current) -> TransformerKernelSet {
        table(instructionSet)?.transformer ?? .baseline
    }
}
