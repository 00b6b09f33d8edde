import Foundation
import EncoreKernels

/// How to pick tokens and when to stop.
///
/// `temperature` 0 is greedy (argmax). Otherwise logits are divided by the temperature, cut to the `topK`
/// largest (0 = off) and to the smallest set whose probability reaches `topP` (1 = off), then sampled with a
/// generator seeded by `seed`, so the same seed gives the same tokens.
public struct GenerationParameters: Sendable, Equatable {
    public var maxTokens: Int
    public var temperature: Float
    public var topK: Int
    public var topP: Float
    public var seed: UInt64
    /// Stop a row when it produces this id (defaults to the model's EOS); nil never stops early.
    public var eosTokenId: Int?
    public var useModelEOS: Bool

    public init(maxTokens: Int = 64, temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0,
                eosTokenId: Int? = nil, useModelEOS: Bool = true) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        self.eosTokenId = eosTokenId
        self.useModelEOS = useModelEOS
    }

    func validate() throws {
        guard maxTokens >= 0 else { throw EncoreError(.invalidArgument, "max tokens must be >= 0, got \(maxTokens)") }
        guard temperature >= 0, temperature.isFinite else { throw EncoreError(.invalidArgument, "temperature must be >= 0, got \(temperature)") }
        guard topK >= 0 else { throw EncoreError(.invalidArgument, "top-k must be >= 0, got \(topK)") }
        guard topP > 0, topP <= 1 else { throw EncoreError(.invalidArgument, "top-p must be in (0, 1], got \(topP)") }
    }
}

/// Picks the next token from a row of logits.
public struct Sampler {
    public var parameters: GenerationParameters
    private var rng: SplitMix64
    private var scratch: [Float] = []
    private var order: [Int] = []

    public init(parameters: GenerationParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed)
    }

    /// The chosen token id for logits [V].
    public mutating func sample(_ logits: UnsafePointer<Float>, count v: Int) -> Int {
        let p = parameters
        if p.temperature == 0 || p.topK == 1 { return Int(ek_argmax_f32(logits, v)) }
        if scratch.count != v { scratch = [Float](repeating: 0, count: v); order = Array(0..<v) }
        for i in 0..<v { scratch[i] = logits[i] / p.temperature }
        // candidates sorted by logit, descending (stable on ties: lower id first)
        var candidates: [Int]
        if p.topK > 0 && p.topK < v {
            let k = p.topK
            candidates = Array(0..<v)
            candidates.sort { scratch[$0] > scratch[$1] || (scratch[$0] == scratch[$1] && $0 < $1) }
            candidates = Array(candidates.prefix(k))
        } else {
            candidates = Array(0..<v)
            if p.topP < 1 { candidates.sort { scratch[$0] > scratch[$1] || (scratch[$0] == scratch[$1] && $0 < $1) } }
        }
        let mx = candidates.reduce(-Float.infinity) { max($0, scratch[$1]) }
        var probs = candidates.map { Double(expf(scratch[$0] - mx)) }
        var total = probs.reduce(0, +)
        if p.topP < 1 {
            var acc = 0.0, keep = 0
            for (i, q) in probs.enumerated() {
                acc += q / total
                keep = i + 1
                if acc >= Double(p.topP) { break }
            }
            candidates = Array(candidates.prefix(keep))
            probs = Array(probs.prefix(keep))
            total = probs.reduce(0, +)
        }
        var r = rng.nextUnitDouble() * total
        for (i, q) in probs.enumerated() {
            r -= q
            if r < 0 { return candidates[i] }
        }
        return candidates.last!
    }
}

/// One generated token, as streamed.
public struct TokenEvent: Sendable, Equatable {
    /// Row of the batch.
    public var row: Int
    public var token: Int
    /// 0-based index of this token within its row's output.
    public var index: Int
}

/// The result of generating for a batch.
public struct GenerationResult: Sendable {
    /// Generated ids per row (no BOS; the EOS that stopped a row is included).
    public var tokens: [[Int]]
    /// Seconds from the call to the first token of the batch (encode + first step, or prefill).
    public var timeToFirstToken: Double
    /// Seconds spent encoding (encoder-decoder only).
    public var encodeSeconds: Double
    /// Seconds spent on tokens after the first.
    public var decodeSeconds: Double
    /// Decode steps after the first token.
    public var decodeSteps: Int
    /// Bytes held by caches at the end.
    public var cacheBytes: Int
}

/// Runs generation for any ``LanguageModel``: encode/prefill once, then one cached step per token.
///
/// ```swift
/// let gen = Generator(model: model)
/// let result = try gen.generate(prompts: [[5, 6, 7]], parameters: .init(maxTokens: 20)) { event in
///     print(event.token)      // streamed as produced
///     return true             // false stops early
/// }
/// ```
public struct Generator {
    public let model: LanguageModel
    public init(model: LanguageModel) { self.model = model }

    /// Generates for a batch of prompts (any lengths). `onToken` receives every token as it is produced;
    /// returning false stops generation.
    @discardableResult
    public func generate(prompts: [[Int]], parameters: GenerationParameters,
                         onToken: ((TokenEvent) -> Bool)? = nil) throws -> GenerationResult {
        try parameters.validate()
        let t0 = now()
        let eos = parameters.eosTokenId ?? (parameters.useModelEOS ? model.eosTokenId : nil)
        var out = [[Int]](repeating: [], count: prompts.count)
        guard parameters.maxTokens > 0 else {
            return GenerationResult(tokens: out, timeToFirstToken: 0, encodeSeconds: 0, decodeSeconds: 0, decodeSteps: 0, cacheBytes: 0)
        }
        let state = try model.beginGeneration(prompts: prompts)
        var sampler = Sampler(parameters: parameters)
        var finished = [Bool](repeating: false, count: prompts.count)
        let v = model.vocabSize
        var ttft = 0.0, tFirst = 0.0, steps = 0
        var stop = false
        for step in 0..<parameters.maxTokens {
            var next = [Int](repeating: eos ?? model.padTokenId, count: prompts.count)
            for b in 0..<prompts.count {
                let tok = sampler.sample(state.logits.data + b * v, count: v)
                if finished[b] { next[b] = eos ?? tok; continue }   // the reference keeps feeding EOS
                next[b] = tok
                out[b].append(tok)
                if let eos, tok == eos { finished[b] = true }
                if let onToken, !onToken(TokenEvent(row: b, token: tok, index: out[b].count - 1)) { stop = true }
            }
            if step == 0 { ttft = now() - t0; tFirst = now() }
            if stop || finished.allSatisfy({ $0 }) || step == parameters.maxTokens - 1 { break }
            try state.advance(tokens: next)
            steps += 1
        }
        let decode = steps > 0 ? now() - tFirst : 0
        return GenerationResult(tokens: out, timeToFirstToken: ttft, encodeSeconds: state.encodeSeconds,
                                decodeSeconds: decode, decodeSteps: steps, cacheBytes: state.cacheBytes)
    }

    /// Generates for one prompt.
    public func generate(prompt: [Int], parameters: GenerationParameters,
                         onToken: ((TokenEvent) -> Bool)? = nil) throws -> [Int] {
        try generate(prompts: [prompt], parameters: parameters, onToken: onToken).tokens[0]
    }

    /// The tokens of a batch as an async stream (generation runs on a background thread).
    ///
    /// ```swift
    /// for try await event in Generator(model: model).stream(prompts: [[5, 6]], parameters: .init()) { ... }
    /// ```
    public func stream(prompts: [[Int]], parameters: GenerationParameters) -> AsyncThrowingStream<TokenEvent, Error> {
        let model = self.model
        return AsyncThrowingStream { continuation in
            let box = UncheckedBox(model)
            let thread = Thread {
                do {
                    try Generator(model: box.value).generate(prompts: prompts, parameters: parameters) { event in
                        if case .terminated = continuation.yield(event) { return false }
                        return true
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.start()
        }
    }
}

final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
