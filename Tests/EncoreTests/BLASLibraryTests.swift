import XCTest
@testable import Encore
import EncoreKernels

/// The fp32 GEMM library chosen at run time (`Backend.selectBLAS`, `ENCORE_BLAS`): bad choices fail with a message that
/// names them, and Intel MKL, where the tests are given one (`ENCORE_TEST_MKL=/path/libmkl_rt.so.3`; `.ci/run` fetches
/// it with scripts/fetch-mkl.sh), computes the same GEMMs and model outputs as the linked BLAS.
/// Tolerances: GEMMs within 1e-5 of a float64 reference relative to the largest |C| (fp32 sums of up to 1,000 terms);
/// the Mu goldens within the 1e-4 of MuParityTests.
final class BLASLibraryTests: XCTestCase {
    private var previous: BLAS.MKL?

    override func setUp() {
        super.setUp()
        _ = BLAS.onPool   // ENCORE_BLAS applied before the choice is saved
        previous = BLAS.mkl
    }

    override func tearDown() {
        BLAS.mkl = previous   // the library the process had (OpenBLAS, or MKL from ENCORE_BLAS)
        super.tearDown()
    }

    func testUnknownOrMissingLibrariesAreRefusedByName() throws {
        let before = Backend.blasName
        XCTAssertThrowsError(try Backend.selectBLAS("blis")) { error in
            XCTAssertTrue("\(error)".contains("ENCORE_BLAS=blis: expected auto, openblas, mkl, or the path"), "\(error)")
        }
        #if os(Linux) && arch(x86_64)
        XCTAssertThrowsError(try Backend.selectBLAS("/nonexistent/libmkl_rt.so.3")) { error in
            XCTAssertEqual((error as? EncoreError)?.kind, .invalidArgument)
            XCTAssertTrue("\(error)".contains("could not load Intel MKL: /nonexistent/libmkl_rt.so.3"), "\(error)")
        }
        // a real shared library that is not MKL's (the test bundle's own libc)
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"].first {
            FileManager.default.fileExists(atPath: $0)
        }
        if let libc {
            XCTAssertThrowsError(try Backend.selectBLAS(libc)) { error in
                XCTAssertTrue("\(error)".contains("not Intel MKL's libmkl_rt"), "\(error)")
            }
        }
        #else
        XCTAssertThrowsError(try Backend.selectBLAS("mkl")) { error in
            XCTAssertEqual((error as? EncoreError)?.kind, .unsupported)
        }
        #endif
        XCTAssertEqual(Backend.blasName, before, "a refused choice leaves the BLAS as it was")
    }

    /// The CLI applies ENCORE_BLAS before anything else and exits 1 with the message when it cannot.
    func testCLIRefusesABadEncoreBLAS() {
        let r = runCLI(["inspect", fixture("mu/gqa_mod")], environment: ["ENCORE_BLAS": "/nonexistent/libmkl_rt.so.3"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("error: ENCORE_BLAS=/nonexistent/libmkl_rt.so.3"), r.stderr)
        XCTAssertFalse(r.stderr.contains("warning:"), "the error is reported once: \(r.stderr)")
        let ok = runCLI(["inspect", fixture("mu/gqa_mod")], environment: ["ENCORE_BLAS": "openblas"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }

    private func mklPath() throws -> String {
        #if os(Linux) && arch(x86_64)
        let path = ProcessInfo.processInfo.environment["ENCORE_TEST_MKL"] ?? ""
        try XCTSkipIf(path.isEmpty, "ENCORE_TEST_MKL is not set (scripts/fetch-mkl.sh fetches Intel MKL from PyPI)")
        return path
        #else
        throw XCTSkip("Intel MKL runs on x86-64 Linux only")
        #endif
    }

    /// Where the automatic choice looks: the loader's names first, then the Python environments' lib folders and
    /// `models/mkl/` above the executable, each only when the file is there.
    func testAutomaticCandidatesListOnlyFilesThatExist() {
        let present: Set<String> = ["/venv/lib/libmkl_rt.so.3", "/conda/lib/libmkl_rt.so.2",
                                    "/src/encore/models/mkl/libmkl_rt.so.3", "/src/models/mkl/libmkl_rt.so.3"]
        let found = BLAS.automaticMKLCandidates(
            environment: ["VIRTUAL_ENV": "/venv", "CONDA_PREFIX": "/conda", "HOME": "/home/u"],
            executable: "/src/encore/.build/x86_64-unknown-linux-gnu/release/encore", exists: present.contains)
        XCTAssertEqual(found, ["/src/encore/models/mkl/libmkl_rt.so.3", "/venv/lib/libmkl_rt.so.3",
                               "/conda/lib/libmkl_rt.so.2", "libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"],
                       "the nearest models/mkl above the executable first, and nothing that is absent")
        let none = BLAS.automaticMKLCandidates(environment: [:], executable: "/a/b/c/d/e/f/g/encore", exists: { _ in false })
        XCTAssertEqual(none, ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"])
        // the executable's folder and the four above it: /x is the fifth above /x/1/2/3/4/5, the fourth above /x/1/2/3/4
        let far = BLAS.automaticMKLCandidates(environment: [:], executable: "/x/1/2/3/4/5/encore",
                                              exists: { $0 == "/x/models/mkl/libmkl_rt.so.3" })
        XCTAssertEqual(far.count, 3, "\(far)")
        XCTAssertEqual(BLAS.automaticMKLCandidates(environment: [:], executable: "/x/1/2/3/4/encore",
                                                   exists: { $0 == "/x/models/mkl/libmkl_rt.so.3" }).first,
                       "/x/models/mkl/libmkl_rt.so.3")
    }

    /// The automatic choice takes the first candidate that loads as MKL, on an Intel CPU only; names that do not load
    /// are skipped without an error; the BLAS name says it was found automatically.
    func testAutomaticChoiceLoadsMKLOnIntelOnly() throws {
        XCTAssertNil(BLAS.automaticMKL(candidates: ["/nonexistent/libmkl_rt.so.3"], intelCPU: true))
        let path = try mklPath()
        XCTAssertNil(BLAS.automaticMKL(candidates: [path], intelCPU: false), "other CPUs keep the linked BLAS")
        let found = try XCTUnwrap(BLAS.automaticMKL(candidates: ["/nonexistent/libmkl_rt.so.3", path], intelCPU: true))
        XCTAssertEqual(found.path, path)
        XCTAssertTrue(found.automatic)
        BLAS.mkl = found
        XCTAssertTrue(Backend.blasName.contains("found automatically, ENCORE_BLAS=openblas turns it off"), Backend.blasName)
        try Backend.selectBLAS("openblas")
        XCTAssertFalse(Backend.blasName.hasPrefix("Intel MKL"), Backend.blasName)
        try Backend.selectBLAS("AUTO")   // parsed like the others: MKL exactly when this CPU and machine give one
        let expected = BLAS.automaticChoice()
        XCTAssertEqual(BLAS.mkl?.path, expected?.path, Backend.blasName)
        XCTAssertEqual(BLAS.mkl?.automatic ?? false, expected != nil)
    }

    /// An interrupted copy of MKL (libmkl_rt without the parts it loads at its first GEMM, where MKL would exit the
    /// process) is refused by name, and the automatic choice skips it.
    func testAnIncompleteMKLIsRefusedBeforeItCanStopTheProcess() throws {
        XCTAssertEqual(BLAS.missingMKLParts(besides: "/m/libmkl_rt.so.3", exists: { $0 == "/m/libmkl_core.so.3" }),
                       ["libmkl_sequential.so.3", "libmkl_intel_lp64.so.3"])
        XCTAssertEqual(BLAS.missingMKLParts(besides: "/m/libmkl_rt.so", exists: { _ in true }), [])
        let path = try mklPath()
        let partial = FileManager.default.temporaryDirectory.appendingPathComponent("encore-partial-mkl-\(getpid())")
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: partial) }
        let rt = partial.appendingPathComponent("libmkl_rt.so.3")
        try FileManager.default.copyItem(atPath: path, toPath: rt.path)
        XCTAssertThrowsError(try Backend.selectBLAS(rt.path)) { error in
            XCTAssertTrue("\(error)".contains("an incomplete Intel MKL install (no libmkl_core.so.3, libmkl_sequential.so.3, "
                                              + "libmkl_intel_lp64.so.3 beside it"), "\(error)")
        }
        XCTAssertNil(BLAS.automaticMKL(candidates: [rt.path], intelCPU: true))
        XCTAssertEqual(BLAS.automaticMKL(candidates: [rt.path, path], intelCPU: true)?.path, path, "the next candidate")
    }

    /// The install hint: only for an Intel CPU that the automatic choice left on OpenBLAS.
    func testAdviceOnlyWhereMKLWouldHelpAndWasNotChosenAgainst() {
        #if os(Linux) && arch(x86_64)
        let hint = BLAS.advice(intelCPU: true, usingMKL: false, chosen: false)
        XCTAssertTrue(hint?.contains("bash scripts/fetch-mkl.sh") ?? false, "\(String(describing: hint))")
        #else
        XCTAssertNil(BLAS.advice(intelCPU: true, usingMKL: false, chosen: false))
        #endif
        XCTAssertNil(BLAS.advice(intelCPU: false, usingMKL: false, chosen: false), "other CPUs: OpenBLAS is the choice")
        XCTAssertNil(BLAS.advice(intelCPU: true, usingMKL: true, chosen: false), "MKL already runs")
        XCTAssertNil(BLAS.advice(intelCPU: true, usingMKL: false, chosen: true), "ENCORE_BLAS=openblas was asked for")
        XCTAssertEqual([nil, "", "auto", "AUTO", "openblas", "mkl", "/v/lib/libmkl_rt.so.3"].map(BLAS.namesAutomaticChoice),
                       [true, true, true, true, false, false, false], "which ENCORE_BLAS values leave the choice to Encore")
    }

    /// Every shape the ops layer sends: transposed B (Linear), plain B, transposed A (weight gradients), beta = 1
    /// (accumulation), ldc wider than N, on the pool (large) and on one thread (small).
    func testMKLGEMMsMatchAFloat64Reference() throws {
        try Backend.selectBLAS(try mklPath())
        XCTAssertTrue(Backend.blasName.hasPrefix("Intel MKL "), Backend.blasName)
        try checkGEMMsAgainstFloat64()
    }

    /// The same on the linked BLAS (OpenBLAS), whichever library the process chose by default.
    func testLinkedBLASGEMMsMatchAFloat64Reference() throws {
        try Backend.selectBLAS("openblas")
        XCTAssertFalse(Backend.blasName.hasPrefix("Intel MKL"), Backend.blasName)
        try checkGEMMsAgainstFloat64()
    }

    private func checkGEMMsAgainstFloat64() throws {
        var rng = SplitMix64(seed: 7)
        for (m, n, k) in [(3, 5, 7), (128, 96, 200), (64, 257, 130), (37, 300, 1000)] {
            for mode in ["transB", "plain", "transA", "accumulate"] {
                let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let b = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let ldc = n + 3
                var c = (0..<(m * ldc)).map { _ in Float.random(in: -1...1, using: &rng) }
                // reference in float64: A as [M, K] (transA: stored [K, M]), B as [N, K] (transB) or [K, N]; the
                // columns past N keep C's values
                var expected = c.map(Double.init)
                for i in 0..<m {
                    for j in 0..<n {
                        var s = mode == "accumulate" ? expected[i * ldc + j] : 0
                        for p in 0..<k {
                            let av = mode == "transA" ? a[p * m + i] : a[i * k + p]
                            let bv = mode == "transB" || mode == "accumulate" ? b[j * k + p] : b[p * n + j]
                            s += Double(av) * Double(bv)
                        }
                        expected[i * ldc + j] = s
                    }
                }
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        c.withUnsafeMutableBufferPointer { cp in
                            switch mode {
                            case "transA":
                                BLAS.gemmTransA(m: m, n: n, k: k, a: ap.baseAddress!, lda: m, b: bp.baseAddress!, ldb: n,
                                                c: cp.baseAddress!, ldc: ldc)
                            default:
                                BLAS.gemm(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, transB: mode != "plain",
                                          c: cp.baseAddress!, ldc: ldc, beta: mode == "accumulate" ? 1 : 0)
                            }
                        }
                    }
                }
                let scale = expected.map { abs($0) }.max()!
                let worst = zip(c, expected).map { abs(Double($0) - $1) }.max()!
                XCTAssertLessThan(worst / scale, 1e-5, "\(m)x\(n)x\(k) \(mode): relative error \(worst / scale)")
            }
        }
    }

    /// A whole model through MKL: the Mu goldens of the reference PyTorch code hold as they do with OpenBLAS.
    func testMuMatchesTheReferenceOnMKL() throws {
        try Backend.selectBLAS(try mklPath())
        try checkMuGoldens()
    }

    /// And through the linked BLAS, whichever library the process chose by default.
    func testMuMatchesTheReferenceOnTheLinkedBLAS() throws {
        try Backend.selectBLAS("openblas")
        try checkMuGoldens()
    }

    private func checkMuGoldens() throws {
        for name in MuParityTests.muCases {
            let (model, golden, tensors) = try MuParityTests.load(name)
            let logits = try model.teacherForcedLogits(encoderIds: try intRows(golden["encoder_input_ids"]),
                                                       decoderIds: try intRows(golden["decoder_input_ids"]))
            let err = relativeError(logits.toArray(), try tensors.tensor("logits").toArray())
            XCTAssertLessThan(err, 1e-4, "\(name) on \(Backend.blasName): logits relative error \(err)")
        }
    }
}
