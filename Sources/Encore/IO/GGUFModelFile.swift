import Foundation
import EncoreKernels
import EncoreTokenizers

/// The ggml tensor types Encore reads from GGUF files (all dequantized to fp32 on load).
public enum GGMLType: UInt32, CaseIterable, Sendable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// Values per block (1 for the float types).
    public var blockValues: Int { ek_ggml_block_values(Int32(rawValue)) }
    /// Bytes per block.
    public var blockBytes: Int { ek_ggml_block_bytes(Int32(rawValue)) }
    /// The name ggml uses ("Q4_1", …).
    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        }
    }
}

/// One tensor of a GGUF file, validated.
public struct GGUFTensor: Sendable {
    public let name: String
    /// Shape in PyTorch order (outermost first): the reverse of ggml's `ne`.
    public let shape: [Int]
    public let type: GGMLType
    /// Absolute byte offset of the data in the file, and its length.
    public let fileOffset: Int
    public let byteCount: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped GGUF model file: metadata (through `EncoreTokenizers.GGUFFile`), the tensor table, and
/// tensors dequantized to fp32 on request.
///
/// ```swift
/// let file = try GGUFModelFile(path: "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
/// file.metadata["llama.block_count"]?.intValue        // 30
/// let emb = try file.tensor("token_embd.weight")       // [49152, 576] fp32, from Q8_0
/// ```
/// Checks: magic, version, every string and array length (in `GGUFFile`); `general.alignment`; dimension
/// counts, element-count overflow, known types, rows a whole number of blocks, offsets aligned, every data
/// range inside the file, no two ranges overlapping, no duplicate names. Errors name the tensor and byte offset.
public final class GGUFModelFile: @unchecked Sendable {
    public let path: String
    /// Header and metadata.
    public let gguf: GGUFFile
    /// Tensors by name, and their names in file order.
    public let tensors: [String: GGUFTensor]
    public let tensorNames: [String]
    /// Byte offset of the data section.
    public let dataOffset: Int
    private let file: MappedFile

    /// Metadata values by key.
    public var metadata: [String: GGUFValue] { gguf.metadata }

    /// The block format Encore's int8 prompt GEMM multiplies as stored (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 or a K-quant)
    /// that holds more than half the bytes of the file's matrices (the embedding table and the output head, which
    /// prompt passes read by rows or one position at a time, left out); nil when none does (an F32 file, or a mix with
    /// no majority).
    public var mainBlockFormat: WeightFormat? {
        var bytes: [WeightFormat: Int] = [:], total = 0
        for t in tensors.values where t.shape.count == 2 && t.name != "token_embd.weight" && t.name != "output.weight" {
            total += t.byteCount
            let f = WeightFormat.allCases.first { $0.hasInt8PromptGEMM && $0.ggmlType == t.type }   // int8 has no ggml type
            if let f { bytes[f, default: 0] += t.byteCount }
        }
        guard let best = bytes.max(by: { $0.value < $1.value }), 2 * best.value > total else { return nil }
        return best.key
    }

    /// Whether any matrix is stored in a quantized block type (Q8_0, Q4_x, Q5_x, Q4_K, Q5_K, Q6_K): what
    /// `keepQuantized` loading keeps in its blocks.
    public var hasQuantizedMatrices: Bool {
        tensors.values.contains { $0.shape.count == 2 && ![.f32, .f16, .bf16].contains($0.type) }
    }

    /// Whether `path` is a GGUF file (a regular file starting with the magic), not a folder.
    public static func isFile(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { return false }
        return GGUFFile.hasMagic(path: path)
    }

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        guard let base = file.bytes, file.size >= 4 else {
            throw EncoreError(.invalidFile, "\(path): file is \(file.size) bytes, too short for a GGUF header")
        }
        let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: file.size, deallocator: .none)
        let infos: [GGUFTensorInfo]
        do {
            gguf = try GGUFFile(data: data, source: path)
            (infos, dataOffset) = try gguf.tensorInfos(data: data, source: path)
        } catch let e as TokenizerError {
            throw EncoreError(.invalidFile, e.message)
        }
        guard dataOffset <= file.size else {
            throw EncoreError(.invalidFile, "\(path): the data section would start at byte \(dataOffset), past the end of the file (\(file.size) bytes): truncated file?")
        }
        let alignment = gguf["general.alignment"]?.intValue ?? 32
        var byName: [String: GGUFTensor] = [:]
        var names: [String] = []
        for info in infos {
            let at = "\(path): tensor '\(info.name)' (info at byte \(info.infoOffset))"
            guard let type = GGMLType(rawValue: info.type) else {
                throw EncoreError(.unsupported, "\(at) has ggml type \(info.type), which Encore cannot read (supported: \(GGMLType.allCases.map(\.name).joined(separator: ", ")))")
            }
            var count = 1
            for d in info.dims {
                let (c, overflow) = count.multipliedReportingOverflow(by: Int(min(d, UInt64(Int32.max) + 1)))
                guard d <= UInt64(Int32.max), !overflow, c <= 1 << 40 else {
                    throw EncoreError(.invalidFile, "\(at) has dimensions \(info.dims), too large")
                }
                count = c
            }
            guard info.dims[0] % UInt64(type.blockValues) == 0 else {
                throw EncoreError(.invalidFile, "\(at): row length \(info.dims[0]) is not a multiple of the \(type.name) block (\(type.blockValues) values)")
            }
            let bytes = count / type.blockValues * type.blockBytes
            guard info.offset % UInt64(alignment) == 0 else {
                throw EncoreError(.invalidFile, "\(at): data offset \(info.offset) is not a multiple of the alignment \(alignment)")
            }
            guard info.offset <= UInt64(file.size - dataOffset), bytes <= file.size - dataOffset - Int(info.offset) else {
                throw EncoreError(.invalidFile, "\(at): data at bytes \(UInt64(dataOffset) &+ info.offset)..<\(UInt64(dataOffset) &+ info.offset &+ UInt64(bytes)) runs past the end of the file (\(file.size) bytes): truncated file?")
            }
            guard byName[info.name] == nil else {
                throw EncoreError(.invalidFile, "\(at): duplicate tensor name")
            }
            byName[info.name] = GGUFTensor(name: info.name, shape: info.dims.reversed().map { Int($0) }, type: type,
                                           fileOffset: dataOffset + Int(info.offset), byteCount: bytes)
            names.append(info.name)
        }
        let sorted = byName.values.sorted { $0.fileOffset < $1.fileOffset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.fileOffset + a.byteCount > b.fileOffset {
            throw EncoreError(.invalidFile, "\(path): tensors '\(a.name)' (bytes \(a.fileOffset)..<\(a.fileOffset + a.byteCount)) and '\(b.name)' (from byte \(b.fileOffset)) overlap")
        }
        tensors = byName
        tensorNames = names
    }

    /// The metadata value for `key`.
    public subscript(key: String) -> GGUFValue? { gguf[key] }

    /// A required integer metadata value (error names the key).
    public func int(_ key: String) throws -> Int {
        guard let v = gguf[key] else { throw EncoreError(.invalidConfig, "\(path): missing metadata key '\(key)'") }
        guard let i = v.intValue else { throw EncoreError(.invalidConfig, "\(path): metadata '\(key)' is \(v), expected an integer") }
        return i
    }

    /// A required floating-point metadata value (error names the key).
    public func double(_ key: String) throws -> Double {
        guard let v = gguf[key] else { throw EncoreError(.invalidConfig, "\(path): missing metadata key '\(key)'") }
        guard let d = v.doubleValue else { throw EncoreError(.invalidConfig, "\(path): metadata '\(key)' is \(v), expected a number") }
        return d
    }

    /// A required string metadata value (error names the key).
    public func string(_ key: String) throws -> String {
        guard let v = gguf[key] else { throw EncoreError(.invalidConfig, "\(path): missing metadata key '\(key)'") }
        guard let s = v.stringValue else { throw EncoreError(.invalidConfig, "\(path): metadata '\(key)' is \(v), expected a string") }
        return s
    }

    /// The tensor `name` dequantized to a new fp32 tensor of its (PyTorch-order) shape.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw EncoreError(.missingTensor, "\(path): missing tensor '\(name)'") }
        let t = Tensor(uninitialized: info.shape)
        let rc = ek_dequantize(Int32(info.type.rawValue), file.bytes! + info.fileOffset, t.data, info.elementCount)
        precondition(rc == 0, "dequantize: validated type \(info.type) rejected")
        return t
    }

    /// The raw bytes of tensor `name` (for tests and tools).
    /// Drops tensor `name`'s mapped pages from RSS once it has been copied out (see MappedFile.releasePages).
    func releasePages(_ name: String) {
        if let raw = try? rawBytes(name) { file.releasePages(raw) }
    }

    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let info = tensors[name] else { throw EncoreError(.missingTensor, "\(path): missing tensor '\(name)'") }
        return UnsafeRawBufferPointer(start: file.bytes! + info.fileOffset, count: info.byteCount)
    }
}
