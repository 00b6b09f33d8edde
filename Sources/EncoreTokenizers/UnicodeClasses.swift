import Foundation

/// Character classes used by the pre-tokenizers, looked up from a table for the
/// Basic Multilingual Plane and computed on the fly above it.
struct CharClass: OptionSet, Sendable {
    let rawValue: UInt8
    static let letter = CharClass(rawValue: 1)       // \p{L}
    static let number = CharClass(rawValue: 2)       // \p{N}
    static let space = CharClass(rawValue: 4)        // \s (White_Space)
    static let punct = CharClass(rawValue: 8)        // \p{P}
    static let mark = CharClass(rawValue: 16)        // \p{M}
    static let decimal = CharClass(rawValue: 32)     // \p{Nd}
    static let connector = CharClass(rawValue: 64)   // \p{Pc}
    static let control = CharClass(rawValue: 128)    // \p{Cc}, \p{Cf}

    /// The classes of one scalar.
    @inline(__always)
    static func of(_ s: Unicode.Scalar) -> CharClass {
        let v = s.value
        if v < 0x10000 { return CharClass(rawValue: bmpTable[Int(v)]) }
        return compute(s)
    }

    static func compute(_ s: Unicode.Scalar) -> CharClass {
        var c: CharClass = []
        let p = s.properties
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c.insert(.letter)
        case .decimalNumber:
            c.insert(.number); c.insert(.decimal)
        case .letterNumber, .otherNumber:
            c.insert(.number)
        case .connectorPunctuation:
            c.insert(.punct); c.insert(.connector)
        case .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation:
            c.insert(.punct)
        case .nonspacingMark, .spacingMark, .enclosingMark:
            c.insert(.mark)
        case .control, .format:
            c.insert(.control)
        default:
            break
        }
        if p.isWhitespace { c.insert(.space) }
        return c
    }

    static let bmpTable: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 0x10000)
        for v in 0..<0x10000 {
            if let s = Unicode.Scalar(UInt32(v)) { t[v] = compute(s).rawValue }
        }
        return t
    }()
}

extension Unicode.Scalar {
    @inline(__always) var cls: CharClass { CharClass.of(self) }
    @inline(__always) var isL: Bool { cls.contains(.letter) }
    @inline(__always) var isN: Bool { cls.contains(.number) }
    @inline(__always) var isS: Bool { cls.contains(.space) }
    /// `\w` as in the Rust `regex` crate: alphabetic, marks, decimal digits, connector punctuation, joiners.
    var isWordChar: Bool {
        let c = cls
        if c.contains(.letter) || c.contains(.mark) || c.contains(.decimal) || c.contains(.connector) { return true }
        if value == 0x200C || value == 0x200D { return true }
        return properties.isAlphabetic
    }
}

/// Builds a `String` from a slice of scalars by writing their UTF-8 directly.
func makeString(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
    var byteCount = 0
    for s in scalars {
        let v = s.value
        byteCount += v < 0x80 ? 1 : v < 0x800 ? 2 : v < 0x10000 ? 3 : 4
    }
    if byteCount == 0 { return "" }
    return String(unsafeUninitializedCapacity: byteCount) { buf in
        var i = 0
        for s in scalars {
            let v = s.value
            if v < 0x80 {
                buf[i] = UInt8(v); i += 1
            } else if v < 0x800 {
                buf[i] = UInt8(0xC0 | (v >> 6)); buf[i + 1] = UInt8(0x80 | (v & 0x3F)); i += 2
            } else if v < 0x10000 {
                buf[i] = UInt8(0xE0 | (v >> 12)); buf[i + 1] = UInt8(0x80 | ((v >> 6) & 0x3F))
                buf[i + 2] = UInt8(0x80 | (v & 0x3F)); i += 3
            } else {
                buf[i] = UInt8(0xF0 | (v >> 18)); buf[i + 1] = UInt8(0x80 | ((v >> 12) & 0x3F))
                buf[i + 2] = UInt8(0x80 | ((v >> 6) & 0x3F)); buf[i + 3] = UInt8(0x80 | (v & 0x3F)); i += 4
            }
        }
        return i
    }
}

@inline(__always)
func makeString(_ scalars: [Unicode.Scalar]) -> String {
    makeString(scalars[...])
}

/// Splits at the first space byte: `"a b"` → `("a", "b")` (byte-wise, as HF and llama.cpp; a
/// Swift `Character` search would miss a space followed by a combining mark).
func splitAtFirstSpace(_ s: String) -> (String, String)? {
    let b = Array(s.utf8)
    guard let sp = b.firstIndex(of: 0x20) else { return nil }
    return (String(decoding: b[..<sp], as: UTF8.self), String(decoding: b[(sp + 1)...], as: UTF8.self))
}

/// Byte-wise prefix test (Swift's `hasPrefix` compares by `Character`).
@inline(__always) func hasBytePrefix(_ s: String, _ p: String) -> Bool {
    s.utf8.starts(with: p.utf8)
}

/// Drops the first `n` UTF-8 bytes.
@inline(__always) func dropBytes(_ s: String, _ n: Int) -> String {
    String(decoding: s.utf8.dropFirst(n), as: UTF8.self)
}

/// Replaces a literal byte-wise (Foundation's `replacingOccurrences` may compare by Unicode rules).
func replaceLiteral(_ s: String, _ target: String, _ rep: String) -> String {
    replaceLiteralUTF8(s, Array(target.utf8), Array(rep.utf8))
}

/// Decodes UTF-8 strictly: nil when the bytes are not valid UTF-8.
/// (`String(validating:as:)` needs macOS 15; this works on every platform we target.)
public func strictUTF8String<C: Collection>(_ bytes: C) -> String? where C.Element == UInt8 {
    var it = bytes.makeIterator()
    var decoder = UTF8()
    loop: while true {
        switch decoder.decode(&it) {
        case .scalarValue: continue
        case .emptyInput: break loop
        case .error: return nil
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
