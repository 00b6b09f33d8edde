import Foundation
import XCTest
@testable import EncoreTokenizers

/// The GGUF metadata reader on synthetic files: every value type, versions 2 and 3, and
/// malformed files that must fail with a message naming the byte offset.
final class GGUFReaderTests: XCTestCase {
    /// Builds a GGUF byte stream.
    struct Builder {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
        mutating func header(version: UInt32 = 3, kv: UInt64) { bytes += Array("GGUF".utf8); u32(version); u64(0); u64(kv) }
        mutating func key(_ k: String, type: UInt32) { str(k); u32(type) }
    }

    func allTypes(version: UInt32) -> [UInt8] {
        var b = Builder()
        b.header(version: version, kv: 14)
        b.key("u8", type: 0); b.bytes.append(200)
        b.key("i8", type: 1); b.bytes.append(0xFF)
        b.key("u16", type: 2); b.bytes += [0x34, 0x12]
        b.key("i16", type: 3); b.bytes += [0xFE, 0xFF]
        b.key("u32", type: 4); b.u32(70000)
        b.key("i32", type: 5); b.u32(UInt32(bitPattern: -7))
        b.key("f32", type: 6); b.u32(Float(1.5).bitPattern)
        b.key("bool", type: 7); b.bytes.append(1)
        b.key("str", type: 8); b.str("héllo")
        b.key("arr", type: 9); b.u32(8); b.u64(2); b.str("a"); b.str("bc")
        b.key("u64", type: 10); b.u64(1 << 40)
        b.key("i64", type: 11); b.u64(UInt64(bitPattern: -3))
        b.key("f64", type: 12); b.u64(Double(2.25).bitPattern)
        b.key("nested", type: 9); b.u32(9); b.u64(1); b.u32(5); b.u64(2); b.u32(1); b.u32(2)
        return b.bytes
    }

    func testAllValueTypesV2AndV3() throws {
        for v in [UInt32(2), 3] {
            let f = try GGUFFile(data: Data(allTypes(version: v)), source: "synthetic")
            XCTAssertEqual(f.version, v)
            XCTAssertEqual(f["u8"], .uint8(200))
            XCTAssertEqual(f["i8"], .int8(-1))
            XCTAssertEqual(f["u16"], .uint16(0x1234))
            XCTAssertEqual(f["i16"], .int16(-2))
            XCTAssertEqual(f["u32"], .uint32(70000))
            XCTAssertEqual(f["i32"], .int32(-7))
            XCTAssertEqual(f["f32"], .float32(1.5))
            XCTAssertEqual(f["bool"], .bool(true))
            XCTAssertEqual(f["str"], .string("héllo"))
            XCTAssertEqual(f["arr"], .array([.string("a"), .string("bc")]))
            XCTAssertEqual(f["u64"], .uint64(1 << 40))
            XCTAssertEqual(f["i64"], .int64(-3))
            XCTAssertEqual(f["f64"], .float64(2.25))
            XCTAssertEqual(f["nested"], .array([.array([.int32(1), .int32(2)])]))
            XCTAssertEqual(f.keys.count, 14)
        }
    }

    func expectGGUFError(_ bytes: [UInt8], _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try GGUFFile(data: Data(bytes), source: "bad.gguf"), file: file, line: line) { e in
            let msg = "\(e)"
            for p in parts { XCTAssertTrue(msg.contains(p), "'\(msg)' should mention '\(p)'", file: file, line: line) }
        }
    }

    func testMalformedFiles() {
        expectGGUFError(Array("GGML".utf8) + [3, 0, 0, 0], ["not a GGUF file", "byte 0"])
        expectGGUFError(Array("GG".utf8), ["truncated", "magic"])
        var v1 = Builder(); v1.header(version: 1, kv: 0)
        expectGGUFError(v1.bytes, ["version 1", "byte 4"])
        let full = allTypes(version: 3)
        for cut in [10, 30, 45, 60, full.count - 1] {
            expectGGUFError(Array(full[..<cut]), ["bad.gguf", "byte"])
        }
        var longStr = Builder(); longStr.header(kv: 1); longStr.key("s", type: 8); longStr.u64(1 << 40)
        expectGGUFError(longStr.bytes, ["length 1099511627776", "past the end", "byte 37"])
        var badType = Builder(); badType.header(kv: 1); badType.key("k", type: 99)
        expectGGUFError(badType.bytes, ["unknown value type 99", "'k'"])
        var bigArray = Builder(); bigArray.header(kv: 1); bigArray.key("a", type: 9); bigArray.u32(4); bigArray.u64(1 << 50)
        expectGGUFError(bigArray.bytes, ["array 'a'", "more than the file can hold"])
        var badBool = Builder(); badBool.header(kv: 1); badBool.key("b", type: 7); badBool.bytes.append(7)
        expectGGUFError(badBool.bytes, ["bool 'b'", "value 7"])
        var hugeKV = Builder(); hugeKV.header(kv: 1 << 60)
        expectGGUFError(hugeKV.bytes, ["metadata count"])
    }

    func testGGUFWithoutTokenizerFailsClearly() throws {
        var b = Builder(); b.header(kv: 1); b.key("general.architecture", type: 8); b.str("llama")
        let path = NSTemporaryDirectory() + "encore-notok-\(getpid()).gguf"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(b.bytes)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try Tokenizer.load(path: path)) { e in
            XCTAssertTrue("\(e)".contains("tokenizer.ggml.model"), "\(e)")
        }
    }

    func testSmolLM2VocabMetadata() throws {
        let f = try GGUFFile(path: Fixtures.path("smollm2/smollm2-vocab.gguf"))
        XCTAssertEqual(f["tokenizer.ggml.model"]?.stringValue, "gpt2")
        XCTAssertEqual(f["tokenizer.ggml.pre"]?.stringValue, "smollm")
        XCTAssertEqual(f["tokenizer.ggml.tokens"]?.arrayValue?.count, 49152)
        XCTAssertEqual(f["tokenizer.ggml.merges"]?.arrayValue?.count, 48900)
    }
}
