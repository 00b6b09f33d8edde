import Foundation
import XCTest
@testable import EncoreTokenizers

/// Runs llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf.inp/.out`, produced by HF
/// tokenizers) against our GGUF tokenizer: encode without BOS and without parsing special tokens.
final class LlamaCppVectorTests: XCTestCase {
    struct Outcome { let name: String; let passed: Int; let total: Int; let error: String? }

    static func run(vocab path: String) -> Outcome {
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        do {
            let tok = try Tokenizer.load(path: path)
            let inp = try String(contentsOfFile: path + ".inp", encoding: .utf8)
            let out = try String(contentsOfFile: path + ".out", encoding: .utf8)
            var texts = inp.components(separatedBy: "\n__ggml_vocab_test__\n")
            if texts.last == "" { texts.removeLast() }  // the file ends with a separator
            var lines = out.components(separatedBy: "\n")
            if lines.last == "" { lines.removeLast() }
            guard texts.count == lines.count else {
                return Outcome(name: name, passed: 0, total: 0, error: "\(texts.count) inputs but \(lines.count) outputs")
            }
            var passed = 0
            var firstFail: String?
            for (t, l) in zip(texts, lines) {
                let expected = l.split(separator: " ").compactMap { Int($0) }
                let got = tok.encode(t, addSpecialTokens: false, parseSpecialTokens: false)
                if got == expected { passed += 1 } else if firstFail == nil {
                    firstFail = "\(t.debugDescription): \(firstDiff(expected, got))"
                }
            }
            return Outcome(name: name, passed: passed, total: texts.count, error: firstFail)
        } catch {
            return Outcome(name: name, passed: 0, total: 0, error: "\(error)")
        }
    }

    func check(_ file: String) {
        let o = Self.run(vocab: Fixtures.path("llama.cpp/\(file)"))
        XCTAssertGreaterThan(o.total, 20, "\(file): no vectors ran (\(o.error ?? ""))")
        XCTAssertEqual(o.passed, o.total, "\(file): \(o.passed)/\(o.total) pass; first failure: \(o.error ?? "")")
    }

    func testPhi3() { check("ggml-vocab-phi-3.gguf") }
    func testLlamaSPM() { check("ggml-vocab-llama-spm.gguf") }
    func testDeepseekCoder() { check("ggml-vocab-deepseek-coder.gguf") }
    func testBertBGE() { check("ggml-vocab-bert-bge.gguf") }

    /// Set ENCORE_LLAMA_VOCAB_DIR to llama.cpp's `models/` folder to run every vocabulary there.
    /// Prints a pass/fail table; fails only for vocabularies whose type we claim to support.
    func testAllVocabsInEnvironmentFolder() throws {
        guard let dir = ProcessInfo.processInfo.environment["ENCORE_LLAMA_VOCAB_DIR"] else {
            throw XCTSkip("ENCORE_LLAMA_VOCAB_DIR is not set")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
            .filter { $0.hasSuffix(".gguf") && self.exists(dir, $0 + ".inp") }.sorted()
        for f in files {
            let o = Self.run(vocab: (dir as NSString).appendingPathComponent(f))
            print("VOCAB \(o.name): \(o.passed)/\(o.total)\(o.error.map { " — \($0.prefix(300))" } ?? "")")
        }
    }

    private func exists(_ dir: String, _ name: String) -> Bool {
        FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent(name))
    }
}
