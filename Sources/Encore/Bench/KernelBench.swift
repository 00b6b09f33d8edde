import Foundation
import EncoreKernels

/// Measures the machine's ceilings and Encore's kernels against them: memory read bandwidth (the limit of
/// decode), BLAS GEMM throughput and the FMA / int8 instruction peaks (the limits of prefill), and the decode GEMV's
/// bandwidth.
public enum KernelBench {
    public struct Figures: Sendable {
        /// Sequential read bandwidth over a 512 MiB buffer (GB/s): the largest of ``readSamples``.
        public var readGBps: Double
        /// Every sample of the read ceiling taken in this run (GB/s): before the models run, and again after them
        /// (``addReadSample(_:)``), since the host's bandwidth moves by ±20% over minutes.
        public var readSamples: [Double] = []
        /// Adds a read-ceiling sample; ``readGBps`` becomes the largest.
        public mutating func addReadSample(_ gbps: Double) {
            readSamples.append(gbps)
            readGBps = readSamples.max()!
        }
        /// fp32 GEMM 512×4096×1024 via BLAS (GFLOP/s).
        public var gemmGFLOPs: Double
        /// Decode GEMV 4096×1024 and 32128×1024 from cold weights (GB/s of weights).
        public var gemvGBps: Double
        public var gemvLMHeadGBps: Double
        /// Decode GEMV 4096×1024 from cold weights in each requested decode format (GB/s of weight bytes).
        public var gemvFormatGBps: [(format: WeightFormat, gbps: Double)] = []
        /// int8 prompt-pass GEMM 512×4096×1024 (`ek_gemm_int8`, GOP/s), when int8 prompt weights are benchmarked.
        public var int8GemmGOPs: Double? = nil
        /// The same shape over blocks (`ek_gemm_q8_0` on Q8_0, Q4_0 or Q4_1, GOP/s), for each block format int8
        /// prompts run on.
        public var blockGemmGOPs: [(format: WeightFormat, gops: Double)] = []
        /// The Q8_0 entry of ``blockGemmGOPs``.
        public var q8GemmGOPs: Double? { blockGemmGOPs.first { $0.format == .q8_0 }?.gops }
        /// The measured rate of the prompt GEMM that runs on `format` (`.int8` or a block format; nil if not measured).
        public func promptGemmGOPs(_ format: WeightFormat) -> Double? {
            format == .int8 ? int8GemmGOPs : blockGemmGOPs.first { $0.format == format }?.gops
        }
        /// Instruction ceilings on the same threads, registers only (`ek_peak_fma_gflops`, `ek_peak_int8_gops`): fp32
        /// FMA GFLOP/s and the instructions of the int8 GEMM's tile on this CPU in GOP/s (the AVX2 mix or vpdpbusd; nil
        /// for NEON tiles).
        public var fmaPeakGFLOPs: Double = 0
        public var int8PeakGOPs: Double? = nil
        /// vdpbf16ps chains (GFLOP/s) where the CPU has AVX512-BF16 (`ek_peak_bf16_gflops`), else nil.
        public var bf16PeakGFLOPs: Double? = nil

        public var json: [String: Any] {
            ["read_gb_per_s": readGBps, "read_gb_per_s_samples": readSamples, "gemm_gflop_per_s": gemmGFLOPs, "gemv_gb_per_s": gemvGBps, "gemv_lm_head_gb_per_s": gemvLMHeadGBps,
             "gemv_format_gb_per_s": Dictionary(uniqueKeysWithValues: gemvFormatGBps.map { ($0.format.rawValue, $0.gbps) }),
             "gemv_format_paths": Dictionary(uniqueKeysWithValues: gemvFormatGBps.map { ($0.format.rawValue, $0.format.kernelPath) }),
             "int8_gemm_gop_per_s": int8GemmGOPs as Any, "int8_gemm_path": Backend.int8GEMMPath, "q8_0_gemm_gop_per_s": q8GemmGOPs as Any,
             "block_gemm_gop_per_s": Dictionary(uniqueKeysWithValues: blockGemmGOPs.map { ($0.format.rawValue, $0.gops) }), "fma_peak_gflop_per_s": fmaPeakGFLOPs,
             "int8_peak_gop_per_s": int8PeakGOPs as Any, "bf16_peak_gflop_per_s": bf16PeakGFLOPs as Any]
        }
    }

    static func best(_ reps: Int, _ body: () -> Void) -> Double {
        var b = Double.infinity
        for _ in 0..<reps {
            let t0 = now()
            body()
            b = min(b, now() - t0)
        }
        return b
    }

    /// Bytes of weights a "cold" measurement rotates through: 192 MiB, or twice the last-level cache where that is
    /// larger (the Intel Xeon of sessions 11-15 reports 260 MiB of L3, which could hold most of a 192 MiB rotation),
    /// at most 1 GiB.
    public static let coldBytes: Int = min(1 << 30, max(192 << 20, 2 * lastLevelCacheBytes))

    /// The last-level cache's size (Linux: /sys/devices/system/cpu/cpu0/cache/index3/size, e.g. "266240K"), or 0.
    static var lastLevelCacheBytes: Int {
        guard let text = try? String(contentsOfFile: "/sys/devices/system/cpu/cpu0/cache/index3/size", encoding: .utf8) else { return 0 }
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let unit = t.last.map { ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30][String($0)] ?? 1 } ?? 1
        return (Int(t.filter(\.isNumber)) ?? 0) * unit
    }

    /// The read ceiling: `ek_sum_f32` (four streams per thread) over 512 MiB (or ``coldBytes`` when larger), touched
    /// first, best of `reps` (GB/s).
    public static func readCeilingGBps(reps: Int = 5) -> Double { readCeilingGBps(over: touchedBuffer(), reps: reps) }

    /// The read ceiling over `big` (a buffer larger than the caches, already touched).
    static func readCeilingGBps(over big: Tensor, reps: Int) -> Double {
        var sink: Float = 0
        let t = best(reps) { sink += ek_sum_f32(big.data, big.count) }
        if sink == .infinity { print("") }
        return Double(big.count * 4) / t / 1e9
    }

    /// 512 MiB of fp32 (``coldBytes`` when larger), every page touched.
    static func touchedBuffer() -> Tensor {
        let big = Tensor(zeros: [max(512 << 20, coldBytes) / 4])
        for i in stride(from: 0, to: big.count, by: 1024) { big.data[i] = 1 }
        return big
    }

    /// GB/s of one format's 4096×1024 decode GEMV, rotating through copies totalling ≥ ``coldBytes`` (cold weights).
    public static func gemvGBps(_ format: WeightFormat) -> Double {
        let (n, k) = (4096, 1024)
        var w = Tensor(zeros: [n, k])
        var rng = SplitMix64(seed: 9)
        for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
        let bytes = format == .f32 ? n * k * 4 : format.matrixBytes(rows: n, columns: k)
        let copies = max(12, coldBytes / bytes)
        let x = Tensor(zeros: [1, k])
        for i in 0..<k { x.data[i] = rng.nextUnitFloat() }
        var idx = 0
        let t: Double
        if format == .f32 {
            let mats = (0..<copies).map { _ in w.copy() }
            t = best(copies) { _ = Ops.linear(x, weight: mats[idx % copies], bias: nil); idx += 1 }
        } else {
            let mats = (0..<copies).map { _ in QuantizedMatrix(w, format: format) }
            t = best(copies) { _ = Ops.linearQuantized(x, weight: mats[idx % copies], bias: nil); idx += 1 }
        }
        w = Tensor(zeros: [1])
        return Double(bytes) / t / 1e9
    }

    /// The int8 prompt GEMM 512×4096×1024 (the fp32 GEMM's shape, random weights) on int8 rows (`format` .int8) or blocks (.q8_0, .q4_0, .q4_1), GOP/s.
    public static func int8GemmGOPs(format: WeightFormat = .int8) -> Double {
        precondition(format.hasInt8PromptGEMM, "int8GemmGOPs: \(format) has no int8 prompt GEMM")
        let (m, n, k) = (512, 4096, 1024)
        var rng = SplitMix64(seed: 10)
        let w = Tensor(zeros: [n, k]), x = Tensor(zeros: [m, k])
        for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
        for i in 0..<x.count { x.data[i] = rng.nextUnitFloat() - 0.5 }
        let q = QuantizedMatrix(w, format: format)
        let t = best(5) { _ = Ops.linearInt8(x, weight: q, bias: nil) }
        return 2.0 * Double(m * n * k) / t / 1e9
    }

    /// The GEMM an int8 prompt pass (``PromptWeights/int8``) runs: `.int8` (int8 rows) or the block format it
    /// multiplies as stored. Encoder-decoders: with an encoder format, its block GEMM if it has one, else int8 rows
    /// (an f32 or bf16 encoder gets int8 rows); without one, the file's blocks (`fileBlockFormat`, a
    /// `--keep-quantized` GGUF), else int8 rows. Decoder-only models: the decode format when it has one, else int8 rows.
    ///
    /// ```swift
    /// KernelBench.promptGEMMFormat(encoderDecoder: false, decodeFormat: .q4_0)            // .q4_0
    /// KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: .q4_0)             // .int8 (encoder rows)
    /// ```
    public static func promptGEMMFormat(encoderDecoder: Bool, decodeFormat: WeightFormat?, encoderFormat: WeightFormat? = nil,
                                        fileBlockFormat: WeightFormat? = nil) -> WeightFormat {
        let blocks: (WeightFormat?) -> WeightFormat? = { f in f.flatMap { $0.hasInt8PromptGEMM ? $0 : nil } }
        if encoderDecoder {
            if let encoderFormat { return blocks(encoderFormat) ?? .int8 }
            return blocks(fileBlockFormat) ?? .int8
        }
        return blocks(decodeFormat) ?? .int8
    }

    /// `blockPromptFormats`: the formats int8 prompt passes run on; the GEMM of each block format among them (Q8_0,
    /// Q4_0, Q4_1) is measured once.
    public static func run(formats: [WeightFormat] = [], int8Prompts: Bool = false, blockPromptFormats: [WeightFormat] = []) -> Figures {
        // instruction peaks first and again at the end (the larger counts: a busy sibling vCPU lowers single samples)
        var fma = ek_peak_fma_gflops(), i8peak = ek_peak_int8_gops()
        let big = touchedBuffer(), n = big.count   // the read ceiling's buffer, then the LM-head GEMV's weights
        let read = readCeilingGBps(over: big, reps: 5)
        // GEMM
        let (m, nn, k) = (512, 4096, 1024)
        let a = Tensor(zeros: [m, k]), w = Tensor(zeros: [nn, k]), c = Tensor(zeros: [m, nn])
        let tGemm = best(5) { BLAS.gemm(m: m, n: nn, k: k, a: a.data, b: w.data, transB: true, c: c.data) }
        let gemm = 2.0 * Double(m * nn * k) / tGemm / 1e9
        // GEMV from cold weights: rotate through ≥ 24 matrices (384 MiB, or coldBytes) so they come from DRAM
        let rotation = max(24, coldBytes / (4096 * 1024 * 4))
        let mats = (0..<rotation).map { _ in Tensor(zeros: [4096, 1024]) }
        let x = Tensor(zeros: [1024]), y = Tensor(zeros: [4096])
        var idx = 0
        let tGemv = best(rotation) {
            ek_gemv_f32(mats[idx % rotation].data, x.data, nil, y.data, 1, 4096, 1024)
            idx += 1
        }
        let gemv = Double(4096 * 1024 * 4) / tGemv / 1e9
        let head = big.reshaped([n / 1024, 1024])
        let yh = Tensor(zeros: [32128])
        var off = 0
        let tHead = best(3) {
            ek_gemv_f32(head.data + off * 1024, x.data, nil, yh.data, 1, 32128, 1024)
            off = (off + 32128) % (n / 1024 - 32128)
        }
        let headGBps = Double(32128 * 1024 * 4) / tHead / 1e9
        var f = Figures(readGBps: read, gemmGFLOPs: gemm, gemvGBps: gemv, gemvLMHeadGBps: headGBps)
        f.readSamples = [read]
        fma = max(fma, ek_peak_fma_gflops())
        i8peak = max(i8peak, ek_peak_int8_gops())
        f.fmaPeakGFLOPs = fma
        f.int8PeakGOPs = i8peak > 0 ? i8peak : nil
        let bf16peak = max(ek_peak_bf16_gflops(), ek_peak_bf16_gflops())   // best of two samples, as the others
        f.bf16PeakGFLOPs = bf16peak > 0 ? bf16peak : nil
        f.gemvFormatGBps = formats.map { ($0, gemvGBps($0)) }
        if int8Prompts { f.int8GemmGOPs = int8GemmGOPs() }
        var blocks: [WeightFormat] = []
        // (the K-quants have no quantizer to make the probe's random matrix from fp32: their rows use the int8 rate)
        for format in blockPromptFormats where format.hasInt8PromptGEMM && format != .int8 && format != .q4_K && format != .q5_K
            && format != .q6_K && !blocks.contains(format) {
            blocks.append(format)
        }
        f.blockGemmGOPs = blocks.map { ($0, int8GemmGOPs(format: $0)) }
        return f
    }
}

extension KernelBench {
    /// One row of ``gemvLayoutAB``: a decode GEMV shape and format, ggml's block order against the x8 regrouping.
    public struct LayoutAB: Sendable {
        public var shape: String, rows: Int, columns: Int, format: WeightFormat, threads: Int
        /// Read ceiling measured just before this row (GB/s), and each layout's weight GB/s.
        /// K-quants have one layout: `ggmlGBps` is nil and `x8GBps` is their kernel's.
        public var readGBps: Double, ggmlGBps: Double?, x8GBps: Double
        public var json: [String: Any] {
            ["shape": shape, "rows": rows, "columns": columns, "format": format.rawValue, "threads": threads,
             "read_gb_per_s": readGBps, "ggml_gb_per_s": ggmlGBps ?? NSNull(), "x8_gb_per_s": x8GBps]
        }
    }

    /// Shapes of the A/B: the cold 4096×1024 of ``run(formats:)`` and SmolLM2-135M's decode matrices.
    public static let abShapes: [(name: String, n: Int, k: Int)] = [
        ("4096x1024", 4096, 1024), ("smollm2 q/o 576x576", 576, 576), ("smollm2 k/v 192x576", 192, 576),
        ("smollm2 gate/up 1536x576", 1536, 576), ("smollm2 down 576x1536", 576, 1536), ("smollm2 head 49152x576", 49152, 576),
    ]

    /// Decode GEMV (one activation row) over cold weights in ggml's block order (the previous kernels) and
    /// regrouped by 8 (the x8 kernels), alternating call by call over copies totalling ≥ ``coldBytes`` (the first pass
    /// over them untimed), the median call of each;
    /// the read ceiling (ek_sum_f32 over 512 MiB or ``coldBytes``, best of 3) is measured again before each shape, on the same threads.
    public static func gemvLayoutAB(formats: [WeightFormat] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1], threads: [Int] = [1, 2],
                                    progress: (String) -> Void = { _ in }) -> [LayoutAB] {
        let big = touchedBuffer()
        var out: [LayoutAB] = []
        var rng = SplitMix64(seed: 9)
        for t in threads {
            Backend.setThreads(t)
            for (name, n, k) in abShapes {
                let read = readCeilingGBps(over: big, reps: 3)
                let w = Tensor(zeros: [n, k])
                for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
                let x = Tensor(zeros: [1, k])
                for i in 0..<k { x.data[i] = rng.nextUnitFloat() }
                for f in formats {
                    let bytes = f.matrixBytes(rows: n, columns: k)
                    let copies = max(3, coldBytes / bytes)            // ≥ coldBytes in rotation: from DRAM
                    let plain = QuantizedMatrix(w, format: f, regroup: false)
                    let mats = (0..<copies).map { _ in
                        (QuantizedMatrix(copying: plain.data, scales: plain.scales, format: f, rows: n, columns: k),
                         QuantizedMatrix(copying: plain.data, scales: plain.scales, format: f, rows: n, columns: k, regroup: true))
                    }
                    var tOld: [Double] = [], tNew: [Double] = []
                    let rounds = max(2, 48 / copies)
                    for r in 0..<rounds {
                        for c in 0..<copies {
                            // the regrouped copy read here is the one half the rotation away: both come from DRAM
                            let (a, b) = (mats[c].0, mats[(c + copies / 2) % copies].1)
                            let first = (r + c) % 2 == 0
                            for which in first ? [0, 1] : [1, 0] {
                                let m = which == 0 ? a : b
                                let t0 = now()
                                _ = Ops.linearQuantized(x, weight: m, bias: nil)
                                let dt = now() - t0
                                if r > 0 || rounds == 1 { if which == 0 { tOld.append(dt) } else { tNew.append(dt) } }
                            }
                        }
                    }
                    func median(_ a: [Double]) -> Double { let s = a.sorted(); return s[s.count / 2] }
                    let row = LayoutAB(shape: name, rows: n, columns: k, format: f, threads: t, readGBps: read,
                                       ggmlGBps: Double(bytes) / median(tOld) / 1e9, x8GBps: Double(bytes) / median(tNew) / 1e9)
                    progress(String(format: "%@ %@ %d thread(s): ggml %.1f GB/s, x8 %.1f GB/s, read %.1f GB/s",
                                    name, f.rawValue, t, row.ggmlGBps ?? 0, row.x8GBps, read))
                    out.append(row)
                }
                // K-quants (rows of k % 256 == 0): their one layout, random blocks (speed does not depend on values)
                for f in [WeightFormat.q4_K, .q5_K, .q6_K] where k % 256 == 0 {
                    let bytes = f.matrixBytes(rows: n, columns: k)
                    let copies = max(3, coldBytes / bytes)
                    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
                    defer { raw.deallocate() }
                    for i in 0..<bytes { raw.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: i, as: UInt8.self) }
                    let mats = (0..<copies).map { _ in QuantizedMatrix(copying: raw, scales: nil, format: f, rows: n, columns: k) }
                    var times: [Double] = []
                    for r in 0..<max(2, 48 / copies) {
                        for c in 0..<copies {
                            let t0 = now()
                            _ = Ops.linearQuantized(x, weight: mats[c], bias: nil)
                            if r > 0 { times.append(now() - t0) }
                        }
                    }
                    let row = LayoutAB(shape: name, rows: n, columns: k, format: f, threads: t, readGBps: read, ggmlGBps: nil,
                                       x8GBps: Double(bytes) / times.sorted()[times.count / 2] / 1e9)
                    progress(String(format: "%@ %@ %d thread(s): %.1f GB/s, read %.1f GB/s", name, f.rawValue, t, row.x8GBps, read))
                    out.append(row)
                }
            }
        }
        return out
    }
}
