import Foundation
import XCTest
@testable import EncoreTokenizers

/// Malformed input gives clear errors naming the problem, never a crash.
final class ErrorTests: XCTestCase {
    func expectError(_ json: String, contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Tokenizer.fromJSON(Array(json.utf8), source: "t.json"), file: file, line: line) { e in
            let msg = "\(e)"
            for p in parts { XCTAssertTrue(msg.contains(p), "'\(msg)' should mention '\(p)'", file: file, line: line) }
        }
    }

    func testBrokenJSON() {
        expectError(#"{"model": {"type": "BPE", "vocab": {"a": 0}"#, contains: ["invalid JSON", "t.json", "byte"])
        expectError(#"{"model": [1, 2,]}"#, contains: ["invalid JSON", "byte 16"])
        expectError("", contains: ["unexpected end"])
        expectError(#"{"a": "\ud800"}"#, contains: ["surrogate"])
    }

    func testUnknownComponentTypeIsNamed() {
        let model = #""model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}"#
        expectError(#"{"normalizer": {"type": "FancyNorm"}, \#(model)}"#, contains: ["normalizer", "FancyNorm", "'normalizer'"])
        expectError(#"{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Mystery"}]}, \#(model)}"#,
                    contains: ["Mystery", "pre_tokenizer.pretokenizers[1]"])
        expectError(#"{"decoder": {"type": "Nope"}, \#(model)}"#, contains: ["decoder", "Nope"])
        expectError(#"{"post_processor": {"type": "Weird"}, \#(model)}"#, contains: ["post_processor", "Weird"])
        expectError(#"{"model": {"type": "Tiktoken", "vocab": {}}}"#, contains: ["model", "Tiktoken"])
    }

    func testMissingFields() {
        expectError(#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}}"#, contains: ["missing field", "model.merges"])
        expectError(#"{"model": {"type": "BPE", "merges": []}}"#, contains: ["missing field", "model.vocab"])
        expectError(#"{"model": {"type": "Unigram"}}"#, contains: ["model.vocab"])
        expectError(#"{}"#, contains: ["missing field 'model'"])
        expectError(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}"#, contains: ["merge 0", "'b'"])
        expectError(#"{"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}}"#, contains: ["model.vocab.a"])
        expectError(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}}"#, contains: ["unk_token", "<unk>"])
        expectError(#"{"added_tokens": [{"id": 3}], "model": {"type": "WordLevel", "vocab": {"a": 0}}}"#, contains: ["added_tokens[0].content"])
        expectError(#"{"added_tokens": [{"id": 99999999999, "content": "x"}], "model": {"type": "WordLevel", "vocab": {"a": 0}}}"#,
                    contains: ["added_tokens[0].id", "token id"])
        expectError(#"{"post_processor": {"type": "BertProcessing", "sep": ["[SEP]", -1], "cls": ["[CLS]", 1]}, "model": {"type": "WordLevel", "vocab": {"a": 0}}}"#,
                    contains: ["post_processor.sep[1]"])
        expectError(#"{"model": {"type": "WordLevel", "vocab": {"a": 2000000000}}}"#, contains: ["far beyond"])
    }

    func testDecodeOutOfRange() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("phi-3.5-mini"))
        XCTAssertThrowsError(try tok.decodeChecked([1, 15043, 99999])) { e in
            XCTAssertTrue("\(e)".contains("99999"), "\(e)")
            XCTAssertTrue("\(e)".contains("position 2"), "\(e)")
        }
        XCTAssertThrowsError(try tok.decodeChecked([-1]))
        XCTAssertEqual(tok.decode([15043, 99999, -5, 3186]), "Hello world")  // HF drops unknown ids
    }

    func testMissingPaths() {
        XCTAssertThrowsError(try Tokenizer.load(path: "/nonexistent/tokenizer.json")) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent/tokenizer.json"))
        }
        let dir = NSTemporaryDirectory() + "encore-empty-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        XCTAssertThrowsError(try Tokenizer.load(path: dir)) { e in
            XCTAssertTrue("\(e)".contains("neither tokenizer.json nor a .gguf"))
        }
    }

    func testHostileTextNeverCrashes() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("gpt2-whisper/tokenizer.json"))
        let texts = ["\u{0}", String(repeating: "a", count: 100_000), String(repeating: " ", count: 5000),
                     String(repeating: "🏳️‍🌈", count: 500), "\u{FFFD}\u{10FFFF}\u{E000}", "<|endoftext|"]
        for t in texts {
            let ids = tok.encode(t, addSpecialTokens: false)
            XCTAssertEqual(tok.decode(ids), t)  // byte-level BPE round-trips any text
            XCTAssertEqual(tok.decode(tok.encode(t), skipSpecialTokens: true), t)
        }
    }
}
