import Foundation
import EncoreTokenizers

/// One sequence-to-sequence pair, as token ids (before padding; the target without EOS).
public struct Seq2SeqExample: Equatable, Sendable {
    public var source: [Int]
    public var target: [Int]
    public init(source: [Int], target: [Int]) {
        self.source = source
        self.target = target
    }
}

/// What reading a training file found, decided before training starts: lines skipped (with their 1-based
/// numbers) and examples truncated to the sequence lengths (as the reference's `Seq2SeqDataset` does).
public struct Seq2SeqDataReport: Equatable, Sendable {
    /// Non-empty lines read.
    public var lines = 0
    /// Examples kept.
    public var kept = 0
    /// The 1-based line number of each kept example.
    public var exampleLines: [Int] = []
    /// Lines that are not a JSON object with usable `source`/`target` (or `source_ids`/`target_ids`) fields.
    public var malformedLines: [Int] = []
    /// Lines whose target (or source) has no tokens.
    public var emptyLines: [Int] = []
    /// Examples whose source is longer than the encoder length / whose target + EOS is longer than the
    /// decoder length: they are truncated, as the reference does.
    public var truncatedSources = 0, truncatedTargets = 0

    public init() {}

    /// Lines skipped for any reason.
    public var skipped: Int { malformedLines.count + emptyLines.count }

    /// A JSON-able summary for the training log.
    public var summary: [String: Any] {
        ["lines": lines, "kept": kept, "malformed": malformedLines.count, "malformed_lines": Array(malformedLines.prefix(20)),
         "empty": emptyLines.count, "empty_lines": Array(emptyLines.prefix(20)),
         "truncated_sources": truncatedSources, "truncated_targets": truncatedTargets]
    }
}

/// Sequence-to-sequence data in the reference's JSONL format (`mu/train_text2text_by_kd.py Seq2SeqDataset`).
public enum Seq2SeqData {
    /// Reads one `{"source": ..., "target": ...}` object per non-empty line. Values are token-id arrays, or
    /// strings encoded with `tokenizer` (with its special-token settings; required for text). Throws on the
    /// first bad line (use ``read(path:tokenizer:vocabSize:encoderSeqLen:decoderSeqLen:)`` to skip and count).
    public static func load(path: String, tokenizer: Tokenizer? = nil) throws -> [Seq2SeqExample] {
        let (examples, report) = try read(path: path, tokenizer: tokenizer)
        if let line = (report.malformedLines + report.emptyLines).min() {
            throw EncoreError(.invalidArgument, "\(path):\(line): \(report.malformedLines.contains(line) ? "not a JSON object with 'source' and 'target'" : "empty source or target")")
        }
        return examples
    }

    /// Reads and validates a whole training file before training starts, so bad data never stops a run midway.
    ///
    /// Each non-empty line is `{"source": S, "target": T}` (S, T text encoded with `tokenizer`, or arrays of
    /// token ids) or pre-tokenized `{"source_ids": [...], "target_ids": [...]}` (used as given; EOS is appended
    /// to the target at batching, as for text). Then:
    /// - a line that is not such an object (bad JSON, missing field, ids that are not integers) is skipped and
    ///   counted in ``Seq2SeqDataReport/malformedLines``;
    /// - an empty target or source is skipped and counted in ``Seq2SeqDataReport/emptyLines``;
    /// - a source longer than `encoderSeqLen`, or a target + EOS longer than `decoderSeqLen`, is kept, truncated
    ///   at batching as the reference does, and counted;
    /// - an id outside `0..<vocabSize` (or text without a tokenizer) is an error naming the line and field:
    ///   the file does not belong to this model.
    public static func read(path: String, tokenizer: Tokenizer? = nil, vocabSize: Int? = nil, encoderSeqLen: Int? = nil,
                            decoderSeqLen: Int? = nil) throws -> (examples: [Seq2SeqExample], report: Seq2SeqDataReport) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EncoreError(.invalidArgument, "\(path): cannot read")
        }
        let text = String(decoding: data, as: UTF8.self)
        var out: [Seq2SeqExample] = [], report = Seq2SeqDataReport()
        struct Malformed: Error {}
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            report.lines += 1
            let where_ = "\(path):\(i + 1)"
            guard let obj = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                report.malformedLines.append(i + 1); continue
            }
            func field(_ key: String) throws -> [Int] {
                let value = obj[key + "_ids"] ?? obj[key]
                if let s = value as? String {
                    guard let tokenizer else { throw EncoreError(.invalidArgument, "\(where_): '\(key)' is text; a tokenizer is needed") }
                    return tokenizer.encode(s)
                }
                guard let numbers = value as? [Any] else { throw Malformed() }
                return try numbers.map { n -> Int in
                    guard let d = (n as? NSNumber)?.doubleValue, d == d.rounded(), abs(d) < 1e15 else { throw Malformed() }
                    return Int(d)
                }
            }
            let source: [Int], target: [Int]
            do {
                source = try field("source"); target = try field("target")
            } catch is Malformed {
                report.malformedLines.append(i + 1); continue
            }
            if source.isEmpty || target.isEmpty { report.emptyLines.append(i + 1); continue }
            if let vocabSize {
                for (key, ids) in [("source", source), ("target", target)] {
                    if let bad = ids.first(where: { $0 < 0 || $0 >= vocabSize }) {
                        let name = obj[key + "_ids"] != nil ? key + "_ids" : key
                        throw EncoreError(.invalidArgument, "\(where_): '\(name)' has token id \(bad), outside the vocabulary 0..<\(vocabSize)")
                    }
                }
            }
            if let encoderSeqLen, source.count > encoderSeqLen { report.truncatedSources += 1 }
            if let decoderSeqLen, target.count + 1 > decoderSeqLen { report.truncatedTargets += 1 }
            out.append(Seq2SeqExample(source: source, target: target))
            report.exampleLines.append(i + 1)
        }
        report.kept = out.count
        return (out, report)
    }
}

/// A padded batch as the reference's `Seq2SeqDataset` builds it: the source truncated and right-padded to
/// `encoderSeqLen`; labels = target + EOS, truncated and right-padded to `decoderSeqLen`; decoder inputs =
/// [BOS] + labels[..<last] (so the pads after EOS are fed too, and masked as keys).
///
/// With `padToLongest` (``Trainer/Settings/bucketByLength``) both sides are padded only to the batch's longest
/// (still truncated at the sequence lengths). The cross-entropy is unchanged up to roundoff: padded keys are
/// masked, the loss ignores padded targets, and the shorter padding only shifts the encoder's centred RoPE
/// positions by a constant, which attention does not see (RoPE depends on position differences) — unless
/// `rope_factor` > 1 and the padded length passes `block_size`, where the dynamic-NTK base depends on it.
public struct Seq2SeqBatch: Equatable, Sendable {
    public var encoderIds: [[Int]]   // [B, encoderSeqLen]
    public var decoderIds: [[Int]]   // [B, decoderSeqLen]
    public var targets: [[Int]]      // [B, decoderSeqLen], pad ignored by the loss

    public init(_ examples: [Seq2SeqExample], encoderSeqLen: Int, decoderSeqLen: Int, bos: Int, eos: Int, pad: Int,
                padToLongest: Bool = false) {
        let (L, T) = padToLongest ? Self.longest(examples, encoderSeqLen: encoderSeqLen, decoderSeqLen: decoderSeqLen)
                                  : (encoderSeqLen, decoderSeqLen)
        func fit(_ ids: [Int], _ n: Int) -> [Int] { Array(ids.prefix(n)) + [Int](repeating: pad, count: max(0, n - ids.count)) }
        encoderIds = examples.map { fit($0.source, L) }
        targets = examples.map { fit($0.target + [eos], T) }
        decoderIds = targets.map { [bos] + $0.dropLast() }
    }

    /// The longest source and target + EOS of `examples`, capped at the sequence lengths.
    static func longest(_ examples: [Seq2SeqExample], encoderSeqLen: Int, decoderSeqLen: Int) -> (Int, Int) {
        (min(encoderSeqLen, examples.map(\.source.count).max() ?? 1), min(decoderSeqLen, (examples.map(\.target.count).max() ?? 0) + 1))
    }
}

/// What every trainer shares (``Seq2SeqTrainer`` for Mu, ``CausalLMTrainer`` for the decoder-only baseline),
/// following `mu/train.py Trainer`: per optimizer step, `accumulation` micro-batches each contribute
/// loss / accumulation, then clip_grad_norm_, AdamW at lr · schedule(step), in training mode (dropout p = the
/// config's unless ``Settings/dropout`` overrides it; masks from Encore's seeded stream, not torch's). Batches
/// are drawn without replacement from a seeded shuffle of the data each pass, dropping the last partial batch
/// (the reference's `DataLoader(shuffle=True, drop_last=True)`; the order itself differs from torch's).
///
/// With ``DistillationSettings`` each micro-batch is the reference `KDModel` step: targets from the data, the
/// student (sampled, the reference) or the teacher; the teacher scores [source left-padded ++ target]
/// (``DistillationItem``), and the loss is α·τ²·KL(teacher‖student) + (1 − α)·CE on the data. The state
/// (weights, AdamW, data position, random streams) is saved and restored by ``saveCheckpoint(folder:beforeWrite:)``.
public class Trainer {
    public struct Settings: Sendable {
        public var encoderSeqLen = 1024, decoderSeqLen = 256
        public var batchSize = 6, accumulation = 1
        public var learningRate = 1e-4, weightDecay = 0.01, betas = (0.9, 0.98), maxGradNorm = 1.0
        public var warmupSteps = 4
        /// Learning-rate schedule (the reference's warmup + cosine by default) and, for `wsd`, its decay fraction.
        public var schedule: LearningRateSchedule.Kind = .cosine
        public var decayFraction = 0.2
        /// Shuffle the data each epoch (false: the file's order every epoch).
        public var shuffle = true
        /// Group examples of similar length into batches (``Trainer/epochOrder()``) and pad each batch to its
        /// longest example instead of the sequence lengths.
        public var bucketByLength = false
        public var seed: UInt64 = 1337
        /// Dropout probability; nil: the model config's.
        public var dropout: Float? = nil
        public init() {}
    }

    /// What one optimizer step did (`kd` and `ce`: the distillation terms, when distilling; `tokens`: real
    /// source and target tokens, EOS included, padding excluded).
    public struct StepResult: Sendable {
        public var loss: Float, gradNorm: Double, learningRate: Double
        public var kd: Float? = nil, ce: Float? = nil
        public var tokens = 0
    }

    /// The trained weights.
    public let model: ModelParameters
    public let settings: Settings
    public let optimizer: AdamW
    public let schedule: LearningRateSchedule
    /// Distillation (the reference `KDModel`); nil: plain cross-entropy training.
    public let distillation: DistillationSettings?
    let data: [Seq2SeqExample]
    /// Optimizer steps taken.
    public internal(set) var step = 0
    /// Passes over the data begun (each starts with a new shuffle).
    public internal(set) var epoch = 0
    /// The shuffling stream.
    var rng: SplitMix64
    let dropout: Dropout
    /// The current pass's order of example indices and the position of the next batch in it.
    var order: [Int] = []
    var cursor = 0
    /// Greedy teacher targets by example key (deterministic, so computed once).
    private var teacherTargets: [String: [Int]] = [:]
    let bos: Int, eos: Int, pad: Int, vocabSize: Int

    /// `epochs` sets the schedule's length: (⌊data / batch⌋ · epochs) / accumulation optimizer steps, unless
    /// `steps` gives it directly (the data is then cycled, reshuffled each pass, as long as needed).
    init(model: ModelParameters, data: [Seq2SeqExample], settings: Settings, epochs: Int, steps: Int?,
         distillation: DistillationSettings?, configDropout: Float, vocabSize: Int, bos: Int, eos: Int, pad: Int) throws {
        guard data.count >= settings.batchSize, settings.batchSize > 0, settings.accumulation > 0 else {
            throw EncoreError(.invalidArgument, "need at least one full batch of \(settings.batchSize) examples (have \(data.count))")
        }
        guard settings.encoderSeqLen > 0, settings.decoderSeqLen > 0 else {
            throw EncoreError(.invalidArgument, "sequence lengths must be >= 1")
        }
        if let steps, steps < 1 { throw EncoreError(.invalidArgument, "steps must be >= 1 (have \(steps))") }
        let total = steps.map(Double.init) ?? Double(data.count / settings.batchSize * epochs) / Double(settings.accumulation)
        guard Double(settings.warmupSteps) < total else {
            throw EncoreError(.invalidArgument, "warmup (\(settings.warmupSteps)) must be shorter than training (\(total) steps)")
        }
        guard settings.decayFraction > 0 && settings.decayFraction <= 1 else {
            throw EncoreError(.invalidArgument, "decay fraction \(settings.decayFraction) must be in (0, 1]")
        }
        if let kd = distillation {
            guard kd.alpha >= 0 && kd.alpha <= 1 else { throw EncoreError(.invalidArgument, "distillation alpha \(kd.alpha) must be in [0, 1]") }
            guard kd.temperature > 0 && kd.temperature.isFinite else {
                throw EncoreError(.invalidArgument, "distillation temperature \(kd.temperature) must be > 0")
            }
            guard kd.cache == nil || kd.targets == .data else {
                throw EncoreError(.invalidArgument, "a teacher cache needs targets from the data (--targets data): sampled targets change every step")
            }
            let vt = kd.teacher.vocabSize
            for (what, id) in [("pad", pad), ("bos", bos), ("eos", eos), ("unk", kd.unkTokenId)] where id < 0 || id >= vt {
                throw EncoreError(.invalidArgument, "the student's \(what) id \(id) is outside the teacher's vocabulary (0..<\(vt))")
            }
            for (i, e) in data.enumerated() {
                let ids = kd.targets == .data ? e.source + e.target : e.source
                if let bad = ids.first(where: { $0 >= vt }) {
                    throw EncoreError(.invalidArgument, "example \(i + 1): token id \(bad) is outside the teacher's vocabulary (0..<\(vt))")
                }
            }
        }
        self.model = model
        self.data = data
        self.settings = settings
        self.distillation = distillation
        (self.vocabSize, self.bos, self.eos, self.pad) = (vocabSize, bos, eos, pad)
        optimizer = AdamW(parameters: model.all, learningRate: settings.learningRate, betas: settings.betas,
                          weightDecay: settings.weightDecay)
        schedule = LearningRateSchedule(settings.schedule, warmupSteps: settings.warmupSteps, totalSteps: total,
                                        decayFraction: settings.decayFraction)
        rng = SplitMix64(seed: settings.seed)
        dropout = Dropout(p: settings.dropout ?? configDropout, seed: settings.seed &+ 1)
    }

    // MARK: what each student family supplies

    /// The cross-entropy of `examples` (the family's training loss on the data).
    func ceLoss(_ examples: [Seq2SeqExample], dropout: Dropout?) throws -> Variable { fatalError("subclass") }

    /// The student's logits for the distillation items (targets [B][T]), each row's offset of target position 0
    /// (nil: 0), and — with `withCE` (targets from the data) — the cross-entropy on the data from the same pass.
    func distillationForward(_ examples: [Seq2SeqExample], items: [DistillationItem], encoderLength: Int, positions: Int,
                             dropout: Dropout?, withCE: Bool) throws -> (logits: Variable, offsets: [Int]?, ce: Variable?) {
        fatalError("subclass")
    }

    /// An inference model sharing the current weights (for sampled targets and sample generations).
    public func studentModel() throws -> LanguageModel { fatalError("subclass") }

    // MARK: data order

    /// The order of one pass: a seeded shuffle (unless `shuffle` is off); with `bucketByLength`, the shuffled
    /// examples are taken 50 batches at a time, sorted by length (source + target, as truncated) inside each such
    /// group, cut into batches, and the batches shuffled (seeded), so a batch holds similar lengths while the
    /// order of batches stays random. The last partial batch (if any) is last, and dropped as before.
    func epochOrder() -> [Int] {
        var idx = Array(data.indices)
        if settings.shuffle { idx.shuffle(using: &rng) }
        guard settings.bucketByLength else { return idx }
        let B = settings.batchSize
        func length(_ i: Int) -> Int {
            min(data[i].source.count, settings.encoderSeqLen) + min(data[i].target.count + 1, settings.decoderSeqLen)
        }
        var batches: [[Int]] = [], rest: [Int] = []
        for start in stride(from: 0, to: idx.count, by: B * 50) {
            let group = idx[start..<min(start + B * 50, idx.count)].sorted { (length($0), $0) < (length($1), $1) }
            var s = 0
            while s + B <= group.count { batches.append(Array(group[s..<(s + B)])); s += B }
            rest += group[s...]
        }
        if settings.shuffle { batches.shuffle(using: &rng) }
        return batches.flatMap { $0 } + rest
    }

    /// The next micro-batch of the current pass (a new pass when this one is used up).
    func nextExamples() -> [Seq2SeqExample] {
        if cursor + settings.batchSize > order.count {
            order = epochOrder()
            cursor = 0
            epoch += 1
        }
        let picked = order[cursor..<(cursor + settings.batchSize)].map { data[$0] }
        cursor += settings.batchSize
        return picked
    }

    /// Real tokens of `examples` as truncated: source + target + EOS.
    func tokenCount(_ examples: [Seq2SeqExample]) -> Int {
        examples.reduce(0) { $0 + min($1.source.count, settings.encoderSeqLen) + min($1.target.count + 1, settings.decoderSeqLen) }
    }

    // MARK: losses

    /// The reference `LossEvaluator`: the mean of the per-batch losses over `examples` in batches of
    /// ``Settings/batchSize`` (the last one may be smaller), in eval mode (no dropout). When distilling the loss
    /// is the distillation loss (sampled targets seeded).
    public func evaluate(_ examples: [Seq2SeqExample]) throws -> Float {
        guard !examples.isEmpty else { throw EncoreError(.invalidArgument, "evaluate: no examples") }
        var total: Float = 0, count = 0
        for start in stride(from: 0, to: examples.count, by: settings.batchSize) {
            let batch = Array(examples[start..<min(start + settings.batchSize, examples.count)])
            total += try microBatchLoss(batch, micro: count, training: false).loss.item
            count += 1
        }
        return total / Float(count)
    }

    /// Greedy generations of the current student for `sources` (cut to the encoder length), up to `maxTokens`
    /// each, stopping at EOS (kept): the sample generations a run prints.
    public func generate(sources: [[Int]], maxTokens: Int) throws -> [[Int]] {
        let m = try studentModel()
        return try sources.map {
            try Generator(model: m).generate(prompt: Array($0.prefix(settings.encoderSeqLen)),
                                             parameters: GenerationParameters(maxTokens: maxTokens, eosTokenId: eos))
        }
    }

    /// The distillation targets of `examples`: the data's target + EOS, or generated (EOS kept) by the student
    /// (sampled) or the teacher, each at most `decoderSeqLen` ids.
    func distillationTargets(_ examples: [Seq2SeqExample], micro: Int, kd: DistillationSettings) throws -> [[Int]] {
        let T = settings.decoderSeqLen
        switch kd.targets {
        case .data:
            return examples.map { Array(($0.target + [eos]).prefix(T)) }
        case .student:
            // on-policy targets from the current student (its weights, shared, not copied)
            let student = try studentModel()
            return try examples.enumerated().map { i, e in
                let g = GenerationParameters(maxTokens: T, temperature: kd.sampleTemperature, topK: kd.sampleTopK,
                                             seed: settings.seed &+ UInt64((step * settings.accumulation + micro) * settings.batchSize + i),
                                             eosTokenId: eos)
                return try Generator(model: student).generate(prompt: Array(e.source.prefix(settings.encoderSeqLen)), parameters: g)
            }
        case .teacher:
            return try examples.enumerated().map { i, e in
                let greedy = kd.teacherTemperature == 0 || kd.teacherTopK == 1
                let key = TeacherCache.key(e)
                if greedy, let known = teacherTargets[key] { return known }
                let g = GenerationParameters(maxTokens: T, temperature: kd.teacherTemperature, topK: kd.teacherTopK,
                                             seed: settings.seed &+ 0x5EED_7EAC &+ UInt64((step * settings.accumulation + micro) * settings.batchSize + i),
                                             eosTokenId: eos)
                let out = try Generator(model: kd.teacher).generate(prompt: Array(e.source.prefix(settings.encoderSeqLen)), parameters: g)
                if greedy { teacherTargets[key] = out }
                return out
            }
        }
    }

    /// The micro-batch loss: cross-entropy, or α·KL(teacher‖student) + (1 − α)·CE when distilling (`targets`, when
    /// given, replace the distillation targets: tests compare fixed generated targets with the reference).
    func microBatchLoss(_ examples: [Seq2SeqExample], micro: Int, training: Bool = true,
                        targets given: [[Int]]? = nil) throws -> (loss: Variable, kd: Float?, ce: Float?) {
        let drop = training && dropout.p > 0 ? dropout : nil
        guard let kd = distillation else { return (try ceLoss(examples, dropout: drop), nil, nil) }
        let targets = try given ?? distillationTargets(examples, micro: micro, kd: kd)
        // sequence lengths: the reference pads to the configured lengths; bucketing pads to the batch's longest
        var (E, T) = (settings.encoderSeqLen, settings.decoderSeqLen)
        if settings.bucketByLength {
            E = min(E, examples.map(\.source.count).max()!)
            T = max(1, targets.map(\.count).max()!)
        }
        let items = zip(examples, targets).map { e, t in
            DistillationItem(source: e.source, generated: t, encoderSeqLen: E, decoderSeqLen: T, bos: bos, pad: pad,
                             unk: kd.unkTokenId, tokenizerSize: kd.tokenizerSize, teacherVocabulary: kd.teacher.vocabSize)
        }
        let teacher: TeacherDistribution
        if let cache = kd.cache {
            teacher = .topK(try cachedTeacher(examples, cache: cache, kd: kd, encoderLength: E).map { $0.prefix(T) })
        } else {
            teacher = .logits(try kd.teacher.teacherLogits(items.map(\.teacherIds), attentionMask: items.map(\.teacherMask),
                                                            range: (E - 1)..<(E - 1 + T)), offset: 0)   // [B, T, Vt]
        }
        let s = try distillationForward(examples, items: items, encoderLength: E, positions: T, dropout: drop,
                                        withCE: kd.targets == .data && given == nil)
        let kl = Variable.distillationKL(student: s.logits, studentOffsets: s.offsets, positions: T, teacher: teacher,
                                         temperature: kd.temperature)
        let ce = try s.ce ?? ceLoss(examples, dropout: drop)
        let r = Distillation.combine(kd: kl, ce: ce, alpha: kd.alpha)
        return (r.loss, r.kd, r.ce)
    }

    /// The teacher's top-k for each example (targets from the data): read from the cache, or computed for the
    /// missing ones in one teacher pass over all `decoderSeqLen` positions and stored.
    func cachedTeacher(_ examples: [Seq2SeqExample], cache: TeacherCache, kd: DistillationSettings, encoderLength E: Int) throws -> [TeacherTopK] {
        var out = examples.map { cache.load($0) }
        let missing = out.indices.filter { out[$0] == nil }
        guard !missing.isEmpty else { return out.map { $0! } }
        let T = settings.decoderSeqLen
        let items = missing.map { i in
            DistillationItem(source: examples[i].source, generated: Array((examples[i].target + [eos]).prefix(T)), encoderSeqLen: E,
                             decoderSeqLen: T, bos: bos, pad: pad, unk: kd.unkTokenId, tokenizerSize: kd.tokenizerSize,
                             teacherVocabulary: kd.teacher.vocabSize)
        }
        let logits = try kd.teacher.teacherLogits(items.map(\.teacherIds), attentionMask: items.map(\.teacherMask), range: (E - 1)..<(E - 1 + T))
        let vt = logits.shape[2]
        for (row, i) in missing.enumerated() {
            let rowLogits = Tensor(shape: [T, vt], values: Array(UnsafeBufferPointer(start: logits.data + row * T * vt, count: T * vt)))
            let top = TeacherTopK(logits: rowLogits, k: cache.k, vocabulary: cache.vocabulary, temperature: cache.temperature)
            try cache.store(top, for: examples[i])
            out[i] = top
        }
        return withExtendedLifetime(logits) { out.map { $0! } }
    }

    /// One optimizer step over the next `accumulation` micro-batches of the shuffled data.
    @discardableResult
    public func trainStep() throws -> StepResult {
        try trainStep(on: (0..<settings.accumulation).map { _ in nextExamples() })
    }

    /// One optimizer step over the given micro-batches (the reference `Trainer.step` calls of one global
    /// batch): each adds loss / accumulation to the gradients, then clip, AdamW at lr · schedule(step).
    @discardableResult
    public func trainStep(on microBatches: [[Seq2SeqExample]]) throws -> StepResult {
        guard microBatches.count == settings.accumulation, microBatches.allSatisfy({ !$0.isEmpty }) else {
            throw EncoreError(.invalidArgument, "trainStep: \(microBatches.count) micro-batches for accumulation \(settings.accumulation)")
        }
        model.zeroGrad()
        var total: Float = 0, kdSum: Float = 0, ceSum: Float = 0, tokens = 0
        for (micro, examples) in microBatches.enumerated() {
            let (loss, kd, ce) = try microBatchLoss(examples, micro: micro)
            let scaled = (1 / Float(settings.accumulation)) * loss
            scaled.backward()
            total += scaled.item
            kdSum += (kd ?? 0) / Float(settings.accumulation)
            ceSum += (ce ?? 0) / Float(settings.accumulation)
            tokens += tokenCount(examples)
        }
        let norm = clipGradNorm(model.all, maxNorm: settings.maxGradNorm)
        optimizer.learningRate = settings.learningRate * schedule.factor(step: step)
        optimizer.step()
        step += 1
        return StepResult(loss: total, gradNorm: norm, learningRate: optimizer.learningRate,
                          kd: distillation == nil ? nil : kdSum, ce: distillation == nil ? nil : ceSum, tokens: tokens)
    }
}

/// The trainer for Mu on sequence-to-sequence pairs (``Trainer``): the reference `Seq2SeqDataset` batches
/// (``Seq2SeqBatch``) and `Mu.forward(..., targets).loss`; when distilling, the student's decoder reads
/// [BOS] + target (``DistillationItem/studentDecoderIds``) and position t is compared with the teacher's
/// position encoderSeqLen − 1 + t.
public final class Seq2SeqTrainer: Trainer {
    public let parameters: MuParameters

    public init(parameters: MuParameters, data: [Seq2SeqExample], settings: Settings, epochs: Int,
                steps: Int? = nil, distillation: DistillationSettings? = nil) throws {
        self.parameters = parameters
        let c = parameters.config
        try super.init(model: parameters, data: data, settings: settings, epochs: epochs, steps: steps, distillation: distillation,
                       configDropout: Float(c.dropout), vocabSize: c.vocabSize, bos: c.bosTokenId, eos: c.eosTokenId ?? c.padTokenId,
                       pad: c.padTokenId)
    }

    func batch(_ examples: [Seq2SeqExample]) -> Seq2SeqBatch {
        Seq2SeqBatch(examples, encoderSeqLen: settings.encoderSeqLen, decoderSeqLen: settings.decoderSeqLen, bos: bos, eos: eos,
                     pad: pad, padToLongest: settings.bucketByLength)
    }

    override func ceLoss(_ examples: [Seq2SeqExample], dropout: Dropout?) throws -> Variable {
        let b = batch(examples)
        return try parameters.loss(encoderIds: b.encoderIds, decoderIds: b.decoderIds, targets: b.targets, dropout: dropout)
    }

    override func distillationForward(_ examples: [Seq2SeqExample], items: [DistillationItem], encoderLength: Int, positions: Int,
                                      dropout: Dropout?, withCE: Bool) throws -> (logits: Variable, offsets: [Int]?, ce: Variable?) {
        let encoderIds = examples.map { Array($0.source.prefix(encoderLength)) + [Int](repeating: pad, count: max(0, encoderLength - $0.source.count)) }
        let logits = try parameters.logits(encoderIds: encoderIds, decoderIds: items.map(\.studentDecoderIds), dropout: dropout)
        // targets from the data: the decoder input is the data's, so one pass serves the KL and the cross-entropy
        let ce = withCE ? Variable.crossEntropy(logits, targets: items.flatMap(\.target), ignoreIndex: pad) : nil
        return (logits, nil, ce)
    }

    public override func studentModel() throws -> LanguageModel { try parameters.makeModel(copy: false) }
}

/// The reference `CheckpointSaver`: keeps the `capacity` best model folders by score (higher is better; the
/// reference scores with −validation loss) under `directory`, removing the worst when a better one arrives.
public final class BestCheckpoints {
    public let directory: String
    public let capacity: Int
    /// Saved folders and their scores.
    public private(set) var saved: [(path: String, score: Float)] = []

    /// Reopens the list kept in `directory/best.json` (folders still on disk only), so a resumed run keeps
    /// ranking against the models saved before it stopped.
    public init(directory: String, capacity: Int = 3) throws {
        precondition(capacity > 0, "capacity must be positive")
        self.directory = directory
        self.capacity = capacity
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let data = FileManager.default.contents(atPath: directory + "/best.json"),
           let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] {
            saved = list.compactMap { e in
                guard let name = e["folder"] as? String, let score = (e["score"] as? NSNumber)?.floatValue,
                      !name.contains("/"), FileManager.default.fileExists(atPath: directory + "/" + name + "/model.safetensors") else { return nil }
                return (directory + "/" + name, score)
            }
        }
    }

    /// Records ``saved`` in `directory/best.json` (atomically).
    private func writeList() throws {
        let list = saved.map { ["folder": URL(fileURLWithPath: $0.path).lastPathComponent, "score": Double($0.score)] as [String: Any] }
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: list, options: [.sortedKeys]), to: directory + "/best.json")
    }

    /// Saves `parameters` as `step-<step>` if the score is among the best; returns the folder if saved.
    @discardableResult
    public func saveIfBest(_ parameters: ModelParameters, step: Int, score: Float) throws -> String? {
        if saved.count >= capacity {
            guard let worst = saved.indices.min(by: { saved[$0].score < saved[$1].score }), score > saved[worst].score else { return nil }
            let gone = saved.remove(at: worst)
            try writeList()
            try? FileManager.default.removeItem(atPath: gone.path)
        }
        let path = directory + "/step-\(step)"
        try parameters.save(folder: path)
        saved.removeAll { $0.path == path }
        saved.append((path, score))
        try writeList()
        return path
    }

    /// The best saved folder.
    public var best: String? { saved.max { $0.score < $1.score }?.path }
}
