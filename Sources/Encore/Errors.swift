import Foundation

/// An error from Encore that a user can act on: it names the file, tensor, field or byte offset at fault.
///
/// ```swift
/// do { _ = try SafeTensorsFile(path: "bad.safetensors") }
/// catch let error as EncoreError { print(error) }  // "bad.safetensors: header size 4096 is past the end of the file (100 bytes)"
/// ```
public struct EncoreError: Error, CustomStringConvertible, Equatable {
    /// What kind of problem this is, for code that wants to react to it.
    public enum Kind: String, Sendable {
        case invalidFile, invalidConfig, missingTensor, unexpectedTensor, shapeMismatch, unsupported, invalidArgument, io
    }
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

extension EncoreError: LocalizedError {
    public var errorDescription: String? { message }
}
