import Foundation

extension Dataset {
    /// The UCI "Optical Recognition of Handwritten Digits" test set as shipped by scikit-learn
    /// (`load_digits`): 1,797 images of 8 × 8 pixels, 10 classes, bundled with the module.
    ///
    /// Each row holds 64 features — pixel counts 0…16, divided by 16 into [0, 1] — and the digit
    /// 0…9 as its label. Source, licence and checksum: `Resources/DIGITS.md`. The file is parsed
    /// once per process.
    ///
    /// - Throws: ``DatasetError`` only if the bundled resource is missing or damaged.
    public static func digits() throws(DatasetError) -> Dataset {
        try bundledDigits.get()
    }

    /// The bundled `digits.csv`, looked up beside the executable (``resourceURL(_:)``).
    static var digitsURL: URL? { resourceURL("digits.csv") }

    /// A resource of the module, looked up beside the executable (where SwiftPM puts the
    /// module's resource bundle) without `Bundle.module`, whose generated accessor traps when
    /// the bundle is missing; a binary copied without its bundle gets a clear error instead.
    static func resourceURL(_ name: String) -> URL? {
        let bundleName = "swift-optim_ExampleModel.resources"
        var folders = [Bundle.main.bundleURL]
        if let executable = Bundle.main.executableURL?.resolvingSymlinksInPath() { folders.append(executable.deletingLastPathComponent()) }
        for folder in folders {
            for candidate in [folder.appendingPathComponent(bundleName).appendingPathComponent(name),
                              folder.appendingPathComponent(bundleName).appendingPathComponent("Resources").appendingPathComponent(name)]
            where FileManager.default.isReadableFile(atPath: candidate.path) {
                return candidate
            }
        }
        return nil
    }

    private static let bundledDigits: Result<Dataset, DatasetError> = Result { () throws(DatasetError) in
        guard let url = digitsURL else {
            throw .unreadable(file: "digits.csv", reason: "swift-optim_ExampleModel.resources is not beside the executable; copy it along with the binary")
        }
        let loaded = try loadCSV(at: url, labelColumn: .last, featureScale: 1.0 / 16)
        return Dataset(unchecked: loaded.features, labels: loaded.labels, featureCount: loaded.featureCount,
                       classCount: loaded.classCount, source: "digits")
    }
}
