import Foundation

/// A text for character-level language modelling: its vocabulary (the distinct characters,
/// sorted by Unicode scalar value), the text as token ids, and a fixed split — the first 90 % of
/// the characters for training, the last 10 % for validation, as nanoGPT's `shakespeare_char`.
///
/// Batches are windows of `context + 1` consecutive tokens at random offsets (nanoGPT's
/// `get_batch`): the first `context` are the inputs, the last `context` the targets. The offsets
/// of a batch are a pure function of the seed, the split and the batch's index
/// (``fillBatch(_:index:seed:batchSize:context:inputs:targets:)``), so a run can be resumed and
/// replayed by another program (`tools/austen/torch_reference.py` draws the same ones).
public struct TextCorpus: Sendable {
    /// The part of the text a batch is drawn from: training or validation.
    public enum Split: Sendable {
        /// The training part of the text.
        case train
        /// The held-out validation part of the text.
        case validation
    }

    /// Where the text came from, for messages.
    public let source: String
    /// The token ids' characters: `vocabulary[id]`.
    public let vocabulary: [Unicode.Scalar]
    /// The whole text as token ids.
    public let tokens: [Int32]
    /// Index of the first validation token: ⌊0.9 · count⌋.
    public let validationStart: Int
    private let ids: [Unicode.Scalar: Int32]

    /// A corpus of `text`, split into training and validation parts.
    ///
    /// - Throws: ``TextCorpusError/emptyText(source:)`` for a text without characters.
    public init(text: String, source: String) throws(TextCorpusError) {
        let scalars = Array(text.unicodeScalars)
        guard !scalars.isEmpty else { throw .emptyText(source: source) }
        // The Basic Multilingual Plane by table (a set of 4 M scalars hashes slowly), the rest by set.
        var seen = [Bool](repeating: false, count: 0x10000)
        var others = Set<Unicode.Scalar>()
        for scalar in scalars {
            if scalar.value < 0x10000 { seen[Int(scalar.value)] = true } else { others.insert(scalar) }
        }
        let vocabulary = seen.indices.filter { seen[$0] }.map { Unicode.Scalar(UInt32($0))! } + others.sorted { $0.value < $1.value }
        var ids: [Unicode.Scalar: Int32] = [:]
        var table = [Int32](repeating: -1, count: 0x10000)
        for (id, scalar) in vocabulary.enumerated() {
            ids[scalar] = Int32(id)
            if scalar.value < 0x10000 { table[Int(scalar.value)] = Int32(id) }
        }
        self.source = source
        self.vocabulary = vocabulary
        self.ids = ids
        tokens = scalars.map { $0.value < 0x10000 ? table[Int($0.value)] : ids[$0]! }
        validationStart = tokens.count * 9 / 10
    }

    /// The number of distinct characters: the model's vocabulary size.
    public var vocabularySize: Int { vocabulary.count }

    /// The tokens of a split.
    public func tokens(_ split: Split) -> ArraySlice<Int32> {
        split == .train ? tokens[..<validationStart] : tokens[validationStart...]
    }

    /// The token ids of `text`.
    ///
    /// - Throws: ``TextCorpusError/unknownCharacter(_:index:source:)`` for a character outside the
    ///   vocabulary.
    public func encode(_ text: String) throws(TextCorpusError) -> [Int32] {
        var result: [Int32] = []
        for (index, scalar) in text.unicodeScalars.enumerated() {
            guard let id = ids[scalar] else { throw .unknownCharacter(String(scalar), index: index, source: source) }
            result.append(id)
        }
        return result
    }

    /// The text of token ids (ids outside the vocabulary become U+FFFD).
    public func decode(_ ids: some Sequence<Int32>) -> String {
        var text = String.UnicodeScalarView()
        for id in ids { text.append(id >= 0 && Int(id) < vocabulary.count ? vocabulary[Int(id)] : "\u{FFFD}") }
        return String(text)
    }

    /// Checks that windows of `context + 1` tokens fit in both splits.
    ///
    /// - Throws: ``TextCorpusError/contextTooLong(context:available:split:source:)`` when a split
    ///   holds `context` tokens or fewer, ``TextCorpusError/invalidContext(_:)`` below 1.
    public func checkContext(_ context: Int) throws(TextCorpusError) {
        guard context >= 1 else { throw .invalidContext(context) }
        for split in [Split.train, .validation] where tokens(split).count <= context {
            throw .contextTooLong(context: context, available: tokens(split).count, split: split == .train ? "training" : "validation", source: source)
        }
    }

    /// Writes batch `index` of a split: `batchSize` windows at offsets drawn uniformly from
    /// `0...(splitCount − context − 1)` by SplitMix64 (stream `index` for training batches,
    /// `2⁶² + index` for validation ones, of `seed`; Lemire's unbiased bounded draw), inputs and
    /// targets each `batchSize × context` ids, row-major. Call ``checkContext(_:)`` first.
    public func fillBatch(_ split: Split, index: Int, seed: UInt64, batchSize: Int, context: Int,
                          inputs: UnsafeMutableBufferPointer<Int32>, targets: UnsafeMutableBufferPointer<Int32>) {
        let part = tokens(split)
        precondition(part.count > context && inputs.count >= batchSize * context && targets.count >= batchSize * context,
                     "TextCorpus.fillBatch: buffers or split too small")
        var generator = SplitMix64(seed: seed, stream: (split == .train ? 0 : 1 << 62) &+ UInt64(bitPattern: Int64(index)))
        part.withUnsafeBufferPointer { text in
            for row in 0..<batchSize {
                let offset = generator.next(below: text.count - context)
                for t in 0..<context {
                    inputs[row * context + t] = text[offset + t]
                    targets[row * context + t] = text[offset + t + 1]
                }
            }
        }
    }

    // MARK: - The bundled novels

    /// Jane Austen's six novels (`Resources/AUSTEN.md`: source, licence, checksum), bundled with
    /// the module; read once per process.
    ///
    /// - Throws: ``TextCorpusError/unreadable(file:reason:)`` only if the resource is missing.
    public static func austen() throws(TextCorpusError) -> TextCorpus {
        try bundledAusten.get()
    }

    private static let bundledAusten: Result<TextCorpus, TextCorpusError> = Result { () throws(TextCorpusError) in
        guard let url = Dataset.resourceURL("austen.txt") else {
            throw .unreadable(file: "austen.txt", reason: "swift-optim_ExampleModel.resources is not beside the executable; copy it along with the binary")
        }
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw .unreadable(file: url.path, reason: "\(error)")
        }
        return try TextCorpus(text: text, source: "austen")
    }
}

/// Every error of ``TextCorpus``: one line naming the problem and the numbers involved.
public enum TextCorpusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A file that cannot be read, and why.
    case unreadable(file: String, reason: String)
    /// A text without a single character.
    case emptyText(source: String)
    /// A character the corpus's vocabulary lacks (at character `index` of the text encoded).
    case unknownCharacter(String, index: Int, source: String)
    /// A context window that does not fit in a split (`available` tokens; a window needs context + 1).
    case contextTooLong(context: Int, available: Int, split: String, source: String)
    /// A context length below 1.
    case invalidContext(Int)

    /// A one-line message naming the source or the value at fault.
    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "\(file): cannot read the text: \(reason)"
        case let .emptyText(source):
            return "\(source): the text is empty"
        case let .unknownCharacter(character, index, source):
            let code = character.unicodeScalars.first.map { String($0.value, radix: 16, uppercase: true) } ?? "?"
            return "character \(character.debugDescription) (U+\(code)) at position \(index) is not in the vocabulary of \(source)"
        case let .contextTooLong(context, available, split, source):
            return "context \(context) is too long for the \(split) part of \(source): it holds \(available) tokens, a window needs \(context + 1)"
        case let .invalidContext(context):
            return "invalid context length \(context); expected >= 1"
        }
    }
}
