import Foundation
import EncoreKernels

/// Storage formats of a weight matrix for the decode GEMVs (prompt passes keep fp32 GEMM through BLAS).
///
/// Bytes per weight: f32 4, bf16 2, int8 1 (+ one fp32 scale per row), q8_0 1.0625, q4_1 0.625, q4_0 0.5625.
/// The integer formats quantize the activations per block of 32 once per call, as llama.cpp does.
public enum WeightFormat: String, CaseIterable, Sendable {
    case f32, bf16, int8, q8_0, q4_0, q4_1

    /// The kernel's format id (EK_WF_*).
    var kernelID: Int32 {
        switch self {
        case .f32: return Int32(EK_WF_F32)
        case .bf16: return Int32(EK_WF_BF16)
        case .int8: return Int32(EK_WF_INT8)
        case .q8_0: return Int32(EK_WF_Q8_0)
        case .q4_0: return Int32(EK_WF_Q4_0)
        case .q4_1: return Int32(EK_WF_Q4_1)
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

    /// Bytes of one stored row of `k` values (rows are padded to whole blocks of 32 for the integer formats).
    public func rowBytes(_ k: Int) -> Int { ek_quant_row_bytes(kernelID, k) }

    /// Bytes of an [n, k] matrix in this format, scales included.
    public func matrixBytes(rows n: Int, columns k: Int) -> Int { n * rowBytes(k) + (self == .int8 ? 4 * n : 0) }

    /// The ggml type that stores this format natively, if any.
    var ggmlType: GGMLType? {
        switch self {
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .bf16: return .bf16
        case .f32: return .f32
        case .int8: return nil
        }
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
    /// rows × format.rowBytes(columns) bytes.
    let data: UnsafeRawPointer
    /// int8: one fp32 scale per row.
    let scales: UnsafePointer<Float>?
    private let owned: UnsafeMutableRawPointer?
    private let ownedScales: UnsafeMutablePointer<Float>?
    private let owner: AnyObject?

    /// Quantizes an fp32 matrix (format ≠ f32).
    public init(_ t: Tensor, format: WeightFormat) {
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
        owned = p
        ownedScales = s
        data = UnsafeRawPointer(p)
        scales = s.map { UnsafePointer($0) }
        owner = nil
    }

    /// Copies stored rows (e.g. from a checkpoint), optionally reordered: row i of the result is row order[i].
    init(copying src: UnsafeRawPointer, scales srcScales: UnsafePointer<Float>?, format: WeightFormat, rows: Int,
         columns: Int, rowOrder: [Int]? = nil) {
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
        let rc = ek_dequantize_rows(format.kernelID, data, scales, t.data, rows, columns)
        precondition(rc == 0, "dequantize: format \(format) rejected")
        return t
    }

    /// The stored rows as bytes (for writing checkpoints).
    var rawBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: data, count: rows * format.rowBytes(columns)) }
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
            let rc = ek_gemv_quant(weight.format.kernelID, weight.data, weight.scales, x.data + r0 * k, bias?.data,
                                   y.data + r0 * n, mm, n, k)
            precondition(rc == 0, "gemv: format \(weight.format) failed (\(rc): out of memory?)")
            r0 += mm
        }
        return y
    }
}
