import Foundation

func readFile(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw TokenizerError(.io, "cannot read file \(path)")
    }
    return [UInt8](data)
}

extension Tokenizer {
    /// Loads a `tokenizer.json` file, with an optional `tokenizer_config.json` for BOS/EOS/pad ids and
    /// the chat template.
    public static func loadJSON(path: String, configPath: String? = nil) throws -> Tokenizer {
        let bytes = try readFile(path)
        let configBytes = try configPath.map { try readFile($0) }
        return try fromJSON(bytes, source: path, config: configBytes, configSource: configPath ?? "")
    }

    /// Builds a tokenizer from the bytes of a `tokenizer.json` (and optionally `tokenizer_config.json`).
    /// `source` names the file in error messages.
    public static func fromJSON(_ bytes: [UInt8], source: String = "tokenizer.json",
                                config: [UInt8]? = nil, configSource: String = "tokenizer_config.json") throws -> Tokenizer {
        let root = JSONField(try JSONParser.parse(bytes, source: source), path: "", file: source)
        guard root.value.object != nil else { throw TokenizerError(.config, "\(source): the top level must be a JSON object") }
        let normalizer = try root.optional("normalizer").map { try parseNormalizer($0) }
        let pre = try root.optional("pre_tokenizer").map { try parsePreTokenizer($0) }
        let model = try parseModel(try root.required("model"))
        let post = try root.optional("post_processor").map { try parsePostProcessor($0) } ?? PostProcessor.none
        let decoder = try root.optional("decoder").map { try parseDecoder($0) }
        var added: [AddedToken] = []
        if let list = root.optional("added_tokens") {
            for f in try list.array() {
                added.append(AddedToken(
                    content: try f.required("content").string(), id: Int(try f.required("id").id32()),
                    special: try f.bool("special", default: false), lstrip: try f.bool("lstrip", default: false),
                    rstrip: try f.bool("rstrip", default: false), singleWord: try f.bool("single_word", default: false),
                    normalized: try f.bool("normalized", default: false)))
            }
        }
        var bos: Int?, eos: Int?, pad: Int?
        var template: String?
        func lookup(_ name: String) -> Int? {
            if let t = added.first(where: { sameBytes($0.content, name) }) { return t.id }
            return model.tokenToId(name).map { Int($0) }
        }
        if let config {
            let c = JSONField(try JSONParser.parse(config, source: configSource), path: "", file: configSource)
            func tokenName(_ key: String) throws -> String? {
                guard let f = c.optional(key) else { return nil }
                if let s = f.value.string { return s }
                if f.value.object != nil { return try f.required("content").string() }
                throw f.fail("must be a string or an object with 'content'")
            }
            if let n = try tokenName("bos_token") { bos = lookup(n) }
            if let n = try tokenName("eos_token") { eos = lookup(n) }
            if let n = try tokenName("pad_token") { pad = lookup(n) }
            if let t = c.optional("chat_template") {
                if let s = t.value.string {
                    template = s
                } else {
                    for entry in try t.array() where try entry.optString("name") == "default" {
                        template = try entry.required("template").string()
                    }
                }
            }
        }
        if bos == nil { bos = ["<s>", "<|begin_of_text|>", "<bos>", "[CLS]", "<|startoftext|>"].lazy.compactMap(lookup).first }
        if eos == nil { eos = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[SEP]", "<|im_end|>"].lazy.compactMap(lookup).first }
        if pad == nil { pad = ["<pad>", "[PAD]", "<|pad|>"].lazy.compactMap(lookup).first }
        return Tokenizer(normalizer: normalizer, preTokenizer: pre, model: model, postProcessor: post,
                         decoder: decoder, addedTokens: added, bos: bos, eos: eos, pad: pad, chatTemplate: template)
    }
}

private func typeName(_ f: JSONField) throws -> String {
    try f.required("type").string()
}

private func unknownType(_ f: JSONField, _ type: String, _ kind: String) -> TokenizerError {
    TokenizerError(.unsupported, "\(f.file): unsupported \(kind) type '\(type)' at '\(f.path)'")
}

private func singleScalar(_ f: JSONField) throws -> Unicode.Scalar {
    let s = try f.string()
    var it = s.unicodeScalars.makeIterator()
    guard let c = it.next(), it.next() == nil else { throw f.fail("must be exactly one character") }
    return c
}

private func parsePattern(_ f: JSONField) throws -> TextPattern {
    if let s = f.optional("String") { return .literal(Array(try s.string().unicodeScalars)) }
    if let r = f.optional("Regex") { return try TextPattern.compile(regex: try r.string(), context: "\(f.file): '\(r.path)'") }
    throw f.fail("must be {\"String\": ...} or {\"Regex\": ...}")
}

private func parseBehavior(_ f: JSONField?) throws -> SplitBehavior? {
    guard let f else { return nil }
    let s = try f.string()
    guard let b = SplitBehavior(rawValue: s) else {
        throw TokenizerError(.unsupported, "\(f.file): unsupported split behavior '\(s)' at '\(f.path)'")
    }
    return b
}

private func parsePrependScheme(_ f: JSONField) throws -> PrependScheme {
    if let s = try f.optString("prepend_scheme") {
        guard let p = PrependScheme(rawValue: s) else {
            throw TokenizerError(.unsupported, "\(f.file): unsupported prepend_scheme '\(s)' at '\(f.path)'")
        }
        return p
    }
    return try f.bool("add_prefix_space", default: true) ? .always : .never
}

func parseNormalizer(_ f: JSONField) throws -> Normalizer {
    let type = try typeName(f)
    switch type {
    case "NFC": return .nfc
    case "NFD": return .nfd
    case "NFKC": return .nfkc
    case "NFKD": return .nfkd
    case "Lowercase": return .lowercase
    case "StripAccents": return .stripAccents
    case "Strip": return .strip(left: try f.bool("strip_left", default: true), right: try f.bool("strip_right", default: true))
    case "Replace": return .replace(try parsePattern(try f.required("pattern")), try f.required("content").string())
    case "Prepend": return .prepend(try f.required("prepend").string())
    case "ByteLevel": return .byteLevel
    case "BertNormalizer":
        return .bert(cleanText: try f.bool("clean_text", default: true),
                     handleChineseChars: try f.bool("handle_chinese_chars", default: true),
                     stripAccents: try f.optBool("strip_accents"), lowercase: try f.bool("lowercase", default: true))
    case "Precompiled":
        guard let cm = f.optional("precompiled_charsmap") else { return .sequence([]) }
        let b64 = try cm.string()
        if b64.isEmpty { return .sequence([]) }
        guard let data = Data(base64Encoded: b64) else { throw cm.fail("is not valid base64") }
        return .precompiled(try PrecompiledCharsmap(data: [UInt8](data), context: "\(f.file): '\(cm.path)'"))
    case "Sequence":
        return .sequence(try f.required("normalizers").array().map(parseNormalizer))
    default:
        throw unknownType(f, type, "normalizer")
    }
}

func parsePreTokenizer(_ f: JSONField) throws -> PreTokenizer {
    let type = try typeName(f)
    switch type {
    case "ByteLevel":
        return .byteLevel(addPrefixSpace: try f.bool("add_prefix_space", default: true),
                          useRegex: try f.bool("use_regex", default: true))
    case "Metaspace":
        return .metaspace(replacement: try singleScalar(try f.required("replacement")),
                          prependScheme: try parsePrependScheme(f), split: try f.bool("split", default: true))
    case "Split":
        return .split(try parsePattern(try f.required("pattern")),
                      try parseBehavior(try f.required("behavior")) ?? .removed,
                      invert: try f.bool("invert", default: false))
    case "Whitespace": return .whitespace
    case "WhitespaceSplit": return .whitespaceSplit
    case "BertPreTokenizer": return .bert
    case "Digits": return .digits(individual: try f.bool("individual_digits", default: false))
    case "Punctuation": return .punctuation(try parseBehavior(f.optional("behavior")) ?? .isolated)
    case "CharDelimiterSplit": return .charDelimiter(try singleScalar(try f.required("delimiter")))
    case "Sequence":
        return .sequence(try f.required("pretokenizers").array().map(parsePreTokenizer))
    default:
        throw unknownType(f, type, "pre_tokenizer")
    }
}

func parseDecoder(_ f: JSONField) throws -> Decoder {
    let type = try typeName(f)
    switch type {
    case "ByteLevel": return .byteLevel
    case "Metaspace":
        return .metaspace(replacement: try singleScalar(try f.required("replacement")),
                          prependScheme: try parsePrependScheme(f))
    case "ByteFallback": return .byteFallback
    case "Fuse": return .fuse
    case "Strip":
        return .strip(content: try singleScalar(try f.required("content")),
                      start: try f.optInt("start") ?? 0, stop: try f.optInt("stop") ?? 0)
    case "Replace": return .replace(try parsePattern(try f.required("pattern")), try f.required("content").string())
    case "WordPiece":
        return .wordPiece(prefix: try f.optString("prefix") ?? "##", cleanup: try f.bool("cleanup", default: true))
    case "BPEDecoder": return .bpe(suffix: try f.optString("suffix") ?? "</w>")
    case "CTC":
        return .ctc(pad: try f.optString("pad_token") ?? "<pad>", delimiter: try f.optString("word_delimiter_token") ?? "|",
                    cleanup: try f.bool("cleanup", default: true))
    case "Sequence":
        return .sequence(try f.required("decoders").array().map(parseDecoder))
    default:
        throw unknownType(f, type, "decoder")
    }
}

func parsePostProcessor(_ f: JSONField) throws -> PostProcessor {
    let type = try typeName(f)
    func pairToken(_ key: String) throws -> Int32 {
        let arr = try f.required(key).array()
        guard arr.count == 2 else { throw f.fail("'\(key)' must be [token, id]") }
        return try arr[1].id32()
    }
    switch type {
    case "ByteLevel": return .none
    case "BertProcessing", "RobertaProcessing":
        let cls = try pairToken("cls"), sep = try pairToken("sep")
        let pairMiddle: [Int32] = type == "BertProcessing" ? [] : [sep]
        return .template(prefix: [cls], suffix: [sep], pairMiddle: pairMiddle, pairSuffix: [sep])
    case "TemplateProcessing":
        var specials: [String: [Int32]] = [:]
        if let st = f.optional("special_tokens") {
            for (name, v) in try st.pairs() {
                let entry = JSONField(v, path: "\(st.path).\(name)", file: f.file)
                specials[name] = try entry.required("ids").array().map { try $0.id32() }
            }
        }
        let single = try f.required("single").array()
        var prefix: [Int32] = [], suffix: [Int32] = []
        var seenSequence = false
        for item in single {
            if let s = item.optional("SpecialToken") {
                let name = try s.required("id").string()
                guard let ids = specials[name] else {
                    throw s.fail("names special token '\(name)', which is missing from special_tokens")
                }
                if seenSequence { suffix += ids } else { prefix += ids }
            } else if item.optional("Sequence") != nil {
                seenSequence = true
            } else {
                throw item.fail("must hold 'SpecialToken' or 'Sequence'")
            }
        }
        return .template(prefix: prefix, suffix: suffix, pairMiddle: [], pairSuffix: [])
    case "Sequence":
        return .sequence(try f.required("processors").array().map(parsePostProcessor))
    default:
        throw unknownType(f, type, "post_processor")
    }
}

func parseModel(_ f: JSONField) throws -> TokenModel {
    var type = try f.optString("type")
    if type == nil {
        if f.optional("merges") != nil { type = "BPE" }
        else if f.optional("vocab")?.value.array != nil { type = "Unigram" }
        else if f.optional("max_input_chars_per_word") != nil { type = "WordPiece" }
        else { type = "WordLevel" }
    }
    let context = "\(f.file): '\(f.path)'"
    func dictVocab() throws -> Vocab {
        let v = try f.required("vocab")
        var out: Vocab = [:]
        let obj = try v.pairs()
        out.reserveCapacity(obj.count)
        for (k, val) in obj {
            guard let id = val.int, id >= 0, id <= Int(Int32.max) else {
                throw TokenizerError(.config, "\(f.file): field '\(v.path).\(k)' must be a non-negative integer id")
            }
            out[TokenKey(k)] = Int32(id)
        }
        return out
    }
    switch type! {
    case "BPE":
        let vocab = try dictVocab()
        let mf = try f.required("merges")
        var merges: [(String, String)] = []
        for m in try mf.array() {
            if let s = m.value.string {
                guard let pair = splitAtFirstSpace(s) else { throw m.fail("must be two tokens separated by a space") }
                merges.append(pair)
            } else if let a = m.value.array, a.count == 2, let x = a[0].string, let y = a[1].string {
                merges.append((x, y))
            } else {
                throw m.fail("must be \"a b\" or [\"a\", \"b\"]")
            }
        }
        if let d = f.optional("dropout")?.value.number, d > 0 {
            throw TokenizerError(.unsupported, "\(context): BPE dropout \(d) is not supported (only deterministic encoding)")
        }
        return try BPEModel(vocab: vocab, merges: merges, unkToken: try f.optString("unk_token"),
                            fuseUnk: try f.bool("fuse_unk", default: false),
                            byteFallback: try f.bool("byte_fallback", default: false),
                            ignoreMerges: try f.bool("ignore_merges", default: false),
                            continuingSubwordPrefix: try f.optString("continuing_subword_prefix"),
                            endOfWordSuffix: try f.optString("end_of_word_suffix"), context: context)
    case "Unigram":
        var vocab: [(String, Double)] = []
        for e in try f.required("vocab").array() {
            let pair = try e.array()
            guard pair.count == 2 else { throw e.fail("must be [piece, score]") }
            vocab.append((try pair[0].string(), try pair[1].double()))
        }
        return try UnigramModel(vocab: vocab, unkId: try f.optInt("unk_id"),
                                byteFallback: try f.bool("byte_fallback", default: false), context: context)
    case "WordPiece":
        return try WordPieceModel(vocab: try dictVocab(), unkToken: try f.optString("unk_token") ?? "[UNK]",
                                  prefix: try f.optString("continuing_subword_prefix") ?? "##",
                                  maxChars: try f.optInt("max_input_chars_per_word") ?? 100, context: context)
    case "WordLevel":
        return try WordLevelModel(vocab: try dictVocab(), unkToken: try f.optString("unk_token"), context: context)
    default:
        throw unknownType(f, type!, "model")
    }
}
