import XCTest
import EncoreKernels
@testable import Encore

/// Decode GEMVs over quantized weights (gemv_quant.c): every dispatch level against the `_ref` twin, the twin
/// against fp32 math on the dequantized weights, and the quantizers against llama.cpp's bytes.
/// Tolerances are relative to the largest |value| of the reference result.
final class QuantizedKernelTests: XCTestCase {
    var rng = SplitMix64(seed: 5)
    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }

    static let formats: [WeightFormat] = [.bf16, .int8, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1]
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

    /// The dispatch levels the GEMV tests run: scalar, AVX2, AVX-VNNI, and AVX-512 with its zmm and its ymm decode
    /// kernels (`Backend.decodeGEMVOnYMM`: the fp32, bf16 and int8 rows differ; the default on Zen 4 is ymm).
    static let gemvLevels: [(Int32, Bool)] = [(Int32(EK_ISA_SCALAR), false), (Int32(EK_ISA_AVX2), false),
                                               (Int32(EK_ISA_AVXVNNI), false), (Int32(EK_ISA_AVX512), false),
                                               (Int32(EK_ISA_AVX512), true)]

    /// Each level (scalar, AVX2, AVX-VNNI, AVX-512: its zmm and its ymm decode kernels, `Backend.decodeGEMVOnYMM`)
    /// against the reference twin, ≤ 1e-5 (only the fp32 order of the per-block sums differs; the avx512bf16 path is
    /// compared with the bf16-rounded-x reference). int8 runs both x86 kernels: blocks grouped by 8 (the default) and
    /// block by block.
    func testEveryDispatchLevelMatchesReference() {
        defer { ek_set_isa_limit(-1); ek_set_int8_grouped(-1); Backend.decodeGEMVOnYMM = nil }
        var tested = Set<String>()
        for (f, grouped) in Self.formats.map({ ($0, Int32(1)) }) + [(WeightFormat.int8, Int32(0))] {   // int8: both x86 kernels
            ek_set_int8_grouped(grouped)
            for (m, n, k) in Self.shapes {
                let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n)
                let (q, s) = quantize(w, f, rows: n, cols: k)
                let ref = gemv(f, q, s, x, b, m: m, n: n, k: k, ref: true)
                var refXBF16 = [Float](repeating: 0, count: m * n)
                if f == .bf16 { q.withUnsafeBytes { _ = ek_gemv_bf16_xbf16_ref($0.baseAddress!.assumingMemoryBound(to: UInt16.self), x, b, &refXBF16, m, n, k) } }
                for (level, ymm) in Self.gemvLevels {
                    ek_set_isa_limit(level)
                    Backend.decodeGEMVOnYMM = ymm
                    let path = f.kernelPath
                    tested.insert("\(f.rawValue):\(path)")
                    let y = gemv(f, q, s, x, b, m: m, n: n, k: k)
                    let want = path == "avx512bf16" ? refXBF16 : ref
                    XCTAssertLessThan(relativeError(y, want), 1e-5, "\(f) \(path) \(m)x\(n)x\(k) grouped \(grouped)")
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

    /// The fp32, bf16 and int8 decode GEMVs run their ymm kernels by default on CPUs that split 512-bit instructions
    /// (AMD Zen 4, `ek_cpu_splits_zmm`), their zmm kernels on other AVX-512 CPUs; `decodeGEMVOnYMM` switches only those
    /// three formats (the 4-bit blocks, the K-quants and the prompt GEMMs keep their paths), and nil restores the rule.
    func testDecodeGEMVWidthRule() {
        defer { Backend.decodeGEMVOnYMM = nil }
        Backend.decodeGEMVOnYMM = nil
        let env = ProcessInfo.processInfo.environment["EK_GEMV_YMM"].flatMap { $0.first == "0" ? false : $0.first == "1" ? true : nil }
        XCTAssertEqual(Backend.decodeGEMVOnYMM, env ?? (ek_cpu_splits_zmm() != 0))
        #if arch(x86_64)
        let f = ek_cpu_features()
        #if os(Linux)   // the CPU's own description: an AMD of family 25 (19h) with avx512f, i.e. Zen 4
        if let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            let lines = info.split(separator: "\n").prefix { !$0.isEmpty }   // the first processor's block
            func field(_ name: String) -> String? {
                lines.first { $0.hasPrefix(name) }.flatMap { $0.split(separator: ":", maxSplits: 1).last }
                    .map { $0.trimmingCharacters(in: .whitespaces) }
            }
            let zen4 = field("vendor_id") == "AuthenticAMD" && field("cpu family") == "25"
                && (field("flags")?.split(separator: " ").contains("avx512f") ?? false)
            XCTAssertEqual(ek_cpu_splits_zmm() != 0, zen4, "ek_cpu_splits_zmm against /proc/cpuinfo")
        }
        #endif
        if ek_cpu_splits_zmm() != 0 { XCTAssertNotEqual(f & Int32(EK_CPU_AVX512F), 0, "a split zmm unit without AVX-512F") }
        Backend.decodeGEMVOnYMM = false
        let zmm = [WeightFormat.f32, .bf16, .int8, .q4_0, .q4_K].map(\.kernelPath)
        let prompt = (Backend.bf16GEMMPath, String(cString: ek_gemm_int8_path()))
        Backend.decodeGEMVOnYMM = true
        let ymm = [WeightFormat.f32, .bf16, .int8, .q4_0, .q4_K].map(\.kernelPath)
        XCTAssertEqual(Array(ymm[3...]), Array(zmm[3...]), "4-bit blocks and K-quants keep their kernels")
        XCTAssertEqual(prompt.0, Backend.bf16GEMMPath)
        XCTAssertEqual(prompt.1, String(cString: ek_gemm_int8_path()))
        if f & Int32(EK_CPU_AVX512F) != 0 && f & Int32(EK_CPU_AVX2_FMA) != 0 && f & Int32(EK_CPU_F16C) != 0 {
            XCTAssertEqual(zmm[0], "avx512f")
            XCTAssertTrue(zmm[1].hasPrefix("avx512"), zmm[1])
            XCTAssertEqual(Array(ymm[0..<2]), ["avx2", "avx2"])
            XCTAssertTrue(ymm[2] == "avx2" || ymm[2] == "avxvnni", ymm[2])
        } else {
            XCTAssertEqual(ymm, zmm, "no AVX-512: one width")
        }
        #endif
    }

    /// Software prefetch in the decode kernels: off by default where zmm is split (Zen 4), on elsewhere; the outputs
    /// are the same bytes with and without it (a prefetch cannot change them: this guards the switch's plumbing and the
    /// kernels' other paths, e.g. a prefetch placed inside a computation), on the default path of each format and of
    /// the x8 layouts, with the fp32 / bf16 / int8 rows at both widths.
    func testDecodePrefetchRuleAndSameBytes() {
        defer { Backend.decodeGEMVPrefetch = nil; Backend.decodeGEMVOnYMM = nil }
        Backend.decodeGEMVPrefetch = nil
        let env = ProcessInfo.processInfo.environment["EK_GEMV_PREFETCH"].flatMap { $0.first == "0" ? false : $0.first == "1" ? true : nil }
        XCTAssertEqual(Backend.decodeGEMVPrefetch, env ?? (ek_cpu_splits_zmm() == 0))
        let (m, n, k) = (1, 67, 32 * 19)   // 19 blocks: whole groups and a shorter last one
        let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n)
        for f in Self.formats {
            let (q, s) = quantize(w, f, rows: n, cols: k)
            for ymm in [false, true] {
                Backend.decodeGEMVOnYMM = ymm
                Backend.decodeGEMVPrefetch = true
                let on = gemv(f, q, s, x, b, m: m, n: n, k: k)
                Backend.decodeGEMVPrefetch = false
                let off = gemv(f, q, s, x, b, m: m, n: n, k: k)
                XCTAssertEqual(on, off, "\(f) \(f.kernelPath)")
                guard [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1].contains(f) else { continue }
                // the x8 layouts: the kernels with most of the prefetches
                let x8 = ek_x8_format(f.kernelID)
                var r = [UInt8](repeating: 0, count: q.count)
                XCTAssertEqual(ek_repack_x8(f.kernelID, q, &r, n, k), 0)
                var y8 = [[Float]]()
                for pf in [true, false] {
                    Backend.decodeGEMVPrefetch = pf
                    var y = [Float](repeating: .nan, count: m * n)
                    XCTAssertEqual(ek_gemv_quant(x8, r, nil, x, b, &y, m, n, k), 0)
                    y8.append(y)
                }
                XCTAssertEqual(y8[0], y8[1], "\(f) x8 \(f.kernelPath)")
            }
        }
    }

    /// Decode GEMVs split into about one row range per MiB, P to 16 per thread (P = 1 with EK_GEMV_TASKS_PER_THREAD
    /// unset; `Backend.decodeTasksPerThread` sets it), a multiple of the threads (one task under the threshold); a 17 MiB fp32 GEMV
    /// split 18 ways gives the same floats as on one thread (each row's sum is computed the same way whatever range
    /// holds it).
    func testGEMVTaskSplit() {
        defer { Backend.setThreads(2) }
        Backend.setThreads(2)
        defer { Backend.decodeTasksPerThread = nil }
        let longStreams = ek_cpu_is_intel() != 0 || (ek_cpu_features() & Int32(EK_CPU_AVX512F)) != 0
        XCTAssertEqual(ek_cpu_prefers_long_streams() != 0, longStreams, "Intel CPUs and CPUs with AVX-512F")
        let fewest = ProcessInfo.processInfo.environment["EK_GEMV_TASKS_PER_THREAD"].flatMap { Int($0) } ?? 1
        XCTAssertEqual(Backend.decodeTasksPerThread, fewest)
        XCTAssertEqual(ek_gemv_tasks(ek_parallel_min_bytes() - 1), 1)
        XCTAssertEqual(ek_gemv_tasks(1 << 20), 2 * fewest, "at least \(fewest) per thread")
        XCTAssertEqual(ek_gemv_tasks(4 << 20), max(4, 2 * fewest), "one per MiB, at least \(fewest) per thread")
        Backend.decodeTasksPerThread = 4
        XCTAssertEqual(ek_gemv_tasks(1 << 20), 8, "at least 4 per thread when set")
        Backend.decodeTasksPerThread = nil
        XCTAssertEqual(ek_gemv_tasks(1 << 20), 2 * fewest, "the default again")
        XCTAssertEqual(ek_gemv_tasks(12 << 20), 12)
        XCTAssertEqual(ek_gemv_tasks(9 << 20), 10, "a multiple of the threads")
        Backend.setThreads(3)
        XCTAssertEqual(ek_gemv_tasks(13 << 20), 15, "a multiple of the threads")
        Backend.setThreads(2)
        XCTAssertEqual(ek_gemv_tasks(100 << 20), 32, "at most 16 per thread")
        let n = 4352, k = 1024   // 17 MiB of fp32
        let w = randoms(n * k), x = randoms(k), b = randoms(n)
        var y2 = [Float](repeating: .nan, count: n), y1 = y2
        ek_gemv_f32(w, x, b, &y2, 1, n, k)
        Backend.setThreads(1)
        ek_gemv_f32(w, x, b, &y1, 1, n, k)
        XCTAssertEqual(y2, y1)
    }

    /// Widening a whole matrix (prompt passes with decode-format weights) splits its rows over the kernel threads:
    /// the same floats as widening it one row at a time (the serial path), for every format, with k both a multiple
    /// of 32 and not, and the x8 layouts; one thread gives them too.
    func testDequantizeRowsSplitMatchesRowByRow() {
        defer { Backend.setThreads(2) }
        for f in Self.formats {
            for (n, k) in [(300, 512), (257, 300)] {
                var (q, s) = quantize(randoms(n * k), f, rows: n, cols: k)
                var layout = f.kernelID
                if ek_x8_format(f.kernelID) >= 0 && k % 32 == 0 {   // the x8 layout decode streams
                    var r = q
                    XCTAssertEqual(ek_repack_x8(ek_x8_format(f.kernelID), q, &r, n, k), 0)
                    q = r
                    layout = ek_x8_format(f.kernelID)
                }
                var rowByRow = [Float](repeating: .nan, count: n * k)
                let rb = f.rowBytes(k)
                q.withUnsafeBytes { qb in
                    for r in 0..<n {
                        rowByRow.withUnsafeMutableBufferPointer { d in
                            XCTAssertEqual(ek_dequantize_rows(layout, qb.baseAddress! + r * rb, f == .int8 ? [s[r]] : nil,
                                                              d.baseAddress! + r * k, 1, k), 0)
                        }
                    }
                }
                for threads in [2, 1] {
                    Backend.setThreads(threads)
                    var whole = [Float](repeating: .nan, count: n * k)
                    XCTAssertEqual(ek_dequantize_rows(layout, q, f == .int8 ? s : nil, &whole, n, k), 0)
                    XCTAssertEqual(whole, rowByRow, "\(f) layout \(layout) \(n)x\(k) threads \(threads)")
                }
            }
        }
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
        for f in [WeightFormat.int8, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1] {
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
                    case .q5_0: bound = amax / 16 * 1.01                                        // its clamp at 31
                    case .q5_1: bound = (block.max()! - block.min()!) / 62 * 1.01 + amax * 1e-3
                    case .f32, .q4_K, .q5_K, .q6_K: bound = 0     // not in Self.formats
                    }
                    XCTAssertLessThanOrEqual(abs(back[i] - w[i]), bound, "\(f) [\(r), \(j)]")
                }
            }
        }
    }

    /// Encore's Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 quantizers write the bytes llama.cpp's reference quantizers write
    /// (golden: tools/goldens/make_quantizer_goldens.py, via the `gguf` package).
    func testQuantizersMatchLlamaCppBytes() throws {
        let file = try GGUFModelFile(path: fixture("gguf/quantizer.gguf"))
        for f in [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0, .q5_1] {
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
        for (name, f) in [("q8_0", WeightFormat.q8_0), ("q4_0", .q4_0), ("q4_1", .q4_1), ("q5_0", .q5_0), ("q5_1", .q5_1)] {
            let info = try XCTUnwrap(file.tensors[name])
            let cols = info.shape.last!, rows = info.elementCount / cols
            var out = [Float](repeating: 0, count: rows * cols)
            XCTAssertEqual(ek_dequantize_rows(f.kernelID, try file.rawBytes(name).baseAddress, nil, &out, rows, cols), 0)
            XCTAssertEqual(out, try file.tensor(name + ".expected").toArray(), name)
        }
    }

    /// The x8 layouts (Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 blocks regrouped by 8, ek_repack_x8): the regrouping round-trips byte for
    /// byte, dequantizes to the same values, and every dispatch level on it matches the ggml-order reference
    /// twin ≤ 1e-5 (only the fp32 order of the per-block sums differs; short last groups, odd block counts and
    /// several activation rows included). Also the reference twin on x8 equals the one on ggml order exactly.
    func testRegroupedLayoutsMatchReference() {
        defer { ek_set_isa_limit(-1); Backend.decodeGEMVOnYMM = nil }
        var tested = Set<String>()
        // last groups of every size 1…7 blocks (k = 32 * (8q + g)): the masked tail path of the x8 kernels
        let shapes = Self.shapes + [(1, 33, 32 * 19), (2, 50, 576), (5, 17, 32 * 13), (1, 9, 32 * 8), (3, 64, 1536),
                                    (1, 20, 32 * 14), (2, 21, 32 * 15), (1, 11, 32 * 9), (3, 12, 32 * 12), (1, 30, 32 * 6)]
        for f in [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0, .q5_1] {
            let x8 = ek_x8_format(f.kernelID)
            XCTAssertGreaterThan(x8, 0)
            for (m, n, k) in shapes {
                let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n)
                let (q, s) = quantize(w, f, rows: n, cols: k)
                var r = [UInt8](repeating: 0, count: q.count), back = r
                XCTAssertEqual(ek_repack_x8(f.kernelID, q, &r, n, k), 0)
                XCTAssertEqual(ek_unpack_x8(x8, r, &back, n, k), 0)
                XCTAssertEqual(back, q, "\(f) \(n)x\(k): unpack(repack) differs")
                // (Q5 rows regroup only whole groups of 8 blocks; their last nb % 8 blocks stay as they are)
                if k > ((f == .q5_0 || f == .q5_1) ? 224 : 32) { XCTAssertNotEqual(r, q, "\(f) \(n)x\(k): regrouping changed nothing") }
                var d0 = [Float](repeating: 0, count: n * k), d1 = d0
                XCTAssertEqual(ek_dequantize_rows(f.kernelID, q, s, &d0, n, k), 0)
                XCTAssertEqual(ek_dequantize_rows(x8, r, s, &d1, n, k), 0)
                XCTAssertEqual(d0, d1, "\(f) \(n)x\(k): dequantized x8 differs")
                let ref = gemv(f, q, s, x, b, m: m, n: n, k: k, ref: true)
                var refX8 = [Float](repeating: .nan, count: m * n)
                XCTAssertEqual(ek_gemv_quant_ref(x8, r, nil, x, b, &refX8, m, n, k), 0)
                XCTAssertEqual(refX8, ref, "\(f) x8 reference twin")
                for (level, ymm) in Self.gemvLevels {
                    ek_set_isa_limit(level)
                    Backend.decodeGEMVOnYMM = ymm
                    tested.insert("\(f.rawValue):\(f.kernelPath)")
                    var y = [Float](repeating: .nan, count: m * n)
                    XCTAssertEqual(ek_gemv_quant(x8, r, nil, x, b, &y, m, n, k), 0)
                    XCTAssertLessThan(relativeError(y, ref), 1e-5, "\(f) x8 \(f.kernelPath) \(m)x\(n)x\(k)")
                }
            }
        }
        #if arch(x86_64)
        if ek_cpu_features() & Int32(EK_CPU_AVX2_FMA) != 0 {
            for f in [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0, .q5_1] { XCTAssertTrue(tested.contains("\(f.rawValue):avx2"), "\(f): AVX2 path not exercised") }
        }
        #endif
        print("x8 GEMV paths tested: \(tested.sorted().joined(separator: ", "))")
    }

    /// The Q8_K activation quantizer (K-quant GEMVs): AVX2 and plain C give identical bytes, scales and sums,
    /// incl. an all-zero block and exact .5 ties (round half to even).
    func testQ8KActivationQuantizerPathsAgree() {
        defer { ek_set_force_reference(0) }
        let m = 2, k = 768
        var x = randoms(m * k, scale: 2)
        for j in 256..<512 { x[j] = 0 }                            // block 1 of row 0 all zero
        x[768] = -127; x[769] = 1.5; x[770] = 2.5; x[771] = -0.5        // iscale = −127/−127 = 1: exact ties
        var out: [([Int8], [Float], [Int16])] = []
        for force in [Int32(0), 1] {
            ek_set_force_reference(force)
            var q = [Int8](repeating: 99, count: m * k), d = [Float](repeating: 9, count: m * k / 256), bs = [Int16](repeating: 9, count: m * k / 16)
            ek_quantize_activations_q8k(x, m, k, &q, &d, &bs)
            out.append((q, d, bs))
        }
        XCTAssertEqual(out[0].0, out[1].0, "quantized bytes")
        XCTAssertEqual(out[0].1, out[1].1, "scales")
        XCTAssertEqual(out[0].2, out[1].2, "sums of 16")
        XCTAssertEqual(Array(out[0].0[768..<772]), [-127, 2, 2, 0], "iscale·x rounded half to even")
        XCTAssertEqual(out[0].1[3], 1, "d = 1/iscale with iscale = −127/(value of largest |x|)")
        XCTAssertEqual(out[0].1[1], 0)
        XCTAssertEqual(Array(out[0].0[256..<512]), [Int8](repeating: 0, count: 256))
        for g in 0..<(m * k / 16) { XCTAssertEqual(Int(out[0].2[g]), out[0].0[(16 * g)..<(16 * g + 16)].reduce(0) { $0 + Int($1) }, "bsum \(g)") }
    }

    /// The prompt GEMM over K-quant blocks as stored (`ek_gemm_q8_0`: Q4_K / Q5_K as 32-value blocks with scale d·sc
    /// and minimum, Q6_K as 16-value blocks with scale d·sc, against q8_0 / q8_1 activations per block of 32): at every
    /// dispatch level the twin's floats exactly (the same integer sums and FMAs in the same order), on random rows and
    /// on the mixed GGUF fixture's real K-quant matrices; and the twin within the activations' rounding of llama.cpp's
    /// own arithmetic (the Q8_K decode GEMV twin, 8 bits per 256: measured up to 6e-3 relative; bound 3e-2) and of fp32
    /// math on the dequantized weights (bound 3e-2), for 9–40 rows (the tile paths, ragged tiles, two k blocks).
    func testKQuantPromptGEMMs() throws {
        defer { ek_set_isa_limit(-1) }
        let file = try GGUFModelFile(path: fixture("tiny_llama/mixed.gguf"))
        var cases: [(WeightFormat, [UInt8], Int, Int, Int)] = []
        for f in [WeightFormat.q4_K, .q5_K, .q6_K] {
            for (m, n, k) in [(9, 37, 512), (40, 70, 256), (17, 33, 768)] { cases.append((f, randomKQuant(f, rows: n, cols: k), m, n, k)) }
        }
        for (name, f) in [("blk.0.ffn_down.weight", WeightFormat.q6_K), ("blk.1.ffn_down.weight", .q4_K), ("blk.2.ffn_down.weight", .q5_K)] {
            XCTAssertEqual(file.tensors[name]?.type, f.ggmlType, name)
            cases.append((f, Array(try file.rawBytes(name)), 12, 64, 256))
        }
        var paths = Set<String>()
        for (f, w, m, n, k) in cases {
            let x = randoms(m * k, scale: 3), b = randoms(n)
            var twin = [Float](repeating: 0, count: m * n)
            XCTAssertEqual(ek_gemm_q8_0_ref(f.kernelID, w, x, b, &twin, m, n, k, Int32(EK_EPI_STORE)), 0, "\(f)")
            var llama = [Float](repeating: 0, count: m * n), exact = llama, wd = [Float](repeating: 0, count: n * k)
            for r0 in stride(from: 0, to: m, by: 8) {   // llama.cpp's Q8_K arithmetic (the decode GEMV's twin), ≤ 8 rows a call
                let rows = min(8, m - r0)
                var part = [Float](repeating: 0, count: rows * n)
                XCTAssertEqual(ek_gemv_quant_ref(f.kernelID, w, nil, Array(x[(r0 * k)..<((r0 + rows) * k)]), b, &part, rows, n, k), 0)
                llama.replaceSubrange((r0 * n)..<((r0 + rows) * n), with: part)
            }
            XCTAssertEqual(ek_dequantize_rows(f.kernelID, w, nil, &wd, n, k), 0)
            ek_gemv_f32_ref(wd, x, b, &exact, m, n, k)
            let toLlama = relativeError(twin, llama), toExact = relativeError(twin, exact)
            XCTAssertGreaterThan(toExact, 0, "\(f): activations are quantized")
            XCTAssertLessThan(toLlama, 3e-2, "\(f) \(m)x\(n)x\(k) vs llama.cpp's Q8_K arithmetic")
            XCTAssertLessThan(toExact, 3e-2, "\(f) \(m)x\(n)x\(k) vs fp32 on the dequantized weights")
            for level in [EK_ISA_SCALAR, EK_ISA_AVX2, EK_ISA_AVXVNNI, EK_ISA_AVX512] {
                ek_set_isa_limit(Int32(level))
                paths.insert(String(cString: ek_gemm_int8_path()))
                var y = [Float](repeating: 0, count: m * n)
                XCTAssertEqual(ek_gemm_q8_0(f.kernelID, w, x, b, &y, m, n, k, Int32(EK_EPI_STORE)), 0)
                XCTAssertEqual(y, twin, "\(f) \(m)x\(n)x\(k) on \(String(cString: ek_gemm_int8_path())): the twin's floats")
            }
        }
        print("K-quant prompt GEMM paths tested: \(paths.sorted().joined(separator: ", "))")
        XCTAssertTrue(paths.contains("scalar"))
        #if arch(x86_64)
        let f = ek_cpu_features()
        if f & Int32(EK_CPU_AVX2_FMA) != 0 && f & Int32(EK_CPU_F16C) != 0 { XCTAssertTrue(paths.contains("avx2"), "the AVX2 tiles not exercised") }
        if f & Int32(EK_CPU_AVX512F) != 0 && f & Int32(EK_CPU_AVX512BWVL) != 0 && f & Int32(EK_CPU_AVX512VNNI) != 0 {
            XCTAssertTrue(paths.contains("avx512vnni"), "the zmm tiles not exercised")
        }
        #endif
        var y = [Float](repeating: 0, count: 1)
        XCTAssertEqual(ek_gemm_q8_0(WeightFormat.q6_K.kernelID, randomKQuant(.q6_K, rows: 1, cols: 256), randoms(200), nil, &y, 1, 1, 200,
                                    Int32(EK_EPI_STORE)), -1, "K-quant rows need k % 256 == 0")
    }

    /// Random K-quant rows (random bytes, small f16 scales), as tools/goldens' random_kquant.
    func randomKQuant(_ f: WeightFormat, rows: Int, cols: Int) -> [UInt8] {
        var w = (0..<(rows * f.rowBytes(cols))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let bb = f == .q4_K ? 144 : f == .q5_K ? 176 : 210
        func f16(_ v: Float) -> [UInt8] { var h: UInt16 = 0; var x = v; ek_f32_to_f16(&x, &h, 1); return [UInt8(h & 0xFF), UInt8(h >> 8)] }
        for b in 0..<(rows * cols / 256) {
            if f == .q6_K {
                w.replaceSubrange((b * bb + 208)..<(b * bb + 210), with: f16(0.0005 + 0.001 * rng.nextUnitFloat()))
            } else {
                w.replaceSubrange((b * bb)..<(b * bb + 2), with: f16(0.0002 + 0.0004 * rng.nextUnitFloat()))
                w.replaceSubrange((b * bb + 2)..<(b * bb + 4), with: f16(0.0002 + 0.0004 * rng.nextUnitFloat()))
            }
        }
        return w
    }

    /// Q4_K/Q5_K/Q6_K GEMVs (llama.cpp's arithmetic against Q8_K activations): every dispatch level (scalar, AVX2,
    /// AVX-512BW) against the
    /// reference twin (weights dequantized in double from their integer parts) ≤ 1e-5; the twin against fp32
    /// math on the dequantized weights within the activation quantization (8 bits per block of 256: measured
    /// 2–8e-3 on random data, up to 2.2e-2 with 5 outputs of one super-block; bound 3e-2); also on the real
    /// K-quant blocks of the mixed GGUF fixture. Every row of a call equals, bit for bit, the row computed alone
    /// (the kernels walk four rows side by side, the leftover rows one at a time, in the same operations).
    func testKQuantGEMVs() throws {
        defer { ek_set_isa_limit(-1); Backend.decodeGEMVOnYMM = nil }
        var tested = Set<String>()
        let file = try GGUFModelFile(path: fixture("tiny_llama/mixed.gguf"))
        var cases: [(WeightFormat, [UInt8], Int, Int, Int)] = []
        for f in [WeightFormat.q4_K, .q5_K, .q6_K] {
            for (m, n, k) in [(1, 5, 256), (3, 37, 512), (2, 64, 1536), (8, 33, 256), (1, 300, 1024), (9, 7, 768)] {
                cases.append((f, randomKQuant(f, rows: n, cols: k), m, n, k))
            }
        }
        for (name, f) in [("blk.0.ffn_down.weight", WeightFormat.q6_K), ("blk.1.ffn_down.weight", .q4_K), ("blk.2.ffn_down.weight", .q5_K)] {
            XCTAssertEqual(file.tensors[name]?.type, f.ggmlType, name)
            cases.append((f, Array(try file.rawBytes(name)), 2, 64, 256))
        }
        for (f, w, m, n, k) in cases {
            let x = randoms(m * k, scale: 3), b = randoms(n)
            let ref = gemv(f, w, [], x, b, m: m, n: n, k: k, ref: true)
            var wd = [Float](repeating: 0, count: n * k), exact = [Float](repeating: 0, count: m * n)
            XCTAssertEqual(ek_dequantize_rows(f.kernelID, w, nil, &wd, n, k), 0)
            ek_gemv_f32_ref(wd, x, b, &exact, m, n, k)
            let err = relativeError(ref, exact)
            XCTAssertGreaterThan(err, 0, "\(f): activations should be quantized")
            XCTAssertLessThan(err, 3e-2, "\(f) \(m)x\(n)x\(k) reference vs fp32 on dequantized weights")
            for (level, ymm) in Self.gemvLevels {
                ek_set_isa_limit(level)
                Backend.decodeGEMVOnYMM = ymm
                tested.insert("\(f.rawValue):\(f.kernelPath)")
                let y = gemv(f, w, [], x, b, m: m, n: n, k: k)
                XCTAssertLessThan(relativeError(y, ref), 1e-5, "\(f) \(f.kernelPath) \(m)x\(n)x\(k)")
                // four rows side by side or one at a time: the same floats (each row alone runs the one-row loop)
                let rb = f.rowBytes(k)
                for r in 0..<n {
                    let alone = gemv(f, Array(w[(r * rb)..<((r + 1) * rb)]), [], x, [b[r]], m: m, n: 1, k: k)
                    for i in 0..<m where alone[i].bitPattern != y[i * n + r].bitPattern {
                        XCTFail("\(f) \(f.kernelPath) \(m)x\(n)x\(k): row \(r) input \(i) \(y[i * n + r]) in the whole call, \(alone[i]) alone")
                        break
                    }
                }
            }
        }
        var y = [Float](repeating: 0, count: 4)
        XCTAssertEqual(ek_gemv_quant(WeightFormat.q4_K.kernelID, [UInt8](repeating: 0, count: 4 * 144), nil, randoms(200), nil, &y, 1, 4, 200), -1,
                       "K-quant rows need k % 256 == 0")
        #if arch(x86_64)
        if ek_cpu_features() & Int32(EK_CPU_AVX2_FMA) != 0 {
            for f in [WeightFormat.q4_K, .q5_K, .q6_K] { XCTAssertTrue(tested.contains("\(f.rawValue):avx2"), "\(f): AVX2 path not exercised") }
        }
        if ek_cpu_features() & Int32(EK_CPU_AVX512F) != 0 && ek_cpu_features() & Int32(EK_CPU_AVX512BWVL) != 0 {
            for f in [WeightFormat.q4_K, .q5_K, .q6_K] { XCTAssertTrue(tested.contains("\(f.rawValue):avx512bw"), "\(f): AVX-512 path not exercised") }
        }
        #endif
        print("K-quant GEMV paths tested: \(tested.sorted().joined(separator: ", "))")
    }

    /// QuantizedMatrix regroups by default and its products and dequantization match the ggml-order matrix.
    func testQuantizedMatrixRegroups() {
        let (n, k) = (70, 608)
        let w = Tensor(zeros: [n, k]), x = Tensor(zeros: [3, k])
        for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
        for i in 0..<x.count { x.data[i] = rng.nextUnitFloat() * 2 - 1 }
        for f in [WeightFormat.q8_0, .q4_0, .q4_1] {
            let a = QuantizedMatrix(w, format: f, regroup: false), b = QuantizedMatrix(w, format: f)
            XCTAssertFalse(a.isRegrouped)
            XCTAssertTrue(b.isRegrouped)
            XCTAssertEqual(a.dequantized().toArray(), b.dequantized().toArray(), "\(f)")
            XCTAssertEqual(a.dequantizedRows([5, 0, 69]).toArray(), Array(a.dequantized().toArray()[(5 * k)..<(6 * k)] + a.dequantized().toArray()[0..<k] + a.dequantized().toArray()[(69 * k)..<(70 * k)]))
            XCTAssertEqual(b.dequantizedRows([5, 0, 69]).toArray(), a.dequantizedRows([5, 0, 69]).toArray(), "\(f)")
            let ya = Ops.linearQuantized(x, weight: a, bias: nil).toArray(), yb = Ops.linearQuantized(x, weight: b, bias: nil).toArray()
            XCTAssertLessThan(relativeError(yb, ya), 1e-5, "\(f)")
        }
    }

    /// Q5 matrices are regrouped only where the AVX-512 VNNI kernel reads the x8 layout (ek_x8_pays: the AVX2 paths
    /// would unpack each row per call); Q8_0/Q4_x always. Either layout gives the same products.
    func testQ5RegroupsOnlyForTheAVX512Kernel() {
        defer { ek_set_isa_limit(-1) }
        let w = Tensor(zeros: [16, 320]), x = Tensor(zeros: [1, 320])
        for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
        for i in 0..<x.count { x.data[i] = rng.nextUnitFloat() * 2 - 1 }
        ek_set_isa_limit(Int32(EK_ISA_AVX2))
        let plain = QuantizedMatrix(w, format: .q5_0)
        XCTAssertFalse(plain.isRegrouped, "Q5_0 on the AVX2 path: ggml order")
        XCTAssertTrue(QuantizedMatrix(w, format: .q4_0).isRegrouped)
        ek_set_isa_limit(-1)
        let zmm = String(cString: ek_gemv_path(Int32(EK_WF_Q5_0X8))) == "avx512vnni"
        let fresh = QuantizedMatrix(w, format: .q5_0)
        XCTAssertEqual(fresh.isRegrouped, zmm)
        XCTAssertLessThan(relativeError(Ops.linearQuantized(x, weight: fresh, bias: nil).toArray(),
                                        Ops.linearQuantized(x, weight: plain, bias: nil).toArray()), 1e-5)
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

    /// Several matrices against one x in one call (ek_gemv_quant_multi: q/k/v, gate/up): every matrix's result has
    /// the same bytes as its own ek_gemv_quant call, at every dispatch level, in ggml order and regrouped, with task
    /// runs that straddle the matrices' boundaries (2 threads, > 32 KiB of weights) and with one task (small
    /// shapes); and matches the `_ref` twin (each matrix through ek_gemv_quant_ref) within 1e-5 of the largest value.
    func testSharedActivationGEMVMatchesSeparateCalls() {
        defer { ek_set_isa_limit(-1); ek_set_threads(0); Backend.decodeGEMVOnYMM = nil }
        ek_set_threads(2)
        let cases: [(m: Int, ns: [Int], k: Int)] = [(1, [100, 37, 55], 1024), (3, [64, 32, 32], 320), (1, [5, 7], 40),
                                                   (2, [300, 300], 512), (8, [9, 1, 17, 3], 96)]
        for f in Self.formats {
            for regroup in [false, true] where regroup == false || ek_x8_format(f.kernelID) >= 0 {
                for (m, ns, k) in cases {
                    let ws = ns.map { n -> QuantizedMatrix in
                        let t = Tensor(zeros: [n, k])
                        for i in 0..<t.count { t.data[i] = rng.nextUnitFloat() - 0.5 }
                        return QuantizedMatrix(t, format: f, regroup: regroup)
                    }
                    let bs: [Tensor?] = ns.enumerated().map { j, n in j == 1 ? nil : Tensor(shape: [n], values: randoms(n)) }
                    let x = Tensor(shape: [m, k], values: randoms(m * k, scale: 3))
                    let refs: [[Float]] = zip(ws, bs).map { w, b in
                        var y = [Float](repeating: .nan, count: m * w.rows)
                        XCTAssertEqual(ek_gemv_quant_ref(w.layoutID, w.data, w.scales, x.data, b?.data, &y, m, w.rows, k), 0)
                        return y
                    }
                    var multiRef = ns.map { [Float](repeating: .nan, count: m * $0) }
                    let rc = multiRef.withUnsafeMutableBufferPointer { yb -> Int32 in
                        var ys: [UnsafeMutablePointer<Float>?] = []
                        for j in yb.indices { ys.append(yb[j].withUnsafeMutableBufferPointer { $0.baseAddress }) }
                        return ek_gemv_quant_multi_ref(ws[0].layoutID, ws.count, ws.map { Optional($0.data) }, ws.map(\.scales),
                                                       bs.map { $0.map { UnsafePointer($0.data) } }, ys, ns, x.data, m, k)
                    }
                    XCTAssertEqual(rc, 0)
                    XCTAssertEqual(multiRef, refs, "\(f) multi _ref twin")
                    for (level, ymm) in Self.gemvLevels {
                        ek_set_isa_limit(level)
                        Backend.decodeGEMVOnYMM = ymm
                        let shared = Ops.linearQuantizedShared(x, weights: ws, biases: bs).map { $0.toArray() }
                        for (j, w) in ws.enumerated() {
                            let alone = Ops.linearQuantized(x, weight: w, bias: bs[j]).toArray()
                            XCTAssertEqual(shared[j], alone, "\(f) regroup \(regroup) \(f.kernelPath) m\(m) \(ns) k\(k): matrix \(j)")
                            // vdpbf16ps multiplies x rounded to bf16: that path against the bf16-x twin
                            var want = refs[j]
                            if f == .bf16 && f.kernelPath == "avx512bf16" {
                                _ = ek_gemv_bf16_xbf16_ref(w.data.assumingMemoryBound(to: UInt16.self), x.data, bs[j]?.data, &want, m, w.rows, k)
                            }
                            XCTAssertLessThan(relativeError(shared[j], want), 1e-5, "\(f) \(f.kernelPath) matrix \(j) vs _ref")
                        }
                    }
                }
            }
        }
        // count outside 1…EK_GEMV_MULTI_MAX is rejected
        let x = [Float](repeating: 1, count: 32)
        XCTAssertEqual(ek_gemv_quant_multi(WeightFormat.q8_0.kernelID, 0, nil, nil, nil, nil, nil, x, 1, 32), -1)
        XCTAssertEqual(ek_gemv_quant_multi(WeightFormat.q8_0.kernelID, Int(EK_GEMV_MULTI_MAX) + 1, nil, nil, nil, nil, nil, x, 1, 32), -1)
    }
}
