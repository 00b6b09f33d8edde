import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Process memory figures for benchmarks.
public enum MemoryStats {
    /// Starts a new peak-RSS window (Linux: /proc/self/clear_refs; elsewhere a no-op).
    public static func resetPeak() {
        #if os(Linux)
        if let fh = FileHandle(forWritingAtPath: "/proc/self/clear_refs") {
            fh.write("5".data(using: .utf8)!)
            try? fh.close()
        }
        #endif
    }

    /// Peak resident set size in bytes since the last reset (Linux VmHWM; elsewhere the process maximum).
    public static func peakRSS() -> Int {
        #if os(Linux)
        return statusField("VmHWM:") ?? 0
        #else
        var usage = rusage()
        getrusage(RUSAGE_SELF, &usage)
        return Int(usage.ru_maxrss)   // bytes on Darwin
        #endif
    }

    /// Current resident set size in bytes (Linux; 0 elsewhere).
    public static func currentRSS() -> Int {
        #if os(Linux)
        return statusField("VmRSS:") ?? 0
        #else
        return 0
        #endif
    }

    private static func statusField(_ key: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }
}

/// One model measured by ``Benchmark``.
public struct BenchResult: Sendable {
    public var model: String
    public var params: Int
    public var inputTokens: Int
    public var outputTokens: Int
    /// Encoder + cross-attention K/V (encoder-decoder only), median over repetitions.
    public var encodeMs: Double
    /// Input ids → first generated token id, median.
    public var ttftMs: Double
    /// Tokens 2…N per second, median.
    public var decodeTokensPerSecond: Double
    /// Whole generation, median.
    public var endToEndMs: Double
    public var peakRSSMB: Double
    /// Bytes of KV / cross caches at the end of a generation.
    public var cacheMB: Double
    /// Format decode steps streamed the matrices in ("f32", "bf16", "int8", "q8_0", …).
    public var decodeWeights: String = "f32"
    /// Storage of the self-attention KV cache the row ran with ("f32" or "f16").
    public var kvCache: String = "f32"
    /// Storage of the cross-attention K/V the row asked for (encoder-decoders: "f32" or "f16", a layer beyond f16's
    /// range staying fp32; nil for the others).
    public var crossKV: String? = nil
    /// Weight bytes a decode step reads, counted by the model (``OpCounter``) over the decode steps.
    public var weightBytesPerToken: Double
    /// FLOPs from the input ids to the first token's logits (encoder + cross K/V + first decoder step, or the
    /// decoder-only prefill), counted by the model.
    public var prefillFLOPs: Double
    /// FLOPs of the whole generation (prompt pass + every decode step), counted by the model.
    public var sequenceFLOPs: Double
    /// prefillFLOPs / time to first token, in GFLOP/s.
    public var prefillGFLOPs: Double { prefillFLOPs / (ttftMs / 1000) / 1e9 }
    /// weightBytesPerToken × decode tokens/s.
    public var weightGBps: Double { weightBytesPerToken * decodeTokensPerSecond / 1e9 }
    /// As ``weightGBps`` with the KV / cross caches a step reads, counted at their size at the end (``cacheMB``:
    /// allocated capacity, and Mu/T5's encoder states): an upper bound.
    public var weightAndCacheGBpsUpperBound: Double { (weightBytesPerToken + cacheMB * 1_048_576) * decodeTokensPerSecond / 1e9 }
    /// The first decoder step after encoding (encoder-decoder), or 0.
    public var firstStepMs: Double { encodeMs > 0 ? ttftMs - encodeMs : 0 }

    public var json: [String: Any] {
        ["model": model, "params": params, "input_tokens": inputTokens, "output_tokens": outputTokens,
         "encode_ms": encodeMs, "ttft_ms": ttftMs, "decode_tokens_per_s": decodeTokensPerSecond,
         "e2e_ms": endToEndMs, "peak_rss_mb": peakRSSMB, "cache_mb": cacheMB,
         "first_step_ms": firstStepMs, "prefill_gflop": prefillFLOPs / 1e9, "prefill_gflop_per_s": prefillGFLOPs,
         "sequence_gflop": sequenceFLOPs / 1e9, "decode_weight_bytes_per_token": weightBytesPerToken,
         "decode_weights": decodeWeights, "kv_cache": kvCache, "cross_kv": crossKV ?? NSNull()]
    }
}

/// Times generation the way the paper's efficiency study does: batch 1, greedy, fixed input and output
/// lengths, no early stop; one warm-up, then the median of `repetitions`.
public struct Benchmark {
    public var inputTokens: Int
    public var outputTokens: Int
    public var repetitions: Int
    public var seed: UInt64
    public init(inputTokens: Int, outputTokens: Int, repetitions: Int = 3, seed: UInt64 = 1) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.repetitions = repetitions
        self.seed = seed
    }

    /// Measures `model`; `progress` is called with (repetition, total) before each run (0 = warm-up).
    public func run(_ model: LanguageModel, progress: ((Int, Int) -> Void)? = nil) throws -> BenchResult {
        guard inputTokens >= 1, outputTokens >= 2, repetitions >= 1 else {
            throw EncoreError(.invalidArgument, "benchmark needs input tokens >= 1, output tokens >= 2, repetitions >= 1")
        }
        var rng = SplitMix64(seed: seed)
        let low = min(3, model.vocabSize - 1)
        let prompt = (0..<inputTokens).map { _ in low + Int(rng.next() % UInt64(model.vocabSize - low)) }
        let params = GenerationParameters(maxTokens: outputTokens, useModelEOS: false)
        let gen = Generator(model: model)
        // Free the tensor pool's held buffers first: otherwise a previous (larger) run's buffers stay resident and
        // count in this run's peak.
        BufferPool.shared.drain()
        MemoryStats.resetPeak()
        var encode: [Double] = [], ttft: [Double] = [], tps: [Double] = [], e2e: [Double] = []
        var cache = 0
        var prefillFLOPs = 0.0, prefillBytes = 0.0
        var counted: (flops: Double, weightBytes: Double) = (0, 0)
        for rep in 0...repetitions {
            progress?(rep, repetitions)
            if rep == 0 {
                // The warm-up counts what the model computes: up to the first token, then the whole sequence.
                OpCounter.start()
                defer { counted = OpCounter.stop() }
                try gen.generate(prompts: [prompt], parameters: params) { event in
                    if event.index == 0 { (prefillFLOPs, prefillBytes) = (OpCounter.flops, OpCounter.weightBytes) }
                    return true
                }
                StepProfile.reset()   // the timed repetitions' steps only
                continue
            }
            let t0 = now()
            let r = try gen.generate(prompts: [prompt], parameters: params)
            let total = now() - t0
            encode.append(r.encodeSeconds * 1000)
            ttft.append(r.timeToFirstToken * 1000)
            tps.append(Double(r.decodeSteps) / max(r.decodeSeconds, 1e-9))
            e2e.append(total * 1000)
            cache = r.cacheBytes
        }
        func median(_ a: [Double]) -> Double { let s = a.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
        return BenchResult(model: model.modelType, params: model.parameterCount, inputTokens: inputTokens,
                           outputTokens: outputTokens, encodeMs: median(encode), ttftMs: median(ttft),
                           decodeTokensPerSecond: median(tps), endToEndMs: median(e2e),
                           peakRSSMB: Double(MemoryStats.peakRSS()) / 1_048_576, cacheMB: Double(cache) / 1_048_576,
                           weightBytesPerToken: (counted.weightBytes - prefillBytes) / Double(outputTokens - 1),
                           prefillFLOPs: prefillFLOPs, sequenceFLOPs: counted.flops)
    }
}

/// The quality cost of a decode format: teacher-forced decode steps (the decode kernels, one token per step) over
/// a fixed sequence, compared with the same steps in fp32.
///
/// ```swift
/// let ref = try DecodeQuality.run(model, prompt: p, targets: t)          // fp32
/// try model.useDecodeWeights(.q4_0)
/// let q = try DecodeQuality.run(model, prompt: p, targets: t)
/// q.compared(to: ref)   // (max |Δlogit|, relative, perplexities)
/// ```
public struct DecodeQuality: Sendable {
    /// Logits of every step [targets.count][V].
    public var logits: [[Float]]
    /// exp(mean NLL of the targets).
    public var perplexity: Double

    /// Feeds `targets` one at a time after `prompt` (decoder-only: the prompt is the prefix; encoder-decoder: the
    /// encoder input, the decoder starting from BOS) and scores each target from the previous step's logits.
    public static func run(_ model: LanguageModel, prompt: [Int], targets: [Int]) throws -> DecodeQuality {
        let state = try model.beginGeneration(prompts: [prompt])
        var logits: [[Float]] = []
        var nll = 0.0
        for t in targets {
            let row = state.logits.toArray()
            logits.append(row)
            let mx = row.max()!
            let lse = Double(mx) + log(row.reduce(0.0) { $0 + exp(Double($1 - mx)) })
            nll += lse - Double(row[t])
            try state.advance(tokens: [t])
        }
        return DecodeQuality(logits: logits, perplexity: exp(nll / Double(max(targets.count, 1))))
    }

    /// Largest |logit − reference logit| over all steps, and that divided by the reference's largest |logit|.
    public func maxLogitError(against ref: DecodeQuality) -> (absolute: Float, relative: Float) {
        var err: Float = 0, scale: Float = 0
        for (a, b) in zip(logits, ref.logits) {
            for (x, y) in zip(a, b) { err = max(err, abs(x - y)); scale = max(scale, abs(y)) }
        }
        return (err, err / max(scale, 1e-30))
    }
}
