import Foundation
import Testing
@testable import ExampleModel

@Suite final class CSVTests {
    let folder: URL
    init() throws { folder = try temporaryFolder() }
    deinit { try? FileManager.default.removeItem(at: folder) }

    @Test func headerAndLabelFirst() throws {
        let url = try write("label,x,y\n1,0.5,2\n0, 1e-1 ,-3\n", "a.csv", in: folder)
        let data = try Dataset.loadCSV(at: url, labelColumn: .first)
        #expect(data.count == 2 && data.featureCount == 2 && data.classCount == 2)
        #expect(data.features == [0.5, 2, 0.1, -3])
        #expect(data.labels == [1, 0])
        #expect(data.source == url.path)
    }

    @Test func noHeaderLabelLastCRLFBlankLinesBOMAndScale() throws {
        let text = "\u{FEFF}2,4,3\r\n\r\n8,6,0.0\r\n\n  \n10,12,5"
        let url = try write(text, "b.csv", in: folder)
        let data = try Dataset.loadCSV(at: url, labelColumn: .last, featureScale: 0.5)
        #expect(data.features == [1, 2, 4, 3, 5, 6])
        #expect(data.labels == [3, 0, 5])
        #expect(data.classCount == 6)
    }

    func expectError(_ text: String, label: Dataset.LabelColumn = .last, scale: Float = 1,
                     _ expected: (String) -> DatasetError, mentions: [String] = [],
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        let url = try write(text, "bad-\(UUID().uuidString.prefix(8)).csv", in: folder)
        do {
            let data = try Dataset.loadCSV(at: url, labelColumn: label, featureScale: scale)
            Issue.record("loaded \(data.count) rows from \(text.debugDescription)", sourceLocation: sourceLocation)
        } catch {
            #expect(error == expected(url.path), sourceLocation: sourceLocation)
            let message = error.description
            #expect(message.contains(url.path), "'\(message)' does not name the file", sourceLocation: sourceLocation)
            #expect(!message.contains("\n"), sourceLocation: sourceLocation)
            for text in mentions {
                #expect(message.contains(text), "'\(message)' does not mention '\(text)'", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func malformedFiles() throws {
        try expectError("", { .emptyFile(file: $0) }, mentions: ["empty"])
        try expectError("\n  \n\r\n", { .emptyFile(file: $0) }, mentions: ["empty"])
        try expectError("a,b,label\n", { .noRows(file: $0) }, mentions: ["no data rows"])
        try expectError("1\n2\n", { .tooFewColumns(file: $0, line: 1, found: 1) })
        try expectError("1,2,3\n4,5,6\n7,8\n", { .raggedRow(file: $0, line: 3, expected: 3, found: 2) },
                        mentions: [":3:", "expected 3 columns", "found 2"])
        try expectError("1,2,3\n4,5,6,7\n", { .raggedRow(file: $0, line: 2, expected: 3, found: 4) })
        try expectError("x,y,label\n1,2,3\n4,,6\n", { .notANumber(file: $0, line: 3, column: 2, text: "") })
        try expectError("1,2,3\n4,abc,6\n", { .notANumber(file: $0, line: 2, column: 2, text: "abc") },
                        mentions: [":2:2:", "'abc' is not a number"])
        try expectError("1,2,3\n4,nan,6\n", { .nonFinite(file: $0, line: 2, column: 2, text: "nan") }, mentions: ["not finite"])
        try expectError("1,inf,3\n", { .nonFinite(file: $0, line: 1, column: 2, text: "inf") })
        try expectError("1,1e39,3\n", { .nonFinite(file: $0, line: 1, column: 2, text: "1e39") })
        try expectError("1,3e38,3\n", scale: 10, { .nonFinite(file: $0, line: 1, column: 2, text: "3e38") })
        try expectError("1,2,-1\n", { .invalidLabel(file: $0, line: 1, column: 3, text: "-1") }, mentions: [":1:3:", "label '-1'"])
        try expectError("1,2,1.5\n", { .invalidLabel(file: $0, line: 1, column: 3, text: "1.5") })
        try expectError("1,2,nan\n", { .invalidLabel(file: $0, line: 1, column: 3, text: "nan") })
        try expectError("1,2,70000\n", { .invalidLabel(file: $0, line: 1, column: 3, text: "70000") })
        try expectError("-2,1,2\n", label: .first, { .invalidLabel(file: $0, line: 1, column: 1, text: "-2") })
        try expectError("\"1\",2,3\n4,5,6\n7,8,x\n", { .notANumber(file: $0, line: 3, column: 3, text: "x") })
    }

    @Test func labelsAsDecimalsAndHeadersAreAccepted() throws {
        let url = try write("f1,f2,class\n0,1,2.0\n1,0,0\n", "c.csv", in: folder)
        let data = try Dataset.loadCSV(at: url)
        #expect(data.labels == [2, 0] && data.classCount == 3 && data.features == [0, 1, 1, 0])
    }

    @Test func unreadableAndCompressedFiles() throws {
        let missing = folder.appendingPathComponent("missing.csv")
        #expect(throws: DatasetError.unreadable(file: missing.path, reason: "no such file")) { try Dataset.loadCSV(at: missing) }
        #expect(throws: DatasetError.unreadable(file: folder.path, reason: "it is a directory")) { try Dataset.loadCSV(at: folder) }
        let gzip = try write([0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00], "d.csv.gz", in: folder)
        #expect(throws: DatasetError.compressed(file: gzip.path)) { try Dataset.loadCSV(at: gzip) }
        let good = try write("1,2\n", "e.csv", in: folder)
        for bad: Float in [0, -1, .nan, .infinity] {
            #expect(throws: DatasetError.self) { try Dataset.loadCSV(at: good, featureScale: bad) }
        }
    }
}

@Suite final class IDXTests {
    let folder: URL
    init() throws { folder = try temporaryFolder() }
    deinit { try? FileManager.default.removeItem(at: folder) }

    /// An IDX file of unsigned bytes: magic 00 00 08 <dimensions>, the dimensions big-endian, the data.
    func idx(_ dimensions: [UInt32], _ data: [UInt8], type: UInt8 = 0x08) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, type, UInt8(dimensions.count)]
        for d in dimensions { bytes += [UInt8(d >> 24), UInt8((d >> 16) & 0xFF), UInt8((d >> 8) & 0xFF), UInt8(d & 0xFF)] }
        return bytes + data
    }

    func files(images: [UInt8], labels: [UInt8]) throws -> (URL, URL) {
        let id = UUID().uuidString.prefix(8)
        return (try write(images, "images-\(id).idx", in: folder), try write(labels, "labels-\(id).idx", in: folder))
    }

    func expectInvalid(images: [UInt8], labels: [UInt8], mentions: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (imageURL, labelURL) = try files(images: images, labels: labels)
        do {
            let data = try Dataset.loadIDX(images: imageURL, labels: labelURL)
            Issue.record("loaded \(data.count) images", sourceLocation: sourceLocation)
        } catch {
            let message = error.description
            #expect(!message.contains("\n"), sourceLocation: sourceLocation)
            for text in mentions {
                #expect(message.contains(text), "'\(message)' does not mention '\(text)'", sourceLocation: sourceLocation)
            }
        }
    }

    let goodImages: [UInt8] = [0, 255, 51, 102, 1, 2, 3, 4, 10, 20, 30, 40]   // 3 images of 2 × 2
    let goodLabels: [UInt8] = [2, 0, 4]

    @Test func loadsAValidPair() throws {
        let (images, labels) = try files(images: idx([3, 2, 2], goodImages), labels: idx([3], goodLabels))
        let data = try Dataset.loadIDX(images: images, labels: labels)
        #expect(data.count == 3 && data.featureCount == 4 && data.classCount == 5)
        #expect(data.labels == [2, 0, 4])
        #expect(data.features == goodImages.map { Float($0) / 255 })
        #expect(data.features[1] == 1 && data.features[0] == 0)
    }

    @Test func refusesMalformedFiles() throws {
        let labels = idx([3], goodLabels)
        // Truncated data, extra data, header cut short, nothing at all.
        try expectInvalid(images: idx([3, 2, 2], Array(goodImages.dropLast())), labels: labels, mentions: ["3 × 2 × 2 = 12 bytes", "holds 11", "truncated"])
        try expectInvalid(images: idx([3, 2, 2], goodImages + [0]), labels: labels, mentions: ["holds 13"])
        try expectInvalid(images: Array(idx([3, 2, 2], []).prefix(9)), labels: labels, mentions: ["9 bytes long", "16-byte header"])
        try expectInvalid(images: [0, 0], labels: labels, mentions: ["2 bytes long"])
        try expectInvalid(images: [], labels: labels, mentions: ["empty"])
        // The files swapped: a label file where images are due, and the other way round.
        try expectInvalid(images: labels, labels: labels, mentions: ["0x00000801", "expected magic 0x00000803", "label file"])
        try expectInvalid(images: idx([3, 2, 2], goodImages), labels: idx([3, 2, 2], goodImages), mentions: ["0x00000803", "expected magic 0x00000801"])
        // Not IDX at all, and a data type other than unsigned bytes.
        try expectInvalid(images: Array("P5 28 28\n".utf8), labels: labels, mentions: ["magic number 0x50352032"])
        try expectInvalid(images: idx([3, 2, 2], goodImages, type: 0x0D), labels: labels, mentions: ["data type 0x0D", "0x08"])
        // Zero-sized images, no images.
        try expectInvalid(images: idx([3, 0, 2], []), labels: labels, mentions: ["0 × 2 pixels"])
        try expectInvalid(images: idx([0, 2, 2], []), labels: idx([0], []), mentions: ["no images"])
    }

    @Test func refusesCountMismatch() throws {
        let (images, labels) = try files(images: idx([3, 2, 2], goodImages), labels: idx([2], [1, 0]))
        #expect(throws: DatasetError.countMismatch(images: images.path, imageCount: 3, labels: labels.path, labelCount: 2)) {
            try Dataset.loadIDX(images: images, labels: labels)
        }
    }

    @Test func refusesGzip() throws {
        // The first bytes of MNIST's train-images-idx3-ubyte.gz as downloaded.
        let gzip: [UInt8] = [0x1F, 0x8B, 0x08, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03]
        let (images, labels) = try files(images: gzip, labels: idx([3], goodLabels))
        let message = thrownMessage { try Dataset.loadIDX(images: images, labels: labels) }
        #expect(message?.contains("gzip-compressed") == true && message?.contains("decompress it first") == true, "\(message ?? "no error")")
        #expect(throws: DatasetError.compressed(file: images.path)) { try Dataset.loadIDX(images: images, labels: labels) }
    }

    @Test func hugeDeclaredSizesDoNotAllocate() throws {
        let labels = idx([3], goodLabels)
        // 2³²−1 cubed overflows Int; 60,000 × 28 × 28 is MNIST's header over a tiny file.
        try expectInvalid(images: idx([.max, .max, .max], goodImages), labels: labels, mentions: ["4294967295 × 4294967295 × 4294967295", "more bytes than can be addressed"])
        try expectInvalid(images: idx([60_000, 28, 28], goodImages), labels: labels, mentions: ["47040000 bytes"])
        try expectInvalid(images: idx([3, 2, 2], goodImages), labels: idx([.max], []), mentions: ["4294967295"])
        try expectInvalid(images: idx([0x8000_0000, 0x8000_0000, 4], []), labels: labels, mentions: ["can be addressed"])
    }
}
