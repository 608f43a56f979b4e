import COptimSIMD
/// A named, shaped tensor of Float32 values and its gradient — what an optimizer updates.
///
/// Values and gradient live in contiguous row-major storage, either allocated by the library
/// (``init(name:shape:values:)``) or owned by the caller (``init(name:shape:borrowing:)``: a
/// buffer of another framework, an `UnsafeMutableBufferPointer`, …). A parameter is a reference
/// type, like a PyTorch tensor: the optimizer and the model share the same object.
///
/// The gradient follows PyTorch's `grad`: `nil` means "no gradient this step", and the optimizer
/// then skips the parameter entirely (no update, no weight decay, state and step count unchanged).
///
/// A parameter is not synchronised: don't mutate it from two threads at once, nor during a step.
public final class Parameter: @unchecked Sendable {
    /// The parameter's name, unique within an optimizer (e.g. `"fc1.weight"`).
    public let name: String
    /// The shape; `[]` is a scalar with one element.
    public let shape: [Int]
    /// The number of elements: the product of ``shape``.
    public let count: Int
    /// The values, contiguous, row-major: the raw buffer, valid for the parameter's lifetime —
    /// the fast path for kernels and for frameworks that share the memory. For safer access see
    /// ``valueArray`` (a copy) and ``withUnsafeValues(_:)`` (scoped).
    public let values: UnsafeMutableBufferPointer<Float>

    private let ownsValues: Bool
    /// Library-owned gradient storage, allocated on first use and kept across steps.
    private var ownedGradient: UnsafeMutableBufferPointer<Float>?
    /// The gradient seen by the optimizer, or `nil` for none: the raw buffer, valid until the
    /// gradient is replaced or cleared. For safer access see ``gradientArray`` (a copy) and
    /// ``withUnsafeGradient(_:)`` (scoped).
    public private(set) var gradient: UnsafeMutableBufferPointer<Float>?
    /// The precision the values are stored at: ``ParameterDType/float32`` (the default), or
    /// ``ParameterDType/bfloat16``, whose values are always bfloat16 numbers (see
    /// ``convert(to:)``). Set before an optimizer is built over the parameter: the optimizer reads
    /// it once, and refuses a step after it changed.
    public private(set) var dtype: ParameterDType = .float32

    /// Validates a shape and returns its element count.
    static func elementCount(name: String, shape: [Int]) throws(OptimError) -> Int {
        guard !name.isEmpty else { throw .invalidParameterName(name) }
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { throw .invalidShape(parameter: name, shape: shape) }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow, product <= Int.max / MemoryLayout<Float>.stride else {
                throw .invalidShape(parameter: name, shape: shape)
            }
            count = product
        }
        return count
    }

    /// A parameter in library-owned storage, initialised with a copy of `values`.
    public init(name: String, shape: [Int], values: [Float]) throws(OptimError) {
        let count = try Self.elementCount(name: name, shape: shape)
        guard values.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: values.count) }
        self.name = name
        self.shape = shape
        self.count = count
        self.values = values.withUnsafeBufferPointer { FloatStorage.allocate(copying: $0) }
        self.ownsValues = true
    }

    /// A parameter in library-owned storage, every element set to `value`.
    public init(name: String, shape: [Int], repeating value: Float = 0) throws(OptimError) {
        let count = try Self.elementCount(name: name, shape: shape)
        self.name = name
        self.shape = shape
        self.count = count
        self.values = FloatStorage.allocate(count)
        if value != 0 { self.values.update(repeating: value) }
        self.ownsValues = true
    }

    /// A parameter over storage the caller owns and keeps alive for the parameter's lifetime.
    public init(name: String, shape: [Int], borrowing storage: UnsafeMutableBufferPointer<Float>) throws(OptimError) {
        let count = try Self.elementCount(name: name, shape: shape)
        guard storage.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: storage.count) }
        self.name = name
        self.shape = shape
        self.count = count
        self.values = storage
        self.ownsValues = false
    }

    deinit {
        if ownsValues { FloatStorage.deallocate(values) }
        if let ownedGradient { FloatStorage.deallocate(ownedGradient) }
    }

    // MARK: Reading and writing the values and the gradient
    //
    // Three levels, from the safest to the fastest: copies (`valueArray`, `gradientArray`,
    // `setValues(_:)`, `setGradient(_:)`); scoped access (`withUnsafeValues(_:)`,
    // `withUnsafeGradient(_:)`), where the buffer cannot outlive the call; and the raw buffers
    // themselves (`values`, `gradient`), for a framework that hands its own memory in and out.

    /// A copy of the values, row-major — PyTorch's `p.detach().tolist()` (flattened).
    ///
    /// Safe to keep and to use from any thread; costs one allocation and a copy. Use it for
    /// inspection, tests and checkpoints of your own, not inside a training step's hot loop
    /// (``withUnsafeValues(_:)`` reads in place).
    public var valueArray: [Float] { Array(values) }

    /// A copy of the gradient, row-major, or `nil` when there is none — PyTorch's `p.grad`
    /// copied out. See ``valueArray`` for when a copy is the right choice.
    public var gradientArray: [Float]? { gradient.map { Array($0) } }

    /// Calls `body` with the values in place, to read or write them without a copy — the way to
    /// run a forward pass over, or initialise, a parameter's storage.
    ///
    /// The buffer holds ``count`` floats, row-major, and is valid only during the call: don't
    /// store it or let it escape (use ``values`` where a longer-lived pointer is needed, as for
    /// a borrowing framework). Don't call it during an optimizer step, nor on one parameter
    /// from two threads at once.
    ///
    /// ```swift
    /// let norm = weight.withUnsafeValues { values in values.reduce(0) { $0 + $1 * $1 }.squareRoot() }
    /// weight.withUnsafeValues { values in for i in values.indices { values[i] *= 0.5 } }
    /// ```
    ///
    /// - Returns: what `body` returns.
    /// - Throws: only what `body` throws.
    public func withUnsafeValues<Result, Failure: Error>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(values)
    }

    /// Calls `body` with the gradient in place, to read or write it without a copy (a backward
    /// pass accumulating into it, a custom clipping); returns `nil` without calling `body` when
    /// the parameter has no gradient (to create one, write it through ``gradientStorage(zeroed:)``).
    ///
    /// The buffer holds ``count`` floats and is valid only during the call; the same rules as
    /// for ``withUnsafeValues(_:)`` apply.
    ///
    /// ```swift
    /// let largest = weight.withUnsafeGradient { gradient in gradient.map(abs).max() ?? 0 }  // nil: no gradient
    /// ```
    ///
    /// - Returns: what `body` returns, or `nil` when there is no gradient.
    /// - Throws: only what `body` throws.
    @discardableResult
    public func withUnsafeGradient<Result, Failure: Error>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws(Failure) -> Result
    ) throws(Failure) -> Result? {
        guard let gradient else { return nil }
        return try body(gradient)
    }

    /// Overwrites the values with `newValues` (rounded to nearest even for a bfloat16 parameter,
    /// as torch's `p.copy_(values)` rounds into a bfloat16 tensor).
    public func setValues(_ newValues: [Float]) throws(OptimError) {
        guard newValues.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: newValues.count) }
        newValues.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { values.baseAddress!.update(from: base, count: count) }
        }
        if dtype == .bfloat16, let base = values.baseAddress { BFloat16Parameters.roundNearest(base, count: count) }
    }

    /// Changes the precision the values are stored at — torch's `p.data = p.data.to(torch.bfloat16)`:
    /// to ``ParameterDType/bfloat16`` every value is rounded to the nearest bfloat16 (ties to
    /// even, NaN → `0xFFFF` as torch's `.bfloat16()` of a tensor); back to float32 they are kept as they are (exact).
    ///
    /// A bfloat16 parameter keeps its values in the same float32 buffer (``values``), each a
    /// bfloat16 number, so that models compute with it unchanged: the run has bfloat16 weights'
    /// numerics, and checkpoints store the parameter as `BF16` (2 bytes an element), but the
    /// buffer in memory stays 4 bytes an element. An optimizer rounds its new values after each
    /// step (``BFloat16Rounding``); code that writes ``values`` directly must keep them bfloat16.
    public func convert(to newDType: ParameterDType) {
        if newDType == .bfloat16, let base = values.baseAddress { BFloat16Parameters.roundNearest(base, count: count) }
        dtype = newDType
    }

    /// Library-owned gradient storage, marked as this step's gradient; zero-filled when `zeroed`.
    ///
    /// This is where a backward pass writes (or accumulates) its gradient. The storage is
    /// allocated on the first call and reused afterwards.
    @discardableResult
    public func gradientStorage(zeroed: Bool = true) -> UnsafeMutableBufferPointer<Float> {
        let storage: UnsafeMutableBufferPointer<Float>
        if let ownedGradient {
            storage = ownedGradient
            if zeroed { storage.update(repeating: 0) }
        } else {
            storage = FloatStorage.allocate(count)
            ownedGradient = storage
        }
        gradient = storage
        sparseRows = nil
        return storage
    }

    /// The rows a row-sparse gradient touches, sorted and unique, or `nil` for a dense gradient
    /// (``setSparseGradient(rows:values:)``).
    public private(set) var sparseRows: [Int]?

    /// The floats of one row: the elements after the first dimension (1 for a vector).
    public var rowLength: Int { shape.isEmpty ? 1 : (shape[0] == 0 ? 0 : count / shape[0]) }

    /// Sets a row-sparse gradient, as an embedding's backward pass gives it: the `rows` touched
    /// (in any order; a row listed twice gets the sum of its values, as torch's `coalesce`) and
    /// their values, ``rowLength`` floats per listed row, row after row.
    ///
    /// The gradient storage holds the dense equivalent (zeros in the rows not listed), so every
    /// optimizer can step it; ``SparseAdam`` updates only the listed rows, in time proportional
    /// to them. Clearing the rows of the previous sparse gradient costs as much as writing them.
    /// Throws, changing nothing, for a row out of range or values of the wrong length.
    public func setSparseGradient(rows: [Int], values: [Float]) throws(OptimError) {
        let rowCount = shape.first ?? 1, length = rowLength
        guard values.count == rows.count * length else { throw .sizeMismatch(parameter: name, expected: rows.count * length, got: values.count) }
        if let bad = rows.first(where: { $0 < 0 || $0 >= rowCount }) { throw .sparseRowOutOfRange(parameter: name, row: bad, rows: rowCount) }
        let previous = gradient != nil && gradient?.baseAddress == ownedGradient?.baseAddress ? sparseRows : nil
        let storage = gradientStorage(zeroed: previous == nil)
        if let previous {
            for row in previous { storage[(row * length)..<((row + 1) * length)].update(repeating: 0) }
        }
        for (position, row) in rows.enumerated() {
            for element in 0..<length { storage[row * length + element] += values[position * length + element] }
        }
        sparseRows = Array(Set(rows)).sorted()
    }

    /// Sets the gradient to a copy of `newGradient`.
    public func setGradient(_ newGradient: [Float]) throws(OptimError) {
        guard newGradient.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: newGradient.count) }
        let storage = gradientStorage(zeroed: false)
        newGradient.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { storage.baseAddress!.update(from: base, count: count) }
        }
    }

    /// Sets the gradient from bfloat16 values — the 16 bits of each, as torch's
    /// `tensor.bfloat16()` holds them — widened to float32 exactly (a bfloat16 is the upper half
    /// of a float32), for a model whose backward pass produces bfloat16 gradients. The optimizer
    /// then steps in float32 as usual.
    public func setGradient(bfloat16 bits: UnsafeBufferPointer<UInt16>) throws(OptimError) {
        guard bits.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: bits.count) }
        let storage = gradientStorage(zeroed: false)
        if let source = bits.baseAddress { optim_bf16_widen(source, storage.baseAddress!, count) }
    }

    /// ``setGradient(bfloat16:)-(UnsafeBufferPointer<UInt16>)`` of an array.
    public func setGradient(bfloat16 bits: [UInt16]) throws(OptimError) {
        try bits.withUnsafeBufferPointer { (buffer) throws(OptimError) in try setGradient(bfloat16: buffer) }
    }

    /// Sets the gradient from IEEE half-precision values (torch's `float16`), given as their 16
    /// bits, widened to float32 exactly (subnormals, infinities and NaN included).
    public func setGradient(float16 bits: UnsafeBufferPointer<UInt16>) throws(OptimError) {
        guard bits.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: bits.count) }
        let storage = gradientStorage(zeroed: false)
        for (index, value) in bits.enumerated() { storage[index] = Self.widen(half: value) }
    }

    /// ``setGradient(float16:)-(UnsafeBufferPointer<UInt16>)`` of an array.
    public func setGradient(float16 bits: [UInt16]) throws(OptimError) {
        try bits.withUnsafeBufferPointer { (buffer) throws(OptimError) in try setGradient(float16: buffer) }
    }

    /// The float32 value of an IEEE binary16 bit pattern (exact: every half is a float).
    static func widen(half bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16, exponent = Int(bits >> 10) & 0x1F, fraction = UInt32(bits & 0x3FF)
        switch exponent {
        case 0:
            // Zero or subnormal: fraction · 2⁻²⁴, exact in float32.
            let magnitude = Float(fraction) * Float(sign: .plus, exponent: -24, significand: 1)
            return Float(bitPattern: sign | magnitude.bitPattern)
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | (fraction << 13))  // ±inf, NaN keeping its payload
        default:
            return Float(bitPattern: sign | (UInt32(exponent - 15 + 127) << 23) | (fraction << 13))
        }
    }

    /// Uses caller-owned memory as the gradient, without copying; it must stay valid until the
    /// gradient is replaced or cleared.
    public func setGradient(borrowing storage: UnsafeMutableBufferPointer<Float>) throws(OptimError) {
        guard storage.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: storage.count) }
        gradient = storage
        sparseRows = nil
    }

    /// Clears the gradient and frees the library-owned gradient storage; the next
    /// ``gradientStorage(zeroed:)`` allocates it again. ZeRO-2 drops each full gradient this way
    /// once its bucket is reduced, so that a rank holds only its shard of the gradients.
    package func releaseGradientStorage() {
        gradient = nil
        sparseRows = nil
        if let ownedGradient {
            FloatStorage.deallocate(ownedGradient)
            self.ownedGradient = nil
        }
    }

    /// Clears the gradient: with `setToNone` (PyTorch's default) the parameter has no gradient
    /// and the next step skips it; otherwise the gradient is kept and filled with zeros.
    public func zeroGradient(setToNone: Bool = true) {
        if setToNone {
            gradient = nil
        } else if let gradient {
            gradient.update(repeating: 0)
        }
        sparseRows = nil
    }
}

extension Parameter: Hashable {
    /// Whether `lhs` and `rhs` are the same object: parameters compare by identity.
    public static func == (lhs: Parameter, rhs: Parameter) -> Bool { lhs === rhs }
    /// Hashes the parameter's identity, consistently with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

extension Parameter: CustomStringConvertible {
    /// `Parameter(name, shape: [..])`, and `dtype: bfloat16` for a bfloat16 parameter.
    public var description: String { "Parameter(\(name), shape: \(shape)\(dtype == .float32 ? "" : ", dtype: \(dtype)"))" }
}

/// The precision a ``Parameter``'s values are stored at (torch's `p.dtype`).
public enum ParameterDType: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// 32-bit IEEE floats.
    case float32
    /// bfloat16: float32's exponent and 8 significant bits; values that are bfloat16 numbers.
    case bfloat16

    /// `float32` or `bfloat16`.
    public var description: String { rawValue }
}
