import ArgumentParser
import Encore

/// How a loaded model runs: the weight formats its prompt passes and decode steps read, the KV cache's storage, and
/// whether a GGUF file's quantized blocks are kept. Shared by `generate`, `chat` and `score`.
///
/// ```sh
/// encore chat --model smollm2.Q4_1.gguf --keep-quantized --kv-cache f32   # fp32 cache (auto would pick f16)
/// encore generate --model llama-hf --prompt "Hi" --decode-weights int8 --prompt-weights int8
/// encore generate --model mu-330m --input-ids 5,6,7 --decode-weights q4_0 --encoder-weights q8_0 --prompt-weights int8
/// encore generate --model t5-small --prompt "translate English to German: Hi" --decode-weights q4_0 --cross-kv int8
/// ```
struct RuntimeOptions: ParsableArguments {
    @Option(name: .customLong("decode-weights"), help: "Weight format streamed by decode steps: f32, bf16, int8, q8_0, q4_0 or q4_1 (prompt passes: see --prompt-weights).")
    var decodeWeights: String = "f32"

    @Option(name: .customLong("prompt-weights"), help: "Weights prompt passes multiply with: auto (the default: blocks when the matrices are held only in a quantized format, as loaded, with no --decode-weights: a GGUF with --keep-quantized or an `encore quantize` folder; f32 otherwise), f32 (BLAS GEMM over fp32 copies), int8 (int8 GEMM over int8 rows, or over Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K blocks as stored (llama.cpp's q8_0 activations) with --decode-weights q8_0|q4_0|q4_1 or such a GGUF kept quantized; fp32 copies released: int8 everywhere with --decode-weights int8) decode (the decode format widened one matrix at a time: only the decode format stays in memory), or blocks (as llama.cpp: blocks the int8 GEMM reads, Q8_0/Q4_x/Q5_x, the K-quants and int8 rows, multiplied as stored, bf16 widened per matrix; no copies).")
    var promptWeights: String = "auto"

    @Option(name: .customLong("encoder-weights"), help: "Encoder-decoder models (Mu, T5): the format of the encoder's matrices and the cross-attention K/V projections: f32, bf16, int8, q8_0, q4_0 or q4_1, packed only (fp32 copies released; prompt passes widen them one matrix at a time, or run the int8 GEMM over int8 rows or Q8_0/Q4_0/Q4_1 blocks with --prompt-weights int8). Default: the encoder stays as loaded (fp32, or a GGUF's blocks with --keep-quantized); with --prompt-weights decode it takes the decode format.")
    var encoderWeights: String?

    @Option(name: .customLong("kv-cache"), help: "Storage of the self-attention KV cache, and of Mu's and T5's cross-attention K/V: auto (the default: f16 when decode steps read bf16 or quantized weights, as llama.cpp's cache: --decode-weights other than f32, a GGUF with --keep-quantized, or --prompt-weights int8, whose int8 rows decode steps then stream; f32 beside fp32 weights, and for T5's self-attention cache), f32, f16 (half the cache memory and the bytes a step reads over it; logits within ~1e-3; refused for T5, whose self-attention cache stays f32), or int8 (a quarter: int8 values with a scale per position and block of 32 values, as llama.cpp's q8_0 cache; SmolLM2-135M's log-probabilities move by 0.016 on average, perplexity unchanged; refused for T5: use --cross-kv int8).")
    var kvCache: String = "auto"

    @Option(name: .customLong("cross-kv"), help: "Mu and T5: storage of the cross-attention K/V, which every decode step reads over all the input positions: auto (the default: as --kv-cache gives it, f16 beside bf16 or quantized decode weights, f32 otherwise), f32, f16 (half the bytes), or int8 (a quarter: int8 values with an fp32 scale per position and block of 32 values (or head); a layer with a non-finite value stays f32). Ignored by decoder-only models.")
    var crossKV: String = "auto"

    @Flag(name: .customLong("keep-quantized"), help: "GGUF models: keep Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K matrices and the embedding table in their blocks instead of widening them to fp32 (less memory; decode reads them natively).")
    var keepQuantized = false

    func validate() throws {
        if (try? WeightFormat(parsing: decodeWeights)) == nil { throw ValidationError("--decode-weights must be f32, bf16, int8, q8_0, q4_0 or q4_1 (got '\(decodeWeights)')") }
        try Self.checkPromptWeights(promptWeights)
        try Self.checkEncoderWeights(encoderWeights)
        try Self.checkKVCache(kvCache)
        if crossKV != "auto" && (try? KVRowFormat(parsing: crossKV)) == nil {
            throw ValidationError("--cross-kv must be auto, f32, f16 or int8 (got '\(crossKV)')")
        }
    }

    /// `--prompt-weights` takes auto, f32, int8, decode or blocks (also `encore bench`'s option).
    static func checkPromptWeights(_ value: String) throws {
        if value != "auto" && PromptWeights(rawValue: value) == nil {
            throw ValidationError("--prompt-weights must be auto, f32, int8, decode or blocks (got '\(value)')")
        }
    }

    /// `--encoder-weights`, when given, takes a weight format (also `encore bench`'s option).
    static func checkEncoderWeights(_ value: String?) throws {
        if let value, (try? WeightFormat(parsing: value)) == nil {
            throw ValidationError("--encoder-weights must be f32, bf16, int8, q8_0, q4_0 or q4_1 (got '\(value)')")
        }
    }

    /// `--kv-cache` takes auto, f32, f16 or int8 (also `encore bench`'s option).
    static func checkKVCache(_ value: String) throws {
        if (try? KVCacheStorage(parsing: value)) == nil { throw ValidationError("--kv-cache must be auto, f32, f16 or int8 (got '\(value)')") }
    }

    /// The model at `path` (a folder or a .gguf file), set up as these options ask.
    func load(_ path: String) throws -> LanguageModel {
        let lm = try ModelRegistry.load(folder: path, keepQuantized: keepQuantized)
        let format = try WeightFormat(parsing: decodeWeights)
        if format != .f32 { try lm.useDecodeWeights(format) }
        if let encoderWeights { try lm.useEncoderWeights(try WeightFormat(parsing: encoderWeights)) }
        let prompts = promptWeights == "auto"
            ? PromptWeights.automatic(modelPath: path, keepQuantized: keepQuantized, decodesAsLoaded: format == .f32)
            : try PromptWeights(parsing: promptWeights)
        if prompts != .f32 { try lm.usePromptWeights(prompts) }
        try lm.useKVCache(try KVCacheStorage(parsing: kvCache))
        if crossKV != "auto", let model = lm as? CrossKVModel { model.crossKV = try KVRowFormat(parsing: crossKV) }
        return lm
    }
}
