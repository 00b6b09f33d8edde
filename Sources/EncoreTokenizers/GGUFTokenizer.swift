import Foundation

/// Pre-tokenizer settings for one llama.cpp `tokenizer.ggml.pre` name.
struct GGUFPreTokenizerSpec {
    let regexes: [String]
    var ignoreMerges = false
    var addBos: Bool? = nil
}

private let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#
private let llama3Regex = #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
private let qwen2Regex = #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

/// The pre-tokenizer regexes llama.cpp applies for each `tokenizer.ggml.pre` value we support.
func ggufPreTokenizerSpec(_ name: String) -> GGUFPreTokenizerSpec? {
    switch name {
    case "default":
        return GGUFPreTokenizerSpec(regexes: [#"[\p{P}\$\+<=>\^~\|]+"#, gpt2Regex, #"\p{N}+"#, "[0-9][0-9][0-9]"])
    case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2":
        return GGUFPreTokenizerSpec(regexes: [llama3Regex], ignoreMerges: true, addBos: true)
    case "dbrx", "smaug-bpe":
        return GGUFPreTokenizerSpec(regexes: [llama3Regex])
    case "deepseek-llm":
        // Generated from llama.cpp src/llama-vocab.cpp with non-ASCII characters escaped.
        return GGUFPreTokenizerSpec(regexes: [
            "[\r\n]",
            "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
            "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            "\\p{N}+",
        ])
    case "deepseek-coder":
        return GGUFPreTokenizerSpec(regexes: [
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            "\\p{N}",
        ])
    case "falcon":
        return GGUFPreTokenizerSpec(regexes: [#"[\p{P}\$\+<=>\^~\|`]+"#, gpt2Regex, "[0-9][0-9][0-9]"])
    case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b":
        return GGUFPreTokenizerSpec(regexes: [#"\p{N}"#, gpt2Regex])
    case "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "jina-es", "jina-de", "gigachat",
         "jina-v2-es", "jina-v2-de", "roberta-bpe", "jina-v1-en", "jina-v2-code":
        return GGUFPreTokenizerSpec(regexes: [gpt2Regex])
    case "qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan", "kormo", "f2llmv2", "megrez":
        return GGUFPreTokenizerSpec(regexes: [qwen2Regex])
    case "qwen35":
        return GGUFPreTokenizerSpec(regexes: [#"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#])
    default:
        return nil
    }
}

extension Tokenizer {
    /// Loads the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    public static func loadGGUF(path: String) throws -> Tokenizer {
        try fromGGUF(try GGUFFile(path: path), source: path)
    }

    /// Builds a tokenizer from parsed GGUF metadata (`tokenizer.ggml.model` `gpt2` or `llama`).
    public static func fromGGUF(_ file: GGUFFile, source: String) throws -> Tokenizer {
        func missing(_ key: String) -> TokenizerError {
            TokenizerError(.config, "\(source): missing or mistyped GGUF metadata '\(key)'")
        }
        guard let modelName = file["tokenizer.ggml.model"]?.stringValue else { throw missing("tokenizer.ggml.model") }
        guard let tokenValues = file["tokenizer.ggml.tokens"]?.arrayValue else { throw missing("tokenizer.ggml.tokens") }
        var tokens: [String] = []
        tokens.reserveCapacity(tokenValues.count)
        for (i, v) in tokenValues.enumerated() {
            guard let s = v.stringValue else {
                throw TokenizerError(.config, "\(source): tokenizer.ggml.tokens[\(i)] is not a string")
            }
            tokens.append(s)
        }
        var types = [Int](repeating: 1, count: tokens.count)
        if let tv = file["tokenizer.ggml.token_type"]?.arrayValue {
            guard tv.count == tokens.count else {
                throw TokenizerError(.config, "\(source): tokenizer.ggml.token_type has \(tv.count) entries for \(tokens.count) tokens")
            }
            for (i, v) in tv.enumerated() { types[i] = v.intValue ?? 1 }
        }
        func optId(_ key: String) throws -> Int? {
            guard let v = file[key] else { return nil }
            guard let i = v.intValue else { throw missing(key) }
            guard i >= 0 && i < tokens.count else {
                // llama.cpp treats out-of-range special ids as absent.
                return nil
            }
            return i
        }
        var vocab: Vocab = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where vocab[TokenKey(t)] == nil { vocab[TokenKey(t)] = Int32(i) }

        // Control (3), user-defined (4) and unknown (2) tokens are matched in text, like llama.cpp.
        var added: [AddedToken] = []
        for (i, t) in tokens.enumerated() where (types[i] == 2 || types[i] == 3 || types[i] == 4) && !t.isEmpty {
            added.append(AddedToken(content: t, id: i, special: types[i] != 4))
        }
        let bos = try optId("tokenizer.ggml.bos_token_id")
        let eos = try optId("tokenizer.ggml.eos_token_id")
        let pad = try optId("tokenizer.ggml.padding_token_id")
        let template = file["tokenizer.chat_template"]?.stringValue

        switch modelName {
        case "gpt2":
            guard let mv = file["tokenizer.ggml.merges"]?.arrayValue else { throw missing("tokenizer.ggml.merges") }
            var merges: [(String, String)] = []
            merges.reserveCapacity(mv.count)
            for (i, v) in mv.enumerated() {
                guard let s = v.stringValue, let pair = splitAtFirstSpace(s) else {
                    throw TokenizerError(.config, "\(source): tokenizer.ggml.merges[\(i)] is not 'a b'")
                }
                merges.append(pair)
            }
            let preName = file["tokenizer.ggml.pre"]?.stringValue ?? "default"
            guard let spec = ggufPreTokenizerSpec(preName) else {
                throw TokenizerError(.unsupported, "\(source): unsupported pre-tokenizer '\(preName)' (tokenizer.ggml.pre)")
            }
            let model = try BPEModel(vocab: vocab, merges: merges, unkToken: nil, fuseUnk: false, byteFallback: false,
                                     ignoreMerges: spec.ignoreMerges, continuingSubwordPrefix: nil,
                                     endOfWordSuffix: nil, context: "\(source): tokenizer.ggml")
            var steps: [PreTokenizer] = []
            for r in spec.regexes {
                steps.append(.split(try TextPattern.compile(regex: r, context: "\(source): pre-tokenizer '\(preName)'"),
                                    .isolated, invert: false))
            }
            steps.append(.byteLevel(addPrefixSpace: false, useRegex: false))
            let addBos = file["tokenizer.ggml.add_bos_token"]?.boolValue ?? spec.addBos ?? false
            let addEos = file["tokenizer.ggml.add_eos_token"]?.boolValue ?? false
            let post = PostProcessor.template(prefix: addBos ? bos.map { [Int32($0)] } ?? [] : [],
                                              suffix: addEos ? eos.map { [Int32($0)] } ?? [] : [],
                                              pairMiddle: [], pairSuffix: [])
            return Tokenizer(normalizer: nil, preTokenizer: .sequence(steps), model: model, postProcessor: post,
                             decoder: .byteLevel, addedTokens: added, bos: bos, eos: eos, pad: pad,
                             chatTemplate: template)
        case "llama":
            var scores = [Float](repeating: 0, count: tokens.count)
            if let sv = file["tokenizer.ggml.scores"]?.arrayValue {
                guard sv.count == tokens.count else {
                    throw TokenizerError(.config, "\(source): tokenizer.ggml.scores has \(sv.count) entries for \(tokens.count) tokens")
                }
                for (i, v) in sv.enumerated() { scores[i] = Float(v.doubleValue ?? 0) }
            }
            let unk = try optId("tokenizer.ggml.unknown_token_id") ?? 0
            let model = SPMScoreModel(tokens: tokens, vocab: vocab, scores: scores, unkId: Int32(unk))
            let addSpacePrefix = file["tokenizer.ggml.add_space_prefix"]?.boolValue ?? true
            var norms: [Normalizer] = []
            if addSpacePrefix { norms.append(.prepend("\u{2581}")) }
            norms.append(.replace(.literal([" "]), "\u{2581}"))
            let addBos = file["tokenizer.ggml.add_bos_token"]?.boolValue ?? true
            let addEos = file["tokenizer.ggml.add_eos_token"]?.boolValue ?? false
            let post = PostProcessor.template(prefix: addBos ? bos.map { [Int32($0)] } ?? [] : [],
                                              suffix: addEos ? eos.map { [Int32($0)] } ?? [] : [],
                                              pairMiddle: [], pairSuffix: [])
            var decoders: [Decoder] = [.replace(.literal(["\u{2581}"]), " "), .byteFallback, .fuse]
            if addSpacePrefix { decoders.append(.strip(content: " ", start: 1, stop: 0)) }
            return Tokenizer(normalizer: .sequence(norms), preTokenizer: nil, model: model, postProcessor: post,
                             decoder: .sequence(decoders), addedTokens: added, bos: bos, eos: eos, pad: pad,
                             chatTemplate: template)
        case "bert":
            let unk = try optId("tokenizer.ggml.unknown_token_id") ?? 100
            let cls = try optId("tokenizer.ggml.cls_token_id") ?? (tokens.count > 101 ? 101 : nil)
            let sep = try optId("tokenizer.ggml.seperator_token_id") ?? (tokens.count > 102 ? 102 : nil)
            let lowercase = file["tokenizer.ggml.normalizer.lowercase"]?.boolValue ?? true
            let stripAccents = file["tokenizer.ggml.normalizer.strip_accents"]?.boolValue ?? lowercase
            let model = WPMModel(tokens: tokens, vocab: vocab, unkId: Int32(unk))
            let post = PostProcessor.template(prefix: cls.map { [Int32($0)] } ?? [], suffix: sep.map { [Int32($0)] } ?? [],
                                              pairMiddle: [], pairSuffix: [])
            return Tokenizer(normalizer: .bert(cleanText: true, handleChineseChars: true, stripAccents: stripAccents,
                                               lowercase: lowercase),
                             preTokenizer: .bert, model: model, postProcessor: post,
                             decoder: .sequence([.replace(.literal(["\u{2581}"]), " "), .fuse,
                                                 .strip(content: " ", start: 1, stop: 0)]),
                             addedTokens: added, bos: bos ?? cls, eos: eos ?? sep, pad: pad, chatTemplate: template)
        case "gemma4":
            // llama.cpp: SPM-style BPE on raw UTF-8: spaces become "▁", text is split into runs of
            // newlines and non-newlines, merges by rank, <0xXX> byte tokens for unknown characters.
            guard let mv = file["tokenizer.ggml.merges"]?.arrayValue else { throw missing("tokenizer.ggml.merges") }
            var merges: [(String, String)] = []
            merges.reserveCapacity(mv.count)
            for (i, v) in mv.enumerated() {
                // As llama.cpp: split at the first space after the first byte ("▁" runs may hold spaces
                // only in the second half).
                guard let s = v.stringValue else {
                    throw TokenizerError(.config, "\(source): tokenizer.ggml.merges[\(i)] is not a string")
                }
                let b = Array(s.utf8)
                guard b.count > 2, let sp = b[1...].firstIndex(of: 0x20) else { continue }
                merges.append((String(decoding: b[..<sp], as: UTF8.self), String(decoding: b[(sp + 1)...], as: UTF8.self)))
            }
            let model = try BPEModel(vocab: vocab, merges: merges, unkToken: nil, fuseUnk: false, byteFallback: true,
                                     ignoreMerges: false, continuingSubwordPrefix: nil, endOfWordSuffix: nil,
                                     context: "\(source): tokenizer.ggml", newlineRunsWhole: true)
            let addEos = file["tokenizer.ggml.add_eos_token"]?.boolValue ?? false
            let post = PostProcessor.template(prefix: bos.map { [Int32($0)] } ?? [],  // llama.cpp forces BOS for gemma4
                                              suffix: addEos ? eos.map { [Int32($0)] } ?? [] : [],
                                              pairMiddle: [], pairSuffix: [])
            return Tokenizer(normalizer: .replace(.literal([" "]), "\u{2581}"),
                             preTokenizer: .split(try TextPattern.compile(regex: "[^\\n]+|[\\n]+", context: source), .isolated, invert: false),
                             model: model, postProcessor: post,
                             decoder: .sequence([.replace(.literal(["\u{2581}"]), " "), .byteFallback, .fuse]),
                             addedTokens: added, bos: bos, eos: eos, pad: pad, chatTemplate: template)
        case "t5":
            // The pipeline HF builds for T5 SentencePiece models (SpmConverter), which llama.cpp's
            // UGM tokenizer emulates: Precompiled charsmap, collapse extra spaces, Metaspace, Unigram.
            guard let sv = file["tokenizer.ggml.scores"]?.arrayValue, sv.count == tokens.count else {
                throw TokenizerError(.config, "\(source): 'tokenizer.ggml.scores' must have one score per token for a t5 vocabulary")
            }
            let vocabList = zip(tokens, sv).map { ($0, $1.doubleValue ?? 0) }
            let unk = try optId("tokenizer.ggml.unknown_token_id") ?? 2
            let model = try UnigramModel(vocab: vocabList, unkId: unk, byteFallback: types.contains(6),
                                         context: "\(source): tokenizer.ggml")
            var norms: [Normalizer] = []
            if let cm = file["tokenizer.ggml.precompiled_charsmap"]?.arrayValue, !cm.isEmpty {
                let bytes = cm.map { UInt8(truncatingIfNeeded: $0.intValue ?? 0) }
                norms.append(.precompiled(try PrecompiledCharsmap(data: bytes, context: "\(source): tokenizer.ggml.precompiled_charsmap")))
            }
            if file["tokenizer.ggml.remove_extra_whitespaces"]?.boolValue ?? true {
                norms.append(.strip(left: false, right: true))
                norms.append(.replace(try TextPattern.compile(regex: " {2,}", context: source), "\u{2581}"))
            }
            let addSpacePrefix = file["tokenizer.ggml.add_space_prefix"]?.boolValue ?? true
            let addBos = file["tokenizer.ggml.add_bos_token"]?.boolValue ?? false
            let addEos = file["tokenizer.ggml.add_eos_token"]?.boolValue ?? true
            let post = PostProcessor.template(prefix: addBos ? bos.map { [Int32($0)] } ?? [] : [],
                                              suffix: addEos ? eos.map { [Int32($0)] } ?? [] : [],
                                              pairMiddle: [], pairSuffix: [])
            // HF's T5 conversion adds only the control tokens (<pad>, </s>, <extra_id_*>) as added
            // tokens; <unk> stays a plain vocabulary piece.
            let t5Added = added.filter { types[$0.id] != 2 }
            return Tokenizer(normalizer: .sequence(norms),
                             preTokenizer: .metaspace(replacement: "\u{2581}", prependScheme: addSpacePrefix ? .always : .never, split: true),
                             model: model, postProcessor: post,
                             decoder: .metaspace(replacement: "\u{2581}", prependScheme: addSpacePrefix ? .always : .never),
                             addedTokens: t5Added, bos: bos, eos: eos, pad: pad, chatTemplate: template)
        default:
            throw TokenizerError(.unsupported, "\(source): unsupported tokenizer model '\(modelName)' (tokenizer.ggml.model); supported: gpt2, llama, bert, t5, gemma4")
        }
    }
}

/// The SentencePiece BPE of llama.cpp (`llm_tokenizer_spm`): merges the adjacent pair whose merged
/// piece has the highest score, then falls back to byte tokens for pieces not in the vocabulary.
final class SPMScoreModel: TokenModel, @unchecked Sendable {
    let tokens: [String]
    let vocab: Vocab
    let scores: [Float]
    let unkId: Int32
    private let byteIds: [Int32]
    private let cache = WordCache()

    var vocabSize: Int { tokens.count }

    init(tokens: [String], vocab: Vocab, scores: [Float], unkId: Int32) {
        self.tokens = tokens
        self.vocab = vocab
        self.scores = scores
        self.unkId = unkId
        var b = [Int32](repeating: -1, count: 256)
        for i in 0..<256 { b[i] = vocab[TokenKey("<0x" + String(format: "%02X", i) + ">")] ?? -1 }
        byteIds = b
    }

    func idToToken(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < tokens.count else { return nil }
        return tokens[Int(id)]
    }

    func tokenToId(_ token: String) -> Int32? { vocab[TokenKey(token)] }

    private struct Sym { var start: Int; var n: Int; var prev: Int; var next: Int }

    func tokenize(_ word: String, into ids: inout [Int32]) {
        if word.isEmpty { return }
        if let hit = cache.get(word) { ids.append(contentsOf: hit); return }
        let bytes = Array(word.utf8)
        var syms: [Sym] = []
        var off = 0
        while off < bytes.count {
            let len = min(utf8Length(bytes[off]), bytes.count - off)
            syms.append(Sym(start: off, n: len, prev: syms.count - 1, next: off + len < bytes.count ? syms.count + 1 : -1))
            off += len
        }
        // Max-heap on (score, -left): entries are (score, left, size).
        var heap: [(Float, Int, Int)] = []
        var revMerge: [TokenKey: (Int, Int)] = [:]
        func better(_ a: (Float, Int, Int), _ b: (Float, Int, Int)) -> Bool {
            a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
        }
        func push(_ e: (Float, Int, Int)) {
            heap.append(e)
            var i = heap.count - 1
            while i > 0 {
                let p = (i - 1) / 2
                if !better(heap[i], heap[p]) { break }
                heap.swapAt(i, p); i = p
            }
        }
        func pop() -> (Float, Int, Int)? {
            guard !heap.isEmpty else { return nil }
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var m = i
                    if l < heap.count && better(heap[l], heap[m]) { m = l }
                    if r < heap.count && better(heap[r], heap[m]) { m = r }
                    if m == i { break }
                    heap.swapAt(i, m); i = m
                }
            }
            return top
        }
        func tryAdd(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let text = String(decoding: bytes[syms[left].start..<(syms[right].start + syms[right].n)], as: UTF8.self)
            guard let id = vocab[TokenKey(text)] else { return }
            push((scores[Int(id)], left, text.utf8.count))
            revMerge[TokenKey(text)] = (left, right)
        }
        for i in 1..<max(1, syms.count) { tryAdd(i - 1, i) }
        while let (_, left, size) = pop() {
            let right = syms[left].next
            guard right >= 0, syms[left].n > 0, syms[right].n > 0, syms[left].n + syms[right].n == size else { continue }
            syms[left].n += syms[right].n
            syms[right].n = 0
            syms[left].next = syms[right].next
            if syms[right].next >= 0 { syms[syms[right].next].prev = left }
            tryAdd(syms[left].prev, left)
            tryAdd(left, syms[left].next)
        }
        var out: [Int32] = []
        func resegment(_ i: Int) {
            let s = syms[i]
            let slice = bytes[s.start..<(s.start + s.n)]
            let text = String(decoding: slice, as: UTF8.self)
            if let id = vocab[TokenKey(text)] { out.append(id); return }
            if let (l, r) = revMerge[TokenKey(text)] { resegment(l); resegment(r); return }
            for b in slice {
                let id = byteIds[Int(b)]
                out.append(id >= 0 ? id : unkId)
            }
        }
        var i = syms.isEmpty ? -1 : 0
        while i >= 0 {
            if syms[i].n > 0 { resegment(i) }
            i = syms[i].next
        }
        cache.put(word, out)
        ids.append(contentsOf: out)
    }
}

/// llama.cpp's WordPiece variant for BERT GGUFs (`llm_tokenizer_wpm`): word starts carry "▁"
/// instead of continuations carrying "##"; greedy longest match, the whole word becomes unk when
/// any part fails.
final class WPMModel: TokenModel, @unchecked Sendable {
    let tokens: [String]
    let vocab: Vocab
    let unkId: Int32
    private let maxTokenBytes: Int

    var vocabSize: Int { tokens.count }

    init(tokens: [String], vocab: Vocab, unkId: Int32) {
        self.tokens = tokens
        self.vocab = vocab
        self.unkId = unkId
        maxTokenBytes = tokens.map { $0.utf8.count }.max() ?? 1
    }

    func idToToken(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < tokens.count else { return nil }
        return tokens[Int(id)]
    }

    func tokenToId(_ token: String) -> Int32? { vocab[TokenKey(token)] }

    func tokenize(_ word: String, into ids: inout [Int32]) {
        if word.isEmpty { return }
        let bytes = Array(("\u{2581}" + word).utf8)
        let n = bytes.count
        let start = ids.count
        var i = 0
        while i < n {
            var matched = false
            var j = min(n, i + maxTokenBytes + 1)
            while j > i {
                if j == n || (bytes[j] & 0xC0) != 0x80 {
                    if let id = vocab[TokenKey(String(decoding: bytes[i..<j], as: UTF8.self))] {
                        ids.append(id)
                        matched = true
                        i = j
                        break
                    }
                }
                j -= 1
            }
            if !matched {
                ids.removeSubrange(start...)
                break
            }
        }
        if ids.count == start { ids.append(unkId) }
    }
}
