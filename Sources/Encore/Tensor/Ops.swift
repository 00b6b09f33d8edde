import Foundation
import EncoreKernels

/// The operations models are written in. Each takes and returns ``Tensor``s and is a pure function of
/// its inputs, so a reverse-mode tape can record it beside its derivative (training builds on these same
/// entry points). Matrix products go to BLAS, everything else to `EncoreKernels`.
///
/// Shape legend: B batch, T/L sequence, C model width, D head width, H heads, V vocabulary.
public enum Ops {
    /// Rows up to which a product is a decode step's: a GEMV streaming each weight once for all rows (`ek_gemv_f32`,
    /// the decode formats' GEMVs); more rows are a prompt pass (GEMM).
    static let decodeRows = 8

    /// y = x · Wᵀ + b. x [M, K], weight [N, K] (PyTorch `Linear` layout), bias [N] → [M, N].
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let k = x.shape.last!, n = weight.shape[0]
        precondition(weight.shape.count == 2 && weight.shape[1] == k, "linear: x \(x.shape) vs weight \(weight.shape)")
        let m = x.count / k
        let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [n])  // [M, N]
        if let bias { precondition(bias.count == n, "linear: bias \(bias.shape) vs \(n) outputs") }
        OpCounter.add(weightBytes: n * k * 4)
        if m <= decodeRows {
            // decode: stream each weight row once for all M inputs, on both cores
            OpCounter.add(flops: 2 * m * n * k)
            ek_gemv_f32(weight.data, x.data, bias?.data, y.data, m, n, k)
        } else {
            var beta: Float = 0
            if let bias {
                for r in 0..<m { (y.data + r * n).update(from: bias.data, count: n) }
                beta = 1
            }
            BLAS.gemm(m: m, n: n, k: k, a: x.data, b: weight.data, transB: true, c: y.data, beta: beta)
        }
        return y
    }

    /// Embedding lookup: table [V, C], ids → [ids.count, C]. Ids must be in range (checked by callers).
    public static func embedding(_ table: Tensor, ids: [Int]) -> Tensor {
        let c = table.shape[1]
        let out = Tensor(uninitialized: [ids.count, c])
        for (i, id) in ids.enumerated() {
            precondition(id >= 0 && id < table.shape[0], "token id \(id) out of range")
            (out.data + i * c).update(from: table.data + id * c, count: c)
        }
        return out
    }

    /// Embedding rows [ids.count, C] from an fp32 table, or dequantized row by row from a table kept in its
    /// quantized blocks (GGUF `--keep-quantized`) when `table` is nil.
    static func embeddingRows(_ table: Tensor?, blocks: QuantizedMatrix?, ids: [Int]) -> Tensor {
        if let table { return embedding(table, ids: ids) }
        return blocks!.dequantizedRows(ids)
    }

    /// RMSNorm over the last dimension, in fp32, eps 1e-6 by default: w * x / sqrt(mean(x²) + eps).
    public static func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float = 1e-6) -> Tensor {
        let c = x.shape.last!
        let out = Tensor(uninitialized: x.shape)
        ek_rmsnorm_f32(x.data, weight.data, out.data, x.count / c, c, eps)
        return out
    }

    /// tanh-approximated GELU, in place on a fresh result.
    public static func geluTanh(_ x: Tensor) -> Tensor {
        let out = x.copy()
        ek_gelu_tanh_f32(out.data, out.count)
        return out
    }

    /// Prompt passes (M > 8) fuse their GEMM epilogues: bias + GELU in one pass over the product, and residual
    /// products accumulated into the stream by the GEMM itself (beta = 1). False runs the separate passes
    /// (bias copy, GEMM, then a GELU pass or an add pass), for A/B measurements (`encore bench --epilogue-ab`).
    nonisolated(unsafe) public static var fusedEpilogues = true

    /// gelu(x · Wᵀ + b): the MLP's first layer; for M > 8 the GEMM writes x·Wᵀ and one pass adds the bias and
    /// applies GELU.
    public static func linearGELU(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let k = x.shape.last!, n = weight.shape[0], m = x.count / k
        guard fusedEpilogues, m > 8 else {
            let y = linear(x, weight: weight, bias: bias)
            ek_gelu_tanh_f32(y.data, y.count)
            return y
        }
        precondition(weight.shape.count == 2 && weight.shape[1] == k, "linear: x \(x.shape) vs weight \(weight.shape)")
        if let bias { precondition(bias.count == n, "linear: bias \(bias.shape) vs \(n) outputs") }
        OpCounter.add(weightBytes: n * k * 4)
        let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [n])   // [M, N]
        BLAS.gemm(m: m, n: n, k: k, a: x.data, b: weight.data, transB: true, c: y.data)
        ek_bias_gelu_tanh_f32(y.data, bias?.data, m, n)
        return y
    }

    /// r += x · Wᵀ + b in place (a residual stream r [M, N]); for M > 8 the bias is added to r and the GEMM
    /// accumulates into it (no product tensor, no add pass).
    public static func linearAccumulate(into r: Tensor, _ x: Tensor, weight: Tensor, bias: Tensor?) {
        let k = x.shape.last!, n = weight.shape[0], m = x.count / k
        precondition(r.count == m * n, "linear: residual \(r.shape) vs [\(m), \(n)]")
        guard fusedEpilogues, m > 8 else {
            addInPlace(r, linear(x, weight: weight, bias: bias))
            return
        }
        precondition(weight.shape.count == 2 && weight.shape[1] == k, "linear: x \(x.shape) vs weight \(weight.shape)")
        OpCounter.add(weightBytes: n * k * 4)
        if let bias {
            precondition(bias.count == n, "linear: bias \(bias.shape) vs \(n) outputs")
            ek_add_bias_f32(r.data, bias.data, m, n)
        }
        BLAS.gemm(m: m, n: n, k: k, a: x.data, b: weight.data, transB: true, c: r.data, beta: 1)
    }

    /// Floats of the scratch ``linearWidened(_:weight:bias:gelu:into:)`` widens weight rows into (16 MiB). Each
    /// tile's GEMM is as wide as the tile holds rows (widenTileFloats / K), and OpenBLAS loses speed on narrow ones:
    /// with 4 MiB, T5-347M's down projection (K = 4,096) ran GEMMs of 256 columns, 128 per thread. 16 MiB holds a
    /// whole 4096 × 1024 matrix, and every tile but a matrix's last holds ≥ 1,024 rows when K ≤ 4,096. Session 23
    /// (AMD EPYC Zen 3, 512 tokens, bf16 weights widened, six / three alternations of two builds): T5-347M first token
    /// 2,344 → 2,143 ms (medians), Llama-362M 3,034 → 2,903, Mu-330M within the noise; peak RSS +5 to +13 MiB.
    static let widenTileFloats = 1 << 22

    /// A prompt pass's product (M > 8 rows) over a matrix kept only in a decode format (bf16, int8 rows, GGUF blocks):
    /// `widenTileFloats / K` weight rows at a time are widened to fp32 into one pooled buffer and multiplied into their
    /// columns of the output (ldc = N), so the scratch is one 16 MiB tile whatever the matrix, instead of a whole fp32
    /// copy per distinct shape held by the buffer pool (Llama-362M's fused gate/up alone: 19.7 MB). The epilogues and
    /// their rounding are ``linear(_:weight:bias:)``'s (the bias first, then the GEMM with beta = 1),
    /// ``linearGELU(_:weight:bias:)``'s (`gelu`) and ``linearAccumulate(into:_:weight:bias:)``'s (`into`: r += x·Wᵀ + b,
    /// returning r). The sums over K are the whole matrix's, but BLAS may block them otherwise for a narrower N:
    /// within 1e-6 of the largest |value| (BF16GEMMTests; OpenBLAS differs in the last bits on multi-tile shapes).
    ///
    /// ```swift
    /// let y = Ops.linearWidened(x, weight: bf16Rows, bias: b)   // [M, N]
    /// ```
    static func linearWidened(_ x: Tensor, weight w: QuantizedMatrix, bias: Tensor?, gelu: Bool = false,
                              into r: Tensor? = nil) -> Tensor {
        let k = x.shape.last!, n = w.rows, m = x.count / k
        precondition(w.columns == k, "linear: x \(x.shape) vs weight [\(n), \(w.columns)]")
        if let bias { precondition(bias.count == n, "linear: bias \(bias.shape) vs \(n) outputs") }
        if let r { precondition(r.count == m * n && !gelu, "linear: residual \(r.shape) vs [\(m), \(n)] (no GELU when accumulating)") }
        OpCounter.add(weightBytes: n * k * 4)
        let y = r ?? Tensor(uninitialized: Array(x.shape.dropLast()) + [n])   // [M, N]
        var beta: Float = 0
        if let bias, !gelu {
            if r != nil { ek_add_bias_f32(y.data, bias.data, m, n) }
            else { for row in 0..<m { (y.data + row * n).update(from: bias.data, count: n) } }
        }
        if r != nil || (bias != nil && !gelu) { beta = 1 }
        let tileRows = max(1, min(n, widenTileFloats / k))
        let tile = Tensor(uninitialized: [max(widenTileFloats, k)])   // one pooled size for every matrix
        withExtendedLifetime(tile) {
            var n0 = 0
            while n0 < n {
                let rows = min(tileRows, n - n0)
                w.dequantizeRows(from: n0, count: rows, into: tile.data)
                BLAS.gemm(m: m, n: rows, k: k, a: x.data, b: tile.data, transB: true, c: y.data + n0, ldc: n, beta: beta)
                n0 += rows
            }
        }
        if gelu { ek_bias_gelu_tanh_f32(y.data, bias?.data, m, n) }
        return y
    }

    /// SwiGLU: silu(gate) ⊙ up, as a new tensor. gate, up [R, F] → [R, F].
    public static func swiGLU(gate: Tensor, up: Tensor) -> Tensor {
        precondition(gate.shape == up.shape, "swiGLU: \(gate.shape) vs \(up.shape)")
        let out = Tensor(uninitialized: gate.shape)
        ek_swiglu_f32(gate.data, up.data, out.data, gate.count)
        return out
    }

    /// gate ← silu(gate) ⊙ up in place (gate must not be shared): a prompt pass keeps one [N, F] buffer fewer than
    /// with ``swiGLU(gate:up:)`` (5 MiB for Llama-362M at 512 tokens).
    static func swiGLUInPlace(gate: Tensor, up: Tensor) {
        precondition(gate.shape == up.shape, "swiGLU: \(gate.shape) vs \(up.shape)")
        ek_swiglu_f32(gate.data, up.data, gate.data, gate.count)
    }

    /// a + b (same shape), as a new tensor.
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "add: \(a.shape) vs \(b.shape)")
        let out = a.copy()
        ek_add_f32(out.data, b.data, out.count)
        return out
    }

    /// a += b in place (a must not be shared); used for residual streams at inference.
    public static func addInPlace(_ a: Tensor, _ b: Tensor) {
        precondition(a.count == b.count, "add: \(a.shape) vs \(b.shape)")
        ek_add_f32(a.data, b.data, a.count)
    }

    /// x ⊙ s in place.
    public static func scaleInPlace(_ x: Tensor, _ s: Float) {
        for i in 0..<x.count { x.data[i] *= s }
    }

    /// Splits the columns of x [R, Σwidths] into tensors [R, widths[i]] (fused projections → their parts).
    public static func splitColumns(_ x: Tensor, widths: [Int]) -> [Tensor] {
        let total = widths.reduce(0, +)
        precondition(x.shape.last == total, "splitColumns: \(x.shape) into \(widths)")
        let rows = x.count / total
        var start = 0
        return widths.map { w in
            let part = Tensor(uninitialized: [rows, w])
            for r in 0..<rows { (part.data + r * w).update(from: x.data + r * total + start, count: w) }
            start += w
            return part
        }
    }

    /// The cos and sin of a pass's rotary angles (positions[r] · invFreq[j]), computed once and shared by every
    /// layer's q and k: the same floats as ``ropeInPlace(_:heads:headDim:positions:invFreq:)`` computes per call.
    ///
    /// ```swift
    /// let table = Ops.RoPETable(positions: positions, invFreq: invFreq)   // before the layers
    /// Ops.ropeInPlace(q, heads: 15, headDim: 64, table: table)            // in each layer
    /// ```
    public struct RoPETable: Sendable {
        public let rows: Int, half: Int
        let cos: [Float], sin: [Float]   // [rows, half]

        public init(positions: [Float], invFreq: [Float]) {
            let rows = positions.count, half = invFreq.count
            var c = [Float](repeating: 0, count: rows * half), s = c
            c.withUnsafeMutableBufferPointer { cp in s.withUnsafeMutableBufferPointer { sp in
                ek_rope_table_f32(positions, rows, invFreq, half, cp.baseAddress, sp.baseAddress)
            } }
            (self.rows, self.half, cos, sin) = (rows, half, c, s)
        }
    }

    /// ``ropeInPlace(_:heads:headDim:positions:invFreq:)`` with the angles of `table` (one row per row of x).
    public static func ropeInPlace(_ x: Tensor, heads: Int, headDim: Int, table: RoPETable) {
        let rows = x.count / (heads * headDim)
        precondition(table.rows == rows && table.half == headDim / 2,
                     "rope: a table of \(table.rows)×\(table.half) angles for \(rows) rows of head width \(headDim)")
        table.cos.withUnsafeBufferPointer { c in table.sin.withUnsafeBufferPointer { s in
            ek_rope_neox_table_f32(x.data, rows, heads, headDim, heads * headDim, c.baseAddress, s.baseAddress)
        } }
    }

    /// Rotary embedding (GPT-NeoX layout) in place on `heads` heads of width `headDim` in each row of x
    /// [R, heads*headDim]; `positions` has one (possibly negative) position per row.
    public static func ropeInPlace(_ x: Tensor, heads: Int, headDim: Int, positions: [Float], invFreq: [Float]) {
        let rows = x.count / (heads * headDim)
        precondition(positions.count == rows, "rope: \(positions.count) positions for \(rows) rows")
        positions.withUnsafeBufferPointer { p in
            invFreq.withUnsafeBufferPointer { f in
                ek_rope_neox_f32(x.data, rows, heads, headDim, heads * headDim, p.baseAddress, f.baseAddress)
            }
        }
    }

    /// Row log-softmax of x [R, V] → [R, V].
    public static func logSoftmax(_ x: Tensor) -> Tensor {
        let v = x.shape.last!
        let out = x.copy()
        for r in 0..<(x.count / v) {
            let row = out.data + r * v
            var mx = -Float.infinity
            for i in 0..<v where row[i] > mx { mx = row[i] }
            var sum: Double = 0
            for i in 0..<v { sum += Double(expf(row[i] - mx)) }
            let lse = mx + Float(log(sum))
            for i in 0..<v { row[i] -= lse }
        }
        return out
    }
}

/// Attention geometry shared by every attention call.
public struct AttentionShape: Sendable {
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// GQA layout: false → query head h reads KV head h mod kvHeads (Mu v1); true → h ÷ (heads/kvHeads).
    public var interleaved: Bool
    public var qWidth: Int { heads * headDim }
    public var kvWidth: Int { kvHeads * headDim }
    public func kvHead(for h: Int) -> Int { interleaved ? h / (heads / kvHeads) : h % kvHeads }
    /// Long queries' products in bf16 (`ek_attention_block_bf16`: vdpbf16ps, fp32 sums and softmax) where the CPU
    /// has AVX512-BF16; set for prompt passes whose projections run the bf16 or int8-row GEMMs
    /// (``Linear/promptRunsNarrow``), as PyTorch's bf16 attention computes. Elsewhere, and for short queries, fp32.
    public var bf16Products = false

    /// This shape with ``bf16Products`` set to `on`.
    public func withBF16Products(_ on: Bool) -> AttentionShape {
        var s = self
        s.bf16Products = on
        return s
    }
}

extension Ops {
    /// Queries per block of a long-query attention (a task of the kernel threads is one head and one block; causal
    /// blocks multiply only the keys they may see).
    static let causalQueryBlock = 128
    /// Queries from which attention takes the BLAS path (``longQueryAttention``); fewer run the fused split-K kernel.
    static let longQueryMinimum = 16

    /// The fused split-K kernel's part shared by every caller (fp32, relative-bias and f16 K/V): sizes `scratch`,
    /// counts the FLOPs and hands the kernel its scratch.
    static func withShortQueryScratch(tq: Int, kvRows: Int, shape: AttentionShape, scratch: inout [Float],
                                      _ kernel: (UnsafeMutablePointer<Float>) -> Void) {
        let need = ek_attention_scratch_floats(tq, kvRows, shape.heads, shape.headDim)
        if scratch.count < need { scratch = [Float](repeating: 0, count: need) }
        OpCounter.add(flops: 4 * tq * kvRows * shape.heads * shape.headDim)   // scores + values
        scratch.withUnsafeMutableBufferPointer { kernel($0.baseAddress!) }
    }

    /// Scaled dot-product attention for one sequence with the Mu reference's masking.
    ///
    /// q [Tq, H*D]; k, v: `kvRows` rows of [*, Hkv*D] starting at the given pointers, `kvStride` floats apart;
    /// keyKeep[s] = 0 masks key s; `causalOffset` ≥ 0 lets query t see keys ≤ t + causalOffset.
    /// Writes [Tq, H*D] into `out` (row stride H*D). Long queries (≥ 16) use BLAS per head and block of queries on the
    /// kernel threads; short ones a fused kernel.
    static func attention(q: UnsafePointer<Float>, tq: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          kvRows: Int, kvStride: Int, out: UnsafeMutablePointer<Float>, shape: AttentionShape,
                          keyKeep: UnsafePointer<UInt8>?, causalOffset: Int, scratch: inout [Float]) {
        let scaleDiv = Float(Double(shape.headDim).squareRoot())
        if tq >= longQueryMinimum {
            longQueryAttention(q: q, tq: tq, k: k, v: v, kvRows: kvRows, kvStride: kvStride, out: out, shape: shape,
                               keyKeep: keyKeep, causalOffset: causalOffset, scaleDiv: scaleDiv, bias: nil,
                               scratch: &scratch)
        } else {
            withShortQueryScratch(tq: tq, kvRows: kvRows, shape: shape, scratch: &scratch) { s in
                ek_attention_f32(q, shape.qWidth, k, kvStride, v, kvStride, out, shape.qWidth, tq, kvRows,
                                 shape.heads, shape.kvHeads, shape.headDim, shape.interleaved ? 1 : 0,
                                 keyKeep, causalOffset, scaleDiv, s)
            }
        }
    }
}

/// One long-query attention call (``Ops/attention(q:tq:k:v:kvRows:kvStride:out:shape:keyKeep:causalOffset:scratch:)``
/// or the relative-bias one) for the kernel threads: a task is one (head, block of queries).
private struct LongQueryJob {
    var q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>
    var tq: Int, kvRows: Int, kvStride: Int
    var shape: AttentionShape
    var keyKeep: UnsafePointer<UInt8>?
    var causalOffset: Int
    var firstKept: Int                      // first key not masked by keyKeep (kvRows if none)
    var scaleDiv: Float
    var bias: UnsafePointer<Float>?         // [H, tq + kvRows − 1] relative bias, or nil
    var blocks: Int                         // query blocks per head
    var scratch: UnsafeMutablePointer<Float>?  // [thread slots, causalQueryBlock × kvRows] (the fp32 path's)

    /// Task `index`'s head and block of queries: the last query blocks first (under a causal mask they see the most
    /// keys, so the threads claim the longest tasks first and finish together; each task writes its own outputs).
    func block(_ index: Int) -> QueryBlock {
        let h = index % shape.heads
        let t0 = (blocks - 1 - index / shape.heads) * Ops.causalQueryBlock, bq = min(Ops.causalQueryBlock, tq - t0)
        // bias[h, tq − 1 + c − t] with t = t0 + r: the block's rows as the kernels' own (ek_add_relbias_f32)
        return QueryBlock(head: h, kvHead: shape.kvHead(for: h), t0: t0, rows: bq,
                          visible: Ops.visibleKeys(t0: t0, bq: bq, kvRows: kvRows, causalOffset: causalOffset,
                                                   firstKept: firstKept),
                          biasRow: bias.map { $0 + h * (tq + kvRows - 1) + (tq - bq - t0) },
                          causalOffset: causalOffset >= 0 ? causalOffset + t0 : causalOffset)
    }
}

/// The (head, block of queries) one long-query attention task covers.
private struct QueryBlock {
    let head: Int, kvHead: Int, t0: Int, rows: Int
    let visible: Int                        // keys it multiplies (``Ops/visibleKeys``)
    let biasRow: UnsafePointer<Float>?      // its rows of the relative bias, or nil
    let causalOffset: Int                   // the causal offset of its first row (negative: none)
}

extension Ops {
    /// Keys query block [t0, t0 + bq) multiplies: causal blocks stop after the last key their last query may see;
    /// a block holding a row with no visible key (left padding) keeps all keys, as the reference makes such a row
    /// uniform over every key.
    fileprivate static func visibleKeys(t0: Int, bq: Int, kvRows: Int, causalOffset: Int, firstKept: Int) -> Int {
        causalOffset >= 0 && firstKept <= t0 + causalOffset ? min(kvRows, t0 + bq + causalOffset) : kvRows
    }

    private static let longQueryTask: ek_task_fn = { ctx, index, _ in
        let j = ctx!.assumingMemoryBound(to: LongQueryJob.self).pointee
        let s = j.shape, b = j.block(index), bq = b.rows, visible = b.visible
        let scores = j.scratch! + Int(ek_thread_slot()) * causalQueryBlock * j.kvRows   // [bq, visible]
        BLAS.gemmOnThisThread(m: bq, n: visible, k: s.headDim, a: j.q + b.t0 * s.qWidth + b.head * s.headDim,
                              lda: s.qWidth, b: j.k + b.kvHead * s.headDim, ldb: j.kvStride, transB: true, c: scores,
                              ldc: visible)
        if let biasRow = b.biasRow { ek_add_relbias_f32(scores, bq, visible, visible, biasRow) }
        ek_softmax_masked_f32(scores, bq, visible, visible, j.scaleDiv, j.keyKeep, b.causalOffset)
        BLAS.gemmOnThisThread(m: bq, n: s.headDim, k: visible, a: scores, lda: visible, b: j.v + b.kvHead * s.headDim,
                              ldb: j.kvStride, transB: false, c: j.out + b.t0 * s.qWidth + b.head * s.headDim,
                              ldc: s.qWidth)
    }

    /// Long queries (tq ≥ 16): per head and block of ≤ ``causalQueryBlock`` queries, scores = Q Kᵀ (BLAS, one thread),
    /// (+ relative bias), masked softmax, out = P V (BLAS); the (head, block) tasks are claimed by the kernel threads,
    /// last block first, each with its own block of scores. Causal blocks multiply only the keys they may see (62% of the square at 512
    /// tokens, 53% at 4096).
    fileprivate static func longQueryAttention(q: UnsafePointer<Float>, tq: Int, k: UnsafePointer<Float>,
                                               v: UnsafePointer<Float>, kvRows: Int, kvStride: Int,
                                               out: UnsafeMutablePointer<Float>, shape: AttentionShape,
                                               keyKeep: UnsafePointer<UInt8>?, causalOffset: Int, scaleDiv: Float,
                                               bias: UnsafePointer<Float>?, scratch: inout [Float]) {
        var firstKept = 0
        if let keyKeep { while firstKept < kvRows && keyKeep[firstKept] == 0 { firstKept += 1 } }
        let blocks = (tq + causalQueryBlock - 1) / causalQueryBlock
        var flops = 0
        for b in 0..<blocks {
            let t0 = b * causalQueryBlock, bq = min(causalQueryBlock, tq - t0)
            flops += 4 * bq * visibleKeys(t0: t0, bq: bq, kvRows: kvRows, causalOffset: causalOffset,
                                          firstKept: firstKept) * shape.headDim
        }
        OpCounter.add(flops: flops * shape.heads)   // scores + values
        var job = LongQueryJob(q: q, k: k, v: v, out: out, tq: tq, kvRows: kvRows, kvStride: kvStride, shape: shape,
                               keyKeep: keyKeep, causalOffset: causalOffset, firstKept: firstKept,
                               scaleDiv: scaleDiv, bias: bias, blocks: blocks, scratch: nil)
        if shape.bf16Products && ek_attn_bf16_available() != 0 {
            bf16LongQueryAttention(job)
            return
        }
        let slots = Int(ek_thread_slots()), perSlot = causalQueryBlock * kvRows
        if scratch.count < slots * perSlot { scratch = [Float](repeating: 0, count: slots * perSlot) }
        scratch.withUnsafeMutableBufferPointer { sp in
            job.scratch = sp.baseAddress!
            withUnsafeMutablePointer(to: &job) { ek_parallel_for(shape.heads * blocks, longQueryTask, $0) }
        }
    }
}

/// A long-query attention call with bf16 products (``AttentionShape/bf16Products``): every KV head's keys and values
/// packed once (`ek_attn_bf16_pack`), then one task per (head, block of queries) as the fp32 path's.
private struct BF16LongQueryJob {
    var job: LongQueryJob
    var packedK: UnsafePointer<UInt16>, packedV: UnsafePointer<UInt16>, packedLength: Int   // per KV head
}

extension Ops {
    private static let bf16LongQueryTask: ek_task_fn = { ctx, index, _ in
        let p = ctx!.assumingMemoryBound(to: BF16LongQueryJob.self).pointee
        let j = p.job, s = j.shape, b = j.block(index), g = b.kvHead
        let status = ek_attention_block_bf16(j.q + b.t0 * s.qWidth + b.head * s.headDim, s.qWidth, b.rows,
                                             p.packedK + g * p.packedLength, p.packedV + g * p.packedLength, j.kvRows,
                                             b.visible, s.headDim, b.biasRow, j.scaleDiv, j.keyKeep, b.causalOffset,
                                             j.out + b.t0 * s.qWidth + b.head * s.headDim, s.qWidth)
        precondition(status == 0, "ek_attention_block_bf16: status \(status) (out of memory)")
    }

    /// ``longQueryAttention`` with bf16 products: the same tasks and masks, scores and outputs from
    /// `ek_attention_block_bf16` over keys and values packed once per call.
    fileprivate static func bf16LongQueryAttention(_ job: LongQueryJob) {
        let shape = job.shape, length = ek_attn_bf16_packed_len(job.kvRows, shape.headDim)
        let packed = UnsafeMutablePointer<UInt16>.allocate(capacity: 2 * shape.kvHeads * length)   // K then V
        defer { packed.deallocate() }
        let kPacked = packed, vPacked = packed + shape.kvHeads * length
        let packStatus = ek_attn_bf16_pack(job.k, job.v, job.kvStride, job.kvRows, shape.kvHeads, shape.headDim,
                                           kPacked, vPacked)
        precondition(packStatus == 0, "ek_attn_bf16_pack: \(job.kvRows) keys, \(shape.kvHeads) heads of \(shape.headDim)")
        var bf16Job = BF16LongQueryJob(job: job, packedK: kPacked, packedV: vPacked, packedLength: length)
        withUnsafeMutablePointer(to: &bf16Job) { ek_parallel_for(shape.heads * job.blocks, bf16LongQueryTask, $0) }
    }
}

extension Ops {
    /// Attention with unscaled scores and an additive relative-position bias (T5), for one sequence.
    ///
    /// As ``Ops/attention(q:tq:k:v:kvRows:kvStride:out:shape:keyKeep:causalOffset:scratch:)`` but
    /// score(t, s) = q_t·k_s + bias[h, tq − 1 + s − t] (no 1/√D). `bias`: [H, tq + kvRows − 1] floats (the caller
    /// looks up the buckets), or nil for none (T5 cross-attention). Writes [Tq, H*D] into `out`.
    static func relativeBiasAttention(q: UnsafePointer<Float>, tq: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                      kvRows: Int, kvStride: Int, out: UnsafeMutablePointer<Float>, shape: AttentionShape,
                                      keyKeep: UnsafePointer<UInt8>?, causalOffset: Int, bias: UnsafePointer<Float>?,
                                      scratch: inout [Float]) {
        let biasStride = tq + kvRows - 1
        if tq >= longQueryMinimum {
            longQueryAttention(q: q, tq: tq, k: k, v: v, kvRows: kvRows, kvStride: kvStride, out: out, shape: shape,
                               keyKeep: keyKeep, causalOffset: causalOffset, scaleDiv: 1, bias: bias,
                               scratch: &scratch)
        } else {
            withShortQueryScratch(tq: tq, kvRows: kvRows, shape: shape, scratch: &scratch) { s in
                ek_attention_relbias_f32(q, shape.qWidth, k, kvStride, v, kvStride, out, shape.qWidth, tq, kvRows,
                                         shape.heads, shape.kvHeads, shape.headDim, shape.interleaved ? 1 : 0,
                                         keyKeep, causalOffset, bias, biasStride, s)
            }
        }
    }

    /// max(x, 0), as a new tensor (T5 v1.0's MLP activation).
    public static func relu(_ x: Tensor) -> Tensor {
        let out = Tensor(uninitialized: x.shape)
        for i in 0..<x.count { out.data[i] = max(x.data[i], 0) }
        return out
    }

    /// x = max(x, 0) in place.
    public static func reluInPlace(_ x: Tensor) {
        let p = x.data
        for i in 0..<x.count { p[i] = max(p[i], 0) }
    }
}

// MARK: derivatives
//
// The backward half of the ops above, used by the reverse-mode tape (Autograd/Variable.swift). Each takes the
// gradient of the loss with respect to the op's output and returns the gradients of its inputs.
extension Ops {
    /// y = x·Wᵀ + b  ⇒  dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.   x [M, K], W [N, K], dy [M, N].
    public static func linearBackward(_ dy: Tensor, x: Tensor, weight: Tensor, needBias: Bool) -> (dx: Tensor, dw: Tensor, db: Tensor?) {
        let k = x.shape.last!, n = weight.shape[0], m = x.count / k
        let dx = Tensor(uninitialized: x.shape)
        BLAS.gemm(m: m, n: k, k: n, a: dy.data, b: weight.data, transB: false, c: dx.data)
        let dw = Tensor(zeros: weight.shape)
        // dW[N, K] = dyᵀ[N, M] · x[M, K]
        cblasGemmTransA(m: n, n: k, k: m, a: dy.data, lda: n, b: x.data, ldb: k, c: dw.data, ldc: k)
        var db: Tensor? = nil
        if needBias {
            let g = Tensor(zeros: [n])
            for r in 0..<m { ek_add_f32(g.data, dy.data + r * n, n) }
            db = g
        }
        return (dx, dw, db)
    }

    /// y = w ⊙ x / rms(x)  ⇒  with r = 1/rms, x̂ = x·r:  dx = r·(dy⊙w − x̂·mean(dy⊙w⊙x̂)), dw = Σ_rows dy⊙x̂.
    public static func rmsNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor, eps: Float = 1e-6) -> (dx: Tensor, dw: Tensor) {
        let c = x.shape.last!, rows = x.count / c
        let dx = Tensor(uninitialized: x.shape), dw = Tensor(zeros: [c])
        for r in 0..<rows {
            let xr = x.data + r * c, gr = dy.data + r * c, out = dx.data + r * c
            var ss: Double = 0
            for i in 0..<c { ss += Double(xr[i]) * Double(xr[i]) }
            let inv = Float(1 / (ss / Double(c) + Double(eps)).squareRoot())
            var dot: Double = 0
            for i in 0..<c { dot += Double(gr[i] * weight.data[i] * xr[i] * inv) }
            let mean = Float(dot / Double(c))
            for i in 0..<c {
                let xhat = xr[i] * inv
                out[i] = inv * (gr[i] * weight.data[i] - xhat * mean)
                dw.data[i] += gr[i] * xhat
            }
        }
        return (dx, dw)
    }

    /// d gelu_tanh(x)/dx · dy.
    public static func geluTanhBackward(_ dy: Tensor, x: Tensor) -> Tensor {
        precondition(dy.count == x.count, "geluTanhBackward: \(dy.shape) vs \(x.shape)")
        let dx = Tensor(uninitialized: x.shape)
        ek_gelu_tanh_backward_f32(x.data, dy.data, dx.data, x.count)
        return dx
    }

    /// Scatter-adds rows of dy [ids.count, C] into a [V, C] gradient of the embedding table.
    public static func embeddingBackward(_ dy: Tensor, ids: [Int], vocab: Int) -> Tensor {
        let c = dy.shape.last!
        let g = Tensor(zeros: [vocab, c])
        for (i, id) in ids.enumerated() { ek_add_f32(g.data + id * c, dy.data + i * c, c) }
        return g
    }

    /// Mean cross-entropy of logits [R, V] against targets (entries equal to `ignoreIndex` are skipped, as
    /// PyTorch's `ignore_index`), and its gradient with respect to the logits.
    public static func crossEntropy(_ logits: Tensor, targets: [Int], ignoreIndex: Int? = nil) -> (loss: Float, dlogits: Tensor) {
        let v = logits.shape.last!, rows = logits.count / v
        precondition(targets.count == rows, "crossEntropy: \(targets.count) targets for \(rows) rows")
        precondition(targets.allSatisfy { $0 == ignoreIndex || ($0 >= 0 && $0 < v) }, "crossEntropy: target outside 0..<\(v)")
        let counted = targets.filter { $0 != ignoreIndex }.count
        let grad = Tensor(uninitialized: logits.shape)
        guard counted > 0 else { grad.data.update(repeating: 0, count: grad.count); return (0, grad) }
        let rowTargets = targets.map { $0 == ignoreIndex ? -1 : $0 }
        var losses = [Double](repeating: 0, count: rows)
        ek_cross_entropy_f32(logits.data, rowTargets, rows, v, 1 / Float(counted), grad.data, &losses)
        return (Float(losses.reduce(0, +) / Double(counted)), grad)
    }
}

/// C[M, N] = Aᵀ · B with A stored [K, M] (row-major, leading dimension lda) and B [K, N].
func cblasGemmTransA(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     c: UnsafeMutablePointer<Float>, ldc: Int) {
    BLAS.gemmTransA(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc)
}

// MARK: training ops (forward with saved state, and their derivatives)
extension Ops {
    /// Rotary embedding (``ropeInPlace(_:heads:headDim:positions:invFreq:)``) on a copy of x [R, heads*headDim].
    public static func rope(_ x: Tensor, heads: Int, headDim: Int, positions: [Float], invFreq: [Float]) -> Tensor {
        let y = x.copy()
        ropeInPlace(y, heads: heads, headDim: headDim, positions: positions, invFreq: invFreq)
        return y
    }

    /// Derivative of ``rope(_:heads:headDim:positions:invFreq:)``: each (j, j + D/2) pair is rotated by an
    /// orthogonal 2×2 matrix, whose transpose is the rotation by −angle, i.e. RoPE at the negated positions
    /// (cosf/sinf are even/odd exactly, so this is the exact transpose of the forward rotation).
    public static func ropeBackward(_ dy: Tensor, heads: Int, headDim: Int, positions: [Float], invFreq: [Float]) -> Tensor {
        rope(dy, heads: heads, headDim: headDim, positions: positions.map { -$0 }, invFreq: invFreq)
    }

    /// Batched attention that keeps its probabilities for ``attentionBackward(_:q:k:v:probs:batch:shape:keyKeep:causal:)``,
    /// with the Mu reference's masking and GQA mapping (``AttentionShape/kvHead(for:)``).
    ///
    /// q [B*Tq, H*D]; k, v [B*Tk, Hkv*D]; keyKeep [B*Tk] (0 masks key s of its row); `causal`: query t sees keys
    /// ≤ t. Returns out [B*Tq, H*D] and P [B, H, Tq, Tk] = softmax(mask(Q Kᵀ) / √D).
    ///
    /// `dropMask` [B, H, Tq, Tk] (entries 0 or 1/(1−p), ``dropoutMask(count:p:rng:)``) applies the reference's
    /// attention dropout: out = (P ⊙ M) V. P is returned before the mask.
    public static func attentionForTraining(q: Tensor, k: Tensor, v: Tensor, batch B: Int, shape: AttentionShape,
                                            keyKeep: [UInt8], causal: Bool, dropMask: Tensor? = nil) -> (out: Tensor, probs: Tensor) {
        let (qW, kvW, D, H) = (shape.qWidth, shape.kvWidth, shape.headDim, shape.heads)
        let tq = q.count / (B * qW), tk = k.count / (B * kvW)
        precondition(q.count == B * tq * qW && k.count == B * tk * kvW && v.count == k.count, "attention: q \(q.shape) k \(k.shape) v \(v.shape)")
        precondition(keyKeep.count == B * tk, "attention: \(keyKeep.count) key flags for \(B * tk) keys")
        let scaleDiv = Float(Double(D).squareRoot())
        let out = Tensor(uninitialized: [B * tq, qW])
        let probs = Tensor(uninitialized: [B, H, tq, tk])
        if let dropMask { precondition(dropMask.count == probs.count, "attention: dropout mask \(dropMask.shape) for \(probs.shape)") }
        let dropped = UnsafeMutablePointer<Float>.allocate(capacity: dropMask == nil ? 1 : tq * tk)   // [Tq, Tk]
        defer { dropped.deallocate() }
        withExtendedLifetime((q, k, v, dropMask)) { keyKeep.withUnsafeBufferPointer { kp in
            for b in 0..<B {
                for h in 0..<H {
                    let g = shape.kvHead(for: h)
                    let p = probs.data + (b * H + h) * tq * tk                        // [Tq, Tk]
                    BLAS.gemm(m: tq, n: tk, k: D, a: q.data + b * tq * qW + h * D, lda: qW,
                              b: k.data + b * tk * kvW + g * D, ldb: kvW, transB: true, c: p, ldc: tk)
                    ek_softmax_masked_f32(p, tq, tk, tk, scaleDiv, kp.baseAddress! + b * tk, causal ? 0 : -1)
                    var pv = UnsafePointer(p)
                    if let dropMask {                                                 // P ⊙ M into scratch
                        let m = dropMask.data + (b * H + h) * tq * tk
                        for i in 0..<(tq * tk) { dropped[i] = p[i] * m[i] }
                        pv = UnsafePointer(dropped)
                    }
                    BLAS.gemm(m: tq, n: D, k: tk, a: pv, lda: tk, b: v.data + b * tk * kvW + g * D, ldb: kvW,
                              transB: false, c: out.data + b * tq * qW + h * D, ldc: qW)
                }
            }
        } }
        return (out, probs)
    }

    /// Derivative of ``attentionForTraining(q:k:v:batch:shape:keyKeep:causal:)``. Per batch row and head, with
    /// P the saved probabilities and dO the output gradient:
    ///   dV_g += Pᵀ dO_h;  dP = dO_h V_gᵀ;  dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √D, 0 where masked
    ///   (the reference's `masked_fill` passes no gradient, even to a fully masked row's uniform weights);
    ///   dQ_h = dS K_g;  dK_g += dSᵀ Q_h.   KV heads shared by several query heads accumulate.
    /// With a dropout mask M: dV_g += (P ⊙ M)ᵀ dO_h and dP = (dO_h V_gᵀ) ⊙ M.
    public static func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, probs: Tensor, batch B: Int,
                                         shape: AttentionShape, keyKeep: [UInt8], causal: Bool,
                                         dropMask: Tensor? = nil) -> (dq: Tensor, dk: Tensor, dv: Tensor) {
        let (qW, kvW, D, H) = (shape.qWidth, shape.kvWidth, shape.headDim, shape.heads)
        let tq = q.count / (B * qW), tk = k.count / (B * kvW)
        let scaleDiv = Float(Double(D).squareRoot())
        let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
        var dS = [Float](repeating: 0, count: tq * tk)                                // [Tq, Tk]
        let dropped = UnsafeMutablePointer<Float>.allocate(capacity: dropMask == nil ? 1 : tq * tk)   // P ⊙ M, [Tq, Tk]
        defer { dropped.deallocate() }
        withExtendedLifetime((dOut, q, k, v, probs, dropMask)) { dS.withUnsafeMutableBufferPointer { sb in
            let ds = sb.baseAddress!
            for b in 0..<B {
                for h in 0..<H {
                    let g = shape.kvHead(for: h)
                    let p = probs.data + (b * H + h) * tq * tk
                    let dOh = dOut.data + b * tq * qW + h * D, qh = q.data + b * tq * qW + h * D
                    let kg = k.data + b * tk * kvW + g * D, vg = v.data + b * tk * kvW + g * D
                    var pv = UnsafePointer(p)
                    let m = dropMask.map { $0.data + (b * H + h) * tq * tk }
                    if let m {
                        for i in 0..<(tq * tk) { dropped[i] = p[i] * m[i] }
                        pv = UnsafePointer(dropped)
                    }
                    BLAS.gemmTransA(m: tk, n: D, k: tq, a: pv, lda: tk, b: dOh, ldb: qW,
                                    c: dv.data + b * tk * kvW + g * D, ldc: kvW, beta: 1)
                    BLAS.gemm(m: tq, n: tk, k: D, a: dOh, lda: qW, b: vg, ldb: kvW, transB: true, c: ds, ldc: tk)
                    if let m { for i in 0..<(tq * tk) { ds[i] *= m[i] } }
                    for r in 0..<tq {
                        let pr = p + r * tk, dr = ds + r * tk
                        var dot: Double = 0
                        for c in 0..<tk { dot += Double(pr[c]) * Double(dr[c]) }
                        let d = Float(dot)
                        for c in 0..<tk {
                            let allowed = keyKeep[b * tk + c] != 0 && (!causal || c <= r)
                            dr[c] = allowed ? pr[c] * (dr[c] - d) / scaleDiv : 0
                        }
                    }
                    BLAS.gemm(m: tq, n: D, k: tk, a: ds, lda: tk, b: kg, ldb: kvW, transB: false,
                              c: dq.data + b * tq * qW + h * D, ldc: qW)
                    BLAS.gemmTransA(m: tk, n: D, k: tq, a: ds, lda: tk, b: qh, ldb: qW,
                                    c: dk.data + b * tk * kvW + g * D, ldc: kvW, beta: 1)
                }
            }
        } }
        return (dq, dk, dv)
    }

    /// The distillation term of the reference `KDModel.forward_kd`: teacher logits [B, Tt, Vt] sliced to
    /// positions `offset ..< offset + T` (offset = encoder_seq_len − 1), both vocabularies cut to min(Vs, Vt),
    /// then `F.kl_div(log_softmax(student), log_softmax(teacher), reduction="batchmean", log_target=True)`
    /// = Σ p_t·(log p_t − log p_s) / (B·T), over every position (padding included, as the reference).
    /// Returns the loss and its gradient with respect to the student logits [B, T, Vs]:
    /// (softmax(student) − p_t) / (B·T) on the shared columns, 0 beyond them.
    public static func distillationKL(student: Tensor, teacher: Tensor, offset: Int) -> (loss: Float, dstudent: Tensor) {
        distillationKL(student: student, studentOffsets: nil, positions: student.shape[1],
                       teacher: .logits(teacher, offset: offset), temperature: 1)
    }

    /// The distillation term over `positions` T positions per row, generalised:
    ///
    /// - student logits [B, Ts, Vs], row b read from `studentOffsets[b]` (nil: 0) — an encoder-decoder's decoder
    ///   positions, or a decoder-only student's `source ‖ target` row from its last source position;
    /// - the teacher either as logits [B, Tt, Vt] read from `offset` (``TeacherDistribution/logits(_:offset:)``),
    ///   or as top-k log-probabilities per row (``TeacherDistribution/topK(_:)``, see ``TeacherTopK``);
    /// - temperature τ: both distributions softened, p = softmax(t/τ), q = softmax(s/τ), and the KL scaled by τ²
    ///   (Hinton et al.; keeps the gradient's size comparable across τ), so τ = 1 is the reference exactly:
    ///   loss = τ²·Σ KL(p‖q) / (B·T), d loss / d s = τ·(q − p) / (B·T).
    ///
    /// With top-k the teacher's distribution is the k kept entries plus one bucket for the rest of its mass
    /// (`tail` = log(1 − Σ_k p)), compared with the student's probabilities on the same k entries and the
    /// student's own mass outside them: the exact KL between the two distributions coarsened to k + 1 outcomes,
    /// a lower bound of the full KL, equal to it when k covers the vocabulary. Its gradient is
    /// q_j − p_j on the k entries and q_j·(1 − p_tail/q_tail) elsewhere (times τ / (B·T)).
    public static func distillationKL(student: Tensor, studentOffsets: [Int]?, positions T: Int, teacher: TeacherDistribution,
                                      temperature tau: Float) -> (loss: Float, dstudent: Tensor) {
        precondition(student.shape.count == 3, "distillation: student logits \(student.shape) are not [B, T, V]")
        let (B, ts, vs) = (student.shape[0], student.shape[1], student.shape[2])
        let offsets = studentOffsets ?? [Int](repeating: 0, count: B)
        precondition(offsets.count == B && offsets.allSatisfy { $0 >= 0 && $0 + T <= ts }, "distillation: student offsets \(offsets) + \(T) out of \(ts)")
        precondition(tau > 0 && tau.isFinite, "distillation: temperature must be > 0")
        let n = B * T
        let grad = Tensor(zeros: student.shape)
        var total: Double = 0
        let gscale = tau / Float(n)                         // τ² · (1/τ) / N
        switch teacher {
        case .logits(let t, let offset):
            precondition(t.shape.count == 3 && t.shape[0] == B, "distillation: student \(student.shape) vs teacher \(t.shape)")
            let (tt, vt) = (t.shape[1], t.shape[2])
            precondition(offset >= 0 && offset + T <= tt, "distillation: teacher positions \(offset)..<\(offset + T) out of \(tt)")
            let v = min(vs, vt)
            var ls = [Float](repeating: 0, count: v), lt = [Float](repeating: 0, count: v)
            for b in 0..<B {
                for i in 0..<T {
                    logSoftmaxRow(student.data + (b * ts + offsets[b] + i) * vs, count: v, scale: 1 / tau, into: &ls)
                    logSoftmaxRow(t.data + (b * tt + offset + i) * vt, count: v, scale: 1 / tau, into: &lt)
                    let g = grad.data + (b * ts + offsets[b] + i) * vs
                    var row: Double = 0
                    for j in 0..<v {
                        let pt = expf(lt[j])
                        row += Double(pt) * Double(lt[j] - ls[j])
                        g[j] = (expf(ls[j]) - pt) * gscale
                    }
                    total += row
                }
            }
        case .topK(let rows):
            precondition(rows.count == B, "distillation: \(rows.count) teacher rows for a batch of \(B)")
            var ls = [Float](repeating: 0, count: vs)
            var inK = [Bool](repeating: false, count: vs)
            for b in 0..<B {
                let r = rows[b]
                precondition(r.positions >= T, "distillation: teacher row \(b) has \(r.positions) positions, need \(T)")
                precondition(r.vocabulary <= vs, "distillation: teacher top-k over \(r.vocabulary) ids, student has \(vs)")
                let v = r.vocabulary
                for i in 0..<T {
                    logSoftmaxRow(student.data + (b * ts + offsets[b] + i) * vs, count: v, scale: 1 / tau, into: &ls)
                    let g = grad.data + (b * ts + offsets[b] + i) * vs
                    let ids = r.indices[(i * r.k)..<((i + 1) * r.k)], lps = r.logprobs[(i * r.k)..<((i + 1) * r.k)]
                    for id in ids { inK[id] = true }
                    var row: Double = 0
                    for (id, lp) in zip(ids, lps) { row += Double(expf(lp)) * Double(lp - ls[id]) }
                    let tail = r.tail[i]
                    if tail > -Float.infinity {
                        // log q_tail = logsumexp of the student's log-probs outside the k entries
                        var mx = -Float.infinity
                        for j in 0..<v where !inK[j] && ls[j] > mx { mx = ls[j] }
                        var sum: Double = 0
                        for j in 0..<v where !inK[j] { sum += Double(expf(ls[j] - mx)) }
                        let logQTail = mx + Float(log(sum))
                        let pTail = expf(tail)
                        row += Double(pTail) * Double(tail - logQTail)
                        for j in 0..<v where !inK[j] { g[j] = (expf(ls[j]) - pTail * expf(ls[j] - logQTail)) * gscale }
                    } else {
                        for j in 0..<v where !inK[j] { g[j] = expf(ls[j]) * gscale }
                    }
                    for (id, lp) in zip(ids, lps) { g[id] = (expf(ls[id]) - expf(lp)) * gscale }
                    for id in ids { inK[id] = false }
                    total += row
                }
            }
        }
        return (Float(Double(tau * tau) * total / Double(n)), grad)
    }

    /// log_softmax(scale · x[0..<count]) into `out` (max-shifted, the sum in double, as ``logSoftmax(_:)``).
    static func logSoftmaxRow(_ x: UnsafePointer<Float>, count v: Int, scale: Float, into out: inout [Float]) {
        var mx = -Float.infinity
        for i in 0..<v { let y = x[i] * scale; out[i] = y; if y > mx { mx = y } }
        var sum: Double = 0
        for i in 0..<v { sum += Double(expf(out[i] - mx)) }
        let lse = mx + Float(log(sum))
        for i in 0..<v { out[i] -= lse }
    }

    /// The k most probable entries of log_softmax(scale · x[0..<count]) in descending order (ties: lower id first),
    /// and the log of the probability mass outside them (−∞ when k covers every entry).
    static func topKLogProbs(_ x: UnsafePointer<Float>, count v: Int, k: Int, scale: Float, scratch: inout [Float])
        -> (ids: [Int], logprobs: [Float], tail: Float) {
        if scratch.count < v { scratch = [Float](repeating: 0, count: v) }
        logSoftmaxRow(x, count: v, scale: scale, into: &scratch)
        let kk = min(k, v)
        // a min-heap of the best kk (value, id), smallest at the root
        var heap: [(Float, Int)] = []
        heap.reserveCapacity(kk)
        func worse(_ a: (Float, Int), _ b: (Float, Int)) -> Bool { a.0 < b.0 || (a.0 == b.0 && a.1 > b.1) }
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && worse(heap[l], heap[m]) { m = l }
                if r < heap.count && worse(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m); i = m
            }
        }
        for j in 0..<v {
            let e = (scratch[j], j)
            if heap.count < kk {
                heap.append(e)
                var i = heap.count - 1
                while i > 0 { let p = (i - 1) / 2; if worse(heap[i], heap[p]) { heap.swapAt(i, p); i = p } else { break } }
            } else if worse(heap[0], e) {
                heap[0] = e; siftDown(0)
            }
        }
        let best = heap.sorted { worse($1, $0) }
        guard kk < v else { return (best.map(\.1), best.map(\.0), -Float.infinity) }
        var kept = [Bool](repeating: false, count: v)
        for (_, id) in best { kept[id] = true }
        var mx = -Float.infinity
        for j in 0..<v where !kept[j] && scratch[j] > mx { mx = scratch[j] }
        var sum: Double = 0
        for j in 0..<v where !kept[j] { sum += Double(expf(scratch[j] - mx)) }
        return (best.map(\.1), best.map(\.0), mx + Float(log(sum)))
    }
}

/// The teacher's side of the distillation KL (``Ops/distillationKL(student:studentOffsets:positions:teacher:temperature:)``).
public enum TeacherDistribution {
    /// Teacher logits [B, Tt, Vt], read from position `offset` of each row.
    case logits(Tensor, offset: Int)
    /// The teacher's top-k log-probabilities, one ``TeacherTopK`` per row.
    case topK([TeacherTopK])
}

/// A teacher's k most probable next tokens at each of `positions` positions of one example, at the distillation
/// temperature, over the vocabulary cut to `vocabulary` ids, with the log of the mass outside them.
public struct TeacherTopK: Equatable, Sendable {
    public var k: Int, positions: Int, vocabulary: Int
    /// [positions · k] ids and their log-probabilities, most probable first at each position.
    public var indices: [Int], logprobs: [Float]
    /// [positions] log(1 − Σ_k p); −∞ when k covers the vocabulary.
    public var tail: [Float]

    public init(k: Int, positions: Int, vocabulary: Int, indices: [Int], logprobs: [Float], tail: [Float]) {
        precondition(indices.count == k * positions && logprobs.count == k * positions && tail.count == positions, "TeacherTopK sizes")
        (self.k, self.positions, self.vocabulary, self.indices, self.logprobs, self.tail) = (k, positions, vocabulary, indices, logprobs, tail)
    }

    /// The top-k of teacher logits [T, Vt] (positions in rows), vocabulary cut to `vocabulary`, at `temperature`.
    public init(logits: Tensor, k: Int, vocabulary: Int, temperature: Float) {
        precondition(logits.shape.count == 2 && vocabulary <= logits.shape[1], "TeacherTopK: logits \(logits.shape)")
        let (T, vt) = (logits.shape[0], logits.shape[1])
        let kk = min(k, vocabulary)
        var ids: [Int] = [], lps: [Float] = [], tails: [Float] = [], scratch: [Float] = []
        for t in 0..<T {
            let r = Ops.topKLogProbs(logits.data + t * vt, count: vocabulary, k: kk, scale: 1 / temperature, scratch: &scratch)
            ids += r.ids; lps += r.logprobs; tails.append(r.tail)
        }
        self.init(k: kk, positions: T, vocabulary: vocabulary, indices: ids, logprobs: lps, tail: tails)
    }

    /// The first `n` positions.
    public func prefix(_ n: Int) -> TeacherTopK {
        precondition(n <= positions)
        return TeacherTopK(k: k, positions: n, vocabulary: vocabulary, indices: Array(indices.prefix(n * k)),
                           logprobs: Array(logprobs.prefix(n * k)), tail: Array(tail.prefix(n)))
    }
}

// MARK: dropout
extension Ops {
    /// A dropout mask as `torch.nn.Dropout(p)` in training mode applies it: each entry is 0 with probability p,
    /// else 1/(1 − p) (so the expectation is unchanged). The random stream is Encore's (SplitMix64), not torch's.
    public static func dropoutMask(shape: [Int], p: Float, rng: inout SplitMix64) -> Tensor {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1)")
        let m = Tensor(uninitialized: shape)
        let keep = 1 / (1 - p)
        for i in 0..<m.count { m.data[i] = rng.nextUnitFloat() < p ? 0 : keep }
        return m
    }

    /// x ⊙ mask (also the derivative: dy ⊙ mask).
    public static func multiply(_ x: Tensor, _ mask: Tensor) -> Tensor {
        precondition(x.count == mask.count, "multiply: \(x.shape) vs \(mask.shape)")
        let y = Tensor(uninitialized: x.shape)
        for i in 0..<x.count { y.data[i] = x.data[i] * mask.data[i] }
        return y
    }
}
