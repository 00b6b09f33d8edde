import Foundation
import EncoreKernels

/// `torch.optim.AdamW` (single-tensor algorithm, `amsgrad=False`, `maximize=False`) over named parameters,
/// with the reference's grouping (`mu/train.py get_optimizer`): weight decay only on parameters of rank ≥ 2.
///
/// Per step t (1-based), for each parameter with a gradient g:
///   p ← p·(1 − lr·wd);  m ← m + (g − m)(1 − β1);  v ← β2·v + (1 − β2)·g²
///   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
/// Parameters without a gradient are skipped (their step count does not advance), as in PyTorch.
public final class AdamW {
    public var learningRate: Double
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    let parameters: [Variable]
    let decays: [Bool]
    private var m: [Tensor?], v: [Tensor?], steps: [Int]

    /// The reference's defaults: betas (0.9, 0.98), eps 1e-8, weight decay 0.01 on rank ≥ 2 parameters.
    public init(parameters: [Variable], learningRate: Double, betas: (Double, Double) = (0.9, 0.98), eps: Double = 1e-8,
                weightDecay: Double = 0.01, decay: ((Variable) -> Bool)? = nil) {
        self.parameters = parameters
        self.learningRate = learningRate
        (beta1, beta2) = betas
        self.eps = eps
        self.weightDecay = weightDecay
        decays = parameters.map { decay?($0) ?? ($0.shape.count >= 2) }
        m = Array(repeating: nil, count: parameters.count)
        v = Array(repeating: nil, count: parameters.count)
        steps = Array(repeating: 0, count: parameters.count)
    }

    /// The state of parameter `i`: first and second moments (nil before its first update) and its step count.
    public func state(at i: Int) -> (m: Tensor?, v: Tensor?, steps: Int) { (m[i], v[i], steps[i]) }

    /// Replaces the state of parameter `i` (restoring a checkpoint); the moments must have the parameter's
    /// shape, and both be given or both be nil.
    public func setState(at i: Int, m newM: Tensor?, v newV: Tensor?, steps newSteps: Int) throws {
        let shape = parameters[i].shape
        guard (newM == nil) == (newV == nil), newSteps >= 0 else {
            throw EncoreError(.invalidArgument, "AdamW state \(i): moments must both be present or both absent, steps >= 0")
        }
        for t in [newM, newV].compactMap({ $0 }) where t.shape != shape {
            throw EncoreError(.invalidArgument, "AdamW state \(i): moment shape \(t.shape), parameter shape \(shape)")
        }
        m[i] = newM?.copy(); v[i] = newV?.copy(); steps[i] = newSteps
    }

    /// One update of every parameter that has a gradient, at ``learningRate``.
    public func step() {
        let lr = learningRate
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad else { continue }
            let n = p.value.count
            if m[i] == nil { m[i] = Tensor(zeros: p.shape); v[i] = Tensor(zeros: p.shape) }
            steps[i] += 1
            let t = Double(steps[i])
            let decay = decays[i] && weightDecay != 0 ? Float(1 - lr * weightDecay) : 1
            let stepSize = Float(lr / (1 - pow(beta1, t)))
            let bc2Sqrt = Float((1 - pow(beta2, t)).squareRoot())
            withExtendedLifetime((p, g, m[i], v[i])) {
                ek_adamw_f32(p.value.data, g.data, m[i]!.data, v[i]!.data, n, decay, Float(1 - beta1), Float(beta2),
                             Float(1 - beta2), stepSize, bc2Sqrt, Float(eps))
            }
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_(parameters, maxNorm)`: the global L2 norm of all gradients; every gradient
/// is multiplied by min(1, maxNorm / (norm + 1e-6)). Returns the norm before clipping.
@discardableResult
public func clipGradNorm(_ parameters: [Variable], maxNorm: Double) -> Double {
    var ss: Double = 0
    for p in parameters { if let g = p.grad { for j in 0..<g.count { ss += Double(g.data[j]) * Double(g.data[j]) } } }
    let norm = ss.squareRoot()
    let coef = Float(min(1, maxNorm / (norm + 1e-6)))
    for p in parameters { if let g = p.grad { for j in 0..<g.count { g.data[j] *= coef } } }
    return norm
}

/// The reference schedule (`mu/train.py _get_lr_lambda` under `LambdaLR`): the learning-rate factor at
/// optimizer step s (0-based) is s / warmup while s ≤ warmup, then 0.5·(1 + cos(π·(s − warmup)/(total − warmup))).
/// Note the first step runs at factor 0.
public struct WarmupCosineSchedule: Sendable {
    public var warmupSteps: Int
    public var totalSteps: Double
    public init(warmupSteps: Int, totalSteps: Double) {
        precondition(Double(warmupSteps) < totalSteps, "warmup must be shorter than training")
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }
    public func factor(step s: Int) -> Double {
        if s <= warmupSteps { return Double(s) / Double(max(1, warmupSteps)) }
        let progress = Double(s - warmupSteps) / (totalSteps - Double(warmupSteps))
        return 0.5 * (1 + cos(Double.pi * progress))
    }
}

/// The learning-rate factor at each optimizer step s (0-based), for `--schedule`:
/// - `constant`: linear warmup s / warmup while s ≤ warmup, then 1;
/// - `cosine`: the reference's warmup then cosine to 0 at `totalSteps` (``WarmupCosineSchedule``);
/// - `wsd` (warmup-stable-decay, as the Mu model was trained): linear warmup, 1, then linear decay to 0 over the
///   last `decayFraction` of `totalSteps`: factor (total − s) / (decayFraction · total) from
///   s ≥ (1 − decayFraction) · total.
public struct LearningRateSchedule: Sendable {
    public enum Kind: String, CaseIterable, Sendable { case constant, cosine, wsd }
    public var kind: Kind
    public var warmupSteps: Int
    public var totalSteps: Double
    /// For `wsd`: the fraction of training spent decaying, in (0, 1].
    public var decayFraction: Double

    public init(_ kind: Kind = .cosine, warmupSteps: Int, totalSteps: Double, decayFraction: Double = 0.2) {
        precondition(Double(warmupSteps) < totalSteps, "warmup must be shorter than training")
        precondition(decayFraction > 0 && decayFraction <= 1, "decay fraction must be in (0, 1]")
        self.kind = kind
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decayFraction = decayFraction
    }

    public func factor(step s: Int) -> Double {
        switch kind {
        case .cosine:
            return WarmupCosineSchedule(warmupSteps: warmupSteps, totalSteps: totalSteps).factor(step: s)
        case .constant, .wsd:
            if s < warmupSteps { return Double(s) / Double(warmupSteps) }
            guard kind == .wsd else { return 1 }
            let decay = decayFraction * totalSteps, start = totalSteps - decay
            if Double(s) < start { return 1 }
            return max(0, (totalSteps - Double(s)) / decay)
        }
    }
}
