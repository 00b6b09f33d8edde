import XCTest
@testable import Encore

/// Causal-LM training of the decoder-only baseline (`mu_decoder`) against the reference blocks (goldens by
/// tools/goldens/make_mu_decoder_grad_goldens.py). Tolerances: training forward = inference within 1e-5
/// relative; loss within 1e-5 relative; every gradient within 1e-4 relative per tensor (max |Δ| / max |golden|).
final class MuDecoderTrainingTests: XCTestCase {
    func load() throws -> (MuDecoderParameters, [String: Any], SafeTensorsFile) {
        let params = MuDecoderParameters(model: try MuDecoderModel(folder: fixture("mu/mu_decoder")))
        return (params, try readJSON(fixture("mu_grads/mu_decoder.json")),
                try SafeTensorsFile(path: fixture("mu_grads/mu_decoder.safetensors")))
    }

    func testTrainingForwardEqualsInference() throws {
        let dir = fixture("mu/mu_decoder")
        let model = try MuDecoderModel(folder: dir)
        let rows = try intRows(try readJSON(dir + "/golden.json")["logits_input_ids"])   // second row right-padded
        XCTAssertTrue(rows[1].contains(0), "the fixture should exercise key padding")
        let want = try model.logits(rows)
        let got = try MuDecoderParameters(model: model).logits(rows)
        XCTAssertEqual(got.shape, want.shape)
        let err = relativeError(got.value.toArray(), want.toArray())
        XCTAssertLessThan(err, 1e-5, "training forward vs inference \(err)")
        // and the reference's logits on the golden batch
        let (params, meta, golden) = try load()
        let ref = try params.logits(try intRows(meta["inputs"]))
        XCTAssertLessThan(relativeError(ref.value.toArray(), try golden.tensor("logits").toArray()), 1e-5)
    }

    func testCausalLMBatchPutsTheLossOnTheTargetOnly() throws {
        let (inputs, labels) = try MuDecoderParameters.causalLMBatch(sources: [[5, 6, 7], [8]], targets: [[9, 10], []], eos: 2, pad: 0)
        XCTAssertEqual(inputs, [[5, 6, 7, 9, 10], [8]])
        XCTAssertEqual(labels, [[0, 0, 9, 10, 2], [2]])
        // the committed golden rows are the same construction
        let (_, meta, _) = try load()
        let (gi, gl) = try MuDecoderParameters.causalLMBatch(sources: try intRows(meta["sources"]), targets: try intRows(meta["targets"]), eos: 2, pad: 0)
        let T = gi.map(\.count).max()!
        XCTAssertEqual(gi.map { $0 + [Int](repeating: 0, count: T - $0.count) }, try intRows(meta["inputs"]))
        XCTAssertEqual(gl.map { $0 + [Int](repeating: 0, count: T - $0.count) }, try intRows(meta["labels"]))
    }

    func testLossAndGradientsMatchReference() throws {
        let (params, meta, golden) = try load()
        let loss = try params.loss(sources: try intRows(meta["sources"]), targets: try intRows(meta["targets"]))
        loss.backward()
        let want = try golden.tensor("loss").toArray()[0]
        XCTAssertEqual(loss.item, want, accuracy: abs(want) * 1e-5)
        let gradNames = golden.tensors.keys.filter { $0.hasPrefix("grad.") }.map { String($0.dropFirst(5)) }
        XCTAssertEqual(Set(gradNames), Set(params.names), "parameter names")
        var worst: (Float, String) = (0, "")
        for n in params.names {
            let g = try XCTUnwrap(params[n].grad, "no gradient for \(n)")
            let ref = try golden.tensor("grad." + n).toArray()
            XCTAssertGreaterThan(ref.map(abs).max()!, 0, "\(n): the reference gradient should not vanish")
            let err = relativeError(g.toArray(), ref)
            if err > worst.0 { worst = (err, n) }
            XCTAssertLessThan(err, 1e-4, "gradient of \(n) relative error \(err)")
        }
        print("mu_decoder: loss \(loss.item) vs \(want); worst gradient error \(worst.0) (\(worst.1))")
        // the loss ignores the source positions: a different source token's label cannot matter, but the whole
        // sequence loss (labels everywhere) is a different number
        let inputs = try intRows(meta["inputs"])
        let all = inputs.map { r in (0..<r.count).map { $0 + 1 < r.count ? r[$0 + 1] : 2 } }
        XCTAssertGreaterThan(abs(try params.loss(inputs: inputs, labels: all).item - want), 1e-3)
    }

    /// Ten AdamW steps on one repeated batch lower the causal-LM loss; truncation follows the seq2seq lengths.
    func testCausalLMTrainerLowersTheLoss() throws {
        let (params, meta, _) = try load()
        let pairs = zip(try intRows(meta["sources"]), try intRows(meta["targets"])).map { Seq2SeqExample(source: $0, target: $1) }
        var s = Seq2SeqTrainer.Settings()
        s.batchSize = 2; s.learningRate = 1e-2; s.warmupSteps = 1; s.dropout = 0; s.shuffle = false
        s.encoderSeqLen = 4; s.decoderSeqLen = 3
        let trainer = try CausalLMTrainer(parameters: params, data: pairs, settings: s, epochs: 1, steps: 10)
        let before = try trainer.evaluate(pairs)
        for _ in 0..<10 { try trainer.trainStep() }
        let after = try trainer.evaluate(pairs)
        XCTAssertLessThan(after, before * 0.8, "loss \(before) -> \(after)")
        // the trained values reach a loadable inference model that agrees with the tape
        let rows = [[69, 23, 13, 92, 10, 19]]
        let err = relativeError(try params.makeModel().logits(rows).toArray(), try params.logits(rows).value.toArray())
        XCTAssertLessThan(err, 1e-5)
        let (inputs, labels) = try MuDecoderParameters.causalLMBatch(sources: [[69, 23, 13, 92]], targets: [[10, 19, 66, 13]],
                                                                     eos: 2, pad: 0, maxTargetLength: 3)
        XCTAssertEqual(inputs, [[69, 23, 13, 92, 10, 19]])
        XCTAssertEqual(labels, [[0, 0, 0, 10, 19, 66]])
    }

    /// `encore train` on a mu_decoder folder runs the causal-LM trainer, writes a loadable mu_decoder folder, and
    /// a run stopped at step 3 and resumed reproduces the unbroken run's losses and final weights exactly.
    func testTrainCLIOnMuDecoderAndResume() throws {
        let dir = NSTemporaryDirectory() + "encore-mudec-train-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        try [#"{"source_ids": [69, 23, 13], "target_ids": [10, 19]}"#, #"{"source_ids": [57, 22], "target_ids": [96, 27, 5]}"#,
             #"{"source_ids": [5, 6, 7, 8], "target_ids": [9]}"#, #"{"source_ids": [44], "target_ids": [45, 46, 47, 48]}"#]
            .joined(separator: "\n").write(toFile: dir + "/data.jsonl", atomically: true, encoding: .utf8)
        func losses(_ stderr: String) -> [Int: Double] {
            var out: [Int: Double] = [:]
            for line in stderr.split(separator: "\n") {
                guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      o["message"] as? String == "training_step", let s = o["step"] as? Int, let l = o["loss"] as? Double else { continue }
                out[s] = l
            }
            return out
        }
        let common = ["train", "--model", fixture("mu/mu_decoder"), "--data", dir + "/data.jsonl", "--batch-size", "2", "--steps", "6",
                      "--warmup", "1", "--lr", "0.01", "--dropout", "0.1", "--encoder-seq-len", "8", "--decoder-seq-len", "8",
                      "--progress", "json", "--bucket-by-length", "--val", dir + "/data.jsonl", "--eval-every", "3"]
        let r = runCLI(common + ["--out", dir + "/o"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let want = losses(r.stderr)
        XCTAssertEqual(want.keys.sorted(), Array(0..<6), r.stderr)
        XCTAssertLessThan(want[5]!, want[0]!, "\(want)")
        XCTAssertTrue(r.stderr.contains(#""message":"loss_evaluator_metrics""#), r.stderr)
        let trained = try MuDecoderModel(folder: dir + "/o")
        XCTAssertNotEqual(try trained.logits([[69, 23]]).toArray(), try MuDecoderModel(folder: fixture("mu/mu_decoder")).logits([[69, 23]]).toArray())

        let first = runCLI(common + ["--out", dir + "/p", "--stop-after", "3"])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertNotNil(TrainingCheckpoint.manifest(folder: dir + "/p/checkpoints/state-3"))
        let second = runCLI(common + ["--out", dir + "/p", "--resume"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertEqual(losses(first.stderr).merging(losses(second.stderr)) { a, _ in a }, want, "losses of the stopped + resumed run")
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/p/model.safetensors"),
                       FileManager.default.contents(atPath: dir + "/o/model.safetensors"), "final weights differ")
    }

    /// The library-level resume of the causal-LM trainer (dropout on, shuffled, several epochs): bit-identical.
    func testCausalLMResumeIsBitIdentical() throws {
        let data = [([69, 23, 13], [10, 19]), ([57, 22], [96, 27, 5]), ([5, 6, 7, 8], [9]), ([44], [45, 46, 47, 48]),
                    ([30, 31], [32]), ([33, 34, 35], [36, 37])].map { Seq2SeqExample(source: $0.0, target: $0.1) }
        func make() throws -> CausalLMTrainer {
            var s = Seq2SeqTrainer.Settings()
            (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.learningRate, s.warmupSteps, s.dropout) = (5, 4, 2, 1e-2, 1, 0.1)
            return try CausalLMTrainer(parameters: MuDecoderParameters(model: try MuDecoderModel(folder: fixture("mu/mu_decoder"))),
                                       data: data, settings: s, epochs: 3)                   // 9 steps
        }
        let straight = try make()
        let want = try (0..<9).map { _ in try straight.trainStep().loss }
        let dir = try makeTempDir(self)
        let first = try make()
        for _ in 0..<4 { try first.trainStep() }
        try first.saveCheckpoint(folder: dir + "/state-4")
        XCTAssertEqual(try MuDecoderModel(folder: dir + "/state-4").config, first.parameters.config)   // a loadable model folder
        let resumed = try make()
        try resumed.trainStep()                                // moved away; the restore must replace everything
        try resumed.restoreCheckpoint(folder: dir + "/state-4")
        XCTAssertEqual(try (4..<9).map { _ in try resumed.trainStep().loss }, Array(want[4...]))
        XCTAssertTrue(resumed.parameters.variables.mapValues { $0.value.toArray() } == straight.parameters.variables.mapValues { $0.value.toArray() })
    }

    /// `encore bench-train` times forward + backward + AdamW on a tiny Mu and reports tokens/s for its shape.
    func testBenchTrainReportsTokensPerSecond() throws {
        let r = runCLI(["bench-train", "--config", fixture("mu/mha/config.json"), "--batch-size", "2", "--encoder-seq-len", "6",
                        "--decoder-seq-len", "4", "--steps", "2", "--threads", "1", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        let median = try XCTUnwrap(o["median_step_s"] as? Double), tps = try XCTUnwrap(o["tokens_per_s"] as? Double)
        XCTAssertGreaterThan(median, 0)
        XCTAssertEqual(tps, 2 * (6 + 4) / median, accuracy: tps * 1e-9)
        XCTAssertEqual((o["steps"] as? [Double])?.count, 2)
        XCTAssertEqual(o["params"] as? Int, try MuModel(folder: fixture("mu/mha")).parameterCount)
        XCTAssertTrue((o["loss"] as? Double).map { $0.isFinite && $0 > 0 } ?? false, r.stdout)
    }
}
