import Foundation
import EncoreKernels

/// Where a model's weights come from: a checkpoint file, a dictionary (tests, conversions), or fresh
/// random values (benchmarks and `init`: N(0, 0.02)-sized matrices, zero biases, unit norms).
enum WeightSource {
    case file(SafeTensorsFile)
    case dictionary([String: Tensor], name: String)
    /// A GGUF file (llama.cpp names, ggml types dequantized to fp32).
    case gguf(GGUFModelFile)
    case random(seed: UInt64)
    /// The reference's initialisation: every matrix N(0, 0.02), biases 0, norm weights 1.
    case referenceInit(seed: UInt64)
}

/// Fetches named tensors with the expected shapes and remembers which were used, so the loader can
/// reject unexpected ones. Every error names the tensor.
final class WeightLoader {
    let source: WeightSource
    private(set) var used: Set<String> = []
    private var rng: SplitMix64

    convenience init(file: SafeTensorsFile) { self.init(source: .file(file)) }

    init(source: WeightSource) {
        self.source = source
        switch source {
        case .random(let seed), .referenceInit(let seed): rng = SplitMix64(seed: seed)
        default: rng = SplitMix64(seed: 0)
        }
    }

    /// Maps the names a model asks for to the source's names (T5 from GGUF: transformers names → llama.cpp's).
    /// Errors and the unused-tensor check use the source's names.
    var rename: ((String) -> String)?

    private func resolve(_ name: String) -> String { rename?(name) ?? name }

    var sourceName: String {
        switch source {
        case .file(let f): return f.path
        case .gguf(let f): return f.path
        case .dictionary(_, let name): return name
        case .random, .referenceInit: return "random weights"
        }
    }

    private func shapeOf(_ requested: String) -> [Int]? {
        let name = resolve(requested)
        switch source {
        case .file(let f):
            if let q = try? f.quantizedEntry(name) { return [q.rows, q.columns] }
            return f.tensors[name]?.shape
        case .gguf(let f): return f.tensors[name]?.shape
        case .dictionary(let d, _): return d[name]?.shape
        case .random, .referenceInit: return nil
        }
    }

    func tensor(_ requested: String, shape: [Int]) throws -> Tensor {
        let name = resolve(requested)
        switch source {
        case .random:
            used.insert(name)
            return randomTensor(name, shape: shape, normal: false)
        case .referenceInit:
            used.insert(name)
            return randomTensor(name, shape: shape, normal: true)
        default: break
        }
        guard let actual = shapeOf(requested) else {
            throw EncoreError(.missingTensor, "\(sourceName): missing tensor '\(name)' (expected shape \(shape))")
        }
        guard actual == shape else {
            throw EncoreError(.shapeMismatch, "\(sourceName): tensor '\(name)' has shape \(actual), expected \(shape)")
        }
        used.insert(name)
        switch source {
        case .file(let f):
            if let q = try f.quantizedEntry(name) {
                if q.format == .int8 { used.insert(name + "_scale") }
                return QuantizedMatrix(borrowing: q.data, scales: q.scales, format: q.format, rows: q.rows, columns: q.columns, owner: f).dequantized()
            }
            return try f.tensor(name)
        case .gguf(let f): return try f.tensor(name)
        case .dictionary(let d, _): return d[name]!
        case .random, .referenceInit: fatalError("unreachable")
        }
    }

    /// Whether the weights are generated (random sources), not read.
    var isRandom: Bool {
        switch source {
        case .random, .referenceInit: return true
        default: return false
        }
    }

    /// Whether the source has a tensor `name` (random sources have none).
    func has(_ name: String) -> Bool { shapeOf(name) != nil }

    func optional(_ name: String, shape: [Int]) throws -> Tensor? {
        switch source {
        case .random, .referenceInit: return nil
        default: return shapeOf(name) == nil ? nil : try tensor(name, shape: shape)
        }
    }

    /// Keep GGUF Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K matrices in their blocks (decode streams them; prompt passes
    /// run the block GEMM on them or widen them per call, as ``PromptWeights`` says)
    /// instead of dequantizing them to fp32 at load.
    var keepQuantized = false
    /// GGUF tensors already regrouped (a tied embedding and head share one).
    private var regrouped: [String: QuantizedMatrix] = [:]

    /// The layer `name` ([out, in]) without bias: packed when the checkpoint stores it quantized (or, with
    /// `keepQuantized`, in a GGUF block format), fp32 otherwise. `rowOrder[i]` = stored row that becomes row i.
    func linear(_ name: String, shape: [Int], rowOrder: [Int]? = nil) throws -> Linear {
        if let packed = try packedMatrix(name, shape: shape, rowOrder: rowOrder) { return Linear(packed: packed, bias: nil) }
        var w = try tensor(name, shape: shape)
        if let rowOrder {
            let cols = shape[1], out = Tensor(uninitialized: shape)
            for (i, from) in rowOrder.enumerated() { (out.data + i * cols).update(from: w.data + from * cols, count: cols) }
            w = out
        }
        return Linear(weight: w, bias: nil)
    }

    /// The stored quantized matrix `name`, if the source keeps it quantized.
    func packedMatrix(_ requested: String, shape: [Int], rowOrder: [Int]? = nil) throws -> QuantizedMatrix? {
        let name = resolve(requested)
        switch source {
        case .file(let f):
            guard let q = try f.quantizedEntry(name) else { return nil }
            guard [q.rows, q.columns] == shape else {
                throw EncoreError(.shapeMismatch, "\(sourceName): tensor '\(name)' has shape \([q.rows, q.columns]), expected \(shape)")
            }
            used.insert(name)
            if q.format == .int8 { used.insert(name + "_scale") }
            if rowOrder != nil || ek_x8_pays(q.format.kernelID) != 0 {
                // Q8_0/Q4_0/Q4_1 (Q5_x: with the AVX-512 kernel) regrouped for the fast decode kernels into memory of its own, the mapped
                // rows released (one copy resident); reordered rows are copied in any case
                let m = QuantizedMatrix(copying: q.data, scales: q.scales, format: q.format, rows: q.rows, columns: q.columns,
                                        rowOrder: rowOrder, regroup: true)
                f.releasePages(name)
                return m
            }
            return QuantizedMatrix(borrowing: q.data, scales: q.scales, format: q.format, rows: q.rows, columns: q.columns, owner: f)
        case .gguf(let f):
            guard keepQuantized, let info = f.tensors[name], info.shape.count == 2,
                  let format = [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K].first(where: { $0.ggmlType == info.type }),
                  info.shape[1] % info.type.blockValues == 0 else { return nil }
            guard info.shape == shape else {
                throw EncoreError(.shapeMismatch, "\(sourceName): tensor '\(name)' has shape \(info.shape), expected \(shape)")
            }
            used.insert(name)
            if let done = regrouped[name] { return done }
            // Regrouped by 8 for the fast decode kernels into memory of its own; the mapped blocks are then
            // released, so one copy stays resident.
            let raw = try f.rawBytes(name)
            let q = QuantizedMatrix(copying: raw.baseAddress!, scales: nil, format: format, rows: shape[0], columns: shape[1],
                                    rowOrder: rowOrder, regroup: true)
            f.releasePages(name)
            if rowOrder == nil { regrouped[name] = q }
            return q
        default:
            return nil
        }
    }

    /// Throws if the source holds tensors the model did not ask for.
    func checkAllUsed() throws {
        let names: [String]
        switch source {
        case .file(let f): names = Array(f.tensors.keys)
        case .gguf(let f): names = f.tensorNames
        case .dictionary(let d, _): names = Array(d.keys)
        case .random, .referenceInit: return
        }
        let extra = Set(names).subtracting(used).sorted()
        if !extra.isEmpty {
            let shown = extra.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            throw EncoreError(.unexpectedTensor, "\(sourceName): unexpected tensor\(extra.count > 1 ? "s" : "") \(shown)\(extra.count > 5 ? " and \(extra.count - 5) more" : "") (not part of this model's architecture)")
        }
    }

    private func randomTensor(_ name: String, shape: [Int], normal: Bool) -> Tensor {
        let t = Tensor(zeros: shape)
        if shape.count == 1 {
            if !name.hasSuffix(".bias") { for i in 0..<t.count { t.data[i] = 1 } }   // norm weights
            return t
        }
        if normal {
            // Box-Muller, N(0, 0.02)
            var i = 0
            while i < t.count {
                let u1 = max(rng.nextUnitDouble(), 1e-300), u2 = rng.nextUnitDouble()
                let r = (-2 * log(u1)).squareRoot() * 0.02
                t.data[i] = Float(r * cos(2 * .pi * u2))
                if i + 1 < t.count { t.data[i + 1] = Float(r * sin(2 * .pi * u2)) }
                i += 2
            }
            return t
        }
        // Uniform with the standard deviation of N(0, 0.02): speed does not depend on the values.
        let a = Float(0.02 * 3.0.squareRoot())
        for i in 0..<t.count { t.data[i] = (rng.nextUnitFloat() * 2 - 1) * a }
        return t
    }
}

/// A dense layer y = x·Wᵀ + b with the PyTorch `[out, in]` weight layout.
///
/// Decode steps (M ≤ 8 rows) stream `packed` when set (bf16, int8, q8_0, q4_0, q4_1); prompt passes use the
/// fp32 weight with BLAS GEMM, or the int8 GEMM over `promptInt8` after `usePromptWeights(.int8)` (no fp32 copy then),
/// dequantizing `packed` per call when neither is kept (quantized checkpoints, GGUF tensors kept quantized,
/// ``PromptWeights/decode``).
///
/// ```swift
/// var lin = Linear(weight: w, bias: b)
/// lin.useDecodeWeights(.q8_0)                   // keeps fp32 for prompts, adds a Q8_0 copy for decode
/// lin.useDecodeWeights(.int8, keepFP32: false)  // int8 only: a quarter of the memory
/// lin.usePromptWeights(.int8)                   // prompts on the int8 GEMM too (shares the int8 rows)
/// ```
struct Linear {
    /// fp32 weight [out, in]; nil when only `packed` / `promptInt8` are kept.
    private var dense: Tensor?
    var bias: Tensor?    // [out]
    /// The decode-format copy streamed by decode steps.
    private(set) var packed: QuantizedMatrix?
    /// int8 rows the prompt passes multiply with `ek_gemm_int8` (the same object as `packed` when that is int8).
    private(set) var promptInt8: QuantizedMatrix?
    let outputs: Int, inputs: Int

    init(weight: Tensor, bias: Tensor?) {
        dense = weight
        self.bias = bias
        outputs = weight.shape[0]
        inputs = weight.shape[1]
    }

    /// A layer that only has its packed weight (quantized checkpoints, GGUF blocks).
    init(packed: QuantizedMatrix, bias: Tensor?) {
        self.packed = packed
        self.bias = bias
        outputs = packed.rows
        inputs = packed.columns
    }

    /// Loads `<prefix>.weight` (fp32, or packed when the checkpoint stores it quantized) and `<prefix>.bias`.
    init(_ loader: WeightLoader, _ prefix: String, in inputs: Int, out outputs: Int, bias: Bool = true) throws {
        self = try loader.linear(prefix + ".weight", shape: [outputs, inputs])
        self.bias = bias ? try loader.tensor(prefix + ".bias", shape: [outputs]) : nil
    }

    /// The fp32 weight [out, in] (dequantized into new memory when only a quantized copy is kept).
    var weight: Tensor {
        get { dense ?? (promptInt8 ?? packed!).dequantized() }
        set { dense = newValue; packed = nil; promptInt8 = nil }
    }

    /// The matrix decode steps stream (nil: the fp32 weight).
    private var decodeMatrix: QuantizedMatrix? { packed ?? (dense == nil ? promptInt8 : nil) }
    /// The format decode steps stream.
    var decodeFormat: WeightFormat { decodeMatrix?.format ?? .f32 }
    /// Bytes a decode step streams for this layer (weights, scales and bias).
    var decodeBytes: Int { (decodeMatrix?.byteCount ?? outputs * inputs * 4) + (bias?.count ?? 0) * 4 }
    /// Bytes held (fp32 copy, packed copy, int8 prompt copy unless shared, bias).
    var residentBytes: Int {
        let prompt = promptInt8 != nil && promptInt8 !== packed ? promptInt8!.byteCount : 0
        return (dense == nil ? 0 : outputs * inputs * 4) + (packed?.byteCount ?? 0) + prompt + (bias?.count ?? 0) * 4
    }

    /// The decode-format matrix x [R, K] streams: set for decode steps (R ≤ ``Ops/decodeRows``) when a decode copy exists.
    private func decodeProduct(_ x: Tensor) -> QuantizedMatrix? {
        x.count / inputs <= Ops.decodeRows ? decodeMatrix : nil
    }

    /// The weight prompt passes multiply: int8 rows; or, with only a bf16 copy kept and the opt-in AVX512-BF16 GEMM
    /// (``Ops/bf16PromptGEMM``), the bf16 rows as stored; else nil: fp32 (dequantized per call when only blocks are kept).
    private func promptProduct(_ x: Tensor, gelu: Bool = false, relu: Bool = false, into r: Tensor? = nil) -> Tensor? {
        if let promptInt8 { return Ops.linearInt8(x, weight: promptInt8, bias: bias, gelu: gelu, relu: relu, into: r) }
        if promptRunsBF16 { return Ops.linearBF16(x, weight: packed!, bias: bias, gelu: gelu, relu: relu, into: r) }
        return nil
    }

    /// Whether prompt passes multiply the bf16 rows as stored (``Ops/bf16PromptGEMM``).
    var promptRunsBF16: Bool { promptInt8 == nil && dense == nil && packed?.format == .bf16 && Ops.bf16PromptGEMM }
    /// Whether prompt passes run the bf16 GEMM or the int8 rows' GEMM (7-bit activations). The layer's attention then
    /// takes bf16 products (``AttentionShape/bf16Products``), whose 8-bit significands are no coarser than the
    /// activations those GEMMs already round to. GGUF blocks (`ek_gemm_q8_0`) keep fp32 attention: their prompt
    /// passes give llama.cpp's logits (1e-5, `QuantizedModelTests`), whose CPU attention is fp32.
    var promptRunsNarrow: Bool { promptInt8?.format == .int8 || promptRunsBF16 }

    /// The decode-format matrix a prompt pass (more than ``Ops/decodeRows`` rows) widens tile by tile
    /// (``Ops/linearWidened(_:weight:bias:gelu:into:)``) when no fp32 copy is kept; nil otherwise.
    private func widenedProduct(_ x: Tensor, fused: Bool) -> QuantizedMatrix? {
        dense == nil && x.count / inputs > Ops.decodeRows && (!fused || Ops.fusedEpilogues) ? packed : nil
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        if let m = decodeProduct(x) { return Ops.linearQuantized(x, weight: m, bias: bias) }
        if let y = promptProduct(x) { return y }
        if let w = widenedProduct(x, fused: false) { return Ops.linearWidened(x, weight: w, bias: bias) }
        return Ops.linear(x, weight: dense ?? packed!.dequantized(), bias: bias)
    }

    /// gelu(x·Wᵀ + b), the bias and activation fused after the GEMM for prompt passes.
    func gelu(_ x: Tensor) -> Tensor {
        if let m = decodeProduct(x) {
            let y = Ops.linearQuantized(x, weight: m, bias: bias)
            ek_gelu_tanh_f32(y.data, y.count)
            return y
        }
        if let y = promptProduct(x, gelu: true) { return y }
        if let w = widenedProduct(x, fused: true) { return Ops.linearWidened(x, weight: w, bias: bias, gelu: true) }
        return Ops.linearGELU(x, weight: dense ?? packed!.dequantized(), bias: bias)
    }

    /// max(x·Wᵀ + b, 0): the int8 GEMM's epilogue for int8 prompt passes, else in place on the product.
    func relu(_ x: Tensor) -> Tensor {
        if decodeProduct(x) == nil, let y = promptProduct(x, relu: true) { return y }
        let y = self(x)
        Ops.reluInPlace(y)
        return y
    }

    /// For an MLP's first matrix in a prompt pass whose second matrix `next` also runs the bf16 GEMM: act(x·Wᵀ + b)
    /// handed on as bf16 rows (``Ops/linearBF16Rows(_:weight:bias:gelu:relu:)``), which `next` reads without an fp32
    /// pass (`next(rows)`, `next.accumulate(into:rows)`); nil otherwise (decode steps, other formats,
    /// ``DecodeTuning/bf16MLPRows`` off).
    func bf16Rows(_ x: Tensor, gelu: Bool = false, relu: Bool = false, feeding next: Linear) -> BF16Rows? {
        precondition(next.inputs == outputs, "bf16Rows: [\(outputs), \(inputs)] feeding [\(next.outputs), \(next.inputs)]")
        guard DecodeTuning.bf16MLPRows, x.count / inputs > Ops.decodeRows, promptRunsBF16, next.promptRunsBF16 else {
            return nil
        }
        return Ops.linearBF16Rows(x, weight: packed!, bias: bias, gelu: gelu, relu: relu)
    }

    /// a·Wᵀ + b over bf16 rows from ``bf16Rows(_:gelu:relu:feeding:)``.
    func callAsFunction(_ a: BF16Rows) -> Tensor { Ops.linearBF16(a, weight: packed!, bias: bias) }

    /// r += a·Wᵀ + b over bf16 rows from ``bf16Rows(_:gelu:relu:feeding:)``.
    func accumulate(into r: Tensor, _ a: BF16Rows) { _ = Ops.linearBF16(a, weight: packed!, bias: bias, into: r) }

    /// r += x·Wᵀ + b (a residual stream), accumulated by the GEMM for prompt passes.
    func accumulate(into r: Tensor, _ x: Tensor) {
        if let m = decodeProduct(x) {
            Ops.addInPlace(r, Ops.linearQuantized(x, weight: m, bias: bias))
            return
        }
        if promptProduct(x, into: r) != nil { return }
        if let w = widenedProduct(x, fused: true) { _ = Ops.linearWidened(x, weight: w, bias: bias, into: r); return }
        Ops.linearAccumulate(into: r, x, weight: dense ?? packed!.dequantized(), bias: bias)
    }

    /// Streams the weight in `format` during decode steps. `keepFP32: false` drops the fp32 copy (prompt passes
    /// then dequantize per call); `.f32` goes back to fp32 only (with int8 prompts on, decode steps then stream
    /// those int8 rows: no fp32 copy is kept).
    mutating func useDecodeWeights(_ format: WeightFormat, keepFP32: Bool = true) {
        if format == .f32 {
            if dense == nil && promptInt8 == nil { dense = packed!.dequantized() }
            packed = nil
            return
        }
        if packed?.format != format {
            let shared = promptInt8 != nil && promptInt8 === packed
            packed = promptInt8 != nil && promptInt8!.format == format ? promptInt8
                : QuantizedMatrix(dense ?? (promptInt8 ?? packed!).dequantized(), format: format)
            // int8 prompts that shared the old decode copy follow the new one when it has the int8 GEMM (one copy)
            if shared && format.hasInt8PromptGEMM { promptInt8 = packed }
        }
        if !keepFP32 { dropDense() }
    }

    /// What prompt passes (M > 8) multiply with (``PromptWeights``): `.int8` runs the int8 GEMM over int8 rows
    /// (shared with an int8, Q8_0, Q4_x, Q5_x or K-quant decode copy: blocks are multiplied as stored) and drops the fp32 copy; `.decode` drops the fp32 copy when a decode copy
    /// exists (prompt passes widen it per call); `.f32` brings an fp32 copy back (dequantized when none is left).
    mutating func usePromptWeights(_ weights: PromptWeights) {
        switch weights {
        case .int8:
            if promptInt8 == nil {
                promptInt8 = packed?.format.hasInt8PromptGEMM == true ? packed
                    : QuantizedMatrix(dense ?? packed!.dequantized(), format: .int8)
            }
            dropDense()
        case .decode:
            guard packed != nil else { return }   // no decode copy: fp32 is the decode format
            promptInt8 = nil
            dropDense()
        case .blocks:
            guard let packed else { return }      // no decode copy: fp32 is the decode format
            promptInt8 = packed.format.hasInt8PromptGEMM ? packed : nil
            dropDense()
        case .f32:
            if dense == nil { dense = (promptInt8 ?? packed!).dequantized() }
            promptInt8 = nil
        }
    }

    /// Releases the fp32 copy; values mapped from a checkpoint also leave RSS (their pages are dropped).
    private mutating func dropDense() {
        dense?.storage.releaseMappedPages()
        dense = nil
    }

    /// Adds the bf16 copy used by decode steps.
    mutating func useBF16ForDecode() { useDecodeWeights(.bf16) }

    var parameterTensors: [Tensor] { [weight] + (bias.map { [$0] } ?? []) }
}

extension Linear {
    /// Each layer's x·Wᵀ + b for layers that read the same x [R, K] (q/k/v, gate/up, every decoder layer's
    /// cross-attention K/V). In a decode step (R ≤ 8) where every layer streams the same packed layout, one kernel
    /// call serves up to four of them (``Ops/linearQuantizedShared(_:weights:biases:)``); in a prompt pass where
    /// every layer has int8 prompt rows, one int8 GEMM call serves them all (``Ops/linearInt8Shared(_:weights:biases:)``),
    /// and where every layer multiplies bf16 rows as stored, one bf16 GEMM call (``Ops/linearBF16Shared(_:weights:biases:)``).
    /// They quantize or round the activations once and run one pool job, with the same results; otherwise each layer runs
    /// on its own. In a decode step, layers of different layouts (llama.cpp's Q4_K_M files: Q5_0 q/k beside a Q8_0
    /// v) share a call with the others of their layout.
    static func shared(_ x: Tensor, _ layers: [Linear]) -> [Tensor] {
        guard layers.count > 1 else { return layers.map { $0(x) } }
        let k = layers[0].inputs, rows = x.count / k
        if rows <= Ops.decodeRows {
            if DecodeTuning.sharedGEMV, layers.count <= Int(EK_GEMV_MULTI_MAX),
               layers.allSatisfy({ $0.decodeMatrix != nil && $0.inputs == k }) {
                var groups: [[Int]] = []               // layer indices by layout, in order of first appearance
                for (i, layer) in layers.enumerated() {
                    if let g = groups.firstIndex(where: { layers[$0[0]].decodeMatrix!.layoutID == layer.decodeMatrix!.layoutID }) {
                        groups[g].append(i)
                    } else {
                        groups.append([i])
                    }
                }
                if groups.count < layers.count {
                    var out = [Tensor?](repeating: nil, count: layers.count)
                    for g in groups {
                        if g.count > 1 { DecodeTuning.groupedSharedCalls += 1 }
                        let ys = g.count == 1 ? [layers[g[0]](x)]
                            : Ops.linearQuantizedShared(x, weights: g.map { layers[$0].decodeMatrix! }, biases: g.map { layers[$0].bias })
                        for (j, i) in g.enumerated() { out[i] = ys[j] }
                    }
                    return out.map { $0! }
                }
            }
        } else if DecodeTuning.sharedPromptGEMM, let first = layers[0].promptInt8,
                  layers.allSatisfy({ $0.promptInt8?.layoutID == first.layoutID && $0.inputs == k }) {
            return Ops.linearInt8Shared(x, weights: layers.map { $0.promptInt8! }, biases: layers.map(\.bias))
        } else if DecodeTuning.sharedPromptGEMM, layers.allSatisfy({ $0.promptRunsBF16 && $0.inputs == k }) {
            return Ops.linearBF16Shared(x, weights: layers.map { $0.packed! }, biases: layers.map(\.bias))
        }
        return layers.map { $0(x) }
    }
}

/// One decode kernel call over layers that read the same x (q/k/v, gate/up), kept as raw pointers: made when the
/// layers' decode weights are set, so a decode step calls `ek_gemv_quant_multi` without copying the layers into an
/// array or retaining their objects. By then those objects are cold (the weights streamed past evict them) and every
/// retain waits on memory: Llama-362M's q/k/v and gate/up calls spent 2–3 µs each on that on Zen 3. The results are
/// ``Ops/linearQuantizedShared(_:weights:biases:)``'s (the same kernel call), in one buffer. Valid while the layers it
/// was made from are alive and unchanged: their owner makes it again whenever it changes them.
///
/// ```swift
/// let call = SharedDecodeCall([q, k, v])!      // nil unless every layer streams one layout of one width
/// let qkv = call(h)                            // [M, Nq], [M, Nk], [M, Nv] for h [M, K], M ≤ 8
/// ```
struct SharedDecodeCall {
    let layout: Int32, count: Int, inputs: Int, totalRows: Int, weightBytes: Int
    /// The matrices and bias buffers the pointers point into, held so that a call made stale by a change its owner
    /// forgot to follow still reads live memory.
    private let owners: [AnyObject]
    private var rows: (Int, Int, Int, Int) = (0, 0, 0, 0)
    private var weights: (UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?) = (nil, nil, nil, nil)
    /// The matrices' scales, then their biases (the kernel's layout).
    private var scalesAndBiases: (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                  UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?)
        = (nil, nil, nil, nil, nil, nil, nil, nil)

    /// Nil unless there are 2…`EK_GEMV_MULTI_MAX` layers that all stream decode matrices of one layout and width.
    init?(_ layers: [Linear]) {
        precondition(EK_GEMV_MULTI_MAX == 4, "SharedDecodeCall holds 4 matrices' pointers")
        guard layers.count > 1, layers.count <= Int(EK_GEMV_MULTI_MAX), let first = layers[0].decodeMatrixForCall,
              layers.allSatisfy({ $0.decodeMatrixForCall?.layoutID == first.layoutID && $0.inputs == first.columns })
        else { return nil }
        layout = first.layoutID; count = layers.count; inputs = first.columns
        var total = 0, bytes = 0, held: [AnyObject] = []
        var r = [Int](repeating: 0, count: 4), w = [UnsafeRawPointer?](repeating: nil, count: 4)
        var sb = [UnsafePointer<Float>?](repeating: nil, count: 8)
        for (j, layer) in layers.enumerated() {
            let m = layer.decodeMatrixForCall!
            r[j] = m.rows; w[j] = m.data; sb[j] = m.scales; sb[4 + j] = layer.bias.map { UnsafePointer($0.data) }
            total += m.rows; bytes += m.byteCount
            held.append(m)
            if let b = layer.bias { held.append(b.storage) }
        }
        owners = held
        rows = (r[0], r[1], r[2], r[3]); weights = (w[0], w[1], w[2], w[3])
        scalesAndBiases = (sb[0], sb[1], sb[2], sb[3], sb[4], sb[5], sb[6], sb[7])
        totalRows = total; weightBytes = bytes
    }

    /// Whether a decode step over x runs this call: ``DecodeTuning/sharedGEMV`` on and at most ``Ops/decodeRows`` rows
    /// (what ``Linear/shared(_:_:)`` asks of a shared call too); else the layers run as they would without it.
    func serves(_ x: Tensor) -> Bool { DecodeTuning.sharedGEMV && x.count / inputs <= Ops.decodeRows }

    /// Each layer's x·Wᵀ + b for x [M, K] (M ≤ 8 in a decode step; more rows re-read the weights per 8), as views of
    /// one [M, Σ N] buffer.
    func callAsFunction(_ x: Tensor) -> [Tensor] {
        precondition(x.shape.last == inputs, "linear: x \(x.shape) vs weights of width \(inputs)")
        let m = x.count / inputs, k = inputs
        DecodeTuning.keptSharedCalls += 1
        let storage = TensorStorage(count: m * totalRows, zeroed: false)
        let lead = Array(x.shape.dropLast())
        var ys: [Tensor] = []
        ys.reserveCapacity(count)
        var n = rows, w = weights, sb = scalesAndBiases
        withUnsafeBytes(of: &n) { nb in
        withUnsafeBytes(of: &w) { wb in
        withUnsafeBytes(of: &sb) { sbb in
            // homogeneous tuples: their memory is bound to the element type already
            let ns = nb.assumingMemoryBound(to: Int.self), wp = wb.assumingMemoryBound(to: UnsafeRawPointer?.self)
            let sp = sbb.assumingMemoryBound(to: UnsafePointer<Float>?.self)
            var offset = 0
            for j in 0..<count {
                ys.append(Tensor(shape: lead + [ns[j]], storage: storage, offset: offset))
                offset += m * ns[j]
            }
            withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<Float>?.self, capacity: count) { yp in
                var r0 = 0
                while r0 < m {
                    let mm = min(8, m - r0)
                    OpCounter.add(flops: 2 * mm * totalRows * k)
                    OpCounter.add(weightBytes: weightBytes)
                    for j in 0..<count { yp[j] = ys[j].data + r0 * ns[j] }
                    let rc = ek_gemv_quant_multi(layout, count, wp.baseAddress, sp.baseAddress, sp.baseAddress! + 4,
                                                 yp.baseAddress, ns.baseAddress, x.data + r0 * k, mm, k)
                    precondition(rc == 0, "gemv: layout \(layout) failed (\(rc): out of memory?)")
                    r0 += mm
                }
            }
        } } }
        return ys
    }
}

extension Linear {
    /// The matrix a decode step streams (nil: fp32), for ``SharedDecodeCall``.
    var decodeMatrixForCall: QuantizedMatrix? { decodeMatrix }
}

extension AttentionWeights {
    /// Applies `f` to q, k, v and out in place.
    mutating func updateLinears(_ f: (inout Linear) -> Void) { f(&q); f(&k); f(&v); f(&out) }
}

extension MLP {
    /// Applies `f` to fc1 and fc2 in place.
    mutating func updateLinears(_ f: (inout Linear) -> Void) { f(&fc1); f(&fc2) }
}

/// Pre-norm RMSNorm weight (`<prefix>.weight`), eps 1e-6, computed in fp32.
struct RMSNorm {
    var weight: Tensor
    init(_ loader: WeightLoader, _ prefix: String, dim: Int) throws {
        weight = try loader.tensor(prefix + ".weight", shape: [dim])
    }
    func callAsFunction(_ x: Tensor) -> Tensor { Ops.rmsNorm(x, weight: weight, eps: 1e-6) }
}

/// Mu attention projections: `q_linear`, `k_linear`, `v_linear`, `out_linear`, all with biases.
struct AttentionWeights {
    var q: Linear { didSet { qkvCall = SharedDecodeCall([q, k, v]) } }
    var k: Linear { didSet { qkvCall = SharedDecodeCall([q, k, v]) } }
    var v: Linear { didSet { qkvCall = SharedDecodeCall([q, k, v]) } }
    var out: Linear
    /// q/k/v as one decode kernel call (``SharedDecodeCall``), made again whenever one of them changes.
    private(set) var qkvCall: SharedDecodeCall?
    init(_ loader: WeightLoader, _ prefix: String, nEmbd: Int, shape: AttentionShape) throws {
        q = try Linear(loader, prefix + ".q_linear", in: nEmbd, out: shape.qWidth)
        k = try Linear(loader, prefix + ".k_linear", in: nEmbd, out: shape.kvWidth)
        v = try Linear(loader, prefix + ".v_linear", in: nEmbd, out: shape.kvWidth)
        out = try Linear(loader, prefix + ".out_linear", in: shape.qWidth, out: nEmbd)
        qkvCall = SharedDecodeCall([q, k, v])
    }

    mutating func useBF16ForDecode(includingKV: Bool = true) { useDecodeWeights(.bf16, includingKV: includingKV) }

    mutating func useDecodeWeights(_ format: WeightFormat, includingKV: Bool = true, keepFP32: Bool = true) {
        q.useDecodeWeights(format, keepFP32: keepFP32)
        out.useDecodeWeights(format, keepFP32: keepFP32)
        if includingKV { k.useDecodeWeights(format, keepFP32: keepFP32); v.useDecodeWeights(format, keepFP32: keepFP32) }
    }

    var linears: [Linear] { [q, k, v, out] }
}

extension AttentionWeights {
    /// Causal self-attention over a KV cache for `n` new tokens per row: projects Q/K/V of h [B*n, C],
    /// rotates them by `rope` (the angles of one position per row of h), appends K/V to `cache`, attends over
    /// everything cached (keys whose token is the pad id masked) and applies `out_linear`. Returns [B*n, C].
    func cachedSelfAttention(_ h: Tensor, batch B: Int, n: Int, cache: KVCache, newKeep: [UInt8], rope: Ops.RoPETable,
                             shape: AttentionShape, scratch: inout [Float]) -> Tensor {
        let qkv: [Tensor]
        if let qkvCall, qkvCall.serves(h) {
            qkv = qkvCall(h)                                               // one decode kernel call, nothing retained
        } else {
            qkv = Linear.shared(h, [self.q, self.k, self.v])
        }
        let q = qkv[0], k = qkv[1], v = qkv[2]                             // [B*n, H*D], [B*n, Hkv*D]
        StepProfile.lap(.qkvGEMV)
        Ops.ropeInPlace(q, heads: shape.heads, headDim: shape.headDim, table: rope)
        Ops.ropeInPlace(k, heads: shape.kvHeads, headDim: shape.headDim, table: rope)
        let start = cache.length
        cache.append(k: k, v: v, keep: newKeep, n: n)
        StepProfile.lap(.ropeCache)
        let o = Tensor(uninitialized: [B * n, shape.qWidth])              // [B*n, H*D]
        withExtendedLifetime(q) {
            for b in 0..<B {
                cache.attend(q: q.data + b * n * shape.qWidth, tq: n, batch: b, out: o.data + b * n * shape.qWidth,
                             shape: shape.withBF16Products(out.promptRunsNarrow), causalOffset: start, scratch: &scratch)
            }
        }
        StepProfile.lap(.selfAttention)
        return out(o)
    }
}

/// One decoder layer's cross-attention K and V over the encoder positions, [B*L, kvWidth] each: computed once per
/// encode and read by every decode step. fp32, f16 or int8 (``KVRowFormat``, ``MuModel/crossKV``,
/// ``T5Model/crossKV``: half or a quarter of the bytes a step reads over the encoder positions; scores and outputs
/// still fp32).
enum CrossAttentionKV {
    case f32(k: Tensor, v: Tensor)
    case f16(k: HalfTensor, v: HalfTensor)
    case int8(k: Int8HeadRows, v: Int8HeadRows)

    /// K and V as projected (fp32), or stored as `storage` asks when both fit it (f16: within its range; int8: finite;
    /// a layer that does not stays fp32). int8 takes a scale per row and block of 32 values of a `headDim`-wide head (or per head: ``Int8HeadRows``).
    init(k: Tensor, v: Tensor, storage: KVRowFormat, headDim: Int) {
        switch storage {
        case .f16:
            if let k16 = HalfTensor(fitting: k), let v16 = HalfTensor(fitting: v) { self = .f16(k: k16, v: v16); return }
        case .int8:
            if let k8 = Int8HeadRows(fitting: k, headDim: headDim), let v8 = Int8HeadRows(fitting: v, headDim: headDim) {
                self = .int8(k: k8, v: v8); return
            }
        case .f32: break
        }
        self = .f32(k: k, v: v)
    }

    var bytes: Int {
        switch self {
        case .f32(let k, let v): return (k.count + v.count) * 4
        case .f16(let k, let v): return k.bytes + v.bytes
        case .int8(let k, let v): return k.bytes + v.bytes
        }
    }

    /// The storage these K/V ended up in.
    var storage: KVRowFormat {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .int8: .int8
        }
    }

    /// Every decoder layer's K and V of the encoder output x [B*L, C] (`projections` = [(k, v)] per layer). fp32: one
    /// ``Linear/shared(_:_:)`` call for all of them (x quantized once, one pool job, for int8 / block prompts). f16 or
    /// int8: four layers per call, each group stored before the next is projected, so the fp32 rows of one group exist
    /// at a time and the peak memory stays below the fp32 K/V's (all of them at once, then their narrow copies, would
    /// raise it by half).
    static func project(_ x: Tensor, _ projections: [(k: Linear, v: Linear)], storage: KVRowFormat,
                        headDim: Int) -> [CrossAttentionKV] {
        let group = storage != .f32 ? 4 : max(projections.count, 1)
        return stride(from: 0, to: projections.count, by: group).flatMap { g0 in
            let layers = projections[g0..<min(g0 + group, projections.count)]
            let kv = Linear.shared(x, layers.flatMap { [$0.k, $0.v] })
            return (0..<layers.count).map { CrossAttentionKV(k: kv[2 * $0], v: kv[2 * $0 + 1], storage: storage, headDim: headDim) }
        }
    }
}

extension Ops {
    /// Attention for B sequences without a cache: q [B*tq, H*D] against k, v [B*kvRows, Hkv*D], keyKeep
    /// [B*kvRows] (0 = masked); `causalOffset` as in ``Ops/attention(q:tq:k:v:kvRows:kvStride:out:shape:keyKeep:causalOffset:scratch:)``.
    /// Returns [B*tq, H*D].
    static func batchedAttention(q: Tensor, k: Tensor, v: Tensor, batch B: Int, tq: Int, kvRows: Int, keyKeep: [UInt8],
                                 shape: AttentionShape, causalOffset: Int, scratch: inout [Float]) -> Tensor {
        return withExtendedLifetime((q, k, v)) {
            eachSequence(batch: B, tq: tq, kvRows: kvRows, keyKeep: keyKeep, shape: shape) { b, keep, out in
                attention(q: q.data + b * tq * shape.qWidth, tq: tq, k: k.data + b * kvRows * shape.kvWidth,
                          v: v.data + b * kvRows * shape.kvWidth, kvRows: kvRows, kvStride: shape.kvWidth, out: out,
                          shape: shape, keyKeep: keep, causalOffset: causalOffset, scratch: &scratch)
            }
        }
    }

    /// The loop the batched attention calls share: `attend(b, sequence b's key-keep row, its output rows)` for each of
    /// B sequences of tq queries, into a new [B*tq, H*D]. The caller keeps what `attend` reads alive.
    private static func eachSequence(batch B: Int, tq: Int, kvRows: Int, keyKeep: [UInt8], shape: AttentionShape,
                                     _ attend: (Int, UnsafePointer<UInt8>, UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let o = Tensor(uninitialized: [B * tq, shape.qWidth])
        keyKeep.withUnsafeBufferPointer { kp in
            for b in 0..<B { attend(b, kp.baseAddress! + b * kvRows, o.data + b * tq * shape.qWidth) }
        }
        return o
    }

    /// Cross-attention of q [B*tq, H*D] over a decoder layer's stored encoder K/V ([B*kvRows, Hkv*D] each, fp32, f16
    /// or int8), no causal mask: scores scaled by 1/√D (`scaled`, Mu) or not (T5, whose cross-attention has no position
    /// bias either). f16 and int8 rows are widened per element by the short-query kernels (`ek_attention_f16kv`,
    /// `ek_attention_i8kv`: decode steps), or once into fp32 for long queries (teacher forcing, scoring), which take
    /// the BLAS path. Returns [B*tq, H*D].
    static func crossAttention(q: Tensor, kv: CrossAttentionKV, batch B: Int, tq: Int, kvRows: Int, keyKeep: [UInt8],
                               shape: AttentionShape, scaled: Bool, scratch: inout [Float]) -> Tensor {
        let (k32, v32): (Tensor, Tensor)
        switch kv {
        case .f32(let k, let v): (k32, v32) = (k, v)
        case .f16(let k, let v):
            guard tq < longQueryMinimum else { (k32, v32) = (k.widened(), v.widened()); break }
            precondition(k.count == B * kvRows * shape.kvWidth && v.count == k.count, "attention: k \(k.shape) v \(v.shape)")
            let scaleDiv = scaled ? Float(Double(shape.headDim).squareRoot()) : 1
            return withExtendedLifetime((q, k, v)) {
                eachSequence(batch: B, tq: tq, kvRows: kvRows, keyKeep: keyKeep, shape: shape) { b, keep, out in
                    attentionF16KV(q: q.data + b * tq * shape.qWidth, tq: tq, k: k.data + b * kvRows * shape.kvWidth,
                                   v: v.data + b * kvRows * shape.kvWidth, kvRows: kvRows, kvStride: shape.kvWidth, out: out,
                                   shape: shape, keyKeep: keep, causalOffset: -1, scaleDiv: scaleDiv, scratch: &scratch)
                }
            }
        case .int8(let k, let v):
            guard tq < longQueryMinimum else { (k32, v32) = (k.widened(), v.widened()); break }
            precondition(k.rows == B * kvRows && k.width == shape.kvWidth && k.headDim == shape.headDim
                         && v.rows == k.rows && v.width == k.width && v.headDim == k.headDim && v.group == k.group,
                         "attention: k \(k.shape) v \(v.shape) in heads of \(k.headDim)")
            let scaleDiv = scaled ? Float(Double(shape.headDim).squareRoot()) : 1
            let perRow = k.scalesPerRow
            return withExtendedLifetime((q, k, v)) {
                eachSequence(batch: B, tq: tq, kvRows: kvRows, keyKeep: keyKeep, shape: shape) { b, keep, out in
                    let row = b * kvRows
                    attentionInt8KV(q: q.data + b * tq * shape.qWidth, tq: tq,
                                    k: k.data + row * shape.kvWidth, kScales: k.scales + row * perRow,
                                    v: v.data + row * shape.kvWidth, vScales: v.scales + row * perRow,
                                    scalesPerRow: perRow, group: k.group, kvRows: kvRows, kvStride: shape.kvWidth,
                                    out: out, shape: shape, keyKeep: keep, causalOffset: -1, scaleDiv: scaleDiv,
                                    scratch: &scratch)
                }
            }
        }
        precondition(k32.count == B * kvRows * shape.kvWidth && v32.count == k32.count, "attention: k \(k32.shape) v \(v32.shape)")
        if scaled {
            return batchedAttention(q: q, k: k32, v: v32, batch: B, tq: tq, kvRows: kvRows, keyKeep: keyKeep, shape: shape,
                                    causalOffset: -1, scratch: &scratch)
        }
        return withExtendedLifetime((q, k32, v32)) {
            eachSequence(batch: B, tq: tq, kvRows: kvRows, keyKeep: keyKeep, shape: shape) { b, keep, out in
                relativeBiasAttention(q: q.data + b * tq * shape.qWidth, tq: tq, k: k32.data + b * kvRows * shape.kvWidth,
                                      v: v32.data + b * kvRows * shape.kvWidth, kvRows: kvRows, kvStride: shape.kvWidth,
                                      out: out, shape: shape, keyKeep: keep, causalOffset: -1, bias: nil, scratch: &scratch)
            }
        }
    }

    /// ``Ops/attention(q:tq:k:v:kvRows:kvStride:out:shape:keyKeep:causalOffset:scratch:)`` for short queries
    /// (tq < ``Ops/longQueryMinimum``) over f16 keys and values (`ek_attention_f16kv`: widened per element); scores
    /// divided by `scaleDiv`, √D when nil (T5's cross-attention: 1).
    static func attentionF16KV(q: UnsafePointer<Float>, tq: Int, k: UnsafePointer<UInt16>, v: UnsafePointer<UInt16>,
                               kvRows: Int, kvStride: Int, out: UnsafeMutablePointer<Float>, shape: AttentionShape,
                               keyKeep: UnsafePointer<UInt8>?, causalOffset: Int, scaleDiv: Float? = nil,
                               scratch: inout [Float]) {
        precondition(tq < longQueryMinimum, "attentionF16KV: \(tq) queries (long queries take fp32 rows)")
        withShortQueryScratch(tq: tq, kvRows: kvRows, shape: shape, scratch: &scratch) { s in
            ek_attention_f16kv(q, shape.qWidth, k, kvStride, v, kvStride, out, shape.qWidth, tq, kvRows, shape.heads,
                               shape.kvHeads, shape.headDim, shape.interleaved ? 1 : 0, keyKeep, causalOffset,
                               scaleDiv ?? Float(Double(shape.headDim).squareRoot()), s)
        }
    }

    /// As ``attentionF16KV(q:tq:k:v:kvRows:kvStride:out:shape:keyKeep:causalOffset:scaleDiv:scratch:)`` over int8 keys
    /// and values (`ek_attention_i8kv`): row s's scales at `kScales` / `vScales` + s · `scalesPerRow`, one per `group`
    /// values (``Int8HeadRows``).
    static func attentionInt8KV(q: UnsafePointer<Float>, tq: Int, k: UnsafePointer<Int8>, kScales: UnsafePointer<Float>,
                                v: UnsafePointer<Int8>, vScales: UnsafePointer<Float>, scalesPerRow: Int, group: Int,
                                kvRows: Int, kvStride: Int, out: UnsafeMutablePointer<Float>, shape: AttentionShape,
                                keyKeep: UnsafePointer<UInt8>?, causalOffset: Int, scaleDiv: Float? = nil,
                                scratch: inout [Float]) {
        precondition(tq < longQueryMinimum, "attentionInt8KV: \(tq) queries (long queries take fp32 rows)")
        precondition(shape.headDim % group == 0 && scalesPerRow * group == shape.kvWidth,
                     "attentionInt8KV: \(shape) in blocks of \(group), \(scalesPerRow) scales a row")
        withShortQueryScratch(tq: tq, kvRows: kvRows, shape: shape, scratch: &scratch) { s in
            ek_attention_i8kv(q, shape.qWidth, k, kScales, kvStride, v, vScales, kvStride, scalesPerRow, group, out,
                              shape.qWidth, tq, kvRows, shape.heads, shape.kvHeads, shape.headDim,
                              shape.interleaved ? 1 : 0, keyKeep, causalOffset,
                              scaleDiv ?? Float(Double(shape.headDim).squareRoot()), s)
        }
    }

    /// The last of every `n` rows of x [B*n, C] → [B, C].
    static func lastRows(_ x: Tensor, batch B: Int, n: Int) -> Tensor {
        let c = x.shape.last!
        let out = Tensor(uninitialized: [B, c])
        for b in 0..<B { (out.data + b * c).update(from: x.data + (b * n + n - 1) * c, count: c) }
        return out
    }

    /// Rows `range` of every `n` rows of x [B*n, C] → [B*range.count, C].
    static func rowRange(_ x: Tensor, batch B: Int, n: Int, _ range: Range<Int>) -> Tensor {
        let c = x.shape.last!, m = range.count
        precondition(range.lowerBound >= 0 && range.upperBound <= n, "rowRange: \(range) outside 0..<\(n)")
        let out = Tensor(uninitialized: [B * m, c])
        for b in 0..<B { (out.data + b * m * c).update(from: x.data + (b * n + range.lowerBound) * c, count: m * c) }
        return out
    }
}

/// Mu MLP: `fc1` → tanh-GELU → `fc2`, both with biases.
struct MLP {
    var fc1: Linear, fc2: Linear
    /// An MLP from matrices in hand: fc1 [hidden, C], fc2 [C, hidden].
    init(fc1: Linear, fc2: Linear) {
        precondition(fc2.inputs == fc1.outputs, "MLP: fc1 [\(fc1.outputs), \(fc1.inputs)], fc2 [\(fc2.outputs), \(fc2.inputs)]")
        self.fc1 = fc1; self.fc2 = fc2
    }
    init(_ loader: WeightLoader, _ prefix: String, nEmbd: Int, hidden: Int) throws {
        fc1 = try Linear(loader, prefix + ".fc1", in: nEmbd, out: hidden)
        fc2 = try Linear(loader, prefix + ".fc2", in: hidden, out: nEmbd)
    }
    func callAsFunction(_ x: Tensor) -> Tensor {
        if let a = fc1.bf16Rows(x, gelu: true, feeding: fc2) { return fc2(a) }   // bf16 prompt passes
        return fc2(fc1.gelu(x))                                          // [R, hidden] → [R, C]
    }

    /// r += mlp(x): the residual stream accumulates fc2's product (fused epilogues for prompt passes).
    func accumulate(into r: Tensor, _ x: Tensor) {
        if let a = fc1.bf16Rows(x, gelu: true, feeding: fc2) {          // bf16 prompt passes: [R, hidden] bf16
            StepProfile.lap(.mlpUpGEMV)
            fc2.accumulate(into: r, a)
            StepProfile.lap(.mlpDownGEMV)
            return
        }
        let a = fc1.gelu(x)                                              // [R, hidden]
        StepProfile.lap(.mlpUpGEMV)
        fc2.accumulate(into: r, a)                                       // → r [R, C]
        StepProfile.lap(.mlpDownGEMV)
    }

    mutating func useBF16ForDecode() { useDecodeWeights(.bf16) }

    mutating func useDecodeWeights(_ format: WeightFormat, keepFP32: Bool = true) {
        updateLinears { $0.useDecodeWeights(format, keepFP32: keepFP32) }
    }
}

/// Self-attention K/V kept across decode steps for a batch: [B, capacity, kvWidth] each, plus which cached
/// positions hold a real token (the reference masks keys whose token is the pad id, even generated ones).
final class KVCache {
    let batch: Int
    let width: Int
    /// Values per head, and per scale of int8 rows (``Int8HeadRows/group(headDim:)``: 32 or the head).
    let headDim: Int, group: Int
    private(set) var capacity: Int
    private(set) var length = 0
    /// How the rows are stored (``KVRowFormat``): fp32; f16 (llama.cpp's default cache type: half the bytes held and
    /// read per step); int8 with a scale per position and block of 32 values or head (about a quarter). An f16 or int8 cache turns fp32 for good
    /// when an appended value does not fit (f16: |x| > 65504 or NaN; int8: not finite): its rows are widened back.
    private(set) var rows: KVRowFormat
    /// Whether the rows are f16.
    var half: Bool { rows == .f16 }
    private(set) var keys: Tensor     // [B, capacity, kvWidth], RoPE applied (fp32 storage; [1] otherwise)
    private(set) var values: Tensor   // [B, capacity, kvWidth]
    private var keys16: UnsafeMutablePointer<UInt16>?     // [B, capacity, kvWidth] (f16 storage)
    private var values16: UnsafeMutablePointer<UInt16>?
    private var keys8: UnsafeMutablePointer<Int8>?        // [B, capacity, kvWidth] (int8 storage)
    private var values8: UnsafeMutablePointer<Int8>?
    private var keyScales: UnsafeMutablePointer<Float>?   // [B, capacity, width / group] (int8 storage)
    private var valueScales: UnsafeMutablePointer<Float>?
    private(set) var keep: [UInt8]    // [B, capacity]

    /// Scales per int8 row.
    var scalesPerRow: Int { width / group }

    init(batch: Int, width: Int, capacity: Int, rows: KVRowFormat = .f32, headDim: Int) {
        precondition(headDim > 0 && width % headDim == 0, "KVCache: width \(width) in heads of \(headDim)")
        self.batch = batch
        self.width = width
        self.headDim = headDim
        group = Int8HeadRows.group(headDim: headDim)
        self.capacity = max(capacity, 1)
        self.rows = rows
        keys = Tensor(zeros: [1])
        values = Tensor(zeros: [1])
        keep = [UInt8](repeating: 0, count: batch * self.capacity)
        allocate(self.capacity)
    }

    /// A cache of `width`-wide rows in fp32 or f16 (`half`), in heads of `width` (T5's, tests).
    convenience init(batch: Int, width: Int, capacity: Int, half: Bool = false) {
        self.init(batch: batch, width: width, capacity: capacity, rows: half ? .f16 : .f32, headDim: width)
    }

    deinit { release() }

    /// The buffers of `rows` storage for `cap` positions per row. fp32 ones uninitialized: positions are written
    /// before they are read, so the pages of the slack past the prompt (64 positions beyond it for generation) stay
    /// out of RSS until a token reaches them (when the buffer is freshly mapped; one reused from the buffer pool or
    /// the heap is resident already). f16 and int8 ones from the ``BufferPool``, as fp32 tensors are: the next
    /// request's cache reuses a finished one's pages instead of faulting fresh ones in (Llama-362M, 512-token prompt:
    /// 10,240 pages a pass).
    private func allocate(_ cap: Int) {
        let n = batch * cap * width, scales = batch * cap * scalesPerRow
        switch rows {
        case .f32:
            keys = Tensor(uninitialized: [batch, cap, width])
            values = Tensor(uninitialized: [batch, cap, width])
        case .f16:
            keys16 = Self.take(n, UInt16.self)
            values16 = Self.take(n, UInt16.self)
        case .int8:
            keys8 = Self.take(n, Int8.self)
            values8 = Self.take(n, Int8.self)
            keyScales = Self.take(scales, Float.self)
            valueScales = Self.take(scales, Float.self)
        }
    }

    /// Gives the f16 / int8 buffers back to the pool (capacity as allocated).
    private func release() {
        let n = batch * capacity * width, scales = batch * capacity * scalesPerRow
        if let keys16 { Self.give(keys16, n) }
        if let values16 { Self.give(values16, n) }
        if let keys8 { Self.give(keys8, n) }
        if let values8 { Self.give(values8, n) }
        if let keyScales { Self.give(keyScales, scales) }
        if let valueScales { Self.give(valueScales, scales) }
        (keys16, values16, keys8, values8, keyScales, valueScales) = (nil, nil, nil, nil, nil, nil)
    }

    private static func take<T>(_ count: Int, _: T.Type) -> UnsafeMutablePointer<T> {
        BufferPool.shared.take(max(count, 1) * MemoryLayout<T>.stride).bindMemory(to: T.self, capacity: max(count, 1))
    }
    private static func give<T>(_ p: UnsafeMutablePointer<T>, _ count: Int) {
        BufferPool.shared.give(UnsafeMutableRawPointer(p), max(count, 1) * MemoryLayout<T>.stride)
    }

    /// Bytes held by the cache's buffers.
    var bytes: Int {
        let cells = batch * capacity * width
        switch rows {
        case .f32: return cells * 8 + keep.count
        case .f16: return cells * 4 + keep.count
        case .int8: return cells * 2 + batch * capacity * scalesPerRow * 8 + keep.count
        }
    }

    /// Forgets every cached position (the buffers are kept).
    func reset() { length = 0 }

    private func grow(to needed: Int) {
        var cap = capacity
        while cap < needed { cap *= 2 }
        func copy<T>(_ from: UnsafeMutablePointer<T>?, _ to: UnsafeMutablePointer<T>?, _ w: Int) {
            guard let from, let to else { return }
            for b in 0..<batch { (to + b * cap * w).update(from: from + b * capacity * w, count: length * w) }
        }
        let old = (keys, values, keys16, values16, keys8, values8, keyScales, valueScales)
        let oldCells = batch * capacity * width, oldScales = batch * capacity * scalesPerRow
        allocate(cap)
        switch rows {
        case .f32:
            copy(old.0.data, keys.data, width)
            copy(old.1.data, values.data, width)
        case .f16:
            copy(old.2, keys16, width); copy(old.3, values16, width)
            Self.give(old.2!, oldCells); Self.give(old.3!, oldCells)
        case .int8:
            copy(old.4, keys8, width); copy(old.5, values8, width)
            copy(old.6, keyScales, scalesPerRow); copy(old.7, valueScales, scalesPerRow)
            Self.give(old.4!, oldCells); Self.give(old.5!, oldCells)
            Self.give(old.6!, oldScales); Self.give(old.7!, oldScales)
        }
        var k2 = [UInt8](repeating: 0, count: batch * cap)
        for b in 0..<batch { for t in 0..<length { k2[b * cap + t] = keep[b * capacity + t] } }
        keep = k2
        capacity = cap
    }

    /// Positions [0, length) of row b, keys then values, widened to fp32 into `out` ([2, length, width]).
    private func widen(batch b: Int, into out: UnsafeMutablePointer<Float>) {
        let cells = length * width, base = b * capacity * width
        switch rows {
        case .f32:
            out.update(from: keys.data + base, count: cells)
            (out + cells).update(from: values.data + base, count: cells)
        case .f16:
            ek_f16_to_f32(keys16! + base, out, cells)
            ek_f16_to_f32(values16! + base, out + cells, cells)
        case .int8:
            let scaleBase = b * capacity * scalesPerRow
            Int8HeadRows.dequantize(keys8! + base, scales: keyScales! + scaleBase, blocks: length * scalesPerRow,
                                    size: group, into: out)
            Int8HeadRows.dequantize(values8! + base, scales: valueScales! + scaleBase, blocks: length * scalesPerRow,
                                    size: group, into: out + cells)
        }
    }

    /// f16 / int8 storage → fp32 for good (a value the storage cannot hold arrived): each row's cached positions are
    /// widened.
    private func widenStorage() {
        guard rows != .f32 else { return }
        let k = Tensor(uninitialized: [batch, capacity, width]), v = Tensor(uninitialized: [batch, capacity, width])
        let wide = Tensor(uninitialized: [2, max(length, 1), width])
        for b in 0..<batch {
            widen(batch: b, into: wide.data)
            (k.data + b * capacity * width).update(from: wide.data, count: length * width)
            (v.data + b * capacity * width).update(from: wide.data + length * width, count: length * width)
        }
        release()
        (keys, values, rows) = (k, v, .f32)
    }

    /// Appends n new positions per row. k, v: [B*n, width] (row-major by batch then position).
    func append(k: Tensor, v: Tensor, keep newKeep: [UInt8], n: Int) {
        if length + n > capacity { grow(to: length + n) }
        switch rows {
        case .f16: if !(HalfTensor.fits(k) && HalfTensor.fits(v)) { widenStorage() }
        case .int8: if !(Int8HeadRows.finite(k) && Int8HeadRows.finite(v)) { widenStorage() }
        case .f32: break
        }
        for b in 0..<batch {
            let src = b * n * width, dst = (b * capacity + length) * width
            switch rows {
            case .f32:
                (keys.data + dst).update(from: k.data + src, count: n * width)
                (values.data + dst).update(from: v.data + src, count: n * width)
            case .f16:
                ek_f32_to_f16(k.data + src, keys16! + dst, n * width)
                ek_f32_to_f16(v.data + src, values16! + dst, n * width)
            case .int8:
                let scaleDst = (b * capacity + length) * scalesPerRow
                Int8HeadRows.quantize(k.data + src, blocks: n * scalesPerRow, size: group, into: keys8! + dst,
                                      scales: keyScales! + scaleDst)
                Int8HeadRows.quantize(v.data + src, blocks: n * scalesPerRow, size: group, into: values8! + dst,
                                      scales: valueScales! + scaleDst)
            }
            for t in 0..<n { keep[b * capacity + length + t] = newKeep[b * n + t] }
        }
        length += n
    }

    /// fp32 storage only (T5's relative-bias attention reads it directly).
    func keyPointer(batch b: Int) -> UnsafeMutablePointer<Float> {
        precondition(rows == .f32, "keyPointer: a \(rows) cache")
        return keys.data + b * capacity * width
    }
    func valuePointer(batch b: Int) -> UnsafeMutablePointer<Float> {
        precondition(rows == .f32, "valuePointer: a \(rows) cache")
        return values.data + b * capacity * width
    }
    func withKeep<R>(batch b: Int, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        keep.withUnsafeBufferPointer { body($0.baseAddress! + b * capacity) }
    }

    /// Attention of row b's `tq` queries (q: [tq, H*D]) over its cached positions [0, length), masked by the cached
    /// keep flags and `causalOffset` (``Ops/attention(q:tq:k:v:kvRows:kvStride:out:shape:keyKeep:causalOffset:scratch:)``):
    /// fp32 rows as they are; f16 rows with ``Ops/attentionF16KV`` and int8 rows with ``Ops/attentionInt8KV`` (decode
    /// steps, short queries: the fused kernels widen each row as they read it), or widened once into a pooled buffer
    /// for longer queries (prompt chunks: it goes back to the pool after the call, so layers share it). Writes [tq, H*D].
    func attend(q: UnsafePointer<Float>, tq: Int, batch b: Int, out: UnsafeMutablePointer<Float>, shape: AttentionShape,
                causalOffset: Int, scratch: inout [Float]) {
        withKeep(batch: b) { kp in
            if rows == .f32 {
                Ops.attention(q: q, tq: tq, k: keyPointer(batch: b), v: valuePointer(batch: b), kvRows: length,
                              kvStride: width, out: out, shape: shape, keyKeep: kp, causalOffset: causalOffset,
                              scratch: &scratch)
                return
            }
            let base = b * capacity * width
            if tq < Ops.longQueryMinimum {
                if rows == .f16 {
                    Ops.attentionF16KV(q: q, tq: tq, k: keys16! + base, v: values16! + base, kvRows: length, kvStride: width,
                                       out: out, shape: shape, keyKeep: kp, causalOffset: causalOffset, scratch: &scratch)
                    return
                }
                precondition(shape.kvWidth == width && shape.headDim == headDim, "attend: \(shape) over rows of \(width) in heads of \(headDim)")
                let scaleBase = b * capacity * scalesPerRow
                Ops.attentionInt8KV(q: q, tq: tq, k: keys8! + base, kScales: keyScales! + scaleBase, v: values8! + base,
                                    vScales: valueScales! + scaleBase, scalesPerRow: scalesPerRow, group: group,
                                    kvRows: length, kvStride: width, out: out, shape: shape, keyKeep: kp,
                                    causalOffset: causalOffset, scratch: &scratch)
                return
            }
            let wide = Tensor(uninitialized: [2, length, width])   // keys, values [length, width] in fp32
            withExtendedLifetime(wide) {
                widen(batch: b, into: wide.data)
                Ops.attention(q: q, tq: tq, k: wide.data, v: wide.data + length * width, kvRows: length, kvStride: width,
                              out: out, shape: shape, keyKeep: kp, causalOffset: causalOffset, scratch: &scratch)
            }
        }
    }
}
