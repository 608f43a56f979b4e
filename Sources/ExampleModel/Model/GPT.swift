import Foundation
import Optim

/// The shape of a ``GPT``.
public struct GPTConfiguration: Sendable, Equatable, Codable {
    /// Tokens in the vocabulary (nanoGPT's `vocab_size`).
    public var vocabularySize: Int
    /// The longest sequence the model reads: rows of the position embedding (`block_size`).
    public var contextLength: Int
    /// Transformer blocks (`n_layer`).
    public var layers: Int
    /// Attention heads per block (`n_head`); must divide ``embedding``.
    public var heads: Int
    /// Width of the residual stream (`n_embd`).
    public var embedding: Int

    /// nanoGPT's CPU recipe for a character model: 4 layers, 4 heads, 128 wide, context 64.
    public init(vocabularySize: Int, contextLength: Int = 64, layers: Int = 4, heads: Int = 4, embedding: Int = 128) {
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
        self.layers = layers
        self.heads = heads
        self.embedding = embedding
    }

    /// Checks the sizes; the message names the value.
    public func validate() throws(ModelError) {
        for (name, value) in [("vocabulary size", vocabularySize), ("context length", contextLength), ("layers", layers),
                              ("heads", heads), ("embedding", embedding)] where value < 1 || value > 1 << 20 {
            throw .invalidArchitecture("\(name) \(value); expected 1...\(1 << 20)")
        }
        guard embedding % heads == 0 else {
            throw .invalidArchitecture("embedding \(embedding) is not a multiple of the \(heads) heads")
        }
        let perLayer = 12 * embedding * embedding + 13 * embedding
        let total = (vocabularySize + contextLength) * embedding + layers * perLayer + 2 * embedding
        guard total <= MLP.maximumParameterCount else {
            throw .invalidArchitecture("\(total) parameters; at most \(MLP.maximumParameterCount)")
        }
    }
}

/// A GPT-2-style decoder-only transformer (Radford et al. 2019; Karpathy's nanoGPT `model.py`
/// with `bias=True`, `dropout=0`), with hand-written forward and backward passes:
///
///     x₀ = wte[token] + wpe[position]
///     for each block:  x ← x + c_proj(attention(ln_1(x))),   x ← x + mlp.c_proj(GELU(mlp.c_fc(ln_2(x))))
///     logits = ln_f(x) · wteᵀ                         (the output head is the token embedding, tied)
///     loss = mean over positions of −log softmax(logits)[target]
///
/// Attention is causal multi-head self-attention, softmax(QKᵀ/√d)·V per head with the future
/// masked; the MLP is 4× wide with the tanh-approximated GELU (`nn.GELU(approximate="tanh")` —
/// nanoGPT's own default is the exact erf form; the PyTorch reference here uses tanh too). Layer
/// norms have ε = 1e-5, weight and bias; every Linear has a bias.
///
/// Parameters are `Parameter`s with nanoGPT's names and shapes, in its `named_parameters()`
/// order: `transformer.wte.weight` [vocab, C], `transformer.wpe.weight` [context, C], then per
/// block `transformer.h.{i}.ln_1.weight`, `….ln_1.bias`, `….attn.c_attn.weight` [3C, C],
/// `….attn.c_attn.bias`, `….attn.c_proj.weight` [C, C], `….attn.c_proj.bias`, `….ln_2.weight`,
/// `….ln_2.bias`, `….mlp.c_fc.weight` [4C, C], `….mlp.c_fc.bias`, `….mlp.c_proj.weight` [C, 4C],
/// `….mlp.c_proj.bias`, and `transformer.ln_f.weight`, `transformer.ln_f.bias`.
///
/// Initialisation is nanoGPT's: weights of Linear and Embedding layers normal with σ = 0.02 (the
/// residual projections `c_proj` σ = 0.02/√(2·layers)), biases 0, layer-norm weights 1. The normal
/// draws come from SplitMix64 (stream "GPT" of the seed) by Box–Muller, one value per pair of
/// draws, parameter after parameter in the order above — `normalInitialiser(seed:)`, which
/// `tools/austen/torch_reference.py` reproduces — so a seed gives the same model everywhere.
///
/// Every matrix product is `MatMul.gemm(m:n:k:_:transposeA:_:transposeB:_:accumulate:symmetric:workspace:pool:)`:
/// the layers' products on the whole batch (threaded inside the GEMM), attention one
/// (sequence, head) pair at a time with the pairs spread over the `ThreadPool`. The
/// activations are kept in one buffer reused between calls: after the first step at a batch
/// shape, a training step allocates nothing. A model is not synchronised: use it from one thread
/// at a time.
public final class GPT: @unchecked Sendable {
    /// The model's shape: vocabulary, context length, layers, heads and embedding width.
    public let configuration: GPTConfiguration
    /// Every parameter, in nanoGPT's `named_parameters()` order.
    public let parameters: [Parameter]
    /// Called during a backward pass each time some parameters' gradients are final, with their
    /// indices in ``parameters``: `ln_f` first, then each block from the last to the first, a
    /// layer at a time (`mlp.c_proj`, `mlp.c_fc`, `ln_2`, `attn.c_proj`, `attn.c_attn`, `ln_1`:
    /// weight and bias together), then the two embeddings (the tied token embedding is the output head
    /// too, so its gradient is final only at the end). Data-parallel training reduces each
    /// group while backward computes the next.
    public var gradientReadyHandler: ((Range<Int>) -> Void)?

    struct Block {
        let ln1Weight, ln1Bias, attentionWeight, attentionBias, attentionProjectionWeight, attentionProjectionBias: Parameter
        let ln2Weight, ln2Bias, fcWeight, fcBias, mlpProjectionWeight, mlpProjectionBias: Parameter
    }

    let tokenEmbedding: Parameter
    let positionEmbedding: Parameter
    let blocks: [Block]
    let finalNormWeight: Parameter
    let finalNormBias: Parameter

    private let pool: ThreadPool
    /// The element-wise and row-wise kernels, compiled for the instruction set chosen at run time.
    private let kernels = KernelDispatch.transformerKernels()
    /// The GEMM scratch of the layer products (on the calling thread, threaded inside the GEMM).
    private let workspace = MatMul.Workspace()
    /// One GEMM scratch per part of a threaded loop (attention, element-wise kernels).
    private let partWorkspaces: [MatMul.Workspace]
    private let maximumParts: Int

    // Sizes of the current call.
    private var batch = 0, length = 0
    private var rows: Int { batch * length }
    private var C: Int { configuration.embedding }
    private var H: Int { configuration.heads }
    private var D: Int { configuration.embedding / configuration.heads }
    private var V: Int { configuration.vocabularySize }

    // The activation buffer and where each array sits in it (offsets in floats).
    private var storage: UnsafeMutablePointer<Float>?
    private var capacity = 0
    private var layout = Layout()
    private var losses: UnsafeMutablePointer<Double>
    private var rightCounts: UnsafeMutablePointer<Int>
    /// How many positions of the last batch (``lossAndGradient(inputs:targets:batchSize:)`` or
    /// ``loss(inputs:targets:batchSize:)``) had their largest logit at the target.
    public private(set) var lastCorrect = 0
    private var targetScratch: UnsafeMutablePointer<Int32>?

    /// What the thread pool's job does: set before each ``runParallel(_:_:)``.
    private enum Task { case none, attentionForward(Int), attentionBackward(Int), gelu(Int), geluBackward(Int), crossEntropy(Bool) }
    private var task = Task.none
    private var taskParts = 1
    private lazy var job: (Int) -> Void = { [unowned self] part in self.runPart(part) }

    /// A model of `configuration`, initialised from `seed`.
    ///
    /// - Parameters:
    ///   - configuration: the model's sizes.
    ///   - seed: the seed of the initial weights' random draws.
    ///   - pool: the threads of the matrix products and of the attention and element-wise
    ///     kernels.
    /// - Throws: ``ModelError/invalidArchitecture(_:)`` for sizes that cannot make a model.
    public init(_ configuration: GPTConfiguration, seed: UInt64 = 0, pool: ThreadPool = .shared) throws(ModelError) {
        try configuration.validate()
        self.configuration = configuration
        self.pool = pool
        let C = configuration.embedding
        var initialiser = Self.normalInitialiser(seed: seed)
        let residualStandardDeviation = 0.02 / (2 * Double(configuration.layers)).squareRoot()
        func make(_ name: String, _ shape: [Int], normal: Double? = nil, fill: Float = 0) throws(ModelError) -> Parameter {
            do {
                let count = shape.reduce(1, *)
                if let normal { return try Parameter(name: name, shape: shape, values: initialiser.draw(count, standardDeviation: normal)) }
                return try Parameter(name: name, shape: shape, repeating: fill)
            } catch {
                throw .invalidArchitecture(error.description)
            }
        }
        tokenEmbedding = try make("transformer.wte.weight", [configuration.vocabularySize, C], normal: 0.02)
        positionEmbedding = try make("transformer.wpe.weight", [configuration.contextLength, C], normal: 0.02)
        var blocks: [Block] = []
        for i in 0..<configuration.layers {
            let p = "transformer.h.\(i)."
            blocks.append(Block(
                ln1Weight: try make(p + "ln_1.weight", [C], fill: 1), ln1Bias: try make(p + "ln_1.bias", [C]),
                attentionWeight: try make(p + "attn.c_attn.weight", [3 * C, C], normal: 0.02), attentionBias: try make(p + "attn.c_attn.bias", [3 * C]),
                attentionProjectionWeight: try make(p + "attn.c_proj.weight", [C, C], normal: residualStandardDeviation),
                attentionProjectionBias: try make(p + "attn.c_proj.bias", [C]),
                ln2Weight: try make(p + "ln_2.weight", [C], fill: 1), ln2Bias: try make(p + "ln_2.bias", [C]),
                fcWeight: try make(p + "mlp.c_fc.weight", [4 * C, C], normal: 0.02), fcBias: try make(p + "mlp.c_fc.bias", [4 * C]),
                mlpProjectionWeight: try make(p + "mlp.c_proj.weight", [C, 4 * C], normal: residualStandardDeviation),
                mlpProjectionBias: try make(p + "mlp.c_proj.bias", [C])))
        }
        self.blocks = blocks
        finalNormWeight = try make("transformer.ln_f.weight", [C], fill: 1)
        finalNormBias = try make("transformer.ln_f.bias", [C])
        parameters = [tokenEmbedding, positionEmbedding]
            + blocks.flatMap { [$0.ln1Weight, $0.ln1Bias, $0.attentionWeight, $0.attentionBias, $0.attentionProjectionWeight, $0.attentionProjectionBias,
                                $0.ln2Weight, $0.ln2Bias, $0.fcWeight, $0.fcBias, $0.mlpProjectionWeight, $0.mlpProjectionBias] }
            + [finalNormWeight, finalNormBias]
        maximumParts = max(1, pool.threadCount * 4)
        partWorkspaces = (0..<maximumParts).map { _ in MatMul.Workspace() }
        losses = .allocate(capacity: maximumParts)
        rightCounts = .allocate(capacity: maximumParts)
    }

    deinit {
        storage?.deallocate()
        targetScratch?.deallocate()
        losses.deallocate()
        rightCounts.deallocate()
    }

    /// The total number of parameters (the tied output head counted once).
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    // MARK: - Initialisation

    /// The normal draws of the initialisation: SplitMix64 seeded with `seed` on stream "GPT"; each
    /// value takes two draws a, b: u₁ = (⌊a/2¹¹⌋ + 1)·2⁻⁵³ ∈ (0, 1], u₂ = ⌊b/2¹¹⌋·2⁻⁵³, and
    /// z = √(−2 ln u₁)·cos(2π u₂) in Double, times σ, rounded to Float.
    struct NormalInitialiser {
        var generator: SplitMix64
        mutating func draw(_ count: Int, standardDeviation: Double) -> [Float] {
            (0..<count).map { _ in
                let u1 = (Double(generator.next() >> 11) + 1) * 0x1p-53
                let u2 = Double(generator.next() >> 11) * 0x1p-53
                return Float(standardDeviation * (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
            }
        }
    }

    static func normalInitialiser(seed: UInt64) -> NormalInitialiser {
        NormalInitialiser(generator: SplitMix64(seed: seed, stream: 0x475054)) // "GPT"
    }

    // MARK: - Public passes

    /// Forward and backward on one batch: writes the gradient of the batch's mean cross-entropy
    /// into every parameter's gradient storage (overwriting it) and returns that loss.
    ///
    /// - Parameters:
    ///   - inputs: `batchSize × length` token ids, row-major; `length` (= count / batchSize) at
    ///     most ``GPTConfiguration/contextLength``.
    ///   - targets: the next token of each input position, same layout.
    ///   - batchSize: the number of sequences in the batch.
    /// - Throws: ``ModelError`` for sizes that do not fit or a token outside the vocabulary; the
    ///   gradients are then left as they were.
    public func lossAndGradient(inputs: UnsafeBufferPointer<Int32>, targets: UnsafeBufferPointer<Int32>, batchSize: Int) throws(ModelError) -> Float {
        try check(inputs: inputs, targets: targets, batchSize: batchSize)
        prepare(batch: batchSize, length: inputs.count / batchSize)
        forward(inputs.baseAddress!)
        let loss = crossEntropy(targets.baseAddress!, gradient: true)
        backward(inputs.baseAddress!)
        return loss
    }

    /// The batch's mean cross-entropy, forward only (gradients untouched).
    public func loss(inputs: UnsafeBufferPointer<Int32>, targets: UnsafeBufferPointer<Int32>, batchSize: Int) throws(ModelError) -> Float {
        try check(inputs: inputs, targets: targets, batchSize: batchSize)
        prepare(batch: batchSize, length: inputs.count / batchSize)
        forward(inputs.baseAddress!)
        return crossEntropy(targets.baseAddress!, gradient: false)
    }

    /// The logits of the last position after `context` (its last ``GPTConfiguration/contextLength``
    /// tokens), `vocabularySize` values.
    public func nextTokenLogits(_ context: [Int32]) throws(ModelError) -> [Float] {
        let window = Array(context.suffix(configuration.contextLength))
        guard !window.isEmpty else { throw .invalidBatch("an empty context") }
        try window.withUnsafeBufferPointer { (tokens) throws(ModelError) in try checkTokens(tokens, what: "context") }
        prepare(batch: 1, length: window.count)
        window.withUnsafeBufferPointer { forward($0.baseAddress!) }
        let logits = pointer(layout.logits) + (window.count - 1) * V
        return Array(UnsafeBufferPointer(start: logits, count: V))
    }

    /// `count` tokens sampled after `prompt`, one at a time from softmax(logits / temperature)
    /// restricted to the `topK` most likely (all when nil), with SplitMix64 from `seed`.
    public func generate(prompt: [Int32], count: Int, temperature: Float = 1, topK: Int? = nil, seed: UInt64 = 0) throws(ModelError) -> [Int32] {
        guard temperature > 0, temperature.isFinite else { throw .invalidBatch("temperature \(temperature); expected a finite number > 0") }
        var generator = SplitMix64(seed: seed, stream: 0x53414D50) // "SAMP"
        var context = prompt
        var output: [Int32] = []
        for _ in 0..<max(count, 0) {
            var logits = try nextTokenLogits(context).map { $0 / temperature }
            if let topK, topK < logits.count {
                let threshold = logits.sorted(by: >)[max(topK, 1) - 1]
                logits = logits.map { $0 < threshold ? -.infinity : $0 }
            }
            let largest = logits.max()!
            let weights = logits.map { Foundation.exp(Double($0 - largest)) }
            var u = Double(generator.next() >> 11) * 0x1p-53 * weights.reduce(0, +)
            var token = weights.count - 1
            for (index, weight) in weights.enumerated() {
                if u < weight { token = index; break }
                u -= weight
            }
            context.append(Int32(token))
            output.append(Int32(token))
        }
        return output
    }

    private func check(inputs: UnsafeBufferPointer<Int32>, targets: UnsafeBufferPointer<Int32>, batchSize: Int) throws(ModelError) {
        guard batchSize >= 1 else { throw .invalidBatch("batch size \(batchSize); expected >= 1") }
        guard !inputs.isEmpty, inputs.count % batchSize == 0 else {
            throw .invalidBatch("\(inputs.count) input tokens are not \(batchSize) sequences of equal length >= 1")
        }
        let length = inputs.count / batchSize
        guard length <= configuration.contextLength else {
            throw .invalidBatch("sequences of \(length) tokens; the model's context is \(configuration.contextLength)")
        }
        guard targets.count == inputs.count else { throw .invalidBatch("\(targets.count) targets for \(inputs.count) inputs") }
        try checkTokens(inputs, what: "input")
        try checkTokens(targets, what: "target")
    }

    private func checkTokens(_ tokens: UnsafeBufferPointer<Int32>, what: String) throws(ModelError) {
        for (index, token) in tokens.enumerated() where token < 0 || Int(token) >= configuration.vocabularySize {
            throw .invalidBatch("\(what) token \(token) at position \(index) is outside the vocabulary 0..<\(configuration.vocabularySize)")
        }
    }

    // MARK: - Buffers

    /// Offsets (in floats) of the arrays of one call's shape in ``storage``.
    private struct Layout {
        var residual = 0          // x₀ … x_L, (L+1) × N × C: the input of each block, x_L the input of ln_f
        var ln1 = 0, ln1Mean = 0, ln1Rstd = 0
        var q = 0, k = 0, v = 0   // per layer, [B, H, T, D]
        var probabilities = 0     // per layer, [B, H, T, T]
        var attended = 0          // per layer, the heads' outputs merged, N × C
        var middle = 0            // per layer, x after the attention's residual add
        var ln2 = 0, ln2Mean = 0, ln2Rstd = 0
        var fc = 0, gelu = 0      // per layer, N × 4C
        var tanh = 0              // per layer, N × 4C: the GELU's tanh, for its backward pass
        var lnf = 0, lnfMean = 0, lnfRstd = 0
        var logits = 0            // N × V (the gradient of the logits overwrites them)
        var qkv = 0               // N × 3C: c_attn's output, and in backward its gradient
        var dx = 0, dTemp = 0     // N × C each
        var dFc = 0               // N × 4C
        var partScratch = 0, partScratchSize = 0 // per part: T × T + 4 × T × D
        var total = 0
    }

    @inline(__always)
    private func pointer(_ offset: Int) -> UnsafeMutablePointer<Float> { storage! + offset }

    /// Sets the call's shape and grows the buffer when it is too small.
    private func prepare(batch: Int, length: Int) {
        self.batch = batch
        self.length = length
        let N = batch * length, L = configuration.layers, T = length, C = self.C, F = 4 * C
        var next = 0
        func take(_ count: Int) -> Int { defer { next += count }; return next }
        var l = Layout()
        l.residual = take((L + 1) * N * C)
        l.ln1 = take(L * N * C); l.ln1Mean = take(L * N); l.ln1Rstd = take(L * N)
        l.q = take(L * N * C); l.k = take(L * N * C); l.v = take(L * N * C)
        l.probabilities = take(L * batch * H * T * T)
        l.attended = take(L * N * C)
        l.middle = take(L * N * C)
        l.ln2 = take(L * N * C); l.ln2Mean = take(L * N); l.ln2Rstd = take(L * N)
        l.fc = take(L * N * F); l.gelu = take(L * N * F); l.tanh = take(L * N * F)
        l.lnf = take(N * C); l.lnfMean = take(N); l.lnfRstd = take(N)
        l.logits = take(N * V)
        l.qkv = take(N * 3 * C)
        l.dx = take(N * C); l.dTemp = take(N * C)
        l.dFc = take(N * F)
        l.partScratchSize = T * T + 4 * T * D
        l.partScratch = take(maximumParts * l.partScratchSize)
        l.total = next
        layout = l
        if l.total > capacity {
            storage?.deallocate()
            storage = .allocate(capacity: l.total)
            storage!.initialize(repeating: 0, count: l.total)
            capacity = l.total
            targetScratch?.deallocate()
            targetScratch = .allocate(capacity: N)
        } else if N > 0, targetScratch == nil {
            targetScratch = .allocate(capacity: N)
        }
    }

    // MARK: - Threaded parts

    private func runParallel(_ task: Task, _ parts: Int) {
        self.task = task
        taskParts = max(1, min(parts, maximumParts))
        pool.run(taskParts, job)
        self.task = .none
    }

    /// The range of `0..<count` that part `part` of ``taskParts`` takes.
    @inline(__always)
    private func share(_ part: Int, of count: Int, unit: Int = 1) -> Range<Int> {
        let units = (count + unit - 1) / unit
        let lower = min(count, units * part / taskParts * unit), upper = min(count, units * (part + 1) / taskParts * unit)
        return lower..<upper
    }

    private func runPart(_ part: Int) {
        switch task {
        case .none: break
        case let .attentionForward(layer):
            for pair in share(part, of: batch * H) { attentionForward(layer: layer, pair: pair, part: part) }
        case let .attentionBackward(layer):
            for pair in share(part, of: batch * H) { attentionBackward(layer: layer, pair: pair, part: part) }
        case let .gelu(layer):
            let range = share(part, of: rows * 4 * C, unit: 16), offset = layer * rows * 4 * C + range.lowerBound
            kernels.gelu(pointer(layout.fc + offset), pointer(layout.gelu + offset), pointer(layout.tanh + offset), range.count)
        case let .geluBackward(layer):
            let range = share(part, of: rows * 4 * C, unit: 16), offset = layer * rows * 4 * C + range.lowerBound
            kernels.geluBackward(pointer(layout.fc + offset), pointer(layout.tanh + offset), pointer(layout.dFc + range.lowerBound), range.count)
        case let .crossEntropy(gradient):
            (losses[part], rightCounts[part]) = crossEntropyRows(share(part, of: rows), gradient: gradient)
        }
    }

    // MARK: - Forward

    private func forward(_ tokens: UnsafePointer<Int32>) {
        let N = rows, C = self.C, F = 4 * C
        // x₀ = wte[token] + wpe[position]
        let x0 = pointer(layout.residual), wte = tokenEmbedding.values.baseAddress!, wpe = positionEmbedding.values.baseAddress!
        for row in 0..<N {
            let token = wte + Int(tokens[row]) * C, position = wpe + (row % length) * C, out = x0 + row * C
            for j in 0..<C { out[j] = token[j] + position[j] }
        }
        for (l, block) in blocks.enumerated() {
            let x = pointer(layout.residual + l * N * C)
            let ln1 = pointer(layout.ln1 + l * N * C)
            kernels.layerNorm(x, ln1, pointer(layout.ln1Mean + l * N), pointer(layout.ln1Rstd + l * N),
                                         block.ln1Weight.values.baseAddress!, block.ln1Bias.values.baseAddress!, 0..<N, C)
            linear(ln1, block.attentionWeight, block.attentionBias, into: pointer(layout.qkv), inputs: C, outputs: 3 * C)
            runParallel(.attentionForward(l), batch * H)
            // middle = x + attended · W_projᵀ + b_proj
            let middle = pointer(layout.middle + l * N * C)
            addBias(block.attentionProjectionBias, to: x, into: middle, width: C)
            gemm(pointer(layout.attended + l * N * C), block.attentionProjectionWeight, into: middle, rows: N, inputs: C, outputs: C)
            let ln2 = pointer(layout.ln2 + l * N * C)
            kernels.layerNorm(middle, ln2, pointer(layout.ln2Mean + l * N), pointer(layout.ln2Rstd + l * N),
                                         block.ln2Weight.values.baseAddress!, block.ln2Bias.values.baseAddress!, 0..<N, C)
            linear(ln2, block.fcWeight, block.fcBias, into: pointer(layout.fc + l * N * F), inputs: C, outputs: F)
            runParallel(.gelu(l), N * F / 16384 + 1)
            let next = pointer(layout.residual + (l + 1) * N * C)
            addBias(block.mlpProjectionBias, to: middle, into: next, width: C)
            gemm(pointer(layout.gelu + l * N * F), block.mlpProjectionWeight, into: next, rows: N, inputs: F, outputs: C)
        }
        let xL = pointer(layout.residual + configuration.layers * N * C)
        kernels.layerNorm(xL, pointer(layout.lnf), pointer(layout.lnfMean), pointer(layout.lnfRstd),
                                     finalNormWeight.values.baseAddress!, finalNormBias.values.baseAddress!, 0..<N, C)
        // logits = ln_f(x) · wteᵀ
        MatMul.gemm(m: N, n: V, k: C, buffer(pointer(layout.lnf), N * C), transposeA: false,
                    UnsafeBufferPointer(tokenEmbedding.values), transposeB: true,
                    UnsafeMutableBufferPointer(start: pointer(layout.logits), count: N * V), workspace: workspace, pool: pool)
    }

    /// out = input · Wᵀ + b (rows × outputs).
    private func linear(_ input: UnsafeMutablePointer<Float>, _ weight: Parameter, _ bias: Parameter, into out: UnsafeMutablePointer<Float>, inputs: Int, outputs: Int) {
        let b = bias.values.baseAddress!
        for row in 0..<rows { (out + row * outputs).update(from: b, count: outputs) }
        gemm(input, weight, into: out, rows: rows, inputs: inputs, outputs: outputs)
    }

    /// out = base + b, row by row (width C).
    private func addBias(_ bias: Parameter, to base: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>, width: Int) {
        let b = bias.values.baseAddress!
        for row in 0..<rows {
            let source = base + row * width, target = out + row * width
            for j in 0..<width { target[j] = source[j] + b[j] }
        }
    }

    /// out += input · Wᵀ, W of shape [outputs, inputs].
    private func gemm(_ input: UnsafeMutablePointer<Float>, _ weight: Parameter, into out: UnsafeMutablePointer<Float>, rows: Int, inputs: Int, outputs: Int) {
        MatMul.gemm(m: rows, n: outputs, k: inputs, buffer(input, rows * inputs), transposeA: false,
                    UnsafeBufferPointer(weight.values), transposeB: true,
                    UnsafeMutableBufferPointer(start: out, count: rows * outputs), accumulate: true, workspace: workspace, pool: pool)
    }

    /// One (sequence, head) pair of causal self-attention: gathers its q, k, v from c_attn's
    /// output, P = softmax(q·kᵀ/√D) (masked), out = P·v into the merged output's columns.
    private func attentionForward(layer: Int, pair: Int, part: Int) {
        let N = rows, C = self.C, D = self.D, T = length
        let b = pair / H, h = pair % H
        let headOffset = layer * N * C + pair * T * D
        let q = pointer(layout.q + headOffset), k = pointer(layout.k + headOffset), v = pointer(layout.v + headOffset)
        let qkv = pointer(layout.qkv)
        for t in 0..<T {
            let source = qkv + (b * T + t) * 3 * C + h * D
            (q + t * D).update(from: source, count: D)
            (k + t * D).update(from: source + C, count: D)
            (v + t * D).update(from: source + 2 * C, count: D)
        }
        let probabilities = pointer(layout.probabilities + (layer * batch * H + pair) * T * T)
        let scratch = pointer(layout.partScratch + part * layout.partScratchSize)
        let ws = partWorkspaces[part]
        MatMul.gemm(m: T, n: T, k: D, buffer(q, T * D), transposeA: false, buffer(k, T * D), transposeB: true,
                    UnsafeMutableBufferPointer(start: probabilities, count: T * T), workspace: ws, pool: pool)
        kernels.causalSoftmax(probabilities, T, 1 / Float(D).squareRoot())
        let out = scratch
        MatMul.gemm(m: T, n: D, k: T, buffer(probabilities, T * T), transposeA: false, buffer(v, T * D), transposeB: false,
                    UnsafeMutableBufferPointer(start: out, count: T * D), workspace: ws, pool: pool)
        let attended = pointer(layout.attended + layer * N * C)
        for t in 0..<T { (attended + (b * T + t) * C + h * D).update(from: out + t * D, count: D) }
    }

    // MARK: - Loss

    private func crossEntropy(_ targets: UnsafePointer<Int32>, gradient: Bool) -> Float {
        targetScratch!.update(from: targets, count: rows)
        let parts = min(maximumParts, max(1, rows / 64))
        runParallel(.crossEntropy(gradient), parts)
        var sum = 0.0
        lastCorrect = 0
        for part in 0..<taskParts {
            sum += losses[part]
            lastCorrect += rightCounts[part]
        }
        return Float(sum / Double(rows))
    }

    /// The summed loss of `range`'s rows; with `gradient`, the logits become ∂(mean loss)/∂logits.
    private func crossEntropyRows(_ range: Range<Int>, gradient: Bool) -> (Double, Int) {
        var sum = 0.0, correct = 0
        let V = self.V, scale = 1 / Float(rows)
        for row in range {
            let z = pointer(layout.logits + row * V)
            let target = Int(targetScratch![row])
            var largest = z[0], best = 0
            for j in 1..<V where z[j] > largest {
                largest = z[j]
                best = j
            }
            if best == target { correct += 1 }
            var total: Float = 0
            for j in 0..<V { total += expf(z[j] - largest) }
            sum += Double(largest + logf(total) - z[target])
            if gradient {
                let factor = scale / total
                for j in 0..<V { z[j] = expf(z[j] - largest) * factor }
                z[target] -= scale
            }
        }
        return (sum, correct)
    }

    // MARK: - Backward

    private func backward(_ tokens: UnsafePointer<Int32>) {
        let N = rows, C = self.C, F = 4 * C, L = configuration.layers
        let dlogits = pointer(layout.logits)
        let dx = pointer(layout.dx), dTemp = pointer(layout.dTemp)
        // Head: dwte = dlogitsᵀ · ln_f(x), d ln_f(x) = dlogits · wte.
        MatMul.gemm(m: V, n: C, k: N, buffer(dlogits, N * V), transposeA: true, buffer(pointer(layout.lnf), N * C), transposeB: false,
                    tokenEmbedding.gradientStorage(zeroed: false), workspace: workspace, pool: pool)
        MatMul.gemm(m: N, n: C, k: V, buffer(dlogits, N * V), transposeA: false, UnsafeBufferPointer(tokenEmbedding.values), transposeB: false,
                    UnsafeMutableBufferPointer(start: dTemp, count: N * C), workspace: workspace, pool: pool)
        dx.update(repeating: 0, count: N * C)
        kernels.layerNormBackward(dTemp, pointer(layout.residual + L * N * C), pointer(layout.lnfMean), pointer(layout.lnfRstd),
                                             finalNormWeight.values.baseAddress!, dx,
                                             finalNormWeight.gradientStorage().baseAddress!, finalNormBias.gradientStorage().baseAddress!,
                                             0..<N, C)
        let count = parameters.count
        gradientReadyHandler?((count - 2)..<count)  // ln_f
        for l in stride(from: L - 1, through: 0, by: -1) {
            let block = blocks[l]
            // This block's twelve tensors, reported as each pair's gradient is final.
            let first = 2 + 12 * l
            func ready(_ pair: Int) { gradientReadyHandler?((first + 2 * pair)..<(first + 2 * pair + 2)) }
            // MLP: next = middle + GELU(fc)·W₂ᵀ + b₂, fc = ln_2(middle)·W₁ᵀ + b₁.
            let dFc = pointer(layout.dFc)
            linearBackward(dOut: dx, input: pointer(layout.gelu + l * N * F), weight: block.mlpProjectionWeight, bias: block.mlpProjectionBias,
                           dInput: dFc, inputs: F, outputs: C)
            ready(5)  // mlp.c_proj
            runParallel(.geluBackward(l), N * F / 16384 + 1)
            linearBackward(dOut: dFc, input: pointer(layout.ln2 + l * N * C), weight: block.fcWeight, bias: block.fcBias,
                           dInput: dTemp, inputs: C, outputs: F)
            ready(4)  // mlp.c_fc
            kernels.layerNormBackward(dTemp, pointer(layout.middle + l * N * C), pointer(layout.ln2Mean + l * N), pointer(layout.ln2Rstd + l * N),
                                                 block.ln2Weight.values.baseAddress!, dx,
                                                 block.ln2Weight.gradientStorage().baseAddress!, block.ln2Bias.gradientStorage().baseAddress!,
                                                 0..<N, C)
            ready(3)  // ln_2
            // Attention: middle = x + attended·W_projᵀ + b_proj, qkv = ln_1(x)·W_attnᵀ + b_attn.
            linearBackward(dOut: dx, input: pointer(layout.attended + l * N * C), weight: block.attentionProjectionWeight, bias: block.attentionProjectionBias,
                           dInput: dTemp, inputs: C, outputs: C)
            ready(2)  // attn.c_proj
            runParallel(.attentionBackward(l), batch * H)
            let dqkv = pointer(layout.qkv)
            linearBackward(dOut: dqkv, input: pointer(layout.ln1 + l * N * C), weight: block.attentionWeight, bias: block.attentionBias,
                           dInput: dTemp, inputs: C, outputs: 3 * C)
            ready(1)  // attn.c_attn
            kernels.layerNormBackward(dTemp, pointer(layout.residual + l * N * C), pointer(layout.ln1Mean + l * N), pointer(layout.ln1Rstd + l * N),
                                                 block.ln1Weight.values.baseAddress!, dx,
                                                 block.ln1Weight.gradientStorage().baseAddress!, block.ln1Bias.gradientStorage().baseAddress!,
                                                 0..<N, C)
            ready(0)  // ln_1
        }
        // Embeddings: dwte[token] += dx, dwpe[position] = Σ over sequences of dx.
        let dwte = tokenEmbedding.gradient!.baseAddress!, dwpe = positionEmbedding.gradientStorage().baseAddress!
        for row in 0..<N {
            let source = dx + row * C, token = dwte + Int(tokens[row]) * C, position = dwpe + (row % length) * C
            for j in 0..<C {
                token[j] += source[j]
                position[j] += source[j]
            }
        }
        gradientReadyHandler?(0..<2)
    }

    /// For out = input·Wᵀ + b: dW = dOutᵀ·input, db = Σ_rows dOut, dInput = dOut·W (overwritten).
    private func linearBackward(dOut: UnsafeMutablePointer<Float>, input: UnsafeMutablePointer<Float>, weight: Parameter, bias: Parameter,
                                dInput: UnsafeMutablePointer<Float>, inputs: Int, outputs: Int) {
        let N = rows
        MatMul.gemm(m: outputs, n: inputs, k: N, buffer(dOut, N * outputs), transposeA: true, buffer(input, N * inputs), transposeB: false,
                    weight.gradientStorage(zeroed: false), workspace: workspace, pool: pool)
        let db = bias.gradientStorage(zeroed: false).baseAddress!
        db.update(from: dOut, count: outputs)
        for row in 1..<N {
            let source = dOut + row * outputs
            for j in 0..<outputs { db[j] += source[j] }
        }
        MatMul.gemm(m: N, n: inputs, k: outputs, buffer(dOut, N * outputs), transposeA: false, UnsafeBufferPointer(weight.values), transposeB: false,
                    UnsafeMutableBufferPointer(start: dInput, count: N * inputs), workspace: workspace, pool: pool)
    }

    /// The backward pass of one (sequence, head) pair: from ∂loss/∂(merged output) in dTemp to
    /// its q, k, v columns of ∂loss/∂qkv (the qkv buffer).
    private func attentionBackward(layer: Int, pair: Int, part: Int) {
        let N = rows, C = self.C, D = self.D, T = length
        let b = pair / H, h = pair % H
        let headOffset = layer * N * C + pair * T * D
        let q = pointer(layout.q + headOffset), k = pointer(layout.k + headOffset), v = pointer(layout.v + headOffset)
        let probabilities = pointer(layout.probabilities + (layer * batch * H + pair) * T * T)
        let scratch = pointer(layout.partScratch + part * layout.partScratchSize)
        let dP = scratch, dOut = scratch + T * T, dq = dOut + T * D, dk = dq + T * D, dv = dk + T * D
        let ws = partWorkspaces[part]
        let dAttended = pointer(layout.dTemp)
        for t in 0..<T { (dOut + t * D).update(from: dAttended + (b * T + t) * C + h * D, count: D) }
        // dP = dOut · vᵀ, dv = Pᵀ · dOut
        MatMul.gemm(m: T, n: T, k: D, buffer(dOut, T * D), transposeA: false, buffer(v, T * D), transposeB: true,
                    UnsafeMutableBufferPointer(start: dP, count: T * T), workspace: ws, pool: pool)
        MatMul.gemm(m: T, n: D, k: T, buffer(probabilities, T * T), transposeA: true, buffer(dOut, T * D), transposeB: false,
                    UnsafeMutableBufferPointer(start: dv, count: T * D), workspace: ws, pool: pool)
        kernels.causalSoftmaxBackward(probabilities, dP, T, 1 / Float(D).squareRoot())
        // dq = dS · k, dk = dSᵀ · q
        MatMul.gemm(m: T, n: D, k: T, buffer(dP, T * T), transposeA: false, buffer(k, T * D), transposeB: false,
                    UnsafeMutableBufferPointer(start: dq, count: T * D), workspace: ws, pool: pool)
        MatMul.gemm(m: T, n: D, k: T, buffer(dP, T * T), transposeA: true, buffer(q, T * D), transposeB: false,
                    UnsafeMutableBufferPointer(start: dk, count: T * D), workspace: ws, pool: pool)
        let dqkv = pointer(layout.qkv)
        for t in 0..<T {
            let target = dqkv + (b * T + t) * 3 * C + h * D
            target.update(from: dq + t * D, count: D)
            (target + C).update(from: dk + t * D, count: D)
            (target + 2 * C).update(from: dv + t * D, count: D)
        }
    }

    private func buffer(_ pointer: UnsafeMutablePointer<Float>, _ count: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: pointer, count: count)
    }
}
