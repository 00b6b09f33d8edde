import Foundation

/// One chat message for `Tokenizer.applyChatTemplate`.
public struct ChatMessage: Sendable, Equatable {
    /// The speaker: `system`, `user`, `assistant` (or any role the template accepts).
    public var role: String
    /// The message text.
    public var content: String

    /// Creates a message.
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A tokenizer loaded from a Hugging Face `tokenizer.json` (optionally with `tokenizer_config.json`)
/// or from the vocabulary inside a GGUF file. Ids match HF `tokenizers` / llama.cpp exactly.
///
/// ```swift
/// let tok = try Tokenizer.load(path: "Tests/EncoreTokenizersTests/Fixtures/phi-3.5-mini/tokenizer.json")
/// let ids = tok.encode("Hello world")   // [15043, 3186]
/// tok.decode(ids)                       // "Hello world"
/// ```
public final class Tokenizer: @unchecked Sendable {
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let model: TokenModel
    let postProcessor: PostProcessor
    let decoder: Decoder?
    let added: AddedVocabulary

    /// The id of the beginning-of-sequence token, if the tokenizer has one.
    public let bosTokenId: Int?
    /// The id of the end-of-sequence token, if the tokenizer has one.
    public let eosTokenId: Int?
    /// The id of the padding token, if the tokenizer has one.
    public let padTokenId: Int?
    /// The chat template source (Jinja) carried by the tokenizer, if any.
    public let chatTemplateSource: String?
    /// The added tokens (special and not), sorted by id.
    public var addedTokens: [AddedToken] { added.tokens.sorted { $0.id < $1.id } }

    /// Number of ids: one more than the largest id in the model vocabulary or added tokens.
    public var vocabSize: Int {
        max(model.vocabSize, (added.tokens.map { $0.id }.max() ?? -1) + 1)
    }

    init(normalizer: Normalizer?, preTokenizer: PreTokenizer?, model: TokenModel, postProcessor: PostProcessor,
         decoder: Decoder?, addedTokens: [AddedToken], bos: Int?, eos: Int?, pad: Int?, chatTemplate: String?) {
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.model = model
        self.postProcessor = postProcessor
        self.decoder = decoder
        self.added = AddedVocabulary(tokens: addedTokens, normalizer: normalizer)
        self.bosTokenId = bos
        self.eosTokenId = eos
        self.padTokenId = pad
        self.chatTemplateSource = chatTemplate
    }

    /// Loads a tokenizer from `tokenizer.json`, a folder holding `tokenizer.json`
    /// (and optionally `tokenizer_config.json`), or a `.gguf` file.
    public static func load(path: String) throws -> Tokenizer {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TokenizerError(.io, "no such file or folder: \(path)")
        }
        if isDir.boolValue {
            let json = (path as NSString).appendingPathComponent("tokenizer.json")
            if FileManager.default.fileExists(atPath: json) {
                let config = (path as NSString).appendingPathComponent("tokenizer_config.json")
                return try loadJSON(path: json,
                                    configPath: FileManager.default.fileExists(atPath: config) ? config : nil)
            }
            let ggufs = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
                .filter { $0.hasSuffix(".gguf") }.sorted()
            if let g = ggufs.first {
                return try loadGGUF(path: (path as NSString).appendingPathComponent(g))
            }
            throw TokenizerError(.io, "folder \(path) holds neither tokenizer.json nor a .gguf file")
        }
        if path.hasSuffix(".gguf") || GGUFFile.hasMagic(path: path) {
            return try loadGGUF(path: path)
        }
        let dir = (path as NSString).deletingLastPathComponent
        let config = ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent("tokenizer_config.json")
        return try loadJSON(path: path, configPath: FileManager.default.fileExists(atPath: config) ? config : nil)
    }

    /// Encodes text to ids. With `addSpecialTokens`, the post-processor adds its tokens (BOS, EOS...)
    /// as HF `encode(text)` does. Special tokens written in the text are always recognised.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        encode(text, addSpecialTokens: addSpecialTokens, parseSpecialTokens: true)
    }

    /// Encodes text to ids; with `parseSpecialTokens: false`, special added tokens in the text are
    /// tokenized as plain text (HF `encode_special_tokens`, llama.cpp `parse_special = false`).
    public func encode(_ text: String, addSpecialTokens: Bool, parseSpecialTokens: Bool) -> [Int] {
        encode32(text, addSpecialTokens: addSpecialTokens, parseSpecial: parseSpecialTokens).map { Int($0) }
    }

    func encode32(_ text: String, addSpecialTokens: Bool, parseSpecial: Bool) -> [Int32] {
        var pieces: [Piece] = []
        for p in added.split(text, atStart: true, normalizedPass: false, parseSpecial: parseSpecial) {
            if p.tokenId != nil { pieces.append(p); continue }
            let normalizedText = normalizer?.apply(p.text) ?? p.text
            if normalizedText.isEmpty { continue }
            pieces.append(contentsOf: added.split(normalizedText, atStart: p.atStart, normalizedPass: true,
                                                  parseSpecial: parseSpecial))
        }
        if let pre = preTokenizer { pieces = pre.apply(pieces) }
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        for p in pieces {
            if let id = p.tokenId { ids.append(id) } else { model.tokenize(p.text, into: &ids) }
        }
        if addSpecialTokens { ids = postProcessor.apply(ids) }
        return ids
    }

    /// Encodes many texts, spreading them over all cores. The result keeps the input order.
    public func encodeBatch(_ texts: [String], addSpecialTokens: Bool = true) -> [[Int]] {
        var results = [[Int]](repeating: [], count: texts.count)
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, texts.count))
        if workers <= 1 {
            return texts.map { encode($0, addSpecialTokens: addSpecialTokens) }
        }
        results.withUnsafeMutableBufferPointer { out in
            let outPtr = UnsafeSendablePointer(out)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var i = w
                while i < texts.count {
                    outPtr.buffer[i] = self.encode(texts[i], addSpecialTokens: addSpecialTokens)
                    i += workers
                }
            }
        }
        return results
    }

    /// The token string of an id (added tokens first, then the model vocabulary).
    public func idToToken(_ id: Int) -> String? {
        guard let id32 = Int32(exactly: id) else { return nil }
        if let t = added.byId[id32] { return t.content }
        return model.idToToken(id32)
    }

    /// The id of a token string (added tokens first, then the model vocabulary).
    public func tokenToId(_ token: String) -> Int? {
        if let t = added.tokens.first(where: { sameBytes($0.content, token) }) { return t.id }
        return model.tokenToId(token).map { Int($0) }
    }

    /// Decodes ids to text like HF `decode`: unknown ids are dropped. Use `decodeChecked` to get an
    /// error for them instead.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let id32 = Int32(exactly: id) else { continue }
            guard let t = added.decodeForm[id32] ?? model.idToToken(id32) else { continue }
            if skipSpecialTokens && added.specialContents.contains(TokenKey(t)) { continue }
            tokens.append(t)
        }
        if let d = decoder { return d.decode(tokens) }
        return tokens.joined(separator: " ")
    }

    /// Decodes ids to text, throwing when an id is not in the vocabulary.
    public func decodeChecked(_ ids: [Int], skipSpecialTokens: Bool = false) throws -> String {
        for (i, id) in ids.enumerated() where idToToken(id) == nil {
            throw TokenizerError(.decode, "token id \(id) at position \(i) is out of range (vocabulary size \(vocabSize))")
        }
        return decode(ids, skipSpecialTokens: skipSpecialTokens)
    }
}

/// A pointer that may cross into `concurrentPerform`; each worker writes disjoint indices.
struct UnsafeSendablePointer<T>: @unchecked Sendable {
    let buffer: UnsafeMutableBufferPointer<T>
    init(_ b: UnsafeMutableBufferPointer<T>) { buffer = b }
}

extension Tokenizer {
    /// Parses a JSON array of integer token ids (as read by `encore detokenize`), with errors that
    /// name the byte offset or the element index.
    public static func parseTokenIds(json bytes: [UInt8], source: String = "standard input") throws -> [Int] {
        let value = try JSONParser.parse(bytes, source: source)
        guard let items = value.array else {
            throw TokenizerError(.input, "\(source) must be a JSON array of token ids, like [15043, 3186]")
        }
        return try items.enumerated().map { i, v in
            guard let id = v.int else {
                throw TokenizerError(.input, "element \(i) of the array in \(source) is not an integer token id")
            }
            return id
        }
    }
}
