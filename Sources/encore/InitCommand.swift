import ArgumentParser
import Encore
import EncoreTokenizers
import Foundation

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a fresh Mu model folder with the reference's initialisation.",
        discussion: """
        Matrices N(0, 0.02), zero biases, unit norm weights (the reference's _init_weights), written as \
        config.json + model.safetensors with the reference's tensor names. --tokenizer copies a tokenizer \
        (tokenizer.json and, if present beside it, tokenizer_config.json) into the folder so --prompt works; \
        given a .gguf model file, its vocabulary (the tokenizer.* metadata, no weights) is written as \
        tokenizer.gguf (e.g. a student that shares SmolLM2's vocabulary: set vocab_size 49152 in the config).

        Examples:
          encore init --preset mu-330m --out models/mu-random --tokenizer ../shared/data/phi-3.5-mini-tokenizer
          encore init --config my-config.json --out models/mu-small
          encore init --config mu-smollm2.json --out models/mu-student --tokenizer models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
        """
    )

    @Option(help: "Built-in configuration: mu-330m.")
    var preset: String?

    @Option(help: "A config.json holding the MuConfig fields (model_type mu).")
    var config: String?

    @Option(help: "Output folder.")
    var out: String

    @Option(help: "A tokenizer.json file or a folder holding one (copied into the model folder), or a .gguf file (its vocabulary is written as tokenizer.gguf).")
    var tokenizer: String?

    @Option(help: "Random seed.")
    var seed: UInt64 = 42

    @Option(help: "Weight format: f32, bf16 or f16.")
    var dtype: String = "f32"

    func validate() throws {
        if (preset == nil) == (config == nil) { throw ValidationError("give exactly one of --preset or --config") }
        if let preset, preset != "mu-330m" { throw ValidationError("--preset: unknown preset '\(preset)' (available: mu-330m)") }
        if !["f32", "bf16", "f16"].contains(dtype) { throw ValidationError("--dtype must be f32, bf16 or f16") }
    }

    func run() throws {
        try runReportingErrors {
            var cfg = MuConfig.mu330m
            if let config {
                guard let data = FileManager.default.contents(atPath: config) else { throw EncoreError(.io, "\(config): cannot read") }
                cfg = try MuConfig.decode(data, path: config)
            }
            let model = try MuModel(config: cfg, referenceInitSeed: seed)
            let format: SafeTensorsDType = dtype == "bf16" ? .BF16 : dtype == "f16" ? .F16 : .F32
            try model.save(to: out, dtype: format)
            if let tokenizer {
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: tokenizer, isDirectory: &isDir) else {
                    throw EncoreError(.io, "\(tokenizer): no such file or folder")
                }
                if !isDir.boolValue && GGUFFile.hasMagic(path: tokenizer) {
                    let file: GGUFFile
                    do { file = try GGUFFile(path: tokenizer) } catch let e as TokenizerError { throw EncoreError(.invalidFile, e.description) }
                    guard file.metadata["tokenizer.ggml.tokens"] != nil else { throw EncoreError(.invalidFile, "\(tokenizer): no tokenizer.ggml.tokens metadata") }
                    let bytes = file.metadataOnly { $0.hasPrefix("tokenizer.") || $0 == "general.architecture" || $0 == "general.name" }
                    try AtomicFile.write(Data(bytes), to: out + "/tokenizer.gguf")
                    let tok = try TextCodec.load(folder: out, required: true)!.tokenizer
                    if tok.vocabSize > cfg.vocabSize {
                        printStderr("warning: the tokenizer has \(tok.vocabSize) ids, the model's vocab_size is \(cfg.vocabSize)")
                    }
                    print("wrote \(out): \(String(format: "%.1fM", Double(model.parameterCount) / 1e6)) parameters, \(dtype); tokenizer.gguf (\(tok.vocabSize) ids)")
                    return
                }
                let dir = isDir.boolValue ? tokenizer : (tokenizer as NSString).deletingLastPathComponent
                let json = isDir.boolValue ? tokenizer + "/tokenizer.json" : tokenizer
                guard FileManager.default.fileExists(atPath: json) else { throw EncoreError(.io, "\(tokenizer): no tokenizer.json") }
                for (src, name) in [(json, "tokenizer.json"), (dir + "/tokenizer_config.json", "tokenizer_config.json")]
                where FileManager.default.fileExists(atPath: src) {
                    let dst = out + "/" + name
                    try? FileManager.default.removeItem(atPath: dst)
                    try FileManager.default.copyItem(atPath: src, toPath: dst)
                }
            }
            print("wrote \(out): \(String(format: "%.1fM", Double(model.parameterCount) / 1e6)) parameters, \(dtype)")
        }
    }
}
