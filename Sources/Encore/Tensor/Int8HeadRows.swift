import Foundation
import EncoreKernels

/// A tensor [rows, heads · headDim] stored as int8 with one fp32 scale per row and block of ``group`` values of a head:
/// 32 when the head width is a multiple of 32 (llama.cpp's q8_0 cache blocks), else the whole head. Each block is
/// quantized on its own (scale = largest |x| / 127, values rounded to nearest, as ``WeightFormat/int8`` rows), so a
/// large head or channel does not coarsen the others. K/V rows kept in 8 bits (``KVRowFormat/int8``): about half the
/// bytes of f16 a decode step reads.
///
/// ```swift
/// if let k8 = Int8HeadRows(fitting: k, headDim: 64) { … k8.data, k8.scales … }   // nil when a value is not finite
/// ```
public final class Int8HeadRows: @unchecked Sendable {
    public let shape: [Int]
    /// Rows, the values per row (heads · headDim), the head width and the values per scale.
    public let rows: Int, width: Int, headDim: Int, group: Int
    /// [rows, width] int8.
    let data: UnsafeMutablePointer<Int8>
    /// [rows, width / group]: the scale of each block of a row.
    let scales: UnsafeMutablePointer<Float>

    /// Heads per row.
    public var heads: Int { width / headDim }
    /// Scales per row.
    public var scalesPerRow: Int { width / group }

    /// The values per scale for heads of `headDim`: blocks of 32 when they divide the head, else the head.
    public static func group(headDim: Int) -> Int { headDim % 32 == 0 ? 32 : headDim }

    /// The values of `t` (its last dimension a whole number of `headDim`-wide heads) in int8 with a scale per row and
    /// block (``group(headDim:)``), or nil when one of them is NaN or infinite.
    public init?(fitting t: Tensor, headDim: Int) {
        precondition(headDim > 0 && (t.shape.last ?? 0) % headDim == 0, "Int8HeadRows: \(t.shape) in heads of \(headDim)")
        guard Self.finite(t) else { return nil }
        shape = t.shape
        width = t.shape.last ?? 0
        rows = width > 0 ? t.count / width : 0
        self.headDim = headDim
        group = Self.group(headDim: headDim)
        data = .allocate(capacity: max(t.count, 1))
        scales = .allocate(capacity: max(rows * (width / group), 1))
        withExtendedLifetime(t) { Self.quantize(t.data, blocks: rows * (width / group), size: group, into: data, scales: scales) }
    }

    deinit { data.deallocate(); scales.deallocate() }

    /// Whether every value of `t` is finite (what int8 rows can hold).
    static func finite(_ t: Tensor) -> Bool {
        withExtendedLifetime(t) { ek_all_within(t.data, t.count, .greatestFiniteMagnitude) != 0 }
    }

    /// `blocks` runs of `size` finite values at `src`, back to back, into int8 runs at `dst` (back to back) and one
    /// scale each (largest |x| / 127; `ek_quantize_rows`' int8 rows).
    static func quantize(_ src: UnsafePointer<Float>, blocks: Int, size: Int, into dst: UnsafeMutablePointer<Int8>,
                         scales: UnsafeMutablePointer<Float>) {
        guard blocks > 0 else { return }
        let rowBytes = ek_quant_row_bytes(Int32(EK_WF_INT8), size)
        if rowBytes == size {   // whole blocks of 32: the quantizer's rows are the runs, back to back
            _ = ek_quantize_rows(Int32(EK_WF_INT8), src, dst, scales, blocks, size)
            return
        }
        // its rows are padded to 32 values: one run at a time through a padded row on the stack (no heap
        // allocation: KV caches quantize every decode step's rows this way)
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: rowBytes) { padded in
            for r in 0..<blocks {
                _ = ek_quantize_rows(Int32(EK_WF_INT8), src + r * size, padded.baseAddress!, scales + r, 1, size)
                (dst + r * size).update(from: padded.baseAddress!, count: size)
            }
        }
    }

    /// The inverse: `blocks` int8 runs of `size` at `src` times their scales into fp32 at `dst`.
    static func dequantize(_ src: UnsafePointer<Int8>, scales: UnsafePointer<Float>, blocks: Int, size: Int,
                           into dst: UnsafeMutablePointer<Float>) {
        guard blocks > 0 else { return }
        if ek_quant_row_bytes(Int32(EK_WF_INT8), size) == size {
            _ = ek_dequantize_rows(Int32(EK_WF_INT8), src, scales, dst, blocks, size)
            return
        }
        for r in 0..<blocks {
            let s = scales[r], from = src + r * size, to = dst + r * size
            for d in 0..<size { to[d] = Float(from[d]) * s }
        }
    }

    /// The values dequantized to fp32 (new memory): int8 · its scale.
    public func widened() -> Tensor {
        let t = Tensor(uninitialized: shape)
        Self.dequantize(data, scales: scales, blocks: rows * scalesPerRow, size: group, into: t.data)
        return t
    }

    /// Bytes held (values and scales).
    public var bytes: Int { rows * width + rows * scalesPerRow * 4 }
}
