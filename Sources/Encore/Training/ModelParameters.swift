import Foundation

/// A model's weights as trainable ``Variable``s, by reference tensor name: the part every trainable family
/// shares (lookup, ordering, gradients, saving). ``MuParameters`` and ``MuDecoderParameters`` add their
/// differentiable forward.
public class ModelParameters {
    /// Every parameter by reference name.
    public let variables: [String: Variable]
    /// Names in a fixed (sorted) order, for optimizers and checkpoints.
    public let names: [String]
    private let family: String
    private let configJSON: () throws -> Data

    /// Copies `tensors` into fresh variables that require gradients; `config` is written beside the weights.
    init<C: Encodable>(tensors: [String: Tensor], family: String, config: C) {
        var v: [String: Variable] = [:]
        for (name, t) in tensors { v[name] = Variable(t.copy(), requiresGrad: true) }
        variables = v
        names = v.keys.sorted()
        self.family = family
        configJSON = { try ModelFolder.encodeConfig(config) }
    }

    /// The model's `config.json` (pretty-printed, sorted keys).
    public func encodedConfig() throws -> Data { try configJSON() }

    /// Writes `folder/config.json` and `folder/model.safetensors` (F32, reference names, tied head omitted),
    /// loadable by ``ModelRegistry/load(folder:)`` and `encore generate`.
    public func save(folder: String) throws {
        try ModelFolder.write(configJSON: try configJSON(), tensors: tensors(copy: false), to: folder,
                              metadata: ["format": "pt", "writer": "encore train"])
    }

    public subscript(_ name: String) -> Variable {
        guard let v = variables[name] else { preconditionFailure("no \(family) parameter named '\(name)'") }
        return v
    }

    /// The parameters in ``names`` order.
    public var all: [Variable] { names.map { variables[$0]! } }

    /// Clears every gradient.
    public func zeroGrad() { for v in variables.values { v.zeroGrad() } }

    /// The current values by name (shared, not copied unless `copy`).
    func tensors(copy: Bool) -> [String: Tensor] { variables.mapValues { copy ? $0.value.copy() : $0.value } }

    func linear(_ x: Variable, _ prefix: String) -> Variable {
        Variable.linear(x, self[prefix + ".weight"], variables[prefix + ".bias"])
    }
}

/// Writes a model folder — `config.json` and `model.safetensors` — each file atomically.
enum ModelFolder {
    static func write<C: Encodable>(config: C, tensors: [String: Tensor], to folder: String,
                                    dtype: SafeTensorsDType = .F32, metadata: [String: String]) throws {
        try write(configJSON: try encodeConfig(config), tensors: tensors, to: folder, dtype: dtype, metadata: metadata)
    }

    static func write(configJSON: Data, tensors: [String: Tensor], to folder: String, dtype: SafeTensorsDType = .F32,
                      metadata: [String: String]) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try AtomicFile.write(configJSON, to: folder + "/config.json")
        try SafeTensorsWriter.write(tensors, to: folder + "/model.safetensors", dtype: dtype, metadata: metadata)
    }

    static func encodeConfig<C: Encodable>(_ config: C) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(config)
    }
}
