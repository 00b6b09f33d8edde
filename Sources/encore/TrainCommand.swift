import ArgumentParser
import Encore
import Foundation

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a Mu model on sequence-to-sequence pairs (cross-entropy, the reference recipe).",
        discussion: """
        DATA is JSONL, one {"source": ..., "target": ...} (or pre-tokenized {"source_ids": [...], "target_ids": [...]}) per line, each a string (encoded with the model \
        folder's tokenizer.json) or an array of token ids. The whole file is checked first: malformed lines and empty sources/targets are skipped and counted, over-long pairs truncated and counted (a "data" log line), an id outside the vocabulary stops with the line number. Batches follow the reference Seq2SeqDataset \
        (target + EOS, truncated and right-padded). Each optimizer step: clip the gradient norm, AdamW \
        (betas 0.9/0.98, weight decay on matrices only), linear warmup then --schedule (cosine to 0 by default). Dropout as the config says unless --dropout is given. \
        Logs one JSON line per step on stderr; writes config.json + model.safetensors into --out; --save-every N writes resumable checkpoints, --resume continues bit for bit. \
        A mu_decoder model folder (the decoder-only baseline) is trained as a causal LM on source ++ target + EOS (source cut to \
        --encoder-seq-len, target + EOS to --decoder-seq-len) with the loss on the target only; checkpoints, --resume, --teacher and --val-data are refused there. \
        With --teacher (a decoder-only model folder, e.g. mu_decoder) each step distils as the reference \
        KDModel: the student samples a target per source (temperature 0.9, top-k 128), the teacher scores \
        [source left-padded to --encoder-seq-len ++ target], loss = a*KL(teacher||student) + (1-a)*CE.
        """
    )

    @Option(name: .long, help: "Model folder to start from (config.json + model.safetensors).")
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
    @Option(help: "Shuffling and dropout seed.")
    var seed: UInt64 = 1337
    @Option(help: "Dropout probability (default: the model config's dropout).")
    var dropout: Float?
    @Option(help: "Teacher model folder for distillation (decoder-only, same token ids).")
    var teacher: String?
    @Option(name: .customLong("kd-alpha"), help: "Weight of the distillation term (the rest is cross-entropy).")
    var kdAlpha: Float = 0.9
    @Option(name: [.customLong("val-data"), .customLong("val")], help: "Validation data (JSONL): its loss is logged every --eval-every steps and the 3 best models are kept in OUT/checkpoints.")
    var valData: String?
    @Option(name: .customLong("eval-every"), help: "Steps between validation losses.")
    var evalEvery: Int = 32
    @Option(name: .customLong("save-every"), help: "Steps between resumable checkpoints in OUT/checkpoints/state-<step> (0: none; the 2 newest are kept).")
    var saveEvery: Int = 0
    @Option(help: "Also append each step's JSON line to this file (step, loss, ce_loss, kd_loss, lr, tokens_per_s, ...).")
    var log: String?
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
        if !(kdAlpha >= 0 && kdAlpha <= 1) { throw ValidationError("--kd-alpha must be in [0, 1]") }
        if evalEvery < 1 { throw ValidationError("--eval-every must be >= 1") }
        if LearningRateSchedule.Kind(rawValue: schedule) == nil {
            throw ValidationError("--schedule must be one of \(LearningRateSchedule.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if !(decayFraction > 0 && decayFraction <= 1) { throw ValidationError("--decay-fraction must be in (0, 1]") }
        if let steps, steps < 1 { throw ValidationError("--steps must be >= 1") }
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be >= 1") }
        if saveEvery < 0 { throw ValidationError("--save-every must be >= 0") }
    }

    func run() throws {
        try runReportingErrors {
            if Self.modelType(folder: model) == "mu_decoder" { return try runCausalLM() }
            let mu = try MuModel(folder: model)
            let codec = try TextCodec.load(folder: model, required: false)
            let examples = try readTrainingData(tokenizer: codec, vocabSize: mu.config.vocabSize)
            let s = trainerSettings()
            let params = MuParameters(model: mu)
            var kd: DistillationSettings? = nil
            if let teacher {
                guard let t = try ModelRegistry.load(folder: teacher) as? DistillationTeacher else {
                    throw EncoreError(.invalidArgument, "\(teacher): this model type cannot serve as a distillation teacher (use a decoder-only model)")
                }
                kd = DistillationSettings(teacher: t)
                kd!.alpha = kdAlpha
                if let codec { kd!.tokenizerSize = codec.tokenizer.vocabSize }   // len(tokenizer)
            }
            let trainer = try Seq2SeqTrainer(parameters: params, data: examples, settings: s, epochs: epochs, steps: steps, distillation: kd)
            let total = Int(trainer.schedule.totalSteps)  // the schedule's length in optimizer steps
            let validation = try valData.map { path -> [Seq2SeqExample] in
                let (v, r) = try Seq2SeqData.read(path: path, tokenizer: codec?.tokenizer, vocabSize: mu.config.vocabSize,
                                                  encoderSeqLen: encoderSeqLen, decoderSeqLen: decoderSeqLen)
                var summary = r.summary
                summary["message"] = "data"; summary["path"] = path
                printStderr(jsonString(summary))
                guard !v.isEmpty else { throw EncoreError(.invalidArgument, "\(path): no usable examples") }
                return v
            }
            let best = validation == nil ? nil : try BestCheckpoints(directory: out + "/checkpoints")
            let checkpoints = out + "/checkpoints"
            if resume || resumeFrom != nil {
                guard let folder = resumeFrom ?? TrainingCheckpoint.latest(in: checkpoints) else {
                    throw EncoreError(.invalidArgument, "--resume: no complete checkpoint in \(checkpoints)")
                }
                try trainer.restoreCheckpoint(folder: folder)
                printStderr(jsonString(["message": "resumed", "checkpoint": folder, "global_step": trainer.step, "epoch": trainer.epoch]))
            }
            var logFile: FileHandle? = nil
            if let log {
                if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
                guard let h = FileHandle(forWritingAtPath: log) else { throw EncoreError(.io, "\(log): cannot open for appending") }
                h.seekToEndOfFile()
                logFile = h
            }
            defer { try? logFile?.close() }
            // positions processed per step (padded), for tokens_per_s
            let tokensPerStep = Double(batchSize * accumulation * (encoderSeqLen + decoderSeqLen))
            let end = min(total, stopAfter ?? total)
            for step in trainer.step..<max(trainer.step, end) {
                let t0 = Date()
                let r = try trainer.trainStep()
                guard r.loss.isFinite else { throw EncoreError(.invalidArgument, "loss is \(r.loss) at step \(step)") }
                let seconds = Date().timeIntervalSince(t0)
                var entry: [String: Any] = ["message": "training_step", "global_step": step, "step": step, "loss": Double(r.loss),
                                            "grad_norm": r.gradNorm, "lr": r.learningRate, "time_in_s": seconds,
                                            "tokens_per_s": seconds > 0 ? tokensPerStep / seconds : 0]
                if let k = r.kd, let c = r.ce { entry["kd_loss"] = Double(k); entry["ce_loss"] = Double(c) }
                printStderr(jsonString(entry))
                logFile?.write(Data((jsonString(entry) + "\n").utf8))
                if (saveEvery > 0 && ((step + 1) % saveEvery == 0 || step + 1 == total)) || (step + 1 == end && end < total) {
                    let folder = checkpoints + "/" + TrainingCheckpoint.prefix + "\(step + 1)"
                    try trainer.saveCheckpoint(folder: folder)
                    TrainingCheckpoint.prune(directory: checkpoints)
                    printStderr(jsonString(["message": "checkpoint", "path": folder, "global_step": step + 1]))
                }
                if let validation, let best, (step + 1) % evalEvery == 0 || step + 1 == total {
                    let loss = try trainer.evaluate(validation)
                    let path = try best.saveIfBest(params, step: step, score: -loss)
                    var entry: [String: Any] = ["message": "loss_evaluator_metrics", "dataset": "val", "loss": Double(loss), "global_step": step]
                    if let path { entry["saved"] = path }
                    printStderr(jsonString(entry))
                }
            }
            guard end == total else {
                print("stopped after \(end) of \(total) steps; continue with --resume")
                return
            }
            try params.save(folder: out)
            // the trained folder keeps the starting model's tokenizer, so `generate --prompt` works on it
            for name in ["tokenizer.json", "tokenizer_config.json"] where FileManager.default.fileExists(atPath: model + "/" + name) {
                let src = try Data(contentsOf: URL(fileURLWithPath: model + "/" + name))
                try AtomicFile.write(src, to: out + "/" + name)
            }
            print("wrote \(out)/config.json and \(out)/model.safetensors after \(total) steps")
        }
    }

    /// `model_type` of a model folder's config.json (nil when unreadable: the Mu loader then reports the problem).
    static func modelType(folder: String) -> String? {
        guard let data = FileManager.default.contents(atPath: folder + "/config.json"),
              let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return o["model_type"] as? String
    }

    /// Causal-LM training of a mu_decoder folder (``CausalLMTrainer``): the same data, optimizer, schedule and log lines.
    /// Reads and validates the whole training file before training (bad lines are skipped and counted, or
    /// stop here naming the line), logging the `"data"` summary line.
    func readTrainingData(tokenizer codec: TextCodec?, vocabSize: Int) throws -> [Seq2SeqExample] {
        let (examples, report) = try Seq2SeqData.read(path: data, tokenizer: codec?.tokenizer, vocabSize: vocabSize,
                                                      encoderSeqLen: encoderSeqLen, decoderSeqLen: decoderSeqLen)
        var summary = report.summary
        summary["message"] = "data"; summary["path"] = data
        printStderr(jsonString(summary))
        return examples
    }

    /// The trainer settings the flags describe.
    func trainerSettings() -> Seq2SeqTrainer.Settings {
        var s = Seq2SeqTrainer.Settings()
        s.encoderSeqLen = encoderSeqLen; s.decoderSeqLen = decoderSeqLen
        s.batchSize = batchSize; s.accumulation = accumulation
        s.learningRate = learningRate; s.weightDecay = weightDecay; s.warmupSteps = warmupSteps
        s.maxGradNorm = maxGradNorm; s.seed = seed; s.dropout = dropout
        s.schedule = LearningRateSchedule.Kind(rawValue: schedule)!; s.decayFraction = decayFraction; s.shuffle = !noShuffle
        return s
    }

    func runCausalLM() throws {
        for (flag, used) in [("--teacher", teacher != nil), ("--val-data", valData != nil), ("--save-every", saveEvery > 0),
                             ("--resume", resume || resumeFrom != nil), ("--stop-after", stopAfter != nil)] where used {
            throw EncoreError(.invalidArgument, "\(flag) is not supported for mu_decoder (causal-LM) training yet")
        }
        let dec = try MuDecoderModel(folder: model)
        let codec = try TextCodec.load(folder: model, required: false)
        let examples = try readTrainingData(tokenizer: codec, vocabSize: dec.config.vocabSize)
        let s = trainerSettings()
        let params = MuDecoderParameters(model: dec)
        let trainer = try CausalLMTrainer(parameters: params, data: examples, settings: s, epochs: epochs, steps: steps)
        let total = Int(trainer.schedule.totalSteps)
        var logFile: FileHandle? = nil
        if let log {
            if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
            guard let h = FileHandle(forWritingAtPath: log) else { throw EncoreError(.io, "\(log): cannot open for appending") }
            h.seekToEndOfFile()
            logFile = h
        }
        defer { try? logFile?.close() }
        let tokensPerStep = Double(batchSize * accumulation * (encoderSeqLen + decoderSeqLen))   // upper bound (padded)
        for step in 0..<total {
            let t0 = Date()
            let r = try trainer.trainStep()
            guard r.loss.isFinite else { throw EncoreError(.invalidArgument, "loss is \(r.loss) at step \(step)") }
            let seconds = Date().timeIntervalSince(t0)
            let entry: [String: Any] = ["message": "training_step", "global_step": step, "step": step, "loss": Double(r.loss),
                                        "grad_norm": r.gradNorm, "lr": r.learningRate, "time_in_s": seconds,
                                        "tokens_per_s": seconds > 0 ? tokensPerStep / seconds : 0]
            printStderr(jsonString(entry))
            logFile?.write(Data((jsonString(entry) + "\n").utf8))
        }
        try params.save(folder: out)
        for name in ["tokenizer.json", "tokenizer_config.json"] where FileManager.default.fileExists(atPath: model + "/" + name) {
            try AtomicFile.write(try Data(contentsOf: URL(fileURLWithPath: model + "/" + name)), to: out + "/" + name)
        }
        print("wrote \(out)/config.json and \(out)/model.safetensors after \(total) steps (causal LM)")
    }
}
