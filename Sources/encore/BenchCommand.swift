import ArgumentParser
import Encore
import Foundation

/// Writes the time-against-input-length plot of the paper's Figure 1 (TTFT and end-to-end time).
func writePlot(_ all: [BenchResult], to path: String) throws {
    let out = all.first?.outputTokens ?? 0
    let results = all.filter { $0.outputTokens == out }         // one output length per plot: the first
    func points(_ model: String, _ value: (BenchResult) -> Double) -> [(x: Double, y: Double)] {
        results.filter { $0.model == model }.map { (Double($0.inputTokens), value($0)) }
    }
    let chart = SVGLineChart(
        title: "Mu-330M encoder-decoder vs decoder-only twin (\(out) output tokens)",
        xLabel: "input tokens", yLabel: "seconds",
        series: [
            .init(name: "decoder-only, end to end", color: "#d62728", points: points("mu_decoder") { $0.endToEndMs / 1000 }),
            .init(name: "enc-dec, end to end", color: "#1f77b4", points: points("mu") { $0.endToEndMs / 1000 }),
            .init(name: "decoder-only, first token", color: "#d62728", dashed: true, points: points("mu_decoder") { $0.ttftMs / 1000 }),
            .init(name: "enc-dec, first token", color: "#1f77b4", dashed: true, points: points("mu") { $0.ttftMs / 1000 }),
        ].filter { !$0.points.isEmpty })
    guard let data = chart.render().data(using: .utf8) else { return }
    try AtomicFile.write(data, to: path)
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "The paper's efficiency comparison: Mu encoder-decoder vs its parameter-matched decoder-only twin.",
        discussion: """
        Times batch-1 greedy generation (no early stop) of a Mu model and of the decoder-only baseline with \
        the same parameter count: time to first token (encode + first decoder step, or prompt prefill), \
        decode tokens/s, peak RSS and cache size. Random weights unless --model gives a checkpoint (its \
        twin then gets random weights of the matched shape: speed does not depend on the values).

        With --model naming any other family (e.g. a Llama GGUF file or Hugging Face folder), that model alone \
        is timed the same way (its TTFT at N input tokens is the prompt-processing time); --models model \
        selects it explicitly beside mu and mu_decoder.

        Example:
          encore bench --preset mu-330m --input-tokens 512 --output-tokens 64 --threads 2 --json
          encore bench --input-tokens 128,512,1024,2048 --output-tokens 64 --plot fig1.svg
          encore bench --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --input-tokens 128,512 --threads 2
        """
    )

    @Option(help: "Built-in configuration: mu-330m (the released model's shape).")
    var preset: String = "mu-330m"

    @Option(help: "A model folder to benchmark instead of a preset.")
    var model: String?

    @Option(name: .customLong("input-tokens"), help: "Input length, or several comma separated (e.g. 128,512,1024,2048).")
    var inputTokens: String = "512"

    @Option(help: "Write the paper's Figure-1-style plot (time against input length) to this SVG file.")
    var plot: String?

    var lengths: [Int] { inputTokens.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    @Option(name: .customLong("output-tokens"), help: "Tokens to generate, or several comma separated (e.g. 16,64,256); the plot uses the first.")
    var outputTokensList: String = "64"

    var outputLengths: [Int] { outputTokensList.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    @Option(help: "Threads for matrix products.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Timed repetitions per model (after one warm-up); the median is reported.")
    var reps: Int = 3

    @Option(help: "Which models to run, comma separated: mu, mu_decoder, model (the --model checkpoint as loaded). Default: mu,mu_decoder; with a --model of another family, that model.")
    var models: String?

    @Option(help: "Seed for the random input ids and weights.")
    var seed: UInt64 = 1

    @Flag(help: "Print JSON on standard output (progress still goes to standard error).")
    var json = false

    @Option(name: .customLong("twin-layers"), help: "Depth of the decoder-only baseline (default: the depth whose parameter count matches the Mu model, 31 for Mu-330M). A deeper twin is the 'deeper baseline' of bench/README.md.")
    var twinLayers: Int?

    @Option(name: .customLong("json-out"), help: "Also write the JSON to this file (atomically), beside the printed table.")
    var jsonOut: String?

    @Option(name: .customLong("decode-weights"), help: "Weight formats streamed by decode steps, comma separated: f32, bf16, int8, q8_0, q4_0, q4_1 (prompt passes: see --prompt-weights). Each is measured in the same run, with its quality cost against f32.")
    var decodeWeights: String = "f32"

    var formats: [WeightFormat] { decodeWeights.split(separator: ",").compactMap { try? WeightFormat(parsing: String($0)) } }

    @Option(name: .customLong("prompt-weights"), help: "Weights prompt passes multiply with: auto (the default: blocks for a GGUF --model with --keep-quantized, whose quantized matrices have no fp32 copy; f32 otherwise), f32 (BLAS GEMM over fp32 copies), int8 (int8 GEMM, per-row 7-bit activations with a zero point as PyTorch's x86 int8, over int8 rows, or over Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K blocks as stored with llama.cpp's q8_0 / q8_1 activations: --decode-weights q8_0|q4_0|q4_1, or such a GGUF with --keep-quantized), decode (the decode format widened one matrix at a time), or blocks (as llama.cpp: blocks the int8 GEMM reads multiplied as stored, bf16 widened per matrix; no copies). int8, decode and blocks release the fp32 copies: each --decode-weights format then runs on a freshly built or loaded model, after an fp32 quality reference.")
    var promptWeights: String = "auto"

    /// `auto` as generate resolves it (``PromptWeights/automatic(modelPath:keepQuantized:decodesAsLoaded:)``): `blocks`
    /// for a GGUF --model with quantized matrices kept (`--keep-quantized`, which benchmarks the file's own blocks),
    /// `f32` otherwise; the run's every row takes it. It reads the model file: `run()` resolves it once.
    var resolvedPrompts: PromptWeights {
        if promptWeights == "auto" {
            // bench converts a quantized folder to each --decode-weights format (f32 included): only a kept GGUF's
            // blocks run as loaded
            return model.map { PromptWeights.automatic(modelPath: $0, keepQuantized: keepQuantized,
                                                       decodesAsLoaded: keepQuantized && formats == [.f32]) } ?? .f32
        }
        return PromptWeights(rawValue: promptWeights) ?? .f32
    }

    @Option(name: .customLong("encoder-weights"), help: "Encoder-decoder models (Mu, T5): the format of the encoder's matrices and the cross-attention K/V projections (f32, bf16, int8, q8_0, q4_0 or q4_1; packed only, fp32 copies released; see --prompt-weights). Decoder-only models (the twin) keep theirs.")
    var encoderWeights: String?

    var encoderFormat: WeightFormat? { encoderWeights.flatMap { try? WeightFormat(parsing: $0) } }
    /// Whether each format's setup releases a model's fp32 copies (then each format runs on a freshly built or loaded
    /// model): int8, decode or blocks prompt weights, or a non-f32 --encoder-weights on an encoder-decoder.
    func releasesFP32(encoderDecoder: Bool, prompts: PromptWeights) -> Bool {
        prompts != .f32 || (encoderDecoder && (encoderFormat ?? .f32) != .f32)
    }

    @Option(name: .customLong("quality-tokens"), help: "Teacher-forced decode steps for the quality report of non-f32 formats (0: skip).")
    var qualityTokens: Int = 64

    @Flag(name: .customLong("keep-quantized"), help: "With a GGUF --model: keep Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K matrices and the embedding in their blocks (decode reads them natively; f32 in --decode-weights then means these blocks).")
    var keepQuantized = false

    @Option(name: .customLong("epilogue-ab"), help: "Instead of the study: time the Mu encoder N times with fused and N times with separate GEMM epilogues, interleaved, and print both medians.")
    var epilogueAB: Int = 0

    @Flag(name: .customLong("gemv-layout-ab"), help: "Instead of the study: the quantized decode GEMVs (q8_0, q4_0, q4_1, q5_0, q5_1) over cold weights in ggml's block order vs regrouped by 8, at 1 and 2 threads, on the cold 4096x1024 and SmolLM2-135M shapes, as fractions of the read ceiling measured in the same run (and the K-quant GEMVs where k % 256 == 0).")
    var gemvLayoutAB = false

    @Flag(name: .customLong("no-limits"), help: "Skip measuring the machine's ceilings (memory bandwidth, BLAS GEMM rate, FMA and int8 instruction peaks).")
    var noLimits = false

    @Option(name: .customLong("step-ab"), help: "Instead of the study: decode steps of the Mu preset (or of --model) after the first --input-tokens, --output-tokens steps per variant, alternating step by step between two variants, for each --decode-weights format; prints each variant's p10 and median step time. Variants: shared-gemv (q/k/v in one kernel call vs one call each; any --model), cross-kv (f32 vs f16 cross-attention K/V; Mu or T5), cross-kv8 (f16 vs int8 cross-attention K/V; Mu or T5), streams (x86: the int8 and GGUF-block decode GEMVs walking 2 vs 4 rows side by side per thread; any --model), tasks (decode GEMVs split into at least 4 vs 1 row ranges per thread, the default since session 27; any --model), q4y (x86 AVX2: Q4_0 / Q4_1 decode rows on the generic x8 group kernel vs rows_q4y, int16 pair sums in a loop of whole groups, the default since session 28; any --model), ymm (x86 AVX-512: the fp32, bf16 and int8 decode GEMVs on their zmm vs ymm kernels, ymm the default on Zen 4; any --model), prefetch (the quantized and bf16 decode GEMVs without vs with software prefetches, without the default on Zen 4; any --model). Or read: each decode step followed by a read of as many bytes as its weights (the read ceiling's kernel), printing the steps', the reads' and the pairs' fractions (p10 / median / p90), so the fraction of the read bandwidth is taken under the same load from other tenants (any --model).")
    var stepAB: String?

    @Option(name: .customLong("cross-kv"), help: "Storage of the cross-attention K/V of Mu and T5: auto (the default: as --kv-cache says: f16 beside bf16 or quantized decode weights), f32, f16 (half the bytes a decode step reads over the encoder positions; logits within ~2e-3 of fp32 on the parity fixtures, 4.6e-3 on one T5), or int8 (a quarter: int8 values with a scale per position and block of 32 values, as llama.cpp's q8_0 cache). Each JSON row's cross_kv says what it asked for (a layer whose values f16 cannot hold, or int8 (a non-finite value), stays fp32).")
    var crossKV = "auto"

    @Option(name: .customLong("kv-cache"), help: "Storage of the self-attention KV caches (Mu's decoder, the twin, Llama): auto (the default: f16 for rows whose decode steps read bf16 or quantized weights, as llama.cpp's cache, including f32 rows with --prompt-weights int8, which then stream the int8 rows; f32 otherwise), f32, f16 (half the cache memory and the bytes a step reads over it), or int8 (a quarter: int8 values with a scale per position and block of 32 values, as llama.cpp's q8_0 cache). T5 keeps an f32 self-attention cache. Mu's and T5's cross-attention K/V follow this choice unless --cross-kv says otherwise. The KV column says what each row's self-attention cache ran, each JSON row's kv_cache and cross_kv both.")
    var kvCache = "auto"

    func validate() throws {
        let parts = inputTokens.split(separator: ",")
        if parts.isEmpty || parts.count != lengths.count || lengths.contains(where: { $0 < 1 }) {
            throw ValidationError("--input-tokens: expected positive integers, comma separated (got '\(inputTokens)')")
        }
        let outs = outputTokensList.split(separator: ",")
        if outs.isEmpty || outs.count != outputLengths.count || outputLengths.contains(where: { $0 < 2 }) {
            throw ValidationError("--output-tokens: expected integers >= 2 (decode speed needs a second token), comma separated (got '\(outputTokensList)')")
        }
        if threads < 1 { throw ValidationError("--threads must be >= 1") }
        if formats.isEmpty || formats.count != decodeWeights.split(separator: ",").count {
            throw ValidationError("--decode-weights: expected f32, bf16, int8, q8_0, q4_0 or q4_1, comma separated (got '\(decodeWeights)')")
        }
        if let twice = formats.first(where: { f in formats.filter { $0 == f }.count > 1 }) {
            throw ValidationError("--decode-weights: \(twice.rawValue) is listed more than once (got '\(decodeWeights)')")
        }
        if qualityTokens < 0 { throw ValidationError("--quality-tokens must be >= 0") }
        try RuntimeOptions.checkPromptWeights(promptWeights)
        try RuntimeOptions.checkEncoderWeights(encoderWeights)
        if keepQuantized && (model == nil || formats != [.f32]) {
            throw ValidationError("--keep-quantized needs a GGUF --model and no --decode-weights (it benchmarks the file's own blocks)")
        }
        if reps < 1 { throw ValidationError("--reps must be >= 1") }
        if let stepAB, !["shared-gemv", "cross-kv", "cross-kv8", "streams", "tasks", "q4y", "ymm", "prefetch", "read"].contains(stepAB) {
            throw ValidationError("--step-ab: expected shared-gemv, cross-kv, cross-kv8, streams, tasks, q4y, ymm, prefetch or read (got '\(stepAB)')")
        }
        if !["auto", "f32", "f16", "int8"].contains(crossKV) { throw ValidationError("--cross-kv: expected auto, f32, f16 or int8 (got '\(crossKV)')") }
        try RuntimeOptions.checkKVCache(kvCache)
        let known = Set(["mu", "mu_decoder", "model"])
        for m in (models ?? "mu").split(separator: ",") where !known.contains(String(m)) {
            throw ValidationError("--models: unknown model '\(m)' (use mu, mu_decoder, model)")
        }
        if model == nil, (models ?? "").split(separator: ",").contains("model") {
            throw ValidationError("--models model needs --model FILE_OR_FOLDER")
        }
        if model == nil && preset != "mu-330m" { throw ValidationError("--preset: unknown preset '\(preset)' (available: mu-330m)") }
    }

    func run() throws {
        try runReportingErrors {
            Backend.setThreads(threads)
            if epilogueAB > 0 { try runEpilogueAB(); return }
            if gemvLayoutAB { runGemvLayoutAB(); return }
            if let stepAB { try runStepAB(stepAB); return }
            let prompts = resolvedPrompts
            let promptInt8 = prompts == .int8 || prompts == .blocks   // prompt passes on the int8 / block GEMMs
            var muConfig = MuConfig.mu330m
            var loaded: LanguageModel? = nil
            var kvCacheKeptFP32 = false   // --kv-cache f16 asked of a T5 model
            let kvStorage = try KVCacheStorage(parsing: kvCache)
            if let model {
                let lm = try ModelRegistry.load(folder: model, keepQuantized: keepQuantized)
                loaded = lm
                if let mu = lm as? MuModel { muConfig = mu.config }
            }
            // A checkpoint of another family (Llama GGUF / HF) is benchmarked alone unless --models says otherwise.
            let isMuFamily = loaded == nil || loaded is MuModel || loaded is MuDecoderModel
            var wanted = (models ?? (isMuFamily ? "mu,mu_decoder" : "model")).split(separator: ",").map(String.init)
            if let loaded { wanted = wanted.map { $0 == "model" ? loaded.modelType : $0 } }
            // The block format a --keep-quantized file's matrices are in (its most common block type), whose
            // GEMM its int8 / blocks prompt passes run.
            let fileBlockFormat: WeightFormat? = keepQuantized && promptInt8 ? model.flatMap { m in
                GGUFModelFile.isFile(m) ? try? GGUFModelFile(path: m).mainBlockFormat : nil
            } : nil
            var encoderDecoderNames: Set<String> = ["mu"]
            if let loaded, loaded.isEncoderDecoder { encoderDecoderNames.insert(loaded.modelType) }
            let loadedType = loaded?.modelType
            /// The GEMM a result row's int8 prompt pass ran (see KernelBench.promptGEMMFormat); the file's blocks only
            /// for the loaded model (random Mu / twin rows beside it keep fp32 weights).
            func promptGEMMFormat(model name: String, label: String) -> WeightFormat {
                let fileBlocks = name == loadedType ? fileBlockFormat : nil
                return KernelBench.promptGEMMFormat(encoderDecoder: encoderDecoderNames.contains(name),
                                                    decodeFormat: label == "gguf" ? fileBlocks : try? WeightFormat(parsing: label),
                                                    encoderFormat: encoderFormat, fileBlockFormat: fileBlocks)
            }
            /// The block or int8 GEMM a result row's prompt pass ran, nil when it ran BLAS (fp32 copies, or weights
            /// widened per matrix): with `int8` every row's; with `blocks` only a row whose decode (or chosen encoder)
            /// format the int8 GEMM reads as stored (Mu's and T5's encoders take the decoder's format then).
            func promptGEMM(_ r: BenchResult) -> WeightFormat? {
                switch prompts {
                case .int8: return promptGEMMFormat(model: r.model, label: r.decodeWeights)
                case .blocks:
                    let fileBlocks = r.model == loadedType ? fileBlockFormat : nil
                    let decode = r.decodeWeights == "gguf" ? fileBlocks : try? WeightFormat(parsing: r.decodeWeights)
                    let f = encoderDecoderNames.contains(r.model) ? (encoderFormat ?? decode) : decode
                    return f.flatMap { $0.hasInt8PromptGEMM ? $0 : nil }
                case .f32, .decode: return nil
                }
            }
            if let advice = Backend.blasAdvice { printStderr(advice) }
            var limits: KernelBench.Figures? = nil
            if !noLimits {
                printStderr("measuring the machine's ceilings (memory read bandwidth, BLAS GEMM, instruction peaks)…")
                // the formats int8 prompt passes may run on (KernelBench keeps the block ones, each once)
                var promptFormats = promptInt8 ? formats : []
                if promptInt8, let e = encoderFormat, wanted.contains(where: encoderDecoderNames.contains) { promptFormats.append(e) }
                if let fileBlockFormat { promptFormats.append(fileBlockFormat) }
                limits = KernelBench.run(formats: formats, int8Prompts: promptInt8, blockPromptFormats: promptFormats)
            }
            var results: [BenchResult] = []
            var qualities: [(model: String, format: String, absolute: Float, relative: Float, ppl: Double, refPPL: Double)] = []
            var qualityOnText = false   // the quality sequences came from QualityText (a checkpoint with a tokenizer)
            for name in wanted {
                printStderr("[\(name)] building model…")
                let fromFile = loaded?.modelType == name
                let releases = releasesFP32(encoderDecoder: fromFile ? loaded!.isEncoderDecoder : name == "mu", prompts: prompts)
                if !fromFile && name != "mu" && name != "mu_decoder" {
                    throw EncoreError(.invalidArgument, "--models: '\(name)' is not the loaded model's type")
                }
                /// The model as built or loaded (rebuilt for each format when the prompt weights release the fp32 copies).
                func build() throws -> LanguageModel {
                    if fromFile { return try ModelRegistry.load(folder: model!, keepQuantized: keepQuantized) }
                    if name == "mu" { return try MuModel(config: muConfig, randomSeed: seed) }
                    var twin = MuDecoderConfig.matching(muConfig)
                    if let twinLayers {
                        guard twinLayers >= 1 && twinLayers <= 512 else { throw ValidationError("--twin-layers must be in 1...512 (got \(twinLayers))") }
                        twin.nLayer = twinLayers
                    }
                    return try MuDecoderModel(config: twin, randomSeed: seed)
                }
                /// --kv-cache on a model whose decode weights are set (auto: f16 for bf16 / quantized ones; Mu's and
                /// T5's cross-attention K/V follow it unless --cross-kv says otherwise); the self-attention cache's
                /// storage.
                func configureKVCache(_ lm: LanguageModel) throws -> KVRowFormat {
                    if lm.supportsHalfKVCache || (kvStorage != .f16 && kvStorage != .int8) { try lm.useKVCache(kvStorage) }
                    else {   // T5 under f16 / int8: its self-attention cache stays fp32, its cross K/V take the format
                        if !kvCacheKeptFP32 {
                            printStderr("[\(name)] --kv-cache \(kvStorage.rawValue): T5 keeps an fp32 self-attention cache (its relative-bias attention reads fp32 rows); its cross-attention K/V are \(kvStorage.rawValue)")
                            kvCacheKeptFP32 = true
                        }
                        try lm.useKVCache(.f32)
                        (lm as? CrossKVModel)?.crossKV = kvStorage == .int8 ? .int8 : .f16
                    }
                    if let asked = try? KVRowFormat(parsing: crossKV) { (lm as? CrossKVModel)?.crossKV = asked }
                    return lm.kvCacheRows
                }
                var lm: LanguageModel = fromFile ? loaded! : try build()
                if fromFile && releases { loaded = nil }   // rebuilt models replace it: only `lm` holds it
                var reference: DecodeQuality? = nil
                // The quality sequences: with a checkpoint that has a tokenizer, a fixed English text (its first 64 tokens
                // as the prompt, the next qualityTokens as targets: a perplexity that means something); otherwise fixed
                // token sequences from the seed (a prompt of the first input length, then qualityTokens targets).
                var rng = SplitMix64(seed: seed &+ 17)
                let low = min(3, lm.vocabSize - 1)
                func ids(_ n: Int) -> [Int] { (0..<n).map { _ in low + Int(rng.next() % UInt64(lm.vocabSize - low)) } }
                var qualityPrompt = ids(lengths[0]), qualityTargets = ids(qualityTokens)
                if fromFile, qualityTokens > 0, let codec = try? TextCodec.load(folder: model!, required: false) {
                    var text = QualityText.paragraph
                    var tokens = codec.encode(text, model: lm)
                    while tokens.count < 64 + qualityTokens && tokens.count > 0 && text.count < 1 << 20 {
                        text += " " + QualityText.paragraph
                        tokens = codec.encode(text, model: lm)
                    }
                    if tokens.count >= 64 + qualityTokens, tokens.allSatisfy({ $0 >= 0 && $0 < lm.vocabSize }) {
                        qualityPrompt = Array(tokens[0..<64])
                        qualityTargets = Array(tokens[64..<(64 + qualityTokens)])
                        qualityOnText = true
                    }
                }
                let wantsQuality = qualityTokens > 0 && !keepQuantized && (releases || formats != [.f32])
                if releases && wantsQuality {   // the fp32 reference before the fp32 copies are released
                    printStderr("[\(name)] quality reference: f32, \(qualityTokens) teacher-forced decode steps…")
                    reference = try DecodeQuality.run(lm, prompt: qualityPrompt, targets: qualityTargets)
                }
                for (index, format) in formats.enumerated() {
                    // --keep-quantized: the GGUF blocks as loaded ("gguf"); other formats are made from them
                    let asLoaded = keepQuantized && format == .f32 && fromFile   // the random preset rows beside it are fp32
                    if releases && index > 0 {
                        printStderr("[\(name)] rebuilding the model for \(format.rawValue) (the previous format released its fp32 copies)…")
                        lm = try build()
                    }
                    if !asLoaded { try lm.useDecodeWeights(format) }
                    if let encoderFormat {
                        if lm.isEncoderDecoder { try lm.useEncoderWeights(encoderFormat) }
                        else if index == 0 { printStderr("[\(name)] --encoder-weights: a decoder-only model, its weights stay as they are") }
                    }
                    if prompts != .f32 { try lm.usePromptWeights(prompts) }
                    let cacheRows = try configureKVCache(lm)
                    let label = asLoaded ? "gguf" : format.rawValue
                    let tag = "\(name) \(label)"
                    for length in lengths {
                        for outputTokens in outputLengths {
                            let bench = Benchmark(inputTokens: length, outputTokens: outputTokens, repetitions: reps, seed: seed)
                            var r = try bench.run(lm) { rep, total in
                                printStderr(rep == 0 ? "[\(tag)] warm-up, counting FLOPs (\(length) in → \(outputTokens) out)…"
                                                     : "[\(tag)] \(length) in → \(outputTokens) out: run \(rep)/\(total)…")
                            }
                            r.decodeWeights = label
                            r.kvCache = cacheRows.rawValue
                            r.crossKV = (lm as? CrossKVModel).map { $0.crossKV.rawValue }
                            results.append(r)
                            if StepProfile.enabled {
                                let p = StepProfile.stepPercentiles()
                                printStderr("[\(tag)] " + (StepProfile.reportText() ?? "") + String(format: "\n  weights %.4f GB per step: %.1f GB/s at the p10 step, %.1f GB/s at the median step",
                                                                                         r.weightBytesPerToken / 1e9, r.weightBytesPerToken / p.p10 / 1e6, r.weightBytesPerToken / p.median / 1e6))
                                if let prompt = StepProfile.reportText(prompt: true) { printStderr("[\(tag)] " + prompt) }
                            }
                        }
                    }
                    if wantsQuality && (format != .f32 || formats.count > 1 || releases) {
                        let prompt = qualityPrompt, targets = qualityTargets
                        if reference == nil {   // fp32 weights and an fp32 cache: the row's cost is both choices'
                            printStderr("[\(name)] quality reference: f32, \(qualityTokens) teacher-forced decode steps…")
                            try lm.useDecodeWeights(.f32)
                            try lm.useKVCache(.f32)
                            reference = try DecodeQuality.run(lm, prompt: prompt, targets: targets)
                            try lm.useDecodeWeights(format)
                            _ = try configureKVCache(lm)   // the row's caches again, cross K/V included
                        }
                        let q = try DecodeQuality.run(lm, prompt: prompt, targets: targets)
                        let e = q.maxLogitError(against: reference!)
                        qualities.append((name, format.rawValue, e.absolute, e.relative, q.perplexity, reference!.perplexity))
                    }
                }
                if !keepQuantized && !releases { try lm.useDecodeWeights(.f32) }
            }
            if limits != nil {   // the read ceiling again, after the models: the fractions use the larger sample
                printStderr("measuring the read ceiling again…")
                limits!.addReadSample(KernelBench.readCeilingGBps())
            }
            if let plot { try writePlot(results.filter { $0.decodeWeights == results.first?.decodeWeights }, to: plot) }
            let report: [String: Any] = [
                "system": "encore", "version": EncoreVersion.string, "decode_weights": decodeWeights, "prompt_weights": prompts.rawValue, "encoder_weights": encoderWeights ?? (prompts == .decode || prompts == .blocks ? "decode" : "f32"), "threads": threads, "blas": Backend.blasName,
                "bf16_prompt_gemm": Backend.bf16PromptGEMMRuns,
                "cross_kv": crossKV, "kv_cache": kvCacheKeptFP32 ? "f32 (T5)" : kvStorage.rawValue,   // as asked; each row's "kv_cache" says what it ran
                "kernel_paths": Dictionary(uniqueKeysWithValues: formats.map(kernelLabel)),
                "quality": qualities.map { q -> [String: Any] in
                    ["model": q.model, "decode_weights": q.format, "max_logit_error": q.absolute, "max_logit_error_relative": q.relative,
                     "perplexity": q.ppl, "perplexity_f32": q.refPPL, "tokens": qualityTokens,
                     "sequence": qualityOnText ? "fixed English text" : "fixed random token ids"]
                },
                "results": results.map { r -> [String: Any] in
                    var o = r.json
                    if let limits {
                        o["decode_weight_gb_per_s"] = r.weightGBps
                        o["decode_fraction_of_read_bw"] = r.weightGBps / limits.readGBps
                        o["decode_fraction_of_read_bw_with_caches_upper_bound"] = r.weightAndCacheGBpsUpperBound / limits.readGBps
                        o["prefill_fraction_of_gemm"] = r.prefillGFLOPs / limits.gemmGFLOPs
                        o["prefill_fraction_of_fma_peak"] = r.prefillGFLOPs / limits.fmaPeakGFLOPs
                        if let i8 = limits.int8GemmGOPs { o["prefill_fraction_of_int8_gemm"] = r.prefillGFLOPs / i8 }
                        if let q8 = limits.q8GemmGOPs { o["prefill_fraction_of_q8_0_gemm"] = r.prefillGFLOPs / q8 }
                        if let f = promptGEMM(r) {
                            o["prompt_gemm"] = f.rawValue
                            if let g = limits.promptGemmGOPs(f) { o["prefill_fraction_of_prompt_gemm"] = r.prefillGFLOPs / g }
                        }
                        if let p8 = limits.int8PeakGOPs { o["prefill_fraction_of_int8_peak"] = r.prefillGFLOPs / p8 }
                    }
                    return o
                },
                "machine": limits?.json ?? [:],
            ]
            if let jsonOut { try AtomicFile.write(Data((jsonString(report) + "\n").utf8), to: jsonOut) }
            if json {
                print(jsonString(report))
                return
            }
            let kvNote: String = " · KV caches " + kvStorage.rawValue + (kvStorage == .auto ? " (f16 for bf16 / quantized decode weights)" : "")
            let promptNote: String
            switch prompts {
            case .f32: promptNote = "fp32 prompt passes"
            case .int8: promptNote = "int8 prompt passes (int8 GEMM, \(Backend.int8GEMMPath))"
            case .decode: promptNote = "prompt passes on the decode format" + (Backend.bf16PromptGEMMRuns && formats.contains(.bf16) ? " (bf16: the vdpbf16ps GEMM)" : "")
            case .blocks: promptNote = "prompt passes on the decode blocks as stored (block GEMM, \(Backend.int8GEMMPath); other formats widened"
                + (Backend.bf16PromptGEMMRuns && formats.contains(.bf16) ? ", bf16 on the vdpbf16ps GEMM)" : ")")
            }
            let encoderNote = encoderWeights.map { " · encoder weights \($0)" } ?? ""
            let crossNote = crossKV != "auto" ? " · cross-attention K/V (Mu, T5) \(crossKV)"
                : kvStorage == .auto ? " · cross-attention K/V (Mu, T5) f16 beside bf16 / quantized decode weights"
                : " · cross-attention K/V (Mu, T5) \(kvStorage.rawValue)"
            print("Encore \(EncoreVersion.string) · \(Backend.blasName) · \(threads) thread(s) · batch 1, greedy, " + promptNote
                  + encoderNote + crossNote + kvNote)
            print("decode kernels: " + formats.map(kernelLabel).map { "\($0.0) \($0.1)" }.joined(separator: ", ")
                  + (formats.contains { [.int8, .q8_0, .q4_0, .q4_1].contains($0) }
                     ? Backend.groupedDecodeStreams.map { " (\($0) rows side by side per thread)" } ?? "" : ""))
            print("model       weights KV    params   input  output  encode ms  1st step ms   TTFT ms   decode tok/s   e2e s   GFLOP/seq   peak RSS MiB   cache MiB")
            for r in results {
                print(r.model.padding(toLength: 11, withPad: " ", startingAt: 0) + " " + r.decodeWeights.padding(toLength: 8, withPad: " ", startingAt: 0)
                      + r.kvCache.padding(toLength: 4, withPad: " ", startingAt: 0)
                      + String(format: "%7.1fM  %6d  %6d  %9.1f  %11.1f  %8.1f  %13.1f  %6.2f  %10.2f  %13.0f  %10.1f",
                             Double(r.params) / 1e6, r.inputTokens, r.outputTokens, r.encodeMs, r.firstStepMs,
                             r.ttftMs, r.decodeTokensPerSecond, r.endToEndMs / 1000, r.sequenceFLOPs / 1e9, r.peakRSSMB, r.cacheMB))
            }
            print("(FLOPs and weight bytes are counted by the model as it runs: every matrix product, attention included)")
            if !qualities.isEmpty {
                print("\nquality vs f32 (\(qualityTokens) teacher-forced decode steps on " + (qualityOnText ? "a fixed English text, after its first 64 tokens):" : "a fixed sequence of random token ids):"))
                for q in qualities {
                    print(String(format: "%@ %@: max logit error %.4f (%.2e of max |logit|), perplexity %.3f vs %.3f f32 (%+.2f%%)",
                                 q.model as NSString, q.format as NSString, q.absolute, q.relative, q.ppl, q.refPPL, 100 * (q.ppl / q.refPPL - 1)))
                }
            }
            if let limits {
                print(String(format: "\nmachine: read %.1f GB/s (largest of %@), BLAS GEMM %.0f GFLOP/s (%.0f%% of the FMA peak, %.0f GFLOP/s%@); decode GEMV %.1f GB/s (%.0f%% of read), LM-head GEMV %.1f GB/s",
                             limits.readGBps, limits.readSamples.map { String(format: "%.1f", $0) }.joined(separator: " / ") as NSString,
                             limits.gemmGFLOPs, 100 * limits.gemmGFLOPs / limits.fmaPeakGFLOPs, limits.fmaPeakGFLOPs,
                             ((limits.int8PeakGOPs.map { String(format: "; int8 %@ peak %.0f GOP/s", Backend.int8GEMMPath as NSString, $0) } ?? "")
                              + (limits.bf16PeakGFLOPs.map { String(format: "; bf16 vdpbf16ps peak %.0f GFLOP/s", $0) } ?? "")) as NSString,
                             limits.gemvGBps, 100 * limits.gemvGBps / limits.readGBps, limits.gemvLMHeadGBps))
                if !limits.gemvFormatGBps.isEmpty {
                    print("decode GEMV 4096×1024, cold weights: " + limits.gemvFormatGBps.map {
                        String(format: "%@ %.1f GB/s (%.0f%%)", $0.format.rawValue as NSString, $0.gbps, 100 * $0.gbps / limits.readGBps)
                    }.joined(separator: ", "))
                }
                if let i8 = limits.int8GemmGOPs {
                    print(String(format: "int8 prompt GEMM 512×4096×1024: %.0f GOP/s = %.2f× the BLAS fp32 GEMM%@", i8, i8 / limits.gemmGFLOPs,
                                 (limits.int8PeakGOPs.map { String(format: ", %.0f%% of the int8 instruction peak", 100 * i8 / $0) } ?? "") as NSString))
                }
                if let i8 = limits.int8GemmGOPs {
                    for (format, gops) in limits.blockGemmGOPs {
                        print(String(format: "%@ prompt GEMM 512×4096×1024 (llama.cpp's %@ activations): %.0f GOP/s = %.2f× the int8 GEMM's time",
                                     format.rawValue.uppercased() as NSString, (format == .q4_1 || format == .q5_1 ? "q8_1" : "q8_0") as NSString, gops, i8 / gops))
                    }
                }
                for r in results {
                    if let i8 = limits.int8GemmGOPs, let f = promptGEMM(r) {
                        // the GEMM this row's prompt pass ran (int8 rows, or the blocks of its format)
                        let g = limits.promptGemmGOPs(f) ?? i8
                        let gemmName = f == .int8 ? "int8" : f.rawValue.uppercased()
                        print(String(format: "%@ %d→%d: prompt pass %.0f GOP at %.0f GOP/s = %.0f%% of the measured %@ GEMM rate%@ (%.0f%% of BLAS fp32's)",
                                     r.model as NSString, r.inputTokens, r.outputTokens, r.prefillFLOPs / 1e9, r.prefillGFLOPs,
                                     100 * r.prefillGFLOPs / g, gemmName as NSString,
                                     (limits.int8PeakGOPs.map { String(format: ", %.0f%% of the int8 instruction peak", 100 * r.prefillGFLOPs / $0) } ?? "") as NSString,
                                     100 * r.prefillGFLOPs / limits.gemmGFLOPs))
                    } else {
                        // bf16-only prompt passes on the opt-in AVX512-BF16 GEMM: set against the vdpbf16ps peak too
                        let bf16Tile = (prompts == .decode || prompts == .blocks) && r.decodeWeights == "bf16" && Backend.bf16PromptGEMMRuns
                        let bf16Part = bf16Tile ? (limits.bf16PeakGFLOPs.map { String(format: ", %.0f%% of the vdpbf16ps peak", 100 * r.prefillGFLOPs / $0) } ?? "") : ""
                        print(String(format: "%@ %d→%d: prompt pass %.0f GFLOP at %.0f GFLOP/s = %.0f%% of the measured BLAS GEMM rate, %.0f%% of the FMA peak%@",
                                     r.model as NSString, r.inputTokens, r.outputTokens, r.prefillFLOPs / 1e9, r.prefillGFLOPs,
                                     100 * r.prefillGFLOPs / limits.gemmGFLOPs, 100 * r.prefillGFLOPs / limits.fmaPeakGFLOPs, bf16Part as NSString))
                    }
                    let withCaches = r.weightAndCacheGBpsUpperBound   // the caches each step reads too
                    print(String(format: "%@ %@ %d→%d: decode streams %.3f GB of weights per token = %.1f GB/s, %.0f%% of the read ceiling; with the caches (≤ %.1f MiB a step) %.1f GB/s, %.0f%%",
                                 r.model as NSString, r.decodeWeights as NSString, r.inputTokens, r.outputTokens, r.weightBytesPerToken / 1e9, r.weightGBps,
                                 100 * r.weightGBps / limits.readGBps, r.cacheMB, withCaches, 100 * withCaches / limits.readGBps))
                }
            }
            var compared = false
            for format in formats.map(\.rawValue) { for length in lengths { for out in outputLengths {
                guard let mu = results.first(where: { $0.model == "mu" && $0.inputTokens == length && $0.outputTokens == out && $0.decodeWeights == format }),
                      let dec = results.first(where: { $0.model == "mu_decoder" && $0.inputTokens == length && $0.outputTokens == out && $0.decodeWeights == format }) else { continue }
                if !compared { print(""); compared = true }
                if formats.count > 1 { print("[\(format) decode weights]") }
                print(String(format: "encoder-decoder vs decoder-only at %d → %d tokens: TTFT ratio %.2f (%.0f%% lower), decode speed %.2f×, end to end %.2f×, peak memory %.0f%% %@",
                             length, out, mu.ttftMs / dec.ttftMs, (1 - mu.ttftMs / dec.ttftMs) * 100,
                             mu.decodeTokensPerSecond / dec.decodeTokensPerSecond, dec.endToEndMs / mu.endToEndMs,
                             abs(1 - mu.peakRSSMB / dec.peakRSSMB) * 100, (mu.peakRSSMB <= dec.peakRSSMB ? "lower" : "higher") as NSString))
                print(String(format: "  predicted by the architecture: prompt FLOPs ratio %.2f, decode weight bytes ratio %.2f×, FLOPs per sequence ratio %.2f",
                             mu.prefillFLOPs / dec.prefillFLOPs, dec.weightBytesPerToken / mu.weightBytesPerToken, mu.sequenceFLOPs / dec.sequenceFLOPs))
            } } }
            if compared { print("(paper, on an NPU: 47% lower first-token latency, 4.7× decode throughput)") }
            if let plot { print("plot: \(plot)") }
        }
    }

    /// `--epilogue-ab N`: the Mu encoder (preset or --model) on a random prompt of the first --input-tokens length,
    /// alternating separate and fused epilogues; medians of N runs each.
    func runGemvLayoutAB() {
        let threadList = threads == 1 ? [1] : [1, threads]
        let rows = KernelBench.gemvLayoutAB(threads: threadList, progress: { printStderr($0) })
        defer { Backend.setThreads(threads) }
        if json {
            let obj: [String: Any] = ["system": "encore", "version": EncoreVersion.string, "gemv_layout_ab": rows.map(\.json),
                                      "kernel_paths": Dictionary(uniqueKeysWithValues: [WeightFormat.q8_0, .q4_0, .q4_1].map { ($0.rawValue, $0.kernelPath) })]
            if let data = try? JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys]),
               let text = String(data: data, encoding: .utf8) { print(text) }
            return
        }
        print("decode GEMV, one activation row, cold weights (>= \(KernelBench.coldBytes >> 20) MiB of copies in rotation: 192 MiB or twice the L3), median call; read ceiling: best of 3 sums over \(max(512, KernelBench.coldBytes >> 20)) MiB before each shape")
        print("ggml = blocks in ggml's order (the previous kernels), x8 = regrouped by 8 (the new kernels), alternating call by call")
        print("kernels: " + [WeightFormat.q8_0, .q4_0, .q4_1].map { "\($0.rawValue) \($0.kernelPath)" }.joined(separator: ", "))
        print("shape                      fmt    thr  read GB/s  ggml GB/s  of read   x8 GB/s  of read  x8/ggml")
        for r in rows {
            guard let old = r.ggmlGBps else {          // K-quants: one layout (their kernel in the x8 columns)
                print(String(format: "%-26@ %-5@ %3d  %9.1f  %9@  %7@  %8.1f  %6.0f%%", r.shape as NSString, r.format.rawValue as NSString,
                             r.threads, r.readGBps, "-" as NSString, "" as NSString, r.x8GBps, 100 * r.x8GBps / r.readGBps))
                continue
            }
            print(String(format: "%-26@ %-5@ %3d  %9.1f  %9.1f  %6.0f%%  %8.1f  %6.0f%%  %6.2fx", r.shape as NSString,
                         r.format.rawValue as NSString, r.threads, r.readGBps, old, 100 * old / r.readGBps,
                         r.x8GBps, 100 * r.x8GBps / r.readGBps, r.x8GBps / old))
        }
    }

    /// A decode format and its kernels' path, as the report names them. With --keep-quantized the f32 row streams the
    /// GGUF's own blocks (whatever their types), not fp32 weights.
    func kernelLabel(_ format: WeightFormat) -> (String, String) {
        keepQuantized && format == .f32 ? ("gguf", "(the file's own blocks)") : (format.rawValue, format.kernelPath)
    }

    /// `--step-ab VARIANT`: Mu decode steps alternating between the variant's two code paths (StepAB), per format.
    func runStepAB(_ variant: String) throws {
        // Mu (the preset or a Mu --model), or with shared-gemv any other --model (a Llama GGUF: q/k/v and gate/up)
        let lm: LanguageModel
        if let model {
            let loaded = try ModelRegistry.load(folder: model, keepQuantized: keepQuantized)
            if let mu = loaded as? MuModel { lm = try MuModel(config: mu.config, randomSeed: seed) }
            else if !variant.hasPrefix("cross-kv") || loaded is T5Model { lm = loaded }
            else { throw ValidationError("--step-ab \(variant) needs a Mu or T5 model") }
        } else {
            lm = try MuModel(config: .mu330m, randomSeed: seed)
        }
        let crossModel = lm as? CrossKVModel
        var rng = SplitMix64(seed: seed)
        let prompt = (0..<lengths[0]).map { _ in 3 + Int(rng.next() % UInt64(lm.vocabSize - 3)) }
        if variant == "read" { try runDecodeAgainstRead(lm, prompt: prompt); return }
        let limits = noLimits ? nil : KernelBench.run(formats: [])
        let names = variant == "shared-gemv" ? ("one GEMV call per layer", "q/k/v (gate/up) in one call")
            : variant == "streams" ? ("2 rows side by side per thread", "4 rows side by side per thread")
            : variant == "tasks" ? ("at least 4 row ranges per thread", "at least 1 row range per thread")
            : variant == "q4y" ? ("Q4 rows on the x8 group kernel", "Q4 rows on rows_q4y")
            : variant == "ymm" ? ("f32 / bf16 / int8 GEMVs on zmm", "f32 / bf16 / int8 GEMVs on ymm")
            : variant == "prefetch" ? ("decode GEMVs without software prefetch", "decode GEMVs with software prefetch")
            : variant == "cross-kv8" ? ("cross K/V f16", "cross K/V int8")
            : ("cross K/V f32", "cross K/V f16")
        print("\(lm.modelType) decode steps after \(lengths[0]) input tokens, \(outputLengths[0]) steps per variant, alternating step by step; \(threads) thread(s)"
              + (limits.map { String(format: "; read ceiling %.1f GB/s", $0.readGBps) } ?? ""))
        print("A = \(names.0), B = \(names.1); ms per step (p10 / median); weight GB/s and fraction of the read ceiling at the p10 step")
        defer {
            DecodeTuning.sharedGEMV = true; Backend.groupedDecodeStreams = nil; Backend.decodeTasksPerThread = nil
            Backend.q4PairSumKernel = nil; Backend.decodeGEMVOnYMM = nil; Backend.decodeGEMVPrefetch = nil
        }
        if variant == "q4y" {   // B's setting (each step sets its side; the defer above restores the default)
            Backend.q4PairSumKernel = true
            if !Backend.q4PairSumKernelRuns {
                print("note: rows_q4y does not run on this CPU's decode path (it is the AVX2 one): A and B are the same kernel")
            }
        }
        if variant == "ymm" {   // the paths each side runs, per format (the same on CPUs without AVX-512)
            for format in formats where !(keepQuantized && format == .f32) {
                Backend.decodeGEMVOnYMM = false
                let zmm = format.kernelPath
                Backend.decodeGEMVOnYMM = true
                let ymm = format.kernelPath
                print("\(format.rawValue): A \(zmm), B \(ymm)" + (zmm == ymm ? " (one kernel: A and B are the same)" : ""))
            }
            Backend.decodeGEMVOnYMM = nil
        }
        let storage = try KVCacheStorage(parsing: kvCache)
        for format in formats {
            if !(keepQuantized && format == .f32) { try lm.useDecodeWeights(format) }
            // shared-gemv: the cross K/V as --cross-kv says (auto: as --kv-cache, whose auto is f16 beside bf16 /
            // quantized decode weights, a kept GGUF's blocks included); the self-attention cache stays fp32 here
            let cross = crossStorage(lm, storage)
            printStderr("[\(lm.modelType) \(format.rawValue)] \(variant): \(outputLengths[0]) steps per variant…")
            let r = try StepAB.run(lm, prompt: prompt, steps: outputLengths[0]) { v in
                switch variant {
                case "shared-gemv": DecodeTuning.sharedGEMV = v == 1; crossModel?.crossKV = cross
                case "streams": Backend.groupedDecodeStreams = v == 1 ? 4 : 2; crossModel?.crossKV = cross
                case "tasks": Backend.decodeTasksPerThread = v == 1 ? 1 : 4; crossModel?.crossKV = cross
                case "q4y": Backend.q4PairSumKernel = v == 1; crossModel?.crossKV = cross
                case "ymm": Backend.decodeGEMVOnYMM = v == 1; crossModel?.crossKV = cross
                case "prefetch": Backend.decodeGEMVPrefetch = v == 1; crossModel?.crossKV = cross
                case "cross-kv8": crossModel?.crossKV = v == 1 ? .int8 : .f16
                default: crossModel?.halfCrossKV = v == 1
                }
            }
            let bytes = r.weightBytes
            func side(_ t: StepAB.Times) -> String {
                var s = String(format: "%.3f / %.3f ms, %.1f GB/s", t.p10, t.median, bytes / t.p10 / 1e6)
                if let limits { s += String(format: " (%.0f%%)", 100 * bytes / t.p10 / 1e6 / limits.readGBps) }
                return s
            }
            let label = kernelLabel(format).0   // "gguf": the file's own blocks
            print(String(format: "%@: A %@ | B %@ | B/A speed p10 %.3f×, median %.3f×", label as NSString,
                         side(r.a) as NSString, side(r.b) as NSString, r.a.p10 / r.b.p10, r.a.median / r.b.median))
        }
    }

    /// The cross-attention K/V storage of a --step-ab run: as --cross-kv says (auto: as --kv-cache's storage gives them
    /// beside the model's decode weights, `crossKVRows`, the rule useKVCache applies).
    func crossStorage(_ lm: LanguageModel, _ storage: KVCacheStorage) -> KVRowFormat {
        (try? KVRowFormat(parsing: crossKV)) ?? lm.crossKVRows(storage)
    }

    /// `--step-ab read`: per --decode-weights format, decode steps each followed by a read of the same bytes
    /// (StepAB.againstRead); prints the steps' and reads' times and the paired fractions.
    func runDecodeAgainstRead(_ lm: LanguageModel, prompt: [Int]) throws {
        print("\(lm.modelType) decode steps after \(lengths[0]) input tokens, \(outputLengths[0]) steps, each followed by a read "
              + "of as many bytes as its weights (ek_sum_f32 over a touched 512 MiB buffer, as the read ceiling); \(threads) thread(s)")
        print("ms per step and per read (p10 / median); decode as a fraction of the read: each step's read time over its time (p10 / median / p90)")
        let storage = try KVCacheStorage(parsing: kvCache)
        for format in formats {
            if !(keepQuantized && format == .f32) { try lm.useDecodeWeights(format) }
            // the caches as the study's rows keep them (--kv-cache auto: f16 beside bf16 / quantized weights; T5 keeps an
            // fp32 self-attention cache), the cross K/V as --cross-kv says
            if lm.supportsHalfKVCache || (storage != .f16 && storage != .int8) { _ = try lm.useKVCache(storage) }
            (lm as? CrossKVModel)?.crossKV = crossStorage(lm, storage)
            printStderr("[\(lm.modelType) \(format.rawValue)] decode against reads: \(outputLengths[0]) steps…")
            let r = try StepAB.againstRead(lm, prompt: prompt, steps: outputLengths[0])
            let gb = r.weightBytes / 1e9
            let label = kernelLabel(format).0
            print(String(format: "%@: %.3f GB a step; step %.3f / %.3f ms (%.1f GB/s at the median); read %.3f / %.3f ms (%.1f GB/s); "
                         + "decode at %.0f%% / %.0f%% / %.0f%% of the read",
                         label as NSString, gb, r.step.p10, r.step.median, gb / r.step.median * 1000, r.read.p10, r.read.median,
                         gb / r.read.median * 1000, 100 * r.fractions.quantile(0.1), 100 * r.fractions.median,
                         100 * r.fractions.quantile(0.9)))
        }
    }

    func runEpilogueAB() throws {
        var config = MuConfig.mu330m
        if let model, let mu = try ModelRegistry.load(folder: model) as? MuModel { config = mu.config }
        let mu = try MuModel(config: config, randomSeed: seed)
        var rng = SplitMix64(seed: seed)
        let prompt = (0..<lengths[0]).map { _ in 3 + Int(rng.next() % UInt64(config.vocabSize - 3)) }
        _ = try mu.encode([prompt])
        var times: [Bool: [Double]] = [false: [], true: []]
        for i in 0..<(2 * epilogueAB) {
            let fused = i % 2 == 1
            Ops.fusedEpilogues = fused
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try mu.encode([prompt])
            times[fused]!.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            printStderr("epilogues \(fused ? "fused" : "separate"): \(String(format: "%.1f", times[fused]!.last!)) ms")
        }
        Ops.fusedEpilogues = true
        func median(_ a: [Double]) -> Double { let s = a.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
        let a = median(times[false]!), b = median(times[true]!)
        print(String(format: "Mu encoder, %d tokens, %d thread(s), median of %d: separate epilogues %.1f ms, fused %.1f ms (%.3f×)",
                     lengths[0], threads, epilogueAB, a, b, a / b))
    }
}

/// The fixed English text `encore bench` scores quality on when the checkpoint has a tokenizer (written for Encore).
enum QualityText {
    static let paragraph = """
    The lighthouse keeper climbed the narrow stairs every evening at dusk, carrying a can of oil and a small notebook. \
    In the notebook she wrote the direction of the wind, the height of the waves, and the names of the ships that \
    passed close to the rocks. Most nights were quiet, and the light turned slowly above the harbour while the town \
    slept. In winter, however, the storms came from the north, and the fishing boats hurried home before the sea \
    became too rough to cross. On those nights she stayed awake until morning, watching for lanterns on the water and \
    listening to the bell at the end of the pier. When the weather cleared, the children of the town walked along the \
    beach to collect shells and pieces of glass that the waves had polished smooth. They brought the best ones to the \
    lighthouse, and she kept them in a jar on the windowsill, where they caught the first light of the sun.
    """
}
