/* Why prompt passes keep OpenBLAS's sgemm on AVX-512 too (session 12): a zmm fp32 GEMM written for this project
 * (below: Goto's algorithm, x packed once per call by 8 rows, weight panels of 32 rows packed per k block of
 * KC by 8×8 transposes, a 12-row × 32-column tile in 24 zmm accumulators, bias / ReLU / GELU / residual fused into
 * the last k block) against OpenBLAS 0.3.21's SkylakeX sgemm run single-threaded on each thread's column slice, as
 * Encore's pool runs it (BLAS.swift). Best of 15 wall times, GFLOP/s, the fraction of the zmm FMA peak
 * (ek_peak_fma_gflops, same run) and the largest error against a double-precision sum (relative to Σ|x·w|).
 *
 * Measured on the Intel Xeon (family 6 model 207, 2 vCPUs, 2026-11-30, session 12), 512×2560×960 on 2 threads:
 * 0.80–1.02× OpenBLAS (178–225 against 200–280 GFLOP/s, 52–66% against 57–80% of the 335–349 peak; the
 * machine's noise is ±20% between runs); one thread, 512×1280×960: 0.89–0.95× (134–145 against 145–152 GFLOP/s,
 * 76–82% against 82–89%). In the model (`ENCORE_SGEMM=encore`, a switch that existed only for this A/B): Llama-362M
 * 512 → 4 tokens, TTFT 2,083 / 1,824 ms against 2,087 / 1,848 with OpenBLAS (a tie); the Mu 330M study config,
 * 1,041 / 1,245 ms against 892 / 987 (0.8×). So it was not adopted. Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       bench/micro/sgemm_zmm.c Sources/EncoreKernels/[a-z]*.c -lopenblas -lm -lpthread -o /tmp/sgemm_zmm
 *   OPENBLAS_CORETYPE=SkylakeX /tmp/sgemm_zmm 512 2560 960 2      # m n k threads
 *   EK_SGEMM_KC=384 EK_SGEMM_MC=256 ...                            # block sizes (tuning); -DGF_MR=8 for an 8-row tile
 *
 * The kernel, as it was: */
#include "EncoreKernels.h"
#include <cblas.h>
#include <stdio.h>
#include <time.h>
/* Prompt-pass fp32 GEMM on zmm (AVX-512F): y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) with ek_gemm_int8's epilogues,
 * w the weight rows as stored (a memory-mapped checkpoint: no copy is kept).
 *
 * Why not BLAS: OpenBLAS (Debian's 0.3.21, SkylakeX kernels) runs the prompt passes' GEMMs at 54–97% of its own
 * GEMM rate and 34–62% of the zmm FMA peak (session 11); a sixth of the prompt pass was its weight packing
 * (sgemm_incopy). This file is Goto's algorithm with one micro-kernel:
 *
 *   - x is packed once per call into blocks of 8 rows, [m/8][k][8] (an 8×8 transpose of floats per 8 k);
 *   - for each block of MC rows and each block of KC values of k (outermost; the rows' k block stays in L2), the
 *     threads take panels of 32 weight rows (output columns), pack the panel's k block as [KC][32] (the same
 *     transpose: 32 KiB at KC = 256, it stays in L1) and run the micro-kernel over the block's rows;
 *   - the micro-kernel holds an 8-row × 32-column tile in 16 zmm registers: per k, two loads of the panel, eight
 *     broadcasts of x, sixteen FMAs. The tile is added into y after each k block (the first block stores, unless
 *     accumulating), and the last block adds the bias and applies the ReLU or GELU.
 *
 * Sums are fp32 in k order within a block, blocks added in order: the rounding differs from BLAS's but is of the
 * same size (kernel_parity: within 1e-5 of the double-precision twin, relative to Σ|x·w|). Tails are zero-padded
 * (rows of x, columns of w) and masked on the way out. MC and KC can be set with EK_SGEMM_MC / EK_SGEMM_KC
 * (tuning). Without AVX-512F zmm_gemm_f32 runs plain C (zmm_gemm_f32_path()). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define GF_X86 1
#include <immintrin.h>
#if defined(EK_EMULATED_FEATURES)
#define GF_AVX512 __attribute__((target("avx2,fma")))   /* kernel_parity's emulated build: SIMDe */
#else
#define GF_AVX512 __attribute__((target("avx2,fma,avx512f")))
#endif
#endif

#ifndef GF_MR
#define GF_MR 12   /* tile: 12 rows of x × 32 output columns (24 zmm accumulators) */
#endif
#define GF_NR 32
_Static_assert(GF_MR % 4 == 0 && GF_MR <= 12, "GF_MR: 4, 8 or 12 rows");

static long env_long(const char *name, long fallback, long lo, long hi) {
    const char *s = getenv(name);
    if (!s || !*s) return fallback;
    long v = strtol(s, NULL, 10);
    return v < lo ? lo : (v > hi ? hi : v);
}

static long g_mc, g_kc;
static void block_sizes(void) {
    if (!g_kc) {
        g_mc = env_long("EK_SGEMM_MC", 512, GF_MR, 1 << 20) / GF_MR * GF_MR;
        g_kc = env_long("EK_SGEMM_KC", 256, 8, 1 << 20);
    }
}

static int f32_gemm_simd(void) {
#ifdef GF_X86
    int f = ek_cpu_features();
    return !ek_get_force_reference() && ek_get_isa_limit() >= EK_ISA_AVX512 && (f & EK_CPU_AVX2_FMA) &&
           (f & EK_CPU_AVX512F);
#else
    return 0;
#endif
}

static const char *zmm_gemm_f32_path(void) { return f32_gemm_simd() ? "avx512f" : "scalar"; }

static inline float epilogue1(float acc, const float *bias, long c, float old, int mode) {
    float v = bias ? acc + bias[c] : acc;
    if (mode == EK_EPI_RELU) return v > 0.0f ? v : 0.0f;
    return mode == EK_EPI_ACCUMULATE ? old + v : v;
}

/* A thread's buffer, grown to the largest size asked of it (64-byte aligned; contents not kept). */
typedef struct { float *p; long floats; } fbuf;
static float *fbuf_get(fbuf *b, long floats) {
    if (floats > b->floats) {
        free(b->p);
        b->p = aligned_alloc(64, (size_t)((floats * 4 + 63) / 64 * 64));
        b->floats = b->p ? floats : 0;
    }
    return b->p;
}

/* dst[i·stride + r] = src[r·ld + i] for r < rows (≤ 8; rows ≥ `rows` get 0), i < kc: 8 rows of k values → k groups
 * of 8, the layout both x's row blocks and the weight panels (4 groups side by side, stride 32) use. */
static void pack_plain(const float *src, long ld, long rows, long width, long kc, float *dst, long stride) {
    for (long i = 0; i < kc; i++)
        for (long r = 0; r < width; r++) dst[i * stride + r] = r < rows ? src[r * ld + i] : 0.0f;
}
static void pack8_plain(const float *src, long ld, long rows, long kc, float *dst, long stride) {
    pack_plain(src, ld, rows, 8, kc, dst, stride);
}

#ifdef GF_X86
GF_AVX512 static void pack8(const float *src, long ld, long rows, long kc, float *dst, long stride) {
    if (rows < 8) { pack8_plain(src, ld, rows, kc, dst, stride); return; }
    long i = 0;
    for (; i + 8 <= kc; i += 8) {   /* an 8×8 transpose per 8 values of k */
        __m256 r0 = _mm256_loadu_ps(src + 0 * ld + i), r1 = _mm256_loadu_ps(src + 1 * ld + i);
        __m256 r2 = _mm256_loadu_ps(src + 2 * ld + i), r3 = _mm256_loadu_ps(src + 3 * ld + i);
        __m256 r4 = _mm256_loadu_ps(src + 4 * ld + i), r5 = _mm256_loadu_ps(src + 5 * ld + i);
        __m256 r6 = _mm256_loadu_ps(src + 6 * ld + i), r7 = _mm256_loadu_ps(src + 7 * ld + i);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float *d = dst + i * stride;
        _mm256_storeu_ps(d + 0 * stride, _mm256_permute2f128_ps(s0, s4, 0x20));
        _mm256_storeu_ps(d + 1 * stride, _mm256_permute2f128_ps(s1, s5, 0x20));
        _mm256_storeu_ps(d + 2 * stride, _mm256_permute2f128_ps(s2, s6, 0x20));
        _mm256_storeu_ps(d + 3 * stride, _mm256_permute2f128_ps(s3, s7, 0x20));
        _mm256_storeu_ps(d + 4 * stride, _mm256_permute2f128_ps(s0, s4, 0x31));
        _mm256_storeu_ps(d + 5 * stride, _mm256_permute2f128_ps(s1, s5, 0x31));
        _mm256_storeu_ps(d + 6 * stride, _mm256_permute2f128_ps(s2, s6, 0x31));
        _mm256_storeu_ps(d + 7 * stride, _mm256_permute2f128_ps(s3, s7, 0x31));
    }
    if (i < kc) pack8_plain(src + i, ld, rows, kc - i, dst + i * stride, stride);
}

/* pack_plain for 4 rows: a 4×4 transpose per 4 values of k. */
GF_AVX512 static void pack4(const float *src, long ld, long rows, long kc, float *dst, long stride) {
    if (rows < 4) { pack_plain(src, ld, rows, 4, kc, dst, stride); return; }
    long i = 0;
    for (; i + 4 <= kc; i += 4) {
        __m128 r0 = _mm_loadu_ps(src + i), r1 = _mm_loadu_ps(src + ld + i);
        __m128 r2 = _mm_loadu_ps(src + 2 * ld + i), r3 = _mm_loadu_ps(src + 3 * ld + i);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        _mm_storeu_ps(dst + i * stride, r0);
        _mm_storeu_ps(dst + (i + 1) * stride, r1);
        _mm_storeu_ps(dst + (i + 2) * stride, r2);
        _mm_storeu_ps(dst + (i + 3) * stride, r3);
    }
    if (i < kc) pack_plain(src + i, ld, rows, 4, kc - i, dst + i * stride, stride);
}

/* The tile: acc[GF_MR][32] = Σ_{i<kc} xp[i][r] · wp[i][c]; then, for rows < rows and columns < cols, y (row stride ldy)
 * = acc (first block, not accumulating) or y + acc, and on the last block + bias (pointing at the tile's first
 * column; NULL: none) and the ReLU. */
GF_AVX512 static void kernel_8x32(const float *xp, const float *wp, long kc, float *y, long ldy, long rows, long cols,
                                  int add_old, int last, int mode, const float *bias) {
    __m512 a[2 * GF_MR];   /* registers: every loop over them is unrolled */
#pragma GCC unroll 24
    for (int j = 0; j < 2 * GF_MR; j++) a[j] = _mm512_setzero_ps();
    for (long i = 0; i < kc; i++) {
        const __m512 w0 = _mm512_load_ps(wp), w1 = _mm512_load_ps(wp + 16);
#pragma GCC unroll 12
        for (int r = 0; r < GF_MR; r++) {
            const __m512 xv = _mm512_set1_ps(xp[r]);
            a[2 * r] = _mm512_fmadd_ps(xv, w0, a[2 * r]);
            a[2 * r + 1] = _mm512_fmadd_ps(xv, w1, a[2 * r + 1]);
        }
        xp += GF_MR;
        wp += GF_NR;
    }
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xFFFF : (cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0);
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (last && bias) { b0 = _mm512_maskz_loadu_ps(m0, bias); b1 = _mm512_maskz_loadu_ps(m1, bias + 16); }
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int r = 0; r < GF_MR; r++) {
        if (r >= rows) break;
        float *yr = y + r * ldy;
        __m512 v0 = a[2 * r], v1 = a[2 * r + 1];
        if (last) { v0 = _mm512_add_ps(v0, b0); v1 = _mm512_add_ps(v1, b1); }
        if (add_old) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, yr), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, yr + 16), v1);
        }
        if (last && mode == EK_EPI_RELU) { v0 = _mm512_max_ps(v0, zero); v1 = _mm512_max_ps(v1, zero); }
        _mm512_mask_storeu_ps(yr, m0, v0);
        _mm512_mask_storeu_ps(yr + 16, m1, v1);
    }
}
#endif

/* Plain twin of the tile (other CPUs): the same sums in the same order, one output at a time. */
static void kernel_plain(const float *xp, const float *wp, long kc, float *y, long ldy, long rows, long cols,
                         int add_old, int last, int mode, const float *bias) {
    for (long r = 0; r < rows; r++)
        for (long c = 0; c < cols; c++) {
            float s = 0;
            for (long i = 0; i < kc; i++) s = fmaf(xp[i * GF_MR + r], wp[i * GF_NR + c], s);
            float v = last && bias ? s + bias[c] : s;
            if (add_old) v = y[r * ldy + c] + v;
            if (last && mode == EK_EPI_RELU && !(v > 0.0f)) v = 0.0f;
            y[r * ldy + c] = v;
        }
}

typedef struct {
    const float *w, *bias, *x;
    float *y, *xp;     /* xp: x packed [mp/8][k][8] */
    long m, n, k, m0, m1, k0, kc;
    int mode, simd;
    int failed;        /* set by a task whose panel buffer could not grow */
} gf_ctx;

/* Rows [GF_MR·index, +GF_MR) of x → [k][GF_MR], in groups of 8 rows (and 4). */
static void pack_x_task(void *ctx, long index, long count) {
    (void)count;
    const gf_ctx *g = ctx;
    long b0 = index * GF_MR, left = g->m - b0;
    for (long r0 = 0; r0 < GF_MR; r0 += 8) {
        long width = GF_MR - r0 < 8 ? GF_MR - r0 : 8, rows = left - r0;
        rows = rows < 0 ? 0 : (rows > width ? width : rows);
        const float *src = g->x + (b0 + r0) * g->k;
        float *dst = g->xp + b0 * g->k + r0;
#ifdef GF_X86
        if (g->simd) {
            if (width == 8) pack8(src, g->k, rows, g->k, dst, GF_MR);
            else pack4(src, g->k, rows, g->k, dst, GF_MR);
            continue;
        }
#endif
        pack_plain(src, g->k, rows, width, g->k, dst, GF_MR);
    }
}

static _Thread_local fbuf g_panel;   /* a thread's packed weight panel [KC][32] */

/* Panel `index`: columns [32·index, +32) over the k block [k0, k0 + kc) and the rows [m0, m1). */
static void panel_task(void *ctx, long index, long count) {
    (void)count;
    gf_ctx *g = ctx;
    long c0 = index * GF_NR, cols = g->n - c0 < GF_NR ? g->n - c0 : GF_NR;
    float *wp = fbuf_get(&g_panel, g->kc * GF_NR);
    if (!wp) { __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED); return; }
    for (long grp = 0; grp < GF_NR / 8; grp++) {   /* 4 groups of 8 weight rows side by side */
        long r0 = c0 + grp * 8, rows = cols - grp * 8;
        rows = rows < 0 ? 0 : (rows > 8 ? 8 : rows);
        const float *src = g->w + r0 * g->k + g->k0;
#ifdef GF_X86
        if (g->simd) { pack8(src, g->k, rows, g->kc, wp + grp * 8, GF_NR); continue; }
#endif
        pack8_plain(src, g->k, rows, g->kc, wp + grp * 8, GF_NR);
    }
    int add_old = g->k0 > 0 || g->mode == EK_EPI_ACCUMULATE, last = g->k0 + g->kc >= g->k;
    const float *bias = g->bias ? g->bias + c0 : NULL;
    for (long r0 = g->m0; r0 < g->m1; r0 += GF_MR) {
        long rows = g->m1 - r0 < GF_MR ? g->m1 - r0 : GF_MR;
        const float *xp = g->xp + r0 * g->k + g->k0 * GF_MR;
        float *y = g->y + r0 * g->n + c0;
#ifdef GF_X86
        if (g->simd) kernel_8x32(xp, wp, g->kc, y, g->n, rows, cols, add_old, last, g->mode, bias);
        else
#endif
        kernel_plain(xp, wp, g->kc, y, g->n, rows, cols, add_old, last, g->mode, bias);
        if (last && g->mode == EK_EPI_GELU)
            for (long r = 0; r < rows; r++) ek_gelu_tanh_f32(y + r * g->n, cols);
    }
}

static _Thread_local fbuf g_xp;   /* the caller's packed x */

static int zmm_gemm_f32(const float *w, const float *x, const float *bias, float *y, long m, long n, long k, int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU) return -1;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {   /* an empty sum: the epilogue of 0 */
        for (long r = 0; r < m; r++)
            for (long c = 0; c < n; c++) y[r * n + c] = epilogue1(0.0f, bias, c, y[r * n + c], mode);
        if (mode == EK_EPI_GELU) ek_gelu_tanh_f32(y, m * n);
        return 0;
    }
    block_sizes();
    long mp = (m + GF_MR - 1) / GF_MR * GF_MR;
    float *xp = fbuf_get(&g_xp, mp * k);
    if (!xp) return -2;
    gf_ctx g = { .w = w, .bias = bias, .x = x, .y = y, .xp = xp, .m = m, .n = n, .k = k, .mode = mode,
                 .simd = f32_gemm_simd() };
    ek_parallel_for(mp / GF_MR, pack_x_task, &g);
    long npanels = (n + GF_NR - 1) / GF_NR;
    for (long m0 = 0; m0 < m; m0 += g_mc) {
        g.m0 = m0;
        g.m1 = m0 + g_mc < m ? m0 + g_mc : m;
        for (long k0 = 0; k0 < k; k0 += g_kc) {
            g.k0 = k0;
            g.kc = k - k0 < g_kc ? k - k0 : g_kc;
            ek_parallel_for(npanels, panel_task, &g);
            if (g.failed) return -2;
        }
    }
    return 0;
}

/* ---- the comparison ---- */

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct { const float *x, *w; float *y; long m, n, k, per; } slice_ctx;
static void blas_slice(void *ctx, long i, long count) {
    (void)count;
    slice_ctx *s = ctx;
    long c0 = i * s->per, nc = s->n - c0 < s->per ? s->n - c0 : s->per;
    if (nc > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->m, (int)nc, (int)s->k, 1, s->x, (int)s->k,
                    s->w + c0 * s->k, (int)s->k, 0, s->y + c0, (int)s->n);
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: sgemm_zmm m n k threads\n"); return 2; }
    long m = atol(argv[1]), n = atol(argv[2]), k = atol(argv[3]);
    int threads = atoi(argv[4]);
    ek_set_threads(threads);
    openblas_set_num_threads(1);
    float *x = malloc(4 * m * k), *w = malloc(4 * n * k), *y = malloc(4 * m * n), *yb = malloc(4 * m * n);
    srand(1);
    for (long i = 0; i < m * k; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < n * k; i++) w[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.05f;
    slice_ctx s = { x, w, yb, m, n, k, (n / threads + 15) / 16 * 16 };
    double be = 1e9, bb = 1e9;
    for (int it = 0; it < 15; it++) {
        double t = now();
        zmm_gemm_f32(w, x, NULL, y, m, n, k, EK_EPI_STORE);
        t = now() - t; if (t < be) be = t;
        t = now();
        ek_parallel_for((n + s.per - 1) / s.per, blas_slice, &s);
        t = now() - t; if (t < bb) bb = t;
    }
    double worst = 0;   /* against the double twin, on up to 64 rows */
    for (long r = 0; r < m && r < 64; r++)
        for (long c = 0; c < n; c++) {
            double sum = 0, mag = 0;
            for (long i = 0; i < k; i++) { sum += (double)x[r * k + i] * w[c * k + i]; mag += fabs((double)x[r * k + i] * w[c * k + i]); }
            double e = fabs(y[r * n + c] - sum) / mag;
            if (e > worst) worst = e;
        }
    double flops = 2.0 * m * n * k, peak = ek_peak_fma_gflops();
    printf("m=%ld n=%ld k=%ld thr=%d  zmm GEMM [%s] %.2f ms %.1f GFLOP/s (%.0f%% of peak) | OpenBLAS %.2f ms %.1f GFLOP/s (%.0f%%) | "
           "ratio %.2fx | peak %.0f | max err/sum|xw| %.2g\n",
           m, n, k, threads, zmm_gemm_f32_path(), be * 1e3, flops / be / 1e9, 100 * flops / be / 1e9 / peak, bb * 1e3,
           flops / bb / 1e9, 100 * flops / bb / 1e9 / peak, bb / be, peak, worst);
    return 0;
}
