import Foundation

/// The chat template families this module can apply without a Jinja engine.
public enum ChatTemplateKind: String, Sendable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen).
    case chatML
    /// `<|role|>\ncontent<|end|>\n` (Phi-3, Phi-3.5).
    case phi3
}

extension Tokenizer {
    /// Recognises the chat template carried by the tokenizer, or throws naming what is missing.
    public func chatTemplateKind() throws -> ChatTemplateKind {
        guard let source = chatTemplateSource else {
            throw TokenizerError(.template, "this tokenizer carries no chat template (tokenizer_config.json 'chat_template' or GGUF 'tokenizer.chat_template')")
        }
        if source.contains("<|im_start|>") && source.contains("<|im_end|>") { return .chatML }
        if source.contains("<|end|>") && (source.contains("<|user|>") || source.contains("'<|' + message['role'] + '|>'")) {
            return .phi3
        }
        let head = source.prefix(120).replacingOccurrences(of: "\n", with: "\\n")
        throw TokenizerError(.template, "unsupported chat template (supported: ChatML with <|im_start|>/<|im_end|>, Phi-3 with <|role|>...<|end|>); template starts with: \(head)")
    }

    /// Renders messages with the tokenizer's chat template (ChatML or Phi-3).
    ///
    /// ChatML inserts the default system prompt only when the template itself names one
    /// (SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
    public func applyChatTemplate(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        switch try chatTemplateKind() {
        case .chatML:
            var out = ""
            if messages.first?.role != "system", let sys = defaultChatMLSystemPrompt() {
                out += "<|im_start|>system\n\(sys)<|im_end|>\n"
            }
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
            return out
        case .phi3:
            var out = ""
            // As the Phi-3.5 template: other roles and empty system messages are left out.
            for m in messages {
                switch m.role {
                case "system" where !m.content.isEmpty, "user", "assistant":
                    out += "<|\(m.role)|>\n\(m.content)<|end|>\n"
                default:
                    continue
                }
            }
            if addGenerationPrompt { out += "<|assistant|>\n" } else if chatTemplateSource?.contains("eos_token") == true {
                // Phi-3.5's template appends the EOS token when no generation prompt is requested.
                if let eos = eosTokenId, let t = idToToken(eos) { out += t }
            }
            return out
        }
    }

    private func defaultChatMLSystemPrompt() -> String? {
        guard let source = chatTemplateSource else { return nil }
        // Templates like SmolLM2's: "{{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}" when no system message.
        guard let r = source.range(of: "<|im_start|>system\\n") ?? source.range(of: "<|im_start|>system\n") else { return nil }
        let rest = source[r.upperBound...]
        guard let end = rest.range(of: "<|im_end|>") else { return nil }
        let text = String(rest[..<end.lowerBound])
        if text.contains("{{") || text.contains("{%") || text.contains("message") { return nil }
        return text
    }
}
