import Foundation

/// A parsed JSON value. Object keys keep no order; numbers are kept as `Double`
/// (token ids and scores fit exactly).
enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Object members in file order (keys are compared byte-wise by callers that need it).
    case object([(String, JSONValue)])

    var string: String? { if case .string(let s) = self { return s }; return nil }
    var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    var number: Double? { if case .number(let n) = self { return n }; return nil }
    var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    var object: [(String, JSONValue)]? { if case .object(let o) = self { return o }; return nil }
    var isNull: Bool { if case .null = self { return true }; return false }
    /// An exact non-negative or negative integer, or nil.
    var int: Int? {
        guard case .number(let n) = self, n.rounded() == n, abs(n) < 9.0e15 else { return nil }
        return Int(n)
    }

    subscript(key: String) -> JSONValue? {
        if case .object(let o) = self {
            for (k, v) in o.reversed() where sameBytes(k, key) { return v }
        }
        return nil
    }
}

/// A strict JSON parser over UTF-8 bytes that reports the byte offset of the first error.
struct JSONParser {
    private let bytes: [UInt8]
    private var pos = 0
    private let source: String
    private var depth = 0

    /// Parses a complete JSON document; `source` names the file in error messages.
    static func parse(_ data: [UInt8], source: String) throws -> JSONValue {
        var parser = JSONParser(bytes: data, source: source)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        if parser.pos != parser.bytes.count {
            throw parser.error("unexpected data after the JSON value")
        }
        return value
    }

    private init(bytes: [UInt8], source: String) {
        self.bytes = bytes
        self.source = source
    }

    private func error(_ message: String) -> TokenizerError {
        TokenizerError(.json, "invalid JSON in \(source) at byte \(pos): \(message)")
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count {
            let b = bytes[pos]
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { pos += 1 } else { break }
        }
    }

    private mutating func parseValue() throws -> JSONValue {
        guard pos < bytes.count else { throw error("unexpected end of data") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(bytes[pos])))'")
        }
    }

    private mutating func expectLiteral(_ literal: String) throws {
        let lit = Array(literal.utf8)
        guard pos + lit.count <= bytes.count else { throw error("unexpected end of data") }
        for i in 0..<lit.count where bytes[pos + i] != lit[i] { throw error("invalid literal") }
        pos += lit.count
    }

    private mutating func parseObject() throws -> JSONValue {
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { throw error("nesting too deep") }
        pos += 1
        var dict: [(String, JSONValue)] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(dict) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw error("expected ':'") }
            pos += 1
            skipWhitespace()
            dict.append((key, try parseValue()))
            skipWhitespace()
            guard pos < bytes.count else { throw error("unexpected end of data in object") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(dict) }
            throw error("expected ',' or '}'")
        }
    }

    private mutating func parseArray() throws -> JSONValue {
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { throw error("nesting too deep") }
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw error("unexpected end of data in array") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[pos]
            let d: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            v = v * 16 + d
            pos += 1
        }
        return v
    }

    private mutating func parseString() throws -> String {
        pos += 1  // opening quote
        let start = pos
        // Fast path: no escapes.
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                let s = try makeString(bytes[start..<pos])
                pos += 1
                return s
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw error("control character in string") }
            pos += 1
        }
        var out = [UInt8](bytes[start..<pos])
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                pos += 1
                return try makeString(out[...])
            }
            if b < 0x20 { throw error("control character in string") }
            if b != UInt8(ascii: "\\") { out.append(b); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { break }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800..<0xDC00).contains(code) {
                    // A high surrogate must be followed by a low surrogate.
                    if pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                        pos += 2
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("invalid surrogate pair") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        throw error("unpaired surrogate in \\u escape")
                    }
                } else if (0xDC00..<0xE000).contains(code) {
                    throw error("unpaired low surrogate in \\u escape")
                }
                guard let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        throw error("unterminated string")
    }

    private func makeString(_ slice: ArraySlice<UInt8>) throws -> String {
        guard let s = strictUTF8String(slice) else {
            throw error("string is not valid UTF-8")
        }
        return s
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = pos
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        var sawDigit = false
        while pos < bytes.count {
            let b = bytes[pos]
            if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) {
                sawDigit = true
                pos += 1
            } else if b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E")
                        || b == UInt8(ascii: "+") || b == UInt8(ascii: "-") {
                pos += 1
            } else {
                break
            }
        }
        guard sawDigit, let text = strictUTF8String(bytes[start..<pos]),
              let value = Double(text) else {
            pos = start
            throw error("invalid number")
        }
        return .number(value)
    }
}

/// Typed access to JSON fields that throws errors naming the field path.
struct JSONField {
    let value: JSONValue
    let path: String
    let file: String

    init(_ value: JSONValue, path: String, file: String) {
        self.value = value
        self.path = path
        self.file = file
    }

    func fail(_ message: String) -> TokenizerError {
        TokenizerError(.config, "\(file): field '\(path)' \(message)")
    }

    /// The child field, or nil when absent or null.
    func optional(_ key: String) -> JSONField? {
        guard let v = value[key], !v.isNull else { return nil }
        return JSONField(v, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    /// The child field; throws when absent or null.
    func required(_ key: String) throws -> JSONField {
        guard value.object != nil else { throw fail("must be an object") }
        guard let f = optional(key) else {
            throw TokenizerError(.config, "\(file): missing field '\(path.isEmpty ? key : "\(path).\(key)")'")
        }
        return f
    }

    func string() throws -> String {
        guard let s = value.string else { throw fail("must be a string") }
        return s
    }
    func bool() throws -> Bool {
        guard let b = value.bool else { throw fail("must be true or false") }
        return b
    }
    func int() throws -> Int {
        guard let i = value.int else { throw fail("must be an integer") }
        return i
    }
    /// A token id: an integer in 0...Int32.max.
    func id32() throws -> Int32 {
        guard let i = value.int, let v = Int32(exactly: i), v >= 0 else { throw fail("must be a token id (0...\(Int32.max))") }
        return v
    }
    func double() throws -> Double {
        guard let d = value.number else { throw fail("must be a number") }
        return d
    }
    func array() throws -> [JSONField] {
        guard let a = value.array else { throw fail("must be an array") }
        return a.enumerated().map { JSONField($0.element, path: "\(path)[\($0.offset)]", file: file) }
    }
    func pairs() throws -> [(String, JSONValue)] {
        guard let o = value.object else { throw fail("must be an object") }
        return o
    }

    func optString(_ key: String) throws -> String? { try optional(key)?.string() }
    func optBool(_ key: String) throws -> Bool? { try optional(key)?.bool() }
    func optInt(_ key: String) throws -> Int? { try optional(key)?.int() }
    func bool(_ key: String, default d: Bool) throws -> Bool { try optBool(key) ?? d }
}
