import ArgumentParser
import EncoreTokenizers
import Foundation

/// Reads all of standard input as bytes.
private func readStandardInput() -> [UInt8] {
    [UInt8](FileHandle.standardInput.readDataToEndOfFile())
}

/// `encore tokenize --tokenizer PATH [--no-special] --json`: text on standard input → ids.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text from standard input into token ids.",
        discussion: """
            PATH is a tokenizer.json, a model folder holding tokenizer.json, or a .gguf file.
            The text is encoded exactly as read (a trailing newline is part of it unless
            --trim-newline is given). Special tokens written in the text are recognised.
            """)

    @Option(name: .long, help: "tokenizer.json, a model folder, or a .gguf file.")
    var tokenizer: String

    @Flag(name: .customLong("no-special"), help: "Do not add the post-processor's special tokens (BOS/EOS).")
    var noSpecial = false

    @Flag(name: .long, help: "Print the ids as a JSON array (the default prints them separated by spaces).")
    var json = false

    @Flag(name: .customLong("trim-newline"), help: "Drop one trailing newline from the input.")
    var trimNewline = false

    func run() throws {
        let tok = try Tokenizer.load(path: tokenizer)
        var bytes = readStandardInput()
        if trimNewline, bytes.last == 0x0A {
            bytes.removeLast()
            if bytes.last == 0x0D { bytes.removeLast() }
        }
        guard let text = strictUTF8String(bytes) else {
            var valid = 0
            // Find the first invalid byte for the message.
            var it = bytes.makeIterator()
            var decoder = UTF8()
            loop: while true {
                switch decoder.decode(&it) {
                case .scalarValue(let s): valid += UTF8.width(s)
                case .emptyInput: break loop
                case .error: break loop
                }
            }
            throw ValidationError("standard input is not valid UTF-8 (first bad byte at offset \(valid))")
        }
        let ids = tok.encode(text, addSpecialTokens: !noSpecial)
        if json {
            print("[" + ids.map(String.init).joined(separator: ",") + "]")
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}

/// `encore detokenize --tokenizer PATH [--skip-special]`: a JSON array of ids on standard input → text.
struct DetokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detokenize",
        abstract: "Decode a JSON array of token ids from standard input into text.")

    @Option(name: .long, help: "tokenizer.json, a model folder, or a .gguf file.")
    var tokenizer: String

    @Flag(name: .customLong("skip-special"), help: "Leave special tokens out of the text.")
    var skipSpecial = false

    func run() throws {
        let tok = try Tokenizer.load(path: tokenizer)
        let ids = try Tokenizer.parseTokenIds(json: readStandardInput())
        let text = try tok.decodeChecked(ids, skipSpecialTokens: skipSpecial)
        FileHandle.standardOutput.write(Data(text.utf8))
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
