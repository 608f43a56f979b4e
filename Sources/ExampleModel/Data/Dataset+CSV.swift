import Foundation

extension Dataset {
    /// Which column of a CSV file holds the label.
    public enum LabelColumn: String, Sendable, CaseIterable {
        /// The label comes first, then the features (MNIST as CSV, Kaggle's `train.csv`).
        case first
        /// The features come first, the label last (scikit-learn's `digits.csv`, UCI files).
        case last
    }

    /// Loads a CSV file of numbers: one row per example, a label column (first or last) and one or
    /// more feature columns.
    ///
    /// - A first line with any field that is not a number is a header, and is skipped; it still
    ///   sets the column count every row must have.
    /// - Fields are separated by commas; spaces around a field are ignored; blank lines are skipped;
    ///   `\n` and `\r\n` line ends and a UTF-8 byte-order mark are accepted. Quoted fields are not.
    /// - Labels are integers in `0...Dataset.maximumLabel` (`3` or `3.0`); ``classCount`` is the
    ///   largest label plus one.
    /// - Features are finite numbers, multiplied by `featureScale` (e.g. `1/255` for 8-bit pixels).
    ///
    /// - Throws: a ``DatasetError`` naming the file, line and column of the first problem: an empty,
    ///   unreadable or gzip-compressed file, a ragged row, a value that is not a number or not
    ///   finite, a label that is negative or not an integer, a header with no rows.
    public static func loadCSV(at url: URL, labelColumn: LabelColumn = .last, featureScale: Float = 1) throws(DatasetError) -> Dataset {
        guard featureScale.isFinite, featureScale > 0 else { throw .invalidFeatureScale(featureScale) }
        let data = try readFile(url)
        let result = data.withUnsafeBytes { bytes in
            Result { () throws(DatasetError) in
                try parseCSV(bytes, file: url.path, labelColumn: labelColumn, featureScale: featureScale)
            }
        }
        return try result.get()
    }

    /// The contents of a file, or an ``DatasetError/unreadable(file:reason:)`` that says why not.
    static func readFile(_ url: URL) throws(DatasetError) -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw .unreadable(file: url.path, reason: "no such file")
        }
        guard !isDirectory.boolValue else { throw .unreadable(file: url.path, reason: "it is a directory") }
        do {
            return try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw .unreadable(file: url.path, reason: error.localizedDescription)
        }
    }

    static func parseCSV(_ bytes: UnsafeRawBufferPointer, file: String, labelColumn: LabelColumn, featureScale: Float) throws(DatasetError) -> Dataset {
        if bytes.starts(with: [0x1F, 0x8B]) { throw .compressed(file: file) }
        var features = [Float]()
        var labels = [Int32]()
        var largestLabel: Int32 = -1
        var expectedColumns = 0            // set by the first non-blank line
        var fields: [Range<Int>] = []
        var lineNumber = 0
        var position = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0

        while position < bytes.count {
            lineNumber += 1
            var end = position
            while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
            let next = end + 1
            if end > position && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            defer { position = next }
            if (position..<end).allSatisfy({ isSpace(bytes[$0]) }) { continue }

            fields.removeAll(keepingCapacity: true)
            var fieldStart = position
            for index in position..<end where bytes[index] == UInt8(ascii: ",") {
                fields.append(fieldStart..<index)
                fieldStart = index + 1
            }
            fields.append(fieldStart..<end)

            if expectedColumns == 0 {
                expectedColumns = fields.count
                guard expectedColumns >= 2 else { throw .tooFewColumns(file: file, line: lineNumber, found: fields.count) }
                features.reserveCapacity(bytes.count / (2 * expectedColumns) * (expectedColumns - 1))
                if fields.contains(where: { number(bytes, $0) == nil }) { continue } // a header
            }
            guard fields.count == expectedColumns else {
                throw .raggedRow(file: file, line: lineNumber, expected: expectedColumns, found: fields.count)
            }
            let labelIndex = labelColumn == .first ? 0 : expectedColumns - 1
            for (column, field) in fields.enumerated() {
                guard let value = number(bytes, field) else {
                    throw .notANumber(file: file, line: lineNumber, column: column + 1, text: text(bytes, field))
                }
                if column == labelIndex {
                    guard value >= 0, value <= Double(maximumLabel), value.rounded() == value else {
                        throw .invalidLabel(file: file, line: lineNumber, column: column + 1, text: text(bytes, field))
                    }
                    let label = Int32(value)
                    labels.append(label)
                    largestLabel = max(largestLabel, label)
                } else {
                    let feature = Float(value) * featureScale
                    guard feature.isFinite else {
                        throw .nonFinite(file: file, line: lineNumber, column: column + 1, text: text(bytes, field))
                    }
                    features.append(feature)
                }
            }
        }
        guard expectedColumns > 0 else { throw .emptyFile(file: file) }
        guard !labels.isEmpty else { throw .noRows(file: file) }
        return Dataset(unchecked: features, labels: labels, featureCount: expectedColumns - 1,
                       classCount: Int(largestLabel) + 1, source: file)
    }

    @inline(__always)
    private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    /// The field without the spaces around it.
    private static func trimmed(_ bytes: UnsafeRawBufferPointer, _ field: Range<Int>) -> Range<Int> {
        var (start, end) = (field.lowerBound, field.upperBound)
        while start < end && isSpace(bytes[start]) { start += 1 }
        while end > start && isSpace(bytes[end - 1]) { end -= 1 }
        return start..<end
    }

    /// The field's value, or `nil` when it is not a number. Plain integers (the usual pixel or
    /// label) are read directly; anything else goes through `Double(_:)` (which accepts decimals,
    /// exponents, and "nan" / "inf", caught later as not finite).
    private static func number(_ bytes: UnsafeRawBufferPointer, _ field: Range<Int>) -> Double? {
        let range = trimmed(bytes, field)
        guard !range.isEmpty else { return nil }
        var index = range.lowerBound
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative || bytes[index] == UInt8(ascii: "+") { index += 1 }
        if index < range.upperBound && range.upperBound - index <= 15 {
            var value = 0
            var allDigits = true
            for position in index..<range.upperBound {
                let digit = bytes[position] &- UInt8(ascii: "0")
                guard digit < 10 else { allDigits = false; break }
                value = value * 10 + Int(digit)
            }
            if allDigits { return negative ? -Double(value) : Double(value) }
        }
        return Double(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self))
    }

    /// The field as text for a message, shortened to 40 characters.
    private static func text(_ bytes: UnsafeRawBufferPointer, _ field: Range<Int>) -> String {
        let string = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[trimmed(bytes, field)]), as: UTF8.self)
        return string.count > 40 ? String(string.prefix(40)) + "…" : string
    }
}
