import Foundation
import EncoreKernels

/// A tensor [rows, heads · headDim] stored as int8 with one fp32 scale per (row, head): each head's slice of a row is
/// quantized on its own (scale = largest |x| / 127, values rounded to nearest, as ``WeightFormat/int8`` rows), so a
/// large head does not coarsen the others. The cross-attention K/V of Mu and T5 when kept in 8 bits
/// (``KVRowFormat/int8``): half the bytes of f16 a decode step reads over the encoder positions.
///
/// ```swift
/// if let k8 = Int8HeadRows(fitting: k, headDim: 64) { … k8.data, k8.scales … }   // nil when a value is not finite
/// ```
public final class Int8HeadRows: @unchecked Sendable {
    public let shape: [Int]
    /// Rows and the values per row (heads · headDim).
    public let rows: Int, width: Int, headDim: Int
    /// [rows, width] int8.
    let data: UnsafeMutablePointer<Int8>
    /// [rows, width / headDim]: the scale of each row's head slice.
    let scales: UnsafeMutablePointer<Float>

    /// Heads per row.
    public var heads: Int { width / headDim }

    /// The values of `t` (its last dimension a whole number of `headDim`-wide heads) in int8 with a scale per row and
    /// head, or nil when one of them is NaN or infinite.
    public init?(fitting t: Tensor, headDim: Int) {
        precondition(headDim > 0 && (t.shape.last ?? 0) % headDim == 0, "Int8HeadRows: \(t.shape) in heads of \(headDim)")
        guard Self.finite(t) else { return nil }
        shape = t.shape
        width = t.shape.last ?? 0
        rows = width > 0 ? t.count / width : 0
        self.headDim = headDim
        data = .allocate(capacity: max(t.count, 1))
        scales = .allocate(capacity: max(rows * (width / headDim), 1))
        withExtendedLifetime(t) { Self.quantize(t.data, headRows: rows * (width / headDim), headDim: headDim, into: data, scales: scales) }
    }

    deinit { data.deallocate(); scales.deallocate() }

    /// Whether every value of `t` is finite (what int8 rows can hold).
    static func finite(_ t: Tensor) -> Bool {
        withExtendedLifetime(t) { ek_all_within(t.data, t.count, .greatestFiniteMagnitude) != 0 }
    }

    /// `headRows` slices of `headDim` finite values at `src`, back to back, into int8 slices at `dst` (back to back)
    /// and one scale each (largest |x| / 127; `ek_quantize_rows`' int8 rows).
    static func quantize(_ src: UnsafePointer<Float>, headRows: Int, headDim: Int, into dst: UnsafeMutablePointer<Int8>,
                         scales: UnsafeMutablePointer<Float>) {
        guard headRows > 0 else { return }
        let rowBytes = ek_quant_row_bytes(Int32(EK_WF_INT8), headDim)
        if rowBytes == headDim {   // whole blocks of 32: the quantizer's rows are the heads' slices, back to back
            _ = ek_quantize_rows(Int32(EK_WF_INT8), src, dst, scales, headRows, headDim)
            return
        }
        // its rows are padded to 32 values: one slice at a time through a padded row on the stack (no heap
        // allocation: KV caches quantize every decode step's rows this way)
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: rowBytes) { padded in
            for r in 0..<headRows {
                _ = ek_quantize_rows(Int32(EK_WF_INT8), src + r * headDim, padded.baseAddress!, scales + r, 1, headDim)
                (dst + r * headDim).update(from: padded.baseAddress!, count: headDim)
            }
        }
    }

    /// The inverse: `headRows` int8 slices of `headDim` at `src` times their scales into fp32 at `dst`.
    static func dequantize(_ src: UnsafePointer<Int8>, scales: UnsafePointer<Float>, headRows: Int, headDim: Int,
                           into dst: UnsafeMutablePointer<Float>) {
        guard headRows > 0 else { return }
        if ek_quant_row_bytes(Int32(EK_WF_INT8), headDim) == headDim {
            _ = ek_dequantize_rows(Int32(EK_WF_INT8), src, scales, dst, headRows, headDim)
            return
        }
        for r in 0..<headRows {
            let s = scales[r], from = src + r * headDim, to = dst + r * headDim
            for d in 0..<headDim { to[d] = Float(from[d]) * s }
        }
    }

    /// The values dequantized to fp32 (new memory): int8 · its scale.
    public func widened() -> Tensor {
        let t = Tensor(uninitialized: shape)
        Self.dequantize(data, scales: scales, headRows: rows * heads, headDim: headDim, into: t.data)
        return t
    }

    /// Bytes held (values and scales).
    public var bytes: Int { rows * width + rows * heads * 4 }
}
