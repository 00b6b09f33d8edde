import Foundation

/// A piece of text on its way to the model, or an added token already resolved to an id.
struct Piece {
    var text: String
    /// The id when this piece is an added token.
    var tokenId: Int32?
    /// True when the piece starts at offset 0 of the original input (Metaspace `first` scheme).
    var atStart: Bool
}

/// How Metaspace adds its replacement character in front of a piece.
enum PrependScheme: String, Sendable {
    case always, first, never
}

/// A pre-tokenizer from a `tokenizer.json` `pre_tokenizer` block.
indirect enum PreTokenizer: Sendable {
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme, split: Bool)
    case split(TextPattern, SplitBehavior, invert: Bool)
    case whitespace
    case whitespaceSplit
    case bert
    case digits(individual: Bool)
    case punctuation(SplitBehavior)
    case charDelimiter(Unicode.Scalar)
    case sequence([PreTokenizer])

    /// Splits every text piece (added-token pieces pass through untouched).
    func apply(_ pieces: [Piece]) -> [Piece] {
        if case .sequence(let list) = self {
            var cur = pieces
            for p in list { cur = p.apply(cur) }
            return cur
        }
        var out: [Piece] = []
        out.reserveCapacity(pieces.count * 4)
        for piece in pieces {
            if piece.tokenId != nil { out.append(piece); continue }
            splitPiece(piece, into: &out)
        }
        return out
    }

    private func emit(_ scalars: [Unicode.Scalar], _ ranges: [Range<Int>], atStart: Bool, into out: inout [Piece]) {
        for r in ranges {
            out.append(Piece(text: makeString(scalars[r]), tokenId: nil, atStart: atStart && r.lowerBound == 0))
        }
    }

    private func splitPiece(_ piece: Piece, into out: inout [Piece]) {
        switch self {
        case .sequence:
            out.append(contentsOf: self.apply([piece]))
        case .byteLevel(let addPrefixSpace, let useRegex):
            var text = piece.text
            if addPrefixSpace && text.utf8.first != 0x20 { text = " " + text }
            if useRegex {
                let scalars = Array(text.unicodeScalars)
                for r in splitRanges(scalars, pattern: .gpt2, behavior: .isolated) {
                    let word = makeString(scalars[r])
                    out.append(Piece(text: ByteLevelAlphabet.encode(word.utf8), tokenId: nil,
                                     atStart: piece.atStart && r.lowerBound == 0))
                }
            } else if !text.isEmpty {
                out.append(Piece(text: ByteLevelAlphabet.encode(text.utf8), tokenId: nil, atStart: piece.atStart))
            }
        case .metaspace(let rep, let scheme, let split):
            var scalars: [Unicode.Scalar] = []
            scalars.reserveCapacity(piece.text.unicodeScalars.count + 1)
            for sc in piece.text.unicodeScalars { scalars.append(sc == " " ? rep : sc) }
            switch scheme {
            case .always:
                if scalars.first != rep { scalars.insert(rep, at: 0) }
            case .first:
                if scalars.first != rep && piece.atStart { scalars.insert(rep, at: 0) }
            case .never:
                break
            }
            if split {
                emit(scalars, splitRanges(scalars, pattern: .literal([rep]), behavior: .mergedWithNext),
                     atStart: piece.atStart, into: &out)
            } else if !scalars.isEmpty {
                out.append(Piece(text: makeString(scalars), tokenId: nil, atStart: piece.atStart))
            }
        case .split(let pattern, let behavior, let invert):
            let scalars = Array(piece.text.unicodeScalars)
            emit(scalars, splitRanges(scalars, pattern: pattern, behavior: behavior, invert: invert),
                 atStart: piece.atStart, into: &out)
        case .whitespace:
            // `\w+|[^\w\s]+`, keeping the matches and dropping the rest.
            let s = Array(piece.text.unicodeScalars)
            var ranges: [Range<Int>] = []
            var i = 0
            while i < s.count {
                if s[i].isWordChar {
                    var e = i + 1
                    while e < s.count && s[e].isWordChar { e += 1 }
                    ranges.append(i..<e); i = e
                } else if !s[i].isS {
                    var e = i + 1
                    while e < s.count && !s[e].isWordChar && !s[e].isS { e += 1 }
                    ranges.append(i..<e); i = e
                } else {
                    i += 1
                }
            }
            emit(s, ranges, atStart: piece.atStart, into: &out)
        case .whitespaceSplit:
            let s = Array(piece.text.unicodeScalars)
            emit(s, splitRanges(s, pattern: .predicate({ $0.properties.isWhitespace }), behavior: .removed),
                 atStart: piece.atStart, into: &out)
        case .bert:
            let s = Array(piece.text.unicodeScalars)
            for r in splitRanges(s, pattern: .predicate({ $0.properties.isWhitespace }), behavior: .removed) {
                let sub = Array(s[r])
                for r2 in splitRanges(sub, pattern: .predicate(isPunctuationScalar), behavior: .isolated) {
                    out.append(Piece(text: makeString(sub[r2]), tokenId: nil,
                                     atStart: piece.atStart && r.lowerBound == 0 && r2.lowerBound == 0))
                }
            }
        case .digits(let individual):
            let s = Array(piece.text.unicodeScalars)
            emit(s, splitRanges(s, pattern: .predicate({ $0.isN }), behavior: individual ? .isolated : .contiguous),
                 atStart: piece.atStart, into: &out)
        case .punctuation(let behavior):
            let s = Array(piece.text.unicodeScalars)
            emit(s, splitRanges(s, pattern: .predicate(isPunctuationScalar), behavior: behavior),
                 atStart: piece.atStart, into: &out)
        case .charDelimiter(let d):
            let s = Array(piece.text.unicodeScalars)
            emit(s, splitRanges(s, pattern: .literal([d]), behavior: .removed), atStart: piece.atStart, into: &out)
        }
    }
}

/// ASCII punctuation or any Unicode `P*` character (HF `is_punc`).
@Sendable func isPunctuationScalar(_ c: Unicode.Scalar) -> Bool {
    let v = c.value
    if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
    return c.cls.contains(.punct)
}
