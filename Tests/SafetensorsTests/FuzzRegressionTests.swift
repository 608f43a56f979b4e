import Foundation
import Safetensors
import Testing

/// Regression files from fuzzing the reader (tools/fuzz/README.md): each was mis-read before its
/// fix, or reaches a path of the parser no hand-made file of the corpus did. The note says what.
enum FuzzRegressions {
    struct Case: Sendable, CustomTestStringConvertible {
        var file: String
        var note: String
        /// A part of the error's description that names the problem.
        var message: String
        var testDescription: String { file }
    }

    static let cases: [Case] = [
        Case(file: "35-fuzz-leading-zero.safetensors",
             note: "found by libFuzzer: a dimension written 000…002 was read as 2 (JSON forbids leading zeros)",
             message: "malformed number: leading zero"),
        Case(file: "36-minus-zero-dimension.safetensors",
             note: "a dimension -0 was read as 0; the reference reader refuses it (as the float -0.0)",
             message: "shape must hold non-negative integers, got -0"),
        Case(file: "37-fuzz-dtype-array-message.safetensors",
             note: "found by libFuzzer's error-size check: a dtype holding an array was dumped whole into the error (17× the input)",
             message: "unknown dtype [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1…; expected one of"),
        // From the corpus libFuzzer grew (smallest input of each path no earlier file reached).
        Case(file: "38-fuzz-unpaired-surrogate.safetensors",
             note: "corpus: a \\uD83F high surrogate followed by another high surrogate, not a low one",
             message: "unpaired surrogate"),
        Case(file: "39-fuzz-lone-low-surrogate.safetensors",
             note: "corpus: a \\uDE00 low surrogate on its own, which is no Unicode scalar",
             message: "invalid code point"),
        Case(file: "40-fuzz-duplicate-metadata-key.safetensors",
             note: "corpus: __metadata__ holding the key \"emoji\" twice (the reference keeps the last; we refuse)",
             message: "__metadata__ key 'emoji' appears twice"),
        Case(file: "41-fuzz-escape-cut-by-header-end.safetensors",
             note: "corpus: the header ends inside a \\u escape whose hex digits follow in the data section; they must not be read",
             message: "invalid \\u escape"),
    ]
}

@Suite struct FuzzRegressionTests {
    static func load(_ data: Data) -> SafetensorsError? {
        do { _ = try SafetensorsFile(data: data); return nil } catch { return error }
    }

    static func file(header: String, data: [UInt8] = []) -> Data {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(header.utf8))
        bytes.append(contentsOf: data)
        return bytes
    }

    @Test(arguments: FuzzRegressions.cases)
    func regressionFileIsRefusedWithItsReason(_ regression: FuzzRegressions.Case) throws {
        let url = Corpus.root.appendingPathComponent("malformed").appendingPathComponent(regression.file)
        let error = Self.load(try Data(contentsOf: url))
        let description = try #require(error, "\(regression.file) was accepted (\(regression.note))").description
        #expect(description.contains(regression.message), "\(regression.file): \(description)")
        #expect(description.utf8.count < 300)
    }

    @Test func everyRegressionFileIsInTheCorpus() {
        for regression in FuzzRegressions.cases { #expect(Corpus.malformed.contains(regression.file)) }
    }

    /// Numbers as JSON spells them, and nothing else; integers where the format needs them.
    @Test func numbersFollowTheJSONGrammar() {
        func shape(_ text: String) -> SafetensorsError? {
            Self.load(Self.file(header: #"{"a":{"dtype":"U8","shape":[\#(text)],"data_offsets":[0,2]}}"#, data: [1, 2]))
        }
        #expect(shape("2") == nil)
        for malformed in ["02", "00", "-", "-a", "2.", "2.e1", "2e", "2e+", "1.2.3", "2-", "0x2", "+2", "--2", ".5"] {
            let error = shape(malformed)
            guard case .invalidJSON = error else {
                Issue.record("shape [\(malformed)]: expected invalid JSON, got \(String(describing: error))")
                continue
            }
        }
        for notAnInteger in ["-0", "-2", "2.0", "2e0", "20e-1", "99999999999999999999"] {
            guard case let .invalidTensor(name, reason)? = shape(notAnInteger) else {
                Issue.record("shape [\(notAnInteger)]: expected an invalid tensor, got \(String(describing: shape(notAnInteger)))")
                continue
            }
            #expect(name == "a" && reason.contains("non-negative integers, got \(notAnInteger)"))
        }
        // A zero written plainly is fine, before other digits or not.
        #expect(Self.load(Self.file(header: #"{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[10],"data_offsets":[0,10]}}"#,
                                    data: Array(repeating: 7, count: 10))) == nil)
    }

    /// An error quotes a bad value briefly: its size does not grow with the value's.
    @Test func errorsQuoteValuesBriefly() throws {
        let count = 20_000
        let items = Array(repeating: "[1,{\"k\":[true,null]}]", count: count).joined(separator: ",")
        for field in ["dtype", "shape", "data_offsets"] {
            let header = field == "dtype"
                ? #"{"a":{"dtype":[\#(items)],"shape":[0],"data_offsets":[0,0]}}"#
                : field == "shape" ? #"{"a":{"dtype":"U8","shape":[\#(items)],"data_offsets":[0,0]}}"#
                : #"{"a":{"dtype":"U8","shape":[0],"data_offsets":{"x":[\#(items)]}}}"#
            let description = try #require(Self.load(Self.file(header: header))).description
            #expect(description.utf8.count < 300, "\(field): \(description.prefix(300))")
        }
        // One grapheme with many combining marks is cut as well.
        let marks = "a" + String(repeating: "\u{301}", count: count)
        let graphemes = try #require(Self.load(Self.file(header: #"{"a":{"dtype":"\#(marks)","shape":[0],"data_offsets":[0,0]}}"#))).description
        #expect(graphemes.utf8.count < 300, "\(graphemes.prefix(300))")
        // A long shape is summarised too.
        let dimensions = Array(repeating: "1", count: count).joined(separator: ",")
        let description = try #require(Self.load(Self.file(header: #"{"a":{"dtype":"U8","shape":[\#(dimensions)],"data_offsets":[0,2]}}"#, data: [1, 2]))).description
        #expect(description.contains("[1, 1, 1, 1, 1, 1, 1, 1, …] (\(count) dimensions) of U8 needs 1 bytes but data_offsets span 2"), "\(description)")
    }
}
