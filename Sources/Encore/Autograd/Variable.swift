import Foundation
import EncoreKernels

/// A value in a reverse-mode autograd graph: a ``Tensor`` plus, once ``Variable/backward()`` has run, the
/// gradient of the loss with respect to it.
///
/// Every differentiable function here calls the same `Ops` entry points the inference models use for its
/// forward pass, and the matching `Ops.*Backward` for its derivative, so training runs on the inference
/// kernels. Each function's derivative is checked against finite differences in the tests.
///
/// ```swift
/// let w = Variable(weight, requiresGrad: true)
/// let y = Variable.linear(Variable(x), w, nil)                 // [M, N]
/// let loss = Variable.crossEntropy(y, targets: [3, 1])
/// loss.backward()
/// w.grad                                                       // dL/dW, [N, K]
/// ```
public final class Variable {
    public let value: Tensor
    public private(set) var grad: Tensor?
    public let requiresGrad: Bool
    let parents: [Variable]
    /// Maps the gradient of this node to the gradients of `parents` (nil where not needed).
    let pullback: ((Tensor) -> [Tensor?])?

    public init(_ value: Tensor, requiresGrad: Bool = false) {
        self.value = value
        self.requiresGrad = requiresGrad
        self.parents = []
        self.pullback = nil
    }

    init(_ value: Tensor, parents: [Variable], pullback: @escaping (Tensor) -> [Tensor?]) {
        self.value = value
        self.requiresGrad = parents.contains { $0.requiresGrad }
        self.parents = parents
        self.pullback = requiresGrad ? pullback : nil
    }

    public var shape: [Int] { value.shape }

    /// The value of a one-element variable (a loss). Read through this rather than `value.data[0]`: a raw
    /// pointer does not keep a temporary's storage alive.
    public var item: Float {
        precondition(value.count == 1, "item of a \(value.shape) variable")
        return value.toArray()[0]
    }

    /// Clears the stored gradient.
    public func zeroGrad() { grad = nil }

    func accumulate(_ g: Tensor) {
        if let grad {
            ek_add_f32(grad.data, g.data, grad.count)
        } else {
            grad = g.copy()
        }
    }

    /// Back-propagates from this scalar (its gradient is 1) through the graph, in reverse topological order.
    public func backward() {
        precondition(value.count == 1, "backward() starts from a scalar loss, got shape \(value.shape)")
        var order: [Variable] = []
        var seen = Set<ObjectIdentifier>()
        func visit(_ v: Variable) {
            guard v.requiresGrad, seen.insert(ObjectIdentifier(v)).inserted else { return }
            for p in v.parents { visit(p) }
            order.append(v)
        }
        visit(self)
        accumulate(Tensor(shape: value.shape, values: [1]))
        for v in order.reversed() {
            guard let pullback = v.pullback, let g = v.grad else { continue }
            for (p, pg) in zip(v.parents, pullback(g)) where p.requiresGrad {
                if let pg { p.accumulate(pg) }
            }
        }
    }
}

extension Variable {
    /// x·Wᵀ + b (``Ops/linear(_:weight:bias:)``).
    public static func linear(_ x: Variable, _ w: Variable, _ b: Variable?) -> Variable {
        let y = Ops.linear(x.value, weight: w.value, bias: b?.value)
        return Variable(y, parents: [x, w] + (b.map { [$0] } ?? [])) { dy in
            let g = Ops.linearBackward(dy, x: x.value, weight: w.value, needBias: b != nil)
            return [g.dx, g.dw] + (b != nil ? [g.db] : [])
        }
    }

    /// RMSNorm (``Ops/rmsNorm(_:weight:eps:)``).
    public static func rmsNorm(_ x: Variable, _ w: Variable, eps: Float = 1e-6) -> Variable {
        Variable(Ops.rmsNorm(x.value, weight: w.value, eps: eps), parents: [x, w]) { dy in
            let g = Ops.rmsNormBackward(dy, x: x.value, weight: w.value, eps: eps)
            return [g.dx, g.dw]
        }
    }

    /// tanh-GELU.
    public static func gelu(_ x: Variable) -> Variable {
        Variable(Ops.geluTanh(x.value), parents: [x]) { dy in [Ops.geluTanhBackward(dy, x: x.value)] }
    }

    /// a + b.
    public static func + (a: Variable, b: Variable) -> Variable {
        Variable(Ops.add(a.value, b.value), parents: [a, b]) { dy in [dy, dy] }
    }

    /// Rows of an embedding table.
    public static func embedding(_ table: Variable, ids: [Int]) -> Variable {
        Variable(Ops.embedding(table.value, ids: ids), parents: [table]) { dy in
            [Ops.embeddingBackward(dy, ids: ids, vocab: table.value.shape[0])]
        }
    }

    /// Mean cross-entropy of logits [R, V] against targets, skipping `ignoreIndex` (a scalar).
    public static func crossEntropy(_ logits: Variable, targets: [Int], ignoreIndex: Int? = nil) -> Variable {
        let (loss, dlogits) = Ops.crossEntropy(logits.value, targets: targets, ignoreIndex: ignoreIndex)
        return Variable(Tensor(shape: [1], values: [loss]), parents: [logits]) { dy in
            let g = dlogits.copy()
            let s = dy.data[0]
            for i in 0..<g.count { g.data[i] *= s }
            return [g]
        }
    }
}

extension Variable {
    /// The same values with another shape (a view; the gradient is reshaped back).
    public func reshaped(_ shape: [Int]) -> Variable {
        let old = self.shape
        return Variable(value.reshaped(shape), parents: [self]) { dy in [dy.reshaped(old)] }
    }

    /// x ⊙ mask for a constant mask (dropout: ``Ops/dropoutMask(shape:p:rng:)``).
    public static func masked(_ x: Variable, by mask: Tensor) -> Variable {
        Variable(Ops.multiply(x.value, mask), parents: [x]) { dy in [Ops.multiply(dy, mask)] }
    }

    /// s · a.
    public static func * (s: Float, a: Variable) -> Variable {
        let y = a.value.copy()
        for i in 0..<y.count { y.data[i] *= s }
        return Variable(y, parents: [a]) { dy in
            let g = dy.copy()
            for i in 0..<g.count { g.data[i] *= s }
            return [g]
        }
    }

    /// RoPE (``Ops/rope(_:heads:headDim:positions:invFreq:)``) on x [R, heads*headDim], one position per row.
    public static func rope(_ x: Variable, heads: Int, headDim: Int, positions: [Float], invFreq: [Float]) -> Variable {
        Variable(Ops.rope(x.value, heads: heads, headDim: headDim, positions: positions, invFreq: invFreq), parents: [x]) { dy in
            [Ops.ropeBackward(dy, heads: heads, headDim: headDim, positions: positions, invFreq: invFreq)]
        }
    }

    /// Masked multi-head attention (``Ops/attentionForTraining(q:k:v:batch:shape:keyKeep:causal:)``):
    /// q [B*Tq, H*D], k, v [B*Tk, Hkv*D] → [B*Tq, H*D].
    /// `dropMask` [B, H, Tq, Tk]: attention dropout on the probabilities (nil: none).
    public static func attention(q: Variable, k: Variable, v: Variable, batch: Int, shape: AttentionShape,
                                 keyKeep: [UInt8], causal: Bool, dropMask: Tensor? = nil) -> Variable {
        let (out, probs) = Ops.attentionForTraining(q: q.value, k: k.value, v: v.value, batch: batch, shape: shape,
                                                    keyKeep: keyKeep, causal: causal, dropMask: dropMask)
        return Variable(out, parents: [q, k, v]) { dy in
            let g = Ops.attentionBackward(dy, q: q.value, k: k.value, v: v.value, probs: probs, batch: batch,
                                          shape: shape, keyKeep: keyKeep, causal: causal, dropMask: dropMask)
            return [g.dq, g.dk, g.dv]
        }
    }

    /// The reference's distillation term (``Ops/distillationKL(student:teacher:offset:)``): student logits
    /// [B, T, Vs] against constant teacher logits [B, Tt, Vt] read from position `offset`. A scalar.
    public static func distillationKL(student: Variable, teacher: Tensor, offset: Int) -> Variable {
        distillationKL(student: student, studentOffsets: nil, positions: student.shape[1], teacher: .logits(teacher, offset: offset), temperature: 1)
    }

    /// The generalised distillation term (``Ops/distillationKL(student:studentOffsets:positions:teacher:temperature:)``):
    /// per-row student offsets, dense or top-k teacher, temperature. A scalar.
    public static func distillationKL(student: Variable, studentOffsets: [Int]?, positions: Int, teacher: TeacherDistribution,
                                      temperature: Float) -> Variable {
        let (loss, ds) = Ops.distillationKL(student: student.value, studentOffsets: studentOffsets, positions: positions,
                                            teacher: teacher, temperature: temperature)
        return Variable(Tensor(shape: [1], values: [loss]), parents: [student]) { dy in
            let g = ds.copy()
            let s = dy.data[0]
            for i in 0..<g.count { g.data[i] *= s }
            return [g]
        }
    }
}
