import Foundation
import XCTest
@testable import EncoreTokenizers

/// Chat templates against jinja2 renderings of the real templates (Phi-3.5-mini, SmolLM2).
final class ChatTemplateTests: XCTestCase {
    func testTemplatesMatchJinjaRenderings() throws {
        let root = try Fixtures.json("chat-templates.json") as! [String: Any]
        let cases = root["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 12)
        let phi = try Tokenizer.load(path: Fixtures.path("phi-3.5-mini"))
        let smol = try Tokenizer.load(path: Fixtures.path("smollm2/smollm2-vocab.gguf"))
        XCTAssertEqual(try phi.chatTemplateKind(), .phi3)
        XCTAssertEqual(try smol.chatTemplateKind(), .chatML)
        for (i, c) in cases.enumerated() {
            let tok = (c["tokenizer"] as! String) == "smollm2" ? smol : phi
            let messages = (c["messages"] as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
            let got = try tok.applyChatTemplate(messages: messages, addGenerationPrompt: c["add_generation_prompt"] as! Bool)
            XCTAssertEqual(got, c["text"] as! String, "case \(i) (\(c["tokenizer"]!))")
        }
    }

    func testUnknownTemplateFailsClearly() throws {
        let json = #"{"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}"#
        let config = #"{"chat_template": "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"}"#
        let tok = try Tokenizer.fromJSON(Array(json.utf8), config: Array(config.utf8))
        XCTAssertThrowsError(try tok.applyChatTemplate(messages: [ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)) { e in
            let msg = "\(e)"
            XCTAssertTrue(msg.contains("unsupported chat template"), msg)
            XCTAssertTrue(msg.contains("[INST]"), msg)
        }
        let bare = try Tokenizer.fromJSON(Array(json.utf8))
        XCTAssertThrowsError(try bare.applyChatTemplate(messages: [], addGenerationPrompt: true)) { e in
            XCTAssertTrue("\(e)".contains("no chat template"), "\(e)")
        }
    }
}
