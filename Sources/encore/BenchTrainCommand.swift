import ArgumentParser
import Encore
import Foundation

/// `encore bench-train`: training speed (forward + backward + AdamW step) of a Mu model in tokens per second.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-train",
        abstract: "Measure Mu training speed: tokens/s for forward + backward + clip + AdamW step (fp32, random weights).",
        discussion: """
        Random ids (no padding) of --encoder-seq-len source and --decoder-seq-len decoder positions per row, --batch-size rows, \
        the cross-entropy of MuParameters.loss, clip_grad_norm_ 1.0, AdamW (the reference recipe, dropout off). One warm-up \
        step, then --steps timed steps; tokens/s = batch · (encoder + decoder length) / median step time. The PyTorch peer \
        is bench/peers/mu_torch_train.py with the same options.

        Example:
          encore bench-train --config small.json --batch-size 8 --encoder-seq-len 128 --decoder-seq-len 32 --threads 2
        """
    )

    @Option(help: "A config.json holding the MuConfig fields (default: the mu-330m preset).")
    var config: String?
    @Option(name: .customLong("batch-size"), help: "Rows per step.")
    var batchSize: Int = 4
    @Option(name: .customLong("encoder-seq-len"), help: "Source positions per row.")
    var encoderSeqLen: Int = 128
    @Option(name: .customLong("decoder-seq-len"), help: "Decoder positions per row.")
    var decoderSeqLen: Int = 32
    @Option(help: "Timed steps (after one warm-up step).")
    var steps: Int = 3
    @Option(help: "Threads for matrix products.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Seed for weights and ids.")
    var seed: UInt64 = 1
    @Flag(help: "Print one JSON object on standard output.")
    var json = false

    func validate() throws {
        if batchSize < 1 || encoderSeqLen < 1 || decoderSeqLen < 1 || steps < 1 || threads < 1 {
            throw ValidationError("--batch-size, sequence lengths, --steps and --threads must be >= 1")
        }
    }

    func run() throws {
        try runReportingErrors {
            Backend.setThreads(threads)
            var cfg = MuConfig.mu330m
            if let config {
                guard let data = FileManager.default.contents(atPath: config) else { throw EncoreError(.io, "\(config): cannot read") }
                cfg = try MuConfig.decode(data, path: config)
            }
            let params = MuParameters(model: try MuModel(config: cfg, referenceInitSeed: seed))
            var rng = SplitMix64(seed: seed &+ 7)
            func row(_ n: Int) -> [Int] { (0..<n).map { _ in 3 + Int(rng.next() % UInt64(cfg.vocabSize - 3)) } }
            let enc = (0..<batchSize).map { _ in row(encoderSeqLen) }
            let dec = (0..<batchSize).map { _ in [cfg.bosTokenId] + row(decoderSeqLen - 1) }
            let targets = (0..<batchSize).map { _ in row(decoderSeqLen) }
            let optimizer = AdamW(parameters: params.all, learningRate: 1e-4)
            var times: [Double] = []
            var lastLoss: Float = 0
            for i in 0...steps {
                let t0 = DispatchTime.now().uptimeNanoseconds
                params.zeroGrad()
                let loss = try params.loss(encoderIds: enc, decoderIds: dec, targets: targets)
                loss.backward()
                _ = clipGradNorm(params.all, maxNorm: 1.0)
                optimizer.step()
                lastLoss = loss.item
                let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if i > 0 { times.append(s) }   // step 0 is the warm-up
            }
            let median = times.sorted()[times.count / 2]
            let tokens = Double(batchSize * (encoderSeqLen + decoderSeqLen))
            let paramsCount = params.all.reduce(0) { $0 + $1.value.count }
            let result: [String: Any] = ["system": "encore", "params": paramsCount, "batch_size": batchSize,
                                         "encoder_seq_len": encoderSeqLen, "decoder_seq_len": decoderSeqLen, "threads": threads,
                                         "median_step_s": median, "tokens_per_s": tokens / median, "steps": times, "loss": Double(lastLoss)]
            if json {
                print(jsonString(result))
            } else {
                print(String(format: "encore: %d params, batch %d × (%d + %d) tokens, %d threads: median step %.3f s, %.1f tokens/s",
                             paramsCount, batchSize, encoderSeqLen, decoderSeqLen, threads, median, tokens / median))
            }
        }
    }
}
