import XCTest
@testable import Encore

/// The FLOPs `encore bench` reports are counted by the model as it runs; here they must equal the count
/// derived from the shapes by hand, for a prompt pass and a decode step.
final class OpCounterTests: XCTestCase {
    func testCountedFLOPsMatchTheShapes() throws {
        let model = try XCTUnwrap(ModelRegistry.load(folder: fixture("hf_decoders/llama")) as? LlamaModel)
        let c = model.config, s = c.attention
        let T = 20                                            // ≥ 16: attention through BLAS over the T×T square
        let perToken = 2 * (c.nEmbd * (s.qWidth + 2 * s.kvWidth) + s.qWidth * c.nEmbd + 3 * c.nEmbd * c.ffnDim)
        let head = 2 * c.vocabSize * c.nEmbd
        OpCounter.start()
        let state = try model.beginGeneration(prompts: [Array(3..<(3 + T))])
        let prefill = OpCounter.flops
        try state.advance(tokens: [7])
        let (total, bytes) = OpCounter.stop()
        let wantPrefill = c.nLayer * (T * perToken + 4 * T * T * s.heads * s.headDim) + head   // head on the last row
        XCTAssertEqual(prefill, Double(wantPrefill))
        let wantStep = c.nLayer * (perToken + 4 * (T + 1) * s.heads * s.headDim) + head       // one token over T+1 keys
        XCTAssertEqual(total - prefill, Double(wantStep))
        XCTAssertEqual(bytes, 2 * Double(4 * (c.nLayer * perToken / 2 + head / 2)), "every weight read once per pass")
        XCTAssertFalse(OpCounter.enabled)
        _ = try model.logits([[5, 6]])
        XCTAssertEqual(OpCounter.flops, total, "nothing is counted once stopped")
    }
}
