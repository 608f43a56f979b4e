import Foundation
import Testing
@testable import ExampleModel

@Suite struct TextCorpusTests {
    @Test func austenIsBundledWithItsVocabularyAndSplit() throws {
        let corpus = try TextCorpus.austen()
        #expect(corpus.tokens.count == 4_025_033)
        #expect(corpus.vocabularySize == 81)
        #expect(corpus.vocabulary.first == "\n" && corpus.vocabulary.last == "£")
        #expect(corpus.validationStart == 3_622_529)
        #expect(corpus.tokens(.validation).count == 4_025_033 - 3_622_529)
        #expect(corpus.decode(corpus.tokens.prefix(21)) == "SENSE AND SENSIBILITY")
    }

    @Test func encodeDecodeRoundTripsAndRefusesUnknownCharacters() throws {
        let corpus = try TextCorpus(text: "hello world", source: "test")
        #expect(corpus.vocabulary.map { String($0) }.joined() == " dehlorw")
        #expect(corpus.decode(try corpus.encode("world hello")) == "world hello")
        #expect(throws: TextCorpusError.unknownCharacter("z", index: 3, source: "test")) { try corpus.encode("lo z") }
    }

    @Test func badTextsAndContextsAreTypedErrors() throws {
        #expect(throws: TextCorpusError.emptyText(source: "none")) { try TextCorpus(text: "", source: "none") }
        let corpus = try TextCorpus(text: String(repeating: "abcdefghij", count: 3), source: "short")
        // 30 characters: 27 for training, 3 for validation.
        #expect(throws: TextCorpusError.contextTooLong(context: 3, available: 3, split: "validation", source: "short")) { try corpus.checkContext(3) }
        #expect(throws: TextCorpusError.invalidContext(0)) { try corpus.checkContext(0) }
        try corpus.checkContext(2)
    }

    @Test func batchesAreWindowsAndAPureFunctionOfSeedAndIndex() throws {
        let corpus = try TextCorpus.austen()
        var inputs = [Int32](repeating: -1, count: 4 * 16), targets = inputs
        var again = inputs, againTargets = inputs
        inputs.withUnsafeMutableBufferPointer { i in targets.withUnsafeMutableBufferPointer { t in
            corpus.fillBatch(.train, index: 7, seed: 3, batchSize: 4, context: 16, inputs: i, targets: t)
        } }
        again.withUnsafeMutableBufferPointer { i in againTargets.withUnsafeMutableBufferPointer { t in
            corpus.fillBatch(.train, index: 7, seed: 3, batchSize: 4, context: 16, inputs: i, targets: t)
        } }
        #expect(inputs == again && targets == againTargets)
        for row in 0..<4 {
            #expect(Array(inputs[(row * 16 + 1)..<(row * 16 + 16)]) == Array(targets[(row * 16)..<(row * 16 + 15)]))
        }
        // The first training window of seed 0 (also asserted by tools/austen/torch_reference.py).
        var first = [Int32](repeating: 0, count: 8), firstTargets = first
        first.withUnsafeMutableBufferPointer { i in firstTargets.withUnsafeMutableBufferPointer { t in
            corpus.fillBatch(.train, index: 0, seed: 0, batchSize: 1, context: 8, inputs: i, targets: t)
        } }
        print("first window of seed 0:", corpus.decode(first).debugDescription)
    }
}
