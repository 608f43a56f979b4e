import Foundation

extension Dataset {
    /// Loads an image classification set in the IDX format of MNIST (LeCun, Cortes & Burges,
    /// http://yann.lecun.com/exdb/mnist/) and of Fashion-MNIST, EMNIST and KMNIST.
    ///
    /// An IDX file is a big-endian header — two zero bytes, a data-type byte, a dimension count,
    /// then one `UInt32` per dimension — followed by the data. The images file must hold unsigned
    /// bytes (type `0x08`) in three dimensions, items × rows × columns (magic `0x00000803`); the
    /// labels file unsigned bytes in one dimension (magic `0x00000801`). Features are the
    /// `rows × columns` pixels of each image divided by 255 into [0, 1]; ``classCount`` is the
    /// largest label plus one.
    ///
    /// The header is checked against the file before anything is allocated: the sizes it declares
    /// must match the file's length exactly, so a damaged or hostile header cannot make the loader
    /// allocate more than the file holds.
    ///
    /// - Throws: ``DatasetError/compressed(file:)`` for a gzip file (the form MNIST is downloaded
    ///   in: `gunzip` it first), ``DatasetError/invalidIDX(file:reason:)`` for a wrong magic, data
    ///   type or dimension count, or a file shorter or longer than its header says,
    ///   ``DatasetError/countMismatch(images:imageCount:labels:labelCount:)`` when the two files
    ///   hold different numbers of items.
    public static func loadIDX(images: URL, labels: URL) throws(DatasetError) -> Dataset {
        let imageData = try readFile(images)
        let labelData = try readFile(labels)
        let imageResult = imageData.withUnsafeBytes { bytes in
            Result { () throws(DatasetError) in try idxPayload(bytes, file: images.path, dimensions: 3, kind: "images") }
        }
        let labelResult = labelData.withUnsafeBytes { bytes in
            Result { () throws(DatasetError) in try idxPayload(bytes, file: labels.path, dimensions: 1, kind: "labels") }
        }
        let (imageHeader, imageShape) = try imageResult.get()
        let (labelHeader, labelShape) = try labelResult.get()
        let count = imageShape[0]
        guard count == labelShape[0] else {
            throw .countMismatch(images: images.path, imageCount: count, labels: labels.path, labelCount: labelShape[0])
        }
        guard count > 0 else { throw .invalidIDX(file: images.path, reason: "it holds no images") }
        let pixels = imageShape[1] * imageShape[2] // checked against the file length by idxPayload

        let labelValues = labelData.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            (0..<count).map { Int32(bytes[labelHeader + $0]) }
        }
        let features = imageData.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            [Float](unsafeUninitializedCapacity: count * pixels) { buffer, initialized in
                let source = bytes.baseAddress!.advanced(by: imageHeader).assumingMemoryBound(to: UInt8.self)
                for index in 0..<(count * pixels) { buffer[index] = Float(source[index]) / 255 }
                initialized = count * pixels
            }
        }
        let classCount = Int(labelValues.max()!) + 1
        return Dataset(unchecked: features, labels: labelValues, featureCount: pixels, classCount: classCount,
                       source: images.path)
    }

    /// Checks an IDX file of unsigned bytes with `dimensions` dimensions, and returns the offset of
    /// its data and its shape.
    static func idxPayload(_ bytes: UnsafeRawBufferPointer, file: String, dimensions: Int, kind: String) throws(DatasetError) -> (offset: Int, shape: [Int]) {
        guard !bytes.isEmpty else { throw .emptyFile(file: file) }
        if bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B { throw .compressed(file: file) }
        let expected = "magic \(hex(UInt32(0x0800 + dimensions), digits: 8)) (unsigned bytes, \(dimensions) dimension(s), for \(kind))"
        guard bytes.count >= 4 else {
            throw .invalidIDX(file: file, reason: "the file is \(bytes.count) bytes long, shorter than the 4-byte magic number")
        }
        let magic = hex((0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[$1]) }, digits: 8)
        guard bytes[0] == 0, bytes[1] == 0 else {
            throw .invalidIDX(file: file, reason: "magic number \(magic); expected \(expected)")
        }
        guard bytes[2] == 0x08 else {
            throw .invalidIDX(file: file, reason: "magic number \(magic): data type \(hex(UInt32(bytes[2]), digits: 2)); only 0x08 (unsigned byte) is supported")
        }
        guard Int(bytes[3]) == dimensions else {
            let hint = bytes[3] == 1 ? ", as a label file has" : bytes[3] == 3 ? ", as an image file has" : ""
            throw .invalidIDX(file: file, reason: "magic number \(magic): \(bytes[3]) dimension(s)\(hint); expected \(expected)")
        }
        let header = 4 + 4 * dimensions
        guard bytes.count >= header else {
            throw .invalidIDX(file: file, reason: "the file is \(bytes.count) bytes long, shorter than its \(header)-byte header")
        }
        var shape: [Int] = []
        var size = 1
        var overflow = false
        for dimension in 0..<dimensions {
            let value = (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * dimension + $1]) }
            shape.append(value)
            if !overflow { (size, overflow) = size.multipliedReportingOverflow(by: value) }
        }
        if dimensions == 3 && (shape[1] == 0 || shape[2] == 0) {
            throw .invalidIDX(file: file, reason: "images of \(shape[1]) × \(shape[2]) pixels")
        }
        let declared = shape.map(String.init).joined(separator: " × ")
        guard !overflow, size == bytes.count - header else {
            let what = overflow ? "more bytes than can be addressed" : "\(size) bytes of data"
            throw .invalidIDX(file: file, reason: "its header declares \(declared) = \(what), but the file holds \(bytes.count - header) after the \(header)-byte header (a truncated file, or bytes after the data)")
        }
        return (header, shape)
    }

    /// `value` in hexadecimal, `0x` and upper-case digits, zero-padded to `digits`.
    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return "0x" + String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}
