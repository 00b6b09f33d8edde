import Foundation

/// Reads a model folder's `config.json` and turns decoding problems into errors that name the field.
enum ConfigFile {
    /// The raw JSON object and its `model_type`.
    static func read(folder: String) throws -> (data: Data, modelType: String, path: String) {
        let path = folder + "/config.json"
        guard FileManager.default.fileExists(atPath: path) else {
            throw EncoreError(.invalidConfig, "\(folder): no config.json (a model folder holds config.json + model.safetensors)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EncoreError(.io, "\(path): cannot read")
        }
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: data) } catch {
            throw EncoreError(.invalidConfig, "\(path): not valid JSON")
        }
        guard let dict = obj as? [String: Any] else { throw EncoreError(.invalidConfig, "\(path): must be a JSON object") }
        guard let type = dict["model_type"] as? String else {
            throw EncoreError(.invalidConfig, "\(path): missing string field 'model_type' (supported: \(ModelRegistry.supportedTypes.joined(separator: ", ")))")
        }
        return (data, type, path)
    }

    /// Decodes `T` from JSON, reporting which field is missing or has the wrong type.
    static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as DecodingError {
            switch error {
            case .keyNotFound(let key, _):
                throw EncoreError(.invalidConfig, "\(path): missing required field '\(key.stringValue)'")
            case .typeMismatch(let t, let ctx):
                throw EncoreError(.invalidConfig, "\(path): field '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' must be \(describe(t))")
            case .valueNotFound(let t, let ctx):
                throw EncoreError(.invalidConfig, "\(path): field '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' is null but must be \(describe(t))")
            case .dataCorrupted(let ctx):
                throw EncoreError(.invalidConfig, "\(path): field '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))': \(ctx.debugDescription)")
            @unknown default:
                throw EncoreError(.invalidConfig, "\(path): \(error)")
            }
        }
    }

    private static func describe(_ t: Any.Type) -> String {
        switch t {
        case is Int.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        default: return "\(t)"
        }
    }
}

/// The reference `MuConfig` (microsoft/encoder-decoder-slm, `modeling_mu.py`), field for field, plus
/// `model_type` and the BOS/EOS ids. The defaults of the released 330M model are ``MuConfig/mu330m``.
///
/// ```json
/// {"model_type": "mu", "n_encoder_layer": 20, "n_decoder_layer": 10, "n_embd": 1024, "qkv_embd": 384,
///  "is_interleaved": false, "hidden_dim": 4096, "n_head": 6, "n_kv_head": 3, "block_size": 1024,
///  "rope_theta": 10000, "rope_factor": 1.0, "pad_token_id": 0, "vocab_size": 32128,
///  "bos_token_id": 1, "eos_token_id": 32000}
/// ```
public struct MuConfig: Codable, Equatable, Sendable {
    public var modelType: String = "mu"
    public var nEncoderLayer: Int
    public var nDecoderLayer: Int
    public var nEmbd: Int
    /// Attention width (heads × head width); `null` in JSON means `nEmbd`.
    public var qkvEmbd: Int
    public var isInterleaved: Bool = false
    public var hiddenDim: Int
    public var nHead: Int
    public var nKVHead: Int
    public var blockSize: Int = 1024
    public var dropout: Double = 0.1
    public var ropeTheta: Double = 10000
    public var ropeFactor: Double = 1.0
    public var padTokenId: Int = 0
    public var vocabSize: Int
    public var bosTokenId: Int = 1
    public var eosTokenId: Int? = 32000

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", nEncoderLayer = "n_encoder_layer", nDecoderLayer = "n_decoder_layer"
        case nEmbd = "n_embd", qkvEmbd = "qkv_embd", isInterleaved = "is_interleaved", hiddenDim = "hidden_dim"
        case nHead = "n_head", nKVHead = "n_kv_head", blockSize = "block_size", dropout
        case ropeTheta = "rope_theta", ropeFactor = "rope_factor", padTokenId = "pad_token_id"
        case vocabSize = "vocab_size", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    public init(nEncoderLayer: Int, nDecoderLayer: Int, nEmbd: Int, qkvEmbd: Int? = nil, isInterleaved: Bool = false,
                hiddenDim: Int, nHead: Int, nKVHead: Int, blockSize: Int = 1024, ropeTheta: Double = 10000,
                ropeFactor: Double = 1.0, padTokenId: Int = 0, vocabSize: Int, bosTokenId: Int = 1, eosTokenId: Int? = 32000) {
        self.nEncoderLayer = nEncoderLayer
        self.nDecoderLayer = nDecoderLayer
        self.nEmbd = nEmbd
        self.qkvEmbd = qkvEmbd ?? nEmbd
        self.isInterleaved = isInterleaved
        self.hiddenDim = hiddenDim
        self.nHead = nHead
        self.nKVHead = nKVHead
        self.blockSize = blockSize
        self.ropeTheta = ropeTheta
        self.ropeFactor = ropeFactor
        self.padTokenId = padTokenId
        self.vocabSize = vocabSize
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "mu"
        nEncoderLayer = try c.decode(Int.self, forKey: .nEncoderLayer)
        nDecoderLayer = try c.decode(Int.self, forKey: .nDecoderLayer)
        let f = try SharedFields(from: decoder)
        (nEmbd, qkvEmbd, isInterleaved, hiddenDim, nHead, nKVHead) = (f.nEmbd, f.qkvEmbd, f.isInterleaved, f.hiddenDim, f.nHead, f.nKVHead)
        (blockSize, dropout, ropeTheta, ropeFactor) = (f.blockSize, f.dropout, f.ropeTheta, f.ropeFactor)
        (padTokenId, vocabSize, bosTokenId, eosTokenId) = (f.padTokenId, f.vocabSize, f.bosTokenId, f.eosTokenId)
    }

    /// Decodes and validates a config.json, naming the field at fault.
    public static func decode(_ data: Data, path: String) throws -> MuConfig {
        let c = try ConfigFile.decode(MuConfig.self, from: data, path: path)
        guard c.modelType == "mu" else { throw EncoreError(.invalidConfig, "\(path): model_type is '\(c.modelType)', expected 'mu'") }
        try c.validate(path: path)
        return c
    }

    /// The released 330M model's configuration (the reference `MuConfig()` defaults, Phi-3.5 BOS/EOS).
    public static let mu330m = MuConfig(nEncoderLayer: 20, nDecoderLayer: 10, nEmbd: 1024, qkvEmbd: 384,
                                        hiddenDim: 4096, nHead: 6, nKVHead: 3, vocabSize: 32128)

    var attention: AttentionShape {
        AttentionShape(heads: nHead, kvHeads: nKVHead, headDim: qkvEmbd / nHead, interleaved: isInterleaved)
    }

    var rope: RoPE { RoPE(theta: ropeTheta, factor: ropeFactor, blockSize: blockSize, headDim: qkvEmbd / nHead) }

    /// Throws if the numbers cannot describe a working model, naming the field.
    public func validate(path: String = "config") throws {
        try ModelShapeCheck.validate(path: path, layers: [("n_encoder_layer", nEncoderLayer), ("n_decoder_layer", nDecoderLayer)],
                                     nEmbd: nEmbd, qkvEmbd: qkvEmbd, hiddenDim: hiddenDim, nHead: nHead, nKVHead: nKVHead,
                                     vocabSize: vocabSize, padTokenId: padTokenId, bosTokenId: bosTokenId,
                                     eosTokenId: eosTokenId, ropeTheta: ropeTheta, ropeFactor: ropeFactor, blockSize: blockSize)
    }
}

/// The paper's matched decoder-only baseline: `nLayer` causal blocks shaped like Mu's encoder blocks (RoPE
/// from position 0, GELU MLP, biases, tied head), with the same width, heads and vocabulary as a Mu model.
/// ``MuDecoderConfig/matching(_:)`` picks the depth whose parameter count is closest to the Mu model's.
public struct MuDecoderConfig: Codable, Equatable, Sendable {
    public var modelType: String = "mu_decoder"
    public var nLayer: Int
    public var nEmbd: Int
    public var qkvEmbd: Int
    public var isInterleaved: Bool = false
    public var hiddenDim: Int
    public var nHead: Int
    public var nKVHead: Int
    public var blockSize: Int = 1024
    public var dropout: Double = 0.1
    public var ropeTheta: Double = 10000
    public var ropeFactor: Double = 1.0
    public var padTokenId: Int = 0
    public var vocabSize: Int
    public var bosTokenId: Int = 1
    public var eosTokenId: Int? = 32000

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", nLayer = "n_layer"
        case nEmbd = "n_embd", qkvEmbd = "qkv_embd", isInterleaved = "is_interleaved", hiddenDim = "hidden_dim"
        case nHead = "n_head", nKVHead = "n_kv_head", blockSize = "block_size", dropout
        case ropeTheta = "rope_theta", ropeFactor = "rope_factor", padTokenId = "pad_token_id"
        case vocabSize = "vocab_size", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    public init(nLayer: Int, nEmbd: Int, qkvEmbd: Int, isInterleaved: Bool, hiddenDim: Int, nHead: Int, nKVHead: Int,
                blockSize: Int, ropeTheta: Double, ropeFactor: Double, padTokenId: Int, vocabSize: Int,
                bosTokenId: Int, eosTokenId: Int?) {
        self.nLayer = nLayer
        self.nEmbd = nEmbd
        self.qkvEmbd = qkvEmbd
        self.isInterleaved = isInterleaved
        self.hiddenDim = hiddenDim
        self.nHead = nHead
        self.nKVHead = nKVHead
        self.blockSize = blockSize
        self.ropeTheta = ropeTheta
        self.ropeFactor = ropeFactor
        self.padTokenId = padTokenId
        self.vocabSize = vocabSize
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "mu_decoder"
        nLayer = try c.decode(Int.self, forKey: .nLayer)
        let f = try SharedFields(from: decoder)
        (nEmbd, qkvEmbd, isInterleaved, hiddenDim, nHead, nKVHead) = (f.nEmbd, f.qkvEmbd, f.isInterleaved, f.hiddenDim, f.nHead, f.nKVHead)
        (blockSize, dropout, ropeTheta, ropeFactor) = (f.blockSize, f.dropout, f.ropeTheta, f.ropeFactor)
        (padTokenId, vocabSize, bosTokenId, eosTokenId) = (f.padTokenId, f.vocabSize, f.bosTokenId, f.eosTokenId)
    }

    /// The decoder-only twin of a Mu config: same blocks and vocabulary, depth chosen so the parameter
    /// count is as close as possible to the Mu model's (31 layers, 329.8M for the 330M Mu).
    public static func matching(_ mu: MuConfig) -> MuDecoderConfig {
        var c = MuDecoderConfig(nLayer: 1, nEmbd: mu.nEmbd, qkvEmbd: mu.qkvEmbd, isInterleaved: mu.isInterleaved,
                                hiddenDim: mu.hiddenDim, nHead: mu.nHead, nKVHead: mu.nKVHead, blockSize: mu.blockSize,
                                ropeTheta: mu.ropeTheta, ropeFactor: mu.ropeFactor, padTokenId: mu.padTokenId,
                                vocabSize: mu.vocabSize, bosTokenId: mu.bosTokenId, eosTokenId: mu.eosTokenId)
        let target = ParameterCount.mu(mu)
        let fixed = mu.vocabSize * mu.nEmbd + mu.nEmbd
        let perBlock = ParameterCount.selfBlock(nEmbd: mu.nEmbd, qkvEmbd: mu.qkvEmbd, kvWidth: mu.attention.kvWidth, hidden: mu.hiddenDim)
        c.nLayer = max(1, Int((Double(target - fixed) / Double(perBlock)).rounded()))
        return c
    }

    var attention: AttentionShape {
        AttentionShape(heads: nHead, kvHeads: nKVHead, headDim: qkvEmbd / nHead, interleaved: isInterleaved)
    }

    var rope: RoPE { RoPE(theta: ropeTheta, factor: ropeFactor, blockSize: blockSize, headDim: qkvEmbd / nHead) }

    public func validate(path: String = "config") throws {
        try ModelShapeCheck.validate(path: path, layers: [("n_layer", nLayer)], nEmbd: nEmbd, qkvEmbd: qkvEmbd,
                                     hiddenDim: hiddenDim, nHead: nHead, nKVHead: nKVHead, vocabSize: vocabSize,
                                     padTokenId: padTokenId, bosTokenId: bosTokenId, eosTokenId: eosTokenId,
                                     ropeTheta: ropeTheta, ropeFactor: ropeFactor, blockSize: blockSize)
    }
}

/// The fields Mu and its decoder-only twin share (same JSON names), decoded once for both configs.
private struct SharedFields: Decodable {
    var nEmbd: Int, qkvEmbd: Int, isInterleaved: Bool, hiddenDim: Int, nHead: Int, nKVHead: Int
    var blockSize: Int, dropout: Double, ropeTheta: Double, ropeFactor: Double
    var padTokenId: Int, vocabSize: Int, bosTokenId: Int, eosTokenId: Int?

    enum CodingKeys: String, CodingKey {
        case nEmbd = "n_embd", qkvEmbd = "qkv_embd", isInterleaved = "is_interleaved", hiddenDim = "hidden_dim"
        case nHead = "n_head", nKVHead = "n_kv_head", blockSize = "block_size", dropout
        case ropeTheta = "rope_theta", ropeFactor = "rope_factor", padTokenId = "pad_token_id"
        case vocabSize = "vocab_size", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        nEmbd = try c.decode(Int.self, forKey: .nEmbd)
        qkvEmbd = try c.decodeIfPresent(Int.self, forKey: .qkvEmbd) ?? nEmbd
        isInterleaved = try c.decodeIfPresent(Bool.self, forKey: .isInterleaved) ?? false
        hiddenDim = try c.decode(Int.self, forKey: .hiddenDim)
        nHead = try c.decode(Int.self, forKey: .nHead)
        nKVHead = try c.decode(Int.self, forKey: .nKVHead)
        blockSize = try c.decodeIfPresent(Int.self, forKey: .blockSize) ?? 1024
        dropout = try c.decodeIfPresent(Double.self, forKey: .dropout) ?? 0.1
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000
        ropeFactor = try c.decodeIfPresent(Double.self, forKey: .ropeFactor) ?? 1.0
        padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId) ?? 0
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId) ?? 1
        eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId)
    }
}

enum ModelShapeCheck {
    static func validate(path: String, layers: [(String, Int)], nEmbd: Int, qkvEmbd: Int, hiddenDim: Int, nHead: Int,
                         nKVHead: Int, vocabSize: Int, padTokenId: Int, bosTokenId: Int, eosTokenId: Int?,
                         ropeTheta: Double, ropeFactor: Double, blockSize: Int) throws {
        func fail(_ m: String) -> EncoreError { EncoreError(.invalidConfig, "\(path): \(m)") }
        for (name, n) in layers where n < 0 || n > 10_000 { throw fail("'\(name)' must be between 0 and 10000, got \(n)") }
        for (name, v) in [("n_embd", nEmbd), ("qkv_embd", qkvEmbd), ("hidden_dim", hiddenDim), ("n_head", nHead),
                          ("n_kv_head", nKVHead), ("vocab_size", vocabSize), ("block_size", blockSize)] where v <= 0 || v > 1 << 24 {
            throw fail("'\(name)' must be a positive integer (at most 2^24), got \(v)")
        }
        guard qkvEmbd % nHead == 0 else { throw fail("'qkv_embd' (\(qkvEmbd)) must be divisible by 'n_head' (\(nHead))") }
        guard nHead % nKVHead == 0 else { throw fail("'n_head' (\(nHead)) must be divisible by 'n_kv_head' (\(nKVHead))") }
        let headDim = qkvEmbd / nHead
        guard headDim % 2 == 0, headDim <= 1024 else { throw fail("head width qkv_embd/n_head = \(headDim) must be even and at most 1024 (RoPE)") }
        guard (0..<vocabSize).contains(padTokenId) else { throw fail("'pad_token_id' \(padTokenId) is outside the vocabulary (0..<\(vocabSize))") }
        guard (0..<vocabSize).contains(bosTokenId) else { throw fail("'bos_token_id' \(bosTokenId) is outside the vocabulary (0..<\(vocabSize))") }
        if let e = eosTokenId, e < 0 { throw fail("'eos_token_id' must not be negative") }
        guard ropeTheta > 0, ropeTheta.isFinite else { throw fail("'rope_theta' must be positive") }
        guard ropeFactor >= 1, ropeFactor.isFinite else { throw fail("'rope_factor' must be >= 1 (1 disables NTK scaling)") }
    }
}

/// Parameter counts computed from a configuration.
public enum ParameterCount {
    static func attention(nEmbd: Int, qkvEmbd: Int, kvWidth: Int) -> Int {
        (nEmbd * qkvEmbd + qkvEmbd) + 2 * (nEmbd * kvWidth + kvWidth) + (qkvEmbd * nEmbd + nEmbd)
    }
    static func mlp(nEmbd: Int, hidden: Int) -> Int { (nEmbd * hidden + hidden) + (hidden * nEmbd + nEmbd) }
    static func selfBlock(nEmbd: Int, qkvEmbd: Int, kvWidth: Int, hidden: Int) -> Int {
        attention(nEmbd: nEmbd, qkvEmbd: qkvEmbd, kvWidth: kvWidth) + mlp(nEmbd: nEmbd, hidden: hidden) + 2 * nEmbd
    }
    /// Parameters of a Mu model with a tied head (332,042,240 for ``MuConfig/mu330m``).
    public static func mu(_ c: MuConfig) -> Int {
        let kv = c.attention.kvWidth
        let enc = selfBlock(nEmbd: c.nEmbd, qkvEmbd: c.qkvEmbd, kvWidth: kv, hidden: c.hiddenDim)
        let dec = 2 * attention(nEmbd: c.nEmbd, qkvEmbd: c.qkvEmbd, kvWidth: kv) + mlp(nEmbd: c.nEmbd, hidden: c.hiddenDim) + 3 * c.nEmbd
        return c.vocabSize * c.nEmbd + c.nEncoderLayer * enc + c.nDecoderLayer * dec + 2 * c.nEmbd
    }
    /// Parameters of a decoder-only baseline with a tied head.
    public static func muDecoder(_ c: MuDecoderConfig) -> Int {
        c.vocabSize * c.nEmbd + c.nLayer * selfBlock(nEmbd: c.nEmbd, qkvEmbd: c.qkvEmbd, kvWidth: c.attention.kvWidth, hidden: c.hiddenDim) + c.nEmbd
    }
}

/// Rotary position embedding parameters, including the reference's NTK "dynamic" scaling.
struct RoPE: Sendable {
    var theta: Double
    var factor: Double
    var blockSize: Int
    var headDim: Int

    /// inv_freq[j] = 1 / base^(2j/d); with factor > 1 the base grows with the sequence length
    /// (reference v1: base·((f·max(T, block)/block) − (f − 1))^(d/(d−2))).
    func inverseFrequencies(sequenceLength: Int) -> [Float] {
        var base = Float(theta)
        if factor > 1 {
            let seqEff = Double(max(sequenceLength, blockSize))
            let adj = pow(factor * seqEff / Double(blockSize) - (factor - 1), Double(headDim) / Double(headDim - 2))
            base = Float(theta * adj)
        }
        return (0..<(headDim / 2)).map { j in
            let e = Float(2 * j) / Float(headDim)
            return 1 / powf(base, e)
        }
    }
}
