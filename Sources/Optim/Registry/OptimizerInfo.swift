/// One optimizer's entry in the registry — PyTorch's `OptimizerInfo`: everything the registry,
/// the CLI, the tests, `optim compare` and `optim bench` need to know about it, in one place.
///
/// Each optimizer file declares its entry (`static let info`, conforming to ``RegistryEntry``),
/// and the optimizer list behind ``OptimizerRegistry/all`` names them. Every field is required: an entry that leaves one out does not compile, and the
/// registry tests check that the values make sense (a suggested learning rate, samples that
/// build, a benchmark whose C reference exists).
public struct OptimizerInfo: Sendable {
    /// The registry name, as in fixture files and on the command line (the reference's class in
    /// snake_case: `adamw`, `decoupled_lionw`, `rmsprop`).
    public let name: String
    /// The Swift type name (`AdamW`).
    public let typeName: String
    /// What the optimizer is matched against, and the paper.
    public let reference: OptimizerReference
    /// The reference defaults, by PyTorch name — read off the hyperparameters type, the single
    /// place they are written.
    public let defaults: HyperparameterDictionary
    /// Whether it wraps another optimizer (``OptimizerConfiguration/base``).
    public let isWrapper: Bool
    /// Whether its update reads a whole tensor at a time (``UpdateRule/updatesWholeTensors``:
    /// Adafactor, Muon), so that ZeRO-1 sharding, which splits tensors, does not take it.
    public let updatesWholeTensors: Bool
    /// Whether its loops are compiled for each instruction set and run on the path chosen at run
    /// time (``KernelDispatch``): the elementwise rules, the ``TensorPassRule``s (LAMB, LARS,
    /// MARS) and ``Prodigy``'s chunk loops (``ProdigyKernels``). The others (Adafactor, Muon,
    /// SOAP, L-BFGS) run on the baseline path, apart from the matrix multiply, which is
    /// dispatched by itself.
    public let compiledPerInstructionSet: Bool
    /// Whether it takes only 2-D parameters (``UpdateRule/requiresMatrices``: Muon).
    public let requiresMatrices: Bool
    /// The state formats it can keep (``UpdateRule/stateDTypes``): the values of `state_dtype`
    /// it accepts; float32 for every optimizer, int8 for those with bitsandbytes' 8-bit state.
    public let stateDTypes: [StateDType]
    /// Whether it updates bfloat16 parameters (``UpdateRule/updatesBFloat16Parameters``): the
    /// elementwise rules with low-precision state. The others refuse a bfloat16 parameter when built.
    public let updatesBFloat16Parameters: Bool
    /// Whether a step needs a closure that re-evaluates the loss (``LBFGS``):
    /// ``Optimizer/step(closure:)`` rather than ``Optimizer/step(collectingMetrics:)``.
    public let requiresClosure: Bool
    /// Hyperparameters for the example tasks (`optim train`, `optim compare`): the learning rate
    /// and anything else that differs from the defaults there. Empty only for a wrapper, whose
    /// wrapped optimizer brings its own.
    public let suggested: HyperparameterDictionary
    /// Configurations the generic tests run.
    public let samples: OptimizerSamples
    /// How `optim bench` times it.
    public let benchmark: OptimizerBenchmark
    let make: @Sendable (OptimizerConfiguration, [ParameterGroupConfiguration], ThreadPool) throws(OptimError) -> any Optimizer

    /// An entry for an optimizer made of an ``UpdateRule``.
    public init<Rule: UpdateRule>(rule: Rule.Type, typeName: String, reference: OptimizerReference,
                                  suggested: HyperparameterDictionary, samples: OptimizerSamples, benchmark: OptimizerBenchmark) {
        self.init(name: Rule.name, typeName: typeName, reference: reference,
                  defaults: (try? Rule.Hyperparameters([:]))?.dictionary ?? [:], isWrapper: false,
                  updatesWholeTensors: Rule.updatesWholeTensors, compiledPerInstructionSet: !Rule.updatesWholeTensors || Rule.self is any TensorPassRule.Type,
                  requiresMatrices: Rule.requiresMatrices, stateDTypes: Rule.stateDTypes, updatesBFloat16Parameters: Rule.updatesBFloat16Parameters,
                  suggested: suggested, samples: samples, benchmark: benchmark) { configuration, groups, pool throws(OptimError) in
            if configuration.base != nil {
                throw .invalidConfiguration("\(Rule.name) does not wrap another optimizer; remove 'base'")
            }
            var built: [ParameterGroup<Rule.Hyperparameters>] = []
            for group in groups { built.append(try ParameterGroup(group, over: configuration.hyperparameters)) }
            return try GradientOptimizer<Rule>(groups: built, threadPool: pool)
        }
    }

    /// An entry with its own constructor (wrappers, optimizers that are not an ``UpdateRule``).
    public init(name: String, typeName: String, reference: OptimizerReference, defaults: HyperparameterDictionary, isWrapper: Bool,
                updatesWholeTensors: Bool = false, compiledPerInstructionSet: Bool = false, requiresMatrices: Bool = false, requiresClosure: Bool = false,
                stateDTypes: [StateDType] = [.float32], updatesBFloat16Parameters: Bool = false,
                suggested: HyperparameterDictionary, samples: OptimizerSamples, benchmark: OptimizerBenchmark,
                make: @escaping @Sendable (OptimizerConfiguration, [ParameterGroupConfiguration], ThreadPool) throws(OptimError) -> any Optimizer) {
        self.name = name
        self.typeName = typeName
        self.reference = reference
        self.defaults = defaults
        self.isWrapper = isWrapper
        self.updatesWholeTensors = updatesWholeTensors
        self.compiledPerInstructionSet = compiledPerInstructionSet
        self.requiresMatrices = requiresMatrices
        self.requiresClosure = requiresClosure
        self.stateDTypes = stateDTypes
        self.updatesBFloat16Parameters = updatesBFloat16Parameters
        self.suggested = suggested
        self.samples = samples
        self.benchmark = benchmark
        self.make = make
    }
}

/// What an optimizer is matched against: the library, its version, the symbol, and the paper.
public struct OptimizerReference: Sendable, Equatable, CustomStringConvertible {
    /// The library (`PyTorch`, `lion-pytorch`, `composer`).
    public let library: String
    /// The version the fixtures were made with.
    public let version: String
    /// The class or function (`torch.optim.AdamW`).
    public let symbol: String
    /// The paper: authors, year, title, and an arXiv number or venue.
    public let paper: String

    /// A reference to `symbol` of `library` at `version`, and `paper`.
    public init(library: String, version: String, symbol: String, paper: String) {
        self.library = library
        self.version = version
        self.symbol = symbol
        self.paper = paper
    }

    /// `torch.optim.AdamW (PyTorch 2.15); Loshchilov & Hutter, 2019, …`.
    public var description: String { "\(symbol) (\(library) \(version)); \(paper)" }
}

/// Configurations of one optimizer that the generic tests run, so that a new optimizer is tested
/// by adding its entry.
public struct OptimizerSamples: Sendable {
    /// A configuration for the property tests (missing gradients, checkpoints, clipping, threads):
    /// a learning rate that moves parameters visibly in a few steps.
    public let basic: OptimizerConfiguration
    /// Brings a 16-dimensional quadratic with curvatures 1…10 from 0 to within 1e-4 of its initial
    /// loss in 2,000 steps, the learning rate decaying linearly.
    public let quadratic: OptimizerConfiguration
    /// Brings Rosenbrock's function from (−1.2, 1) to within 0.05 of (1, 1) in 20,000 steps, the
    /// learning rate decaying linearly.
    public let rosenbrock: OptimizerConfiguration
    /// Steps before the first update moves the parameters (ADOPT's first step only fills its
    /// second moment): 0 for most.
    public let warmupSteps: Int

    /// The samples the generic tests run; `warmupSteps` is 0 for most optimizers.
    public init(basic: OptimizerConfiguration, quadratic: OptimizerConfiguration, rosenbrock: OptimizerConfiguration, warmupSteps: Int = 0) {
        self.basic = basic
        self.quadratic = quadratic
        self.rosenbrock = rosenbrock
        self.warmupSteps = warmupSteps
    }
}

/// How `optim bench` times an optimizer: the configuration it steps, and the C reference it is
/// measured against.
public struct OptimizerBenchmark: Sendable {
    /// The configuration timed (the defaults, or a representative case such as SGD with momentum).
    public let configuration: OptimizerConfiguration
    /// The C kernel of the same arithmetic.
    public let reference: CReference

    /// Times `configuration` against the C kernel `reference`.
    public init(configuration: OptimizerConfiguration, reference: CReference) {
        self.configuration = configuration
        self.reference = reference
    }
}

/// A C reference kernel in `optim bench`'s `reference_kernels.c`.
public enum CReference: Sendable, Equatable {
    /// `void ref_<symbol>(float *p, const float *g, float *s0, float *s1, float *s2, float *s3, long n, const float *c)`:
    /// one pass over `n` elements with `stateBuffers` state arrays and the step's scalars `c`
    /// (their order is the kernel's, documented beside it; values for the benchmark's
    /// configuration in its steady state).
    case kernel(symbol: String, stateBuffers: Int, coefficients: [Float])
    /// `void ref_<symbol>(float *p, const float *g, float *s0, float *s1, float *s2, float *s3, long n, const float *c, double *global)`:
    /// a step of several passes over the `n` elements with state of the whole model between them
    /// (`GLOBAL_KERNEL` in the C file): the kernel reads `global` (starting from `globals`) and
    /// updates it, as ``Prodigy`` updates its step size `d` between its two passes.
    case globalKernel(symbol: String, stateBuffers: Int, coefficients: [Float], globals: [Double])
    /// The wrapped optimizer's kernel, then `ref_<sync>(p, slow, n, c)` every `every` steps.
    case wrapper(sync: String, every: Int, coefficients: [Float])
    /// No C kernel exists for this rule; the reason is shown.
    case none(reason: String)
}

extension OptimizerSamples {
    /// Samples shared by the Adam family and other adaptive methods: one learning rate for the
    /// property tests, 0.05 on the quadratic, 0.02 on Rosenbrock.
    static func adaptive(_ name: String, _ extra: HyperparameterDictionary = [:]) -> OptimizerSamples {
        func with(_ lr: Double) -> OptimizerConfiguration {
            OptimizerConfiguration(name: name, hyperparameters: extra.merging(["lr": .number(lr)]) { $1 })
        }
        return OptimizerSamples(basic: with(0.01), quadratic: with(0.05), rosenbrock: with(0.02))
    }

    /// Samples for Lion and its variants: every element moves by the learning rate, so smaller ones.
    static func signBased(_ name: String) -> OptimizerSamples {
        func with(_ lr: Double) -> OptimizerConfiguration { OptimizerConfiguration(name: name, hyperparameters: ["lr": .number(lr)]) }
        return OptimizerSamples(basic: with(0.01), quadratic: with(0.01), rosenbrock: with(0.003))
    }
}

extension CReference {
    /// `ref_adam` for the Adam defaults in their steady state (`lr` 1e-3, AdamW's decay).
    static let adamKernel = CReference.kernel(symbol: "adam", stateBuffers: 2, coefficients: [1 - 1e-5, 0.1, 0.999, 1e-3, 0.5, 1e-8, -1e-3])
    /// `ref_lion` for Lion's defaults.
    static let lionKernel = CReference.kernel(symbol: "lion", stateBuffers: 1, coefficients: [1, 0.9, 0.1, 0.99, 0.01, -1e-4])
}

/// A type with an entry in the registry: an update rule (`AdamWRule`) or an optimizer class of its
/// own (``LBFGS``, ``Prodigy``, ``Lookahead``).
public protocol RegistryEntry {
    /// The entry.
    static var info: OptimizerInfo { get }
}
