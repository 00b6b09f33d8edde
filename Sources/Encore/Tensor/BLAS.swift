import EncoreKernels
import Foundation
#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif

/// Thin wrappers over CBLAS (OpenBLAS on Linux, Accelerate on Apple platforms). Only the ops layer calls
/// these; models never do.
enum BLAS {
    /// C[M, N] = alpha * A[M, K] · op(B) + beta * C, row-major. `transB`: B is stored [N, K] (a PyTorch
    /// `Linear` weight) and used transposed. `lda`/`ldb`/`ldc` default to dense rows.
    static func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int? = nil,
                     b: UnsafePointer<Float>, ldb: Int? = nil, transB: Bool,
                     c: UnsafeMutablePointer<Float>, ldc: Int? = nil, alpha: Float = 1, beta: Float = 0) {
        let lda = lda ?? k
        let ldb = ldb ?? (transB ? k : n)
        let ldc = ldc ?? n
        OpCounter.add(flops: 2 * m * n * k)
        run(GemmJob(m: Int32(m), n: Int32(n), k: Int32(k), a: a, lda: Int32(lda), b: b, ldb: Int32(ldb), transA: false,
                    transB: transB, c: c, ldc: Int32(ldc), alpha: alpha, beta: beta))
    }

    /// One row-major SGEMM call's arguments.
    struct GemmJob {
        var m, n, k: Int32
        var a: UnsafePointer<Float>, lda: Int32
        var b: UnsafePointer<Float>, ldb: Int32
        var transA, transB: Bool
        var c: UnsafeMutablePointer<Float>, ldc: Int32
        var alpha, beta: Float
    }

    /// GEMMs on Encore's thread pool: OpenBLAS runs single-threaded and each pool thread computes a slice of the
    /// output columns (N). One pool instead of two: OpenBLAS's idle threads otherwise spin and yield beside
    /// Encore's kernels between the GEMMs of a prompt pass. `ENCORE_GEMM_THREADS=openblas` restores OpenBLAS's own
    /// threading (A/B). Off with Accelerate (it schedules its own work).
    static let onPool: Bool = {
        if let error = environmentBLAS, !environmentErrorThrown {
            FileHandle.standardError.write(("warning: \(error.message); using the linked BLAS\n").data(using: .utf8)!)
        }
        #if canImport(Accelerate)
        return false
        #else
        _ = coreUpgrade
        let useOpenBLASThreads = ProcessInfo.processInfo.environment["ENCORE_GEMM_THREADS"] == "openblas"
        if !useOpenBLASThreads { openblas_set_num_threads(1) }
        return !useOpenBLASThreads
        #endif
    }()

    // MARK: Intel MKL, loaded at run time

    /// Intel MKL's `cblas_sgemm` as loaded by ``loadMKL(_:)``.
    struct MKL {
        typealias SGEMM = @convention(c) (Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
                                          UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void
        /// The file loaded as named (a path, or "libmkl_rt.so.3" as the loader found it), and MKL's version, e.g. "2026.2".
        let path: String, version: String
        let sgemm: SGEMM
        /// Found by the automatic choice (`ENCORE_BLAS` unset or "auto"), not named by the user.
        var automatic = false
    }

    /// The MKL that runs the fp32 GEMMs (prompt passes, prompt attention, training), or nil: the linked BLAS does
    /// (OpenBLAS on Linux, Accelerate on Apple platforms). Set by ``Backend/selectBLAS(_:)`` or `ENCORE_BLAS`; not while
    /// GEMMs run. MKL's sgemm ran the prompt GEMM shapes 17–31% faster than Debian's OpenBLAS 0.3.21 on the Intel Xeon of
    /// session 14 (`bench/micro/sgemm_cold.c`), the library CTranslate2 and PyTorch's wheels use.
    nonisolated(unsafe) static var mkl: MKL?

    /// Set by ``Backend/selectBLASFromEnvironment()``, which throws `environmentBLAS`'s error: `onPool` then does not
    /// also print it as a warning.
    nonisolated(unsafe) static var environmentErrorThrown = false
    /// Set by ``Backend/selectBLAS(_:)``: with `ENCORE_BLAS` unset, its choice is made without first loading (and
    /// discarding) the automatic one.
    nonisolated(unsafe) static var explicitChoice = false

    /// `ENCORE_BLAS` applied once, before the first GEMM: nil when it is unset or was applied, else the error (the CLI
    /// throws it through ``Backend/selectBLASFromEnvironment()``; a library caller gets a warning on stderr and the
    /// linked BLAS).
    static let environmentBLAS: EncoreError? = {
        guard let spec = ProcessInfo.processInfo.environment["ENCORE_BLAS"], !namesAutomaticChoice(spec) else {
            if !explicitChoice { mkl = automaticChoice() }   // else Backend.selectBLAS's choice stands, nothing loaded
            return nil
        }
        do {
            try select(spec)
            return nil
        } catch let error as EncoreError {
            return error
        } catch {
            return EncoreError(.invalidArgument, "ENCORE_BLAS=\(spec): \(error)")
        }
    }()

    // MARK: The automatic choice

    /// Whether an `ENCORE_BLAS` value leaves the choice to Encore: unset, empty or "auto" (any case).
    static func namesAutomaticChoice(_ spec: String?) -> Bool {
        guard let spec, !spec.isEmpty else { return true }
        return spec.lowercased() == "auto"
    }

    /// The running executable (the CLI, or the test bundle), for ``automaticMKLCandidates(environment:executable:)``.
    static var executablePath: String? {
        #if os(Linux)
        return try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        #else
        return Bundle.main.executablePath
        #endif
    }

    /// Where the automatic choice looks for Intel MKL, in order: `models/mkl/` in the executable's folder or one of
    /// the four above it (where scripts/fetch-mkl.sh unpacks its pinned copy beside a SwiftPM build:
    /// `<package>/.build/<triple>/release/encore`), the active Python environment (`$VIRTUAL_ENV/lib`,
    /// `$CONDA_PREFIX/lib` after `pip install mkl` or `conda install mkl`), then the dynamic loader's search
    /// (`LD_LIBRARY_PATH`, ldconfig: a system package). Paths are listed only when the file exists.
    ///
    /// ```swift
    /// BLAS.automaticMKLCandidates(environment: ["VIRTUAL_ENV": "/venv"], executable: "/src/encore/.build/release/encore")
    /// // ["/src/encore/models/mkl/libmkl_rt.so.3" (if present), "/venv/lib/libmkl_rt.so.3" (if present),
    /// //  "libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    /// ```
    static func automaticMKLCandidates(environment: [String: String], executable: String?,
                                       exists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> [String] {
        var found: [String] = []
        if let executable, executable.hasPrefix("/") {
            var dir = URL(fileURLWithPath: executable).deletingLastPathComponent()
            for _ in 0..<5 {   // the executable's folder and the four above it
                let path = dir.appendingPathComponent("models/mkl/libmkl_rt.so.3").path
                if exists(path) { found.append(path); break }
                if dir.path == "/" { break }
                dir = dir.deletingLastPathComponent()
            }
        }
        for key in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
            guard let root = environment[key], !root.isEmpty else { continue }
            for name in ["libmkl_rt.so.3", "libmkl_rt.so.2"] where exists(root + "/lib/" + name) {
                found.append(root + "/lib/" + name)
            }
        }
        return found + ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    }

    /// The automatic choice: on an Intel CPU, the first of `candidates` that loads as Intel MKL (MKL's sgemm ran the
    /// prompt GEMMs 17–31% faster than OpenBLAS there, session 14); else, and on other CPUs, nil (the linked BLAS).
    /// Never throws: a candidate that does not load is skipped.
    static func automaticMKL(candidates: [String], intelCPU: Bool) -> MKL? {
        #if os(Linux) && arch(x86_64)
        guard intelCPU else { return nil }
        for name in candidates {
            if var found = try? loadMKL([name], spec: "auto") {
                found.automatic = true
                return found
            }
        }
        #endif
        return nil
    }

    /// The automatic choice for this process: its environment, executable and CPU.
    static func automaticChoice() -> MKL? {
        automaticMKL(candidates: automaticMKLCandidates(environment: ProcessInfo.processInfo.environment,
                                                        executable: executablePath),
                     intelCPU: ek_cpu_is_intel() != 0)
    }

    /// ``Backend/blasAdvice``'s rule: advice only on an Intel CPU left on OpenBLAS by the automatic choice.
    static func advice(intelCPU: Bool, usingMKL: Bool, chosen: Bool) -> String? {
        #if os(Linux) && arch(x86_64)
        guard intelCPU && !usingMKL && !chosen else { return nil }
        return "hint: this Intel CPU runs Encore's fp32 GEMMs on OpenBLAS because no Intel MKL was found; "
            + "`bash scripts/fetch-mkl.sh` (or `pip install mkl` in the active environment) installs it, and Encore then "
            + "uses it by itself (fp32 first tokens 7-28% sooner in session 14's and 16's runs; ENCORE_BLAS=openblas "
            + "silences this)"
        #else
        return nil
        #endif
    }

    /// "auto": ``automaticMKL(candidates:intelCPU:)``; "openblas" (or "accelerate", "default"): the linked BLAS; "mkl":
    /// `libmkl_rt.so.3` / `.so.2` / `.so` found by the dynamic loader; anything with a "/": that file.
    static func select(_ spec: String) throws {
        switch spec.lowercased() {
        case "auto":
            mkl = automaticChoice()
        case "openblas", "accelerate", "default":
            mkl = nil
        case "mkl":
            mkl = try loadMKL(["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"], spec: spec)
        default:
            guard spec.contains("/") else {
                throw EncoreError(.invalidArgument, "ENCORE_BLAS=\(spec): expected auto, openblas, mkl, or the path of Intel MKL's "
                                  + "libmkl_rt.so (e.g. /venv/lib/libmkl_rt.so.3 after `pip install mkl`)")
            }
            mkl = try loadMKL([spec], spec: spec)
        }
    }

    /// Opens MKL's single dynamic library, sets its LP64 interface and sequential threading (each pool thread runs its
    /// own slice, as with OpenBLAS) before any other MKL call, and looks up `cblas_sgemm`.
    static func loadMKL(_ names: [String], spec: String) throws -> MKL {
        #if os(Linux) && arch(x86_64)
        var problems: [String] = []
        for name in names {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                problems.append(dlerror().map { String(cString: $0) } ?? "\(name): cannot be loaded")
                continue
            }
            typealias SetLayer = @convention(c) (Int32) -> Int32
            typealias Version = @convention(c) (UnsafeMutablePointer<CChar>?, Int32) -> Void
            guard let sgemm = dlsym(handle, "cblas_sgemm"), let interface = dlsym(handle, "MKL_Set_Interface_Layer"),
                  let threading = dlsym(handle, "MKL_Set_Threading_Layer") else {
                problems.append("\(name): not Intel MKL's libmkl_rt (no cblas_sgemm, MKL_Set_Interface_Layer or "
                                + "MKL_Set_Threading_Layer)")
                dlclose(handle)
                continue
            }
            // libmkl_rt loads its parts from its own folder at the first GEMM and exits the process when one is
            // missing (an interrupted copy): check them first, beside the file the loader actually opened
            if let file = mappedFile(containing: sgemm) ?? (name.contains("/") ? name : nil) {
                let missing = missingMKLParts(besides: file)
                if !missing.isEmpty {
                    problems.append("\(file): an incomplete Intel MKL install (no \(missing.joined(separator: ", ")) "
                                    + "beside it; MKL would stop the process at its first GEMM)")
                    dlclose(handle)
                    continue
                }
            }
            // MKL_INTERFACE_LP64 = 0 (32-bit integers, as CBLAS's), MKL_THREADING_SEQUENTIAL = 1
            let lp64 = unsafeBitCast(interface, to: SetLayer.self)(0)
            let sequential = unsafeBitCast(threading, to: SetLayer.self)(1)
            guard lp64 == 0, sequential == 1 else {
                problems.append("\(name): MKL kept interface layer \(lp64) and threading layer \(sequential) (wanted LP64 0 "
                                + "and sequential 1; set them before anything else in this process calls MKL)")
                continue
            }
            var version = "?"
            if let get = dlsym(handle, "MKL_Get_Version_String") {
                var buffer = [CChar](repeating: 0, count: 256)
                buffer.withUnsafeMutableBufferPointer { unsafeBitCast(get, to: Version.self)($0.baseAddress, 255) }
                let text = String(cString: buffer)
                // "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build …" -> "2026.2"
                version = text.range(of: "Version ").map { String(text[$0.upperBound...].prefix { !$0.isWhitespace && $0 != "-" }) } ?? text
            }
            return MKL(path: name, version: version, sgemm: unsafeBitCast(sgemm, to: MKL.SGEMM.self))
        }
        throw EncoreError(.invalidArgument, "ENCORE_BLAS=\(spec): could not load Intel MKL: " + problems.joined(separator: "; ")
                          + ". Install it with `pip install mkl` and set ENCORE_BLAS to its lib/libmkl_rt.so.3, or set "
                          + "ENCORE_BLAS=openblas to use OpenBLAS")
        #else
        throw EncoreError(.unsupported, "ENCORE_BLAS=\(spec): Intel MKL is supported on x86-64 Linux only; this build uses "
                          + "the linked BLAS (OpenBLAS or Accelerate)")
        #endif
    }

    /// The file mapped at `address` in this process (`/proc/self/maps`), e.g. where the loader found a library.
    static func mappedFile(containing address: UnsafeMutableRawPointer) -> String? {
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return nil }
        let target = UInt(bitPattern: address)
        for line in maps.split(separator: "\n") {
            // "7f0c1a000000-7f0c1a200000 r-xp 00000000 08:01 1234   /path/lib.so"
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, let dash = fields[0].firstIndex(of: "-"),
                  let low = UInt(fields[0][..<dash], radix: 16),
                  let high = UInt(fields[0][fields[0].index(after: dash)...], radix: 16),
                  low <= target && target < high else { continue }
            let path = fields[5].trimmingCharacters(in: .whitespaces)
            return path.hasPrefix("/") ? path : nil
        }
        return nil
    }

    /// The parts MKL's single dynamic library loads at run time for Encore's settings (core, sequential threading,
    /// the LP64 interface) that are absent from the folder of `runtime`, a `libmkl_rt.so[.N]` path; with the same
    /// version suffix. Empty for a complete install.
    ///
    /// ```swift
    /// BLAS.missingMKLParts(besides: "/tmp/partial/libmkl_rt.so.3")   // ["libmkl_core.so.3", …] when only rt was copied
    /// ```
    static func missingMKLParts(besides runtime: String,
                                exists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> [String] {
        let url = URL(fileURLWithPath: runtime)
        let name = url.lastPathComponent
        guard let range = name.range(of: ".so") else { return [] }
        let suffix = String(name[range.lowerBound...])   // ".so.3", ".so.2", ".so"
        let folder = url.deletingLastPathComponent()
        return ["libmkl_core", "libmkl_sequential", "libmkl_intel_lp64"].map { $0 + suffix }
            .filter { !exists(folder.appendingPathComponent($0).path) }
    }

    /// The kernel sets OpenBLAS picked and was switched to, or nil when it kept its own choice.
    ///
    /// OpenBLAS (DYNAMIC_ARCH builds, as Debian's) picks its kernels by CPU model and falls back to "Prescott" (SSE3)
    /// on models newer than its release knows: Debian 12's 0.3.21 on an Intel Xeon of family 6 model 207 runs SGEMM
    /// at 43–58 GFLOP/s on 2 threads instead of 215–279 with its SkylakeX kernels. When `OPENBLAS_CORETYPE` is unset
    /// and the chosen kernels predate AVX2 on a CPU that has AVX2 and FMA, this does what `OPENBLAS_CORETYPE` would:
    /// SkylakeX kernels where the CPU has AVX-512 (F, BW, VL), else Haswell, through OpenBLAS's own
    /// `gotoblas_dynamic_quit` / `gotoblas_dynamic_init` (looked up at run time; absent from single-target builds, and
    /// then nothing changes). Runs once, before the first BLAS call (every entry point here touches `onPool` first).
    /// The switch is process-wide: an app that also calls OpenBLAS from its own threads should make its first BLAS
    /// call through Encore (e.g. `Backend.setThreads`) before starting them, or set `OPENBLAS_CORETYPE` itself.
    static let coreUpgrade: (from: String, to: String)? = {
        #if canImport(Accelerate) || !os(Linux)
        return nil
        #else
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, let p = openblas_get_corename() else { return nil }
        let picked = String(cString: p), current = picked.lowercased()
        let f = Int(ek_cpu_features())
        guard f & EK_CPU_AVX2_FMA != 0, !avx2KernelSets.contains(current) else { return nil }
        // SkylakeX where the CPU has AVX-512 and the build has those kernels, else Haswell
        for target in (runsAVX512Kernels(f) ? ["SkylakeX", "Haswell"] : ["Haswell"]) where switchKernels(to: target) {
            return (picked, target)
        }
        // neither was taken (a build without them): whatever OpenBLAS runs now is reported by `coreName`
        guard let q = openblas_get_corename(), String(cString: q) != picked else { return nil }
        return (picked, String(cString: q))
        #endif
    }()

    /// OpenBLAS kernel sets (lowercased `openblas_get_corename()`) built on AVX2 and FMA or newer.
    static let avx2KernelSets: Set<String> = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"]
    /// Those of them built on AVX-512.
    static let avx512KernelSets: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]

    /// Whether a CPU with `features` (`ek_cpu_features()`) runs OpenBLAS's AVX-512 kernel sets (AVX-512 F, BW and VL).
    static func runsAVX512Kernels(_ features: Int) -> Bool {
        let avx512 = EK_CPU_AVX512F | EK_CPU_AVX512BWVL
        return features & avx512 == avx512
    }

    /// Whether the linked BLAS is a DYNAMIC_ARCH OpenBLAS (it exports `gotoblas_dynamic_init`), whose kernel set
    /// `OPENBLAS_CORETYPE` and ``switchKernels(to:)`` choose.
    static let isDynamicArch: Bool = {
        #if canImport(Accelerate) || !os(Linux)
        return false
        #else
        guard let handle = dlopen(nil, RTLD_NOW) else { return false }
        return dlsym(handle, "gotoblas_dynamic_init") != nil
        #endif
    }()

    /// A note for the header line when `OPENBLAS_CORETYPE` holds OpenBLAS to kernels older than the CPU runs, e.g.
    /// " (OPENBLAS_CORETYPE=Haswell; this CPU has AVX-512: unset it for OpenBLAS's AVX-512 kernels)"; nil otherwise.
    /// Encore keeps a set the user chose, but says what it costs: on an AMD Zen 5 whose environment set Haswell,
    /// SGEMM 512×4096×1024 on 2 threads ran at 197–200 GFLOP/s against 338–362 with SkylakeX's kernels and 321–339 with
    /// Cooperlake's, which OpenBLAS 0.3.21 picks there by itself (`bench/micro/sgemm_cold.c`, session 25).
    /// Only for a DYNAMIC_ARCH OpenBLAS (`dynamicArch`), where the variable chooses the kernels at all.
    static func environmentCoreHint(running name: String,
                                    environment: [String: String] = ProcessInfo.processInfo.environment,
                                    features: Int = Int(ek_cpu_features()), dynamicArch: Bool = isDynamicArch) -> String? {
        guard dynamicArch, let forced = environment["OPENBLAS_CORETYPE"] else { return nil }
        let running = name.lowercased()
        if runsAVX512Kernels(features), !avx512KernelSets.contains(running) {
            return " (OPENBLAS_CORETYPE=\(forced); this CPU has AVX-512: unset it for OpenBLAS's AVX-512 kernels)"
        }
        if features & EK_CPU_AVX2_FMA != 0, !avx2KernelSets.contains(running) {
            return " (OPENBLAS_CORETYPE=\(forced); this CPU has AVX2 and FMA: unset it for OpenBLAS's AVX2 kernels)"
        }
        return nil
    }

    /// Switches OpenBLAS to the named kernel set (an `OPENBLAS_CORETYPE` name such as "Haswell" or "SkylakeX") through
    /// its `gotoblas_dynamic_init`; false when the BLAS is not a DYNAMIC_ARCH OpenBLAS or did not take the name.
    /// Not while BLAS calls run. Tests whose results amplify roundoff (multi-step training trajectories) pin one set.
    @discardableResult
    static func switchKernels(to name: String) -> Bool {
        #if canImport(Accelerate) || !os(Linux)
        return false
        #else
        guard let handle = dlopen(nil, RTLD_NOW), let quit = dlsym(handle, "gotoblas_dynamic_quit"),
              let initialize = dlsym(handle, "gotoblas_dynamic_init") else { return false }
        typealias Hook = @convention(c) () -> Void
        let previous = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        setenv("OPENBLAS_CORETYPE", name, 1)
        unsafeBitCast(quit, to: Hook.self)()
        unsafeBitCast(initialize, to: Hook.self)()
        if let previous { setenv("OPENBLAS_CORETYPE", previous, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
        guard let q = openblas_get_corename() else { return false }
        return String(cString: q).lowercased() == name.lowercased()
        #endif
    }

    /// The kernel set OpenBLAS runs now (e.g. "SkylakeX"), or nil for another BLAS.
    static var kernelSet: String? {
        #if canImport(Accelerate)
        return nil
        #else
        _ = onPool
        return openblas_get_corename().map { String(cString: $0) }
        #endif
    }

    private static let gemmTask: ek_task_fn = { ctx, index, count in
        let j = ctx!.assumingMemoryBound(to: GemmJob.self).pointee
        let n = Int(j.n), per = ((n + count - 1) / count + 15) / 16 * 16
        let start = index * per, end = Swift.min(n, start + per)
        guard start < end else { return }
        var slice = j
        slice.n = Int32(end - start)
        slice.b = j.transB ? j.b + start * Int(j.ldb) : j.b + start
        slice.c = j.c + start
        sgemm(slice)
    }

    /// One CBLAS call on the calling thread: Intel MKL's when one is selected (``mkl``), else the linked BLAS's.
    private static func sgemm(_ j: GemmJob) {
        _ = onPool   // the kernel set and thread count are settled before the first call (swift_once: others wait)
        if let mkl {
            // CBLAS's enum values (CblasRowMajor 101, CblasNoTrans 111, CblasTrans 112), the same in every CBLAS
            mkl.sgemm(101, j.transA ? 112 : 111, j.transB ? 112 : 111, j.m, j.n, j.k, j.alpha, j.a, j.lda, j.b, j.ldb,
                      j.beta, j.c, j.ldc)
            return
        }
        cblas_sgemm(CblasRowMajor, j.transA ? CblasTrans : CblasNoTrans, j.transB ? CblasTrans : CblasNoTrans,
                    j.m, j.n, j.k, j.alpha, j.a, j.lda, j.b, j.ldb, j.beta, j.c, j.ldc)
    }

    private static func run(_ job: GemmJob) {
        var job = job
        let threads = Int(ek_get_threads())
        let work = Int(job.m) * Int(job.n) * Int(job.k)
        // MKL runs sequentially (its threading layer is set so), so its GEMMs always go on the pool
        if (onPool || mkl != nil) && threads > 1 && work >= (1 << 21) && job.n >= 32 && job.m >= 2 {
            withUnsafeMutablePointer(to: &job) { ek_parallel_for(threads, gemmTask, $0) }
            return
        }
        sgemm(job)
    }

    /// As ``gemm(m:n:k:a:lda:b:ldb:transB:c:ldc:alpha:beta:)`` on the calling thread alone and not counted: for
    /// tasks that already run on the kernel threads (the caller counts their FLOPs).
    static func gemmOnThisThread(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>,
                                 ldb: Int, transB: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        sgemm(GemmJob(m: Int32(m), n: Int32(n), k: Int32(k), a: a, lda: Int32(lda), b: b, ldb: Int32(ldb), transA: false,
                      transB: transB, c: c, ldc: Int32(ldc), alpha: 1, beta: 0))
    }

    /// C[M, N] = Aᵀ·B + beta·C, A stored [K, M], B [K, N] (row-major).
    static func gemmTransA(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                           c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0) {
        OpCounter.add(flops: 2 * m * n * k)
        run(GemmJob(m: Int32(m), n: Int32(n), k: Int32(k), a: a, lda: Int32(lda), b: b, ldb: Int32(ldb), transA: true,
                    transB: false, c: c, ldc: Int32(ldc), alpha: 1, beta: beta))
    }

    /// y[N] = alpha * W[N, K] · x[K] + beta * y. (Debian's OpenBLAS runs M=1 GEMM 3–4× slower than GEMV.)
    static func gemv(n: Int, k: Int, w: UnsafePointer<Float>, x: UnsafePointer<Float>,
                     y: UnsafeMutablePointer<Float>, alpha: Float = 1, beta: Float = 0) {
        OpCounter.add(flops: 2 * n * k)
        _ = onPool
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), alpha, w, Int32(k), x, 1, beta, y, 1)
    }

    /// Sets the number of BLAS threads (OpenBLAS); Accelerate picks its own.
    static func setThreads(_ n: Int) {
        #if !canImport(Accelerate)
        openblas_set_num_threads(onPool ? 1 : Int32(max(1, n)))   // on the pool, each slice is single-threaded
        #endif
    }

    static var threads: Int {
        #if canImport(Accelerate)
        return 0
        #else
        _ = onPool
        return Int(openblas_get_num_threads())
        #endif
    }

    static var coreName: String {
        _ = onPool   // ENCORE_BLAS applied first
        if let mkl {
            return "Intel MKL \(mkl.version) (\(mkl.path), sequential on Encore's pool"
                + (mkl.automatic ? "; found automatically, ENCORE_BLAS=openblas turns it off)" : ")")
        }
        #if canImport(Accelerate)
        return "Accelerate"
        #else
        _ = onPool
        guard let p = openblas_get_corename() else { return "OpenBLAS" }
        let name = String(cString: p)
        return "OpenBLAS " + name + (coreUpgrade.map { " (set by Encore; OpenBLAS picked \($0.from))" } ?? "")
            + (environmentCoreHint(running: name) ?? "")
        #endif
    }
}

/// Run-time settings of the compute backend.
public enum Backend {
    /// Number of threads for matrix products (both cores by default).
    public static func setThreads(_ n: Int) {
        BLAS.setThreads(n)
        ek_set_threads(Int32(max(1, n)))
    }
    /// Threads of Encore's own kernels.
    public static var threads: Int { Int(ek_get_threads()) }
    /// BLAS library and kernel set, e.g. "OpenBLAS Cooperlake" or "Intel MKL 2026.2 (…/libmkl_rt.so.3, sequential on
    /// Encore's pool)".
    public static var blasName: String { BLAS.coreName }

    /// Chooses the library for fp32 GEMMs (prompt passes over fp32 weights, prompt attention, training):
    /// - "auto", the default (`ENCORE_BLAS` unset): Intel MKL on an Intel CPU when one is installed where
    ///   `BLAS.automaticMKLCandidates` looks (`models/mkl/` by the executable, where scripts/fetch-mkl.sh puts it,
    ///   `$VIRTUAL_ENV/lib`, `$CONDA_PREFIX/lib`, or the loader's path), else the linked BLAS. Choosing here before
    ///   the first GEMM loads nothing else (e.g. `selectBLAS("openblas")` keeps MKL out of the process);
    /// - "openblas": the BLAS Encore links (OpenBLAS on Linux; Accelerate on Apple platforms);
    /// - "mkl": Intel MKL's `libmkl_rt.so` as the dynamic loader finds it (`LD_LIBRARY_PATH`, ldconfig);
    /// - a path, e.g. `"/venv/lib/libmkl_rt.so.3"` after `pip install mkl`.
    ///
    /// MKL is loaded at run time (x86-64 Linux only) and runs sequentially on each of Encore's threads. Call before
    /// running models, not while one runs. Throws ``EncoreError`` naming what could not be loaded.
    ///
    /// ```swift
    /// try Backend.selectBLAS("/venv/lib/libmkl_rt.so.3")
    /// print(Backend.blasName)   // Intel MKL 2026.2 (/venv/lib/libmkl_rt.so.3, sequential on Encore's pool)
    /// ```
    public static func selectBLAS(_ library: String) throws {
        BLAS.explicitChoice = true
        _ = BLAS.onPool   // ENCORE_BLAS first, so an explicit choice is not undone by it
        try BLAS.select(library)
    }

    /// A one-line hint for an Intel CPU whose fp32 GEMMs run on OpenBLAS because no Intel MKL was found (nil
    /// otherwise, and when `ENCORE_BLAS` or ``selectBLAS(_:)`` chose the library): how to install MKL, which the
    /// automatic choice would then use. `encore bench` prints it on standard error.
    public static var blasAdvice: String? {
        _ = BLAS.onPool
        return BLAS.advice(intelCPU: ek_cpu_is_intel() != 0, usingMKL: BLAS.mkl != nil,
                           chosen: BLAS.explicitChoice
                               || !BLAS.namesAutomaticChoice(ProcessInfo.processInfo.environment["ENCORE_BLAS"]))
    }

    /// Applies `ENCORE_BLAS` (the values of ``selectBLAS(_:)``) if it is set, throwing when it names a library that
    /// cannot be loaded. The CLI calls this at start; without it the first GEMM applies it and only warns.
    public static func selectBLASFromEnvironment() throws {
        BLAS.environmentErrorThrown = true
        _ = BLAS.onPool
        if let error = BLAS.environmentBLAS { throw error }
    }
    /// The tile path of the int8 and Q8_0/Q4_x prompt GEMMs on this CPU: "avx512vnni", "avxvnni", "avx2",
    /// "neon-dotprod", "neon" or "scalar".
    public static var int8GEMMPath: String { String(cString: ek_gemm_int8_path()) }
    /// Whether prompt passes over bf16-only weights (`--decode-weights bf16 --prompt-weights decode`) multiply the bf16
    /// rows with AVX512-BF16's `vdpbf16ps` (`ek_gemm_bf16`; x rounded to bf16) instead of widening each matrix for
    /// BLAS sgemm, on CPUs that have it. By default on such CPUs unless they are Intel's: on AMD Zen 4 vdpbf16ps runs
    /// at twice the fp32 FMA rate and the zmm tile reaches ~400 GFLOP/s on 2 threads against sgemm's ~190 (session
    /// 21); on the one Intel CPU timed (a Xeon, session 11) it runs at half the zmm FMA rate and the widened sgemm is
    /// faster. `ENCORE_BF16_PROMPT_GEMM=1` or `=0` in the environment decides instead. Set it before running models,
    /// not while one runs.
    nonisolated(unsafe) public static var bf16PromptGEMM = defaultBF16PromptGEMM(
        environment: ProcessInfo.processInfo.environment["ENCORE_BF16_PROMPT_GEMM"], intelCPU: ek_cpu_is_intel() != 0)
    /// ``bf16PromptGEMM``'s rule: "1" on, "0" off, else on except on Intel CPUs.
    static func defaultBF16PromptGEMM(environment: String?, intelCPU: Bool) -> Bool {
        switch environment {
        case "1": return true
        case "0": return false
        default: return !intelCPU
        }
    }
    /// "avx512bf16" where ``bf16PromptGEMM`` would run the vdpbf16ps tile, else "scalar".
    public static var bf16GEMMPath: String { String(cString: ek_gemm_bf16_path()) }
    /// Whether bf16-only prompt passes run the vdpbf16ps GEMM now: opted in, and the CPU (under the ISA cap) has it.
    public static var bf16PromptGEMMRuns: Bool { bf16PromptGEMM && bf16GEMMPath == "avx512bf16" }
    /// x86-64: rows the grouped int8 / Q8_0 / Q4_x decode kernels walk side by side per thread (4 on Intel CPUs and
    /// CPUs with AVX-512, 2 elsewhere;
    /// `EK_X8_STREAMS=2|4` overrides); nil on other CPUs. Setting 2 or 4 overrides too, nil restores the default
    /// (`encore bench --step-ab streams` alternates them step by step); the results are the same bytes either way.
    public static var groupedDecodeStreams: Int? {
        get {
            #if arch(x86_64)
            return Int(ek_get_x8_streams())
            #else
            return nil
            #endif
        }
        set { ek_set_x8_streams(Int32(newValue ?? -1)) }
    }
    /// The fewest row ranges per thread a decode GEMV is split into (`ek_gemv_tasks`: 1, or as
    /// `EK_GEMV_TASKS_PER_THREAD` says). Setting 1…16 overrides too, nil restores the default
    /// (`encore bench --step-ab tasks`); the results are the same bytes either way.
    public static var decodeTasksPerThread: Int? {
        get { Int(ek_get_gemv_tasks_per_thread()) }
        set { ek_set_gemv_tasks_per_thread(newValue ?? -1) }
    }
    /// x86-64 AVX2: whether Q4_0 / Q4_1 decode rows run the kernel with int16 pair sums and a loop of whole groups
    /// (`rows_q4y`, the default; `EK_Q4Y=0` in the environment selects the generic x8 group kernel). Setting true or
    /// false overrides, nil restores the default (`encore bench --step-ab q4y`); the results are the same bytes either way.
    public static var q4PairSumKernel: Bool? {
        get { ek_get_q4y() != 0 }
        set { ek_set_q4y(newValue.map { $0 ? 1 : 0 } ?? -1) }
    }
    /// x86-64 with AVX-512: whether the fp32, bf16 and int8 decode GEMVs run their ymm (AVX2) kernels instead of the
    /// zmm ones. The default is true on CPUs that run 512-bit instructions in two halves (AMD Zen 4), where the ymm
    /// kernels read cold weights faster, false elsewhere; `EK_GEMV_YMM=0|1` in the environment decides instead. Setting
    /// true or false overrides, nil restores the default (`encore bench --step-ab ymm`). bf16 rows on ymm keep the
    /// activations in fp32 rather than rounding them to bf16; fp32 and int8 agree up to rounding (their partial sums
    /// are added in another order).
    public static var decodeGEMVOnYMM: Bool? {
        get { ek_get_gemv_ymm() != 0 }
        set { ek_set_gemv_ymm(newValue.map { $0 ? 1 : 0 } ?? -1) }
    }
    /// Whether the int8, block and bf16 decode GEMVs issue software prefetches ahead of their weight rows (the
    /// K-quants' and the fp32 GEMV's are not switched). The default
    /// is false on CPUs that split 512-bit instructions (AMD Zen 4), where int8 rows streamed faster without them, true
    /// elsewhere; `EK_GEMV_PREFETCH=0|1` in the environment decides instead. Setting true or false overrides, nil
    /// restores the default (`encore bench --step-ab prefetch`); the results are the same bytes either way.
    public static var decodeGEMVPrefetch: Bool? {
        get { ek_get_gemv_prefetch() != 0 }
        set { ek_set_gemv_prefetch(newValue.map { $0 ? 1 : 0 } ?? -1) }
    }
    /// Whether Q4_0 decode rows would run `rows_q4y` now (an x86 CPU on the AVX2 path, and ``q4PairSumKernel``);
    /// false on AVX-512 VNNI / AVX-VNNI CPUs (their own kernels) and off x86.
    public static var q4PairSumKernelRuns: Bool { ek_q4y_runs(Int32(EK_WF_Q4_0X8)) != 0 }
}
