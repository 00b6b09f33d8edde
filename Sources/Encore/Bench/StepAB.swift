import Foundation
import EncoreKernels

/// A/B timing of decode steps on a shared, noisy host: two generation states of one model, advanced in turn, one
/// step each, so both variants see the same interference; `select(variant)` switches the code path before each
/// step (and before each state is created). Used by `encore bench --step-ab`.
///
/// ```swift
/// let r = try StepAB.run(mu, prompt: p, steps: 128) { DecodeTuning.sharedGEMV = $0 == 1 }
/// print(r.a.median, r.b.median)
/// ```
public enum StepAB {
    /// Step times of one variant, in milliseconds.
    public struct Times: Sendable {
        public var all: [Double]
        public var p10: Double { quantile(0.1) }
        public var median: Double { quantile(0.5) }
        func quantile(_ q: Double) -> Double {
            guard !all.isEmpty else { return 0 }
            let s = all.sorted()
            return s[min(s.count - 1, Int(Double(s.count) * q))]
        }
    }

    /// Runs `steps` decode steps per variant (0 = A, 1 = B), alternating, after two untimed steps each. Tokens are
    /// each state's own greedy choices, so both variants do the same kind of work.
    /// `weightBytes`: weight bytes of one step of A (counted by OpCounter on an untimed step).
    public static func run(_ model: LanguageModel, prompt: [Int], steps: Int,
                           select: (Int) -> Void) throws -> (a: Times, b: Times, weightBytes: Double) {
        var states: [GenerationState] = []
        for v in 0..<2 {
            select(v)
            states.append(try model.beginGeneration(prompts: [prompt]))
        }
        var times = [[Double]](repeating: [], count: 2)
        var bytes = 0.0
        for i in 0..<(steps + 2) {
            for v in (i % 2 == 0 ? [0, 1] : [1, 0]) {   // alternate which goes first
                select(v)
                let s = states[v]
                let next = Int(ek_argmax_f32(s.logits.data, s.logits.count))
                if i == 0 && v == 0 { OpCounter.start() }
                let t0 = now()
                try s.advance(tokens: [next])
                if i >= 2 { times[v].append((now() - t0) * 1000) }
                if i == 0 && v == 0 { bytes = OpCounter.stop().weightBytes }
            }
        }
        return (Times(all: times[0]), Times(all: times[1]), bytes)
    }
}
