import Foundation

/// A subword model: turns one pre-tokenized word into ids.
protocol TokenModel: AnyObject, Sendable {
    /// Appends the ids of `word` to `ids`.
    func tokenize(_ word: String, into ids: inout [Int32])
    /// The token string of an id, if the id is in the model's vocabulary.
    func idToToken(_ id: Int32) -> String?
    /// The id of a token string.
    func tokenToId(_ token: String) -> Int32?
    /// One more than the largest id in the model's vocabulary.
    var vocabSize: Int { get }
}

/// A thread-safe cache from word to ids with a size limit, sharded so that batch workers
/// rarely wait on each other.
final class WordCache: @unchecked Sendable {
    private final class Shard: @unchecked Sendable {
        var table: [TokenKey: [Int32]] = [:]
        let lock = NSLock()
    }
    private let shards: [Shard]
    private let capacityPerShard: Int
    static let maxWordBytes = 256

    init(capacity: Int = 20_000) {
        shards = (0..<16).map { _ in Shard() }
        capacityPerShard = capacity / 16
    }

    @inline(__always) private func shard(_ word: String) -> Shard {
        // Cheap shard choice from the length and the first and last bytes.
        let u = word.utf8
        let h = u.count &+ Int(u.first ?? 0) &* 31 &+ Int(u.last ?? 0) &* 7
        return shards[h & 15]
    }

    func get(_ word: String) -> [Int32]? {
        if word.utf8.count >= Self.maxWordBytes { return nil }
        let s = shard(word)
        s.lock.lock(); defer { s.lock.unlock() }
        return s.table[TokenKey(word)]
    }

    func put(_ word: String, _ ids: [Int32]) {
        guard capacityPerShard > 0, word.utf8.count < Self.maxWordBytes else { return }
        let s = shard(word)
        s.lock.lock(); defer { s.lock.unlock() }
        if s.table.count < capacityPerShard { s.table[TokenKey(word)] = ids }
    }
}

/// Builds a dense id → token table, rejecting negative ids.
func reverseVocab(_ vocab: Vocab, context: String) throws -> [String?] {
    var maxId: Int32 = -1
    for (_, id) in vocab {
        guard id >= 0 else { throw TokenizerError(.config, "\(context): negative token id \(id)") }
        maxId = max(maxId, id)
    }
    // Real vocabularies are dense; refuse absurdly sparse ids instead of allocating for them.
    guard Int(maxId) < max(4 * vocab.count + 1024, 1 << 20) else {
        throw TokenizerError(.config, "\(context): token id \(maxId) is far beyond the \(vocab.count)-entry vocab")
    }
    var r = [String?](repeating: nil, count: Int(maxId) + 1)
    for (tok, id) in vocab { r[Int(id)] = tok.string }
    return r
}

/// Byte-pair encoding with merge ranks, as in HF `tokenizers` (`models/bpe`).
final class BPEModel: TokenModel, @unchecked Sendable {
    let vocab: Vocab
    let vocabR: [String?]
    /// Packed pair (left << 32 | right) → packed (rank << 32 | new id).
    private let merges: PairTable
    /// Id of each single-character token: dense for the BMP, a dictionary above.
    private let bmpIds: [Int32]
    private let scalarIds: [UInt32: Int32]
    private let byteIds: [Int32]
    let unkId: Int32?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let continuingSubwordPrefix: String?
    let endOfWordSuffix: String?
    /// llama.cpp's Gemma 4 rule: a word made only of newlines is one token when the vocab has it.
    let newlineRunsWhole: Bool
    private let cache = WordCache()

    var vocabSize: Int { vocabR.count }

    init(vocab: Vocab, merges: [(String, String)], unkToken: String?, fuseUnk: Bool,
         byteFallback: Bool, ignoreMerges: Bool, continuingSubwordPrefix: String?, endOfWordSuffix: String?,
         context: String, newlineRunsWhole: Bool = false) throws {
        self.newlineRunsWhole = newlineRunsWhole
        self.vocab = vocab
        self.vocabR = try reverseVocab(vocab, context: context)
        let prefixLen = continuingSubwordPrefix?.utf8.count ?? 0
        var m: [UInt64: UInt64] = [:]
        m.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let aId = vocab[TokenKey(a)] else {
                throw TokenizerError(.config, "\(context): merge \(rank) '\(a) \(b)' uses '\(a)', which is not in the vocab")
            }
            guard let bId = vocab[TokenKey(b)] else {
                throw TokenizerError(.config, "\(context): merge \(rank) '\(a) \(b)' uses '\(b)', which is not in the vocab")
            }
            let merged = a + dropBytes(b, min(prefixLen, b.utf8.count))
            guard let newId = vocab[TokenKey(merged)] else {
                throw TokenizerError(.config, "\(context): merge \(rank) '\(a) \(b)' makes '\(merged)', which is not in the vocab")
            }
            m[UInt64(UInt32(aId)) << 32 | UInt64(UInt32(bId))] = UInt64(rank) << 32 | UInt64(UInt32(newId))
        }
        self.merges = PairTable(m)
        var sids: [UInt32: Int32] = [:]
        var bmp = [Int32](repeating: -1, count: 0x10000)
        for (key, id) in vocab {
            var it = key.string.unicodeScalars.makeIterator()
            if let first = it.next(), it.next() == nil {
                if first.value < 0x10000 { bmp[Int(first.value)] = id } else { sids[first.value] = id }
            }
        }
        self.bmpIds = bmp
        self.scalarIds = sids
        var bids = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let name = "<0x" + String(format: "%02X", b) + ">"
            if let id = vocab[TokenKey(name)] { bids[b] = id }
        }
        self.byteIds = bids
        if let u = unkToken {
            guard let id = vocab[TokenKey(u)] else {
                throw TokenizerError(.config, "\(context): unk_token '\(u)' is not in the vocab")
            }
            self.unkId = id
        } else {
            self.unkId = nil
        }
        self.fuseUnk = fuseUnk
        self.byteFallback = byteFallback
        self.ignoreMerges = ignoreMerges
        self.continuingSubwordPrefix = continuingSubwordPrefix
        self.endOfWordSuffix = endOfWordSuffix
    }

    func idToToken(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < vocabR.count else { return nil }
        return vocabR[Int(id)]
    }

    func tokenToId(_ token: String) -> Int32? { vocab[TokenKey(token)] }

    func tokenize(_ word: String, into ids: inout [Int32]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab[TokenKey(word)] { ids.append(id); return }
        if newlineRunsWhole, word.utf8.allSatisfy({ $0 == 0x0A }), let id = vocab[TokenKey(word)] { ids.append(id); return }
        if let hit = cache.get(word) { ids.append(contentsOf: hit); return }
        let result = mergeWord(word)
        cache.put(word, result)
        ids.append(contentsOf: result)
    }

    private struct Symbol {
        var c: Int32
        var prev: Int32
        var next: Int32
        var len: Int32
    }

    /// The initial symbols of a word: one per character, with byte fallback and unk handling.
    private func initialSymbols(_ word: String) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(word.utf8.count)
        var unk: Int32? = nil  // pending unk (fused)
        let simple = continuingSubwordPrefix == nil && endOfWordSuffix == nil
        let scalars = word.unicodeScalars
        var idx = scalars.startIndex
        var isFirst = true
        while idx != scalars.endIndex {
            let sc = scalars[idx]
            let nextIdx = scalars.index(after: idx)
            let isLast = nextIdx == scalars.endIndex
            var id: Int32?
            var text = ""
            if simple {
                if sc.value < 0x10000 {
                    let v = bmpIds[Int(sc.value)]
                    id = v >= 0 ? v : nil
                } else {
                    id = scalarIds[sc.value]
                }
            } else {
                text = String(sc)
                if !isFirst, let p = continuingSubwordPrefix { text = p + text }
                if isLast, let s = endOfWordSuffix { text += s }
                id = vocab[TokenKey(text)]
            }
            if let id {
                if let u = unk { out.append(u); unk = nil }
                out.append(id)
            } else {
                var handled = false
                if byteFallback {
                    let bytes = simple ? Array(String(sc).utf8) : Array(text.utf8)
                    if bytes.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                        for b in bytes { out.append(byteIds[Int(b)]) }
                        handled = true
                    }
                }
                if !handled, let u = unkId {
                    if let pending = unk {
                        if !fuseUnk { out.append(pending) }
                    }
                    unk = u
                }
            }
            isFirst = false
            idx = nextIdx
        }
        if let u = unk { out.append(u) }
        return out
    }

    private func mergeWord(_ word: String) -> [Int32] {
        let initial = initialSymbols(word)
        let n = initial.count
        if n < 2 { return initial }
        var symbols = [Symbol]()
        symbols.reserveCapacity(n)
        for (i, c) in initial.enumerated() {
            symbols.append(Symbol(c: c, prev: Int32(i - 1), next: i + 1 < n ? Int32(i + 1) : -1, len: 1))
        }
        var heap = MergeHeap()
        heap.reserve(n)
        for i in 0..<(n - 1) {
            if let m = merges[pairKey(initial[i], initial[i + 1])] {
                heap.push(key: (m >> 32) << 32 | UInt64(i), newId: Int32(truncatingIfNeeded: m & 0xFFFF_FFFF))
            }
        }
        while let top = heap.pop() {
            let pos = Int(top.key & 0xFFFF_FFFF)
            if symbols[pos].len == 0 { continue }
            let nextPos = Int(symbols[pos].next)
            if nextPos < 0 { continue }
            let right = symbols[nextPos]
            guard let m = merges[pairKey(symbols[pos].c, right.c)],
                  Int32(truncatingIfNeeded: m & 0xFFFF_FFFF) == top.newId else { continue }
            symbols[pos].c = top.newId
            symbols[pos].len += right.len
            symbols[pos].next = right.next
            symbols[nextPos].len = 0
            if right.next >= 0 { symbols[Int(right.next)].prev = Int32(pos) }
            let cur = symbols[pos]
            if cur.prev >= 0 {
                let p = Int(cur.prev)
                if let m2 = merges[pairKey(symbols[p].c, cur.c)] {
                    heap.push(key: (m2 >> 32) << 32 | UInt64(p), newId: Int32(truncatingIfNeeded: m2 & 0xFFFF_FFFF))
                }
            }
            if cur.next >= 0 {
                let nx = Int(cur.next)
                if let m2 = merges[pairKey(cur.c, symbols[nx].c)] {
                    heap.push(key: (m2 >> 32) << 32 | UInt64(pos), newId: Int32(truncatingIfNeeded: m2 & 0xFFFF_FFFF))
                }
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        var i = 0
        while i >= 0 && i < n {
            out.append(symbols[i].c)
            i = Int(symbols[i].next)
        }
        return out
    }
}

/// An open-addressing hash map from packed token pairs to packed (rank, new id), with a cheap
/// multiplicative hash (the merge lookup is the hottest operation of BPE).
struct PairTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private let shift: UInt64
    private static let empty = UInt64.max

    init(_ dict: [UInt64: UInt64]) {
        var cap = 16
        var bits: UInt64 = 4
        while cap < dict.count * 2 + 2 { cap <<= 1; bits += 1 }
        keys = [UInt64](repeating: Self.empty, count: cap)
        values = [UInt64](repeating: 0, count: cap)
        mask = cap - 1
        shift = 64 - bits
        for (k, v) in dict {
            var i = Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> shift)
            while keys[i] != Self.empty { i = (i + 1) & mask }
            keys[i] = k
            values[i] = v
        }
    }

    @inline(__always) subscript(key: UInt64) -> UInt64? {
        var i = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == Self.empty { return nil }
            i = (i + 1) & mask
        }
    }
}

@inline(__always) func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
    UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
}

/// A binary min-heap of merges ordered by (rank, position).
struct MergeHeap {
    private var keys: [UInt64] = []
    private var ids: [Int32] = []

    mutating func reserve(_ n: Int) { keys.reserveCapacity(n); ids.reserveCapacity(n) }

    mutating func push(key: UInt64, newId: Int32) {
        keys.append(key); ids.append(newId)
        var i = keys.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if keys[p] <= keys[i] { break }
            keys.swapAt(p, i); ids.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> (key: UInt64, newId: Int32)? {
        guard let first = keys.first else { return nil }
        let firstId = ids[0]
        let lastKey = keys.removeLast(), lastId = ids.removeLast()
        if !keys.isEmpty {
            keys[0] = lastKey; ids[0] = lastId
            var i = 0
            let n = keys.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && keys[l] < keys[m] { m = l }
                if r < n && keys[r] < keys[m] { m = r }
                if m == i { break }
                keys.swapAt(m, i); ids.swapAt(m, i)
                i = m
            }
        }
        return (first, firstId)
    }
}

/// A byte trie over token strings, for common-prefix search.
struct ByteTrie: Sendable {
    private var children: [UInt64: Int32] = [:]
    private var values: [Int32] = [-1]

    mutating func insert(_ key: [UInt8], value: Int32) {
        var node: Int32 = 0
        for b in key {
            let k = UInt64(UInt32(node)) << 8 | UInt64(b)
            if let c = children[k] {
                node = c
            } else {
                let c = Int32(values.count)
                values.append(-1)
                children[k] = c
                node = c
            }
        }
        values[Int(node)] = value
    }

    /// Calls `body(length, value)` for every key that is a prefix of `bytes[start...]`.
    @inline(__always)
    func prefixes(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, _ body: (Int, Int32) -> Void) {
        var node: Int32 = 0
        var i = start
        while i < bytes.count {
            guard let c = children[UInt64(UInt32(node)) << 8 | UInt64(bytes[i])] else { return }
            node = c
            i += 1
            let v = values[Int(node)]
            if v >= 0 { body(i - start, v) }
        }
    }
}

/// The SentencePiece Unigram model with Viterbi decoding (HF `models/unigram`, optimized path).
final class UnigramModel: TokenModel, @unchecked Sendable {
    let pieces: [String]
    let scores: [Double]
    let tokenToIds: Vocab
    let unkId: Int32?
    let byteFallback: Bool
    private let minScore: Double
    private let trie: ByteTrie
    private let byteIds: [Int32]
    private let cache = WordCache()

    var vocabSize: Int { pieces.count }

    init(vocab: [(String, Double)], unkId: Int?, byteFallback: Bool, context: String) throws {
        pieces = vocab.map { $0.0 }
        scores = vocab.map { $0.1 }
        var t: Vocab = [:]
        var trie = ByteTrie()
        var minS = Double.infinity
        for (i, (tok, score)) in vocab.enumerated() {
            t[TokenKey(tok)] = Int32(i)
            trie.insert(Array(tok.utf8), value: Int32(i))
            minS = min(minS, score)
        }
        tokenToIds = t
        self.trie = trie
        minScore = vocab.isEmpty ? 0 : minS
        if let u = unkId {
            guard u >= 0, u < vocab.count else {
                throw TokenizerError(.config, "\(context): unk_id \(u) is outside the vocab of \(vocab.count) pieces")
            }
            self.unkId = Int32(u)
        } else {
            self.unkId = nil
        }
        self.byteFallback = byteFallback
        var bids = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = t[TokenKey("<0x" + String(format: "%02X", b) + ">")] { bids[b] = id }
        }
        byteIds = bids
    }

    func idToToken(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < pieces.count else { return nil }
        return pieces[Int(id)]
    }

    func tokenToId(_ token: String) -> Int32? { tokenToIds[TokenKey(token)] }

    func tokenize(_ word: String, into ids: inout [Int32]) {
        if word.isEmpty { return }
        if let hit = cache.get(word) { ids.append(contentsOf: hit); return }
        var out: [Int32] = []
        for piece in viterbi(word) {
            if let id = tokenToIds[TokenKey(piece)] { out.append(id); continue }
            if byteFallback {
                let bytes = Array(piece.utf8)
                if bytes.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                    for b in bytes { out.append(byteIds[Int(b)]) }
                    continue
                }
            }
            if let u = unkId { out.append(u) }
        }
        cache.put(word, out)
        ids.append(contentsOf: out)
    }

    private func viterbi(_ sentence: String) -> [String] {
        let bytes = Array(sentence.utf8)
        let size = bytes.count
        let unkScore = minScore - 10.0
        var bestScore = [Double](repeating: 0, count: size + 1)
        var startsAt = [Int](repeating: -1, count: size + 1)
        var bestId = [Int32](repeating: 0, count: size + 1)
        bytes.withUnsafeBufferPointer { buf in
            var pos = 0
            while pos < size {
                let here = bestScore[pos]
                let lead = buf[pos]
                let mblen = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
                var hasSingle = false
                trie.prefixes(buf, from: pos) { len, id in
                    let end = pos + len
                    let cand = scores[Int(id)] + here
                    if startsAt[end] < 0 || cand > bestScore[end] {
                        bestScore[end] = cand
                        startsAt[end] = pos
                        bestId[end] = id
                    }
                    if len == mblen { hasSingle = true }
                }
                if !hasSingle {
                    let end = min(pos + mblen, size)
                    let cand = unkScore + here
                    if startsAt[end] < 0 || cand > bestScore[end] {
                        bestScore[end] = cand
                        startsAt[end] = pos
                        bestId[end] = unkId ?? -1
                    }
                }
                pos += mblen
            }
        }
        var results: [String] = []
        var fused: [[UInt8]] = []
        var end = size
        while end > 0 {
            let start = startsAt[end]
            if start < 0 { break }
            let piece = Array(bytes[start..<end])
            if let u = unkId, bestId[end] == u {
                fused.append(piece)
            } else {
                if !fused.isEmpty {
                    results.append(String(decoding: fused.reversed().joined(), as: UTF8.self))
                    fused.removeAll()
                }
                results.append(String(decoding: piece, as: UTF8.self))
            }
            end = start
        }
        if !fused.isEmpty { results.append(String(decoding: fused.reversed().joined(), as: UTF8.self)) }
        return results.reversed()
    }
}

/// Greedy longest-match-first WordPiece (BERT).
final class WordPieceModel: TokenModel, @unchecked Sendable {
    let vocab: Vocab
    let vocabR: [String?]
    let unkId: Int32
    let prefix: String
    let maxChars: Int
    private let cache = WordCache()

    var vocabSize: Int { vocabR.count }

    init(vocab: Vocab, unkToken: String, prefix: String, maxChars: Int, context: String) throws {
        self.vocab = vocab
        vocabR = try reverseVocab(vocab, context: context)
        guard let u = vocab[TokenKey(unkToken)] else {
            throw TokenizerError(.config, "\(context): unk_token '\(unkToken)' is not in the vocab")
        }
        unkId = u
        self.prefix = prefix
        self.maxChars = maxChars
    }

    func idToToken(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < vocabR.count else { return nil }
        return vocabR[Int(id)]
    }

    func tokenToId(_ token: String) -> Int32? { vocab[TokenKey(token)] }

    func tokenize(_ word: String, into ids: inout [Int32]) {
        if word.isEmpty { return }
        if let hit = cache.get(word) { ids.append(contentsOf: hit); return }
        let chars = Array(word.unicodeScalars)
        var out: [Int32] = []
        if chars.count > maxChars {
            out = [unkId]
        } else {
            var start = 0
            var bad = false
            while start < chars.count {
                var end = chars.count
                var found: Int32?
                while start < end {
                    var s = makeString(chars[start..<end])
                    if start > 0 { s = prefix + s }
                    if let id = vocab[TokenKey(s)] { found = id; break }
                    end -= 1
                }
                guard let id = found else { bad = true; break }
                out.append(id)
                start = end
            }
            if bad { out = [unkId] }
        }
        cache.put(word, out)
        ids.append(contentsOf: out)
    }
}

/// A plain word → id lookup (HF `WordLevel`).
final class WordLevelModel: TokenModel, @unchecked Sendable {
    let vocab: Vocab
    let vocabR: [String?]
    let unkId: Int32?

    var vocabSize: Int { vocabR.count }

    init(vocab: Vocab, unkToken: String?, context: String) throws {
        self.vocab = vocab
        vocabR = try reverseVocab(vocab, context: context)
        unkId = unkToken.flatMap { vocab[TokenKey($0)] }
    }

    func idToToken(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < vocabR.count else { return nil }
        return vocabR[Int(id)]
    }

    func tokenToId(_ token: String) -> Int32? { vocab[TokenKey(token)] }

    func tokenize(_ word: String, into ids: inout [Int32]) {
        if let id = vocab[TokenKey(word)] { ids.append(id) } else if let u = unkId { ids.append(u) }
    }
}
