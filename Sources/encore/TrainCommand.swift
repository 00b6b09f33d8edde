import ArgumentParser
import Encore
import EncoreTokenizers
import Foundation

/// The options `encore train` and `encore distill` share.
struct TrainingOptions: ParsableArguments {
    @Option(name: .long, help: "Model folder to start from (config.json + model.safetensors; model_type mu or mu_decoder).")
    var model: String
    @Option(name: .long, help: "Training data (JSONL).")
    var data: String
    @Option(name: .long, help: "Output folder for the trained model.")
    var out: String
    @Option(help: "Passes over the data.")
    var epochs: Int = 1
    @Option(help: "Optimizer steps in total (overrides --epochs; the data is cycled as needed).")
    var steps: Int?
    @Option(name: .customLong("batch-size"), help: "Examples per micro-batch.")
    var batchSize: Int = 6
    @Option(name: [.long, .customLong("grad-accum")], help: "Micro-batches per optimizer step.")
    var accumulation: Int = 1
    @Option(name: .customLong("encoder-seq-len"), help: "Source length (truncate / pad).")
    var encoderSeqLen: Int = 1024
    @Option(name: .customLong("decoder-seq-len"), help: "Target length (truncate / pad).")
    var decoderSeqLen: Int = 256
    @Option(name: .customLong("lr"), help: "Peak learning rate.")
    var learningRate: Double = 1e-4
    @Option(name: .customLong("weight-decay"), help: "AdamW weight decay (matrices only).")
    var weightDecay: Double = 0.01
    @Option(name: [.customLong("warmup-steps"), .customLong("warmup")], help: "Linear warmup steps.")
    var warmupSteps: Int = 4
    @Option(name: [.customLong("max-grad-norm"), .customLong("clip")], help: "Gradient clipping threshold.")
    var maxGradNorm: Double = 1.0
    @Option(help: "Learning-rate schedule after the warmup: constant, cosine (to 0, the reference's) or wsd (constant, then linear to 0 over the last --decay-fraction of the steps).")
    var schedule: String = "cosine"
    @Option(name: .customLong("decay-fraction"), help: "For --schedule wsd: the fraction of the steps spent decaying, in (0, 1].")
    var decayFraction: Double = 0.2
    @Flag(name: .customLong("no-shuffle"), help: "Keep the file's order every epoch instead of a seeded shuffle.")
    var noShuffle = false
    @Flag(name: .customLong("bucket-by-length"), help: "Batch examples of similar length together (seeded) and pad each batch to its longest example.")
    var bucketByLength = false
    @Option(help: "Shuffling, dropout and sampling seed.")
    var seed: UInt64 = 1337
    @Option(help: "Dropout probability (default: the model config's dropout).")
    var dropout: Float?
    @Option(name: [.customLong("val-data"), .customLong("val")], help: "Validation data (JSONL): its loss is logged every --eval-every steps and the 3 best models are kept in OUT/checkpoints.")
    var valData: String?
    @Option(name: .customLong("eval-every"), help: "Steps between validation losses.")
    var evalEvery: Int = 32
    @Option(name: .customLong("sample-every"), help: "Steps between sample generations (greedy) for the first --samples validation sources (training sources without --val); 0: none.")
    var sampleEvery: Int = 0
    @Option(help: "How many sources the sample generations use.")
    var samples: Int = 3
    @Option(name: .customLong("save-every"), help: "Steps between resumable checkpoints in OUT/checkpoints/state-<step> (0: none; the 2 newest are kept).")
    var saveEvery: Int = 0
    @Option(help: "Also append each step's JSON line to this file (step, loss, ce_loss, kd_loss, lr, tokens_per_s, ...), and the validation and sample lines.")
    var log: String?
    @Option(help: "Progress on standard error: bar (one updating line), lines (a plain line every --progress-every steps), json (every step's JSON line), or auto (bar on a terminal, else lines).")
    var progress: String = "auto"
    @Option(name: .customLong("progress-every"), help: "Steps between progress lines in --progress lines mode.")
    var progressEvery: Int = 10
    @Option(name: .customLong("stop-after"), help: "Stop after this many steps in total (a checkpoint is written there; the schedule still spans the whole run, so --resume continues it).")
    var stopAfter: Int?
    @Flag(help: "Continue from the newest complete checkpoint in OUT/checkpoints (same data and settings), bit for bit.")
    var resume = false
    @Option(name: .customLong("resume-from"), help: "Continue from this checkpoint folder (implies --resume).")
    var resumeFrom: String?

    func validate() throws {
        if epochs < 1 || batchSize < 1 || accumulation < 1 { throw ValidationError("--epochs, --batch-size and --accumulation must be >= 1") }
        if encoderSeqLen < 1 || decoderSeqLen < 1 { throw ValidationError("sequence lengths must be >= 1") }
        if let dropout, !(dropout >= 0 && dropout < 1) { throw ValidationError("--dropout must be in [0, 1)") }
        if evalEvery < 1 { throw ValidationError("--eval-every must be >= 1") }
        if sampleEvery < 0 || samples < 1 { throw ValidationError("--sample-every must be >= 0 and --samples >= 1") }
        if LearningRateSchedule.Kind(rawValue: schedule) == nil {
            throw ValidationError("--schedule must be one of \(LearningRateSchedule.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if !(decayFraction > 0 && decayFraction <= 1) { throw ValidationError("--decay-fraction must be in (0, 1]") }
        if let steps, steps < 1 { throw ValidationError("--steps must be >= 1") }
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be >= 1") }
        if saveEvery < 0 { throw ValidationError("--save-every must be >= 0") }
        if ProgressReporter.Mode(rawValue: progress) == nil { throw ValidationError("--progress must be auto, bar, lines or json") }
        if progressEvery < 1 { throw ValidationError("--progress-every must be >= 1") }
    }

    /// The trainer settings the flags describe.
    var trainerSettings: Trainer.Settings {
        var s = Trainer.Settings()
        s.encoderSeqLen = encoderSeqLen; s.decoderSeqLen = decoderSeqLen
        s.batchSize = batchSize; s.accumulation = accumulation
        s.learningRate = learningRate; s.weightDecay = weightDecay; s.warmupSteps = warmupSteps
        s.maxGradNorm = maxGradNorm; s.seed = seed; s.dropout = dropout
        s.schedule = LearningRateSchedule.Kind(rawValue: schedule)!; s.decayFraction = decayFraction; s.shuffle = !noShuffle
        s.bucketByLength = bucketByLength
        return s
    }
}

/// The options only `encore distill` has.
struct DistillOptions: ParsableArguments {
    @Option(help: "Teacher: any decoder-only model Encore loads (a mu_decoder folder, a Hugging Face Llama/Qwen2/Phi-3 folder, or a .gguf file such as SmolLM2).")
    var teacher: String
    @Option(help: "Weight of the KL term; (1 - alpha) weighs the cross-entropy on the data (the reference's kd_alpha).")
    var alpha: Float = 0.9
    @Option(help: "KL temperature T: KL(softmax(teacher/T) || softmax(student/T)) scaled by T^2 (T = 1 is the reference).")
    var temperature: Float = 1
    @Option(help: "Distillation targets: data (the data's target + EOS), student (sampled from the student: temperature 0.9, top-k 128, the reference) or teacher (generated by the teacher).")
    var targets: String = "student"
    @Option(name: .customLong("teacher-cache"), help: "Store the teacher's top-k log-probabilities per example in this folder once and reuse them (--targets data only).")
    var teacherCache: String?
    @Option(name: .customLong("cache-top-k"), help: "k for --teacher-cache: log-probabilities kept per position (the rest of the mass is one bucket).")
    var cacheTopK: Int = 64
    @Option(name: .customLong("sample-temperature"), help: "Student sampling temperature for --targets student.")
    var sampleTemperature: Float = 0.9
    @Option(name: .customLong("sample-top-k"), help: "Student sampling top-k for --targets student.")
    var sampleTopK: Int = 128
    @Option(name: .customLong("teacher-temperature"), help: "Teacher sampling temperature for --targets teacher (0: greedy, computed once per example).")
    var teacherTemperature: Float = 0
    @Option(name: .customLong("teacher-top-k"), help: "Teacher sampling top-k for --targets teacher (0: off).")
    var teacherTopK: Int = 0

    func validate() throws {
        if !(alpha >= 0 && alpha <= 1) { throw ValidationError("--alpha must be in [0, 1]") }
        if !(temperature > 0 && temperature.isFinite) { throw ValidationError("--temperature must be > 0") }
        guard let t = DistillationSettings.Targets(rawValue: targets) else { throw ValidationError("--targets must be data, student or teacher") }
        if teacherCache != nil && t != .data { throw ValidationError("--teacher-cache needs --targets data (sampled targets change every step)") }
        if cacheTopK < 1 { throw ValidationError("--cache-top-k must be >= 1") }
        if !(sampleTemperature >= 0) || sampleTopK < 0 || !(teacherTemperature >= 0) || teacherTopK < 0 {
            throw ValidationError("sampling temperatures and top-k must be >= 0")
        }
    }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a Mu model (or its decoder-only baseline) on sequence-to-sequence pairs (cross-entropy, the reference recipe).",
        discussion: """
        DATA is JSONL, one {"source": ..., "target": ...} (or pre-tokenized {"source_ids": [...], "target_ids": [...]}) per line, each a string (encoded with the model \
        folder's tokenizer) or an array of token ids. The whole file is checked first: malformed lines and empty sources/targets are skipped and counted, over-long pairs truncated and counted (a "data" log line), an id outside the vocabulary stops with the line number. Batches follow the reference Seq2SeqDataset \
        (target + EOS, truncated and right-padded). Each optimizer step: clip the gradient norm, AdamW \
        (betas 0.9/0.98, weight decay on matrices only), linear warmup then --schedule (cosine to 0 by default). Dropout as the config says unless --dropout is given. \
        Progress on stderr (--progress); --log FILE gets every step's JSON line; writes config.json + model.safetensors into --out; --save-every N writes resumable checkpoints, --resume continues bit for bit. \
        A mu_decoder model folder (the decoder-only baseline) is trained as a causal LM on source ++ target + EOS (source cut to \
        --encoder-seq-len, target + EOS to --decoder-seq-len) with the loss on the target only. \
        --teacher PATH (--kd-alpha A) distils as `encore distill --teacher PATH --alpha A --targets student` (see encore distill --help).

        Example:
          encore train --model models/mu-small --data train.jsonl --val val.jsonl --out runs/a --steps 2000 --batch-size 16 \\
            --encoder-seq-len 128 --decoder-seq-len 32 --lr 1e-3 --warmup 100 --eval-every 100 --sample-every 200 --log runs/a.jsonl
        """
    )

    @OptionGroup var options: TrainingOptions
    @Option(help: "Teacher model for distillation (as encore distill --teacher, with --targets student).")
    var teacher: String?
    @Option(name: .customLong("kd-alpha"), help: "With --teacher: weight of the distillation term (the rest is cross-entropy).")
    var kdAlpha: Float = 0.9

    func validate() throws {
        if !(kdAlpha >= 0 && kdAlpha <= 1) { throw ValidationError("--kd-alpha must be in [0, 1]") }
    }

    func run() throws {
        try runReportingErrors {
            var kd: DistillOptions? = nil
            if let teacher {
                kd = try DistillOptions.parse(["--teacher", teacher, "--alpha", String(kdAlpha)])
            }
            try TrainingRun(options: options, distill: kd).run()
        }
    }
}

struct DistillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distil a decoder-only teacher into a Mu student (or the decoder-only baseline), as the reference KDModel.",
        discussion: """
        Every option of encore train, plus the teacher: any decoder-only model Encore loads (a mu_decoder folder, a Hugging \
        Face Llama/Qwen2/Phi-3 folder, or a .gguf file). It must share the student's token ids (e.g. a student made by \
        `encore init --tokenizer teacher.gguf`; when both have a tokenizer they are compared); both vocabularies are cut \
        to the smaller. Each micro-batch: targets \
        (--targets: the data's target + EOS; sampled from the student, temperature 0.9 / top-k 128, the reference; or \
        generated by the teacher, greedy unless --teacher-temperature), the teacher scores [source left-padded to \
        --encoder-seq-len ++ target] and its positions from encoder-seq-len - 1 are compared with the student's \
        predictions of the same target tokens: loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(data), \
        averaged over every target position (padding included, as the reference's batchmean). A mu_decoder student \
        reads source ++ target and is compared from its last source position.

        --teacher-cache DIR (with --targets data) runs the teacher once per example and stores its top-k log-probabilities \
        (--cache-top-k, 64) at temperature T; later epochs read them. The KL from top-k keeps the rest of the teacher's \
        mass as one bucket compared with the student's mass outside the k ids (exact when k covers the vocabulary). \
        DIR/cache.json records the settings; another teacher, k, T or lengths is an error.

        Examples:
          encore distill --model models/mu-student --teacher models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --data train.jsonl \\
            --out runs/kd --steps 200 --batch-size 8 --encoder-seq-len 96 --decoder-seq-len 32 --alpha 0.9 --targets data \\
            --teacher-cache runs/kd-cache --log runs/kd.jsonl
        """
    )

    @OptionGroup var options: TrainingOptions
    @OptionGroup var distill: DistillOptions

    func run() throws {
        try runReportingErrors { try TrainingRun(options: options, distill: distill).run() }
    }
}

/// One `encore train` / `encore distill` run: reads the data, builds the trainer for the model family, and
/// runs the loop with progress, validation, samples and checkpoints.
struct TrainingRun {
    let options: TrainingOptions
    let distill: DistillOptions?

    /// `model_type` of a model folder's config.json (nil when unreadable: the Mu loader then reports the problem).
    static func modelType(folder: String) -> String? {
        guard let data = FileManager.default.contents(atPath: folder + "/config.json"),
              let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return o["model_type"] as? String
    }

    /// Reads and validates a data file before training (bad lines are skipped and counted, or stop here naming
    /// the line), logging its `"data"` summary line; with a teacher, ids past the teacher's vocabulary stop here too.
    func readData(_ path: String, codec: TextCodec?, vocabSize: Int, teacherVocab: Int?, targetsToo: Bool,
                  report: ProgressReporter) throws -> [Seq2SeqExample] {
        let (examples, r) = try Seq2SeqData.read(path: path, tokenizer: codec?.tokenizer, vocabSize: vocabSize,
                                                 encoderSeqLen: options.encoderSeqLen, decoderSeqLen: options.decoderSeqLen)
        var summary = r.summary
        summary["message"] = "data"; summary["path"] = path
        report.event(summary)
        if let vt = teacherVocab {
            for (e, line) in zip(examples, r.exampleLines) {
                for (field, ids) in [("source", e.source)] + (targetsToo ? [("target", e.target)] : []) {
                    if let bad = ids.first(where: { $0 >= vt }) {
                        throw EncoreError(.invalidArgument, "\(path):\(line): '\(field)' has token id \(bad), outside the teacher's vocabulary 0..<\(vt)")
                    }
                }
            }
        }
        return examples
    }

    func run() throws {
        let o = options
        let mode = ProgressReporter.Mode(rawValue: o.progress)!
        let report = try ProgressReporter(mode: mode, every: o.progressEvery, log: o.log)
        defer { report.close() }
        let isDecoderOnly = Self.modelType(folder: o.model) == "mu_decoder"
        let codec = try TextCodec.load(folder: o.model, required: false)

        // the student
        let params: ModelParameters, vocab: Int, pad: Int
        if isDecoderOnly {
            let p = MuDecoderParameters(model: try MuDecoderModel(folder: o.model))
            (params, vocab, pad) = (p, p.config.vocabSize, p.config.padTokenId)
        } else {
            let p = MuParameters(model: try MuModel(folder: o.model))
            (params, vocab, pad) = (p, p.config.vocabSize, p.config.padTokenId)
        }

        // the teacher
        var kd: DistillationSettings? = nil
        if let d = distill {
            let loaded = try ModelRegistry.load(folder: d.teacher)
            guard let t = loaded as? DistillationTeacher else {
                throw EncoreError(.invalidArgument, "\(d.teacher): a \(loaded.modelType) model cannot serve as a distillation teacher (use a decoder-only model: mu_decoder or llama)")
            }
            // the teacher must read the student's token ids: compare the two vocabularies where both are known
            if let mine = codec?.tokenizer, let theirs = try? TextCodec.load(folder: d.teacher, required: false)?.tokenizer {
                let shared = min(mine.vocabSize, theirs.vocabSize, t.vocabSize, vocab)
                for id in stride(from: 0, to: shared, by: max(1, shared / 997)) where mine.idToToken(id) != theirs.idToToken(id) {
                    throw EncoreError(.invalidArgument, "the student's tokenizer and the teacher's differ at id \(id) ('\(mine.idToToken(id) ?? "none")' vs '\(theirs.idToToken(id) ?? "none")'): distillation needs shared token ids (make the student with encore init --tokenizer \(d.teacher))")
                }
            }
            var s = DistillationSettings(teacher: t)
            s.alpha = d.alpha; s.temperature = d.temperature; s.targets = DistillationSettings.Targets(rawValue: d.targets)!
            s.sampleTemperature = d.sampleTemperature; s.sampleTopK = d.sampleTopK
            s.teacherTemperature = d.teacherTemperature; s.teacherTopK = d.teacherTopK
            if let codec { s.tokenizerSize = codec.tokenizer.vocabSize }   // len(tokenizer)
            s.unkTokenId = codec?.tokenizer.tokenToId("<unk>") ?? pad          // the reference's unk = pad (Phi-3.5)
            if s.unkTokenId >= t.vocabSize { s.unkTokenId = pad }
            kd = s
            report.event(["message": "teacher", "path": d.teacher, "model_type": loaded.modelType, "vocab_size": t.vocabSize,
                          "parameters": loaded.parameterCount, "student_vocab_size": vocab, "shared_vocab": min(vocab, t.vocabSize)])
        }

        let teacherVocab = kd?.teacher.vocabSize
        let targetsFromData = kd?.targets == .data
        let examples = try readData(o.data, codec: codec, vocabSize: vocab, teacherVocab: teacherVocab, targetsToo: targetsFromData, report: report)
        let validation = try o.valData.map { path -> [Seq2SeqExample] in
            let v = try readData(path, codec: codec, vocabSize: vocab, teacherVocab: teacherVocab, targetsToo: targetsFromData, report: report)
            guard !v.isEmpty else { throw EncoreError(.invalidArgument, "\(path): no usable examples") }
            return v
        }

        if let d = distill, let dir = d.teacherCache, var s = kd {
            let teacherFile = FileManager.default.fileExists(atPath: d.teacher + "/model.safetensors") ? d.teacher + "/model.safetensors" : d.teacher
            let size = ((try? FileManager.default.attributesOfItem(atPath: teacherFile))?[.size] as? NSNumber)?.intValue ?? -1
            let identity = ["teacher": URL(fileURLWithPath: d.teacher).standardizedFileURL.path, "teacher_bytes": String(size),
                            "teacher_vocab": String(s.teacher.vocabSize), "encoder_seq_len": String(o.encoderSeqLen),
                            "pad": String(pad), "unk": String(s.unkTokenId), "tokenizer_size": s.tokenizerSize.map(String.init) ?? "none"]
            s.cache = try TeacherCache(directory: dir, k: d.cacheTopK, temperature: d.temperature, vocabulary: min(vocab, s.teacher.vocabSize),
                                       positions: o.decoderSeqLen, identity: identity)
            kd = s
        }

        let trainer: Trainer
        if let p = params as? MuDecoderParameters {
            trainer = try CausalLMTrainer(parameters: p, data: examples, settings: o.trainerSettings, epochs: o.epochs, steps: o.steps, distillation: kd)
        } else {
            trainer = try Seq2SeqTrainer(parameters: params as! MuParameters, data: examples, settings: o.trainerSettings, epochs: o.epochs,
                                         steps: o.steps, distillation: kd)
        }
        let total = Int(trainer.schedule.totalSteps)   // the schedule's length in optimizer steps
        let checkpoints = o.out + "/checkpoints"
        let best = validation == nil ? nil : try BestCheckpoints(directory: checkpoints)
        if o.resume || o.resumeFrom != nil {
            guard let folder = o.resumeFrom ?? TrainingCheckpoint.latest(in: checkpoints) else {
                throw EncoreError(.invalidArgument, "--resume: no complete checkpoint in \(checkpoints)")
            }
            try trainer.restoreCheckpoint(folder: folder)
            report.event(["message": "resumed", "checkpoint": folder, "global_step": trainer.step, "epoch": trainer.epoch])
        }

        // sample generations: the first sources of the validation data (or of the training data)
        let sampleSet = Array((validation ?? examples).prefix(o.samples))
        func text(_ ids: [Int]) -> Any { codec.map { $0.decode(ids) } ?? ids }
        func samples(step: Int) throws {
            let outs = try trainer.generate(sources: sampleSet.map(\.source), maxTokens: o.decoderSeqLen)
            for (i, (e, out)) in zip(sampleSet, outs).enumerated() {
                report.event(["message": "sample", "global_step": step, "index": i, "source": text(e.source), "target": text(e.target),
                              "generated": text(out)])
            }
        }

        let end = min(total, o.stopAfter ?? total)
        report.begin(total: total, from: trainer.step)
        if o.sampleEvery > 0 && trainer.step == 0 { try samples(step: 0) }
        for step in trainer.step..<max(trainer.step, end) {
            let t0 = Date()
            let r = try trainer.trainStep()
            guard r.loss.isFinite else { throw EncoreError(.invalidArgument, "loss is \(r.loss) at step \(step)") }
            report.step(step, result: r, seconds: Date().timeIntervalSince(t0))
            if (o.saveEvery > 0 && ((step + 1) % o.saveEvery == 0 || step + 1 == total)) || (step + 1 == end && end < total) {
                let folder = checkpoints + "/" + TrainingCheckpoint.prefix + "\(step + 1)"
                try trainer.saveCheckpoint(folder: folder)
                TrainingCheckpoint.prune(directory: checkpoints)
                report.event(["message": "checkpoint", "path": folder, "global_step": step + 1])
            }
            if let validation, let best, (step + 1) % o.evalEvery == 0 || step + 1 == total {
                let loss = try trainer.evaluate(validation)
                let path = try best.saveIfBest(params, step: step, score: -loss)
                var entry: [String: Any] = ["message": "loss_evaluator_metrics", "dataset": "val", "loss": Double(loss), "global_step": step]
                if let path { entry["saved"] = path }
                report.event(entry)
            }
            if o.sampleEvery > 0 && ((step + 1) % o.sampleEvery == 0 || step + 1 == total) { try samples(step: step + 1) }
        }
        report.finish()
        if let cache = kd?.cache {
            report.event(["message": "teacher_cache", "path": cache.directory, "hits": cache.hits, "written": cache.writes])
        }
        guard end == total else {
            print("stopped after \(end) of \(total) steps; continue with --resume")
            return
        }
        try params.save(folder: o.out)
        // the trained folder keeps the starting model's tokenizer, so `generate --prompt` works on it
        for name in ["tokenizer.json", "tokenizer_config.json", "tokenizer.gguf"] where FileManager.default.fileExists(atPath: o.model + "/" + name) {
            try AtomicFile.write(try Data(contentsOf: URL(fileURLWithPath: o.model + "/" + name)), to: o.out + "/" + name)
        }
        print("wrote \(o.out)/config.json and \(o.out)/model.safetensors after \(total) steps\(isDecoderOnly ? " (causal LM)" : "")")
    }
}

/// Training progress on standard error and the JSONL log.
///
/// - `bar`: one line rewritten in place (step/total, loss, tokens/s, ETA); events are printed above it;
/// - `lines`: a plain line every `every` steps (and the last one);
/// - `json`: every step's JSON line (as the log file has it);
/// - `auto`: bar on a terminal, lines otherwise.
///
/// Events (data summaries, validation losses, samples, checkpoints) are JSON lines in every mode. The log file
/// gets every step (`step`, `loss`, `ce_loss`, `kd_loss` (null without a teacher), `lr`, `tokens_per_s` of real
/// tokens, `grad_norm`, `time_in_s`, `tokens`) and every event.
final class ProgressReporter {
    enum Mode: String { case auto, bar, lines, json }
    let mode: Mode
    let every: Int
    private var logFile: FileHandle?
    private var total = 0, first = 0, start = Date()
    private var barShown = false
    private var lastLine = ""

    init(mode: Mode, every: Int, log: String?) throws {
        self.mode = mode == .auto ? (isatty(STDERR_FILENO) != 0 ? .bar : .lines) : mode
        self.every = every
        if let log {
            if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
            guard let h = FileHandle(forWritingAtPath: log) else { throw EncoreError(.io, "\(log): cannot open for appending") }
            h.seekToEndOfFile()
            logFile = h
        }
    }

    func close() { try? logFile?.close() }

    func begin(total: Int, from step: Int) {
        (self.total, first, start) = (total, step, Date())
    }

    private func clearBar() {
        if barShown { printStderr("\r\u{1B}[2K", terminator: ""); barShown = false }
    }

    func event(_ entry: [String: Any]) {
        clearBar()
        printStderr(jsonString(entry))
        logFile?.write(Data((jsonString(entry) + "\n").utf8))
        if mode == .bar && !lastLine.isEmpty { printStderr(lastLine, terminator: ""); barShown = true }
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, t / 60 % 60) : t >= 60 ? String(format: "%dm%02ds", t / 60, t % 60) : "\(t)s"
    }

    func step(_ step: Int, result r: Trainer.StepResult, seconds: Double) {
        let tps = seconds > 0 ? Double(r.tokens) / seconds : 0
        var entry: [String: Any] = ["message": "training_step", "global_step": step, "step": step, "loss": Double(r.loss),
                                    "ce_loss": Double(r.ce ?? r.loss), "kd_loss": r.kd.map { Double($0) as Any } ?? NSNull(),
                                    "grad_norm": r.gradNorm, "lr": r.learningRate, "time_in_s": seconds, "tokens": r.tokens, "tokens_per_s": tps]
        if r.kd == nil { entry["kd_loss"] = NSNull() }
        logFile?.write(Data((jsonString(entry) + "\n").utf8))
        let done = step + 1 - first, elapsed = Date().timeIntervalSince(start)
        let eta = Double(total - step - 1) * elapsed / Double(max(1, done))
        let kdPart = r.kd.map { String(format: " (kd %.4f, ce %.4f)", $0, r.ce ?? 0) } ?? ""
        let line = "step \(step + 1)/\(total) (\(100 * (step + 1) / max(1, total))%)  loss " + String(format: "%.4f", r.loss) + kdPart + "  lr " + String(format: "%.2e", r.learningRate)
            + "  " + String(format: "%.0f", tps) + " tok/s  elapsed \(Self.duration(elapsed))  ETA \(Self.duration(eta))"
        switch mode {
        case .json: printStderr(jsonString(entry))
        case .lines: if (step + 1) % every == 0 || step + 1 == total || step == first { printStderr(line) }
        case .bar, .auto:
            lastLine = line
            printStderr("\r\u{1B}[2K" + line, terminator: "")
            barShown = true
        }
    }

    func finish() {
        if barShown { printStderr(""); barShown = false }
        lastLine = ""
    }
}
