import Foundation
import Training
#if canImport(Glibc)
import Glibc
#endif

/// One line for any error: Foundation's file errors mapped to their `errno` (with the path they
/// name), other errors by their description, lines joined.
func describe(_ error: any Error, parserMessage: String? = nil) -> String {
    let text: String
    let ns = error as NSError
    if ns.domain == NSPOSIXErrorDomain {
        text = pathPrefix(ns) + describeErrno(Int32(ns.code))
    } else if ns.domain == NSCocoaErrorDomain {
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            text = pathPrefix(ns) + describeErrno(Int32(underlying.code))
        } else {
            let reason: String
            switch CocoaError.Code(rawValue: ns.code) {
            case .fileNoSuchFile, .fileReadNoSuchFile: reason = describeErrno(ENOENT)
            case .fileWriteFileExists: reason = describeErrno(EEXIST)
            case .fileReadNoPermission, .fileWriteNoPermission: reason = describeErrno(EACCES)
            case .fileWriteOutOfSpace: reason = describeErrno(ENOSPC)
            case .fileWriteVolumeReadOnly: reason = describeErrno(EROFS)
            case .fileReadTooLarge: reason = "the file is too large to read"
            case .fileReadCorruptFile: reason = "the file is not in the expected format"
            case .fileReadInapplicableStringEncoding: reason = "the file is not UTF-8 text"
            default: reason = "file error \(ns.code)"
            }
            text = pathPrefix(ns) + reason
        }
    } else {
        text = parserMessage ?? "\(error)"
    }
    return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: " ")
}

private func pathPrefix(_ error: NSError) -> String {
    if let path = error.userInfo[NSFilePathErrorKey] as? String { return path + ": " }
    if let url = error.userInfo[NSURLErrorKey] as? URL { return url.path + ": " }
    return ""
}

/// Why `path` cannot be read as a regular file, or nil if it can: missing, a folder, a FIFO
/// (a read would block), a socket, a device, or no permission.
func fileTypeProblem(_ path: String, allowFolder: Bool = false) -> String? {
    guard !path.isEmpty else { return "the path is empty" }
    var info = stat()
    guard stat(path, &info) == 0 else { return describeErrno(errno) }
    switch info.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFDIR: if !allowFolder { return "it is a folder, not a file" }
    case S_IFIFO: return "it is a FIFO (named pipe), not a regular file"
    case S_IFSOCK: return "it is a socket, not a regular file"
    case S_IFCHR, S_IFBLK: return "it is a device, not a regular file"
    default: return "not a regular file"
    }
    guard access(path, R_OK) == 0 else { return describeErrno(errno) }
    return nil
}

/// Checks that `path` (the value of `option`) names a regular file this process can read, before
/// anything reads it (``fileTypeProblem(_:allowFolder:)``).
func checkInputFile(_ path: String, option: String) throws {
    if let problem = fileTypeProblem(path) { throw CLIError("\(option.isEmpty ? path : "\(option) \(path)"): \(problem)") }
}

/// A one-line command-line error.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
