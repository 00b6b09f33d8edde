/* Prompt-pass GEMM over int8 weights (the EK_WF_INT8 rows decode streams), without an fp32 copy; the same tiles
 * over Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 blocks and Q4_K/Q5_K/Q6_K sub-blocks (below), and over bf16 rows with AVX512-BF16
 * (ek_gemm_bf16, at the end).
 *
 *   y[m, n] = d_x[m] · wscale[n] · Σ_k (u_x[m, k] − z_x[m]) q_w[n, k]  (+ bias[n]), stored, accumulated into y,
 *   or GELU'd
 *
 * Activations are quantized per row to 7-bit unsigned values with a zero point, as PyTorch's x86 int8 GEMM (fbgemm,
 * reduce_range) does: the row's range [lo, hi] (always holding 0) in 127 steps, d_x = (hi − lo)/127,
 * z_x = round(−lo/d_x), u = round-half-even(x/d_x) + z_x in [0, 127]. A ReLU'd row keeps the full 127 levels over
 * [0, max] (8-bit symmetric quantization has the same step there); a symmetric row gets half the levels of 8-bit.
 * The dot products are exact int32 sums (Σ u·q − z·Σ q, |·| ≤ 2k · 127² < 2³¹ for k < 66 000), so the only
 * rounding besides the activation quantization is the fp32 epilogue; every path gives the same integers.
 *
 * Why 7 bits: AVX2 without VNNI multiplies bytes with vpmaddubsw (unsigned × signed bytes, adjacent pairs summed
 * into int16 with saturation), then vpmaddwd by ones into int32: 32 multiply-adds per 3 instructions, ≈ 1.4× the
 * int16 vpmaddwd route on Zen 4. With u ≤ 127 and |q| ≤ 127 a pair sums to ≤ 32 258: never saturates (CTranslate2's
 * MKL kernel shifts 8-bit activations by 128 instead, and accepts saturated pairs).
 *
 * AVX2 path: threads take up to 16 panels of 16 columns; a task packs its panels' weight rows once per call into
 * quads interleaved by column ([k/4][16][4] int8, an 8×8 transpose of 32-bit lanes) and sums each column on the
 * way (for the zero point). Per block of 96 activation rows, k runs in blocks of 256 outermost (the rows' and each
 * panel's k block stay in cache), and the micro-kernel holds a 4-row × 16-column int32 tile in 8 registers,
 * broadcasting a quad of each activation row; the tiles of every panel persist across the k blocks in a per-thread
 * buffer, and the epilogue is applied from them.
 * AVX-VNNI / AVX512-VNNI paths: the same packing and tiles, each u8 × s8 quad summed by one vpdpbusd instead of
 * vpmaddubsw + vpmaddwd + vpaddd (ek_gemm_int8_path names the path; ek_set_isa_limit caps it); the block GEMM below
 * drops the sign trick there too (activations offset by 128, see kernel_q8). With AVX512-VNNI the micro-kernels
 * run on zmm (kernel_zmm2_*, kernel_q8_zmm2_*): 8 rows × two panels of 16 columns, a row's 16 sums of a panel in one
 * register (kernel_zmm_*, kernel_q8_zmm_*: a lone last panel). Timed on an
 * Intel Xeon with AVX-512 (session 11, bench/README.md); checked natively there and by kernel_parity's emulated build
 * (SIMDe, scripts/test-kernels.sh) on CPUs without them.
 * arm64 (NEON hook): 4×4 tiles read straight from the int8 rows with SDOT, or SMULL + SADALP (neon.c); u ≤ 127 is
 * a valid signed byte, so the same tiles multiply it.
 *
 * The plain path (and the twin ek_gemm_int8_ref) does the same integer arithmetic element by element.
 *
 * Q8_0, Q4_0 and Q4_1 blocks (ek_gemm_q8_0: GGUF's rows, ggml or x8 layout; 4-bit nibbles are unpacked to int8
 * values when a panel is packed, Q4_0's minus 8, Q5's with their 5th bits (Q5_0 minus 16); Q4_1 and Q5_1 add s_x·m_w
 * per block, s_x = d_x·Σ q_x from ggml's q8_1) compute
 * what llama.cpp's q8_0 / q4_0 / q4_1 matmuls compute:
 * activations quantized per block of 32 as ggml's q8_0 (d = amax/127 rounded to f16, q = round-half-even(x/d)),
 *
 *   y[m, n] = Σ_b (d_x[m, b] · d_w[n, b]) · Σ_{k∈b} q_x[m, k] q_w[n, k]
 *
 * (Q6_K: b runs over the weights' blocks of 16, each with the scale d_x of the activations' block of 32 holding it:
 * the same tiles with 4 quads per block instead of 8, kernel_q6_* and kernel_q8_zmm2_6_*)
 * with exact int32 block sums (vpmaddubsw(|q_w|, sign(q_x, q_w)), llama.cpp's sign trick, on the same packed panels)
 * and one fp32 FMA per block in order b = 0, 1, … (tile: the block's int32 tile widened and FMA'd into an fp32 tile
 * kept in L1; arm64: ek_neon_tile_s8's 4×4 int32 tile per block, then the same FMAs). The twin ek_gemm_q8_0_ref does the same operations in the same order, so every path gives the same
 * floats. */
#include "EncoreKernels.h"
#include "neon.h"   /* arm64: ek_neon_tile_s8 (NEON hook below) */
#include "kquant.h" /* kq_scale_min, kq_values: the K-quant super-blocks as gemv_quant.c reads them */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define EG_X86 1
#include <immintrin.h>
#define EG_AVX2 __attribute__((target("avx2,fma,f16c")))
#if defined(EK_EMULATED_FEATURES)
/* kernel_parity's emulated build (scripts/test-kernels.sh): SIMDe stands in for vpdpbusd on an AVX2 CPU */
#define EG_AVXVNNI EG_AVX2
#define EG_AVX512VNNI EG_AVX2
#else
#define EG_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define EG_AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#endif
#endif

/* x86 tile paths (gemm_isa) */
enum { EG_PLAIN = 0, EG_P_AVX2, EG_P_AVXVNNI, EG_P_AVX512VNNI };

#ifndef EG_MR
#define EG_MR 4      /* activation rows per micro-tile */
#define EG_NV 2      /* vectors of 8 output columns per micro-tile: EG_MR × EG_NV = 8 int32 accumulators */
#endif
#define EG_NR (8 * EG_NV)   /* weight rows (output columns) per panel: 16 */
#ifndef EG_MC
#define EG_MC 96     /* activation rows per block (their k block: 96 × 256 B = 24 KiB) */
#define EG_KC 256    /* k values per block: a panel's block is 16 × 256 B = 4 KiB (stays in L1) */
#endif
#define EG_MAX_PANELS 16    /* panels per task at most (bounds a thread's packing buffer: 16 × 16 × k B) */

/* A thread's scratch buffer, grown to the largest size asked of it (64-byte aligned; contents not kept). */
typedef struct { void *p; long bytes; } scratch;

static void *scratch_get(scratch *s, long bytes) {
    if (bytes > s->bytes) {
        free(s->p);
        s->p = aligned_alloc(64, (size_t)((bytes + 63) / 64 * 64));
        s->bytes = s->p ? bytes : 0;
    }
    return s->p;
}

/* Panels of EG_NR columns per task: about 4 tasks per thread over all `npanels`, at most EG_MAX_PANELS each. */
static long panels_per_task(long npanels) {
    long threads = ek_get_threads(), target = threads * 4 < npanels ? threads * 4 : npanels;
    long per = (npanels + target - 1) / target;
    return per > EG_MAX_PANELS ? EG_MAX_PANELS : per;
}

/* Row r of x [m, k] → u [kp] (zero padded), d and z; the same arithmetic on every path. */
static void quantize_row_plain(const float *xr, long k, long kp, uint8_t *ur, float *d, int32_t *z) {
    float lo = 0, hi = 0;
    for (long i = 0; i < k; i++) { if (xr[i] < lo) lo = xr[i]; if (xr[i] > hi) hi = xr[i]; }
    float id = hi > lo ? 127.0f / (hi - lo) : 0.0f, zp = nearbyintf(-lo * id);
    *d = (hi - lo) / 127.0f;
    *z = (int32_t)zp;
    for (long i = 0; i < k; i++) {
        float v = nearbyintf(xr[i] * id) + zp;
        ur[i] = (uint8_t)(v > 127 ? 127 : (v < 0 ? 0 : v));
    }
    for (long i = k; i < kp; i++) ur[i] = 0;
}

#ifdef EG_X86
/* The same bytes with AVX2: vcvtps2dq rounds half to even (the default MXCSR mode), as nearbyintf does. */
EG_AVX2 static void quantize_row_avx2(const float *xr, long k, long kp, uint8_t *ur, float *d, int32_t *z) {
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 v = _mm256_loadu_ps(xr + i);
        vlo = _mm256_min_ps(vlo, v);
        vhi = _mm256_max_ps(vhi, v);
    }
    float los[8], his[8], lo = 0, hi = 0;
    _mm256_storeu_ps(los, vlo);
    _mm256_storeu_ps(his, vhi);
    for (int t = 0; t < 8; t++) { if (los[t] < lo) lo = los[t]; if (his[t] > hi) hi = his[t]; }
    for (long j = i; j < k; j++) { if (xr[j] < lo) lo = xr[j]; if (xr[j] > hi) hi = xr[j]; }
    float id = hi > lo ? 127.0f / (hi - lo) : 0.0f, zp = nearbyintf(-lo * id);
    *d = (hi - lo) / 127.0f;
    *z = (int32_t)zp;
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i vz = _mm256_set1_epi32((int32_t)zp), top = _mm256_set1_epi32(127), zero = _mm256_setzero_si256();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (i = 0; i + 32 <= k; i += 32) {
        __m256i q[4];
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + i + 8 * j), vid)), vz);
            q[j] = _mm256_max_epi32(_mm256_min_epi32(v, top), zero);
        }
        /* packs/packus work within 128-bit halves: dwords come out in the order 0,2,4,6,1,3,5,7 of 4-byte groups */
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(ur + i), _mm256_permutevar8x32_epi32(b, order));
    }
    for (; i < k; i++) {
        float v = nearbyintf(xr[i] * id) + zp;
        ur[i] = (uint8_t)(v > 127 ? 127 : (v < 0 ? 0 : v));
    }
    for (; i < kp; i++) ur[i] = 0;
}
#endif

typedef struct { const float *x; long m, k, kp; uint8_t *u; float *d; int32_t *z; int simd; } quant_ctx;

static void quantize_task(void *ctx, long index, long count) {
    quant_ctx *c = ctx;
    for (long r = c->m * index / count; r < c->m * (index + 1) / count; r++) {
#ifdef EG_X86
        if (c->simd) { quantize_row_avx2(c->x + r * c->k, c->k, c->kp, c->u + r * c->kp, c->d + r, c->z + r); continue; }
#endif
        quantize_row_plain(c->x + r * c->k, c->k, c->kp, c->u + r * c->kp, c->d + r, c->z + r);
    }
}

/* Runs `fn` over m activation rows of k values: split over the threads when there are many values, else inline. */
static void run_row_tasks(long m, long k, ek_task_fn fn, void *ctx) {
    long tasks = m * k >= (1L << 15) ? ek_get_threads() : 1;
    if (tasks > m) tasks = m;
    if (tasks <= 1) fn(ctx, 0, 1);
    else ek_parallel_for(tasks, fn, ctx);
}

/* x [m, k] → u [m, kp], d [m], z [m], rows split over the threads when there are many values. */
static void quantize_rows_u7(const float *x, long m, long k, long kp, uint8_t *u, float *d, int32_t *z, int simd) {
    quant_ctx c = { x, m, k, kp, u, d, z, simd };
    run_row_tasks(m, k, quantize_task, &c);
}

/* (Σ u·q − z·Σ q) · d_x · wscale + bias, added to the old value when accumulating (GELU is applied to whole rows
 * after). The integer part is exact, so every path passes the same float on. */
static inline float epilogue_value(int32_t acc, float dx, float ws, const float *bias, long c, float old, int mode) {
    float v = (float)acc * (dx * ws) + (bias ? bias[c] : 0.0f);
    if (mode == EK_EPI_RELU) return v > 0.0f ? v : 0.0f;
    return mode == EK_EPI_ACCUMULATE ? old + v : v;
}

int ek_gemm_int8_ref(const int8_t *w, const float *wscale, const float *x, const float *bias, float *y,
                     long m, long n, long k, int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU) return -1;
    long kp = (k + 31) / 32 * 32;
    uint8_t *u = malloc((size_t)(m * kp + 1));
    float *d = malloc(sizeof(float) * (size_t)(m + 1));
    int32_t *z = malloc(sizeof(int32_t) * (size_t)(m + 1));
    if (!u || !d || !z) { free(u); free(d); free(z); return -2; }
    quantize_rows_u7(x, m, k, kp, u, d, z, 0);
    for (long c = 0; c < n; c++) {
        long long colsum = 0;
        for (long i = 0; i < k; i++) colsum += w[c * kp + i];
        for (long r = 0; r < m; r++) {
            long long s = 0;
            for (long i = 0; i < k; i++) s += (long long)u[r * kp + i] * w[c * kp + i];
            y[r * n + c] = epilogue_value((int32_t)(s - z[r] * colsum), d[r], wscale[c], bias, c, y[r * n + c], mode);
        }
    }
    if (mode == EK_EPI_GELU) ek_gelu_tanh_f32_ref(y, m * n);
    free(u); free(d); free(z);
    return 0;
}

/* One weight matrix of a call and its output: w [n, kp] int8 rows with wscale [n] (or rows of Q8_0/Q4_0/Q4_1 blocks,
 * wscale NULL), bias [n] or NULL, y [m, n]. */
typedef struct { const int8_t *w; const float *wscale; const float *bias; float *y; long n; } gemm_mat;
/* One task: columns [c0, c1) of matrix `mat`. */
typedef struct { long mat, c0, c1; } gemm_range;

typedef struct {
    const gemm_mat *mats; const gemm_range *ranges;
    const uint8_t *u; const float *d; const int32_t *z;      /* int8 rows: 7-bit activations, zero points */
    const int8_t *xq; const float *xd, *xs;                  /* Q8_0/Q4_x blocks: activations as ggml's q8_0 (Q4_1:
                                                                q8_1, with the block sums s = d·Σq in xs) */
    const uint8_t *xu;                                       /* the same plus 128 (unsigned), for the VNNI paths */
    long m, k, kp;
    int mode, simd, neon, dotprod;   /* simd: the x86 tile path (EG_P_*), EG_PLAIN for none */
    int failed;   /* a task could not grow its scratch (set atomically; read after the pool job) */
    int format;   /* EK_WF_INT8 (rows + row scales), or a block layout q8_format_ok accepts */
    int nt;       /* x86: outputs written with non-temporal stores (stream_outputs) */
} gemm_ctx;

/* Σ of column c's int8 weights (the zero point's correction). */
static int32_t column_sum(const gemm_ctx *g, const gemm_mat *a, long c) {
    int32_t s = 0;
    for (long i = 0; i < g->k; i++) s += a->w[c * g->kp + i];
    return s;
}

/* Columns [c0, c0+nc) of the plain path: integer dot products row by row. */
static void panel_plain(const gemm_ctx *g, const gemm_mat *a, long c0, long nc) {
    for (long c = c0; c < c0 + nc; c++) {
        int32_t colsum = column_sum(g, a, c);
        const int8_t *wc = a->w + c * g->kp;
        for (long r = 0; r < g->m; r++) {
            const uint8_t *ur = g->u + r * g->kp;
            int32_t s = 0;
            for (long i = 0; i < g->k; i++) s += (int32_t)ur[i] * wc[i];
            float *yp = a->y + r * a->n + c;
            *yp = epilogue_value(s - g->z[r] * colsum, g->d[r], a->wscale[c], a->bias, c, *yp, g->mode);
        }
    }
    if (g->mode == EK_EPI_GELU)
        for (long r = 0; r < g->m; r++) ek_gelu_tanh_f32(a->y + r * a->n + c0, nc);
}

#if defined(__aarch64__)
/* NEON hook: columns [c0, c0 + nc) in 4×4 tiles read straight from the int8 rows (no packing), exact int32 sums
 * by SDOT or SMULL+SADALP (ek_neon_tile_s8; u ≤ 127 is a valid signed byte), then the plain epilogue. */
static void columns_neon(const gemm_ctx *g, const gemm_mat *a, long c0, long nc) {
    int32_t t[16], colsum[4];
    for (long cc = c0; cc < c0 + nc; cc += 4) {
        int tn = (int)(c0 + nc - cc < 4 ? c0 + nc - cc : 4);
        for (int c = 0; c < tn; c++) colsum[c] = column_sum(g, a, cc + c);
        for (long r0 = 0; r0 < g->m; r0 += 4) {
            int tm = (int)(g->m - r0 < 4 ? g->m - r0 : 4);
            ek_neon_tile_s8((const int8_t *)g->u + r0 * g->kp, g->kp, a->w + cc * g->kp, g->kp, g->kp, tm, tn, t,
                            g->dotprod);
            for (int r = 0; r < tm; r++)
                for (int c = 0; c < tn; c++) {
                    float *yp = a->y + (r0 + r) * a->n + cc + c;
                    *yp = epilogue_value(t[r * 4 + c] - g->z[r0 + r] * colsum[c], g->d[r0 + r], a->wscale[cc + c],
                                         a->bias, cc + c, *yp, g->mode);
                }
        }
    }
    if (g->mode == EK_EPI_GELU)
        for (long r = 0; r < g->m; r++) ek_gelu_tanh_f32(a->y + r * a->n + c0, nc);
}
#endif

#ifdef EG_X86
/* One thread's packing buffer: the task's packed panels and their column sums (grown once). */
static _Thread_local scratch g_pack;

static int8_t *pack_buffer(long len) { return scratch_get(&g_pack, len); }

/* One thread's accumulator tiles (grown once). */
static _Thread_local scratch g_tiles;

static __m256i *tile_buffer(long vectors) { return scratch_get(&g_tiles, vectors * 32); }

#ifndef EG_PACK_PF
#define EG_PACK_PF 1   /* -DEG_PACK_PF=0: no software prefetch of the next panel while packing (A/B) */
#endif
/* Packs weight rows c0..c0+nc (nc ≤ EG_NR, the rest zero) into [kp/4][EG_NR][4] int8: for each quad of k values,
 * the quad of every column side by side (one int32 lane per column): per 8 rows and 8 quads, an 8×8 transpose of
 * the 32-bit lanes. colsum[EG_NR] gets each column's sum (vpmaddubsw by ones, then vpmaddwd by ones). */
EG_AVX2 static void pack_panel(const int8_t *w, long kp, long c0, long nc, int8_t *dst, int32_t *colsum, int prefetch) {
    int32_t *d32 = (int32_t *)dst;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    /* `prefetch`: the next panel's rows (contiguous: 16 rows of kp bytes) are brought in while this one is packed, 4
       lines per step (each step reads 8 rows × 32 B here): a panel's 8 interleaved row streams are too short for the
       hardware prefetchers to ramp up, and prompt passes read every weight from memory. bench/micro/gemm_cold.c,
       2 threads, 6 alternations (session 24, Zen 4), medians: int8 512×4096×1024 8.4 → 7.3 ms, 128×4096×1024 2.03 →
       1.84, bf16 512×5120×960 15.8 → 13.6 */
    const uintptr_t next = prefetch ? (uintptr_t)w + (uintptr_t)((c0 + EG_NR) * kp) : 0;   /* may lie past w's end */
    long step = 0;
    for (long g = 0; g < EG_NR; g += 8) {
        __m256i sum = _mm256_setzero_si256();
        for (long p = 0; p < kp / 4; p += 8, step++) {
            if (EG_PACK_PF && prefetch)
                for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(next + (uintptr_t)((step * 4 + l) * 64)), _MM_HINT_T1);
            __m256i r[8];
            for (int j = 0; j < 8; j++)
                r[j] = g + j < nc ? _mm256_loadu_si256((const __m256i *)(w + (c0 + g + j) * kp + 4 * p))
                                  : _mm256_setzero_si256();
            __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
            __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
            __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
            __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
            __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
            __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
            __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
            __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
            /* u0 = quads 0 (rows 0-3 | 4-7 in the halves' order) … : recombine the 128-bit halves */
            __m256i o[8];
            o[0] = _mm256_permute2x128_si256(u0, u4, 0x20); o[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
            o[1] = _mm256_permute2x128_si256(u1, u5, 0x20); o[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
            o[2] = _mm256_permute2x128_si256(u2, u6, 0x20); o[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
            o[3] = _mm256_permute2x128_si256(u3, u7, 0x20); o[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
            __m256i s16 = _mm256_setzero_si256();   /* ≤ 8 quads × 2 pairs × 2 × 127 per int16 lane: no overflow */
            for (int t = 0; t < 8; t++) {
                _mm256_store_si256((__m256i *)(d32 + (p + t) * EG_NR + g), o[t]);
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(ones8, o[t]));
            }
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(s16, ones16));
        }
        _mm256_storeu_si256((__m256i *)(colsum + g), sum);
    }
}

/* acc[MR][EG_NV] += Σ over `quads` quads of k: broadcast quad of each of the MR activation rows (stride lda, u8)
 * × the packed panel's EG_NV vectors of 8 columns (s8). DOT(c, u, s) adds each int32 lane's four u8 × s8 products:
 * on AVX2 vpmaddubsw sums them in pairs into int16 (exact, see the top) and vpmaddwd by ones sums those pairs into
 * int32 (three instructions); with VNNI one vpdpbusd does it (VEX on AVX-VNNI; EVEX on ymm with AVX512-VNNI only
 * when built with -DEG_HAVE_ZMM=0, else the zmm kernels below). Both never saturate here, so every path gives the
 * same integers. */
#define EG_DOT_AVX2(c, u, s) _mm256_add_epi32((c), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), ones))
#define EG_DOT_AVXVNNI(c, u, s) _mm256_dpbusd_avx_epi32((c), (u), (s))
#define EG_DOT_AVX512VNNI(c, u, s) _mm256_dpbusd_epi32((c), (u), (s))
#if defined(__clang__)
#define EG_UNROLL _Pragma("clang loop unroll(full)")
#define EG_NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define EG_UNROLL _Pragma("GCC unroll 16")
#define EG_NO_UNROLL _Pragma("GCC unroll 1")
#endif
/* The loops over r and v have constant trip counts: fully unrolled (SwiftPM builds C at -O2, where clang would
 * otherwise keep some accumulators in memory). */
/* T: the accumulator vector (int32 lanes) */
#define EG_KERNEL(MR, SUF, ATTR, T, DOT) \
ATTR static void kernel_##SUF##_##MR(const uint8_t *a, long lda, const int8_t *b, long quads, T *acc) { \
    const __m256i ones = _mm256_set1_epi16(1); (void)ones; \
    T c[MR][EG_NV]; \
    EG_UNROLL for (int r = 0; r < MR; r++) EG_UNROLL for (int v = 0; v < EG_NV; v++) c[r][v] = acc[r * EG_NV + v]; \
    for (long p = 0; p < quads; p++) { \
        __m256i bv[EG_NV]; \
        EG_UNROLL for (int v = 0; v < EG_NV; v++) bv[v] = _mm256_load_si256((const __m256i *)(b + p * 4 * EG_NR + 32 * v)); \
        EG_UNROLL for (int r = 0; r < MR; r++) { \
            __m256i av = _mm256_set1_epi32(*(const int32_t *)(a + r * lda + 4 * p)); \
            EG_UNROLL for (int v = 0; v < EG_NV; v++) \
                c[r][v] = DOT(c[r][v], av, bv[v]); \
        } \
    } \
    EG_UNROLL for (int r = 0; r < MR; r++) EG_UNROLL for (int v = 0; v < EG_NV; v++) acc[r * EG_NV + v] = c[r][v]; \
}
#define EG_KERNELS(SUF, ATTR, T, DOT) EG_KERNEL(1, SUF, ATTR, T, DOT) EG_KERNEL(2, SUF, ATTR, T, DOT) \
                                      EG_KERNEL(3, SUF, ATTR, T, DOT) EG_KERNEL(4, SUF, ATTR, T, DOT)
EG_KERNELS(avx2, EG_AVX2, __m256i, EG_DOT_AVX2)
EG_KERNELS(avxvnni, EG_AVXVNNI, __m256i, EG_DOT_AVXVNNI)
EG_KERNELS(avx512vnni, EG_AVX512VNNI, __m256i, EG_DOT_AVX512VNNI)
typedef void (*eg_kernel_fn)(const uint8_t *, long, const int8_t *, long, __m256i *);
/* [path][rows − 1] */
static const eg_kernel_fn eg_kernels[4][4] = {
    { NULL, NULL, NULL, NULL },
    { kernel_avx2_1, kernel_avx2_2, kernel_avx2_3, kernel_avx2_4 },
    { kernel_avxvnni_1, kernel_avxvnni_2, kernel_avxvnni_3, kernel_avxvnni_4 },
    { kernel_avx512vnni_1, kernel_avx512vnni_2, kernel_avx512vnni_3, kernel_avx512vnni_4 },
};

/* AVX512-VNNI on zmm: a packed quad row of a panel (16 columns × 4 k = 64 B) is one vector, so a call computes
 * MR activation rows × the panel's 16 columns with MR vpdpbusd on zmm per quad: twice the ymm tile's work per
 * instruction, which CPUs with two 512-bit ports (Intel Xeon) run at the ymm instructions' rate (Zen 4 splits it
 * in halves). A row's 16 int32 sums are its two ymm vectors of the tile buffer (EG_NV = 2), and consecutive
 * 4-row tiles are adjacent there, so MR up to EG_ZMR spans up to EG_ZMR / 4 tiles. Same integers as the ymm tile. */
#ifndef EG_ZMR
#define EG_ZMR 8
#endif
/* The zmm kernels for a vector type V of 16 lanes (accumulators kept in the tile buffer as ACC, two per row) and
 * its operations Z##_LOAD(p), Z##_STORE(p, v), Z##_BCAST(32-bit quad or pair of a), Z##_DOT(c, a, b): here int8
 * (EG_ZI: vpdpbusd) and, below, bf16 (EB_ZB: vdpbf16ps over the same packed panels, pairs of bf16 as quads). */
#define EG_ZI_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define EG_ZI_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#define EG_ZI_BCAST(q) _mm512_set1_epi32(q)
#define EG_ZI_DOT(c, u, s) _mm512_dpbusd_epi32((c), (u), (s))
/* kernel_NAME_MR: MR rows × one panel's 16 columns */
#define EG_KERNEL_ZMM_OF(MR, NAME, ATTR, V, ACC, Z) \
ATTR static void kernel_##NAME##_##MR(const uint8_t *a, long lda, const int8_t *b, long quads, ACC *acc) { \
    V c[MR]; \
    EG_UNROLL for (int r = 0; r < MR; r++) c[r] = Z##_LOAD(acc + 2 * r); \
    for (long p = 0; p < quads; p++) { \
        const V bv = Z##_LOAD(b + p * 4 * EG_NR); \
        EG_UNROLL for (int r = 0; r < MR; r++) \
            c[r] = Z##_DOT(c[r], Z##_BCAST(*(const int32_t *)(const void *)(a + r * lda + 4 * p)), bv); \
    } \
    EG_UNROLL for (int r = 0; r < MR; r++) Z##_STORE(acc + 2 * r, c[r]); \
}
/* kernel_NAME2_MR, two panels at once (b0 → acc0, b1 → acc1): MR rows × 32 columns, 2·MR accumulators; per quad two
 * weight loads and MR broadcasts feed 2·MR dot instructions (one broadcast per two instructions instead of one per
 * instruction). */
#define EG_KERNEL_ZMM2_OF(MR, NAME, ATTR, V, ACC, Z) \
ATTR static void kernel_##NAME##2_##MR(const uint8_t *a, long lda, const int8_t *b0, const int8_t *b1, long quads, \
                                      ACC *acc0, ACC *acc1) { \
    V c[MR], d[MR]; \
    EG_UNROLL for (int r = 0; r < MR; r++) { \
        c[r] = Z##_LOAD(acc0 + 2 * r); \
        d[r] = Z##_LOAD(acc1 + 2 * r); \
    } \
    for (long p = 0; p < quads; p++) { \
        const V bv = Z##_LOAD(b0 + p * 4 * EG_NR); \
        const V bw = Z##_LOAD(b1 + p * 4 * EG_NR); \
        EG_UNROLL for (int r = 0; r < MR; r++) { \
            const V av = Z##_BCAST(*(const int32_t *)(const void *)(a + r * lda + 4 * p)); \
            c[r] = Z##_DOT(c[r], av, bv); \
            d[r] = Z##_DOT(d[r], av, bw); \
        } \
    } \
    EG_UNROLL for (int r = 0; r < MR; r++) { \
        Z##_STORE(acc0 + 2 * r, c[r]); \
        Z##_STORE(acc1 + 2 * r, d[r]); \
    } \
}
#define EG_KERNEL_ZMM(MR) EG_KERNEL_ZMM_OF(MR, zmm, EG_AVX512VNNI, __m512i, __m256i, EG_ZI)
#define EG_KERNEL_ZMM2(MR) EG_KERNEL_ZMM2_OF(MR, zmm, EG_AVX512VNNI, __m512i, __m256i, EG_ZI)
#ifndef EG_HAVE_ZMM
#define EG_HAVE_ZMM 1   /* -DEG_HAVE_ZMM=0: the ymm tile on every VNNI path (A/B) */
#endif
#ifndef EG_ZMM2
#define EG_ZMM2 1       /* -DEG_ZMM2=0: one panel per zmm call (A/B) */
#endif
#if EG_HAVE_ZMM
EG_KERNEL_ZMM2(1) EG_KERNEL_ZMM2(2) EG_KERNEL_ZMM2(3) EG_KERNEL_ZMM2(4) EG_KERNEL_ZMM2(5) EG_KERNEL_ZMM2(6)
EG_KERNEL_ZMM2(7) EG_KERNEL_ZMM2(8)
typedef void (*eg_kernel2_fn)(const uint8_t *, long, const int8_t *, const int8_t *, long, __m256i *, __m256i *);
static const eg_kernel2_fn eg_kernels_zmm2[8] = { kernel_zmm2_1, kernel_zmm2_2, kernel_zmm2_3, kernel_zmm2_4,
    kernel_zmm2_5, kernel_zmm2_6, kernel_zmm2_7, kernel_zmm2_8 };
EG_KERNEL_ZMM(1) EG_KERNEL_ZMM(2) EG_KERNEL_ZMM(3) EG_KERNEL_ZMM(4) EG_KERNEL_ZMM(5) EG_KERNEL_ZMM(6)
EG_KERNEL_ZMM(7) EG_KERNEL_ZMM(8) EG_KERNEL_ZMM(9) EG_KERNEL_ZMM(10) EG_KERNEL_ZMM(11) EG_KERNEL_ZMM(12)
/* [rows − 1] */
static const eg_kernel_fn eg_kernels_zmm[12] = { kernel_zmm_1, kernel_zmm_2, kernel_zmm_3, kernel_zmm_4, kernel_zmm_5,
    kernel_zmm_6, kernel_zmm_7, kernel_zmm_8, kernel_zmm_9, kernel_zmm_10, kernel_zmm_11, kernel_zmm_12 };
#endif
_Static_assert(EG_NV == 2 && EG_NR == 16 && EG_ZMR % EG_MR == 0 && EG_ZMR <= 12, "zmm kernels: a row is two ymm tile vectors");
_Static_assert(EG_MR == 4, "two-panel zmm kernels: 8 rows are two 4-row tiles (t += 2)");

/* Whether a call writes its outputs with non-temporal stores (gemm_ctx.nt, see stream_outputs): per 32-byte-aligned
 * vector of 8 outputs (others are stored as usual). */
static inline int nt_ok(const gemm_ctx *g, const float *p) { return g->nt && ((uintptr_t)p & 31) == 0; }

/* Writes rows r0..r0+mr of columns c0..c0+nc from the int32 tile (minus z · column sum). */
EG_AVX2 static void store_tile(const gemm_ctx *g, const gemm_mat *a, long r0, int mr, long c0, long nc,
                               const __m256i *acc, const int32_t *colsum) {
    for (int r = 0; r < mr; r++) {
        float dx = g->d[r0 + r];
        int32_t z = g->z[r0 + r];
        float *yr = a->y + (r0 + r) * a->n + c0;
        for (int h = 0; h < EG_NV; h++) {
            long cc = h * 8;
            if (cc >= nc) break;
            __m256i s = _mm256_sub_epi32(acc[r * EG_NV + h], _mm256_mullo_epi32(_mm256_set1_epi32(z),
                                         _mm256_loadu_si256((const __m256i *)(colsum + cc))));
            if (nc - cc >= 8) {
                __m256 v = _mm256_cvtepi32_ps(s);
                v = _mm256_mul_ps(v, _mm256_mul_ps(_mm256_set1_ps(dx), _mm256_loadu_ps(a->wscale + c0 + cc)));
                if (a->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(a->bias + c0 + cc));
                if (g->mode == EK_EPI_ACCUMULATE) v = _mm256_add_ps(v, _mm256_loadu_ps(yr + cc));
                else if (g->mode == EK_EPI_RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
                if (nt_ok(g, yr + cc)) _mm256_stream_ps(yr + cc, v); else _mm256_storeu_ps(yr + cc, v);
            } else {
                int32_t lanes[8];
                _mm256_storeu_si256((__m256i *)lanes, s);
                for (long j = 0; j < nc - cc; j++)
                    yr[cc + j] = epilogue_value(lanes[j], dx, a->wscale[c0 + cc + j], a->bias, c0 + cc + j,
                                                yr[cc + j], g->mode);
            }
        }
    }
}

/* Columns [c0, c0 + nc): their panels packed once into the thread's buffer; then per block of EG_MC rows and
 * panel, k in blocks of EG_KC (the panel's block stays in L1) over EG_MR-row tiles whose accumulators persist in
 * a small buffer between k blocks; GELU on the finished rows. */
EG_AVX2 static int columns_avx2(const gemm_ctx *g, const gemm_mat *a, long c0, long nc) {
    const eg_kernel_fn *kern = eg_kernels[g->simd];
    long panels = (nc + EG_NR - 1) / EG_NR, panel_len = g->kp * EG_NR;
    int8_t *pb = pack_buffer(panels * (panel_len + EG_NR * 4));
    if (!pb) return -2;
    int32_t *sums = (int32_t *)(pb + panels * panel_len);   /* [panels][EG_NR] column sums */
    for (long p = 0; p < panels; p++) {
        long pc = c0 + p * EG_NR;
        pack_panel(a->w, g->kp, pc, c0 + nc - pc < EG_NR ? c0 + nc - pc : EG_NR, pb + p * panel_len, sums + p * EG_NR, 1);
    }
    /* the int32 accumulators of every (panel, tile) of a row block: they persist across the k blocks */
    const long tile_vecs = EG_MR * EG_NV, tiles_per_panel = (EG_MC + EG_MR - 1) / EG_MR;
    __m256i *tiles = tile_buffer(panels * tiles_per_panel * tile_vecs);
    if (!tiles) return -2;
    for (long m0 = 0; m0 < g->m; m0 += EG_MC) {
        long m1 = m0 + EG_MC < g->m ? m0 + EG_MC : g->m, ntiles = (m1 - m0 + EG_MR - 1) / EG_MR;
        for (long t = 0; t < panels * tiles_per_panel * tile_vecs; t++) tiles[t] = _mm256_setzero_si256();
        /* k blocks outermost: the row block's k block (96 × 256 B = 24 KiB) and each panel's (4 KiB) stay in
         * cache while every panel and tile uses them, whatever k is */
        for (long k0 = 0; k0 < g->kp; k0 += EG_KC) {
            long kc = g->kp - k0 < EG_KC ? g->kp - k0 : EG_KC;
            for (long p = 0; p < panels; p++) {
                const int8_t *bk = pb + p * panel_len + k0 * EG_NR;
#if EG_HAVE_ZMM
                if (g->simd == EG_P_AVX512VNNI) {   /* EG_ZMR rows (EG_ZMR / EG_MR tiles) per call */
                    if (EG_ZMM2 && p + 1 < panels) {   /* this panel and the next, 8 rows per call */
                        for (long t = 0; t < ntiles; t += 2) {
                            long r0 = m0 + t * EG_MR;
                            int mr = (int)(m1 - r0 < 8 ? m1 - r0 : 8);
                            eg_kernels_zmm2[mr - 1](g->u + r0 * g->kp + k0, g->kp, bk, bk + panel_len, kc / 4,
                                                    tiles + (p * tiles_per_panel + t) * tile_vecs,
                                                    tiles + ((p + 1) * tiles_per_panel + t) * tile_vecs);
                        }
                        p++;
                        continue;
                    }
                    for (long t = 0; t < ntiles; t += EG_ZMR / EG_MR) {
                        long r0 = m0 + t * EG_MR;
                        int mr = (int)(m1 - r0 < EG_ZMR ? m1 - r0 : EG_ZMR);
                        eg_kernels_zmm[mr - 1](g->u + r0 * g->kp + k0, g->kp, bk, kc / 4,
                                               tiles + (p * tiles_per_panel + t) * tile_vecs);
                    }
                    continue;
                }
#endif
                for (long t = 0; t < ntiles; t++) {
                    long r0 = m0 + t * EG_MR;
                    int mr = (int)(m1 - r0 < EG_MR ? m1 - r0 : EG_MR);
                    const uint8_t *a = g->u + r0 * g->kp + k0;
                    __m256i *acc = tiles + (p * tiles_per_panel + t) * tile_vecs;
                    kern[mr - 1](a, g->kp, bk, kc / 4, acc);
                }
            }
        }
        /* tiles outer, panels inner: each output row is written as one run of nc columns, not in 64-byte pieces
         * a row apart (a TLB miss each on wide outputs) */
        for (long t = 0; t < ntiles; t++) {
            long r0 = m0 + t * EG_MR;
            for (long p = 0; p < panels; p++) {
                long pc = c0 + p * EG_NR, pn = c0 + nc - pc < EG_NR ? c0 + nc - pc : EG_NR;
                store_tile(g, a, r0, (int)(m1 - r0 < EG_MR ? m1 - r0 : EG_MR), pc, pn,
                           tiles + (p * tiles_per_panel + t) * tile_vecs, sums + p * EG_NR);
            }
        }
        if (g->mode == EK_EPI_GELU)
            for (long r = m0; r < m1; r++) ek_gelu_tanh_f32(a->y + r * a->n + c0, nc);
    }
    return 0;
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Q8_0/Q4_0/Q4_1 blocks: llama.cpp's activations and arithmetic, on the int8 path's packed tiles      */

static void q5_row(int format, const uint8_t *w, long nb, long k, long c, int8_t *q, float *d, float *m);

/* Row c of Q8_0, Q4_0 or Q4_1 blocks (nb per row, ggml or x8 layout; Q5_0 / Q5_1: q5_row) as int8 values: into q [nb*32] (zero past k;
 * Q4_0's nibbles minus 8, Q4_1's as they are; element j of a block the low nibble of byte j, element j + 16 its high
 * nibble), scales into d [nb], Q4_1's minima into m [nb] (when m is not NULL). */
static void kq_row(int format, const uint8_t *w, long nb, long k, long c, int8_t *q, float *d, float *m);

static void q8_row(int format, const uint8_t *w, long nb, long k, long c, int8_t *q, float *d, float *m) {
    if (format == EK_WF_Q5_0 || format == EK_WF_Q5_1 || format == EK_WF_Q5_0X8 || format == EK_WF_Q5_1X8) {
        q5_row(format, w, nb, k, c, q, d, m);
        return;
    }
    if (format == EK_WF_Q4_K || format == EK_WF_Q5_K || format == EK_WF_Q6_K) {   /* Q6_K: d gets 2·nb scales, no minima */
        kq_row(format, w, nb, k, c, q, d, m);
        return;
    }
    const int q41 = format == EK_WF_Q4_1 || format == EK_WF_Q4_1X8;
    const int four = q41 || format == EK_WF_Q4_0 || format == EK_WF_Q4_0X8;
    const int x8 = format == EK_WF_Q8_0X8 || format == EK_WF_Q4_0X8 || format == EK_WF_Q4_1X8;
    const long B = q41 ? 20 : four ? 18 : 34, H = q41 ? 4 : 2, P = B - H;   /* block, header and payload bytes */
    const int offset = four && !q41 ? 8 : 0;
    const uint8_t *row = w + c * nb * B;
    for (long g0 = 0; g0 < nb; g0 += 8) {
        long g = nb - g0 < 8 ? nb - g0 : 8;
        const uint8_t *grp = row + g0 * B;
        /* x8: the group's g scales (Q4_1: then its g minima), then its g payloads; ggml: per block side by side */
        uint16_t hs[8], hm[8];
        for (long j = 0; j < g; j++) {
            const uint8_t *hp = x8 ? grp + 2 * j : grp + B * j, *mp = x8 ? grp + 2 * g + 2 * j : grp + B * j + 2;
            hs[j] = (uint16_t)(hp[0] | (hp[1] << 8));
            hm[j] = (uint16_t)(mp[0] | (mp[1] << 8));
        }
        ek_f16_to_f32(hs, d + g0, g);
        if (q41 && m) ek_f16_to_f32(hm, m + g0, g);
        for (long j = 0; j < g; j++) {
            const uint8_t *qp = x8 ? grp + H * g + P * j : grp + B * j + H;
            int8_t *out = q + (g0 + j) * 32;
            if (four) {
                for (int i = 0; i < 16; i++) {
                    out[i] = (int8_t)((qp[i] & 0x0F) - offset);
                    out[i + 16] = (int8_t)((qp[i] >> 4) - offset);
                }
            } else {
                memcpy(out, qp, 32);
            }
        }
    }
    for (long i = k; i < nb * 32; i++) q[i] = 0;
}

/* Row c of Q5_0 / Q5_1 blocks (ggml, or the Q5 x8 layout through ek_x8_block) as int8 values q | h<<4 (Q5_0 minus 16:
 * −16…15; Q5_1 0…31), scales into d, Q5_1's minima into m (when not NULL). */
static void q5_row(int format, const uint8_t *w, long nb, long k, long c, int8_t *q, float *d, float *m) {
    const int one = format == EK_WF_Q5_1 || format == EK_WF_Q5_1X8, x8 = format == EK_WF_Q5_0X8 || format == EK_WF_Q5_1X8;
    const long B = 22 + 2 * one;
    const uint8_t *row = w + c * nb * B;
    uint8_t blk[24];
    for (long b = 0; b < nb; b++) {
        const uint8_t *p = row + b * B;
        if (x8) { ek_x8_block(format, row, nb, b, blk); p = blk; }
        uint16_t h[2] = { (uint16_t)(p[0] | (p[1] << 8)), (uint16_t)(p[2] | (p[3] << 8)) };
        float f[2];
        ek_f16_to_f32(h, f, one ? 2 : 1);
        d[b] = f[0];
        if (one && m) m[b] = f[1];
        const uint8_t *hb = p + 2 + 2 * one, *qs = hb + 4;
        const uint32_t qh = (uint32_t)hb[0] | (uint32_t)hb[1] << 8 | (uint32_t)hb[2] << 16 | (uint32_t)hb[3] << 24;
        const int offset = one ? 0 : 16;
        int8_t *out = q + b * 32;
        for (int i = 0; i < 16; i++) {
            out[i] = (int8_t)(((qs[i] & 0x0F) | (int)((qh >> i) & 1) << 4) - offset);
            out[i + 16] = (int8_t)(((qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4) - offset);
        }
    }
    for (long i = k; i < nb * 32; i++) q[i] = 0;
}

/* Row c of Q4_K / Q5_K / Q6_K super-blocks (k % 256 == 0: nb / 8 of them), their values as kq_values reads them
 * (Q4_K 0…15, Q5_K 0…31, Q6_K −32…31, ggml's element order):
 *   Q4_K / Q5_K as 32-value blocks in the Q4_1 form: scale d·sc_j and minimum −dmin·m_j per sub-block j (both exact in
 *   fp32: an f16 times a 6-bit integer), so w = d·sc_j·v − dmin·m_j as ggml defines it;
 *   Q6_K as 16-value blocks: d [2·nb] the scale d·sc_j of each sub-block j of 16 (exact in fp32: an f16 times an
 *   int8), so w = d·sc_j·q; the only weight format whose blocks hold 16 values (wblock), m untouched. */
static void kq_row(int format, const uint8_t *w, long nb, long k, long c, int8_t *q, float *d, float *m) {
    const int six = format == EK_WF_Q6_K;
    const long SB = six ? 210 : format == EK_WF_Q5_K ? 176 : 144, nsb = nb / 8;
    const uint8_t *row = w + c * nsb * SB;
    for (long s = 0; s < nsb; s++) {
        const uint8_t *x = row + s * SB;
        kq_values(format, x, q + s * 256);
        if (six) {
            const int8_t *sc = (const int8_t *)(const void *)(x + 192);
            uint16_t h = (uint16_t)(x[208] | (x[209] << 8));
            float f;
            ek_f16_to_f32(&h, &f, 1);
            for (int j = 0; j < 16; j++) d[s * 16 + j] = f * (float)sc[j];
            continue;
        }
        uint16_t h[2] = { (uint16_t)(x[0] | (x[1] << 8)), (uint16_t)(x[2] | (x[3] << 8)) };
        float f[2];
        ek_f16_to_f32(h, f, 2);
        for (int j = 0; j < 8; j++) {
            int scale, mn;   /* the 6-bit scale and minimum of sub-block j (ggml's get_scale_min_k4) */
            kq_scale_min(j, x + 4, &scale, &mn);
            d[s * 8 + j] = f[0] * (float)scale;
            if (m) m[s * 8 + j] = -(f[1] * (float)mn);
        }
    }
    for (long i = k; i < nb * 32; i++) q[i] = 0;
}

/* Values per weight block: 16 for Q6_K (a scale per 16), 32 for the others. Activations stay in blocks of 32 (their
 * scale d_x[b / 2] for Q6_K's block b). */
static int wblock(int format) { return format == EK_WF_Q6_K ? 16 : 32; }

/* The formats with a minimum per block of 32 (ggml's q8_1 activations, + s_x·m_w per block): Q4_1, Q5_1, and the
 * Q4_K / Q5_K sub-blocks (kq_row). */
static int is_q41(int format) {
    return format == EK_WF_Q4_1 || format == EK_WF_Q4_1X8 || format == EK_WF_Q5_1 || format == EK_WF_Q5_1X8 ||
           format == EK_WF_Q4_K || format == EK_WF_Q5_K;
}

/* acc + bias, then the epilogue (GELU applied to whole rows after): the block and bf16 GEMMs' fp32 results. */
static inline float fp32_epilogue(float acc, const float *bias, long c, float old, int mode) {
    float v = bias ? acc + bias[c] : acc;
    if (mode == EK_EPI_RELU) return v > 0.0f ? v : 0.0f;
    return mode == EK_EPI_ACCUMULATE ? old + v : v;
}

static int q8_format_ok(int format) {
    return format == EK_WF_Q8_0 || format == EK_WF_Q8_0X8 || format == EK_WF_Q4_0 || format == EK_WF_Q4_0X8 ||
           format == EK_WF_Q4_1 || format == EK_WF_Q4_1X8 || format == EK_WF_Q5_0 || format == EK_WF_Q5_0X8 ||
           format == EK_WF_Q5_1 || format == EK_WF_Q5_1X8 || format == EK_WF_Q4_K || format == EK_WF_Q5_K ||
           format == EK_WF_Q6_K;
}
/* K-quant rows hold whole super-blocks of 256 */
static int q8_shape_ok(int format, long k) {
    return !(format == EK_WF_Q4_K || format == EK_WF_Q5_K || format == EK_WF_Q6_K) || k % 256 == 0;
}

/* Σ_b fma((float) Σ_{k∈b} q_x q_w, d_x[b·bs/32]·d_w[b]) over the nbw weight blocks of bs values (wblock) in order
 * b = 0, 1, …, and for Q4_1 (mw not NULL, bs = 32) after each block fma(s_x[b], m_w[b]) (s_x = d_x·Σ q_x, ggml's
 * q8_1 sum): one output of the plain path and the twin. */
static float q8_dot(const int8_t *xq, const float *xd, const float *xs, const int8_t *q, const float *dw, const float *mw,
                    long nbw, int bs) {
    float acc = 0.0f;
    for (long b = 0; b < nbw; b++) {
        int32_t s = 0;
        for (int i = 0; i < bs; i++) s += (int32_t)xq[b * bs + i] * q[b * bs + i];
        acc = fmaf((float)s, xd[b * bs / 32] * dw[b], acc);
        if (mw) acc = fmaf(xs[b], mw[b], acc);
    }
    return acc;
}

int ek_gemm_q8_0_ref(int format, const void *w, const float *x, const float *bias, float *y, long m, long n, long k,
                     int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU || !q8_format_ok(format) || !q8_shape_ok(format, k)) return -1;
    long nb = (k + 31) / 32, kp = nb * 32;
    int8_t *xq = malloc((size_t)(m * kp + 1)), *q = malloc((size_t)kp);
    float *xd = malloc(sizeof(float) * (size_t)(m * nb + 1)), *xc = malloc(sizeof(float) * (size_t)(m * nb + 1));
    const int bs = wblock(format);
    const long nbw = kp / bs;   /* weight blocks per row (Q6_K: 2·nb; then no minima) */
    float *dw = malloc(sizeof(float) * (size_t)(nbw + nb)), *mw = is_q41(format) ? dw + nbw : NULL;
    if (!xq || !q || !xd || !xc || !dw) { free(xq); free(q); free(xd); free(xc); free(dw); return -2; }
    /* the plain quantizer (same bytes as the SIMD one); Q4_1: ggml's q8_1, whose sums land in xc */
    ek_quantize_activations_ref(is_q41(format) ? EK_WF_Q4_1 : EK_WF_Q8_0, x, m, k, xq, xd, xc);
    for (long c = 0; c < n; c++) {
        q8_row(format, w, nb, k, c, q, dw, mw);
        for (long r = 0; r < m; r++)
            y[r * n + c] = fp32_epilogue(q8_dot(xq + r * kp, xd + r * nb, xc + r * nb, q, dw, mw, nbw, bs), bias, c,
                                         y[r * n + c], mode);
    }
    if (mode == EK_EPI_GELU) ek_gelu_tanh_f32_ref(y, m * n);
    free(xq); free(q); free(xd); free(xc); free(dw);
    return 0;
}

int ek_gemm_q8_0_multi_ref(int format, long count, const void *const *w, const float *const *bias, float *const *y,
                           const long *n, const float *x, long m, long k, int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU || count < 1 || !q8_format_ok(format)) return -1;
    for (long j = 0; j < count; j++) {
        int rc = ek_gemm_q8_0_ref(format, w[j], x, bias ? bias[j] : NULL, y[j], m, n[j], k, mode);
        if (rc) return rc;
    }
    return 0;
}

/* One thread's scratch for block panels: a panel's rows [EG_NR][kp], then one row's scales and minima (grown once). */
static _Thread_local scratch g_q8rows;

static int8_t *q8rows_buffer(long len) { return scratch_get(&g_q8rows, len); }

/* Plain path: columns [c0, c0 + nc) with the twin's arithmetic (and its results). */
static int panel_plain_q8(const gemm_ctx *g, const gemm_mat *a, long c0, long nc) {
    const int bs = wblock(g->format);
    long nb = g->kp / 32, nbw = g->kp / bs;
    int8_t *q = q8rows_buffer(g->kp + 4 * (nbw + nb));
    if (!q) return -2;
    float *dw = (float *)(void *)(q + g->kp), *mw = is_q41(g->format) ? dw + nbw : NULL;   /* kp % 32 == 0: aligned */
    for (long c = c0; c < c0 + nc; c++) {
        q8_row(g->format, (const uint8_t *)a->w, nb, g->k, c, q, dw, mw);
        for (long r = 0; r < g->m; r++) {
            float *yp = a->y + r * a->n + c;
            *yp = fp32_epilogue(q8_dot(g->xq + r * g->kp, g->xd + r * nb, g->xs + r * nb, q, dw, mw, nbw, bs), a->bias, c,
                                *yp, g->mode);
        }
    }
    if (g->mode == EK_EPI_GELU)
        for (long r = 0; r < g->m; r++) ek_gelu_tanh_f32(a->y + r * a->n + c0, nc);
    return 0;
}

#if defined(__aarch64__)
/* NEON hook: columns [c0, c0 + nc) in 4×4 tiles, each block of 32 an exact int32 tile by SDOT or SMULL+SADALP
 * (ek_neon_tile_s8 on the unpacked rows), then the twin's fp32 FMA per block and its epilogue: the same floats. */
static int columns_q8_neon(const gemm_ctx *g, const gemm_mat *a, long c0, long nc) {
    const int bs = wblock(g->format);
    long nb = g->kp / 32, nbw = g->kp / bs;
    int8_t *rows = q8rows_buffer(4 * g->kp + 4 * 4 * (nbw + nb));
    if (!rows) return -2;
    float *dw = (float *)(void *)(rows + 4 * g->kp), *mw = dw + 4 * nbw;   /* [4][nbw] scales, [4][nb] minima */
    const int q41 = is_q41(g->format);
    int32_t t[16];
    for (long cc = c0; cc < c0 + nc; cc += 4) {
        int tn = (int)(c0 + nc - cc < 4 ? c0 + nc - cc : 4);
        for (int c = 0; c < tn; c++)
            q8_row(g->format, (const uint8_t *)a->w, nb, g->k, cc + c, rows + c * g->kp, dw + c * nbw, mw + c * nb);
        for (long r0 = 0; r0 < g->m; r0 += 4) {
            int tm = (int)(g->m - r0 < 4 ? g->m - r0 : 4);
            float acc[16] = { 0 };
            for (long b = 0; b < nbw; b++) {
                ek_neon_tile_s8(g->xq + r0 * g->kp + b * bs, g->kp, rows + b * bs, g->kp, bs, tm, tn, t, g->dotprod);
                for (int r = 0; r < tm; r++)
                    for (int c = 0; c < tn; c++) {
                        acc[r * 4 + c] = fmaf((float)t[r * 4 + c], g->xd[(r0 + r) * nb + b * bs / 32] * dw[c * nbw + b],
                                              acc[r * 4 + c]);
                        if (q41) acc[r * 4 + c] = fmaf(g->xs[(r0 + r) * nb + b], mw[c * nb + b], acc[r * 4 + c]);
                    }
            }
            for (int r = 0; r < tm; r++)
                for (int c = 0; c < tn; c++) {
                    float *yp = a->y + (r0 + r) * a->n + cc + c;
                    *yp = fp32_epilogue(acc[r * 4 + c], a->bias, cc + c, *yp, g->mode);
                }
        }
    }
    if (g->mode == EK_EPI_GELU)
        for (long r = 0; r < g->m; r++) ek_gelu_tanh_f32(a->y + r * a->n + c0, nc);
    return 0;
}
#endif

#ifdef EG_X86
/* fp32 tile [MR][EG_NV] vectors += Σ over `blocks` blocks of 32 of MR activation rows (int8 quants a, stride lda;
 * scales xd, stride ldd) against a packed panel (quads as the int8 path's) with its block scales ds [blocks][EG_NR]:
 * per block the exact int32 tile, widened and added with one FMA by d_x[r]·d_w[column]; Q4_1 (ms not NULL) then adds
 * s_x[r]·m_w[column] with a second FMA (its minima; s_x = d_x·Σ q_x, ggml's q8_1 sum, stride ldd as xd).
 * The int32 tile, two ways (OFFSET):
 *   0  (AVX2) llama.cpp's sign trick, DOT(|q_w|, sign(q_x, q_w)): vpmaddubsw then vpmaddwd by ones, exact for every
 *      byte (|q_w| ≤ 128 and |q_x| ≤ 127 keep a pair ≤ 32 512); four instructions per step;
 *   1  (VNNI) the activations offset by 128 (a holds u = q_x + 128, unsigned) and one vpdpbusd(u, q_w) per step,
 *      which adds four products into int32 without an int16 stage, so nothing saturates; then per block
 *      Σ u·q_w − cs, cs [blocks][EG_NR] = 128·Σ q_w of the block's column: the same integers. */
#define EG_KERNEL_Q8(MR, SUF, ATTR, DOT, OFFSET, BQ, PRE) \
ATTR static void kernel_##PRE##_##SUF##_##MR(const int8_t *a, long lda, const float *xd, const float *xs, long ldd, \
                                        const int8_t *b, const float *ds, const float *ms, const int32_t *cs, \
                                        long blocks, float *acc) { \
    const __m256i ones = _mm256_set1_epi16(1); (void)ones; (void)cs; \
    for (long blk = 0; blk < blocks; blk++) { \
        __m256i c[MR][EG_NV]; \
        EG_UNROLL for (int r = 0; r < MR; r++) EG_UNROLL for (int v = 0; v < EG_NV; v++) c[r][v] = _mm256_setzero_si256(); \
        EG_NO_UNROLL for (int p = 0; p < BQ; p++) { \
            __m256i bv[EG_NV], bw[EG_NV]; \
            EG_UNROLL for (int v = 0; v < EG_NV; v++) { \
                bv[v] = _mm256_load_si256((const __m256i *)(b + (blk * BQ + p) * 4 * EG_NR + 32 * v)); \
                bw[v] = OFFSET ? bv[v] : _mm256_sign_epi8(bv[v], bv[v]);   /* |q_w| as unsigned bytes (−128 → 128) */ \
            } \
            EG_UNROLL for (int r = 0; r < MR; r++) { \
                __m256i av = _mm256_set1_epi32(*(const int32_t *)(a + r * lda + 4 * (blk * BQ + p))); \
                EG_UNROLL for (int v = 0; v < EG_NV; v++) \
                    c[r][v] = OFFSET ? DOT(c[r][v], av, bv[v]) : DOT(c[r][v], bw[v], _mm256_sign_epi8(av, bv[v])); \
            } \
        } \
        if (OFFSET) \
            EG_UNROLL for (int v = 0; v < EG_NV; v++) { \
                __m256i corr = _mm256_loadu_si256((const __m256i *)(cs + blk * EG_NR + 8 * v)); \
                EG_UNROLL for (int r = 0; r < MR; r++) c[r][v] = _mm256_sub_epi32(c[r][v], corr); \
            } \
        EG_UNROLL for (int v = 0; v < EG_NV; v++) { \
            __m256 sv = _mm256_loadu_ps(ds + blk * EG_NR + 8 * v); \
            EG_UNROLL for (int r = 0; r < MR; r++) { \
                float *ap = acc + (r * EG_NV + v) * 8; \
                __m256 scale = _mm256_mul_ps(_mm256_set1_ps(xd[r * ldd + blk * BQ / 8]), sv); \
                __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[r][v]), scale, _mm256_loadu_ps(ap)); \
                if (ms) t = _mm256_fmadd_ps(_mm256_set1_ps(xs[r * ldd + blk]), _mm256_loadu_ps(ms + blk * EG_NR + 8 * v), t); \
                _mm256_storeu_ps(ap, t); \
            } \
        } \
    } \
}
/* BQ quads per weight block: 8 (blocks of 32, kernel_q8_*) or 4 (Q6_K's blocks of 16, kernel_q6_*, whose activation
 * scale is the one of their block of 32: xd[blk · BQ / 8]) */
#define EG_KERNELS_Q8(SUF, ATTR, DOT, OFFSET, BQ, PRE) \
    EG_KERNEL_Q8(1, SUF, ATTR, DOT, OFFSET, BQ, PRE) EG_KERNEL_Q8(2, SUF, ATTR, DOT, OFFSET, BQ, PRE) \
    EG_KERNEL_Q8(3, SUF, ATTR, DOT, OFFSET, BQ, PRE) EG_KERNEL_Q8(4, SUF, ATTR, DOT, OFFSET, BQ, PRE)
EG_KERNELS_Q8(avx2, EG_AVX2, EG_DOT_AVX2, 0, 8, q8)
EG_KERNELS_Q8(avxvnni, EG_AVXVNNI, EG_DOT_AVXVNNI, 1, 8, q8)
EG_KERNELS_Q8(avx512vnni, EG_AVX512VNNI, EG_DOT_AVX512VNNI, 1, 8, q8)
EG_KERNELS_Q8(avx2, EG_AVX2, EG_DOT_AVX2, 0, 4, q6)
EG_KERNELS_Q8(avxvnni, EG_AVXVNNI, EG_DOT_AVXVNNI, 1, 4, q6)
EG_KERNELS_Q8(avx512vnni, EG_AVX512VNNI, EG_DOT_AVX512VNNI, 1, 4, q6)
typedef void (*eg_kernel_q8_fn)(const int8_t *, long, const float *, const float *, long, const int8_t *, const float *,
                                const float *, const int32_t *, long, float *);
/* kernel_q8_avx512vnni on zmm (as kernel_zmm_*: a row's 16 columns in one vector, MR ≤ EG_ZMR rows over adjacent
 * tiles): the block's int32 sums and the row's fp32 sums both stay in registers (2·MR vectors) for all `blocks`;
 * per block and lane the same operations as the ymm kernel, so the same floats. Since session 13 it runs a lone last
 * panel only (and every panel under -DEG_ZMM2=0); pairs of panels run kernel_q8_zmm2_* below. */
#define EG_KERNEL_Q8_ZMM(MR, BQ, PRE) \
EG_AVX512VNNI static void kernel_##PRE##_zmm_##MR(const int8_t *a, long lda, const float *xd, const float *xs, long ldd, \
                                            const int8_t *b, const float *ds, const float *ms, const int32_t *cs, \
                                            long blocks, float *acc) { \
    __m512 f[MR]; \
    EG_UNROLL for (int r = 0; r < MR; r++) f[r] = _mm512_loadu_ps(acc + 16 * r); \
    for (long blk = 0; blk < blocks; blk++) { \
        /* the sums start from −128·Σ q_w (the offset's correction), so no subtraction per row */ \
        const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)(cs + blk * EG_NR))); \
        __m512i c[MR]; \
        EG_UNROLL for (int r = 0; r < MR; r++) c[r] = start; \
        EG_UNROLL for (int p = 0; p < BQ; p++) { \
            const __m512i bv = _mm512_loadu_si512((const void *)(b + (blk * BQ + p) * 4 * EG_NR)); \
            EG_UNROLL for (int r = 0; r < MR; r++) \
                c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(*(const int32_t *)(a + r * lda + 4 * (blk * BQ + p))), bv); \
        } \
        const __m512 sv = _mm512_loadu_ps(ds + blk * EG_NR); \
        EG_UNROLL for (int r = 0; r < MR; r++) { \
            __m512 scale = _mm512_mul_ps(_mm512_set1_ps(xd[r * ldd + blk * BQ / 8]), sv); \
            f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[r]), scale, f[r]); \
            if (ms) f[r] = _mm512_fmadd_ps(_mm512_set1_ps(xs[r * ldd + blk]), _mm512_loadu_ps(ms + blk * EG_NR), f[r]); \
        } \
    } \
    EG_UNROLL for (int r = 0; r < MR; r++) _mm512_storeu_ps(acc + 16 * r, f[r]); \
}
/* Two panels at once (b0 → acc0, b1 → acc1: MR rows × 32 columns), as kernel_zmm2_* for the int8 rows: per quad two
 * weight loads and MR broadcasts feed 2·MR vpdpbusd, where one panel per call spends a broadcast on each. The fp32
 * sums stay in the tile buffer (a load, an FMA — two for Q4_1 — and a store per row, panel and block of 32 k), so
 * only the 2·MR int32 sums live in registers. Q41 (a constant) adds Q4_1's minima. Per block and lane the same
 * operations as the ymm kernel, so the same floats. Session 13, 512 × 2560 × 960 on 2 threads: Q8_0 time over the
 * int8 rows' 2.0–2.2× → 1.28–1.33× (bench/README.md "Session 13"). The 8 rows (t += 2 tiles) assume EG_MR == 4. */
#define EG_KERNEL_Q8_ZMM2(MR, Q41, BQ, TAG) \
EG_AVX512VNNI static void kernel_q8_zmm2_##TAG##_##MR(const int8_t *a, long lda, const float *xd, const float *xs, \
        long ldd, const int8_t *b0, const int8_t *b1, const float *ds0, const float *ds1, const float *ms0, \
        const float *ms1, const int32_t *cs0, const int32_t *cs1, long blocks, float *acc0, float *acc1) { \
    (void)xs; (void)ms0; (void)ms1; \
    for (long blk = 0; blk < blocks; blk++) { \
        const __m512i start0 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)(cs0 + blk * EG_NR))); \
        const __m512i start1 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)(cs1 + blk * EG_NR))); \
        __m512i c[MR], e[MR]; \
        EG_UNROLL for (int r = 0; r < MR; r++) { c[r] = start0; e[r] = start1; } \
        EG_UNROLL for (int p = 0; p < BQ; p++) { \
            const __m512i bv = _mm512_loadu_si512((const void *)(b0 + (blk * BQ + p) * 4 * EG_NR)); \
            const __m512i bw = _mm512_loadu_si512((const void *)(b1 + (blk * BQ + p) * 4 * EG_NR)); \
            EG_UNROLL for (int r = 0; r < MR; r++) { \
                const __m512i av = _mm512_set1_epi32(*(const int32_t *)(a + r * lda + 4 * (blk * BQ + p))); \
                c[r] = _mm512_dpbusd_epi32(c[r], av, bv); \
                e[r] = _mm512_dpbusd_epi32(e[r], av, bw); \
            } \
        } \
        const __m512 sv = _mm512_loadu_ps(ds0 + blk * EG_NR), sw = _mm512_loadu_ps(ds1 + blk * EG_NR); \
        EG_UNROLL for (int r = 0; r < MR; r++) { \
            const __m512 x = _mm512_set1_ps(xd[r * ldd + blk * BQ / 8]); \
            __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[r]), _mm512_mul_ps(x, sv), _mm512_loadu_ps(acc0 + 16 * r)); \
            __m512 h = _mm512_fmadd_ps(_mm512_cvtepi32_ps(e[r]), _mm512_mul_ps(x, sw), _mm512_loadu_ps(acc1 + 16 * r)); \
            if (Q41) { \
                const __m512 s = _mm512_set1_ps(xs[r * ldd + blk]); \
                f = _mm512_fmadd_ps(s, _mm512_loadu_ps(ms0 + blk * EG_NR), f); \
                h = _mm512_fmadd_ps(s, _mm512_loadu_ps(ms1 + blk * EG_NR), h); \
            } \
            _mm512_storeu_ps(acc0 + 16 * r, f); \
            _mm512_storeu_ps(acc1 + 16 * r, h); \
        } \
    } \
}
typedef void (*eg_kernel_q8_2_fn)(const int8_t *, long, const float *, const float *, long, const int8_t *, const int8_t *,
                                  const float *, const float *, const float *, const float *, const int32_t *,
                                  const int32_t *, long, float *, float *);
#if EG_HAVE_ZMM
#define EG_KERNELS_Q8_ZMM2(Q41, BQ, TAG) \
    EG_KERNEL_Q8_ZMM2(1, Q41, BQ, TAG) EG_KERNEL_Q8_ZMM2(2, Q41, BQ, TAG) EG_KERNEL_Q8_ZMM2(3, Q41, BQ, TAG) \
    EG_KERNEL_Q8_ZMM2(4, Q41, BQ, TAG) EG_KERNEL_Q8_ZMM2(5, Q41, BQ, TAG) EG_KERNEL_Q8_ZMM2(6, Q41, BQ, TAG) \
    EG_KERNEL_Q8_ZMM2(7, Q41, BQ, TAG) EG_KERNEL_Q8_ZMM2(8, Q41, BQ, TAG)
EG_KERNELS_Q8_ZMM2(0, 8, 0) EG_KERNELS_Q8_ZMM2(1, 8, 1) EG_KERNELS_Q8_ZMM2(0, 4, 6)
/* [kind: 0 blocks of 32, 1 with Q4_1's minima, 2 Q6_K's blocks of 16][rows − 1] */
static const eg_kernel_q8_2_fn eg_kernels_q8_zmm2[3][8] = {
    { kernel_q8_zmm2_0_1, kernel_q8_zmm2_0_2, kernel_q8_zmm2_0_3, kernel_q8_zmm2_0_4, kernel_q8_zmm2_0_5,
      kernel_q8_zmm2_0_6, kernel_q8_zmm2_0_7, kernel_q8_zmm2_0_8 },
    { kernel_q8_zmm2_1_1, kernel_q8_zmm2_1_2, kernel_q8_zmm2_1_3, kernel_q8_zmm2_1_4, kernel_q8_zmm2_1_5,
      kernel_q8_zmm2_1_6, kernel_q8_zmm2_1_7, kernel_q8_zmm2_1_8 },
    { kernel_q8_zmm2_6_1, kernel_q8_zmm2_6_2, kernel_q8_zmm2_6_3, kernel_q8_zmm2_6_4, kernel_q8_zmm2_6_5,
      kernel_q8_zmm2_6_6, kernel_q8_zmm2_6_7, kernel_q8_zmm2_6_8 } };
#define EG_KERNELS_Q8_ZMM(BQ, PRE) \
    EG_KERNEL_Q8_ZMM(1, BQ, PRE) EG_KERNEL_Q8_ZMM(2, BQ, PRE) EG_KERNEL_Q8_ZMM(3, BQ, PRE) EG_KERNEL_Q8_ZMM(4, BQ, PRE) \
    EG_KERNEL_Q8_ZMM(5, BQ, PRE) EG_KERNEL_Q8_ZMM(6, BQ, PRE) EG_KERNEL_Q8_ZMM(7, BQ, PRE) EG_KERNEL_Q8_ZMM(8, BQ, PRE) \
    EG_KERNEL_Q8_ZMM(9, BQ, PRE) EG_KERNEL_Q8_ZMM(10, BQ, PRE) EG_KERNEL_Q8_ZMM(11, BQ, PRE) EG_KERNEL_Q8_ZMM(12, BQ, PRE)
EG_KERNELS_Q8_ZMM(8, q8) EG_KERNELS_Q8_ZMM(4, q6)
/* [Q6_K][rows − 1] */
static const eg_kernel_q8_fn eg_kernels_q8_zmm[2][12] = {
    { kernel_q8_zmm_1, kernel_q8_zmm_2, kernel_q8_zmm_3, kernel_q8_zmm_4, kernel_q8_zmm_5, kernel_q8_zmm_6,
      kernel_q8_zmm_7, kernel_q8_zmm_8, kernel_q8_zmm_9, kernel_q8_zmm_10, kernel_q8_zmm_11, kernel_q8_zmm_12 },
    { kernel_q6_zmm_1, kernel_q6_zmm_2, kernel_q6_zmm_3, kernel_q6_zmm_4, kernel_q6_zmm_5, kernel_q6_zmm_6,
      kernel_q6_zmm_7, kernel_q6_zmm_8, kernel_q6_zmm_9, kernel_q6_zmm_10, kernel_q6_zmm_11, kernel_q6_zmm_12 } };
#endif
/* [Q6_K][path][rows − 1] */
static const eg_kernel_q8_fn eg_kernels_q8[2][4][4] = {
  { { NULL, NULL, NULL, NULL },
    { kernel_q8_avx2_1, kernel_q8_avx2_2, kernel_q8_avx2_3, kernel_q8_avx2_4 },
    { kernel_q8_avxvnni_1, kernel_q8_avxvnni_2, kernel_q8_avxvnni_3, kernel_q8_avxvnni_4 },
    { kernel_q8_avx512vnni_1, kernel_q8_avx512vnni_2, kernel_q8_avx512vnni_3, kernel_q8_avx512vnni_4 } },
  { { NULL, NULL, NULL, NULL },
    { kernel_q6_avx2_1, kernel_q6_avx2_2, kernel_q6_avx2_3, kernel_q6_avx2_4 },
    { kernel_q6_avxvnni_1, kernel_q6_avxvnni_2, kernel_q6_avxvnni_3, kernel_q6_avxvnni_4 },
    { kernel_q6_avx512vnni_1, kernel_q6_avx512vnni_2, kernel_q6_avx512vnni_3, kernel_q6_avx512vnni_4 } },
};

/* Writes rows r0..r0+mr of columns c0..c0+nc from the fp32 tile. */
EG_AVX2 static void store_tile_q8(const gemm_ctx *g, const gemm_mat *a, long r0, int mr, long c0, long nc, const float *acc) {
    for (int r = 0; r < mr; r++) {
        float *yr = a->y + (r0 + r) * a->n + c0;
        for (int h = 0; h < EG_NV; h++) {
            long cc = h * 8;
            if (cc >= nc) break;
            const float *ap = acc + (r * EG_NV + h) * 8;
            if (nc - cc >= 8) {
                __m256 v = _mm256_loadu_ps(ap);
                if (a->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(a->bias + c0 + cc));
                if (g->mode == EK_EPI_ACCUMULATE) v = _mm256_add_ps(_mm256_loadu_ps(yr + cc), v);
                else if (g->mode == EK_EPI_RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
                if (nt_ok(g, yr + cc)) _mm256_stream_ps(yr + cc, v); else _mm256_storeu_ps(yr + cc, v);
            } else {
                for (long j = 0; j < nc - cc; j++) yr[cc + j] = fp32_epilogue(ap[j], a->bias, c0 + cc + j, yr[cc + j], g->mode);
            }
        }
    }
}

/* 128 · Σ q_w of each weight block (bq quads: 8, or Q6_K's 4) and column of a packed panel ([kp/4][EG_NR][4]) into
 * cs [nbw][EG_NR] (the VNNI paths' correction for activations offset by 128): per quad row, vpmaddubsw(1, q) then
 * vpmaddwd by ones gives each column's sum of its 4 bytes in an int32 lane. */
EG_AVX2 static void block_sums_128(const int8_t *panel, long nbw, int bq, int32_t *cs) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (long b = 0; b < nbw; b++) {
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int p = 0; p < bq; p++) {
            const int8_t *qr = panel + (b * bq + p) * 4 * EG_NR;
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)qr)), ones16));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(qr + 32))), ones16));
        }
        _mm256_storeu_si256((__m256i *)(cs + b * EG_NR), _mm256_slli_epi32(s0, 7));
        _mm256_storeu_si256((__m256i *)(cs + b * EG_NR + 8), _mm256_slli_epi32(s1, 7));
    }
}

/* As columns_avx2 for blocks: each panel's rows are unpacked (int8 values, scales, Q4_1's minima) and packed into
 * quads as the int8 path's, with the block scales [nb][EG_NR] (and minima; on the VNNI paths the blocks' column sums
 * times 128) beside; fp32 tiles persist across the k blocks. */
EG_AVX2 static int columns_q8_avx2(const gemm_ctx *g, const gemm_mat *a, long c0, long nc) {
    const int q6 = g->format == EK_WF_Q6_K, bs = wblock(g->format);   /* Q6_K: blocks of 16 (kernel_q6_*) */
    const eg_kernel_q8_fn *kern = eg_kernels_q8[q6][g->simd];
    const int q41 = is_q41(g->format), offset = g->simd >= EG_P_AVXVNNI;   /* offset: the kernels read g->xu */
    long nb = g->kp / 32, nbw = g->kp / bs, panels = (nc + EG_NR - 1) / EG_NR, panel_len = g->kp * EG_NR;
    /* block scales [nbw][EG_NR], then Q4_1's minima [nbw][EG_NR], then (offset) 128·Σ q_w per block [nbw][EG_NR] */
    long scale_len = (1 + q41 + offset) * nbw * EG_NR * 4;
    int8_t *pb = pack_buffer(panels * (panel_len + scale_len + EG_NR * 4));
    int8_t *rows = q8rows_buffer(EG_NR * g->kp + 4 * (nbw + nb));
    if (!pb || !rows) return -2;
    float *scales = (float *)(void *)(pb + panels * panel_len);   /* [panels][scale_len / 4] */
    int32_t *sums = (int32_t *)(void *)(pb + panels * (panel_len + scale_len));   /* pack_panel's column sums (unused) */
    float *dw = (float *)(void *)(rows + EG_NR * g->kp), *mw = dw + nbw;
    for (long p = 0; p < panels; p++) {
        long pc = c0 + p * EG_NR, pn = c0 + nc - pc < EG_NR ? c0 + nc - pc : EG_NR;
        float *ps = scales + p * (scale_len / 4), *pm = ps + nbw * EG_NR;
        int32_t *pcs = (int32_t *)(void *)(ps + (1 + q41) * nbw * EG_NR);
        for (long j = 0; j < EG_NR; j++) {
            int8_t *qr = rows + j * g->kp;
            if (j < pn) {
                q8_row(g->format, (const uint8_t *)a->w, nb, g->k, pc + j, qr, dw, mw);
                for (long b = 0; b < nbw; b++) ps[b * EG_NR + j] = dw[b];
                if (q41) for (long b = 0; b < nbw; b++) pm[b * EG_NR + j] = mw[b];
            } else {
                memset(qr, 0, (size_t)g->kp);
                for (long b = 0; b < nbw; b++) ps[b * EG_NR + j] = 0.0f;
                if (q41) for (long b = 0; b < nbw; b++) pm[b * EG_NR + j] = 0.0f;
            }
        }
        pack_panel(rows, g->kp, 0, EG_NR, pb + p * panel_len, sums + p * EG_NR, 0);
        if (offset) block_sums_128(pb + p * panel_len, nbw, bs / 4, pcs);
    }
    const long tile_floats = EG_MR * EG_NV * 8, tiles_per_panel = (EG_MC + EG_MR - 1) / EG_MR;
    float *tiles = (float *)(void *)tile_buffer(panels * tiles_per_panel * EG_MR * EG_NV);
    if (!tiles) return -2;
    for (long m0 = 0; m0 < g->m; m0 += EG_MC) {
        long m1 = m0 + EG_MC < g->m ? m0 + EG_MC : g->m, ntiles = (m1 - m0 + EG_MR - 1) / EG_MR;
        memset(tiles, 0, sizeof(float) * (size_t)(panels * tiles_per_panel * tile_floats));
        for (long k0 = 0; k0 < g->kp; k0 += EG_KC) {
            long kc = g->kp - k0 < EG_KC ? g->kp - k0 : EG_KC;
            for (long p = 0; p < panels; p++) {
                const int8_t *bk = pb + p * panel_len + k0 * EG_NR;
                const float *ds = scales + p * (scale_len / 4) + (k0 / bs) * EG_NR;
                const float *ms = q41 ? ds + nbw * EG_NR : NULL;
                const int32_t *cs = offset ? (const int32_t *)(const void *)(ds + (1 + q41) * nbw * EG_NR) : NULL;
#if EG_HAVE_ZMM
                if (g->simd == EG_P_AVX512VNNI) {   /* EG_ZMR rows (EG_ZMR / EG_MR tiles) per call */
                    if (EG_ZMM2 && p + 1 < panels) {   /* this panel and the next, 8 rows per call */
                        const long next = scale_len / 4;   /* the next panel's scales, minima and sums */
                        for (long t = 0; t < ntiles; t += 2) {
                            long r0 = m0 + t * EG_MR;
                            int mr = (int)(m1 - r0 < 8 ? m1 - r0 : 8);
                            eg_kernels_q8_zmm2[q6 ? 2 : q41][mr - 1]((const int8_t *)g->xu + r0 * g->kp + k0, g->kp,
                                g->xd + r0 * nb + k0 / 32, g->xs + r0 * nb + k0 / 32, nb, bk, bk + panel_len, ds, ds + next,
                                ms, ms ? ms + next : NULL, cs, cs + next, kc / bs,
                                tiles + (p * tiles_per_panel + t) * tile_floats,
                                tiles + ((p + 1) * tiles_per_panel + t) * tile_floats);
                        }
                        p++;
                        continue;
                    }
                    for (long t = 0; t < ntiles; t += EG_ZMR / EG_MR) {
                        long r0 = m0 + t * EG_MR;
                        int mr = (int)(m1 - r0 < EG_ZMR ? m1 - r0 : EG_ZMR);
                        eg_kernels_q8_zmm[q6][mr - 1]((const int8_t *)g->xu + r0 * g->kp + k0, g->kp, g->xd + r0 * nb + k0 / 32,
                                                      g->xs + r0 * nb + k0 / 32, nb, bk, ds, ms, cs, kc / bs,
                                                  tiles + (p * tiles_per_panel + t) * tile_floats);
                    }
                    continue;
                }
#endif
                for (long t = 0; t < ntiles; t++) {
                    long r0 = m0 + t * EG_MR;
                    int mr = (int)(m1 - r0 < EG_MR ? m1 - r0 : EG_MR);
                    const int8_t *xa = (offset ? (const int8_t *)g->xu : g->xq) + r0 * g->kp + k0;
                    const float *xd = g->xd + r0 * nb + k0 / 32, *xs = g->xs + r0 * nb + k0 / 32;
                    float *acc = tiles + (p * tiles_per_panel + t) * tile_floats;
                    kern[mr - 1](xa, g->kp, xd, xs, nb, bk, ds, ms, cs, kc / bs, acc);
                }
            }
        }
        for (long t = 0; t < ntiles; t++) {   /* row runs, as columns_avx2 */
            long r0 = m0 + t * EG_MR;
            for (long p = 0; p < panels; p++) {
                long pc = c0 + p * EG_NR, pn = c0 + nc - pc < EG_NR ? c0 + nc - pc : EG_NR;
                store_tile_q8(g, a, r0, (int)(m1 - r0 < EG_MR ? m1 - r0 : EG_MR), pc, pn,
                              tiles + (p * tiles_per_panel + t) * tile_floats);
            }
        }
        if (g->mode == EK_EPI_GELU)
            for (long r = m0; r < m1; r++) ek_gelu_tanh_f32(a->y + r * a->n + c0, nc);
    }
    return 0;
}
#endif

/* The x86 tile path under the CPU's features and the ISA cap (ek_set_isa_limit): EG_PLAIN when none. */
static int gemm_isa(void) {
#ifdef EG_X86
    int f = ek_cpu_features(), lim = ek_get_isa_limit();
    if (ek_get_force_reference() || !(f & EK_CPU_AVX2_FMA) || !(f & EK_CPU_F16C) || lim < EK_ISA_AVX2) return EG_PLAIN;
    if (lim >= EK_ISA_AVX512 && (f & EK_CPU_AVX512F) && (f & EK_CPU_AVX512BWVL) && (f & EK_CPU_AVX512VNNI))
        return EG_P_AVX512VNNI;
    if (lim >= EK_ISA_AVXVNNI && (f & EK_CPU_AVXVNNI)) return EG_P_AVXVNNI;
    return EG_P_AVX2;
#else
    return EG_PLAIN;
#endif
}

const char *ek_gemm_int8_path(void) {
    if (ek_get_force_reference()) return "scalar";
    int f = ek_cpu_features();
#ifdef EG_X86
    static const char *const names[] = { "scalar", "avx2", "avxvnni", "avx512vnni" };
    (void)f;
    return names[gemm_isa()];
#elif defined(__aarch64__)   /* NEON hook: the GEMVs' ISA cap applies (AVX2 level = plain NEON, above = SDOT too) */
    if ((f & EK_CPU_NEON) && ek_get_isa_limit() >= EK_ISA_AVX2)
        return (f & EK_CPU_NEON_DOTPROD) && ek_get_isa_limit() >= EK_ISA_AVXVNNI ? "neon-dotprod" : "neon";
#endif
    (void)f;
    return "scalar";
}

static void gemm_task_body(void *ctx, long index, long count) {
    (void)count;
    gemm_ctx *g = ctx;
    const gemm_range *t = g->ranges + index;
    const gemm_mat *a = g->mats + t->mat;
    if (g->format != EK_WF_INT8) {
#ifdef EG_X86
        if (g->simd && columns_q8_avx2(g, a, t->c0, t->c1 - t->c0) == 0) return;
#endif
#if defined(__aarch64__)
        if (g->neon && columns_q8_neon(g, a, t->c0, t->c1 - t->c0) == 0) return;
#endif
        if (panel_plain_q8(g, a, t->c0, t->c1 - t->c0) != 0) __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED);
        return;
    }
#ifdef EG_X86
    if (g->simd && columns_avx2(g, a, t->c0, t->c1 - t->c0) == 0) return;
#endif
#if defined(__aarch64__)
    if (g->neon) { columns_neon(g, a, t->c0, t->c1 - t->c0); return; }
#endif
    panel_plain(g, a, t->c0, t->c1 - t->c0);
}

static void gemm_task(void *ctx, long index, long count) {
    gemm_task_body(ctx, index, count);
#ifdef EG_X86
    if (((const gemm_ctx *)ctx)->nt) _mm_sfence();   /* the non-temporal stores land before the task counts as done */
#endif
}

/* Non-temporal output stores (ek_set_gemm_stream_outputs): a prompt GEMM's outputs go to memory without the read
 * for ownership and the cache traffic of ordinary stores, which stall the tile loop that writes each row block; the
 * next operation then reads them from memory. Intel Xeon of session 13 (bench/README.md "Session 13",
 * bench/results/2026-11-30-gemm-nt-stores-ab-session13.txt), TTFT at 512 tokens, 4–8 alternated runs per set,
 * medians, with outputs of 4 MiB or more streamed (the default): Llama-362M int8 874 → 822 and 856 → 846 ms, q8_0 GGUF
 * 1,020 → 971, T5-347M int8 452 → 410, Mu-330M int8 464 → 441; with every output size streamed, Llama int8 7–13%
 * faster and T5 within noise (396 → 411 over 4 runs). Outputs under 4 MiB (short prompts) stay in the cache for the
 * next operation. The default covers Intel CPUs, timed on that one VM only; others keep ordinary stores. */
#define EG_NT_MIN_BYTES (4L << 20)
static int g_nt_mode = -1;   /* ek_set_gemm_stream_outputs: -1 default, 0 never, 1 always */
#ifdef EG_X86
static int g_nt_env = -2;    /* EK_GEMM_NT: -2 not read yet, -1 unset, 0 or 1 */
#endif

void ek_set_gemm_stream_outputs(int mode) { __atomic_store_n(&g_nt_mode, mode < 0 ? -1 : mode > 0 ? 1 : 0, __ATOMIC_RELAXED); }
int ek_get_gemm_stream_outputs(void) { return __atomic_load_n(&g_nt_mode, __ATOMIC_RELAXED); }

static int stream_outputs(int simd, int mode, long m, long ncols) {
#ifdef EG_X86
    int env = __atomic_load_n(&g_nt_env, __ATOMIC_RELAXED);
    if (env == -2) {
        const char *e = getenv("EK_GEMM_NT");
        env = e && (!strcmp(e, "0") || !strcmp(e, "1")) ? e[0] - '0' : -1;
        __atomic_store_n(&g_nt_env, env, __ATOMIC_RELAXED);
    }
    int set = ek_get_gemm_stream_outputs(), on = set >= 0 ? set : env;   /* the setter's 0 or 1, else the environment's */
    if (simd == EG_PLAIN || (mode != EK_EPI_STORE && mode != EK_EPI_RELU) || on == 0) return 0;
    return on == 1 || (ek_cpu_is_intel() && m * ncols * 4 >= EG_NT_MIN_BYTES);
#else
    (void)simd; (void)mode; (void)m; (void)ncols;
    return 0;
#endif
}

/* Activation buffers of the caller (grown once). */
static _Thread_local scratch g_u;    /* activations: int8 rows' u [m, kp], or the blocks' q8_0 quants */
static _Thread_local float *g_d;
static _Thread_local int32_t *g_z;
static _Thread_local long g_d_len;
static _Thread_local float *g_xd;     /* block scales d [m, nb], then Q4_1's activation sums s [m, nb] (unused otherwise) */
static _Thread_local long g_xd_len;
static _Thread_local scratch g_xu;    /* the block activations plus 128 (VNNI paths) */

typedef struct { int format; const float *x; long m, k, kp, nb; int8_t *q; float *d, *c; } q8act_ctx;

static void q8act_task(void *ctx, long index, long count) {
    const q8act_ctx *c = ctx;
    long r0 = c->m * index / count, r1 = c->m * (index + 1) / count;
    if (r1 > r0) ek_quantize_activations(c->format, c->x + r0 * c->k, r1 - r0, c->k, c->q + r0 * c->kp, c->d + r0 * c->nb,
                                         c->c + r0 * c->nb);
}

/* x [m, k] → ggml's q8_0 activations (format EK_WF_Q8_0; EK_WF_Q4_1: q8_1, block sums in c): q [m, kp], d [m, nb]
 * (the GEMVs' quantizer), rows split over the threads. */
static void quantize_rows_q8(int format, const float *x, long m, long k, long kp, int8_t *q, float *d, float *c) {
    q8act_ctx a = { format, x, m, k, kp, kp / 32, q, d, c };
    run_row_tasks(m, k, q8act_task, &a);
}

static int gemm_run(int format, long count, const void *const *w, const float *const *wscale, const float *const *bias,
                    float *const *y, const long *n, const float *x, long m, long k, int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU || count < 1) return -1;
    long kp = (k + 31) / 32 * 32, npanels = 0, ncols = 0;   /* over all the matrices (ncols: stream_outputs) */
    for (long j = 0; j < count; j++) {
        if (n[j] <= 0) continue;
        npanels += (n[j] + EG_NR - 1) / EG_NR;
        ncols += n[j];
    }
    if (m <= 0 || npanels == 0) return 0;
    uint8_t *u = scratch_get(&g_u, m * kp);
    if (m > g_d_len) {
        free(g_d); free(g_z);
        g_d = malloc(sizeof(float) * (size_t)m);
        g_z = malloc(sizeof(int32_t) * (size_t)m);
        g_d_len = g_d && g_z ? m : 0;
    }
    if (!u || !g_d_len) return -2;
    if (format != EK_WF_INT8 && 2 * m * (kp / 32) > g_xd_len) {
        free(g_xd);
        g_xd = malloc(sizeof(float) * (size_t)(2 * m * (kp / 32)));
        g_xd_len = g_xd ? 2 * m * (kp / 32) : 0;
        if (!g_xd) return -2;
    }
    /* Tasks: each matrix's panels in runs of panels_per_task (about 4 tasks per thread over all the panels, at most
     * EG_MAX_PANELS each); a run never spans two matrices. */
    long per = panels_per_task(npanels), ntasks = 0;
    for (long j = 0; j < count; j++) ntasks += n[j] > 0 ? ((n[j] + EG_NR - 1) / EG_NR + per - 1) / per : 0;
    gemm_mat *mats = malloc(sizeof(gemm_mat) * (size_t)count);
    gemm_range *ranges = malloc(sizeof(gemm_range) * (size_t)ntasks);
    if (!mats || !ranges) { free(mats); free(ranges); return -2; }
    long t = 0;
    for (long j = 0; j < count; j++) {
        mats[j] = (gemm_mat){ (const int8_t *)w[j], wscale ? wscale[j] : NULL, bias ? bias[j] : NULL, y[j], n[j] };
        for (long c0 = 0; c0 < n[j]; c0 += per * EG_NR)
            ranges[t++] = (gemm_range){ j, c0, c0 + per * EG_NR < n[j] ? c0 + per * EG_NR : n[j] };
    }
    gemm_ctx g = { .mats = mats, .ranges = ranges, .u = u, .d = g_d, .z = g_z, .m = m, .k = k, .kp = kp,
                   .mode = mode, .format = format };
    g.simd = gemm_isa();   /* x86: the tile path (EG_PLAIN elsewhere) */
#if defined(__aarch64__)   /* NEON hook: the SDOT / SMULL tiles take u as signed bytes (u ≤ 127) */
    const char *path = ek_gemm_int8_path();
    g.neon = path[0] == 'n';
    g.dotprod = path[4] == '-';   /* "neon-dotprod" */
#endif
    if (format == EK_WF_INT8) quantize_rows_u7(x, m, k, kp, u, g_d, g_z, g.simd);
    else {
        float *xs = g_xd + m * (kp / 32);   /* Q4_1's activation sums, after the scales */
        quantize_rows_q8(is_q41(format) ? EK_WF_Q4_1 : EK_WF_Q8_0, x, m, k, kp, (int8_t *)u, g_xd, xs);
        g.xq = (const int8_t *)u;
        g.xd = g_xd;
        g.xs = xs;
        if (g.simd >= EG_P_AVXVNNI) {   /* vpdpbusd multiplies unsigned bytes: u = q + 128 (the kernels take 128·Σq_w off) */
            uint8_t *xu = scratch_get(&g_xu, m * kp);
            if (!xu) g.simd = EG_P_AVX2;   /* no memory for the copy: the sign-trick tiles instead */
            else {
                for (long i = 0; i < m * kp; i++) xu[i] = (uint8_t)(u[i] ^ 0x80);
                g.xu = xu;
            }
        }
    }
    g.nt = stream_outputs(g.simd, mode, m, ncols);
    ek_parallel_for(ntasks, gemm_task, &g);
    free(mats);
    free(ranges);
    return g.failed ? -2 : 0;
}

int ek_gemm_int8_multi(long count, const int8_t *const *w, const float *const *wscale, const float *const *bias,
                       float *const *y, const long *n, const float *x, long m, long k, int mode) {
    if (!wscale) return -1;
    return gemm_run(EK_WF_INT8, count, (const void *const *)w, wscale, bias, y, n, x, m, k, mode);
}

int ek_gemm_q8_0_multi(int format, long count, const void *const *w, const float *const *bias, float *const *y,
                       const long *n, const float *x, long m, long k, int mode) {
    if (!q8_format_ok(format) || !q8_shape_ok(format, k)) return -1;
    return gemm_run(format, count, w, NULL, bias, y, n, x, m, k, mode);
}

int ek_gemm_q8_0(int format, const void *w, const float *x, const float *bias, float *y, long m, long n, long k, int mode) {
    return ek_gemm_q8_0_multi(format, 1, &w, &bias, &y, &n, x, m, k, mode);
}

int ek_gemm_int8(const int8_t *w, const float *wscale, const float *x, const float *bias, float *y,
                 long m, long n, long k, int mode) {
    return ek_gemm_int8_multi(1, &w, &wscale, &bias, &y, &n, x, m, k, mode);
}

int ek_gemm_int8_multi_ref(long count, const int8_t *const *w, const float *const *wscale, const float *const *bias,
                           float *const *y, const long *n, const float *x, long m, long k, int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU || count < 1) return -1;
    for (long j = 0; j < count; j++) {
        int rc = ek_gemm_int8_ref(w[j], wscale[j], x, bias ? bias[j] : NULL, y[j], m, n[j], k, mode);
        if (rc) return rc;
    }
    return 0;
}


/* ------------------------------------------------------------------------------------------------ */
/* bf16 rows with AVX512-BF16: vdpbf16ps on the same packed tiles                                      */
/*
 * y[m, n] = Σ_k bf16(x[m, k]) · w[n, k] (+ bias), the int8 GEMM's epilogues. x is rounded to bf16 (nearest even,
 * ek_f32_to_bf16), as the avx512bf16 GEMV does; a product of two bf16 values is exact in fp32 (the hardware also
 * flushes denormal inputs and outputs to zero, which the plain path and the twin do not), and the sums are fp32.
 * The weight rows (the bf16 decode copy, [n, k] uint16) are packed per panel of 16 columns into pairs interleaved by
 * column ([k/2][16][2]: one 32-bit lane per column, the int8 path's 8×8 transpose of 32-bit lanes when k % 16 == 0),
 * and zmm tiles of up to 8 rows × 32 columns (two panels; a lone last panel 8 × 16) add vdpbf16ps(broadcast pair
 * of x, a vector of 16 columns' weight pairs) per pair of k, kept across k blocks of 256 in the thread's tile buffer.
 * Without AVX512-BF16 the same function runs plain C (far slower than widening the weights for BLAS sgemm, which is
 * what callers do there: ek_gemm_bf16_path()). Whether it beats the widened sgemm depends on the CPU: on session 21's
 * AMD Zen 4 vdpbf16ps runs at twice the fp32 FMA rate and these tiles reach 398–406 GFLOP/s on 2 threads (512×4096×
 * 1024; OpenBLAS sgemm 186–192; a ymm 4 × 16 tile, removed, 280–283), so callers use it there by default
 * (Backend.bf16PromptGEMM); on session 11's Intel Xeon it runs at half the FMA rate (peaks 156–171 against 319–346
 * GFLOP/s on zmm) and widening for sgemm is faster (bench/README.md, sessions 11 and 21). */

#ifdef EG_X86
#if defined(EK_EMULATED_FEATURES)
#define EG_BF16 EG_AVX2
#else
#define EG_BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))
#endif
#endif
#ifndef EB_KC
#define EB_KC 128    /* pairs of k per block: a panel's block is 16 × 128 × 4 B = 8 KiB (L1), a row block's 96 × 512 B
                        = 48 KiB (L2). -DEB_KC=n for A/B: on session 24's Zen 4, 128 / 256 / 512 came out within the
                        host's noise (bench/micro/gemm_cold.c at Mu-330M's four shapes, best of 3: 2.22 / 2.13 / 2.05
                        ms at 512×768×1024, 10.7 / 10.8 / 10.6 at 512×1024×4096) */
#endif

static int bf16_gemm_simd(void) {
#ifdef EG_X86
    int f = ek_cpu_features();
    return !ek_get_force_reference() && ek_get_isa_limit() >= EK_ISA_AVX512 && (f & EK_CPU_AVX2_FMA) &&
           (f & EK_CPU_F16C) && (f & EK_CPU_AVX512F) && (f & EK_CPU_AVX512BWVL) && (f & EK_CPU_AVX512BF16);
#else
    return 0;
#endif
}

const char *ek_gemm_bf16_path(void) { return bf16_gemm_simd() ? "avx512bf16" : "scalar"; }

static inline float bf16_value(uint16_t h) { uint32_t b = (uint32_t)h << 16; float f; memcpy(&f, &b, 4); return f; }


int ek_gemm_bf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k, int mode) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU) return -1;
    uint16_t *xb = malloc(sizeof(uint16_t) * (size_t)(k + 1));
    if (!xb) return -2;
    for (long r = 0; r < m; r++) {
        ek_f32_to_bf16(x + r * k, xb, k);
        for (long c = 0; c < n; c++) {
            double s = 0;
            for (long i = 0; i < k; i++) s += (double)bf16_value(xb[i]) * bf16_value(w[c * k + i]);
            y[r * n + c] = fp32_epilogue((float)s, bias, c, y[r * n + c], mode);
        }
    }
    if (mode == EK_EPI_GELU) ek_gelu_tanh_f32_ref(y, m * n);
    free(xb);
    return 0;
}

typedef struct {
    const uint16_t *w; const float *bias; float *y; const uint16_t *xb;   /* xb [m, kp] bf16, zero padded */
    long m, n, k, kp, per;                                                 /* kp: k rounded up to 16 */
    int mode, simd;
    uint16_t *yb; long ldyb;   /* ek_gemm_bf16_to_bf16: the result rounded to bf16 rows [m, ldyb] instead of y */
    int *out_of_memory;        /* set to 1 by a task that could not get its rows' scratch (yb only) */
} bf16_ctx;

static _Thread_local scratch g_yrows;   /* a task's fp32 result rows before they are rounded into yb */

/* The fp32 result row run y[r, c0 .. c0 + nc) (the epilogue applied; GELU here, on the same run ek_gemm_bf16 passes it)
 * rounded into yb as ek_f32_to_bf16 rounds; the task holding the last columns zeroes the row's padding past n. */
static void round_row_bf16(const bf16_ctx *g, float *row, long r, long c0, long nc) {
    if (g->mode == EK_EPI_GELU) ek_gelu_tanh_f32(row, nc);
    uint16_t *out = g->yb + r * g->ldyb;
    ek_f32_to_bf16(row, out + c0, nc);
    if (c0 + nc == g->n) for (long i = g->n; i < g->ldyb; i++) out[i] = 0;
}

/* Row r of xb times weight row c, fp32 sums in order of k (the plain path's product). */
static float dot_bf16_plain(const bf16_ctx *g, long r, long c) {
    float s = 0;
    for (long i = 0; i < g->k; i++) s += bf16_value(g->xb[r * g->kp + i]) * bf16_value(g->w[c * g->k + i]);
    return s;
}

/* Plain path: columns [c0, c0 + nc), fp32 sums in order. */
static void columns_bf16_plain(const bf16_ctx *g, long c0, long nc) {
    if (g->yb) {   /* row by row into a scratch run, then rounded */
        float *row = scratch_get(&g_yrows, nc * (long)sizeof(float));
        if (!row) { __atomic_store_n(g->out_of_memory, 1, __ATOMIC_RELAXED); return; }
        for (long r = 0; r < g->m; r++) {
            for (long c = c0; c < c0 + nc; c++) row[c - c0] = fp32_epilogue(dot_bf16_plain(g, r, c), g->bias, c, 0.0f, g->mode);
            round_row_bf16(g, row, r, c0, nc);
        }
        return;
    }
    for (long c = c0; c < c0 + nc; c++)
        for (long r = 0; r < g->m; r++) {
            float *yp = g->y + r * g->n + c;
            *yp = fp32_epilogue(dot_bf16_plain(g, r, c), g->bias, c, *yp, g->mode);
        }
    if (g->mode == EK_EPI_GELU)
        for (long r = 0; r < g->m; r++) ek_gelu_tanh_f32(g->y + r * g->n + c0, nc);
}

#ifdef EG_X86
typedef void (*eb_kernel_fn)(const uint8_t *, long, const int8_t *, long, __m256 *);

/* The int8 path's zmm kernels (EG_KERNEL_ZMM_OF / EG_KERNEL_ZMM2_OF) over bf16 pairs (4 bytes, as its quads; a and lda
 * in bytes): a packed pair row of a panel (16 columns × 2 bf16 = 64 B) is one vector, MR ≤ 8 activation rows over
 * adjacent 4-row tiles (a row's 16 fp32 sums are its two ymm tile vectors). Two panels per call: per pair two weight
 * loads and MR broadcasts feed 2·MR vdpbf16ps into 2·MR accumulators (16 at MR = 8: more than the instruction's
 * latency × throughput on Zen 4, 6 × 1). Each lane adds its pair's two products, then the pairs in order of k. */
#define EB_ZB_LOAD(p) _mm512_loadu_ps((const float *)(const void *)(p))
#define EB_ZB_STORE(p, v) _mm512_storeu_ps((float *)(void *)(p), (v))
#define EB_ZB_BCAST(q) _mm512_castsi512_ps(_mm512_set1_epi32(q))
#define EB_ZB_DOT(c, u, s) _mm512_dpbf16_ps((c), (__m512bh)(u), (__m512bh)(s))
#define EB_KERNEL_ZMM(MR) EG_KERNEL_ZMM_OF(MR, bf16_zmm, EG_BF16, __m512, __m256, EB_ZB)
#define EB_KERNEL_ZMM2(MR) EG_KERNEL_ZMM2_OF(MR, bf16_zmm, EG_BF16, __m512, __m256, EB_ZB)
EB_KERNEL_ZMM2(1) EB_KERNEL_ZMM2(2) EB_KERNEL_ZMM2(3) EB_KERNEL_ZMM2(4) EB_KERNEL_ZMM2(5) EB_KERNEL_ZMM2(6)
EB_KERNEL_ZMM2(7) EB_KERNEL_ZMM2(8)
EB_KERNEL_ZMM(1) EB_KERNEL_ZMM(2) EB_KERNEL_ZMM(3) EB_KERNEL_ZMM(4) EB_KERNEL_ZMM(5) EB_KERNEL_ZMM(6)
EB_KERNEL_ZMM(7) EB_KERNEL_ZMM(8)
typedef void (*eb_kernel2_fn)(const uint8_t *, long, const int8_t *, const int8_t *, long, __m256 *, __m256 *);
static const eb_kernel2_fn eb_kernels_zmm2[8] = { kernel_bf16_zmm2_1, kernel_bf16_zmm2_2, kernel_bf16_zmm2_3,
    kernel_bf16_zmm2_4, kernel_bf16_zmm2_5, kernel_bf16_zmm2_6, kernel_bf16_zmm2_7, kernel_bf16_zmm2_8 };
static const eb_kernel_fn eb_kernels_zmm[8] = { kernel_bf16_zmm_1, kernel_bf16_zmm_2, kernel_bf16_zmm_3,
    kernel_bf16_zmm_4, kernel_bf16_zmm_5, kernel_bf16_zmm_6, kernel_bf16_zmm_7, kernel_bf16_zmm_8 };

/* mr rows of columns c0..c0+nc from the fp32 tile into y0 (row 0's column c0; rows ld apart): bias, then the
 * epilogue (GELU later, per row). */
EG_BF16 static void store_tile_bf16(const bf16_ctx *g, float *y0, long ld, int mr, long c0, long nc, const __m256 *acc) {
    for (int r = 0; r < mr; r++) {
        float *yr = y0 + r * ld;
        for (int h = 0; h < EG_NV; h++) {
            long cc = h * 8;
            if (cc >= nc) break;
            if (nc - cc >= 8) {
                __m256 v = acc[r * EG_NV + h];
                if (g->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(g->bias + c0 + cc));
                if (g->mode == EK_EPI_ACCUMULATE) v = _mm256_add_ps(v, _mm256_loadu_ps(yr + cc));
                else if (g->mode == EK_EPI_RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
                _mm256_storeu_ps(yr + cc, v);
            } else {
                const float *lanes = (const float *)(acc + r * EG_NV + h);
                for (long j = 0; j < nc - cc; j++)
                    yr[cc + j] = fp32_epilogue(lanes[j], g->bias, c0 + cc + j, yr[cc + j], g->mode);
            }
        }
    }
}

/* Columns [c0, c0 + nc): panels packed once ([kp/2][EG_NR][2]), then as columns_avx2 with fp32 tiles. */
EG_AVX2 static int columns_bf16_simd(const bf16_ctx *g, long c0, long nc) {
    long panels = (nc + EG_NR - 1) / EG_NR, panel_len = g->kp * EG_NR * 2;   /* bytes */
    int8_t *pb = pack_buffer(panels * (panel_len + EG_NR * 4));
    if (!pb) return -2;
    int32_t *sums = (int32_t *)(void *)(pb + panels * panel_len);   /* pack_panel's byte sums (unused here) */
    for (long p = 0; p < panels; p++) {
        long pc = c0 + p * EG_NR, pn = c0 + nc - pc < EG_NR ? c0 + nc - pc : EG_NR;
        uint16_t *dst = (uint16_t *)(void *)(pb + p * panel_len);
        if (g->k == g->kp) {   /* rows of whole 32-byte chunks: the int8 path's 32-bit-lane transpose, pairs as quads */
            pack_panel((const int8_t *)(const void *)g->w, 2 * g->k, pc, pn, (int8_t *)dst, sums + p * EG_NR, 1);
        } else {
            for (long i = 0; i < g->kp / 2; i++)
                for (long j = 0; j < EG_NR; j++)
                    for (int h = 0; h < 2; h++) {
                        long kk = 2 * i + h;
                        dst[(i * EG_NR + j) * 2 + h] = j < pn && kk < g->k ? g->w[(pc + j) * g->k + kk] : 0;
                    }
        }
    }
    const long tile_vecs = EG_MR * EG_NV, tiles_per_panel = (EG_MC + EG_MR - 1) / EG_MR;
    __m256 *tiles = (__m256 *)(void *)tile_buffer(panels * tiles_per_panel * tile_vecs);
    if (!tiles) return -2;
    float *rows = g->yb ? scratch_get(&g_yrows, EG_MR * nc * (long)sizeof(float)) : NULL;   /* a tile row's results */
    if (g->yb && !rows) return -2;
    const long pairs = g->kp / 2;
    for (long m0 = 0; m0 < g->m; m0 += EG_MC) {
        long m1 = m0 + EG_MC < g->m ? m0 + EG_MC : g->m, ntiles = (m1 - m0 + EG_MR - 1) / EG_MR;
        for (long t = 0; t < panels * tiles_per_panel * tile_vecs; t++) tiles[t] = _mm256_setzero_ps();
        for (long p0 = 0; p0 < pairs; p0 += EB_KC) {
            long pc = pairs - p0 < EB_KC ? pairs - p0 : EB_KC;
            for (long p = 0; p < panels; p++) {
                const int8_t *bk = pb + p * panel_len + p0 * 4 * EG_NR;
                if (p + 1 < panels) {   /* this panel and the next, 8 rows (two tiles) per call */
                    for (long t = 0; t < ntiles; t += 2) {
                        long r0 = m0 + t * EG_MR;
                        int mr = (int)(m1 - r0 < 8 ? m1 - r0 : 8);
                        eb_kernels_zmm2[mr - 1]((const uint8_t *)(g->xb + r0 * g->kp + 2 * p0), 2 * g->kp, bk,
                                                bk + panel_len, pc, tiles + (p * tiles_per_panel + t) * tile_vecs,
                                                tiles + ((p + 1) * tiles_per_panel + t) * tile_vecs);
                    }
                    p++;
                    continue;
                }
                for (long t = 0; t < ntiles; t += 2) {   /* a lone last panel */
                    long r0 = m0 + t * EG_MR;
                    int mr = (int)(m1 - r0 < 8 ? m1 - r0 : 8);
                    eb_kernels_zmm[mr - 1]((const uint8_t *)(g->xb + r0 * g->kp + 2 * p0), 2 * g->kp, bk, pc,
                                           tiles + (p * tiles_per_panel + t) * tile_vecs);
                }
            }
        }
        for (long t = 0; t < ntiles; t++) {   /* tiles outer: each output row is written as one run of nc columns */
            long r0 = m0 + t * EG_MR;
            int mr = (int)(m1 - r0 < EG_MR ? m1 - r0 : EG_MR);
            float *y0 = rows ? rows : g->y + r0 * g->n + c0;
            long ld = rows ? nc : g->n;
            for (long p = 0; p < panels; p++) {
                long pcol = c0 + p * EG_NR, pn = c0 + nc - pcol < EG_NR ? c0 + nc - pcol : EG_NR;
                store_tile_bf16(g, y0 + p * EG_NR, ld, mr, pcol, pn, tiles + (p * tiles_per_panel + t) * tile_vecs);
            }
            if (rows)   /* rounded while the rows are in L1: no fp32 pass over the result */
                for (int r = 0; r < mr; r++) round_row_bf16(g, rows + r * nc, r0 + r, c0, nc);
        }
        if (g->mode == EK_EPI_GELU && !rows)
            for (long r = m0; r < m1; r++) ek_gelu_tanh_f32(g->y + r * g->n + c0, nc);
    }
    return 0;
}
#endif

static void bf16_task(void *ctx, long index, long count) {
    (void)count;
    bf16_ctx *g = ctx;
    long c0 = index * g->per * EG_NR, c1 = c0 + g->per * EG_NR < g->n ? c0 + g->per * EG_NR : g->n;
#ifdef EG_X86
    if (g->simd && columns_bf16_simd(g, c0, c1 - c0) == 0) return;
#endif
    columns_bf16_plain(g, c0, c1 - c0);
}

static _Thread_local scratch g_xb;   /* x rounded to bf16 [m, kp] */

/* x [m, k] → bf16 rows [m, kp] (zero padded), rows split over the threads when there are many values */
typedef struct { const float *x; uint16_t *xb; long m, k, kp; } bf16_rows_ctx;
static void bf16_rows_task(void *ctx, long index, long count) {
    const bf16_rows_ctx *c = ctx;
    for (long r = c->m * index / count; r < c->m * (index + 1) / count; r++) {
        ek_f32_to_bf16(c->x + r * c->k, c->xb + r * c->kp, c->k);
        for (long i = c->k; i < c->kp; i++) c->xb[r * c->kp + i] = 0;
    }
}

/* One pool job over several matrices (ek_gemm_bf16_multi): matrix j's tasks are [first[j], first[j + 1]). */
#define EB_MULTI_MAX 64
typedef struct { bf16_ctx mat[EB_MULTI_MAX]; long first[EB_MULTI_MAX + 1]; } bf16_multi_ctx;

static void bf16_multi_task(void *ctx, long index, long count) {
    bf16_multi_ctx *c = ctx;
    long j = 0;
    while (index >= c->first[j + 1]) j++;
    bf16_task(&c->mat[j], index - c->first[j], count);
}

/* ek_gemm_bf16_multi's body: x rounded to bf16 rows here, or given as xb_in [m, kp]; results into y[j], or, for one
 * matrix, rounded into yb [m, ldyb]. */
static int gemm_bf16_run(long count, const uint16_t *const *w, const float *const *bias, float *const *y, const long *n,
                         const float *x, const uint16_t *xb_in, long m, long k, int mode, uint16_t *yb, long ldyb) {
    if (mode < EK_EPI_STORE || mode > EK_EPI_RELU || count < 1) return -1;
    long panels = 0;
    for (long j = 0; j < count; j++) panels += n[j] > 0 ? (n[j] + EG_NR - 1) / EG_NR : 0;
    if (yb && panels == 0)   /* no columns: the rows are all padding */
        for (long r = 0; r < m; r++) memset(yb + r * ldyb, 0, sizeof(uint16_t) * (size_t)ldyb);
    if (m <= 0 || panels == 0) return 0;
    long kp = (k + 15) / 16 * 16;
    int out_of_memory = 0;
    const uint16_t *xb = xb_in;
    if (!xb) {
        uint16_t *rounded = scratch_get(&g_xb, m * kp * 2);
        if (!rounded) return -2;
        bf16_rows_ctx rc = { x, rounded, m, k, kp };   /* x rounded once for every matrix */
        run_row_tasks(m, k, bf16_rows_task, &rc);
        xb = rounded;
    }
    long per = panels_per_task(panels);       /* the split a single matrix of all the panels would get */
    bf16_multi_ctx c;
    const int simd = bf16_gemm_simd();
    for (long j0 = 0; j0 < count; j0 += EB_MULTI_MAX) {
        long batch = count - j0 < EB_MULTI_MAX ? count - j0 : EB_MULTI_MAX;
        c.first[0] = 0;
        for (long j = 0; j < batch; j++) {
            long nj = n[j0 + j] > 0 ? n[j0 + j] : 0, np = (nj + EG_NR - 1) / EG_NR;
            c.mat[j] = (bf16_ctx){ .w = w[j0 + j], .bias = bias ? bias[j0 + j] : NULL, .y = y ? y[j0 + j] : NULL,
                                   .xb = xb, .m = m, .n = nj, .k = k, .kp = kp, .per = per, .mode = mode, .simd = simd,
                                   .yb = yb, .ldyb = ldyb, .out_of_memory = &out_of_memory };
            c.first[j + 1] = c.first[j] + (np + per - 1) / per;
        }
        if (c.first[batch] > 0) ek_parallel_for(c.first[batch], bf16_multi_task, &c);
    }
    return __atomic_load_n(&out_of_memory, __ATOMIC_RELAXED) ? -2 : 0;
}

int ek_gemm_bf16_multi(long count, const uint16_t *const *w, const float *const *bias, float *const *y, const long *n,
                       const float *x, long m, long k, int mode) {
    return gemm_bf16_run(count, w, bias, y, n, x, NULL, m, k, mode, NULL, 0);
}

int ek_gemm_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k, int mode) {
    return gemm_bf16_run(1, &w, &bias, &y, &n, x, NULL, m, k, mode, NULL, 0);
}

int ek_gemm_bf16_to_bf16(const uint16_t *w, const float *x, const float *bias, uint16_t *yb, long ldyb, long m, long n,
                         long k, int mode) {
    if (mode == EK_EPI_ACCUMULATE || ldyb < n || !yb) return -1;
    return gemm_bf16_run(1, &w, &bias, NULL, &n, x, NULL, m, k, mode, yb, ldyb);
}

int ek_gemm_bf16_xb(const uint16_t *w, const uint16_t *xb, const float *bias, float *y, long m, long n, long k, int mode) {
    if (!xb) return -1;
    return gemm_bf16_run(1, &w, &bias, &y, &n, NULL, xb, m, k, mode, NULL, 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* Long-query attention with bf16 products (AVX512-BF16): scores = bf16(Q)·bf16(K)ᵀ and out = bf16(P)·bf16(V)   */
/* with vdpbf16ps, fp32 sums and the fp32 softmax between them (what PyTorch's bf16 attention computes)          */

/* Keys rounded up to whole pairs of 16-key panels (32): the packed K / V and the scores' row length. */
static long attn_keys_padded(long nk) { return (nk + 31) / 32 * 32; }
/* Dimensions rounded up to two 16-column panels (32). */
static long attn_dims_padded(long d) { return (d + 31) / 32 * 32; }

long ek_attn_bf16_packed_len(long nk, long head_dim) {
    return attn_keys_padded(nk) * attn_dims_padded(head_dim);
}

/* Where the packed layouts keep a value: key j's dimension e in pk (16-key panels of dp / 2 pairs), and dimension e
 * of key j in pv (16-dimension panels of nkp / 2 pairs of keys); both one 32-bit lane per key or dimension. */
static inline long attn_pk_at(long dp, long j, long e) { return ((j / 16) * (dp / 2) + e / 2) * 32 + (j % 16) * 2 + (e & 1); }
static inline long attn_pv_at(long nkp, long e, long j) { return ((e / 16) * (nkp / 2) + j / 2) * 32 + (e % 16) * 2 + (j & 1); }

typedef struct { const float *k, *v; long stride, nk, d; uint16_t *pk, *pv; } attn_pack_ctx;

/* KV head g: pk [nkp / 16 key panels][dp / 2 pairs][16 keys][2], pv [dp / 16 dim panels][nkp / 2 pairs][16 dims][2],
 * zero past nk keys and d dimensions (dp = d rounded up to 32: the score kernel's pairs past d / 2 multiply zeros). */
static void attn_pack_task(void *ctx, long g, long count) {
    (void)count;
    const attn_pack_ctx *c = ctx;
    long d = c->d, nkp = attn_keys_padded(c->nk), dp = attn_dims_padded(d), len = nkp * dp;
    uint16_t *pk = c->pk + g * len, *pv = c->pv + g * len;
    memset(pk, 0, (size_t)len * 2);
    memset(pv, 0, (size_t)len * 2);
    uint16_t row[1024], row2[1024];
    for (long j = 0; j < c->nk; j++) {   /* key j's pairs → its lane of panel j / 16 */
        const float *kr = c->k + j * c->stride + g * d;
        for (long d0 = 0; d0 < d; d0 += 1024) {
            long n = d - d0 < 1024 ? d - d0 : 1024;
            ek_f32_to_bf16(kr + d0, row, n);
            for (long i = 0; i < n; i++) pk[attn_pk_at(dp, j, d0 + i)] = row[i];
        }
    }
    for (long j = 0; j < c->nk; j += 2) {   /* keys j, j + 1: the pair of every dimension */
        const float *v0 = c->v + j * c->stride + g * d, *v1 = v0 + c->stride;
        for (long d0 = 0; d0 < d; d0 += 1024) {
            long n = d - d0 < 1024 ? d - d0 : 1024;
            ek_f32_to_bf16(v0 + d0, row, n);
            if (j + 1 < c->nk) ek_f32_to_bf16(v1 + d0, row2, n); else memset(row2, 0, (size_t)n * 2);
            for (long i = 0; i < n; i++) {
                pv[attn_pv_at(nkp, d0 + i, j)] = row[i];
                pv[attn_pv_at(nkp, d0 + i, j + 1)] = row2[i];
            }
        }
    }
}

int ek_attn_bf16_pack(const float *k, const float *v, long kv_stride, long nk, long kv_heads, long head_dim,
                      uint16_t *pk, uint16_t *pv) {
    if (nk <= 0 || kv_heads <= 0 || head_dim <= 0) return -1;
    attn_pack_ctx c = { k, v, kv_stride, nk, head_dim, pk, pv };
    if (kv_heads * nk * head_dim >= (1L << 15)) ek_parallel_for(kv_heads, attn_pack_task, &c);
    else for (long g = 0; g < kv_heads; g++) attn_pack_task(&c, g, kv_heads);
    return 0;
}

int ek_attn_bf16_available(void) {
#if defined(EG_X86) && EG_HAVE_ZMM
    return bf16_gemm_simd();
#else
    return 0;   /* the twin alone (plain C): callers keep the fp32 path */
#endif
}

/* The fp32 softmax between the products, as the fp32 path's task: relative bias, masked softmax (inside a task of
 * the pool it runs inline). */
static void attn_softmax_rows(float *s, long bq, long visible, long ld, const float *bias_row, float scale_div,
                              const uint8_t *key_keep, long causal_offset) {
    if (bias_row) ek_add_relbias_f32(s, bq, visible, ld, bias_row);
    ek_softmax_masked_f32(s, bq, visible, ld, scale_div, key_keep, causal_offset);
}

int ek_attention_block_bf16_ref(const float *q, long q_stride, long bq, const uint16_t *pk, const uint16_t *pv,
                                long nk, long visible, long head_dim, const float *bias_row, float scale_div,
                                const uint8_t *key_keep, long causal_offset, float *out, long out_stride) {
    if (bq <= 0 || visible <= 0 || visible > nk || head_dim <= 0) return -1;
    long d = head_dim, nkp = attn_keys_padded(nk), dp = attn_dims_padded(d);
    float *s = malloc((size_t)(bq * visible) * 4);
    uint16_t *qb = malloc((size_t)d * 2), *pb = malloc((size_t)visible * 2);
    if (!s || !qb || !pb) { free(s); free(qb); free(pb); return -2; }
    for (long r = 0; r < bq; r++) {
        ek_f32_to_bf16(q + r * q_stride, qb, d);
        for (long j = 0; j < visible; j++) {
            double acc = 0;
            for (long e = 0; e < d; e++)
                acc += (double)bf16_value(qb[e]) * bf16_value(pk[attn_pk_at(dp, j, e)]);
            s[r * visible + j] = (float)acc;
        }
    }
    attn_softmax_rows(s, bq, visible, visible, bias_row, scale_div, key_keep, causal_offset);
    for (long r = 0; r < bq; r++) {
        ek_f32_to_bf16(s + r * visible, pb, visible);
        for (long e = 0; e < d; e++) {
            double acc = 0;
            for (long j = 0; j < visible; j++)
                acc += (double)bf16_value(pb[j]) * bf16_value(pv[attn_pv_at(nkp, e, j)]);
            out[r * out_stride + e] = (float)acc;
        }
    }
    free(s); free(qb); free(pb);
    return 0;
}

#if defined(EG_X86) && EG_HAVE_ZMM
/* scores [8, 32] (row stride ld) = 8 bf16 query rows (qb, stride dp) · 32 keys: two 16-key panels, dp / 2 pairs */
EG_BF16 static void attn_scores_8x32(const uint16_t *qb, long dp, const uint16_t *k0, const uint16_t *k1, float *s,
                                     long ld) {
    __m512 c[8], e[8];
    EG_UNROLL for (int r = 0; r < 8; r++) { c[r] = _mm512_setzero_ps(); e[r] = _mm512_setzero_ps(); }
    for (long p = 0; p < dp / 2; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(k0 + p * 32));
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(k1 + p * 32));
        EG_UNROLL for (int r = 0; r < 8; r++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32(*(const int32_t *)(const void *)(qb + r * dp + 2 * p));
            c[r] = _mm512_dpbf16_ps(c[r], a, b0);
            e[r] = _mm512_dpbf16_ps(e[r], a, b1);
        }
    }
    EG_UNROLL for (int r = 0; r < 8; r++) { _mm512_storeu_ps(s + r * ld, c[r]); _mm512_storeu_ps(s + r * ld + 16, e[r]); }
}

/* out [rows ≤ 8, dims d0 .. d0 + 32 (masks m0, m1)] = 8 bf16 probability rows (pb, stride ldp) · two 16-dimension
 * panels of V over `pairs` pairs of keys; `odd`: the last pair's second key is past the visible ones, its values
 * zeroed (its probability is 0, but an infinite value there would make 0·inf = NaN; the fp32 path never reads it) */
EG_BF16 static void attn_values_8x32(const uint16_t *pb, long ldp, const uint16_t *v0, const uint16_t *v1, long pairs,
                                     int odd, float *out, long out_stride, int rows, __mmask16 m0, __mmask16 m1) {
    __m512 c[8], e[8];
    EG_UNROLL for (int r = 0; r < 8; r++) { c[r] = _mm512_setzero_ps(); e[r] = _mm512_setzero_ps(); }
    for (long p = 0; p < pairs; p++) {
        __m512i w0 = _mm512_loadu_si512((const void *)(v0 + p * 32)), w1 = _mm512_loadu_si512((const void *)(v1 + p * 32));
        if (odd && p == pairs - 1) {   /* keep each 32-bit lane's low half: the pair's first key */
            w0 = _mm512_and_si512(w0, _mm512_set1_epi32(0xffff));
            w1 = _mm512_and_si512(w1, _mm512_set1_epi32(0xffff));
        }
        const __m512bh b0 = (__m512bh)w0, b1 = (__m512bh)w1;
        EG_UNROLL for (int r = 0; r < 8; r++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32(*(const int32_t *)(const void *)(pb + r * ldp + 2 * p));
            c[r] = _mm512_dpbf16_ps(c[r], a, b0);
            e[r] = _mm512_dpbf16_ps(e[r], a, b1);
        }
    }
    EG_UNROLL for (int r = 0; r < 8; r++)
        if (r < rows) {
            _mm512_mask_storeu_ps(out + r * out_stride, m0, c[r]);
            _mm512_mask_storeu_ps(out + r * out_stride + 16, m1, e[r]);
        }
}

static _Thread_local scratch g_attn_s, g_attn_q, g_attn_p;

EG_BF16 static int attention_block_bf16_simd(const float *q, long q_stride, long bq, const uint16_t *pk,
                                             const uint16_t *pv, long nk, long visible, long d, const float *bias_row,
                                             float scale_div, const uint8_t *key_keep, long causal_offset, float *out,
                                             long out_stride) {
    long nkp = attn_keys_padded(nk), dp = attn_dims_padded(d), vp = attn_keys_padded(visible), bqp = (bq + 7) / 8 * 8;
    float *s = scratch_get(&g_attn_s, bqp * vp * 4);          /* scores [bqp, vp] */
    uint16_t *qb = scratch_get(&g_attn_q, bqp * dp * 2);      /* bf16 queries [bqp, dp], zero padded */
    uint16_t *pb = scratch_get(&g_attn_p, bqp * vp * 2);      /* bf16 probabilities [bqp, vp], zero past visible */
    if (!s || !qb || !pb) return -2;
    memset(qb, 0, (size_t)(bqp * dp) * 2);
    for (long r = 0; r < bq; r++) ek_f32_to_bf16(q + r * q_stride, qb + r * dp, d);
    for (long r0 = 0; r0 < bqp; r0 += 8)
        for (long j = 0; j < vp; j += 32) {
            const uint16_t *k0 = pk + (j / 16) * (dp / 2) * 32;
            attn_scores_8x32(qb + r0 * dp, dp, k0, k0 + (dp / 2) * 32, s + r0 * vp + j, vp);
        }
    attn_softmax_rows(s, bq, visible, vp, bias_row, scale_div, key_keep, causal_offset);
    memset(pb + bq * vp, 0, (size_t)((bqp - bq) * vp) * 2);
    for (long r = 0; r < bq; r++) {
        ek_f32_to_bf16(s + r * vp, pb + r * vp, visible);
        memset(pb + r * vp + visible, 0, (size_t)(vp - visible) * 2);
    }
    long pairs = (visible + 1) / 2;
    for (long d0 = 0; d0 < d; d0 += 32) {
        long n0 = d - d0 < 16 ? d - d0 : 16, n1 = d - d0 - 16 < 0 ? 0 : (d - d0 - 16 < 16 ? d - d0 - 16 : 16);
        __mmask16 m0 = (__mmask16)((1u << n0) - 1), m1 = (__mmask16)((1u << n1) - 1);
        const uint16_t *v0 = pv + (d0 / 16) * (nkp / 2) * 32;
        for (long r0 = 0; r0 < bq; r0 += 8)
            attn_values_8x32(pb + r0 * vp, vp, v0, v0 + (nkp / 2) * 32, pairs, (int)(visible & 1),
                             out + r0 * out_stride + d0, out_stride,
                             (int)(bq - r0 < 8 ? bq - r0 : 8), m0, m1);
    }
    return 0;
}
#endif

int ek_attention_block_bf16(const float *q, long q_stride, long bq, const uint16_t *pk, const uint16_t *pv, long nk,
                            long visible, long head_dim, const float *bias_row, float scale_div,
                            const uint8_t *key_keep, long causal_offset, float *out, long out_stride) {
    if (bq <= 0 || visible <= 0 || visible > nk || head_dim <= 0) return -1;
#if defined(EG_X86) && EG_HAVE_ZMM
    if (bf16_gemm_simd())
        return attention_block_bf16_simd(q, q_stride, bq, pk, pv, nk, visible, head_dim, bias_row, scale_div, key_keep,
                                         causal_offset, out, out_stride);
#endif
    return ek_attention_block_bf16_ref(q, q_stride, bq, pk, pv, nk, visible, head_dim, bias_row, scale_div, key_keep,
                                       causal_offset, out, out_stride);
}
