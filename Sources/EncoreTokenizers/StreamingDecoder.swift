import Foundation

/// Turns token ids into text one id at a time, for streaming generation (HF `DecodeStream`).
///
/// Each `push` returns the new text that the id completes, or nil while the text so far ends in
/// an incomplete UTF-8 sequence (byte-fallback or byte-level tokens) or adds nothing. Decoding a
/// short window of ids keeps every step cheap; the concatenated pieces equal `decode(allIds)`.
///
/// ```swift
/// var stream = StreamingDecoder(tokenizer: tok)
/// for id in ids { if let piece = stream.push(id) { print(piece, terminator: "") } }
/// ```
public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private var ids: [Int] = []
    private var prefix = ""
    private var prefixIndex = 0

    /// Creates a stream over `tokenizer`.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the text it completes, if any.
    public mutating func push(_ id: Int) -> String? {
        ids.append(id)
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        guard text.utf8.count > prefix.utf8.count, !text.utf8.reversed().starts(with: [0xBD, 0xBF, 0xEF]),
              text.utf8.starts(with: prefix.utf8) else { return nil }
        let newText = String(decoding: text.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
        let newPrefixIndex = ids.count - prefixIndex
        ids.removeFirst(prefixIndex)
        prefix = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        prefixIndex = newPrefixIndex
        return newText
    }
}
