import XCTest
import EncoreKernels
@testable import Encore

/// f16 and int8 self-attention KV caches (`useHalfKVCache`, `useKVCache(.int8)`, `KVCache(rows:)`): logits against the
/// fp32 cache's, the storage, the fallback to fp32 for values the storage cannot hold, and the families that refuse it.
final class HalfKVCacheTests: XCTestCase {
    /// Logits of a prompt pass and four decode steps, through the public generation API; with a second prompt, a
    /// padded batch of two rows (the shorter one left-padded).
    func generationLogits(_ m: LanguageModel, prompt: [Int], second: [Int]? = nil) throws -> [Float] {
        let s = try m.beginGeneration(prompts: second.map { [prompt, $0] } ?? [prompt])
        var out = s.logits.toArray()
        for t in [11, 23, 7, 42] { try s.advance(tokens: second == nil ? [t] : [t, t + 1]); out += s.logits.toArray() }
        return out
    }

    /// Logits of forward passes over one cache that starts too small (it grows three times): 20 prompt tokens, 20 more
    /// (a long query over cached rows: the widened path), 5 more (a short causal query: the fused kernel with a causal
    /// offset), then 3 single tokens (the fused kernel).
    func chunkedLogits(_ m: some CausalDecoder) -> [Float] {
        let cache = m.makeCache(batch: 1, offsets: [0], capacity: 8)
        var out: [Float] = []
        out += m.forward(cache, ids: Array(5..<25), n: 20, outputs: .all, keyKeep: nil).toArray()
        out += m.forward(cache, ids: Array(30..<50), n: 20, outputs: .all, keyKeep: nil).toArray()
        out += m.forward(cache, ids: Array(60..<65), n: 5, outputs: .all, keyKeep: nil).toArray()
        for t in [7, 8, 9] { out += m.forward(cache, ids: [t], n: 1, outputs: .all, keyKeep: nil).toArray() }
        XCTAssertEqual(cache.caches[0].rows, m.kvRows, "the cache takes the model's setting")
        return out
    }

    /// Llama (the tiny GGUF fixture), the decoder-only Mu twin and Mu's decoder with f16 and int8 caches against fp32
    /// ones: f16 measured 7e-5–4.5e-4 of the largest logit (bound 3e-3), int8 ~10× that (bound 3e-2; Mu's cross K/V
    /// follow --kv-cache int8 too), and not equal (the narrow rows are really read), one row and a padded batch of two;
    /// prompt chunks over cached rows (the widened path) and single tokens (the fused kernels) on a cache that grows.
    func testNarrowCacheLogitsStayCloseToFP32() throws {
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        let dec = try smallMuDecoder(blockSize: 128, seed: 12), mu = try smallMu(seed: 12)
        let prompt = Array(5..<45)
        for (storage, tolerance) in [(KVCacheStorage.f16, Float(3e-3)), (.int8, 3e-2)] {
            for (name, model) in [("llama", llama as LanguageModel), ("mu_decoder", dec), ("mu", mu)] {
                let ref = try generationLogits(model, prompt: prompt)
                try model.useKVCache(storage)
                XCTAssertEqual(model.kvCacheRows.rawValue, storage.rawValue, name)
                let narrow = try generationLogits(model, prompt: prompt)
                try model.useKVCache(.f32)
                let err = relativeError(narrow, ref)
                print("\(name): \(storage) KV cache, relative logit error \(err)")
                XCTAssertLessThan(err, tolerance, "\(name) \(storage)")
                XCTAssertGreaterThan(err, 0, "\(name): the \(storage) cache should be read")
                XCTAssertEqual(try generationLogits(model, prompt: prompt), ref, "\(name): back on fp32")
                // two rows, the second 17 tokens shorter (left padding): each row reads its own rows and keep flags
                let refBatch = try generationLogits(model, prompt: prompt, second: Array(60..<83))
                try model.useKVCache(storage)
                let narrowBatch = try generationLogits(model, prompt: prompt, second: Array(60..<83))
                try model.useKVCache(.f32)
                XCTAssertLessThan(relativeError(narrowBatch, refBatch), tolerance, "\(name) \(storage) batch of two")
                XCTAssertGreaterThan(relativeError(narrowBatch, refBatch), 0, "\(name) \(storage) batch of two")
            }
            for (name, model) in [("llama", llama as any CausalDecoder), ("mu_decoder", dec)] {
                let ref = chunkedLogits(model)
                try model.useKVCache(storage)
                let narrow = chunkedLogits(model)
                try model.useKVCache(.f32)
                let err = relativeError(narrow, ref)
                print("\(name): \(storage) KV cache, chunked, relative logit error \(err)")
                XCTAssertLessThan(err, tolerance, "\(name) \(storage) chunked")
                XCTAssertGreaterThan(err, 0, "\(name) \(storage) chunked")
            }
        }
    }

    /// int8 rows: a quarter of fp32's bytes plus a scale per position and block; rows survive growth (each head's
    /// slice within half a step of its value); a non-finite value turns the cache back to fp32 with the earlier rows
    /// widened (their dequantized values, exactly) and the new ones as given.
    func testInt8StorageGrowthAndFallback() {
        let c = KVCache(batch: 2, width: 8, capacity: 2, rows: .int8, headDim: 4)
        XCTAssertEqual(c.bytes, 2 * 2 * 8 * 2 + 2 * 2 * 2 * 8 + 2 * 2)
        let k1 = Tensor(shape: [2 * 3, 8], values: (0..<48).map { Float($0) * 0.25 - 3 })
        let v1 = Tensor(shape: [2 * 3, 8], values: (0..<48).map { Float($0 % 5) * -0.5 })
        c.append(k: k1, v: v1, keep: [1, 1, 1, 1, 1, 0], n: 3)   // grows 2 → 4
        XCTAssertEqual(c.rows, .int8)
        XCTAssertEqual(c.capacity, 4)
        let kq = Int8HeadRows(fitting: k1, headDim: 4)!.widened().toArray(), vq = Int8HeadRows(fitting: v1, headDim: 4)!.widened().toArray()
        for i in 0..<48 {
            XCTAssertEqual(kq[i], k1.data[i], accuracy: 9.0 / 254 * 1.0001, "key \(i) within half a step")
        }
        c.append(k: Tensor(shape: [2, 8], values: [Float](repeating: .infinity, count: 16)),
                 v: Tensor(shape: [2, 8], values: [Float](repeating: 1, count: 16)), keep: [1, 1], n: 1)
        XCTAssertEqual(c.rows, .f32, "an infinity does not fit int8 rows: fp32 from now on")
        XCTAssertEqual(c.length, 4)
        for b in 0..<2 {
            let kp = c.keyPointer(batch: b), vp = c.valuePointer(batch: b)
            for t in 0..<3 {
                for d in 0..<8 {
                    XCTAssertEqual(kp[t * 8 + d], kq[(b * 3 + t) * 8 + d], "key row \(b),\(t)")
                    XCTAssertEqual(vp[t * 8 + d], vq[(b * 3 + t) * 8 + d], "value row \(b),\(t)")
                }
            }
            XCTAssertEqual(kp[3 * 8], .infinity)
            XCTAssertEqual(vp[3 * 8], 1)
        }
        XCTAssertEqual(c.withKeep(batch: 1) { Array(UnsafeBufferPointer(start: $0, count: 4)) }, [1, 1, 0, 1])
    }

    /// Half the bytes; rows survive growth; a value beyond f16's range turns the cache back to fp32 with the earlier
    /// rows widened (exact: they were f16 values) and the new ones as given.
    func testStorageGrowthAndFallback() {
        let c = KVCache(batch: 2, width: 8, capacity: 2, half: true)
        XCTAssertEqual(c.bytes, 2 * 2 * 8 * 2 * 2 + 2 * 2)
        let k1 = Tensor(shape: [2 * 3, 8], values: (0..<48).map { Float($0) * 0.25 - 3 })
        let v1 = Tensor(shape: [2 * 3, 8], values: (0..<48).map { Float($0) * -0.5 })
        c.append(k: k1, v: v1, keep: [1, 1, 1, 1, 1, 0], n: 3)   // grows 2 → 4
        XCTAssertTrue(c.half)
        XCTAssertEqual(c.capacity, 4)
        XCTAssertEqual(c.bytes, 2 * 4 * 8 * 2 * 2 + 2 * 4)
        let big = Tensor(shape: [2, 8], values: [Float](repeating: 1e5, count: 16))
        c.append(k: big, v: big, keep: [1, 1], n: 1)
        XCTAssertFalse(c.half, "1e5 does not fit f16: fp32 from now on")
        XCTAssertEqual(c.length, 4)
        for b in 0..<2 {
            let kp = c.keyPointer(batch: b), vp = c.valuePointer(batch: b)
            for t in 0..<3 {
                for d in 0..<8 {
                    XCTAssertEqual(kp[t * 8 + d], k1.data[(b * 3 + t) * 8 + d], "key row \(b),\(t)")   // quarter steps: exact in f16
                    XCTAssertEqual(vp[t * 8 + d], v1.data[(b * 3 + t) * 8 + d], "value row \(b),\(t)")
                }
            }
            XCTAssertEqual(kp[3 * 8], 1e5)
        }
        XCTAssertEqual(c.withKeep(batch: 1) { Array(UnsafeBufferPointer(start: $0, count: 4)) }, [1, 1, 0, 1])
    }

    /// `useKVCache(.auto)` (the CLI's default) picks f16 exactly when decode steps stream bf16 or quantized weights and
    /// the family has an f16 cache; `.f32` / `.f16` are taken as given; T5 stays fp32 under auto and refuses f16.
    /// Mu's cross-attention K/V follow the choice: the encodes after it store them in f16 or fp32.
    func testAutoPicksHalfCacheForNarrowDecodeWeights() throws {
        let llama = try XCTUnwrap(ModelRegistry.load(folder: fixture("tiny_llama/f32.gguf")) as? LlamaModel)
        let dec = try smallMuDecoder(seed: 3), mu = try smallMu(seed: 3)
        for (name, m) in [("llama", llama as LanguageModel), ("mu_decoder", dec), ("mu", mu)] {
            XCTAssertTrue(m.decodeStreamsFP32, name)
            XCTAssertFalse(try m.useKVCache(.auto), "\(name): fp32 weights keep the fp32 cache")
            for format in [WeightFormat.bf16, .int8, .q8_0, .q4_0] {
                try m.useDecodeWeights(format)
                XCTAssertFalse(m.decodeStreamsFP32, "\(name) \(format)")
                XCTAssertTrue(try m.useKVCache(.auto), "\(name) \(format): auto picks f16")
                XCTAssertTrue(m.usesHalfKVCache, name)
                XCTAssertFalse(try m.useKVCache(.f32), "\(name) \(format): f32 as asked")
                XCTAssertFalse(m.usesHalfKVCache, name)
            }
            try m.useDecodeWeights(.f32)
            XCTAssertTrue(try m.useKVCache(.f16), "\(name): f16 as asked")
            XCTAssertFalse(try m.useKVCache(.auto), "\(name): back on fp32 weights, auto is fp32 again")
            XCTAssertFalse(m.usesHalfKVCache, name)
        }
        // Mu's cross-attention K/V: f16 under auto beside int8 weights, fp32 beside fp32 ones or when asked
        func crossIsHalf() throws -> [Bool] {
            try mu.encode([[5, 6, 7, 8]]).cross.map { if case .f16 = $0 { return true } else { return false } }
        }
        XCTAssertEqual(try crossIsHalf(), [Bool](repeating: false, count: mu.decoderBlocks.count))
        mu.useDecodeWeights(.int8)
        try mu.useKVCache(.auto)
        XCTAssertTrue(mu.halfCrossKV)
        XCTAssertEqual(try crossIsHalf(), [Bool](repeating: true, count: mu.decoderBlocks.count))
        try mu.useKVCache(.f32)
        XCTAssertEqual(try crossIsHalf(), [Bool](repeating: false, count: mu.decoderBlocks.count))
        mu.useDecodeWeights(.f32)
        try mu.useKVCache(.f16)
        XCTAssertEqual(try crossIsHalf(), [Bool](repeating: true, count: mu.decoderBlocks.count))
        try mu.useKVCache(.auto)
        XCTAssertFalse(mu.halfCrossKV)
        // a GGUF whose blocks are kept: the decode steps read them, so auto picks f16
        let kept = try ModelRegistry.load(folder: fixture("tiny_llama/mixed.gguf"), keepQuantized: true)
        XCTAssertFalse(kept.decodeStreamsFP32)
        XCTAssertTrue(try kept.useKVCache(.auto))
        // caches built after the choice take it
        let keptLlama = try XCTUnwrap(kept as? LlamaModel)
        XCTAssertTrue(keptLlama.makeCache(batch: 1, offsets: [0], capacity: 8).caches[0].half)
        try kept.useKVCache(.f32)
        XCTAssertFalse(keptLlama.makeCache(batch: 1, offsets: [0], capacity: 8).caches[0].half)
        let t5 = try T5Model(config: T5Config(vocabSize: 300, dModel: 80, dKV: 16, dFF: 160, numLayers: 1, numDecoderLayers: 1,
                                              numHeads: 4), randomSeed: 1)
        t5.useDecodeWeights(.q8_0)
        XCTAssertFalse(t5.decodeStreamsFP32)
        XCTAssertFalse(t5.supportsHalfKVCache)
        XCTAssertFalse(try t5.useKVCache(.auto), "T5 keeps fp32 under auto")
        XCTAssertTrue(t5.halfCrossKV, "T5's cross-attention K/V follow auto beside q8_0 weights")
        XCTAssertTrue(try t5.encode([[5, 6, 7]]).cross.allSatisfy { if case .f16 = $0 { return true } else { return false } })
        try t5.useKVCache(.f32)
        XCTAssertFalse(t5.halfCrossKV)
        XCTAssertThrowsError(try t5.useKVCache(.f16))
        XCTAssertEqual(try KVCacheStorage(parsing: "F16"), .f16)
        XCTAssertThrowsError(try KVCacheStorage(parsing: "f8")) { XCTAssertTrue("\($0)".contains("KV cache storage must be auto, f32, f16 or int8 (got 'f8')"), "\($0)") }
        XCTAssertEqual(try PromptWeights(parsing: "INT8"), .int8)
        XCTAssertThrowsError(try PromptWeights(parsing: "i4")) { XCTAssertTrue("\($0)".contains("prompt weights must be f32, int8, decode or blocks (got 'i4')"), "\($0)") }
    }

    /// `encore score` (generate, chat and score share RuntimeOptions) applies --kv-cache: with q4_0 decode weights its
    /// log-probabilities are the library's with an f16 cache by default (auto) and with an fp32 cache under
    /// `--kv-cache f32`; the two caches give different scores here, so a choice that is not applied fails.
    func testScoreFollowsTheKVCacheChoice() throws {
        let model = fixture("tiny_llama/f32.gguf")
        let input = Array(5..<40), target = Array(40..<52)
        func cli(_ extra: [String]) throws -> [Double] {
            try scoreLogprobs(model: model, input: input, target: target, ["--decode-weights", "q4_0"] + extra)
        }
        func library(half: Bool) throws -> [Double] {
            let m = try ModelRegistry.load(folder: model)
            try m.useDecodeWeights(.q4_0)
            try m.useHalfKVCache(half)
            return try m.score(input: input, target: target).map(Double.init)
        }
        let gap = maxGap
        let half = try library(half: true), full = try library(half: false)
        XCTAssertEqual(half.count, target.count)
        XCTAssertGreaterThan(gap(half, full), 1e-5, "the f16 cache changes these scores")
        let auto = try cli([]), f32 = try cli(["--kv-cache", "f32"]), f16 = try cli(["--kv-cache", "F16"])
        XCTAssertLessThan(gap(auto, half), 1e-6, "auto beside q4_0 weights: f16")
        XCTAssertLessThan(gap(f32, full), 1e-6)
        XCTAssertLessThan(gap(f16, half), 1e-6, "the value is case-insensitive, as the library's parser")
        // int8 rows: the library's int8-cache scores, which differ from both
        let m8 = try ModelRegistry.load(folder: model)
        try m8.useDecodeWeights(.q4_0)
        try m8.useKVCache(.int8)
        let int8 = try m8.score(input: input, target: target).map(Double.init)
        XCTAssertGreaterThan(gap(int8, half), 1e-5, "the int8 cache changes these scores")
        XCTAssertLessThan(gap(try cli(["--kv-cache", "int8"]), int8), 1e-6, "--kv-cache int8")
    }

    /// T5's decoder reads fp32 rows: asking it for an f16 cache is an error that says so; f32 is accepted.
    func testT5RefusesHalfCache() throws {
        let t5 = try T5Model(config: T5Config(vocabSize: 300, dModel: 80, dKV: 16, dFF: 160, numLayers: 1, numDecoderLayers: 1,
                                              numHeads: 4), randomSeed: 1)
        XCTAssertThrowsError(try t5.useHalfKVCache(true)) { XCTAssertTrue("\($0)".contains("f16 KV cache is not supported"), "\($0)") }
        XCTAssertNoThrow(try t5.useHalfKVCache(false))
        XCTAssertThrowsError(try t5.useKVCache(.int8)) { XCTAssertTrue("\($0)".contains("int8 KV cache is not supported"), "\($0)") }
    }
}
