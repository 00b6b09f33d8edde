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
}
