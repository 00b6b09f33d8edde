import Foundation

/// A text normalizer from a `tokenizer.json` `normalizer` block.
indirect enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents
    case replace(TextPattern, String)
    case prepend(String)
    case precompiled(PrecompiledCharsmap)
    case bert(cleanText: Bool, handleChineseChars: Bool, stripAccents: Bool?, lowercase: Bool)
    case byteLevel
    case sequence([Normalizer])

    func apply(_ s: String) -> String {
        if s.isEmpty { return s }
        switch self {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .lowercase: return lowercaseScalars(s)
        case .strip(let left, let right):
            var scalars = Array(s.unicodeScalars)
            if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
            if left {
                var k = 0
                while k < scalars.count, scalars[k].properties.isWhitespace { k += 1 }
                scalars.removeFirst(k)
            }
            return makeString(scalars)
        case .stripAccents:
            var view = String.UnicodeScalarView()
            for sc in s.unicodeScalars where !sc.cls.contains(.mark) { view.append(sc) }
            return String(view)
        case .replace(let pattern, let content):
            return replaceAll(s, pattern: pattern, with: content)
        case .prepend(let p):
            return p + s
        case .precompiled(let map):
            return map.normalize(s)
        case .bert(let clean, let chinese, let strip, let lower):
            return bertNormalize(s, clean: clean, chinese: chinese, stripAccents: strip ?? lower, lowercase: lower)
        case .byteLevel:
            return ByteLevelAlphabet.encode(Array(s.utf8))
        case .sequence(let list):
            var out = s
            for n in list { out = n.apply(out) }
            return out
        }
    }
}

func lowercaseScalars(_ s: String) -> String {
    var view = String.UnicodeScalarView()
    for sc in s.unicodeScalars {
        if sc.value < 128 {
            view.append(sc.value >= 65 && sc.value <= 90 ? Unicode.Scalar(sc.value + 32)! : sc)
        } else {
            view.append(contentsOf: sc.properties.lowercaseMapping.unicodeScalars)
        }
    }
    return String(view)
}

func replaceAll(_ s: String, pattern: TextPattern, with content: String) -> String {
    if case .literal(let lit) = pattern {
        // UTF-8 is self-synchronising: a byte match of a valid literal starts on a character boundary.
        return replaceLiteralUTF8(s, Array(makeString(lit).utf8), Array(content.utf8))
    }
    let scalars = Array(s.unicodeScalars)
    let matches = pattern.matches(in: scalars)
    if matches.isEmpty { return s }
    var view = String.UnicodeScalarView()
    var prev = 0
    for m in matches {
        view.append(contentsOf: scalars[prev..<m.lowerBound])
        view.append(contentsOf: content.unicodeScalars)
        prev = m.upperBound
    }
    view.append(contentsOf: scalars[prev...])
    return String(view)
}

/// Replaces every non-overlapping occurrence of `lit` (left to right) by `rep`, on UTF-8 bytes.
func replaceLiteralUTF8(_ s: String, _ lit: [UInt8], _ rep: [UInt8]) -> String {
    guard let first = lit.first else { return s }
    var str = s
    return str.withUTF8 { src -> String in
        let n = src.count
        // Count matches first so the output is written in one allocation.
        var matches = 0
        var i = 0
        while i + lit.count <= n {
            if src[i] == first && (lit.count == 1 || zip(lit.indices.dropFirst(), lit.dropFirst()).allSatisfy { src[i + $0.0] == $0.1 }) {
                matches += 1; i += lit.count
            } else {
                i += 1
            }
        }
        if matches == 0 { return s }
        let outCount = n + matches * (rep.count - lit.count)
        if outCount == 0 { return "" }
        return String(unsafeUninitializedCapacity: outCount) { out in
            var i = 0, o = 0
            while i < n {
                if i + lit.count <= n && src[i] == first
                    && (lit.count == 1 || zip(lit.indices.dropFirst(), lit.dropFirst()).allSatisfy { src[i + $0.0] == $0.1 }) {
                    for b in rep { out[o] = b; o += 1 }
                    i += lit.count
                } else {
                    out[o] = src[i]; o += 1; i += 1
                }
            }
            return o
        }
    }
}

private func isChineseChar(_ v: UInt32) -> Bool {
    (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
        || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
        || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
}

private func bertNormalize(_ s: String, clean: Bool, chinese: Bool, stripAccents: Bool, lowercase: Bool) -> String {
    var view = String.UnicodeScalarView()
    for sc in s.unicodeScalars {
        if clean {
            let v = sc.value
            if v == 0 || v == 0xFFFD { continue }
            if v != 9 && v != 10 && v != 13 {
                switch sc.properties.generalCategory {
                case .control, .format, .unassigned, .privateUse, .surrogate: continue
                default: break
                }
            }
            if v == 9 || v == 10 || v == 13 || sc.properties.isWhitespace { view.append(" "); continue }
        }
        if chinese && isChineseChar(sc.value) {
            view.append(" "); view.append(sc); view.append(" ")
            continue
        }
        view.append(sc)
    }
    var out = String(view)
    if stripAccents {
        var v2 = String.UnicodeScalarView()
        for sc in out.decomposedStringWithCanonicalMapping.unicodeScalars
        where sc.properties.generalCategory != .nonspacingMark {
            v2.append(sc)
        }
        out = String(v2)
    }
    if lowercase { out = lowercaseScalars(out) }
    return out
}

/// The GPT-2 byte-to-character alphabet used by byte-level BPE.
enum ByteLevelAlphabet {
    /// `byteToScalar[b]` is the printable character standing for byte `b`.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let keep = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if keep {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()

    /// The inverse map: scalar value → byte, for scalars below 324.
    static let scalarToByte: [Int16] = {
        var t = [Int16](repeating: -1, count: 324)
        for (b, sc) in byteToScalar.enumerated() { t[Int(sc.value)] = Int16(b) }
        return t
    }()

    /// UTF-8 of each byte's stand-in character (1 or 2 bytes), packed low byte first.
    static let byteToUTF8: [(UInt8, UInt8, Int)] = byteToScalar.map { sc in
        let v = sc.value
        return v < 0x80 ? (UInt8(v), 0, 1) : (UInt8(0xC0 | (v >> 6)), UInt8(0x80 | (v & 0x3F)), 2)
    }

    static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let n = bytes.count
        if n == 0 { return "" }
        return String(unsafeUninitializedCapacity: 2 * n) { buf in
            var i = 0
            for b in bytes {
                let (x, y, len) = byteToUTF8[Int(b)]
                buf[i] = x
                if len == 2 { buf[i + 1] = y }
                i += len
            }
            return i
        }
    }

    /// Maps a token back to bytes; nil if a character is outside the alphabet.
    static func decode(_ token: String, into out: inout [UInt8]) -> Bool {
        let mark = out.count
        for sc in token.unicodeScalars {
            let v = Int(sc.value)
            guard v < 324, scalarToByte[v] >= 0 else { out.removeSubrange(mark...); return false }
            out.append(UInt8(scalarToByte[v]))
        }
        return true
    }
}

/// The SentencePiece `precompiled_charsmap`: a darts-clone double-array trie over UTF-8
/// keys whose values index NUL-terminated replacement strings.
struct PrecompiledCharsmap: Sendable {
    private let units: [UInt32]
    private let normalized: [UInt8]

    init(data: [UInt8], context: String) throws {
        guard data.count >= 4 else {
            throw TokenizerError(.config, "\(context): precompiled_charsmap is \(data.count) bytes, too short for its header")
        }
        let trieSize = Int(UInt32(data[0]) | UInt32(data[1]) << 8 | UInt32(data[2]) << 16 | UInt32(data[3]) << 24)
        guard trieSize % 4 == 0, 4 + trieSize <= data.count else {
            throw TokenizerError(.config, "\(context): precompiled_charsmap trie size \(trieSize) runs past the \(data.count)-byte blob")
        }
        var u: [UInt32] = []
        u.reserveCapacity(trieSize / 4)
        var p = 4
        while p < 4 + trieSize {
            u.append(UInt32(data[p]) | UInt32(data[p + 1]) << 8 | UInt32(data[p + 2]) << 16 | UInt32(data[p + 3]) << 24)
            p += 4
        }
        guard !u.isEmpty else { throw TokenizerError(.config, "\(context): precompiled_charsmap trie is empty") }
        units = u
        normalized = Array(data[(4 + trieSize)...])
    }

    @inline(__always) private static func offset(_ unit: UInt32) -> Int {
        Int((unit >> 10) << ((unit & (1 << 9)) >> 6))
    }

    /// Values of every key that is a prefix of `key`, shortest first.
    private func commonPrefixSearch<C: Collection>(_ key: C) -> [Int] where C.Element == UInt8 {
        var results: [Int] = []
        var nodePos = 0
        var unit = units[0]
        nodePos ^= Self.offset(unit)
        for b in key {
            if b == 0 { break }
            nodePos ^= Int(b)
            guard nodePos >= 0, nodePos < units.count else { return results }
            unit = units[nodePos]
            if (unit & ((1 << 31) | 0xFF)) != UInt32(b) { return results }
            nodePos ^= Self.offset(unit)
            guard nodePos >= 0, nodePos < units.count else { return results }
            if (unit >> 8) & 1 == 1 {
                results.append(Int(units[nodePos] & ((1 << 31) - 1)))
            }
        }
        return results
    }

    private func transform<C: Collection>(_ chunk: C) -> [UInt8]? where C.Element == UInt8 {
        let results = commonPrefixSearch(chunk)
        guard let index = results.first, index < normalized.count else { return nil }
        var end = index
        while end < normalized.count && normalized[end] != 0 { end += 1 }
        return Array(normalized[index..<end])
    }

    /// Normalizes grapheme by grapheme, as the HF `Precompiled` normalizer does.
    func normalize(_ s: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for g in s {
            let gBytes = Array(g.utf8)
            if gBytes.count < 6, let rep = transform(gBytes) {
                out.append(contentsOf: rep)
                continue
            }
            for sc in g.unicodeScalars {
                let cBytes = Array(String(sc).utf8)
                if let rep = transform(cBytes) {
                    out.append(contentsOf: rep)
                } else {
                    out.append(contentsOf: cBytes)
                }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
