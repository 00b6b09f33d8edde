import Foundation

// Mu: the encoder-decoder of "Return of the Encoder" (arXiv 2501.16273), as the reference
// microsoft/encoder-decoder-slm `modeling_mu.py` + `mu_utils.py` computes it:
//   encoder block: x += SelfAttn(RMSNorm(x)) [bidirectional, RoPE on centred positions]; x += MLP(RMSNorm(x))
//   decoder block: x += CausalSelfAttn(RMSNorm(x)) [RoPE 0..T-1]; x += CrossAttn(RMSNorm(x), enc_out) [no RoPE];
//                  x += MLP(RMSNorm(x))
//   enc_out = ln_e(encoder(x)); logits = ln_f(decoder(x)) · wteᵀ (tied head). Masks come from pad ids.
// Generation adds what the reference lacks: the cross-attention K/V are projected once per request and the
// decoder keeps a self-attention KV cache; results equal the reference's full recomputation.
//
// Tensor names (reference state dict):
//   transformer.wte.weight                              [V, C]
//   transformer.e.{i}.ln1.weight, .ln2.weight           [C]
//   transformer.e.{i}.attn.{q,k,v,out}_linear.{weight,bias}
//   transformer.e.{i}.mlp.{fc1,fc2}.{weight,bias}
//   transformer.ln_e.weight                             [C]
//   transformer.h.{i}.ln1/ln2/ln3.weight                [C]
//   transformer.h.{i}.causal_attn.*, .cross_attn.*, .mlp.*
//   transformer.ln_f.weight                             [C]
//   lm_head.weight                                      [V, C] optional: tied to wte

struct MuEncoderBlock {
    var ln1: RMSNorm, ln2: RMSNorm, attn: AttentionWeights, mlp: MLP
    init(_ l: WeightLoader, _ p: String, _ c: MuConfig) throws {
        ln1 = try RMSNorm(l, p + ".ln1", dim: c.nEmbd)
        ln2 = try RMSNorm(l, p + ".ln2", dim: c.nEmbd)
        attn = try AttentionWeights(l, p + ".attn", nEmbd: c.nEmbd, shape: c.attention)
        mlp = try MLP(l, p + ".mlp", nEmbd: c.nEmbd, hidden: c.hiddenDim)
    }
}

struct MuDecoderBlock {
    var ln1: RMSNorm, ln2: RMSNorm, ln3: RMSNorm
    var causalAttn: AttentionWeights, crossAttn: AttentionWeights, mlp: MLP
    init(_ l: WeightLoader, _ p: String, _ c: MuConfig) throws {
        ln1 = try RMSNorm(l, p + ".ln1", dim: c.nEmbd)
        ln2 = try RMSNorm(l, p + ".ln2", dim: c.nEmbd)
        ln3 = try RMSNorm(l, p + ".ln3", dim: c.nEmbd)
        causalAttn = try AttentionWeights(l, p + ".causal_attn", nEmbd: c.nEmbd, shape: c.attention)
        crossAttn = try AttentionWeights(l, p + ".cross_attn", nEmbd: c.nEmbd, shape: c.attention)
        mlp = try MLP(l, p + ".mlp", nEmbd: c.nEmbd, hidden: c.hiddenDim)
    }
}

/// The encoder's result for a padded batch, with the cross-attention K/V of every decoder layer.
public final class MuEncoderOutput {
    public let batch: Int
    public let length: Int
    /// ln_e(encoder(x)): [B, L, C].
    public let hidden: Tensor
    /// 1 where the input token is not the pad id: [B*L].
    let keep: [UInt8]
    /// Per decoder layer: K and V projected from `hidden`, [B*L, kvWidth] each, fp32, f16 or int8 (``MuModel/crossKV``).
    let cross: [CrossAttentionKV]

    init(batch: Int, length: Int, hidden: Tensor, keep: [UInt8], cross: [CrossAttentionKV]) {
        self.batch = batch
        self.length = length
        self.hidden = hidden
        self.keep = keep
        self.cross = cross
    }

    var bytes: Int { hidden.count * 4 + cross.reduce(0) { $0 + $1.bytes } + keep.count }
}

/// The Mu encoder-decoder model.
///
/// ```swift
/// let mu = try MuModel(folder: "Tests/EncoreTests/Fixtures/mu/gqa_mod")
/// let enc = try mu.encode([[5, 9, 13]])                                 // [B=1, L=3, C]
/// let logits = try mu.teacherForcedLogits(encoderIds: [[5, 9, 13]], decoderIds: [[1, 7]])  // [1, 2, V]
/// ```
public final class MuModel: LanguageModel {
    public let config: MuConfig
    let wte: Tensor          // [V, C]
    let lmHead: Tensor       // [V, C], tied to wte unless the checkpoint has lm_head.weight
    /// Decode-format copy of the head, when ``useDecodeWeights(_:encoder:keepFP32:)`` chose one.
    private(set) var lmHeadDecode: QuantizedMatrix?
    private(set) var encoderBlocks: [MuEncoderBlock]
    let lnE: RMSNorm
    private(set) var decoderBlocks: [MuDecoderBlock]
    let lnF: RMSNorm

    public var modelType: String { "mu" }
    public var vocabSize: Int { config.vocabSize }
    public var bosTokenId: Int? { config.bosTokenId }
    public var eosTokenId: Int? { config.eosTokenId }
    public var padTokenId: Int { config.padTokenId }
    public var isEncoderDecoder: Bool { true }
    public var parameterCount: Int { ParameterCount.mu(config) + (lmHead.storage === wte.storage ? 0 : lmHead.count) }

    /// Loads `folder/config.json` + `folder/model.safetensors`.
    public convenience init(folder: String) throws {
        let (data, type, path) = try ConfigFile.read(folder: folder)
        guard type == "mu" else { throw EncoreError(.invalidConfig, "\(path): model_type is '\(type)', expected 'mu'") }
        let config = try ConfigFile.decode(MuConfig.self, from: data, path: path)
        try config.validate(path: path)
        try self.init(config: config, file: SafeTensorsFile(path: folder + "/model.safetensors"))
    }

    public convenience init(config: MuConfig, file: SafeTensorsFile) throws {
        try self.init(config: config, loader: WeightLoader(file: file))
    }

    /// A model with random weights (for benchmarks and fresh training runs).
    public convenience init(config: MuConfig, randomSeed: UInt64) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .random(seed: randomSeed)))
    }

    /// A fresh model initialised as the reference does (matrices N(0, 0.02), zero biases, unit norms).
    public convenience init(config: MuConfig, referenceInitSeed seed: UInt64) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .referenceInit(seed: seed)))
    }

    /// Writes `folder/config.json` and `folder/model.safetensors` (reference tensor names, tied head
    /// omitted), both atomically.
    public func save(to folder: String, dtype: SafeTensorsDType = .F32) throws {
        try ModelFolder.write(config: config, tensors: namedTensors(), to: folder, dtype: dtype, metadata: ["format": "pt"])
    }

    /// A model from named tensors (reference state-dict names).
    public convenience init(config: MuConfig, tensors: [String: Tensor]) throws {
        try config.validate()
        try self.init(config: config, loader: WeightLoader(source: .dictionary(tensors, name: "tensors")))
    }

    init(config: MuConfig, loader l: WeightLoader) throws {
        self.config = config
        let c = config
        wte = try l.tensor("transformer.wte.weight", shape: [c.vocabSize, c.nEmbd])
        lmHead = try l.optional("lm_head.weight", shape: [c.vocabSize, c.nEmbd]) ?? wte
        encoderBlocks = try (0..<c.nEncoderLayer).map { try MuEncoderBlock(l, "transformer.e.\($0)", c) }
        lnE = try RMSNorm(l, "transformer.ln_e", dim: c.nEmbd)
        decoderBlocks = try (0..<c.nDecoderLayer).map { try MuDecoderBlock(l, "transformer.h.\($0)", c) }
        lnF = try RMSNorm(l, "transformer.ln_f", dim: c.nEmbd)
        try l.checkAllUsed()
    }

    /// Every weight by its reference name (lm_head omitted when tied), for writing checkpoints.
    public func namedTensors() -> [String: Tensor] {
        var d: [String: Tensor] = ["transformer.wte.weight": wte, "transformer.ln_e.weight": lnE.weight, "transformer.ln_f.weight": lnF.weight]
        if lmHead.storage !== wte.storage { d["lm_head.weight"] = lmHead }
        func attn(_ p: String, _ a: AttentionWeights) {
            for (n, lin) in [("q_linear", a.q), ("k_linear", a.k), ("v_linear", a.v), ("out_linear", a.out)] {
                d["\(p).\(n).weight"] = lin.weight
                d["\(p).\(n).bias"] = lin.bias!
            }
        }
        func mlp(_ p: String, _ m: MLP) {
            d["\(p).fc1.weight"] = m.fc1.weight; d["\(p).fc1.bias"] = m.fc1.bias!
            d["\(p).fc2.weight"] = m.fc2.weight; d["\(p).fc2.bias"] = m.fc2.bias!
        }
        for (i, b) in encoderBlocks.enumerated() {
            d["transformer.e.\(i).ln1.weight"] = b.ln1.weight
            d["transformer.e.\(i).ln2.weight"] = b.ln2.weight
            attn("transformer.e.\(i).attn", b.attn)
            mlp("transformer.e.\(i).mlp", b.mlp)
        }
        for (i, b) in decoderBlocks.enumerated() {
            d["transformer.h.\(i).ln1.weight"] = b.ln1.weight
            d["transformer.h.\(i).ln2.weight"] = b.ln2.weight
            d["transformer.h.\(i).ln3.weight"] = b.ln3.weight
            attn("transformer.h.\(i).causal_attn", b.causalAttn)
            attn("transformer.h.\(i).cross_attn", b.crossAttn)
            mlp("transformer.h.\(i).mlp", b.mlp)
        }
        return d
    }

    /// Streams the decoder's matrices and the head as bf16 during decode steps (half the bytes per token);
    /// the encoder and prompt passes keep fp32. Same as `useDecodeWeights(.bf16)`.
    public func useBF16ForDecode() { useDecodeWeights(.bf16) }

    /// Chooses the weight format decode steps stream: the decoder's matrices and the head. The cross-attention
    /// K/V projections run once per request with the encoder and follow `encoder`.
    ///
    /// - `encoder`: format of the encoder's matrices (and the cross K/V projections), which only prompt passes
    ///   use; nil keeps fp32. A non-f32 encoder format drops the fp32 copies (memory), and prompt passes then
    ///   dequantize each matrix per call (plus the format's rounding error).
    /// - `keepFP32: false` also drops the decoder's fp32 copies (teacher-forced passes then dequantize per call).
    ///
    /// ```swift
    /// mu.useDecodeWeights(.q8_0)                        // decoder + head streamed as Q8_0, fp32 kept for prompts
    /// mu.useDecodeWeights(.int8, encoder: .bf16, keepFP32: false)
    /// ```
    public func useDecodeWeights(_ format: WeightFormat, encoder: WeightFormat? = nil, keepFP32: Bool = true) {
        for i in decoderBlocks.indices {
            decoderBlocks[i].causalAttn.useDecodeWeights(format, keepFP32: keepFP32)
            decoderBlocks[i].crossAttn.q.useDecodeWeights(format, keepFP32: keepFP32)
            decoderBlocks[i].crossAttn.out.useDecodeWeights(format, keepFP32: keepFP32)
            decoderBlocks[i].mlp.useDecodeWeights(format, keepFP32: keepFP32)
        }
        lmHeadDecode = format == .f32 ? nil : QuantizedMatrix(lmHead, format: format)
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
            encoderBlocks[i].attn.useDecodeWeights(format, keepFP32: keep)
            encoderBlocks[i].mlp.useDecodeWeights(format, keepFP32: keep)
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
    /// mu.useDecodeWeights(.int8); try mu.usePromptWeights(.int8)   // int8 everywhere, as CTranslate2's and PyTorch's int8
    /// ```
    public func usePromptWeights(_ weights: PromptWeights) throws {
        defer { if weights != .f32 { BufferPool.shared.drain() } }   // the released fp32 copies back to the system
        let format = decoderBlocks.first?.mlp.fc1.decodeFormat ?? .f32
        // a chosen one stays; a kept GGUF's K-quant / Q5 decoder format cannot be made from fp32: its encoder keeps its own blocks
        if (weights == .decode || weights == .blocks) && format != .f32 && format.isQuantizationTarget && chosenEncoderFormat == nil {
            setEncoderWeights(format)
        }
        for i in encoderBlocks.indices {
            encoderBlocks[i].attn.updateLinears { $0.usePromptWeights(weights) }
            encoderBlocks[i].mlp.updateLinears { $0.usePromptWeights(weights) }
        }
        for i in decoderBlocks.indices {
            decoderBlocks[i].causalAttn.updateLinears { $0.usePromptWeights(weights) }
            decoderBlocks[i].crossAttn.updateLinears { $0.usePromptWeights(weights) }
            decoderBlocks[i].mlp.updateLinears { $0.usePromptWeights(weights) }
        }
    }

    /// Bytes one decode step streams: the decoder's matrices (without the cross K/V projections) and the head.
    public var decodeWeightBytes: Int {
        var n = lmHeadDecode?.byteCount ?? lmHead.count * 4
        for b in decoderBlocks {
            n += [b.causalAttn.q, b.causalAttn.k, b.causalAttn.v, b.causalAttn.out, b.crossAttn.q, b.crossAttn.out, b.mlp.fc1, b.mlp.fc2]
                .reduce(0) { $0 + $1.decodeBytes }
        }
        return n
    }

    // MARK: encoder

    /// Right-pads rows with the pad id to a common length, as the reference's data pipeline does.
    func padBatch(_ rows: [[Int]], what: String) throws -> (ids: [Int], length: Int) {
        guard !rows.isEmpty else { throw EncoreError(.invalidArgument, "\(what): empty batch") }
        for (i, r) in rows.enumerated() {
            guard !r.isEmpty else { throw EncoreError(.invalidArgument, "\(what) \(i): empty token sequence") }
            try TokenCheck.validate(r, vocab: config.vocabSize, what: "\(what) \(i)")
        }
        let L = rows.map(\.count).max()!
        var ids: [Int] = []
        ids.reserveCapacity(rows.count * L)
        for r in rows { ids += r + [Int](repeating: config.padTokenId, count: L - r.count) }
        return (ids, L)
    }

    /// Runs the encoder on a batch (rows right-padded with the pad id) and projects every decoder layer's
    /// cross-attention K/V once.
    public func encode(_ rows: [[Int]]) throws -> MuEncoderOutput {
        let (ids, L) = try padBatch(rows, what: "input")
        let B = rows.count
        let shape = config.attention
        let keep = ids.map { $0 == config.padTokenId ? UInt8(0) : 1 }
        // Centred positions: i − ⌊(L−1)/2⌋, L the padded length.
        let centre = (L - 1) / 2
        let positions = (0..<(B * L)).map { Float($0 % L - centre) }
        let ropeTable = Ops.RoPETable(positions: positions, invFreq: config.rope.inverseFrequencies(sequenceLength: L))
        var scratch: [Float] = []

        StepProfile.begin(prompt: true)
        defer { StepProfile.end() }
        var x = Ops.embedding(wte, ids: ids)                               // [B*L, C]
        StepProfile.lap(.embed)
        for block in encoderBlocks {
            let h = block.ln1(x)                                           // [B*L, C]
            StepProfile.lap(.norm)
            let qkv = Linear.shared(h, [block.attn.q, block.attn.k, block.attn.v])
            let q = qkv[0], k = qkv[1], v = qkv[2]                         // [B*L, H*D], [B*L, Hkv*D]
            StepProfile.lap(.qkvGEMV)
            Ops.ropeInPlace(q, heads: shape.heads, headDim: shape.headDim, table: ropeTable)
            Ops.ropeInPlace(k, heads: shape.kvHeads, headDim: shape.headDim, table: ropeTable)
            StepProfile.lap(.ropeCache)
            let o = Ops.batchedAttention(q: q, k: k, v: v, batch: B, tq: L, kvRows: L, keyKeep: keep,
                                         shape: shape.withBF16Products(block.attn.out.promptRunsNarrow),
                                         causalOffset: -1, scratch: &scratch)   // [B*L, H*D]
            StepProfile.lap(.selfAttention)
            block.attn.out.accumulate(into: x, o)                         // x += out(o)
            StepProfile.lap(.selfOutGEMV)
            let m = block.ln2(x)
            StepProfile.lap(.norm)
            block.mlp.accumulate(into: x, m)                              // x += mlp(ln2(x)) (laps up and down)
        }
        x = lnE(x)
        StepProfile.lap(.norm)
        // every decoder layer's K and V of x (in one call, or four layers per call when stored in f16 or int8)
        let cross = CrossAttentionKV.project(x, decoderBlocks.map { ($0.crossAttn.k, $0.crossAttn.v) }, storage: crossKV, headDim: shape.headDim)
        StepProfile.lap(.crossKV)
        return MuEncoderOutput(batch: B, length: L, hidden: x.reshaped([B, L, config.nEmbd]), keep: keep, cross: cross)
    }

    /// The storage of the cross-attention K/V of later ``encode(_:)`` calls (``KVRowFormat``): f16 halves the bytes
    /// decode steps read over the encoder positions (in fp32 7.9 of Mu-330M's 8.4 MB of attention reads per step at
    /// 512 input tokens, 63 MB at 4,096), int8 quarters them; scores and outputs are computed in fp32 from the widened
    /// values. A layer whose K or V does not fit the storage stays fp32. fp32 by default;
    /// ``LanguageModel/useKVCache(_:)`` sets it with the self-attention cache (`.int8`: int8; `.auto`: f16 beside bf16
    /// or quantized decode weights, the CLI's default; ``LanguageModel/crossKVRows(_:)``).
    public var crossKV: KVRowFormat = .f32
    /// The storage of the decoder's self-attention KV caches built afterwards (generation, scoring), as
    /// ``LlamaModel/kvRows``: fp32 by default, f16 or int8.
    public var kvRows: KVRowFormat = .f32

    // MARK: decoder

    /// Decoder state for one batch: the encoder output, the self-attention caches and the tokens fed so far.
    final class DecoderState {
        let encoder: MuEncoderOutput
        let caches: [KVCache]
        /// Decoder tokens fed so far, per row.
        var history: [[Int]]
        /// Attention kernel scratch, kept across steps (a decode step allocates no buffer).
        var scratch: [Float] = []
        var length: Int { caches.first?.length ?? 0 }
        init(encoder: MuEncoderOutput, caches: [KVCache]) {
            self.encoder = encoder
            self.caches = caches
            self.history = [[Int]](repeating: [], count: encoder.batch)
        }
    }

    func makeDecoderState(_ enc: MuEncoderOutput, capacity: Int) -> DecoderState {
        DecoderState(encoder: enc, caches: decoderBlocks.map { _ in
            KVCache(batch: enc.batch, width: config.attention.kvWidth, capacity: capacity, rows: kvRows,
                    headDim: config.attention.headDim)
        })
    }

    /// Runs the decoder on `n` new tokens per row (ids: [B*n], row-major), extending the caches.
    /// Returns logits [B*n, V], or only the last position's [B, V] when `lastOnly`.
    func decode(_ state: DecoderState, ids newIds: [Int], n newCount: Int, lastOnly: Bool) -> Tensor {
        let B = state.encoder.batch, L = state.encoder.length
        for b in 0..<B { state.history[b] += newIds[(b * newCount)..<((b + 1) * newCount)] }
        var ids = newIds, n = newCount
        // With rope_factor > 1 the reference's dynamic NTK base depends on the decoder length: past block_size
        // every position's rotation changes at each step, so (like the reference) the prefix is recomputed.
        if config.ropeFactor > 1 && state.length + newCount > config.blockSize {
            for c in state.caches { c.reset() }
            ids = state.history.flatMap { $0 }
            n = state.history[0].count
        }
        let shape = config.attention
        let start = state.length
        let total = start + n
        let positions = (0..<(B * n)).map { Float(start + $0 % n) }
        let rope = Ops.RoPETable(positions: positions, invFreq: config.rope.inverseFrequencies(sequenceLength: total))
        let newKeep = ids.map { $0 == config.padTokenId ? UInt8(0) : 1 }

        StepProfile.begin(prompt: n > 1)
        defer { StepProfile.end() }
        var x = Ops.embedding(wte, ids: ids)                               // [B*n, C]
        StepProfile.lap(.embed)
        // by address: a block copy per layer would retain and release its references, cold after the weights streamed past
        decoderBlocks.withUnsafeBufferPointer { blocks in
        for layer in blocks.indices {
            // causal self-attention with the cache
            let h1 = blocks[layer].ln1(x)
            StepProfile.lap(.norm)
            Ops.addInPlace(x, blocks[layer].causalAttn.cachedSelfAttention(h1, batch: B, n: n, cache: state.caches[layer],
                                                                           newKeep: newKeep, rope: rope, shape: shape,
                                                                           scratch: &state.scratch))
            StepProfile.lap(.selfOutGEMV)
            // cross-attention over the encoder output (K/V projected once, no RoPE)
            let h2 = blocks[layer].ln2(x)
            StepProfile.lap(.norm)
            let qc = blocks[layer].crossAttn.q(h2)                          // [B*n, H*D]
            StepProfile.lap(.crossQGEMV)
            let oc = Ops.crossAttention(q: qc, kv: state.encoder.cross[layer], batch: B, tq: n, kvRows: L,   // [B*n, H*D]
                                        keyKeep: state.encoder.keep, shape: shape, scaled: true, scratch: &state.scratch)
            StepProfile.lap(.crossAttention)
            blocks[layer].crossAttn.out.accumulate(into: x, oc)
            StepProfile.lap(.crossOutGEMV)
            let h3 = blocks[layer].ln3(x)
            StepProfile.lap(.norm)
            blocks[layer].mlp.accumulate(into: x, h3)
        }
        }
        if lastOnly && n > 1 { x = Ops.lastRows(x, batch: B, n: n) }
        let h = lnF(x)
        if let lmHeadDecode, h.shape[0] <= 8 {
            let logits = Ops.linearQuantized(h, weight: lmHeadDecode, bias: nil)   // [R, V]
            StepProfile.lap(.head)
            return logits
        }
        return Ops.linear(h, weight: lmHead, bias: nil)                  // [R, V]
    }

    /// Teacher-forced logits [B, T, V] for decoder inputs (rows right-padded with the pad id), the
    /// reference's `forward(encoder_input_ids, decoder_input_ids).logits`.
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
        let model: MuModel
        let decoder: DecoderState
        var logits: Tensor
        let encodeSeconds: Double
        var batchSize: Int { decoder.encoder.batch }
        var cacheBytes: Int { decoder.encoder.bytes + decoder.caches.reduce(0) { $0 + $1.bytes } }

        init(model: MuModel, decoder: DecoderState, logits: Tensor, encodeSeconds: Double) {
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
        let logits = decode(state, ids: [Int](repeating: config.bosTokenId, count: prompts.count), n: 1, lastOnly: true)
        return State(model: self, decoder: state, logits: logits, encodeSeconds: t1 - t0)
    }

    public func score(input: [Int], target: [Int]) throws -> [Float] {
        guard !target.isEmpty else { return [] }
        try TokenCheck.validate(target, vocab: config.vocabSize, what: "target")
        let logits = try teacherForcedLogits(encoderIds: [input], decoderIds: [[config.bosTokenId] + target.dropLast()])
        let lp = Ops.logSoftmax(logits.reshaped([target.count, config.vocabSize]))
        return target.enumerated().map { lp[$0.offset, $0.element] }
    }
}
