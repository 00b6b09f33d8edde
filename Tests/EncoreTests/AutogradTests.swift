import XCTest
@testable import Encore

/// Gradients from the tape against central finite differences (in Double-free fp32: step 1e-2 on smooth,
/// well-scaled functions; tolerance 2e-2 relative to the largest gradient entry).
final class AutogradTests: XCTestCase {
    var rng = SplitMix64(seed: 5)
    func rand(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale })
    }

    /// Checks d loss / d p for every parameter `p` of `build` numerically.
    func check(_ params: [Variable], file: StaticString = #filePath, line: UInt = #line, _ build: () -> Variable) {
        let loss = build()
        loss.backward()
        let grads = params.map { $0.grad?.toArray() ?? [Float](repeating: 0, count: $0.value.count) }
        for (pi, p) in params.enumerated() {
            let analytic = grads[pi]
            var numeric = [Float](repeating: 0, count: p.value.count)
            let h: Float = 1e-2
            for i in 0..<p.value.count {
                let old = p.value.data[i]
                p.value.data[i] = old + h
                let up = build().value.toArray()[0]
                p.value.data[i] = old - h
                let down = build().value.toArray()[0]
                p.value.data[i] = old
                numeric[i] = (up - down) / (2 * h)
            }
            XCTAssertLessThan(relativeError(analytic, numeric), 2e-2, "parameter \(pi): analytic \(analytic.prefix(4)) numeric \(numeric.prefix(4))", file: file, line: line)
        }
    }

    func testLinearRMSNormGELUCrossEntropy() {
        let table = Variable(rand([11, 6]), requiresGrad: true)
        let norm = Variable(Tensor(shape: [6], values: (0..<6).map { _ in 1 + rng.nextUnitFloat() * 0.2 }), requiresGrad: true)
        let w1 = Variable(rand([8, 6], scale: 0.5), requiresGrad: true), b1 = Variable(rand([8], scale: 0.1), requiresGrad: true)
        let w2 = Variable(rand([11, 8], scale: 0.5), requiresGrad: true)
        let ids = [3, 7, 1, 3], targets = [5, 0, 2, 9]
        let params = [table, norm, w1, b1, w2]
        check(params) {
            for p in params { p.zeroGrad() }
            let x = Variable.embedding(table, ids: ids)                       // [4, 6]
            let h = Variable.gelu(Variable.linear(Variable.rmsNorm(x, norm), w1, b1))   // [4, 8]
            let logits = Variable.linear(h, w2, nil)                          // [4, 11]
            return Variable.crossEntropy(logits, targets: targets)
        }
    }

    func testResidualAddAndIgnoreIndex() {
        let a = Variable(rand([3, 5]), requiresGrad: true), w = Variable(rand([5, 5], scale: 0.5), requiresGrad: true)
        check([a, w]) {
            a.zeroGrad(); w.zeroGrad()
            let y = a + Variable.linear(a, w, nil)
            return Variable.crossEntropy(y, targets: [1, 0, 4], ignoreIndex: 0)
        }
        // ignored rows contribute nothing
        let (loss, grad) = Ops.crossEntropy(Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]), targets: [0, 0], ignoreIndex: 0)
        XCTAssertEqual(loss, 0)
        XCTAssertEqual(Set(grad.toArray()), [0])
    }
}
