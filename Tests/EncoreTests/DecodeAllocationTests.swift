import XCTest
import AllocCounter
@testable import Encore

/// Decode steps must not allocate per step beyond a small constant: after warm-up, no allocation of 1 KiB or more (every activation row here is ≥ 1 KiB)
/// (activations, logits, weights and kernel scratch come from the buffer pool or reused kernel buffers), at most
/// 64 KiB of small ones per step (Swift's tensor objects, shape and index arrays: measured 33–61 KiB), their count
/// the same at every step and below 250 per layer. Counted by interposing the process's malloc family
/// (Tests/AllocCounter, glibc). `testCheckCatchesAnAllocationPerStep` shows the check failing on one extra buffer.
final class DecodeAllocationTests: XCTestCase {
    struct Counts { var calls: UInt64 = 0, bytes: UInt64 = 0, large: UInt64 = 0 }
    func read() -> Counts { var c = Counts(); ek_alloc_counter_read(&c.calls, &c.bytes, &c.large); return c }

    /// Allocation counts of each of `steps` decode steps after `warmup` steps.
    func perStep(_ model: LanguageModel, warmup: Int = 4, steps: Int = 8, extra: (() -> Void)? = nil) throws -> [Counts] {
        let state = try model.beginGeneration(prompts: [Array(3..<40)])
        for i in 0..<warmup { try state.advance(tokens: [5 + i]) }
        var out: [Counts] = []
        out.reserveCapacity(steps)
        for i in 0..<steps {
            let a = read()
            try state.advance(tokens: [10 + i])
            extra?()
            let b = read()
            out.append(Counts(calls: b.calls - a.calls, bytes: b.bytes - a.bytes, large: b.large - a.large))
        }
        return out
    }

    /// (name, model, decoder layers a step runs)
    func models() throws -> [(String, LanguageModel, Int)] {
        let mu = MuConfig(nEncoderLayer: 2, nDecoderLayer: 3, nEmbd: 256, qkvEmbd: 256, hiddenDim: 512, nHead: 4, nKVHead: 2,
                          blockSize: 256, vocabSize: 500, eosTokenId: 2)
        return [("mu", try MuModel(config: mu, randomSeed: 1), mu.nDecoderLayer),
                ("mu_decoder", try MuDecoderModel(config: .matching(mu), randomSeed: 1), MuDecoderConfig.matching(mu).nLayer),
                ("llama", try ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")), 3),
                ("t5", try T5Model(config: T5Config(vocabSize: 500, dModel: 256, dKV: 64, dFF: 512, numLayers: 2, numDecoderLayers: 3,
                                                    numHeads: 4, feedForwardProj: "gated-gelu", tieWordEmbeddings: false),
                                   randomSeed: 1), 3)]
    }

    func testDecodeStepsDoNotAllocateBuffers() throws {
        try XCTSkipUnless(ek_alloc_counter_available() == 1, "allocation counting needs glibc")
        // the counter sees allocations at all (else every check below would pass vacuously)
        let before = read()
        let probe = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 64)
        probe.deallocate()
        XCTAssertEqual(read().large - before.large, 1, "the allocation counter does not see allocations")
        for (name, model, layers) in try models() {
            // each weight format, then fp32 weights with an f16 KV cache and q4_0 ones with an int8 cache (not T5's;
            // Mu's cross-attention K/V follow the cache: int8 ones too)
            for (f, kv) in [(WeightFormat.f32, KVCacheStorage.f32), (.bf16, .f32), (.q4_0, .f32), (.f32, .f16), (.q4_0, .int8)]
            where !(kv != .f32 && name == "t5") {
                try model.useDecodeWeights(f)
                try model.useKVCache(kv)
                defer { try? model.useKVCache(.f32) }
                let counts = try perStep(model)
                let maxCalls = counts.map(\.calls).max()!, maxBytes = counts.map(\.bytes).max()!
                print("\(name) \(f.rawValue)\(kv != .f32 ? " \(kv) KV" : ""): per decode step \(maxCalls) allocations, \(maxBytes) bytes, \(counts.map(\.large).max()!) of >= 1 KiB")
                XCTAssertEqual(counts.map(\.large).max(), 0, "\(name) \(f): a decode step allocated a buffer of >= 1 KiB")
                XCTAssertLessThanOrEqual(maxBytes, 64 << 10, "\(name) \(f): \(maxBytes) bytes allocated per step")
                // small objects (tensor headers, shape and index arrays): measured ≤ 210 per layer in debug builds
                XCTAssertLessThanOrEqual(Int(maxCalls), 250 * layers + 100, "\(name) \(f): \(maxCalls) allocations per step")
                // the count must not grow from step to step (no per-step leak of work)
                XCTAssertEqual(counts.first!.calls, counts.last!.calls, "\(name) \(f): \(counts.map(\.calls))")
            }
            try model.useDecodeWeights(.f32)
        }
    }

    /// The check fails when a step does allocate a buffer: one [Float] of 4096 per step is caught.
    func testCheckCatchesAnAllocationPerStep() throws {
        try XCTSkipUnless(ek_alloc_counter_available() == 1, "allocation counting needs glibc")
        let model = try MuDecoderModel(config: .matching(MuConfig(nEncoderLayer: 1, nDecoderLayer: 1, nEmbd: 64, hiddenDim: 128,
                                                                    nHead: 2, nKVHead: 2, vocabSize: 100)), randomSeed: 2)
        var sink = 0
        let counts = try perStep(model) { sink += [Float](repeating: 1, count: 4096).count }
        XCTAssertEqual(sink, 8 * 4096)
        XCTAssertEqual(counts.map(\.large), [UInt64](repeating: 1, count: 8))
    }
}
