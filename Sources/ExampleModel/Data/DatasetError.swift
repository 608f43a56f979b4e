/// Every error the data loaders throw; each message is one line that names the file and, for a
/// CSV file, the line and column (`data.csv:12:3: ...`).
///
/// Malformed input of any kind — an empty or truncated file, a ragged row, a value that is not
/// a number, a header that declares more data than the file holds — is thrown, never trapped.
public enum DatasetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file could not be read at all (missing, a directory, no permission, …).
    case unreadable(file: String, reason: String)
    /// The file holds no bytes, or only blank lines.
    case emptyFile(file: String)
    /// The CSV file has a header line but no data rows.
    case noRows(file: String)
    /// The CSV file has fewer than two columns: a label and at least one feature are needed.
    case tooFewColumns(file: String, line: Int, found: Int)
    /// A CSV row whose column count differs from the first line's.
    case raggedRow(file: String, line: Int, expected: Int, found: Int)
    /// A CSV field that is not a number.
    case notANumber(file: String, line: Int, column: Int, text: String)
    /// A CSV field that is NaN or infinite, or becomes infinite once scaled.
    case nonFinite(file: String, line: Int, column: Int, text: String)
    /// A CSV label that is not an integer in `0...Dataset.maximumLabel`.
    case invalidLabel(file: String, line: Int, column: Int, text: String)
    /// A gzip-compressed file where raw data was expected.
    case compressed(file: String)
    /// An IDX file that breaks the format: wrong magic, data type or dimension count, or a size
    /// implied by its header that differs from the file's.
    case invalidIDX(file: String, reason: String)
    /// IDX image and label files that hold different numbers of items.
    case countMismatch(images: String, imageCount: Int, labels: String, labelCount: Int)
    /// A split fraction outside [0, 1).
    case invalidTestFraction(Double)
    /// A feature scale that is zero, negative or not finite.
    case invalidFeatureScale(Float)
    /// Arrays given to ``Dataset/init(features:labels:featureCount:classCount:source:)`` that do
    /// not form a data set.
    case inconsistent(String)

    /// A one-line message naming the file or the value at fault.
    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "\(file): cannot read the file: \(reason)"
        case let .emptyFile(file):
            return "\(file): the file is empty"
        case let .noRows(file):
            return "\(file): the file has a header line but no data rows"
        case let .tooFewColumns(file, line, found):
            return "\(file):\(line): found \(found) column(s); expected a label column and at least one feature column"
        case let .raggedRow(file, line, expected, found):
            return "\(file):\(line): expected \(expected) columns (as on the first line), found \(found)"
        case let .notANumber(file, line, column, text):
            return "\(file):\(line):\(column): '\(text)' is not a number"
        case let .nonFinite(file, line, column, text):
            return "\(file):\(line):\(column): '\(text)' is not finite (NaN or infinity, or too large once scaled)"
        case let .invalidLabel(file, line, column, text):
            return "\(file):\(line):\(column): label '\(text)' is not an integer in 0...\(Dataset.maximumLabel)"
        case let .compressed(file):
            return "\(file): the file is gzip-compressed: decompress it first (gunzip)"
        case let .invalidIDX(file, reason):
            return "\(file): not a valid IDX file: \(reason)"
        case let .countMismatch(images, imageCount, labels, labelCount):
            return "\(images) holds \(imageCount) images but \(labels) holds \(labelCount) labels"
        case let .invalidTestFraction(fraction):
            return "invalid test fraction \(fraction); expected a number in [0, 1)"
        case let .invalidFeatureScale(scale):
            return "invalid feature scale \(scale); expected a finite number > 0"
        case let .inconsistent(message):
            return "inconsistent data set: \(message)"
        }
    }
}
