import ArgumentParser
import Encore
import Foundation

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a quantized copy of a Mu or mu_decoder model folder.",
        discussion: """
        Every matrix except the token embedding is stored in the chosen format (int8: one fp32 scale per row; \
        q8_0/q4_0/q4_1: ggml blocks of 32 with llama.cpp's rounding; bf16), the embedding, norms and biases in \
        fp32. The folder loads like any other; decode steps stream the quantized matrices (the tied head is \
        quantized at load), prompt passes dequantize them per call. Files are written atomically.

        Example:
          encore quantize --model models/mu-330m --out models/mu-330m-q8 --format q8_0
        """
    )

    @Option(help: "Model folder (config.json + model.safetensors) to quantize.")
    var model: String

    @Option(help: "Output folder.")
    var out: String

    @Option(help: "Weight format: int8, q8_0, q4_0, q4_1 or bf16.")
    var format: String

    func validate() throws {
        guard let f = try? WeightFormat(parsing: format), f != .f32 else {
            throw ValidationError("--format must be int8, q8_0, q4_0, q4_1 or bf16 (got '\(format)')")
        }
    }

    func run() throws {
        try runReportingErrors {
            let f = try WeightFormat(parsing: format)
            let lm = try ModelRegistry.load(folder: model)
            let (before, after) = try QuantizedCheckpoint.write(model: lm, format: f, to: out)
            let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json"]
            for name in tokenizerFiles where FileManager.default.fileExists(atPath: model + "/" + name) {
                let dst = out + "/" + name
                try? FileManager.default.removeItem(atPath: dst)
                try FileManager.default.copyItem(atPath: model + "/" + name, toPath: dst)
            }
            print(String(format: "wrote %@: %@ matrices %.1f MB → %.1f MB (%.2f×)", out as NSString, f.rawValue as NSString,
                         Double(before) / 1e6, Double(after) / 1e6, Double(before) / Double(max(after, 1))))
        }
    }
}
