import XCTest
import EncoreTokenizers
@testable import Encore

/// `encore distill`: the generalised KL (temperature, per-row student offsets, top-k teacher), the teacher cache,
/// target modes, teachers of other families, length bucketing and the CLI's handling of bad data.
final class DistillationTests: XCTestCase {
    /// Random logits [shape] (normal, scaled).
    func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 2) -> Tensor {
        var rng = SplitMix64(seed: seed)
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, values: (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale })
    }

    /// KL(p‖q)·τ² / N computed directly in double: the definition the ops must meet.
    func directKL(student: Tensor, offsets: [Int], teacher: Tensor, teacherOffset: Int, T: Int, tau: Double) -> Double {
        let (B, ts, vs) = (student.shape[0], student.shape[1], student.shape[2]), (tt, vt) = (teacher.shape[1], teacher.shape[2])
        let v = min(vs, vt)
        func logSoftmax(_ p: UnsafeMutablePointer<Float>) -> [Double] {
            let x = (0..<v).map { Double(p[$0]) / tau }, m = x.max()!
            let lse = m + log(x.reduce(0) { $0 + exp($1 - m) })
            return x.map { $0 - lse }
        }
        var total = 0.0
        for b in 0..<B {
            for t in 0..<T {
                let ls = logSoftmax(student.data + (b * ts + offsets[b] + t) * vs)
                let lt = logSoftmax(teacher.data + (b * tt + teacherOffset + t) * vt)
                for j in 0..<v { total += exp(lt[j]) * (lt[j] - ls[j]) }
            }
        }
        return tau * tau * total / Double(B * T)
    }

    /// The teacher rows [B][T, Vt] at positions offset..<offset+T, as top-k entries.
    func topK(_ teacher: Tensor, offset: Int, T: Int, k: Int, vocabulary: Int, tau: Float) -> [TeacherTopK] {
        let (B, tt, vt) = (teacher.shape[0], teacher.shape[1], teacher.shape[2])
        return (0..<B).map { b in
            let rows = Tensor(shape: [T, vt], values: Array(UnsafeBufferPointer(start: teacher.data + (b * tt + offset) * vt, count: T * vt)))
            return TeacherTopK(logits: rows, k: k, vocabulary: vocabulary, temperature: tau)
        }
    }

    /// Temperature and per-row offsets against the definition (loss 1e-5 relative; gradient against central
    /// finite differences of the op's own loss, 2e-3 relative); τ = 1 and zero offsets give the reference op exactly.
    func testTemperatureAndOffsetsMatchTheDefinition() {
        let student = randomTensor([2, 6, 13], seed: 1), teacher = randomTensor([2, 7, 11], seed: 2)
        let offsets = [1, 3], T = 3
        for tau: Float in [1, 2.5] {
            let (loss, grad) = Ops.distillationKL(student: student, studentOffsets: offsets, positions: T,
                                                  teacher: .logits(teacher, offset: 4), temperature: tau)
            let want = directKL(student: student, offsets: offsets, teacher: teacher, teacherOffset: 4, T: T, tau: Double(tau))
            XCTAssertEqual(Double(loss), want, accuracy: want * 1e-5, "tau \(tau)")
            // columns past the shared vocabulary and rows outside the compared positions get no gradient
            let g = grad.toArray()
            XCTAssertEqual(g[0..<13].map(abs).max(), 0)                         // row 0, position 0: before its offset
            XCTAssertEqual(g[((1 * 6 + 0) * 13)..<((1 * 6 + 3) * 13)].map(abs).max(), 0)   // row 1, positions 0..<3
            XCTAssertEqual(g[(0 * 6 + 1) * 13 + 12], 0)                         // column 12: past the teacher's 11
            let h: Float = 1e-2
            for (b, t, j) in [(0, 1, 0), (0, 3, 7), (1, 3, 10), (1, 5, 2)] {
                let idx = (b * 6 + t) * 13 + j
                func f(_ d: Float) -> Double {
                    let s = student.copy()
                    s.data[idx] += d
                    return Double(Ops.distillationKL(student: s, studentOffsets: offsets, positions: T, teacher: .logits(teacher, offset: 4),
                                                     temperature: tau).loss)
                }
                let fd = (f(h) - f(-h)) / Double(2 * h)
                XCTAssertEqual(Double(grad.data[idx]), fd, accuracy: max(abs(fd) * 2e-3, 2e-5), "tau \(tau) d/ds[\(b),\(t),\(j)]")
            }
        }
        // τ = 1, offsets 0: the reference op
        let s2 = randomTensor([2, 3, 13], seed: 3)
        let a = Ops.distillationKL(student: s2, teacher: teacher, offset: 4)
        let b = Ops.distillationKL(student: s2, studentOffsets: [0, 0], positions: 3, teacher: .logits(teacher, offset: 4), temperature: 1)
        XCTAssertEqual(a.loss, b.loss)
        XCTAssertEqual(a.dstudent.toArray(), b.dstudent.toArray())
    }

    /// Top-k with k = the whole (cut) vocabulary is the full KL (loss and gradient 1e-5 relative); with k < V the
    /// top-k KL (tail bucket) is a lower bound and its gradient matches finite differences (2e-3 relative).
    func testTopKKLEqualsFullKLWhenKCoversTheVocabulary() {
        let student = randomTensor([2, 4, 13], seed: 11), teacher = randomTensor([2, 8, 11], seed: 12, scale: 3)
        let T = 4
        for tau: Float in [1, 2] {
            let full = Ops.distillationKL(student: student, studentOffsets: nil, positions: T, teacher: .logits(teacher, offset: 3), temperature: tau)
            let all = topK(teacher, offset: 3, T: T, k: 11, vocabulary: 11, tau: tau)
            XCTAssertTrue(all.allSatisfy { $0.tail.allSatisfy { $0 == -.infinity } })
            let viaTopK = Ops.distillationKL(student: student, studentOffsets: nil, positions: T, teacher: .topK(all), temperature: tau)
            XCTAssertEqual(viaTopK.loss, full.loss, accuracy: full.loss * 1e-5, "tau \(tau)")
            XCTAssertLessThan(relativeError(viaTopK.dstudent.toArray(), full.dstudent.toArray()), 1e-5)

            let few = topK(teacher, offset: 3, T: T, k: 3, vocabulary: 11, tau: tau)
            XCTAssertEqual(few[0].indices.count, 3 * T)
            let part = Ops.distillationKL(student: student, studentOffsets: nil, positions: T, teacher: .topK(few), temperature: tau)
            XCTAssertLessThanOrEqual(part.loss, full.loss * (1 + 1e-6), "coarsening can only lower the KL")
            XCTAssertGreaterThan(part.loss, 0)
            let h: Float = 1e-2
            for idx in [0, 5, 12, 13 * 5 + 2, 13 * 7 + 10] {
                func f(_ d: Float) -> Double {
                    let s = student.copy()
                    s.data[idx] += d
                    return Double(Ops.distillationKL(student: s, studentOffsets: nil, positions: T, teacher: .topK(few), temperature: tau).loss)
                }
                let fd = (f(h) - f(-h)) / Double(2 * h)
                XCTAssertEqual(Double(part.dstudent.data[idx]), fd, accuracy: max(abs(fd) * 2e-3, 2e-5), "top-k gradient at \(idx), tau \(tau)")
            }
        }
        // the top-k entries are the most probable, in order, and their mass plus the tail is 1
        let one = topK(teacher, offset: 3, T: 1, k: 4, vocabulary: 11, tau: 1)[0]
        let lp = Ops.logSoftmax(Tensor(shape: [11], values: Array(UnsafeBufferPointer(start: teacher.data + 3 * 11, count: 11)))).toArray()
        XCTAssertEqual(one.indices, Array(lp.indices.sorted { lp[$0] > lp[$1] }.prefix(4)))
        let mass = one.logprobs.reduce(0) { $0 + exp(Double($1)) } + exp(Double(one.tail[0]))
        XCTAssertEqual(mass, 1, accuracy: 1e-5)
    }

    // MARK: trainers

    static let pairs = [([5, 6, 7], [20, 21]), ([9, 10], [23]), ([12, 13, 14, 15], [25, 26, 27]), ([17, 18], [29, 30])]
        .map { Seq2SeqExample(source: $0.0, target: $0.1) }

    func student(seed: UInt64 = 8) throws -> MuParameters {
        let config = MuConfig(nEncoderLayer: 1, nDecoderLayer: 1, nEmbd: 16, qkvEmbd: 16, hiddenDim: 32, nHead: 2, nKVHead: 1,
                              blockSize: 16, vocabSize: 101, bosTokenId: 1, eosTokenId: 2)
        return MuParameters(model: try MuModel(config: config, randomSeed: seed))
    }

    func settings() -> Trainer.Settings {
        var s = Trainer.Settings()
        (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.learningRate, s.warmupSteps, s.dropout, s.shuffle) = (5, 4, 2, 1e-2, 1, 0, false)
        return s
    }

    /// A teacher cache with k = the vocabulary gives the same per-step losses as the live teacher (1e-5 relative);
    /// the second epoch reads every entry from disk; another k, temperature or teacher is refused.
    func testTeacherCacheReproducesTheLiveTeacher() throws {
        let teacher = try MuDecoderModel(folder: fixture("mu/mu_decoder"))
        let dir = try makeTempDir(self)
        func run(cache: TeacherCache?) throws -> [[Float]] {
            var kd = DistillationSettings(teacher: teacher)
            (kd.alpha, kd.targets, kd.temperature, kd.cache) = (0.7, .data, 1.5, cache)
            let t = try Seq2SeqTrainer(parameters: try student(), data: Self.pairs, settings: settings(), epochs: 2, distillation: kd)
            return try (0..<4).map { _ in try t.trainStep() }.map { [$0.loss, $0.kd!, $0.ce!] }
        }
        let live = try run(cache: nil)
        let identity = ["teacher": "mu_decoder fixture"]
        let cache = try TeacherCache(directory: dir + "/c", k: 101, temperature: 1.5, vocabulary: 101, positions: 4, identity: identity)
        let cached = try run(cache: cache)
        for (a, b) in zip(cached, live) {
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: abs(y) * 1e-5, "\(cached) vs \(live)") }
        }
        XCTAssertEqual(cache.writes, 4, "one entry per example, written in the first epoch")
        XCTAssertEqual(cache.hits, 4, "the second epoch reads them")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/c").filter { $0.hasSuffix(".safetensors") }
        XCTAssertEqual(files.count, 4)
        // a third run reads everything from disk
        let again = try TeacherCache(directory: dir + "/c", k: 101, temperature: 1.5, vocabulary: 101, positions: 4, identity: identity)
        _ = try run(cache: again)
        XCTAssertEqual([again.hits, again.writes], [8, 0])
        // other settings are refused, naming the field
        XCTAssertThrowsError(try TeacherCache(directory: dir + "/c", k: 16, temperature: 1.5, vocabulary: 101, positions: 4, identity: identity)) {
            XCTAssertTrue("\($0)".contains("k = 101") && "\($0)".contains("this run has 16"), "\($0)")
        }
        XCTAssertThrowsError(try TeacherCache(directory: dir + "/c", k: 101, temperature: 1.5, vocabulary: 101, positions: 4,
                                              identity: ["teacher": "another"])) { XCTAssertTrue("\($0)".contains("teacher"), "\($0)") }
        // a damaged entry is recomputed, not trusted
        let f = try XCTUnwrap(FileHandle(forWritingAtPath: dir + "/c/" + files[0]))
        try f.truncate(atOffset: 40)
        try f.close()
        let repaired = try TeacherCache(directory: dir + "/c", k: 101, temperature: 1.5, vocabulary: 101, positions: 4, identity: identity)
        XCTAssertEqual(try run(cache: repaired).count, 4)
        XCTAssertEqual(repaired.writes, 1)
        // sampled targets cannot use a cache
        var kd = DistillationSettings(teacher: teacher)
        (kd.targets, kd.cache) = (.student, repaired)
        XCTAssertThrowsError(try Seq2SeqTrainer(parameters: try student(), data: Self.pairs, settings: settings(), epochs: 1, distillation: kd))
    }

    /// Targets from the teacher are its greedy continuations (computed once per example); from the data, the
    /// target + EOS; the loss of the KL term falls as the student learns the teacher's targets.
    func testTargetModes() throws {
        let teacher = try MuDecoderModel(folder: fixture("mu/mu_decoder"))
        var kd = DistillationSettings(teacher: teacher)
        (kd.alpha, kd.targets) = (1, .teacher)
        var s = settings()
        s.learningRate = 3e-2
        let t = try Seq2SeqTrainer(parameters: try student(), data: Self.pairs, settings: s, epochs: 10, distillation: kd)
        let targets = try t.distillationTargets(Self.pairs, micro: 0, kd: kd)
        for (e, got) in zip(Self.pairs, targets) {
            XCTAssertEqual(got, try Generator(model: teacher).generate(prompt: e.source, parameters: .init(maxTokens: 4, eosTokenId: 2)))
        }
        var kds: [Float] = []
        for _ in 0..<20 { kds.append(try t.trainStep().kd!) }
        XCTAssertLessThan(kds.suffix(2).reduce(0, +), 0.8 * kds.prefix(2).reduce(0, +), "\(kds)")
        kd.targets = .data
        let d = try Seq2SeqTrainer(parameters: try student(), data: Self.pairs, settings: s, epochs: 1, distillation: kd)
        XCTAssertEqual(try d.distillationTargets(Self.pairs, micro: 0, kd: kd), [[20, 21, 2], [23, 2], [25, 26, 27, 2], [29, 30, 2]])
    }

    /// A Llama-family teacher (the tiny Hugging Face folder): a left-padded row gives the logits of the
    /// unpadded row (masked keys; RoPE depends on position differences only) within 1e-4 relative.
    func testLlamaTeacherMasksLeftPadding() throws {
        let teacher = try XCTUnwrap(try ModelRegistry.load(folder: fixture("tiny_llama/hf")) as? DistillationTeacher)
        let row = [5, 9, 13, 40, 41, 42]
        let plain = try teacher.teacherLogits([row], attentionMask: [[1, 1, 1, 1, 1, 1]], range: 2..<6)    // [1, 4, V]
        let padded = try teacher.teacherLogits([[0, 0, 0] + row], attentionMask: [[0, 0, 0, 1, 1, 1, 1, 1, 1]], range: 5..<9)
        XCTAssertLessThan(relativeError(padded.toArray(), plain.toArray()), 1e-4)
        // without the mask the padding would be attended to
        let unmasked = try teacher.teacherLogits([[0, 0, 0] + row], attentionMask: [[1, 1, 1, 1, 1, 1, 1, 1, 1]], range: 5..<9)
        XCTAssertGreaterThan(relativeError(unmasked.toArray(), plain.toArray()), 1e-3)
        // and the full-sequence logits agree with the inference path
        let llama = try XCTUnwrap(teacher as? LlamaModel)
        let all = try llama.logits([row])                                                                    // [1, 6, V]
        XCTAssertLessThan(relativeError(Array(all.toArray()[(2 * llama.vocabSize)...]), plain.toArray()), 1e-5)
    }

    /// Length bucketing: every example once per pass, batches of similar lengths, reproducible by seed.
    func testBucketByLength() throws {
        var rng = SplitMix64(seed: 5)
        let data = (0..<203).map { i -> Seq2SeqExample in
            let n = 1 + Int(rng.next() % 40), m = 1 + Int(rng.next() % 20)
            return Seq2SeqExample(source: [Int](repeating: 5 + i % 50, count: n), target: [Int](repeating: 7, count: m))
        }
        var s = Trainer.Settings()
        (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.warmupSteps) = (32, 16, 4, 0)
        func spread(_ t: Trainer, _ order: [Int]) -> Double {
            let lengths = order.map { min(data[$0].source.count, 32) + min(data[$0].target.count + 1, 16) }
            let batches = stride(from: 0, to: 200, by: 4).map { Array(lengths[$0..<($0 + 4)]) }
            return Double(batches.map { $0.max()! - $0.min()! }.reduce(0, +)) / Double(batches.count)
        }
        func trainer(bucket: Bool, seed: UInt64) throws -> Trainer {
            var s2 = s
            (s2.bucketByLength, s2.seed) = (bucket, seed)
            return try Seq2SeqTrainer(parameters: try student(), data: data, settings: s2, epochs: 1)
        }
        let plain = try trainer(bucket: false, seed: 1), bucketed = try trainer(bucket: true, seed: 1)
        let a = bucketed.epochOrder(), b = plain.epochOrder()
        XCTAssertEqual(a.sorted(), Array(0..<203), "a permutation of the data")
        XCTAssertLessThan(spread(bucketed, a), 0.25 * spread(plain, b), "length spread inside batches")
        XCTAssertEqual(try trainer(bucket: true, seed: 1).epochOrder(), a, "seeded")
        XCTAssertNotEqual(try trainer(bucket: true, seed: 2).epochOrder(), a)
        XCTAssertNotEqual(bucketed.epochOrder(), a, "each pass reshuffles")
        // batches are padded to their longest example
        let batch = Seq2SeqBatch([data[0], data[1]], encoderSeqLen: 32, decoderSeqLen: 16, bos: 1, eos: 2, pad: 0, padToLongest: true)
        XCTAssertEqual(batch.encoderIds[0].count, min(32, max(data[0].source.count, data[1].source.count)))
        XCTAssertEqual(batch.targets[0].count, min(16, max(data[0].target.count, data[1].target.count) + 1))
        // padding only to the batch's longest leaves the cross-entropy unchanged (1e-5 relative): masked keys,
        // ignored targets, and encoder positions shifted by a constant, which RoPE attention does not see
        let few = Array(data.filter { $0.source.count < 20 }.prefix(3))
        let fixed = try (try trainer(bucket: false, seed: 1) as! Seq2SeqTrainer).ceLoss(few, dropout: nil).item
        let short = try (bucketed as! Seq2SeqTrainer).ceLoss(few, dropout: nil).item
        XCTAssertEqual(short, fixed, accuracy: fixed * 1e-5)
        XCTAssertLessThan(Seq2SeqBatch(few, encoderSeqLen: 32, decoderSeqLen: 16, bos: 1, eos: 2, pad: 0, padToLongest: true).encoderIds[0].count, 32)
        // and a bucketed run trains
        let t = try trainer(bucket: true, seed: 3)
        XCTAssertTrue(try t.trainStep().loss.isFinite)
    }
}

/// `encore distill` end to end on the tiny Hugging Face Llama teacher (vocabulary 320) and a Mu student.
final class DistillCLITests: XCTestCase {
    func setUpStudent(vocab: Int, dir: String) throws {
        let config = MuConfig(nEncoderLayer: 1, nDecoderLayer: 1, nEmbd: 16, qkvEmbd: 16, hiddenDim: 32, nHead: 2, nKVHead: 1,
                              blockSize: 16, vocabSize: vocab, bosTokenId: 1, eosTokenId: 2)
        try MuParameters(model: try MuModel(config: config, randomSeed: 4)).save(folder: dir + "/student")
    }

    func steps(_ stderr: String) -> [[String: Any]] {
        stderr.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  o["message"] as? String == "training_step" else { return nil }
            return o
        }
    }

    func testDistillFromALlamaTeacherWithACacheAndBadData() throws {
        let dir = try makeTempDir(self)
        try setUpStudent(vocab: 101, dir: dir)
        var lines = (0..<8).map { i in #"{"source_ids": [\#(5 + i), \#(6 + i), \#(7 + i)], "target_ids": [\#(30 + i), \#(31 + i)]}"# }
        lines.insert("{not json", at: 2)                                                   // malformed: skipped, counted
        lines.insert(#"{"source_ids": [5, 6], "target_ids": []}"#, at: 4)                // empty target: skipped, counted
        lines.append(#"{"source_ids": [\#((0..<40).map { String(3 + $0) }.joined(separator: ", "))], "target_ids": [9]}"#)  // over-long: truncated
        try lines.joined(separator: "\n").write(toFile: dir + "/data.jsonl", atomically: true, encoding: .utf8)
        let common = ["distill", "--model", dir + "/student", "--teacher", fixture("tiny_llama/hf"), "--data", dir + "/data.jsonl",
                      "--batch-size", "3", "--encoder-seq-len", "6", "--decoder-seq-len", "4", "--warmup", "1", "--lr", "0.02",
                      "--dropout", "0", "--alpha", "0.8", "--temperature", "2", "--targets", "data"]
        let r = runCLI(common + ["--out", dir + "/o", "--epochs", "4", "--teacher-cache", dir + "/cache", "--cache-top-k", "8",
                                 "--progress", "json", "--log", dir + "/log.jsonl"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains(#""malformed":1"#) && r.stderr.contains(#""empty":1"#) && r.stderr.contains(#""truncated_sources":1"#), r.stderr)
        let s = steps(r.stderr)
        XCTAssertEqual(s.count, 12, "9 examples, batch 3, 4 epochs")
        let kd = s.map { $0["kd_loss"] as! Double }
        XCTAssertLessThan(kd.suffix(3).reduce(0, +), kd.prefix(3).reduce(0, +), "\(kd)")
        for e in s { XCTAssertEqual(e["loss"] as! Double, 0.8 * (e["kd_loss"] as! Double) + 0.2 * (e["ce_loss"] as! Double), accuracy: 1e-4) }
        XCTAssertTrue(r.stderr.contains(#""hits":27"#) && r.stderr.contains(#""written":9"#), r.stderr)   // 3 of 4 epochs from disk
        let log = try String(contentsOfFile: dir + "/log.jsonl", encoding: .utf8).split(separator: "\n")
        let entry = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(log.first { $0.contains("training_step") }!.utf8)) as? [String: Any])
        for key in ["step", "loss", "ce_loss", "kd_loss", "lr", "tokens_per_s"] { XCTAssertNotNil(entry[key], key) }
        XCTAssertNotNil(try MuModel(folder: dir + "/o"))

        // another k on the same cache folder is refused before training
        let other = runCLI(common + ["--out", dir + "/p", "--teacher-cache", dir + "/cache", "--cache-top-k", "4"])
        XCTAssertEqual(other.status, 1)
        XCTAssertTrue(other.stderr.contains("k = 8") && !other.stderr.contains("training_step"), other.stderr)
        // the cache needs targets from the data
        XCTAssertEqual(runCLI(Array(common.dropLast(2)) + ["--targets", "student", "--out", dir + "/q", "--teacher-cache", dir + "/c2"]).status, 64)
        // an encoder-decoder cannot be a teacher
        var encArgs = common
        encArgs[encArgs.firstIndex(of: fixture("tiny_llama/hf"))!] = fixture("mu/mha")
        let enc = runCLI(encArgs + ["--out", dir + "/q"])
        XCTAssertEqual(enc.status, 1)
        XCTAssertTrue(enc.stderr.contains("cannot serve as a distillation teacher"), enc.stderr)

        // sampled targets, plain progress lines and sample generations
        let sampled = runCLI(Array(common.dropLast(2)) + ["--targets", "student", "--out", dir + "/s", "--steps", "4", "--progress", "lines",
                                                    "--progress-every", "2", "--sample-every", "2", "--samples", "2"])
        XCTAssertEqual(sampled.status, 0, sampled.stderr)
        XCTAssertTrue(sampled.stderr.contains("step 2/4 (50%)  loss") && sampled.stderr.contains("step 4/4") && sampled.stderr.contains("ETA"), sampled.stderr)
        XCTAssertFalse(sampled.stderr.contains("step 3/4"), "--progress-every 2")
        // the terminal bar rewrites one line in place, with events printed above it
        let bar = runCLI(Array(common.dropLast(2)) + ["--targets", "data", "--out", dir + "/t", "--steps", "3", "--progress", "bar",
                                                       "--sample-every", "2", "--samples", "1"])
        XCTAssertEqual(bar.status, 0, bar.stderr)
        XCTAssertTrue(bar.stderr.contains("\r\u{1B}[2Kstep 1/3 (33%)  loss") && bar.stderr.contains("\r\u{1B}[2Kstep 3/3"), bar.stderr)
        XCTAssertTrue(bar.stderr.contains("\r\u{1B}[2K{\"generated\""), "an event clears the bar first")
        XCTAssertFalse(bar.stderr.contains("training_step"))
        XCTAssertEqual(sampled.stderr.components(separatedBy: #""message":"sample""#).count - 1, 6, "2 samples at steps 0, 2 and 4")
    }

    /// Ids past the student's vocabulary, or past the teacher's when the student's is larger, stop before
    /// training with the line named; nothing crashes.
    func testIdsPastEitherVocabularyNameTheLine() throws {
        let dir = try makeTempDir(self)
        try setUpStudent(vocab: 400, dir: dir)                                            // larger than the teacher's 320
        try [#"{"source_ids": [5, 6], "target_ids": [7]}"#, #"{"source_ids": [5, 330], "target_ids": [7]}"#]
            .joined(separator: "\n").write(toFile: dir + "/a.jsonl", atomically: true, encoding: .utf8)
        try [#"{"source_ids": [5, 6], "target_ids": [7]}"#, #"{"source_ids": [5, 6], "target_ids": [7, 450]}"#]
            .joined(separator: "\n").write(toFile: dir + "/b.jsonl", atomically: true, encoding: .utf8)
        let base = ["distill", "--model", dir + "/student", "--teacher", fixture("tiny_llama/hf"), "--out", dir + "/o", "--batch-size", "1",
                    "--warmup", "0", "--encoder-seq-len", "4", "--decoder-seq-len", "4"]
        let a = runCLI(base + ["--data", dir + "/a.jsonl"])
        XCTAssertEqual(a.status, 1)
        XCTAssertTrue(a.stderr.contains("a.jsonl:2:") && a.stderr.contains("teacher's vocabulary 0..<320"), a.stderr)
        let b = runCLI(base + ["--data", dir + "/b.jsonl"])
        XCTAssertEqual(b.status, 1)
        XCTAssertTrue(b.stderr.contains("b.jsonl:2:") && b.stderr.contains("target_ids"), b.stderr)
        XCTAssertFalse(a.stderr.contains("training_step") || b.stderr.contains("training_step"))
        // a student with the larger vocabulary and valid ids trains against the teacher's 320 (cut)
        try #"{"source_ids": [5, 6], "target_ids": [7, 390]}"#.write(toFile: dir + "/c.jsonl", atomically: true, encoding: .utf8)
        let c = runCLI(base + ["--data", dir + "/c.jsonl", "--steps", "2", "--progress", "json"])
        XCTAssertEqual(c.status, 0, c.stderr)     // targets are sampled: ids >= 320 become unk for the teacher
    }

    /// A student whose tokenizer is not the teacher's is refused before training, naming an id where they differ.
    func testMismatchedTokenizersAreRefused() throws {
        let dir = try makeTempDir(self)
        try setUpStudent(vocab: 320, dir: dir)           // both are Llama-style: ids 0..258 (specials, bytes) agree
        try FileManager.default.copyItem(atPath: fixtures + "/../../EncoreTokenizersTests/Fixtures/phi-3.5-mini/tokenizer.json",
                                         toPath: dir + "/student/tokenizer.json")
        try #"{"source_ids": [5, 6], "target_ids": [7]}"#.write(toFile: dir + "/d.jsonl", atomically: true, encoding: .utf8)
        let r = runCLI(["distill", "--model", dir + "/student", "--teacher", fixture("tiny_llama/f32.gguf"), "--data", dir + "/d.jsonl",
                        "--out", dir + "/o", "--batch-size", "1", "--warmup", "0"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("tokenizer and the teacher's differ at id"), r.stderr)
    }

    /// `encore init --tokenizer model.gguf` stores the vocabulary (no weights) as tokenizer.gguf, which encodes
    /// exactly as the source GGUF's vocabulary.
    func testInitWithAGGUFTokenizer() throws {
        let dir = try makeTempDir(self)
        let config = #"{"model_type": "mu", "n_encoder_layer": 1, "n_decoder_layer": 1, "n_embd": 16, "qkv_embd": 16, "hidden_dim": 32, "n_head": 2, "n_kv_head": 1, "block_size": 16, "dropout": 0.0, "rope_theta": 10000, "rope_factor": 1.0, "pad_token_id": 0, "vocab_size": 320, "bos_token_id": 1, "eos_token_id": 2, "is_interleaved": false}"#
        try config.write(toFile: dir + "/cfg.json", atomically: true, encoding: .utf8)
        let gguf = fixture("tiny_llama/f32.gguf")
        let r = runCLI(["init", "--config", dir + "/cfg.json", "--out", dir + "/m", "--tokenizer", gguf])
        XCTAssertEqual(r.status, 0, r.stderr)
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: dir + "/m/tokenizer.gguf")[.size] as? NSNumber).intValue
        XCTAssertLessThan(size, 100_000, "vocabulary only")
        let a = try Tokenizer.load(path: dir + "/m/tokenizer.gguf"), b = try Tokenizer.load(path: gguf)
        XCTAssertEqual(a.vocabSize, b.vocabSize)
        for text in ["Hello world", "the quick brown fox", "a b c 123"] { XCTAssertEqual(a.encode(text), b.encode(text), text) }
        let g = runCLI(["generate", "--model", dir + "/m", "--prompt", "Hello", "--max-tokens", "2", "--json"])
        XCTAssertEqual(g.status, 0, g.stderr)
    }
}
