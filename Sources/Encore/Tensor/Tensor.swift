import Foundation
import EncoreKernels

/// Memory behind a ``Tensor``: fp32 values, either owned (64-byte aligned, recycled through
/// ``BufferPool``) or borrowed from a mapping that `owner` keeps alive.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let count: Int
    private let owner: AnyObject?
    private let byteCount: Int

    /// Allocates `count` floats, zeroed unless `zeroed` is false (then the caller writes every element).
    public init(count: Int, zeroed: Bool = true) {
        precondition(count >= 0, "negative tensor size")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = BufferPool.shared.take(bytes)
        if zeroed { raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes) }
        self.base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.owner = nil
        self.byteCount = bytes
    }

    /// Wraps memory owned by `owner` (for example a memory-mapped checkpoint); never freed here.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        self.base = pointer
        self.count = count
        self.owner = owner
        self.byteCount = 0
    }

    deinit {
        if owner == nil { BufferPool.shared.give(UnsafeMutableRawPointer(base), byteCount) }
    }

    /// For values borrowed from a memory-mapped file: drops their resident pages from the process (reading them
    /// again faults the file's bytes back in). Called when a model releases a weight it no longer reads, e.g. the
    /// fp32 copy after `usePromptWeights(.int8)`: the mapping stays alive for the other tensors, these pages leave RSS.
    func releaseMappedPages() {
        guard let file = owner as? MappedFile else { return }
        file.releasePages(UnsafeRawBufferPointer(start: base, count: count * MemoryLayout<Float>.stride))
    }
}

/// Recycles freed tensor buffers of 1 KiB and more by exact size, so the many same-sized temporaries of a forward
/// pass (activations, attention outputs) do not go back to the OS and fault in again at every step: a decode step
/// allocates no buffer once warm (DecodeAllocationTests). Holds at most `limit` bytes; thread-safe.
public final class BufferPool: @unchecked Sendable {
    public static let shared = BufferPool()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var held = 0
    private let lock = NSLock()
    /// Most bytes kept for reuse (256 MiB).
    public var limit = 256 << 20

    func take(_ bytes: Int) -> UnsafeMutableRawPointer {
        lock.lock()
        if let i = free.index(forKey: bytes), let p = free.values[i].popLast() {   // in place: no copy of the list
            held -= bytes
            lock.unlock()
            return p
        }
        lock.unlock()
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    }

    func give(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
        lock.lock()
        if held + bytes <= limit && bytes >= 1024 {
            free[bytes, default: []].append(p)
            held += bytes
            lock.unlock()
            return
        }
        lock.unlock()
        p.deallocate()
    }

    /// Returns every kept buffer to the system, and (glibc) the allocator's free pages too: after large buffers
    /// come and go, glibc serves later ones up to 32 MiB from its heap, where freed weights would otherwise
    /// stay resident (e.g. the fp32 copies released by `usePromptWeights(.int8)`).
    public func drain() {
        lock.lock()
        for (_, list) in free { for p in list { p.deallocate() } }
        free = [:]
        held = 0
        lock.unlock()
        ek_release_free_memory()
    }
}

/// A dense, row-major fp32 tensor. Values live in a shared ``TensorStorage``; `Tensor` is a cheap value
/// (shape + offset) so views of rows share memory.
///
/// ```swift
/// let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])   // [B=2, C=3]
/// x.rows(1..<2).toArray()                                    // [4, 5, 6]
/// ```
/// Encore computes in fp32; bf16/f16 checkpoints are widened when loaded.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let storage: TensorStorage
    public let offset: Int

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Pointer to the first element.
    public var data: UnsafeMutablePointer<Float> { storage.base + offset }

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(count: shape.reduce(1, *))
        self.offset = 0
    }

    /// A tensor whose values the caller will overwrite entirely (no zero fill).
    public init(uninitialized shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(count: shape.reduce(1, *), zeroed: false)
        self.offset = 0
    }

    /// A tensor holding `values` (their count must match the shape).
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { src in
            if let s = src.baseAddress { data.update(from: s, count: values.count) }
        }
    }

    /// A view on existing storage.
    public init(shape: [Int], storage: TensorStorage, offset: Int = 0) {
        precondition(offset + shape.reduce(1, *) <= storage.count, "view past the end of its storage")
        self.shape = shape
        self.storage = storage
        self.offset = offset
    }

    /// The same values with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: newShape, storage: storage, offset: offset)
    }

    /// A view of rows `range` along the first dimension.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0], "row range \(range) out of \(shape)")
        let rowSize = shape.dropFirst().reduce(1, *)
        var s = shape
        s[0] = range.count
        return Tensor(shape: s, storage: storage, offset: offset + range.lowerBound * rowSize)
    }

    /// A copy with its own storage.
    public func copy() -> Tensor {
        let t = Tensor(uninitialized: shape)
        t.data.update(from: data, count: count)
        return t
    }

    /// The values as an array (for tests and output).
    public func toArray() -> [Float] {
        Array(UnsafeBufferPointer(start: data, count: count))
    }

    /// Element at a multi-dimensional index.
    public subscript(_ index: Int...) -> Float {
        get { data[flatIndex(index)] }
        nonmutating set { data[flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var flat = 0
        for (i, d) in zip(index, shape) {
            precondition(i >= 0 && i < d, "index \(index) out of bounds for \(shape)")
            flat = flat * d + i
        }
        return flat
    }
}
