import XCTest
@testable import Encore

/// Resumable checkpoints: a run stopped and resumed from a checkpoint is bit-identical to an unbroken one, and
/// an interrupted or damaged save is never taken for a checkpoint.
final class CheckpointTests: XCTestCase {
    static let config = MuConfig(nEncoderLayer: 1, nDecoderLayer: 1, nEmbd: 16, qkvEmbd: 16, hiddenDim: 32, nHead: 2, nKVHead: 1,
                                 blockSize: 16, vocabSize: 30, bosTokenId: 1, eosTokenId: 2)
    /// Six pairs, batch 2: a new shuffle every 3 steps, so a resume crosses epochs.
    static let pairs = [([5, 6, 7], [20, 21]), ([9, 10], [23]), ([12, 13, 14], [25, 26, 27]), ([17, 18], [29]),
                        ([3, 4, 8], [11]), ([15, 16], [19, 22])].map { Seq2SeqExample(source: $0.0, target: $0.1) }

    /// A trainer with dropout on (so the dropout stream must be restored too); `modelSeed` picks the initial weights.
    func makeTrainer(modelSeed: UInt64 = 3) throws -> Seq2SeqTrainer {
        let params = MuParameters(model: try MuModel(config: Self.config, randomSeed: modelSeed))
        var s = Seq2SeqTrainer.Settings()
        (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.learningRate, s.warmupSteps, s.dropout) = (5, 4, 2, 1e-2, 2, 0.1)
        return try Seq2SeqTrainer(parameters: params, data: Self.pairs, settings: s, epochs: 3)   // 9 steps
    }

    func values(_ t: Seq2SeqTrainer) -> [String: [Float]] { t.parameters.variables.mapValues { $0.value.toArray() } }

    func tempDir(_ name: String) -> String {
        let d = NSTemporaryDirectory() + "encore-ckpt-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    func testResumeIsBitIdentical() throws {
        let straight = try makeTrainer()
        let n = Int(straight.schedule.totalSteps), k = 4
        XCTAssertEqual(n, 9)
        let want = try (0..<n).map { _ in try straight.trainStep().loss }

        let dir = tempDir("resume")
        let first = try makeTrainer()
        let head = try (0..<k).map { _ in try first.trainStep().loss }
        XCTAssertEqual(head, Array(want[..<k]))
        try first.saveCheckpoint(folder: dir + "/state-\(k)")
        XCTAssertEqual(TrainingCheckpoint.latest(in: dir), dir + "/state-\(k)")

        let resumed = try makeTrainer(modelSeed: 99)          // other weights: the checkpoint must replace them
        try resumed.restoreCheckpoint(folder: dir + "/state-\(k)")
        XCTAssertEqual(resumed.step, k)
        XCTAssertEqual(resumed.epoch, 2)
        let tail = try (k..<n).map { _ in try resumed.trainStep().loss }
        XCTAssertEqual(tail, Array(want[k...]), "per-step losses after resume")
        XCTAssertTrue(values(resumed) == values(straight), "final parameters after resume differ")
        // the test can fail: without the optimizer state the continuation differs
        let fresh = try makeTrainer()
        try fresh.restoreCheckpoint(folder: dir + "/state-\(k)")
        for i in fresh.parameters.names.indices { try fresh.optimizer.setState(at: i, m: nil, v: nil, steps: 0) }
        for _ in k..<n { try fresh.trainStep() }
        XCTAssertFalse(values(fresh) == values(straight), "a resume without optimizer state should differ")
    }

    func testRestoreRejectsOtherSettings() throws {
        let dir = tempDir("settings")
        let t = try makeTrainer()
        try t.trainStep()
        try t.saveCheckpoint(folder: dir + "/state-1")
        let params = MuParameters(model: try MuModel(config: Self.config, randomSeed: 3))
        var s = t.settings
        s.batchSize = 3
        let other = try Seq2SeqTrainer(parameters: params, data: Self.pairs, settings: s, epochs: 3)
        XCTAssertThrowsError(try other.restoreCheckpoint(folder: dir + "/state-1")) {
            XCTAssertTrue("\($0)".contains("batch_size"), "\($0)")
        }
        var shuffled = Self.pairs
        shuffled.swapAt(0, 1)
        let otherData = try Seq2SeqTrainer(parameters: params, data: shuffled, settings: t.settings, epochs: 3)
        XCTAssertThrowsError(try otherData.restoreCheckpoint(folder: dir + "/state-1")) {
            XCTAssertTrue("\($0)".contains("other training data"), "\($0)")
        }
        let longer = try Seq2SeqTrainer(parameters: params, data: Self.pairs, settings: t.settings, epochs: 4)
        XCTAssertThrowsError(try longer.restoreCheckpoint(folder: dir + "/state-1")) {
            XCTAssertTrue("\($0)".contains("schedule"), "\($0)")
        }
        let same = try Seq2SeqTrainer(parameters: params, data: Self.pairs, settings: t.settings, epochs: 3)
        XCTAssertNoThrow(try same.restoreCheckpoint(folder: dir + "/state-1"))
    }

    func testInterruptedSaveLeavesPreviousCheckpoint() throws {
        let dir = tempDir("crash")
        let reference = try makeTrainer()
        let want = try (0..<4).map { _ in try reference.trainStep().loss }

        let t = try makeTrainer()
        try t.trainStep(); try t.trainStep()
        try t.saveCheckpoint(folder: dir + "/state-2")
        try t.trainStep()
        struct Killed: Error {}
        // a writer killed before each file in turn: never a complete state-3
        for file in ["config.json", "model.safetensors", "optimizer.safetensors", "checkpoint.json"] {
            XCTAssertThrowsError(try t.saveCheckpoint(folder: dir + "/state-3") { if $0 == file { throw Killed() } })
            XCTAssertEqual(TrainingCheckpoint.latest(in: dir), dir + "/state-2", "killed before \(file)")
        }
        XCTAssertThrowsError(try makeTrainer().restoreCheckpoint(folder: dir + "/state-3"))
        // a completed save whose model file is truncated afterwards is not complete either
        try t.saveCheckpoint(folder: dir + "/state-3")
        XCTAssertEqual(TrainingCheckpoint.latest(in: dir), dir + "/state-3")
        let fh = try XCTUnwrap(FileHandle(forWritingAtPath: dir + "/state-3/model.safetensors"))
        try fh.truncate(atOffset: 100)
        try fh.close()
        XCTAssertEqual(TrainingCheckpoint.latest(in: dir), dir + "/state-2")

        // the previous checkpoint still loads and continues exactly
        let resumed = try makeTrainer(modelSeed: 7)
        try resumed.restoreCheckpoint(folder: try XCTUnwrap(TrainingCheckpoint.latest(in: dir)))
        XCTAssertEqual(try (2..<4).map { _ in try resumed.trainStep().loss }, Array(want[2...]))

        // pruning keeps the newest complete ones and removes the damaged older folder
        try resumed.saveCheckpoint(folder: dir + "/state-4")
        TrainingCheckpoint.prune(directory: dir, keep: 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["state-4"])
    }

    /// Distillation (on-policy targets sampled by the student, dropout on) resumes bit for bit too.
    func testDistillationResumeIsBitIdentical() throws {
        let teacher = try MuDecoderModel(folder: fixture("mu/mu_decoder"))
        let config = MuConfig(nEncoderLayer: 1, nDecoderLayer: 1, nEmbd: 16, qkvEmbd: 16, hiddenDim: 32, nHead: 2, nKVHead: 1,
                              blockSize: 16, vocabSize: 101, bosTokenId: 1, eosTokenId: 2)
        let data = [[5, 6, 7], [9, 10], [12, 13, 14], [17, 18]].map { Seq2SeqExample(source: $0, target: [20, 21]) }
        func make(_ seed: UInt64) throws -> Seq2SeqTrainer {
            var s = Seq2SeqTrainer.Settings()
            (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.learningRate, s.warmupSteps, s.dropout) = (4, 4, 2, 1e-2, 1, 0.1)
            var kd = DistillationSettings(teacher: teacher)
            kd.alpha = 0.7
            return try Seq2SeqTrainer(parameters: MuParameters(model: try MuModel(config: config, randomSeed: seed)), data: data,
                                      settings: s, epochs: 3, distillation: kd)            // 6 steps
        }
        let straight = try make(8)
        let want = try (0..<6).map { _ in try straight.trainStep() }.map { [$0.loss, $0.kd!, $0.ce!] }
        let dir = tempDir("kd")
        let first = try make(8)
        for _ in 0..<3 { try first.trainStep() }
        try first.saveCheckpoint(folder: dir + "/state-3")
        let resumed = try make(9)
        try resumed.restoreCheckpoint(folder: dir + "/state-3")
        let got = try (3..<6).map { _ in try resumed.trainStep() }.map { [$0.loss, $0.kd!, $0.ce!] }
        XCTAssertEqual(got, Array(want[3...]))
        XCTAssertTrue(values(resumed) == values(straight), "final parameters after a distillation resume differ")
    }
}
