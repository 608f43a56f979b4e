// libFuzzer entry point for the safetensors reader. Built by tools/fuzz/run.sh together with
// Sources/Safetensors/*.swift as one module (`-module-name Safetensors`), so it calls the module
// directly, internal API included. Not part of the SwiftPM package.
//
// For every input:
//   - parse it from memory with `SafetensorsFile(data:)`; a thrown `SafetensorsError` is the
//     expected outcome for malformed input (its description must be non-empty and not grow
//     faster than the input);
//   - on success, the header must be valid JSON to Foundation's JSONSerialization as well;
//   - walk every tensor: `info`, `bytes` (summed), `floats` for the float dtypes (and
//     the `unsupportedConversion` error for the others), checking sizes against shape and dtype;
//   - re-encode the file with `encode`, re-parse it, and check that names, dtypes, shapes, offsets,
//     bytes and metadata survive; encoding the re-parsed file again must give the same bytes.
// Any broken property is a `fatalError`, which libFuzzer reports as a crash with the input saved.

import Foundation

@inline(never)
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("fuzz property broken: \(message())") }
}

/// With FUZZ_VERDICTS set, each input's verdict is printed to stderr ("VERDICT accept" or
/// "VERDICT refuse <error>"), for tools/fuzz/differential.py to compare with the reference reader.
let printVerdicts = ProcessInfo.processInfo.environment["FUZZ_VERDICTS"] != nil

/// The checks for one input. Returns normally for refused input and for input that passes.
func fuzzOne(_ data: Data) {
    let file: SafetensorsFile
    do {
        file = try SafetensorsFile(data: data)
    } catch {
        // An error says what is wrong, briefly: its text may quote a name or a value from the
        // file, but never grows faster than the input (no dump of a whole parsed value).
        let description = error.description
        fuzzCheck(!description.isEmpty, "empty error description")
        fuzzCheck(description.utf8.count <= 400 + data.count,
                  "error description of \(description.utf8.count) bytes for \(data.count) bytes of input: \(description.prefix(300))")
        if printVerdicts { FileHandle.standardError.write(Data("VERDICT refuse \(description.replacingOccurrences(of: "\n", with: "\\n"))\n".utf8)) }
        return
    }
    if printVerdicts { FileHandle.standardError.write(Data("VERDICT accept\n".utf8)) }

    // A header we accept must be valid JSON to an independent parser too (Foundation's
    // JSONSerialization), with the same top-level member count: the reader promises to refuse
    // malformed headers, not to read them leniently.
    let headerLength = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
    let header = data.subdata(in: 8..<(8 + headerLength))
    guard let object = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
        fatalError("accepted a header that JSONSerialization refuses: \(String(decoding: header, as: UTF8.self))")
    }
    fuzzCheck(object.count == file.tensors.count + (object["__metadata__"] == nil ? 0 : 1),
              "JSONSerialization sees \(object.count) members, we see \(file.tensors.count) tensors + metadata")

    // Walk every tensor as a user would.
    var checksum: UInt64 = 0
    var total = 0
    var rebuilt: [TensorData] = []
    for tensor in file.tensors {
        let info: TensorInfo
        do { info = try file.info(tensor.name) } catch { fatalError("listed tensor '\(tensor.name)' not found: \(error)") }
        fuzzCheck(info == tensor, "info('\(tensor.name)') returned another entry")
        let count = info.elementCount
        fuzzCheck(count >= 0, "negative element count for '\(tensor.name)'")
        fuzzCheck(count * info.dtype.byteCount == info.dataRange.count, "size of '\(tensor.name)' disagrees with its shape")
        let bytes: Data
        do { bytes = try file.bytes(tensor.name) } catch { fatalError("bytes('\(tensor.name)') threw \(error)") }
        fuzzCheck(bytes.count == info.dataRange.count, "bytes('\(tensor.name)') has the wrong length")
        for byte in bytes { checksum &+= UInt64(byte) }
        total += bytes.count
        switch info.dtype {
        case .F32, .F64, .F16, .BF16:
            do {
                let values = try file.floats(tensor.name)
                fuzzCheck(values.count == count, "floats('\(tensor.name)') has \(values.count) values, expected \(count)")
                for value in values { checksum &+= UInt64(value.bitPattern) }
            } catch { fatalError("floats('\(tensor.name)') threw \(error)") }
        default:
            do {
                _ = try file.floats(tensor.name)
                fatalError("floats('\(tensor.name)') of \(info.dtype) did not throw")
            } catch {
                fuzzCheck(error == .unsupportedConversion(name: tensor.name, dtype: info.dtype.rawValue), "floats of \(info.dtype): \(error)")
            }
        }
        rebuilt.append(TensorData(name: info.name, dtype: info.dtype, shape: info.shape, bytes: bytes))
    }
    fuzzCheck(total <= data.count, "tensors hold more bytes than the file")
    withExtendedLifetime(checksum) {}

    // Round trip: encode, parse again, compare.
    let encoded: Data
    do { encoded = try SafetensorsFile.encode(rebuilt, metadata: file.metadata) } catch { fatalError("re-encoding a parsed file failed: \(error)") }
    let encodedHeaderLength = encoded.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
    fuzzCheck((8 + encodedHeaderLength) % 8 == 0, "encoded data section not 8-byte aligned")
    let again: SafetensorsFile
    do { again = try SafetensorsFile(data: encoded) } catch { fatalError("re-parsing an encoded file failed: \(error)") }
    fuzzCheck(again.metadata == file.metadata, "metadata changed in the round trip")
    fuzzCheck(again.tensors.count == file.tensors.count, "tensor count changed in the round trip")
    for tensor in file.tensors {
        let other: TensorInfo
        do { other = try again.info(tensor.name) } catch { fatalError("'\(tensor.name)' lost in the round trip") }
        fuzzCheck(other == tensor, "'\(tensor.name)' changed in the round trip: \(tensor) -> \(other)")
        let before: Data, after: Data
        do { (before, after) = (try file.bytes(tensor.name), try again.bytes(tensor.name)) } catch {
            fatalError("bytes('\(tensor.name)') threw after the round trip: \(error)")
        }
        fuzzCheck(before == after, "bytes of '\(tensor.name)' changed in the round trip")
    }
    let rebuiltAgain = again.tensors.map { info in TensorData(name: info.name, dtype: info.dtype, shape: info.shape, bytes: (try? again.bytes(info.name)) ?? Data()) }
    do {
        let encodedAgain = try SafetensorsFile.encode(rebuiltAgain, metadata: again.metadata)
        fuzzCheck(encodedAgain == encoded, "encoding is not idempotent")
    } catch { fatalError("re-encoding the round-tripped file failed: \(error)") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(Data(bytes: data, count: size))
    return 0
}
