import XCTest
@testable import Encore

/// T5 from llama.cpp's GGUF (`general.architecture` "t5"). Fixtures: tools/goldens/make_t5_gguf_goldens.py converts the
/// transformers checkpoints t5/gguf_gated (gated-gelu, untied head) and t5/gguf_relu (relu, tied head scaled by
/// d_model^-0.5 in transformers) to GGUF F32 as convert_hf_to_gguf.py does, quantizes both to Q8_0 / Q4_0 with
/// llama.cpp's quantizer, and records llama.cpp's logits (llama_encode, then one llama_decode per decoder token).
final class T5GGUFTests: XCTestCase {
    func dir(_ c: String) -> String { fixture("t5_gguf/\(c)") }

    func golden(_ c: String) throws -> (prompts: [String: [Int]], decoderIds: [Int], logits: SafeTensorsFile) {
        let j = try readJSON(dir(c) + "/llama_cpp.json")
        let p = try XCTUnwrap(j["prompts"] as? [String: Any])
        return (try p.mapValues { try ints($0) }, try ints(j["decoder_ids"]), try SafeTensorsFile(path: dir(c) + "/llama_cpp.safetensors"))
    }

    /// Decode-step logits: beginGeneration on the prompt (start token), then one advance per later decoder id.
    func stepLogits(_ m: LanguageModel, prompt: [Int], decoderIds: [Int]) throws -> [Float] {
        let s = try m.beginGeneration(prompts: [prompt])
        var out = s.logits.toArray()
        for t in decoderIds.dropFirst().dropLast() { try s.advance(tokens: [t]); out += s.logits.toArray() }
        return out
    }

    func testNameMapping() {
        XCTAssertEqual(T5Model.ggufName("shared.weight"), "token_embd.weight")
        XCTAssertEqual(T5Model.ggufName("encoder.block.1.layer.0.SelfAttention.o.weight"), "enc.blk.1.attn_o.weight")
        XCTAssertEqual(T5Model.ggufName("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"), "enc.blk.0.attn_rel_b.weight")
        XCTAssertEqual(T5Model.ggufName("encoder.block.1.layer.1.DenseReluDense.wi_0.weight"), "enc.blk.1.ffn_gate.weight")
        XCTAssertEqual(T5Model.ggufName("encoder.block.1.layer.1.layer_norm.weight"), "enc.blk.1.ffn_norm.weight")
        XCTAssertEqual(T5Model.ggufName("decoder.block.2.layer.1.EncDecAttention.k.weight"), "dec.blk.2.cross_attn_k.weight")
        XCTAssertEqual(T5Model.ggufName("decoder.block.2.layer.1.layer_norm.weight"), "dec.blk.2.cross_attn_norm.weight")
        XCTAssertEqual(T5Model.ggufName("decoder.block.0.layer.2.DenseReluDense.wi.weight"), "dec.blk.0.ffn_up.weight")
        XCTAssertEqual(T5Model.ggufName("decoder.block.0.layer.2.DenseReluDense.wo.weight"), "dec.blk.0.ffn_down.weight")
        XCTAssertEqual(T5Model.ggufName("decoder.final_layer_norm.weight"), "dec.output_norm.weight")
        XCTAssertEqual(T5Model.ggufName("encoder.embed_tokens.weight"), "encoder.embed_tokens.weight")
    }

    /// The registry picks T5 by architecture; the config read from `t5.*` keys equals the transformers config (gated:
    /// every field; relu: all but the scaling, which GGUF T5 does not have).
    func testConfigFromMetadata() throws {
        let gated = try XCTUnwrap(try ModelRegistry.load(folder: dir("gated") + "/f32.gguf") as? T5Model)
        let hf = try XCTUnwrap(try ModelRegistry.load(folder: fixture("t5/gguf_gated")) as? T5Model)
        var want = hf.config
        want.scaleDecoderOutputs = false
        XCTAssertEqual(Float(gated.config.layerNormEpsilon), Float(want.layerNormEpsilon), "stored as F32")
        want.layerNormEpsilon = gated.config.layerNormEpsilon
        XCTAssertEqual(gated.config, want)
        XCTAssertEqual(gated.parameterCount, hf.parameterCount)
        let relu = try XCTUnwrap(try ModelRegistry.load(folder: dir("relu") + "/f32.gguf") as? T5Model)
        XCTAssertEqual(relu.config.feedForwardProj, "relu")
        XCTAssertTrue(relu.config.tieWordEmbeddings)
        XCTAssertFalse(relu.config.scalesDecoderOutput)
    }

    /// F32 GGUF = transformers folder, teacher-forced on the goldens' batch and long rows: ≤ 1e-6 relative (the same fp32
    /// weights and operations). Relu (tied head): the GGUF logits × d_model^-0.5 equal the folder's (transformers
    /// scales the decoder output, llama.cpp does not), ≤ 1e-6.
    func testF32GGUFEqualsHuggingFaceFolder() throws {
        for (c, hfName) in [("gated", "gguf_gated"), ("relu", "gguf_relu")] {
            let g = try XCTUnwrap(try ModelRegistry.load(folder: dir(c) + "/f32.gguf") as? T5Model)
            let hf = try XCTUnwrap(try ModelRegistry.load(folder: fixture("t5/\(hfName)")) as? T5Model)
            let golden = try readJSON(fixture("t5/\(hfName)/golden.json"))
            for prefix in ["", "long_"] {
                let enc = try intRows(golden[prefix + "encoder_input_ids"]), dec = try intRows(golden[prefix + "decoder_input_ids"])
                var a = try g.teacherForcedLogits(encoderIds: enc, decoderIds: dec).toArray()
                if hf.config.scalesDecoderOutput { a = a.map { $0 * Float(pow(Double(hf.config.dModel), -0.5)) } }
                let b = try hf.teacherForcedLogits(encoderIds: enc, decoderIds: dec).toArray()
                let err = relativeError(a, b)
                XCTAssertLessThanOrEqual(err, 1e-6, "\(c) \(prefix): relative error \(err)")
            }
        }
    }

    /// Decode steps of the F32 GGUF against llama.cpp's logits of the same steps (prompts of 8, 10 and 150 tokens, the
    /// last past max_distance 128). Relu: measured 2–4e-7 relative, bound 2e-6. Gated-gelu: measured 1.9–3.7e-4, bound
    /// 1e-3 — llama.cpp's CPU GELU rounds its input to fp16 and reads an fp16 table (GGML_GELU_FP16 in ggml-cpu/vec.h),
    /// Encore computes GELU-tanh in fp32 as transformers does.
    func testF32MatchesLlamaCpp() throws {
        for c in ["gated", "relu"] {
            let (prompts, decoderIds, logits) = try golden(c)
            let m = try ModelRegistry.load(folder: dir(c) + "/f32.gguf")
            for (name, prompt) in prompts.sorted(by: { $0.key < $1.key }) {
                let want = try logits.tensor("f32.\(name)").toArray()
                let err = relativeError(try stepLogits(m, prompt: prompt, decoderIds: decoderIds + [0]), want)
                print("t5 GGUF \(c) f32 \(name) vs llama.cpp: relative logit error \(err)")
                XCTAssertLessThan(err, c == "relu" ? 2e-6 : 1e-3, "\(c) \(name)")
            }
        }
    }

    /// Q8_0 / Q4_0 files (llama.cpp's quantizer: matrices in blocks, the head Q8_0, norms and position biases F32), relu
    /// and gated-GELU. Loaded dequantized, prompt passes equal the kept-quantized model's (≤ 1e-5); kept quantized
    /// (`--keep-quantized`) the matrices stay in blocks (less memory; decode reads them, so its logits differ from the
    /// dequantized model's). Against llama.cpp's logits for the same file:
    /// - relu, the 8-token prompt (every product of the run goes through Encore's decode kernels, which quantize
    ///   activations as ggml does): kept quantized equals llama.cpp exactly (measured 0; bound 1e-6) at q8_0 and q4_0;
    /// - longer prompts (10, 150 tokens: Encore's encoder pass dequantizes the blocks and runs fp32 GEMM, llama.cpp
    ///   quantizes the activations) and gated-GELU (llama.cpp's fp16 GELU table, whose rounding then moves activation
    ///   blocks across quantization steps): measured 0.9–2.2e-2 relative per step, bound 5e-2 — the size of
    ///   llama.cpp's own activation-quantization noise here (its q8_0 file moves its logits 1.9–2.4e-2 from its f32
    ///   file); for q4_0 also less than a fifth of llama.cpp's q4_0-vs-f32 change (0.18, 0.38).
    func testQuantizedGGUFMatchesLlamaCpp() throws {
        for c in ["gated", "relu"] {
        let (prompts, decoderIds, logits) = try golden(c)
        for f in ["q8_0", "q4_0"] {
            let plain = try XCTUnwrap(try ModelRegistry.load(folder: dir(c) + "/\(f).gguf") as? T5Model)
            let kept = try XCTUnwrap(try ModelRegistry.load(folder: dir(c) + "/\(f).gguf", keepQuantized: true) as? T5Model)
            let format: WeightFormat = f == "q8_0" ? .q8_0 : .q4_0
            XCTAssertEqual(plain.decoderBlocks[0].ff.wo.decodeFormat, .f32)
            XCTAssertEqual(kept.decoderBlocks[0].ff.wo.decodeFormat, format)
            XCTAssertEqual(kept.encoderBlocks[0].selfAttn.q.decodeFormat, format)
            XCTAssertEqual(kept.decoderBlocks[1].crossAttn.k.decodeFormat, format)
            XCTAssertEqual(kept.lmHeadDecode?.format, .q8_0, "llama.cpp's quantizer stores the head Q8_0")
            XCTAssertLessThan(kept.decodeWeightBytes, plain.decodeWeightBytes)
            let resident = { (m: T5Model) in m.decoderBlocks.flatMap { $0.selfAttn.linears + $0.ff.linears }.reduce(0) { $0 + $1.residentBytes } }
            XCTAssertLessThan(resident(kept), resident(plain))
            let rows = [Array(3..<40)]
            let pa = try kept.teacherForcedLogits(encoderIds: rows, decoderIds: [[0] + Array(5..<20)]).toArray()
            let pb = try plain.teacherForcedLogits(encoderIds: rows, decoderIds: [[0] + Array(5..<20)]).toArray()
            // the embedding table and the tied head stay in their blocks (no fp32 copy): lookups dequantize the same
            // rows, and every pass's head runs the quantized GEMV (activations quantized as llama.cpp does), so
            // teacher-forced logits move by the head's activation rounding only: measured 5.8–6.3e-3, bound 2e-2
            XCTAssertNil(kept.shared)
            XCTAssertNotNil(kept.sharedBlocks)
            XCTAssertNil(kept.lmHead)
            XCTAssertNotNil(plain.shared)
            XCTAssertLessThan(relativeError(pa, pb), 2e-2, "\(f): prompt passes dequantize the same blocks; the head reads its blocks")
            let llamaF32Change = relativeError(try logits.tensor("\(f).short").toArray(), try logits.tensor("f32.short").toArray())
            for (name, prompt) in prompts.sorted(by: { $0.key < $1.key }) {
                let want = try logits.tensor("\(f).\(name)").toArray()
                let k = try stepLogits(kept, prompt: prompt, decoderIds: decoderIds + [0])
                let p = try stepLogits(plain, prompt: prompt, decoderIds: decoderIds + [0])
                let errKept = relativeError(k, want), errPlain = relativeError(p, want)
                print("t5 GGUF \(c) \(f) \(name) vs llama.cpp: kept quantized \(errKept), dequantized \(errPlain) (llama.cpp \(f) vs its f32: \(llamaF32Change))")
                XCTAssertGreaterThan(relativeError(k, p), 0, "\(f) \(name): decode reads the blocks")
                XCTAssertLessThan(errKept, 5e-2, "\(f) \(name)")
                XCTAssertLessThan(errPlain, 5e-2, "\(f) \(name)")
                if f == "q4_0" { XCTAssertLessThan(errKept, llamaF32Change / 5, "\(f) \(name)") }
                if c == "relu" && name == "eight" { XCTAssertLessThanOrEqual(errKept, 1e-6, "\(f): the same arithmetic as llama.cpp") }
            }
        }
        }
    }

    /// `encore generate --model x.gguf` runs T5 GGUFs (with and without --keep-quantized), the same tokens as the
    /// folder for F32 (the relu case's scaling does not change the argmax).
    func testGenerateCLI() throws {
        let a = runCLI(["generate", "--model", dir("gated") + "/f32.gguf", "--input-ids", "5,6,7,8,1", "--max-tokens", "6", "--json"])
        let b = runCLI(["generate", "--model", fixture("t5/gguf_gated"), "--input-ids", "5,6,7,8,1", "--max-tokens", "6", "--json"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(b.status, 0, b.stderr)
        func ids(_ s: String) throws -> [Int] { try ints((try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])?["ids"]) }
        XCTAssertEqual(try ids(a.stdout), try ids(b.stdout))
        XCTAssertEqual(try ids(a.stdout).count, 6)
        let q = runCLI(["generate", "--model", dir("gated") + "/q4_0.gguf", "--keep-quantized", "--input-ids", "5,6,7,8,1", "--max-tokens", "4"])
        XCTAssertEqual(q.status, 0, q.stderr)
    }

    /// A T5 GGUF missing a tensor or a required `t5.*` key fails naming it (files rewritten from the F32 fixture with one
    /// item left out).
    func testMissingTensorOrKeyIsNamed() throws {
        let src = try GGUFModelFile(path: dir("gated") + "/f32.gguf")
        let keys = ["t5.embedding_length", "t5.feed_forward_length", "t5.block_count", "t5.decoder_block_count", "t5.attention.head_count",
                    "t5.attention.key_length", "t5.attention.relative_buckets_count", "t5.attention.layer_norm_rms_epsilon",
                    "t5.decoder_start_token_id"]
        func rewrite(skipKey: String? = nil, skipTensor: String? = nil) throws -> String {
            var b = GGUFModelFileTests.Builder()
            let kept = keys.filter { $0 != skipKey }
            let names = src.tensorNames.filter { $0 != skipTensor }
            b.header(tensors: UInt64(names.count), kv: UInt64(kept.count + 1))
            b.kvString("general.architecture", "t5")
            for k in kept {
                if k.hasSuffix("epsilon") { b.kvF32(k, Float(try src.double(k))) } else { b.kvU32(k, UInt32(try src.int(k))) }
            }
            var offset: UInt64 = 0, data: [UInt8] = []
            for n in names {
                let t = try src.tensor(n)
                b.tensor(n, dims: t.shape.reversed().map(UInt64.init), type: 0, offset: offset)
                t.toArray().withUnsafeBytes { data += $0 }
                while data.count % 32 != 0 { data.append(0) }
                offset = UInt64(data.count)
            }
            b.align()
            b.bytes += data
            let path = try makeTempDir(self) + "/t5-\(skipKey ?? skipTensor ?? "ok").gguf"
            try Data(b.bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        // the rewritten file itself loads and equals the fixture
        let ok = try XCTUnwrap(try ModelRegistry.load(folder: try rewrite()) as? T5Model)
        let ref = try XCTUnwrap(try ModelRegistry.load(folder: dir("gated") + "/f32.gguf") as? T5Model)
        XCTAssertEqual(try ok.teacherForcedLogits(encoderIds: [[5, 6, 1]], decoderIds: [[0, 7]]).toArray(),
                       try ref.teacherForcedLogits(encoderIds: [[5, 6, 1]], decoderIds: [[0, 7]]).toArray())
        for key in ["t5.embedding_length", "t5.feed_forward_length", "t5.block_count", "t5.attention.head_count",
                    "t5.attention.key_length", "t5.attention.relative_buckets_count", "t5.attention.layer_norm_rms_epsilon"] {
            XCTAssertThrowsError(try ModelRegistry.load(folder: try rewrite(skipKey: key))) { e in
                XCTAssertTrue("\(e)".contains("missing metadata key '\(key)'"), "\(e)")
            }
        }
        for tensor in ["dec.blk.1.ffn_down.weight", "enc.blk.0.attn_rel_b.weight", "dec.blk.0.cross_attn_k.weight", "enc.output_norm.weight",
                       "token_embd.weight"] {
            XCTAssertThrowsError(try ModelRegistry.load(folder: try rewrite(skipTensor: tensor))) { e in
                XCTAssertTrue("\(e)".contains("missing tensor '\(tensor)'"), "\(e)")
            }
        }
        // a missing untied head makes the file tied (as llama.cpp reads it), not an error; an unknown extra tensor is one
        XCTAssertTrue(try XCTUnwrap(try ModelRegistry.load(folder: try rewrite(skipTensor: "output.weight")) as? T5Model).config.tieWordEmbeddings)
        let cli = runCLI(["generate", "--model", try rewrite(skipKey: "t5.attention.relative_buckets_count"), "--input-ids", "5,1"])
        XCTAssertNotEqual(cli.status, 0)
        XCTAssertTrue(cli.stderr.contains("t5.attention.relative_buckets_count"), cli.stderr)
    }
}
