import Foundation

// The paper's matched decoder-only baseline ("mu_decoder"): the same blocks as Mu's encoder made causal
// (pre-norm RMSNorm, causal self-attention with RoPE from position 0, GQA, tanh-GELU MLP, biases), a final
// RMSNorm and the head tied to the embedding. Depth is chosen to match a Mu model's parameter count
// (MuDecoderConfig.matching). The prompt and the generated tokens share one KV cache.
//
// Tensor names:
//   transformer.wte.weight                          [V, C]
//   transformer.h.{i}.ln1.weight, .ln2.weight       [C]
//   transformer.h.{i}.attn.{q,k,v,out}_linear.{weight,bias}
//   transformer.h.{i}.mlp.{fc1,fc2}.{weight,bias}
//   transformer.ln_f.weight                         [C]
//   lm_head.weight                                  [V, C] optional: tied to wte

struct MuDecoderOnlyBlock {
    var ln1: RMSNorm, ln2: RMSNorm, attn: AttentionWeights, mlp: MLP
    init(_ l: WeightLoader, _ p: String, _ c: MuDecoderConfig) throws {
        ln1 = try RMSNorm(l, p + ".ln1", dim: c.nEmbd)
        ln2 = try RMSNorm(l, p + ".ln2", dim: c.nEmbd)
        attn = try AttentionWeights(l, p + ".attn", nEmbd: c.nEmbd, shape: c.attention)
        mlp = try MLP(l, p + ".mlp", nEmbd: c.nEmbd, hidden: c.hiddenDim)
    }
}

/// The decoder-only twin of a Mu model.
///
/// Batches are left-padded; each row's positions start at 0 at its first real token, so a row gives the
/// same result alone or in a batch.
public final class MuDecoderModel: CausalDecoder {
    public let config: MuDecoderConfig
    /// The storage of the self-attention KV caches the model builds afterwards (generation, scoring; ``KVRowFormat``):
    /// fp32 (the default), f16 (llama.cpp's default cache type: half the cache memory and half the bytes a decode step
    /// reads over the cached positions; logits move by about 1e-3 of their largest value; `ek_attention_f16kv`) or int8
    /// (about a quarter, with a scale per position and block of 32 values; `ek_attention_i8kv`). Scores and outputs stay fp32; a cache that
    /// receives a value its storage cannot hold (beyond f16's range; not finite) goes back to fp32. ``halfKVCache``:
    /// whether it is f16.
    public var kvRows: KVRowFormat = .f32
    let wte: Tensor
    let lmHead: Tensor
    private(set) var blocks: [MuDecoderOnlyBlock]
    private(set) var lmHeadDecode: QuantizedMatrix?
    let lnF: RMSNorm

    public var modelType: String { "mu_decoder" }
    public var vocabSize: Int { config.vocabSize }
    public var bosTokenId: Int? { config.bosTokenId }
    public var eosTokenId: Int? { config.eosTokenId }
    public var padTokenId: Int { config.padTokenId }
    public var isEncoderDecoder: Bool { false }
    var layerCount: Int { blocks.count }
    var kvWidth: Int { config.attention.kvWidth }
    var kvHeadDim: Int { config.attention.headDim }
    public var parameterCount: Int { ParameterCount.muDecoder(config) + (lmHead.storage === wte.storage ? 0 : lmHead.count) }

    public convenience init(folder: String) throws {
        let (data, type, path) = try ConfigFile.read(folder: folder)
        guard type == "mu_decoder" else { throw EncoreError(.invalidConfig, "\(path): model_type is '\(type)', expected 'mu_decoder'") }
        let config = try ConfigFile.decode(MuDecoderConfig.self, from: data, path: path)
        try config.validate(path: path)
        try self.init(config: config, file: SafeTensorsFile(path: folder + "/model.safetensors"))
    }

    public convenience init(config: MuDecoderConfig, file: SafeTensorsFile) throws {
        try self.init(config: config, loader: WeightLoader(file: file))
    }

    public convenience init(config: MuDecoderConfig, randomSeed: UInt64) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .random(seed: randomSeed)))
    }

    init(config: MuDecoderConfig, loader l: WeightLoader) throws {
        self.config = config
        wte = try l.tensor("transformer.wte.weight", shape: [config.vocabSize, config.nEmbd])
        lmHead = try l.optional("lm_head.weight", shape: [config.vocabSize, config.nEmbd]) ?? wte
        blocks = try (0..<config.nLayer).map { try MuDecoderOnlyBlock(l, "transformer.h.\($0)", config) }
        lnF = try RMSNorm(l, "transformer.ln_f", dim: config.nEmbd)
        try l.checkAllUsed()
    }

    /// Builds the model from tensors with reference names (``namedTensors()``'s form).
    public convenience init(config: MuDecoderConfig, tensors: [String: Tensor]) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .dictionary(tensors, name: "tensors")))
    }

    /// Every weight by its reference name (lm_head omitted when tied), for training and checkpoints.
    public func namedTensors() -> [String: Tensor] {
        var d: [String: Tensor] = ["transformer.wte.weight": wte, "transformer.ln_f.weight": lnF.weight]
        if lmHead.storage !== wte.storage { d["lm_head.weight"] = lmHead }
        for (i, b) in blocks.enumerated() {
            let p = "transformer.h.\(i)"
            d[p + ".ln1.weight"] = b.ln1.weight
            d[p + ".ln2.weight"] = b.ln2.weight
            for (n, lin) in [("q_linear", b.attn.q), ("k_linear", b.attn.k), ("v_linear", b.attn.v), ("out_linear", b.attn.out)] {
                d["\(p).attn.\(n).weight"] = lin.weight
                d["\(p).attn.\(n).bias"] = lin.bias!
            }
            d[p + ".mlp.fc1.weight"] = b.mlp.fc1.weight; d[p + ".mlp.fc1.bias"] = b.mlp.fc1.bias!
            d[p + ".mlp.fc2.weight"] = b.mlp.fc2.weight; d[p + ".mlp.fc2.bias"] = b.mlp.fc2.bias!
        }
        return d
    }

    /// Streams every matrix and the head as bf16 during decode steps; prompt prefill keeps fp32.
    public func useBF16ForDecode() { useDecodeWeights(.bf16) }

    /// Streams every matrix and the head in `format` during decode steps; prompt prefill keeps fp32 unless
    /// `keepFP32` is false (then it dequantizes each matrix per call).
    public func useDecodeWeights(_ format: WeightFormat, keepFP32: Bool) {
        for i in blocks.indices {
            blocks[i].attn.useDecodeWeights(format, keepFP32: keepFP32)
            blocks[i].mlp.useDecodeWeights(format, keepFP32: keepFP32)
        }
        lmHeadDecode = format == .f32 ? nil : QuantizedMatrix(lmHead, format: format)
    }

    public func useDecodeWeights(_ format: WeightFormat) { useDecodeWeights(format, keepFP32: true) }

    /// What prompt passes multiply with (``PromptWeights``: fp32 copies, int8 rows, or the decode format).
    public func usePromptWeights(_ weights: PromptWeights) throws {
        defer { if weights != .f32 { BufferPool.shared.drain() } }   // the released fp32 copies back to the system
        for i in blocks.indices {
            blocks[i].attn.updateLinears { $0.usePromptWeights(weights) }
            blocks[i].mlp.updateLinears { $0.usePromptWeights(weights) }
        }
    }

    /// Bytes one decode step streams: every matrix and the head.
    public var decodeWeightBytes: Int {
        blocks.reduce(lmHeadDecode?.byteCount ?? lmHead.count * 4) { n, b in
            n + (b.attn.linears + [b.mlp.fc1, b.mlp.fc2]).reduce(0) { $0 + $1.decodeBytes }
        }
    }

    /// Runs `n` new tokens per row (ids [B*n]) through the model, extending the cache; returns the logits of
    /// `outputs`. Keys at the pad id are masked unless `keyKeep` [B*n] gives the mask.
    func forward(_ cache: CausalDecoderCache, ids newIds: [Int], n newCount: Int, outputs: CausalOutputs, keyKeep: [UInt8]?) -> Tensor {
        let B = cache.offsets.count
        for b in 0..<B { cache.history[b] += newIds[(b * newCount)..<((b + 1) * newCount)] }
        var ids = newIds, n = newCount
        // Dynamic NTK (rope_factor > 1) past block_size changes every position's rotation: recompute the prefix.
        if config.ropeFactor > 1 && cache.length + newCount > config.blockSize {
            for c in cache.caches { c.reset() }
            ids = cache.history.flatMap { $0 }
            n = cache.history[0].count
        }
        let shape = config.attention
        let start = cache.length, total = start + n
        let positions = (0..<(B * n)).map { Float(start + $0 % n - cache.offsets[$0 / n]) }
        let rope = Ops.RoPETable(positions: positions, invFreq: config.rope.inverseFrequencies(sequenceLength: total))
        precondition(keyKeep == nil || (ids.count == newIds.count && keyKeep!.count == ids.count), "keyKeep with a recomputed prefix")
        let newKeep = keyKeep ?? ids.map { $0 == config.padTokenId ? UInt8(0) : 1 }
        var x = Ops.embedding(wte, ids: ids)                               // [B*n, C]
        // by address: a block copy per layer would retain and release its references, cold after the weights streamed past
        blocks.withUnsafeBufferPointer { blocks in
        for layer in blocks.indices {
            Ops.addInPlace(x, blocks[layer].attn.cachedSelfAttention(blocks[layer].ln1(x), batch: B, n: n,
                                                                     cache: cache.caches[layer], newKeep: newKeep, rope: rope,
                                                                     shape: shape, scratch: &cache.scratch))
            blocks[layer].mlp.accumulate(into: x, blocks[layer].ln2(x))
        }
        }
        switch outputs {
        case .all: break
        case .last: if n > 1 { x = Ops.lastRows(x, batch: B, n: n) }
        case .rows(let r): x = Ops.rowRange(x, batch: B, n: n, (n - newCount + r.lowerBound)..<(n - newCount + r.upperBound))
        }
        let h = lnF(x)
        if let lmHeadDecode, h.shape[0] <= 8 { return Ops.linearQuantized(h, weight: lmHeadDecode, bias: nil) }
        return Ops.linear(h, weight: lmHead, bias: nil)
    }

    /// Logits [B, T, V] for a right-padded batch read from position 0 (the reference's full forward).
    public func logits(_ rows: [[Int]]) throws -> Tensor { try causalLogits(rows) }

    public func beginGeneration(prompts: [[Int]]) throws -> GenerationState { try beginCausalGeneration(prompts: prompts) }

    public func score(input: [Int], target: [Int]) throws -> [Float] {
        try causalScore(input: input, target: target, bos: config.bosTokenId)
    }
}
