import Foundation

/// A metadata value from a GGUF file.
public enum GGUFValue: Sendable, Equatable {
    /// Integer values (GGUF types 0–5 and 10–11).
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    /// Float, bool and string values (types 6, 7, 8) and the 64-bit ones (10, 11, 12).
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// An array (type 9); elements share one type, arrays may nest.
    case array([GGUFValue])

    /// The value as an integer, when it is one of the integer types (or a bool).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }
    /// The value as a floating-point number, when numeric.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return intValue.map(Double.init)
        }
    }
    /// The string, when this is a string.
    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    /// The bool, when this is a bool.
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    /// The elements, when this is an array.
    public var arrayValue: [GGUFValue]? { if case .array(let a) = self { return a }; return nil }
}

/// The header and metadata of a GGUF file (versions 2 and 3). Tensor data is not read.
///
/// Every length and offset is checked against the file size; a malformed file throws a
/// `TokenizerError` of kind `.gguf` naming the byte offset.
public struct GGUFFile: Sendable {
    /// The format version (2 or 3).
    public let version: UInt32
    /// Number of tensors declared in the header.
    public let tensorCount: UInt64
    /// Metadata key/value pairs.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let keys: [String]
    /// Byte offset just past the metadata, where the tensor infos begin.
    public let metadataEnd: Int

    /// True when the file at `path` starts with the GGUF magic.
    public static func hasMagic(path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let d = h.readData(ofLength: 4)
        return [UInt8](d) == [0x47, 0x47, 0x55, 0x46]
    }

    /// Reads the metadata of the GGUF file at `path` (memory-mapped).
    public init(path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw TokenizerError(.io, "cannot read GGUF file \(path): \(error.localizedDescription)")
        }
        try self.init(data: data, source: path)
    }

    /// Parses GGUF metadata from bytes; `source` names the file in error messages.
    public init(data: Data, source: String = "GGUF data") throws {
        var r = GGUFReader(data: data, source: source)
        let magic = try r.bytes(4, what: "magic")
        guard magic == [0x47, 0x47, 0x55, 0x46] else {
            throw TokenizerError(.gguf, "\(source): not a GGUF file (magic \(magic.map { String(format: "%02x", $0) }.joined()) at byte 0, expected 47475546 'GGUF')")
        }
        version = try r.u32(what: "version")
        guard version == 2 || version == 3 else {
            throw TokenizerError(.gguf, "\(source): unsupported GGUF version \(version) at byte 4 (supported: 2, 3)")
        }
        tensorCount = try r.u64(what: "tensor count")
        let kvCount = try r.u64(what: "metadata count")
        // Each pair needs at least 12 bytes; reject absurd counts before allocating.
        guard kvCount <= UInt64(data.count / 12) else {
            throw TokenizerError(.gguf, "\(source): metadata count \(kvCount) at byte 16 cannot fit in a \(data.count)-byte file")
        }
        var md: [String: GGUFValue] = [:]
        var keys: [String] = []
        for _ in 0..<kvCount {
            let keyOffset = r.pos
            let key = try r.string(what: "metadata key")
            let type = try r.u32(what: "type of '\(key)'")
            let value = try r.value(type: type, key: key, depth: 0)
            if md[key] != nil {
                throw TokenizerError(.gguf, "\(source): duplicate metadata key '\(key)' at byte \(keyOffset)")
            }
            md[key] = value
            keys.append(key)
        }
        metadata = md
        self.keys = keys
        metadataEnd = r.pos
    }

    /// The tensor-info table that follows the metadata (`data` must be the bytes this file was parsed from),
    /// and the byte offset of the aligned data section (`general.alignment`, default 32).
    ///
    /// Checks names, dimension counts (1–4), that each entry fits in the file, and the alignment value;
    /// types, sizes and data ranges are left to the caller, which knows the tensor formats.
    public func tensorInfos(data: Data, source: String) throws -> (infos: [GGUFTensorInfo], dataOffset: Int) {
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.intValue, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
                throw TokenizerError(.gguf, "\(source): general.alignment is \(a), expected a power of two")
            }
            alignment = v
        }
        var r = GGUFReader(data: data, source: source)
        r.pos = metadataEnd
        // The smallest entry is 8 (name length) + 4 (dims) + 8 (one dim) + 4 (type) + 8 (offset) bytes.
        guard tensorCount <= UInt64(max(0, data.count - metadataEnd) / 32) else {
            throw TokenizerError(.gguf, "\(source): tensor count \(tensorCount) at byte 8 cannot fit in a \(data.count)-byte file")
        }
        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(Int(tensorCount))
        for i in 0..<Int(tensorCount) {
            let at = r.pos
            let name = try r.string(what: "name of tensor \(i)")
            let dimsAt = r.pos
            let nDims = try r.u32(what: "dimension count of tensor '\(name)'")
            guard (1...4).contains(nDims) else {
                throw TokenizerError(.gguf, "\(source): tensor '\(name)' at byte \(at) has \(nDims) dimensions at byte \(dimsAt) (expected 1 to 4)")
            }
            var dims: [UInt64] = []
            for d in 0..<Int(nDims) { dims.append(try r.u64(what: "dimension \(d) of tensor '\(name)'")) }
            let type = try r.u32(what: "type of tensor '\(name)'")
            let offset = try r.u64(what: "data offset of tensor '\(name)'")
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: offset, infoOffset: at))
        }
        let dataOffset = (r.pos + alignment - 1) / alignment * alignment
        return (infos, dataOffset)
    }

    /// The metadata value for `key`.
    public subscript(key: String) -> GGUFValue? { metadata[key] }
}

/// One entry of a GGUF tensor-info table, as stored.
public struct GGUFTensorInfo: Sendable, Equatable {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    public let name: String
    /// Dimensions innermost first (ggml `ne`): a PyTorch `[out, in]` matrix is stored as `[in, out]`.
    public let dims: [UInt64]
    /// The ggml type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 12 Q4_K, 13 Q5_K, 14 Q6_K, 30 BF16, …).
    public let type: UInt32
    /// Offset of the data relative to the start of the data section.
    public let offset: UInt64
    /// Byte offset in the file where this entry begins (for error messages).
    public let infoOffset: Int
}

/// A bounds-checked little-endian reader.
struct GGUFReader {
    let data: Data
    let source: String
    var pos = 0

    init(data: Data, source: String) {
        self.data = data
        self.source = source
    }

    private func truncated(_ what: String, _ n: Int) -> TokenizerError {
        TokenizerError(.gguf, "\(source): truncated file: \(what) needs \(n) bytes at byte \(pos), but the file has \(data.count) bytes")
    }

    mutating func bytes(_ n: Int, what: String) throws -> [UInt8] {
        guard n >= 0, pos <= data.count - n else { throw truncated(what, n) }
        let start = data.startIndex + pos
        pos += n
        return [UInt8](data[start..<(start + n)])
    }

    mutating func fixed<T: FixedWidthInteger>(_: T.Type, what: String) throws -> T {
        let n = MemoryLayout<T>.size
        guard pos <= data.count - n else { throw truncated(what, n) }
        var v: T = 0
        let start = data.startIndex + pos
        for i in 0..<n { v |= T(truncatingIfNeeded: data[start + i]) << (8 * i) }
        pos += n
        return v
    }

    mutating func u32(what: String) throws -> UInt32 { try fixed(UInt32.self, what: what) }
    mutating func u64(what: String) throws -> UInt64 { try fixed(UInt64.self, what: what) }

    mutating func string(what: String) throws -> String {
        let at = pos
        let len = try u64(what: "length of \(what)")
        guard len <= UInt64(data.count - pos) else {
            throw TokenizerError(.gguf, "\(source): \(what) at byte \(at) has length \(len), past the end of the file (\(data.count) bytes)")
        }
        let b = try bytes(Int(len), what: what)
        // GGUF strings should be UTF-8; repair rather than fail (some vocabularies hold raw bytes).
        return String(decoding: b, as: UTF8.self)
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint8(try fixed(UInt8.self, what: "value of '\(key)'"))
        case 1: return .int8(try fixed(Int8.self, what: "value of '\(key)'"))
        case 2: return .uint16(try fixed(UInt16.self, what: "value of '\(key)'"))
        case 3: return .int16(try fixed(Int16.self, what: "value of '\(key)'"))
        case 4: return .uint32(try fixed(UInt32.self, what: "value of '\(key)'"))
        case 5: return .int32(try fixed(Int32.self, what: "value of '\(key)'"))
        case 6: return .float32(Float(bitPattern: try fixed(UInt32.self, what: "value of '\(key)'")))
        case 7:
            let at = pos
            let b = try fixed(UInt8.self, what: "value of '\(key)'")
            guard b <= 1 else { throw TokenizerError(.gguf, "\(source): bool '\(key)' at byte \(at) has value \(b), expected 0 or 1") }
            return .bool(b == 1)
        case 8: return .string(try string(what: "string value of '\(key)'"))
        case 9:
            guard depth < 4 else { throw TokenizerError(.gguf, "\(source): arrays nested too deeply in '\(key)' at byte \(pos)") }
            let elemType = try u32(what: "array element type of '\(key)'")
            let countAt = pos
            let count = try u64(what: "array length of '\(key)'")
            let minSize: UInt64 = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8][Int(min(elemType, 12))]
            guard elemType <= 12, count <= UInt64(data.count - pos) / minSize else {
                if elemType > 12 {
                    throw TokenizerError(.gguf, "\(source): unknown array element type \(elemType) in '\(key)' at byte \(countAt - 4)")
                }
                throw TokenizerError(.gguf, "\(source): array '\(key)' at byte \(countAt) declares \(count) elements, more than the file can hold")
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<count { items.append(try value(type: elemType, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try fixed(UInt64.self, what: "value of '\(key)'"))
        case 11: return .int64(try fixed(Int64.self, what: "value of '\(key)'"))
        case 12: return .float64(Double(bitPattern: try fixed(UInt64.self, what: "value of '\(key)'")))
        default:
            throw TokenizerError(.gguf, "\(source): unknown value type \(type) for key '\(key)' at byte \(pos - 4)")
        }
    }
}

extension GGUFValue {
    /// The GGUF type code of this value (arrays: 9).
    public var typeCode: UInt32 {
        switch self {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    /// Appends the value's GGUF encoding (without its type code) to `out`.
    public func append(to out: inout [UInt8]) {
        func le<T: FixedWidthInteger>(_ x: T) { withUnsafeBytes(of: x.littleEndian) { out += $0 } }
        switch self {
        case .uint8(let v): le(v)
        case .int8(let v): le(v)
        case .uint16(let v): le(v)
        case .int16(let v): le(v)
        case .uint32(let v): le(v)
        case .int32(let v): le(v)
        case .float32(let v): le(v.bitPattern)
        case .bool(let v): le(UInt8(v ? 1 : 0))
        case .string(let s): le(UInt64(s.utf8.count)); out += Array(s.utf8)
        case .array(let items):
            le(items.first?.typeCode ?? 4)        // an empty array keeps no element type: uint32
            le(UInt64(items.count))
            for item in items { item.append(to: &out) }
        case .uint64(let v): le(v)
        case .int64(let v): le(v)
        case .float64(let v): le(v.bitPattern)
        }
    }
}

extension GGUFFile {
    /// A GGUF v3 file holding only the metadata keys of this file that `include` accepts (in file order) and
    /// no tensors — e.g. a model's vocabulary (`tokenizer.*`) for a model folder that shares it:
    ///
    /// ```swift
    /// let bytes = try GGUFFile(path: "SmolLM2.gguf").metadataOnly { $0.hasPrefix("tokenizer.") || $0 == "general.architecture" }
    /// ```
    public func metadataOnly(include: (String) -> Bool) -> [UInt8] {
        let kept = keys.filter(include)
        var out: [UInt8] = [0x47, 0x47, 0x55, 0x46]
        func le<T: FixedWidthInteger>(_ x: T) { withUnsafeBytes(of: x.littleEndian) { out += $0 } }
        le(UInt32(3)); le(UInt64(0)); le(UInt64(kept.count))
        for key in kept {
            let value = metadata[key]!
            le(UInt64(key.utf8.count)); out += Array(key.utf8)
            le(value.typeCode)
            value.append(to: &out)
        }
        while out.count % 32 != 0 { out.append(0) }   // the (empty) data section starts aligned
        return out
    }
}
