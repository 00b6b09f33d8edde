/* Prompt-pass attention, one layer: per (head, block of 128 queries) QKᵀ → masked softmax → PV, as Ops.swift's
 * longQueryAttention runs it (OpenBLAS single-threaded per task on Encore's pool, ek_softmax_masked_f32 between),
 * against a prototype with own AVX2 register tiles (K packed to 16-key panels, 6×16 tiles, V read in place).
 * Best of N wall-clock runs of one layer, GFLOP/s of the counted work, and the largest difference between the two.
 * Scores are divided by 8 (√64) with no bias: T5's shape can be run, not T5's unscaled scores plus relative bias.
 *   clang -O2 -I Sources/EncoreKernels/include -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       bench/micro/prompt_attention.c Sources/EncoreKernels/[a-z]*.c -lopenblas -lm -lpthread -o /tmp/prompt_attention
 *   /tmp/prompt_attention T heads kv_heads causal threads [runs]   # Mu encoder: 512 6 3 0 2; Llama: 512 15 5 1 2
 *   NO_SOFTMAX=1 /tmp/prompt_attention …                          # the two GEMMs alone (the outputs then differ)
 *   SPLIT=1 /tmp/prompt_attention 512 15 5 1 2   # second arm: OpenBLAS with each causal block split — the keys every
 *                                                # row sees in one GEMM, the diagonal by SUBQ rows (-DSUBQ=32 default;
 *                                                # without a causal mask both arms are the same OpenBLAS path)
 * Session 23 (AMD EPYC Zen 3, AVX2, 2 threads, best of 7): own ÷ OpenBLAS 0.97× (Mu 512), 1.20× (Llama 512 causal: the
 * tiles skip the diagonal block's masked half), 0.79× (T5 512, 16 heads), 0.82× (Mu 2048): not adopted;
 * bench/README.md "Session 23". SPLIT=1, quiet, two alternations: SUBQ 32 1.02–1.06× at T 512, 1.09–1.13× at 128,
 * 1.04× at 2048 (16: 0.98–1.11×, 64: 1.01–1.09×) — 1% of a Llama prompt pass at best: not adopted either.
 */
#include "EncoreKernels.h"
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define AV __attribute__((target("avx2,fma")))
#define BQ 128
#define D 64
#ifndef SUBQ
#define SUBQ 32
#endif
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct {
    const float *q, *k, *v; float *out; long t, heads, kvh, causal, blocks, qw, kvw; float *scratch; float *pack;
    int own, softmax;   /* softmax: 0 under NO_SOFTMAX (read once, outside the timed runs) */
} job;

static long visible(const job *j, long t0, long bq) { return j->causal ? (t0 + bq < j->t ? t0 + bq : j->t) : j->t; }

/* C[6×16] tile of Q Kᵀ: q rows (stride qs), packed panel [D][16]. */
AV static void qk_tile(const float *q, long qs, long rows, const float *panel, float *c, long ldc, long cols) {
    __m256 acc[6][2];
    for (int r = 0; r < 6; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (long d = 0; d < D; d++) {
        __m256 b0 = _mm256_loadu_ps(panel + d * 16), b1 = _mm256_loadu_ps(panel + d * 16 + 8);
        for (int r = 0; r < 6; r++) {
            __m256 a = _mm256_broadcast_ss(q + (r < rows ? r : 0) * qs + d);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    float tmp[16];
    for (int r = 0; r < rows; r++) {
        if (cols == 16) { _mm256_storeu_ps(c + r * ldc, acc[r][0]); _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]); }
        else { _mm256_storeu_ps(tmp, acc[r][0]); _mm256_storeu_ps(tmp + 8, acc[r][1]); memcpy(c + r * ldc, tmp, 4 * cols); }
    }
}

/* out[6×16] tile of P V: p rows (stride ps) over n keys, v rows (stride vs) from column c0. */
AV static void pv_tile(const float *p, long ps, long rows, long n, const float *v, long vs, float *o, long os) {
    __m256 acc[6][2];
    for (int r = 0; r < 6; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (long s = 0; s < n; s++) {
        __m256 b0 = _mm256_loadu_ps(v + s * vs), b1 = _mm256_loadu_ps(v + s * vs + 8);
        for (int r = 0; r < 6; r++) {
            __m256 a = _mm256_broadcast_ss(p + (r < rows ? r : 0) * ps + s);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) { _mm256_storeu_ps(o + r * os, acc[r][0]); _mm256_storeu_ps(o + r * os + 8, acc[r][1]); }
}

static void task(void *ctx, long index, long count) {
    (void)count;
    const job *j = ctx;
    long h = index % j->heads, g = h / (j->heads / j->kvh);
    long t0 = (j->blocks - 1 - index / j->heads) * BQ, bq = j->t - t0 < BQ ? j->t - t0 : BQ;
    long n = visible(j, t0, bq);
    float *sc = j->scratch + ek_thread_slot() * BQ * j->t;
    const float *q = j->q + t0 * j->qw + h * D, *k = j->k + g * D, *v = j->v + g * D;
    float *o = j->out + t0 * j->qw + h * D;
    if (j->own == 2 && j->causal && bq > SUBQ) {   /* split: keys every row sees in one GEMM, the diagonal by SUBQ rows */
        long full = t0 + 1;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, full, D, 1, q, j->qw, k, j->kvw, 0, sc, n);
        for (long r0 = 0; r0 < bq; r0 += SUBQ) {
            long r1 = r0 + SUBQ < bq ? r0 + SUBQ : bq, end = t0 + r1 < n ? t0 + r1 : n;
            if (end > full)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, end - full, D, 1, q + r0 * j->qw, j->qw,
                            k + full * j->kvw, j->kvw, 0, sc + r0 * n + full, n);
        }
        if (j->softmax) ek_softmax_masked_f32(sc, bq, n, n, 8.0f, NULL, t0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, D, full, 1, sc, n, v, j->kvw, 0, o, j->qw);
        for (long r0 = 0; r0 < bq; r0 += SUBQ) {
            long r1 = r0 + SUBQ < bq ? r0 + SUBQ : bq, end = t0 + r1 < n ? t0 + r1 : n;
            if (end > full)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, D, end - full, 1, sc + r0 * n + full, n,
                            v + full * j->kvw, j->kvw, 1, o + r0 * j->qw, j->qw);
        }
        return;
    }
    if (!j->own || j->own == 2) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, n, D, 1, q, j->qw, k, j->kvw, 0, sc, n);
        if (j->softmax) ek_softmax_masked_f32(sc, bq, n, n, 8.0f, NULL, j->causal ? t0 : -1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, D, n, 1, sc, n, v, j->kvw, 0, o, j->qw);
        return;
    }
    float *pk = j->pack + ek_thread_slot() * (j->t + 16) * D;
    long panels = (n + 15) / 16;
    for (long pnl = 0; pnl < panels; pnl++) {          /* Kᵀ panels [D][16] */
        float *dst = pk + pnl * 16 * D;
        for (long c = 0; c < 16; c++) {
            long s = pnl * 16 + c;
            if (s < n) for (long d = 0; d < D; d++) dst[d * 16 + c] = k[s * j->kvw + d];
            else for (long d = 0; d < D; d++) dst[d * 16 + c] = 0;
        }
    }
    for (long r0 = 0; r0 < bq; r0 += 6) {
        long rows = bq - r0 < 6 ? bq - r0 : 6;
        long lim = j->causal ? t0 + r0 + rows : n;      /* keys these rows may see */
        if (lim > n) lim = n;
        for (long pnl = 0; pnl * 16 < lim; pnl++) {
            long cols = n - pnl * 16 < 16 ? n - pnl * 16 : 16;
            qk_tile(q + r0 * j->qw, j->qw, rows, pk + pnl * 16 * D, sc + r0 * n + pnl * 16, n, cols);
        }
    }
    if (j->softmax) ek_softmax_masked_f32(sc, bq, n, n, 8.0f, NULL, j->causal ? t0 : -1);
    for (long r0 = 0; r0 < bq; r0 += 6) {
        long rows = bq - r0 < 6 ? bq - r0 : 6;
        long lim = j->causal ? t0 + r0 + rows : n;
        if (lim > n) lim = n;
        for (long c0 = 0; c0 < D; c0 += 16)
            pv_tile(sc + r0 * n, n, rows, lim, v + c0, j->kvw, o + r0 * j->qw + c0, j->qw);
    }
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: prompt_attention T heads kv_heads causal threads [runs]\n"); return 2; }
    long t = atol(argv[1]), heads = atol(argv[2]), kvh = atol(argv[3]), causal = atol(argv[4]);
    int threads = atoi(argv[5]), runs = argc > 6 ? atoi(argv[6]) : 15;
    if (t < 1 || heads < 1 || kvh < 1 || heads % kvh || threads < 1 || runs < 1) {
        fprintf(stderr, "T, heads, kv_heads, threads and runs must be positive, heads a multiple of kv_heads\n");
        return 2;
    }
    ek_set_threads(threads);
    openblas_set_num_threads(1);
    long qw = heads * D, kvw = kvh * D;
    float *q = malloc(4 * t * qw), *k = malloc(4 * t * kvw), *v = malloc(4 * t * kvw);
    float *o1 = malloc(4 * t * qw), *o2 = malloc(4 * t * qw);
    long slots = ek_thread_slots();   /* ek_thread_slot() of any task is below this */
    float *scratch = malloc(4 * slots * BQ * t), *pack = malloc(4 * slots * (t + 16) * D);
    srand(1);
    for (long i = 0; i < t * qw; i++) q[i] = rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < t * kvw; i++) { k[i] = rand() / (float)RAND_MAX - 0.5f; v[i] = rand() / (float)RAND_MAX - 0.5f; }
    job j = { q, k, v, o1, t, heads, kvh, causal, (t + BQ - 1) / BQ, qw, kvw, scratch, pack, 0, !getenv("NO_SOFTMAX") };
    double flops = 0;
    for (long b = 0; b < j.blocks; b++) { long t0 = b * BQ, bq = t - t0 < BQ ? t - t0 : BQ; flops += 4.0 * bq * visible(&j, t0, bq) * D; }
    flops *= heads;
    double best[2] = { 1e9, 1e9 };
    int alt = getenv("SPLIT") ? 2 : 1;   /* SPLIT=1: the second arm is the split causal blocks, not the own tiles */
    for (int it = 0; it < runs; it++)
        for (int own = 0; own < 2; own++) {
            j.own = own ? alt : 0; j.out = own ? o2 : o1;
            double s = now();
            ek_parallel_for(heads * j.blocks, task, &j);
            s = now() - s;
            if (s < best[own]) best[own] = s;
        }
    double err = 0;
    for (long i = 0; i < t * qw; i++) { double e = fabs(o1[i] - o2[i]); if (e > err) err = e; }
    printf("T %ld heads %ld/%ld causal %ld threads %d: openblas %.1f GFLOP/s (%.3f ms) | %s %.1f GFLOP/s (%.3f ms) | "
           "%.2fx | max diff %.2e\n", t, heads, kvh, causal, threads, flops / best[0] * 1e-9, best[0] * 1e3,
           alt == 2 ? "split" : "own",
           flops / best[1] * 1e-9, best[1] * 1e3, best[0] / best[1], err);
    return 0;
}
