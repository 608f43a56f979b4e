import Foundation

/// SOAP (Vyas et al., 2024): Adam run in the eigenbasis of Shampoo's preconditioner — for each
/// dimension of a tensor, a Kronecker factor `GG_i` (the moving average of the gradient's
/// mode-i Gram matrix) whose eigenvectors `Q_i` rotate the gradient before Adam's
/// normalisation and rotate the update back — matching pytorch-optimizer 4.1.0's `SOAP`.
///
/// Per group, a step count `T`, advanced by every `step()` for every group, also when none of
/// its parameters has a gradient. At a parameter's first gradient `g`:
/// ```
/// GG_i ← lerp(0, G_i, 1 − β_s)        G_i = g_(i)·g_(i)ᵀ, the mode-i unfolding's Gram matrix
/// Q_i  = eigenvectors of GG_i + 1e-30·I, columns by descending eigenvalue
/// ```
/// and on the group's first step (`T` = 1) nothing else happens; a parameter whose first gradient
/// comes later is initialised and then updated in the same step, as in the reference. Later
/// (`t = T − 1`):
/// ```
/// g ← −g if maximize;  η = lr·√(1 − β2ᵗ)/(1 − β1ᵗ)  (lr if not correct_bias)
/// ĝ = g ×_1 Q_1ᵀ ×_2 Q_2ᵀ …                          (project: each axis rotated by its Qᵀ)
/// m ← lerp(m, g, 1 − β1)                              (in the parameter's own basis)
/// v ← lerp(v, ĝ², 1 − β2)                             (in the rotated basis)
/// u = project_back(project(m) / (√v + ε))            (each axis rotated back by its Q)
/// u ← u / (√mean(u²) + ε) if normalize_gradient
/// p ← p − η·u;   p ← p·(1 − lr·λ)
/// GG_i ← lerp(GG_i, G_i, 1 − β_s);   every precondition_frequency steps (t % f = 0), per factor:
///   P = GG_i·Q_i;  order = argsort(diag(Q_iᵀ·P), descending);  v permuted along axis i by order;
///   Q_i = Q of the QR decomposition of P[:, order]         (one power iteration instead of eigh)
/// ```
/// A dimension larger than `max_precondition_dim` has no factor (identity rotation); a 1-D
/// parameter has one only with `precondition_1d`, a 0-d one none (so both are plain Adam; with
/// `merge_dims` a 0-d parameter is reshaped to `[1]` and gets a 1 × 1 factor, ±1).
/// `merge_dims` first reshapes a tensor of two or more dimensions by merging neighbouring
/// dimensions while their product stays ≤ `max_precondition_dim` (`[2, 2, 4]` → `[4, 4]`), after
/// moving channels first (`[N, H, W, C]` → `[N, C, H, W]`) for a 4-D tensor when `data_format`
/// is "channels_last" (which matters only then). The eigendecomposition and QR are
/// ``SymmetricEigen``'s (in Double, rounded to float32), the products ``MatMul``'s (float32).
///
/// Defaults: `lr` 3e-3, `betas` (0.95, 0.95), `shampoo_beta` None (= β2), `weight_decay` 1e-2
/// (decoupled, after the update), `precondition_frequency` 10, `max_precondition_dim` 10000,
/// `merge_dims` false, `precondition_1d` false, `correct_bias` true, `normalize_gradient` false,
/// `data_format` "channels_first", `eps` 1e-8, `maximize` false. State: `exp_avg` and
/// `exp_avg_sq` (8 bytes per element; `exp_avg_sq` is kept in the rotated basis, in the
/// parameter's own element order), and when the tensor has factors `GG` and `Q`, every factor's
/// `d_i × d_i` matrix concatenated in dimension order (8·Σ d_i² bytes; `GG` starts with one
/// more float that records the factors' size). The group's step count is group state (`step`),
/// saved in checkpoints. Not in the reference, kept here: a 1-D parameter of
/// `1 < n ≤ max_precondition_dim` elements with `merge_dims` (4.1.0 raises in its `project`) is
/// treated as without `merge_dims`. `max_precondition_dim`, `merge_dims`, `precondition_1d` and
/// `data_format` shape a parameter's factors at its first gradient: changing them later in a way
/// that changes a parameter's factor sizes is refused by `setHyperparameters` with an error
/// (nothing changes; the reference fails too), and a parameter that
/// had no factors at its first gradient gets none later (`precondition_1d` switched on).
///
/// Reference: pytorch-optimizer 4.1.0, `pytorch_optimizer.SOAP`; paper: Vyas et al., 2024,
/// "SOAP: Improving and Stabilizing Shampoo using Adam", arXiv:2409.11321.
public typealias SOAP = GradientOptimizer<SOAPRule>

/// The update rule of ``SOAP``: its hyperparameters, state, per-step coefficients and kernel.
public enum SOAPRule: WholeTensorRule {
    /// The registry name.
    public static let name = "soap"

    /// The layout of 4-D tensors, for `merge_dims` (the reference's `data_format`).
    public enum DataFormat: String, Sendable, CaseIterable {
        /// `[N, C, H, W]`.
        case channelsFirst = "channels_first"
        /// `[N, H, W, C]`: permuted to channels first before the dimensions are merged.
        case channelsLast = "channels_last"
    }

    /// The hyperparameters of ``SOAP``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: the decays of the first moment and of the second moment in the rotated basis.
        public var betas: Betas
        /// The decay of the preconditioner statistics `GG`; `nil` (torch's `None`) is β2.
        public var shampooBeta: Double?
        /// Decoupled decay, `p ← p·(1 − lr·λ)`, applied after the update.
        public var weightDecay: Double
        /// Steps between two refreshes of the eigenbases (by one QR power iteration).
        public var preconditionFrequency: Int
        /// Dimensions larger than this get no factor (identity).
        public var maxPreconditionDimension: Int
        /// Merge small neighbouring dimensions (up to ``maxPreconditionDimension``) first.
        public var mergeDimensions: Bool
        /// Give 1-D parameters a factor too.
        public var precondition1D: Bool
        /// Adam's bias corrections on the step size.
        public var correctBias: Bool
        /// Divide the update by its RMS (plus ε).
        public var normalizeGradient: Bool
        /// `data_format`: the layout of 4-D tensors, for ``mergeDimensions``.
        public var dataFormat: DataFormat
        /// `eps`, added to `√v` in the denominator (and to the RMS with ``normalizeGradient``).
        public var eps: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``SOAP``.
        public init(learningRate: Double = 3e-3, betas: Betas = .init(0.95, 0.95), shampooBeta: Double? = nil, weightDecay: Double = 1e-2,
                    preconditionFrequency: Int = 10, maxPreconditionDimension: Int = 10000, mergeDimensions: Bool = false,
                    precondition1D: Bool = false, correctBias: Bool = true, normalizeGradient: Bool = false,
                    dataFormat: DataFormat = .channelsFirst, eps: Double = 1e-8, maximize: Bool = false) {
            self.learningRate = learningRate
            self.betas = betas
            self.shampooBeta = shampooBeta
            self.weightDecay = weightDecay
            self.preconditionFrequency = preconditionFrequency
            self.maxPreconditionDimension = maxPreconditionDimension
            self.mergeDimensions = mergeDimensions
            self.precondition1D = precondition1D
            self.correctBias = correctBias
            self.normalizeGradient = normalizeGradient
            self.dataFormat = dataFormat
            self.eps = eps
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            func positiveInteger(_ key: String, _ swiftName: String, _ defaultValue: Int) throws(OptimError) -> Int {
                let value = try reader.number(key, default: Double(defaultValue))
                guard value == value.rounded(), value >= 1, value <= 1e15 else {
                    throw .invalidHyperparameter(optimizer: name, name: "\(swiftName) (\(key))", value: HyperparameterValue.format(value),
                                                 expected: "an integer >= 1")
                }
                return Int(value)
            }
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      shampooBeta: try reader.optionalNumber("shampoo_beta", default: d.shampooBeta),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      preconditionFrequency: try positiveInteger("precondition_frequency", "preconditionFrequency", d.preconditionFrequency),
                      maxPreconditionDimension: try positiveInteger("max_precondition_dim", "maxPreconditionDimension", d.maxPreconditionDimension),
                      mergeDimensions: try reader.bool("merge_dims", default: d.mergeDimensions),
                      precondition1D: try reader.bool("precondition_1d", default: d.precondition1D),
                      correctBias: try reader.bool("correct_bias", default: d.correctBias),
                      normalizeGradient: try reader.bool("normalize_gradient", default: d.normalizeGradient),
                      dataFormat: DataFormat(rawValue: try reader.choice("data_format", DataFormat.allCases.map(\.rawValue),
                                                                         default: d.dataFormat.rawValue))!,
                      eps: try reader.number("eps", default: d.eps),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "shampoo_beta": shampooBeta.map { .number($0) } ?? .null,
             "weight_decay": .number(weightDecay), "precondition_frequency": .number(Double(preconditionFrequency)),
             "max_precondition_dim": .number(Double(maxPreconditionDimension)), "merge_dims": .bool(mergeDimensions),
             "precondition_1d": .bool(precondition1D), "correct_bias": .bool(correctBias),
             "normalize_gradient": .bool(normalizeGradient), "data_format": .string(dataFormat.rawValue), "eps": .number(eps),
             "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            if let shampooBeta { try Validate.unitInterval(shampooBeta, "shampooBeta (shampoo_beta)", name) }
            try Validate.weightDecay(weightDecay, name)
            guard preconditionFrequency >= 1 else {
                throw Validate.fail(name, "preconditionFrequency (precondition_frequency)", Double(preconditionFrequency), "an integer >= 1")
            }
            guard maxPreconditionDimension >= 1 else {
                throw Validate.fail(name, "maxPreconditionDimension (max_precondition_dim)", Double(maxPreconditionDimension), "an integer >= 1")
            }
            try Validate.nonNegative(eps, "eps", name)
        }
    }

    /// The scalars of one step of ``SOAP``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        /// The group's step count after this step's increment (1 on the group's first step).
        var groupStep: Int
        /// The parameter's own count of steps with a gradient (1 at its first gradient).
        var parameterStep: Int
        var beta1Weight: Float, beta1Complement: Float
        var beta2Weight: Float, beta2Complement: Float
        var shampooWeight: Float, shampooComplement: Float
        var eps: Float
        var negativeStepSize: Float
        var decay: Float
        var applyDecay: Bool
        var frequency: Int
        var maxDimension: Int
        var merge: Bool
        var precondition1D: Bool
        var channelsLast: Bool
        var normalize: Bool
        var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg", "exp_avg_sq", "GG", "Q"] }

    public static func stateLayout(_ h: Hyperparameters, shape: [Int]) -> [StateBuffer] {
        let count = shape.reduce(1, *)
        let geometry = Geometry(shape: shape, maxDimension: h.maxPreconditionDimension, merge: h.mergeDimensions,
                                precondition1D: h.precondition1D, channelsLast: h.dataFormat == .channelsLast)
        var buffers = [StateBuffer(name: "exp_avg", count: count), StateBuffer(name: "exp_avg_sq", count: count)]
        if geometry.factorTotal > 0 && count > 0 {
            // GG[0] records the factors' total size (``layoutMark``), then the factors.
            buffers.append(StateBuffer(name: "GG", count: geometry.factorTotal + 1))
            buffers.append(StateBuffer(name: "Q", count: geometry.factorTotal))
        }
        return buffers
    }

    /// The group's step count: `step`, advanced at the start of every `step()` call.
    public static func groupStateNames(_ h: Hyperparameters) -> [String] { ["step"] }

    public static func advanceGroup(_ h: Hyperparameters, initialLearningRate: Double, state: inout [Double]) {
        state[0] += 1
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int, groupState: [Double],
                                    scalars: inout [Float]) -> Coefficients {
        coefficients(h, parameterStep: step, groupStep: Int(groupState[0]))
    }

    /// Without its group's state (not called by ``GradientOptimizer``, which has it): as if the
    /// parameter had had a gradient at every step of its group.
    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        coefficients(h, parameterStep: step, groupStep: step)
    }

    /// The coefficients of a parameter's `parameterStep`-th gradient in the group's step `groupStep`.
    static func coefficients(_ h: Hyperparameters, parameterStep: Int, groupStep: Int) -> Coefficients {
        let t = groupStep - 1
        var stepSize = h.learningRate
        if h.correctBias && t > 0 {
            let bias1 = 1 - pow(h.betas.first, Double(t))
            let bias2Root = (1 - pow(h.betas.second, Double(t))).squareRoot()
            stepSize *= bias2Root / bias1
        }
        let w1 = Float(1 - h.betas.first), w2 = Float(1 - h.betas.second), ws = Float(1 - (h.shampooBeta ?? h.betas.second))
        return Coefficients(groupStep: groupStep, parameterStep: parameterStep,
                            beta1Weight: w1, beta1Complement: 1 - w1, beta2Weight: w2, beta2Complement: 1 - w2,
                            shampooWeight: ws, shampooComplement: 1 - ws, eps: Float(h.eps), negativeStepSize: Float(-stepSize),
                            decay: Float(1 - h.weightDecay * h.learningRate), applyDecay: h.weightDecay != 0,
                            frequency: h.preconditionFrequency, maxDimension: h.maxPreconditionDimension, merge: h.mergeDimensions,
                            precondition1D: h.precondition1D, channelsLast: h.dataFormat == .channelsLast,
                            normalize: h.normalizeGradient, maximize: h.maximize)
    }

    /// How a tensor is preconditioned: its working shape (after `merge_dims`) and which of those
    /// dimensions have a factor.
    struct Geometry {
        /// The working dimensions, in order.
        var dimensions: [Int]
        /// Whether each working dimension has a factor (`GG`, `Q`).
        var factored: [Bool]
        /// Offsets of each factor in the concatenated `GG` / `Q` buffers (−1 for none).
        var offsets: [Int]
        var factorTotal: Int
        /// The original `[N, H, W, C]` shape when the working tensor is its `[N, C, H, W]` permutation.
        var channelsLastShape: [Int]?

        init(shape: [Int], maxDimension: Int, merge: Bool, precondition1D: Bool, channelsLast: Bool) {
            switch shape.count {
            case 0:
                // torch's merge_dims reshapes a 0-d tensor to [1]: one 1 × 1 factor.
                dimensions = merge ? [1] : []
                factored = merge ? [1 <= maxDimension] : []
            case 1:
                dimensions = shape
                factored = [precondition1D && shape[0] <= maxDimension]
            default:
                var base = shape
                if merge && channelsLast && shape.count == 4 {
                    base = [shape[0], shape[3], shape[1], shape[2]]
                    channelsLastShape = shape
                }
                dimensions = merge ? SOAPRule.mergeSmallDimensions(base, maxDimension) : base
                factored = dimensions.map { $0 <= maxDimension }
            }
            var offset = 0
            offsets = []
            for (dimension, has) in zip(dimensions, factored) {
                offsets.append(has ? offset : -1)
                if has { offset += dimension * dimension }
            }
            factorTotal = offset
        }

        /// No factor on any dimension (identity rotations).
        mutating func removeFactors() {
            factored = factored.map { _ in false }
            offsets = offsets.map { _ in -1 }
            factorTotal = 0
        }

        /// The index in the parameter of each element of the working tensor (nil: the same).
        func sourceIndices() -> [Int]? {
            guard let shape = channelsLastShape else { return nil }
            let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3])
            var indices = [Int]()
            indices.reserveCapacity(n * h * w * c)
            for a in 0..<n {
                for channel in 0..<c {
                    for row in 0..<h {
                        for column in 0..<w { indices.append(((a * h + row) * w + column) * c + channel) }
                    }
                }
            }
            return indices
        }
    }

    /// The bit pattern GG[0] holds for factors of `total` elements (never 0).
    static func layoutMark(_ total: Int) -> UInt32 { UInt32(truncatingIfNeeded: total) | 0x8000_0000 }

    /// pytorch-optimizer's `merge_small_dims`: neighbouring dimensions multiplied together while
    /// the product stays ≤ `maxDimension`; `[1]` when that leaves a single dimension.
    static func mergeSmallDimensions(_ shape: [Int], _ maxDimension: Int) -> [Int] {
        var merged: [Int] = []
        var product = 1
        for dimension in shape {
            product *= dimension
            if product > maxDimension {
                merged.append(dimension == 0 ? 0 : product / dimension)
                product = dimension
            }
        }
        merged.append(product)
        return merged.count > 1 ? merged : [1]
    }

    /// The working tensor's Kronecker factors, projections and refreshes, over the state buffers.
    struct Preconditioner {
        let geometry: Geometry
        let count: Int
        let gg: UnsafeMutablePointer<Float>
        let q: UnsafeMutablePointer<Float>
        let pool: ThreadPool
        let workspace = MatMul.Workspace()

        /// `x` (working layout) with every axis rotated by its Qᵀ (forward) or Q (backward):
        /// torch's `tensordot(x, Q, [[0], [0 or 1]])` over the axes in turn.
        func project(_ x: [Float], backward: Bool) -> [Float] {
            var current = x, shape = geometry.dimensions
            var next = [Float](repeating: 0, count: count)
            for axis in geometry.dimensions.indices {
                let first = shape[0], rest = count / max(first, 1)
                if geometry.factored[axis] {
                    let factor = UnsafeBufferPointer(start: q + geometry.offsets[axis], count: first * first)
                    current.withUnsafeBufferPointer { a in
                        next.withUnsafeMutableBufferPointer { c in
                            MatMul.gemm(m: rest, n: first, k: first, a, transposeA: true, factor, transposeB: backward, c,
                                        workspace: workspace, pool: pool)
                        }
                    }
                } else {
                    for a in 0..<first {
                        for r in 0..<rest { next[r * first + a] = current[a * rest + r] }
                    }
                }
                swap(&current, &next)
                shape = Array(shape.dropFirst()) + [first]
            }
            return current
        }

        /// `GG_i ← lerp(GG_i, g_(i)·g_(i)ᵀ, weight)` for every factor.
        func accumulate(_ g: [Float], _ c: Coefficients) {
            let dimensions = geometry.dimensions
            for axis in dimensions.indices where geometry.factored[axis] {
                let d = dimensions[axis]
                let before = dimensions[..<axis].reduce(1, *), after = dimensions[(axis + 1)...].reduce(1, *)
                let rest = before * after
                // The mode-`axis` unfolding: row a holds the elements with index a on that axis.
                var unfolded = [Float](repeating: 0, count: count)
                for b in 0..<before {
                    for a in 0..<d {
                        for f in 0..<after { unfolded[a * rest + b * after + f] = g[(b * d + a) * after + f] }
                    }
                }
                var outer = [Float](repeating: 0, count: d * d)
                unfolded.withUnsafeBufferPointer { u in
                    outer.withUnsafeMutableBufferPointer { o in
                        MatMul.gemm(m: d, n: d, k: rest, u, transposeA: false, u, transposeB: true, o, workspace: workspace, pool: pool)
                    }
                }
                let factor = gg + geometry.offsets[axis]
                for i in 0..<(d * d) {
                    factor[i] = Elementwise.lerp(factor[i], outer[i], weight: c.shampooWeight, oneMinusWeight: c.shampooComplement)
                }
            }
        }

        /// `Q_i` = the eigenvectors of `GG_i + 1e-30·I`, by descending eigenvalue.
        func eigenbases() {
            for axis in geometry.dimensions.indices where geometry.factored[axis] {
                let d = geometry.dimensions[axis], offset = geometry.offsets[axis]
                var matrix = Array(UnsafeBufferPointer(start: gg + offset, count: d * d))
                for i in 0..<d { matrix[i * d + i] += Float(1e-30) }
                matrix.withUnsafeBufferPointer { m in
                    _ = SymmetricEigen.decompose(m, n: d, vectors: UnsafeMutableBufferPointer(start: q + offset, count: d * d))
                }
            }
        }

        /// One power iteration per factor: `P = GG_i·Q_i`, its columns sorted by the Rayleigh
        /// quotients `diag(Q_iᵀ·P)` (descending), `Q_i` = the Q of `P`'s QR; `v` (working layout)
        /// permuted along each axis by the same order.
        func refresh(_ v: inout [Float]) {
            let dimensions = geometry.dimensions
            for axis in dimensions.indices where geometry.factored[axis] {
                let d = dimensions[axis], offset = geometry.offsets[axis]
                let factor = UnsafeMutableBufferPointer(start: q + offset, count: d * d)
                var product = [Float](repeating: 0, count: d * d)
                product.withUnsafeMutableBufferPointer { p in
                    MatMul.gemm(m: d, n: d, k: d, UnsafeBufferPointer(start: gg + offset, count: d * d), transposeA: false,
                                UnsafeBufferPointer(factor), transposeB: false, p, workspace: workspace, pool: pool)
                }
                var estimates = [Float](repeating: 0, count: d)
                for j in 0..<d {
                    var sum: Float = 0
                    for r in 0..<d { sum += factor[r * d + j] * product[r * d + j] }
                    estimates[j] = sum
                }
                let order = (0..<d).sorted { estimates[$0] > estimates[$1] || (estimates[$0] == estimates[$1] && $0 < $1) }
                let before = dimensions[..<axis].reduce(1, *), after = dimensions[(axis + 1)...].reduce(1, *)
                let old = v
                for b in 0..<before {
                    for j in 0..<d {
                        let source = (b * d + order[j]) * after, target = (b * d + j) * after
                        for f in 0..<after { v[target + f] = old[source + f] }
                    }
                }
                var columns = [Float](repeating: 0, count: d * d)
                for r in 0..<d {
                    for j in 0..<d { columns[r * d + j] = product[r * d + order[j]] }
                }
                columns.withUnsafeBufferPointer { SymmetricEigen.orthogonalFactor($0, n: d, into: factor) }
            }
        }
    }

    public static func updateTensor(_ o: KernelOperands, shape: [Int], _ c: Coefficients, kernels: RuleKernels<Coefficients>, pool: ThreadPool,
                                    collectingMetrics: Bool) -> MetricAccumulator {
        let n = o.count
        guard n > 0 else { return MetricAccumulator() }
        var geometry = Geometry(shape: shape, maxDimension: c.maxDimension, merge: c.merge, precondition1D: c.precondition1D,
                                channelsLast: c.channelsLast)
        if geometry.factorTotal > 0 && o.state2 == o.state3 {
            // No GG and Q buffers (both are the optimizer's one-float placeholder): the parameter got
            // its state before these hyperparameters gave it factors, and keeps going without.
            geometry.removeFactors()
        }
        let sources = geometry.sourceIndices()
        @inline(__always) func source(_ w: Int) -> Int { sources?[w] ?? w }
        let scale = o.gradientScale
        @inline(__always) func gradient(_ i: Int) -> Float { scale == 1 ? o.gradient[i] : o.gradient[i] * scale }
        let preconditioner = Preconditioner(geometry: geometry, count: n, gg: o.state2 + 1, q: o.state3, pool: pool)
        let factors = geometry.factorTotal > 0
        let initialise = c.parameterStep == 1
        if factors {
            // The buffers were sized for the structural hyperparameters of the parameter's first
            // gradient, which GG[0] records: refuse to run over buffers of another size.
            if initialise {
                o.state2[0] = Float(bitPattern: layoutMark(geometry.factorTotal))
            } else {
                precondition(o.state2[0].bitPattern == layoutMark(geometry.factorTotal),
                             "soap: a parameter of shape \(shape) got its preconditioner under other max_precondition_dim, merge_dims, precondition_1d or data_format values; changing them after its first gradient is not supported")
            }
        }
        // The gradient in the working layout (its sign does not matter to GG).
        var g = [Float](repeating: 0, count: n)
        for w in 0..<n { g[w] = gradient(source(w)) }

        if initialise && factors {
            // init_group: the first statistics and their eigenbases (and a refresh if the group's
            // step count before this step is a multiple of the frequency).
            preconditioner.accumulate(g, c)
            preconditioner.eigenbases()
            let previous = c.groupStep - 1
            if previous > 0 && previous % c.frequency == 0 {
                var zeros = [Float](repeating: 0, count: n)
                preconditioner.refresh(&zeros)
            }
        }
        var sums = MetricAccumulator()
        let m = o.state0
        guard c.groupStep > 1 else {
            // The group's first step only initialises.
            if collectingMetrics {
                for i in 0..<n { sums.add(before: o.parameter[i], after: o.parameter[i], gradient: gradient(i), moment: m[i]) }
            }
            return sums
        }
        if c.maximize { for w in 0..<n { g[w] = -g[w] } }
        // Adam in the eigenbasis.
        for i in 0..<n {
            let gi = c.maximize ? -gradient(i) : gradient(i)
            m[i] = Elementwise.lerp(m[i], gi, weight: c.beta1Weight, oneMinusWeight: c.beta1Complement)
        }
        let projected = preconditioner.project(g, backward: false)
        var v = [Float](repeating: 0, count: n)
        for w in 0..<n {
            let square = projected[w] * projected[w]
            v[w] = Elementwise.lerp(o.state1[source(w)], square, weight: c.beta2Weight, oneMinusWeight: c.beta2Complement)
        }
        var moment = [Float](repeating: 0, count: n)
        for w in 0..<n { moment[w] = m[source(w)] }
        let projectedMoment = preconditioner.project(moment, backward: false)
        var ratio = [Float](repeating: 0, count: n)
        for w in 0..<n { ratio[w] = projectedMoment[w] / (v[w].squareRoot() + c.eps) }
        var update = preconditioner.project(ratio, backward: true)
        if c.normalize {
            var sum = 0.0
            for w in 0..<n { sum += Double(update[w] * update[w]) }
            let root = Float(sum / Double(n)).squareRoot() + c.eps
            for w in 0..<n { update[w] /= root }
        }
        for w in 0..<n {
            let i = source(w)
            let before = o.parameter[i]
            var after = before.addingProduct(update[w], c.negativeStepSize)
            if c.applyDecay { after *= c.decay }
            o.parameter[i] = after
            if collectingMetrics { sums.add(before: before, after: after, gradient: gradient(i), moment: m[i]) }
        }
        if factors {
            preconditioner.accumulate(g, c)
            let t = c.groupStep - 1
            if t % c.frequency == 0 { preconditioner.refresh(&v) }
        }
        for w in 0..<n { o.state1[source(w)] = v[w] }
        return sums
    }
}

extension SOAPRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "SOAP",
        reference: .init(library: "pytorch-optimizer", version: "4.1.0", symbol: "pytorch_optimizer.SOAP",
                         paper: "Vyas et al., 2024, \"SOAP: Improving and Stabilizing Shampoo using Adam\", arXiv:2409.11321"),
        suggested: ["lr": .number(3e-3)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       warmupSteps: 1),
        benchmark: .init(configuration: .init(name: name),
                         reference: .none(reason: "each tensor takes matrix products, an eigendecomposition and QR refreshes; no elementwise C kernel")))
}
