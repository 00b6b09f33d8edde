import Encore
import Foundation

/// Text ↔ ids for the CLI, from the model folder's tokenizer.
struct TextCodec {
    static func load(folder: String, required: Bool) throws -> TextCodec? {
        guard required else { return nil }
        throw EncoreError(.unsupported, "\(folder): text input needs a tokenizer; this build reads token ids only (use --input-ids)")
    }

    func encode(_ text: String, model: LanguageModel) -> [Int] { [] }
    func decode(_ ids: [Int]) -> String { "" }
}
