import Foundation
import XCTest
@testable import Encore
import EncoreKernels

/// Fixture folders live beside the tests (made by tools/goldens/make_mu_goldens.py).
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

func fixture(_ rel: String) -> String { fixtures + "/" + rel }

func readJSON(_ path: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

func intRows(_ any: Any?) throws -> [[Int]] {
    try XCTUnwrap(any as? [[Any]]).map { $0.map { ($0 as! NSNumber).intValue } }
}

func ints(_ any: Any?) throws -> [Int] {
    try XCTUnwrap(any as? [Any]).map { ($0 as! NSNumber).intValue }
}

/// max |a − b| / max |b|: the relative error used by the parity tests.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var diff: Float = 0, scale: Float = 0
    for (x, y) in zip(a, b) {
        diff = max(diff, abs(x - y))
        scale = max(scale, abs(y))
    }
    return diff / max(scale, 1e-30)
}

/// `encore score --model model --input-ids … --target-ids … --json` + `extra`: its log-probabilities (the call must
/// succeed).
func scoreLogprobs(model: String, input: [Int], target: [Int], _ extra: [String]) throws -> [Double] {
    let r = runCLI(["score", "--model", model, "--input-ids", input.map(String.init).joined(separator: ","),
                    "--target-ids", target.map(String.init).joined(separator: ","), "--json"] + extra)
    XCTAssertEqual(r.status, 0, r.stderr)
    let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    return try XCTUnwrap(o["logprobs"] as? [Double], r.stdout)
}

/// The largest |a − b| over two score lists (infinity when either is empty).
func maxGap(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

/// A temporary folder removed at the end of the test.
func makeTempDir(_ test: XCTestCase) throws -> String {
    let dir = NSTemporaryDirectory() + "encore-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}

/// Cuts a reference output after its first EOS (the reference pads finished rows with EOS).
func untilEOS(_ ids: [Int], eos: Int) -> [Int] {
    if let i = ids.firstIndex(of: eos) { return Array(ids[...i]) }
    return ids
}

// Small random models the weight-format and cache tests share (width 80, vocabulary 300, 4 heads over 2 KV heads).

/// Mu with 2 encoder layers and `decoderLayers` decoder layers.
func smallMu(decoderLayers: Int = 2, seed: UInt64) throws -> MuModel {
    try MuModel(config: MuConfig(nEncoderLayer: 2, nDecoderLayer: decoderLayers, nEmbd: 80, qkvEmbd: 64, hiddenDim: 320,
                                 nHead: 4, nKVHead: 2, vocabSize: 300, eosTokenId: 2), randomSeed: seed)
}

/// The decoder-only Mu twin with 3 layers.
func smallMuDecoder(blockSize: Int = 64, seed: UInt64) throws -> MuDecoderModel {
    try MuDecoderModel(config: MuDecoderConfig(nLayer: 3, nEmbd: 80, qkvEmbd: 64, isInterleaved: false, hiddenDim: 320,
                                               nHead: 4, nKVHead: 2, blockSize: blockSize, ropeTheta: 10000, ropeFactor: 1,
                                               padTokenId: 0, vocabSize: 300, bosTokenId: 1, eosTokenId: 2),
                       randomSeed: seed)
}

/// T5 with 2 encoder and 3 decoder layers ("relu" or "gated-gelu" feed-forward).
func smallT5(feedForward: String, tiedHead: Bool = true, seed: UInt64) throws -> T5Model {
    try T5Model(config: T5Config(vocabSize: 300, dModel: 80, dKV: 16, dFF: 160, numLayers: 2, numDecoderLayers: 3,
                                 numHeads: 4, feedForwardProj: feedForward, tieWordEmbeddings: tiedHead), randomSeed: seed)
}

/// Runs `body` with OpenBLAS on its Haswell kernels where it can switch (a DYNAMIC_ARCH OpenBLAS on an AVX2 CPU), then
/// restores the kernel set. For tests that compare multi-step training trajectories with PyTorch's: Adam turns
/// roundoff into ±lr steps on elements whose gradient is below it, so the trajectories of two correct fp32 GEMMs with
/// different summation orders part after a few steps (gqa_mod: its step-2 gradient norm 0.2% apart with the
/// SkylakeX kernels, which pass every one-GEMM check; with Haswell's within 1e-3). The goldens were checked on Zen
/// kernels (Haswell's sgemm with other blocking), which are left as they are.
/// An MKL selected by `ENCORE_BLAS` is set aside meanwhile (OpenBLAS runs the body).
func withPinnedBLASKernels<T>(_ body: () throws -> T) rethrows -> T {
    _ = BLAS.onPool   // ENCORE_BLAS applied now, so it cannot load MKL inside the body
    let mkl = BLAS.mkl
    BLAS.mkl = nil
    defer { BLAS.mkl = mkl }
    guard Int(ek_cpu_features()) & EK_CPU_AVX2_FMA != 0, let previous = BLAS.kernelSet,
          !["haswell", "zen"].contains(previous.lowercased()), BLAS.switchKernels(to: "Haswell") else { return try body() }
    defer { BLAS.switchKernels(to: previous) }
    return try body()
}
