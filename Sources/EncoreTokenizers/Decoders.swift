import Foundation

/// A decoder from a `tokenizer.json` `decoder` block; it rewrites the list of token strings.
indirect enum Decoder: Sendable {
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme)
    case byteFallback
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case replace(TextPattern, String)
    case wordPiece(prefix: String, cleanup: Bool)
    case bpe(suffix: String)
    case ctc(pad: String, delimiter: String, cleanup: Bool)
    case sequence([Decoder])

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let list):
            var cur = tokens
            for d in list { cur = d.decodeChain(cur) }
            return cur
        case .byteLevel:
            var bytes: [UInt8] = []
            for t in tokens where !ByteLevelAlphabet.decode(t, into: &bytes) {
                bytes.append(contentsOf: t.utf8)
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .metaspace(let rep, let scheme):
            return tokens.enumerated().map { i, token in
                var view = String.UnicodeScalarView()
                for c in token.unicodeScalars {
                    if c == rep {
                        if i == 0 && scheme != .never { continue }
                        view.append(" ")
                    } else {
                        view.append(c)
                    }
                }
                return String(view)
            }
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                if pending.isEmpty { return }
                if let s = strictUTF8String(pending) {
                    out.append(s)
                } else {
                    for _ in pending { out.append("\u{FFFD}") }
                }
                pending.removeAll(keepingCapacity: true)
            }
            for t in tokens {
                if let b = byteFallbackValue(t) { pending.append(b); continue }
                flush()
                out.append(t)
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let chars = Array(token.unicodeScalars)
                var startCut = 0
                for i in 0..<min(start, chars.count) {
                    if chars[i] == content { startCut = i + 1 } else { break }
                }
                var stopCut = chars.count
                for i in 0..<min(stop, chars.count) {
                    let index = chars.count - i - 1
                    if chars[index] == content { stopCut = index } else { break }
                }
                if startCut >= stopCut { return "" }
                return makeString(chars[startCut..<stopCut])
            }
        case .replace(let pattern, let content):
            return tokens.map { replaceAll($0, pattern: pattern, with: content) }
        case .wordPiece(let prefix, let cleanup):
            return tokens.enumerated().map { i, token in
                var t = token
                if i != 0 {
                    if hasBytePrefix(t, prefix) { t = dropBytes(t, prefix.utf8.count) } else { t = " " + t }
                }
                return cleanup ? wordPieceCleanup(t) : t
            }
        case .bpe(let suffix):
            let n = tokens.count - 1
            return tokens.enumerated().map { i, t in
                replaceLiteral(t, suffix, i == n ? "" : " ")
            }
        case .ctc(let pad, let delimiter, let cleanup):
            var out: [String] = []
            var last: String?
            for t in tokens {
                if t == last { continue }
                last = t
                if t == pad { continue }
                var s = replaceLiteral(t, delimiter, " ")
                if cleanup { s = wordPieceCleanup(s) }
                out.append(s)
            }
            return out
        }
    }

    /// Joins the decoded chain into the final text.
    func decode(_ tokens: [String]) -> String {
        decodeChain(tokens).joined()
    }
}

/// The byte of a `<0xAB>` token, or nil.
func byteFallbackValue(_ t: String) -> UInt8? {
    let u = t.utf8
    guard u.count == 6 else { return nil }
    let a = Array(u)
    guard a[0] == UInt8(ascii: "<"), a[1] == UInt8(ascii: "0"), a[2] == UInt8(ascii: "x"), a[5] == UInt8(ascii: ">") else {
        return nil
    }
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    guard let h = hex(a[3]), let l = hex(a[4]) else { return nil }
    return h << 4 | l
}

func wordPieceCleanup(_ s: String) -> String {
    var out = s
    for (a, b) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                   (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
        out = replaceLiteral(out, a, b)
    }
    return out
}

/// A post-processor: adds special tokens around one encoded sequence.
indirect enum PostProcessor: Sendable {
    /// Ids to put before and after the sequence (TemplateProcessing, Bert, Roberta).
    case template(prefix: [Int32], suffix: [Int32], pairMiddle: [Int32], pairSuffix: [Int32])
    case none
    case sequence([PostProcessor])

    func apply(_ ids: [Int32]) -> [Int32] {
        switch self {
        case .none: return ids
        case .template(let pre, let suf, _, _): return pre + ids + suf
        case .sequence(let list):
            var cur = ids
            for p in list { cur = p.apply(cur) }
            return cur
        }
    }

    /// Special-token ids this processor adds to a single sequence.
    var addedCount: Int {
        switch self {
        case .none: return 0
        case .template(let pre, let suf, _, _): return pre.count + suf.count
        case .sequence(let list): return list.reduce(0) { $0 + $1.addedCount }
        }
    }
}
