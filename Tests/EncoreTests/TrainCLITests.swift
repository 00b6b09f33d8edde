import XCTest
@testable import Encore

/// `encore train` end to end: stop and `--resume` reproduce an unbroken run; bad data is reported before training.
final class TrainCLITests: XCTestCase {
    func tempDir(_ name: String) throws -> String {
        let d = NSTemporaryDirectory() + "encore-traincli-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    /// The per-step losses of a run's JSON log, by global step.
    func losses(_ stderr: String) -> [Int: Double] {
        var out: [Int: Double] = [:]
        for line in stderr.split(separator: "\n") {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  o["message"] as? String == "training_step", let s = o["global_step"] as? Int, let l = o["loss"] as? Double else { continue }
            out[s] = l
        }
        return out
    }

    func testStopAndResumeMatchesAnUnbrokenRun() throws {
        let dir = try tempDir("resume")
        try MuParameters(model: try MuModel(config: CheckpointTests.config, randomSeed: 3)).save(folder: dir + "/model")
        var lines = CheckpointTests.pairs.map { #"{"source_ids": \#($0.source), "target_ids": \#($0.target)}"# }
        lines.insert("{broken", at: 2)                                      // skipped and counted, not fatal
        try lines.joined(separator: "\n").write(toFile: dir + "/data.jsonl", atomically: true, encoding: .utf8)
        let common = ["train", "--model", dir + "/model", "--data", dir + "/data.jsonl", "--epochs", "3", "--batch-size", "2",
                      "--encoder-seq-len", "5", "--decoder-seq-len", "4", "--warmup", "2", "--lr", "0.01", "--dropout", "0.1",
                      "--progress", "json"]

        let straight = runCLI(common + ["--out", dir + "/a"])
        XCTAssertEqual(straight.status, 0, straight.stderr)
        XCTAssertTrue(straight.stderr.contains(#""malformed":1"#) && straight.stderr.contains(#""malformed_lines":[3]"#), straight.stderr)
        let want = losses(straight.stderr)
        XCTAssertEqual(want.count, 9)

        let first = runCLI(common + ["--out", dir + "/b", "--stop-after", "4"])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertEqual(losses(first.stderr).count, 4)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/b/model.safetensors"))
        XCTAssertNotNil(TrainingCheckpoint.manifest(folder: dir + "/b/checkpoints/state-4"))

        let second = runCLI(common + ["--out", dir + "/b", "--resume"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains(#""message":"resumed""#), second.stderr)
        let got = losses(first.stderr).merging(losses(second.stderr)) { a, _ in a }
        XCTAssertEqual(losses(second.stderr).keys.sorted(), Array(4..<9))
        XCTAssertEqual(got, want, "per-step losses of the stopped + resumed run")
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/b/model.safetensors"),
                       FileManager.default.contents(atPath: dir + "/a/model.safetensors"), "final weights differ")

        // --steps sets the run's length directly (the 6 pairs are cycled), with the issue's flag names
        let byStep = runCLI(common + ["--out", dir + "/d", "--steps", "5", "--grad-accum", "1", "--clip", "0.5", "--schedule", "wsd", "--log", dir + "/d.jsonl"])
        XCTAssertEqual(byStep.status, 0, byStep.stderr)
        XCTAssertEqual(losses(byStep.stderr).keys.sorted(), Array(0..<5))
        let logLines = try String(contentsOfFile: dir + "/d.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertTrue(logLines[0].contains(#""message":"data""#), "the log has the data summary too")
        let stepLines = logLines.filter { $0.contains(#""message":"training_step""#) }
        XCTAssertEqual(stepLines.count, 5)
        let entry = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stepLines[4].utf8)) as? [String: Any])
        for key in ["step", "loss", "ce_loss", "kd_loss", "lr", "tokens_per_s"] { XCTAssertNotNil(entry[key], "log lacks \(key)") }
        XCTAssertTrue(entry["kd_loss"] is NSNull, "no teacher: kd_loss is null")
        XCTAssertEqual(entry["ce_loss"] as? Double, entry["loss"] as? Double)
        XCTAssertEqual(entry["step"] as? Int, 4)

        // --resume with nothing to resume from is a clear error
        let none = runCLI(common + ["--out", dir + "/c", "--resume"])
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.stderr.contains("no complete checkpoint"), none.stderr)
    }

    func testOutOfVocabularyIdStopsBeforeTrainingNamingTheLine() throws {
        let dir = try tempDir("vocab")
        try MuParameters(model: try MuModel(config: CheckpointTests.config, randomSeed: 3)).save(folder: dir + "/model")
        try [#"{"source_ids": [5, 6], "target_ids": [7]}"#, #"{"source_ids": [5, 6], "target_ids": [7, 30]}"#]
            .joined(separator: "\n").write(toFile: dir + "/data.jsonl", atomically: true, encoding: .utf8)
        let r = runCLI(["train", "--model", dir + "/model", "--data", dir + "/data.jsonl", "--out", dir + "/o", "--batch-size", "1",
                        "--warmup", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("data.jsonl:2:") && r.stderr.contains("target_ids"), r.stderr)
        XCTAssertFalse(r.stderr.contains("training_step"), "no step may run on a file that fails validation")
    }

    /// A run checkpointing every step is SIGKILLed at several moments (mostly mid-save); each time the newest
    /// complete checkpoint restores, and `--resume` continues from it.
    func testKillDuringCheckpointingLeavesALoadableCheckpoint() throws {
        let dir = try tempDir("kill")
        try MuParameters(model: try MuModel(config: CheckpointTests.config, randomSeed: 3)).save(folder: dir + "/model")
        try CheckpointTests.pairs.map { #"{"source_ids": \#($0.source), "target_ids": \#($0.target)}"# }
            .joined(separator: "\n").write(toFile: dir + "/data.jsonl", atomically: true, encoding: .utf8)
        let args = ["train", "--model", dir + "/model", "--data", dir + "/data.jsonl", "--out", dir + "/o", "--epochs", "400",
                    "--batch-size", "2", "--encoder-seq-len", "5", "--decoder-seq-len", "4", "--warmup", "2", "--save-every", "1"]
        let bundle = Bundle(for: CheckpointErrorTests.self).bundleURL
        let exe = [bundle.appendingPathComponent("encore"), bundle.deletingLastPathComponent().appendingPathComponent("encore")]
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
        let encore = try XCTUnwrap(exe, "encore executable not built")
        var lastStep = -1
        func newest() -> Int { TrainingCheckpoint.complete(in: dir + "/o/checkpoints").last?.step ?? -1 }
        for (round, delay) in [0.0, 0.013, 0.029].enumerated() {
            let p = Process()
            p.executableURL = encore
            p.arguments = args + (round == 0 ? [] : ["--resume"])
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // wait for a new complete checkpoint (not a fixed time: robust on a loaded machine), then kill soon after
            let deadline = Date().addingTimeInterval(20)
            while newest() <= lastStep && p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
            Thread.sleep(forTimeInterval: delay)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            XCTAssertEqual(p.terminationReason, .uncaughtSignal, "round \(round): the run ended before the kill")
            let latest = try XCTUnwrap(TrainingCheckpoint.latest(in: dir + "/o/checkpoints"), "round \(round): no complete checkpoint")
            let params = MuParameters(model: try MuModel(config: CheckpointTests.config, randomSeed: 5))
            var s = Seq2SeqTrainer.Settings()
            (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.warmupSteps) = (5, 4, 2, 2)
            let t = try Seq2SeqTrainer(parameters: params, data: CheckpointTests.pairs, settings: s, epochs: 400)
            try t.restoreCheckpoint(folder: latest)
            XCTAssertGreaterThan(t.step, lastStep, "round \(round): resumed runs make progress")
            lastStep = t.step
        }
        print("killed 3 times; newest complete checkpoint at step \(lastStep)")
    }
}
