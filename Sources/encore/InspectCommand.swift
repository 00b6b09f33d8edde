import ArgumentParser
import Encore
import EncoreTokenizers
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a checkpoint's tensors, dtypes, shapes, parameter count and config.",
        discussion: "PATH is a model folder (config.json + model.safetensors), a .safetensors file or a .gguf file."
    )

    @Argument(help: "Model folder, .safetensors file or .gguf file.")
    var path: String

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(name: .customLong("no-check"), help: "Only read the files; do not build the model to check names and shapes.")
    var noCheck = false

    func run() throws {
        try runReportingErrors {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw EncoreError(.io, "\(path): no such file or folder")
            }
            if !isDir.boolValue && GGUFFile.hasMagic(path: path) { return try inspectGGUF() }
            let weights = isDir.boolValue ? path + "/model.safetensors" : path
            let file = try SafeTensorsFile(path: weights)
            var config: [String: Any]? = nil
            if isDir.boolValue, let data = FileManager.default.contents(atPath: path + "/config.json") {
                config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
                if config == nil { throw EncoreError(.invalidConfig, "\(path)/config.json: not a JSON object") }
            }
            var modelCheck = "not checked"
            var modelParams: Int? = nil
            if isDir.boolValue && !noCheck {
                let lm = try ModelRegistry.load(folder: path)
                modelCheck = "ok: every tensor present with the expected shape, none unexpected (\(lm.modelType))"
                modelParams = lm.parameterCount
            }
            let names = file.names
            let total = names.reduce(0) { $0 + file.tensors[$1]!.elementCount }
            var dtypes: [String: Int] = [:]
            for n in names { dtypes[file.tensors[n]!.dtype.rawValue, default: 0] += 1 }
            let size = (try? FileManager.default.attributesOfItem(atPath: weights)[.size] as? Int) ?? 0
            if json {
                var o: [String: Any] = [
                    "file": weights, "bytes": size, "tensor_count": names.count, "elements": total,
                    "tensors": names.map { n -> [String: Any] in
                        let t = file.tensors[n]!
                        return ["name": n, "dtype": t.dtype.rawValue, "shape": t.shape]
                    },
                    "metadata": file.metadata,
                ]
                if let config { o["config"] = config }
                if let modelParams { o["parameters"] = modelParams }
                print(jsonString(o))
                return
            }
            print("file:       \(weights) (\(formatBytes(size)))")
            print("tensors:    \(names.count) (\(dtypes.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")))")
            print("elements:   \(total) (\(String(format: "%.2f", Double(total) / 1e6))M)")
            if let modelParams { print("parameters: \(modelParams) (\(String(format: "%.2f", Double(modelParams) / 1e6))M, tied head counted once)") }
            print("check:      \(modelCheck)")
            if isDir.boolValue, let data = FileManager.default.contents(atPath: path + "/config.json"),
               let typed = try? JSONDecoder().decode([String: JSONValue].self, from: data) {
                print("config:")
                for (k, v) in typed.sorted(by: { $0.key < $1.key }) { print("  \(k): \(v)") }
            }
            print("")
            let width = min(64, names.map(\.count).max() ?? 10)
            for n in names {
                let t = file.tensors[n]!
                print(n.padding(toLength: max(width, n.count), withPad: " ", startingAt: 0) + "  " + t.dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0) + "  " + "\(t.shape)")
            }
        }
    }
}

extension InspectCommand {
    /// A GGUF file: its scalar metadata (arrays summarised), tensors with ggml types, and the model check.
    func inspectGGUF() throws {
        let file = try GGUFModelFile(path: path)
        var check = "not checked", params: Int? = nil
        if !noCheck {
            let lm = try ModelRegistry.load(folder: path)
            check = "ok: every tensor present with the expected shape, none unexpected (\(lm.modelType))"
            params = lm.parameterCount
        }
        func show(_ v: GGUFValue) -> String {
            if let a = v.arrayValue { return "[\(a.count) values]" }
            if let s = v.stringValue { return s.count > 80 ? String(s.prefix(77)) + "..." : s }
            if let b = v.boolValue { return b ? "true" : "false" }
            if let i = v.intValue { return String(i) }
            return v.doubleValue.map { String($0) } ?? "?"
        }
        let names = file.tensorNames
        let total = names.reduce(0) { $0 + file.tensors[$1]!.elementCount }
        if json {
            var o: [String: Any] = [
                "file": path, "bytes": (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0, "tensor_count": names.count, "elements": total,
                "tensors": names.map { n -> [String: Any] in
                    let t = file.tensors[n]!
                    return ["name": n, "dtype": t.type.name, "shape": t.shape]
                },
                "metadata": Dictionary(uniqueKeysWithValues: file.gguf.keys.map { ($0, show(file.gguf[$0]!)) }),
            ]
            if let params { o["parameters"] = params }
            print(jsonString(o))
            return
        }
        var types: [String: Int] = [:]
        for n in names { types[file.tensors[n]!.type.name, default: 0] += 1 }
        print("file:       \(path) (GGUF v\(file.gguf.version))")
        print("tensors:    \(names.count) (\(types.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")))")
        print("elements:   \(total) (\(String(format: "%.2f", Double(total) / 1e6))M)")
        if let params { print("parameters: \(params) (\(String(format: "%.2f", Double(params) / 1e6))M, tied head counted once)") }
        print("check:      \(check)")
        print("metadata:")
        for k in file.gguf.keys { print("  \(k): \(show(file.gguf[k]!))") }
        print("")
        let width = min(64, names.map(\.count).max() ?? 10)
        for n in names {
            let t = file.tensors[n]!
            print(n.padding(toLength: max(width, n.count), withPad: " ", startingAt: 0) + "  " + t.type.name.padding(toLength: 5, withPad: " ", startingAt: 0) + "  " + "\(t.shape)")
        }
    }
}

func formatBytes(_ n: Int) -> String {
    if n >= 1 << 30 { return String(format: "%.2f GiB", Double(n) / Double(1 << 30)) }
    if n >= 1 << 20 { return String(format: "%.1f MiB", Double(n) / Double(1 << 20)) }
    if n >= 1 << 10 { return String(format: "%.1f KiB", Double(n) / 1024) }
    return "\(n) B"
}

/// Any JSON value, decoded without losing the difference between true and 1.
enum JSONValue: Decodable, CustomStringConvertible {
    case bool(Bool), int(Int), double(Double), string(String), null, array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    var description: String {
        switch self {
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .string(let s): return s
        case .null: return "null"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        }
    }
}
