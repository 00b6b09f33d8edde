/// Counts, while enabled, the floating-point operations of the matrix products the model runs (2 per
/// multiply-add: weight products, attention scores and values) and the weight bytes they read. `encore bench`
/// reports these as the FLOPs "counted by the model": whatever a model computes, in whichever path, is counted
/// where it is computed — not estimated from a formula.
///
/// ```swift
/// OpCounter.start()
/// _ = try model.logits([[5, 6, 7]])
/// let (flops, bytes) = OpCounter.stop()
/// ```
/// Counting is single-threaded bookkeeping on the caller's thread (the kernels parallelise inside a call) and
/// costs one branch per matrix product when off.
public enum OpCounter {
    nonisolated(unsafe) public private(set) static var enabled = false
    nonisolated(unsafe) public private(set) static var flops: Double = 0
    nonisolated(unsafe) public private(set) static var weightBytes: Double = 0

    /// Resets the totals and starts counting.
    public static func start() {
        flops = 0
        weightBytes = 0
        enabled = true
    }

    /// Stops counting and returns the totals.
    @discardableResult
    public static func stop() -> (flops: Double, weightBytes: Double) {
        enabled = false
        return (flops, weightBytes)
    }

    @inline(__always) static func add(flops f: Int) {
        if enabled { flops += Double(f) }
    }

    @inline(__always) static func add(weightBytes b: Int) {
        if enabled { weightBytes += Double(b) }
    }
}
