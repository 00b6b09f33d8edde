/* ek_gemm_bf16 (vdpbf16ps on AVX512-BF16) against OpenBLAS sgemm of the same shape (fp32 weights [n, k], CblasTrans),
 * best of 15 wall-clock runs, GFLOP/s; and its largest relative difference from the twin (ek_gemm_bf16_ref): every row
 * when m·n·k ≤ 2^27, else the first 4. Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include -I Sources/EncoreKernels -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       bench/micro/gemm_bf16_rate.c Sources/EncoreKernels/[a-z]*.c -lopenblas -lm -lpthread -o /tmp/gemm_bf16_rate
 *   /tmp/gemm_bf16_rate 512 4096 1024 2      # m n k threads
 *   NO_SGEMM=1 /tmp/gemm_bf16_rate 512 4096 1024 2   # without sgemm (OpenBLAS's threads spin for a while after a call)
 */
#include "EncoreKernels.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: gemm_bf16_rate m n k threads\n"); return 2; }
    long m = atol(argv[1]), n = atol(argv[2]), k = atol(argv[3]);
    int threads = atoi(argv[4]);
    ek_set_threads(threads);
    openblas_set_num_threads(threads);
    float *x = malloc(4 * m * k), *wf = malloc(4 * n * k), *y = malloc(4 * m * n), *y2 = malloc(4 * m * n);
    uint16_t *w = malloc(2 * n * k);
    srand(1);
    for (long i = 0; i < m * k; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < n * k; i++) wf[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.04f;
    ek_f32_to_bf16(wf, w, n * k);
    double flops = 2.0 * m * n * k, tb = 1e9, ts = 1e9;
    for (int it = 0; it < 15; it++) {
        double t = now();
        if (ek_gemm_bf16(w, x, NULL, y, m, n, k, EK_EPI_STORE) != 0) { fprintf(stderr, "ek_gemm_bf16 failed\n"); return 1; }
        t = now() - t; if (t < tb) tb = t;
        if (getenv("NO_SGEMM")) continue;
        t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1, x, (int)k, wf, (int)k, 0, y2, (int)n);
        t = now() - t; if (t < ts) ts = t;
    }
    printf("m %ld n %ld k %ld threads %d (%s): ek_gemm_bf16 %.1f GFLOP/s (%.2f ms)", m, n, k, threads,
           ek_gemm_bf16_path(), flops / tb * 1e-9, tb * 1e3);
    if (getenv("NO_SGEMM")) printf("\n");
    else printf(", sgemm %.1f GFLOP/s (%.2f ms), time ratio %.2f\n", flops / ts * 1e-9, ts * 1e3, tb / ts);
    long mc = (double)m * n * k <= 134217728.0 ? m : (m < 4 ? m : 4);   /* large shapes: the first rows only */
    ek_gemm_bf16_ref(w, x, NULL, y2, mc, n, k, EK_EPI_STORE);
    double worst = 0;
    for (long i = 0; i < mc * n; i++) {
        double d = fabs((double)y[i] - y2[i]) / (fabs(y2[i]) + 1e-3);
        if (d > worst) worst = d;
    }
    printf("largest relative difference from ek_gemm_bf16_ref (%ld of %ld rows): %.2e\n", mc, m, worst);
    free(x); free(wf); free(y); free(y2); free(w);
    return 0;
}
