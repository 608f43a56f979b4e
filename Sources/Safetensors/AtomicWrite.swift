import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif

extension SafetensorsFile {
    /// Writes tensors and metadata to `url` atomically: into a temporary file in the same folder,
    /// flushed with `fsync`, renamed over `url`, then the folder is `fsync`ed. A process killed at
    /// any moment leaves either the previous file or the new one, never a mixture.
    public static func write(_ tensors: [TensorData], metadata: [String: String] = [:], to url: URL) throws(SafetensorsError) {
        try writeAtomically(try encode(tensors, metadata: metadata), to: url)
    }

    /// Replaces `url` with `data` atomically (see ``write(_:metadata:to:)``).
    public static func writeAtomically(_ data: Data, to url: URL) throws(SafetensorsError) {
        let folder = url.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        func failure(_ what: String) -> SafetensorsError { .io("\(what) \(url.path) (via \(temporary.lastPathComponent)): \(String(cString: strerror(errno)))") }

        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw failure("cannot write") }
        var written = 0
        let complete: Bool = data.withUnsafeBytes { bytes in
            while written < bytes.count {
                let result = systemWrite(descriptor, bytes.baseAddress! + written, bytes.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += result
            }
            return true
        }
        guard complete, fsync(descriptor) == 0 else {
            let error = failure("cannot write")
            close(descriptor)
            unlink(temporary.path)
            throw error
        }
        close(descriptor)
        guard rename(temporary.path, url.path) == 0 else {
            let error = SafetensorsError.io("cannot rename \(temporary.path) to \(url.path): \(String(cString: strerror(errno)))")
            unlink(temporary.path)
            throw error
        }
        let folderDescriptor = open(folder.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folderDescriptor >= 0 {
            fsync(folderDescriptor)
            close(folderDescriptor)
        }
    }
}
