import XCTest
import EncoreKernels
@testable import Encore

/// The training kernels (train.c) against their plain twins, on sizes that take both the serial and the
/// thread-pool paths and a SIMD tail.
final class TrainingKernelTests: XCTestCase {
    var rng = SplitMix64(seed: 21)
    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }

    /// GELU backward: 2e-6 relative to the twin (the SIMD path's exp is ~2 ulp), and the twin against a central
    /// difference of the forward twin (1e-2 relative in float).
    func testGELUBackward() {
        for n in [13, 1003, 70_001] {
            let x = randoms(n, scale: 6), dy = randoms(n)
            var fast = [Float](repeating: 0, count: n), ref = fast
            ek_gelu_tanh_backward_f32(x, dy, &fast, n)
            ek_gelu_tanh_backward_f32_ref(x, dy, &ref, n)
            for i in 0..<n { XCTAssertEqual(fast[i], ref[i], accuracy: 2e-6 * max(1, abs(ref[i])), "n=\(n) x=\(x[i])") }
        }
        for v: Float in [-5, -1.3, -0.2, 0, 0.4, 1.7, 4] {
            var d: Float = 0
            ek_gelu_tanh_backward_f32_ref([v], [1], &d, 1)
            var a: [Float] = [v + 1e-2], b: [Float] = [v - 1e-2]
            ek_gelu_tanh_f32_ref(&a, 1); ek_gelu_tanh_f32_ref(&b, 1)
            XCTAssertEqual(d, (a[0] - b[0]) / 2e-2, accuracy: 1e-2 * max(1, abs(d)), "gelu'(\(v))")
        }
    }

    /// AdamW: the SIMD path and the threads give exactly the twin's values.
    func testAdamWIsBitIdenticalToTheTwin() {
        for n in [7, 1029, 100_003] {
            let g = randoms(n, scale: 0.1)
            var p1 = randoms(n), m1 = randoms(n, scale: 0.01), v1 = randoms(n, scale: 0.001).map(abs)
            var (p2, m2, v2) = (p1, m1, v1)
            for decay: Float in [1, 0.9999] {
                ek_adamw_f32(&p1, g, &m1, &v1, n, decay, 0.1, 0.98, 0.02, 1e-3, 0.3, 1e-8)
                ek_adamw_f32_ref(&p2, g, &m2, &v2, n, decay, 0.1, 0.98, 0.02, 1e-3, 0.3, 1e-8)
            }
            XCTAssertEqual(p1, p2, "n=\(n)"); XCTAssertEqual(m1, m2); XCTAssertEqual(v1, v2)
        }
    }

    /// Cross-entropy rows: loss and gradient 1e-6 relative to the twin; the twin against the definition in double.
    func testCrossEntropy() {
        let rows = 37, v = 1029
        let logits = randoms(rows * v, scale: 8)
        let targets = (0..<rows).map { $0 % 5 == 3 ? -1 : Int(rng.next() % UInt64(v)) }
        var g1 = [Float](repeating: 9, count: rows * v), g2 = g1
        var l1 = [Double](repeating: 9, count: rows), l2 = l1
        ek_cross_entropy_f32(logits, targets, rows, v, 0.25, &g1, &l1)
        ek_cross_entropy_f32_ref(logits, targets, rows, v, 0.25, &g2, &l2)
        XCTAssertLessThan(relativeError(g1, g2), 1e-6)
        for r in 0..<rows {
            XCTAssertEqual(l1[r], l2[r], accuracy: 1e-6 * max(1, abs(l2[r])))
            let row = logits[(r * v)..<((r + 1) * v)].map(Double.init)
            if targets[r] < 0 {
                XCTAssertEqual(l2[r], 0); XCTAssertEqual(g2[(r * v)..<((r + 1) * v)].map(abs).max(), 0)
                continue
            }
            let m = row.max()!, lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
            XCTAssertEqual(l2[r], lse - row[targets[r]], accuracy: 1e-5 * max(1, abs(l2[r])))
            let j = (targets[r] + 7) % v
            XCTAssertEqual(Double(g2[r * v + j]), 0.25 * exp(row[j] - lse), accuracy: 1e-6)
        }
    }
}
