import ArgumentParser
import Encore
import EncoreTokenizers
import Foundation

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a quantized copy of a model: Llama-family models as a GGUF file, Mu models as a folder.",
        discussion: """
        Llama family (llama, qwen2, phi3; a Hugging Face folder or a .gguf file) → a GGUF v3 file that llama.cpp \
        and Encore both load: llama.cpp's tensor names and metadata keys, every matrix (embedding and head \
        included) in --format f32, f16, bf16, q8_0, q4_0 or q4_1 with llama.cpp's rounding (bit-identical to the \
        gguf package's quantizer), norms and biases in F32. From a GGUF file all metadata is kept (the tokenizer \
        too); from a Hugging Face folder Q/K rows are permuted as llama.cpp's converter does and no vocabulary is \
        written (tokenizer.ggml.model "none"). Run a q8_0/q4_0/q4_1 result with --keep-quantized to decode from \
        its blocks (f16/bf16 files are widened to fp32 on load).

        Mu and mu_decoder folders → a model folder: every matrix except the token embedding in the chosen format \
        (int8: one fp32 scale per row; q8_0/q4_0/q4_1: ggml blocks of 32; bf16), the embedding, norms and \
        biases in fp32. Decode steps stream the quantized matrices (the tied head is quantized at load), prompt \
        passes dequantize them per call.

        Files are written atomically.

        Examples:
          encore quantize --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/smollm2-q8_0.gguf --format q8_0
          encore quantize --model hf/SmolLM2-135M --out smollm2-q4_0.gguf --format q4_0
          encore quantize --model models/mu-330m --out models/mu-330m-q8 --format q8_0
        """
    )

    @Option(help: "Model to quantize: a Llama-family .gguf file or Hugging Face folder, or a Mu/mu_decoder folder.")
    var model: String

    @Option(help: "Output: a .gguf file (Llama family) or a folder (Mu, mu_decoder).")
    var out: String

    @Option(help: "Weight format. GGUF: f32, f16, bf16, q8_0, q4_0, q4_1. Mu folders: int8, q8_0, q4_0, q4_1, bf16.")
    var format: String

    /// True when `model` is a GGUF file or a folder of a Llama-family model (written as GGUF).
    func isLlamaFamily() throws -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isDir) else {
            throw EncoreError(.invalidArgument, "--model \(model): no such file or folder")
        }
        if !isDir.boolValue { return true }     // GGUF (the exporter checks the magic and the architecture)
        let config = model + "/config.json"
        guard let data = FileManager.default.contents(atPath: config),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let type = obj["model_type"] as? String else { return false }   // the folder loader reports the problem
        return DecoderFamily(rawValue: type) != nil
    }

    func run() throws {
        try runReportingErrors {
            if try isLlamaFamily() { try writeGGUF() } else { try writeFolder() }
        }
    }

    func writeGGUF() throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: model, isDirectory: &isDir), !isDir.boolValue, !GGUFFile.hasMagic(path: model) {
            throw EncoreError(.invalidArgument, "--model \(model): not a GGUF file nor a model folder")
        }
        let type = try LlamaGGUFExport.type(parsing: format)
        let s = try LlamaGGUFExport.write(source: model, type: type, to: out)
        // check the file loads back (with its blocks kept) before reporting success
        let check: LlamaModel
        do { check = try LlamaModel(path: out, keepQuantized: true) } catch let e as EncoreError {
            try? FileManager.default.removeItem(atPath: out)
            throw EncoreError(e.kind, "the written file does not load back (removed): \(e.message)")
        }
        print(String(format: "wrote %@: %@ GGUF, %d tensors (%d matrices %@, the rest F32), %.1f MB as fp32 → %.1f MB (%.2f×); loads in Encore (%d layers)",
                     out as NSString, s.architecture as NSString, s.tensors, s.quantized, type.name as NSString,
                     Double(s.fp32Bytes) / 1e6, Double(s.bytes) / 1e6, Double(s.fp32Bytes) / Double(max(s.bytes, 1)), check.config.nLayer))
    }

    func writeFolder() throws {
        if out.hasSuffix(".gguf") {
            throw EncoreError(.invalidArgument, "--out \(out): Mu and mu_decoder models quantize to a model folder, not a GGUF file (GGUF output is for llama, qwen2 and phi3)")
        }
        let f = try WeightFormat(parsing: format)
        guard f != .f32 else {
            throw EncoreError(.invalidArgument, "--format must be int8, q8_0, q4_0, q4_1 or bf16 for a Mu folder (got '\(format)')")
        }
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
