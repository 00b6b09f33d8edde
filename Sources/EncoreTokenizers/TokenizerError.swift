import Foundation

/// An error raised while loading or running a tokenizer.
///
/// Every message names what went wrong and where: the file, the JSON field path
/// (for example `model.merges[12]`) or the byte offset in a GGUF file.
///
/// ```swift
/// do { _ = try Tokenizer.load(path: "missing.json") }
/// catch let error as TokenizerError { print(error) }  // "cannot read file missing.json: ..."
/// ```
public struct TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The broad category of the failure.
    public enum Kind: String, Sendable {
        /// A file could not be read or found.
        case io
        /// The JSON text is not valid JSON.
        case json
        /// The JSON or GGUF is well formed, but a field is missing or has the wrong type or value.
        case config
        /// A component type, model type or template that this module does not implement.
        case unsupported
        /// A GGUF file is malformed (bad magic, truncated data, lengths past the end).
        case gguf
        /// A token id given to `decode` is out of range.
        case decode
        /// A chat template could not be applied.
        case template
        /// Input text or ids are invalid (for example invalid UTF-8).
        case input
    }

    /// The category of the failure.
    public let kind: Kind
    /// A human-readable message naming the file, field or offset involved.
    public let message: String

    /// Creates an error of the given kind with a message.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The message, so `print(error)` and ArgumentParser show it as is.
    public var description: String { message }
}
