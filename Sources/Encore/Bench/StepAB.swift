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
        public func quantile(_ q: Double) -> Double {
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
                let (ms, counted) = try step(states[v], counting: i == 0 && v == 0)
                if i >= 2 { times[v].append(ms) }
                if let counted { bytes = counted }
            }
        }
        return (Times(all: times[0]), Times(all: times[1]), bytes)
    }

    /// One greedy decode step of `state` (its own argmax as the next token), timed in milliseconds; with `counting`,
    /// also the step's weight bytes (OpCounter).
    static func step(_ state: GenerationState, counting: Bool) throws -> (ms: Double, weightBytes: Double?) {
        let next = Int(ek_argmax_f32(state.logits.data, state.logits.count))
        if counting { OpCounter.start() }
        let t0 = now()
        try state.advance(tokens: [next])
        let ms = (now() - t0) * 1000
        return (ms, counting ? OpCounter.stop().weightBytes : nil)
    }
}

extension StepAB {
    /// Decode steps alternated with reads of the same bytes: after each step, `ek_sum_f32` (the read ceiling's
    /// kernel, on the kernel threads) reads as many bytes as the step's weights from a touched 512 MiB buffer (larger
    /// than the caches; each read starts where the last ended, wrapping), so each step has a read ceiling measured
    /// under the same load from other tenants. `fractions`: each pair's read time over its step time (the step's
    /// weight GB/s as a fraction of the read at that moment). Used by `encore bench --step-ab read`.
    ///
    /// ```swift
    /// let r = try StepAB.againstRead(llama, prompt: p, steps: 128)
    /// print(r.fractions.median)   // e.g. 0.86
    /// ```
    public static func againstRead(_ model: LanguageModel, prompt: [Int], steps: Int)
        throws -> (step: Times, read: Times, fractions: Times, weightBytes: Double) {
        let state = try model.beginGeneration(prompts: [prompt])
        let buffer = KernelBench.touchedBuffer()
        var offset = 0
        func read(_ bytes: Double) -> Double {
            var left = max(1, Int(bytes) / 4)
            var sink: Float = 0
            let t0 = now()
            while left > 0 {
                if offset >= buffer.count { offset = 0 }
                let n = min(left, buffer.count - offset)
                sink += ek_sum_f32(buffer.data + offset, n)
                offset += n
                left -= n
            }
            let t = (now() - t0) * 1000
            if sink == .infinity { print("") }
            return t
        }
        var stepTimes: [Double] = [], reads: [Double] = [], fractions: [Double] = []
        var bytes = 0.0
        for i in 0..<(steps + 2) {
            let (ms, counted) = try step(state, counting: i == 0)
            if let counted { bytes = counted }
            let r = read(bytes)
            if i >= 2 { stepTimes.append(ms); reads.append(r); fractions.append(r / ms) }
        }
        return (Times(all: stepTimes), Times(all: reads), Times(all: fractions), bytes)
    }
}
