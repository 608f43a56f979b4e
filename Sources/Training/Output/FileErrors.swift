import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What an `errno` means for a user, in a few words (Foundation's own messages are often opaque:
/// `NSCocoaErrorDomain error 512`, or "you don't have permission" for a path through a file).
public func describeErrno(_ code: Int32) -> String {
    switch code {
    case ENOENT: return "no such file or folder"
    case ENOTDIR: return "a part of the path is a file, not a folder"
    case EISDIR: return "it is a folder"
    case EEXIST: return "it already exists"
    case EACCES, EPERM: return "permission denied"
    case EROFS: return "the file system is read-only"
    case ENOSPC: return "no space left on the device"
    case EDQUOT: return "the disk quota is exceeded"
    case ENAMETOOLONG: return "the name is too long"
    case ELOOP: return "too many symbolic links"
    case EMFILE, ENFILE: return "too many open files"
    case EIO: return "input/output error"
    case ENOTEMPTY: return "the folder is not empty"
    case ENXIO, ENODEV: return "no such device"
    case ETXTBSY: return "the file is busy"
    case EFBIG: return "the file is too large"
    default: return String(cString: strerror(code))
    }
}


/// Writes `text` to a file descriptor (standard output or error), retrying short writes and
/// ignoring failures: a closed pipe (`optim train | head`, with SIGPIPE ignored) must not end a
/// run, as Foundation's `FileHandle.write` would.
public func writeIgnoringErrors(_ descriptor: Int32, _ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        if written < 0, errno == EINTR { continue }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}
