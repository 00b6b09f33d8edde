import Foundation
import XCTest
@testable import Encore

/// Hugging Face decoder-only folders (Llama, Qwen2, Phi-3; RoPE none/linear/dynamic/llama3/longrope) against
/// transformers 5.24 on the same tiny random checkpoints, saved by `save_pretrained`.
/// Goldens: tools/goldens/make_hf_decoder_goldens.py.
///
/// Tolerances: logits of every prompt position ≤ 1e-4 relative (max |Δ| / max |logit|; measured ≤ ~1e-6);
/// greedy continuations of 30 tokens (transformers' `generate` with its KV cache) identical token for token.
final class HFDecoderParityTests: XCTestCase {
    static let dir = fixture("hf_decoders")

    func check(_ name: String, family: DecoderFamily, scaling: String) throws {
        let folder = Self.dir + "/" + name
        let golden = try readJSON(folder + "/golden.json")
        let gold = try SafeTensorsFile(path: folder + "/golden.safetensors")
        let model = try XCTUnwrap(ModelRegistry.load(folder: folder) as? LlamaModel)
        XCTAssertEqual(model.config.family, family)
        XCTAssertEqual(model.config.ropeScaling.typeName, scaling)
        var worst: Float = 0
        for (i, p) in try intRows(golden["prompts"]).enumerated() {
            let want = try gold.tensor("prompt\(i).logits")                               // [T, V]
            let got = try model.logits([p]).reshaped([p.count, model.vocabSize])          // [T, V]
            let err = relativeError(got.toArray(), want.toArray())
            worst = max(worst, err)
            XCTAssertLessThanOrEqual(err, 1e-4, "\(name) prompt \(i) (\(p.count) tokens): relative error \(err)")
        }
        let gen = try XCTUnwrap(golden["generation"] as? [String: Any])
        let prompt = try ints(gen["prompt"]), want = try ints(gen["tokens"])
        let got = try Generator(model: model).generate(prompt: prompt, parameters: .init(maxTokens: want.count, useModelEOS: false))
        XCTAssertEqual(got, want, "\(name): greedy continuation differs from transformers")
        print("\(name): worst relative logit error vs transformers \(worst)")
    }

    func testLlama() throws { try check("llama", family: .llama, scaling: "default") }
    /// head_dim 16 with hidden 32 (query width ≠ hidden), attention and MLP biases, tied head.
    func testLlamaHeadDimAndBiases() throws {
        try check("llama_headdim", family: .llama, scaling: "default")
        let m = try XCTUnwrap(ModelRegistry.load(folder: Self.dir + "/llama_headdim") as? LlamaModel)
        XCTAssertTrue(m.tiedHead && m.head!.storage === m.embedding!.storage, "tie_word_embeddings: the head is the embedding")
        XCTAssertEqual(m.config.attention.qWidth, 64)
    }
    func testLlamaLinearRoPE() throws { try check("llama_linear", family: .llama, scaling: "linear") }
    /// Prompts of 40 tokens and a continuation to 40 cross max_position_embeddings 24: θ grows per pass.
    func testLlamaDynamicNTK() throws { try check("llama_dynamic", family: .llama, scaling: "dynamic") }
    func testLlama3RoPE() throws { try check("llama3", family: .llama, scaling: "llama3") }
    func testQwen2Biases() throws { try check("qwen2", family: .qwen2, scaling: "default") }
    /// Fused qkv_proj / gate_up_proj and LongRoPE (short factors up to 16 tokens, long factors past it).
    func testPhi3FusedLongRoPE() throws { try check("phi3", family: .phi3, scaling: "longrope") }

    /// transformers' left-padded batch generation: each row as alone.
    func testLlamaLeftPaddedBatch() throws {
        let folder = Self.dir + "/llama"
        let golden = try readJSON(folder + "/golden.json")
        let batch = try XCTUnwrap(golden["batch_generation"] as? [String: Any])
        let prompts = try intRows(batch["prompts"]), want = try intRows(batch["tokens"])
        let model = try ModelRegistry.load(folder: folder)
        let got = try Generator(model: model).generate(prompts: prompts, parameters: .init(maxTokens: 12, useModelEOS: false)).tokens
        XCTAssertEqual(got, want)
    }

    /// The parameter count is that of the tensors in the checkpoint.
    func testParameterCountMatchesCheckpoint() throws {
        for name in ["llama", "llama_headdim", "qwen2", "phi3"] {
            let folder = Self.dir + "/" + name
            let model = try ModelRegistry.load(folder: folder)
            let file = try SafeTensorsFile(path: folder + "/model.safetensors")
            let stored = file.tensors.values.reduce(0) { $0 + $1.shape.reduce(1, *) }
            XCTAssertEqual(model.parameterCount, stored, name)
        }
    }

    // MARK: bad configs

    func writeConfig(_ edit: (inout [String: Any]) -> Void) throws -> String {
        let dir = try makeTempDir(self)
        var config = try readJSON(Self.dir + "/llama/config.json")
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        try FileManager.default.copyItem(atPath: Self.dir + "/llama/model.safetensors", toPath: dir + "/model.safetensors")
        return dir
    }

    func assertFails(_ dir: String, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelRegistry.load(folder: dir), file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(fragment), "error '\(e)' should mention '\(fragment)'", file: file, line: line)
        }
    }

    func testUnsupportedRoPETypeNamesTheSupportedOnes() throws {
        assertFails(try writeConfig { $0["rope_parameters"] = ["rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0] },
                    "supported: default, linear, dynamic, llama3, longrope")
    }

    func testRoPEScalingMissingField() throws {
        assertFails(try writeConfig { $0["rope_parameters"] = ["rope_type": "llama3", "factor": 8.0, "rope_theta": 10000.0] },
                    "low_freq_factor")
    }

    func testLegacyRopeScalingIsRead() throws {
        let dir = try writeConfig {
            $0["rope_parameters"] = nil
            $0["rope_theta"] = 10000.0
            $0["rope_scaling"] = ["type": "linear", "factor": 2.0]
        }
        let m = try XCTUnwrap(ModelRegistry.load(folder: dir) as? LlamaModel)
        XCTAssertEqual(m.config.ropeScaling, .linear(factor: 2))
    }

    func testUnsupportedActivationAndPartialRotary() throws {
        assertFails(try writeConfig { $0["hidden_act"] = "gelu" }, "hidden_act")
        assertFails(try writeConfig { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5] },
                    "partial_rotary_factor")
    }

    func testUnknownModelTypeListsSupported() throws {
        assertFails(try writeConfig { $0["model_type"] = "gemma" }, "qwen2, phi3")
    }

    func testMissingBiasTensorIsNamed() throws {
        assertFails(try writeConfig { $0["attention_bias"] = true }, "model.layers.0.self_attn.q_proj.bias")
    }

    func testSlidingWindowIsEnforced() throws {
        let dir = try writeConfig { $0["sliding_window"] = 8 }
        let model = try ModelRegistry.load(folder: dir)
        XCTAssertNoThrow(try model.beginGeneration(prompts: [[5, 6, 7]]))
        XCTAssertThrowsError(try model.beginGeneration(prompts: [Array(3..<20)])) { e in
            XCTAssertTrue("\(e)".contains("sliding"), "\(e)")
        }
    }
}

/// Qwen2 and Phi-3 GGUF files (written by tools/goldens/make_gguf_family_goldens.py in llama.cpp's layout; the
/// script checks that llama.cpp on qwen2.gguf reproduces transformers to 5e-7) against llama.cpp 0.3.36 (F32
/// weights and KV cache): logits ≤ 2e-5 relative, greedy 30 tokens identical. Phi-3 without LongRoPE factors
/// (llama.cpp picks them by context size, transformers and Encore by sequence length).
final class GGUFFamilyParityTests: XCTestCase {
    func check(_ arch: String, family: DecoderFamily) throws {
        let dir = fixture("gguf_families")
        let golden = try XCTUnwrap(try readJSON(dir + "/golden.json")[arch] as? [String: Any])
        let gold = try SafeTensorsFile(path: dir + "/golden.safetensors")
        let model = try XCTUnwrap(ModelRegistry.load(folder: dir + "/\(arch).gguf") as? LlamaModel)
        XCTAssertEqual(model.config.family, family)
        XCTAssertEqual(model.modelType, arch)
        for (i, p) in try intRows(golden["prompts"]).enumerated() {
            let want = try gold.tensor("\(arch).prompt\(i).logits")
            let got = try model.logits([p]).reshaped([p.count, model.vocabSize])
            let err = relativeError(got.toArray(), want.toArray())
            XCTAssertLessThanOrEqual(err, 2e-5, "\(arch) prompt \(i): relative error \(err) vs llama.cpp")
        }
        let gen = try XCTUnwrap(golden["generation"] as? [String: Any])
        let want = try ints(gen["tokens"])
        let got = try Generator(model: model).generate(prompt: try ints(gen["prompt"]), parameters: .init(maxTokens: want.count, useModelEOS: false))
        XCTAssertEqual(got, want, "\(arch): greedy continuation differs from llama.cpp")
    }

    func testQwen2GGUF() throws { try check("qwen2", family: .qwen2) }
    func testPhi3GGUF() throws { try check("phi3", family: .phi3) }

    /// The same Qwen2 weights from GGUF and from the Hugging Face folder give the same logits.
    func testQwen2GGUFEqualsHuggingFace() throws {
        let a = try ModelRegistry.load(folder: fixture("gguf_families/qwen2.gguf")) as! LlamaModel
        let b = try ModelRegistry.load(folder: fixture("hf_decoders/qwen2")) as! LlamaModel
        let ids = [[5, 9, 77, 3, 100, 41]]
        XCTAssertLessThanOrEqual(relativeError(try a.logits(ids).toArray(), try b.logits(ids).toArray()), 1e-6)
    }
}
