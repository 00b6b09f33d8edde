import Foundation
import XCTest
import EncoreKernels
@testable import Encore

/// The GGUF tensor reader: dequantization against the `gguf` package's reference (goldens from
/// tools/goldens/make_gguf_quant_goldens.py), the C kernels against their per-element twins, and malformed
/// files that must fail with errors naming the tensor, key or byte offset.
final class GGUFModelFileTests: XCTestCase {
    /// Every type decodes exactly as `gguf.quants.dequantize` (same float operations: tolerance 1 ulp-ish).
    func testDequantizeMatchesGGUFPackage() throws {
        let f = try GGUFModelFile(path: fixture("gguf/quant_types.gguf"))
        let expectedTypes: [String: GGMLType] = ["f32": .f32, "f16": .f16, "bf16": .bf16, "q8_0": .q8_0, "q4_0": .q4_0,
                                                 "q4_1": .q4_1, "q4_k": .q4_K, "q5_k": .q5_K, "q6_k": .q6_K,
                                                 "q5_0": .q5_0, "q5_1": .q5_1]
        XCTAssertEqual(f.tensorNames.count, 22)
        for (name, type) in expectedTypes {
            let info = try XCTUnwrap(f.tensors[name])
            XCTAssertEqual(info.type, type, name)
            let got = try f.tensor(name), want = try f.tensor(name + ".expected")
            XCTAssertEqual(got.shape, want.shape, name)
            XCTAssertEqual(f.tensors[name + ".expected"]?.type, .f32)
            let err = relativeError(got.toArray(), want.toArray())
            XCTAssertLessThanOrEqual(err, 1e-6, "\(name): relative error \(err)")
            XCTAssertGreaterThan(want.toArray().map(abs).max()!, 0.01, "\(name): golden is degenerate")
        }
        XCTAssertEqual(f.tensors["f32"]?.shape, [2, 3, 64])    // ggml ne [64, 3, 2] reversed
        XCTAssertEqual(f.tensors["q5_k"]?.shape, [2, 512])
    }

    /// The block kernels (threaded) equal the per-element reference on random bytes, for every type.
    func testDequantizeKernelMatchesReference() {
        var rng = SplitMix64(seed: 7)
        for type in GGMLType.allCases {
            let blocks = 300   // > 2^16 values for the 256-value types: exercises the thread pool
            var bytes = [UInt8](repeating: 0, count: blocks * type.blockBytes)
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
            // Keep the f16 scales finite (0x3c00 = 1.0 with the low byte random): NaN ≠ NaN would hide nothing.
            for b in 0..<blocks {
                let at: [Int]
                switch type {
                case .q8_0, .q4_0, .q5_0: at = [0]
                case .q4_1, .q5_1, .q4_K, .q5_K: at = [0, 2]
                case .q6_K: at = [208]
                case .f16: at = [0]
                default: at = []
                }
                for o in at { bytes[b * type.blockBytes + o + 1] = 0x2c | (bytes[b * type.blockBytes + o + 1] & 0x83) }
            }
            if type == .f32 || type == .bf16 {
                for i in stride(from: type == .f32 ? 3 : 1, to: bytes.count, by: type == .f32 ? 4 : 2) { bytes[i] &= 0x3f }
            }
            let n = blocks * type.blockValues
            var fast = [Float](repeating: .nan, count: n), ref = [Float](repeating: 0, count: n)
            XCTAssertEqual(ek_dequantize(Int32(type.rawValue), bytes, &fast, n), 0)
            XCTAssertEqual(ek_dequantize_ref(Int32(type.rawValue), bytes, &ref, n), 0)
            XCTAssertEqual(fast, ref, "\(type.name)")
            XCTAssertTrue(ref.contains { $0 != 0 }, "\(type.name)")
        }
        var out = [Float](repeating: 0, count: 32)
        XCTAssertEqual(ek_dequantize(99, [UInt8](repeating: 0, count: 64), &out, 32), -1)
        XCTAssertEqual(ek_dequantize(Int32(GGMLType.q8_0.rawValue), [UInt8](repeating: 0, count: 64), &out, 31), -1)
    }

    // MARK: malformed files

    /// Builds GGUF bytes.
    struct Builder {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
        mutating func header(tensors: UInt64, kv: UInt64) { bytes += Array("GGUF".utf8); u32(3); u64(tensors); u64(kv) }
        mutating func kvString(_ k: String, _ v: String) { str(k); u32(8); str(v) }
        mutating func kvU32(_ k: String, _ v: UInt32) { str(k); u32(4); u32(v) }
        mutating func kvF32(_ k: String, _ v: Float) { str(k); u32(6); u32(v.bitPattern) }
        mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
            str(name); u32(UInt32(dims.count)); for d in dims { u64(d) }; u32(type); u64(offset)
        }
        mutating func align(_ a: Int = 32) { while bytes.count % a != 0 { bytes.append(0) } }
    }

    /// One F32 tensor "t" [2, 32] (256 bytes of data) after an architecture key.
    func oneTensorFile(type: UInt32 = 0, offset: UInt64 = 0, dataBytes: Int = 256, dims: [UInt64] = [32, 2]) -> [UInt8] {
        var b = Builder()
        b.header(tensors: 1, kv: 1)
        b.kvString("general.architecture", "llama")
        b.tensor("t", dims: dims, type: type, offset: offset)
        b.align()
        b.bytes += [UInt8](repeating: 0, count: dataBytes)
        return b.bytes
    }

    func write(_ bytes: [UInt8], _ name: String = "bad.gguf") throws -> String {
        let path = try makeTempDir(self) + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func expectError(_ bytes: [UInt8], _ kind: EncoreError.Kind, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try write(bytes)
        XCTAssertThrowsError(try GGUFModelFile(path: path), file: file, line: line) { e in
            guard let e = e as? EncoreError else { return XCTFail("not an EncoreError: \(e)", file: file, line: line) }
            XCTAssertEqual(e.kind, kind, "\(e)", file: file, line: line)
            for p in parts { XCTAssertTrue(e.message.contains(p), "'\(e.message)' lacks '\(p)'", file: file, line: line) }
        }
    }

    func testValidSyntheticFileLoads() throws {
        let f = try GGUFModelFile(path: try write(oneTensorFile()))
        XCTAssertEqual(f.tensors["t"]?.shape, [2, 32])
        XCTAssertEqual(try f.tensor("t").toArray(), [Float](repeating: 0, count: 64))
    }

    /// `encore bench` labels a --keep-quantized file's int8 prompt passes with the GEMM of its main block format
    /// (most bytes among Q8_0/Q4_0/Q4_1), and each row with the GEMM its prompt pass ran.
    func testMainBlockFormatAndPromptGEMM() throws {
        XCTAssertEqual(try GGUFModelFile(path: fixture("t5_gguf/gated/q4_0.gguf")).mainBlockFormat, .q4_0)
        XCTAssertEqual(try GGUFModelFile(path: fixture("t5_gguf/gated/q8_0.gguf")).mainBlockFormat, .q8_0)
        XCTAssertNil(try GGUFModelFile(path: fixture("t5_gguf/gated/f32.gguf")).mainBlockFormat)
        XCTAssertNil(try GGUFModelFile(path: try write(oneTensorFile())).mainBlockFormat)   // one F32 matrix
        // eight types, none with half the matrix bytes (Q4_1 the largest block share: 28 of 184 KB): int8 rows
        XCTAssertNil(try GGUFModelFile(path: fixture("tiny_llama/mixed.gguf")).mainBlockFormat)
        XCTAssertEqual(try GGUFModelFile(path: fixture("tiny_llama/q5.gguf")).mainBlockFormat, .q5_0)
        XCTAssertTrue(GGUFModelFile.isFile(fixture("t5_gguf/gated/q4_0.gguf")))
        XCTAssertFalse(GGUFModelFile.isFile(fixture("t5_gguf/gated")))
        XCTAssertFalse(GGUFModelFile.isFile(fixture("tiny_llama/README.md")))

        // decoder-only: the decode format's blocks when it has a GEMM of its own, else int8 rows
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: false, decodeFormat: .q4_1), .q4_1)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: false, decodeFormat: .q8_0), .q8_0)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: false, decodeFormat: .f32), .int8)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: false, decodeFormat: .bf16), .int8)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: false, decodeFormat: nil), .int8)
        // encoder-decoders: the encoder's format, else the file's blocks, else int8 rows (never the decode format)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: .q4_0), .int8)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: .q4_0, encoderFormat: .q8_0), .q8_0)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: nil, encoderFormat: .int8,
                                                    fileBlockFormat: .q8_0), .int8)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: nil, fileBlockFormat: .q4_0), .q4_0)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: .f32, encoderFormat: .bf16), .int8)
        // an fp32 / bf16 encoder asked of a block file: int8 rows, not the file's blocks
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: nil, encoderFormat: .bf16,
                                                    fileBlockFormat: .q8_0), .int8)
        XCTAssertEqual(KernelBench.promptGEMMFormat(encoderDecoder: true, decodeFormat: nil, encoderFormat: .f32,
                                                    fileBlockFormat: .q4_0), .int8)
    }

    func testWrongMagic() throws {
        var bytes = oneTensorFile()
        bytes[0] = UInt8(ascii: "X")
        try expectError(bytes, .invalidFile, ["not a GGUF file", "byte 0"])
    }

    func testTruncatedHeader() throws {
        let full = oneTensorFile()
        for cut in [0, 3, 6, 14, 30, 50, 70] {
            try expectError(Array(full[..<cut]), .invalidFile, ["bad.gguf"])
        }
        try expectError(Array(full[..<20]), .invalidFile, ["truncated", "byte 16"])
    }

    func testStringLengthPastEnd() throws {
        var b = Builder()
        b.header(tensors: 0, kv: 1)
        b.u64(1 << 40)   // key length
        b.bytes += Array("abc".utf8)
        try expectError(b.bytes, .invalidFile, ["length 1099511627776", "past the end", "byte 24"])
    }

    func testTensorNameLengthPastEnd() throws {
        var b = Builder()
        b.header(tensors: 1, kv: 0)
        b.u64(5000); b.bytes += [UInt8](repeating: 0x41, count: 40)
        try expectError(b.bytes, .invalidFile, ["name of tensor 0", "past the end", "byte 24"])
    }

    func testUnknownTensorType() throws {
        try expectError(oneTensorFile(type: 99), .unsupported, ["tensor 't'", "byte 69", "ggml type 99"])
    }

    func testTensorPastEndOfFile() throws {
        try expectError(oneTensorFile(dataBytes: 100), .invalidFile, ["tensor 't'", "past the end", "truncated"])
        try expectError(oneTensorFile(offset: 1 << 50), .invalidFile, ["tensor 't'", "past the end"])
    }

    func testMisalignedOffsetBadDimsAndBlocks() throws {
        try expectError(oneTensorFile(offset: 4), .invalidFile, ["tensor 't'", "offset 4", "alignment 32"])
        try expectError(oneTensorFile(dims: [32, 1 << 40, 1 << 40]), .invalidFile, ["tensor 't'", "too large"])
        try expectError(oneTensorFile(dims: [32, 2, 1, 1, 1]), .invalidFile, ["tensor 't'", "5 dimensions"])
        try expectError(oneTensorFile(type: 8, dims: [33, 2]), .invalidFile, ["tensor 't'", "row length 33", "Q8_0"])
    }

    func testOverlappingAndDuplicateTensors() throws {
        var b = Builder()
        b.header(tensors: 2, kv: 0)
        b.tensor("a", dims: [64], type: 0, offset: 0)
        b.tensor("b", dims: [64], type: 0, offset: 128)
        b.align()
        b.bytes += [UInt8](repeating: 0, count: 512)
        try expectError(b.bytes, .invalidFile, ["'a'", "'b'", "overlap"])
        var d = Builder()
        d.header(tensors: 2, kv: 0)
        d.tensor("a", dims: [64], type: 0, offset: 0)
        d.tensor("a", dims: [64], type: 0, offset: 256)
        d.align()
        d.bytes += [UInt8](repeating: 0, count: 512)
        try expectError(d.bytes, .invalidFile, ["'a'", "duplicate"])
    }

    func testBadAlignmentValue() throws {
        var b = Builder()
        b.header(tensors: 0, kv: 1)
        b.kvU32("general.alignment", 24)
        try expectError(b.bytes, .invalidFile, ["general.alignment", "power of two"])
    }

    /// A llama file whose metadata lacks a required key fails naming the key; other bad values name theirs.
    func testMissingRequiredMetadataKey() throws {
        func llamaFile(skip: String?, heads: UInt32 = 4, arch: String = "llama") -> [UInt8] {
            let keys: [(String, UInt32)] = [("llama.embedding_length", 32), ("llama.block_count", 1),
                                            ("llama.attention.head_count", heads), ("llama.feed_forward_length", 64),
                                            ("llama.context_length", 128)]
            var b = Builder()
            let kept = keys.filter { $0.0 != skip }
            b.header(tensors: 1, kv: UInt64(kept.count + 2 - (skip == "llama.attention.layer_norm_rms_epsilon" ? 1 : 0)))
            b.kvString("general.architecture", arch)
            for (k, v) in kept { b.kvU32(k, v) }
            if skip != "llama.attention.layer_norm_rms_epsilon" { b.kvF32("llama.attention.layer_norm_rms_epsilon", 1e-5) }
            b.tensor("token_embd.weight", dims: [32, 10], type: 0, offset: 0)
            b.align()
            b.bytes += [UInt8](repeating: 0, count: 32 * 10 * 4)
            return b.bytes
        }
        for key in ["llama.embedding_length", "llama.block_count", "llama.attention.head_count",
                    "llama.feed_forward_length", "llama.attention.layer_norm_rms_epsilon"] {
            let path = try write(llamaFile(skip: key))
            XCTAssertThrowsError(try LlamaModel(path: path)) { e in
                XCTAssertTrue("\(e)".contains("missing metadata key '\(key)'"), "\(e)")
            }
        }
        XCTAssertThrowsError(try LlamaModel(path: try write(llamaFile(skip: nil, heads: 3)))) { e in
            XCTAssertTrue("\(e)".contains("n_head 3"), "\(e)")
        }
        XCTAssertThrowsError(try LlamaModel(path: try write(llamaFile(skip: nil, arch: "gpt2")))) { e in
            XCTAssertTrue("\(e)".contains("'gpt2'"), "\(e)")
        }
        // All keys present: the next problem is the missing block tensors, named.
        XCTAssertThrowsError(try LlamaModel(path: try write(llamaFile(skip: nil)))) { e in
            XCTAssertTrue("\(e)".contains("missing tensor 'blk.0."), "\(e)")
        }
        // Through the registry: a .gguf path loads by magic, garbage is refused.
        XCTAssertThrowsError(try ModelRegistry.load(folder: try write(Array("not a model".utf8), "x.bin"))) { e in
            XCTAssertTrue("\(e)".contains("not a model folder nor a GGUF file"), "\(e)")
        }
    }
}
