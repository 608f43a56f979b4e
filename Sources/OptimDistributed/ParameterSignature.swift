import Foundation
import Optim

/// What ranks compare at start-up: the parameter list (names, shapes, groups, in order) and any
/// settings that must agree (the optimizer configuration, for a sharded optimizer).
///
/// The check exchanges a fixed-size fingerprint — count, element total, and 64-bit FNV-1a hashes
/// of the list and of the settings — with one allgather. Only when fingerprints differ does rank
/// 0 broadcast its full description, so that each rank can name its first difference.
struct ParameterSignature {
    struct Entry: Equatable {
        var name: String
        var shape: [Int]
        var group: Int

        var text: String { "'\(name)' \(shape) in group \(group)" }
    }

    var entries: [Entry]
    var settings: String

    init(groups: [[Parameter]], settings: String) {
        entries = groups.enumerated().flatMap { group, parameters in
            parameters.map { Entry(name: $0.name, shape: $0.shape, group: group) }
        }
        self.settings = settings
    }

    /// The separators of the serialised form: ASCII unit and record separators, which names don't hold.
    private static let unit = "\u{1F}", record = "\u{1E}"

    /// A canonical text form: one record per parameter, then the settings.
    var serialised: String {
        entries.map { "\($0.group)\(Self.unit)\($0.name)\(Self.unit)\($0.shape.map(String.init).joined(separator: ","))" }
            .joined(separator: Self.record) + Self.record + Self.record + settings
    }

    init(serialised text: String) {
        let parts = text.components(separatedBy: Self.record + Self.record)
        let records = parts[0].isEmpty ? [] : parts[0].components(separatedBy: Self.record)
        entries = records.map { record in
            let fields = record.components(separatedBy: Self.unit)
            let shape = fields.count > 2 && !fields[2].isEmpty ? fields[2].split(separator: ",").compactMap { Int($0) } : []
            return Entry(name: fields.count > 1 ? fields[1] : "", shape: shape, group: Int(fields[0]) ?? -1)
        }
        settings = parts.count > 1 ? parts[1...].joined(separator: Self.record + Self.record) : ""
    }

    var elementCount: Int { entries.reduce(0) { $0 &+ $1.shape.reduce(1, &*) } }

    /// `[count, elements, hash of the list, hash of the settings]`.
    var fingerprint: [Int64] {
        let list = entries.map { "\($0.group)\(Self.unit)\($0.name)\(Self.unit)\($0.shape)" }.joined(separator: Self.record)
        return [Int64(entries.count), Int64(truncatingIfNeeded: elementCount),
                Int64(bitPattern: Self.fnv1a(list)), Int64(bitPattern: Self.fnv1a(settings))]
    }

    /// 64-bit FNV-1a: stable across processes and runs (Swift's `Hasher` is seeded per process).
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The first difference between this list and `other` (rank `otherRank`'s), in words.
    func firstDifference(from other: ParameterSignature, otherRank: Int) -> String {
        for index in 0..<max(entries.count, other.entries.count) {
            let mine = index < entries.count ? entries[index] : nil, theirs = index < other.entries.count ? other.entries[index] : nil
            if mine == theirs { continue }
            let here = mine.map(\.text) ?? "absent", there = theirs.map(\.text) ?? "absent"
            return "parameter #\(index) is \(here) here but \(there) on rank \(otherRank)"
        }
        if settings != other.settings { return "the settings are \(settings) here but \(other.settings) on rank \(otherRank)" }
        return "no difference found in the descriptions (a hash collision?)"
    }

    /// Checks that every rank holds the same signature; throws
    /// `DistributedError.parameterMismatch(_:)` on every rank when any differs, naming the ranks
    /// that differ from rank 0 and, on each of those, its first difference. Collective.
    func verify(on communicator: any Communicator) throws(DistributedError) {
        let fingerprints = try communicator.allgather(fingerprint)
        let differing = (1..<communicator.size).filter { fingerprints[$0] != fingerprints[0] }
        guard !differing.isEmpty else { return }
        func summary(_ rank: Int) -> String { "rank \(rank): \(fingerprints[rank][0]) parameters, \(fingerprints[rank][1]) elements" }
        let rootSignature = ParameterSignature(serialised: try communicator.broadcast(serialised, from: 0))
        var message = "rank\(differing.count == 1 ? "" : "s") \(differing.map(String.init).joined(separator: ", ")) "
            + "differ\(differing.count == 1 ? "s" : "") from rank 0 (\(([0] + differing).map(summary).joined(separator: "; ")))"
        if communicator.rank != 0, differing.contains(communicator.rank) {
            message += "; on this rank (\(communicator.rank)): " + firstDifference(from: rootSignature, otherRank: 0)
        }
        throw .parameterMismatch(message)
    }
}

extension Communicator {
    /// Checks that every rank passes the same parameters — names, shapes and order (and groups,
    /// when given as groups) — and throws `DistributedError.parameterMismatch(_:)` on every rank
    /// otherwise, before any data is exchanged. Collective; ``DataParallel`` and
    /// ``ShardedOptimizer`` call it when built.
    public func verifySameParameters(_ groups: [[Parameter]], settings: String = "") throws(DistributedError) {
        try ParameterSignature(groups: groups, settings: settings).verify(on: self)
    }
}

/// Tensors laid end to end in one flat index space, as ZeRO and gradient buckets see them.
struct FlatLayout {
    /// `offsets[i]`: the flat index of tensor `i`'s first element; one more entry for the total.
    let offsets: [Int]
    /// The number of elements of all tensors.
    let total: Int
    let tensorCount: Int

    init(counts: [Int]) {
        var offsets = [0]
        offsets.reserveCapacity(counts.count + 1)
        for count in counts { offsets.append(offsets.last! + count) }
        self.offsets = offsets
        total = offsets.last!
        tensorCount = counts.count
    }

    /// The part of tensor `tensor` inside flat range `range`, in the tensor's own indices.
    func overlap(tensor: Int, with range: Range<Int>) -> Range<Int> {
        let start = offsets[tensor], end = offsets[tensor + 1]
        let low = min(max(range.lowerBound, start), end), high = max(min(range.upperBound, end), low)
        return (low - start)..<(high - start)
    }

    /// Calls `body(tensor, elements, flatStart)` for each non-empty piece of flat range `range`,
    /// in order: `elements` are the tensor's own indices, `flatStart` the flat index of the first.
    @inline(__always)
    func forEachSegment(in range: Range<Int>, _ body: (Int, Range<Int>, Int) throws -> Void) rethrows {
        guard !range.isEmpty else { return }
        // The last tensor starting at or before range.lowerBound.
        var (low, high) = (0, tensorCount)
        while low < high {
            let middle = (low + high + 1) / 2
            if offsets[middle] <= range.lowerBound { low = middle } else { high = middle - 1 }
        }
        var tensor = low
        while tensor < tensorCount, offsets[tensor] < range.upperBound {
            let piece = overlap(tensor: tensor, with: range)
            if !piece.isEmpty { try body(tensor, piece, offsets[tensor] + piece.lowerBound) }
            tensor += 1
        }
    }
}
