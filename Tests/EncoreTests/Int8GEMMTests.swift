import XCTest
import EncoreKernels
@testable import Encore

/// The prompt-pass GEMM over int8 weights (gemm_int8.c) and int8 prompt weights in the models
/// (`usePromptWeights(.int8)`, and `.decode`). Tolerances are relative to the largest |value| of the reference result.
final class Int8GEMMTests: XCTestCase {
    var rng = SplitMix64(seed: 11)
    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }

    func int8Rows(_ w: [Float], rows: Int, cols: Int) -> ([UInt8], [Float]) {
        var q = [UInt8](repeating: 0, count: rows * WeightFormat.int8.rowBytes(cols)), s = [Float](repeating: 0, count: rows)
        XCTAssertEqual(ek_quantize_rows(WeightFormat.int8.kernelID, w, &q, &s, rows, cols), 0)
        return (q, s)
    }

    func gemm(_ q: [UInt8], _ s: [Float], _ x: [Float], _ b: [Float]?, _ y0: [Float], m: Int, n: Int, k: Int, epilogue: Int32,
              ref: Bool = false) -> [Float] {
        var y = y0
        let rc = q.withUnsafeBytes { qb -> Int32 in
            let w = qb.baseAddress!.assumingMemoryBound(to: Int8.self)
            return ref ? ek_gemm_int8_ref(w, s, x, b, &y, m, n, k, epilogue) : ek_gemm_int8(w, s, x, b, &y, m, n, k, epilogue)
        }
        XCTAssertEqual(rc, 0)
        return y
    }

    /// Shapes with ragged tiles: m not a multiple of the 4-row tile nor of the 96-row block, n not a multiple of the
    /// 16-column panel, k not a multiple of 32 (padded) and longer than the 256-value k block.
    static let shapes: [(m: Int, n: Int, k: Int)] = [(9, 1, 1), (9, 5, 7), (10, 16, 32), (13, 17, 70), (50, 100, 100),
                                                      (97, 33, 600), (200, 48, 1100), (12, 300, 64), (101, 7, 33)]

    /// The AVX2 path (4×16 tiles of vpmaddubsw on packed quads) and the plain path against the twin, every epilogue, with and without bias:
    /// the integer sums are exact on every path, so only the fp32 epilogue's rounding (and the GELU kernel's,
    /// ≤ 1e-6 against its own twin) differs: bound 2e-6.
    func testEveryPathMatchesTwin() {
        defer { ek_set_force_reference(0) }
        for (m, n, k) in Self.shapes {
            let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n), y0 = randoms(m * n)
            let (q, s) = int8Rows(w, rows: n, cols: k)
            for epilogue in [EK_EPI_STORE, EK_EPI_ACCUMULATE, EK_EPI_GELU, EK_EPI_RELU].map(Int32.init) {
                for bias in [b, nil] {
                    let want = gemm(q, s, x, bias, y0, m: m, n: n, k: k, epilogue: epilogue, ref: true)
                    for force in [Int32(0), 1] {
                        ek_set_force_reference(force)
                        let got = gemm(q, s, x, bias, y0, m: m, n: n, k: k, epilogue: epilogue)
                        XCTAssertLessThan(relativeError(got, want), 2e-6, "\(m)x\(n)x\(k) epilogue \(epilogue) bias \(bias != nil) plain \(force)")
                    }
                    ek_set_force_reference(0)
                }
            }
        }
        var y = [Float](repeating: 0, count: 9)
        XCTAssertEqual(ek_gemm_int8([1], [1], [Float](repeating: 1, count: 9), nil, &y, 9, 1, 1, 7), -1, "unknown epilogue")
    }

    /// The ReLU epilogue is max(stored value, 0) of the same float, on every path.
    func testReLUEpilogueClampsTheStoredValue() {
        defer { ek_set_force_reference(0) }
        let (m, n, k) = (13, 40, 300)
        let x = randoms(m * k, scale: 2), b = randoms(n), y0 = [Float](repeating: 9, count: m * n)
        let (q, s) = int8Rows(randoms(n * k), rows: n, cols: k)
        for force in [Int32(0), 1] {
            ek_set_force_reference(force)
            let stored = gemm(q, s, x, b, y0, m: m, n: n, k: k, epilogue: Int32(EK_EPI_STORE))
            let relu = gemm(q, s, x, b, y0, m: m, n: n, k: k, epilogue: Int32(EK_EPI_RELU))
            XCTAssertEqual(relu, stored.map { max($0, 0) }, "plain \(force)")
            XCTAssertTrue(stored.contains { $0 < 0 } && relu.contains { $0 > 0 }, "both signs occur")
        }
    }

    /// Several matrices against one x in one call (ek_gemm_int8_multi: q/k/v, every layer's cross-attention K/V):
    /// each result has the same bytes as its own ek_gemm_int8 call, on both paths and with every epilogue, for
    /// widths that are not multiples of the 16-column panel and for more matrices than tasks; the twin agrees
    /// within 2e-6 (fp32 epilogue rounding). A count below 1 or an unknown epilogue is refused.
    func testSeveralMatricesInOneCallMatchOneCallEach() {
        defer { ek_set_force_reference(0) }
        let cases: [(m: Int, k: Int, ns: [Int])] = [(13, 70, [40, 16, 7]), (100, 300, Array(repeating: 24, count: 20)),
                                                    (9, 33, [1, 300])]
        for (m, k, ns) in cases {
            let x = randoms(m * k, scale: 3)
            let mats = ns.map { int8Rows(randoms($0 * k), rows: $0, cols: k) }
            let biases: [[Float]?] = ns.enumerated().map { $0.offset % 2 == 0 ? randoms($0.element) : nil }
            let y0s = ns.map { randoms(m * $0) }
            for epilogue in [EK_EPI_STORE, EK_EPI_ACCUMULATE, EK_EPI_GELU, EK_EPI_RELU].map(Int32.init) {
                for force in [Int32(0), 1] {
                    ek_set_force_reference(force)
                    let want = ns.indices.map { gemm(mats[$0].0, mats[$0].1, x, biases[$0], y0s[$0], m: m, n: ns[$0], k: k, epilogue: epilogue) }
                    let got = multi(mats, biases, y0s, x, m: m, ns: ns, k: k, epilogue: epilogue)
                    XCTAssertEqual(got, want, "\(ns.count) matrices \(m)x\(k) epilogue \(epilogue) plain \(force)")
                    let twin = multi(mats, biases, y0s, x, m: m, ns: ns, k: k, epilogue: epilogue, ref: true)
                    for j in ns.indices { XCTAssertLessThan(relativeError(got[j], twin[j]), 2e-6, "matrix \(j)") }
                }
            }
        }
        var y: [Float] = [0]
        let rc = y.withUnsafeMutableBufferPointer { yb -> [Int32] in
            [ek_gemm_int8_multi(0, nil, nil, nil, nil, nil, [1], 1, 1, 0),
             ek_gemm_int8_multi(1, [UnsafePointer<Int8>?](repeating: nil, count: 1), [nil], nil, [yb.baseAddress], [1], [1], 1, 1, 9)]
        }
        XCTAssertEqual(rc, [-1, -1], "no matrices; unknown epilogue")
    }

    func multi(_ mats: [([UInt8], [Float])], _ biases: [[Float]?], _ y0s: [[Float]], _ x: [Float], m: Int, ns: [Int], k: Int,
               epilogue: Int32, ref: Bool = false) -> [[Float]] {
        // copies the kernel may write through: one allocation per matrix, freed after
        let ys = y0s.map { y0 -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: y0.count)
            p.initialize(from: y0, count: y0.count)
            return p
        }
        let ws = mats.map { m -> UnsafeMutablePointer<Int8> in
            let p = UnsafeMutablePointer<Int8>.allocate(capacity: m.0.count)
            for i in m.0.indices { p[i] = Int8(bitPattern: m.0[i]) }
            return p
        }
        let ss = mats.map { m -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: m.1.count)
            p.initialize(from: m.1, count: m.1.count)
            return p
        }
        let bs = biases.map { b -> UnsafeMutablePointer<Float>? in
            guard let b else { return nil }
            let p = UnsafeMutablePointer<Float>.allocate(capacity: b.count)
            p.initialize(from: b, count: b.count)
            return p
        }
        defer { (ys + ws.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) } + ss + bs.compactMap { $0 }).forEach { $0.deallocate() } }
        let wp = ws.map { Optional(UnsafePointer($0)) }, sp = ss.map { Optional(UnsafePointer($0)) }
        let bp = bs.map { $0.map { UnsafePointer($0) } }, yp = ys.map { Optional($0) }
        let rc = ref ? ek_gemm_int8_multi_ref(ns.count, wp, sp, bp, yp, ns, x, m, k, epilogue)
                     : ek_gemm_int8_multi(ns.count, wp, sp, bp, yp, ns, x, m, k, epilogue)
        XCTAssertEqual(rc, 0)
        return ns.indices.map { Array(UnsafeBufferPointer(start: ys[$0], count: m * ns[$0])) }
    }

    /// The twin against fp32 math on the dequantized weights: the difference is the per-row 7-bit activation
    /// quantization alone (measured 6e-3–9.5e-3 on random symmetric rows, 2–5e-3 with the earlier 8-bit symmetric
    /// activations; bound 2e-2), and it is not zero.
    func testTwinMatchesDequantizedMath() {
        for (m, n, k) in Self.shapes where k >= 32 {
            let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n)
            let (q, s) = int8Rows(w, rows: n, cols: k)
            var wd = [Float](repeating: 0, count: n * k)
            XCTAssertEqual(ek_dequantize_rows(WeightFormat.int8.kernelID, q, s, &wd, n, k), 0)
            var exact = [Float](repeating: 0, count: m * n)
            for r in 0..<m { for c in 0..<n {
                var acc = Double(b[c])
                for i in 0..<k { acc += Double(x[r * k + i]) * Double(wd[c * k + i]) }
                exact[r * n + c] = Float(acc)
            } }
            let got = gemm(q, s, x, b, [Float](repeating: 0, count: m * n), m: m, n: n, k: k, epilogue: Int32(EK_EPI_STORE), ref: true)
            let err = relativeError(got, exact)
            XCTAssertLessThan(err, 2e-2, "\(m)x\(n)x\(k)")
            XCTAssertGreaterThan(err, 0, "\(m)x\(n)x\(k): activations should be quantized")
        }
    }

    /// Activations are quantized per row to 7 bits with a zero point and round half to even: row 0 spans
    /// [−27, 100] (d = 1, zero point 27), so x/d + 27 = k + 0.5 rounds to the even k and the product with W = I
    /// returns (u − 27)·d: 2.5 → 2, −3.5 → −4, 0.5 → 0, 1.5 → 2. Row 1 is all positive (ReLU'd: zero point 0, the
    /// full 127 levels over [0, 127]): its values come back exactly; row 2 is all zero (d = 0): zeros.
    func testActivationsSevenBitsRoundHalfToEven() {
        defer { ek_set_force_reference(0) }
        let k = 40, m = 9
        var x = randoms(m * k, scale: 0.5)
        for (j, v) in [100, -27, 2.5, -3.5, 0.5, 1.5].enumerated() { x[j] = Float(v) }
        for j in 0..<k { x[k + j] = Float(j % 2 == 0 ? j * 3 : 127 - j) }   // integers in [0, 127] …
        x[k] = 127                                                             // … with max 127
        for j in 0..<k { x[2 * k + j] = 0 }
        var eye = [Float](repeating: 0, count: k * k)
        for i in 0..<k { eye[i * k + i] = 1 }
        let (q, s) = int8Rows(eye, rows: k, cols: k)
        for force in [Int32(0), 1] {
            ek_set_force_reference(force)
            for ref in [false, true] {
                let y = gemm(q, s, x, nil, [Float](repeating: 0, count: m * k), m: m, n: k, k: k, epilogue: Int32(EK_EPI_STORE),
                             ref: ref)
                XCTAssertEqual(Array(y[0..<6]), [100, -27, 2, -4, 0, 2], "plain \(force) twin \(ref)")
                XCTAssertEqual(Array(y[k..<2 * k]), Array(x[k..<2 * k]), "ReLU'd row, plain \(force) twin \(ref)")
                XCTAssertEqual(Array(y[2 * k..<3 * k]), [Float](repeating: 0, count: k), "zero row, plain \(force) twin \(ref)")
            }
        }
    }

    /// Logits of a prompt pass (> 8 tokens: the GEMM path) and four teacher-forced decode steps.
    func logits(_ m: LanguageModel, prompt: [Int], steps: [Int] = [11, 23, 7, 42]) throws -> [Float] {
        let s = try m.beginGeneration(prompts: [prompt])
        var out = s.logits.toArray()
        for t in steps { try s.advance(tokens: [t]); out += s.logits.toArray() }
        return out
    }

    /// Each family with int8 prompt weights and int8 decode weights against fp32: the fp32 copies are gone (resident
    /// bytes = the int8 rows, shared with decode), the logits stay within int8's quality bound (Mu's and T5's
    /// realistic random weights: measured 8.7e-3–1.9e-2, bound 5e-2; the tiny Llama fixture's large weights: 5.4e-2, bound 0.15), and
    /// `.f32` brings fp32 copies back (dequantized int8: the int8-rounded weights, prompt passes in fp32 again).
    func testModelsRunPromptsOnInt8() throws {
        let mu = try smallMu(seed: 3), dec = try smallMuDecoder(seed: 3)
        let t5 = try smallT5(feedForward: "gated-gelu", tiedHead: false, seed: 5), t5relu = try smallT5(feedForward: "relu", seed: 6)
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        let prompt = Array(5..<45)
        let cases: [(String, LanguageModel, Float)] = [("mu", mu, 5e-2), ("mu_decoder", dec, 5e-2), ("t5", t5, 5e-2),
                                                       ("t5_relu", t5relu, 5e-2), ("llama", llama, 0.15)]
        for (name, m, bound) in cases {
            let ref = try logits(m, prompt: prompt)
            try m.useDecodeWeights(.int8)
            let decodeOnly = try logits(m, prompt: prompt)
            try m.usePromptWeights(.int8)
            let int8 = try logits(m, prompt: prompt)
            let err = relativeError(int8, ref)
            print("\(name): int8 decode only \(relativeError(decodeOnly, ref)), int8 prompts too \(err)")
            XCTAssertGreaterThan(relativeError(int8, decodeOnly), 0, "\(name): prompt passes should use the int8 GEMM")
            XCTAssertLessThan(err, bound, "\(name): relative logit error \(err)")
            try m.usePromptWeights(.f32)
            try m.useDecodeWeights(.f32)
            let back = try logits(m, prompt: prompt)
            XCTAssertLessThan(relativeError(back, ref), bound, "\(name): back on fp32")
        }
        // the fp32 copies are released: a layer holds its int8 rows once
        mu.useDecodeWeights(.int8)
        try mu.usePromptWeights(.int8)
        let fc1 = mu.encoderBlocks[0].mlp.fc1, q = mu.decoderBlocks[0].causalAttn.q
        XCTAssertEqual(fc1.residentBytes, WeightFormat.int8.matrixBytes(rows: fc1.outputs, columns: fc1.inputs) + (fc1.bias?.count ?? 0) * 4)
        XCTAssertEqual(q.residentBytes, q.decodeBytes, "decode and prompt share the int8 rows")
        XCTAssertEqual(q.decodeFormat, .int8)
        mu.useDecodeWeights(.f32)
        XCTAssertEqual(q.decodeFormat, .int8, "no fp32 copy left: decode streams the int8 rows")
        XCTAssertThrowsError(try PromptWeights(parsing: "q4_0"))
        XCTAssertEqual(try PromptWeights(parsing: "DECODE"), .decode)
    }

    /// `.decode`: nothing fp32 stays resident (Mu's and T5's encoders and cross K/V take the decoder's format, packed
    /// only), decode steps are unchanged, and prompt passes equal a model built from the dequantized weights
    /// (≤ 1e-5: the same fp32 GEMMs on the same values). Mu's bf16 prompts are widened here (``Backend/bf16PromptGEMM``
    /// off; its vdpbf16ps GEMM, the default on non-Intel CPUs with AVX512-BF16, is BF16GEMMTests'); T5's bf16 check
    /// (1e-2 of fp32) runs the default path.
    func testDecodeFormatPromptsKeepNoFP32() throws {
        let savedBF16GEMM = Backend.bf16PromptGEMM
        Backend.bf16PromptGEMM = false
        defer { Backend.bf16PromptGEMM = savedBF16GEMM }
        for f in [WeightFormat.q4_0, .bf16] {
            let mu = try XCTUnwrap(ModelRegistry.load(folder: fixture("mu/gqa_interleaved_ntk")) as? MuModel)
            mu.useDecodeWeights(f)
            try mu.usePromptWeights(.decode)
            for l in [mu.encoderBlocks[0].mlp.fc1, mu.encoderBlocks[0].attn.q, mu.decoderBlocks[0].crossAttn.k, mu.decoderBlocks[0].mlp.fc2] {
                XCTAssertEqual(l.decodeFormat, f)
                XCTAssertEqual(l.residentBytes, l.decodeBytes, "\(f): only the decode copy is resident")
            }
            let dequantized = try MuModel(config: mu.config, tensors: mu.namedTensors())
            dequantized.useDecodeWeights(f)   // decode steps: the same blocks (quantizing dequantized blocks is exact for q4_0/bf16)
            let prompt = Array(3..<40)
            XCTAssertLessThan(relativeError(try logits(mu, prompt: prompt), try logits(dequantized, prompt: prompt)), 1e-5, "\(f)")
        }
        Backend.bf16PromptGEMM = savedBF16GEMM   // below: the default bf16 prompt path (the vdpbf16ps GEMM where it runs)
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        llama.useDecodeWeights(.q8_0)
        try llama.usePromptWeights(.decode)
        for l in llama.blocks[0].linears { XCTAssertEqual(l.residentBytes, l.decodeBytes) }
        XCTAssertNil(llama.embedding, "the fp32 table is released: lookups read the head's blocks")
        XCTAssertNil(llama.head)
        XCTAssertEqual(llama.embeddingBlocks?.format, .q8_0)
        XCTAssertGreaterThan(try logits(llama, prompt: Array(5..<30)).count, 0)
        // T5 with an untied head: the table gets its own blocks in the decode format, the head keeps its blocks
        let t5 = try T5Model(config: T5Config(vocabSize: 300, dModel: 80, dKV: 16, dFF: 160, numLayers: 2, numDecoderLayers: 2,
                                              numHeads: 4, feedForwardProj: "relu", tieWordEmbeddings: false), randomSeed: 5)
        let ref = try logits(t5, prompt: Array(5..<30))
        t5.useDecodeWeights(.bf16)
        try t5.usePromptWeights(.decode)
        XCTAssertNil(t5.shared)
        XCTAssertNil(t5.lmHead)
        XCTAssertEqual(t5.sharedBlocks?.format, .bf16)
        XCTAssertLessThan(relativeError(try logits(t5, prompt: Array(5..<30)), ref), 1e-2, "bf16 everywhere")
    }

    /// Q8_0 decode blocks run prompt passes on the int8 GEMM as stored (`ek_gemm_q8_0`, no int8 copy): the layer
    /// holds its blocks once, the kernel equals its twin on the regrouped (x8) layout the decode copy keeps and on
    /// ggml's, and each family's logits stay within Q8_0 + 7-bit activations' bound of fp32 (the int8 bound above),
    /// while differing from widened-blocks prompt passes (so the GEMM did run).
    func testQ8_0BlocksRunTheInt8GEMMAsStored() throws {
        let (m, n, k) = (37, 45, 320)
        let w = randoms(n * k), x = randoms(m * k, scale: 2), b = randoms(n)
        var ggml = [UInt8](repeating: 0, count: n * WeightFormat.q8_0.rowBytes(k))
        XCTAssertEqual(ek_quantize_rows(WeightFormat.q8_0.kernelID, w, &ggml, nil, n, k), 0)
        var x8 = ggml
        XCTAssertEqual(ek_repack_x8(Int32(EK_WF_Q8_0X8), ggml, &x8, n, k), 0)
        for (layout, blocks) in [(Int32(EK_WF_Q8_0), ggml), (Int32(EK_WF_Q8_0X8), x8)] {
            var y = [Float](repeating: 0, count: m * n), r = y
            XCTAssertEqual(ek_gemm_q8_0(layout, blocks, x, b, &y, m, n, k, Int32(EK_EPI_STORE)), 0)
            XCTAssertEqual(ek_gemm_q8_0_ref(layout, blocks, x, b, &r, m, n, k, Int32(EK_EPI_STORE)), 0)
            XCTAssertEqual(y, r, "layout \(layout): the same floats as the twin")
        }
        var y = [Float](repeating: 0, count: 1)
        XCTAssertEqual(ek_gemm_q8_0(Int32(EK_WF_Q4_K), ggml, x, nil, &y, 1, 1, 32, Int32(EK_EPI_STORE)), -1, "K-quant blocks are refused")

        let mu = try smallMu(seed: 4), t5 = try smallT5(feedForward: "gated-gelu", tiedHead: false, seed: 4)
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        let prompt = Array(5..<45)
        for (name, model, bound) in [("mu", mu as LanguageModel, Float(5e-2)), ("t5", t5, 5e-2), ("llama", llama, 0.15)] {
            let ref = try logits(model, prompt: prompt)
            try model.useDecodeWeights(.q8_0)
            try model.usePromptWeights(.decode)
            let widened = try logits(model, prompt: prompt)
            try model.usePromptWeights(.int8)
            let int8 = try logits(model, prompt: prompt)
            let err = relativeError(int8, ref)
            print("\(name): q8_0 blocks, widened prompts \(relativeError(widened, ref)), int8 GEMM prompts \(err)")
            XCTAssertGreaterThan(relativeError(int8, widened), 0, "\(name): prompt passes should run the Q8_0 GEMM")
            XCTAssertLessThan(err, bound, "\(name): relative logit error \(err)")
        }
        let fc1 = mu.encoderBlocks[0].mlp.fc1, q = mu.decoderBlocks[0].causalAttn.q
        XCTAssertEqual(fc1.decodeFormat, .q8_0)
        XCTAssertEqual(fc1.residentBytes, fc1.decodeBytes, "prompt passes and decode share the Q8_0 blocks")
        XCTAssertEqual(q.residentBytes, q.decodeBytes)
        // Q4_0 and Q4_1 blocks too (nibbles − 8 / nibbles + minima, the same GEMM): held once, and the int8 prompts'
        // change against widened blocks stays within the int8 bound (the 4-bit weights' own error is the decode format's)
        for format in [WeightFormat.q4_0, .q4_1] {
            for (name, model) in [("mu", try smallMu(seed: 9) as LanguageModel),
                                  ("llama", try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf"))))] {
                try model.useDecodeWeights(format)
                try model.usePromptWeights(.decode)
                let widened = try logits(model, prompt: prompt)
                try model.usePromptWeights(.int8)
                let gemm = try logits(model, prompt: prompt)
                let e = relativeError(gemm, widened)
                print("\(name): \(format) blocks, int8 GEMM prompts vs widened \(e)")
                XCTAssertGreaterThan(e, 0, "\(name) \(format): the blocks run the GEMM")
                XCTAssertLessThan(e, name == "llama" ? 0.15 : 5e-2, "\(name) \(format)")
                if let mu = model as? MuModel {
                    let fc1 = mu.encoderBlocks[0].mlp.fc1
                    XCTAssertEqual(fc1.decodeFormat, format)
                    XCTAssertEqual(fc1.residentBytes, fc1.decodeBytes, "\(format): the blocks held once")
                }
            }
        }
        // a new decode format with the int8 GEMM takes the decoder's prompt passes along (one copy, not two)
        mu.useDecodeWeights(.int8)
        let q2 = mu.decoderBlocks[0].causalAttn.q
        XCTAssertEqual(q2.decodeFormat, .int8)
        XCTAssertEqual(q2.residentBytes, q2.decodeBytes, "int8 prompts follow the int8 copy")
        XCTAssertGreaterThan(try logits(mu, prompt: prompt).count, 0)
    }

    /// `useEncoderWeights`: the encoder and the cross K/V projections packed in their own format (held once, no
    /// fp32), the decoder in another; `.decode` prompts keep that choice; int8 prompts run the Q8_0 GEMM on the
    /// encoder's blocks, within the int8 bound (5e-2) of the widened blocks; the q4_0 decoder's own error (measured
    /// 0.15 on these small random models) under 0.25; decoder-only models refuse with a clear error.
    /// And `encore generate --encoder-weights` gives the library's ids.
    func testEncoderWeightsOfTheirOwn() throws {
        let prompt = Array(5..<45)
        for (name, model) in [("mu", try smallMu(seed: 6) as LanguageModel), ("t5", try smallT5(feedForward: "relu", seed: 6))] {
            let ref = try logits(model, prompt: prompt)
            try model.useDecodeWeights(.q4_0)
            try model.useEncoderWeights(.q8_0)
            try model.usePromptWeights(.decode)
            let encoderLayers: [Linear], crossK: Linear
            if let mu = model as? MuModel {
                encoderLayers = mu.encoderBlocks[0].attn.linears + [mu.encoderBlocks[0].mlp.fc1, mu.encoderBlocks[0].mlp.fc2]
                crossK = mu.decoderBlocks[0].crossAttn.k
            } else {
                let t5 = try XCTUnwrap(model as? T5Model)
                encoderLayers = [t5.encoderBlocks[0].selfAttn.q, t5.encoderBlocks[0].selfAttn.o]
                crossK = t5.decoderBlocks[0].crossAttn.k
            }
            for l in encoderLayers + [crossK] {
                XCTAssertEqual(l.decodeFormat, .q8_0, "\(name): the encoder's own format survives .decode prompts")
                XCTAssertEqual(l.residentBytes, l.decodeBytes, "\(name): packed only")
            }
            let widened = try logits(model, prompt: prompt)
            try model.usePromptWeights(.int8)
            let int8 = try logits(model, prompt: prompt)
            let after: [Linear]
            if let mu = model as? MuModel { after = [mu.encoderBlocks[0].mlp.fc1, mu.decoderBlocks[0].crossAttn.k] }
            else { let t5 = try XCTUnwrap(model as? T5Model); after = [t5.encoderBlocks[0].selfAttn.q, t5.decoderBlocks[0].crossAttn.k] }
            for l in after {
                XCTAssertEqual(l.decodeFormat, .q8_0)
                XCTAssertEqual(l.residentBytes, l.decodeBytes, "\(name): int8 prompts run on the Q8_0 blocks themselves")
            }
            let gemmError = relativeError(int8, widened)
            print("\(name): q8_0 encoder + q4_0 decoder vs fp32 \(relativeError(widened, ref)); int8 GEMM vs widened blocks \(gemmError)")
            XCTAssertGreaterThan(gemmError, 0, "\(name): the encoder runs the Q8_0 GEMM")
            XCTAssertLessThan(gemmError, 5e-2, "\(name): the int8 GEMM on the same blocks (q8_0 activations)")
            XCTAssertLessThan(relativeError(widened, ref), 0.25, "\(name): q4_0 decoder, q8_0 encoder")
        }
        // an explicit f32 encoder stays fp32 under .decode prompts; int8 prompt rows (no chosen format) do not count
        // as a choice: .decode then gives the encoder the decode format, as before
        let kept = try smallMu(seed: 7)
        try kept.useDecodeWeights(.q4_0); try kept.useEncoderWeights(.f32); try kept.usePromptWeights(.decode)
        XCTAssertEqual(kept.encoderBlocks[0].attn.q.decodeFormat, .f32)
        let switched = try smallMu(seed: 7)
        try switched.useDecodeWeights(.q4_0); try switched.usePromptWeights(.int8); try switched.usePromptWeights(.decode)
        XCTAssertEqual(switched.encoderBlocks[0].attn.q.decodeFormat, .q4_0)
        XCTAssertEqual(switched.encoderBlocks[0].attn.q.residentBytes, switched.encoderBlocks[0].attn.q.decodeBytes)
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")))
        XCTAssertThrowsError(try llama.useEncoderWeights(.int8)) { e in
            XCTAssertTrue("\(e)".contains("has no encoder"), "\(e)")
        }
        // the CLI: the same ids as the library with the same settings; bad values and decoder-only models refused
        let dir = fixture("mu/gqa_interleaved_ntk")
        let r = runCLI(["generate", "--model", dir, "--input-ids", "5,6,7,8,9,10,11,12,13,14,15,16", "--max-tokens", "6",
                        "--decode-weights", "q4_0", "--encoder-weights", "q8_0", "--prompt-weights", "int8", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let mu = try XCTUnwrap(ModelRegistry.load(folder: dir))
        try mu.useDecodeWeights(.q4_0); try mu.useEncoderWeights(.q8_0); try mu.usePromptWeights(.int8)
        XCTAssertTrue(try mu.useKVCache(.auto), "the CLI's default --kv-cache auto: f16 beside q4_0 weights")
        let want = try Generator(model: mu).generate(prompts: [Array(5...16)], parameters: .init(maxTokens: 6)).tokens[0]
        let got = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])["ids"] as? [Int]
        XCTAssertEqual(got, want)
        // encore score takes the same options: its log-probabilities are the library's with them
        let targets = Array(20..<32)
        let sc = runCLI(["score", "--model", dir, "--input-ids", "5,6,7,8,9,10,11,12,13,14,15,16",
                         "--target-ids", targets.map(String.init).joined(separator: ","),
                         "--decode-weights", "q4_0", "--encoder-weights", "q8_0", "--prompt-weights", "int8", "--json"])
        XCTAssertEqual(sc.status, 0, sc.stderr)
        let scored = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(sc.stdout.utf8)) as? [String: Any])["logprobs"] as? [Double]
        let wantLP = try mu.score(input: Array(5...16), target: targets).map(Double.init)
        XCTAssertEqual(try XCTUnwrap(scored).count, wantLP.count)
        for (a, b) in zip(try XCTUnwrap(scored), wantLP) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        let plain = try XCTUnwrap(ModelRegistry.load(folder: dir)).score(input: Array(5...16), target: targets).map(Double.init)
        XCTAssertGreaterThan(zip(plain, wantLP).map { abs($0 - $1) }.max() ?? 0, 1e-4, "the options change the scores, so they are seen")
        let bad = runCLI(["generate", "--model", dir, "--input-ids", "5,6", "--encoder-weights", "q3"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("--encoder-weights must be f32, bf16, int8, q8_0, q4_0 or q4_1 (got 'q3')"), bad.stderr)
        let noEncoder = runCLI(["generate", "--model", fixture("tiny_llama/f32.gguf"), "--input-ids", "5,6", "--encoder-weights", "int8"])
        XCTAssertEqual(noEncoder.status, 1)
        XCTAssertTrue(noEncoder.stderr.contains("has no encoder"), noEncoder.stderr)
    }

    /// Int8 prompt passes with the layers that read the same activations in one `ek_gemm_int8_multi` call (q/k/v,
    /// gate/up, every decoder layer's cross-attention K/V; DecodeTuning.sharedPromptGEMM) give exactly the logits of
    /// one call per layer, for Mu, mu_decoder, T5 (ReLU feed-forward: the fused ReLU epilogue) and a Llama GGUF, on
    /// int8 rows and on Q8_0 blocks (`ek_gemm_q8_0_multi`).
    func testSharedPromptGEMMsGiveTheSameLogits() throws {
        defer { DecodeTuning.sharedPromptGEMM = true }
        let mu = try smallMu(decoderLayers: 3, seed: 8), dec = try smallMuDecoder(seed: 8)
        let t5 = try smallT5(feedForward: "relu", seed: 8)
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        for format in [WeightFormat.int8, .q8_0] {
            for (name, model) in [("mu", mu as LanguageModel), ("mu_decoder", dec), ("t5", t5), ("llama", llama)] {
                try model.usePromptWeights(.f32)
                try model.useDecodeWeights(format)
                try model.usePromptWeights(.int8)
                DecodeTuning.sharedPromptGEMM = false
                let separate = try logits(model, prompt: Array(5..<45))
                DecodeTuning.sharedPromptGEMM = true
                let shared = try logits(model, prompt: Array(5..<45))
                XCTAssertEqual(shared, separate, "\(name) \(format)")
            }
        }
    }
}
