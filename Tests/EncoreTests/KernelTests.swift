import XCTest
import EncoreKernels
@testable import Encore

/// Every fast kernel against its plain reference twin, on odd shapes. Tolerances are relative to the
/// largest magnitude of the reference result.
final class KernelTests: XCTestCase {
    var rng = SplitMix64(seed: 7)
    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }

    /// ek_pool_stats (ENCORE_STEP_PROFILE's "between kernel jobs"): while on, each outermost ek_parallel_for is a job
    /// (an inline one too: swiglu over a decode row), the calling thread's time between jobs is summed, and turning it
    /// off or on again clears the counts.
    func testPoolStatsCountJobsAndTheGapsBetweenThem() {
        let n = 1000
        let g = [Float](repeating: 0.5, count: n), u = [Float](repeating: 2, count: n)
        var o = [Float](repeating: 0, count: n)
        var jobs = -1, inside = -1.0, between = -1.0
        ek_pool_stats_enable(1)
        defer { ek_pool_stats_enable(0) }
        for i in 0..<3 {
            if i > 0 { usleep(2_000) }   // 2 ms of "model code" before the second and third jobs
            ek_swiglu_f32(g, u, &o, n)
        }
        ek_pool_stats(&jobs, &inside, &between)
        XCTAssertEqual(jobs, 3)
        XCTAssertGreaterThan(inside, 0)
        XCTAssertGreaterThanOrEqual(between, 4_000, "two gaps of at least 2 ms, in µs")
        XCTAssertLessThan(between, 1_000_000)
        ek_pool_stats_enable(0)
        ek_swiglu_f32(g, u, &o, n)
        ek_pool_stats(&jobs, &inside, &between)
        XCTAssertEqual(jobs, 0, "off: nothing counted")
        XCTAssertEqual(between, 0)
    }

    func testDot() {
        for n in [1, 7, 8, 33, 64, 1000] {
            let a = randoms(n), b = randoms(n)
            XCTAssertEqual(ek_dot_f32(a, b, n), ek_dot_f32_ref(a, b, n), accuracy: 1e-5 * Float(n), "n=\(n)")
        }
    }

    func testRMSNorm() {
        for (rows, dim) in [(1, 5), (3, 48), (2, 1024), (4, 33)] {
            let x = randoms(rows * dim, scale: 3), w = randoms(dim)
            var fast = [Float](repeating: 0, count: rows * dim), ref = fast
            ek_rmsnorm_f32(x, w, &fast, rows, dim, 1e-6)
            ek_rmsnorm_f32_ref(x, w, &ref, rows, dim, 1e-6)
            XCTAssertLessThan(relativeError(fast, ref), 1e-6, "\(rows)x\(dim)")
        }
    }

    /// A pass's shared RoPE table rotates exactly as the per-call rotation (same cosf/sinf of the same fp32 angles):
    /// bit for bit, on Mu's centred (negative) positions, an odd head width and head widths past the kernel's stack
    /// buffer (1,026: 513 angles), and a prompt-sized pass whose rows the kernel threads share.
    func testRoPETableMatchesPerCallRotation() {
        for (rows, heads, headDim) in [(5, 3, 64), (4, 2, 7), (2, 1, 1026), (301, 4, 64)] {   // the last on the kernel threads
            let positions = (0..<rows).map { Float($0 - rows / 2) * 3 }
            let invFreq = (0..<(headDim / 2)).map { powf(10000, -Float(2 * $0) / Float(headDim)) }
            let x = Tensor(shape: [rows, heads * headDim], values: randoms(rows * heads * headDim, scale: 2))
            let a = x.copy(), b = x.copy()
            Ops.ropeInPlace(a, heads: heads, headDim: headDim, positions: positions, invFreq: invFreq)
            Ops.ropeInPlace(b, heads: heads, headDim: headDim, table: Ops.RoPETable(positions: positions, invFreq: invFreq))
            let differing = zip(a.toArray(), b.toArray()).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(rows)×\(heads)×\(headDim): floats that differ from the per-call rotation")
            XCTAssertNotEqual(a.toArray(), x.toArray(), "rotated")
            if headDim % 2 == 1 {   // the odd last element of every head is left as it was
                for r in 0..<rows { for h in 0..<heads {
                    let i = r * heads * headDim + h * headDim + headDim - 1
                    XCTAssertEqual(a.toArray()[i], x.toArray()[i])
                } }
            }
        }
    }

    /// ek_f16_fits (the f16 KV cache's check before each append): one value out of f16's range, anywhere in the
    /// vector blocks or the tail, fails it; ±65504 fits.
    func testF16FitsFindsEveryOutOfRangeValue() {
        for n in [1, 7, 8, 9, 64, 67] {
            var x = randoms(n, scale: 1000)
            x[n / 2] = 65504; x[n - 1] = -65504
            XCTAssertEqual(ek_f16_fits(x, n), 1, "n=\(n)")
            for bad: Float in [65504.01, -65520, .infinity, -.infinity, .nan] {
                for i in Set([0, n / 2, n - 1]) {
                    var y = x
                    y[i] = bad
                    XCTAssertEqual(ek_f16_fits(y, n), 0, "n=\(n) x[\(i)]=\(bad)")
                }
            }
        }
    }

    func testGELU() {
        let x = randoms(1003, scale: 8) + [0, -20, 20, 1e-4, -1e-4]
        var fast = x, ref = x
        ek_gelu_tanh_f32(&fast, fast.count)
        ek_gelu_tanh_f32_ref(&ref, ref.count)
        for i in 0..<x.count { XCTAssertEqual(fast[i], ref[i], accuracy: 2e-6 * max(1, abs(ref[i])), "x=\(x[i])") }
    }

    func testExp() {
        let x = randoms(517, scale: 80)
        var fast = x
        ek_exp_f32(&fast, fast.count)
        for i in 0..<x.count { XCTAssertEqual(fast[i], expf(x[i]), accuracy: 4e-7 * expf(x[i]), "x=\(x[i])") }
    }

    /// Attention with GQA in both layouts, key masks, causal offsets and fully masked rows.
    func testAttentionMatchesReference() {
        defer { ek_set_force_reference(0) }
        for force in [Int32(0), 1] {   // the AVX2 path, then the plain-C path of the same split-K kernel
        ek_set_force_reference(force)
        for (tq, tk, heads, kvHeads, hd, interleaved, causal) in [
            (1, 1, 1, 1, 2, false, -1), (3, 9, 4, 2, 8, false, -1), (3, 9, 4, 2, 8, true, 6), (5, 5, 6, 3, 64, false, 0),
            (1, 37, 6, 3, 64, true, 36), (2, 17, 8, 1, 16, false, -1),
            // several 128-key chunks merged (split-K), GQA groups, a group of 18 heads (> 16 per pass), D not % 8
            (1, 513, 6, 3, 64, false, -1), (1, 300, 9, 3, 64, true, 299), (2, 400, 18, 1, 16, false, 150),
            (3, 260, 4, 2, 12, false, 257), (1, 1030, 2, 2, 8, true, -1),
        ] {
            let q = randoms(tq * heads * hd), k = randoms(tk * kvHeads * hd), v = randoms(tk * kvHeads * hd)
            var keep = (0..<tk).map { _ in UInt8(rng.next() % 4 == 0 ? 0 : 1) }
            keep[0] = 1
            if tk > 300 { for s in 128..<256 { keep[s] = 0 } }   // a whole chunk masked
            var fast = [Float](repeating: 0, count: tq * heads * hd), ref = fast
            var scratch = [Float](repeating: 0, count: ek_attention_scratch_floats(tq, tk, heads, hd))
            let scale = Float(hd).squareRoot()
            ek_attention_f32(q, heads * hd, k, kvHeads * hd, v, kvHeads * hd, &fast, heads * hd, tq, tk, heads, kvHeads, hd,
                             interleaved ? 1 : 0, keep, causal, scale, &scratch)
            ek_attention_f32_ref(q, heads * hd, k, kvHeads * hd, v, kvHeads * hd, &ref, heads * hd, tq, tk, heads, kvHeads, hd,
                                 interleaved ? 1 : 0, keep, causal, scale, &scratch)
            XCTAssertLessThan(relativeError(fast, ref), 1e-5, "tq=\(tq) tk=\(tk) h=\(heads)/\(kvHeads) interleaved=\(interleaved) force=\(force)")
        }
        }
        // every key masked: uniform weights, as the reference's masked_fill(finfo.min)
        let v = randoms(4 * 2)
        var out = [Float](repeating: 0, count: 2), scratch = [Float](repeating: 0, count: ek_attention_scratch_floats(1, 4, 1, 2))
        ek_attention_f32(randoms(2), 2, randoms(8), 2, v, 2, &out, 2, 1, 4, 1, 1, 2, 0, [0, 0, 0, 0], -1, 1, &scratch)
        XCTAssertEqual(out[0], (v[0] + v[2] + v[4] + v[6]) / 4, accuracy: 1e-6)
        // every key of a 300-key row masked (three chunks): uniform over all keys
        let v3 = randoms(300 * 8)
        var out3 = [Float](repeating: 0, count: 8), scratch3 = [Float](repeating: 0, count: ek_attention_scratch_floats(1, 300, 1, 8))
        ek_attention_f32(randoms(8), 8, randoms(300 * 8), 8, v3, 8, &out3, 8, 1, 300, 1, 1, 8, 0,
                         [UInt8](repeating: 0, count: 300), -1, 1, &scratch3)
        let mean0 = (0..<300).map { v3[$0 * 8] }.reduce(0, +) / 300
        XCTAssertEqual(out3[0], mean0, accuracy: 1e-5)
    }

    /// Attention over f16 K/V (Mu's opt-in half cross-attention K/V): the AVX2 and plain-C paths against the `_ref`
    /// twin (≤ 1e-5 of the largest output), and the AVX2 path gives exactly ek_attention_f32's bytes on the widened
    /// values (same fp32 arithmetic); masks, GQA layouts, split-K chunks, D not % 8, a fully masked row.
    func testHalfKVAttentionMatchesReference() {
        defer { ek_set_force_reference(0) }
        for force in [Int32(0), 1] {
            ek_set_force_reference(force)
            for (tq, tk, heads, kvHeads, hd, interleaved, allMasked) in [
                (1, 1, 1, 1, 8, false, false), (1, 512, 6, 3, 64, false, false), (1, 300, 9, 3, 64, true, false),
                (3, 260, 4, 2, 12, false, false), (2, 130, 8, 2, 32, true, false), (1, 200, 2, 1, 16, false, true),
            ] {
                let q = randoms(tq * heads * hd)
                let k32 = randoms(tk * kvHeads * hd, scale: 4), v32 = randoms(tk * kvHeads * hd, scale: 4)
                var k16 = [UInt16](repeating: 0, count: k32.count), v16 = k16
                ek_f32_to_f16(k32, &k16, k32.count)
                ek_f32_to_f16(v32, &v16, v32.count)
                var kw = [Float](repeating: 0, count: k32.count), vw = kw            // the f16 values widened
                ek_f16_to_f32(k16, &kw, kw.count)
                ek_f16_to_f32(v16, &vw, vw.count)
                var keep = (0..<tk).map { _ in UInt8(rng.next() % 4 == 0 ? 0 : 1) }
                if allMasked { keep = [UInt8](repeating: 0, count: tk) } else { keep[0] = 1 }
                if tk > 300 { for s in 128..<256 { keep[s] = 0 } }
                var half = [Float](repeating: 0, count: tq * heads * hd), ref = half, widened = half
                var scratch = [Float](repeating: 0, count: max(ek_attention_scratch_floats(tq, tk, heads, hd), tk))
                let scale = Float(hd).squareRoot(), il: Int32 = interleaved ? 1 : 0
                ek_attention_f16kv(q, heads * hd, k16, kvHeads * hd, v16, kvHeads * hd, &half, heads * hd, tq, tk, heads, kvHeads, hd,
                                   il, keep, -1, scale, &scratch)
                ek_attention_f16kv_ref(q, heads * hd, k16, kvHeads * hd, v16, kvHeads * hd, &ref, heads * hd, tq, tk, heads, kvHeads, hd,
                                       il, keep, -1, scale, &scratch)
                ek_attention_f32(q, heads * hd, kw, kvHeads * hd, vw, kvHeads * hd, &widened, heads * hd, tq, tk, heads, kvHeads, hd,
                                 il, keep, -1, scale, &scratch)
                let what = "tq=\(tq) tk=\(tk) h=\(heads)/\(kvHeads) D=\(hd) masked=\(allMasked) force=\(force)"
                XCTAssertLessThan(relativeError(half, ref), 1e-5, what)
                if force == 0 && hd % 8 == 0 && ek_cpu_features() & Int32(EK_CPU_AVX2_FMA) != 0 && ek_cpu_features() & Int32(EK_CPU_F16C) != 0 {
                    XCTAssertEqual(half, widened, "f16 path vs fp32 path on the widened values: " + what)
                }
                XCTAssertFalse(half.contains { !$0.isFinite }, what)
            }
        }
    }

    /// int8 K/V with a scale per key and block (`ek_attention_i8kv`: blocks of 32 for heads of 64 and 32, whole heads
    /// of 8, 12 and 16) against its double-precision twin on the dequantized values (≤ 1e-5 of the largest output), K/V
    /// quantized as the models store them (Int8HeadRows); masks, GQA layouts, split-K chunks, D not % 8, a fully masked
    /// row; and within 2e-2 of the fp32 attention on the unquantized K/V (what the 8 bits cost).
    func testInt8KVAttentionMatchesReference() throws {
        defer { ek_set_force_reference(0) }
        for force in [Int32(0), 1] {
            ek_set_force_reference(force)
            for (tq, tk, heads, kvHeads, hd, interleaved, allMasked) in [
                (1, 1, 1, 1, 8, false, false), (1, 512, 6, 6, 64, false, false), (1, 300, 9, 3, 64, true, false),
                (3, 260, 4, 2, 12, false, false), (2, 130, 8, 2, 32, true, false), (1, 200, 2, 1, 16, false, true),
            ] {
                let q = randoms(tq * heads * hd)
                let k32 = randoms(tk * kvHeads * hd, scale: 4), v32 = randoms(tk * kvHeads * hd, scale: 4)
                let k8 = try XCTUnwrap(Int8HeadRows(fitting: Tensor(shape: [tk, kvHeads * hd], values: k32), headDim: hd))
                let v8 = try XCTUnwrap(Int8HeadRows(fitting: Tensor(shape: [tk, kvHeads * hd], values: v32), headDim: hd))
                var keep = (0..<tk).map { _ in UInt8(rng.next() % 4 == 0 ? 0 : 1) }
                if allMasked { keep = [UInt8](repeating: 0, count: tk) } else { keep[0] = 1 }
                var fast = [Float](repeating: 0, count: tq * heads * hd), ref = fast, exact = fast
                var scratch = [Float](repeating: 0, count: max(ek_attention_scratch_floats(tq, tk, heads, hd), tk))
                let scale = Float(hd).squareRoot(), il: Int32 = interleaved ? 1 : 0, width = kvHeads * hd
                ek_attention_i8kv(q, heads * hd, k8.data, k8.scales, width, v8.data, v8.scales, width, k8.scalesPerRow,
                                  k8.group, &fast, heads * hd, tq, tk, heads, kvHeads, hd, il, keep, -1, scale, &scratch)
                ek_attention_i8kv_ref(q, heads * hd, k8.data, k8.scales, width, v8.data, v8.scales, width,
                                      k8.scalesPerRow, k8.group, &ref, heads * hd, tq, tk, heads, kvHeads, hd, il, keep, -1, scale, &scratch)
                ek_attention_f32_ref(q, heads * hd, k32, width, v32, width, &exact, heads * hd, tq, tk, heads, kvHeads, hd,
                                     il, keep, -1, scale, &scratch)
                let what = "tq=\(tq) tk=\(tk) h=\(heads)/\(kvHeads) D=\(hd) masked=\(allMasked) force=\(force)"
                XCTAssertLessThan(relativeError(fast, ref), 1e-5, what)
                XCTAssertLessThan(relativeError(fast, exact), 2e-2, what)
                XCTAssertFalse(fast.contains { !$0.isFinite }, what)
            }
        }
    }

    /// SwiGLU (Llama/Qwen2/Phi-3 MLPs): the AVX2 path, threaded for long inputs, against the double-precision
    /// twin, 2e-6 relative to max(|out|, 1e-3·|up|) per element, over a ragged length, extreme gates (±100: exp
    /// clamped), a long prompt-sized input; the plain-C path too.
    func testSwiGLUMatchesReference() {
        defer { ek_set_force_reference(0) }
        for force in [Int32(0), 1] {
            ek_set_force_reference(force)
            for n in [1, 13, 1000, 300 * 257] {
                var gate = randoms(n, scale: 8), up = randoms(n, scale: 3)
                if n > 2 { gate[0] = 100; gate[1] = -100; gate[2] = 0 }
                var fast = [Float](repeating: 0, count: n), ref = fast
                ek_swiglu_f32(gate, up, &fast, n)
                ek_swiglu_f32_ref(gate, up, &ref, n)
                for i in 0..<n {
                    let tol = 2e-6 * max(abs(ref[i]), 1e-3 * abs(up[i])) + 1e-30
                    if abs(fast[i] - ref[i]) > tol { XCTFail("n=\(n) force=\(force) i=\(i): \(fast[i]) vs \(ref[i])"); break }
                }
            }
        }
    }

    /// GEMMs split across Encore's pool (OpenBLAS single-threaded per slice): every layout the ops use — B stored
    /// [N, K] (transB) or [K, N], Aᵀ·B (gradients), beta = 1 accumulation, strided C, N not a multiple of the 16-column
    /// slices — against a double-precision product, 1e-5 relative to the largest |C|; large enough to be split.
    func testSplitGEMMMatchesReference() {
        let (m, n, k) = (67, 203, 301)   // m·n·k ≈ 4.1M ≥ the split threshold
        #if !canImport(Accelerate)
        XCTAssertTrue(BLAS.onPool, "GEMMs run on Encore's pool unless ENCORE_GEMM_THREADS=openblas")
        #endif
        let a = randoms(m * k), at = randoms(k * m), bT = randoms(n * k), bN = randoms(k * n), c0 = randoms(m * (n + 5))
        for (name, transA, transB, beta) in [("A·Bᵀ", false, true, Float(0)), ("A·B", false, false, 0), ("A·Bᵀ + C", false, true, 1),
                                             ("Aᵀ·B", true, false, 0), ("Aᵀ·B + C", true, false, 1)] {
            var c = c0
            let b = transB ? bT : bN
            if transA {
                BLAS.gemmTransA(m: m, n: n, k: k, a: at, lda: m, b: b, ldb: n, c: &c, ldc: n + 5, beta: beta)
            } else {
                BLAS.gemm(m: m, n: n, k: k, a: a, b: b, transB: transB, c: &c, ldc: n + 5, beta: beta)
            }
            var worst: Double = 0, largest: Double = 0
            for i in 0..<m {
                for j in 0..<(n + 5) {
                    var want = Double(c0[i * (n + 5) + j])
                    if j < n {
                        var dot: Double = 0
                        for p in 0..<k {
                            let x = transA ? Double(at[p * m + i]) : Double(a[i * k + p])
                            let y = transB ? Double(bT[j * k + p]) : Double(bN[p * n + j])
                            dot += x * y
                        }
                        want = dot + Double(beta) * want
                    }
                    worst = max(worst, abs(Double(c[i * (n + 5) + j]) - want))
                    largest = max(largest, abs(want))
                }
            }
            XCTAssertLessThan(worst / largest, 1e-5, "\(name): columns past n must stay untouched, the rest equal the product")
        }
    }

    /// The masked row softmax of prompt passes: the AVX2 path against the plain-C path (1e-6 absolute on
    /// probabilities), with key masks, causal offsets (including rows whose every key is masked: uniform) and a
    /// ragged width.
    func testMaskedSoftmaxPathsAgree() {
        defer { ek_set_force_reference(0) }
        let rows = 37, cols = 301
        let x = randoms(rows * cols, scale: 6)
        for causal in [-1, 0, 5] {
            var keep = (0..<cols).map { UInt8($0 % 5 == 1 ? 0 : 1) }
            if causal == 0 { keep[0] = 0 }   // row 0 then has no key left: uniform over all columns
            var out: [[Float]] = []
            for force in [Int32(0), 1] {
                ek_set_force_reference(force)
                var sc = x
                ek_softmax_masked_f32(&sc, rows, cols, cols, 8, keep, causal)
                out.append(sc)
            }
            XCTAssertLessThan(zip(out[0], out[1]).map { abs($0 - $1) }.max()!, 1e-6, "causal \(causal)")
            if causal == 0 { XCTAssertEqual(out[0][0], 1 / Float(cols), accuracy: 1e-7) }
            if causal == 5 { XCTAssertEqual(out[0][cols + 7], 0, "key 7 is beyond row 1 + 5") }
            XCTAssertEqual(out[0][2 * cols + 1], 0, "key 1 is masked")
        }
    }

    /// The BLAS prefill path and the fused short-query path of Ops.attention agree.
    func testAttentionBLASPathMatchesKernelPath() {
        let shape = AttentionShape(heads: 6, kvHeads: 3, headDim: 16, interleaved: false)
        let tq = 40, tk = 40
        let q = randoms(tq * shape.qWidth), k = randoms(tk * shape.kvWidth), v = randoms(tk * shape.kvWidth)
        let keep = (0..<tk).map { UInt8($0 < 33 ? 1 : 0) }
        for causal in [-1, 0] {
            var blas = [Float](repeating: 0, count: tq * shape.qWidth), kernel = blas
            var scratch: [Float] = []
            Ops.attention(q: q, tq: tq, k: k, v: v, kvRows: tk, kvStride: shape.kvWidth, out: &blas, shape: shape,
                          keyKeep: keep, causalOffset: causal, scratch: &scratch)
            // one query at a time takes the kernel path
            for t in 0..<tq {
                q.withUnsafeBufferPointer { qp in
                    kernel.withUnsafeMutableBufferPointer { op in
                        Ops.attention(q: qp.baseAddress! + t * shape.qWidth, tq: 1, k: k, v: v,
                                      kvRows: causal >= 0 ? t + 1 : tk, kvStride: shape.kvWidth,
                                      out: op.baseAddress! + t * shape.qWidth, shape: shape, keyKeep: keep,
                                      causalOffset: causal >= 0 ? t : -1, scratch: &scratch)
                    }
                }
            }
            XCTAssertLessThan(relativeError(blas, kernel), 1e-5, "causal \(causal)")
        }
    }

    /// The pool's thread slots index per-thread scratch: every task sees a slot below ek_thread_slots(); a parallel
    /// loop inside a task runs its tasks inline on that thread (no deadlock, every inner task runs once).
    func testThreadSlotsAndNestedLoops() {
        struct Ctx { var slots: UnsafeMutablePointer<Int32>; var inner: UnsafeMutablePointer<Int32> }
        let n = 64, innerN = 8
        let slots = UnsafeMutablePointer<Int32>.allocate(capacity: n), inner = UnsafeMutablePointer<Int32>.allocate(capacity: n * innerN)
        defer { slots.deallocate(); inner.deallocate() }
        inner.initialize(repeating: 0, count: n * innerN)
        let limit = ek_thread_slots()
        var ctx = Ctx(slots: slots, inner: inner)
        withUnsafeMutablePointer(to: &ctx) { cp in
            ek_parallel_for(n, { c, i, _ in
                let ctx = c!.assumingMemoryBound(to: Ctx.self).pointee
                ctx.slots[i] = ek_thread_slot()
                var sub = (ctx.inner + i * 8, ek_thread_slot())
                withUnsafeMutablePointer(to: &sub) { sp in
                    ek_parallel_for(8, { c2, j, _ in
                        let s = c2!.assumingMemoryBound(to: (UnsafeMutablePointer<Int32>, Int32).self).pointee
                        s.0[j] += ek_thread_slot() == s.1 ? 1 : 100   // inline: the outer task's own thread
                    }, sp)
                }
            }, cp)
        }
        for i in 0..<n { XCTAssert(slots[i] >= 0 && slots[i] < limit, "task \(i): slot \(slots[i]) of \(limit)") }
        XCTAssertEqual((0..<n * innerN).map { inner[$0] }, [Int32](repeating: 1, count: n * innerN))
    }

    /// The causal prompt path multiplies each block of 128 queries only with the keys it may see: against plain
    /// full-width attention in Double (every score, the mask, softmax), over 3 blocks (the last partial), with a
    /// causal offset (a prompt continuing a cache) and left padding whose rows have no visible key (uniform over
    /// all keys, as the reference's masked_fill does: their block must keep every key). Tolerance 1e-5 relative.
    func testCausalBlockedAttentionMatchesFullReference() {
        let shape = AttentionShape(heads: 4, kvHeads: 2, headDim: 8, interleaved: true)
        for (tq, offset, padded) in [(300, 0, 0), (300, 20, 0), (300, 0, 150), (40, 0, 3)] {
            let tk = tq + offset
            let q = randoms(tq * shape.qWidth), k = randoms(tk * shape.kvWidth), v = randoms(tk * shape.kvWidth)
            let keep = (0..<tk).map { UInt8($0 < padded || $0 % 7 == 3 ? 0 : 1) }
            var got = [Float](repeating: 0, count: tq * shape.qWidth), scratch: [Float] = []
            Ops.attention(q: q, tq: tq, k: k, v: v, kvRows: tk, kvStride: shape.kvWidth, out: &got, shape: shape,
                          keyKeep: keep, causalOffset: offset, scratch: &scratch)
            var want = [Float](repeating: 0, count: tq * shape.qWidth)
            for h in 0..<shape.heads {
                let g = shape.kvHead(for: h)
                for t in 0..<tq {
                    let allowed = (0..<tk).map { keep[$0] != 0 && $0 <= t + offset }
                    var p = [Double](repeating: 0, count: tk)
                    if allowed.contains(true) {
                        for s in 0..<tk where allowed[s] {
                            var dot = 0.0
                            for d in 0..<shape.headDim {
                                dot += Double(q[t * shape.qWidth + h * shape.headDim + d]) * Double(k[s * shape.kvWidth + g * shape.headDim + d])
                            }
                            p[s] = dot / Double(shape.headDim).squareRoot()
                        }
                        let mx = (0..<tk).filter { allowed[$0] }.map { p[$0] }.max()!
                        for s in 0..<tk { p[s] = allowed[s] ? Foundation.exp(p[s] - mx) : 0 }
                        let sum = p.reduce(0, +)
                        for s in 0..<tk { p[s] /= sum }
                    } else {
                        p = [Double](repeating: 1 / Double(tk), count: tk)
                    }
                    for d in 0..<shape.headDim {
                        var acc = 0.0
                        for s in 0..<tk { acc += p[s] * Double(v[s * shape.kvWidth + g * shape.headDim + d]) }
                        want[t * shape.qWidth + h * shape.headDim + d] = Float(acc)
                    }
                }
            }
            XCTAssertLessThan(relativeError(got, want), 1e-5, "tq \(tq) offset \(offset) padded \(padded)")
        }
    }

    /// T5 attention (unscaled scores + relative-position bias) against its plain twin: with and without a bias,
    /// key masks, causal offsets (decode steps over a cache), a fully masked row; and the BLAS path of
    /// Ops.relativeBiasAttention (tq ≥ 16, bias added by ek_add_relbias_f32) against the twin. Tolerance 1e-5
    /// relative to the largest output.
    func testRelativeBiasAttentionMatchesReference() {
        for (tq, tk, heads, hd, causal, withBias) in [
            (1, 1, 1, 4, -1, true), (3, 9, 4, 8, -1, true), (3, 9, 4, 8, 6, true), (5, 5, 6, 16, 0, true),
            (1, 37, 4, 12, 36, true), (2, 17, 8, 16, -1, false), (20, 20, 4, 16, -1, true), (24, 30, 3, 8, 6, true),
            (16, 16, 2, 8, 0, false), (1, 300, 4, 16, 299, true), (2, 520, 3, 8, -1, false), (3, 260, 2, 12, 257, true),
            (300, 300, 3, 8, -1, true), (200, 210, 2, 8, 10, true),   // several blocks of 128 queries: the bias offset per block
        ] {
            let q = randoms(tq * heads * hd), k = randoms(tk * heads * hd), v = randoms(tk * heads * hd)
            let bias = randoms(heads * (tq + tk - 1), scale: 3)
            var keep = (0..<tk).map { _ in UInt8(rng.next() % 4 == 0 ? 0 : 1) }
            keep[0] = 1
            var fast = [Float](repeating: 0, count: tq * heads * hd), ref = fast, ops = fast
            var scratch = [Float](repeating: 0, count: ek_attention_scratch_floats(tq, tk, heads, hd))
            bias.withUnsafeBufferPointer { bp in
                let b = withBias ? bp.baseAddress : nil
                ek_attention_relbias_f32(q, heads * hd, k, heads * hd, v, heads * hd, &fast, heads * hd, tq, tk, heads, heads, hd,
                                         0, keep, causal, b, tq + tk - 1, &scratch)
                ek_attention_relbias_f32_ref(q, heads * hd, k, heads * hd, v, heads * hd, &ref, heads * hd, tq, tk, heads, heads, hd,
                                             0, keep, causal, b, tq + tk - 1, &scratch)
                var s: [Float] = []
                Ops.relativeBiasAttention(q: q, tq: tq, k: k, v: v, kvRows: tk, kvStride: heads * hd, out: &ops,
                                          shape: AttentionShape(heads: heads, kvHeads: heads, headDim: hd, interleaved: false),
                                          keyKeep: keep, causalOffset: causal, bias: b, scratch: &s)
            }
            let what = "tq=\(tq) tk=\(tk) h=\(heads) causal=\(causal) bias=\(withBias)"
            XCTAssertLessThan(relativeError(fast, ref), 1e-5, what)
            XCTAssertLessThan(relativeError(ops, ref), 1e-5, what + " (Ops)")
        }
        // the bias really enters: a large bias on one key makes every query read that key's value
        let (tk, hd) = (4, 2)
        let v: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]
        var bias = [Float](repeating: 0, count: tk)   // tq = 1: bias[s]
        bias[2] = 100
        var out = [Float](repeating: 0, count: hd), scratch = [Float](repeating: 0, count: ek_attention_scratch_floats(1, tk, 1, hd))
        ek_attention_relbias_f32(randoms(hd, scale: 0.1), hd, randoms(tk * hd, scale: 0.1), hd, v, hd, &out, hd, 1, tk, 1, 1, hd, 0,
                                 nil, -1, bias, tk, &scratch)
        XCTAssertEqual(out[0], 5, accuracy: 1e-4)
        XCTAssertEqual(out[1], 6, accuracy: 1e-4)
        // every key masked: uniform weights, as the other attention kernels
        let keep = [UInt8](repeating: 0, count: tk)
        ek_attention_relbias_f32_ref(randoms(hd), hd, randoms(tk * hd), hd, v, hd, &out, hd, 1, tk, 1, 1, hd, 0, keep, -1, bias, tk, &scratch)
        XCTAssertEqual(out[0], (1 + 3 + 5 + 7) / 4, accuracy: 1e-6)
        ek_attention_relbias_f32(randoms(hd), hd, randoms(tk * hd), hd, v, hd, &out, hd, 1, tk, 1, 1, hd, 0, keep, -1, bias, tk, &scratch)
        XCTAssertEqual(out[0], (1 + 3 + 5 + 7) / 4, accuracy: 1e-6)
    }

    /// The F16C conversions (8 values per instruction) give the plain C path's bytes: rounding to nearest even
    /// (ties), subnormal halves, overflow to inf, a block holding a NaN (converted in plain C), ragged tails; widening
    /// every one of the 65 536 halves gives the same floats (NaNs: NaN).
    func testHalfConversionsMatchPlainPath() {
        defer { ek_set_force_reference(0) }
        var rng = SplitMix64(seed: 21)
        var x: [Float] = (0..<4093).map { i in
            let u = rng.nextUnitFloat()
            switch i % 5 {
            case 0: return (u - 0.5) * 1e-4               // subnormal halves
            case 1: return (u - 0.5) * 140_000            // beyond 65504 half of the time
            case 2: return Float(1 + Float(i % 1024) / 1024 + 1.0 / 2048)   // ties between two halves
            default: return (u - 0.5) * 8
            }
        }
        x[100] = .nan
        x[101] = Float(bitPattern: 0xffc0_2000)   // a NaN with a payload: F16C would keep part of it, plain C gives 0xfe00
        x[2001] = -.infinity
        var fast = [UInt16](repeating: 0, count: x.count), plain = fast
        ek_set_force_reference(0)
        ek_f32_to_f16(x, &fast, x.count)
        ek_set_force_reference(1)
        ek_f32_to_f16(x, &plain, x.count)
        let differing = fast.indices.first { fast[$0] != plain[$0] }
        XCTAssertNil(differing, differing.map { "x[\($0)] = \(x[$0]) (bits 0x\(String(x[$0].bitPattern, radix: 16))): F16C 0x\(String(fast[$0], radix: 16)), plain 0x\(String(plain[$0], radix: 16))" } ?? "")
        let all = (0..<65536).map { UInt16($0) }
        var wideFast = [Float](repeating: 0, count: all.count), widePlain = wideFast
        ek_set_force_reference(0)
        ek_f16_to_f32(all, &wideFast, all.count)
        ek_set_force_reference(1)
        ek_f16_to_f32(all, &widePlain, all.count)
        for i in 0..<all.count where !(widePlain[i].isNaN && wideFast[i].isNaN) {
            XCTAssertEqual(wideFast[i].bitPattern, widePlain[i].bitPattern, "half 0x\(String(i, radix: 16))")
        }
    }

    func testHalfConversions() {
        let x: [Float] = [0, -0.0, 1, -1.5, 3.140625, 65504, 1e-8, 6e-5, -2.5e-7, 1e30, .infinity]
        var h = [UInt16](repeating: 0, count: x.count), b = h
        var back = [Float](repeating: 0, count: x.count)
        ek_f32_to_f16(x, &h, x.count)
        ek_f16_to_f32(h, &back, x.count)
        XCTAssertEqual(Array(back[0..<6]), [0, -0.0, 1, -1.5, 3.140625, 65504])
        XCTAssertEqual(back[9], .infinity)            // overflow → inf
        XCTAssertEqual(back[7], 6e-5, accuracy: 1e-7)  // subnormal half
        ek_f32_to_bf16(x, &b, x.count)
        ek_bf16_to_f32(b, &back, x.count)
        XCTAssertEqual(Array(back[0..<5]), [0, -0.0, 1, -1.5, 3.140625])
        XCTAssertEqual(back[9], 1e30, accuracy: 1e30 * 4e-3)
        // round to nearest even: 1 + 2^-8 is a tie between bf16 1 and 1 + 2^-7
        let tie: [Float] = [1 + 1.0 / 256, 1 + 3.0 / 256]
        ek_f32_to_bf16(tie, &b, 2)
        ek_bf16_to_f32(b, &back, 2)
        XCTAssertEqual(back[0], 1)
        XCTAssertEqual(back[1], 1 + 4.0 / 256)
    }

    /// The vector fp32 → bf16 rounding (AVX2, 8 values a step) gives the plain loop's bytes for every input: ties
    /// both ways, carries into the exponent, denormals (not flushed), infinities, quiet and signalling NaNs of either
    /// sign, and random values; the lengths leave a scalar tail.
    func testBF16RoundingSIMDMatchesPlainBytes() {
        var bits: [UInt32] = [0, 0x8000_0000, 0x3f80_8000, 0x3f81_8000, 0x3f80_7fff, 0x3f80_8001, 0x7f7f_ffff, 0xff7f_8000,
                              0x0000_0001, 0x8000_8000, 0x007f_ffff, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0xffc0_0001,
                              0x7f80_0001, 0xff80_ffff, 0x3fff_ffff, 0xbfff_8000]
        var rng = SplitMix64(seed: 7)
        for _ in 0..<1_000 { bits.append(UInt32(truncatingIfNeeded: rng.next())) }
        let x = bits.map { Float(bitPattern: $0) }
        defer { ek_set_force_reference(0) }
        for n in [x.count, 13, 8, 5] {
            var simd = [UInt16](repeating: 0, count: n), plain = simd
            ek_set_force_reference(0)
            ek_f32_to_bf16(x, &simd, n)
            ek_set_force_reference(1)
            ek_f32_to_bf16(x, &plain, n)
            for i in 0..<n where simd[i] != plain[i] {
                XCTFail(String(format: "n %d: input 0x%08x → 0x%04x, plain loop 0x%04x", n, bits[i], simd[i], plain[i]))
                break
            }
        }
        // spot values of the plain loop itself: a tie to even, a carry into the exponent, a quietened NaN
        var b = [UInt16](repeating: 0, count: 3)
        ek_f32_to_bf16([Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3fff_ffff), Float(bitPattern: 0x7f80_0001)], &b, 3)
        XCTAssertEqual(b, [0x3f80, 0x4000, 0x7fc0])
    }

    func testScalarPathsMatchSIMDPaths() {
        // the run-time dispatch picks the CPU's SIMD path (NEON on every arm64; AVX2+FMA where x86-64 has it)
        #if arch(arm64)
        XCTAssertEqual(String(cString: ek_kernel_path()), "neon")
        #elseif arch(x86_64)
        if ek_cpu_features() & Int32(EK_CPU_AVX2_FMA) != 0 { XCTAssertEqual(String(cString: ek_kernel_path()), "avx2") }
        #endif
        let x = randoms(4 * 96, scale: 4), w = randoms(96)
        var simd = [Float](repeating: 0, count: x.count), scalar = simd
        ek_rmsnorm_f32(x, w, &simd, 4, 96, 1e-6)
        ek_set_force_reference(1)
        defer { ek_set_force_reference(0) }
        XCTAssertEqual(String(cString: ek_kernel_path()), "scalar")
        ek_rmsnorm_f32(x, w, &scalar, 4, 96, 1e-6)
        XCTAssertLessThan(relativeError(simd, scalar), 1e-6)
        var g1 = x, g2 = x
        ek_set_force_reference(0)
        ek_gelu_tanh_f32(&g1, g1.count)
        ek_set_force_reference(1)
        ek_gelu_tanh_f32(&g2, g2.count)
        XCTAssertLessThan(relativeError(g1, g2), 1e-6)
    }

    /// The instruction ceilings `encore bench` reports (peaks.c) are finite and positive; the plain-C FMA loop is
    /// far below the SIMD one (one lane instead of 8 or 4: ≈ 10× on this machine, bound 2×, so a vector loop the
    /// compiler collapsed or a wrong FLOP count fails); the int8 peak (the instructions of the int8 GEMM's x86 tile)
    /// exists where that tile runs, the bf16 one only with AVX512-BF16.
    func testInstructionPeaks() {
        defer { ek_set_force_reference(0) }
        let simd = ek_peak_fma_gflops(), int8 = ek_peak_int8_gops(), int8Path = Backend.int8GEMMPath
        ek_set_force_reference(1)
        let plain = ek_peak_fma_gflops()
        XCTAssertTrue(simd.isFinite && simd > 0 && plain > 0, "\(simd) \(plain)")
        let features = ek_cpu_features()
        if features & Int32(EK_CPU_AVX2_FMA) != 0 || features & Int32(EK_CPU_NEON) != 0 {
            XCTAssertGreaterThan(simd, 2 * plain, "SIMD FMA peak \(simd) vs plain \(plain) GFLOP/s")
        }
        #if arch(x86_64)
        XCTAssertEqual(int8 > 0, int8Path != "scalar", "int8 peak \(int8) GOP/s on \(int8Path)")
        #else
        XCTAssertEqual(int8, 0)
        #endif
        XCTAssertEqual(ek_peak_int8_gops(), 0, "forced plain path: no int8 peak")
        XCTAssertEqual(ek_peak_bf16_gflops(), 0, "forced plain path: no vdpbf16ps")
        ek_set_force_reference(0)
        // vdpbf16ps chains only where the bf16 GEMM's tile runs (AVX512-BF16)
        XCTAssertEqual(ek_peak_bf16_gflops() > 0, Backend.bf16GEMMPath == "avx512bf16")
    }

    /// A user's OPENBLAS_CORETYPE is kept, but the header says when it holds OpenBLAS below the CPU (an AVX2 set on an
    /// AVX-512 CPU, a pre-AVX2 set on an AVX2 one) and is silent otherwise.
    func testForcedOpenBLASKernelSetHint() {
        let avx512 = EK_CPU_AVX2_FMA | EK_CPU_AVX512F | EK_CPU_AVX512BWVL
        let forced = ["OPENBLAS_CORETYPE": "Haswell"]
        XCTAssertEqual(BLAS.environmentCoreHint(running: "Haswell", environment: forced, features: avx512),
                       " (OPENBLAS_CORETYPE=Haswell; this CPU has AVX-512: unset it for OpenBLAS's AVX-512 kernels)")
        XCTAssertNil(BLAS.environmentCoreHint(running: "Haswell", environment: forced, features: EK_CPU_AVX2_FMA))
        XCTAssertNil(BLAS.environmentCoreHint(running: "SkylakeX", environment: ["OPENBLAS_CORETYPE": "SkylakeX"],
                                              features: avx512))
        XCTAssertNil(BLAS.environmentCoreHint(running: "Haswell", environment: [:], features: avx512))
        XCTAssertEqual(BLAS.environmentCoreHint(running: "Prescott", environment: ["OPENBLAS_CORETYPE": "Prescott"],
                                                features: EK_CPU_AVX2_FMA),
                       " (OPENBLAS_CORETYPE=Prescott; this CPU has AVX2 and FMA: unset it for OpenBLAS's AVX2 kernels)")
        XCTAssertNil(BLAS.environmentCoreHint(running: "Prescott", environment: ["OPENBLAS_CORETYPE": "Prescott"],
                                              features: 0))
        XCTAssertNil(BLAS.environmentCoreHint(running: "Haswell", environment: forced, features: avx512, dynamicArch: false),
                     "a single-target OpenBLAS ignores the variable")
    }

    /// OpenBLAS must not run pre-AVX2 kernels on a CPU with AVX2 and FMA: Debian's 0.3.21 picks "Prescott" on CPU
    /// models newer than it knows (Intel family 6 model 207), ~5× slower SGEMM, unless Encore switches it
    /// (BLAS.coreUpgrade). Skipped where the user set OPENBLAS_CORETYPE or the BLAS is not OpenBLAS.
    func testOpenBLASKernelSetMatchesTheCPU() throws {
        let previous = BLAS.mkl   // the kernel set of the linked OpenBLAS, even where MKL was chosen (automatically)
        BLAS.mkl = nil
        defer { BLAS.mkl = previous }
        let name = Backend.blasName
        try XCTSkipUnless(name.hasPrefix("OpenBLAS "), "BLAS is \(name)")
        try XCTSkipIf(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] != nil, "OPENBLAS_CORETYPE is set")
        let features = Int(ek_cpu_features())
        try XCTSkipUnless(features & EK_CPU_AVX2_FMA != 0, "no AVX2 + FMA")
        let core = name.dropFirst("OpenBLAS ".count).split(separator: " ").first.map(String.init)?.lowercased() ?? ""
        XCTAssertTrue(BLAS.avx2KernelSets.contains(core),
                      "OpenBLAS runs \(name) kernels on an AVX2 CPU")
    }
}

final class SamplerTests: XCTestCase {
    let logits: [Float] = [0.1, 2.0, -1.0, 1.9, 0.5, -3.0]

    func sample(_ p: GenerationParameters, times: Int) -> [Int] {
        var s = Sampler(parameters: p)
        return (0..<times).map { _ in logits.withUnsafeBufferPointer { s.sample($0.baseAddress!, count: logits.count) } }
    }

    func testGreedyAndTopKOneAreArgmax() {
        XCTAssertEqual(Set(sample(.init(temperature: 0), times: 5)), [1])
        XCTAssertEqual(Set(sample(.init(temperature: 1.5, topK: 1, seed: 3), times: 20)), [1])
    }

    func testSeedReproducesAndDiffers() {
        let a = sample(.init(temperature: 1, seed: 42), times: 50)
        XCTAssertEqual(a, sample(.init(temperature: 1, seed: 42), times: 50))
        XCTAssertNotEqual(a, sample(.init(temperature: 1, seed: 43), times: 50))
        XCTAssertGreaterThan(Set(a).count, 2)
    }

    func testTopKAndTopPRestrictTheChoice() {
        XCTAssertEqual(Set(sample(.init(temperature: 1, topK: 2, seed: 1), times: 200)), [1, 3])
        // p(1) ≈ 0.42, p(3) ≈ 0.38: top-p 0.5 keeps both, top-p 0.3 keeps only the first
        XCTAssertEqual(Set(sample(.init(temperature: 1, topP: 0.5, seed: 1), times: 200)), [1, 3])
        XCTAssertEqual(Set(sample(.init(temperature: 1, topP: 0.3, seed: 1), times: 50)), [1])
    }

    func testFrequenciesFollowTheSoftmax() {
        let n = 20000
        let counts = sample(.init(temperature: 1, seed: 9), times: n).reduce(into: [Int: Int]()) { $0[$1, default: 0] += 1 }
        let mx = logits.max()!
        let z = logits.map { exp($0 - mx) }.reduce(0, +)
        for i in 0..<logits.count {
            let expected = Double(exp(logits[i] - mx) / z)
            XCTAssertEqual(Double(counts[i, default: 0]) / Double(n), expected, accuracy: 0.015, "token \(i)")
        }
    }

    func testStreamingDeliversTheSameTokens() async throws {
        let model = try MuModel(folder: fixture("mu/gqa_mod"))
        let params = GenerationParameters(maxTokens: 8, useModelEOS: false)
        let direct = try Generator(model: model).generate(prompts: [[5, 6, 7], [9, 10]], parameters: params).tokens
        var streamed = [[Int]](repeating: [], count: 2)
        for try await e in Generator(model: model).stream(prompts: [[5, 6, 7], [9, 10]], parameters: params) {
            streamed[e.row].append(e.token)
        }
        XCTAssertEqual(streamed, direct)
        // the callback can stop generation
        var seen = 0
        _ = try Generator(model: model).generate(prompts: [[5, 6, 7]], parameters: params) { _ in seen += 1; return seen < 3 }
        XCTAssertEqual(seen, 3)
    }

    /// A row gives the same tokens alone and in a right-padded encoder batch.
    func testMuBatchEqualsSingle() throws {
        let model = try MuModel(folder: fixture("mu/gqa_mod"))
        let prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
        let params = GenerationParameters(maxTokens: 10, useModelEOS: false)
        let batch = try Generator(model: model).generate(prompts: prompts, parameters: params).tokens
        for (i, p) in prompts.enumerated() {
            XCTAssertEqual(batch[i], try Generator(model: model).generate(prompt: p, parameters: params), "row \(i)")
        }
    }
}

final class GEMVTests: XCTestCase {
    func testGEMVMatchesReferenceAndBLAS() {
        var rng = SplitMix64(seed: 11)
        for (m, n, k) in [(1, 1, 1), (1, 37, 33), (3, 130, 64), (5, 1000, 100), (8, 300, 257), (2, 4096, 96)] {
            let w = (0..<(n * k)).map { _ in rng.nextUnitFloat() - 0.5 }
            let x = (0..<(m * k)).map { _ in rng.nextUnitFloat() - 0.5 }
            let b = (0..<n).map { _ in rng.nextUnitFloat() }
            var fast = [Float](repeating: .nan, count: m * n), ref = fast
            ek_gemv_f32(w, x, b, &fast, m, n, k)
            ek_gemv_f32_ref(w, x, b, &ref, m, n, k)
            XCTAssertLessThan(relativeError(fast, ref), 1e-5, "\(m)x\(n)x\(k)")
            // Ops.linear (GEMV path for m <= 8) equals the BLAS GEMM path
            let xt = Tensor(shape: [m, k], values: x), wt = Tensor(shape: [n, k], values: w), bt = Tensor(shape: [n], values: b)
            let viaOps = Ops.linear(xt, weight: wt, bias: bt).toArray()
            var viaBLAS = [Float](repeating: 0, count: m * n)
            for r in 0..<m { for c in 0..<n { viaBLAS[r * n + c] = b[c] } }
            BLAS.gemm(m: m, n: n, k: k, a: x, b: w, transB: true, c: &viaBLAS, beta: 1)
            XCTAssertLessThan(relativeError(viaOps, viaBLAS), 1e-5)
        }
    }

    func testThreadPoolRunsEveryTaskOnce() {
        final class Box { var hits = [Int32](repeating: 0, count: 1000) }
        let box = Box()
        Backend.setThreads(2)
        for _ in 0..<50 {
            box.hits = [Int32](repeating: 0, count: 1000)
            box.hits.withUnsafeMutableBufferPointer { p in
                ek_parallel_for(1000, { ctx, i, _ in
                    ctx!.assumingMemoryBound(to: Int32.self)[i] += 1
                }, p.baseAddress!)
            }
            XCTAssertEqual(Set(box.hits), [1])
        }
    }
}

final class BF16DecodeTests: XCTestCase {
    func testBF16GEMVMatchesReference() {
        defer { Backend.decodeGEMVOnYMM = nil }
        var rng = SplitMix64(seed: 3)
        for ymm in [false, true] {   // AVX-512 CPUs: the zmm rows and the ymm ones (Zen 4's default)
        Backend.decodeGEMVOnYMM = ymm
        for (m, n, k) in [(1, 5, 7), (1, 300, 1024), (3, 129, 40), (8, 64, 333)] {
            let w = (0..<(n * k)).map { _ in rng.nextUnitFloat() - 0.5 }
            let x = (0..<(m * k)).map { _ in rng.nextUnitFloat() - 0.5 }
            var wb = [UInt16](repeating: 0, count: n * k)
            ek_f32_to_bf16(w, &wb, n * k)
            var fast = [Float](repeating: .nan, count: m * n), ref = fast
            ek_gemv_bf16(wb, x, nil, &fast, m, n, k)
            // with AVX512_BF16 the kernel rounds x to bf16 (vdpbf16ps): its twin is the rounded-x reference
            if WeightFormat.bf16.kernelPath == "avx512bf16" { _ = ek_gemv_bf16_xbf16_ref(wb, x, nil, &ref, m, n, k) }
            else { ek_gemv_bf16_ref(wb, x, nil, &ref, m, n, k) }
            XCTAssertLessThan(relativeError(fast, ref), 1e-5, "\(m)x\(n)x\(k) \(WeightFormat.bf16.kernelPath)")
        }
        }
    }

    /// On a checkpoint whose weights are already bf16 values, bf16 decode with fp32 activations (every path but
    /// avx512bf16, which is capped off here) is lossless: same logits at every step as the fp32 path (1e-5).
    /// The avx512bf16 path (x rounded to bf16), where the CPU has it, stays within 3e-2.
    func testBF16DecodeIsExactOnBF16Checkpoint() throws {
        defer { ek_set_isa_limit(-1); Backend.decodeGEMVOnYMM = nil }
        for (limit, ymm) in [(EK_ISA_AVX2, false), (EK_ISA_AVX512, false), (EK_ISA_AVX512, true)] {
            ek_set_isa_limit(Int32(limit))
            Backend.decodeGEMVOnYMM = ymm
            let tolerance: Float = WeightFormat.bf16.kernelPath == "avx512bf16" ? 3e-2 : 1e-5
            try checkBF16Checkpoint(tolerance: tolerance)
        }
    }

    func checkBF16Checkpoint(tolerance: Float) throws {
        let dir = fixture("mu/gqa_mod")
        let (data, _, path) = try ConfigFile.read(folder: dir)
        let config = try ConfigFile.decode(MuConfig.self, from: data, path: path)
        let f32 = try MuModel(config: config, file: SafeTensorsFile(path: dir + "/model-bf16.safetensors"))
        let bf16 = try MuModel(config: config, file: SafeTensorsFile(path: dir + "/model-bf16.safetensors"))
        bf16.useBF16ForDecode()
        let prompts = [[86, 98, 35, 74, 27], [79, 64, 84]]
        let a = try f32.beginGeneration(prompts: prompts), b = try bf16.beginGeneration(prompts: prompts)
        for step in 0..<6 {
            XCTAssertLessThan(relativeError(b.logits.toArray(), a.logits.toArray()), tolerance, "step \(step)")
            let next = (0..<2).map { r in Int(ek_argmax_f32(a.logits.data + r * config.vocabSize, config.vocabSize)) }
            try a.advance(tokens: next)
            try b.advance(tokens: next)
        }
    }

    /// On fp32 weights, bf16 decode changes logits by the rounding of the weights only (the cost of the format).
    func testBF16DecodeQualityCostOnFP32Weights() throws {
        for (name, isMu) in [("gqa_mod", true), ("mu_decoder", false)] {
            let m1 = try ModelRegistry.load(folder: fixture("mu/\(name)"))
            let m2 = try ModelRegistry.load(folder: fixture("mu/\(name)"))
            try m2.useBF16ForDecode()
            let p = [Array(5..<17)]   // 12 tokens: the prompt pass takes the fp32 GEMM path (M > 8)
            let a = try m1.beginGeneration(prompts: p), b = try m2.beginGeneration(prompts: p)
            XCTAssertLessThan(relativeError(b.logits.toArray(), a.logits.toArray()), 0.1, "\(name): first token")
            try a.advance(tokens: [11]); try b.advance(tokens: [11])
            let err = relativeError(b.logits.toArray(), a.logits.toArray())
            XCTAssertGreaterThan(err, 0, name)
            XCTAssertLessThan(err, 0.1, "\(name): bf16 decode relative logit error \(err)")
        }
    }
}

final class ParallelElementwiseTests: XCTestCase {
    /// Large inputs take the multi-threaded paths; they must equal the single-threaded results exactly.
    func testParallelPathsEqualSerial() {
        var rng = SplitMix64(seed: 21)
        let n = 300 * 1024 + 7
        let x = (0..<n).map { _ in (rng.nextUnitFloat() - 0.5) * 8 }
        let w = (0..<1024).map { _ in rng.nextUnitFloat() }
        func run(threads: Int) -> ([Float], [Float], [Float]) {
            Backend.setThreads(threads)
            var g = x
            ek_gelu_tanh_f32(&g, n)
            var r = [Float](repeating: 0, count: 300 * 1024)
            ek_rmsnorm_f32(x, w, &r, 300, 1024, 1e-6)
            var s = Array(x[0..<(300 * 300)])
            let keep = (0..<300).map { UInt8($0 % 7 == 0 ? 0 : 1) }
            ek_softmax_masked_f32(&s, 300, 300, 300, 8, keep, 0)
            return (g, r, s)
        }
        let one = run(threads: 1), two = run(threads: 2)
        defer { Backend.setThreads(ProcessInfo.processInfo.activeProcessorCount) }
        XCTAssertEqual(one.0, two.0)
        XCTAssertEqual(one.1, two.1)
        XCTAssertEqual(one.2, two.2)
        var ref = x
        ek_gelu_tanh_f32_ref(&ref, n)
        XCTAssertLessThan(relativeError(two.0, ref), 1e-5)
    }
}

final class FusedEpilogueTests: XCTestCase {
    /// Prompt passes with fused GEMM epilogues (bias + GELU in one pass, residual accumulated by the GEMM) equal the
    /// separate passes (≤ 1e-5 relative: only the order of the bias addition differs).
    func testFusedEpiloguesMatchSeparatePasses() throws {
        defer { Ops.fusedEpilogues = true }
        for name in ["gqa_mod", "mu_decoder"] {
            let model = try ModelRegistry.load(folder: fixture("mu/\(name)"))
            let rows = [Array(3..<40)]
            func logits() throws -> [Float] {
                if let mu = model as? MuModel { return try mu.teacherForcedLogits(encoderIds: rows, decoderIds: [Array(1..<20)]).toArray() }
                return try (model as! MuDecoderModel).logits(rows).toArray()
            }
            Ops.fusedEpilogues = false
            let separate = try logits()
            Ops.fusedEpilogues = true
            let fused = try logits()
            XCTAssertLessThan(relativeError(fused, separate), 1e-5, name)
        }
        var rng = SplitMix64(seed: 4)
        let x = Tensor(shape: [12, 40], values: (0..<480).map { _ in rng.nextUnitFloat() - 0.5 })
        let w = Tensor(shape: [24, 40], values: (0..<960).map { _ in rng.nextUnitFloat() - 0.5 })
        let b = Tensor(shape: [24], values: (0..<24).map { _ in rng.nextUnitFloat() })
        let r0 = Tensor(shape: [12, 24], values: (0..<288).map { _ in rng.nextUnitFloat() })
        let want = Ops.add(r0, Ops.linear(x, weight: w, bias: b)).toArray()
        let r = r0.copy()
        Ops.linearAccumulate(into: r, x, weight: w, bias: b)
        XCTAssertLessThan(relativeError(r.toArray(), want), 1e-6)
        var g = Ops.linear(x, weight: w, bias: b).toArray()
        ek_gelu_tanh_f32(&g, g.count)
        XCTAssertLessThan(relativeError(Ops.linearGELU(x, weight: w, bias: b).toArray(), g), 1e-6)
    }
}
