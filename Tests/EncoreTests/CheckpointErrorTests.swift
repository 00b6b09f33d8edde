import XCTest
@testable import Encore

/// Bad checkpoints and configs give clear errors naming the problem (never a crash), and the CLI exits
/// non-zero on each.
final class CheckpointErrorTests: XCTestCase {
    /// Writes a safetensors file from a raw header and data.
    func writeRaw(_ path: String, header: String, data: [UInt8], declaredLength: UInt64? = nil) throws {
        var bytes = [UInt8]()
        var len = (declaredLength ?? UInt64(header.utf8.count)).littleEndian
        withUnsafeBytes(of: &len) { bytes += $0 }
        bytes += Array(header.utf8)
        bytes += data
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// The error from the library, and a non-zero exit from `encore inspect` on the same file.
    func assertFileError(_ path: String, containing parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        assertError(.invalidFile, containing: parts, { _ = try SafeTensorsFile(path: path) }, file: file, line: line)
        let r = runCLI(["inspect", path])
        XCTAssertEqual(r.status, 1, "encore inspect exit status", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(parts[0]), "CLI message: \(r.stderr)", file: file, line: line)
    }

    func assertError(_ kind: EncoreError.Kind, containing parts: [String], _ body: () throws -> Void,
                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected an error containing \(parts)", file: file, line: line)
        } catch let e as EncoreError {
            XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
            for p in parts { XCTAssertTrue(e.message.contains(p), "'\(e.message)' should mention '\(p)'", file: file, line: line) }
        } catch {
            XCTFail("unexpected error type \(error)", file: file, line: line)
        }
    }

    func testTruncatedFiles() throws {
        let dir = try makeTempDir(self)
        let p = dir + "/t.safetensors"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: p))
        assertFileError(p, containing: ["too short"])
        // header length points past the end
        try writeRaw(p, header: "{}", data: [], declaredLength: 4096)
        assertFileError(p, containing: ["4096", "past the end", "truncated"])
        // a real checkpoint cut in the middle of its data
        let full = try Data(contentsOf: URL(fileURLWithPath: fixture("mu/gqa_mod/model.safetensors")))
        try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: p))
        assertFileError(p, containing: ["past the end of the data section"])
        // absurd header length
        try writeRaw(p, header: "{}", data: [], declaredLength: UInt64(1) << 40)
        assertFileError(p, containing: ["limit"])
    }

    func testHeaderValidation() throws {
        let dir = try makeTempDir(self)
        let p = dir + "/h.safetensors"
        try writeRaw(p, header: "{not json", data: [])
        assertFileError(p, containing: ["not valid JSON"])
        try writeRaw(p, header: "[1,2]", data: [])
        assertFileError(p, containing: ["must be an object"])
        try writeRaw(p, header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertFileError(p, containing: ["'a'", "past the end"])
        // offsets past the end of the file
        try writeRaw(p, header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#, data: [UInt8](repeating: 0, count: 16))
        assertError(.invalidFile, containing: ["'a'", "[8, 24]", "past the end"]) { _ = try SafeTensorsFile(path: p) }
        // overlapping tensors
        try writeRaw(p, header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                     data: [UInt8](repeating: 0, count: 12))
        assertFileError(p, containing: ["'a'", "'b'", "overlap"])
        // dtype / shape mismatch with the byte length
        try writeRaw(p, header: #"{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertFileError(p, containing: ["'a'", "BF16", "needs 6 bytes", "hold 8"])
        // unknown dtype
        try writeRaw(p, header: #"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, data: [0])
        assertFileError(p, containing: ["unknown dtype 'Q4'"])
        // bad shape
        try writeRaw(p, header: #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        assertFileError(p, containing: ["'a'", "shape"])
    }

    func testUnsupportedDtypeIsRejectedOnRead() throws {
        let dir = try makeTempDir(self)
        let p = dir + "/i.safetensors"
        try writeRaw(p, header: #"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 16))
        let f = try SafeTensorsFile(path: p)
        XCTAssertEqual(f.tensors["ids"]?.dtype, .I64)
        assertError(.unsupported, containing: ["'ids'", "I64", "F32, F16 and BF16"]) { _ = try f.tensor("ids") }
    }

    /// Copies the gqa_mod fixture, lets `mutate` change it, and expects loading to fail with `parts`.
    func assertModelError(_ kind: EncoreError.Kind, _ parts: [String], mutate: (String) throws -> Void,
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try makeTempDir(self)
        for f in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: fixture("mu/gqa_mod/\(f)"), toPath: dir + "/" + f)
        }
        try mutate(dir)
        assertError(kind, containing: parts, { _ = try ModelRegistry.load(folder: dir) }, file: file, line: line)
        XCTAssertEqual(runCLI(["inspect", dir]).status, 1, "CLI exit status", file: file, line: line)
        XCTAssertEqual(runCLI(["generate", "--model", dir, "--input-ids", "5,6"]).status, 1, file: file, line: line)
    }

    func editTensors(_ dir: String, _ edit: (inout [String: Tensor]) -> Void) throws {
        let f = try SafeTensorsFile(path: dir + "/model.safetensors")
        var d: [String: Tensor] = [:]
        for n in f.names { d[n] = try f.tensor(n).copy() }
        edit(&d)
        try SafeTensorsWriter.write(d, to: dir + "/model.safetensors")
    }

    func editConfig(_ dir: String, _ edit: (inout [String: Any]) -> Void) throws {
        var c = try readJSON(dir + "/config.json")
        edit(&c)
        try JSONSerialization.data(withJSONObject: c).write(to: URL(fileURLWithPath: dir + "/config.json"))
    }

    func testMissingTensor() throws {
        try assertModelError(.missingTensor, ["transformer.h.1.cross_attn.k_linear.bias", "missing"]) { dir in
            try editTensors(dir) { $0["transformer.h.1.cross_attn.k_linear.bias"] = nil }
        }
    }

    func testUnexpectedTensor() throws {
        try assertModelError(.unexpectedTensor, ["transformer.e.9.attn.q_linear.weight", "unexpected"]) { dir in
            try editTensors(dir) { $0["transformer.e.9.attn.q_linear.weight"] = Tensor(zeros: [2, 2]) }
        }
    }

    func testWrongShape() throws {
        try assertModelError(.shapeMismatch, ["transformer.e.0.mlp.fc1.weight", "[96, 47]", "[96, 48]"]) { dir in
            try editTensors(dir) { $0["transformer.e.0.mlp.fc1.weight"] = Tensor(zeros: [96, 47]) }
        }
    }

    func testMissingConfigField() throws {
        try assertModelError(.invalidConfig, ["config.json", "missing required field 'n_embd'"]) { dir in
            try editConfig(dir) { $0["n_embd"] = nil }
        }
    }

    func testWrongTypedConfigField() throws {
        try assertModelError(.invalidConfig, ["config.json", "'n_head'", "integer"]) { dir in
            try editConfig(dir) { $0["n_head"] = "four" }
        }
        try assertModelError(.invalidConfig, ["config.json", "'is_interleaved'"]) { dir in
            try editConfig(dir) { $0["is_interleaved"] = "yes" }
        }
    }

    func testInconsistentConfig() throws {
        try assertModelError(.invalidConfig, ["'n_head' (4) must be divisible by 'n_kv_head' (3)"]) { dir in
            try editConfig(dir) { $0["n_kv_head"] = 3 }
        }
    }

    func testUnsupportedModelTypeListsSupported() throws {
        try assertModelError(.unsupported, ["'gpt_neox'", "mu, mu_decoder"]) { dir in
            try editConfig(dir) { $0["model_type"] = "gpt_neox" }
        }
    }

    func testTruncatedCheckpointInFolder() throws {
        try assertModelError(.invalidFile, ["model.safetensors"]) { dir in
            let p = dir + "/model.safetensors"
            let d = try Data(contentsOf: URL(fileURLWithPath: p))
            try d.prefix(d.count - 100).write(to: URL(fileURLWithPath: p))
        }
    }

    func testBadUserInputToTheCLI() {
        let m = fixture("mu/gqa_mod")
        XCTAssertEqual(runCLI(["generate", "--model", m, "--input-ids", "5,x"]).status, 64)     // usage error
        let r = runCLI(["generate", "--model", m, "--input-ids", "5,999"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("999"), r.stderr)
        XCTAssertEqual(runCLI(["score", "--model", m, "--input-ids", "5", "--target-ids=5,-3"]).status, 1)
        XCTAssertEqual(runCLI(["generate", "--model", m, "--input-ids", "5", "--top-p", "0"]).status, 64)
        XCTAssertEqual(runCLI(["generate", "--model", m]).status, 64)
        XCTAssertEqual(runCLI(["inspect", "/definitely/not/here"]).status, 1)
    }

    func testWriterRoundTripAndAtomicity() throws {
        let dir = try makeTempDir(self)
        let t = Tensor(shape: [2, 3], values: [1, -2.5, 3.25, 1e-3, 65504, -0.0])
        for dtype in [SafeTensorsDType.F32, .BF16, .F16] {
            let p = dir + "/w-\(dtype.rawValue).safetensors"
            try SafeTensorsWriter.write(["x": t, "y": Tensor(shape: [1], values: [7])], to: p, dtype: dtype, metadata: ["format": "pt"])
            let f = try SafeTensorsFile(path: p)
            XCTAssertEqual(f.metadata["format"], "pt")
            XCTAssertEqual(f.tensors["x"]?.dtype, dtype)
            let back = try f.tensor("x").toArray()
            for (a, b) in zip(back, t.toArray()) { XCTAssertEqual(a, b, accuracy: dtype == .F32 ? 0 : abs(b) * 4e-3) }
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [], "no temp files left behind")
        // a failed write leaves the previous file intact
        let p = dir + "/w-F32.safetensors"
        let before = try Data(contentsOf: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try AtomicFile.write(to: p) { _ in throw EncoreError(.io, "simulated crash") })
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: p)), before)
    }

    func testF32TensorsAreMemoryMapped() throws {
        let f = try SafeTensorsFile(path: fixture("mu/gqa_mod/model.safetensors"))
        let t = try f.tensor("transformer.wte.weight")
        let a = try f.tensor("transformer.wte.weight")
        XCTAssertEqual(t.data, a.data, "F32 tensors point into the mapping, not copies")
    }
}

/// Runs the built `encore` executable.
func runCLI(_ args: [String], stdin: String? = nil, environment: [String: String] = [:]) -> (status: Int32, stdout: String, stderr: String) {
    let bundle = Bundle(for: CheckpointErrorTests.self).bundleURL
    let candidates = [bundle.appendingPathComponent("encore"), bundle.deletingLastPathComponent().appendingPathComponent("encore")]
    let exe = candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[1]
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = input
    do { try p.run() } catch { return (-1, "", "cannot run \(exe.path): \(error)") }
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
