import Foundation

/// Writes quantized checkpoints (`encore quantize`): every matrix of a Mu or mu_decoder model in a decode format,
/// the embedding, norms and biases in fp32. The result is an ordinary model folder that ``ModelRegistry`` loads;
/// its matrices stay packed in memory (mapped from the file, no fp32 copy), decode streams them, prompt passes
/// dequantize each per call, and the (tied) head is quantized at load to the same format.
///
/// ```swift
/// try QuantizedCheckpoint.write(model: mu, format: .q8_0, to: "models/mu-q8")
/// let q = try ModelRegistry.load(folder: "models/mu-q8")     // decodes with Q8_0 weights
/// ```
/// Naming inside `model.safetensors`: see ``QuantizedEntry``; the metadata key `encore.weight_format` holds the
/// format, and `config.json` is the source model's.
public enum QuantizedCheckpoint {
    public static let formatKey = "encore.weight_format"

    /// The format a folder's `model.safetensors` was quantized to (its ``formatKey`` metadata), or nil for an
    /// unquantized checkpoint or a folder without one. Throws for a metadata value that names no weight format.
    public static func storedFormat(folder: String) throws -> WeightFormat? {
        let weights = folder + "/model.safetensors"
        guard FileManager.default.fileExists(atPath: weights),
              let name = try SafeTensorsFile(path: weights).metadata[formatKey] else { return nil }
        do { return try WeightFormat(parsing: name) } catch {
            throw EncoreError(.invalidFile, "\(weights): metadata '\(formatKey)' is '\(name)', not a weight format")
        }
    }

    /// The names of `tensors` that are quantized: matrices, except the token embedding (looked up by row).
    static func quantizable(_ tensors: [String: Tensor]) -> [String] {
        tensors.filter { $0.value.shape.count == 2 && !$0.key.hasSuffix("wte.weight") && !$0.key.hasSuffix("embed_tokens.weight") }
            .map(\.key).sorted()
    }

    /// Quantizes and writes `model` (mu or mu_decoder) to `folder` (config.json + model.safetensors, atomically).
    /// Returns (bytes of the matrices before, after).
    @discardableResult
    public static func write(model: LanguageModel, format: WeightFormat, to folder: String) throws -> (before: Int, after: Int) {
        guard format != .f32 else { throw EncoreError(.invalidArgument, "quantize: format f32 is the unquantized checkpoint (use bf16, int8, q8_0, q4_0 or q4_1)") }
        let tensors: [String: Tensor]
        let configData: Data
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if let mu = model as? MuModel {
            tensors = mu.namedTensors()
            configData = try encoder.encode(mu.config)
        } else if let dec = model as? MuDecoderModel {
            tensors = dec.namedTensors()
            configData = try encoder.encode(dec.config)
        } else {
            throw EncoreError(.unsupported, "quantize: model_type '\(model.modelType)' is not supported (mu, mu_decoder; GGUF Llama models load quantized with --keep-quantized)")
        }
        var quantized: [String: QuantizedMatrix] = [:]
        var before = 0, after = 0
        for name in quantizable(tensors) {
            let t = tensors[name]!
            let q = QuantizedMatrix(t, format: format, regroup: false)
            quantized[name] = q
            before += t.count * 4
            after += q.byteCount
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(tensors: tensors, quantized: quantized, to: folder + "/model.safetensors",
                                    metadata: ["format": "pt", formatKey: format.rawValue])
        try AtomicFile.write(configData, to: folder + "/config.json")
        return (before, after)
    }
}
