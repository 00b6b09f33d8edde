/* OpenBLAS sgemm against a double-precision reference, for one kernel set (session 11: are the SkylakeX kernels
 * Encore switches Debian's OpenBLAS 0.3.21 to on an unknown Intel CPU correct, or only differently rounded?).
 * Random shapes up to 400, both transposes, padded leading dimensions, alpha and beta; then the relative RMS error of
 * a few large-k shapes (the training backward's). Build and run from the repository root:
 *   cc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/micro/blas_kernel_check.c -lopenblas -lm \
 *       -o /tmp/blas_kernel_check
 *   for c in Haswell SkylakeX; do OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=$c /tmp/blas_kernel_check; done
 * Session 11 (Intel Xeon model 207): 0 failures of 250 (and of 3,000 with shapes up to 70) for both; relative RMS
 * error 1.4–3.2e-7 (Haswell), 1.5–3.7e-7 (SkylakeX). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
static float rnd(void) { return (float)rand() / RAND_MAX - 0.5f; }
int main(void) {
    int fails = 0, total = 0;
    for (int it = 0; it < 250; it++) {
        int M = 1 + rand() % 400, N = 1 + rand() % 400, K = 1 + rand() % 400, ta = rand() % 2, tb = rand() % 2, bi = rand() % 3;
        int pa = rand() % 3 ? 0 : rand() % 9, pb = rand() % 3 ? 0 : rand() % 9, pc = rand() % 3 ? 0 : rand() % 9;
        float beta = bi == 0 ? 0.f : bi == 1 ? 1.f : 0.5f, alpha = rand() % 4 ? 1.0f : -0.7f;
        int lda = (ta ? M : K) + pa, ldb = (tb ? K : N) + pb, ldc = N + pc, ra = ta ? K : M, rb = tb ? N : K;
        float *A = malloc(sizeof(float) * ra * lda), *B = malloc(sizeof(float) * rb * ldb);
        float *C = malloc(sizeof(float) * M * ldc), *R = malloc(sizeof(float) * M * ldc);
        for (int i = 0; i < ra * lda; i++) A[i] = rnd();
        for (int i = 0; i < rb * ldb; i++) B[i] = rnd();
        for (int i = 0; i < M * ldc; i++) C[i] = R[i] = rnd();
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < K; k++)
                    acc += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                R[i * ldc + j] = (float)(alpha * acc + beta * R[i * ldc + j]);
            }
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                    B, ldb, beta, C, ldc);
        double md = 0;
        for (int i = 0; i < M * ldc; i++) md = fmax(md, fabs(C[i] - R[i]));
        total++;
        if (md > 1e-4 * sqrt(K) + 1e-5) {
            fails++;
            printf("BAD M=%d N=%d K=%d ta=%d tb=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g maxdiff %g\n", M, N, K, ta, tb,
                   lda, ldb, ldc, alpha, beta, md);
        }
        free(A); free(B); free(C); free(R);
    }
    printf("random shapes: %d failures of %d\n", fails, total);
    int cfg[][5] = { { 64, 64, 2048, 1, 0 }, { 64, 64, 2048, 0, 1 }, { 256, 64, 512, 1, 0 }, { 128, 128, 4096, 1, 0 } };
    for (int c = 0; c < 4; c++) {
        int M = cfg[c][0], N = cfg[c][1], K = cfg[c][2], ta = cfg[c][3], tb = cfg[c][4], lda = ta ? M : K, ldb = tb ? K : N;
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
        for (int i = 0; i < M * K; i++) A[i] = rnd() + 0.3f;
        for (int i = 0; i < K * N; i++) B[i] = rnd();
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B,
                    ldb, 0.0f, C, N);
        double e2 = 0, r2 = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < K; k++) acc += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                e2 += (C[i * N + j] - acc) * (C[i * N + j] - acc);
                r2 += acc * acc;
            }
        printf("M=%d N=%d K=%d ta=%d tb=%d: relative RMS error %.3g\n", M, N, K, ta, tb, sqrt(e2 / r2));
        free(A); free(B); free(C);
    }
    return fails != 0;
}
