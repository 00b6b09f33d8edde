import Foundation
import EncoreKernels

/// Storage formats of a weight matrix for the decode GEMVs (prompt passes keep fp32 GEMM through BLAS).
///
/// Bytes per weight: f32 4, bf16 2, int8 1 (+ one fp32 scale per row), q8_0 1.0625, q4_1 0.625, q4_0 0.5625;
/// GGUF's K-quants and Q5 blocks (read from GGUF files with `keepQuantized`, not made by
/// ``QuantizedMatrix/init(_:format:regroup:)``): q6_K 0.8203, q5_K 0.6875, q4_K 0.5625, q5_1 0.75, q5_0 0.6875.
/// (llama.cpp's Q4_K_M files of small models hold mostly Q5_0: a row that is not a multiple of 256 cannot be a K-quant.)
/// The integer formats quantize the activations per block of 32 once per call (K-quants: ggml's Q8_K, blocks of
/// 256), as llama.cpp does.
public enum WeightFormat: String, CaseIterable, Sendable {
    case f32, bf16, int8, q8_0, q4_0, q4_1, q4_K, q5_K, q6_K, q5_0, q5_1

    /// Whether `encore quantize` and `--decode-weights` offer this format: not the K-quants, Q5_0 and Q5_1, which are
    /// read from GGUF files (``QuantizedMatrix/init(_:format:regroup:)`` quantizes Q5_0 / Q5_1 too, with llama.cpp's
    /// reference rounding, for tests).
    public var isQuantizationTarget: Bool { self != .q4_K && self != .q5_K && self != .q6_K && self != .q5_0 && self != .q5_1 }

    /// The kernel's format id (EK_WF_*).
    var kernelID: Int32 {
        switch self {
        case .f32: return Int32(EK_WF_F32)
        case .bf16: return Int32(EK_WF_BF16)
        case .int8: return Int32(EK_WF_INT8)
        case .q8_0: return Int32(EK_WF_Q8_0)
        case .q4_0: return Int32(EK_WF_Q4_0)
        case .q4_1: return Int32(EK_WF_Q4_1)
        case .q4_K: return Int32(EK_WF_Q4_K)
        case .q5_K: return Int32(EK_WF_Q5_K)
        case .q6_K: return Int32(EK_WF_Q6_K)
        case .q5_0: return Int32(EK_WF_Q5_0)
        case .q5_1: return Int32(EK_WF_Q5_1)
        }
    }

    /// Parses a command-line spelling ("f32"/"fp32", "bf16", "int8"/"i8", "q8_0", "q4_0", "q4_1").
    public init(parsing s: String) throws {
        switch s.lowercased() {
        case "f32", "fp32", "float32": self = .f32
        case "bf16": self = .bf16
        case "int8", "i8": self = .int8
        case "q8_0", "q8": self = .q8_0
        case "q4_0", "q4": self = .q4_0
        case "q4_1": self = .q4_1
        default:
            throw EncoreError(.invalidArgument, "unknown weight format '\(s)' (use f32, bf16, int8, q8_0, q4_0 or q4_1)")
        }
    }

    /// Bytes of one stored row of `k` values (rows are padded to whole blocks of 32 for the integer formats; K-quant
    /// rows hold k/256 super-blocks).
    public func rowBytes(_ k: Int) -> Int { ek_quant_row_bytes(kernelID, k) }

    /// Bytes of an [n, k] matrix in this format, scales included.
    public func matrixBytes(rows n: Int, columns k: Int) -> Int { n * rowBytes(k) + (self == .int8 ? 4 * n : 0) }

    /// The ggml type that stores this format natively, if any.
    var ggmlType: GGMLType? {
        switch self {
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q4_K: return .q4_K
        case .q5_K: return .q5_K
        case .q6_K: return .q6_K
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .bf16: return .bf16
        case .f32: return .f32
        case .int8: return nil
        }
    }

    /// Whether prompt passes can multiply matrices stored in this format with the int8 GEMM directly (int8 rows,
    /// Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 blocks, Q4_K / Q5_K super-blocks as 32-value blocks with scale d·sc and
    /// minimum −dmin·m, and Q6_K super-blocks as 16-value blocks with scale d·sc); bf16 gets an int8 copy for
    /// ``PromptWeights/int8``.
    public var hasInt8PromptGEMM: Bool {
        self == .int8 || self == .q8_0 || self == .q4_0 || self == .q4_1 || self == .q5_0 || self == .q5_1 || self == .q4_K
            || self == .q5_K || self == .q6_K
    }

    /// The decode path this CPU runs for the format, e.g. "avx512vnni", "avx2", "neon-dotprod", "neon", "scalar".
    public var kernelPath: String { String(cString: ek_gemv_path(kernelID)) }
}

/// A weight matrix [rows, columns] in a decode format, owned or borrowed from a memory-mapped file.
///
/// ```swift
/// let q = QuantizedMatrix(weight, format: .q4_0)        // quantizes (llama.cpp's rounding)
/// let y = Ops.linearQuantized(x, weight: q, bias: b)    // x [M ≤ 8, K] → [M, N]
/// ```
public final class QuantizedMatrix: @unchecked Sendable {
    public let format: WeightFormat
    public let rows: Int, columns: Int
    /// The kernels' id of the stored layout: `format.kernelID`, or its x8 regrouping (Q8_0/Q4_0/Q4_1 blocks
    /// regrouped by 8, Q5_0/Q5_1 their own way; ek_repack_x8: same bytes, faster decode kernels) when ``isRegrouped``.
    let layoutID: Int32
    /// Whether the blocks are stored regrouped by 8 (in memory only; checkpoints store ggml's order).
    public var isRegrouped: Bool { layoutID != format.kernelID }
    /// rows × format.rowBytes(columns) bytes.
    let data: UnsafeRawPointer
    /// int8: one fp32 scale per row.
    let scales: UnsafePointer<Float>?
    private let owned: UnsafeMutableRawPointer?
    private let ownedScales: UnsafeMutablePointer<Float>?
    private let owner: AnyObject?

    /// Quantizes an fp32 matrix (format ≠ f32, not a K-quant). `regroup`: store Q8_0/Q4_0/Q4_1 (and, where the
    /// AVX-512 kernel runs, Q5_0/Q5_1) regrouped for the fast decode kernels (false for matrices written to checkpoints).
    public init(_ t: Tensor, format: WeightFormat, regroup: Bool = true) {
        precondition(t.shape.count == 2, "QuantizedMatrix wants a matrix, got \(t.shape)")
        precondition(format != .f32, "QuantizedMatrix holds a decode format, not f32")
        self.format = format
        rows = t.shape[0]
        columns = t.shape[1]
        let bytes = max(rows * format.rowBytes(columns), 1)
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let s: UnsafeMutablePointer<Float>? = format == .int8 ? .allocate(capacity: max(rows, 1)) : nil
        let rc = ek_quantize_rows(format.kernelID, t.data, p, s, rows, columns)
        precondition(rc == 0, "quantize: format \(format) rejected")
        layoutID = Self.regroupInPlace(p, format: format, rows: rows, columns: columns, regroup)
        owned = p
        ownedScales = s
        data = UnsafeRawPointer(p)
        scales = s.map { UnsafePointer($0) }
        owner = nil
    }

    /// Regroups ggml rows at `p` when asked and the format has an x8 layout that speeds this CPU's decode kernels
    /// (`ek_x8_pays`); returns the layout's id.
    private static func regroupInPlace(_ p: UnsafeMutableRawPointer, format: WeightFormat, rows: Int, columns: Int, _ regroup: Bool) -> Int32 {
        let x8 = ek_x8_format(format.kernelID)
        guard regroup, x8 >= 0, ek_x8_pays(format.kernelID) != 0, rows > 0 else { return format.kernelID }
        precondition(ek_repack_x8(x8, p, p, rows, columns) == 0, "regroup: out of memory")
        return x8
    }

    /// Copies stored rows in ggml's block order (e.g. from a checkpoint or a GGUF file), optionally reordered:
    /// row i of the result is row order[i]; `regroup` as in ``init(_:format:regroup:)``.
    init(copying src: UnsafeRawPointer, scales srcScales: UnsafePointer<Float>?, format: WeightFormat, rows: Int,
         columns: Int, rowOrder: [Int]? = nil, regroup: Bool = false) {
        self.format = format
        self.rows = rows
        self.columns = columns
        let rb = format.rowBytes(columns)
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(rows * rb, 1), alignment: 64)
        let s: UnsafeMutablePointer<Float>? = format == .int8 ? .allocate(capacity: max(rows, 1)) : nil
        for i in 0..<rows {
            let from = rowOrder?[i] ?? i
            (p + i * rb).copyMemory(from: src + from * rb, byteCount: rb)
            if let s, let srcScales { s[i] = srcScales[from] }
        }
        layoutID = Self.regroupInPlace(p, format: format, rows: rows, columns: columns, regroup)
        owned = p
        ownedScales = s
        data = UnsafeRawPointer(p)
        scales = s.map { UnsafePointer($0) }
        owner = nil
    }

    /// Wraps stored rows that `owner` (a mapped file) keeps alive: no copy.
    init(borrowing src: UnsafeRawPointer, scales: UnsafePointer<Float>?, format: WeightFormat, rows: Int, columns: Int,
         owner: AnyObject) {
        self.format = format
        self.rows = rows
        self.columns = columns
        data = src
        self.scales = scales
        layoutID = format.kernelID
        owned = nil
        ownedScales = nil
        self.owner = owner
    }

    deinit {
        owned?.deallocate()
        ownedScales?.deallocate()
    }

    /// Bytes a GEMV streams (weights and scales).
    public var byteCount: Int { format.matrixBytes(rows: rows, columns: columns) }

    /// The matrix as fp32 [rows, columns] (new memory).
    public func dequantized() -> Tensor {
        let t = Tensor(uninitialized: [rows, columns])
        let rc = ek_dequantize_rows(layoutID, data, scales, t.data, rows, columns)
        precondition(rc == 0, "dequantize: format \(format) rejected")
        return t
    }

    /// Rows [r0, r0 + count) as fp32 into `dst` ([count, columns]): a tile of a prompt pass's widened weight.
    func dequantizeRows(from r0: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(r0 >= 0 && count >= 0 && r0 + count <= rows, "dequantizeRows: \(r0)..<\(r0 + count) of \(rows) rows")
        let rc = ek_dequantize_rows(layoutID, data + r0 * format.rowBytes(columns), scales.map { $0 + r0 }, dst, count, columns)
        precondition(rc == 0, "dequantize: format \(format) rejected")
    }

    /// Rows `ids` as fp32 [ids.count, columns] (embedding lookups from a quantized table).
    func dequantizedRows(_ ids: [Int]) -> Tensor {
        let t = Tensor(uninitialized: [ids.count, columns])
        let rb = format.rowBytes(columns)
        for (i, id) in ids.enumerated() {
            precondition(id >= 0 && id < rows, "token id \(id) out of range")
            let rc = ek_dequantize_rows(layoutID, data + id * rb, scales.map { $0 + id }, t.data + i * columns, 1, columns)
            precondition(rc == 0, "dequantize: format \(format) rejected")
        }
        return t
    }

    /// The same matrix in ggml's block order (itself when it is not regrouped).
    func inGGMLOrder() -> QuantizedMatrix {
        isRegrouped ? QuantizedMatrix(unpacking: self) : self
    }

    /// A ggml-order copy of a regrouped matrix (Q8_0/Q4_0/Q4_1: no scales).
    private init(unpacking m: QuantizedMatrix) {
        format = m.format
        rows = m.rows
        columns = m.columns
        let bytes = max(rows * format.rowBytes(columns), 1)
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        precondition(ek_unpack_x8(m.layoutID, m.data, p, rows, columns) == 0, "unpack: out of memory")
        layoutID = format.kernelID
        owned = p
        ownedScales = nil
        data = UnsafeRawPointer(p)
        scales = nil
        owner = nil
    }

    /// The stored rows as bytes (for writing checkpoints: call on ``inGGMLOrder()``).
    var rawBytes: UnsafeRawBufferPointer {
        precondition(!isRegrouped, "rawBytes of a regrouped matrix: write inGGMLOrder()")
        return UnsafeRawBufferPointer(start: data, count: rows * format.rowBytes(columns))
    }
}

extension Ops {
    /// y = x · Wᵀ + b with W in a decode format, for decode steps (M ≤ 8 rows; more rows work but re-read W
    /// per 8). x [M, K] → [M, N].
    public static func linearQuantized(_ x: Tensor, weight: QuantizedMatrix, bias: Tensor?) -> Tensor {
        let k = weight.columns, n = weight.rows
        precondition(x.shape.last == k, "linear: x \(x.shape) vs weight [\(n), \(k)]")
        if let bias { precondition(bias.count == n, "linear: bias \(bias.shape) vs \(n) outputs") }
        let m = x.count / k
        let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [n])
        var r0 = 0
        while r0 < m {
            let mm = min(8, m - r0)
            OpCounter.add(flops: 2 * mm * n * k)
            OpCounter.add(weightBytes: weight.byteCount)   // streamed once per pass of up to 8 rows
            let rc = ek_gemv_quant(weight.layoutID, weight.data, weight.scales, x.data + r0 * k, bias?.data,
                                   y.data + r0 * n, mm, n, k)
            precondition(rc == 0, "gemv: format \(weight.format) failed (\(rc): out of memory?)")
            r0 += mm
        }
        return y
    }

    /// Prompt-pass product over int8 weights without an fp32 copy: x [M, K] → [M, N] with x quantized per row to
    /// 7 bits and exact int32 dot products, then the epilogue: stored (`into` nil), GELU'd (`gelu`), or accumulated
    /// into the residual stream `into` [M, N]. ``WeightFormat/int8`` rows run `ek_gemm_int8` (one scale per row);
    /// ``WeightFormat/q8_0``, ``WeightFormat/q4_0``, ``WeightFormat/q4_1``, ``WeightFormat/q5_0`` and
    /// ``WeightFormat/q5_1`` blocks and the K-quants (a GGUF's tensors as stored) run `ek_gemm_q8_0` (llama.cpp's
    /// q8_0 / q8_1 activations; one scale per block of 32 — Q6_K: per 16 — applied to each block's exact sum, and the
    /// minima of Q4_1, Q5_1, Q4_K and Q5_K times the activations' block sums).
    ///
    /// `relu` gives max(x·Wᵀ + b, 0) from the same epilogue (T5's `DenseReluDense`).
    static func linearInt8(_ x: Tensor, weight: QuantizedMatrix, bias: Tensor?, gelu: Bool = false, relu: Bool = false,
                           into r: Tensor? = nil) -> Tensor {
        precondition(weight.format.hasInt8PromptGEMM, "linearInt8: \(weight.format) weights")
        return packedPromptProduct(x, weight: weight, bias: bias, gelu: gelu, relu: relu, into: r) { m, n, k, y, epilogue in
            weight.format != .int8   // Q8_0 / Q4_x / Q5_x blocks
                ? ek_gemm_q8_0(weight.layoutID, weight.data, x.data, bias?.data, y, m, n, k, epilogue)
                : ek_gemm_int8(weight.data.assumingMemoryBound(to: Int8.self), weight.scales, x.data, bias?.data, y,
                               m, n, k, epilogue)
        }
    }

    /// What every prompt-pass product over a packed matrix checks and counts before its kernel: `count` inputs in rows
    /// `inputWidth` wide, as wide as the weight's columns (`what` names them in the message), a bias as long as its
    /// rows; FLOPs and weight bytes counted. Returns M, the rows.
    static func countPromptProduct(inputWidth: Int, count: Int, weight: QuantizedMatrix, bias: Tensor?,
                                   what: @autoclosure () -> String) -> Int {
        let k = weight.columns, n = weight.rows
        precondition(inputWidth == k, "linear: \(what()) vs weight [\(n), \(k)]")
        if let bias { precondition(bias.count == n, "linear: bias \(bias.shape) vs \(n) outputs") }
        let m = count / k
        OpCounter.add(flops: 2 * m * n * k)
        OpCounter.add(weightBytes: weight.byteCount)
        return m
    }

    /// The GEMM epilogue of a prompt-pass product: accumulate into a residual, GELU, ReLU, or a plain store.
    static func promptEpilogue(gelu: Bool, relu: Bool, accumulate: Bool = false) -> Int32 {
        accumulate ? Int32(EK_EPI_ACCUMULATE) : gelu ? Int32(EK_EPI_GELU) : relu ? Int32(EK_EPI_RELU) : Int32(EK_EPI_STORE)
    }

    /// What the prompt GEMMs over packed weights share: the shape checks, the output (new, or the residual `into`),
    /// the FLOP and byte counts, and the epilogue; `gemm(m, n, k, y, epilogue)` runs the kernel (0 on success).
    private static func packedPromptProduct(_ x: Tensor, weight: QuantizedMatrix, bias: Tensor?, gelu: Bool, relu: Bool,
                                            into r: Tensor?,
                                            _ gemm: (Int, Int, Int, UnsafeMutablePointer<Float>, Int32) -> Int32) -> Tensor {
        let m = countPromptProduct(inputWidth: x.shape.last ?? 0, count: x.count, weight: weight, bias: bias,
                                   what: "x \(x.shape)")
        let n = weight.rows, k = weight.columns
        let y = r ?? Tensor(uninitialized: Array(x.shape.dropLast()) + [n])   // [M, N]
        precondition(y.count == m * n, "linear: residual \(y.shape) vs [\(m), \(n)]")
        let rc = gemm(m, n, k, y.data, promptEpilogue(gelu: gelu, relu: relu, accumulate: r != nil))
        precondition(rc == 0, "prompt GEMM over \(weight.format) weights failed (\(rc): out of memory?)")
        return y
    }
}

extension Ops {
    /// Whether prompt passes multiply bf16 weights as stored (`ek_gemm_bf16`) instead of widening each matrix to
    /// fp32 for BLAS: when ``Backend/bf16PromptGEMM`` is on and the CPU runs the AVX512-BF16 tile (checked on every
    /// call, so an ISA cap set later is honoured), or when tests force it (the plain path, on any CPU).
    static var bf16PromptGEMM: Bool {
        forceBF16PromptGEMM || Backend.bf16PromptGEMMRuns
    }
    /// Tests: run bf16 prompt passes through `ek_gemm_bf16` whatever the CPU (its plain path without AVX512-BF16).
    nonisolated(unsafe) static var forceBF16PromptGEMM = false

    /// Prompt-pass product over bf16 rows without an fp32 copy (`ek_gemm_bf16`): x [M, K] rounded to bf16, exact
    /// products, fp32 sums, then the epilogue as ``linearInt8(_:weight:bias:gelu:relu:into:)``'s.
    static func linearBF16(_ x: Tensor, weight: QuantizedMatrix, bias: Tensor?, gelu: Bool = false, relu: Bool = false,
                           into r: Tensor? = nil) -> Tensor {
        precondition(weight.format == .bf16, "linearBF16: \(weight.format) weights")
        return packedPromptProduct(x, weight: weight, bias: bias, gelu: gelu, relu: relu, into: r) { m, n, k, y, epilogue in
            ek_gemm_bf16(weight.data.assumingMemoryBound(to: UInt16.self), x.data, bias?.data, y, m, n, k, epilogue)
        }
    }

    /// ``linearBF16(_:weight:bias:gelu:relu:into:)`` with its result handed on as bf16 rows (`ek_gemm_bf16_to_bf16`) for
    /// a following ``linearBF16(_:weight:bias:into:)``: x [M, K] → [M, N] rounded to bf16.
    static func linearBF16Rows(_ x: Tensor, weight: QuantizedMatrix, bias: Tensor?, gelu: Bool, relu: Bool) -> BF16Rows {
        precondition(weight.format == .bf16, "linearBF16Rows: \(weight.format) weights")
        let m = countPromptProduct(inputWidth: x.shape.last ?? 0, count: x.count, weight: weight, bias: bias,
                                   what: "x \(x.shape)")
        let n = weight.rows, k = weight.columns
        let out = BF16Rows(leading: Array(x.shape.dropLast()), width: n)
        let rc = ek_gemm_bf16_to_bf16(weight.data.assumingMemoryBound(to: UInt16.self), x.data, bias?.data, out.data,
                                      out.stride, m, n, k, promptEpilogue(gelu: gelu, relu: relu))
        precondition(rc == 0, "prompt GEMM over bf16 weights failed (\(rc): out of memory?)")
        DecodeTuning.bf16MLPRowsCalls += 1
        return out
    }

    /// x · Wᵀ + b over bf16 rows (``linearBF16Rows(_:weight:bias:gelu:relu:)``'s), or r += it (`into`):
    /// `ek_gemm_bf16_xb`, the bytes of ``linearBF16(_:weight:bias:gelu:relu:into:)`` on the widened rows.
    static func linearBF16(_ a: BF16Rows, weight: QuantizedMatrix, bias: Tensor?, into r: Tensor? = nil) -> Tensor {
        precondition(weight.format == .bf16, "linearBF16: \(weight.format) weights")
        let m = countPromptProduct(inputWidth: a.width, count: a.rows * a.width, weight: weight, bias: bias,
                                   what: "bf16 rows of \(a.width)")
        let n = weight.rows, k = weight.columns
        let y = r ?? Tensor(uninitialized: a.leading + [n])   // [M, N]
        precondition(y.count == m * n, "linear: residual \(y.shape) vs [\(m), \(n)]")
        let rc = withExtendedLifetime(a) {
            ek_gemm_bf16_xb(weight.data.assumingMemoryBound(to: UInt16.self), a.data, bias?.data, y.data, m, n, k,
                            promptEpilogue(gelu: false, relu: false, accumulate: r != nil))
        }
        precondition(rc == 0, "prompt GEMM over bf16 weights failed (\(rc): out of memory?)")
        return y
    }

    /// x · W_jᵀ + b_j for several int8 matrices of one width that read the same x [M, K] in a prompt pass (q/k/v,
    /// gate/up, every decoder layer's cross-attention K/V): x is quantized once and one pool job covers every
    /// matrix's columns (`ek_gemm_int8_multi`). Each result equals ``linearInt8(_:weight:bias:gelu:relu:into:)`` of
    /// its matrix (same bytes).
    ///
    /// ```swift
    /// let qkv = Ops.linearInt8Shared(h, weights: [wq, wk, wv], biases: [nil, nil, nil])   // [M, Nq], [M, Nk], [M, Nv]
    /// ```
    static func linearInt8Shared(_ x: Tensor, weights: [QuantizedMatrix], biases: [Tensor?]) -> [Tensor] {
        let layout = weights.first?.layoutID ?? 0
        let (m, k, ys) = sharedPromptOutputs(x, weights: weights, biases: biases, caller: "linearInt8Shared") {
            $0.format.hasInt8PromptGEMM && $0.layoutID == layout
        }
        let ws = weights.map { Optional(UnsafePointer($0.data.assumingMemoryBound(to: Int8.self))) }
        let scales = weights.map(\.scales), bs = biases.map { $0.map { UnsafePointer($0.data) } }
        let yp = ys.map { Optional($0.data) }, ns = weights.map(\.rows)
        let rc = withExtendedLifetime((weights, biases, ys)) {
            weights[0].format != .int8
                ? ek_gemm_q8_0_multi(layout, weights.count, weights.map { Optional($0.data) }, bs, yp, ns, x.data, m, k,
                                     Int32(EK_EPI_STORE))
                : ek_gemm_int8_multi(weights.count, ws, scales, bs, yp, ns, x.data, m, k, Int32(EK_EPI_STORE))
        }
        precondition(rc == 0, "gemm_int8 failed (\(rc): out of memory?)")
        return ys
    }

    /// What the shared prompt GEMMs check and count before their kernel: matrices of one width K that `accepts`, x
    /// [M, K], each bias as long as its matrix's rows; FLOPs and weight bytes counted per matrix. Returns M, K and the
    /// uninitialized outputs [M, N_j].
    private static func sharedPromptOutputs(_ x: Tensor, weights: [QuantizedMatrix], biases: [Tensor?], caller: String,
                                            accepts: (QuantizedMatrix) -> Bool) -> (m: Int, k: Int, ys: [Tensor]) {
        precondition(!weights.isEmpty && biases.count == weights.count,
                     "\(caller): \(weights.count) matrices, \(biases.count) biases")
        let k = weights[0].columns
        precondition(x.shape.last == k, "linear: x \(x.shape) vs weight [\(weights[0].rows), \(k)]")
        for (w, b) in zip(weights, biases) {
            precondition(accepts(w) && w.columns == k, "\(caller): \(w.format) [\(w.rows), \(w.columns)] with width \(k)")
            if let b { precondition(b.count == w.rows, "linear: bias \(b.shape) vs \(w.rows) outputs") }
        }
        let m = x.count / k
        for w in weights {
            OpCounter.add(flops: 2 * m * w.rows * k)
            OpCounter.add(weightBytes: w.byteCount)
        }
        return (m, k, weights.map { Tensor(uninitialized: Array(x.shape.dropLast()) + [$0.rows]) })   // [M, N_j]
    }

    /// ``linearBF16(_:weight:bias:gelu:relu:into:)`` for several bf16 matrices of one width that read the same x
    /// [M, K] (q/k/v, every decoder layer's cross-attention K/V): x rounded to bf16 once and one pool job over every
    /// matrix's panels (`ek_gemm_bf16_multi`). Each result has the bytes of its own call.
    static func linearBF16Shared(_ x: Tensor, weights: [QuantizedMatrix], biases: [Tensor?]) -> [Tensor] {
        let (m, k, ys) = sharedPromptOutputs(x, weights: weights, biases: biases, caller: "linearBF16Shared") {
            $0.format == .bf16
        }
        DecodeTuning.sharedBF16PromptCalls += 1
        let ws = weights.map { Optional(UnsafePointer($0.data.assumingMemoryBound(to: UInt16.self))) }
        let bs = biases.map { $0.map { UnsafePointer($0.data) } }
        let yp = ys.map { Optional($0.data) }, ns = weights.map(\.rows)
        let rc = withExtendedLifetime((weights, biases, ys)) {
            ek_gemm_bf16_multi(weights.count, ws, bs, yp, ns, x.data, m, k, Int32(EK_EPI_STORE))
        }
        precondition(rc == 0, "gemm_bf16 failed (\(rc): out of memory?)")
        return ys
    }
}

/// Switches for the decode-step fusions, so one binary can time them against the unfused steps (A/B runs).
/// Read once from the environment; tests flip them.
public enum DecodeTuning {
    /// Layers that read the same activations in a decode step (q/k/v, gate/up) run as one kernel call: the
    /// activations are quantized once and one pool job covers all their rows. `ENCORE_DECODE_SHARED_GEMV=0` turns
    /// it off (one call per layer, as before).
    nonisolated(unsafe) public static var sharedGEMV = ProcessInfo.processInfo.environment["ENCORE_DECODE_SHARED_GEMV"] != "0"
    /// Shared calls made for a layout group of layers whose layouts differ (``Linear/shared(_:_:)``; a count for tests).
    nonisolated(unsafe) static var groupedSharedCalls = 0
    /// Decode kernel calls made through a kept ``SharedDecodeCall`` (tests check the models use theirs).
    nonisolated(unsafe) static var keptSharedCalls = 0
    /// The same for int8 and bf16 prompt passes: layers reading the same activations run as one `ek_gemm_int8_multi`
    /// or `ek_gemm_bf16_multi` call (``Ops/linearInt8Shared(_:weights:biases:)``, ``Ops/linearBF16Shared(_:weights:biases:)``).
    /// `ENCORE_SHARED_PROMPT_GEMM=0` turns it off.
    nonisolated(unsafe) public static var sharedPromptGEMM = ProcessInfo.processInfo.environment["ENCORE_SHARED_PROMPT_GEMM"] != "0"
    /// Shared bf16 prompt calls made (``Ops/linearBF16Shared(_:weights:biases:)``; a count for tests).
    nonisolated(unsafe) static var sharedBF16PromptCalls = 0
    /// An MLP whose two matrices both run the bf16 prompt GEMM hands its hidden layer over as bf16 rows
    /// (``Ops/linearBF16Rows(_:weight:bias:gelu:relu:)``): the first GEMM rounds its rows (GELU / ReLU applied) while
    /// they are in cache, the second reads them as they are; the same bytes as the fp32 hidden layer rounded by the
    /// second GEMM. `ENCORE_BF16_MLP_ROWS=0` turns it off (the fp32 hidden layer, for A/B runs).
    nonisolated(unsafe) public static var bf16MLPRows = ProcessInfo.processInfo.environment["ENCORE_BF16_MLP_ROWS"] != "0"
    /// MLP hidden layers handed over as bf16 rows (a count for tests).
    nonisolated(unsafe) static var bf16MLPRowsCalls = 0
}

/// Activations rounded to bf16 between two bf16 prompt GEMMs (an MLP's hidden layer): `rows` rows of `width` values,
/// `stride` (`width` rounded up to 16) apart, zeros past `width`; the storage is a pooled fp32 tensor of the same bytes.
struct BF16Rows {
    let storage: Tensor     // [rows, stride / 2] floats: rows × stride bf16 values
    let leading: [Int]      // the activations' shape but the last dimension
    let width: Int
    let stride: Int
    var rows: Int { storage.shape[0] }
    var data: UnsafeMutablePointer<UInt16> { UnsafeMutableRawPointer(storage.data).assumingMemoryBound(to: UInt16.self) }

    init(leading: [Int], width: Int) {
        self.leading = leading
        self.width = width
        stride = (width + 15) / 16 * 16
        storage = Tensor(uninitialized: [leading.reduce(1, *), stride / 2])
    }
}

extension Ops {
    /// y_j = x · W_jᵀ + b_j for several matrices of one stored layout and width that read the same x [M, K]
    /// (decode steps, M ≤ 8 per pass): the activations are quantized once and one kernel call covers every
    /// matrix's rows. Each result equals ``linearQuantized(_:weight:bias:)`` of its matrix (same bytes).
    ///
    /// ```swift
    /// let qkv = Ops.linearQuantizedShared(h, weights: [wq, wk, wv], biases: [bq, bk, bv])   // [M, Nq], [M, Nk], [M, Nv]
    /// ```
    public static func linearQuantizedShared(_ x: Tensor, weights: [QuantizedMatrix], biases: [Tensor?]) -> [Tensor] {
        precondition(!weights.isEmpty && weights.count <= Int(EK_GEMV_MULTI_MAX) && biases.count == weights.count,
                     "linearQuantizedShared: \(weights.count) matrices, \(biases.count) biases")
        let k = weights[0].columns, layout = weights[0].layoutID
        precondition(x.shape.last == k, "linear: x \(x.shape) vs weight [\(weights[0].rows), \(k)]")
        for (w, b) in zip(weights, biases) {
            precondition(w.columns == k && w.layoutID == layout, "linearQuantizedShared: matrices of different layouts or widths")
            if let b { precondition(b.count == w.rows, "linear: bias \(b.shape) vs \(w.rows) outputs") }
        }
        let m = x.count / k, count = weights.count
        let ys = weights.map { Tensor(uninitialized: Array(x.shape.dropLast()) + [$0.rows]) }
        // the kernel's pointer tables on the stack (a decode step allocates as little as possible)
        withUnsafeTemporaryAllocation(of: UnsafeRawPointer?.self, capacity: count) { wp in
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>?.self, capacity: 2 * count) { sb in
        withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<Float>?.self, capacity: count) { yp in
        withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { ns in
            for j in 0..<count {
                wp[j] = weights[j].data
                sb[j] = weights[j].scales
                sb[count + j] = biases[j].map { UnsafePointer($0.data) }
                ns[j] = weights[j].rows
            }
            withExtendedLifetime((weights, biases, ys)) {
                var r0 = 0
                while r0 < m {
                    let mm = min(8, m - r0)
                    for w in weights {
                        OpCounter.add(flops: 2 * mm * w.rows * k)
                        OpCounter.add(weightBytes: w.byteCount)
                    }
                    for j in 0..<count { yp[j] = ys[j].data + r0 * ns[j] }
                    let rc = ek_gemv_quant_multi(layout, count, wp.baseAddress, sb.baseAddress, sb.baseAddress! + count,
                                                 yp.baseAddress, ns.baseAddress, x.data + r0 * k, mm, k)
                    precondition(rc == 0, "gemv: format \(weights[0].format) failed (\(rc): out of memory?)")
                    r0 += mm
                }
            }
        } } } }
        return ys
    }
}
