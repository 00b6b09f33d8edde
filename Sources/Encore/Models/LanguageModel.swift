import Foundation
import EncoreTokenizers

/// What every model family offers the generator, the scorer, the CLI and the server: start a batch of
/// prompts, step it one token per row, and score targets. Encoder-decoders encode once and keep their
/// cross-attention K/V; decoder-only models keep the prompt in their KV cache.
public protocol LanguageModel: AnyObject {
    /// `model_type` of the family, e.g. "mu" or "mu_decoder".
    var modelType: String { get }
    var vocabSize: Int { get }
    var bosTokenId: Int? { get }
    var eosTokenId: Int? { get }
    var padTokenId: Int { get }
    var parameterCount: Int { get }
    /// True for encoder-decoder models (the prompt goes to the encoder).
    var isEncoderDecoder: Bool { get }

    /// Prepares a batch of prompts (any lengths; padded inside) and computes the logits of the first token
    /// to generate for every row.
    func beginGeneration(prompts: [[Int]]) throws -> GenerationState

    /// Streams weights as bf16 during decode steps (half the bytes per token); prompt passes stay fp32.
    /// Throws for families that do not support it yet.
    func useBF16ForDecode() throws

    /// Chooses the format decode steps stream their matrices in (f32, bf16, int8, q8_0, q4_0, q4_1); prompt
    /// passes keep fp32 GEMM. Throws for families that do not support it yet.
    func useDecodeWeights(_ format: WeightFormat) throws

    /// Chooses what prompt passes (encoder, prefill, teacher-forced scoring) multiply with (see ``PromptWeights``):
    /// fp32 copies (the default), int8 rows with an int8 GEMM, or the decode format widened one matrix at a time.
    /// Call it after ``useDecodeWeights(_:)``. Throws for families without it.
    func usePromptWeights(_ weights: PromptWeights) throws

    /// Encoder-decoders: stores the encoder's matrices and the cross-attention K/V projections in `format` (packed
    /// only, the fp32 copies released; `.f32`: fp32 copies only). Prompt passes widen them one matrix at a time, or run the int8
    /// GEMM over int8 rows / Q8_0 blocks with ``PromptWeights/int8``; ``PromptWeights/decode`` keeps this choice.
    /// Call it after ``useDecodeWeights(_:)``, before ``usePromptWeights(_:)``. Throws for decoder-only models.
    ///
    /// ```swift
    /// try mu.useDecodeWeights(.q4_0); try mu.useEncoderWeights(.q8_0); try mu.usePromptWeights(.int8)
    /// ```
    func useEncoderWeights(_ format: WeightFormat) throws

    /// Weight bytes one decode step streams in the current formats (every matrix once, the head included).
    var decodeWeightBytes: Int { get }

    /// Teacher-forced log-probabilities (natural log) of each `target` token given `input`.
    /// Encoder-decoder: input → encoder, decoder reads [BOS] + target. Decoder-only: input ‖ target in one sequence.
    func score(input: [Int], target: [Int]) throws -> [Float]
}

extension LanguageModel {
    public func useBF16ForDecode() throws { try useDecodeWeights(.bf16) }

    public func useDecodeWeights(_ format: WeightFormat) throws {
        if format == .f32 { return }
        throw EncoreError(.unsupported, "\(format.rawValue) decode weights are not supported for model_type '\(modelType)' yet (supported: mu, mu_decoder, llama, t5)")
    }

    public var decodeWeightBytes: Int { parameterCount * 4 }

    public func useEncoderWeights(_ format: WeightFormat) throws {
        throw EncoreError(.unsupported, "model_type '\(modelType)' has no encoder: encoder weights are for encoder-decoder models (mu, t5)")
    }

    public func usePromptWeights(_ weights: PromptWeights) throws {
        if weights == .f32 { return }
        throw EncoreError(.unsupported, "\(weights.rawValue) prompt weights are not supported for model_type '\(modelType)' yet (supported: mu, mu_decoder, llama, t5)")
    }
}

/// What prompt passes (encoder, prefill, teacher-forced scoring: M > 8 rows) multiply with. Decode steps always
/// stream the decode format (``LanguageModel/useDecodeWeights(_:)``). The command line's default, `auto`, picks one
/// of these per model (``automatic(modelPath:keepQuantized:decodesAsLoaded:)``).
///
/// - `f32`: fp32 copies with BLAS GEMM (the default; most precise; memory: fp32 beside the decode copy).
/// - `int8`: int8 rows with Encore's int8 GEMM (`ek_gemm_int8`: per-row 7-bit activations with a zero point, exact
///   int32 sums, as PyTorch's dynamic int8 on x86 (fbgemm, reduce_range)); the fp32 copies are released, an int8 decode copy is shared.
///   A Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 decode copy (`useDecodeWeights(.q8_0)`, or a GGUF's such tensors kept quantized) is multiplied as stored
///   (`ek_gemm_q8_0`: llama.cpp's q8_0 activations (q8_1 for Q4_1), each block's exact int32 sum times its scales): no
///   int8 copy. So `--decode-weights q4_0 --prompt-weights int8` runs prompts on the 4-bit blocks, not on int8 rows.
/// - `decode`: the decode-format copy, widened to fp32 one matrix at a time for BLAS GEMM (no resident fp32 copy:
///   the memory of the decode format alone; Mu's and T5's encoders take the decoder's format too).
/// - `blocks`: the decode-format copy as llama.cpp's prompt passes use it: blocks the int8 GEMM reads (int8 rows,
///   Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) are multiplied as stored, as with `int8`, and bf16 widened per
///   matrix, as with `decode`: no copy of any matrix (a GGUF Q4_K_M file kept quantized holds its file's bytes alone).
///
/// ```swift
/// try model.useDecodeWeights(.int8); try model.usePromptWeights(.int8)   // int8 everywhere
/// try model.useDecodeWeights(.q4_0); try model.usePromptWeights(.decode) // q4_0 only in memory
/// ```
public enum PromptWeights: String, CaseIterable, Sendable {
    case f32, int8, decode, blocks

    /// Parses `f32`, `int8`, `decode` or `blocks` (any case), naming the choices otherwise.
    public init(parsing s: String) throws { self = try Self.parsed(s, what: "prompt weights") }

    /// What `--prompt-weights auto`, the command line's default, picks: ``blocks`` for a model whose matrices are
    /// held only in a quantized format as loaded and streamed so by decode steps (`decodesAsLoaded`: no other decode
    /// format asked for): a GGUF file with quantized matrices loaded with `keepQuantized`, or a folder written by
    /// `encore quantize` (int8, q8_0, q4_0, q4_1; bf16 ones are widened either way). Such a model holds no fp32 copy,
    /// so ``f32`` would widen every matrix in every prompt pass; ``blocks`` multiplies the blocks as llama.cpp's prompt
    /// passes do (int8 rows as PyTorch's dynamic int8). ``f32`` otherwise: fp32 copies with
    /// BLAS GEMM, the most precise. On session 19's Intel Xeon first tokens at 512 tokens came 1.6–2.7× sooner with
    /// ``blocks`` (bench/README.md "Session 19").
    ///
    /// ```swift
    /// PromptWeights.automatic(modelPath: "smollm2.Q4_1.gguf", keepQuantized: true, decodesAsLoaded: true)   // .blocks
    /// PromptWeights.automatic(modelPath: "models/mu-int8", keepQuantized: false, decodesAsLoaded: true)    // .blocks
    /// ```
    public static func automatic(modelPath: String, keepQuantized: Bool, decodesAsLoaded: Bool) -> PromptWeights {
        guard decodesAsLoaded else { return .f32 }
        if GGUFModelFile.isFile(modelPath) {
            guard keepQuantized, let file = try? GGUFModelFile(path: modelPath), file.hasQuantizedMatrices else { return .f32 }
            return .blocks
        }
        guard let format = try? QuantizedCheckpoint.storedFormat(folder: modelPath), format.hasInt8PromptGEMM else { return .f32 }
        return .blocks
    }
}

extension CaseIterable where Self: RawRepresentable, Self.RawValue == String {
    /// The case spelled `s` in any case, or an error naming `what` and every choice in declaration order:
    /// "prompt weights must be f32, int8, decode or blocks (got 'x')".
    static func parsed(_ s: String, what: String) throws -> Self {
        if let v = Self(rawValue: s.lowercased()) { return v }
        let names = allCases.map(\.rawValue)
        let choices = names.count > 1 ? names.dropLast().joined(separator: ", ") + " or " + names.last! : names.joined()
        throw EncoreError(.invalidArgument, "\(what) must be \(choices) (got '\(s)')")
    }
}

/// The running state of a batch being generated.
public protocol GenerationState: AnyObject {
    var batchSize: Int { get }
    /// Logits of the next token for every row: [B, V].
    var logits: Tensor { get }
    /// Feeds one token per row and computes the next logits.
    func advance(tokens: [Int]) throws
    /// Bytes held by caches (self-attention KV, cross-attention K/V, encoder output).
    var cacheBytes: Int { get }
    /// Seconds spent encoding the input (encoder + cross K/V), 0 for decoder-only models.
    var encodeSeconds: Double { get }
}

enum TokenCheck {
    static func validate(_ ids: [Int], vocab: Int, what: String) throws {
        for (i, id) in ids.enumerated() where id < 0 || id >= vocab {
            throw EncoreError(.invalidArgument, "\(what): token id \(id) at position \(i) is outside the vocabulary (0..<\(vocab))")
        }
    }
}

/// Loads a model folder (`config.json` + `model.safetensors`) by its `model_type`, or a `.gguf` file by its
/// `general.architecture`.
///
/// ```swift
/// let model = try ModelRegistry.load(folder: "models/mu-tiny")
/// let out = try Generator(model: model).generate(prompt: [5, 6, 7], parameters: .init(maxTokens: 20))
/// ```
public enum ModelRegistry {
    /// The `model_type` values Encore can load.
    public static let supportedTypes = ["mu", "mu_decoder", "llama, qwen2, phi3 (Hugging Face safetensors or GGUF)", "t5 (Hugging Face T5 / Flan-T5, or llama.cpp's T5 GGUF)"]

    /// `folder` is a model folder or a `.gguf` file (recognised by its magic, whatever its name).
    /// `keepQuantized`: GGUF Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 and Q4_K/Q5_K/Q6_K matrices (and the embedding table) stay in their blocks (see ``LlamaModel/init(path:keepQuantized:)``).
    public static func load(folder: String, keepQuantized: Bool = false) throws -> LanguageModel {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), !isDir.boolValue {
            guard GGUFFile.hasMagic(path: folder) else {
                throw EncoreError(.invalidArgument, "\(folder): not a model folder nor a GGUF file")
            }
            let file = try GGUFModelFile(path: folder)
            if file["general.architecture"]?.stringValue == "t5" { return try T5Model(path: folder, keepQuantized: keepQuantized) }
            return try LlamaModel(path: folder, keepQuantized: keepQuantized)
        }
        let (data, type, path) = try ConfigFile.read(folder: folder)
        let weights = folder + "/model.safetensors"
        let model = try load(type: type, config: data, path: path, weights: weights)
        // a quantized checkpoint (encore quantize): its matrices load packed; the head follows their format
        if let format = try QuantizedCheckpoint.storedFormat(folder: folder) { try model.useDecodeWeights(format) }
        return model
    }

    /// Loads `model.safetensors` for a `model_type`.
    private static func load(type: String, config data: Data, path: String, weights: String) throws -> LanguageModel {
        switch type {
        case "mu":
            let config = try ConfigFile.decode(MuConfig.self, from: data, path: path)
            try config.validate(path: path)
            return try MuModel(config: config, file: SafeTensorsFile(path: weights))
        case "mu_decoder":
            let config = try ConfigFile.decode(MuDecoderConfig.self, from: data, path: path)
            try config.validate(path: path)
            return try MuDecoderModel(config: config, file: SafeTensorsFile(path: weights))
        case "llama", "qwen2", "phi3":
            let config: LlamaConfig
            do { config = try ConfigFile.decode(LlamaConfig.self, from: data, path: path) } catch let e as EncoreError where e.kind == .unsupported {
                throw EncoreError(.unsupported, "\(path): \(e.message)")
            }
            return try LlamaModel(config: config, file: SafeTensorsFile(path: weights))
        case "t5":
            return try T5Model(config: T5Config.decode(data, path: path), file: SafeTensorsFile(path: weights))
        default:
            throw EncoreError(.unsupported, "\(path): model_type '\(type)' is not supported (supported: \(supportedTypes.joined(separator: ", ")))")
        }
    }
}

@inline(__always) func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
