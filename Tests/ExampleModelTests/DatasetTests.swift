import Foundation
import Testing
@testable import ExampleModel

@Suite struct DigitsTests {
    @Test func loadsTheBundledFile() throws {
        let digits = try Dataset.digits()
        #expect(digits.count == 1797)
        #expect(digits.featureCount == 64)
        #expect(digits.classCount == 10)
        #expect(digits.features.count == 1797 * 64)
        // Counted in the file with awk, column 65.
        #expect(digits.classCounts == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
        #expect(digits.classCounts.reduce(0, +) == digits.count)
        #expect(digits.features.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(digits.features.contains(1))
        // The file's first line: 0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0, … ,0 (label 0); last label 8.
        #expect(Array(digits.features.prefix(16)) == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0].map { Float($0) / 16 })
        #expect(digits.labels.first == 0)
        #expect(digits.labels.prefix(10) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        #expect(digits.labels.last == 8)
        #expect(digits.source == "digits")
    }

    @Test func theBundledFileIsTheDocumentedOne() throws {
        let url = try #require(Dataset.digitsURL)
        let data = try Data(contentsOf: url)
        // The checksum given in Resources/DIGITS.md.
        #expect(sha256Hex(Array(data)) == "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8")
    }

    @Test func sha256OfTheTestVectors() {
        // FIPS 180-2, appendix B.1 and B.2.
        #expect(sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(sha256Hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }
}

@Suite struct SplitTests {
    /// Each row as text (features and label), for comparing multisets of rows.
    func rowCounts(_ dataset: Dataset) -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in 0..<dataset.count {
            let key = dataset.features[row * dataset.featureCount ..< (row + 1) * dataset.featureCount]
                .map { String($0.bitPattern) }.joined(separator: ",") + "|\(dataset.labels[row])"
            counts[key, default: 0] += 1
        }
        return counts
    }

    @Test func isDeterministicStratifiedAndAPartition() throws {
        let digits = try Dataset.digits()
        let (train, test) = try digits.split(testFraction: 0.2, seed: 0)
        let (train2, test2) = try digits.split(testFraction: 0.2, seed: 0)
        #expect(train.features == train2.features && train.labels == train2.labels)
        #expect(test.features == test2.features && test.labels == test2.labels)

        #expect(train.count + test.count == digits.count)
        var union = rowCounts(train)
        for (row, count) in rowCounts(test) { union[row, default: 0] += count }
        #expect(union == rowCounts(digits), "train ∪ test is not the data set, row for row")

        let expectedTest = digits.classCounts.map { Int((Double($0) * 0.2).rounded()) }
        #expect(test.classCounts == expectedTest)
        #expect(train.classCounts == zip(digits.classCounts, expectedTest).map { $0 - $1 })
        #expect(train.classCount == 10 && test.classCount == 10)
        #expect(train.featureCount == 64 && test.featureCount == 64)
    }

    @Test func dependsOnTheSeed() throws {
        let digits = try Dataset.digits()
        let a = try digits.split(testFraction: 0.2, seed: 0).test
        let b = try digits.split(testFraction: 0.2, seed: 1).test
        #expect(a.count == b.count)
        #expect(a.features != b.features)
    }

    @Test func edgeFractions() throws {
        let digits = try Dataset.digits()
        let (train, test) = try digits.split(testFraction: 0, seed: 3)
        #expect(test.count == 0 && train.count == digits.count)
        #expect(train.features == digits.features)
        for bad in [-0.1, 1, 1.5, .nan, .infinity] {
            let message = thrownMessage { try digits.split(testFraction: bad, seed: 0) }
            #expect(message?.contains("test fraction") == true && message?.contains("[0, 1)") == true, "\(bad): \(message ?? "no error")")
        }
    }
}

@Suite struct BatchTests {
    func small() throws -> Dataset {
        try Dataset(features: (0..<20).map(Float.init), labels: [0, 1, 2, 1, 0, 2, 2, 1, 0, 1], featureCount: 2, classCount: 3)
    }

    @Test func batchOrderIsADeterministicPermutationPerEpoch() throws {
        let digits = try Dataset.digits()
        let order = digits.batchOrder(epoch: 0, seed: 0)
        #expect(order.sorted() == Array(0..<digits.count))
        #expect(order == digits.batchOrder(epoch: 0, seed: 0))
        #expect(order != Array(0..<digits.count))
        #expect(order != digits.batchOrder(epoch: 1, seed: 0))
        #expect(order != digits.batchOrder(epoch: 0, seed: 1))
        #expect(digits.batchOrder(epoch: 5, seed: 9).sorted() == Array(0..<digits.count))
    }

    @Test func batchOrderIsRoughlyUniform() throws {
        // Where element 0 lands over many epochs of a 4-row set: each position about 1/4 of the time.
        let dataset = try Dataset(features: [1, 2, 3, 4], labels: [0, 0, 0, 0], featureCount: 1, classCount: 1)
        var positions = [0, 0, 0, 0]
        for epoch in 0..<4000 { positions[dataset.batchOrder(epoch: epoch, seed: 11).firstIndex(of: 0)!] += 1 }
        #expect(positions.allSatisfy { abs($0 - 1000) < 150 }, "\(positions)")
    }

    @Test func gatherCopiesRowsInOrderAndReusesStorage() throws {
        let dataset = try small()
        var features: [Float] = [99]
        var labels: [Int32] = [7]
        dataset.gather(rows: [3, 0, 9], features: &features, labels: &labels)
        #expect(features == [6, 7, 0, 1, 18, 19])
        #expect(labels == [1, 0, 1])
        dataset.gather(rows: [1], features: &features, labels: &labels)
        #expect(features == [2, 3])
        #expect(labels == [1])
        let subset = dataset.subset([4, 2])
        #expect(subset.features == [8, 9, 4, 5] && subset.labels == [0, 2] && subset.classCount == 3)
    }

    @Test func initRejectsInconsistentArrays() {
        #expect(throws: DatasetError.self) { try Dataset(features: [1, 2, 3], labels: [0, 1], featureCount: 2, classCount: 2) }
        #expect(throws: DatasetError.self) { try Dataset(features: [1, 2], labels: [2], featureCount: 2, classCount: 2) }
        #expect(throws: DatasetError.self) { try Dataset(features: [1, 2], labels: [-1], featureCount: 2, classCount: 2) }
        #expect(throws: DatasetError.self) { try Dataset(features: [], labels: [], featureCount: 0, classCount: 2) }
        #expect(throws: DatasetError.self) { try Dataset(features: [1], labels: [0], featureCount: 1, classCount: Int.max) }
    }
}
