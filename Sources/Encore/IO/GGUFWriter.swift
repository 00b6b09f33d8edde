import Foundation
import EncoreTokenizers

/// One tensor to write into a GGUF file: its name, PyTorch-order shape, ggml type, and a closure that fills
/// exactly `byteCount` bytes of data (called once, in file order, so tensors can be produced one at a time).
public struct GGUFOutputTensor {
    public let name: String
    /// Outermost first ([out, in] for a matrix); stored reversed as ggml's `ne`.
    public let shape: [Int]
    public let type: GGMLType
    public let fill: (UnsafeMutableRawPointer) throws -> Void

    public init(name: String, shape: [Int], type: GGMLType, fill: @escaping (UnsafeMutableRawPointer) throws -> Void) {
        self.name = name
        self.shape = shape
        self.type = type
        self.fill = fill
    }

    /// Bytes of the data: whole blocks of the innermost dimension.
    public var byteCount: Int { shape.reduce(1, *) / type.blockValues * type.blockBytes }
}

/// Writes GGUF v3 files the way the `gguf` Python package does: header, metadata in the given order, the tensor
/// table, then each tensor's data at a multiple of the alignment (32), zero padding in between.
/// The file appears atomically (temp file + rename).
///
/// ```swift
/// try GGUFWriter.write(to: "out.gguf", metadata: [("general.architecture", .string("llama"))],
///                      tensors: [GGUFOutputTensor(name: "w", shape: [2, 32], type: .q8_0) { fillBlocks($0) }])
/// ```
public enum GGUFWriter {
    public static let alignment = 32

    public static func write(to path: String, metadata: [(String, GGUFValue)], tensors: [GGUFOutputTensor]) throws {
        var seen = Set<String>()
        for (key, _) in metadata where !seen.insert(key).inserted {
            throw EncoreError(.invalidArgument, "\(path): duplicate metadata key '\(key)'")
        }
        seen = []
        for t in tensors {
            guard seen.insert(t.name).inserted else { throw EncoreError(.invalidArgument, "\(path): duplicate tensor '\(t.name)'") }
            guard (1...4).contains(t.shape.count), let inner = t.shape.last, inner % t.type.blockValues == 0 else {
                throw EncoreError(.invalidArgument, "\(path): tensor '\(t.name)' shape \(t.shape) cannot be stored as \(t.type.name) (1–4 dimensions, rows a whole number of \(t.type.blockValues)-value blocks)")
            }
        }
        var header: [UInt8] = [0x47, 0x47, 0x55, 0x46]
        func le<T: FixedWidthInteger>(_ x: T) { withUnsafeBytes(of: x.littleEndian) { header += $0 } }
        func str(_ s: String) { le(UInt64(s.utf8.count)); header += Array(s.utf8) }
        le(UInt32(3)); le(UInt64(tensors.count)); le(UInt64(metadata.count))
        for (key, value) in metadata {
            str(key)
            le(value.typeCode)
            value.append(to: &header)
        }
        var offset = 0
        for t in tensors {
            str(t.name)
            le(UInt32(t.shape.count))
            for d in t.shape.reversed() { le(UInt64(d)) }
            le(t.type.rawValue)
            le(UInt64(offset))
            offset += padded(t.byteCount)
        }
        header += [UInt8](repeating: 0, count: padded(header.count) - header.count)
        try AtomicFile.write(to: path) { fd in
            try AtomicFile.writeAll(fd, header, header.count, path: path)
            let largest = tensors.map { padded($0.byteCount) }.max() ?? 0
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(largest, 1), alignment: 64)
            defer { buffer.deallocate() }
            for t in tensors {
                let n = t.byteCount, total = padded(n)
                try t.fill(buffer)
                (buffer + n).initializeMemory(as: UInt8.self, repeating: 0, count: total - n)
                try AtomicFile.writeAll(fd, buffer, total, path: path)
            }
        }
    }

    static func padded(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }
}
