import Foundation

/// Trainable weights of the decoder-only baseline (``MuDecoderModel``, "mu_decoder"): one ``Variable`` per
/// reference tensor name (copies of the model's weights; the tied head shares `transformer.wte.weight`,
/// which then receives both the embedding's and the head's gradient).
///
/// The forward is the Mu encoder block made causal (the reference `MuEncoderBlock` with
/// `attn.is_causal = True`): RoPE from position 0, causal mask plus key padding, pre-norm RMSNorm, GELU MLP,
/// final RMSNorm and the head. The paper's baseline is trained as a causal LM on `source ‖ target` with the
/// loss on the target positions only (``causalLMBatch(sources:targets:eos:pad:)``, ``loss(sources:targets:dropout:)``).
///
/// ```swift
/// let params = MuDecoderParameters(model: try MuDecoderModel(folder: dir))
/// let loss = try params.loss(sources: [[5, 9]], targets: [[7, 8]])   // CE over 7, 8, EOS
/// loss.backward()
/// ```
public final class MuDecoderParameters: ModelParameters {
    public let config: MuDecoderConfig

    /// Copies the weights of `model`.
    public init(model: MuDecoderModel) {
        config = model.config
        super.init(tensors: model.namedTensors(), family: "mu_decoder", config: model.config)
    }

    /// An inference model holding copies of the current values, or (`copy: false`) sharing them: it then
    /// follows every optimizer update.
    public func makeModel(copy: Bool = true) throws -> MuDecoderModel {
        try MuDecoderModel(config: config, tensors: tensors(copy: copy))
    }

    /// Logits [B, T, V] on the tape for right-padded rows read from position 0 (pad keys masked): in eval mode
    /// (no `dropout`) the same values as ``MuDecoderModel/logits(_:)``; with a ``Dropout``, training mode
    /// (attention probabilities and MLP outputs, as the reference's `MuEncoderBlock`).
    public func logits(_ rows: [[Int]], dropout: Dropout? = nil) throws -> Variable {
        guard !rows.isEmpty else { throw EncoreError(.invalidArgument, "empty batch") }
        for (i, r) in rows.enumerated() {
            guard !r.isEmpty else { throw EncoreError(.invalidArgument, "input \(i): empty token sequence") }
            try TokenCheck.validate(r, vocab: config.vocabSize, what: "input \(i)")
        }
        let c = config, shape = c.attention, B = rows.count
        let T = rows.map(\.count).max()!
        let ids = rows.flatMap { $0 + [Int](repeating: c.padTokenId, count: T - $0.count) }
        let keep = ids.map { $0 == c.padTokenId ? UInt8(0) : 1 }
        let pos = (0..<(B * T)).map { Float($0 % T) }
        let freq = c.rope.inverseFrequencies(sequenceLength: T)
        let wte = self["transformer.wte.weight"]
        var x = Variable.embedding(wte, ids: ids)                                     // [B*T, C]
        for i in 0..<c.nLayer {
            let p = "transformer.h.\(i)"
            let h = Variable.rmsNorm(x, self[p + ".ln1.weight"])
            let q = Variable.rope(linear(h, p + ".attn.q_linear"), heads: shape.heads, headDim: shape.headDim,
                                  positions: pos, invFreq: freq)
            let k = Variable.rope(linear(h, p + ".attn.k_linear"), heads: shape.kvHeads, headDim: shape.headDim,
                                  positions: pos, invFreq: freq)
            let v = linear(h, p + ".attn.v_linear")
            let o = Variable.attention(q: q, k: k, v: v, batch: B, shape: shape, keyKeep: keep, causal: true,
                                       dropMask: dropout?.mask([B, shape.heads, T, T]))
            x = x + linear(o, p + ".attn.out_linear")
            var m = linear(Variable.gelu(linear(Variable.rmsNorm(x, self[p + ".ln2.weight"]), p + ".mlp.fc1")), p + ".mlp.fc2")
            if let mask = dropout?.mask(m.shape) { m = Variable.masked(m, by: mask) }
            x = x + m
        }
        let head = variables["lm_head.weight"] ?? wte
        return Variable.linear(Variable.rmsNorm(x, self["transformer.ln_f.weight"]), head, nil).reshaped([B, T, c.vocabSize])
    }

    /// Causal-LM rows for the paper's baseline: input = `source ‖ target` (the sequence
    /// `source ‖ target ‖ EOS` without its last token) and labels = the next token at every position from the
    /// last source token on (predicting the target and EOS), `pad` elsewhere (ignored by the loss).
    /// With `maxTargetLength`, `target ‖ EOS` is cut to that many tokens first (as the seq2seq labels are).
    public static func causalLMBatch(sources: [[Int]], targets: [[Int]], eos: Int, pad: Int,
                                     maxTargetLength: Int? = nil) throws -> (inputs: [[Int]], labels: [[Int]]) {
        guard sources.count == targets.count, !sources.isEmpty else {
            throw EncoreError(.invalidArgument, "causal-LM batch: \(sources.count) sources, \(targets.count) targets")
        }
        var inputs: [[Int]] = [], labels: [[Int]] = []
        for (i, (s, t)) in zip(sources, targets).enumerated() {
            guard !s.isEmpty else { throw EncoreError(.invalidArgument, "example \(i): empty source") }
            let seq = s + Array((t + [eos]).prefix(maxTargetLength ?? Int.max))
            inputs.append(Array(seq.dropLast()))
            labels.append((0..<(seq.count - 1)).map { $0 + 1 >= s.count ? seq[$0 + 1] : pad })
        }
        return (inputs, labels)
    }

    /// Cross-entropy (pad ignored, mean over the counted positions) of the causal LM on
    /// ``causalLMBatch(sources:targets:eos:pad:)`` rows: the loss covers the target tokens and EOS only.
    public func loss(sources: [[Int]], targets: [[Int]], dropout: Dropout? = nil) throws -> Variable {
        guard let eos = config.eosTokenId else { throw EncoreError(.invalidConfig, "mu_decoder config has no eos_token_id") }
        let (inputs, labels) = try Self.causalLMBatch(sources: sources, targets: targets, eos: eos, pad: config.padTokenId)
        return try loss(inputs: inputs, labels: labels, dropout: dropout)
    }

    /// Cross-entropy of `logits(inputs)` against `labels` (rows as long as their inputs; pad ignored).
    public func loss(inputs: [[Int]], labels: [[Int]], dropout: Dropout? = nil) throws -> Variable {
        guard inputs.count == labels.count, zip(inputs, labels).allSatisfy({ $0.count == $1.count }) else {
            throw EncoreError(.invalidArgument, "labels must have one row per input row, of the same length")
        }
        let logits = try self.logits(inputs, dropout: dropout)
        let T = logits.shape[1]
        let flat = labels.flatMap { $0 + [Int](repeating: config.padTokenId, count: T - $0.count) }
        return Variable.crossEntropy(logits, targets: flat, ignoreIndex: config.padTokenId)
    }
}

/// Causal-LM training of a ``MuDecoderModel`` (the paper's decoder-only baseline) on seq2seq pairs: each example is
/// `source` (cut to `encoderSeqLen`) ‖ `target + EOS` (cut to `decoderSeqLen`), loss on the target only
/// (``MuDecoderParameters/loss(inputs:labels:dropout:)``); everything else (accumulation, clipping, AdamW, schedule,
/// seeded shuffling and dropout, checkpoints, bucketing) is ``Trainer``'s.
///
/// Distillation: the decoder-only student reads `source ‖ target[..<T − 1]` (target = the
/// ``DistillationItem/target``, padded to T) and its position |source| − 1 + t, which predicts target[t], is
/// compared with the teacher's position encoderSeqLen − 1 + t — the same target positions an encoder-decoder
/// student is trained on. With targets from the data, that row is the causal-LM row plus padding, so the same
/// pass gives the cross-entropy.
public final class CausalLMTrainer: Trainer {
    public let parameters: MuDecoderParameters

    /// `steps` gives the schedule's length; without it (⌊data / batch⌋ · epochs) / accumulation.
    public init(parameters: MuDecoderParameters, data: [Seq2SeqExample], settings: Seq2SeqTrainer.Settings, epochs: Int,
                steps: Int? = nil, distillation: DistillationSettings? = nil) throws {
        let c = parameters.config
        guard let eos = c.eosTokenId else { throw EncoreError(.invalidConfig, "mu_decoder config has no eos_token_id") }
        self.parameters = parameters
        try super.init(model: parameters, data: data, settings: settings, epochs: epochs, steps: steps, distillation: distillation,
                       configDropout: Float(c.dropout), vocabSize: c.vocabSize, bos: c.bosTokenId, eos: eos, pad: c.padTokenId)
    }

    /// The loss of `examples` (training mode: dropout as configured; eval mode: none).
    public func loss(_ examples: [Seq2SeqExample], training: Bool = true) throws -> Variable {
        try ceLoss(examples, dropout: training && dropout.p > 0 ? dropout : nil)
    }

    override func ceLoss(_ examples: [Seq2SeqExample], dropout: Dropout?) throws -> Variable {
        let (inputs, labels) = try MuDecoderParameters.causalLMBatch(
            sources: examples.map { Array($0.source.prefix(settings.encoderSeqLen)) }, targets: examples.map(\.target),
            eos: eos, pad: pad, maxTargetLength: settings.decoderSeqLen)
        return try parameters.loss(inputs: inputs, labels: labels, dropout: dropout)
    }

    override func distillationForward(_ examples: [Seq2SeqExample], items: [DistillationItem], encoderLength: Int, positions T: Int,
                                      dropout: Dropout?, withCE: Bool) throws -> (logits: Variable, offsets: [Int]?, ce: Variable?) {
        let sources = examples.map { Array($0.source.prefix(encoderLength)) }
        let rows = zip(sources, items).map { $0 + $1.target.dropLast() }                // [B][S_b + T − 1]
        let logits = try parameters.logits(rows, dropout: dropout)                       // [B, maxRow, V]
        let offsets = sources.map { $0.count - 1 }
        guard withCE else { return (logits, offsets, nil) }
        let width = logits.shape[1]
        let labels = zip(offsets, items).flatMap { o, item -> [Int] in
            var row = [Int](repeating: pad, count: width)
            for t in 0..<T { row[o + t] = item.target[t] }
            return row
        }
        return (logits, offsets, Variable.crossEntropy(logits, targets: labels, ignoreIndex: pad))
    }

    public override func studentModel() throws -> LanguageModel { try parameters.makeModel(copy: false) }
}
