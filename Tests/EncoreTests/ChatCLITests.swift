import Foundation
import XCTest
@testable import Encore
import EncoreTokenizers

/// `encore chat`: the conversation is rendered with the model's chat template turn by turn, replies stop at the
/// end-of-turn token, and bad models fail with a clear message.
final class ChatCLITests: XCTestCase {
    static let tiny = fixture("hf_decoders/llama")        // tiny random Llama + a ChatML tokenizer (128 ids)

    /// The reply the library gives for a conversation: greedy until <|im_end|>, decoded.
    func expectedReply(_ history: [ChatMessage], maxTokens: Int,
                       configure: (LanguageModel) throws -> Void = { _ in }) throws -> String {
        let tok = try Tokenizer.load(path: Self.tiny)
        let model = try ModelRegistry.load(folder: Self.tiny)
        try configure(model)
        let ids = tok.encode(try tok.applyChatTemplate(messages: history, addGenerationPrompt: true), addSpecialTokens: false)
        let stop = try XCTUnwrap(tok.tokenToId("<|im_end|>"))
        var reply: [Int] = []
        try Generator(model: model).generate(prompts: [ids], parameters: .init(maxTokens: maxTokens, useModelEOS: false)) { e in
            if e.token == stop || e.token == model.eosTokenId { return false }
            reply.append(e.token)
            return true
        }
        return tok.decode(reply, skipSpecialTokens: true)
    }

    func testScriptedTurnsFollowTheTemplate() throws {
        let r = runCLI(["chat", "--model", Self.tiny, "--message", "hi", "--message", "again", "--max-tokens", "6", "--verbose"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let first = try expectedReply([ChatMessage(role: "user", content: "hi")], maxTokens: 6)
        let history = [ChatMessage(role: "user", content: "hi"),
                       ChatMessage(role: "assistant", content: first.trimmingCharacters(in: .whitespacesAndNewlines)),
                       ChatMessage(role: "user", content: "again")]
        let second = try expectedReply(history, maxTokens: 6)
        XCTAssertEqual(r.stdout, "> hi\n\(first)\n> again\n\(second)\n")
        XCTAssertEqual(r.stderr.components(separatedBy: "tokens/s]").count - 1, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("prompt ids: [1, 87, 85, 71, 84, 97, 74, 75, 2, 97, 1, "), "second turn carries the first: \(r.stderr)")
    }

    /// Past the model's context (64 positions here) the oldest exchange is dropped, the newest turn kept.
    func testLongConversationDropsOldestTurns() throws {
        let long = String(repeating: "abc ", count: 5)
        let r = runCLI(["chat", "--model", Self.tiny, "--message", long, "--message", "x", "--max-tokens", "20", "--verbose"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let prompts = r.stderr.split(separator: "\n").filter { $0.hasPrefix("prompt ids:") }
        XCTAssertEqual(prompts.count, 2)
        XCTAssertEqual(prompts.last.map(String.init), "prompt ids: [1, 87, 85, 71, 84, 97, 90, 2, 97, 1, 67, 85, 85, 75, 85, 86, 67, 80, 86, 97]")
        let tooLong = runCLI(["chat", "--model", Self.tiny, "--message", String(repeating: "abcd", count: 20), "--max-tokens", "8"])
        XCTAssertEqual(tooLong.status, 1)
        XCTAssertTrue(tooLong.stderr.contains("does not fit the model's context of 64 tokens"), tooLong.stderr)
    }

    /// The weight and cache options generate has: the reply is the library's with the same settings.
    func testDecodeWeightsAndHalfKVCache() throws {
        let r = runCLI(["chat", "--model", Self.tiny, "--message", "hi", "--max-tokens", "12",
                        "--decode-weights", "q4_0", "--kv-cache", "f16"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let turn = [ChatMessage(role: "user", content: "hi")]
        let reply = try expectedReply(turn, maxTokens: 12) { model in
            try model.useDecodeWeights(.q4_0)
            try model.useHalfKVCache(true)
        }
        XCTAssertEqual(r.stdout, "> hi\n\(reply)\n")
        XCTAssertNotEqual(reply, try expectedReply(turn, maxTokens: 12), "q4_0 weights change this reply, so the option is seen")
        let bad = runCLI(["chat", "--model", Self.tiny, "--message", "hi", "--kv-cache", "f8"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("--kv-cache must be auto, f32, f16 or int8 (got 'f8')"), bad.stderr)
    }

    /// The default `--kv-cache auto`: the reply with q4_0 decode weights is the library's with q4_0 and an f16 cache,
    /// and `--kv-cache f32` gives the library's fp32-cache reply. The tiny model's two replies may coincide, so this
    /// checks that chat runs with both; HalfKVCacheTests.testScoreFollowsTheKVCacheChoice shows the option applied
    /// through the same RuntimeOptions, on scores that differ.
    func testAutoKVCacheIsHalfForQuantizedWeights() throws {
        let turn = [ChatMessage(role: "user", content: "hi")]
        for (flags, half) in [([String](), true), (["--kv-cache", "f32"], false)] {
            let r = runCLI(["chat", "--model", Self.tiny, "--message", "hi", "--max-tokens", "12", "--decode-weights", "q4_0"] + flags)
            XCTAssertEqual(r.status, 0, r.stderr)
            let reply = try expectedReply(turn, maxTokens: 12) { model in
                try model.useDecodeWeights(.q4_0)
                try model.useHalfKVCache(half)
            }
            XCTAssertEqual(r.stdout, "> hi\n\(reply)\n", "\(flags)")
        }
    }

    func testStandardInputTurnsAndCommands() throws {
        let r = runCLI(["chat", "--model", Self.tiny, "--max-tokens", "4"], stdin: "hello\n/reset\n\nhello\n/exit\nnot read\n")
        XCTAssertEqual(r.status, 0, r.stderr)
        let reply = try expectedReply([ChatMessage(role: "user", content: "hello")], maxTokens: 4)
        XCTAssertEqual(r.stdout, "\(reply)\n\(reply)\n", "after /reset the same first turn gives the same reply")
        XCTAssertTrue(r.stderr.contains("conversation cleared"), r.stderr)
    }

    func testModelWithoutTokenizerOrTemplateFails() throws {
        let r = runCLI(["chat", "--model", fixture("hf_decoders/qwen2"), "--message", "hi"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("no tokenizer.json"), r.stderr)
        let dir = try makeTempDir(self)
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            try FileManager.default.copyItem(atPath: Self.tiny + "/" + f, toPath: dir + "/" + f)
        }
        let r2 = runCLI(["chat", "--model", dir, "--message", "hi"])
        XCTAssertEqual(r2.status, 1)
        XCTAssertTrue(r2.stderr.contains("chat template"), r2.stderr)
    }

    /// SmolLM2-135M-Instruct (skipped unless fetched by scripts/fetch-smollm2.sh) answers a factual question.
    func testSmolLM2Answers() throws {
        guard let path = LlamaParityTests.smolLM2Path() else { throw XCTSkip("SmolLM2 GGUF not fetched (scripts/fetch-smollm2.sh)") }
        let r = runCLI(["chat", "--model", path, "--message", "What is the capital of France?", "--max-tokens", "24"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Paris"), r.stdout)
    }
}
