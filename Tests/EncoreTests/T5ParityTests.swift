import XCTest
@testable import Encore

/// Parity with transformers' `T5ForConditionalGeneration` (5.24) through goldens made by
/// tools/goldens/make_t5_goldens.py: T5 v1.0 (relu, tied and scaled head), v1.1 / Flan-T5 (gated-gelu, untied
/// head, Flan-style config, num_decoder_layers > num_layers) and v1.1 as transformers 5 saves it (tied head,
/// `scale_decoder_outputs` false), and gguf_gated / gguf_relu (the checkpoints converted to GGUF for T5GGUFTests). Tolerances: encoder outputs and logits within 1e-4 relative (max |Δ| / max
/// |golden|); greedy tokens identical; relative-position buckets exact.
final class T5ParityTests: XCTestCase {
    static let cases = ["v1_0", "v1_1", "v1_1_tied", "gguf_gated", "gguf_relu"]

    func load(_ name: String) throws -> (T5Model, [String: Any], SafeTensorsFile) {
        let dir = fixture("t5/\(name)")
        let model = try XCTUnwrap(try ModelRegistry.load(folder: dir) as? T5Model, "\(name): the registry should build a T5Model")
        return (model, try readJSON(dir + "/golden.json"), try SafeTensorsFile(path: dir + "/golden.safetensors"))
    }

    func testBucketsMatchTransformers() throws {
        for name in Self.cases {
            let (model, golden, _) = try load(name)
            let b = try XCTUnwrap(golden["buckets"] as? [String: Any])
            let range = (b["range"] as! NSNumber).intValue
            for (key, bidirectional) in [("bidirectional", true), ("causal", false)] {
                let want = try ints(b[key])
                let got = (-range...range).map {
                    T5RelativeBias.bucket($0, bidirectional: bidirectional, numBuckets: model.config.relativeAttentionNumBuckets,
                                          maxDistance: model.config.relativeAttentionMaxDistance)
                }
                XCTAssertEqual(got, want, "\(name) \(key)")
                XCTAssertGreaterThan(Set(want).count, model.config.relativeAttentionNumBuckets / 2, "\(name) \(key): the range covers the log buckets")
            }
        }
    }

    /// The head and its scaling as transformers reads each folder.
    func testConfigsReadAsTransformersDoes() throws {
        for name in Self.cases {
            let (model, golden, _) = try load(name)
            XCTAssertEqual(model.config.scalesDecoderOutput, golden["scale_decoder_outputs"] as? Bool, name)
            XCTAssertEqual(model.tiedHead, golden["tied_head"] as? Bool, name)
            // every tensor of the checkpoint is a parameter (the tied head once)
            let file = try SafeTensorsFile(path: fixture("t5/\(name)/model.safetensors"))
            XCTAssertEqual(model.parameterCount, file.tensors.values.reduce(0) { $0 + $1.elementCount }, name)
        }
        let (v11, _, _) = try load("v1_1")
        XCTAssertEqual(v11.config.numLayers, 2)
        XCTAssertEqual(v11.config.numDecoderLayers, 3)
        XCTAssertEqual(v11.config.feedForwardProj, "gated-gelu")
        XCTAssertEqual(v11.bosTokenId, 0)
        XCTAssertEqual(v11.eosTokenId, 1)
    }

    func testEncoderOutputsMatchTransformers() throws {
        for name in Self.cases {
            let (model, golden, tensors) = try load(name)
            for prefix in ["", "long_"] {
                let rows = try intRows(golden[prefix + "encoder_input_ids"]).map { Array($0.prefix { $0 != 0 }) }   // unpadded
                let enc = try model.encode(rows)
                let expected = try tensors.tensor(prefix + "encoder_out")
                XCTAssertEqual(enc.hidden.shape, expected.shape, "\(name) \(prefix)")
                let err = relativeError(enc.hidden.toArray(), expected.toArray())
                XCTAssertLessThan(err, 1e-4, "\(name) \(prefix)encoder_out relative error \(err)")
            }
        }
    }

    func testTeacherForcedLogitsMatchTransformers() throws {
        for name in Self.cases {
            let (model, golden, tensors) = try load(name)
            for prefix in ["", "long_"] {
                let logits = try model.teacherForcedLogits(encoderIds: try intRows(golden[prefix + "encoder_input_ids"]),
                                                           decoderIds: try intRows(golden[prefix + "decoder_input_ids"]))
                let expected = try tensors.tensor(prefix + "logits")
                XCTAssertEqual(logits.shape, expected.shape, "\(name) \(prefix)")
                let err = relativeError(logits.toArray(), expected.toArray())
                XCTAssertLessThan(err, 1e-4, "\(name) \(prefix)logits relative error \(err)")
            }
        }
    }

    /// Cross-attention K/V kept in f16 (`halfCrossKV`, the default beside quantized decode weights) or int8
    /// (`crossKV = .int8`): every layer's K/V is stored so, and the logits stay close to transformers' fp32 ones, not
    /// equal to them — teacher-forced (short and long decoder inputs: the long ones widen the rows for the BLAS path)
    /// within 1e-2 (f16; measured 5e-5–1.8e-3, and 4.8e-3 on v1_1's deliberately sensitive random weights, where bf16
    /// decode weights cost 3.6e-2) and 0.12 (int8; measured 2e-3–3.5e-2 over 7 decoder tokens, up to 8.8e-2 over 40 on
    /// v1_1: T5's unscaled scores carry the keys' rounding into the softmax), and at the first cached decode step (the
    /// fused kernels over f16 / int8 rows, unscaled scores as T5's; √D scaling would miss by far) within 1e-2 (f16)
    /// and 2e-2 (int8; measured up to 1.2e-2).
    func testNarrowCrossKVStaysCloseToTransformers() throws {
        for name in Self.cases {
            let (model, golden, tensors) = try load(name)
            for (storage, tolerance, stepTolerance) in [(KVRowFormat.f16, Float(1e-2), Float(1e-2)), (.int8, 0.12, 2e-2)] {
                for prefix in ["", "long_"] {
                    model.crossKV = .f32
                    let fp32 = try model.teacherForcedLogits(encoderIds: try intRows(golden[prefix + "encoder_input_ids"]),
                                                             decoderIds: try intRows(golden[prefix + "decoder_input_ids"])).toArray()
                    model.crossKV = storage
                    let enc = try model.encode(try intRows(golden[prefix + "encoder_input_ids"]))
                    XCTAssertEqual(enc.cross.map(\.storage), Array(repeating: storage, count: enc.cross.count), "\(name)")
                    let decoderIds = try intRows(golden[prefix + "decoder_input_ids"])
                    let logits = try model.teacherForcedLogits(encoderIds: try intRows(golden[prefix + "encoder_input_ids"]),
                                                               decoderIds: decoderIds)
                    let want = try tensors.tensor(prefix + "logits").toArray()
                    let err = relativeError(logits.toArray(), want)
                    print("\(name) \(prefix)\(storage) cross K/V: teacher-forced logits relative error \(err) (\(decoderIds[0].count) decoder tokens)")
                    XCTAssertLessThan(err, tolerance, "\(name) \(prefix)\(storage)")
                    XCTAssertGreaterThan(relativeError(logits.toArray(), fp32), 0, "\(name) \(prefix): \(storage) K/V should change the logits")
                }
                // the first decode step of generation: the decoder start token, as the golden's first position
                let inputs = try intRows(golden["encoder_input_ids"]), decoderIds = try intRows(golden["decoder_input_ids"])
                XCTAssertTrue(decoderIds.allSatisfy { $0.first == model.bosTokenId }, name)
                let state = try model.beginGeneration(prompts: inputs.map { Array($0.prefix { $0 != model.padTokenId }) })
                let all = try tensors.tensor("logits").toArray(), V = model.vocabSize, T = decoderIds[0].count
                let got = state.logits.toArray()
                for b in 0..<inputs.count {
                    let err = relativeError(Array(got[(b * V)..<((b + 1) * V)]), Array(all[(b * T * V)..<(b * T * V + V)]))
                    print("\(name) row \(b): first cached step over \(storage) K/V: relative error \(err)")
                    XCTAssertLessThan(err, stepTolerance, "\(name) row \(b): first cached step over \(storage) K/V")
                }
            }
        }
    }

    func testGreedyGenerationMatchesTransformers() throws {
        for name in Self.cases {
            let (model, golden, _) = try load(name)
            for key in ["greedy", "greedy_long"] {
                let g = try XCTUnwrap(golden[key] as? [String: Any])
                let maxNew = (g["max_new_tokens"] as! NSNumber).intValue
                let result = try Generator(model: model).generate(prompts: try intRows(g["input_ids"]), parameters: .init(maxTokens: maxNew))
                XCTAssertEqual(result.tokens, try intRows(g["output_ids"]), "\(name) \(key)")
            }
        }
        // v1_1 row 0 stops at EOS mid-way while the other rows go on
        let (_, golden, _) = try load("v1_1")
        let rows = try intRows((golden["greedy"] as! [String: Any])["output_ids"])
        XCTAssertEqual(rows[0].last, 1)
        XCTAssertLessThan(rows[0].count, 24)
    }

    /// Cached generation (cross K/V once, self-attention cache) equals re-running the whole decoder over the
    /// prefix at every step, past the exact buckets (distance ≥ 16) into the log-spaced ones: tokens identical,
    /// logits within 5e-5 relative (summation-order noise reaches 7e-6 on these deliberately sensitive random
    /// weights, where torch fp32 itself differs from fp64 by up to 4.5e-5).
    func testCachedGenerationEqualsFullRecomputation() throws {
        let steps = 28
        for name in Self.cases {
            let (model, golden, _) = try load(name)
            let inputs = try intRows(golden["encoder_input_ids"]).map { Array($0.prefix { $0 != 0 }) }
            let cached = try Generator(model: model).generate(prompts: inputs, parameters: .init(maxTokens: steps, useModelEOS: false))
            var prefix = [[Int]](repeating: [0], count: inputs.count)
            for _ in 0..<steps {
                let logits = try model.teacherForcedLogits(encoderIds: inputs, decoderIds: prefix)    // [B, T, V]
                let (B, T, V) = (logits.shape[0], logits.shape[1], logits.shape[2])
                let all = logits.toArray()
                for b in 0..<B {
                    let row = Array(all[((b * T + T - 1) * V)..<((b * T + T) * V)])
                    prefix[b].append(row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!)
                }
            }
            XCTAssertEqual(cached.tokens, prefix.map { Array($0.dropFirst()) }, name)
            // and the cached logits at every step equal the recomputed ones (1e-5 relative)
            let state = try model.beginGeneration(prompts: inputs)
            for step in 0..<20 {
                let T = step + 1, V = model.vocabSize
                let full = try model.teacherForcedLogits(encoderIds: inputs, decoderIds: prefix.map { Array($0.prefix(T)) }).toArray()
                let got = state.logits.toArray()
                for b in 0..<inputs.count {
                    let want = Array(full[((b * T + T - 1) * V)..<((b * T + T) * V)])
                    let err = relativeError(Array(got[(b * V)..<((b + 1) * V)]), want)
                    XCTAssertLessThan(err, 5e-5, "\(name) step \(step) row \(b): relative error \(err)")
                }
                try state.advance(tokens: prefix.map { $0[T] })
            }
        }
    }

    /// A row gives the same result alone as in a right-padded batch: tokens identical, logits within 1e-4 relative
    /// (alone, short rows take the GEMV path instead of GEMM: another summation order).
    func testBatchEqualsSingleRows() throws {
        for name in Self.cases {
            let (model, golden, _) = try load(name)
            let inputs = try intRows(golden["encoder_input_ids"]).map { Array($0.prefix { $0 != 0 }) }
            let params = GenerationParameters(maxTokens: 16, useModelEOS: false)
            let batch = try Generator(model: model).generate(prompts: inputs, parameters: params).tokens
            let decoders = try intRows(golden["decoder_input_ids"])
            let batchLogits = try model.teacherForcedLogits(encoderIds: inputs, decoderIds: decoders).toArray()
            let per = decoders[0].count * model.vocabSize
            for (i, row) in inputs.enumerated() {
                XCTAssertEqual(batch[i], try Generator(model: model).generate(prompt: row, parameters: params), "\(name) row \(i)")
                let alone = try model.teacherForcedLogits(encoderIds: [row], decoderIds: [decoders[i]]).toArray()
                let err = relativeError(Array(batchLogits[(i * per)..<((i + 1) * per)]), alone)
                XCTAssertLessThan(err, 1e-4, "\(name) row \(i) logits: relative error \(err)")
            }
        }
    }

    func testScoreEqualsLogSoftmaxOfTransformersLogits() throws {
        for name in Self.cases {
            let (model, golden, tensors) = try load(name)
            let enc = Array(try intRows(golden["encoder_input_ids"])[0].prefix { $0 != 0 })
            let dec = try intRows(golden["decoder_input_ids"])[0]         // [start, t1..t6]
            let target = Array(dec.dropFirst())
            let lp = try model.score(input: enc, target: target)
            let logits = try tensors.tensor("logits")                    // [B, T, V]
            for (i, tok) in target.enumerated() {
                let row = (0..<model.vocabSize).map { logits[0, i, $0] }
                let mx = row.max()!
                let lse = mx + log(row.reduce(0) { $0 + exp($1 - mx) })
                XCTAssertEqual(lp[i], row[tok] - lse, accuracy: 1e-4 * max(1, abs(row[tok] - lse)), "\(name) target \(i)")
            }
        }
    }
}

/// Bad T5 configs and checkpoints: each gives an error naming the field or tensor (and `encore` exits non-zero).
final class T5ErrorTests: XCTestCase {
    /// A copy of a fixture folder with its config edited and optionally its tensors replaced.
    func folder(_ name: String = "v1_1", edit: (inout [String: Any]) -> Void = { _ in },
                tensors: ((inout [String: Tensor]) -> Void)? = nil) throws -> String {
        let src = fixture("t5/\(name)"), dir = try makeTempDir(self) + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var config = try readJSON(src + "/config.json")
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        if let tensors {
            let file = try SafeTensorsFile(path: src + "/model.safetensors")
            var all = [String: Tensor]()
            for n in file.names { all[n] = try file.tensor(n).copy() }
            tensors(&all)
            try SafeTensorsWriter.write(all, to: dir + "/model.safetensors")
        } else {
            try FileManager.default.copyItem(atPath: src + "/model.safetensors", toPath: dir + "/model.safetensors")
        }
        return dir
    }

    func error(loading dir: String) -> EncoreError? {
        do { _ = try ModelRegistry.load(folder: dir); return nil } catch { return error as? EncoreError }
    }

    func testUnsupportedFeedForwardListsSupported() throws {
        let dir = try folder { $0["feed_forward_proj"] = "gated-silu" }
        let e = try XCTUnwrap(error(loading: dir))
        XCTAssertEqual(e.kind, .unsupported)
        XCTAssertTrue(e.message.contains("'feed_forward_proj' is 'gated-silu'") && e.message.contains("supported: relu, gated-gelu"), e.message)
        let cli = runCLI(["generate", "--model", dir, "--input-ids", "5,6,1"])
        XCTAssertNotEqual(cli.status, 0)
        XCTAssertTrue(cli.stderr.contains("feed_forward_proj"), cli.stderr)
    }

    func testMissingAndInvalidFields() throws {
        for (field, edit, expected) in [
            ("d_kv", { (c: inout [String: Any]) in c["d_kv"] = nil }, "missing required field 'd_kv'"),
            ("num_heads", { (c: inout [String: Any]) in c["num_heads"] = "four" }, "field 'num_heads' must be an integer"),
            ("max_distance", { (c: inout [String: Any]) in c["relative_attention_max_distance"] = 8 }, "'relative_attention_max_distance' (8) must exceed"),
            ("start", { (c: inout [String: Any]) in c["decoder_start_token_id"] = 999 }, "'decoder_start_token_id' 999 is outside the vocabulary"),
            ("eps", { (c: inout [String: Any]) in c["layer_norm_epsilon"] = 0 }, "'layer_norm_epsilon' must be in (0, 1)"),
        ] as [(String, (inout [String: Any]) -> Void, String)] {
            let e = try XCTUnwrap(error(loading: try folder(edit: edit)), field)
            XCTAssertEqual(e.kind, .invalidConfig, field)
            XCTAssertTrue(e.message.contains("config.json") && e.message.contains(expected), "\(field): \(e.message)")
        }
    }

    func testMissingMisShapedAndUnexpectedTensors() throws {
        let missing = "decoder.block.2.layer.2.DenseReluDense.wo.weight"
        var e = try XCTUnwrap(error(loading: try folder(tensors: { $0[missing] = nil })))
        XCTAssertEqual(e.kind, .missingTensor)
        XCTAssertTrue(e.message.contains("missing tensor '\(missing)'"), e.message)
        // Flan-style config (tie_word_embeddings false) without the head
        e = try XCTUnwrap(error(loading: try folder(tensors: { $0["lm_head.weight"] = nil })))
        XCTAssertEqual(e.kind, .missingTensor)
        XCTAssertTrue(e.message.contains("'lm_head.weight'") && e.message.contains("tie_word_embeddings false"), e.message)
        // a relu config over gated-gelu weights: wi is missing
        e = try XCTUnwrap(error(loading: try folder(edit: { $0["feed_forward_proj"] = "relu" })))
        XCTAssertTrue(e.message.contains("missing tensor 'encoder.block.0.layer.1.DenseReluDense.wi.weight'"), e.message)
        let bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        e = try XCTUnwrap(error(loading: try folder(tensors: { $0[bias] = Tensor(zeros: [16, 4]) })))
        XCTAssertEqual(e.kind, .shapeMismatch)
        XCTAssertTrue(e.message.contains("'\(bias)' has shape [16, 4], expected [32, 4]"), e.message)
        e = try XCTUnwrap(error(loading: try folder(tensors: { $0["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = Tensor(zeros: [32, 4]) })))
        XCTAssertEqual(e.kind, .unexpectedTensor)
        XCTAssertTrue(e.message.contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"), e.message)
    }

    /// Older checkpoints carry copies of the embedding and an unused cross-attention bias table: accepted when the
    /// copies equal `shared.weight`, an error naming the tensor when they do not.
    func testEmbeddingCopiesAndUnusedBias() throws {
        let base = try T5Model(folder: fixture("t5/v1_1"))
        let dir = try folder(tensors: {
            $0["encoder.embed_tokens.weight"] = $0["shared.weight"]!.copy()
            $0["decoder.embed_tokens.weight"] = $0["shared.weight"]!.copy()
            $0["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = Tensor(zeros: [32, 4])
        })
        let withCopies = try T5Model(folder: dir)
        let ids = [[5, 9, 30, 1]], dec = [[0, 7, 8]]
        XCTAssertEqual(try withCopies.teacherForcedLogits(encoderIds: ids, decoderIds: dec).toArray(),
                       try base.teacherForcedLogits(encoderIds: ids, decoderIds: dec).toArray())
        XCTAssertEqual(withCopies.parameterCount, base.parameterCount)
        let e = try XCTUnwrap(error(loading: try folder(tensors: { $0["decoder.embed_tokens.weight"] = Tensor(zeros: [200, 40]) })))
        XCTAssertTrue(e.message.contains("'decoder.embed_tokens.weight' differs from 'shared.weight'"), e.message)
    }

    func testUnknownModelTypeListsT5() throws {
        let e = try XCTUnwrap(error(loading: try folder { $0["model_type"] = "bart" }))
        XCTAssertTrue(e.message.contains("model_type 'bart' is not supported") && e.message.contains("t5"), e.message)
    }

    func testBadInputIds() throws {
        let model = try T5Model(folder: fixture("t5/v1_1"))
        XCTAssertThrowsError(try model.beginGeneration(prompts: [[5, 200]])) {
            XCTAssertTrue(($0 as? EncoreError)?.message.contains("token id 200 at position 1 is outside the vocabulary (0..<200)") == true, "\($0)")
        }
        XCTAssertThrowsError(try model.score(input: [], target: [5]))
    }
}

/// `encore generate`, `score` and `inspect` on T5 folders, against the transformers goldens.
final class T5CLITests: XCTestCase {
    func testGenerateWithInputIds() throws {
        let dir = fixture("t5/v1_1")
        let g = try XCTUnwrap(try readJSON(dir + "/golden.json")["greedy"] as? [String: Any])
        let inputs = try intRows(g["input_ids"]), outputs = try intRows(g["output_ids"])
        let args = ["generate", "--model", dir, "--max-tokens", "24", "--json"] + inputs.flatMap { ["--input-ids", $0.map(String.init).joined(separator: ",")] }
        let r = runCLI(args)
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]], r.stdout)
        XCTAssertEqual(try json.map { try ints($0["ids"]) }, outputs)
    }

    func testScore() throws {
        let dir = fixture("t5/v1_0")
        let golden = try readJSON(dir + "/golden.json")
        let enc = Array(try intRows(golden["encoder_input_ids"])[0].prefix { $0 != 0 })
        let target = Array(try intRows(golden["decoder_input_ids"])[0].dropFirst())
        let r = runCLI(["score", "--model", dir, "--input-ids", enc.map(String.init).joined(separator: ","),
                        "--target-ids", target.map(String.init).joined(separator: ","), "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        let lp = try XCTUnwrap(json["logprobs"] as? [Double])
        let logits = try SafeTensorsFile(path: dir + "/golden.safetensors").tensor("logits")
        for (i, tok) in target.enumerated() {
            let row = (0..<800).map { Double(logits[0, i, $0]) }
            let mx = row.max()!
            let want = row[tok] - (mx + log(row.reduce(0) { $0 + exp($1 - mx) }))
            XCTAssertEqual(lp[i], want, accuracy: 1e-4 * max(1, abs(want)), "target \(i)")
        }
    }

    /// A T5 folder with a Unigram tokenizer.json: --prompt is tokenized (</s> appended) and the output decoded,
    /// as transformers + tokenizers do.
    func testGenerateWithPrompt() throws {
        let dir = try makeTempDir(self) + "/t5"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in ["config.json", "model.safetensors"] { try FileManager.default.copyItem(atPath: fixture("t5/v1_0/" + f), toPath: dir + "/" + f) }
        let tokenizer = URL(fileURLWithPath: fixtures).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("EncoreTokenizersTests/Fixtures/unigram-t5/tokenizer.json").path
        try FileManager.default.copyItem(atPath: tokenizer, toPath: dir + "/tokenizer.json")
        let p = try XCTUnwrap(try readJSON(fixture("t5/v1_0/golden.json"))["prompt"] as? [String: Any])
        let r = runCLI(["generate", "--model", dir, "--prompt", p["text"] as! String, "--max-tokens", "24", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(try ints(json["ids"]), try ints(p["output_ids"]))
        XCTAssertEqual(json["text"] as? String, p["output_text"] as? String)
        let streamed = runCLI(["generate", "--model", dir, "--prompt", p["text"] as! String, "--max-tokens", "24", "--stream"])
        XCTAssertEqual(streamed.status, 0, streamed.stderr)
        XCTAssertEqual(streamed.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                       (p["output_text"] as! String).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func testInspect() throws {
        let r = runCLI(["inspect", fixture("t5/v1_1")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("ok: every tensor present with the expected shape, none unexpected (t5)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("parameters: 126296"), r.stdout)
        XCTAssertTrue(r.stdout.contains("feed_forward_proj: gated-gelu"), r.stdout)
    }
}
