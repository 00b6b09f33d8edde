import EncoreKernels
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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C[M, N] = Aᵀ·B + beta·C, A stored [K, M], B [K, N] (row-major).
    static func gemmTransA(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                           c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0) {
        OpCounter.add(flops: 2 * m * n * k)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb),
                    beta, c, Int32(ldc))
    }

    /// y[N] = alpha * W[N, K] · x[K] + beta * y. (Debian's OpenBLAS runs M=1 GEMM 3–4× slower than GEMV.)
    static func gemv(n: Int, k: Int, w: UnsafePointer<Float>, x: UnsafePointer<Float>,
                     y: UnsafeMutablePointer<Float>, alpha: Float = 1, beta: Float = 0) {
        OpCounter.add(flops: 2 * n * k)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), alpha, w, Int32(k), x, 1, beta, y, 1)
    }

    /// Sets the number of BLAS threads (OpenBLAS); Accelerate picks its own.
    static func setThreads(_ n: Int) {
        #if !canImport(Accelerate)
        openblas_set_num_threads(Int32(max(1, n)))
        #endif
    }

    static var threads: Int {
        #if canImport(Accelerate)
        return 0
        #else
        return Int(openblas_get_num_threads())
        #endif
    }

    static var coreName: String {
        #if canImport(Accelerate)
        return "Accelerate"
        #else
        guard let p = openblas_get_corename() else { return "OpenBLAS" }
        return "OpenBLAS " + String(cString: p)
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
    /// BLAS library and kernel set, e.g. "OpenBLAS Cooperlake".
    public static var blasName: String { BLAS.coreName }
}
