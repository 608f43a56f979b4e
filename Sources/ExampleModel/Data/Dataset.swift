/// A labelled data set for classification, held in memory: one row of features per example and
/// an integer class label.
///
/// Features are row-major: row `i` is `features[i * featureCount ..< (i + 1) * featureCount]`.
/// Labels are in `0..<classCount`. Load one with ``digits()``, ``loadCSV(at:labelColumn:featureScale:)``
/// or ``loadIDX(images:labels:)``; split it with ``split(testFraction:seed:)``, and walk it in
/// mini-batches with ``batchOrder(epoch:seed:)`` and ``gather(rows:features:labels:)``.
public struct Dataset: Sendable {
    /// The features, `count × featureCount` values, row-major.
    public let features: [Float]
    /// The class of each row, in `0..<classCount`.
    public let labels: [Int32]
    /// Features per row.
    public let featureCount: Int
    /// Classes: one more than the largest label the data set was loaded with.
    public let classCount: Int
    /// Where the data came from (a file path, or `"digits"`), for messages.
    public let source: String

    /// The largest label a loader accepts (a model has one output per class).
    public static let maximumLabel = 65_535

    /// Rows.
    public var count: Int { labels.count }

    /// A data set over the given arrays, checked for consistency: `featureCount > 0`,
    /// `features.count == labels.count × featureCount`, `classCount` in `1...maximumLabel + 1`,
    /// and every label in `0..<classCount`.
    public init(features: [Float], labels: [Int32], featureCount: Int, classCount: Int, source: String = "data") throws(DatasetError) {
        guard featureCount > 0 else { throw .inconsistent("featureCount is \(featureCount); expected > 0") }
        guard classCount > 0, classCount <= Self.maximumLabel + 1 else {
            throw .inconsistent("classCount is \(classCount); expected 1...\(Self.maximumLabel + 1)")
        }
        let (expected, overflow) = labels.count.multipliedReportingOverflow(by: featureCount)
        guard !overflow, features.count == expected else {
            throw .inconsistent("\(features.count) feature values for \(labels.count) rows of \(featureCount)")
        }
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= classCount }) {
            throw .inconsistent("label \(bad) is outside 0..<\(classCount)")
        }
        self.init(unchecked: features, labels: labels, featureCount: featureCount, classCount: classCount, source: source)
    }

    /// A data set from arrays the loaders have already checked.
    init(unchecked features: [Float], labels: [Int32], featureCount: Int, classCount: Int, source: String) {
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.classCount = classCount
        self.source = source
    }

    /// The number of rows of each class, indexed by label.
    public var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: classCount)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }

    /// The rows at `rows`, in that order, as a new data set with the same ``classCount``.
    /// Every index must be in `0..<count`.
    public func subset(_ rows: some Collection<Int>) -> Dataset {
        var features = [Float]()
        var labels = [Int32]()
        gather(rows: rows, features: &features, labels: &labels)
        return Dataset(unchecked: features, labels: labels, featureCount: featureCount, classCount: classCount, source: source)
    }

    /// A deterministic, stratified split into a training and a test set.
    ///
    /// Each class's rows are shuffled (Fisher–Yates driven by SplitMix64 from `seed`) and the first
    /// `round(testFraction × rows of the class)` go to the test set, so both sets keep the class
    /// proportions. Both keep the original row order. The result depends on the data, the fraction
    /// and the seed only — never on the thread count or the platform.
    ///
    /// - Throws: ``DatasetError/invalidTestFraction(_:)`` unless `0 <= testFraction < 1`.
    public func split(testFraction: Double, seed: UInt64) throws(DatasetError) -> (train: Dataset, test: Dataset) {
        guard testFraction >= 0, testFraction < 1 else { throw .invalidTestFraction(testFraction) }
        var rowsOfClass = [[Int]](repeating: [], count: classCount)
        for (row, label) in labels.enumerated() { rowsOfClass[Int(label)].append(row) }
        var generator = SplitMix64(seed: seed, stream: 0x5350_4C49_54) // "SPLIT"
        var isTest = [Bool](repeating: false, count: count)
        for var rows in rowsOfClass {
            generator.shuffle(&rows)
            let testCount = Int((Double(rows.count) * testFraction).rounded())
            for row in rows.prefix(testCount) { isTest[row] = true }
        }
        let testRows = isTest.indices.filter { isTest[$0] }
        let trainRows = isTest.indices.filter { !isTest[$0] }
        return (subset(trainRows), subset(testRows))
    }

    /// The order in which epoch `epoch` visits the rows: a permutation of `0..<count`, drawn by
    /// Fisher–Yates from SplitMix64 seeded with `seed` and `epoch`. The same arguments give the
    /// same order on every run; each epoch's order is unrelated to the others'.
    public func batchOrder(epoch: Int, seed: UInt64) -> [Int] {
        var order = Array(0..<count)
        var generator = SplitMix64(seed: seed, stream: UInt64(bitPattern: Int64(epoch)))
        generator.shuffle(&order)
        return order
    }

    /// Copies the features and labels of `rows` (in that order) into `features` and `labels`,
    /// replacing their contents but keeping their storage: a training loop that gathers every batch
    /// into the same two arrays allocates only for the first. Every index must be in `0..<count`.
    public func gather(rows: some Collection<Int>, features: inout [Float], labels: inout [Int32]) {
        features.removeAll(keepingCapacity: true)
        labels.removeAll(keepingCapacity: true)
        features.reserveCapacity(rows.count * featureCount)
        labels.reserveCapacity(rows.count)
        self.features.withUnsafeBufferPointer { source in
            for row in rows {
                precondition(row >= 0 && row < count, "Dataset.gather: row \(row) is outside 0..<\(count)")
                features.append(contentsOf: source[row * featureCount ..< (row + 1) * featureCount])
                labels.append(self.labels[row])
            }
        }
    }
}
