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
    /// The values, contiguous, row-major.
    public let values: UnsafeMutableBufferPointer<Float>

    private let ownsValues: Bool
    /// Library-owned gradient storage, allocated on first use and kept across steps.
    private var ownedGradient: UnsafeMutableBufferPointer<Float>?
    /// The gradient seen by the optimizer, or `nil` for none.
    public private(set) var gradient: UnsafeMutableBufferPointer<Float>?

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

    /// A copy of the values.
    public var valueArray: [Float] { Array(values) }

    /// A copy of the gradient, or `nil` when there is none.
    public var gradientArray: [Float]? { gradient.map { Array($0) } }

    /// Overwrites the values with `newValues`.
    public func setValues(_ newValues: [Float]) throws(OptimError) {
        guard newValues.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: newValues.count) }
        newValues.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { values.baseAddress!.update(from: base, count: count) }
        }
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
        return storage
    }

    /// Sets the gradient to a copy of `newGradient`.
    public func setGradient(_ newGradient: [Float]) throws(OptimError) {
        guard newGradient.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: newGradient.count) }
        let storage = gradientStorage(zeroed: false)
        newGradient.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { storage.baseAddress!.update(from: base, count: count) }
        }
    }

    /// Uses caller-owned memory as the gradient, without copying; it must stay valid until the
    /// gradient is replaced or cleared.
    public func setGradient(borrowing storage: UnsafeMutableBufferPointer<Float>) throws(OptimError) {
        guard storage.count == count else { throw .sizeMismatch(parameter: name, expected: count, got: storage.count) }
        gradient = storage
    }

    /// Clears the gradient: with `setToNone` (PyTorch's default) the parameter has no gradient
    /// and the next step skips it; otherwise the gradient is kept and filled with zeros.
    public func zeroGradient(setToNone: Bool = true) {
        if setToNone {
            gradient = nil
        } else if let gradient {
            gradient.update(repeating: 0)
        }
    }
}

extension Parameter: Hashable {
    public static func == (lhs: Parameter, rhs: Parameter) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

extension Parameter: CustomStringConvertible {
    public var description: String { "Parameter(\(name), shape: \(shape))" }
}
