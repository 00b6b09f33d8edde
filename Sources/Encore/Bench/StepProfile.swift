import Foundation
import EncoreKernels

/// Wall time per part of single-token decode steps, for finding the time a step spends outside its weight GEMVs, and
/// of prompt passes (the encoders of Mu and T5, and decoder-only models' calls with more than one new token), kept
/// apart.
/// Off unless the environment sets `ENCORE_STEP_PROFILE=1` (then `encore bench` prints the parts per step, and per
/// prompt pass, on stderr after each model); when off, each lap is one predictable branch. The tallies are global and
/// unsynchronised: for benchmarks that run one model at a time, as `encore bench` does.
///
/// ```swift
/// StepProfile.begin(prompt: n > 1)    // at the top of a forward pass (n new tokens per row)
/// ... ; StepProfile.lap(.norm)        // time since the previous lap goes to .norm
/// StepProfile.end()                   // counts the step or pass
/// ```
public enum StepProfile {
    /// The parts of a decode step (Mu, T5 and the Llama family; a model uses the ones it has).
    public enum Part: Int, CaseIterable, Sendable {
        case embed, norm, qkvGEMV, ropeCache, selfAttention, selfOutGEMV, crossQGEMV, crossAttention, crossOutGEMV
        case mlpUpGEMV, mlpActivation, mlpDownGEMV, crossKV, head, other

        /// The label; in a prompt pass the projections are matrix products (GEMMs), not GEMVs.
        func label(prompt: Bool) -> String { prompt ? label.replacingOccurrences(of: "GEMV", with: "GEMM") : label }

        var label: String {
            switch self {
            case .embed: return "embedding"
            case .norm: return "RMSNorms"
            case .qkvGEMV: return "q/k/v GEMVs"
            case .ropeCache: return "RoPE + cache append"
            case .selfAttention: return "self-attention"
            case .selfOutGEMV: return "self-attn out GEMV (+ residual)"
            case .crossQGEMV: return "cross q GEMV"
            case .crossAttention: return "cross-attention"
            case .crossOutGEMV: return "cross out GEMV (+ residual)"
            case .mlpUpGEMV: return "MLP up GEMV(s) + activation"
            case .mlpActivation: return "MLP activation"
            case .mlpDownGEMV: return "MLP down GEMV (+ residual)"
            case .crossKV: return "cross-attention K/V GEMVs (once)"
            case .head: return "final norm + head GEMV"
            case .other: return "other"
            }
        }
    }

    /// Whether laps are recorded (ENCORE_STEP_PROFILE=1).
    public static let enabled = ProcessInfo.processInfo.environment["ENCORE_STEP_PROFILE"] == "1"

    /// What one kind of call (decode steps, or prompt passes) has accumulated.
    private struct Tally {
        var totals = [Double](repeating: 0, count: Part.allCases.count)
        /// Wall time of every timed call (seconds).
        var times: [Double] = []
        /// Kernel jobs and the calling thread's time between them (µs), summed over the calls (`ek_pool_stats`).
        var jobs = 0, betweenJobs = 0.0
    }
    nonisolated(unsafe) private static var tallies = [Tally(), Tally()]   // [decode steps, prompt passes]
    nonisolated(unsafe) private static var kind = 0
    nonisolated(unsafe) private static var last = 0.0
    nonisolated(unsafe) private static var stepStart = 0.0
    nonisolated(unsafe) private static var active = false
    /// Decode steps timed since the last reset.
    static var steps: Int { tallies[0].times.count }

    /// Starts timing a call: a prompt pass (an encoder, or a decoder reading more than one new token per row) or a
    /// decode step (one new token per row).
    @inline(__always) static func begin(prompt: Bool) {
        guard enabled else { return }
        active = true
        kind = prompt ? 1 : 0
        ek_pool_stats_enable(1)
        last = now()
        stepStart = last
    }

    /// Adds the time since the previous lap to `part`.
    @inline(__always) static func lap(_ part: Part) {
        guard enabled, active else { return }
        let t = now()
        tallies[kind].totals[part.rawValue] += t - last
        last = t
    }

    /// Ends a timed call.
    @inline(__always) static func end() {
        guard enabled, active else { return }
        lap(.other)
        tallies[kind].times.append(last - stepStart)
        var jobs = 0, between = 0.0
        ek_pool_stats(&jobs, nil, &between)
        ek_pool_stats_enable(0)
        tallies[kind].jobs += jobs
        tallies[kind].betweenJobs += between
        active = false
    }

    /// Clears the totals.
    public static func reset() { tallies = [Tally(), Tally()] }

    /// Milliseconds per decode step (or per prompt pass) of each part that was timed, largest first, and the total.
    public static func report(prompt: Bool = false) -> (parts: [(label: String, ms: Double)], totalMs: Double) {
        let tally = tallies[prompt ? 1 : 0]
        guard !tally.times.isEmpty else { return ([], 0) }
        let rows = Part.allCases.map { ($0.label(prompt: prompt), tally.totals[$0.rawValue] * 1000 / Double(tally.times.count)) }.filter { $0.1 > 0 }
        return (rows.sorted { $0.1 > $1.1 }, rows.reduce(0) { $0 + $1.1 })
    }

    /// Step times in milliseconds: the fastest tenth's upper end (p10), the median and the mean. On a shared host the
    /// p10 is the step time with the least interference from other tenants.
    public static func stepPercentiles(prompt: Bool = false) -> (p10: Double, median: Double, mean: Double) {
        let times = tallies[prompt ? 1 : 0].times
        guard !times.isEmpty else { return (0, 0, 0) }
        let s = times.sorted()
        return (s[s.count / 10] * 1000, s[s.count / 2] * 1000, s.reduce(0, +) * 1000 / Double(s.count))
    }

    /// The decode steps' report (or the prompt passes', nil when none was timed) as lines of text.
    public static func reportText(prompt: Bool = false) -> String? {
        let count = tallies[prompt ? 1 : 0].times.count
        if prompt && count == 0 { return nil }
        let r = report(prompt: prompt), p = stepPercentiles(prompt: prompt)
        var lines = [prompt
            ? String(format: "prompt pass parts (ENCORE_STEP_PROFILE, %d pass(es)): %.3f ms per pass (mean); median %.3f ms", count, r.totalMs, p.median)
            : String(format: "decode step parts (ENCORE_STEP_PROFILE, %d one-token steps): %.3f ms per step (mean); step time p10 %.3f ms, median %.3f ms",
                     count, r.totalMs, p.p10, p.median)]
        for p in r.parts { lines.append("  " + p.label.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: " %9.3f ms  %5.1f%%", p.ms, 100 * p.ms / max(r.totalMs, 1e-12))) }
        let tally = tallies[prompt ? 1 : 0]
        if tally.jobs > 0 {   // the calling thread alone, between kernel jobs: what no core count or bandwidth speeds up
            let perCall = tally.betweenJobs / 1000 / Double(count)
            lines.append(String(format: "  (across the parts: %.1f kernel jobs per %@; the calling thread spends %.3f ms (%.1f%%) "
                                + "between them, %.2f µs a gap)", Double(tally.jobs) / Double(count), prompt ? "pass" : "step", perCall,
                                100 * perCall / max(r.totalMs, 1e-12), tally.betweenJobs / Double(max(tally.jobs - count, 1))))
        }
        return lines.joined(separator: "\n")
    }
}
