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

    /// Copies `tensors` into fresh variables that require gradients.
    init(tensors: [String: Tensor], family: String) {
        var v: [String: Variable] = [:]
        for (name, t) in tensors { v[name] = Variable(t.copy(), requiresGrad: true) }
        variables = v
        names = v.keys.sorted()
        self.family = family
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
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(config), to: folder + "/config.json")
        try SafeTensorsWriter.write(tensors, to: folder + "/model.safetensors", dtype: dtype, metadata: metadata)
    }
}
