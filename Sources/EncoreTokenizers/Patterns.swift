import Foundation

/// How the pieces matched by a pattern are kept when splitting (HF `SplitDelimiterBehavior`).
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// A pattern that finds non-overlapping matches in a run of scalars.
///
/// The pre-tokenizer regexes used by real models (GPT-2, Llama 3, Qwen 2) are recognised
/// and run by hand-written scanners; any other regex runs through `NSRegularExpression`.
enum TextPattern: @unchecked Sendable {
    case literal([Unicode.Scalar])
    case predicate(@Sendable (Unicode.Scalar) -> Bool)
    /// Maximal runs of scalars having one of the classes (`\p{N}+`).
    case classRun(CharClass)
    case gpt2
    case llama3(maxDigits: Int)
    case regex(NSRegularExpression, source: String)

    static let gpt2Source = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// Compiles a regex source, choosing a hand-written scanner for known pre-tokenizer regexes.
    static func compile(regex source: String, context: String) throws -> TextPattern {
        switch source {
        case gpt2Source, #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#:
            return .gpt2
        case #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
             #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
            return .llama3(maxDigits: 3)
        case #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
             #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
            return .llama3(maxDigits: 1)
        case #"\p{N}"#:
            return .predicate({ $0.isN })
        case #"\p{N}+"#:
            return .classRun(.number)
        case #"\p{L}+"#:
            return .classRun(.letter)
        default:
            do {
                return .regex(try NSRegularExpression(pattern: source, options: []), source: source)
            } catch {
                throw TokenizerError(.config, "\(context): cannot compile regex \(source.debugDescription): \(error)")
            }
        }
    }

    /// The non-overlapping matches, as ranges of scalar indices, in order.
    func matches(in s: [Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .literal(let lit):
            return literalMatches(s, lit)
        case .predicate(let f):
            var out: [Range<Int>] = []
            for i in s.indices where f(s[i]) { out.append(i..<(i + 1)) }
            return out
        case .classRun(let mask):
            var out: [Range<Int>] = []
            var i = 0
            while i < s.count {
                if s[i].cls.isDisjoint(with: mask) { i += 1; continue }
                var e = i + 1
                while e < s.count && !s[e].cls.isDisjoint(with: mask) { e += 1 }
                out.append(i..<e)
                i = e
            }
            return out
        case .gpt2:
            return gpt2Matches(s)
        case .llama3(let maxDigits):
            return llama3Matches(s, maxDigits: maxDigits)
        case .regex(let re, _):
            return regexMatches(re, s)
        }
    }
}

private func literalMatches(_ s: [Unicode.Scalar], _ lit: [Unicode.Scalar]) -> [Range<Int>] {
    guard !lit.isEmpty, lit.count <= s.count else { return [] }
    var out: [Range<Int>] = []
    var i = 0
    let first = lit[0]
    while i + lit.count <= s.count {
        if s[i] == first {
            var ok = true
            for k in 1..<lit.count where s[i + k] != lit[k] { ok = false; break }
            if ok { out.append(i..<(i + lit.count)); i += lit.count; continue }
        }
        i += 1
    }
    return out
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
private func gpt2Matches(_ s: [Unicode.Scalar]) -> [Range<Int>] {
    var out: [Range<Int>] = []
    out.reserveCapacity(s.count / 3 + 1)
    let n = s.count
    var i = 0
    while i < n {
        let c = s[i]
        if c == "'" && i + 1 < n {
            let c1 = s[i + 1]
            if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" { out.append(i..<(i + 2)); i += 2; continue }
            if i + 2 < n {
                let c2 = s[i + 2]
                if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                    out.append(i..<(i + 3)); i += 3; continue
                }
            }
        }
        let k = (c == " ") ? i + 1 : i
        if k < n {
            let ck = s[k].cls
            if ck.contains(.letter) {
                var e = k + 1
                while e < n && s[e].isL { e += 1 }
                out.append(i..<e); i = e; continue
            }
            if ck.contains(.number) {
                var e = k + 1
                while e < n && s[e].isN { e += 1 }
                out.append(i..<e); i = e; continue
            }
            if !ck.contains(.space) {
                var e = k + 1
                while e < n {
                    let ce = s[e].cls
                    if ce.contains(.space) || ce.contains(.letter) || ce.contains(.number) { break }
                    e += 1
                }
                out.append(i..<e); i = e; continue
            }
        }
        // Whitespace run: `\s+(?!\S)` then `\s+`.
        var e = i
        while e < n && s[e].isS { e += 1 }
        if e == i { e = i + 1 }  // unreachable for valid classes; keeps progress
        if e < n && e - i >= 2 { e -= 1 }
        out.append(i..<e)
        i = e
    }
    return out
}

@inline(__always) private func lowerASCII(_ c: Unicode.Scalar) -> UInt32 {
    (c.value >= 65 && c.value <= 90) ? c.value + 32 : c.value
}

/// The Llama 3 / Qwen 2 pre-tokenizer regex:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
private func llama3Matches(_ s: [Unicode.Scalar], maxDigits: Int) -> [Range<Int>] {
    var out: [Range<Int>] = []
    out.reserveCapacity(s.count / 3 + 1)
    let n = s.count
    var i = 0
    while i < n {
        let c = s[i]
        if c == "'" && i + 1 < n {
            let c1 = lowerASCII(s[i + 1])
            if c1 == 115 || c1 == 116 || c1 == 109 || c1 == 100 { out.append(i..<(i + 2)); i += 2; continue }  // s t m d
            if i + 2 < n {
                let c2 = lowerASCII(s[i + 2])
                if (c1 == 114 && c2 == 101) || (c1 == 118 && c2 == 101) || (c1 == 108 && c2 == 108) {  // re ve ll
                    out.append(i..<(i + 3)); i += 3; continue
                }
            }
        }
        let cc = c.cls
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if cc.contains(.letter) {
            var e = i + 1
            while e < n && s[e].isL { e += 1 }
            out.append(i..<e); i = e; continue
        }
        if !cc.contains(.number) && c != "\r" && c != "\n" && i + 1 < n && s[i + 1].isL {
            var e = i + 2
            while e < n && s[e].isL { e += 1 }
            out.append(i..<e); i = e; continue
        }
        // \p{N}{1,maxDigits}
        if cc.contains(.number) {
            var e = i + 1
            while e < n && e - i < maxDigits && s[e].isN { e += 1 }
            out.append(i..<e); i = e; continue
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let k = (c == " ") ? i + 1 : i
        if k < n {
            let ck = s[k].cls
            if !ck.contains(.space) && !ck.contains(.letter) && !ck.contains(.number) {
                var e = k + 1
                while e < n {
                    let ce = s[e].cls
                    if ce.contains(.space) || ce.contains(.letter) || ce.contains(.number) { break }
                    e += 1
                }
                while e < n && (s[e] == "\r" || s[e] == "\n") { e += 1 }
                out.append(i..<e); i = e; continue
            }
        }
        // Whitespace alternatives.
        var e = i
        while e < n && s[e].isS { e += 1 }
        if e == i { out.append(i..<(i + 1)); i += 1; continue }  // unreachable for valid classes
        // \s*[\r\n]+ : up to and including the last CR/LF of the run.
        var lastNL = -1
        var q = e - 1
        while q >= i { if s[q] == "\r" || s[q] == "\n" { lastNL = q; break }; q -= 1 }
        if lastNL >= 0 { out.append(i..<(lastNL + 1)); i = lastNL + 1; continue }
        if e < n && e - i >= 2 { e -= 1 }
        out.append(i..<e)
        i = e
    }
    return out
}

private func regexMatches(_ re: NSRegularExpression, _ s: [Unicode.Scalar]) -> [Range<Int>] {
    // Map UTF-16 offsets back to scalar indices.
    var utf16ToScalar: [Int] = []
    utf16ToScalar.reserveCapacity(s.count + 1)
    for (idx, sc) in s.enumerated() {
        utf16ToScalar.append(idx)
        if sc.value > 0xFFFF { utf16ToScalar.append(idx) }
    }
    utf16ToScalar.append(s.count)
    let str = makeString(s)
    let ns = str as NSString
    var out: [Range<Int>] = []
    for m in re.matches(in: str, options: [], range: NSRange(location: 0, length: ns.length)) {
        let a = m.range.location, b = m.range.location + m.range.length
        guard a >= 0, b < utf16ToScalar.count else { continue }
        out.append(utf16ToScalar[a]..<utf16ToScalar[b])
    }
    return out
}

/// Splits `s` by the matches of `pattern` following HF `NormalizedString::split` semantics.
/// Returns the kept pieces as ranges (empty pieces are dropped).
func splitRanges(_ s: [Unicode.Scalar], pattern: TextPattern, behavior: SplitBehavior, invert: Bool = false) -> [Range<Int>] {
    if s.isEmpty { return [] }
    // (range, isMatch) covering the whole input.
    var parts: [(Range<Int>, Bool)] = []
    var prev = 0
    for m in pattern.matches(in: s) {
        if m.lowerBound != prev { parts.append((prev..<m.lowerBound, false)) }
        parts.append((m, true))
        prev = m.upperBound
    }
    if prev != s.count { parts.append((prev..<s.count, false)) }
    if invert { parts = parts.map { ($0.0, !$0.1) } }

    var result: [Range<Int>] = []
    switch behavior {
    case .isolated:
        result = parts.map { $0.0 }
    case .removed:
        result = parts.filter { !$0.1 }.map { $0.0 }
    case .contiguous:
        var previousMatch = false
        for (r, isMatch) in parts {
            if isMatch == previousMatch, let last = result.last {
                result[result.count - 1] = last.lowerBound..<r.upperBound
            } else {
                result.append(r)
            }
            previousMatch = isMatch
        }
    case .mergedWithPrevious:
        var previousMatch = false
        for (r, isMatch) in parts {
            if isMatch && !previousMatch, let last = result.last {
                result[result.count - 1] = last.lowerBound..<r.upperBound
            } else {
                result.append(r)
            }
            previousMatch = isMatch
        }
    case .mergedWithNext:
        var previousMatch = false
        for (r, isMatch) in parts.reversed() {
            if isMatch && !previousMatch, let last = result.last {
                result[result.count - 1] = r.lowerBound..<last.upperBound
            } else {
                result.append(r)
            }
            previousMatch = isMatch
        }
        result.reverse()
    }
    return result.filter { !$0.isEmpty }
}
