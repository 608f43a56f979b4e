/// Prodigy's per-chunk loops (``Prodigy``'s two passes at `slice_p` 1), as
/// function values: the baseline ones compiled into `Optim`, and the ones a kernel module
/// compiles for its instruction set (`table.setProdigyKernels` in the kernel modules), chosen at
/// run time like the elementwise rules' (``KernelDispatch``). Every path does the same
/// arithmetic, bit for bit.
public struct ProdigyKernels: @unchecked Sendable {
    /// Pass 1 over a chunk: the exact sums' terms binned into `dot` (⟨g, p₀ − p⟩) and `absolute`
    /// (|s|), and `s`, `exp_avg` and `exp_avg_sq` updated, a vector at a time
    /// (``Prodigy/firstPassChunk(_:_:_:dot:absolute:)``).
    public let firstPass: (KernelOperands, Prodigy.FirstPass, Range<Int>, inout ExactChunkSum, inout ExactChunkSum) -> Void
    /// Pass 2 over a chunk: decay and step, and the metric sums when the last argument is true
    /// (``Prodigy/secondPassChunk(_:_:_:collecting:)``).
    public let secondPass: (KernelOperands, Prodigy.SecondPass, Range<Int>, Bool) -> MetricAccumulator

    /// The kernels from their function values (written in the kernel module that compiles them).
    public init(firstPass: @escaping (KernelOperands, Prodigy.FirstPass, Range<Int>, inout ExactChunkSum, inout ExactChunkSum) -> Void,
                secondPass: @escaping (KernelOperands, Prodigy.SecondPass, Range<Int>, Bool) -> MetricAccumulator) {
        self.firstPass = firstPass
        self.secondPass = secondPass
    }

    /// The loops as compiled into `Optim` itself: the baseline path.
    static let baseline = ProdigyKernels(firstPass: { Prodigy.firstPassChunk($0, $1, $2, dot: &$3, absolute: &$4) },
                                         secondPass: { Prodigy.secondPassChunk($0, $1, $2, collecting: $3) })
}

extension Prodigy {
    /// The per-step scalars of pass 1 for one group (rounded to Float as prodigyopt hands them
    /// to float32 tensors): `g ← g + coupledDecay·p`; `m ← β1·m + momentScale·g`;
    /// `v ← β2·v + squareScale·g·g`; `s ← β3·s + sliceScale·g`.
    public struct FirstPass: Sendable {
        /// λ when the decay is coupled (added to the gradient), else 0.
        public var coupledDecay: Float
        /// β1, β2, β3.
        public var beta1: Float, beta2: Float, beta3: Float
        /// `d(1 − β1)`, `d²(1 − β2)`, and `(d/d0)·(safeguard_warmup ? d : dlr)`.
        public var momentScale: Float, squareScale: Float, sliceScale: Float
        /// `slice_p` (the kernels take only 1).
        public var sliceP: Int
        /// Whether `exp_avg` is kept (β1 > 0): operand `state0`.
        public var keepsMoment: Bool
    }

    /// The per-step scalars of pass 2 for one group: `p ← p + decoupledDecay·p` (when decay is
    /// decoupled), then `p ← p + negativeStep·m / (√v + denominatorAdd)`, or without `exp_avg`
    /// `p ← p + negativeGradientStep·(g + coupledDecay·p) / (√v + denominatorAdd)`.
    public struct SecondPass: Sendable {
        /// λ when the decay is coupled, else 0.
        public var coupledDecay: Float
        /// `−λ·dlr` when the decay is decoupled and λ ≠ 0, else nil.
        public var decoupledDecay: Float?
        /// `d·eps`, the new `d`.
        public var denominatorAdd: Float
        /// `−dlr` and `−dlr·d`.
        public var negativeStep: Float, negativeGradientStep: Float
        /// Whether `exp_avg` is kept (β1 > 0): operand `state0`.
        public var keepsMoment: Bool
    }

    /// Pass 1 over `range` at `slice_p` 1, a vector at a time: the exact sums' terms `g·(p₀ − p)`
    /// into `dot` and `|β3·s + sliceScale·g|` into `absolute`
    /// (``ExactChunkSum/addProducts(_:_:)``, ``ExactChunkSum/addMagnitudes(_:)``), and the state
    /// — `s`, `exp_avg`, `exp_avg_sq` (operands `state2`, `state0`, `state1`; `p₀` is `state3`) —
    /// in the same pass over memory. The loop variant for the moment and the coupled decay is
    /// chosen once, outside the loops.
    @_transparent
    public static func firstPassChunk(_ operands: KernelOperands, _ c: FirstPass, _ range: Range<Int>,
                                      dot: inout ExactChunkSum, absolute: inout ExactChunkSum) {
        switch (c.keepsMoment, c.coupledDecay != 0) {
        case (true, false): firstPassLoops(operands, c, range, moment: true, coupled: false, &dot, &absolute)
        case (true, true): firstPassLoops(operands, c, range, moment: true, coupled: true, &dot, &absolute)
        case (false, false): firstPassLoops(operands, c, range, moment: false, coupled: false, &dot, &absolute)
        case (false, true): firstPassLoops(operands, c, range, moment: false, coupled: true, &dot, &absolute)
        }
    }

    @inlinable @inline(__always)
    static func firstPassLoops(_ operands: KernelOperands, _ c: FirstPass, _ range: Range<Int>, moment: Bool, coupled: Bool,
                               _ dot: inout ExactChunkSum, _ absolute: inout ExactChunkSum) {
        @inline(__always) func vector(_ i: Int, _ lanes: Int) {
            let p = Elementwise.load(operands.parameter, i, lanes)
            var gi = Elementwise.gradient(operands, i, lanes)
            if coupled { gi = gi + c.coupledDecay * p }
            // Padding lanes load as zeros: their terms are 0.
            dot.addProducts(gi, Elementwise.load(operands.state3, i, lanes) - p)
            let s = Elementwise.load(operands.state2, i, lanes) * c.beta3 + gi * c.sliceScale
            absolute.addMagnitudes(s)
            Elementwise.store(s, operands.state2, i, lanes)
            if moment {
                Elementwise.store(Elementwise.load(operands.state0, i, lanes) * c.beta1 + gi * c.momentScale, operands.state0, i, lanes)
            }
            Elementwise.store(Elementwise.load(operands.state1, i, lanes) * c.beta2 + c.squareScale * gi * gi, operands.state1, i, lanes)
        }
        let width = Elementwise.width
        var i = range.lowerBound
        while i + width <= range.upperBound {
            vector(i, width)
            i += width
        }
        if i < range.upperBound { vector(i, range.upperBound - i) }
        // Infinities and NaNs were counted, not added: add their terms in element order, as
        // ExactChunkSum.addProduct and addValue do (the state is already updated: `s` is read back).
        let dotSpecial = dot.takeSpecialLanes(), absoluteSpecial = absolute.takeSpecialLanes()
        if dotSpecial || absoluteSpecial {
            let p = operands.parameter, s = operands.state2, p0 = operands.state3
            for i in range {
                var gi = Elementwise.gradient(operands, i, 1)[0]
                if coupled { gi = gi + c.coupledDecay * p[i] }
                let difference = p0[i] - p[i]
                if dotSpecial && (!gi.isFinite || !difference.isFinite) { dot.special += Double(gi) * Double(difference) }
                if absoluteSpecial && !s[i].isFinite { absolute.special += Double(abs(s[i])) }
            }
        }
    }

    /// Pass 2 over `range`: decay and step, each form (moment kept, decoupled or coupled decay)
    /// its own loop; with `collecting`, the metric sums in the same pass, as every elementwise
    /// rule collects them (``Elementwise/runCollecting(_:_:_:_:)``).
    @inlinable @inline(__always)
    public static func secondPassChunk(_ operands: KernelOperands, _ c: SecondPass, _ range: Range<Int>, collecting: Bool) -> MetricAccumulator {
        switch (c.keepsMoment, c.decoupledDecay != nil, c.coupledDecay != 0) {
        case (true, false, _): secondPassLoop(ProdigyStep<Yes, No, No>.self, operands, c, range, collecting: collecting)
        case (true, true, _): secondPassLoop(ProdigyStep<Yes, Yes, No>.self, operands, c, range, collecting: collecting)
        case (false, false, false): secondPassLoop(ProdigyStep<No, No, No>.self, operands, c, range, collecting: collecting)
        case (false, true, false): secondPassLoop(ProdigyStep<No, Yes, No>.self, operands, c, range, collecting: collecting)
        case (false, false, true): secondPassLoop(ProdigyStep<No, No, Yes>.self, operands, c, range, collecting: collecting)
        case (false, true, true): secondPassLoop(ProdigyStep<No, Yes, Yes>.self, operands, c, range, collecting: collecting)
        }
    }

    @_transparent @usableFromInline
    static func secondPassLoop<Step: VectorKernel>(_ step: Step.Type, _ operands: KernelOperands, _ c: Step.Coefficients, _ range: Range<Int>,
                                                   collecting: Bool) -> MetricAccumulator {
        if collecting { return Elementwise.runCollecting(Step.self, operands, range, c) }
        Elementwise.run(Step.self, operands, range, c)
        return MetricAccumulator()
    }
}

/// A compile-time yes or no, for the forms of a loop (``ProdigyStep``).
@usableFromInline protocol StaticFlag { static var value: Bool { get } }
@usableFromInline enum Yes: StaticFlag { @inlinable static var value: Bool { true } }
@usableFromInline enum No: StaticFlag { @inlinable static var value: Bool { false } }

/// One vector of Prodigy's pass 2: `p ← p + decay·p` (decoupled), then
/// `p ← p − step·m / (√v + add)` with the moment, or `p ← p − step·(g + λp) / (√v + add)` without.
@usableFromInline
enum ProdigyStep<Moment: StaticFlag, Decays: StaticFlag, Coupled: StaticFlag>: VectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Prodigy.SecondPass) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let denominator = Elementwise.squareRoot(Elementwise.load(o.state1, i, n)) + c.denominatorAdd
        let raw = Elementwise.gradient(o, i, n)
        var after = before, m = FloatVector()
        if Decays.value { after = after + (c.decoupledDecay ?? 0) * after }
        if Moment.value {
            m = Elementwise.load(o.state0, i, n)
            after = after + c.negativeStep * m / denominator
        } else {
            let used = Coupled.value ? raw + c.coupledDecay * before : raw
            after = after + c.negativeGradientStep * used / denominator
        }
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: raw, moment: m)
    }
}
