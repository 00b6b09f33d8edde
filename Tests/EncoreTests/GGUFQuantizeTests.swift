import Foundation
import XCTest
@testable import Encore
import EncoreTokenizers

/// `encore quantize` to GGUF (``LlamaGGUFExport``) against llama.cpp. Goldens: tools/goldens/make_gguf_quantize_goldens.py
/// (Fixtures/gguf_quantize): per output file, every tensor's type, shape and the FNV-1a-64 hash of the bytes
/// llama.cpp's tools would store (`gguf.quants.quantize` of the fp32 weights, convert_hf_to_gguf.py's names and
/// Q/K permutation), and llama.cpp's logits when it runs the file Encore wrote.
///
/// Tolerances:
/// - tensor bytes: identical (hash); RoPE factor tensors (computed in float32 by both): ≤ 1e-6 relative;
/// - Encore's logits on its file vs llama.cpp's on the same file: relative error (max |Δ| / max |logit|) ≤ 3e-3 for
///   F16, ≤ 2e-2 for BF16, ≤ 4e-2 for Q8_0, ≤ 5e-2 for Q4_0/Q4_1 (llama.cpp rounds activations to f16 / bf16 /
///   Q8_0 blocks, Encore's prompt pass uses fp32 activations; measured 1.5e-3, 9.7e-3, 2.0e-2–3.2e-2, 3.4e-2–3.6e-2;
///   the same rounding gives 2.6e-2 on the mixed file of LlamaParityTests);
/// - an F32 export from a Hugging Face folder vs the folder itself in Encore: ≤ 1e-5 (same fp32 weights, the
///   permutation and RoPE metadata round-trip).
final class GGUFQuantizeTests: XCTestCase {
    static let dir = fixture("gguf_quantize")

    func cases() throws -> [String: [String: Any]] {
        try XCTUnwrap(readJSON(Self.dir + "/golden.json")["cases"] as? [String: [String: Any]])
    }

    func export(_ c: [String: Any], to dir: String, name: String) throws -> String {
        let out = dir + "/\(name).gguf"
        let type = try LlamaGGUFExport.type(parsing: try XCTUnwrap(c["format"] as? String))
        try LlamaGGUFExport.write(source: fixture(try XCTUnwrap(c["source"] as? String)), type: type, to: out)
        return out
    }

    static func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return String(format: "%016llx", h)
    }

    /// Every tensor of every case: llama.cpp's type, shape and bytes.
    func testBlocksAreLlamaCppBytes() throws {
        let tmp = try makeTempDir(self)
        for (name, c) in try cases().sorted(by: { $0.key < $1.key }) {
            let file = try GGUFModelFile(path: try export(c, to: tmp, name: name))
            let want = try XCTUnwrap(c["tensors"] as? [String: [Any]])
            XCTAssertEqual(Set(file.tensorNames), Set(want.keys), name)
            for (tensor, w) in want {
                let info = try XCTUnwrap(file.tensors[tensor], "\(name): \(tensor)")
                XCTAssertEqual(info.type.name, w[0] as? String, "\(name): \(tensor) type")
                XCTAssertEqual(info.shape, try ints(w[1]), "\(name): \(tensor) shape")
                if let hash = w[2] as? String {
                    XCTAssertEqual(Self.fnv1a64(try file.rawBytes(tensor)), hash, "\(name): \(tensor) bytes differ from llama.cpp's")
                } else {
                    let values = try XCTUnwrap(w[2] as? [NSNumber]).map(\.floatValue)
                    XCTAssertLessThanOrEqual(relativeError(try file.tensor(tensor).toArray(), values), 1e-6, "\(name): \(tensor)")
                }
            }
        }
    }

    /// Encore on the file it wrote (matrices kept in their blocks) vs llama.cpp on that file.
    func testLogitsMatchLlamaCppOnTheWrittenFile() throws {
        let tmp = try makeTempDir(self)
        let gold = try SafeTensorsFile(path: Self.dir + "/golden.safetensors")
        let tolerance: [String: Float] = ["f16": 3e-3, "bf16": 2e-2, "q8_0": 4e-2, "q4_0": 5e-2, "q4_1": 5e-2]
        var checked = 0
        for (name, c) in try cases().sorted(by: { $0.key < $1.key }) where c["llama_cpp"] as? Bool == true {
            let model = try LlamaModel(path: try export(c, to: tmp, name: name), keepQuantized: true)
            let tol = try XCTUnwrap(tolerance[try XCTUnwrap(c["format"] as? String)])
            var worst: Float = 0
            for (i, p) in try intRows(c["prompts"]).enumerated() {
                let want = try gold.tensor("\(name).prompt\(i).logits")                       // [T, V]
                let got = try model.logits([p]).reshaped([p.count, model.vocabSize])          // [T, V]
                XCTAssertEqual(got.shape, want.shape, name)
                let err = relativeError(got.toArray(), want.toArray())
                worst = max(worst, err)
                XCTAssertLessThanOrEqual(err, tol, "\(name) prompt \(i): relative error vs llama.cpp \(err)")
            }
            print("\(name): worst relative logit error vs llama.cpp on the same file \(worst)")
            checked += 1
            // Q8_0 / Q4_0 / Q4_1 blocks with int8 prompt passes (ek_gemm_q8_0 on the blocks as stored, with llama.cpp's q8_0
            // activations and arithmetic): on these 2-layer models closer to llama.cpp than widened blocks (measured: q8_0
            // 7e-8 on qwen2, 1.0e-2 on the tiny fixture's large weights, against 2.2e-2 / 3.3e-2 widened; q4_0 1.4e-7
            // against 3.9e-2; q4_1 2.7e-7 and 1.26e-2 (llama3) against 3.4e-2 / 3.1e-2): bound 1.5e-2. (Deep models lose the agreement to rounding cascades:
            // bench/peers/q8_prompts_vs_llamacpp.py.)
            if ["q8_0", "q4_0", "q4_1"].contains(c["format"] as? String ?? "") {
                try model.usePromptWeights(.int8)
                for (i, p) in try intRows(c["prompts"]).enumerated() {
                    let want = try gold.tensor("\(name).prompt\(i).logits")
                    let err = relativeError(try model.logits([p]).toArray(), want.toArray())
                    print("\(name): int8 prompt GEMM on the blocks, prompt \(i): relative error vs llama.cpp \(err)")
                    XCTAssertLessThanOrEqual(err, 1.5e-2, "\(name) prompt \(i), int8 prompts: relative error vs llama.cpp \(err)")
                }
                XCTAssertTrue(model.blocks[0].linears.allSatisfy { $0.residentBytes == $0.decodeBytes }, "\(name): blocks held once")
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 14)   // 8 files, and int8 prompts on the 2 q8_0, 2 q4_0 and 2 q4_1 ones
    }

    /// A GGUF source keeps every metadata key (the vocabulary included); the file type is rewritten.
    func testGGUFSourceKeepsMetadataAndVocabulary() throws {
        let tmp = try makeTempDir(self)
        let src = try GGUFModelFile(path: fixture("tiny_llama/f32.gguf"))
        let out = tmp + "/q4_0.gguf"
        let s = try LlamaGGUFExport.write(source: src.path, type: .q4_0, to: out)
        let file = try GGUFModelFile(path: out)
        for key in src.gguf.keys where !["general.file_type", "general.quantization_version", "general.alignment"].contains(key) {
            XCTAssertEqual(file[key], src[key], key)
        }
        XCTAssertEqual(file["general.file_type"]?.intValue, 2)             // LLAMA_FTYPE_MOSTLY_Q4_0
        XCTAssertEqual(file["general.quantization_version"]?.intValue, 2)
        XCTAssertEqual(file.tensorNames, src.tensorNames)
        XCTAssertEqual(s.tensors, src.tensorNames.count)
        XCTAssertEqual(s.quantized, src.tensors.values.filter { $0.shape.count == 2 }.count)
        let a = try Tokenizer.load(path: src.path), b = try Tokenizer.load(path: out)
        XCTAssertEqual(b.encode("hello world t12", addSpecialTokens: true), a.encode("hello world t12", addSpecialTokens: true))
    }

    /// F32 exports of Hugging Face folders (Llama 3 `rope_freqs`, Qwen2 biases, Phi-3 fused projections and
    /// LongRoPE, a permuted Llama) load as the same model: config and logits.
    func testHuggingFaceRoundTripF32() throws {
        let tmp = try makeTempDir(self)
        for name in ["llama", "llama3", "llama_linear", "qwen2", "phi3", "llama_headdim"] {
            let folder = fixture("hf_decoders/\(name)")
            let out = tmp + "/\(name).gguf"
            try LlamaGGUFExport.write(source: folder, type: .f32, to: out)
            let hf = try XCTUnwrap(ModelRegistry.load(folder: folder) as? LlamaModel)
            let gg = try LlamaModel(path: out)
            XCTAssertEqual(gg.config.family, hf.config.family, name)
            XCTAssertEqual(gg.config.headDim, hf.config.headDim, name)
            XCTAssertEqual(gg.config.ropeScaling.typeName, hf.config.ropeScaling.typeName == "llama3" ? "default" : hf.config.ropeScaling.typeName, name)
            XCTAssertEqual(gg.parameterCount, hf.parameterCount, name)
            let golden = try readJSON(folder + "/golden.json")
            for (i, p) in try intRows(golden["prompts"]).enumerated() {
                let err = relativeError(try gg.logits([p]).toArray(), try hf.logits([p]).toArray())
                XCTAssertLessThanOrEqual(err, 1e-5, "\(name) prompt \(i): GGUF export vs the Hugging Face folder \(err)")
            }
        }
    }

    /// Unsupported formats, families and RoPE types fail with a message naming the problem; no file is left.
    func testErrors() throws {
        let tmp = try makeTempDir(self)
        func expect(_ kind: EncoreError.Kind, _ fragment: String, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body()) { e in
                let err = e as? EncoreError
                XCTAssertEqual(err?.kind, kind, "\(e)")
                XCTAssertTrue(err?.message.contains(fragment) == true, "\(e)")
            }
        }
        expect(.invalidArgument, "int8 has no GGUF type") { _ = try LlamaGGUFExport.type(parsing: "int8") }
        expect(.invalidArgument, "q5_k") { _ = try LlamaGGUFExport.type(parsing: "q5_k") }
        expect(.invalidArgument, "Q4_K") { try LlamaGGUFExport.write(source: fixture("tiny_llama/f32.gguf"), type: .q4_K, to: tmp + "/a.gguf") }
        expect(.unsupported, "dynamic") { try LlamaGGUFExport.write(source: fixture("hf_decoders/llama_dynamic"), type: .q8_0, to: tmp + "/b.gguf") }
        expect(.unsupported, "model_type 'mu'") { try LlamaGGUFExport.write(source: fixture("mu/mha"), type: .q8_0, to: tmp + "/c.gguf") }
        expect(.invalidFile, "not a GGUF file") { try LlamaGGUFExport.write(source: fixture("hf_decoders/llama/config.json"), type: .q8_0, to: tmp + "/d.gguf") }
        expect(.io, "cannot create") { try LlamaGGUFExport.write(source: fixture("tiny_llama/f32.gguf"), type: .q8_0, to: tmp + "/no/such/dir/e.gguf") }
        // a Hugging Face tensor with no GGUF name
        let folder = tmp + "/extra"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture("hf_decoders/llama/config.json"), toPath: folder + "/config.json")
        var tensors: [String: Tensor] = [:]
        let src = try SafeTensorsFile(path: fixture("hf_decoders/llama/model.safetensors"))
        for n in src.names { tensors[n] = try src.tensor(n) }
        tensors["model.layers.0.mystery.weight"] = Tensor(zeros: [4, 32])
        try SafeTensorsWriter.write(tensors, to: folder + "/model.safetensors")
        expect(.unexpectedTensor, "model.layers.0.mystery.weight") { try LlamaGGUFExport.write(source: folder, type: .q8_0, to: tmp + "/f.gguf") }
        let left = try FileManager.default.contentsOfDirectory(atPath: tmp).filter { $0.hasSuffix(".gguf") || $0.contains(".tmp-") }
        XCTAssertEqual(left, [], "no output or temp file after a failure")
    }

    /// The command: GGUF and Hugging Face sources, the load-back line, errors with exit code 1.
    func testCommandLine() throws {
        let tmp = try makeTempDir(self)
        var r = runCLI(["quantize", "--model", fixture("tiny_llama/hf"), "--out", tmp + "/hf.gguf", "--format", "q8_0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("llama GGUF, 29 tensors (22 matrices Q8_0") && r.stdout.contains("loads in Encore (3 layers)"), r.stdout)
        r = runCLI(["generate", "--model", tmp + "/hf.gguf", "--keep-quantized", "--input-ids", "1,45,43", "--max-tokens", "4", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = runCLI(["generate", "--model", tmp + "/hf.gguf", "--prompt", "hi"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("has no vocabulary"), r.stderr)
        r = runCLI(["quantize", "--model", fixture("tiny_llama/f32.gguf"), "--out", tmp + "/x.gguf", "--format", "int8"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("int8 has no GGUF type"), r.stderr)
        r = runCLI(["quantize", "--model", fixture("mu/mha"), "--out", tmp + "/mu.gguf", "--format", "q8_0"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("model folder, not a GGUF file"), r.stderr)
        r = runCLI(["quantize", "--model", tmp + "/missing", "--out", tmp + "/y.gguf", "--format", "q8_0"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("no such file or folder"), r.stderr)
    }
}
