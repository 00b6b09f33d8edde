import XCTest
import EncoreKernels
@testable import Encore

/// Decode weight formats inside models: Linear.useDecodeWeights, model.useDecodeWeights, quantized checkpoints
/// (`encore quantize`) and GGUF tensors kept in their blocks.
final class QuantizedModelTests: XCTestCase {
    let quantFormats: [WeightFormat] = [.bf16, .int8, .q8_0, .q4_0, .q4_1]

    /// Logits of the first decode step and four more (teacher-forced with fixed tokens), concatenated.
    func decodeLogits(_ m: LanguageModel, prompt: [Int] = Array(5..<17), steps: [Int] = [11, 23, 7, 42]) throws -> [Float] {
        let s = try m.beginGeneration(prompts: [prompt])
        var out = s.logits.toArray()
        for t in steps { try s.advance(tokens: [t]); out += s.logits.toArray() }
        return out
    }

    /// A small mu_decoder with the benchmark's random weights (uniform, std 0.02: realistic magnitudes, unlike the
    /// fixtures' deliberately large weights); n_embd 80 is not a multiple of 32 (padded blocks).
    func smallDecoder() throws -> MuDecoderModel { try smallMuDecoder(seed: 3) }

    /// The quality cost of each format: relative logit error over 5 decode steps against fp32, measured bf16 2.5e-3,
    /// int8 1.5e-2, q8_0 1.2e-2, q4_0 8.4e-2, q4_1 0.11; bounds about 2×. Going back to f32 restores the fp32 logits exactly.
    func testDecodeFormatsCostBoundedQuality() throws {
        let m = try smallDecoder()
        let ref = try decodeLogits(m)
        var errors: [WeightFormat: Float] = [:]
        for f in quantFormats {
            m.useDecodeWeights(f)
            let err = relativeError(try decodeLogits(m), ref)
            errors[f] = err
            let bound: Float = f == .bf16 ? 6e-3 : (f == .int8 || f == .q8_0) ? 3.5e-2 : 0.25
            XCTAssertGreaterThan(err, 0, "\(f): decode should stream the quantized weights")
            XCTAssertLessThan(err, bound, "\(f): relative logit error \(err)")
            m.useDecodeWeights(.f32)
            XCTAssertEqual(try decodeLogits(m), ref, "\(f) → f32")
        }
        print("decode quality cost (relative logit error): " + quantFormats.map { "\($0.rawValue) \(errors[$0]!)" }.joined(separator: ", "))
        XCTAssertLessThan(errors[.bf16]!, errors[.q8_0]!)
        XCTAssertLessThan(errors[.q8_0]!, errors[.q4_0]!)
    }

    /// Dropping the fp32 copies changes nothing in decode steps, and prompt passes (M > 8, dequantized per call)
    /// equal an fp32 model built from the dequantized weights (≤ 1e-5). bf16 prompts are widened here
    /// (``Backend/bf16PromptGEMM`` off; its vdpbf16ps GEMM is BF16GEMMTests').
    func testPackedOnlyLayersMatchDequantizedModel() throws {
        let savedBF16GEMM = Backend.bf16PromptGEMM
        Backend.bf16PromptGEMM = false
        defer { Backend.bf16PromptGEMM = savedBF16GEMM }
        for f in quantFormats {
            let keep = try XCTUnwrap(ModelRegistry.load(folder: fixture("mu/mu_decoder")) as? MuDecoderModel)
            let packed = try XCTUnwrap(ModelRegistry.load(folder: fixture("mu/mu_decoder")) as? MuDecoderModel)
            keep.useDecodeWeights(f, keepFP32: true)
            packed.useDecodeWeights(f, keepFP32: false)
            // a prompt of ≤ 8 tokens: every pass is a decode-kernel pass
            XCTAssertEqual(try decodeLogits(packed, prompt: [5, 6, 7]), try decodeLogits(keep, prompt: [5, 6, 7]), "\(f)")
            XCTAssertNil(packed.blocks[0].mlp.fc1.residentBytes == packed.blocks[0].mlp.fc1.decodeBytes ? nil : 1, "\(f): fp32 copy kept")
            let dequantized = try MuDecoderModel(config: packed.config, tensors: packed.namedTensors())
            let rows = [Array(3..<20)]
            let a = try packed.logits(rows).toArray(), b = try dequantized.logits(rows).toArray()
            XCTAssertLessThan(relativeError(a, b), 1e-5, "\(f): prompt pass")
        }
    }

    /// Mu: the decoder and head follow the decode format, the encoder its own (packed only, prompt passes
    /// dequantize); the result stays within the format's quality bound.
    func testMuEncoderAndDecoderFormats() throws {
        let ref = try decodeLogits(try ModelRegistry.load(folder: fixture("mu/gqa_interleaved_ntk")))
        let mu = try XCTUnwrap(ModelRegistry.load(folder: fixture("mu/gqa_interleaved_ntk")) as? MuModel)
        let before = mu.decodeWeightBytes
        mu.useDecodeWeights(.q8_0, encoder: .bf16)
        XCTAssertLessThan(Double(mu.decodeWeightBytes), Double(before) * 0.5)   // tiny dims: biases and padding weigh
        XCTAssertEqual(mu.encoderBlocks[0].mlp.fc1.decodeFormat, .bf16)
        XCTAssertEqual(mu.decoderBlocks[0].crossAttn.k.decodeFormat, .bf16)   // runs with the encoder
        XCTAssertEqual(mu.decoderBlocks[0].crossAttn.q.decodeFormat, .q8_0)
        XCTAssertEqual(mu.encoderBlocks[0].mlp.fc1.residentBytes, mu.encoderBlocks[0].mlp.fc1.decodeBytes)   // no fp32 copy
        let err = relativeError(try decodeLogits(mu), ref)
        XCTAssertGreaterThan(err, 0)
        XCTAssertLessThan(err, 0.1, "relative logit error \(err)")
    }

    /// `encore quantize`: the checkpoint loads packed (no fp32 copies of the matrices) and decodes exactly like the
    /// in-memory model with the same format everywhere; it is smaller than the fp32 file.
    func testQuantizedCheckpointRoundTrip() throws {
        let dir = NSTemporaryDirectory() + "encore-quant-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, f) in [("gqa_mod", WeightFormat.int8), ("mu_decoder", .q4_1), ("mha", .q8_0), ("gqa_mod", .q4_0), ("mu_decoder", .bf16)] {
            let src = fixture("mu/" + name), out = dir + "/\(name)-\(f.rawValue)"
            let model = try ModelRegistry.load(folder: src)
            try QuantizedCheckpoint.write(model: model, format: f, to: out)
            let loaded = try ModelRegistry.load(folder: out)
            let inMemory = try ModelRegistry.load(folder: src)
            if let mu = inMemory as? MuModel { mu.useDecodeWeights(f, encoder: f, keepFP32: false) }
            else if let d = inMemory as? MuDecoderModel { d.useDecodeWeights(f, keepFP32: false) }
            XCTAssertEqual(try decodeLogits(loaded), try decodeLogits(inMemory), "\(name) \(f)")
            XCTAssertEqual(loaded.decodeWeightBytes, inMemory.decodeWeightBytes)
            let size = { (p: String) in (try FileManager.default.attributesOfItem(atPath: p)[.size] as! NSNumber).intValue }
            XCTAssertLessThan(try size(out + "/model.safetensors"), try size(src + "/model.safetensors"), "\(name) \(f)")
            let file = try SafeTensorsFile(path: out + "/model.safetensors")
            XCTAssertEqual(file.metadata[QuantizedCheckpoint.formatKey], f.rawValue)
        }
    }

    /// Broken quantized checkpoints fail with errors naming the tensor and the problem.
    func testQuantizedCheckpointErrors() throws {
        let dir = try makeTempDir(self)
        let name = "transformer.h.0.mlp.fc1.weight"
        let w = Tensor(zeros: [96, 48])
        func expectError(_ meta: [String: String], tensors: [String: Tensor] = [:], quantized: [String: QuantizedMatrix] = [:],
                         _ parts: [String], line: UInt = #line) throws {
            let path = dir + "/bad.safetensors"
            try SafeTensorsWriter.write(tensors: tensors, quantized: quantized, to: path, metadata: meta)
            XCTAssertThrowsError(try SafeTensorsFile(path: path).quantizedEntry(name), line: line) { e in
                for p in parts { XCTAssertTrue("\(e)".contains(p), "\(e) should mention \(p)", line: line) }
            }
        }
        // metadata says q8_0 but the tensor is plain F32
        try expectError(["encore.format.\(name)": "q8_0", "encore.columns.\(name)": "48"], tensors: [name: w], [name, "U8", "F32"])
        // unknown format, missing column count, wrong column count
        try expectError(["encore.format.\(name)": "q3_k", "encore.columns.\(name)": "48"], tensors: [name: w], [name, "q3_k"])
        try expectError(["encore.format.\(name)": "q8_0"], tensors: [name: w], [name, "encore.columns"])
        let q = QuantizedMatrix(w, format: .q4_0)
        try SafeTensorsWriter.write(tensors: [:], quantized: [name: q], to: dir + "/ok.safetensors")
        XCTAssertEqual(try SafeTensorsFile(path: dir + "/ok.safetensors").quantizedEntry(name)?.columns, 48)
        // an int8 matrix whose scale tensor is missing
        let i8 = QuantizedMatrix(w, format: .int8)
        try SafeTensorsWriter.write(tensors: [:], quantized: [name: i8], to: dir + "/i8.safetensors")
        XCTAssertNotNil(try SafeTensorsFile(path: dir + "/i8.safetensors").quantizedEntry(name))
        try expectError(["encore.format.\(name)": "int8", "encore.columns.\(name)": "48"], quantized: [name: QuantizedMatrix(w, format: .q8_0)], [name, "I8"])
        // f32 is not a quantized format
        let model = try ModelRegistry.load(folder: fixture("mu/mu_decoder"))
        XCTAssertThrowsError(try QuantizedCheckpoint.write(model: model, format: .f32, to: dir + "/x")) { e in
            XCTAssertTrue("\(e)".contains("f32"), "\(e)")
        }
        XCTAssertThrowsError(try WeightFormat(parsing: "q3_k")) { e in XCTAssertTrue("\(e)".contains("q3_k"), "\(e)") }
    }

    /// GGUF Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K matrices (and the Q8_0 embedding) kept in their blocks: prompt passes equal the dequantizing loader's (the same
    /// values), decode steps read the blocks with llama.cpp's activation quantization and land closer to
    /// llama.cpp's logits than fp32 activations do, and the matrices take less memory.
    func testGGUFKeepQuantizedMatchesLlamaCpp() throws {
        let dir = fixture("tiny_llama")
        let plain = try XCTUnwrap(ModelRegistry.load(folder: dir + "/mixed.gguf") as? LlamaModel)
        let kept = try XCTUnwrap(ModelRegistry.load(folder: dir + "/mixed.gguf", keepQuantized: true) as? LlamaModel)
        let golden = try readJSON(dir + "/golden.json")
        let prompt = try intRows(golden["prompts"])[1]                       // 40 tokens
        XCTAssertLessThan(relativeError(try kept.logits([prompt]).toArray(), try plain.logits([prompt]).toArray()), 1e-5)
        let packedLayers = kept.blocks.flatMap(\.linears).filter { $0.decodeFormat != .f32 }
        XCTAssertFalse(packedLayers.isEmpty)
        func resident(_ m: LlamaModel) -> Int { m.blocks.flatMap(\.linears).reduce(0) { $0 + $1.residentBytes } }
        XCTAssertLessThan(resident(kept), resident(plain))
        // one token per step through the decode kernels, compared with llama.cpp's logits of the same positions
        let want = try SafeTensorsFile(path: dir + "/golden-mixed.safetensors").tensor("prompt1.logits").toArray()
        let errKept = relativeError(try decodeLogits(kept, prompt: [prompt[0]], steps: Array(prompt.dropFirst())), want),
            errPlain = relativeError(try decodeLogits(plain, prompt: [prompt[0]], steps: Array(prompt.dropFirst())), want)
        print("tiny mixed GGUF, decode steps vs llama.cpp: kept quantized \(errKept), dequantized \(errPlain)")
        XCTAssertLessThan(errKept, errPlain)
        XCTAssertLessThan(errKept, 1e-2)    // measured 2.7e-3 (the rest: llama.cpp rounds x to f16/bf16 for F16/BF16 weights)
        // the K-quant ffn_down matrices stay in their blocks too
        XCTAssertEqual(kept.blocks.map(\.down.decodeFormat), [.q6_K, .q4_K, .q5_K])
        // the Q8_0 embedding stays in its blocks: lookups dequantize rows (exactly the widened values)
        XCTAssertNil(kept.embedding)
        XCTAssertEqual(kept.embeddingBlocks?.format, .q8_0)
        XCTAssertNotNil(plain.embedding)
    }

    /// A head tied to a Q4_0 embedding (tools/goldens/make_tied_quant_goldens.py): with --keep-quantized the table
    /// stays in its blocks (no fp32 copy), lookups dequantize the rows they need, and the head runs the quantized
    /// GEMV over the same blocks, as llama.cpp does. Decode-step logits vs llama.cpp's: measured 1.9e-7 kept
    /// (every matrix and the head in llama.cpp's own arithmetic: Q8_0/Q8_K activations, exact int32 block sums),
    /// 2.2e-2 widened (fp32 everywhere); bound: kept ≤ widened and < 1e-5. Prompt
    /// logits kept vs widened differ by the head's activation quantization alone (8 bits per block of 32:
    /// measured 6.4e-3; bound 3e-2).
    func testGGUFTiedQuantizedEmbeddingStaysInBlocks() throws {
        let path = fixture("tiny_llama/tied-q4.gguf")
        let plain = try XCTUnwrap(ModelRegistry.load(folder: path) as? LlamaModel)
        let kept = try XCTUnwrap(ModelRegistry.load(folder: path, keepQuantized: true) as? LlamaModel)
        XCTAssertTrue(kept.tiedHead && plain.tiedHead)
        XCTAssertNil(kept.embedding)
        XCTAssertNil(kept.head)
        let blocks = try XCTUnwrap(kept.embeddingBlocks)
        XCTAssertEqual(blocks.format, .q4_0)
        XCTAssertTrue(kept.headDecode === blocks, "the tied head should be the embedding's blocks")
        XCTAssertNotNil(plain.embedding)
        XCTAssertEqual(kept.parameterCount, plain.parameterCount)
        let golden = try readJSON(fixture("tiny_llama/golden.json"))
        let prompt = try intRows(golden["prompts"])[1]                       // 40 tokens
        let promptErr = relativeError(try kept.logits([prompt]).toArray(), try plain.logits([prompt]).toArray())
        XCTAssertGreaterThan(promptErr, 0)
        XCTAssertLessThan(promptErr, 3e-2)
        let want = try SafeTensorsFile(path: fixture("tiny_llama/golden-tied-q4.safetensors")).tensor("prompt1.logits").toArray()
        let errKept = relativeError(try decodeLogits(kept, prompt: [prompt[0]], steps: Array(prompt.dropFirst())), want),
            errPlain = relativeError(try decodeLogits(plain, prompt: [prompt[0]], steps: Array(prompt.dropFirst())), want)
        print("tiny tied-Q4_0 GGUF: prompt kept vs widened \(promptErr); decode steps vs llama.cpp: kept \(errKept), widened \(errPlain)")
        XCTAssertLessThanOrEqual(errKept, errPlain)
        XCTAssertLessThan(errKept, 1e-5)
    }

    /// Q5_0 / Q5_1 blocks (tools/goldens/make_tied_quant_goldens.py's q5.gguf, with a tied Q8_0 head): what llama.cpp's Q4_K_M files of
    /// small models hold wherever a row is not a multiple of 256 (SmolLM2-360M, Qwen2.5-0.5B). With --keep-quantized
    /// they stay in their blocks and decode runs llama.cpp's arithmetic on them (q8_0 / q8_1 activations, exact int32
    /// block sums), so decode-step logits land on llama.cpp's: bound 1e-5 and no further than the widened model's.
    /// Widened, the same file gives llama.cpp's fp32 reference logits (prompt pass, fp32 everywhere: bound 1e-5).
    func testGGUFQ5BlocksMatchLlamaCpp() throws {
        let path = fixture("tiny_llama/q5.gguf")
        let plain = try XCTUnwrap(ModelRegistry.load(folder: path) as? LlamaModel)
        let kept = try XCTUnwrap(ModelRegistry.load(folder: path, keepQuantized: true) as? LlamaModel)
        XCTAssertEqual(kept.blocks.map(\.down.decodeFormat), [.q5_0, .q5_1, .q5_1])
        XCTAssertEqual(kept.blocks.map(\.o.decodeFormat), [.q5_0, .q5_1, .q5_0])
        XCTAssertEqual(kept.embeddingBlocks?.format, .q8_0)
        XCTAssertEqual(plain.blocks.map(\.down.decodeFormat), [.f32, .f32, .f32])
        let golden = try readJSON(fixture("tiny_llama/golden.json"))
        let prompt = try intRows(golden["prompts"])[1]                       // 40 tokens
        let reference = try SafeTensorsFile(path: fixture("tiny_llama/golden-q5.safetensors"))
        let fp32Err = relativeError(try plain.logits([prompt]).toArray(), try reference.tensor("prompt1.fp32_logits").toArray())
        XCTAssertLessThan(fp32Err, 1e-5, "widened Q5 blocks against gguf's dequantization in numpy")
        let want = try reference.tensor("prompt1.logits").toArray()
        let errKept = relativeError(try decodeLogits(kept, prompt: [prompt[0]], steps: Array(prompt.dropFirst())), want),
            errPlain = relativeError(try decodeLogits(plain, prompt: [prompt[0]], steps: Array(prompt.dropFirst())), want)
        // prompt passes on the blocks as stored (--prompt-weights int8: ek_gemm_q8_0, llama.cpp's q8_0 / q8_1
        // activations and exact block sums): llama.cpp's prompt logits, bound 1e-5
        try kept.usePromptWeights(.int8)
        XCTAssertTrue(kept.blocks[0].o.promptInt8 === kept.blocks[0].o.packed, "the Q5_0 blocks serve prompt passes as stored")
        let errPrompt = relativeError(try kept.logits([prompt]).toArray(), want)
        print("tiny Q5_0/Q5_1 GGUF: prompt widened vs fp32 numpy \(fp32Err); decode steps vs llama.cpp: kept \(errKept), widened \(errPlain); int8 prompt pass vs llama.cpp \(errPrompt)")
        XCTAssertLessThanOrEqual(errKept, errPlain)
        XCTAssertLessThan(errKept, 1e-5)
        XCTAssertLessThan(errPrompt, 1e-5)
    }

    /// Llama (tiny F32 GGUF, large random weights): every format decodes, with the error ordered by the format's
    /// precision; measured bf16 1e-2, int8 5.5e-2, q8_0 ~5e-2, q4 0.44; bounds 1.5×.
    func testLlamaDecodeFormats() throws {
        let path = fixture("tiny_llama/f32.gguf")
        let m = try XCTUnwrap(ModelRegistry.load(folder: path) as? LlamaModel)
        let ref = try decodeLogits(m, prompt: [1, 45, 43, 255])
        var errors: [WeightFormat: Float] = [:]
        for f in quantFormats {
            m.useDecodeWeights(f)
            errors[f] = relativeError(try decodeLogits(m, prompt: [1, 45, 43, 255]), ref)
            XCTAssertGreaterThan(errors[f]!, 0, "\(f)")
            XCTAssertLessThan(errors[f]!, f == .q4_0 || f == .q4_1 ? 0.7 : f == .bf16 ? 2e-2 : 0.09, "\(f): \(errors[f]!)")
            m.useDecodeWeights(.f32)
        }
        print("tiny llama decode error: \(errors.map { "\($0.key.rawValue) \($0.value)" }.sorted())")
        XCTAssertLessThan(errors[.bf16]!, errors[.q8_0]!)
        XCTAssertLessThan(errors[.q8_0]!, errors[.q4_0]!)
    }
}

/// `encore quantize`, `generate --decode-weights/--keep-quantized` and `bench --decode-weights` from the command line.
final class QuantizeCLITests: XCTestCase {
    func testQuantizeThenGenerate() throws {
        let dir = try makeTempDir(self)
        let q = runCLI(["quantize", "--model", fixture("mu/mu_decoder"), "--out", dir + "/q8", "--format", "q8_0"])
        XCTAssertEqual(q.status, 0, q.stderr)
        XCTAssertTrue(q.stdout.contains("q8_0 matrices"), q.stdout)
        let direct = runCLI(["generate", "--model", fixture("mu/mu_decoder"), "--input-ids", "5,6,7", "--max-tokens", "6", "--json",
                             "--decode-weights", "q8_0"])
        let viaFile = runCLI(["generate", "--model", dir + "/q8", "--input-ids", "5,6,7", "--max-tokens", "6", "--json"])
        XCTAssertEqual(direct.status, 0, direct.stderr)
        XCTAssertEqual(viaFile.status, 0, viaFile.stderr)
        XCTAssertFalse(viaFile.stdout.isEmpty)
        // a 3-token prompt: every pass is a decode-kernel pass, so the checkpoint and the in-memory format agree
        XCTAssertEqual(viaFile.stdout, direct.stdout)
        let gguf = runCLI(["generate", "--model", fixture("tiny_llama/mixed.gguf"), "--keep-quantized", "--input-ids", "1,45,43",
                           "--max-tokens", "4", "--json"])
        XCTAssertEqual(gguf.status, 0, gguf.stderr)
    }

    func testBadFormatsAreRejected() throws {
        let dir = try makeTempDir(self)
        for args in [["quantize", "--model", fixture("mu/mu_decoder"), "--out", dir + "/x", "--format", "q3_k"],
                     ["quantize", "--model", fixture("mu/mu_decoder"), "--out", dir + "/x", "--format", "f32"],
                     ["generate", "--model", fixture("mu/mu_decoder"), "--input-ids", "5", "--decode-weights", "int4"],
                     ["bench", "--model", fixture("mu/mu_decoder"), "--decode-weights", "f32,q9"]] {
            let r = runCLI(args)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            XCTAssertTrue(r.stderr.contains("format") || r.stderr.contains("decode-weights"), r.stderr)
        }
        // a GGUF model quantizes to GGUF, which has no per-row int8 type (GGUFQuantizeTests covers the rest)
        let gguf = runCLI(["quantize", "--model", fixture("tiny_llama/f32.gguf"), "--out", dir + "/y", "--format", "int8"])
        XCTAssertNotEqual(gguf.status, 0)
        XCTAssertTrue(gguf.stderr.contains("int8 has no GGUF type"), gguf.stderr)
    }
}

extension QuantizedModelTests {
    /// `--prompt-weights blocks` on a kept mixed GGUF (Q8_0/Q4_0/Q4_1, F16/BF16 and K-quant matrices): the blocks the
    /// int8 GEMM reads (all of this file's block formats, Q6_K included since session 20) serve prompt passes as stored,
    /// the resident bytes do not grow, and the prompt logits stay within the activation quantization of the widened
    /// model's (measured 1.6e-2; bound 3e-2). A bf16 decode copy, which the int8 GEMM does not read, gets no prompt
    /// copy (widened per matrix).
    func testBlocksPromptWeightsAddNoCopies() throws {
        let path = fixture("tiny_llama/mixed.gguf")
        let kept = try XCTUnwrap(ModelRegistry.load(folder: path, keepQuantized: true) as? LlamaModel)
        let golden = try readJSON(fixture("tiny_llama/golden.json"))
        let prompt = try intRows(golden["prompts"])[1]
        let widened = try kept.logits([prompt]).toArray()
        func resident(_ m: LlamaModel) -> Int { m.blocks.flatMap(\.linears).reduce(0) { $0 + $1.residentBytes } }
        let before = resident(kept)
        try kept.usePromptWeights(.blocks)
        var shared = 0, widenedLayers = 0
        for l in kept.blocks.flatMap(\.linears) where l.decodeFormat != .f32 {
            if l.decodeFormat.hasInt8PromptGEMM {
                XCTAssertTrue(l.promptInt8 === l.packed, "\(l.decodeFormat): blocks as stored")
                shared += 1
            } else {
                XCTAssertNil(l.promptInt8, "\(l.decodeFormat): no int8 copy")
                widenedLayers += 1
            }
        }
        XCTAssertGreaterThan(shared, 0)
        XCTAssertEqual(widenedLayers, 0)
        XCTAssertEqual(kept.blocks[0].down.decodeFormat, .q6_K)
        XCTAssertTrue(kept.blocks[0].down.promptInt8 === kept.blocks[0].down.packed, "Q6_K: blocks as stored")
        XCTAssertLessThanOrEqual(resident(kept), before)
        let err = relativeError(try kept.logits([prompt]).toArray(), widened)
        print("tiny mixed GGUF, --prompt-weights blocks: \(shared) layers on their blocks, \(widenedLayers) widened; prompt logits vs widened \(err)")
        XCTAssertGreaterThan(err, 0)
        XCTAssertLessThan(err, 3e-2)
        let bf16 = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        bf16.useDecodeWeights(.bf16)
        try bf16.usePromptWeights(.blocks)
        for l in bf16.blocks.flatMap(\.linears) {
            XCTAssertEqual(l.decodeFormat, .bf16)
            XCTAssertNil(l.promptInt8, "bf16: widened per matrix, no int8 copy")
        }
    }

    /// `--prompt-weights auto`, the command line's default: a GGUF kept quantized whose blocks the decode steps stream
    /// as loaded runs its prompt passes on them (as `blocks`: no fp32 copy exists, so `f32` would widen every matrix
    /// each pass); everything else on fp32 (copies, or the decode format widened). The library's rule, then `score`:
    /// the default gives exactly the explicit choice's log-probabilities, in cases where blocks and f32 differ, so a
    /// rule that picked the other one fails.
    func testAutoPromptWeightsUseKeptBlocks() throws {
        let path = fixture("tiny_llama/mixed.gguf")
        XCTAssertEqual(PromptWeights.automatic(modelPath: path, keepQuantized: true, decodesAsLoaded: true), .blocks)
        XCTAssertEqual(PromptWeights.automatic(modelPath: path, keepQuantized: false, decodesAsLoaded: true), .f32,
                       "widened on load: fp32 copies exist")
        XCTAssertEqual(PromptWeights.automatic(modelPath: path, keepQuantized: true, decodesAsLoaded: false), .f32,
                       "another decode format asked for (T5: its encoder would take it too)")
        XCTAssertEqual(PromptWeights.automatic(modelPath: fixture("tiny_llama/f32.gguf"), keepQuantized: true, decodesAsLoaded: true),
                       .f32, "an F32 GGUF has no blocks to keep")
        XCTAssertEqual(PromptWeights.automatic(modelPath: fixture("tiny_llama/hf"), keepQuantized: true, decodesAsLoaded: true),
                       .f32, "a folder: --keep-quantized is for GGUF files")
        XCTAssertTrue(try GGUFModelFile(path: path).hasQuantizedMatrices)
        XCTAssertFalse(try GGUFModelFile(path: fixture("tiny_llama/f32.gguf")).hasQuantizedMatrices)
        let input = Array(5..<40), target = Array(40..<52)   // 35 + 12 rows: prompt passes, not decode GEMVs
        func score(_ extra: [String]) throws -> [Double] { try scoreLogprobs(model: path, input: input, target: target, extra) }
        let gap = maxGap
        let kept = ["--keep-quantized"], keptQ8 = ["--keep-quantized", "--decode-weights", "q8_0"]
        let auto = try score(kept), blocks = try score(kept + ["--prompt-weights", "blocks"])
        let widened = try score(kept + ["--prompt-weights", "f32"])
        XCTAssertEqual(auto.count, target.count)
        XCTAssertEqual(gap(auto, blocks), 0, "auto on the kept blocks is blocks")
        XCTAssertGreaterThan(gap(blocks, widened), 1e-5, "blocks and widened prompt passes score differently here")
        let autoQ8 = try score(keptQ8), widenedQ8 = try score(keptQ8 + ["--prompt-weights", "f32"])
        XCTAssertEqual(gap(autoQ8, widenedQ8), 0, "another decode format: auto is f32")
        XCTAssertGreaterThan(gap(widenedQ8, try score(keptQ8 + ["--prompt-weights", "blocks"])), 1e-5,
                             "q8_0 blocks and widened prompt passes score differently here")
    }

    /// `--prompt-weights auto` on a folder written by `encore quantize`: its matrices load packed, without fp32
    /// copies, so auto runs the prompt passes on them (int8 rows or blocks) unless another decode format is asked for
    /// or the format has no int8 GEMM (bf16); an fp32 folder stays f32. `score`'s default equals the explicit choice
    /// where the two differ.
    func testAutoPromptWeightsOnAQuantizedFolder() throws {
        let dir = try makeTempDir(self)
        for f in ["q8_0", "bf16"] {
            let q = runCLI(["quantize", "--model", fixture("mu/mu_decoder"), "--out", dir + "/" + f, "--format", f])
            XCTAssertEqual(q.status, 0, q.stderr)
        }
        XCTAssertEqual(PromptWeights.automatic(modelPath: dir + "/q8_0", keepQuantized: false, decodesAsLoaded: true), .blocks)
        XCTAssertEqual(PromptWeights.automatic(modelPath: dir + "/q8_0", keepQuantized: false, decodesAsLoaded: false), .f32)
        XCTAssertEqual(PromptWeights.automatic(modelPath: dir + "/bf16", keepQuantized: false, decodesAsLoaded: true), .f32)
        XCTAssertEqual(PromptWeights.automatic(modelPath: fixture("mu/mu_decoder"), keepQuantized: false, decodesAsLoaded: true), .f32)
        func score(_ extra: [String]) throws -> [Double] {   // 15 rows: a prompt pass
            try scoreLogprobs(model: dir + "/q8_0", input: Array(5...14), target: Array(15...19), extra)
        }
        let gap = maxGap
        let auto = try score([]), blocks = try score(["--prompt-weights", "blocks"]), widened = try score(["--prompt-weights", "f32"])
        XCTAssertEqual(auto.count, 5)
        XCTAssertEqual(gap(auto, blocks), 0, "auto on a quantized folder is blocks")
        XCTAssertGreaterThan(gap(blocks, widened), 1e-6, "blocks and widened prompt passes score differently here")
    }

    /// A kept GGUF with an fp32 embedding table beside an untied quantized head (Q5_0 here): `blocks` prompt weights
    /// (the default for such a file) leave the table as the file stores it instead of quantizing it to the head's
    /// format. Without that rule this file's prompt logits move by 0.11 (every embedding rounded to 5 bits), and a
    /// K-quant head, which has no quantizer, stops the process. With it they move by the blocks' activation rounding
    /// only (measured 1.4e-2 in session 19; bound 3e-2, as for the tied quantized table).
    func testBlocksKeepAnFP32TableBesideAQ5Head() throws {
        let src = try GGUFModelFile(path: fixture("tiny_llama/mixed.gguf"))
        let out = try makeTempDir(self) + "/q5head.gguf"
        var tensors: [GGUFOutputTensor] = []
        for name in src.tensorNames {
            let t = try XCTUnwrap(src.tensors[name])
            if name == "token_embd.weight" || name == "output.weight" {
                let values = try src.tensor(name)   // fp32 values of the stored tensor
                let type: GGMLType = name == "output.weight" ? .q5_0 : .f32
                tensors.append(GGUFOutputTensor(name: name, shape: t.shape, type: type) { dst in
                    if type == .f32 { dst.copyMemory(from: values.data, byteCount: values.count * 4); return }
                    XCTAssertEqual(ek_quantize_rows(Int32(EK_WF_Q5_0), values.data, dst, nil, t.shape[0], t.shape[1]), 0)
                })
            } else {
                let raw = try src.rawBytes(name)
                tensors.append(GGUFOutputTensor(name: name, shape: t.shape, type: t.type) { $0.copyMemory(from: raw.baseAddress!, byteCount: raw.count) })
            }
        }
        try withExtendedLifetime(src) {   // the fills read src's mapping
            try GGUFWriter.write(to: out, metadata: src.gguf.keys.map { ($0, src.gguf.metadata[$0]!) }, tensors: tensors)
        }
        let m = try XCTUnwrap(ModelRegistry.load(folder: out, keepQuantized: true) as? LlamaModel)
        XCTAssertTrue(m.keptQuantized)
        let before = try m.logits([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]).toArray()
        try m.usePromptWeights(.blocks)
        XCTAssertNotNil(m.embedding, "the file's fp32 table stays")
        XCTAssertNil(m.embeddingBlocks)
        let after = try m.logits([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]).toArray()
        let err = relativeError(after, before)
        print("kept GGUF, fp32 table beside a Q5_0 head, --prompt-weights blocks: prompt logits vs widened \(err)")
        XCTAssertGreaterThan(err, 0)
        XCTAssertLessThan(err, 3e-2, "the blocks' activation rounding only")
        XCTAssertEqual(PromptWeights.automatic(modelPath: out, keepQuantized: true, decodesAsLoaded: true), .blocks)
    }

    /// Layers of different layouts (q/k in Q5_0 beside a Q8_0 v, as llama.cpp's Q4_K_M files have them): in a decode
    /// step each layout's layers share one call (counted), with exactly the floats of one call per layer, in order.
    func testSharedDecodeGEMVsGroupLayouts() {
        defer { DecodeTuning.sharedGEMV = true }
        var rng = SplitMix64(seed: 11)
        func layer(_ out: Int, _ f: WeightFormat) -> Linear {
            let w = Tensor(zeros: [out, 320])
            for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
            var l = Linear(weight: w, bias: nil)
            l.useDecodeWeights(f)
            return l
        }
        let x = Tensor(zeros: [2, 320])
        for i in 0..<x.count { x.data[i] = rng.nextUnitFloat() * 2 - 1 }
        for (formats, groupedCalls) in [([WeightFormat.q5_0, .q5_0, .q8_0], 1), ([.q8_0, .q4_0, .q8_0], 1), ([.q4_0, .q5_1, .int8], 0)] {
            let layers = [layer(64, formats[0]), layer(32, formats[1]), layer(48, formats[2])]
            DecodeTuning.sharedGEMV = false
            let separate = Linear.shared(x, layers).map { $0.toArray() }
            DecodeTuning.sharedGEMV = true
            let calls = DecodeTuning.groupedSharedCalls
            let grouped = Linear.shared(x, layers).map { $0.toArray() }
            XCTAssertEqual(DecodeTuning.groupedSharedCalls - calls, groupedCalls, "\(formats): shared calls by layout")
            XCTAssertEqual(grouped.map(\.count), [128, 64, 96], "\(formats)")
            XCTAssertEqual(grouped, separate, "\(formats)")
        }
    }

    /// SharedDecodeCall (q/k/v or gate/up as raw pointers, made once) gives the bytes of Ops.linearQuantizedShared for
    /// 1, 3 and 10 rows (past 8: the weights read again per 8), biases or none; it exists only for 2…4 layers of one
    /// layout and width; and AttentionWeights / LlamaBlock make theirs again when a layer changes (a stale one would
    /// still multiply the old matrices).
    func testSharedDecodeCallMatchesTheSharedKernelCall() throws {
        var rng = SplitMix64(seed: 29)
        func layer(_ out: Int, _ f: WeightFormat, bias: Bool, inputs: Int = 96) -> Linear {
            let w = Tensor(zeros: [out, inputs])
            for i in 0..<w.count { w.data[i] = rng.nextUnitFloat() - 0.5 }
            let b = bias ? Tensor(shape: [out], values: (0..<out).map { _ in rng.nextUnitFloat() }) : nil
            var l = Linear(weight: w, bias: b)
            l.useDecodeWeights(f)
            return l
        }
        for f in [WeightFormat.q4_0, .int8, .bf16] {
            let layers = [layer(64, f, bias: true), layer(32, f, bias: false), layer(40, f, bias: true)]
            let call = try XCTUnwrap(SharedDecodeCall(layers), "\(f)")
            for m in [1, 3, 10] {
                let x = Tensor(shape: [m, 96], values: (0..<(m * 96)).map { _ in rng.nextUnitFloat() * 2 - 1 })
                let want = Ops.linearQuantizedShared(x, weights: layers.map { $0.decodeMatrixForCall! }, biases: layers.map(\.bias))
                let got = call(x)
                XCTAssertEqual(got.map(\.shape), [[m, 64], [m, 32], [m, 40]], "\(f) m\(m)")
                XCTAssertEqual(got.map { $0.toArray() }, want.map { $0.toArray() }, "\(f) m\(m)")
            }
        }
        XCTAssertNil(SharedDecodeCall([layer(64, .q4_0, bias: false)]), "one layer: no shared call")
        XCTAssertNil(SharedDecodeCall([layer(64, .q4_0, bias: false), layer(64, .q8_0, bias: false)]), "two layouts")
        XCTAssertNil(SharedDecodeCall([layer(64, .q4_0, bias: false), layer(64, .q4_0, bias: false, inputs: 64)]), "two widths")
        XCTAssertNil(SharedDecodeCall([layer(64, .q4_0, bias: false), layer(64, .f32, bias: false)]), "an fp32 layer")

        // a model's calls follow its layers: q/k/v of every Mu decoder layer after each format change
        let mu = try MuModel(config: MuConfig(nEncoderLayer: 1, nDecoderLayer: 2, nEmbd: 96, qkvEmbd: 64, hiddenDim: 128, nHead: 4,
                                              nKVHead: 2, blockSize: 64, vocabSize: 100, eosTokenId: 2), randomSeed: 5)
        for f in [WeightFormat.q8_0, .q4_1, .f32, .int8] {
            try mu.useDecodeWeights(f)
            for block in mu.decoderBlocks {
                let a = block.causalAttn
                XCTAssertEqual(a.qkvCall?.layout, f == .f32 ? nil : a.q.decodeMatrixForCall?.layoutID, "\(f)")
                XCTAssertEqual(a.qkvCall?.weightBytes, f == .f32 ? nil : [a.q, a.k, a.v].reduce(0) { $0 + $1.decodeMatrixForCall!.byteCount })
            }
        }
    }

    /// Decode steps with the shared-activation GEMVs (q/k/v and gate/up in one kernel call, DecodeTuning.sharedGEMV)
    /// give exactly the logits of one call per layer, for Mu, mu_decoder, a Llama GGUF and T5, in every decode format.
    func testSharedDecodeGEMVsGiveTheSameLogits() throws {
        defer { DecodeTuning.sharedGEMV = true }
        let mu = try MuModel(config: MuConfig(nEncoderLayer: 2, nDecoderLayer: 2, nEmbd: 96, qkvEmbd: 64, hiddenDim: 256, nHead: 4,
                                              nKVHead: 2, blockSize: 64, vocabSize: 300, eosTokenId: 2), randomSeed: 4)
        let llama = try ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf"))
        let t5 = try ModelRegistry.load(folder: fixture("t5/v1_1"))   // self-attention q/k/v in one call (T5Attention)
        for (name, model) in [("mu", mu as LanguageModel), ("mu_decoder", try smallDecoder()), ("llama", llama), ("t5", t5)] {
            for f in quantFormats {
                try model.useDecodeWeights(f)
                DecodeTuning.sharedGEMV = false
                var calls = DecodeTuning.keptSharedCalls
                let separate = try decodeLogits(model)
                XCTAssertEqual(DecodeTuning.keptSharedCalls, calls, "\(name) \(f): off means one call per layer")
                DecodeTuning.sharedGEMV = true
                calls = DecodeTuning.keptSharedCalls
                let shared = try decodeLogits(model)
                XCTAssertGreaterThan(DecodeTuning.keptSharedCalls, calls, "\(name) \(f): the kept SharedDecodeCall ran")
                XCTAssertEqual(shared, separate, "\(name) \(f)")
            }
            try model.useDecodeWeights(.f32)
        }
    }

    /// LlamaBlock's and T5Attention's kept calls follow their layers through every change of decode or prompt weights:
    /// each names the layout of the matrices a decode step streams then (fp32: none); int8 prompt rows over fp32
    /// decode weights become the decode matrices (no fp32 copy left), and the calls with them.
    func testKeptSharedCallsFollowTheLayers() throws {
        let llama = try XCTUnwrap(try ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        let t5 = try XCTUnwrap(try ModelRegistry.load(folder: fixture("t5/v1_1")) as? T5Model)
        func check(_ what: String) {
            for b in llama.blocks {
                guard case .separate(let q, let k, let v) = b.qkv, case .separate(let g, let u) = b.gateUp else {
                    return XCTFail("tiny llama: separate q/k/v and gate/up expected")
                }
                let layout = q.decodeMatrixForCall?.layoutID
                XCTAssertEqual(b.qkvCall?.layout, layout, "llama \(what)")
                XCTAssertEqual(b.qkvCall?.weightBytes, layout == nil ? nil : [q, k, v].reduce(0) { $0 + $1.decodeMatrixForCall!.byteCount })
                XCTAssertEqual(b.gateUpCall?.layout, g.decodeMatrixForCall?.layoutID, "llama \(what)")
                XCTAssertEqual(b.gateUpCall?.totalRows, layout == nil ? nil : g.outputs + u.outputs)
            }
            for b in t5.decoderBlocks {
                XCTAssertEqual(b.selfAttn.qkvCall?.layout, b.selfAttn.q.decodeMatrixForCall?.layoutID, "t5 \(what)")
            }
        }
        check("fp32")
        XCTAssertNil(llama.blocks[0].qkvCall, "fp32: no kept call")
        for f in quantFormats {
            try llama.useDecodeWeights(f); try t5.useDecodeWeights(f)
            check("\(f)")
            XCTAssertNotNil(llama.blocks[0].qkvCall, "\(f)")
            XCTAssertNotNil(t5.decoderBlocks[0].selfAttn.qkvCall, "\(f)")
        }
        try llama.useDecodeWeights(.f32); try t5.useDecodeWeights(.f32)
        check("fp32 again")
        try llama.usePromptWeights(.int8)
        check("int8 prompt rows")
        guard case .separate(let q, _, _) = llama.blocks[0].qkv else { return XCTFail("separate q/k/v expected") }
        XCTAssertEqual(q.decodeMatrixForCall?.format, .int8, "int8 prompt rows are what decode streams")
        XCTAssertNotNil(llama.blocks[0].qkvCall, "and the kept call streams them")
    }
}
