/// A strict, bounded JSON parser for safetensors headers.
///
/// Foundation's decoders keep the last of duplicate keys silently; the format forbids duplicate
/// tensor names, so the header is parsed here, keeping every key and refusing duplicates. Every
/// malformed input is a thrown error, never a trap; nesting depth is bounded.
enum HeaderJSON: Equatable {
    case null
    case bool(Bool)
    /// Numbers are kept as their text; the format needs only non-negative integers.
    case number(String)
    case string(String)
    case array([HeaderJSON])
    /// Members in file order.
    case object([(String, HeaderJSON)])

    static func == (a: HeaderJSON, b: HeaderJSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)), let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    static let maximumDepth = 64

    static func parse(_ bytes: UnsafeRawBufferPointer) throws(SafetensorsError) -> HeaderJSON {
        var parser = Parser(bytes: bytes)
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.index == bytes.count else { throw parser.fail("unexpected content after the JSON value") }
        return value
    }

    struct Parser {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        func fail(_ reason: String) -> SafetensorsError { .invalidJSON(offset: index, reason: reason) }

        mutating func skipSpace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        mutating func expect(_ literal: String) throws(SafetensorsError) {
            for byte in literal.utf8 {
                guard index < bytes.count, bytes[index] == byte else { throw fail("expected '\(literal)'") }
                index += 1
            }
        }

        mutating func value(depth: Int) throws(SafetensorsError) -> HeaderJSON {
            guard depth < HeaderJSON.maximumDepth else { throw fail("nesting deeper than \(HeaderJSON.maximumDepth)") }
            guard index < bytes.count else { throw fail("unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw fail("unexpected character")
            }
        }

        mutating func object(depth: Int) throws(SafetensorsError) -> HeaderJSON {
            index += 1
            var members: [(String, HeaderJSON)] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                let key = try string()
                skipSpace()
                try expect(":")
                skipSpace()
                members.append((key, try value(depth: depth + 1)))
                skipSpace()
                guard index < bytes.count else { throw fail("unterminated object") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
                throw fail("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(SafetensorsError) -> HeaderJSON {
            index += 1
            var items: [HeaderJSON] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard index < bytes.count else { throw fail("unterminated array") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        }

        /// A number as JSON (RFC 8259) spells it: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
        /// Anything else — leading zeros, a bare `-`, `1.`, `1e`, `1.2.3`, `0x1` — is refused here,
        /// as the reference reader's JSON parser does, rather than read leniently.
        mutating func number() throws(SafetensorsError) -> String {
            let start = index
            func isDigit(_ index: Int) -> Bool { index < bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) }
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { throw fail("malformed number: '-' must be followed by a digit") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                guard !isDigit(index) else { throw fail("malformed number: leading zero") }
            } else {
                while isDigit(index) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard isDigit(index) else { throw fail("malformed number: '.' must be followed by a digit") }
                while isDigit(index) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard isDigit(index) else { throw fail("malformed number: exponent without digits") }
                while isDigit(index) { index += 1 }
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        }

        mutating func string() throws(SafetensorsError) -> String {
            index += 1
            var scalars: [UInt8] = []
            while true {
                guard index < bytes.count else { throw fail("unterminated string") }
                let byte = bytes[index]
                index += 1
                if byte == UInt8(ascii: "\"") { break }
                if byte < 0x20 { throw fail("control character in string") }
                if byte != UInt8(ascii: "\\") {
                    scalars.append(byte)
                    continue
                }
                guard index < bytes.count else { throw fail("unterminated escape") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escape)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        try expect("\\u")
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point") }
                    scalars.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw fail("invalid escape")
                }
            }
            guard let text = String(validating: scalars, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
            return text
        }

        mutating func hex4() throws(SafetensorsError) -> UInt32 {
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard index < bytes.count, let digit = hexValue(bytes[index]) else { throw fail("invalid \\u escape") }
                value = value * 16 + digit
                index += 1
            }
            return value
        }

        func hexValue(_ byte: UInt8) -> UInt32? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
            default: return nil
            }
        }
    }

    /// A short JSON rendering for error messages: at most about `limit` characters, then "…".
    /// Bounded in time and memory however large the value (an error must not cost more than the
    /// header it describes: `String(describing:)` of a nested value is many times its size).
    /// Lengths count Unicode scalars, so that one grapheme with many combining marks is cut too.
    func brief(limit: Int = 40) -> String {
        var out = ""
        render(into: &out, limit: limit)
        return out.unicodeScalars.count > limit ? String(out.unicodeScalars.prefix(limit)) + "…" : out
    }

    private static func clip(_ text: String, _ limit: Int) -> String {
        text.utf8.count > limit ? String(text.unicodeScalars.prefix(limit + 1)) : text
    }

    private func render(into out: inout String, limit: Int) {
        guard out.unicodeScalars.count <= limit else { return }
        switch self {
        case .null: out += "null"
        case let .bool(value): out += value ? "true" : "false"
        case let .number(text): out += Self.clip(text, limit)
        case let .string(text): out += HeaderJSON.quote(Self.clip(text, limit))
        case let .array(items):
            out += "["
            for (position, item) in items.enumerated() {
                guard out.unicodeScalars.count <= limit else { return }
                if position > 0 { out += "," }
                item.render(into: &out, limit: limit)
            }
            out += "]"
        case let .object(members):
            out += "{"
            for (position, (key, value)) in members.enumerated() {
                guard out.unicodeScalars.count <= limit else { return }
                if position > 0 { out += "," }
                out += HeaderJSON.quote(Self.clip(key, limit)) + ":"
                value.render(into: &out, limit: limit)
            }
            out += "}"
        }
    }

    /// Serialises a string as JSON.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
