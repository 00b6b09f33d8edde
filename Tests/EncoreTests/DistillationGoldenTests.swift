import XCTest
@testable import Encore

/// Distillation from a real Hugging Face teacher (a tiny random `LlamaForCausalLM`, fixture
/// `tiny_llama_teacher/`, vocabulary 97) into the Mu fixture `gqa_mod` and its decoder-only twin `mu_decoder`
/// (vocabulary 101: both cut to 97), against PyTorch (goldens by tools/goldens/make_kd_llama_goldens.py: the
/// reference `KDModel.forward` for Mu, the same formula for the twin). Through the trainer's own code path.
///
/// Tolerances: the teacher's logit slice 1e-5 relative; losses 1e-5 relative; every parameter gradient 1e-4
/// relative per tensor (max |Δ| / max |golden|; Mu's cross-attention key biases have an exactly-zero gradient,
/// so both sides hold roundoff: checked below 1e-6 of the largest gradient). Ten optimizer steps (AdamW, warmup 2
/// + cosine to 0 at step 10, clip 1.0, lr 1e-3): losses 1e-4 relative, gradient norms 1e-2, parameters within 10%
/// of each tensor's movement (median over tensors below 1%) with at most 1% of the elements beyond 1e-3 of it (the
/// reasoning of `testAdamWStepsMatchReference`). Why these: this KD trajectory is sensitive to roundoff — the worst
/// tensor moved from 2.7% to 5.1% of its movement when only the cross-entropy's exp changed by an ulp; Encore against itself
/// with the starting weights perturbed by 1e-7 relative differs by up to 5e-5 in the step losses and 0.7% in the
/// gradient norm of the Mu student (whose norm swings 16–52 between steps while clipped to 1) by step 9 (measured;
/// at lr 1e-2 the same experiment gives 5e-4 and 0.6%), so Encore and PyTorch cannot agree more closely than that.
final class DistillationGoldenTests: XCTestCase {
    struct Golden {
        let meta: [String: Any]
        let file: SafeTensorsFile
        func tensor(_ name: String) throws -> Tensor { try file.tensor(name) }
        func number(_ key: String) -> Double { (meta[key] as! NSNumber).doubleValue }
    }

    func golden(_ student: String) throws -> Golden {
        Golden(meta: try readJSON(fixture("mu_grads/kd_llama.json")),
               file: try SafeTensorsFile(path: fixture("mu_grads/kd_llama_\(student).safetensors")))
    }

    func examples(_ g: Golden) throws -> [Seq2SeqExample] {
        zip(try intRows(g.meta["sources"]), try intRows(g.meta["targets"])).map { Seq2SeqExample(source: $0, target: $1) }
    }

    func settings(_ g: Golden, steps: Bool = false) -> Trainer.Settings {
        var s = Trainer.Settings()
        (s.encoderSeqLen, s.decoderSeqLen, s.batchSize, s.dropout, s.shuffle) = (Int(g.number("encoder_seq_len")), Int(g.number("decoder_seq_len")), 3, 0, false)
        let o = g.meta["optimizer"] as! [String: Any]
        s.learningRate = (o["lr"] as! NSNumber).doubleValue
        s.warmupSteps = (o["warmup_steps"] as! NSNumber).intValue
        s.weightDecay = (o["weight_decay"] as! NSNumber).doubleValue
        s.maxGradNorm = (o["max_grad_norm"] as! NSNumber).doubleValue
        return s
    }

    func teacher() throws -> DistillationTeacher {
        try XCTUnwrap(try ModelRegistry.load(folder: fixture("tiny_llama_teacher")) as? DistillationTeacher)
    }

    func trainer(_ student: String, _ g: Golden, targets: DistillationSettings.Targets) throws -> Trainer {
        var kd = DistillationSettings(teacher: try teacher())
        (kd.alpha, kd.targets) = (Float(g.number("alpha")), targets)
        let steps = ((g.meta["optimizer"] as! [String: Any])["steps"] as! NSNumber).intValue
        if student == "mu" {
            return try Seq2SeqTrainer(parameters: MuParameters(model: try MuModel(folder: fixture("mu/gqa_mod"))), data: try examples(g),
                                      settings: settings(g), epochs: 1, steps: steps, distillation: kd)
        }
        return try CausalLMTrainer(parameters: MuDecoderParameters(model: try MuDecoderModel(folder: fixture("mu/mu_decoder"))),
                                   data: try examples(g), settings: settings(g), epochs: 1, steps: steps, distillation: kd)
    }

    /// The teacher's inputs, mask and logit slice equal what transformers computed.
    func testTeacherInputsAndLogitsMatchTransformers() throws {
        let g = try golden("mu"), t = try teacher()
        let (E, T) = (Int(g.number("encoder_seq_len")), Int(g.number("decoder_seq_len")))
        for (case_, targets) in [("data", try intRows(g.meta["targets"]).map { $0 + [2] }), ("generated", try intRows(g.meta["generated"]))] {
            let m = try XCTUnwrap(g.meta["mu.\(case_)"] as? [String: Any])
            let items = zip(try intRows(g.meta["sources"]), targets).map {
                DistillationItem(source: $0, generated: $1, encoderSeqLen: E, decoderSeqLen: T, bos: 1, pad: 0, unk: 0, teacherVocabulary: 97)
            }
            XCTAssertEqual(items.map(\.teacherIds), try intRows(m["teacher_input_ids"]), case_)
            XCTAssertEqual(items.map { $0.teacherMask.map(Int.init) }, try intRows(m["teacher_attention_mask"]), case_)
            let logits = try t.teacherLogits(items.map(\.teacherIds), attentionMask: items.map(\.teacherMask), range: (E - 1)..<(E - 1 + T))
            let err = relativeError(logits.toArray(), try g.tensor("mu.\(case_).teacher_logits").toArray())
            XCTAssertLessThan(err, 1e-5, "\(case_): teacher logits vs transformers \(err)")
        }
    }

    func checkGradients(_ student: String, _ t: Trainer, _ g: Golden, prefix: String) throws {
        let globalMax = try t.model.names.map { try g.tensor(prefix + "grad." + $0).toArray().map(abs).max()! }.max()!
        XCTAssertEqual(Set(g.file.tensors.keys.filter { $0.hasPrefix(prefix + "grad.") }.map { String($0.dropFirst(prefix.count + 5)) }),
                       Set(t.model.names), "parameter names")
        var worst: (Float, String) = (0, "")
        for n in t.model.names {
            let got = try XCTUnwrap(t.model[n].grad, n).toArray(), want = try g.tensor(prefix + "grad." + n).toArray()
            if MuTrainingTests.hasZeroGradient(n) {
                XCTAssertLessThan(got.map(abs).max()!, 1e-6 * globalMax, n)
                XCTAssertLessThan(want.map(abs).max()!, 1e-6 * globalMax, n)
                continue
            }
            XCTAssertGreaterThan(want.map(abs).max()!, 0, "\(n): the reference gradient should not vanish")
            let err = relativeError(got, want)
            if err > worst.0 { worst = (err, n) }
            XCTAssertLessThan(err, 1e-4, "\(prefix) gradient of \(n): relative error \(err)")
        }
        print("kd from a Llama teacher, \(prefix): worst gradient error \(worst.0) (\(worst.1))")
    }

    func testLossAndEveryGradientMatchPyTorch() throws {
        for student in ["mu", "mu_decoder"] {
            let g = try golden(student)
            for case_ in ["data", "generated"] {
                let t = try trainer(student, g, targets: case_ == "data" ? .data : .student)
                let ex = try examples(g)
                t.model.zeroGrad()
                let (loss, kd, ce) = try t.microBatchLoss(ex, micro: 0, training: false,
                                                          targets: case_ == "data" ? nil : try intRows(g.meta["generated"]))
                loss.backward()
                let p = "\(student).\(case_)."
                for (got, key) in [(loss.item, "loss"), (kd!, "kd_loss"), (ce!, "ce_loss")] {
                    let want = try g.tensor(p + key).toArray()[0]
                    XCTAssertEqual(got, want, accuracy: abs(want) * 1e-5, p + key)
                }
                try checkGradients(student, t, g, prefix: p)
            }
        }
    }

    func testTenAdamWStepsWithWarmupCosineMatchTorch() throws { try withPinnedBLASKernels { try tenAdamWSteps() } }

    private func tenAdamWSteps() throws {
        for student in ["mu", "mu_decoder"] {
            let g = try golden(student)
            let t = try trainer(student, g, targets: .data)
            let ex = try examples(g)
            let initial = t.model.variables.mapValues { $0.value.toArray() }
            let want = try ["loss", "kd", "ce", "grad_norm", "lr"].map { try g.tensor("\(student).step_\($0)").toArray() }
            XCTAssertEqual(Int(t.schedule.totalSteps), want[0].count)
            for s in 0..<want[0].count {
                XCTAssertEqual(Float(t.settings.learningRate * t.schedule.factor(step: s)), want[4][s], accuracy: 1e-9, "\(student) step \(s) lr")
                let r = try t.trainStep(on: [ex])
                for (i, (got, key)) in [(r.loss, "loss"), (r.kd!, "kd"), (r.ce!, "ce")].enumerated() {
                    XCTAssertEqual(got, want[i][s], accuracy: abs(want[i][s]) * 1e-4, "\(student) step \(s) \(key)")
                }
                XCTAssertEqual(Float(r.gradNorm), want[3][s], accuracy: want[3][s] * 1e-2, "\(student) step \(s) grad norm")
            }
            let lrSum = want[4].reduce(0, +)
            var worst: (Float, String) = (0, ""), errors: [Float] = []
            for n in t.model.names {
                let after = try g.tensor("\(student).after." + n).toArray(), got = t.model[n].value.toArray(), before = initial[n]!
                if MuTrainingTests.hasZeroGradient(n) {
                    XCTAssertLessThan(zip(got, before).map { abs($0 - $1) }.max()!, 3 * lrSum, "\(student): \(n)")
                    continue
                }
                let moved = zip(after, before).map { abs($0 - $1) }.max()!
                XCTAssertGreaterThan(moved, 0.05 * lrSum, "\(student): \(n) should have moved")
                let diffs = zip(got, after).map { abs($0 - $1) / moved }
                let err = diffs.max()!, far = diffs.filter { $0 > 1e-3 }.count
                if err > worst.0 { worst = (err, n) }
                errors.append(err)
                XCTAssertLessThan(err, 1e-1, "\(student): \(n) after 10 steps: max |Δ| / movement \(err)")
                XCTAssertLessThanOrEqual(far, max(1, got.count / 100), "\(student): \(n): \(far) elements beyond 1e-3 of the movement")
            }
            let median = errors.sorted()[errors.count / 2]
            XCTAssertLessThan(median, 1e-2, "\(student): median over tensors of max |Δ| / movement")
            print("\(student): 10 KD steps, losses \(want[0].first!) → \(want[0].last!); max |Δ| / movement: median over tensors \(median), worst \(worst.0) (\(worst.1))")
        }
    }
}
