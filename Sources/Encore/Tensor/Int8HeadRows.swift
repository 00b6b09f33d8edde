import Foundation
import EncoreKernels

/// A tensor [rows, heads · headDim] stored as int8 with one fp32 scale per (row, head): each head's slice of a row is
/// quantized on its own (scale = largest |x| / 127, values rounded to nearest, as ``WeightFormat/int8`` rows), so a
/// large head does not coarsen the others. The cross-attention K/V of Mu and T5 when kept in 8 bits
/// (``CrossKVStorage/int8``): half the bytes of f16 a decode step reads over the encoder positions.
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
        guard withExtendedLifetime(t, { ek_all_within(t.data, t.count, .greatestFiniteMagnitude) != 0 }) else { return nil }
        shape = t.shape
        width = t.shape.last ?? 0
        rows = width > 0 ? t.count / width : 0
        self.headDim = headDim
        data = .allocate(capacity: max(t.count, 1))
        scales = .allocate(capacity: max(rows * (width / headDim), 1))
        let headRows = rows * (width / headDim)
        let rowBytes = ek_quant_row_bytes(Int32(EK_WF_INT8), headDim)
        withExtendedLifetime(t) {
            if rowBytes == headDim {   // whole blocks of 32: the quantizer's rows are the heads' slices, back to back
                _ = ek_quantize_rows(Int32(EK_WF_INT8), t.data, data, scales, headRows, headDim)
            } else {                   // its rows are padded to 32 values: quantize, then keep each slice's headDim
                let padded = UnsafeMutablePointer<Int8>.allocate(capacity: max(headRows * rowBytes, 1))
                defer { padded.deallocate() }
                _ = ek_quantize_rows(Int32(EK_WF_INT8), t.data, padded, scales, headRows, headDim)
                for r in 0..<headRows { (data + r * headDim).update(from: padded + r * rowBytes, count: headDim) }
            }
        }
    }

    deinit { data.deallocate(); scales.deallocate() }

    /// The values dequantized to fp32 (new memory): int8 · its scale.
    public func widened() -> Tensor {
        let t = Tensor(uninitialized: shape)
        if ek_quant_row_bytes(Int32(EK_WF_INT8), headDim) == headDim {
            _ = ek_dequantize_rows(Int32(EK_WF_INT8), data, scales, t.data, rows * heads, headDim)
            return t
        }
        for r in 0..<rows * heads {
            let s = scales[r], src = data + r * headDim, dst = t.data + r * headDim
            for d in 0..<headDim { dst[d] = Float(src[d]) * s }
        }
        return t
    }

    /// Bytes held (values and scales).
    public var bytes: Int { rows * width + rows * heads * 4 }
}
