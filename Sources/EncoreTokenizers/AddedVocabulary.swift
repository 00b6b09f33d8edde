import Foundation

/// A token added on top of the model vocabulary (`added_tokens` in `tokenizer.json`).
public struct AddedToken: Sendable, Equatable {
    /// The literal text of the token.
    public var content: String
    /// The token id.
    public var id: Int
    /// Special tokens are skipped by `decode(skipSpecialTokens: true)`.
    public var special: Bool
    /// Swallow whitespace on the left of a match.
    public var lstrip: Bool
    /// Swallow whitespace on the right of a match.
    public var rstrip: Bool
    /// Match only when not inside a word.
    public var singleWord: Bool
    /// Match against the normalized text instead of the raw text.
    public var normalized: Bool

    /// Creates an added token.
    public init(content: String, id: Int, special: Bool, lstrip: Bool = false, rstrip: Bool = false,
                singleWord: Bool = false, normalized: Bool = false) {
        self.content = content
        self.id = id
        self.special = special
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.singleWord = singleWord
        self.normalized = normalized
    }
}

/// Finds added tokens in text the way HF `AddedVocabulary` does: leftmost-longest matching,
/// first on the raw text for `normalized: false` tokens, then on the normalized pieces.
struct AddedVocabulary: Sendable {
    let tokens: [AddedToken]
    let byId: [Int32: AddedToken]
    let specialContents: Set<TokenKey>
    /// The text `decode` uses for an added token: its normalized form for `normalized` tokens.
    let decodeForm: [Int32: String]
    private var rawTrie = ByteTrie()
    private var normTrie = ByteTrie()
    private var rawFirst = [Bool](repeating: false, count: 256)
    private var normFirst = [Bool](repeating: false, count: 256)
    private(set) var hasRaw = false
    private(set) var hasNormalized = false
    /// Indexed by the trie value.
    private let list: [AddedToken]

    init(tokens: [AddedToken], normalizer: Normalizer?) {
        self.tokens = tokens
        var byId: [Int32: AddedToken] = [:]
        var specials = Set<TokenKey>()
        for t in tokens {
            byId[Int32(t.id)] = t
            if t.special && !t.content.isEmpty { specials.insert(TokenKey(t.content)) }
        }
        self.byId = byId
        self.specialContents = specials
        var forms: [Int32: String] = [:]
        for t in tokens {
            if t.normalized, let n = normalizer {
                forms[Int32(t.id)] = n.apply(t.content)
            } else {
                forms[Int32(t.id)] = t.content
            }
        }
        self.decodeForm = forms
        list = tokens
        for (i, t) in tokens.enumerated() where !t.content.isEmpty {
            if t.normalized {
                let key = Array((normalizer?.apply(t.content) ?? t.content).utf8)
                if key.isEmpty { continue }
                normTrie.insert(key, value: Int32(i))
                normFirst[Int(key[0])] = true
                hasNormalized = true
            } else {
                let key = Array(t.content.utf8)
                rawTrie.insert(key, value: Int32(i))
                rawFirst[Int(key[0])] = true
                hasRaw = true
            }
        }
    }

    /// Splits `text` into pieces; added tokens get their id. Pieces keep `atStart` when they begin
    /// at offset 0 of a piece that itself began the input.
    func split(_ text: String, atStart: Bool, normalizedPass: Bool, parseSpecial: Bool) -> [Piece] {
        let trie = normalizedPass ? normTrie : rawTrie
        let first = normalizedPass ? normFirst : rawFirst
        if !(normalizedPass ? hasNormalized : hasRaw) || text.isEmpty {
            return [Piece(text: text, tokenId: nil, atStart: atStart)]
        }
        let bytes = Array(text.utf8)
        var pieces: [Piece] = []
        var startOffset = 0
        var pos = 0
        bytes.withUnsafeBufferPointer { buf in
            while pos < buf.count {
                if !first[Int(buf[pos])] { pos += 1; continue }
                var bestLen = 0
                var bestIdx: Int32 = -1
                trie.prefixes(buf, from: pos) { len, v in
                    if len > bestLen { bestLen = len; bestIdx = v }
                }
                if bestIdx < 0 { pos += 1; continue }
                let tok = list[Int(bestIdx)]
                var start = pos
                var stop = pos + bestLen
                pos = stop  // matches never overlap, even when discarded
                if !parseSpecial && tok.special { continue }
                if tok.singleWord {
                    let startSpace = start == 0 || !(lastScalar(buf, before: start)?.isWordChar ?? false)
                    let stopSpace = stop == buf.count || !(firstScalar(buf, at: stop)?.isWordChar ?? false)
                    if !startSpace || !stopSpace { continue }
                }
                if tok.lstrip {
                    var s = start
                    while s > 0, let (sc, len) = lastScalarAndLength(buf, before: s), sc.properties.isWhitespace {
                        s -= len
                    }
                    start = max(s, startOffset)
                }
                if tok.rstrip {
                    while stop < buf.count, let sc = firstScalar(buf, at: stop), sc.properties.isWhitespace {
                        stop += utf8Length(buf[stop])
                    }
                    pos = stop
                }
                if startOffset < start {
                    pieces.append(Piece(text: String(decoding: buf[startOffset..<start], as: UTF8.self), tokenId: nil,
                                        atStart: atStart && startOffset == 0))
                }
                pieces.append(Piece(text: String(decoding: buf[start..<stop], as: UTF8.self),
                                    tokenId: Int32(tok.id), atStart: atStart && start == 0))
                startOffset = stop
            }
        }
        if startOffset < bytes.count {
            pieces.append(Piece(text: String(decoding: bytes[startOffset...], as: UTF8.self), tokenId: nil,
                                atStart: atStart && startOffset == 0))
        }
        return pieces
    }
}

@inline(__always) func utf8Length(_ lead: UInt8) -> Int {
    lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
}

private func firstScalar(_ buf: UnsafeBufferPointer<UInt8>, at i: Int) -> Unicode.Scalar? {
    guard i < buf.count else { return nil }
    let len = min(utf8Length(buf[i]), buf.count - i)
    var it = String(decoding: UnsafeBufferPointer(rebasing: buf[i..<(i + len)]), as: UTF8.self).unicodeScalars.makeIterator()
    return it.next()
}

private func lastScalarAndLength(_ buf: UnsafeBufferPointer<UInt8>, before i: Int) -> (Unicode.Scalar, Int)? {
    guard i > 0 else { return nil }
    var s = i - 1
    while s > 0 && (buf[s] & 0xC0) == 0x80 { s -= 1 }
    guard let sc = firstScalar(buf, at: s) else { return nil }
    return (sc, i - s)
}

private func lastScalar(_ buf: UnsafeBufferPointer<UInt8>, before i: Int) -> Unicode.Scalar? {
    lastScalarAndLength(buf, before: i)?.0
}
