import Foundation
import Optim
import OptimFixtures
import Testing

/// Malformed fixtures are refused with an error naming the field; `optim verify` reports them as
/// failures and exits non-zero, never crashing.
@Suite struct FixtureFormatTests {
    /// A minimal valid fixture: SGD, lr 0.5, p = [1, 2], g = [1, 1] → [0.5, 1.5] (by hand).
    static var valid: [String: Any] { [
        "format": "optim-fixture/1", "name": "tiny", "reference": "hand computed",
        "optimizer": "sgd", "hyperparameters": ["lr": 0.5],
        "params": [["name": "p", "shape": [2], "data": [1.0, 2.0]]],
        "steps": [["grads": ["p": [1.0, 1.0]]]],
        "expected": ["p": [0.5, 1.5]],
    ] }

    func parse(_ object: [String: Any]) throws(FixtureError) -> Fixture {
        let data = try! JSONSerialization.data(withJSONObject: object)
        return try Fixture(json: data, file: "test.json")
    }

    func expectError(_ object: [String: Any], field: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let fixture = try parse(object)
            _ = try fixture.replay(file: "test.json")
            Issue.record("accepted a malformed fixture", sourceLocation: sourceLocation)
        } catch {
            #expect(error.file == "test.json", sourceLocation: sourceLocation)
            #expect(error.field == field, "\(error)", sourceLocation: sourceLocation)
            #expect(error.message.contains(text), "\(error)", sourceLocation: sourceLocation)
        }
    }

    func with(_ key: String, _ value: Any?) -> [String: Any] {
        var copy = Self.valid
        copy[key] = value
        return copy
    }

    @Test func validFixturePasses() throws {
        let result = try parse(Self.valid).replay()
        #expect(result.passed && result.maxAbsoluteError == 0)
    }

    @Test func wrongExpectationFails() throws {
        let result = try parse(with("expected", ["p": [0.5, 1.25]])).replay()
        #expect(!result.passed)
        #expect(result.mismatches == 1)
        #expect(result.maxAbsoluteError == 0.25)
    }

    @Test func malformedFieldsAreNamed() {
        expectError(with("format", nil), field: "format", "missing")
        expectError(with("format", "optim-fixture/2"), field: "format", "expected 'optim-fixture/1'")
        expectError(with("name", "Bad Name"), field: "name", "[a-z0-9_-]+")
        expectError(with("optimizer", "adagard"), field: "optimizer", "unknown optimizer 'adagard'")
        expectError(with("params", [["name": "p", "shape": [2], "data": [1.0]]]), field: "params[0].data", "expected 2 numbers, got 1")
        expectError(with("params", [["name": "p", "shape": [2], "data": [1.0, "x"]]]), field: "params[0].data[1]", "expected a number")
        expectError(with("params", [["name": "p", "shape": [-2], "data": []]]), field: "params[0].shape[0]", "non-negative integer")
        expectError(with("steps", [["grads": ["p": [1.0]]]]), field: "steps[0].grads.p", "expected 2 numbers, got 1")
        expectError(with("steps", [["grads": ["q": [1.0, 1.0]]]]), field: "steps[0].grads.q", "no parameter named 'q'")
        expectError(with("steps", [["grads": ["p": [1.0, 1.0]], "lr": ["1": 0.1]]]), field: "steps[0].lr.1", "no group '1'")
        expectError(with("steps", []), field: "steps", "no steps")
        expectError(with("expected", nil), field: "expected", "missing")
        expectError(with("hyperparameters", ["lr": -1.0]), field: "hyperparameters", "invalid learningRate (lr) = -1")
        expectError(with("hyperparameters", ["momentom": 0.9]), field: "hyperparameters", "unknown hyperparameter 'momentom'")
        expectError(with("groups", [["params": ["p", "p"]]]), field: "groups[0].params[1]", "already in a group")
        expectError(with("base", ["optimizer": "sgd"]), field: "base", "only a wrapper")
        var lookahead = with("optimizer", "lookahead")
        lookahead["hyperparameters"] = ["k": 2]
        expectError(lookahead, field: "base", "missing")
    }

    @Test func invalidJSONIsAnError() {
        do {
            _ = try Fixture(json: Data("{\"format\": ".utf8), file: "broken.json")
            Issue.record("accepted broken JSON")
        } catch {
            #expect(error.file == "broken.json" && error.message.contains("not valid JSON"))
        }
    }

    /// The `optim` executable built beside the test bundle, if there is one.
    static var executable: URL? {
        let candidate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("optim")
        return FileManager.default.isExecutableFile(atPath: candidate.path) ? candidate : nil
    }

    @Test(.enabled(if: executable != nil, "the optim executable is not beside the test bundle"))
    func verifyCommandReportsAndExitsNonZeroOnFailure() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-verify-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try JSONSerialization.data(withJSONObject: Self.valid).write(to: folder.appendingPathComponent("a-good.json"))
        try JSONSerialization.data(withJSONObject: with("params", [["name": "p", "shape": [2]]])).write(to: folder.appendingPathComponent("b-bad.json"))
        try Data("not json".utf8).write(to: folder.appendingPathComponent("c-garbage.json"))

        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["verify", folder.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(output.contains("1 passed, 2 failed"), "\(output)")
        #expect(output.contains("field 'params[0].data': missing"), "\(output)")
        #expect(output.contains("not valid JSON"), "\(output)")
    }
}
