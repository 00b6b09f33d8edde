import Foundation
import EncoreKernels

/// Element types that can appear in a safetensors header.
public enum SafeTensorsDType: String, CaseIterable, Sendable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, U64, U32, U16, BOOL, F8_E4M3, F8_E5M2

    public var byteSize: Int {
        switch self {
        case .F64, .I64, .U64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2: return 1
        }
    }

    /// Types Encore can turn into fp32 tensors.
    public var isReadable: Bool { self == .F32 || self == .F16 || self == .BF16 }
}

/// One tensor entry of a safetensors header.
public struct SafeTensorInfo: Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Byte range relative to the start of the data section.
    public let begin: Int
    public let end: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped `.safetensors` file with a fully validated header.
///
/// ```swift
/// let file = try SafeTensorsFile(path: "model.safetensors")
/// let wte = try file.tensor("transformer.wte.weight")   // fp32; F32 data is used in place, BF16/F16 widened
/// ```
/// Checks: header length sane and inside the file, JSON well formed, known dtypes, shapes non-negative,
/// byte length = dtype size × element count, every range inside the data section, no two ranges overlapping.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: SafeTensorInfo]
    public let metadata: [String: String]
    private let file: MappedFile
    private let dataStart: Int

    func rawPointer(_ info: SafeTensorInfo) -> UnsafeRawPointer { file.bytes! + dataStart + info.begin }

    /// Drops tensor `name`'s mapped pages from RSS once it has been copied out (see MappedFile.releasePages).
    func releasePages(_ name: String) {
        if let info = tensors[name] { file.releasePages(UnsafeRawBufferPointer(start: rawPointer(info), count: info.end - info.begin)) }
    }

    /// The largest header accepted (100 MB, as the reference implementation).
    public static let maxHeaderSize = 100_000_000

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        guard file.size >= 8 else {
            throw EncoreError(.invalidFile, "\(path): file is \(file.size) bytes, too short for a safetensors header (8-byte length first)")
        }
        let headerLen = file.loadUInt64LE(at: 0)
        guard headerLen <= UInt64(Self.maxHeaderSize) else {
            throw EncoreError(.invalidFile, "\(path): header length \(headerLen) is larger than the \(Self.maxHeaderSize)-byte limit (not a safetensors file?)")
        }
        guard Int(headerLen) <= file.size - 8 else {
            throw EncoreError(.invalidFile, "\(path): header length \(headerLen) runs past the end of the file (\(file.size) bytes): truncated file?")
        }
        let n = Int(headerLen)
        dataStart = 8 + n
        let headerData = Data(bytes: file.bytes! + 8, count: n)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData, options: [])
        } catch {
            throw EncoreError(.invalidFile, "\(path): header (bytes 8..<\(8 + n)) is not valid JSON")
        }
        guard let dict = json as? [String: Any] else {
            throw EncoreError(.invalidFile, "\(path): header JSON must be an object of tensor entries")
        }
        var infos: [String: SafeTensorInfo] = [:]
        var meta: [String: String] = [:]
        let dataSize = file.size - dataStart
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw EncoreError(.invalidFile, "\(path): __metadata__ must be an object of strings")
                }
                for (k, v) in m {
                    guard let s = v as? String else { throw EncoreError(.invalidFile, "\(path): __metadata__[\"\(k)\"] must be a string") }
                    meta[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any] else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': entry must be an object with dtype, shape, data_offsets")
            }
            guard let dtypeName = entry["dtype"] as? String else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': missing or non-string 'dtype'")
            }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': unknown dtype '\(dtypeName)'")
            }
            guard let shapeAny = entry["shape"] as? [Any], let shape = Self.integers(shapeAny), shape.allSatisfy({ $0 >= 0 }) else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': 'shape' must be an array of non-negative integers")
            }
            guard let offAny = entry["data_offsets"] as? [Any], let offs = Self.integers(offAny), offs.count == 2 else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': 'data_offsets' must be [begin, end] integers")
            }
            var elements = 1
            for d in shape {
                let (r, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw EncoreError(.invalidFile, "\(path): tensor '\(name)': shape \(shape) overflows") }
                elements = r
            }
            let (bytes, o2) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            let (begin, end) = (offs[0], offs[1])
            guard !o2, begin >= 0, end >= begin else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': invalid data_offsets [\(begin), \(end)]")
            }
            guard end - begin == bytes else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': \(dtypeName) \(shape) needs \(bytes) bytes but data_offsets [\(begin), \(end)] hold \(end - begin)")
            }
            guard end <= dataSize else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': data_offsets [\(begin), \(end)] run past the end of the data section (\(dataSize) bytes; absolute byte \(dataStart + end) > file size \(file.size))")
            }
            infos[name] = SafeTensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
        }
        let sorted = infos.values.filter { $0.end > $0.begin }.sorted { $0.begin < $1.begin }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.begin < a.end {
            throw EncoreError(.invalidFile, "\(path): tensors '\(a.name)' [\(a.begin), \(a.end)) and '\(b.name)' [\(b.begin), \(b.end)) overlap")
        }
        tensors = infos
        metadata = meta
    }

    private static func integers(_ a: [Any]) -> [Int]? {
        var out: [Int] = []
        for x in a {
            guard let n = x as? NSNumber else { return nil }
            let d = n.doubleValue
            guard d == d.rounded(), abs(d) < 9.0e15 else { return nil }
            out.append(Int(d))
        }
        return out
    }

    /// Tensor names in file order.
    public var names: [String] { tensors.values.sorted { $0.begin < $1.begin }.map(\.name) }

    /// The tensor as fp32. F32 data that is suitably aligned is used in place (memory-mapped, no copy);
    /// BF16 and F16 are widened into new memory; other dtypes are rejected.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else {
            throw EncoreError(.missingTensor, "\(path): no tensor named '\(name)'")
        }
        guard info.dtype.isReadable else {
            throw EncoreError(.unsupported, "\(path): tensor '\(name)' has dtype \(info.dtype.rawValue); Encore reads F32, F16 and BF16")
        }
        let count = info.elementCount
        let src = file.bytes.map { $0 + dataStart + info.begin }
        switch info.dtype {
        case .F32:
            if let src, Int(bitPattern: src) % MemoryLayout<Float>.alignment == 0 {
                let p = UnsafeMutablePointer(mutating: src.assumingMemoryBound(to: Float.self))
                return Tensor(shape: info.shape, storage: TensorStorage(borrowing: p, count: count, owner: file))
            }
            let t = Tensor(zeros: info.shape)
            if let src, count > 0 { UnsafeMutableRawPointer(t.data).copyMemory(from: src, byteCount: count * 4) }
            return t
        case .BF16, .F16:
            let t = Tensor(zeros: info.shape)
            guard let src, count > 0 else { return t }
            var tmp = [UInt16](repeating: 0, count: count)
            tmp.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: src, byteCount: count * 2) }
            if info.dtype == .BF16 { ek_bf16_to_f32(tmp, t.data, count) } else { ek_f16_to_f32(tmp, t.data, count) }
            return t
        default:
            fatalError("unreachable")
        }
    }
}

/// Quantized matrices in Encore's safetensors checkpoints (`encore quantize`).
///
/// A matrix `<name>` of logical shape [rows, columns] stored in a decode format is the tensor `<name>` holding
/// its rows as written by the kernels (`U8 [rows, rowBytes]`: ggml blocks for q8_0/q4_0/q4_1, `U16` for bf16,
/// `I8 [rows, ceil(columns/32)*32]` for int8 with `<name>_scale` `F32 [rows]`), described by two metadata
/// entries: `encore.format.<name>` (`q8_0`, …) and `encore.columns.<name>` (the logical column count).
public struct QuantizedEntry {
    public let format: WeightFormat
    public let rows: Int, columns: Int
    let data: UnsafeRawPointer
    let scales: UnsafePointer<Float>?
}

extension SafeTensorsFile {
    static func formatKey(_ name: String) -> String { "encore.format." + name }
    static func columnsKey(_ name: String) -> String { "encore.columns." + name }

    /// The quantized matrix `name`, nil when the file stores it as a plain tensor. Errors name the tensor.
    public func quantizedEntry(_ name: String) throws -> QuantizedEntry? {
        guard let fmtName = metadata[Self.formatKey(name)] else { return nil }
        guard let info = tensors[name] else { throw EncoreError(.missingTensor, "\(path): metadata describes '\(name)' but the tensor is missing") }
        let format: WeightFormat
        do { format = try WeightFormat(parsing: fmtName) } catch {
            throw EncoreError(.invalidFile, "\(path): tensor '\(name)': unknown format '\(fmtName)' in metadata")
        }
        guard format != .f32, let cols = metadata[Self.columnsKey(name)].flatMap({ Int($0) }), cols > 0 else {
            throw EncoreError(.invalidFile, "\(path): tensor '\(name)': metadata '\(Self.columnsKey(name))' must be a positive integer")
        }
        let dtype: SafeTensorsDType = format == .int8 ? .I8 : format == .bf16 ? .U16 : .U8
        let rb = format.rowBytes(cols)
        guard info.dtype == dtype, info.shape.count == 2, info.shape[1] * dtype.byteSize == rb else {
            throw EncoreError(.invalidFile, "\(path): tensor '\(name)': \(format.rawValue) rows of \(cols) values need \(dtype.rawValue) [rows, \(rb / dtype.byteSize)], found \(info.dtype.rawValue) \(info.shape)")
        }
        let rows = info.shape[0]
        var scales: UnsafePointer<Float>? = nil
        if format == .int8 {
            let sn = name + "_scale"
            guard let si = tensors[sn], si.dtype == .F32, si.shape == [rows] else {
                throw EncoreError(.invalidFile, "\(path): tensor '\(name)': int8 needs '\(sn)' F32 [\(rows)]")
            }
            let p = rawPointer(si)
            guard Int(bitPattern: p) % 4 == 0 else { throw EncoreError(.invalidFile, "\(path): tensor '\(sn)' is not 4-byte aligned") }
            scales = p.assumingMemoryBound(to: Float.self)
        }
        return QuantizedEntry(format: format, rows: rows, columns: cols, data: rawPointer(info), scales: scales)
    }
}

/// Writes `.safetensors` files atomically (temp file, fsync, rename).
///
/// ```swift
/// try SafeTensorsWriter.write(["w": tensor], to: "out.safetensors", dtype: .BF16)
/// ```
public enum SafeTensorsWriter {
    /// Writes the tensors (sorted by name) in `dtype` (F32, F16 or BF16), with optional string metadata.
    public static func write(_ tensors: [String: Tensor], to path: String, dtype: SafeTensorsDType = .F32,
                             metadata: [String: String] = [:]) throws {
        guard dtype.isReadable else { throw EncoreError(.unsupported, "cannot write dtype \(dtype.rawValue); use F32, F16 or BF16") }
        let names = tensors.keys.sorted()
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for name in names {
            let t = tensors[name]!
            let bytes = t.count * dtype.byteSize
            header[name] = ["dtype": dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }  // pad with spaces so data starts 8-aligned
        try AtomicFile.write(to: path) { fd in
            var len = UInt64(json.count).littleEndian
            try AtomicFile.writeAll(fd, &len, 8, path: path)
            try json.withUnsafeBytes { try AtomicFile.writeAll(fd, $0.baseAddress, $0.count, path: path) }
            for name in names {
                let t = tensors[name]!
                switch dtype {
                case .F32:
                    try AtomicFile.writeAll(fd, t.data, t.count * 4, path: path)
                case .BF16, .F16:
                    var tmp = [UInt16](repeating: 0, count: t.count)
                    if dtype == .BF16 { ek_f32_to_bf16(t.data, &tmp, t.count) } else { ek_f32_to_f16(t.data, &tmp, t.count) }
                    try tmp.withUnsafeBytes { try AtomicFile.writeAll(fd, $0.baseAddress, $0.count, path: path) }
                default:
                    break
                }
            }
        }
    }
}

extension SafeTensorsWriter {
    /// Writes a checkpoint whose matrices in `quantized` are stored in their decode format (see
    /// ``QuantizedEntry`` for the naming) and every other tensor as F32, atomically.
    static func write(tensors: [String: Tensor], quantized: [String: QuantizedMatrix], to path: String,
                      metadata: [String: String] = [:]) throws {
        enum Blob { case f32(Tensor), raw(UnsafeRawBufferPointer, SafeTensorsDType, [Int]) }
        var blobs: [String: Blob] = [:]
        var meta: [String: String] = [:]
        for (name, t) in tensors where quantized[name] == nil { blobs[name] = .f32(t) }
        var plain: [QuantizedMatrix] = []        // ggml-order copies of regrouped matrices, alive until written
        defer { withExtendedLifetime(plain) {} }
        for (name, q0) in quantized {
            let q = q0.inGGMLOrder()
            plain.append(q)
            let dtype: SafeTensorsDType = q.format == .int8 ? .I8 : q.format == .bf16 ? .U16 : .U8
            blobs[name] = .raw(q.rawBytes, dtype, [q.rows, q.format.rowBytes(q.columns) / dtype.byteSize])
            if q.format == .int8, let s = q.scales {
                blobs[name + "_scale"] = .raw(UnsafeRawBufferPointer(start: s, count: 4 * q.rows), .F32, [q.rows])
            }
            meta[SafeTensorsFile.formatKey(name)] = q.format.rawValue
            meta[SafeTensorsFile.columnsKey(name)] = String(q.columns)
        }
        meta.merge(metadata) { _, given in given }   // the caller's entries win (tests write broken files this way)
        // F32 data first (4-byte aligned: used in place), then the packed rows
        func isF32(_ n: String) -> Bool { switch blobs[n]! { case .f32: return true; case .raw(_, let d, _): return d == .F32 } }
        let names = blobs.keys.sorted { (isF32($0) ? 0 : 1, $0) < (isF32($1) ? 0 : 1, $1) }
        var header: [String: Any] = ["__metadata__": meta]
        var offset = 0
        func size(_ b: Blob) -> Int { if case .f32(let t) = b { return t.count * 4 }; if case .raw(let r, _, _) = b { return r.count }; return 0 }
        for name in names {
            let b = blobs[name]!, bytes = size(b)
            let (dtype, shape): (SafeTensorsDType, [Int])
            switch b {
            case .f32(let t): (dtype, shape) = (.F32, t.shape)
            case .raw(_, let d, let s): (dtype, shape) = (d, s)
            }
            header[name] = ["dtype": dtype.rawValue, "shape": shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        try AtomicFile.write(to: path) { fd in
            var len = UInt64(json.count).littleEndian
            try AtomicFile.writeAll(fd, &len, 8, path: path)
            try json.withUnsafeBytes { try AtomicFile.writeAll(fd, $0.baseAddress, $0.count, path: path) }
            for name in names {
                switch blobs[name]! {
                case .f32(let t): try AtomicFile.writeAll(fd, t.data, t.count * 4, path: path)
                case .raw(let r, _, _): if r.count > 0 { try AtomicFile.writeAll(fd, r.baseAddress, r.count, path: path) }
                }
            }
        }
    }
}
