import ArgumentParser
import Encore
import Foundation

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate tokens from a model (greedy by default).",
        discussion: """
        The input goes to the encoder of an encoder-decoder model (the decoder starts from BOS, or from \
        decoder_start_token_id for T5), or is the \
        prompt of a decoder-only model. Repeat --input-ids to generate for several inputs in one batch. \
        With --json prints {"ids": [generated ids, without the BOS], "text": "..."} (an array for a batch).
        """
    )

    @Option(name: .long, help: "Model folder (config.json + model.safetensors) or a .gguf file.")
    var model: String

    @Option(name: .long, help: "Input text (needs a tokenizer.json in the model folder).")
    var prompt: String?

    @Option(name: .customLong("input-ids"), help: "Input token ids, comma separated, e.g. 5,6,7. Repeat for a batch.")
    var inputIds: [String] = []

    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate per input.")
    var maxTokens: Int = 64

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(name: .customLong("top-k"), help: "Sample only among the K most likely tokens (0 = off).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Sample only among the most likely tokens whose probability adds up to P (1 = off).")
    var topP: Float = 1

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Flag(help: "Print tokens as they are generated.")
    var stream = false

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: "Threads for matrix products (default: all cores).")
    var threads: Int?

    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if prompt == nil && inputIds.isEmpty { throw ValidationError("give --prompt TEXT or --input-ids 1,2,3") }
        if prompt != nil && !inputIds.isEmpty { throw ValidationError("give either --prompt or --input-ids, not both") }
        if maxTokens < 0 { throw ValidationError("--max-tokens must be >= 0") }
        if temperature < 0 { throw ValidationError("--temperature must be >= 0") }
        if topK < 0 { throw ValidationError("--top-k must be >= 0") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if let threads, threads < 1 { throw ValidationError("--threads must be >= 1") }
    }

    func run() throws {
        try runReportingErrors {
            if let threads { Backend.setThreads(threads) }
            let lm = try runtime.load(model)
            let tokenizer = try TextCodec.load(folder: model, required: prompt != nil)
            var inputs: [[Int]]
            if let prompt {
                inputs = [tokenizer!.encode(prompt, model: lm)]
            } else {
                inputs = try inputIds.map { try parseIds($0, option: "--input-ids") }
            }
            if inputs.contains(where: \.isEmpty) { throw EncoreError(.invalidArgument, "the prompt encodes to no tokens") }
            let params = GenerationParameters(maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP, seed: seed)
            var decoders = inputs.map { _ in tokenizer?.streamingDecoder() }
            let result = try Generator(model: lm).generate(prompts: inputs, parameters: params) { event in
                if stream && !json {
                    let piece: String
                    if decoders[event.row] != nil { piece = decoders[event.row]!.push(event.token) ?? "" } else { piece = "\(event.token) " }
                    let prefix = inputs.count > 1 ? "[\(event.row)] " : ""
                    if !piece.isEmpty { FileHandle.standardOutput.write((prefix + piece).data(using: .utf8)!) }
                }
                return true
            }
            if stream && !json { print("") }
            let texts = result.tokens.map { ids in tokenizer?.decode(ids) }
            if json {
                let objects: [[String: Any]] = zip(result.tokens, texts).map { ids, text in
                    var o: [String: Any] = ["ids": ids]
                    if let text { o["text"] = text }
                    return o
                }
                print(jsonString(objects.count == 1 ? objects[0] as Any : objects as Any))
            } else if !stream {
                for (i, ids) in result.tokens.enumerated() {
                    let prefix = inputs.count > 1 ? "[\(i)] " : ""
                    print(prefix + (texts[i] ?? ids.map(String.init).joined(separator: " ")))
                }
            }
            let n = result.tokens.map(\.count).max() ?? 0
            let tps = result.decodeSeconds > 0 ? Double(result.decodeSteps) / result.decodeSeconds : 0
            printStderr(String(format: "%d token(s) per input; first token %.1f ms; decode %.1f tokens/s", n, result.timeToFirstToken * 1000, tps))
        }
    }
}

struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Teacher-forced log-probabilities of target tokens given an input.",
        discussion: """
        Encoder-decoder: the input goes to the encoder and the decoder reads [BOS] + target (T5: \
        [decoder_start_token_id] + target). \
        Decoder-only: the target follows the input in one sequence. \
        With --json prints {"logprobs": [one per target token], "total": sum} (natural logarithms). \
        Takes generate's weight options: scoring runs prompt passes (--prompt-weights, --encoder-weights, \
        --keep-quantized for a GGUF), and passes of 8 rows or fewer run the decode GEMVs (--decode-weights).
        """
    )

    @Option(name: .long, help: "Model folder (config.json + model.safetensors) or a .gguf file.")
    var model: String

    @Option(name: .customLong("input-ids"), help: "Input token ids, comma separated.")
    var inputIds: String

    @Option(name: .customLong("target-ids"), help: "Target token ids, comma separated.")
    var targetIds: String

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        try runReportingErrors {
            let input = try parseIds(inputIds, option: "--input-ids")
            let target = try parseIds(targetIds, option: "--target-ids")
            let lm = try runtime.load(model)
            let lp = try lm.score(input: input, target: target)
            let total = lp.reduce(0, +)
            if json {
                print(jsonString(["logprobs": lp.map(Double.init), "total": Double(total)]))
            } else {
                for (t, p) in zip(target, lp) { print(String(format: "%8d  %10.5f", t, p)) }
                print(String(format: "total     %10.5f  (perplexity %.3f)", total, exp(-Double(total) / Double(max(lp.count, 1)))))
            }
        }
    }
}
