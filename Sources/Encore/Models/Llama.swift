import Foundation

// The Llama family of decoder-only models (SmolLM2, Llama 2/3, TinyLlama, …) as llama.cpp stores them in GGUF:
// pre-norm RMSNorm, causal self-attention with RoPE and GQA (query head h reads KV head h ÷ (H/Hkv)), a SwiGLU
// MLP, a final RMSNorm and the head (tied to the embedding when `output.weight` is absent). No biases.
//
// Tensor names (PyTorch order, i.e. ggml `ne` reversed):
//   token_embd.weight                 [V, C]
//   blk.{i}.attn_norm.weight          [C]
//   blk.{i}.attn_q.weight             [H*D, C]     rows permuted by llama.cpp's converter (see below)
//   blk.{i}.attn_k.weight             [Hkv*D, C]   idem
//   blk.{i}.attn_v.weight             [Hkv*D, C]
//   blk.{i}.attn_output.weight        [C, H*D]
//   blk.{i}.ffn_norm.weight           [C]
//   blk.{i}.ffn_gate.weight, ffn_up   [F, C]
//   blk.{i}.ffn_down.weight           [C, F]
//   output_norm.weight                [C]
//   output.weight                     [V, C] optional: tied to token_embd
//
// RoPE: llama.cpp's Hugging Face → GGUF conversion permutes the rows of Q and K within each head so that its
// "normal" RoPE (rotating adjacent pairs 2i, 2i+1) reproduces the Hugging Face rotate-half layout. Encore
// undoes that permutation at load (row 2i+j of a head goes back to row j*D/2+i) and applies its NeoX
// (rotate-half) kernel: the attention scores are identical, since q·k is invariant under a common permutation.

/// The decoder-only families Encore reads (`model_type` in a Hugging Face config, `general.architecture` in GGUF).
public enum DecoderFamily: String, Codable, Sendable, CaseIterable {
    /// Llama 1/2/3, SmolLM2, TinyLlama, …: optional attention / MLP biases (`attention_bias`, `mlp_bias`).
    case llama
    /// Qwen2 / Qwen2.5: biases on q, k and v (not on the output projection).
    case qwen2
    /// Phi-3 / Phi-3.5: fused `qkv_proj` and `gate_up_proj`, often LongRoPE.
    case phi3
}

/// How a model scales RoPE for long contexts (`rope_scaling` / `rope_parameters` of Hugging Face configs; the
/// formulas of transformers' `modeling_rope_utils`).
public enum RoPEScaling: Equatable, Sendable {
    case none
    /// Positions divided by `factor` (inverse frequencies ÷ factor).
    case linear(factor: Double)
    /// Dynamic NTK: past `maxPositions` tokens, θ grows to θ·(factor·len/max − (factor − 1))^(D/(D−2)), for the
    /// tokens computed at that length (cached keys keep their rotation, as transformers does).
    case dynamic(factor: Double, maxPositions: Int)
    /// Llama 3.1's frequency-dependent scaling (static).
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
    /// LongRoPE (Phi-3): per-frequency factors, `short` up to `originalMaxPositions` tokens, `long` past it; cos and
    /// sin scaled by `attentionFactor`.
    case longrope(short: [Double], long: [Double], originalMaxPositions: Int, attentionFactor: Double)

    /// The name Hugging Face configs use.
    public var typeName: String {
        switch self {
        case .none: return "default"
        case .linear: return "linear"
        case .dynamic: return "dynamic"
        case .llama3: return "llama3"
        case .longrope: return "longrope"
        }
    }

    /// True when the frequencies depend on the sequence length.
    var dependsOnLength: Bool {
        switch self {
        case .dynamic, .longrope: return true
        default: return false
        }
    }
}

/// Hyper-parameters of a decoder-only model of the Llama family (Llama, SmolLM2, Qwen2, Phi-3), read from a
/// Hugging Face `config.json` (Codable) or from GGUF metadata (`<arch>.*` keys).
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var family: DecoderFamily = .llama
    public var vocabSize: Int
    public var nEmbd: Int
    public var nLayer: Int
    public var nHead: Int
    public var nKVHead: Int
    /// Width of one attention head (`head_dim`; hidden_size / heads unless the config says otherwise).
    public var headDim: Int
    public var ffnDim: Int
    public var contextLength: Int
    public var ropeTheta: Double
    public var ropeScaling: RoPEScaling = .none
    public var rmsNormEps: Double
    /// Biases on the q, k, v projections (Qwen2; Llama with `attention_bias`).
    public var qkvBias = false
    /// Bias on the attention output projection (Llama with `attention_bias`).
    public var outputBias = false
    /// Biases on gate, up and down (Llama with `mlp_bias`).
    public var mlpBias = false
    /// `tie_word_embeddings`; nil: tied exactly when the checkpoint has no head tensor.
    public var tieWordEmbeddings: Bool?
    /// Sliding-window attention span, when the config enables one (longer sequences are refused).
    public var slidingWindow: Int?
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var padTokenId: Int

    /// Hugging Face `config.json` names (`LlamaConfig`, `Qwen2Config`, `Phi3Config` of transformers).
    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case vocabSize = "vocab_size", nEmbd = "hidden_size", nLayer = "num_hidden_layers", nHead = "num_attention_heads"
        case nKVHead = "num_key_value_heads", ffnDim = "intermediate_size", contextLength = "max_position_embeddings"
        case ropeTheta = "rope_theta", rmsNormEps = "rms_norm_eps", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case padTokenId = "pad_token_id", headDim = "head_dim", ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", tieWordEmbeddings = "tie_word_embeddings"
        case originalMaxPositions = "original_max_position_embeddings", partialRotaryFactor = "partial_rotary_factor"
        case useSlidingWindow = "use_sliding_window", slidingWindow = "sliding_window", hiddenAct = "hidden_act"
    }

    /// `rope_parameters` (transformers ≥ 5) or `rope_scaling` (older configs, `type` or `rope_type`).
    private struct RoPEFields: Decodable {
        var ropeType: String?, type: String?, ropeTheta: Double?, factor: Double?
        var lowFreqFactor: Double?, highFreqFactor: Double?, originalMaxPositions: Int?
        var shortFactor: [Double]?, longFactor: [Double]?, attentionFactor: Double?, partialRotaryFactor: Double?
        enum CodingKeys: String, CodingKey {
            case ropeType = "rope_type", type, ropeTheta = "rope_theta", factor, lowFreqFactor = "low_freq_factor"
            case highFreqFactor = "high_freq_factor", originalMaxPositions = "original_max_position_embeddings"
            case shortFactor = "short_factor", longFactor = "long_factor", attentionFactor = "attention_factor"
            case partialRotaryFactor = "partial_rotary_factor"
        }
    }

    public init(family: DecoderFamily = .llama, vocabSize: Int, nEmbd: Int, nLayer: Int, nHead: Int, nKVHead: Int,
                headDim: Int? = nil, ffnDim: Int, contextLength: Int = 2048, ropeTheta: Double = 10000,
                ropeScaling: RoPEScaling = .none, rmsNormEps: Double = 1e-5, bosTokenId: Int? = nil,
                eosTokenId: Int? = nil, padTokenId: Int = 0) {
        self.family = family
        self.vocabSize = vocabSize
        self.nEmbd = nEmbd
        self.nLayer = nLayer
        self.nHead = nHead
        self.nKVHead = nKVHead
        self.headDim = headDim ?? nEmbd / max(nHead, 1)
        self.ffnDim = ffnDim
        self.contextLength = contextLength
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.rmsNormEps = rmsNormEps
        self.qkvBias = family == .qwen2
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.padTokenId = padTokenId
    }

    /// Decodes a Hugging Face `config.json` (defaults as transformers: KV heads = heads, θ = 10000).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        guard let family = DecoderFamily(rawValue: type) else {
            throw EncoreError(.unsupported, "model_type '\(type)' is not a decoder-only family Encore reads (supported: \(DecoderFamily.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        self.family = family
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        nEmbd = try c.decode(Int.self, forKey: .nEmbd)
        nLayer = try c.decode(Int.self, forKey: .nLayer)
        nHead = try c.decode(Int.self, forKey: .nHead)
        nKVHead = try c.decodeIfPresent(Int.self, forKey: .nKVHead) ?? nHead
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? Self.derivedHeadDim(nEmbd, nHead, "config")
        ffnDim = try c.decode(Int.self, forKey: .ffnDim)
        contextLength = try c.decodeIfPresent(Int.self, forKey: .contextLength) ?? 2048
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        bosTokenId = try Self.tokenId(c, .bosTokenId)
        eosTokenId = try Self.tokenId(c, .eosTokenId)
        padTokenId = try Self.tokenId(c, .padTokenId) ?? eosTokenId ?? 0
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        if let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct), act != "silu" {
            throw EncoreError(.unsupported, "config field 'hidden_act' is '\(act)'; only 'silu' (SwiGLU) is supported")
        }
        let attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        switch family {
        case .llama:
            qkvBias = attentionBias
            outputBias = attentionBias
            mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        case .qwen2:
            qkvBias = true
        case .phi3:
            break
        }
        if family == .qwen2 {
            if try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) == true {
                slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
            }
        } else {
            slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        }
        // RoPE: transformers ≥ 5 writes `rope_parameters` (θ inside); older configs `rope_theta` + `rope_scaling`.
        let fields = try c.decodeIfPresent(RoPEFields.self, forKey: .ropeParameters)
            ?? c.decodeIfPresent(RoPEFields.self, forKey: .ropeScaling)
        ropeTheta = try fields?.ropeTheta ?? c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000
        let partial = try fields?.partialRotaryFactor ?? c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor) ?? 1
        guard partial == 1 else {
            throw EncoreError(.unsupported, "config field 'partial_rotary_factor' is \(partial); only full-head RoPE (1.0) is supported")
        }
        let originalMax = try fields?.originalMaxPositions ?? c.decodeIfPresent(Int.self, forKey: .originalMaxPositions)
        ropeScaling = try Self.scaling(fields, originalMax: originalMax, contextLength: contextLength)
    }

    /// hidden / heads when the head width is not given; the heads must divide the width.
    private static func derivedHeadDim(_ nEmbd: Int, _ nHead: Int, _ path: String) throws -> Int {
        guard nHead > 0, nEmbd % nHead == 0 else {
            throw EncoreError(.invalidConfig, "\(path): n_head \(nHead) must divide n_embd \(nEmbd) (or give head_dim)")
        }
        return nEmbd / nHead
    }

    private static func tokenId(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int? {
        if let id = try? c.decodeIfPresent(Int.self, forKey: key) { return id }
        // Some configs list several EOS ids; the first is the one generation stops on by default.
        if let ids = try? c.decodeIfPresent([Int].self, forKey: key) { return ids.first }
        return try c.decodeIfPresent(Int.self, forKey: key)
    }

    private static func scaling(_ f: RoPEFields?, originalMax: Int?, contextLength: Int) throws -> RoPEScaling {
        guard let f else { return .none }
        let type = f.ropeType ?? f.type ?? "default"
        func need<T>(_ v: T?, _ name: String) throws -> T {
            guard let v else { throw EncoreError(.invalidConfig, "RoPE scaling '\(type)' needs the field '\(name)'") }
            return v
        }
        switch type {
        case "default", "none":
            return .none
        case "linear":
            return .linear(factor: try need(f.factor, "factor"))
        case "dynamic":
            return .dynamic(factor: try need(f.factor, "factor"), maxPositions: contextLength)
        case "llama3":
            return .llama3(factor: try need(f.factor, "factor"), lowFreqFactor: try need(f.lowFreqFactor, "low_freq_factor"),
                           highFreqFactor: try need(f.highFreqFactor, "high_freq_factor"),
                           originalMaxPositions: try need(f.originalMaxPositions ?? originalMax, "original_max_position_embeddings"))
        case "longrope", "su":
            let original = try need(originalMax, "original_max_position_embeddings")
            let factor = f.factor ?? Double(contextLength) / Double(original)
            let attention = f.attentionFactor ?? (factor <= 1 ? 1 : (1 + log(factor) / log(Double(original))).squareRoot())
            return .longrope(short: try need(f.shortFactor, "short_factor"), long: try need(f.longFactor, "long_factor"),
                             originalMaxPositions: original, attentionFactor: attention)
        default:
            throw EncoreError(.unsupported, "RoPE scaling type '\(type)' is not supported (supported: default, linear, dynamic, llama3, longrope)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(family.rawValue, forKey: .modelType)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(nEmbd, forKey: .nEmbd)
        try c.encode(nLayer, forKey: .nLayer)
        try c.encode(nHead, forKey: .nHead)
        try c.encode(nKVHead, forKey: .nKVHead)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(ffnDim, forKey: .ffnDim)
        try c.encode(contextLength, forKey: .contextLength)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
        try c.encode(padTokenId, forKey: .padTokenId)
        try c.encodeIfPresent(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        if family == .llama { try c.encode(qkvBias, forKey: .attentionBias); try c.encode(mlpBias, forKey: .mlpBias) }
    }

    public var attention: AttentionShape { AttentionShape(heads: nHead, kvHeads: nKVHead, headDim: headDim, interleaved: true) }

    /// Reads the config from a GGUF file's metadata (`general.architecture` llama, qwen2 or phi3); errors name the
    /// missing or invalid key.
    public init(gguf f: GGUFModelFile) throws {
        let arch = try f.string("general.architecture")
        guard let family = DecoderFamily(rawValue: arch) else {
            throw EncoreError(.unsupported, "\(f.path): general.architecture is '\(arch)'; Encore reads \(DecoderFamily.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")) GGUF models")
        }
        self.family = family
        nEmbd = try f.int("\(arch).embedding_length")
        nLayer = try f.int("\(arch).block_count")
        nHead = try f.int("\(arch).attention.head_count")
        nKVHead = f["\(arch).attention.head_count_kv"] == nil ? nHead : try f.int("\(arch).attention.head_count_kv")
        headDim = f["\(arch).attention.key_length"] == nil ? try Self.derivedHeadDim(nEmbd, nHead, f.path)
            : try f.int("\(arch).attention.key_length")
        ffnDim = try f.int("\(arch).feed_forward_length")
        contextLength = try f.int("\(arch).context_length")
        ropeTheta = f["\(arch).rope.freq_base"] == nil ? 10000 : try f.double("\(arch).rope.freq_base")
        rmsNormEps = try f.double("\(arch).attention.layer_norm_rms_epsilon")
        guard let emb = f.tensors["token_embd.weight"], emb.shape.count == 2 else {
            throw EncoreError(.missingTensor, "\(f.path): missing tensor 'token_embd.weight' (2-D [vocab, n_embd])")
        }
        vocabSize = emb.shape[0]
        bosTokenId = f["tokenizer.ggml.bos_token_id"]?.intValue
        eosTokenId = f["tokenizer.ggml.eos_token_id"]?.intValue
        padTokenId = f["tokenizer.ggml.padding_token_id"]?.intValue ?? eosTokenId ?? 0
        tieWordEmbeddings = f.tensors["output.weight"] == nil
        qkvBias = f.tensors["blk.0.attn_q.bias"] != nil
        outputBias = f.tensors["blk.0.attn_output.bias"] != nil
        mlpBias = f.tensors["blk.0.ffn_down.bias"] != nil
        if let rd = f["\(arch).rope.dimension_count"] {
            guard rd.intValue == headDim else {
                throw EncoreError(.unsupported, "\(f.path): \(arch).rope.dimension_count is \(rd), but only full-head RoPE (\(headDim)) is supported")
            }
        }
        let scalingType = f["\(arch).rope.scaling.type"]?.stringValue ?? "none"
        switch scalingType {
        case "none":
            ropeScaling = .none
        case "linear":
            ropeScaling = .linear(factor: try f.double("\(arch).rope.scaling.factor"))
        default:
            throw EncoreError(.unsupported, "\(f.path): \(arch).rope.scaling.type '\(scalingType)' is not supported (supported: none, linear; LongRoPE and Llama 3 factors come as tensors)")
        }
        // llama.cpp stores LongRoPE (Phi-3) and Llama 3.1 factors as tensors; the model reads them at load.
        if let sw = f["\(arch).attention.sliding_window"]?.intValue, sw > 0 { slidingWindow = sw }
        try validate(path: f.path)
    }

    /// Throws when the sizes cannot describe a model (error names the field).
    public func validate(path: String = "config") throws {
        func check(_ ok: Bool, _ what: String) throws {
            if !ok { throw EncoreError(.invalidConfig, "\(path): \(what)") }
        }
        try check(vocabSize > 0, "vocab_size \(vocabSize) must be positive")
        try check(nEmbd > 0 && nLayer > 0 && ffnDim > 0 && contextLength > 0, "n_embd, n_layer, ffn_dim and context_length must be positive")
        try check(nHead > 0, "num_attention_heads \(nHead) must be positive")
        try check(headDim > 0 && headDim % 2 == 0 && headDim <= 1024, "head_dim \(headDim) must be even and at most 1024")
        try check(nKVHead > 0 && nHead % nKVHead == 0, "n_kv_head \(nKVHead) must divide n_head \(nHead)")
        try check(ropeTheta > 0, "rope_theta \(ropeTheta) must be positive")
        try check(rmsNormEps > 0 && rmsNormEps < 1, "rms_norm_eps \(rmsNormEps) must be in (0, 1)")
        switch ropeScaling {
        case .none: break
        case .linear(let f), .dynamic(let f, _): try check(f > 0, "RoPE scaling factor \(f) must be positive")
        case .llama3(let f, let lo, let hi, let orig):
            try check(f > 0 && lo > 0 && hi > lo && orig > 0, "llama3 RoPE scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0")
        case .longrope(let s, let l, let orig, let a):
            try check(s.count == headDim / 2 && l.count == headDim / 2, "longrope short_factor and long_factor need head_dim/2 = \(headDim / 2) values each (have \(s.count), \(l.count))")
            try check(orig > 0 && a > 0, "longrope original_max_position_embeddings and attention_factor must be positive")
        }
        for (name, id) in [("bos_token_id", bosTokenId), ("eos_token_id", eosTokenId), ("pad_token_id", padTokenId)] {
            if let id { try check(id >= 0 && id < vocabSize, "\(name) \(id) is outside the vocabulary (0..<\(vocabSize))") }
        }
    }

    /// Plain RoPE inverse frequencies θ^(−2j/D), j < D/2.
    var inverseFrequencies: [Float] { Self.frequencies(theta: ropeTheta, dim: headDim) }

    static func frequencies(theta: Double, dim: Int) -> [Float] {
        (0..<(dim / 2)).map { j in Float(1 / pow(theta, Double(2 * j) / Double(dim))) }
    }

    /// RoPE inverse frequencies and the cos/sin scale for a forward pass whose largest position is `seqLen − 1`
    /// (transformers' rule for the length-dependent types). `factors` are llama.cpp's `rope_freqs` divisors.
    func rope(seqLen: Int, factors: [Float]? = nil) -> (invFreq: [Float], scale: Float) {
        var base = inverseFrequencies
        if let factors { base = zip(base, factors).map { $0 / $1 } }
        switch ropeScaling {
        case .none:
            return (base, 1)
        case .linear(let factor):
            return (base.map { $0 / Float(factor) }, 1)
        case .dynamic(let factor, let maxPositions):
            guard seqLen > maxPositions else { return (base, 1) }
            let d = Double(headDim)
            let theta = ropeTheta * pow(factor * Double(seqLen) / Double(maxPositions) - (factor - 1), d / (d - 2))
            return (Self.frequencies(theta: theta, dim: headDim), 1)
        case .llama3(let factor, let low, let high, let original):
            let lowWavelen = Double(original) / low, highWavelen = Double(original) / high
            let f = base.map { inv -> Float in
                let wavelen = 2 * Double.pi / Double(inv)
                if wavelen < highWavelen { return inv }
                if wavelen > lowWavelen { return inv / Float(factor) }
                let smooth = (Double(original) / wavelen - low) / (high - low)
                return Float((1 - smooth) * Double(inv) / factor + smooth * Double(inv))
            }
            return (f, 1)
        case .longrope(let short, let long, let original, let attention):
            let ext = seqLen > original ? long : short
            let f = (0..<(headDim / 2)).map { j in
                Float(1 / (ext[j] * pow(ropeTheta, Double(2 * j) / Double(headDim))))
            }
            return (f, Float(attention))
        }
    }
}

/// Where a Llama checkpoint comes from: llama.cpp's GGUF names (for the `llama` architecture Q/K rows are
/// permuted for adjacent-pair RoPE) or Hugging Face's safetensors names (rotate-half layout as is).
enum LlamaNaming {
    case gguf, huggingFace

    var embedding: String { self == .gguf ? "token_embd.weight" : "model.embed_tokens.weight" }
    var outputNorm: String { self == .gguf ? "output_norm.weight" : "model.norm.weight" }
    var head: String { self == .gguf ? "output.weight" : "lm_head.weight" }

    /// Tensor-name prefixes (without `.weight` / `.bias`) of block i.
    func block(_ i: Int) -> (attnNorm: String, q: String, k: String, v: String, qkv: String, o: String,
                             ffnNorm: String, gate: String, up: String, gateUp: String, down: String) {
        switch self {
        case .gguf:
            let p = "blk.\(i)."
            return (p + "attn_norm", p + "attn_q", p + "attn_k", p + "attn_v", p + "attn_qkv", p + "attn_output",
                    p + "ffn_norm", p + "ffn_gate", p + "ffn_up", p + "ffn_up", p + "ffn_down")
        case .huggingFace:
            let p = "model.layers.\(i)."
            return (p + "input_layernorm", p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj",
                    p + "self_attn.qkv_proj", p + "self_attn.o_proj", p + "post_attention_layernorm",
                    p + "mlp.gate_proj", p + "mlp.up_proj", p + "mlp.gate_up_proj", p + "mlp.down_proj")
        }
    }
}

/// One transformer block of a Llama-family model. Phi-3 keeps its fused projections fused (one matrix product
/// for q, k and v, one for gate and up); the outputs are split.
struct LlamaBlock {
    enum Projection {
        case separate(q: Linear, k: Linear, v: Linear)
        case fused(Linear)          // [H*D + 2*Hkv*D, C]
    }
    enum FeedForward {
        case separate(gate: Linear, up: Linear)
        case fused(Linear)          // [2F, C], gate rows first
    }
    var attnNorm: Tensor, ffnNorm: Tensor
    var qkv: Projection { didSet { refreshCalls() } }
    var o: Linear
    var gateUp: FeedForward { didSet { refreshCalls() } }
    var down: Linear
    /// q/k/v and gate/up as one decode kernel call each (separate matrices of one layout), made again whenever
    /// `qkv` or `gateUp` changes.
    private(set) var qkvCall: SharedDecodeCall?, gateUpCall: SharedDecodeCall?

    init(_ l: WeightLoader, _ i: Int, _ c: LlamaConfig, naming: LlamaNaming) throws {
        let n = naming.block(i)
        let s = c.attention, C = c.nEmbd
        let permuted = naming == .gguf && c.family == .llama
        func linear(_ name: String, out: Int, in inputs: Int, bias: Bool, ropeHeads: Int? = nil) throws -> Linear {
            // fp32, or packed when the loader keeps the checkpoint's blocks (GGUF keepQuantized, encore quantize)
            let order = permuted ? ropeHeads.map { Self.ropeRowOrder(rows: out, heads: $0) } : nil
            var lin = try l.linear(name + ".weight", shape: [out, inputs], rowOrder: order)
            var b = bias ? try l.tensor(name + ".bias", shape: [out]) : nil
            if permuted, let heads = ropeHeads {
                b = b.map { Self.unpermuteRoPE($0.reshaped([out, 1]), heads: heads).reshaped([out]) }
            }
            lin.bias = b
            return lin
        }
        attnNorm = try l.tensor(n.attnNorm + ".weight", shape: [C])
        if c.family == .phi3 {
            qkv = .fused(try linear(n.qkv, out: s.qWidth + 2 * s.kvWidth, in: C, bias: c.qkvBias))
            gateUp = .fused(try linear(n.gateUp, out: 2 * c.ffnDim, in: C, bias: c.mlpBias))
        } else {
            qkv = .separate(q: try linear(n.q, out: s.qWidth, in: C, bias: c.qkvBias, ropeHeads: s.heads),
                            k: try linear(n.k, out: s.kvWidth, in: C, bias: c.qkvBias, ropeHeads: s.kvHeads),
                            v: try linear(n.v, out: s.kvWidth, in: C, bias: c.qkvBias))
            gateUp = .separate(gate: try linear(n.gate, out: c.ffnDim, in: C, bias: c.mlpBias),
                               up: try linear(n.up, out: c.ffnDim, in: C, bias: c.mlpBias))
        }
        o = try linear(n.o, out: C, in: s.qWidth, bias: c.outputBias)
        ffnNorm = try l.tensor(n.ffnNorm + ".weight", shape: [C])
        down = try linear(n.down, out: C, in: c.ffnDim, bias: c.mlpBias)
        refreshCalls()
    }

    /// Makes ``qkvCall`` and ``gateUpCall`` from the matrices as they are now.
    private mutating func refreshCalls() {
        if case .separate(let q, let k, let v) = qkv { qkvCall = SharedDecodeCall([q, k, v]) } else { qkvCall = nil }
        if case .separate(let g, let u) = gateUp { gateUpCall = SharedDecodeCall([g, u]) } else { gateUpCall = nil }
    }

    /// q [N, H*D], k and v [N, Hkv*D] of h [N, C].
    func project(_ h: Tensor, _ s: AttentionShape) -> (q: Tensor, k: Tensor, v: Tensor) {
        if let qkvCall, qkvCall.serves(h) {
            let r = qkvCall(h)                                           // one decode kernel call, nothing retained
            return (r[0], r[1], r[2])
        }
        switch qkv {
        case .separate(let q, let k, let v):
            let r = Linear.shared(h, [q, k, v])                          // one decode kernel call for the three
            return (r[0], r[1], r[2])
        case .fused(let w):
            let parts = Ops.splitColumns(w(h), widths: [s.qWidth, s.kvWidth, s.kvWidth])
            return (parts[0], parts[1], parts[2])
        }
    }

    /// SwiGLU activations [N, F] of m [N, C].
    func feedForward(_ m: Tensor, hidden: Int) -> Tensor {
        if let gateUpCall, gateUpCall.serves(m) {
            let r = gateUpCall(m)
            Ops.swiGLUInPlace(gate: r[0], up: r[1])
            return r[0]
        }
        switch gateUp {
        case .separate(let gate, let up):
            let r = Linear.shared(m, [gate, up])                         // one decode kernel call for both
            Ops.swiGLUInPlace(gate: r[0], up: r[1])                      // fresh outputs: written over the gate's
            return r[0]
        case .fused(let w):
            let parts = Ops.splitColumns(w(m), widths: [hidden, hidden])
            Ops.swiGLUInPlace(gate: parts[0], up: parts[1])
            return parts[0]
        }
    }

    var linears: [Linear] {
        var all: [Linear] = [o, down]
        switch qkv {
        case .separate(let q, let k, let v): all += [q, k, v]
        case .fused(let w): all.append(w)
        }
        switch gateUp {
        case .separate(let g, let u): all += [g, u]
        case .fused(let w): all.append(w)
        }
        return all
    }

    /// Undoes llama.cpp's Q/K row permutation: within each head of D rows, stored row 2i+j (j ∈ {0, 1}) is
    /// rotate-half row j·D/2 + i. w: [heads*D, C] → new [heads*D, C].
    static func unpermuteRoPE(_ w: Tensor, heads: Int) -> Tensor {
        let rows = w.shape[0], cols = w.shape[1], d = rows / heads, half = d / 2
        let out = Tensor(uninitialized: w.shape)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    (out.data + (h * d + j * half + i) * cols).update(from: w.data + (h * d + 2 * i + j) * cols, count: cols)
                }
            }
        }
        return out
    }
}

/// A decoder-only model of the Llama family — Llama, SmolLM2, Qwen2 (q/k/v biases), Phi-3 (fused projections,
/// LongRoPE) — loaded from a GGUF file (weights dequantized to fp32) or from a Hugging Face folder
/// (`config.json` with `model_type` llama, qwen2 or phi3 + `model.safetensors`).
///
/// ```swift
/// let model = try LlamaModel(path: "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
/// let out = try Generator(model: model).generate(prompt: [1, 9690, 198], parameters: .init(maxTokens: 20))
/// ```
/// Batches are left-padded; each row's positions start at 0 at its first real token and the padding slots
/// are masked, so a row gives the same result alone or in a batch.
public final class LlamaModel: CausalDecoder {
    public let config: LlamaConfig
    /// The storage of the self-attention KV caches the model builds afterwards (generation, scoring; ``KVRowFormat``):
    /// fp32 (the default), f16 (llama.cpp's default cache type: half the cache memory and half the bytes a decode step
    /// reads over the cached positions; logits move by about 1e-3 of their largest value; `ek_attention_f16kv`) or int8
    /// (about a quarter, with a scale per position and block of 32 values; `ek_attention_i8kv`). Scores and outputs stay fp32; a cache that
    /// receives a value its storage cannot hold (beyond f16's range; not finite) goes back to fp32. ``halfKVCache``:
    /// whether it is f16.
    public var kvRows: KVRowFormat = .f32
    /// Token embedding [V, C] in fp32; nil when it is kept in its GGUF blocks (``embeddingBlocks``).
    private(set) var embedding: Tensor?
    /// The GGUF embedding blocks kept quantized (`keepQuantized`), or the decode-format table after
    /// `usePromptWeights(.int8 / .decode)`: lookups dequantize only the rows they need.
    private(set) var embeddingBlocks: QuantizedMatrix?
    /// Output head [V, C] in fp32; nil when only ``headDecode`` holds it (kept GGUF blocks; a tied head then
    /// is the same blocks as the embedding).
    private(set) var head: Tensor?
    /// Whether the head is the token embedding.
    let tiedHead: Bool
    private(set) var blocks: [LlamaBlock]
    /// Decode-format copy of the head (``useDecodeWeights(_:)``, or the GGUF blocks kept quantized).
    private(set) var headDecode: QuantizedMatrix?
    let outputNorm: Tensor  // [C]
    /// llama.cpp's `rope_freqs` divisors (Llama 3.1 GGUF), applied to the inverse frequencies.
    let ropeFactors: [Float]?
    /// RoPE for the length-independent types, computed once.
    let staticRoPE: (invFreq: [Float], scale: Float)

    public var modelType: String { config.family.rawValue }
    public var vocabSize: Int { config.vocabSize }
    public var bosTokenId: Int? { config.bosTokenId }
    public var eosTokenId: Int? { config.eosTokenId }
    public var padTokenId: Int { config.padTokenId }
    public var isEncoderDecoder: Bool { false }
    var layerCount: Int { blocks.count }
    var kvWidth: Int { config.attention.kvWidth }
    var kvHeadDim: Int { config.attention.headDim }
    var attentionSpan: Int? { config.slidingWindow }
    public var parameterCount: Int {
        let vectors = 2 * config.nEmbd * blocks.count + config.nEmbd
        let matrices = blocks.reduce(0) { $0 + $1.linears.reduce(0) { $0 + $1.outputs * $1.inputs + ($1.bias?.count ?? 0) } }
        return config.vocabSize * config.nEmbd * (tiedHead ? 1 : 2) + matrices + vectors
    }

    /// Loads a `.gguf` file (architecture llama, qwen2 or phi3).
    /// `keepQuantized`: Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K matrices and the embedding stay in their blocks (copied out of the mapping, Q8_0/Q4_0/Q4_1 regrouped by 8, Q5_0/Q5_1 their own way where the AVX-512 kernel runs; decode
    /// streams them, prompt passes dequantize per call) instead of being widened to fp32.
    public convenience init(path: String, keepQuantized: Bool = false) throws {
        let file = try GGUFModelFile(path: path)
        let loader = WeightLoader(source: .gguf(file))
        loader.keepQuantized = keepQuantized
        try self.init(config: LlamaConfig(gguf: file), loader: loader, naming: .gguf)
        keptQuantized = keepQuantized
    }

    /// Loaded from a GGUF file with `keepQuantized`: prompt weights other than `.f32` then leave the embedding table
    /// as the file stores it (llama.cpp's own table), an unquantized one included.
    public private(set) var keptQuantized = false

    /// Loads Hugging Face weights (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, …;
    /// `lm_head.weight` optional: tied).
    public convenience init(config: LlamaConfig, file: SafeTensorsFile) throws {
        try config.validate(path: file.path)
        try self.init(config: config, loader: WeightLoader(file: file), naming: .huggingFace)
    }

    init(config c: LlamaConfig, loader l: WeightLoader, naming: LlamaNaming) throws {
        let table = [c.vocabSize, c.nEmbd]
        // kept GGUF blocks (Q8_0/Q4_x/Q5_x/K-quants with keepQuantized): no fp32 copy of the table or of the head
        embeddingBlocks = try l.packedMatrix(naming.embedding, shape: table)
        embedding = embeddingBlocks == nil ? try l.tensor(naming.embedding, shape: table) : nil
        if c.tieWordEmbeddings == true {
            tiedHead = true
            if l.has(naming.head) { _ = try l.optional(naming.head, shape: table) }     // a redundant copy may be saved
        } else {
            tiedHead = c.tieWordEmbeddings == nil && !l.has(naming.head)
        }
        if tiedHead {
            head = embedding
            headDecode = embeddingBlocks
        } else {
            headDecode = try l.packedMatrix(naming.head, shape: table)
            head = headDecode == nil ? try l.tensor(naming.head, shape: table) : nil
        }
        blocks = try (0..<c.nLayer).map { try LlamaBlock(l, $0, c, naming: naming) }
        outputNorm = try l.tensor(naming.outputNorm, shape: [c.nEmbd])
        var config = c
        var factors: [Float]? = nil
        if naming == .gguf {
            // llama.cpp keeps Llama 3.1's scaling as `rope_freqs` and Phi-3's LongRoPE as two factor tensors.
            let half = c.headDim / 2
            factors = try l.optional("rope_freqs.weight", shape: [half]).map { Array(UnsafeBufferPointer(start: $0.data, count: half)) }
            if let long = try l.optional("rope_factors_long.weight", shape: [half]) {
                let short = try l.tensor("rope_factors_short.weight", shape: [half])
                guard case .gguf(let file) = l.source else { preconditionFailure("GGUF naming without a GGUF file") }
                let key = "\(c.family.rawValue).rope.scaling.original_context_length"
                let original = file[key] == nil ? c.contextLength : try file.int(key)
                let factor = Double(c.contextLength) / Double(original)
                let attnKey = "\(c.family.rawValue).rope.scaling.attn_factor"
                let attention = file[attnKey] != nil ? try file.double(attnKey)
                    : (factor <= 1 ? 1 : (1 + log(factor) / log(Double(original))).squareRoot())
                func values(_ t: Tensor) -> [Double] { (0..<half).map { Double(t.data[$0]) } }
                config.ropeScaling = .longrope(short: values(short), long: values(long), originalMaxPositions: original,
                                               attentionFactor: attention)
            }
        }
        self.config = config
        ropeFactors = factors
        staticRoPE = config.rope(seqLen: 0, factors: factors)
        try l.checkAllUsed()
    }

    /// Runs `n` new tokens per row (ids [B*n]) through the model, extending the cache; returns the logits of
    /// `outputs` (of the new tokens). Left padding (slots before a row's offset) is masked unless `keyKeep` [B*n]
    /// gives the mask.
    func forward(_ cache: CausalDecoderCache, ids newIds: [Int], n newCount: Int, outputs: CausalOutputs, keyKeep: [UInt8]?) -> Tensor {
        let B = cache.offsets.count, shape = config.attention
        var ids = newIds, n = newCount
        if case .longrope(_, _, let original, _) = config.ropeScaling {
            for b in 0..<B { cache.history[b] += newIds[(b * newCount)..<((b + 1) * newCount)] }
            // Crossing the original context switches every position to the long factors: like transformers'
            // Phi-3, recompute the cached prefix once with them.
            if cache.length > 0 && cache.length <= original && cache.length + newCount > original {
                for c in cache.caches { c.reset() }
                ids = cache.history.flatMap { $0 }
                n = cache.history[0].count
            }
        }
        precondition(keyKeep == nil || (n == newCount && keyKeep!.count == B * n), "keyKeep with a recomputed prefix")
        let eps = Float(config.rmsNormEps)
        let start = cache.length
        let positionsInt = (0..<(B * n)).map { start + $0 % n - cache.offsets[$0 / n] }
        let positions = positionsInt.map(Float.init)
        let newKeep = keyKeep ?? positionsInt.map { $0 < 0 ? UInt8(0) : 1 }      // left padding is masked
        // Length-dependent RoPE (dynamic NTK, LongRoPE) follows the largest position of this pass, as
        // transformers does; cached keys keep the rotation they were computed with.
        let rope = config.ropeScaling.dependsOnLength
            ? config.rope(seqLen: (positionsInt.max() ?? 0) + 1, factors: ropeFactors) : staticRoPE
        let ropeTable = Ops.RoPETable(positions: positions, invFreq: rope.invFreq)   // every layer's angles
        StepProfile.begin(prompt: n > 1)
        defer { StepProfile.end() }
        var x = Ops.embeddingRows(embedding, blocks: embeddingBlocks, ids: ids)   // [B*n, C]
        StepProfile.lap(.embed)
        // by address: a LlamaBlock copy per layer would retain and release its ~50 references, cold after the weights
        // streamed past (3 µs a layer on Zen 3)
        blocks.withUnsafeBufferPointer { blocks in
        for layer in blocks.indices {
            do {   // h, q, k, v and o end here, before the MLP's buffers: a prompt pass holds one [B*n, C] fewer
                let kv = cache.caches[layer]
                let h = Ops.rmsNorm(x, weight: blocks[layer].attnNorm, eps: eps)      // [B*n, C]
                StepProfile.lap(.norm)
                let (q, k, v) = blocks[layer].project(h, shape)                        // [B*n, H*D], [B*n, Hkv*D] ×2
                StepProfile.lap(.qkvGEMV)
                Ops.ropeInPlace(q, heads: shape.heads, headDim: shape.headDim, table: ropeTable)
                Ops.ropeInPlace(k, heads: shape.kvHeads, headDim: shape.headDim, table: ropeTable)
                if rope.scale != 1 { Ops.scaleInPlace(q, rope.scale); Ops.scaleInPlace(k, rope.scale) }
                kv.append(k: k, v: v, keep: newKeep, n: n)
                StepProfile.lap(.ropeCache)
                // [B*n, H*D], over h's buffer where the widths match (h is not read again): one buffer fewer
                let o = h.count == B * n * shape.qWidth && h.offset == 0
                    ? Tensor(shape: [B * n, shape.qWidth], storage: h.storage) : Tensor(uninitialized: [B * n, shape.qWidth])
                withExtendedLifetime(q) { for b in 0..<B {
                    kv.attend(q: q.data + b * n * shape.qWidth, tq: n, batch: b, out: o.data + b * n * shape.qWidth,
                              shape: shape.withBF16Products(blocks[layer].o.promptRunsNarrow), causalOffset: start,
                              scratch: &cache.scratch)
                } }
                StepProfile.lap(.selfAttention)
                blocks[layer].o.accumulate(into: x, o)                                 // x += o·Wᵀ (+ b), in the GEMM
                StepProfile.lap(.selfOutGEMV)
            }
            let m = Ops.rmsNorm(x, weight: blocks[layer].ffnNorm, eps: eps)
            StepProfile.lap(.norm)
            let f = blocks[layer].feedForward(m, hidden: config.ffnDim)            // [B*n, F]
            StepProfile.lap(.mlpUpGEMV)
            blocks[layer].down.accumulate(into: x, f)                              // x += ffn, in the GEMM
            StepProfile.lap(.mlpDownGEMV)
        }
        }
        switch outputs {
        case .all: break
        case .last: if n > 1 { x = Ops.lastRows(x, batch: B, n: n) }              // [B, C]
        case .rows(let r): x = Ops.rowRange(x, batch: B, n: n, (n - newCount + r.lowerBound)..<(n - newCount + r.upperBound))   // [B*r.count, C]
        }
        let hn = Ops.rmsNorm(x, weight: outputNorm, eps: eps)
        // the blocks for decode steps, and for every pass when no fp32 head is kept (8 rows per pass over them)
        if let headDecode, hn.shape[0] <= 8 || head == nil {
            let logits = Ops.linearQuantized(hn, weight: headDecode, bias: nil)
            StepProfile.lap(.head)
            return logits
        }
        let logits = Ops.linear(hn, weight: head!, bias: nil)   // [*, V]
        StepProfile.lap(.head)
        return logits
    }

    /// Logits [B, T, V] for a right-padded batch read from position 0 (padding only follows real tokens, so
    /// causality keeps it from affecting them).
    public func logits(_ rows: [[Int]]) throws -> Tensor { try causalLogits(rows) }

    public func beginGeneration(prompts: [[Int]]) throws -> GenerationState { try beginCausalGeneration(prompts: prompts) }

    public func score(input: [Int], target: [Int]) throws -> [Float] {
        try causalScore(input: input, target: target, bos: config.bosTokenId)
    }
}

// MARK: decode weight formats

extension LlamaBlock {
    /// llama.cpp's Q/K row permutation as a row order: row j·D/2 + i of a head is stored row 2i + j.
    static func ropeRowOrder(rows: Int, heads: Int) -> [Int] {
        let d = rows / heads, half = d / 2
        var order = [Int](repeating: 0, count: rows)
        for h in 0..<heads { for i in 0..<half { for j in 0..<2 { order[h * d + j * half + i] = h * d + 2 * i + j } } }
        return order
    }

    /// Applies `f` to every matrix in place.
    mutating func updateLinears(_ f: (inout Linear) -> Void) {
        switch qkv {
        case .separate(var q, var k, var v):
            f(&q); f(&k); f(&v)
            qkv = .separate(q: q, k: k, v: v)
        case .fused(var w):
            f(&w)
            qkv = .fused(w)
        }
        switch gateUp {
        case .separate(var g, var u):
            f(&g); f(&u)
            gateUp = .separate(gate: g, up: u)
        case .fused(var w):
            f(&w)
            gateUp = .fused(w)
        }
        f(&o)
        f(&down)
    }

    mutating func useDecodeWeights(_ format: WeightFormat) { updateLinears { $0.useDecodeWeights(format) } }
}

extension LlamaModel {
    /// Streams every matrix and the head in `format` during decode steps (prompt passes keep fp32 GEMM).
    public func useDecodeWeights(_ format: WeightFormat) {
        for i in blocks.indices { blocks[i].useDecodeWeights(format) }
        guard let head else {        // only the kept blocks hold the head: re-quantize from them, never drop them
            if format != .f32, let blocks = headDecode, blocks.format != format { headDecode = QuantizedMatrix(blocks.dequantized(), format: format) }
            return
        }
        headDecode = format == .f32 ? nil : QuantizedMatrix(head, format: format)
    }

    /// What prompt passes (prefill, scoring) multiply with (``PromptWeights``: fp32 copies, int8 rows, or the
    /// decode format). Matrices kept in GGUF blocks get int8 rows made from them for `.int8`.
    /// With a decode format, `.int8`, `.decode` and `.blocks` also release the fp32 embedding table and head: lookups
    /// read the decode-format table (the head's blocks when tied) and every pass's logits use the head's blocks, as
    /// with GGUF blocks kept quantized (`.f32` does not bring those two back). A GGUF loaded with `keepQuantized`
    /// keeps its table as the file stores it (``keptQuantized``).
    public func usePromptWeights(_ weights: PromptWeights) throws {
        defer { if weights != .f32 { BufferPool.shared.drain() } }   // the released fp32 copies back to the system
        for i in blocks.indices { blocks[i].updateLinears { $0.usePromptWeights(weights) } }
        guard weights != .f32, let headDecode else { return }
        // a kept GGUF's table stays as the file stores it (an fp32 one beside an untied Q4_x / Q5_x / K-quant head
        // would otherwise be rounded to the head's format, and K-quants have no quantizer)
        if let embedding, !keptQuantized, tiedHead || headDecode.format.isQuantizationTarget {
            embeddingBlocks = tiedHead ? headDecode : QuantizedMatrix(embedding, format: headDecode.format)
            embedding.storage.releaseMappedPages()
            self.embedding = nil
        }
        if let head, !tiedHead { head.storage.releaseMappedPages() }
        head = nil
    }

    /// Bytes one decode step streams: every matrix and the head.
    public var decodeWeightBytes: Int {
        blocks.reduce(headDecode?.byteCount ?? config.vocabSize * config.nEmbd * 4) { n, b in n + b.linears.reduce(0) { $0 + $1.decodeBytes } }
    }
}
