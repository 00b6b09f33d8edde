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

        Example:
          encore bench --preset mu-330m --input-tokens 512 --output-tokens 64 --threads 2 --json
          encore bench --input-tokens 128,512,1024,2048 --output-tokens 64 --plot fig1.svg
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

    @Option(help: "Which models to run: mu, mu_decoder or both, comma separated.")
    var models: String = "mu,mu_decoder"

    @Option(help: "Seed for the random input ids and weights.")
    var seed: UInt64 = 1

    @Flag(help: "Print JSON on standard output (progress still goes to standard error).")
    var json = false

    @Option(name: .customLong("decode-weights"), help: "Weight format streamed by decode steps: f32 or bf16 (prompt passes stay fp32).")
    var decodeWeights: String = "f32"

    @Flag(name: .customLong("no-limits"), help: "Skip measuring the machine's ceilings (memory bandwidth, GEMM peak).")
    var noLimits = false

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
        if !["f32", "bf16"].contains(decodeWeights) { throw ValidationError("--decode-weights must be f32 or bf16") }
        if reps < 1 { throw ValidationError("--reps must be >= 1") }
        let known = Set(["mu", "mu_decoder"])
        for m in models.split(separator: ",") where !known.contains(String(m)) {
            throw ValidationError("--models: unknown model '\(m)' (use mu, mu_decoder)")
        }
        if model == nil && preset != "mu-330m" { throw ValidationError("--preset: unknown preset '\(preset)' (available: mu-330m)") }
    }

    func run() throws {
        try runReportingErrors {
            Backend.setThreads(threads)
            let wanted = models.split(separator: ",").map(String.init)
            var muConfig = MuConfig.mu330m
            var loaded: LanguageModel? = nil
            if let model {
                let lm = try ModelRegistry.load(folder: model)
                loaded = lm
                if let mu = lm as? MuModel { muConfig = mu.config }
            }
            var limits: KernelBench.Figures? = nil
            if !noLimits {
                printStderr("measuring the machine's ceilings (memory read bandwidth, BLAS GEMM)…")
                limits = KernelBench.run()
            }
            var results: [BenchResult] = []
            for name in wanted {
                printStderr("[\(name)] building model…")
                let lm: LanguageModel
                if let loaded, loaded.modelType == name {
                    lm = loaded
                } else if name == "mu" {
                    lm = try MuModel(config: muConfig, randomSeed: seed)
                } else {
                    lm = try MuDecoderModel(config: MuDecoderConfig.matching(muConfig), randomSeed: seed)
                }
                if decodeWeights == "bf16" { try lm.useBF16ForDecode() }
                for length in lengths {
                    for outputTokens in outputLengths {
                        let bench = Benchmark(inputTokens: length, outputTokens: outputTokens, repetitions: reps, seed: seed)
                        let r = try bench.run(lm) { rep, total in
                            printStderr(rep == 0 ? "[\(name)] warm-up, counting FLOPs (\(length) in → \(outputTokens) out)…"
                                                 : "[\(name)] \(length) in → \(outputTokens) out: run \(rep)/\(total)…")
                        }
                        results.append(r)
                    }
                }
            }
            if let plot { try writePlot(results, to: plot) }
            if json {
                print(jsonString([
                    "system": "encore", "version": EncoreVersion.string, "decode_weights": decodeWeights, "threads": threads, "blas": Backend.blasName,
                    "results": results.map { r -> [String: Any] in
                        var o = r.json
                        if let limits {
                            o["decode_weight_gb_per_s"] = r.weightGBps
                            o["decode_fraction_of_read_bw"] = r.weightGBps / limits.readGBps
                            o["prefill_fraction_of_gemm"] = r.prefillGFLOPs / limits.gemmGFLOPs
                        }
                        return o
                    },
                    "machine": limits?.json ?? [:],
                ]))
                return
            }
            print("Encore \(EncoreVersion.string) · \(Backend.blasName) · \(threads) thread(s) · batch 1, greedy, fp32" + (decodeWeights == "bf16" ? " (decode weights bf16)" : ""))
            print("model        params   input  output  encode ms  1st step ms   TTFT ms   decode tok/s   e2e s   GFLOP/seq   peak RSS MiB   cache MiB")
            for r in results {
                print(r.model.padding(toLength: 11, withPad: " ", startingAt: 0) + String(format: "%7.1fM  %6d  %6d  %9.1f  %11.1f  %8.1f  %13.1f  %6.2f  %10.2f  %13.0f  %10.1f",
                             Double(r.params) / 1e6, r.inputTokens, r.outputTokens, r.encodeMs, r.firstStepMs,
                             r.ttftMs, r.decodeTokensPerSecond, r.endToEndMs / 1000, r.sequenceFLOPs / 1e9, r.peakRSSMB, r.cacheMB))
            }
            print("(FLOPs and weight bytes are counted by the model as it runs: every matrix product, attention included)")
            if let limits {
                print(String(format: "\nmachine: read %.1f GB/s, BLAS GEMM %.0f GFLOP/s; decode GEMV %.1f GB/s (%.0f%% of read), LM-head GEMV %.1f GB/s",
                             limits.readGBps, limits.gemmGFLOPs, limits.gemvGBps, 100 * limits.gemvGBps / limits.readGBps, limits.gemvLMHeadGBps))
                for r in results {
                    print(String(format: "%@ %d→%d: prompt pass %.0f GFLOP at %.0f GFLOP/s = %.0f%% of the measured BLAS GEMM rate",
                                 r.model as NSString, r.inputTokens, r.outputTokens, r.prefillFLOPs / 1e9, r.prefillGFLOPs, 100 * r.prefillGFLOPs / limits.gemmGFLOPs))
                    print(String(format: "%@ %d→%d: decode streams %.2f GB of weights per token = %.1f GB/s, %.0f%% of the read ceiling",
                                 r.model as NSString, r.inputTokens, r.outputTokens, r.weightBytesPerToken / 1e9, r.weightGBps, 100 * r.weightGBps / limits.readGBps))
                }
            }
            var compared = false
            for length in lengths { for out in outputLengths {
                guard let mu = results.first(where: { $0.model == "mu" && $0.inputTokens == length && $0.outputTokens == out }),
                      let dec = results.first(where: { $0.model == "mu_decoder" && $0.inputTokens == length && $0.outputTokens == out }) else { continue }
                if !compared { print(""); compared = true }
                print(String(format: "encoder-decoder vs decoder-only at %d → %d tokens: TTFT ratio %.2f (%.0f%% lower), decode speed %.2f×, end to end %.2f×, peak memory %.0f%% %@",
                             length, out, mu.ttftMs / dec.ttftMs, (1 - mu.ttftMs / dec.ttftMs) * 100,
                             mu.decodeTokensPerSecond / dec.decodeTokensPerSecond, dec.endToEndMs / mu.endToEndMs,
                             abs(1 - mu.peakRSSMB / dec.peakRSSMB) * 100, (mu.peakRSSMB <= dec.peakRSSMB ? "lower" : "higher") as NSString))
                print(String(format: "  predicted by the architecture: prompt FLOPs ratio %.2f, decode weight bytes ratio %.2f×, FLOPs per sequence ratio %.2f",
                             mu.prefillFLOPs / dec.prefillFLOPs, dec.weightBytesPerToken / mu.weightBytesPerToken, mu.sequenceFLOPs / dec.sequenceFLOPs))
            } }
            if compared { print("(paper, on an NPU: 47% lower first-token latency, 4.7× decode throughput)") }
            if let plot { print("plot: \(plot)") }
        }
    }
}
