import XCTest
@testable import Encore

/// `--schedule constant|cosine|wsd` and `--no-shuffle`.
final class ScheduleTests: XCTestCase {
    func testConstantWarmsUpThenHolds() {
        let s = LearningRateSchedule(.constant, warmupSteps: 4, totalSteps: 20)
        XCTAssertEqual([0, 1, 2, 4, 5, 19, 20].map { s.factor(step: $0) }, [0, 0.25, 0.5, 1, 1, 1, 1])
        XCTAssertEqual(LearningRateSchedule(.constant, warmupSteps: 0, totalSteps: 5).factor(step: 0), 1)
    }

    func testCosineIsTheReferenceSchedule() {
        let s = LearningRateSchedule(.cosine, warmupSteps: 2, totalSteps: 10)
        let r = WarmupCosineSchedule(warmupSteps: 2, totalSteps: 10)
        for step in 0...10 { XCTAssertEqual(s.factor(step: step), r.factor(step: step)) }
        XCTAssertEqual(s.factor(step: 6), 0.5, accuracy: 1e-12)        // halfway through the cosine
        XCTAssertEqual(s.factor(step: 10), 0, accuracy: 1e-12)
    }

    func testWarmupStableDecay() {
        // 100 steps, warmup 10, decay over the last 20: stable 1 on [10, 80), then (100 − s) / 20
        let s = LearningRateSchedule(.wsd, warmupSteps: 10, totalSteps: 100)
        XCTAssertEqual(s.factor(step: 0), 0)
        XCTAssertEqual(s.factor(step: 5), 0.5)
        XCTAssertEqual(s.factor(step: 10), 1)
        XCTAssertEqual(s.factor(step: 79), 1)
        XCTAssertEqual(s.factor(step: 80), 1)
        XCTAssertEqual(s.factor(step: 90), 0.5, accuracy: 1e-12)
        XCTAssertEqual(s.factor(step: 99), 0.05, accuracy: 1e-12)
        XCTAssertEqual(s.factor(step: 100), 0)
        let half = LearningRateSchedule(.wsd, warmupSteps: 0, totalSteps: 10, decayFraction: 0.5)
        XCTAssertEqual((0...10).map { half.factor(step: $0) }, [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0].map { $0 }, accuracy: 1e-12)
    }

    func testTrainerUsesTheSettingsSchedule() throws {
        var s = Seq2SeqTrainer.Settings()
        (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.learningRate, s.warmupSteps, s.dropout) = (5, 4, 2, 1e-2, 1, 0)
        s.schedule = .wsd; s.decayFraction = 0.5
        let params = MuParameters(model: try MuModel(config: CheckpointTests.config, randomSeed: 3))
        let t = try Seq2SeqTrainer(parameters: params, data: CheckpointTests.pairs, settings: s, epochs: 2)   // 6 steps
        let lrs = try (0..<6).map { _ in try t.trainStep().learningRate }
        XCTAssertEqual(lrs, [0, 1e-2, 1e-2, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3].map { $0 }, accuracy: 1e-12)
        s.decayFraction = 0
        XCTAssertThrowsError(try Seq2SeqTrainer(parameters: params, data: CheckpointTests.pairs, settings: s, epochs: 2))
    }

    /// Without shuffling every epoch takes the batches in file order; with it the order changes.
    func testNoShuffleKeepsFileOrder() throws {
        func batches(shuffle: Bool) throws -> [[Int]] {
            var s = Seq2SeqTrainer.Settings()
            (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.warmupSteps, s.dropout, s.shuffle) = (5, 4, 2, 0, 0, shuffle)
            let params = MuParameters(model: try MuModel(config: CheckpointTests.config, randomSeed: 3))
            let t = try Seq2SeqTrainer(parameters: params, data: CheckpointTests.pairs, settings: s, epochs: 2)
            return (0..<6).map { _ in t.nextExamples().map { e in CheckpointTests.pairs.firstIndex(of: e)! } }
        }
        XCTAssertEqual(try batches(shuffle: false), [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5]])
        XCTAssertNotEqual(try batches(shuffle: true), try batches(shuffle: false))
    }
}

/// Elementwise equality within `accuracy`.
func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "lengths", file: file, line: line)
    for (i, (x, y)) in zip(a, b).enumerated() { XCTAssertEqual(x, y, accuracy: accuracy, "element \(i)", file: file, line: line) }
}
