import Encore
import EncoreTokenizers
import Foundation

/// Text ↔ ids for the CLI, from the tokenizer in the model folder (tokenizer.json, optionally with
/// tokenizer_config.json, or a vocabulary-only tokenizer.gguf).
struct TextCodec {
    let tokenizer: Tokenizer

    /// The folder's tokenizer (or the vocabulary inside a `.gguf` model file); nil when it has none and text
    /// is not needed.
    static func load(folder: String, required: Bool) throws -> TextCodec? {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), !isDir.boolValue, GGUFFile.hasMagic(path: folder) {
            // a GGUF without a vocabulary (e.g. `encore quantize` from a Hugging Face folder: tokenizer.ggml.model "none")
            if let meta = try? GGUFFile(path: folder), meta["tokenizer.ggml.tokens"] == nil,
               ["none", "no_vocab"].contains(meta["tokenizer.ggml.model"]?.stringValue ?? "none") {
                if required {
                    throw EncoreError(.invalidArgument, "\(folder): this GGUF has no vocabulary (tokenizer.ggml.model '\(meta["tokenizer.ggml.model"]?.stringValue ?? "none")'), so --prompt cannot be encoded; give token ids with --input-ids")
                }
                return nil
            }
            do {
                return TextCodec(tokenizer: try Tokenizer.load(path: folder))
            } catch let e as TokenizerError {
                throw EncoreError(.invalidFile, e.description)
            }
        }
        let path = folder + "/tokenizer.json"
        if !FileManager.default.fileExists(atPath: path), FileManager.default.fileExists(atPath: folder + "/tokenizer.gguf") {
            do {
                return TextCodec(tokenizer: try Tokenizer.load(path: folder + "/tokenizer.gguf"))   // a vocabulary-only GGUF (encore init)
            } catch let e as TokenizerError {
                throw EncoreError(.invalidFile, e.description)
            }
        }
        guard FileManager.default.fileExists(atPath: path) else {
            if required {
                throw EncoreError(.invalidArgument, "\(folder): no tokenizer.json, so --prompt cannot be encoded; give token ids with --input-ids")
            }
            return nil
        }
        do {
            return TextCodec(tokenizer: try Tokenizer.load(path: folder))
        } catch let e as TokenizerError {
            throw EncoreError(.invalidFile, e.description)
        }
    }

    /// Encodes a prompt: special tokens as the tokenizer's post-processor adds them (Phi-3.5 adds none).
    func encode(_ text: String, model: LanguageModel) -> [Int] {
        tokenizer.encode(text, addSpecialTokens: true)
    }

    func decode(_ ids: [Int]) -> String { tokenizer.decode(ids, skipSpecialTokens: true) }

    func streamingDecoder() -> StreamingDecoder { StreamingDecoder(tokenizer: tokenizer, skipSpecialTokens: true) }
}
