import XCTest
@testable import EncoreTokenizers

/// Parity with HF `tokenizers` 0.23.3 on the shared corpus (exact ids, exact decoded strings).
final class GoldenTests: XCTestCase {
    func testPhi35MiniTokenizerJSON() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("phi-3.5-mini"))
        XCTAssertEqual(tok.vocabSize, 32011)
        XCTAssertEqual(tok.bosTokenId, 1)
        XCTAssertEqual(tok.eosTokenId, 32000)
        XCTAssertEqual(tok.padTokenId, 0)  // tokenizer_config.json: pad_token = <unk>
        XCTAssertEqual(tok.idToToken(32010), "<|user|>")
        try checkGoldens(tok, "phi-3.5-mini")
    }

    func testGPT2ByteLevelBPE() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("gpt2-whisper/tokenizer.json"))
        XCTAssertEqual(tok.eosTokenId, 50256)
        try checkGoldens(tok, "gpt2-whisper")
    }

    func testSmolLM2GGUFVocabulary() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("smollm2/smollm2-vocab.gguf"))
        XCTAssertEqual(tok.vocabSize, 49152)
        XCTAssertEqual(tok.bosTokenId, 1)
        XCTAssertEqual(tok.eosTokenId, 2)
        try checkGoldens(tok, "smollm2")
    }

    func testUnigramT5Precompiled() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("unigram-t5/tokenizer.json"))
        try checkGoldens(tok, "unigram-t5")
    }

    /// The same T5-style model as a `tokenizer.ggml.model = t5` GGUF (keys as llama.cpp's converter
    /// writes them) must give the HF ids of the tokenizer.json.
    func testUnigramT5GGUF() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("unigram-t5/t5-vocab.gguf"))
        try checkGoldens(tok, "unigram-t5")
    }

    func testUnigramByteFallback() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("unigram-bytefallback/tokenizer.json"))
        try checkGoldens(tok, "unigram-bytefallback")
    }

    func testWordPieceBert() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("wordpiece-bert/tokenizer.json"))
        try checkGoldens(tok, "wordpiece-bert")
    }

    func testBatchEqualsSingle() throws {
        let tok = try Tokenizer.load(path: Fixtures.path("phi-3.5-mini"))
        let texts = try loadGolden("phi-3.5-mini").map { $0.text }
        let many = Array(repeating: texts, count: 5).flatMap { $0 }
        XCTAssertEqual(tok.encodeBatch(many, addSpecialTokens: true), many.map { tok.encode($0) })
    }
}
