import Foundation

/// Trainable Mu weights: one ``Variable`` per reference state-dict name (`transformer.e.0.attn.q_linear.weight`,
/// ...), each holding its own copy of the values (checkpoints may be memory-mapped read-only). The tied
/// head has no entry of its own: `transformer.wte.weight` receives both the embedding's and the head's
/// gradient, as the reference's shared parameter does.
///
/// ```swift
/// let params = MuParameters(model: try MuModel(folder: dir))
/// let logits = try params.logits(encoderIds: [[5, 9, 13]], decoderIds: [[1, 7]])  // Variable [1, 2, V]
/// ```
public final class MuParameters: ModelParameters {
    public let config: MuConfig

    /// Copies the weights of `model`.
    public init(model: MuModel) {
        config = model.config
        super.init(tensors: model.namedTensors(), family: "Mu", config: model.config)
    }

    /// An inference model holding copies of the current values, or (`copy: false`) sharing them: it then
    /// follows every optimizer update.
    public func makeModel(copy: Bool = true) throws -> MuModel {
        try MuModel(config: config, tensors: tensors(copy: copy))
    }

    /// fc2(gelu(fc1(x))), then dropout as the reference's `MuMLP`.
    private func mlp(_ x: Variable, _ prefix: String, _ dropout: Dropout?) -> Variable {
        let y = linear(Variable.gelu(linear(x, prefix + ".fc1")), prefix + ".fc2")      // [R, C]
        guard let m = dropout?.mask(y.shape) else { return y }
        return Variable.masked(y, by: m)
    }

    /// Right-pads rows with the pad id (as ``MuModel/teacherForcedLogits(encoderIds:decoderIds:)``).
    private func pad(_ rows: [[Int]], what: String) throws -> (ids: [Int], length: Int) {
        guard !rows.isEmpty else { throw EncoreError(.invalidArgument, "\(what): empty batch") }
        for (i, r) in rows.enumerated() {
            guard !r.isEmpty else { throw EncoreError(.invalidArgument, "\(what) \(i): empty token sequence") }
            try TokenCheck.validate(r, vocab: config.vocabSize, what: "\(what) \(i)")
        }
        let L = rows.map(\.count).max()!
        return (rows.flatMap { $0 + [Int](repeating: config.padTokenId, count: L - $0.count) }, L)
    }

    /// Teacher-forced logits [B, T, V] on the tape: the reference `Mu.forward(encoder_input_ids,
    /// decoder_input_ids).logits`. Without `dropout` (eval mode) the same ops and values as
    /// ``MuModel/teacherForcedLogits(encoderIds:decoderIds:)``; with it, training mode (dropout on the attention
    /// probabilities and on every MLP output, from Encore's random stream).
    public func logits(encoderIds: [[Int]], decoderIds: [[Int]], dropout: Dropout? = nil) throws -> Variable {
        guard encoderIds.count == decoderIds.count else {
            throw EncoreError(.invalidArgument, "batch size mismatch: \(encoderIds.count) encoder rows, \(decoderIds.count) decoder rows")
        }
        let c = config, shape = c.attention, B = encoderIds.count
        let (encIds, L) = try pad(encoderIds, what: "input")
        let (decIds, T) = try pad(decoderIds, what: "decoder input")
        let encKeep = encIds.map { $0 == c.padTokenId ? UInt8(0) : 1 }
        let decKeep = decIds.map { $0 == c.padTokenId ? UInt8(0) : 1 }
        let wte = self["transformer.wte.weight"]

        // encoder: centred positions i − ⌊(L−1)/2⌋
        let encPos = (0..<(B * L)).map { Float($0 % L - (L - 1) / 2) }
        let encFreq = c.rope.inverseFrequencies(sequenceLength: L)
        var x = Variable.embedding(wte, ids: encIds)                                 // [B*L, C]
        for i in 0..<c.nEncoderLayer {
            let p = "transformer.e.\(i)"
            let h = Variable.rmsNorm(x, self[p + ".ln1.weight"])
            let q = Variable.rope(linear(h, p + ".attn.q_linear"), heads: shape.heads, headDim: shape.headDim,
                                  positions: encPos, invFreq: encFreq)               // [B*L, H*D]
            let k = Variable.rope(linear(h, p + ".attn.k_linear"), heads: shape.kvHeads, headDim: shape.headDim,
                                  positions: encPos, invFreq: encFreq)               // [B*L, Hkv*D]
            let v = linear(h, p + ".attn.v_linear")
            let o = Variable.attention(q: q, k: k, v: v, batch: B, shape: shape, keyKeep: encKeep, causal: false,
                                       dropMask: dropout?.mask([B, shape.heads, L, L]))
            x = x + linear(o, p + ".attn.out_linear")
            x = x + mlp(Variable.rmsNorm(x, self[p + ".ln2.weight"]), p + ".mlp", dropout)
        }
        let enc = Variable.rmsNorm(x, self["transformer.ln_e.weight"])             // [B*L, C]

        // decoder: positions 0..T-1, causal self-attention, cross-attention without RoPE
        let decPos = (0..<(B * T)).map { Float($0 % T) }
        let decFreq = c.rope.inverseFrequencies(sequenceLength: T)
        var y = Variable.embedding(wte, ids: decIds)                                 // [B*T, C]
        for i in 0..<c.nDecoderLayer {
            let p = "transformer.h.\(i)"
            let h = Variable.rmsNorm(y, self[p + ".ln1.weight"])
            let q = Variable.rope(linear(h, p + ".causal_attn.q_linear"), heads: shape.heads, headDim: shape.headDim,
                                  positions: decPos, invFreq: decFreq)
            let k = Variable.rope(linear(h, p + ".causal_attn.k_linear"), heads: shape.kvHeads, headDim: shape.headDim,
                                  positions: decPos, invFreq: decFreq)
            let v = linear(h, p + ".causal_attn.v_linear")
            let o = Variable.attention(q: q, k: k, v: v, batch: B, shape: shape, keyKeep: decKeep, causal: true,
                                       dropMask: dropout?.mask([B, shape.heads, T, T]))
            y = y + linear(o, p + ".causal_attn.out_linear")
            let qc = linear(Variable.rmsNorm(y, self[p + ".ln2.weight"]), p + ".cross_attn.q_linear")   // [B*T, H*D]
            let kc = linear(enc, p + ".cross_attn.k_linear"), vc = linear(enc, p + ".cross_attn.v_linear")  // [B*L, Hkv*D]
            let oc = Variable.attention(q: qc, k: kc, v: vc, batch: B, shape: shape, keyKeep: encKeep, causal: false,
                                        dropMask: dropout?.mask([B, shape.heads, T, L]))
            y = y + linear(oc, p + ".cross_attn.out_linear")
            y = y + mlp(Variable.rmsNorm(y, self[p + ".ln3.weight"]), p + ".mlp", dropout)
        }
        let head = variables["lm_head.weight"] ?? wte
        let logits = Variable.linear(Variable.rmsNorm(y, self["transformer.ln_f.weight"]), head, nil)   // [B*T, V]
        return logits.reshaped([B, T, c.vocabSize])
    }

    /// The reference `Mu.forward(..., targets).loss`: `F.cross_entropy(logits, targets, ignore_index=pad)`
    /// averaged over non-pad targets. `targets` rows are right-padded with the pad id to the decoder length.
    public func loss(encoderIds: [[Int]], decoderIds: [[Int]], targets: [[Int]], dropout: Dropout? = nil) throws -> Variable {
        let logits = try self.logits(encoderIds: encoderIds, decoderIds: decoderIds, dropout: dropout)   // [B, T, V]
        let T = logits.shape[1]
        guard targets.count == decoderIds.count, targets.allSatisfy({ $0.count <= T }) else {
            throw EncoreError(.invalidArgument, "targets must have one row of at most \(T) ids per decoder row")
        }
        let flat = targets.flatMap { $0 + [Int](repeating: config.padTokenId, count: T - $0.count) }
        return Variable.crossEntropy(logits, targets: flat, ignoreIndex: config.padTokenId)
    }
}

/// Training-mode dropout (`nn.Dropout(p)`): masks drawn from a seeded SplitMix64 stream, one per use.
public final class Dropout {
    public let p: Float
    private var rng: SplitMix64
    public init(p: Float, seed: UInt64) {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1)")
        self.p = p
        rng = SplitMix64(seed: seed)
    }
    /// A fresh mask of 0 and 1/(1 − p) (``Ops/dropoutMask(shape:p:rng:)``), or nil when p is 0.
    /// The state of the mask stream (saved in checkpoints; setting it continues that stream exactly).
    public var rngState: UInt64 {
        get { rng.state }
        set { rng = SplitMix64(seed: newValue) }
    }
    public func mask(_ shape: [Int]) -> Tensor? {
        p == 0 ? nil : Ops.dropoutMask(shape: shape, p: p, rng: &rng)
    }
}
