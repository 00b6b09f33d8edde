import Foundation

/// The KV caches of a decoder-only model for one batch, with each row's left padding.
final class CausalDecoderCache {
    let caches: [KVCache]
    /// Left padding of each row: row b's position of cache slot t is t − offsets[b].
    let offsets: [Int]
    /// Tokens fed so far, per row (padding included), for models that must recompute the prefix.
    var history: [[Int]]
    /// Attention kernel scratch, kept across steps (a decode step allocates no buffer).
    var scratch: [Float] = []
    var length: Int { caches.first?.length ?? 0 }

    init(layers: Int, batch: Int, width: Int, offsets: [Int], capacity: Int, rows: KVRowFormat = .f32, headDim: Int) {
        caches = (0..<layers).map { _ in KVCache(batch: batch, width: width, capacity: capacity, rows: rows, headDim: headDim) }
        self.offsets = offsets
        history = [[Int]](repeating: [], count: batch)
    }
}

/// Which positions' logits ``CausalDecoder/forward(_:ids:n:outputs:keyKeep:)`` returns.
enum CausalOutputs {
    /// Every new position: [B*n, V].
    case all
    /// The last new position of each row: [B, V].
    case last
    /// Positions `range` of each row's new positions: [B*range.count, V].
    case rows(Range<Int>)
}

/// What a decoder-only family supplies; generation, full-sequence logits and scoring are shared
/// (``CausalDecoder/beginCausalGeneration(prompts:)``, ``CausalDecoder/causalLogits(_:)``, ``CausalDecoder/causalScore(input:target:bos:)``).
protocol CausalDecoder: LanguageModel {
    var layerCount: Int { get }
    var kvWidth: Int { get }
    /// Values per head in a cached row (int8 caches take a scale per head).
    var kvHeadDim: Int { get }
    /// Runs `n` new tokens per row (ids [B*n]) through the model, extending the cache, and returns the logits
    /// of `outputs`. `keyKeep` [B*n] (0 masks that key), when given, replaces the family's own key mask for the
    /// new positions (a caller's attention mask, as Hugging Face's `attention_mask`).
    func forward(_ cache: CausalDecoderCache, ids: [Int], n: Int, outputs: CausalOutputs, keyKeep: [UInt8]?) -> Tensor
    /// The longest sequence the model attends over in full (sliding-window models), nil when unlimited.
    var attentionSpan: Int? { get }
    /// The storage of KV caches built afterwards (generation, scoring; ``KVCache``): fp32, f16 (llama.cpp's default
    /// cache type) or int8.
    var kvRows: KVRowFormat { get }
}

extension CausalDecoder {
    func makeCache(batch: Int, offsets: [Int], capacity: Int) -> CausalDecoderCache {
        CausalDecoderCache(layers: layerCount, batch: batch, width: kvWidth, offsets: offsets, capacity: capacity,
                           rows: kvRows, headDim: kvHeadDim)
    }

    var attentionSpan: Int? { nil }

    func validate(_ rows: [[Int]], what: String) throws {
        guard !rows.isEmpty else { throw EncoreError(.invalidArgument, "empty batch") }
        for (i, r) in rows.enumerated() {
            guard !r.isEmpty else { throw EncoreError(.invalidArgument, "\(what) \(i): empty token sequence") }
            try TokenCheck.validate(r, vocab: vocabSize, what: "\(what) \(i)")
        }
        try checkSpan(rows.map(\.count).max()!)
    }

    /// Refuses sequences past a sliding window (Encore attends over the whole cache).
    func checkSpan(_ length: Int) throws {
        if let span = attentionSpan, length > span {
            throw EncoreError(.invalidArgument, "sequence of \(length) tokens is longer than the model's sliding attention window (\(span)); sliding-window attention is not supported")
        }
    }

    /// Logits [B, T, V] for a right-padded batch read from position 0.
    func causalLogits(_ rows: [[Int]]) throws -> Tensor {
        try validate(rows, what: "input")
        let T = rows.map(\.count).max()!
        let ids = rows.flatMap { $0 + [Int](repeating: padTokenId, count: T - $0.count) }
        let cache = makeCache(batch: rows.count, offsets: [Int](repeating: 0, count: rows.count), capacity: T)
        return forward(cache, ids: ids, n: T, outputs: .all, keyKeep: nil).reshaped([rows.count, T, vocabSize])
    }

    /// Logits [B, range.count, V] of positions `range` for rows of equal length read from position 0, with the
    /// caller's key mask `attentionMask` [B][T] (0: masked; Hugging Face's `attention_mask` without
    /// `position_ids`, so positions count the masked slots too). A distillation teacher's forward.
    func causalLogits(_ rows: [[Int]], attentionMask: [[UInt8]], range: Range<Int>) throws -> Tensor {
        try validate(rows, what: "teacher input")
        let T = rows[0].count
        guard rows.allSatisfy({ $0.count == T }), attentionMask.count == rows.count, attentionMask.allSatisfy({ $0.count == T }) else {
            throw EncoreError(.invalidArgument, "teacher input: rows and attention masks must all have the same length")
        }
        guard range.lowerBound >= 0, range.upperBound <= T, !range.isEmpty else {
            throw EncoreError(.invalidArgument, "teacher input: positions \(range) outside 0..<\(T)")
        }
        let cache = makeCache(batch: rows.count, offsets: [Int](repeating: 0, count: rows.count), capacity: T)
        return forward(cache, ids: rows.flatMap { $0 }, n: T, outputs: .rows(range), keyKeep: attentionMask.flatMap { $0 })
            .reshaped([rows.count, range.count, vocabSize])
    }

    /// Left-pads the prompts, prefills them into the cache and returns the state for the first new token.
    func beginCausalGeneration(prompts: [[Int]]) throws -> GenerationState {
        try validate(prompts, what: "prompt")
        let T = prompts.map(\.count).max()!
        let offsets = prompts.map { T - $0.count }
        let ids = prompts.flatMap { [Int](repeating: padTokenId, count: T - $0.count) + $0 }   // left-padded
        let cache = makeCache(batch: prompts.count, offsets: offsets, capacity: T + 64)
        let logits = forward(cache, ids: ids, n: T, outputs: .last, keyKeep: nil)
        return CausalDecoderState(model: self, cache: cache, logits: logits)
    }

    /// Log-probabilities of `target` after `input` in one sequence (`bos` when the input is empty).
    func causalScore(input: [Int], target: [Int], bos: Int?) throws -> [Float] {
        guard !target.isEmpty else { return [] }
        guard let context = input.isEmpty ? bos.map({ [$0] }) : input else {
            throw EncoreError(.invalidArgument, "score: empty input and the model has no BOS token")
        }
        try TokenCheck.validate(target, vocab: vocabSize, what: "target")
        let seq = context + target.dropLast()
        let all = try causalLogits([seq]).reshaped([seq.count, vocabSize])
        let lp = Ops.logSoftmax(all.rows((context.count - 1)..<seq.count))
        return target.enumerated().map { lp[$0.offset, $0.element] }
    }
}

/// The generation state of any ``CausalDecoder``.
final class CausalDecoderState: GenerationState {
    let model: any CausalDecoder
    let cache: CausalDecoderCache
    var logits: Tensor
    var batchSize: Int { cache.offsets.count }
    var cacheBytes: Int { cache.caches.reduce(0) { $0 + $1.bytes } }
    var encodeSeconds: Double { 0 }

    init(model: any CausalDecoder, cache: CausalDecoderCache, logits: Tensor) {
        self.model = model
        self.cache = cache
        self.logits = logits
    }

    func advance(tokens: [Int]) throws {
        guard tokens.count == batchSize else { throw EncoreError(.invalidArgument, "advance: \(tokens.count) tokens for \(batchSize) rows") }
        try TokenCheck.validate(tokens, vocab: model.vocabSize, what: "generated tokens")
        try model.checkSpan(cache.length + 1)
        logits = model.forward(cache, ids: tokens, n: 1, outputs: .last, keyKeep: nil)
    }
}

/// The families whose self-attention KV caches can be f16 or int8 (Llama, mu_decoder, Mu's decoder; not T5): the one
/// list ``LanguageModel/useHalfKVCache(_:)``, ``LanguageModel/useKVCache(_:)``, ``LanguageModel/usesHalfKVCache`` and
/// ``LanguageModel/supportsHalfKVCache`` read.
protocol HalfKVCacheModel: AnyObject {
    var kvRows: KVRowFormat { get set }
}
extension LlamaModel {
    /// Whether the KV caches built afterwards are f16 (``kvRows``; setting false: fp32).
    public var halfKVCache: Bool { get { kvRows == .f16 } set { kvRows = newValue ? .f16 : .f32 } }
}
extension MuDecoderModel {
    /// Whether the KV caches built afterwards are f16 (``kvRows``; setting false: fp32).
    public var halfKVCache: Bool { get { kvRows == .f16 } set { kvRows = newValue ? .f16 : .f32 } }
}
extension MuModel {
    /// Whether the decoder's KV caches built afterwards are f16 (``kvRows``; setting false: fp32).
    public var halfKVCache: Bool { get { kvRows == .f16 } set { kvRows = newValue ? .f16 : .f32 } }
}
extension LlamaModel: HalfKVCacheModel {}
extension MuDecoderModel: HalfKVCacheModel {}
extension MuModel: HalfKVCacheModel {}

/// The encoder-decoders whose cross-attention K/V can be kept in f16 or int8 (Mu, T5; ``CrossAttentionKV``): f16 set
/// by ``LanguageModel/useKVCache(_:)``, int8 by choice (``KVRowFormat``).
public protocol CrossKVModel: AnyObject {
    /// The storage of the cross-attention K/V of later encodes.
    var crossKV: KVRowFormat { get set }
}
extension CrossKVModel {
    /// Whether the cross-attention K/V of later encodes are kept in f16 (setting false: fp32).
    public var halfCrossKV: Bool {
        get { crossKV == .f16 }
        set { crossKV = newValue ? .f16 : .f32 }
    }
}
extension MuModel: CrossKVModel {}
extension T5Model: CrossKVModel {}

/// How cached key and value rows are stored: a self-attention KV cache (``LlamaModel/kvRows``, ``MuModel/kvRows``,
/// ``MuDecoderModel/kvRows``) or an encoder-decoder's cross-attention K/V (``MuModel/crossKV``, ``T5Model/crossKV``),
/// computed once per encode and read by every decode step over all the encoder positions.
///
/// - `f32`: exact.
/// - `f16`: half the bytes; logits within ~1e-3–2e-3 of fp32's (rows beyond f16's range stay or turn fp32).
/// - `int8`: a quarter of fp32's bytes: one int8 per value and an fp32 scale per position and block of 32 values (per head when 32 does not divide it) — largest |x| / 127
///   (``Int8HeadRows``); decode steps widen the int8 values in the attention kernel (`ek_attention_i8kv`), longer
///   queries (prompts, teacher forcing, scoring) read them dequantized. Logits within ~1e-2 of fp32's on the Mu
///   fixtures (heads of 16: a scale per head), up to 9e-2 on T5's sensitive random ones; SmolLM2-135M's
///   log-probabilities move by 0.016 on average, its perplexity unchanged. Rows with a non-finite value stay
///   or turn fp32.
///
/// ```swift
/// try mu.useDecodeWeights(.q4_0); try mu.useKVCache(.auto); mu.crossKV = .int8
/// ```
public enum KVRowFormat: String, CaseIterable, Sendable {
    case f32, f16, int8

    /// Parses `f32`, `f16` or `int8` (any case), naming the choices otherwise.
    public init(parsing s: String) throws { self = try Self.parsed(s, what: "K/V row storage") }
}

extension LanguageModel {
    /// Keeps the self-attention KV caches built afterwards (generation, scoring) in f16 (`true`) or fp32 (`false`, the default):
    /// ``LlamaModel/halfKVCache``, ``MuDecoderModel/halfKVCache``, ``MuModel/halfKVCache``. T5's decoder keeps fp32
    /// (its relative-bias attention kernel reads fp32 rows): asking it for f16 throws.
    ///
    /// ```swift
    /// try model.useHalfKVCache(true)   // half the cache memory; logits within ~1e-3 of the fp32 cache's
    /// ```
    public func useHalfKVCache(_ on: Bool) throws {
        guard let m = self as? HalfKVCacheModel else {
            if on { throw EncoreError(.unsupported, "\(modelType): an f16 KV cache is not supported (its decoder attention reads fp32 rows)") }
            return
        }
        m.kvRows = on ? .f16 : .f32
    }

    /// Whether the self-attention KV caches built from now on are f16 (``useHalfKVCache(_:)``, ``useKVCache(_:)``).
    public var usesHalfKVCache: Bool { (self as? HalfKVCacheModel)?.kvRows == .f16 }

    /// The storage of the self-attention KV caches built from now on (``useKVCache(_:)``): fp32 for T5 always.
    public var kvCacheRows: KVRowFormat { (self as? HalfKVCacheModel)?.kvRows ?? .f32 }

    /// Whether this family can keep its self-attention KV caches in f16 (all but T5).
    public var supportsHalfKVCache: Bool { self is HalfKVCacheModel }

    /// Whether decode steps stream fp32 matrices: no decode format chosen (``useDecodeWeights(_:)``), no GGUF blocks
    /// kept, and fp32 copies still there (``usePromptWeights(_:)`` with `.int8` releases them: steps then stream the
    /// int8 rows). False for bf16, int8, Q8_0, Q4_x and K-quant decode weights.
    public var decodeStreamsFP32: Bool {
        switch self {
        case let m as LlamaModel: m.headDecode == nil && m.blocks.allSatisfy { $0.linears.allSatisfy { $0.decodeFormat == .f32 } }
        case let m as MuModel: m.lmHeadDecode == nil && (m.decoderBlocks.first?.mlp.fc1.decodeFormat ?? .f32) == .f32
        case let m as MuDecoderModel: m.lmHeadDecode == nil && (m.blocks.first?.mlp.fc1.decodeFormat ?? .f32) == .f32
        case let m as T5Model: m.lmHeadDecode == nil
        default: true
        }
    }

    /// Chooses the storage of the self-attention KV caches built from now on (see ``KVCacheStorage``; ``kvCacheRows``
    /// reads it back) and returns whether it is f16. `.auto` picks f16 when the decode weights are not fp32 and the
    /// family supports it, as llama.cpp keeps its cache in f16: call it after ``useDecodeWeights(_:)``. `.f16` and
    /// `.int8` throw for T5 (nothing changed). The cross-attention K/V of later encodes (``MuModel/crossKV``,
    /// ``T5Model/crossKV``), the cache an encoder-decoder's decode steps read over the encoder positions, follow the
    /// same choice (``crossKVRows(_:)``; T5's under `.auto` too, though its self-attention cache stays fp32).
    ///
    /// ```swift
    /// try model.useDecodeWeights(.q4_0)
    /// let half = try model.useKVCache(.auto)   // true: 4-bit weights, f16 cache
    /// try model.useKVCache(.int8)              // false: int8 rows (Mu's cross K/V too)
    /// ```
    @discardableResult
    public func useKVCache(_ storage: KVCacheStorage) throws -> Bool {
        if storage == .int8 {
            guard let m = self as? HalfKVCacheModel else {
                throw EncoreError(.unsupported, "\(modelType): an int8 KV cache is not supported (its decoder attention reads fp32 rows; --cross-kv int8 keeps its cross-attention K/V in int8)")
            }
            m.kvRows = .int8
        } else {
            let half = switch storage {
            case .f32, .int8: false
            case .f16: true
            case .auto: supportsHalfKVCache && !decodeStreamsFP32
            }
            try useHalfKVCache(half)
        }
        (self as? CrossKVModel)?.crossKV = crossKVRows(storage)
        return usesHalfKVCache
    }

    /// The cross-attention K/V storage `storage` gives an encoder-decoder (the rule ``useKVCache(_:)`` applies): int8
    /// under `.int8`, f16 under `.f16` or under `.auto` beside bf16 or quantized decode weights, fp32 otherwise.
    public func crossKVRows(_ storage: KVCacheStorage) -> KVRowFormat {
        storage == .int8 ? .int8 : storesCrossKVInF16(storage) ? .f16 : .f32
    }

    /// Whether `storage` keeps an encoder-decoder's cross-attention K/V in f16 (the rule ``useKVCache(_:)`` applies):
    /// `.f16`, or `.auto` beside bf16 or quantized decode weights. T5 follows it too, though its self-attention cache
    /// stays fp32.
    public func storesCrossKVInF16(_ storage: KVCacheStorage) -> Bool {
        storage == .f16 || (storage == .auto && !decodeStreamsFP32)
    }
}

/// Storage of the self-attention KV caches (decoder-only models, Mu's decoder) and of the cross-attention K/V of the
/// encoder-decoders (Mu, T5).
///
/// - `f32`: exact; the library's default.
/// - `f16`: half the cache memory and half the bytes a decode step reads over it; logits within ~1e-3 of the fp32
///   cache's (llama.cpp's default cache type). Values beyond f16's range turn a cache back to fp32. For Mu also the
///   cross-attention K/V (at 4,096 input tokens 63 of Mu-330M's 200 MB read per int8 decode step in fp32).
/// - `int8`: a quarter of fp32's memory and bytes read: int8 values with an fp32 scale per position and block of 32 values (or head)
///   (``KVRowFormat/int8``, llama.cpp's `-ctk q8_0 -ctv q8_0` in spirit); logits within ~1e-2 on the Mu fixtures,
///   up to 9e-2 on T5's sensitive random fixtures; SmolLM2-135M's log-probabilities move by 0.016 on average, its
///   perplexity unchanged. Mu's cross-attention
///   K/V too; refused for T5, whose cross K/V take int8 through ``T5Model/crossKV`` (`--cross-kv int8`).
///   Non-finite values turn a cache back to fp32.
/// - `auto`: f16 when decode steps stream bf16 or quantized weights (whose own rounding is larger), fp32 otherwise
///   and for T5's self-attention cache (its cross-attention K/V follow the rule); the CLI's default.
public enum KVCacheStorage: String, CaseIterable, Sendable {
    case auto, f32, f16, int8

    /// Parses `auto`, `f32`, `f16` or `int8` (any case), naming the choices otherwise.
    public init(parsing s: String) throws { self = try Self.parsed(s, what: "KV cache storage") }
}
