import Foundation

// T5 and Flan-T5 (`T5ForConditionalGeneration` folders of Hugging Face transformers), as `modeling_t5.py` computes them:
//   encoder block: x += SelfAttn(LN(x)) [bidirectional, + relative position bias]; x += FF(LN(x))
//   decoder block: x += SelfAttn(LN(x)) [causal, + relative position bias]; x += CrossAttn(LN(x), enc_out) [no bias];
//                  x += FF(LN(x))
//   enc_out = LN(encoder(shared[ids])); logits = head(LN(decoder(shared[ids]))), the decoder output scaled by
//   d_model^-0.5 first when the head is tied (v1.0).
// LN is T5's layer norm: RMS without the mean, no bias. Attention scores are not scaled by 1/sqrt(d_kv); the
// position bias is looked up by relative-position bucket in a [buckets, H] table that only layer 0 of each
// stack has and every layer of that stack shares. FF: v1.0 "relu" (wi → ReLU → wo); v1.1 / Flan "gated-gelu"
// (GELU-tanh(wi_0 x) ⊙ wi_1 x → wo). No biases anywhere. Masks: encoder keys whose token is the pad id;
// the decoder is causal only (its start token is the pad id, so decoder pads are never masked).
// Generation: the encoder runs once, every decoder layer's cross-attention K/V are projected once per request,
// and the decoder keeps a self-attention KV cache.
//
// Tensor names (transformers), C = d_model, A = num_heads·d_kv, F = d_ff, V = vocab_size:
//   shared.weight                                                        [V, C]
//   encoder.block.{i}.layer.0.SelfAttention.{q,k,v}.weight               [A, C]
//   encoder.block.{i}.layer.0.SelfAttention.o.weight                     [C, A]
//   encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, H]   block 0 only
//   encoder.block.{i}.layer.0.layer_norm.weight                          [C]
//   encoder.block.{i}.layer.1.DenseReluDense.wi.weight                   [F, C]   relu
//   encoder.block.{i}.layer.1.DenseReluDense.wi_0/wi_1.weight            [F, C]   gated-gelu
//   encoder.block.{i}.layer.1.DenseReluDense.wo.weight                   [C, F]
//   encoder.block.{i}.layer.1.layer_norm.weight                          [C]
//   encoder.final_layer_norm.weight                                      [C]
//   decoder.block.{i}.layer.0.SelfAttention.*, layer.0.layer_norm        (as the encoder; bias table in block 0)
//   decoder.block.{i}.layer.1.EncDecAttention.{q,k,v,o}.weight, layer.1.layer_norm.weight
//   decoder.block.{i}.layer.2.DenseReluDense.*, layer.2.layer_norm.weight
//   decoder.final_layer_norm.weight                                      [C]
//   lm_head.weight                                                       [V, C]   optional: tied to shared
// GGUF (llama.cpp's convert_hf_to_gguf.py, general.architecture "t5"): the same tensors under llama.cpp's names
// (``T5Model/ggufName(_:)``): shared → token_embd, lm_head → output, encoder.block.N.layer.0.SelfAttention.{q,k,v,o}
// → enc.blk.N.attn_{q,k,v,o}, …relative_attention_bias → enc.blk.0.attn_rel_b, layer.0.layer_norm → attn_norm,
// DenseReluDense.wi / wi_0 / wi_1 / wo → ffn_up / ffn_gate / ffn_up / ffn_down, layer.1.layer_norm → ffn_norm,
// decoder.block.N.layer.1.EncDecAttention.* → dec.blk.N.cross_attn_*, layer.1.layer_norm → cross_attn_norm,
// layer.2.* → ffn_*, final_layer_norm → {enc,dec}.output_norm. The config comes from `t5.*` metadata
// (``T5Config/init(gguf:)``).
// Also accepted: encoder.embed_tokens.weight / decoder.embed_tokens.weight (older checkpoints' copies of
// shared.weight; they must equal it) and decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight
// (unused by transformers too).

/// The `config.json` of a Hugging Face T5 / Flan-T5 checkpoint (`T5Config` of transformers). Missing optional
/// fields take transformers' defaults.
///
/// ```json
/// {"model_type": "t5", "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8,
///  "num_decoder_layers": 8, "num_heads": 6, "relative_attention_num_buckets": 32,
///  "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu",
///  "tie_word_embeddings": false, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
/// ```
public struct T5Config: Codable, Equatable, Sendable {
    /// `feed_forward_proj` values Encore implements.
    public static let supportedFeedForward = ["relu", "gated-gelu"]

    public var vocabSize: Int
    public var dModel: Int
    /// Width of one attention head (independent of `d_model`: A = num_heads · d_kv).
    public var dKV: Int
    public var dFF: Int
    /// Encoder layers.
    public var numLayers: Int
    /// Decoder layers (default: `num_layers`).
    public var numDecoderLayers: Int
    public var numHeads: Int
    public var relativeAttentionNumBuckets: Int = 32
    public var relativeAttentionMaxDistance: Int = 128
    public var layerNormEpsilon: Double = 1e-6
    /// "relu" (T5 v1.0) or "gated-gelu" (v1.1, Flan-T5).
    public var feedForwardProj: String = "relu"
    public var padTokenId: Int = 0
    /// EOS (a list in the config uses its first id).
    public var eosTokenId: Int? = 1
    /// The decoder's first token (T5: the pad id).
    public var decoderStartTokenId: Int
    /// True (v1.0): no `lm_head.weight` needed, and the decoder output is scaled by d_model^-0.5.
    public var tieWordEmbeddings: Bool = true
    /// Written by transformers 5 (which always ties the head and keeps the scaling choice here); overrides
    /// `tie_word_embeddings` for the scaling when present.
    public var scaleDecoderOutputs: Bool?

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", dModel = "d_model", dKV = "d_kv", dFF = "d_ff", numLayers = "num_layers"
        case numDecoderLayers = "num_decoder_layers", numHeads = "num_heads"
        case relativeAttentionNumBuckets = "relative_attention_num_buckets"
        case relativeAttentionMaxDistance = "relative_attention_max_distance"
        case layerNormEpsilon = "layer_norm_epsilon", feedForwardProj = "feed_forward_proj"
        case padTokenId = "pad_token_id", eosTokenId = "eos_token_id", decoderStartTokenId = "decoder_start_token_id"
        case tieWordEmbeddings = "tie_word_embeddings", scaleDecoderOutputs = "scale_decoder_outputs"
    }

    public init(vocabSize: Int, dModel: Int, dKV: Int, dFF: Int, numLayers: Int, numDecoderLayers: Int? = nil, numHeads: Int,
                relativeAttentionNumBuckets: Int = 32, relativeAttentionMaxDistance: Int = 128, layerNormEpsilon: Double = 1e-6,
                feedForwardProj: String = "relu", padTokenId: Int = 0, eosTokenId: Int? = 1, decoderStartTokenId: Int? = nil,
                tieWordEmbeddings: Bool = true, scaleDecoderOutputs: Bool? = nil) {
        self.vocabSize = vocabSize
        self.dModel = dModel
        self.dKV = dKV
        self.dFF = dFF
        self.numLayers = numLayers
        self.numDecoderLayers = numDecoderLayers ?? numLayers
        self.numHeads = numHeads
        self.relativeAttentionNumBuckets = relativeAttentionNumBuckets
        self.relativeAttentionMaxDistance = relativeAttentionMaxDistance
        self.layerNormEpsilon = layerNormEpsilon
        self.feedForwardProj = feedForwardProj
        self.padTokenId = padTokenId
        self.eosTokenId = eosTokenId
        self.decoderStartTokenId = decoderStartTokenId ?? padTokenId
        self.tieWordEmbeddings = tieWordEmbeddings
        self.scaleDecoderOutputs = scaleDecoderOutputs
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        dModel = try c.decode(Int.self, forKey: .dModel)
        dKV = try c.decode(Int.self, forKey: .dKV)
        dFF = try c.decode(Int.self, forKey: .dFF)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numDecoderLayers = try c.decodeIfPresent(Int.self, forKey: .numDecoderLayers) ?? numLayers
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        relativeAttentionNumBuckets = try c.decodeIfPresent(Int.self, forKey: .relativeAttentionNumBuckets) ?? 32
        relativeAttentionMaxDistance = try c.decodeIfPresent(Int.self, forKey: .relativeAttentionMaxDistance) ?? 128
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-6
        feedForwardProj = try c.decodeIfPresent(String.self, forKey: .feedForwardProj) ?? "relu"
        padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId) ?? 0
        if let list = try? c.decodeIfPresent([Int].self, forKey: .eosTokenId) {
            eosTokenId = list.first
        } else {
            eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        }
        decoderStartTokenId = try c.decodeIfPresent(Int.self, forKey: .decoderStartTokenId) ?? padTokenId
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        scaleDecoderOutputs = try c.decodeIfPresent(Bool.self, forKey: .scaleDecoderOutputs)
    }

    /// The config of a llama.cpp T5 GGUF (`general.architecture` "t5"), from the keys `convert_hf_to_gguf.py` writes:
    /// `t5.embedding_length`, `t5.feed_forward_length`, `t5.block_count`, `t5.decoder_block_count` (default: block
    /// count), `t5.attention.head_count`, `t5.attention.key_length`, `t5.attention.relative_buckets_count`,
    /// `t5.attention.layer_norm_rms_epsilon`, `t5.decoder_start_token_id` (default: the pad id), and
    /// `tokenizer.ggml.padding_token_id` / `eos_token_id` (defaults 0 / 1). As llama.cpp reads these files: the
    /// vocabulary is the rows of `token_embd.weight`, the feed-forward is gated-gelu when `enc.blk.0.ffn_gate.weight`
    /// exists (relu otherwise), `relative_attention_max_distance` is 128 (no key; llama.cpp hard-codes it), the head is
    /// tied when `output.weight` is absent, and the decoder output is never scaled by d_model^-0.5 (llama.cpp's T5
    /// graph has no such step; a v1.0 checkpoint's GGUF therefore gives its logits × sqrt(d_model), same argmax).
    public init(gguf f: GGUFModelFile) throws {
        let arch = try f.string("general.architecture")
        guard arch == "t5" else { throw EncoreError(.unsupported, "\(f.path): general.architecture is '\(arch)', expected 't5'") }
        guard let embd = f.tensors["token_embd.weight"] else {
            throw EncoreError(.missingTensor, "\(f.path): missing tensor 'token_embd.weight' (its rows give the vocabulary size)")
        }
        guard embd.shape.count == 2 else { throw EncoreError(.shapeMismatch, "\(f.path): tensor 'token_embd.weight' has shape \(embd.shape), expected [vocab, d_model]") }
        let layers = try f.int("t5.block_count")
        let heads = try f.int("t5.attention.head_count"), dKV = try f.int("t5.attention.key_length")
        if f["t5.attention.value_length"] != nil, try f.int("t5.attention.value_length") != dKV {
            throw EncoreError(.unsupported, "\(f.path): 't5.attention.value_length' \(try f.int("t5.attention.value_length")) differs from 't5.attention.key_length' \(dKV)")
        }
        let pad = f["tokenizer.ggml.padding_token_id"] == nil ? 0 : try f.int("tokenizer.ggml.padding_token_id")
        self.init(vocabSize: embd.shape[0], dModel: try f.int("t5.embedding_length"), dKV: dKV, dFF: try f.int("t5.feed_forward_length"),
                  numLayers: layers, numDecoderLayers: f["t5.decoder_block_count"] == nil ? layers : try f.int("t5.decoder_block_count"),
                  numHeads: heads, relativeAttentionNumBuckets: try f.int("t5.attention.relative_buckets_count"),
                  relativeAttentionMaxDistance: 128, layerNormEpsilon: try f.double("t5.attention.layer_norm_rms_epsilon"),
                  feedForwardProj: f.tensors["enc.blk.0.ffn_gate.weight"] == nil ? "relu" : "gated-gelu", padTokenId: pad,
                  eosTokenId: f["tokenizer.ggml.eos_token_id"] == nil ? 1 : try f.int("tokenizer.ggml.eos_token_id"),
                  decoderStartTokenId: f["t5.decoder_start_token_id"] == nil ? pad : try f.int("t5.decoder_start_token_id"),
                  tieWordEmbeddings: f.tensors["output.weight"] == nil, scaleDecoderOutputs: false)
        try validate(path: f.path)
    }

    /// Decodes and validates a `config.json` (errors name the file and the field).
    public static func decode(_ data: Data, path: String) throws -> T5Config {
        let c = try ConfigFile.decode(T5Config.self, from: data, path: path)
        try c.validate(path: path)
        return c
    }

    /// Whether the decoder output is multiplied by d_model^-0.5 before the head.
    public var scalesDecoderOutput: Bool { scaleDecoderOutputs ?? tieWordEmbeddings }
    var isGated: Bool { feedForwardProj == "gated-gelu" }
    var attention: AttentionShape { AttentionShape(heads: numHeads, kvHeads: numHeads, headDim: dKV, interleaved: false) }

    /// Throws if the numbers cannot describe a working model, naming the field.
    public func validate(path: String = "config") throws {
        func fail(_ m: String, _ kind: EncoreError.Kind = .invalidConfig) -> EncoreError { EncoreError(kind, "\(path): \(m)") }
        guard Self.supportedFeedForward.contains(feedForwardProj) else {
            throw fail("'feed_forward_proj' is '\(feedForwardProj)', which is not supported (supported: \(Self.supportedFeedForward.joined(separator: ", ")))", .unsupported)
        }
        for (name, v) in [("vocab_size", vocabSize), ("d_model", dModel), ("d_kv", dKV), ("d_ff", dFF), ("num_heads", numHeads),
                          ("num_layers", numLayers), ("num_decoder_layers", numDecoderLayers)] where v <= 0 || v > 1 << 24 {
            throw fail("'\(name)' must be a positive integer (at most 2^24), got \(v)")
        }
        guard relativeAttentionNumBuckets >= 4, relativeAttentionNumBuckets <= 1 << 16 else {
            throw fail("'relative_attention_num_buckets' must be between 4 and 65536, got \(relativeAttentionNumBuckets)")
        }
        guard relativeAttentionMaxDistance > relativeAttentionNumBuckets / 2 else {
            throw fail("'relative_attention_max_distance' (\(relativeAttentionMaxDistance)) must exceed half of 'relative_attention_num_buckets' (\(relativeAttentionNumBuckets))")
        }
        guard layerNormEpsilon > 0, layerNormEpsilon < 1 else { throw fail("'layer_norm_epsilon' must be in (0, 1), got \(layerNormEpsilon)") }
        for (name, id) in [("pad_token_id", padTokenId), ("decoder_start_token_id", decoderStartTokenId)] where !(0..<vocabSize).contains(id) {
            throw fail("'\(name)' \(id) is outside the vocabulary (0..<\(vocabSize))")
        }
        if let e = eosTokenId, e < 0 { throw fail("'eos_token_id' must not be negative") }
    }
}

/// T5's relative position buckets and the [buckets, H] bias table of one stack (`relative_attention_bias`).
struct T5RelativeBias {
    let weight: Tensor          // [buckets, H]
    let bidirectional: Bool
    let numBuckets: Int
    let maxDistance: Int

    /// transformers' `_relative_position_bucket`, in fp32 like torch: `relative` is key position − query position.
    /// Bidirectional: half the buckets for keys after the query. In each half, distances below half the half are
    /// exact, longer ones share log-spaced buckets up to `maxDistance`, and everything further the last one.
    static func bucket(_ relative: Int, bidirectional: Bool, numBuckets: Int, maxDistance: Int) -> Int {
        var buckets = numBuckets, result = 0, distance: Int
        if bidirectional {
            buckets /= 2
            if relative > 0 { result += buckets }
            distance = abs(relative)
        } else {
            distance = max(-relative, 0)
        }
        let maxExact = buckets / 2
        if distance < maxExact { return result + distance }
        let logRatio = logf(Float(distance) / Float(maxExact)) / Float(log(Double(maxDistance) / Double(maxExact)))
        return result + min(maxExact + Int(logRatio * Float(buckets - maxExact)), buckets - 1)
    }

    /// The bias of every (query, key) pair of a block of `tq` queries at positions `queryStart`… against keys
    /// 0..<tk, laid out as `Ops.relativeBiasAttention` wants: [H, tq + tk − 1], entry (tq − 1) + s − t for query
    /// t and key s (relative position s − (queryStart + t)).
    func table(tq: Int, tk: Int, queryStart: Int) -> [Float] {
        let heads = weight.shape[1], width = tq + tk - 1
        var out = [Float](repeating: 0, count: heads * width)
        for i in 0..<width {
            let b = Self.bucket(i - (tq - 1) - queryStart, bidirectional: bidirectional, numBuckets: numBuckets, maxDistance: maxDistance)
            for h in 0..<heads { out[h * width + i] = weight.data[b * heads + h] }
        }
        return out
    }
}

/// `SelfAttention` / `EncDecAttention`: q, k, v, o without biases.
struct T5Attention {
    var q: Linear { didSet { qkvCall = SharedDecodeCall([q, k, v]) } }
    var k: Linear { didSet { qkvCall = SharedDecodeCall([q, k, v]) } }
    var v: Linear { didSet { qkvCall = SharedDecodeCall([q, k, v]) } }
    var o: Linear
    /// q/k/v as one decode kernel call (``SharedDecodeCall``; self-attention), made again whenever one of them changes.
    private(set) var qkvCall: SharedDecodeCall?
    init(_ l: WeightLoader, _ p: String, _ c: T5Config) throws {
        let inner = c.numHeads * c.dKV
        q = try Linear(l, p + ".q", in: c.dModel, out: inner, bias: false)
        k = try Linear(l, p + ".k", in: c.dModel, out: inner, bias: false)
        v = try Linear(l, p + ".v", in: c.dModel, out: inner, bias: false)
        o = try Linear(l, p + ".o", in: inner, out: c.dModel, bias: false)
        qkvCall = SharedDecodeCall([q, k, v])
    }

    /// q, k and v of h [N, C] ([N, A] each): one decode kernel call where ``qkvCall`` serves (N ≤ 8, one layout), else
    /// one call each.
    func projectQKV(_ h: Tensor) -> (q: Tensor, k: Tensor, v: Tensor) {
        if let qkvCall, qkvCall.serves(h) {
            let r = qkvCall(h)
            return (r[0], r[1], r[2])
        }
        return (q(h), k(h), v(h))
    }

    /// Streams q and o (and k, v when `includingKV`) in `format` during decode steps.
    mutating func useDecodeWeights(_ format: WeightFormat, includingKV: Bool = true, keepFP32: Bool = true) {
        q.useDecodeWeights(format, keepFP32: keepFP32)
        o.useDecodeWeights(format, keepFP32: keepFP32)
        if includingKV { k.useDecodeWeights(format, keepFP32: keepFP32); v.useDecodeWeights(format, keepFP32: keepFP32) }
    }

    var linears: [Linear] { [q, k, v, o] }
    /// Applies `f` to q, k, v and o in place.
    mutating func updateLinears(_ f: (inout Linear) -> Void) { f(&q); f(&k); f(&v); f(&o) }
}

/// T5LayerNorm: w · x / sqrt(mean(x²) + eps), no mean subtraction, no bias (`<prefix>.layer_norm.weight`).
struct T5LayerNorm {
    var weight: Tensor
    var eps: Float
    init(_ l: WeightLoader, _ p: String, _ c: T5Config) throws {
        weight = try l.tensor(p + ".weight", shape: [c.dModel])
        eps = Float(c.layerNormEpsilon)
    }
    func callAsFunction(_ x: Tensor) -> Tensor { Ops.rmsNorm(x, weight: weight, eps: eps) }
}

/// `DenseReluDense`: relu → wi, wo; gated-gelu → wi_0, wi_1, wo.
struct T5FeedForward {
    var wi: Linear?, wi0: Linear?, wi1: Linear?, wo: Linear
    /// "relu" (wi) or "gated-gelu" (wi0, wi1) from matrices in hand.
    init(wi: Linear? = nil, wi0: Linear? = nil, wi1: Linear? = nil, wo: Linear) {
        precondition((wi != nil) != (wi0 != nil && wi1 != nil) && (wi0 == nil) == (wi1 == nil),
                     "T5FeedForward: wi alone (relu) or wi0 and wi1 (gated-gelu)")
        self.wi = wi; self.wi0 = wi0; self.wi1 = wi1; self.wo = wo
    }
    init(_ l: WeightLoader, _ p: String, _ c: T5Config) throws {
        if c.isGated {
            wi0 = try Linear(l, p + ".wi_0", in: c.dModel, out: c.dFF, bias: false)
            wi1 = try Linear(l, p + ".wi_1", in: c.dModel, out: c.dFF, bias: false)
        } else {
            wi = try Linear(l, p + ".wi", in: c.dModel, out: c.dFF, bias: false)
        }
        wo = try Linear(l, p + ".wo", in: c.dFF, out: c.dModel, bias: false)
    }
    func callAsFunction(_ x: Tensor) -> Tensor {                         // x [R, C]
        if let wi, let a = wi.bf16Rows(x, relu: true, feeding: wo) { return wo(a) }   // bf16 prompt passes
        return wo(hidden(x))                                             // [R, C]
    }

    /// r += self(x) (the residual stream), accumulated by the last GEMM.
    func accumulate(into r: Tensor, _ x: Tensor) {
        if let wi, let a = wi.bf16Rows(x, relu: true, feeding: wo) {   // bf16 prompt passes: [R, F] bf16
            StepProfile.lap(.mlpUpGEMV)
            wo.accumulate(into: r, a)
            return
        }
        let h = hidden(x)
        StepProfile.lap(.mlpUpGEMV)
        wo.accumulate(into: r, h)
    }

    /// The activations wo reads: [R, F].
    private func hidden(_ x: Tensor) -> Tensor {
        if let wi0, let wi1 {
            let gate = wi0.gelu(x)                                       // [R, F] GELU-tanh ("gelu_new")
            return Ops.multiply(gate, wi1(x))
        }
        return wi!.relu(x)                                               // the GEMM's epilogue for int8 prompts
    }

    mutating func useDecodeWeights(_ format: WeightFormat, keepFP32: Bool = true) {
        updateLinears { $0.useDecodeWeights(format, keepFP32: keepFP32) }
    }

    var linears: [Linear] { [wi, wi0, wi1, wo].compactMap { $0 } }

    /// Applies `f` to every matrix in place.
    mutating func updateLinears(_ f: (inout Linear) -> Void) {
        if wi != nil { f(&wi!) }
        if wi0 != nil { f(&wi0!) }
        if wi1 != nil { f(&wi1!) }
        f(&wo)
    }
}

struct T5EncoderBlock {
    var selfAttn: T5Attention, ln0: T5LayerNorm, ff: T5FeedForward, ln1: T5LayerNorm
    init(_ l: WeightLoader, _ p: String, _ c: T5Config) throws {
        selfAttn = try T5Attention(l, p + ".layer.0.SelfAttention", c)
        ln0 = try T5LayerNorm(l, p + ".layer.0.layer_norm", c)
        ff = try T5FeedForward(l, p + ".layer.1.DenseReluDense", c)
        ln1 = try T5LayerNorm(l, p + ".layer.1.layer_norm", c)
    }
}

struct T5DecoderBlock {
    var selfAttn: T5Attention, ln0: T5LayerNorm, crossAttn: T5Attention, ln1: T5LayerNorm, ff: T5FeedForward, ln2: T5LayerNorm
    init(_ l: WeightLoader, _ p: String, _ c: T5Config) throws {
        selfAttn = try T5Attention(l, p + ".layer.0.SelfAttention", c)
        ln0 = try T5LayerNorm(l, p + ".layer.0.layer_norm", c)
        crossAttn = try T5Attention(l, p + ".layer.1.EncDecAttention", c)
        ln1 = try T5LayerNorm(l, p + ".layer.1.layer_norm", c)
        ff = try T5FeedForward(l, p + ".layer.2.DenseReluDense", c)
        ln2 = try T5LayerNorm(l, p + ".layer.2.layer_norm", c)
    }
}

/// The T5 encoder's result for a padded batch, with the cross-attention K/V of every decoder layer.
public final class T5EncoderOutput {
    public let batch: Int
    public let length: Int
    /// final_layer_norm(encoder(x)): [B, L, C].
    public let hidden: Tensor
    /// 1 where the input token is not the pad id: [B*L].
    let keep: [UInt8]
    /// Per decoder layer: K and V projected from `hidden`, [B*L, A] each, fp32, f16 or int8 (``T5Model/crossKV``).
    let cross: [CrossAttentionKV]

    init(batch: Int, length: Int, hidden: Tensor, keep: [UInt8], cross: [CrossAttentionKV]) {
        (self.batch, self.length, self.hidden, self.keep, self.cross) = (batch, length, hidden, keep, cross)
    }

    var bytes: Int { hidden.count * 4 + cross.reduce(0) { $0 + $1.bytes } + keep.count }
}

/// A T5 / Flan-T5 encoder-decoder (`T5ForConditionalGeneration`) from a Hugging Face folder.
///
/// ```swift
/// let t5 = try T5Model(folder: "Tests/EncoreTests/Fixtures/t5/v1_1")
/// let logits = try t5.teacherForcedLogits(encoderIds: [[37, 12, 1]], decoderIds: [[0, 5]])   // [1, 2, V]
/// let ids = try Generator(model: t5).generate(prompt: [37, 12, 1], parameters: .init(maxTokens: 20))
/// ```
public final class T5Model: LanguageModel {
    public let config: T5Config
    /// Token embedding [V, C] in fp32; nil when a GGUF's blocks are kept (``sharedBlocks``, looked up row by row).
    private(set) var shared: Tensor?
    private(set) var sharedBlocks: QuantizedMatrix?
    /// lm_head.weight [V, C] in fp32, or `shared` when tied; nil when only the GGUF blocks are kept (``headBlocks``).
    private(set) var lmHead: Tensor?
    private(set) var headBlocks: QuantizedMatrix?
    let tiedHead: Bool
    /// Decode-format copy of the head (``useDecodeWeights(_:encoder:keepFP32:)``, or GGUF blocks kept quantized).
    private(set) var lmHeadDecode: QuantizedMatrix?
    private(set) var encoderBlocks: [T5EncoderBlock]
    let encoderBias: T5RelativeBias
    let encoderNorm: T5LayerNorm
    private(set) var decoderBlocks: [T5DecoderBlock]
    let decoderBias: T5RelativeBias
    let decoderNorm: T5LayerNorm
    public let parameterCount: Int
    /// The storage of the cross-attention K/V of later ``encode(_:)`` calls, as ``MuModel/crossKV``: T5-347M's decode
    /// steps read 15.7 MB of them at 512 input tokens in fp32 (10 layers × 512 × 384 × 2), 7.9 in f16, 4.2 in int8 (scales included).
    /// The self-attention cache stays fp32. fp32 by default; ``LanguageModel/useKVCache(_:)`` sets f16 or fp32
    /// (`.auto`: f16 beside bf16 or quantized decode weights, the CLI's default); int8 by setting it (`--cross-kv int8`:
    /// T5 refuses `useKVCache(.int8)`, its self-attention cache being fp32).
    public var crossKV: KVRowFormat = .f32

    public var modelType: String { "t5" }
    public var vocabSize: Int { config.vocabSize }
    /// The decoder's start token (`decoder_start_token_id`).
    public var bosTokenId: Int? { config.decoderStartTokenId }
    public var eosTokenId: Int? { config.eosTokenId }
    public var padTokenId: Int { config.padTokenId }
    public var isEncoderDecoder: Bool { true }

    /// Loads `folder/config.json` (model_type "t5") + `folder/model.safetensors`.
    public convenience init(folder: String) throws {
        let (data, type, path) = try ConfigFile.read(folder: folder)
        guard type == "t5" else { throw EncoreError(.invalidConfig, "\(path): model_type is '\(type)', expected 't5'") }
        try self.init(config: T5Config.decode(data, path: path), file: SafeTensorsFile(path: folder + "/model.safetensors"))
    }

    /// Loads a llama.cpp T5 GGUF (`general.architecture` "t5"; tensors under llama.cpp's names, see the top of this
    /// file). `keepQuantized`: Q8_0/Q4_0/Q4_1 matrices stay in their blocks (decode streams them; prompt passes
    /// dequantize per call), the head included; otherwise every tensor is dequantized to fp32 at load.
    ///
    /// ```swift
    /// let t5 = try T5Model(path: "Tests/EncoreTests/Fixtures/t5_gguf/gated/q8_0.gguf", keepQuantized: true)
    /// ```
    public convenience init(path: String, keepQuantized: Bool = false) throws {
        let file = try GGUFModelFile(path: path)
        let loader = WeightLoader(source: .gguf(file))
        loader.rename = T5Model.ggufName
        loader.keepQuantized = keepQuantized
        try self.init(config: T5Config(gguf: file), loader: loader)
        keptQuantized = keepQuantized
    }

    /// Loaded from a GGUF file with `keepQuantized`: prompt weights other than `.f32` then leave the embedding table
    /// as the file stores it, and the encoder keeps its own blocks.
    public private(set) var keptQuantized = false

    /// llama.cpp's GGUF name of a transformers T5 tensor name (names without a GGUF counterpart are returned as they are).
    ///
    /// ```swift
    /// T5Model.ggufName("decoder.block.3.layer.1.EncDecAttention.k.weight")   // "dec.blk.3.cross_attn_k.weight"
    /// ```
    public static func ggufName(_ name: String) -> String {
        switch name {
        case "shared.weight": return "token_embd.weight"
        case "lm_head.weight": return "output.weight"
        case "encoder.final_layer_norm.weight": return "enc.output_norm.weight"
        case "decoder.final_layer_norm.weight": return "dec.output_norm.weight"
        default: break
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        // <stack>.block.<i>.layer.<j>.<module...>.weight
        guard parts.count >= 7, parts[1] == "block", parts[3] == "layer", let i = Int(parts[2]), let j = Int(parts[4]),
              parts.last == "weight", parts[0] == "encoder" || parts[0] == "decoder" else { return name }
        let decoder = parts[0] == "decoder"
        let module = parts[5..<(parts.count - 1)].joined(separator: ".")
        let ffnLayer = decoder ? 2 : 1
        let projections = ["q": "q", "k": "k", "v": "v", "o": "o", "relative_attention_bias": "rel_b"]
        let ffn = ["wi": "ffn_up", "wi_0": "ffn_gate", "wi_1": "ffn_up", "wo": "ffn_down"]
        var mapped: String?
        if module == "layer_norm" {
            mapped = j == 0 ? "attn_norm" : j == ffnLayer ? "ffn_norm" : (decoder && j == 1 ? "cross_attn_norm" : nil)
        } else if j == 0, module.hasPrefix("SelfAttention."), let p = projections[String(module.dropFirst("SelfAttention.".count))] {
            mapped = "attn_" + p
        } else if decoder, j == 1, module.hasPrefix("EncDecAttention."), let p = projections[String(module.dropFirst("EncDecAttention.".count))] {
            mapped = "cross_attn_" + p
        } else if j == ffnLayer, module.hasPrefix("DenseReluDense."), let p = ffn[String(module.dropFirst("DenseReluDense.".count))] {
            mapped = p
        }
        guard let mapped else { return name }
        return "\(decoder ? "dec" : "enc").blk.\(i).\(mapped).weight"
    }

    public convenience init(config: T5Config, file: SafeTensorsFile) throws {
        try self.init(config: config, loader: WeightLoader(file: file))
    }

    /// A model with random weights (benchmarks): matrices uniform with the std of N(0, 0.02), unit layer norms,
    /// the head tied to `shared` (the config's `tie_word_embeddings` still decides the d_model^-0.5 scaling).
    public convenience init(config: T5Config, randomSeed: UInt64) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .random(seed: randomSeed)))
    }

    /// A model from named tensors (transformers names).
    public convenience init(config: T5Config, tensors: [String: Tensor]) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .dictionary(tensors, name: "tensors")))
    }

    init(config: T5Config, loader l: WeightLoader) throws {
        self.config = config
        let c = config
        let table = [c.vocabSize, c.dModel]
        // kept GGUF blocks (keepQuantized): no fp32 copy of the table or of the head
        sharedBlocks = try l.packedMatrix("shared.weight", shape: table)
        shared = sharedBlocks == nil ? try l.tensor("shared.weight", shape: table) : nil
        for copy in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
            if let t = try l.optional(copy, shape: table), let shared, t.storage !== shared.storage,
               !t.toArray().elementsEqual(shared.toArray()) {
                throw EncoreError(.unsupported, "\(l.sourceName): tensor '\(copy)' differs from 'shared.weight' (Encore ties the T5 embeddings)")
            }
        }
        if l.has("lm_head.weight") {
            tiedHead = false
            headBlocks = try l.packedMatrix("lm_head.weight", shape: table)
            lmHead = headBlocks == nil ? try l.tensor("lm_head.weight", shape: table) : nil
        } else if c.tieWordEmbeddings || l.isRandom {
            tiedHead = true
            lmHead = shared
            headBlocks = sharedBlocks
        } else {
            throw EncoreError(.missingTensor, "\(l.sourceName): missing tensor 'lm_head.weight' (expected shape \([c.vocabSize, c.dModel]); the config says tie_word_embeddings false)")
        }
        let biasShape = [c.relativeAttentionNumBuckets, c.numHeads]
        encoderBias = T5RelativeBias(weight: try l.tensor("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", shape: biasShape),
                                     bidirectional: true, numBuckets: c.relativeAttentionNumBuckets, maxDistance: c.relativeAttentionMaxDistance)
        encoderBlocks = try (0..<c.numLayers).map { try T5EncoderBlock(l, "encoder.block.\($0)", c) }
        encoderNorm = try T5LayerNorm(l, "encoder.final_layer_norm", c)
        decoderBias = T5RelativeBias(weight: try l.tensor("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", shape: biasShape),
                                     bidirectional: false, numBuckets: c.relativeAttentionNumBuckets, maxDistance: c.relativeAttentionMaxDistance)
        _ = try l.optional("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", shape: biasShape)   // unused, as in transformers
        decoderBlocks = try (0..<c.numDecoderLayers).map { try T5DecoderBlock(l, "decoder.block.\($0)", c) }
        decoderNorm = try T5LayerNorm(l, "decoder.final_layer_norm", c)
        // GGUF blocks kept quantized: the head streams its stored blocks in decode steps
        lmHeadDecode = headBlocks
        try l.checkAllUsed()

        let attention = 4 * c.dModel * c.numHeads * c.dKV
        let ff = (c.isGated ? 3 : 2) * c.dModel * c.dFF
        parameterCount = c.vocabSize * c.dModel + (tiedHead ? 0 : c.vocabSize * c.dModel)
            + 2 * c.relativeAttentionNumBuckets * c.numHeads
            + c.numLayers * (attention + ff + 2 * c.dModel) + c.dModel
            + c.numDecoderLayers * (2 * attention + ff + 3 * c.dModel) + c.dModel
    }

    // MARK: decode weight formats

    /// Chooses the weight format decode steps stream: the decoder's self-attention, the cross-attention q and o
    /// (run at every step), the feed-forward matrices (relu or gated-gelu) and the head. The cross-attention K/V
    /// projections run once per request with the encoder and follow `encoder`, like the encoder's matrices;
    /// nil keeps them fp32 (prompt passes always use fp32 GEMM while an fp32 copy is kept).
    ///
    /// - `keepFP32: false` drops the decoder's fp32 copies (teacher-forced passes then dequantize per call).
    ///
    /// ```swift
    /// t5.useDecodeWeights(.q8_0)                        // decoder + head streamed as Q8_0, fp32 kept for prompts
    /// t5.useDecodeWeights(.int8, encoder: .bf16, keepFP32: false)
    /// ```
    public func useDecodeWeights(_ format: WeightFormat, encoder: WeightFormat? = nil, keepFP32: Bool = true) {
        for i in decoderBlocks.indices {
            decoderBlocks[i].selfAttn.useDecodeWeights(format, keepFP32: keepFP32)
            decoderBlocks[i].crossAttn.useDecodeWeights(format, includingKV: false, keepFP32: keepFP32)
            decoderBlocks[i].ff.useDecodeWeights(format, keepFP32: keepFP32)
        }
        if let lmHead { lmHeadDecode = format == .f32 ? nil : QuantizedMatrix(lmHead, format: format) }
        else { lmHeadDecode = format == .f32 ? headBlocks : QuantizedMatrix(headBlocks!.dequantized(), format: format) }   // kept blocks: f32 means them
        if let encoder { useEncoderWeights(encoder) }
    }

    /// The encoder format chosen with ``useEncoderWeights(_:)`` (nil: none; `.decode` prompts then give the encoder the
    /// decode format).
    private var chosenEncoderFormat: WeightFormat?

    /// The encoder's matrices and the cross K/V projections in `format` (packed only unless `.f32`): see
    /// ``LanguageModel/useEncoderWeights(_:)``. The choice holds through `.decode` prompt weights.
    public func useEncoderWeights(_ format: WeightFormat) {
        chosenEncoderFormat = format
        setEncoderWeights(format)
        if format != .f32 { BufferPool.shared.drain() }   // the released fp32 copies back to the system
    }

    private func setEncoderWeights(_ format: WeightFormat) {
        let keep = format == .f32
        for i in encoderBlocks.indices {
            encoderBlocks[i].selfAttn.useDecodeWeights(format, keepFP32: keep)
            encoderBlocks[i].ff.useDecodeWeights(format, keepFP32: keep)
        }
        for i in decoderBlocks.indices {
            decoderBlocks[i].crossAttn.k.useDecodeWeights(format, keepFP32: keep)
            decoderBlocks[i].crossAttn.v.useDecodeWeights(format, keepFP32: keep)
        }
    }

    public func useDecodeWeights(_ format: WeightFormat) { useDecodeWeights(format, encoder: nil, keepFP32: true) }

    /// What prompt passes multiply with (``PromptWeights``); `.decode` also gives the encoder and the cross K/V
    /// projections the decoder's decode format (packed only), so nothing fp32 stays resident.
    ///
    /// ```swift
    /// t5.useDecodeWeights(.int8); try t5.usePromptWeights(.int8)   // int8 everywhere, as CTranslate2's and PyTorch's int8
    /// ```
    /// With a decode format, `.int8`, `.decode` and `.blocks` also release the fp32 embedding table and head (lookups
    /// read the decode-format table, logits the head's blocks, as with GGUF blocks kept quantized; `.f32` does not
    /// bring those two back). A GGUF loaded with `keepQuantized` keeps its table as stored (``keptQuantized``).
    public func usePromptWeights(_ weights: PromptWeights) throws {
        defer { if weights != .f32 { BufferPool.shared.drain() } }   // the released fp32 copies back to the system
        if weights != .f32, let lmHeadDecode {
            // a kept GGUF's table stays as the file stores it (an fp32 one beside an untied Q4_x / Q5_x / K-quant
            // head would otherwise be rounded to the head's format, and K-quants have no quantizer)
            if let shared, !keptQuantized, tiedHead || lmHeadDecode.format.isQuantizationTarget {
                sharedBlocks = tiedHead ? lmHeadDecode : QuantizedMatrix(shared, format: lmHeadDecode.format)
                shared.storage.releaseMappedPages()
                self.shared = nil
            }
            if let lmHead, !tiedHead { lmHead.storage.releaseMappedPages() }
            if lmHead != nil { lmHead = nil; headBlocks = lmHeadDecode }
        }
        let format = decoderBlocks.first?.selfAttn.q.decodeFormat ?? .f32
        // a chosen one stays; a kept GGUF's encoder keeps its own blocks (a mixed file's would otherwise be requantized
        // from them, and a K-quant / Q5 decoder format cannot be made from fp32)
        if (weights == .decode || weights == .blocks) && format != .f32 && format.isQuantizationTarget && chosenEncoderFormat == nil
            && !keptQuantized {
            setEncoderWeights(format)
        }
        for i in encoderBlocks.indices {
            encoderBlocks[i].selfAttn.updateLinears { $0.usePromptWeights(weights) }
            encoderBlocks[i].ff.updateLinears { $0.usePromptWeights(weights) }
        }
        for i in decoderBlocks.indices {
            decoderBlocks[i].selfAttn.updateLinears { $0.usePromptWeights(weights) }
            decoderBlocks[i].crossAttn.updateLinears { $0.usePromptWeights(weights) }
            decoderBlocks[i].ff.updateLinears { $0.usePromptWeights(weights) }
        }
    }

    /// Bytes one decode step streams: the decoder's matrices (without the cross K/V projections) and the head.
    public var decodeWeightBytes: Int {
        var n = lmHeadDecode?.byteCount ?? config.vocabSize * config.dModel * 4
        for b in decoderBlocks {
            n += ([b.selfAttn.q, b.selfAttn.k, b.selfAttn.v, b.selfAttn.o, b.crossAttn.q, b.crossAttn.o] + b.ff.linears)
                .reduce(0) { $0 + $1.decodeBytes }
        }
        return n
    }

    // MARK: encoder

    /// Right-pads rows with the pad id to a common length (the attention mask is ids ≠ pad).
    func padBatch(_ rows: [[Int]], what: String) throws -> (ids: [Int], length: Int) {
        guard !rows.isEmpty else { throw EncoreError(.invalidArgument, "\(what): empty batch") }
        for (i, r) in rows.enumerated() {
            guard !r.isEmpty else { throw EncoreError(.invalidArgument, "\(what) \(i): empty token sequence") }
            try TokenCheck.validate(r, vocab: config.vocabSize, what: "\(what) \(i)")
        }
        let L = rows.map(\.count).max()!
        return (rows.flatMap { $0 + [Int](repeating: config.padTokenId, count: L - $0.count) }, L)
    }

    /// Runs the encoder on a batch (rows right-padded with the pad id, pad keys masked) and projects every
    /// decoder layer's cross-attention K/V once.
    public func encode(_ rows: [[Int]]) throws -> T5EncoderOutput {
        let (ids, L) = try padBatch(rows, what: "input")
        let B = rows.count, shape = config.attention, A = shape.qWidth
        let keep = ids.map { $0 == config.padTokenId ? UInt8(0) : 1 }
        let bias = encoderBias.table(tq: L, tk: L, queryStart: 0)          // [H, 2L-1], shared by every layer
        var scratch: [Float] = []

        StepProfile.begin(prompt: true)
        defer { StepProfile.end() }
        var x = Ops.embeddingRows(shared, blocks: sharedBlocks, ids: ids)                            // [B*L, C]
        StepProfile.lap(.embed)
        for block in encoderBlocks {
            let h = block.ln0(x)                                           // [B*L, C]
            StepProfile.lap(.norm)
            let qkv = Linear.shared(h, [block.selfAttn.q, block.selfAttn.k, block.selfAttn.v])
            let q = qkv[0], k = qkv[1], v = qkv[2]                         // [B*L, A]
            StepProfile.lap(.qkvGEMV)
            let o = Tensor(uninitialized: [B * L, A])
            withExtendedLifetime((q, k, v)) {
                keep.withUnsafeBufferPointer { kp in
                    bias.withUnsafeBufferPointer { bp in
                        for b in 0..<B {
                            Ops.relativeBiasAttention(q: q.data + b * L * A, tq: L, k: k.data + b * L * A, v: v.data + b * L * A,
                                                      kvRows: L, kvStride: A, out: o.data + b * L * A,
                                                      shape: shape.withBF16Products(block.selfAttn.o.promptRunsNarrow),
                                                      keyKeep: kp.baseAddress! + b * L, causalOffset: -1, bias: bp.baseAddress,
                                                      scratch: &scratch)
                        }
                    }
                }
            }
            StepProfile.lap(.selfAttention)
            block.selfAttn.o.accumulate(into: x, o)                       // x += o(attention)
            StepProfile.lap(.selfOutGEMV)
            let m = block.ln1(x)
            StepProfile.lap(.norm)
            block.ff.accumulate(into: x, m)                               // x += ff(ln1(x)) (laps its up GEMM)
            StepProfile.lap(.mlpDownGEMV)
        }
        x = encoderNorm(x)
        StepProfile.lap(.norm)
        // every decoder layer's K and V of x (in one call, or four layers per call when stored in f16 or int8)
        let cross = CrossAttentionKV.project(x, decoderBlocks.map { ($0.crossAttn.k, $0.crossAttn.v) }, storage: crossKV, headDim: shape.headDim)
        StepProfile.lap(.crossKV)
        return T5EncoderOutput(batch: B, length: L, hidden: x.reshaped([B, L, config.dModel]), keep: keep, cross: cross)
    }

    // MARK: decoder

    /// Decoder state for one batch: the encoder output and the self-attention caches.
    final class DecoderState {
        let encoder: T5EncoderOutput
        let caches: [KVCache]
        /// Attention kernel scratch, kept across steps (a decode step allocates no buffer).
        var scratch: [Float] = []
        var length: Int { caches.first?.length ?? 0 }
        init(encoder: T5EncoderOutput, caches: [KVCache]) {
            self.encoder = encoder
            self.caches = caches
        }
    }

    func makeDecoderState(_ enc: T5EncoderOutput, capacity: Int) -> DecoderState {
        DecoderState(encoder: enc, caches: decoderBlocks.map { _ in
            KVCache(batch: enc.batch, width: config.attention.qWidth, capacity: capacity)
        })
    }

    /// Runs the decoder on `n` new tokens per row (ids: [B*n], row-major), extending the caches.
    /// Returns logits [B*n, V], or only the last position's [B, V] when `lastOnly`.
    func decode(_ state: DecoderState, ids: [Int], n: Int, lastOnly: Bool) -> Tensor {
        let B = state.encoder.batch, L = state.encoder.length, shape = config.attention, A = shape.qWidth
        let start = state.length
        let bias = decoderBias.table(tq: n, tk: start + n, queryStart: start)   // [H, 2n+start-1]
        let ones = [UInt8](repeating: 1, count: B * n)                          // decoder keys: causal mask only

        StepProfile.begin(prompt: n > 1)
        defer { StepProfile.end() }
        var x = Ops.embeddingRows(shared, blocks: sharedBlocks, ids: ids)                            // [B*n, C]
        StepProfile.lap(.embed)
        // by address: a block copy per layer would retain and release its references, cold after the weights streamed past
        decoderBlocks.withUnsafeBufferPointer { blocks in
        for layer in blocks.indices {
            // causal self-attention over the cache, + position bias
            let h = blocks[layer].ln0(x)
            StepProfile.lap(.norm)
            let (q, newK, newV) = blocks[layer].selfAttn.projectQKV(h)     // [B*n, A] each
            let cache = state.caches[layer]
            StepProfile.lap(.qkvGEMV)
            cache.append(k: newK, v: newV, keep: ones, n: n)
            StepProfile.lap(.ropeCache)
            let o = Tensor(uninitialized: [B * n, A])
            withExtendedLifetime(q) {
                bias.withUnsafeBufferPointer { bp in
                    for b in 0..<B {
                        Ops.relativeBiasAttention(q: q.data + b * n * A, tq: n, k: cache.keyPointer(batch: b), v: cache.valuePointer(batch: b),
                                                  kvRows: cache.length, kvStride: A, out: o.data + b * n * A, shape: shape,
                                                  keyKeep: nil, causalOffset: start, bias: bp.baseAddress, scratch: &state.scratch)
                    }
                }
            }
            StepProfile.lap(.selfAttention)
            Ops.addInPlace(x, blocks[layer].selfAttn.o(o))
            StepProfile.lap(.selfOutGEMV)
            // cross-attention over the encoder output (K/V projected once, no position bias)
            let h1 = blocks[layer].ln1(x)
            StepProfile.lap(.norm)
            let qc = blocks[layer].crossAttn.q(h1)                          // [B*n, A]
            StepProfile.lap(.crossQGEMV)
            let oc = Ops.crossAttention(q: qc, kv: state.encoder.cross[layer], batch: B, tq: n, kvRows: L,   // [B*n, A]
                                        keyKeep: state.encoder.keep, shape: shape, scaled: false, scratch: &state.scratch)
            StepProfile.lap(.crossAttention)
            Ops.addInPlace(x, blocks[layer].crossAttn.o(oc))
            StepProfile.lap(.crossOutGEMV)
            let h2 = blocks[layer].ln2(x)
            StepProfile.lap(.norm)
            blocks[layer].ff.accumulate(into: x, h2)                        // x += ff(ln2(x)); laps the up part inside
            StepProfile.lap(.mlpDownGEMV)
        }
        }
        if lastOnly && n > 1 { x = Ops.lastRows(x, batch: B, n: n) }
        let y = decoderNorm(x)                                             // [R, C]
        if config.scalesDecoderOutput { Ops.scaleInPlace(y, Float(pow(Double(config.dModel), -0.5))) }   // tied head (v1.0)
        // the blocks for decode steps, and for every pass when no fp32 head is kept
        defer { StepProfile.lap(.head) }
        if let lmHeadDecode, y.shape[0] <= 8 || lmHead == nil { return Ops.linearQuantized(y, weight: lmHeadDecode, bias: nil) }   // [R, V]
        return Ops.linear(y, weight: lmHead!, bias: nil)                   // [R, V]
    }

    /// Teacher-forced logits [B, T, V], transformers' `model(input_ids, attention_mask, decoder_input_ids).logits`
    /// with attention_mask = ids ≠ pad. Decoder rows start with `decoder_start_token_id`; shorter rows are
    /// right-padded with the pad id (T5 does not mask decoder pads, so a row's earlier positions are unaffected).
    public func teacherForcedLogits(encoderIds: [[Int]], decoderIds: [[Int]]) throws -> Tensor {
        guard encoderIds.count == decoderIds.count else {
            throw EncoreError(.invalidArgument, "batch size mismatch: \(encoderIds.count) encoder rows, \(decoderIds.count) decoder rows")
        }
        let enc = try encode(encoderIds)
        let (ids, T) = try padBatch(decoderIds, what: "decoder input")
        let state = makeDecoderState(enc, capacity: T)
        return decode(state, ids: ids, n: T, lastOnly: false).reshaped([decoderIds.count, T, config.vocabSize])
    }

    // MARK: LanguageModel

    final class State: GenerationState {
        let model: T5Model
        let decoder: DecoderState
        var logits: Tensor
        let encodeSeconds: Double
        var batchSize: Int { decoder.encoder.batch }
        var cacheBytes: Int { decoder.encoder.bytes + decoder.caches.reduce(0) { $0 + $1.bytes } }

        init(model: T5Model, decoder: DecoderState, logits: Tensor, encodeSeconds: Double) {
            self.model = model
            self.decoder = decoder
            self.logits = logits
            self.encodeSeconds = encodeSeconds
        }

        func advance(tokens: [Int]) throws {
            guard tokens.count == batchSize else { throw EncoreError(.invalidArgument, "advance: \(tokens.count) tokens for \(batchSize) rows") }
            try TokenCheck.validate(tokens, vocab: model.config.vocabSize, what: "generated tokens")
            logits = model.decode(decoder, ids: tokens, n: 1, lastOnly: true)
        }
    }

    public func beginGeneration(prompts: [[Int]]) throws -> GenerationState {
        let t0 = now()
        let enc = try encode(prompts)
        let t1 = now()
        let state = makeDecoderState(enc, capacity: 64)
        let logits = decode(state, ids: [Int](repeating: config.decoderStartTokenId, count: prompts.count), n: 1, lastOnly: true)
        return State(model: self, decoder: state, logits: logits, encodeSeconds: t1 - t0)
    }

    /// Log-probabilities of `target` given `input`: the decoder reads [decoder_start_token_id] + target.
    public func score(input: [Int], target: [Int]) throws -> [Float] {
        guard !target.isEmpty else { return [] }
        try TokenCheck.validate(target, vocab: config.vocabSize, what: "target")
        let logits = try teacherForcedLogits(encoderIds: [input], decoderIds: [[config.decoderStartTokenId] + target.dropLast()])
        let lp = Ops.logSoftmax(logits.reshaped([target.count, config.vocabSize]))
        return target.enumerated().map { lp[$0.offset, $0.element] }
    }
}
