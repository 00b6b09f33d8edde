import XCTest
import EncoreKernels
@testable import Encore

/// Decode GEMVs over quantized weights (gemv_quant.c): every dispatch level against the `_ref` twin, the twin
/// against fp32 math on the dequantized weights, and the quantizers against llama.cpp's bytes.
/// Tolerances are relative to the largest |value| of the reference result.
final class QuantizedKernelTests: XCTestCase {
    var rng = SplitMix64(seed: 5)
    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }

    static let formats: [WeightFormat] = [.bf16, .int8, .q8_0, .q4_0, .q4_1]
    /// Odd shapes: k not a multiple of 32 (padded blocks), one and several activation rows, one row per task.
    static let shapes: [(m: Int, n: Int, k: Int)] = [(1, 1, 1), (1, 5, 7), (1, 37, 48), (3, 130, 64), (5, 100, 100),
                                                      (8, 300, 257), (1, 300, 1024), (2, 40, 4096), (9, 17, 96)]

    func quantize(_ w: [Float], _ f: WeightFormat, rows: Int, cols: Int) -> ([UInt8], [Float]) {
        var q = [UInt8](repeating: 0, count: rows * f.rowBytes(cols)), s = [Float](repeating: 0, count: rows)
        XCTAssertEqual(ek_quantize_rows(f.kernelID, w, &q, &s, rows, cols), 0)
        return (q, s)
    }

    func gemv(_ f: WeightFormat, _ q: [UInt8], _ s: [Float], _ x: [Float], _ b: [Float]?, m: Int, n: Int, k: Int, ref: Bool = false) -> [Float] {
        var y = [Float](repeating: .nan, count: m * n)
        let rc = ref ? ek_gemv_quant_ref(f.kernelID, q, s, x, b, &y, m, n, k) : ek_gemv_quant(f.kernelID, q, s, x, b, &y, m, n, k)
        XCTAssertEqual(rc, 0)
        return y
    }

    /// Each level (scalar, AVX2, AVX-VNNI, AVX-512) against the reference twin, ≤ 1e-5 (only the fp32 order of
    /// the per-block sums differs; the avx512bf16 path is compared with the bf16-rounded-x reference).
    func testEveryDispatchLevelMatchesReference() {
        defer { ek_set_isa_limit(-1) }
        var tested = Set<String>()
        for f in Self.formats {
            for (m, n, k) in Self.shapes {
                let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n)
                let (q, s) = quantize(w, f, rows: n, cols: k)
                let ref = gemv(f, q, s, x, b, m: m, n: n, k: k, ref: true)
                var refXBF16 = [Float](repeating: 0, count: m * n)
                if f == .bf16 { q.withUnsafeBytes { _ = ek_gemv_bf16_xbf16_ref($0.baseAddress!.assumingMemoryBound(to: UInt16.self), x, b, &refXBF16, m, n, k) } }
                for level in [EK_ISA_SCALAR, EK_ISA_AVX2, EK_ISA_AVXVNNI, EK_ISA_AVX512] {
                    ek_set_isa_limit(Int32(level))
                    let path = f.kernelPath
                    tested.insert("\(f.rawValue):\(path)")
                    let y = gemv(f, q, s, x, b, m: m, n: n, k: k)
                    let want = path == "avx512bf16" ? refXBF16 : ref
                    XCTAssertLessThan(relativeError(y, want), 1e-5, "\(f) \(path) \(m)x\(n)x\(k)")
                }
            }
        }
        #if arch(x86_64)
        if ek_cpu_features() & Int32(EK_CPU_AVX2_FMA) != 0 {
            for f in Self.formats { XCTAssertTrue(tested.contains("\(f.rawValue):avx2"), "\(f): AVX2 path not exercised") }
        }
        #endif
        for f in Self.formats { XCTAssertTrue(tested.contains("\(f.rawValue):scalar"), "\(f): scalar path not exercised") }
        print("quantized GEMV paths tested: \(tested.sorted().joined(separator: ", "))")
    }

    /// The reference twin against fp32 math on the dequantized weights (fp32 x): the difference is the
    /// activation quantization alone (8 bits per block of 32: measured 3–5e-3 on random data; bound 1.2e-2),
    /// none for bf16 with fp32 x (1e-6).
    func testReferenceMatchesDequantizedMath() {
        for f in Self.formats {
            for (m, n, k) in Self.shapes where n * k >= 64 {
                let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n)
                let (q, s) = quantize(w, f, rows: n, cols: k)
                var wd = [Float](repeating: 0, count: n * k)
                XCTAssertEqual(ek_dequantize_rows(f.kernelID, q, s, &wd, n, k), 0)
                var exact = [Float](repeating: 0, count: m * n)
                ek_gemv_f32_ref(wd, x, b, &exact, m, n, k)
                let ref = gemv(f, q, s, x, b, m: m, n: n, k: k, ref: true)
                let err = relativeError(ref, exact)
                XCTAssertLessThan(err, f == .bf16 ? 1e-6 : 1.2e-2, "\(f) \(m)x\(n)x\(k)")
                if f != .bf16 && k >= 64 { XCTAssertGreaterThan(err, 0, "\(f): activations should be quantized") }
            }
        }
    }

    /// The GEMVs' activation quantizer: the AVX2 path writes the same bytes, scales and offsets as the plain-C
    /// path (exact), on random rows with a ragged tail block and on ties (x·127/amax = k + 0.5, where
    /// round-half-even gives 2, −4, 0, 2 and any other rounding differs), and its values are right.
    func testActivationQuantizerPathsAgree() {
        let k = 200, m = 3, nb = (k + 31) / 32
        var x = randoms(m * k, scale: 3)
        for (j, v) in [127, 2.5, -3.5, 0.5, 1.5].enumerated() { x[j] = Float(v) }   // block 0: amax 127 → id 1
        defer { ek_set_force_reference(0) }
        for f in [WeightFormat.int8, .q8_0, .q4_0, .q4_1] {
            var out: [([Int8], [Float], [Float])] = []
            for force in [Int32(0), 1] {
                ek_set_force_reference(force)
                var q = [Int8](repeating: 99, count: m * nb * 32), d = [Float](repeating: 0, count: m * nb), c = d
                ek_quantize_activations(f.kernelID, x, m, k, &q, &d, &c)
                out.append((q, d, c))
            }
            XCTAssertEqual(out[0].0, out[1].0, "\(f): quantized bytes")
            XCTAssertEqual(out[0].1, out[1].1, "\(f): scales")
            XCTAssertEqual(out[0].2, out[1].2, "\(f): offsets")
            XCTAssertEqual(Array(out[0].0[0..<5]), [127, 2, -4, 0, 2], "\(f): round half to even")
            XCTAssertEqual(out[0].0[nb * 32 - 1], 0, "\(f): tail padding")
        }
    }

    /// Round trip of each quantizer within its format's step: int8/q8_0 ≤ amax/254 (+ f16 scale rounding),
    /// q4_1 ≤ (max−min)/30, q4_0 ≤ amax/8 (its clamp at 15), bf16 ≤ 2^-9 relative.
    func testQuantizerRoundTrip() {
        let rows = 7, cols = 200
        let w = randoms(rows * cols, scale: 2)
        for f in Self.formats {
            let (q, s) = quantize(w, f, rows: rows, cols: cols)
            var back = [Float](repeating: 0, count: rows * cols)
            XCTAssertEqual(ek_dequantize_rows(f.kernelID, q, s, &back, rows, cols), 0)
            for r in 0..<rows {
                for j in 0..<cols {
                    let i = r * cols + j
                    let blk = (j / 32) * 32, end = min(blk + 32, cols)
                    let block = w[(r * cols + blk)..<(r * cols + end)], row = w[(r * cols)..<(r * cols + cols)]
                    let amax = block.map(abs).max()!
                    let bound: Float
                    switch f {
                    case .bf16: bound = abs(w[i]) / 256
                    case .int8: bound = row.map(abs).max()! / 254 * 1.001
                    case .q8_0: bound = amax / 254 * 1.002 + amax * 1e-3
                    case .q4_1: bound = (block.max()! - block.min()!) / 30 * 1.01 + amax * 1e-3
                    case .q4_0: bound = amax / 8 * 1.01
                    case .f32: bound = 0
                    }
                    XCTAssertLessThanOrEqual(abs(back[i] - w[i]), bound, "\(f) [\(r), \(j)]")
                }
            }
        }
    }

    /// Encore's Q8_0/Q4_0/Q4_1 quantizers write the bytes llama.cpp's reference quantizers write
    /// (golden: tools/goldens/make_quantizer_goldens.py, via the `gguf` package).
    func testQuantizersMatchLlamaCppBytes() throws {
        let file = try GGUFModelFile(path: fixture("gguf/quantizer.gguf"))
        for f in [WeightFormat.q8_0, .q4_0, .q4_1] {
            let input = try file.tensor(f.rawValue + ".input")                    // [rows, 96]
            let rows = input.shape[0], cols = input.shape[1]
            let (q, _) = quantize(input.toArray(), f, rows: rows, cols: cols)
            let want = Array(try file.rawBytes(f.rawValue))
            XCTAssertEqual(q.count, want.count, f.rawValue)
            XCTAssertEqual(q, want, "\(f): bytes differ from llama.cpp's quantizer")
        }
    }

    /// The GGUF dequantizer and the new row dequantizer agree on ggml blocks (the kernels read the same bytes).
    func testRowDequantizerMatchesGGUFReader() throws {
        let file = try GGUFModelFile(path: fixture("gguf/quant_types.gguf"))
        for (name, f) in [("q8_0", WeightFormat.q8_0), ("q4_0", .q4_0), ("q4_1", .q4_1)] {
            let info = try XCTUnwrap(file.tensors[name])
            let cols = info.shape.last!, rows = info.elementCount / cols
            var out = [Float](repeating: 0, count: rows * cols)
            XCTAssertEqual(ek_dequantize_rows(f.kernelID, try file.rawBytes(name).baseAddress, nil, &out, rows, cols), 0)
            XCTAssertEqual(out, try file.tensor(name + ".expected").toArray(), name)
        }
    }

    /// A second call with the same shape reuses the activation buffer; calls stay correct when it grows.
    func testActivationBufferGrowsAndIsReused() {
        for (m, k) in [(1, 64), (8, 4096), (2, 100)] {
            let n = 33
            let w = randoms(n * k), x = randoms(m * k)
            let (q, s) = quantize(w, .q4_1, rows: n, cols: k)
            XCTAssertLessThan(relativeError(gemv(.q4_1, q, s, x, nil, m: m, n: n, k: k), gemv(.q4_1, q, s, x, nil, m: m, n: n, k: k, ref: true)), 1e-5)
        }
    }
}
