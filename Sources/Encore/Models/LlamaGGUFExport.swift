import Foundation
import EncoreKernels
import EncoreTokenizers

/// `encore quantize` for the Llama family (llama, qwen2, phi3): writes a GGUF v3 file that llama.cpp and Encore
/// both load, from a Hugging Face folder or from a GGUF file.
///
/// - Matrices (every 2-D `.weight`, the embedding and the head included, as llama.cpp's converter does) are stored
///   in the chosen type; a matrix whose rows are not a whole number of blocks stays F32. Norms, biases and RoPE
///   factor tensors are F32. Blocks are llama.cpp's reference rounding (`quantize_row_*_ref`, the `gguf` package's
///   `gguf.quants.quantize`) of the fp32 weights.
/// - From a GGUF file: every metadata key is copied (the tokenizer included) except `general.file_type`,
///   `general.quantization_version` and `general.alignment`, which are rewritten; tensors keep their names and
///   order (already-quantized sources are dequantized to fp32 first).
/// - From a Hugging Face folder: llama.cpp's names and metadata keys (`<arch>.block_count`, …), Q and K rows (and
///   biases) permuted for adjacent-pair RoPE for `llama` as `convert_hf_to_gguf.py` does, Llama 3 RoPE scaling as
///   `rope_freqs`, LongRoPE as `rope_factors_long/short`. No vocabulary is converted: `tokenizer.ggml.model` is
///   `none` (llama.cpp then runs on token ids).
///
/// ```swift
/// let s = try LlamaGGUFExport.write(source: "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", type: .q8_0,
///                                   to: "/tmp/smollm2-q8_0.gguf")
/// print(s.tensors, s.quantized)      // 272 211
/// ```
public enum LlamaGGUFExport {
    /// The output types (`--format`): f32, f16, bf16, q8_0, q4_0, q4_1.
    public static let types: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// Parses a `--format` spelling for a GGUF output (errors list the choices).
    public static func type(parsing s: String) throws -> GGMLType {
        let t: GGMLType?
        switch s.lowercased() {
        case "f32", "fp32", "float32": t = .f32
        case "f16", "fp16", "float16": t = .f16
        case "bf16": t = .bf16
        case "q8_0": t = .q8_0
        case "q4_0": t = .q4_0
        case "q4_1": t = .q4_1
        default: t = nil
        }
        guard let t else {
            let hint = s.lowercased() == "int8" ? " (int8 has no GGUF type: use q8_0)" : ""
            throw EncoreError(.invalidArgument, "format '\(s)' cannot be written to GGUF\(hint); use f32, f16, bf16, q8_0, q4_0 or q4_1")
        }
        return t
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*) for a file whose matrices are `type`.
    static func fileType(_ type: GGMLType) -> UInt32 {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .bf16: return 32
        case .q4_K: return 15
        case .q5_K: return 17
        case .q6_K: return 18
        }
    }

    /// What was written.
    public struct Summary: Sendable {
        public var tensors = 0
        /// Matrices stored in the requested type (the rest are F32).
        public var quantized = 0
        /// Bytes of all tensors as fp32, and as written.
        public var fp32Bytes = 0, bytes = 0
        public var architecture = ""
    }

    /// A source tensor: fp32 on demand, with the row permutation (heads) to apply, if any.
    struct Planned {
        let name: String
        let shape: [Int]
        let load: () throws -> Tensor
    }

    /// Writes `source` (a `.gguf` file or a Hugging Face folder of the Llama family) to `out` with matrices in `type`.
    @discardableResult
    public static func write(source: String, type: GGMLType, to out: String) throws -> Summary {
        guard types.contains(type) else {
            throw EncoreError(.invalidArgument, "format \(type.name) cannot be written (use \(types.map(\.name).joined(separator: ", ")))")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDir) else {
            throw EncoreError(.invalidArgument, "\(source): no such file or folder")
        }
        let (metadata, planned, arch) = isDir.boolValue ? try fromHuggingFace(folder: source) : try fromGGUF(path: source)
        var summary = Summary()
        summary.architecture = arch
        var outMeta = metadata
        outMeta.append(("general.file_type", .uint32(fileType(type))))
        if type.blockValues > 1 { outMeta.append(("general.quantization_version", .uint32(2))) }
        var tensors: [GGUFOutputTensor] = []
        for p in planned {
            let isMatrix = p.shape.count == 2 && p.name.hasSuffix(".weight") && p.shape[1] % type.blockValues == 0
            let t: GGMLType = isMatrix ? type : .f32
            let out = GGUFOutputTensor(name: p.name, shape: p.shape, type: t) { dst in
                let w = try p.load()
                precondition(w.shape == p.shape, "planned shape")
                encode(w, as: t, into: dst)
            }
            tensors.append(out)
            summary.tensors += 1
            summary.quantized += isMatrix ? 1 : 0
            summary.fp32Bytes += p.shape.reduce(4, *)
            summary.bytes += out.byteCount
        }
        try GGUFWriter.write(to: out, metadata: outMeta, tensors: tensors)
        return summary
    }

    /// `w` (fp32, rows of its last dimension) in ggml type `type`.
    static func encode(_ w: Tensor, as type: GGMLType, into dst: UnsafeMutableRawPointer) {
        let cols = w.shape.last ?? 1, rows = w.count / max(cols, 1)
        switch type {
        case .f32: dst.copyMemory(from: w.data, byteCount: w.count * 4)
        case .f16: ek_f32_to_f16(w.data, dst.assumingMemoryBound(to: UInt16.self), w.count)
        case .bf16, .q8_0, .q4_0, .q4_1:
            let format: WeightFormat = type == .bf16 ? .bf16 : type == .q8_0 ? .q8_0 : type == .q4_0 ? .q4_0 : .q4_1
            let rc = ek_quantize_rows(format.kernelID, w.data, dst, nil, rows, cols)
            precondition(rc == 0, "quantize \(type.name)")
        default:
            preconditionFailure("unsupported output type \(type.name)")
        }
    }

    // MARK: GGUF source

    static func fromGGUF(path: String) throws -> ([(String, GGUFValue)], [Planned], String) {
        let file = try GGUFModelFile(path: path)
        let arch = try file.string("general.architecture")
        guard DecoderFamily(rawValue: arch) != nil else {
            throw EncoreError(.unsupported, "\(path): general.architecture is '\(arch)'; encore quantize writes GGUF for \(DecoderFamily.allCases.map(\.rawValue).joined(separator: ", ")) models")
        }
        _ = try LlamaConfig(gguf: file)       // the metadata describes a model Encore reads
        let rewritten: Set<String> = ["general.file_type", "general.quantization_version", "general.alignment"]
        let meta = file.gguf.keys.filter { !rewritten.contains($0) }.map { ($0, file.metadata[$0]!) }
        let planned = file.tensorNames.map { name in
            Planned(name: name, shape: file.tensors[name]!.shape) { try file.tensor(name) }
        }
        return (meta, planned, arch)
    }

    // MARK: Hugging Face source

    static func fromHuggingFace(folder: String) throws -> ([(String, GGUFValue)], [Planned], String) {
        let (data, modelType, configPath) = try ConfigFile.read(folder: folder)
        guard let family = DecoderFamily(rawValue: modelType) else {
            let hint = ["mu", "mu_decoder"].contains(modelType) ? " (mu and mu_decoder quantize to a model folder: use an --out folder)" : ""
            throw EncoreError(.unsupported, "\(configPath): model_type '\(modelType)' cannot be written as GGUF; encore quantize writes GGUF for \(DecoderFamily.allCases.map(\.rawValue).joined(separator: ", "))\(hint)")
        }
        let c: LlamaConfig
        do { c = try ConfigFile.decode(LlamaConfig.self, from: data, path: configPath) } catch let e as EncoreError where e.kind == .unsupported {
            throw EncoreError(.unsupported, "\(configPath): \(e.message)")
        }
        try c.validate(path: configPath)
        let file = try SafeTensorsFile(path: folder + "/model.safetensors")
        let arch = family.rawValue
        let half = c.headDim / 2

        // llama.cpp's metadata keys (convert_hf_to_gguf.py's order)
        var meta: [(String, GGUFValue)] = [
            ("general.architecture", .string(arch)),
            ("general.type", .string("model")),
            ("general.name", .string(URL(fileURLWithPath: folder).lastPathComponent)),
            ("\(arch).block_count", .uint32(UInt32(c.nLayer))),
            ("\(arch).context_length", .uint32(UInt32(c.contextLength))),
            ("\(arch).embedding_length", .uint32(UInt32(c.nEmbd))),
            ("\(arch).feed_forward_length", .uint32(UInt32(c.ffnDim))),
            ("\(arch).attention.head_count", .uint32(UInt32(c.nHead))),
            ("\(arch).attention.head_count_kv", .uint32(UInt32(c.nKVHead))),
            ("\(arch).rope.freq_base", .float32(Float(c.ropeTheta))),
            ("\(arch).attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps))),
        ]
        if c.headDim * c.nHead != c.nEmbd {
            meta.append(("\(arch).attention.key_length", .uint32(UInt32(c.headDim))))
            meta.append(("\(arch).attention.value_length", .uint32(UInt32(c.headDim))))
        }
        meta.append(("\(arch).rope.dimension_count", .uint32(UInt32(c.headDim))))
        if let sw = c.slidingWindow { meta.append(("\(arch).attention.sliding_window", .uint32(UInt32(sw)))) }
        meta.append(("\(arch).vocab_size", .uint32(UInt32(c.vocabSize))))
        var extra: [Planned] = []
        func vector(_ name: String, _ values: [Float]) -> Planned {
            Planned(name: name, shape: [values.count]) { Tensor(shape: [values.count], values: values) }
        }
        switch c.ropeScaling {
        case .none: break
        case .linear(let factor):
            meta.append(("\(arch).rope.scaling.type", .string("linear")))
            meta.append(("\(arch).rope.scaling.factor", .float32(Float(factor))))
        case .llama3(let factor, let low, let high, let original):
            // convert_hf_to_gguf.py: divisors of the inverse frequencies, in float32
            let lowWavelen = Float(original) / Float(low), highWavelen = Float(original) / Float(high)
            let factors = (0..<half).map { j -> Float in
                let freq = 1 / powf(Float(c.ropeTheta), Float(2 * j) / Float(c.headDim))
                let wavelen = 2 * Float.pi / freq
                if wavelen < highWavelen { return 1 }
                if wavelen > lowWavelen { return Float(factor) }
                let smooth = (Float(original) / wavelen - Float(low)) / Float(high - low)
                return 1 / ((1 - smooth) / Float(factor) + smooth)
            }
            extra.append(vector("rope_freqs.weight", factors))
        case .dynamic:
            throw EncoreError(.unsupported, "\(configPath): RoPE scaling 'dynamic' has no GGUF form (llama.cpp has no dynamic NTK scaling)")
        case .longrope(let short, let long, let original, let attention):
            meta.append(("\(arch).rope.scaling.attn_factor", .float32(Float(attention))))
            meta.append(("\(arch).rope.scaling.original_context_length", .uint32(UInt32(original))))
            extra.append(vector("rope_factors_long.weight", long.map(Float.init)))
            extra.append(vector("rope_factors_short.weight", short.map(Float.init)))
        }
        meta.append(("tokenizer.ggml.model", .string("none")))
        if let bos = c.bosTokenId { meta.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(bos)))) }
        if let eos = c.eosTokenId { meta.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(eos)))) }
        meta.append(("tokenizer.ggml.padding_token_id", .uint32(UInt32(c.padTokenId))))

        // Hugging Face → GGUF names, from the two namings the loader uses (LlamaNaming)
        let hf = LlamaNaming.huggingFace, gg = LlamaNaming.gguf
        var pairs: [(hf: String, gguf: String, heads: Int?)] = [(hf.embedding, gg.embedding, nil)]
        let permute = family == .llama
        for i in 0..<c.nLayer {
            let h = hf.block(i), g = gg.block(i)
            let prefixes: [(String, String, Int?)] = [
                (h.attnNorm, g.attnNorm, nil), (h.q, g.q, permute ? c.nHead : nil), (h.k, g.k, permute ? c.nKVHead : nil),
                (h.v, g.v, nil), (h.qkv, g.qkv, nil), (h.o, g.o, nil), (h.ffnNorm, g.ffnNorm, nil),
                (h.gate, g.gate, nil), (h.up, g.up, nil), (h.gateUp, g.gateUp, nil), (h.down, g.down, nil),
            ]
            for (a, b, heads) in prefixes {
                for suffix in [".weight", ".bias"] where file.tensors[a + suffix] != nil { pairs.append((a + suffix, b + suffix, heads)) }
            }
        }
        pairs.append((hf.outputNorm, gg.outputNorm, nil))
        let headPresent = file.tensors[hf.head] != nil
        if headPresent && c.tieWordEmbeddings != true { pairs.append((hf.head, gg.head, nil)) }
        let mapped = Set(pairs.map(\.hf)).union(headPresent ? [hf.head] : [])
        let unknown = file.tensors.keys.filter { !mapped.contains($0) && !$0.hasSuffix("rotary_emb.inv_freq") }.sorted()
        guard unknown.isEmpty else {
            throw EncoreError(.unexpectedTensor, "\(file.path): tensor\(unknown.count > 1 ? "s" : "") \(unknown.prefix(5).map { "'\($0)'" }.joined(separator: ", ")) \(unknown.count > 1 ? "have" : "has") no GGUF name in the \(arch) architecture")
        }
        for (name, shape) in [(hf.embedding, [c.vocabSize, c.nEmbd]), (hf.outputNorm, [c.nEmbd])] {
            guard let info = file.tensors[name] else { throw EncoreError(.missingTensor, "\(file.path): missing tensor '\(name)'") }
            guard info.shape == shape else { throw EncoreError(.shapeMismatch, "\(file.path): tensor '\(name)' has shape \(info.shape), expected \(shape)") }
        }
        var planned: [Planned] = pairs.map { p in
            let info = file.tensors[p.hf]!
            return Planned(name: p.gguf, shape: info.shape) {
                let t = try file.tensor(p.hf)
                guard let heads = p.heads else { return t }
                return try permuteRoPE(t, heads: heads, name: p.hf)
            }
        }
        planned += extra
        return (meta, planned, arch)
    }

    /// llama.cpp's converter permutation (`LlamaModel.permute`): within each head of D rows, stored row 2i+j is
    /// Hugging Face row j·D/2 + i. t: [heads*D, C] or a bias [heads*D] → new tensor of the same shape.
    static func permuteRoPE(_ t: Tensor, heads: Int, name: String) throws -> Tensor {
        let rows = t.shape[0], cols = t.count / max(rows, 1)
        guard heads > 0, rows % (2 * heads) == 0 else {
            throw EncoreError(.shapeMismatch, "tensor '\(name)' has \(rows) rows, not a whole number of \(heads) heads of even width")
        }
        let d = rows / heads, half = d / 2
        let out = Tensor(uninitialized: t.shape)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    (out.data + (h * d + 2 * i + j) * cols).update(from: t.data + (h * d + j * half + i) * cols, count: cols)
                }
            }
        }
        return out
    }
}
