import Foundation
import EncoreKernels

/// A tensor's values stored as IEEE half floats (round to nearest even): Mu's cross-attention K/V when kept in
/// f16 (``MuModel/halfCrossKV``), half the bytes a decode step reads.
///
/// ```swift
/// if let h = HalfTensor(fitting: k) { … h.data … }   // nil when a value exceeds f16's range
/// ```
public final class HalfTensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    let data: UnsafeMutablePointer<UInt16>

    /// Whether every value of `t` is finite within f16's range (|x| ≤ 65504; a NaN is not).
    public static func fits(_ t: Tensor) -> Bool {
        withExtendedLifetime(t) { ek_f16_fits(t.data, t.count) != 0 }   // NaN fails too
    }

    /// The values of `t` in f16, or nil when one of them is not finite within f16's range (|x| > 65504).
    public init?(fitting t: Tensor) {
        guard Self.fits(t) else { return nil }
        shape = t.shape
        count = t.count
        data = .allocate(capacity: max(t.count, 1))
        withExtendedLifetime(t) { ek_f32_to_f16(t.data, data, t.count) }
    }

    deinit { data.deallocate() }

    /// The values widened to fp32 (new memory).
    public func widened() -> Tensor {
        let t = Tensor(uninitialized: shape)
        ek_f16_to_f32(data, t.data, count)
        return t
    }

    /// Bytes held.
    public var bytes: Int { count * 2 }
}
