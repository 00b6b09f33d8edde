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
        }
        report.kept = out.count
        return (out, report)
    }
}

/// A padded batch as the reference's `Seq2SeqDataset` builds it: the source truncated and right-padded to
/// `encoderSeqLen`; labels = target + EOS, truncated and right-padded to `decoderSeqLen`; decoder inputs =
/// [BOS] + labels[..<last] (so the pads after EOS are fed too, and masked as keys).
public struct Seq2SeqBatch: Equatable, Sendable {
    public var encoderIds: [[Int]]   // [B, encoderSeqLen]
    public var decoderIds: [[Int]]   // [B, decoderSeqLen]
    public var targets: [[Int]]      // [B, decoderSeqLen], pad ignored by the loss

    public init(_ examples: [Seq2SeqExample], encoderSeqLen: Int, decoderSeqLen: Int, bos: Int, eos: Int, pad: Int) {
        func fit(_ ids: [Int], _ n: Int) -> [Int] { Array(ids.prefix(n)) + [Int](repeating: pad, count: max(0, n - ids.count)) }
        encoderIds = examples.map { fit($0.source, encoderSeqLen) }
        targets = examples.map { fit($0.target + [eos], decoderSeqLen) }
        decoderIds = targets.map { [bos] + $0.dropLast() }
    }
}

/// A minimal trainer for Mu on sequence-to-sequence pairs, following `mu/train.py Trainer`: per optimizer
/// step, `accumulation` micro-batches each contribute loss / accumulation, then clip_grad_norm_, AdamW at
/// lr · schedule(step), in training mode (dropout p = the config's `dropout`, 0.1 for Mu, unless
/// ``Settings/dropout`` overrides it; masks from Encore's seeded stream, not torch's). Batches are drawn
/// without replacement from a seeded shuffle of the data each epoch, dropping the last partial batch (the
/// reference's `DataLoader(shuffle=True, drop_last=True)`; the order itself differs from torch's generator).
///
/// With ``DistillationSettings`` each micro-batch is the reference `KDModel` step: the current student samples
/// a target per source, the teacher scores [source left-padded ++ target] (``DistillationItem``), and the loss
/// is α·KL(teacher‖student) + (1 − α)·CE on the ground truth (``Distillation/loss(studentKD:teacher:encoderSeqLen:studentCE:targets:padTokenId:alpha:)``).
public final class Seq2SeqTrainer {
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
        public var seed: UInt64 = 1337
        /// Dropout probability; nil: the model config's.
        public var dropout: Float? = nil
        public init() {}
    }

    /// What one optimizer step did (`kd` and `ce`: the distillation terms, when distilling).
    public struct StepResult: Sendable {
        public var loss: Float, gradNorm: Double, learningRate: Double
        public var kd: Float? = nil, ce: Float? = nil
    }

    public let parameters: MuParameters
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

    /// `epochs` sets the schedule's length: (⌊data / batch⌋ · epochs) / accumulation optimizer steps, unless
    /// `steps` gives it directly (the data is then cycled, reshuffled each pass, as long as needed).
    public init(parameters: MuParameters, data: [Seq2SeqExample], settings: Settings, epochs: Int,
                steps: Int? = nil, distillation: DistillationSettings? = nil) throws {
        self.distillation = distillation
        guard data.count >= settings.batchSize, settings.batchSize > 0, settings.accumulation > 0 else {
            throw EncoreError(.invalidArgument, "need at least one full batch of \(settings.batchSize) examples (have \(data.count))")
        }
        self.parameters = parameters
        self.data = data
        self.settings = settings
        optimizer = AdamW(parameters: parameters.all, learningRate: settings.learningRate, betas: settings.betas,
                          weightDecay: settings.weightDecay)
        if let steps, steps < 1 { throw EncoreError(.invalidArgument, "steps must be >= 1 (have \(steps))") }
        let total = steps.map(Double.init) ?? Double(data.count / settings.batchSize * epochs) / Double(settings.accumulation)
        guard Double(settings.warmupSteps) < total else {
            throw EncoreError(.invalidArgument, "warmup (\(settings.warmupSteps)) must be shorter than training (\(total) steps)")
        }
        guard settings.decayFraction > 0 && settings.decayFraction <= 1 else {
            throw EncoreError(.invalidArgument, "decay fraction \(settings.decayFraction) must be in (0, 1]")
        }
        schedule = LearningRateSchedule(settings.schedule, warmupSteps: settings.warmupSteps, totalSteps: total,
                                        decayFraction: settings.decayFraction)
        rng = SplitMix64(seed: settings.seed)
        dropout = Dropout(p: settings.dropout ?? Float(parameters.config.dropout), seed: settings.seed &+ 1)
    }

    /// The next micro-batch of the current pass (a new pass, reshuffled unless `shuffle` is off, when this one is used up).
    func nextExamples() -> [Seq2SeqExample] {
        if cursor + settings.batchSize > order.count {
            order = Array(data.indices)
            if settings.shuffle { order.shuffle(using: &rng) }
            cursor = 0
            epoch += 1
        }
        let picked = order[cursor..<(cursor + settings.batchSize)].map { data[$0] }
        cursor += settings.batchSize
        return picked
    }

    /// The reference `LossEvaluator`: the mean of the per-batch losses over `examples` in batches of
    /// ``Settings/batchSize`` (the last one may be smaller), in eval mode (no dropout). When distilling the loss
    /// is the distillation loss, with targets sampled by the current student (seeded).
    public func evaluate(_ examples: [Seq2SeqExample]) throws -> Float {
        guard !examples.isEmpty else { throw EncoreError(.invalidArgument, "evaluate: no examples") }
        var total: Float = 0, count = 0
        for start in stride(from: 0, to: examples.count, by: settings.batchSize) {
            let batch = Array(examples[start..<min(start + settings.batchSize, examples.count)])
            total += try microBatchLoss(batch, micro: count, training: false).0.item
            count += 1
        }
        return total / Float(count)
    }

    /// The micro-batch loss: cross-entropy, or α·KL(teacher‖student) + (1 − α)·CE when distilling.
    private func microBatchLoss(_ examples: [Seq2SeqExample], micro: Int, training: Bool = true) throws -> (Variable, Float?, Float?) {
        let c = parameters.config, drop = training && dropout.p > 0 ? dropout : nil
        let b = Seq2SeqBatch(examples, encoderSeqLen: settings.encoderSeqLen, decoderSeqLen: settings.decoderSeqLen,
                             bos: c.bosTokenId, eos: c.eosTokenId ?? c.padTokenId, pad: c.padTokenId)
        guard let kd = distillation else {
            return (try parameters.loss(encoderIds: b.encoderIds, decoderIds: b.decoderIds, targets: b.targets, dropout: drop), nil, nil)
        }
        // on-policy targets from the current student (its weights, shared, not copied)
        let student = try parameters.makeModel(copy: false)
        let items = try examples.enumerated().map { i, e -> DistillationItem in
            let g = GenerationParameters(maxTokens: settings.decoderSeqLen, temperature: kd.temperature, topK: kd.topK,
                                         seed: settings.seed &+ UInt64((step * settings.accumulation + micro) * settings.batchSize + i),
                                         eosTokenId: c.eosTokenId)
            let generated = try Generator(model: student).generate(prompt: Array(e.source.prefix(settings.encoderSeqLen)), parameters: g)
            return DistillationItem(source: e.source, generated: generated, encoderSeqLen: settings.encoderSeqLen,
                                    decoderSeqLen: settings.decoderSeqLen, bos: c.bosTokenId, pad: c.padTokenId,
                                    unk: kd.unkTokenId, tokenizerSize: kd.tokenizerSize)
        }
        let teacher = try kd.teacher.logits(items.map(\.teacherIds))                  // [B, Tt, Vt]
        let sKD = try parameters.logits(encoderIds: b.encoderIds, decoderIds: items.map(\.studentDecoderIds), dropout: drop)
        let sCE = try parameters.logits(encoderIds: b.encoderIds, decoderIds: b.decoderIds, dropout: drop)
        let r = Distillation.loss(studentKD: sKD, teacher: teacher, encoderSeqLen: settings.encoderSeqLen, studentCE: sCE,
                                  targets: b.targets.flatMap { $0 }, padTokenId: c.padTokenId, alpha: kd.alpha)
        return (r.loss, r.kd, r.ce)
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
        parameters.zeroGrad()
        var total: Float = 0, kdSum: Float = 0, ceSum: Float = 0
        for (micro, examples) in microBatches.enumerated() {
            let (loss, kd, ce) = try microBatchLoss(examples, micro: micro)
            let scaled = (1 / Float(settings.accumulation)) * loss
            scaled.backward()
            total += scaled.item
            kdSum += (kd ?? 0) / Float(settings.accumulation)
            ceSum += (ce ?? 0) / Float(settings.accumulation)
        }
        let norm = clipGradNorm(parameters.all, maxNorm: settings.maxGradNorm)
        optimizer.learningRate = settings.learningRate * schedule.factor(step: step)
        optimizer.step()
        step += 1
        return StepResult(loss: total, gradNorm: norm, learningRate: optimizer.learningRate,
                          kd: distillation == nil ? nil : kdSum, ce: distillation == nil ? nil : ceSum)
    }
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
    public func saveIfBest(_ parameters: MuParameters, step: Int, score: Float) throws -> String? {
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
