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

/// Hyper-parameters of a Llama-family model, read from GGUF metadata (`llama.*` keys).
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var nEmbd: Int
    public var nLayer: Int
    public var nHead: Int
    public var nKVHead: Int
    public var ffnDim: Int
    public var contextLength: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var padTokenId: Int

    /// Hugging Face `config.json` names (`LlamaConfig` of transformers).
    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", nEmbd = "hidden_size", nLayer = "num_hidden_layers", nHead = "num_attention_heads"
        case nKVHead = "num_key_value_heads", ffnDim = "intermediate_size", contextLength = "max_position_embeddings"
        case ropeTheta = "rope_theta", rmsNormEps = "rms_norm_eps", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case padTokenId = "pad_token_id"
    }

    /// Keys of a Hugging Face config that change the architecture in ways Encore does not implement.
    private enum UnsupportedKeys: String, CodingKey {
        case ropeScaling = "rope_scaling", attentionBias = "attention_bias", mlpBias = "mlp_bias", headDim = "head_dim"
    }

    /// Decodes a Hugging Face `config.json` (defaults as transformers: KV heads = heads, θ = 10000).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        nEmbd = try c.decode(Int.self, forKey: .nEmbd)
        nLayer = try c.decode(Int.self, forKey: .nLayer)
        nHead = try c.decode(Int.self, forKey: .nHead)
        nKVHead = try c.decodeIfPresent(Int.self, forKey: .nKVHead) ?? nHead
        ffnDim = try c.decode(Int.self, forKey: .ffnDim)
        contextLength = try c.decodeIfPresent(Int.self, forKey: .contextLength) ?? 2048
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId) ?? eosTokenId ?? 0
        let u = try decoder.container(keyedBy: UnsupportedKeys.self)
        if u.contains(.ropeScaling), !(try u.decodeNil(forKey: .ropeScaling)) {
            throw EncoreError(.unsupported, "config field 'rope_scaling' is set; only plain RoPE is supported")
        }
        for k in [UnsupportedKeys.attentionBias, .mlpBias] where (try u.decodeIfPresent(Bool.self, forKey: k)) == true {
            throw EncoreError(.unsupported, "config field '\(k.rawValue)' is true; Llama biases are not supported")
        }
        if let hd = try u.decodeIfPresent(Int.self, forKey: .headDim), hd != nEmbd / max(nHead, 1) {
            throw EncoreError(.unsupported, "config field 'head_dim' \(hd) differs from hidden_size / num_attention_heads")
        }
    }

    public var headDim: Int { nEmbd / nHead }
    public var attention: AttentionShape { AttentionShape(heads: nHead, kvHeads: nKVHead, headDim: headDim, interleaved: true) }

    /// Reads the config from a GGUF file's metadata; errors name the missing or invalid key.
    public init(gguf f: GGUFModelFile) throws {
        let arch = try f.string("general.architecture")
        guard arch == "llama" else {
            throw EncoreError(.unsupported, "\(f.path): general.architecture is '\(arch)'; Encore reads 'llama' GGUF models")
        }
        nEmbd = try f.int("llama.embedding_length")
        nLayer = try f.int("llama.block_count")
        nHead = try f.int("llama.attention.head_count")
        nKVHead = f["llama.attention.head_count_kv"] == nil ? nHead : try f.int("llama.attention.head_count_kv")
        ffnDim = try f.int("llama.feed_forward_length")
        contextLength = try f.int("llama.context_length")
        ropeTheta = f["llama.rope.freq_base"] == nil ? 10000 : try f.double("llama.rope.freq_base")
        rmsNormEps = try f.double("llama.attention.layer_norm_rms_epsilon")
        guard let emb = f.tensors["token_embd.weight"], emb.shape.count == 2 else {
            throw EncoreError(.missingTensor, "\(f.path): missing tensor 'token_embd.weight' (2-D [vocab, n_embd])")
        }
        vocabSize = emb.shape[0]
        bosTokenId = f["tokenizer.ggml.bos_token_id"]?.intValue
        eosTokenId = f["tokenizer.ggml.eos_token_id"]?.intValue
        padTokenId = f["tokenizer.ggml.padding_token_id"]?.intValue ?? eosTokenId ?? 0
        if let rd = f["llama.rope.dimension_count"] {
            guard rd.intValue == headDim else {
                throw EncoreError(.unsupported, "\(f.path): llama.rope.dimension_count is \(rd), but only full-head RoPE (\(headDim)) is supported")
            }
        }
        if let st = f["llama.rope.scaling.type"]?.stringValue, st != "none" {
            throw EncoreError(.unsupported, "\(f.path): llama.rope.scaling.type '\(st)' is not supported")
        }
        try validate(path: f.path)
    }

    /// Throws when the sizes cannot describe a model (error names the field).
    public func validate(path: String = "config") throws {
        func check(_ ok: Bool, _ what: String) throws {
            if !ok { throw EncoreError(.invalidConfig, "\(path): \(what)") }
        }
        try check(vocabSize > 0, "vocab_size \(vocabSize) must be positive")
        try check(nEmbd > 0 && nLayer > 0 && ffnDim > 0 && contextLength > 0, "n_embd, n_layer, ffn_dim and context_length must be positive")
        try check(nHead > 0 && nEmbd % nHead == 0 && headDim % 2 == 0, "n_head \(nHead) must divide n_embd \(nEmbd) into even head widths")
        try check(nKVHead > 0 && nHead % nKVHead == 0, "n_kv_head \(nKVHead) must divide n_head \(nHead)")
        try check(ropeTheta > 0, "rope_theta \(ropeTheta) must be positive")
        try check(rmsNormEps > 0 && rmsNormEps < 1, "rms_norm_eps \(rmsNormEps) must be in (0, 1)")
        for (name, id) in [("bos_token_id", bosTokenId), ("eos_token_id", eosTokenId), ("pad_token_id", padTokenId)] {
            if let id { try check(id >= 0 && id < vocabSize, "\(name) \(id) is outside the vocabulary (0..<\(vocabSize))") }
        }
    }

    /// RoPE inverse frequencies θ^(−2j/D), j < D/2.
    var inverseFrequencies: [Float] {
        (0..<(headDim / 2)).map { j in Float(1 / pow(ropeTheta, Double(2 * j) / Double(headDim))) }
    }
}

/// Where a Llama checkpoint comes from: llama.cpp's GGUF names (Q/K rows permuted for adjacent-pair RoPE) or
/// Hugging Face's safetensors names (rotate-half layout as is).
enum LlamaNaming {
    case gguf, huggingFace

    var embedding: String { self == .gguf ? "token_embd.weight" : "model.embed_tokens.weight" }
    var outputNorm: String { self == .gguf ? "output_norm.weight" : "model.norm.weight" }
    var head: String { self == .gguf ? "output.weight" : "lm_head.weight" }

    /// Tensor names of block i, in the order attn_norm, q, k, v, o, ffn_norm, gate, up, down.
    func block(_ i: Int) -> [String] {
        switch self {
        case .gguf:
            return ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
                .map { "blk.\(i).\($0).weight" }
        case .huggingFace:
            return ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
                .map { "model.layers.\(i).\($0).weight" }
        }
    }
}

/// One transformer block of a Llama model.
struct LlamaBlock {
    var attnNorm: Tensor, ffnNorm: Tensor
    var q: Linear, k: Linear, v: Linear, o: Linear
    var gate: Linear, up: Linear, down: Linear

    init(_ l: WeightLoader, _ i: Int, _ c: LlamaConfig, naming: LlamaNaming) throws {
        let n = naming.block(i)
        let s = c.attention
        let permuted = naming == .gguf
        func qk(_ w: Tensor, heads: Int) -> Tensor { permuted ? Self.unpermuteRoPE(w, heads: heads) : w }
        attnNorm = try l.tensor(n[0], shape: [c.nEmbd])
        q = Linear(weight: qk(try l.tensor(n[1], shape: [s.qWidth, c.nEmbd]), heads: s.heads), bias: nil)
        k = Linear(weight: qk(try l.tensor(n[2], shape: [s.kvWidth, c.nEmbd]), heads: s.kvHeads), bias: nil)
        v = Linear(weight: try l.tensor(n[3], shape: [s.kvWidth, c.nEmbd]), bias: nil)
        o = Linear(weight: try l.tensor(n[4], shape: [c.nEmbd, s.qWidth]), bias: nil)
        ffnNorm = try l.tensor(n[5], shape: [c.nEmbd])
        gate = Linear(weight: try l.tensor(n[6], shape: [c.ffnDim, c.nEmbd]), bias: nil)
        up = Linear(weight: try l.tensor(n[7], shape: [c.ffnDim, c.nEmbd]), bias: nil)
        down = Linear(weight: try l.tensor(n[8], shape: [c.nEmbd, c.ffnDim]), bias: nil)
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

/// A Llama-family decoder-only model loaded from a GGUF file (weights dequantized to fp32) or from a Hugging
/// Face folder (`config.json` with `model_type` "llama" + `model.safetensors`).
///
/// ```swift
/// let model = try LlamaModel(path: "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
/// let out = try Generator(model: model).generate(prompt: [1, 9690, 198], parameters: .init(maxTokens: 20))
/// ```
/// Batches are left-padded; each row's positions start at 0 at its first real token and the padding slots
/// are masked, so a row gives the same result alone or in a batch.
public final class LlamaModel: CausalDecoder {
    public let config: LlamaConfig
    let embedding: Tensor   // [V, C]
    let head: Tensor        // [V, C]
    let blocks: [LlamaBlock]
    let outputNorm: Tensor  // [C]
    let invFreq: [Float]

    public var modelType: String { "llama" }
    public var vocabSize: Int { config.vocabSize }
    public var bosTokenId: Int? { config.bosTokenId }
    public var eosTokenId: Int? { config.eosTokenId }
    public var padTokenId: Int { config.padTokenId }
    public var isEncoderDecoder: Bool { false }
    var layerCount: Int { blocks.count }
    var kvWidth: Int { config.attention.kvWidth }
    public var parameterCount: Int {
        let c = config, s = config.attention
        let block = 2 * c.nEmbd + c.nEmbd * (2 * s.qWidth + 2 * s.kvWidth) + 3 * c.nEmbd * c.ffnDim
        return c.vocabSize * c.nEmbd * (head.storage === embedding.storage ? 1 : 2) + c.nLayer * block + c.nEmbd
    }

    /// Loads a `.gguf` file.
    public convenience init(path: String) throws {
        let file = try GGUFModelFile(path: path)
        try self.init(config: LlamaConfig(gguf: file), loader: WeightLoader(source: .gguf(file)), naming: .gguf)
    }

    /// Loads Hugging Face weights (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, …;
    /// `lm_head.weight` optional: tied).
    public convenience init(config: LlamaConfig, file: SafeTensorsFile) throws {
        try config.validate(path: file.path)
        try self.init(config: config, loader: WeightLoader(file: file), naming: .huggingFace)
    }

    init(config: LlamaConfig, loader l: WeightLoader, naming: LlamaNaming) throws {
        self.config = config
        embedding = try l.tensor(naming.embedding, shape: [config.vocabSize, config.nEmbd])
        head = try l.optional(naming.head, shape: [config.vocabSize, config.nEmbd]) ?? embedding
        blocks = try (0..<config.nLayer).map { try LlamaBlock(l, $0, config, naming: naming) }
        outputNorm = try l.tensor(naming.outputNorm, shape: [config.nEmbd])
        invFreq = config.inverseFrequencies
        try l.checkAllUsed()
    }

    /// Runs `n` new tokens per row (ids [B*n]) through the model, extending the cache; returns the logits of
    /// `outputs`. Left padding (slots before a row's offset) is masked unless `keyKeep` [B*n] gives the mask.
    func forward(_ cache: CausalDecoderCache, ids: [Int], n: Int, outputs: CausalOutputs, keyKeep: [UInt8]?) -> Tensor {
        let B = cache.offsets.count, shape = config.attention
        let eps = Float(config.rmsNormEps)
        let start = cache.length, total = start + n
        let positionsInt = (0..<(B * n)).map { start + $0 % n - cache.offsets[$0 / n] }
        let positions = positionsInt.map(Float.init)
        let newKeep = keyKeep ?? positionsInt.map { $0 < 0 ? UInt8(0) : 1 }      // left padding is masked
        var scratch: [Float] = []
        var x = Ops.embedding(embedding, ids: ids)                                // [B*n, C]
        for (layer, block) in blocks.enumerated() {
            let kv = cache.caches[layer]
            let h = Ops.rmsNorm(x, weight: block.attnNorm, eps: eps)             // [B*n, C]
            let q = block.q(h), k = block.k(h), v = block.v(h)                    // [B*n, H*D], [B*n, Hkv*D] ×2
            Ops.ropeInPlace(q, heads: shape.heads, headDim: shape.headDim, positions: positions, invFreq: invFreq)
            Ops.ropeInPlace(k, heads: shape.kvHeads, headDim: shape.headDim, positions: positions, invFreq: invFreq)
            kv.append(k: k, v: v, keep: newKeep, n: n)
            let o = Tensor(uninitialized: [B * n, shape.qWidth])                  // [B*n, H*D]
            withExtendedLifetime(q) { for b in 0..<B {
                kv.withKeep(batch: b) { kp in
                    Ops.attention(q: q.data + b * n * shape.qWidth, tq: n, k: kv.keyPointer(batch: b),
                                  v: kv.valuePointer(batch: b), kvRows: total, kvStride: shape.kvWidth,
                                  out: o.data + b * n * shape.qWidth, shape: shape, keyKeep: kp,
                                  causalOffset: start, scratch: &scratch)
                }
            } }
            Ops.addInPlace(x, block.o(o))
            let m = Ops.rmsNorm(x, weight: block.ffnNorm, eps: eps)
            let g = Ops.swiGLU(gate: block.gate(m), up: block.up(m))              // [B*n, F]
            Ops.addInPlace(x, block.down(g))
        }
        switch outputs {
        case .all: break
        case .last: if n > 1 { x = Ops.lastRows(x, batch: B, n: n) }              // [B, C]
        case .rows(let r): x = Ops.rowRange(x, batch: B, n: n, r)                  // [B*r.count, C]
        }
        return Ops.linear(Ops.rmsNorm(x, weight: outputNorm, eps: eps), weight: head, bias: nil)   // [*, V]
    }

    /// Logits [B, T, V] for a right-padded batch read from position 0 (padding only follows real tokens, so
    /// causality keeps it from affecting them).
    public func logits(_ rows: [[Int]]) throws -> Tensor { try causalLogits(rows) }

    public func beginGeneration(prompts: [[Int]]) throws -> GenerationState { try beginCausalGeneration(prompts: prompts) }

    public func score(input: [Int], target: [Int]) throws -> [Float] {
        try causalScore(input: input, target: target, bos: config.bosTokenId)
    }
}
