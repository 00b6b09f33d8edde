import XCTest
import EncoreKernels
@testable import Encore

/// The bf16 prompt GEMM (`ek_gemm_bf16`: AVX512-BF16's vdpbf16ps where the CPU has it, plain C elsewhere) and its use
/// by prompt passes over bf16 decode copies (`usePromptWeights(.decode)`, ``Backend/bf16PromptGEMM``: by default on
/// CPUs with AVX512-BF16 that are not Intel's). On a CPU without AVX512-BF16 the tests run the plain path
/// (kernel_parity checks the tiles under SIMDe emulation there).
final class BF16GEMMTests: XCTestCase {
    var rng = SplitMix64(seed: 23)
    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }

    /// Every epilogue, with and without bias, against the twin (x rounded to bf16, sums in double): the fp32 sums
    /// differ only in rounding, 1e-5 of the largest |value|; and against fp32 math on the unrounded x, within bf16's
    /// relative step (2⁻⁸) of Σ|x·w|.
    func testMatchesTwinAndFP32Math() {
        for (m, n, k) in [(1, 1, 1), (9, 17, 37), (13, 40, 64), (50, 33, 300)] {
            let w = randoms(n * k), x = randoms(m * k, scale: 3), b = randoms(n), y0 = randoms(m * n)
            var wb = [UInt16](repeating: 0, count: n * k)
            ek_f32_to_bf16(w, &wb, n * k)
            let wWide = wb.map { Float(bitPattern: UInt32($0) << 16) }
            for epilogue in [EK_EPI_STORE, EK_EPI_ACCUMULATE, EK_EPI_GELU, EK_EPI_RELU].map(Int32.init) {
                for bias in [b, nil] {
                    var got = y0, want = y0
                    XCTAssertEqual(ek_gemm_bf16(wb, x, bias, &got, m, n, k, epilogue), 0)
                    XCTAssertEqual(ek_gemm_bf16_ref(wb, x, bias, &want, m, n, k, epilogue), 0)
                    XCTAssertLessThan(relativeError(got, want), 1e-5, "\(m)x\(n)x\(k) epilogue \(epilogue) bias \(bias != nil)")
                    if epilogue == EK_EPI_STORE {
                        for r in 0..<m { for c in 0..<n {
                            var exact = 0.0, mag = 0.0
                            for i in 0..<k { exact += Double(x[r * k + i]) * Double(wWide[c * k + i]); mag += abs(Double(x[r * k + i] * wWide[c * k + i])) }
                            exact += Double(bias?[c] ?? 0)
                            XCTAssertLessThan(abs(Double(got[r * n + c]) - exact), mag / 256 + 1e-5, "\(m)x\(n)x\(k) [\(r), \(c)]")
                        } }
                    }
                }
            }
        }
        var y: [Float] = [0]
        XCTAssertEqual(ek_gemm_bf16([0], [1], nil, &y, 1, 1, 1, 9), -1, "unknown epilogue")
        // on by default off Intel, and only where the tile runs (AVX512-BF16); the test override runs the plain path anywhere
        let saved = Backend.bf16PromptGEMM
        defer { Backend.bf16PromptGEMM = saved }
        Backend.bf16PromptGEMM = false
        XCTAssertFalse(Ops.bf16PromptGEMM)
        Backend.bf16PromptGEMM = true
        XCTAssertEqual(Ops.bf16PromptGEMM, Backend.bf16GEMMPath == "avx512bf16")
        ek_set_isa_limit(Int32(EK_ISA_AVX2))
        XCTAssertFalse(Ops.bf16PromptGEMM, "an ISA cap set later is honoured")
        ek_set_isa_limit(-1)
    }

    /// Logits of a prompt pass (> 8 tokens: the GEMM path) and two teacher-forced decode steps.
    func logits(_ m: LanguageModel, prompt: [Int]) throws -> [Float] {
        let s = try m.beginGeneration(prompts: [prompt])
        var out = s.logits.toArray()
        for t in [11, 23] { try s.advance(tokens: [t]); out += s.logits.toArray() }
        return out
    }

    /// The default: the vdpbf16ps prompt GEMM on CPUs that are not Intel's (Zen 4 runs it at twice the fp32 FMA
    /// rate), widened sgemm on Intel's (half rate there); ENCORE_BF16_PROMPT_GEMM=1/0 overrides either way.
    func testBF16PromptGEMMDefaultRule() {
        XCTAssertTrue(Backend.defaultBF16PromptGEMM(environment: nil, intelCPU: false))
        XCTAssertFalse(Backend.defaultBF16PromptGEMM(environment: nil, intelCPU: true))
        XCTAssertFalse(Backend.defaultBF16PromptGEMM(environment: "auto", intelCPU: true))
        XCTAssertTrue(Backend.defaultBF16PromptGEMM(environment: "1", intelCPU: true))
        XCTAssertFalse(Backend.defaultBF16PromptGEMM(environment: "0", intelCPU: false))
    }

    /// With only bf16 decode copies kept (`.decode` prompts), prompt passes multiply the bf16 rows as stored when
    /// ``Ops/bf16PromptGEMM`` is on (``Backend/bf16PromptGEMM`` on a CPU with AVX512-BF16; here forced: the zmm
    /// vdpbf16ps tiles where the CPU has them, else the plain path), instead of widening each matrix for BLAS: the logits move by the activations' bf16 rounding (so the GEMM
    /// ran) and stay within 2e-2 of the widened path's, for Mu (encoder and decoder) and Llama.
    func testModelsRunBF16PromptsAsStored() throws {
        let saved = Backend.bf16PromptGEMM
        Backend.bf16PromptGEMM = false   // the widened baseline, whatever the default on this CPU
        defer { Ops.forceBF16PromptGEMM = false; Backend.bf16PromptGEMM = saved }
        let mu = try XCTUnwrap(ModelRegistry.load(folder: fixture("mu/gqa_interleaved_ntk")) as? MuModel)
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        for model in [mu, llama] as [LanguageModel] {
            try model.useDecodeWeights(.bf16)
            try model.usePromptWeights(.decode)
            let prompt = Array(3..<40)
            Ops.forceBF16PromptGEMM = false
            let widened = try logits(model, prompt: prompt)
            Ops.forceBF16PromptGEMM = true
            let asStored = try logits(model, prompt: prompt)
            XCTAssertNotEqual(asStored, widened, "\(model.modelType): the bf16 GEMM ran")
            XCTAssertLessThan(relativeError(asStored, widened), 2e-2, "\(model.modelType)")
        }
    }

    /// Long-query attention with ``AttentionShape/bf16Products`` (prompt passes over bf16 rows): on a CPU with
    /// AVX512-BF16, vdpbf16ps products within bf16's rounding of the fp32 path (2e-2 of the largest |output|) and not
    /// equal to it; elsewhere the fp32 path itself, bit for bit. Scaled (Mu / Llama, with a causal offset and a key
    /// mask) and T5's relative bias; 150 queries: two blocks of 128 and 22 (the kernel parity checks the tiles); and a
    /// prompt chunk after 50 cached positions (150 queries over 200 keys, causal offset 50).
    func testBF16ProductsAttention() {
        for kvRows in [150, 200] { bf16ProductsAttention(tq: 150, kvRows: kvRows) }
    }

    private func bf16ProductsAttention(tq: Int, kvRows: Int) {
        let shape = AttentionShape(heads: 4, kvHeads: 2, headDim: 48, interleaved: true)
        let q = randoms(tq * shape.qWidth), k = randoms(kvRows * shape.kvWidth)   // scores of std 2.3 (T5), 0.33 scaled
        let v = randoms(kvRows * shape.kvWidth), bias = randoms(shape.heads * (tq + kvRows - 1))
        let keep = (0..<kvRows).map { UInt8($0 % 9 == 4 ? 0 : 1) }
        var scratch = [Float]()
        func run(_ s: AttentionShape, causal: Int, relative: Bool) -> [Float] {
            var out = [Float](repeating: 0, count: tq * shape.qWidth)
            keep.withUnsafeBufferPointer { kp in
                out.withUnsafeMutableBufferPointer { o in
                    if relative {
                        Ops.relativeBiasAttention(q: q, tq: tq, k: k, v: v, kvRows: kvRows, kvStride: shape.kvWidth,
                                                  out: o.baseAddress!, shape: s, keyKeep: kp.baseAddress!,
                                                  causalOffset: causal, bias: bias, scratch: &scratch)
                    } else {
                        Ops.attention(q: q, tq: tq, k: k, v: v, kvRows: kvRows, kvStride: shape.kvWidth, out: o.baseAddress!,
                                      shape: s, keyKeep: kp.baseAddress!, causalOffset: causal, scratch: &scratch)
                    }
                }
            }
            return out
        }
        let bf16Runs = ek_attn_bf16_available() != 0
        for (causal, relative) in [(-1, false), (kvRows - tq, false), (-1, true)] {
            let fp32 = run(shape, causal: causal, relative: relative)
            let bf16 = run(shape.withBF16Products(true), causal: causal, relative: relative)
            let name = "\(tq) queries, \(kvRows) keys, causal \(causal) relative \(relative)"
            guard bf16Runs else { XCTAssertEqual(bf16, fp32, name); continue }
            let scale = fp32.map(abs).max() ?? 1, err = zip(bf16, fp32).map { abs($0 - $1) }.max() ?? 0
            XCTAssertNotEqual(bf16, fp32, "\(name): the bf16 products ran")
            XCTAssertLessThan(err, 2e-2 * scale, name)
        }
    }

    /// Layers that read the same x and multiply bf16 rows as stored share one `ek_gemm_bf16_multi` call in
    /// `Linear.shared` (q/k/v, cross-attention K/V): each output has the bytes of its own `ek_gemm_bf16` call, with and
    /// without biases, over matrices of 1–3 panels and more.
    func testSharedBF16PromptGEMM() {
        let saved = Ops.forceBF16PromptGEMM, savedShared = DecodeTuning.sharedPromptGEMM
        defer { Ops.forceBF16PromptGEMM = saved; DecodeTuning.sharedPromptGEMM = savedShared }
        Ops.forceBF16PromptGEMM = true
        DecodeTuning.sharedPromptGEMM = true
        let k = 72, x = Tensor(shape: [21, k], values: randoms(21 * k, scale: 2))
        var layers: [Linear] = []
        for (rows, biased) in [(40, true), (16, false), (7, true), (100, false)] {
            var l = Linear(weight: Tensor(shape: [rows, k], values: randoms(rows * k, scale: 0.2)),
                           bias: biased ? Tensor(shape: [rows], values: randoms(rows)) : nil)
            l.useDecodeWeights(.bf16)
            l.usePromptWeights(.decode)
            XCTAssertTrue(l.promptRunsBF16)
            layers.append(l)
        }
        let calls = DecodeTuning.sharedBF16PromptCalls
        let shared = Linear.shared(x, layers), alone = layers.map { $0(x) }
        XCTAssertEqual(DecodeTuning.sharedBF16PromptCalls, calls + 1, "Linear.shared took the bf16 multi call")
        for (i, (a, b)) in zip(shared, alone).enumerated() {
            XCTAssertEqual(a.shape, b.shape)
            XCTAssertTrue(a.toArray() == b.toArray(), "layer \(i): the shared call's bytes")
        }
        let direct = Ops.linearBF16Shared(x, weights: layers.map { $0.packed! }, biases: layers.map(\.bias))
        XCTAssertTrue(zip(direct, alone).allSatisfy { $0.toArray() == $1.toArray() })
        XCTAssertNotEqual(alone[0].toArray(), Ops.linear(x, weight: layers[0].weight, bias: layers[0].bias).toArray(),
                          "bf16 products, not the fp32 weights")
    }

    /// An MLP whose two matrices run the bf16 GEMM hands its hidden layer over as bf16 rows (DecodeTuning.bf16MLPRows):
    /// the same bytes as the fp32 hidden layer (GELU for Mu's MLP, ReLU for T5's), both as a product and accumulated into
    /// a residual stream; hidden widths that are and are not multiples of 16 (the rows' zero padding); decode steps and
    /// a second matrix that does not run the bf16 GEMM keep the fp32 path.
    func testBF16MLPRows() throws {
        let saved = Ops.forceBF16PromptGEMM, savedRows = DecodeTuning.bf16MLPRows
        defer { Ops.forceBF16PromptGEMM = saved; DecodeTuning.bf16MLPRows = savedRows }
        Ops.forceBF16PromptGEMM = true
        let c = 40
        for hidden in [96, 70] {
            func linear(_ rows: Int, _ cols: Int, biased: Bool = true) -> Linear {
                var l = Linear(weight: Tensor(shape: [rows, cols], values: randoms(rows * cols, scale: 0.3)),
                               bias: biased ? Tensor(shape: [rows], values: randoms(rows)) : nil)
                l.useDecodeWeights(.bf16)
                l.usePromptWeights(.decode)
                return l
            }
            let mlp = MLP(fc1: linear(hidden, c), fc2: linear(c, hidden))
            let ff = T5FeedForward(wi: linear(hidden, c, biased: false), wo: linear(c, hidden, biased: false))
            let x = Tensor(shape: [2, 13, c], values: randoms(26 * c, scale: 2))
            let residual = randoms(26 * c)
            func run(_ rows: Bool) -> [[Float]] {
                DecodeTuning.bf16MLPRows = rows
                let r1 = Tensor(shape: [2, 13, c], values: residual), r2 = Tensor(shape: [2, 13, c], values: residual)
                mlp.accumulate(into: r1, x)
                ff.accumulate(into: r2, x)
                return [mlp(x).toArray(), r1.toArray(), ff(x).toArray(), r2.toArray()]
            }
            let calls = DecodeTuning.bf16MLPRowsCalls
            let rows = run(true)
            XCTAssertEqual(DecodeTuning.bf16MLPRowsCalls, calls + 4, "hidden \(hidden): every call took the bf16 rows")
            let fp32 = run(false)
            XCTAssertEqual(DecodeTuning.bf16MLPRowsCalls, calls + 4)
            for (i, (a, b)) in zip(rows, fp32).enumerated() {
                XCTAssertTrue(a == b, "hidden \(hidden), output \(i): the bf16 rows' bytes equal the fp32 hidden layer's")
            }
            XCTAssertEqual(mlp(x).shape, [2, 13, c])
            // decode steps (≤ Ops.decodeRows rows) and an fp32 second matrix keep the fp32 hidden layer
            DecodeTuning.bf16MLPRows = true
            _ = mlp(Tensor(shape: [1, c], values: randoms(c)))
            XCTAssertNil(mlp.fc1.bf16Rows(x, gelu: true, feeding: Linear(weight: Tensor(shape: [c, hidden], values: randoms(c * hidden)), bias: nil)))
            XCTAssertEqual(DecodeTuning.bf16MLPRowsCalls, calls + 4)
        }
    }

    /// Which prompt passes take bf16 attention products (``Linear/promptRunsNarrow``): the bf16 GEMM's and the int8
    /// rows'; not fp32, not prompt passes that widen bf16 rows for BLAS, not GGUF blocks (llama.cpp's fp32 attention).
    func testNarrowPromptsRule() {
        let saved = Ops.forceBF16PromptGEMM, savedBackend = Backend.bf16PromptGEMM
        defer { Ops.forceBF16PromptGEMM = saved; Backend.bf16PromptGEMM = savedBackend }
        Backend.bf16PromptGEMM = false
        func layer(_ decode: WeightFormat?, _ prompt: PromptWeights?) -> Linear {
            var l = Linear(weight: Tensor(shape: [8, 64], values: randoms(8 * 64)), bias: nil)
            if let decode { l.useDecodeWeights(decode) }
            if let prompt { l.usePromptWeights(prompt) }
            return l
        }
        XCTAssertFalse(layer(nil, nil).promptRunsNarrow, "fp32")
        XCTAssertTrue(layer(.bf16, .int8).promptRunsNarrow, "int8 prompt rows")
        XCTAssertFalse(layer(.int8, .decode).promptRunsNarrow, "int8 decode rows widened for prompts")
        XCTAssertTrue(layer(.int8, .int8).promptRunsNarrow, "int8 rows shared by decode and prompts")
        XCTAssertFalse(layer(.q8_0, .blocks).promptRunsNarrow, "Q8_0 blocks: llama.cpp's fp32 attention")
        Ops.forceBF16PromptGEMM = false
        XCTAssertFalse(layer(.bf16, .decode).promptRunsNarrow, "bf16 rows widened for BLAS")
        Ops.forceBF16PromptGEMM = true
        XCTAssertTrue(layer(.bf16, .decode).promptRunsNarrow, "bf16 rows as stored")
        XCTAssertFalse(layer(.bf16, nil).promptRunsNarrow, "an fp32 copy kept: fp32 prompts")
    }

    /// Prompt passes over a matrix kept only in a decode format widen it a 16 MiB tile at a time
    /// (`Ops.linearWidened`): against the whole matrix widened (`Ops.linear` / `linearGELU` / `linearAccumulate` on
    /// `dequantized()`), every epilogue, bf16 / int8 / q4_0 rows, shapes of one tile and of three (the last one short).
    /// The same sums over K, blocked by BLAS as it likes for each N: within 1e-6 of the largest |value| (OpenBLAS:
    /// bit-identical on one tile, last-bit differences over several).
    func testWidenedTilesMatchTheWholeMatrix() {
        for (m, n, k) in [(12, 40, 64), (20, 2_100, 4_000)] {   // the second: tiles of 1,048, 1,048 and 4 rows
            let tileRows = Ops.widenTileFloats / k
            XCTAssertEqual(n / tileRows >= 2 && n % tileRows != 0, m == 20, "the second shape: 2+ full tiles, a short last")
            let x = Tensor(shape: [m, k], values: randoms(m * k, scale: 2)), b = Tensor(shape: [n], values: randoms(n))
            let w = Tensor(shape: [n, k], values: randoms(n * k, scale: 0.1)), r0 = randoms(m * n)
            for format in [WeightFormat.bf16, .int8, .q4_0] {
                let q = QuantizedMatrix(w, format: format), whole = q.dequantized()
                for bias in [nil, b] {
                    let name = "\(format) \(m)x\(n)x\(k) bias \(bias != nil)"
                    let plain = Ops.linearWidened(x, weight: q, bias: bias).toArray()
                    let plainRef = Ops.linear(x, weight: whole, bias: bias).toArray()
                    let gelu = Ops.linearWidened(x, weight: q, bias: bias, gelu: true).toArray()
                    let geluRef = Ops.linearGELU(x, weight: whole, bias: bias).toArray()
                    let acc = Tensor(shape: [m, n], values: r0), accRef = Tensor(shape: [m, n], values: r0)
                    let same = Ops.linearWidened(x, weight: q, bias: bias, into: acc)
                    Ops.linearAccumulate(into: accRef, x, weight: whole, bias: bias)
                    XCTAssertTrue(same.data == acc.data, "\(name): accumulates into r")
                    for (got, want, what) in [(plain, plainRef, "store"), (gelu, geluRef, "gelu"), (acc.toArray(), accRef.toArray(), "accumulate")] {
                        let scale = want.map(abs).max() ?? 1
                        let err = zip(got, want).map { abs($0 - $1) }.max() ?? 0
                        XCTAssertLessThanOrEqual(err, 1e-6 * scale, "\(name) \(what)")
                    }
                    XCTAssertNotEqual(plain, Ops.linear(x, weight: w, bias: bias).toArray(), "\(name): the \(format) rows are read, not fp32")
                }
            }
        }
    }
}
