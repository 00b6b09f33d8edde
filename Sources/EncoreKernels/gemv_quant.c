/* Decode GEMVs over quantized weights, and the quantizers that make those weights.
 *
 * Weight formats (every row padded with zeros to nb = ceil(k/32) blocks of 32 values; GGUF rows already are):
 *   bf16   uint16 [n, k]                                 x in fp32, or rounded to bf16 for vdpbf16ps (below)
 *   int8   int8 [n, nb*32] + fp32 scale per row          w = scale[r] * q
 *   Q8_0   ggml blocks of 34 B: f16 d, int8 q[32]        w = d*q
 *   Q4_0   ggml blocks of 18 B: f16 d, u8 q[16]          w = d*(nibble-8), low nibbles = values 0..15
 *   Q4_1   ggml blocks of 20 B: f16 d, f16 m, u8 q[16]   w = d*nibble + m
 *
 * Activations of the integer formats are quantized once per call, as llama.cpp does (ggml's q8_0/q8_1): per
 * block of 32, d = amax/127, q = round-to-nearest-even(x/d) in [-127, 127], d rounded to f16 (int8 keeps the
 * fp32 d). A block's dot product is an exact int32 sum, scaled by d_w*d_x in fp32:
 *   Q8_0, int8:  sum_b d_w d_x Σ q_w q_x
 *   Q4_0:        sum_b d_w d_x (Σ nib q_x − 8 Σ q_x)
 *   Q4_1:        sum_b d_w d_x Σ nib q_x + m_w s_x,     s_x = f16(d_x Σ q_x)   (ggml's q8_1 "s")
 * The signed×signed int8 products use the unsigned×signed instructions with |x| and sign(w, x); this needs
 * q_w ≠ −128, which every quantizer here (and llama.cpp's) guarantees.
 *
 * bf16 with AVX512_BF16: x is rounded to bf16 once per call and vdpbf16ps multiplies pairs (products of two
 * bf16 values are exact in fp32; the error is x's rounding, ≤ 2^-9 relative per element, ~2e-3 on a dot
 * product of random signs). Without AVX512_BF16, weights are widened and multiplied by the fp32 x.
 *
 * Paths (run-time dispatch, capped by ek_set_isa_limit for tests):
 *   integer formats: avx512vnni (EVEX vpdpbusd on ymm; Zen 4 splits zmm anyway) > avxvnni (VEX vpdpbusd) >
 *                    avx2 (vpmaddubsw + vpmaddwd) > scalar
 *   bf16:            avx512bf16 (vdpbf16ps on zmm) > avx512f (widen + FMA) > avx2 (widen + FMA) > scalar
 * arm64 (neon.c):  bf16 neon (widen + FMA); int8 neon-dotprod (SDOT) > neon (SMULL + SADALP); Q8_0/Q4_0/Q4_1 still
 *                  scalar. The activation quantizer has a NEON block too (same bytes as plain C).
 *
 * Every call is parallel over rows on the ek_parallel_for pool (4 contiguous row ranges per thread, claimed
 * dynamically), streams each weight once for up to m ≤ 8 activation rows, and allocates nothing once its
 * thread-local activation buffer has grown to the largest m*k seen. */
#include "EncoreKernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define EQ_X86 1
#include <immintrin.h>
#define EQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define EQ_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define EQ_AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define EQ_AVX512F __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define EQ_AVX512BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))
#endif
#include "neon.h"   /* arm64 kernels; hooks marked "NEON hook" */

enum { P_SCALAR = 0, P_AVX2, P_AVXVNNI, P_AVX512VNNI, P_AVX512F, P_AVX512BF16, P_NEON, P_NEON_DOTPROD };
static const char *const path_names[] = { "scalar", "avx2", "avxvnni", "avx512vnni", "avx512f", "avx512bf16", "neon",
                                          "neon-dotprod" };

static int g_isa_limit = EK_ISA_AVX512;

void ek_set_isa_limit(int level) { g_isa_limit = level < 0 ? EK_ISA_AVX512 : level; }
int ek_get_isa_limit(void) { return g_isa_limit; }

/* The path a format runs on this CPU under the current limit. */
static int path_for(int format) {
    if (ek_get_force_reference()) return P_SCALAR;
    int f = ek_cpu_features(), lim = g_isa_limit;
    int avx512 = (f & EK_CPU_AVX512F) && (f & EK_CPU_AVX512BWVL);
#if defined(__aarch64__)
    /* NEON hook: f32 (kernels.c), bf16 and int8; limit AVX2 = plain NEON, AVX-VNNI and up = SDOT too */
    if ((f & EK_CPU_NEON) && lim >= EK_ISA_AVX2 && (format == EK_WF_F32 || format == EK_WF_BF16 || format == EK_WF_INT8))
        return format == EK_WF_INT8 && lim >= EK_ISA_AVXVNNI && (f & EK_CPU_NEON_DOTPROD) ? P_NEON_DOTPROD : P_NEON;
#endif
    if (format == EK_WF_BF16) {
        if (lim >= EK_ISA_AVX512 && avx512 && (f & EK_CPU_AVX512BF16)) return P_AVX512BF16;
        if (lim >= EK_ISA_AVX512 && avx512 && (f & EK_CPU_F16C)) return P_AVX512F;
        if (lim >= EK_ISA_AVX2 && (f & EK_CPU_AVX2_FMA) && (f & EK_CPU_F16C)) return P_AVX2;
        return P_SCALAR;
    }
    if (format == EK_WF_F32) return (f & EK_CPU_AVX2_FMA) && lim >= EK_ISA_AVX2 ? P_AVX2 : P_SCALAR;
    if (lim >= EK_ISA_AVX512 && avx512 && (f & EK_CPU_AVX512VNNI) && (f & EK_CPU_F16C)) return P_AVX512VNNI;
    if (lim >= EK_ISA_AVXVNNI && (f & EK_CPU_AVXVNNI) && (f & EK_CPU_AVX2_FMA) && (f & EK_CPU_F16C)) return P_AVXVNNI;
    if (lim >= EK_ISA_AVX2 && (f & EK_CPU_AVX2_FMA) && (f & EK_CPU_F16C)) return P_AVX2;
    return P_SCALAR;
}

const char *ek_gemv_path(int format) { return path_names[path_for(format)]; }

/* ------------------------------------------------------------------------------------------------ */
/* f16 helpers (scalar; the F16C instruction gives the same result)                                  */

static inline float f16_to_f32(uint16_t h) { float f; ek_f16_to_f32(&h, &f, 1); return f; }
static inline uint16_t f32_to_f16(float f) { uint16_t h; ek_f32_to_f16(&f, &h, 1); return h; }
static inline float f16_round(float f) { return f16_to_f32(f32_to_f16(f)); }
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

long ek_quant_row_bytes(int format, long k) {
    long nb = (k + 31) / 32;
    switch (format) {
    case EK_WF_F32: return 4 * k;
    case EK_WF_BF16: return 2 * k;
    case EK_WF_INT8: return 32 * nb;
    case EK_WF_Q8_0: return 34 * nb;
    case EK_WF_Q4_0: return 18 * nb;
    case EK_WF_Q4_1: return 20 * nb;
    default: return 0;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* activation quantization (plain C, shared by every path and by the _ref twins)                     */

typedef struct {
    int8_t *q;      /* [m, nb*32], 32-byte aligned */
    float *d;       /* [m, nb] block scales (f16-rounded except for int8) */
    float *c;       /* [m, nb] per-block correction: Q4_0 8·d·Σq, Q4_1 f16(d·Σq) */
    uint16_t *xb;   /* [m, k] x rounded to bf16 (bf16 path) */
    long cap_q, cap_b, cap_xb;
} act_buf;

static _Thread_local act_buf g_act;

static int act_reserve(act_buf *a, long qbytes, long blocks, long xbf) {
    if (qbytes > a->cap_q) {
        void *p = NULL;
        if (posix_memalign(&p, 64, (size_t)qbytes) != 0) return 0;
        free(a->q); a->q = p; a->cap_q = qbytes;
    }
    if (blocks > a->cap_b) {
        float *d = malloc(sizeof(float) * (size_t)blocks), *c = malloc(sizeof(float) * (size_t)blocks);
        if (!d || !c) { free(d); free(c); return 0; }
        free(a->d); free(a->c); a->d = d; a->c = c; a->cap_b = blocks;
    }
    if (xbf > a->cap_xb) {
        uint16_t *x = malloc(sizeof(uint16_t) * (size_t)xbf);
        if (!x) return 0;
        free(a->xb); a->xb = x; a->cap_xb = xbf;
    }
    return 1;
}

#if EQ_X86
/* One full block of 32: q = round-half-even(x · 127/amax) (lrintf's rounding, as the scalar loop), amax, Σq. */
EQ_AVX2 static float quantize_block_avx2(const float *x, int8_t *q, int *sum_out) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const __m256i hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-127);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
    i0 = _mm256_max_epi32(_mm256_min_epi32(i0, hi), lo); i1 = _mm256_max_epi32(_mm256_min_epi32(i1, hi), lo);
    i2 = _mm256_max_epi32(_mm256_min_epi32(i2, hi), lo); i3 = _mm256_max_epi32(_mm256_min_epi32(i3, hi), lo);
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *sum_out = _mm_cvtsi128_si32(s4);
    /* pack to int8 in element order: packs interleave 128-bit lanes, the permute undoes it */
    __m256i p16a = _mm256_packs_epi32(i0, i1), p16b = _mm256_packs_epi32(i2, i3);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p8);
    return amax;
}
#endif

/* x [m, k] → q [m, nb*32] (zero padded), d/c [m, nb]. */
static void quantize_act(int format, const float *x, long m, long k, int8_t *q, float *d, float *c) {
    long nb = (k + 31) / 32;
#if EQ_X86
    int simd = !ek_get_force_reference() && (ek_cpu_features() & EK_CPU_AVX2_FMA);
#define EQ_QBLOCK quantize_block_avx2
#elif defined(__aarch64__)
    int simd = !ek_get_force_reference() && (ek_cpu_features() & EK_CPU_NEON);   /* NEON hook */
#define EQ_QBLOCK ek_neon_quantize_block
#endif
    for (long i = 0; i < m; i++) {
        const float *xr = x + i * k;
        for (long b = 0; b < nb; b++) {
            long j0 = b * 32, len = k - j0 < 32 ? k - j0 : 32;
#if EQ_X86 || defined(__aarch64__)
            if (simd && len == 32) {
                int sum;
                float db = EQ_QBLOCK(xr + j0, q + (i * nb + b) * 32, &sum) / 127.0f;
                float dq = format == EK_WF_INT8 ? db : f16_round(db);
                d[i * nb + b] = dq;
                if (format == EK_WF_Q4_0) c[i * nb + b] = 8.0f * dq * (float)sum;
                else if (format == EK_WF_Q4_1) c[i * nb + b] = f16_round(db * (float)sum);
                else c[i * nb + b] = 0.0f;
                continue;
            }
#endif
            float amax = 0;
            for (long j = 0; j < len; j++) { float a = fabsf(xr[j0 + j]); if (a > amax) amax = a; }
            float db = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;   /* as ggml's AVX2 quantizer */
            int8_t *qb = q + (i * nb + b) * 32;
            int sum = 0;
            for (long j = 0; j < 32; j++) {
                int v = j < len ? (int)lrintf(xr[j0 + j] * id) : 0;
                if (v > 127) v = 127;
                if (v < -127) v = -127;
                qb[j] = (int8_t)v;
                sum += v;
            }
            float dq = format == EK_WF_INT8 ? db : f16_round(db);
            d[i * nb + b] = dq;
            if (format == EK_WF_Q4_0) c[i * nb + b] = 8.0f * dq * (float)sum;
            else if (format == EK_WF_Q4_1) c[i * nb + b] = f16_round(db * (float)sum);
            else c[i * nb + b] = 0.0f;
        }
    }
}

void ek_quantize_activations(int format, const float *x, long m, long k, int8_t *q, float *d, float *c) {
    quantize_act(format, x, m, k, q, d, c);
}

/* ------------------------------------------------------------------------------------------------ */
/* call context                                                                                      */

typedef struct {
    int format, path;
    const uint8_t *w;        /* weights (block bytes, int8 or bf16) */
    const float *wscale;     /* int8: [n] */
    const float *x;          /* fp32 activations [m, k] */
    const int8_t *xq;        /* quantized activations */
    const float *xd, *xc;
    const uint16_t *xb;      /* bf16 activations */
    const float *bias;
    float *y;
    long m, n, k, nb, row_bytes;
} qctx;

/* ---- scalar block dots (also the "scalar" dispatch level) ---- */

static float row_dot_scalar(const qctx *c, long r, long i) {
    const uint8_t *wr = c->w + r * c->row_bytes;
    const int8_t *xq = c->xq + i * c->nb * 32;
    const float *xd = c->xd + i * c->nb, *xc = c->xc + i * c->nb;
    float acc = 0;
    for (long b = 0; b < c->nb; b++) {
        const int8_t *xb = xq + b * 32;
        int s = 0;
        switch (c->format) {
        case EK_WF_INT8: {
            const int8_t *q = (const int8_t *)wr + b * 32;
            for (int j = 0; j < 32; j++) s += q[j] * xb[j];
            acc += xd[b] * (float)s;
            break;
        }
        case EK_WF_Q8_0: {
            const uint8_t *blk = wr + b * 34;
            const int8_t *q = (const int8_t *)(blk + 2);
            for (int j = 0; j < 32; j++) s += q[j] * xb[j];
            acc += f16_to_f32(rd16(blk)) * xd[b] * (float)s;
            break;
        }
        case EK_WF_Q4_0: {
            const uint8_t *blk = wr + b * 18, *q = blk + 2;
            for (int j = 0; j < 16; j++) s += (q[j] & 0xF) * xb[j] + (q[j] >> 4) * xb[j + 16];
            float dw = f16_to_f32(rd16(blk));
            acc += dw * xd[b] * (float)s - dw * xc[b];
            break;
        }
        case EK_WF_Q4_1: {
            const uint8_t *blk = wr + b * 20, *q = blk + 4;
            for (int j = 0; j < 16; j++) s += (q[j] & 0xF) * xb[j] + (q[j] >> 4) * xb[j + 16];
            acc += f16_to_f32(rd16(blk)) * xd[b] * (float)s + f16_to_f32(rd16(blk + 2)) * xc[b];
            break;
        }
        }
    }
    return c->format == EK_WF_INT8 ? acc * c->wscale[r] : acc;
}

static inline float bf16f(uint16_t h) { uint32_t b = (uint32_t)h << 16; float f; memcpy(&f, &b, 4); return f; }

static void rows_scalar(const qctx *c, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        float bias = c->bias ? c->bias[r] : 0.0f;
        for (long i = 0; i < c->m; i++) {
            float s;
            if (c->format == EK_WF_BF16) {
                const uint16_t *wr = (const uint16_t *)c->w + r * c->k;
                const float *xr = c->x + i * c->k;
                float s0 = 0, s1 = 0;
                long j = 0;
                for (; j + 2 <= c->k; j += 2) { s0 += bf16f(wr[j]) * xr[j]; s1 += bf16f(wr[j + 1]) * xr[j + 1]; }
                for (; j < c->k; j++) s0 += bf16f(wr[j]) * xr[j];
                s = s0 + s1;
            } else {
                s = row_dot_scalar(c, r, i);
            }
            c->y[i * c->n + r] = s + bias;
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* x86 kernels                                                                                       */

#if EQ_X86

/* One kernel body per integer path; DOT(u, s) = int32x8 of Σ u8·s8 over groups of 4 bytes. Four blocks per
 * iteration into four accumulators (vector and scalar), so no FMA latency chain limits the loop. */
#define EQ_HSUM256(v, out) do { \
        __m128 lo_ = _mm256_castps256_ps128(v), hi_ = _mm256_extractf128_ps(v, 1); \
        lo_ = _mm_add_ps(lo_, hi_); lo_ = _mm_add_ps(lo_, _mm_movehl_ps(lo_, lo_)); \
        lo_ = _mm_add_ss(lo_, _mm_movehdup_ps(lo_)); out = _mm_cvtss_f32(lo_); } while (0)

/* signed int8 weights at WP (32 bytes), block B of the activations, scale SC */
#define EQ_STEP_S8(DOT, ACC, WP, B, SC) do { \
        __m256i xv_ = _mm256_load_si256((const __m256i *)(xq + (B) * 32)); \
        __m256i wv_ = _mm256_loadu_si256((const __m256i *)(WP)); \
        __m256i p_ = DOT(_mm256_sign_epi8(xv_, xv_), _mm256_sign_epi8(wv_, xv_)); \
        ACC = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_set1_ps(SC), ACC); } while (0)

/* 4-bit block at BLK (nibbles at BLK+QO), block B; CORR += Q4_0: −d·c, Q4_1: m·c */
#define EQ_STEP_Q4(DOT, ACC, CORR, BLK, QO, B) do { \
        __m128i r_ = _mm_loadu_si128((const __m128i *)((BLK) + (QO))); \
        __m256i q_ = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(r_, 4), r_), m4); \
        __m256i p_ = DOT(q_, _mm256_load_si256((const __m256i *)(xq + (B) * 32))); \
        float dw_ = _cvtsh_ss(rd16(BLK)); \
        ACC = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_set1_ps(dw_ * xd[B]), ACC); \
        CORR += ((QO) == 2 ? -dw_ : _cvtsh_ss(rd16((BLK) + 2))) * xc[B]; } while (0)

#define EQ_DEFINE_INT_ROWS(SUFFIX, ATTR, DOT)                                                                  \
ATTR static void rows_##SUFFIX(const qctx *c, long r0, long r1) {                                              \
    const __m256i m4 = _mm256_set1_epi8(0x0F);                                                                 \
    const long nb = c->nb;                                                                                     \
    for (long r = r0; r < r1; r++) {                                                                           \
        const uint8_t *wr = c->w + r * c->row_bytes;                                                           \
        float bias = c->bias ? c->bias[r] : 0.0f;                                                              \
        for (long i = 0; i < c->m; i++) {                                                                      \
            const int8_t *xq = c->xq + i * nb * 32;                                                            \
            const float *xd = c->xd + i * nb, *xc = c->xc + i * nb;                                            \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(); \
            float c0 = 0, c1 = 0, c2 = 0, c3 = 0;                                                              \
            long b = 0;                                                                                        \
            switch (c->format) {                                                                               \
            case EK_WF_INT8:                                                                                   \
                for (; b + 4 <= nb; b += 4) {                                                                  \
                    EQ_STEP_S8(DOT, a0, wr + b * 32, b, xd[b]);                                                \
                    EQ_STEP_S8(DOT, a1, wr + b * 32 + 32, b + 1, xd[b + 1]);                                   \
                    EQ_STEP_S8(DOT, a2, wr + b * 32 + 64, b + 2, xd[b + 2]);                                   \
                    EQ_STEP_S8(DOT, a3, wr + b * 32 + 96, b + 3, xd[b + 3]);                                   \
                }                                                                                              \
                for (; b < nb; b++) EQ_STEP_S8(DOT, a0, wr + b * 32, b, xd[b]);                                \
                break;                                                                                         \
            case EK_WF_Q8_0:                                                                                   \
                for (; b + 4 <= nb; b += 4) {                                                                  \
                    const uint8_t *k0 = wr + b * 34;                                                           \
                    EQ_STEP_S8(DOT, a0, k0 + 2, b, _cvtsh_ss(rd16(k0)) * xd[b]);                               \
                    EQ_STEP_S8(DOT, a1, k0 + 36, b + 1, _cvtsh_ss(rd16(k0 + 34)) * xd[b + 1]);                 \
                    EQ_STEP_S8(DOT, a2, k0 + 70, b + 2, _cvtsh_ss(rd16(k0 + 68)) * xd[b + 2]);                 \
                    EQ_STEP_S8(DOT, a3, k0 + 104, b + 3, _cvtsh_ss(rd16(k0 + 102)) * xd[b + 3]);               \
                }                                                                                              \
                for (; b < nb; b++) EQ_STEP_S8(DOT, a0, wr + b * 34 + 2, b, _cvtsh_ss(rd16(wr + b * 34)) * xd[b]); \
                break;                                                                                         \
            case EK_WF_Q4_0:                                                                                   \
                for (; b + 4 <= nb; b += 4) {                                                                  \
                    const uint8_t *k0 = wr + b * 18;                                                           \
                    EQ_STEP_Q4(DOT, a0, c0, k0, 2, b);                                                         \
                    EQ_STEP_Q4(DOT, a1, c1, k0 + 18, 2, b + 1);                                                \
                    EQ_STEP_Q4(DOT, a2, c2, k0 + 36, 2, b + 2);                                                \
                    EQ_STEP_Q4(DOT, a3, c3, k0 + 54, 2, b + 3);                                                \
                }                                                                                              \
                for (; b < nb; b++) EQ_STEP_Q4(DOT, a0, c0, wr + b * 18, 2, b);                                \
                break;                                                                                         \
            case EK_WF_Q4_1:                                                                                   \
                for (; b + 4 <= nb; b += 4) {                                                                  \
                    const uint8_t *k0 = wr + b * 20;                                                           \
                    EQ_STEP_Q4(DOT, a0, c0, k0, 4, b);                                                         \
                    EQ_STEP_Q4(DOT, a1, c1, k0 + 20, 4, b + 1);                                                \
                    EQ_STEP_Q4(DOT, a2, c2, k0 + 40, 4, b + 2);                                                \
                    EQ_STEP_Q4(DOT, a3, c3, k0 + 60, 4, b + 3);                                                \
                }                                                                                              \
                for (; b < nb; b++) EQ_STEP_Q4(DOT, a0, c0, wr + b * 20, 4, b);                                \
                break;                                                                                         \
            }                                                                                                  \
            float s;                                                                                           \
            EQ_HSUM256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), s);                        \
            s += (c0 + c1) + (c2 + c3);                                                                        \
            if (c->format == EK_WF_INT8) s *= c->wscale[r];                                                    \
            c->y[i * c->n + r] = s + bias;                                                                     \
        }                                                                                                      \
    }                                                                                                          \
}

#define EQ_DOT_AVX2(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define EQ_DOT_AVXVNNI(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
#define EQ_DOT_AVX512VNNI(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))

EQ_DEFINE_INT_ROWS(avx2, EQ_AVX2, EQ_DOT_AVX2)
EQ_DEFINE_INT_ROWS(avxvnni, EQ_AVXVNNI, EQ_DOT_AVXVNNI)
EQ_DEFINE_INT_ROWS(avx512vnni, EQ_AVX512VNNI, EQ_DOT_AVX512VNNI)

/* bf16 weights widened to fp32 (x fp32), AVX2 */
EQ_AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

EQ_AVX2 static void rows_bf16_avx2(const qctx *c, long r0, long r1) {
    const long k = c->k;
    for (long r = r0; r < r1; r++) {
        const uint16_t *wr = (const uint16_t *)c->w + r * k;
        float bias = c->bias ? c->bias[r] : 0.0f;
        for (long i = 0; i < c->m; i++) {
            const float *xr = c->x + i * k;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            long j = 0;
            for (; j + 32 <= k; j += 32) {
                a0 = _mm256_fmadd_ps(bf16x8(wr + j), _mm256_loadu_ps(xr + j), a0);
                a1 = _mm256_fmadd_ps(bf16x8(wr + j + 8), _mm256_loadu_ps(xr + j + 8), a1);
                a2 = _mm256_fmadd_ps(bf16x8(wr + j + 16), _mm256_loadu_ps(xr + j + 16), a2);
                a3 = _mm256_fmadd_ps(bf16x8(wr + j + 24), _mm256_loadu_ps(xr + j + 24), a3);
            }
            for (; j + 8 <= k; j += 8) a0 = _mm256_fmadd_ps(bf16x8(wr + j), _mm256_loadu_ps(xr + j), a0);
            float s;
            EQ_HSUM256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), s);
            for (; j < k; j++) s += bf16f(wr[j]) * xr[j];
            c->y[i * c->n + r] = s + bias;
        }
    }
}

/* bf16 widened (x fp32), AVX-512F */
EQ_AVX512F static inline __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

EQ_AVX512F static void rows_bf16_avx512f(const qctx *c, long r0, long r1) {
    const long k = c->k;
    for (long r = r0; r < r1; r++) {
        const uint16_t *wr = (const uint16_t *)c->w + r * k;
        float bias = c->bias ? c->bias[r] : 0.0f;
        for (long i = 0; i < c->m; i++) {
            const float *xr = c->x + i * k;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            long j = 0;
            for (; j + 32 <= k; j += 32) {
                a0 = _mm512_fmadd_ps(bf16x16(wr + j), _mm512_loadu_ps(xr + j), a0);
                a1 = _mm512_fmadd_ps(bf16x16(wr + j + 16), _mm512_loadu_ps(xr + j + 16), a1);
            }
            for (; j + 16 <= k; j += 16) a0 = _mm512_fmadd_ps(bf16x16(wr + j), _mm512_loadu_ps(xr + j), a0);
            float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            for (; j < k; j++) s += bf16f(wr[j]) * xr[j];
            c->y[i * c->n + r] = s + bias;
        }
    }
}

/* bf16 × bf16 pairs with vdpbf16ps (x rounded to bf16 once per call) */
EQ_AVX512BF16 static void rows_bf16_avx512bf16(const qctx *c, long r0, long r1) {
    const long k = c->k;
    for (long r = r0; r < r1; r++) {
        const uint16_t *wr = (const uint16_t *)c->w + r * k;
        float bias = c->bias ? c->bias[r] : 0.0f;
        for (long i = 0; i < c->m; i++) {
            const uint16_t *xr = c->xb + i * k;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            long j = 0;
            for (; j + 64 <= k; j += 64) {
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(wr + j)),
                                      (__m512bh)_mm512_loadu_si512((const void *)(xr + j)));
                a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(wr + j + 32)),
                                      (__m512bh)_mm512_loadu_si512((const void *)(xr + j + 32)));
            }
            for (; j + 32 <= k; j += 32)
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(wr + j)),
                                      (__m512bh)_mm512_loadu_si512((const void *)(xr + j)));
            float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            for (; j < k; j++) s += bf16f(wr[j]) * bf16f(xr[j]);
            c->y[i * c->n + r] = s + bias;
        }
    }
}
#endif /* EQ_X86 */

static void qtask(void *ctx, long index, long count) {
    const qctx *c = (const qctx *)ctx;
    long r0 = c->n * index / count, r1 = c->n * (index + 1) / count;
    switch (c->path) {
#if EQ_X86
    case P_AVX2: if (c->format == EK_WF_BF16) rows_bf16_avx2(c, r0, r1); else rows_avx2(c, r0, r1); return;
    case P_AVXVNNI: rows_avxvnni(c, r0, r1); return;
    case P_AVX512VNNI: rows_avx512vnni(c, r0, r1); return;
    case P_AVX512F: rows_bf16_avx512f(c, r0, r1); return;
    case P_AVX512BF16: rows_bf16_avx512bf16(c, r0, r1); return;
#endif
#if defined(__aarch64__)   /* NEON hook */
    case P_NEON: case P_NEON_DOTPROD:
        if (c->format == EK_WF_BF16) ek_neon_rows_bf16((const uint16_t *)c->w, c->x, c->bias, c->y, c->m, c->n, c->k, r0, r1);
        else ek_neon_rows_int8((const int8_t *)c->w, c->wscale, c->xq, c->xd, c->bias, c->y, c->m, c->n, c->nb, r0, r1,
                               c->path == P_NEON_DOTPROD);
        return;
#endif
    default: rows_scalar(c, r0, r1); return;
    }
}

static void run_rows(qctx *c) {
    long bytes = c->n * c->row_bytes;
    long tasks = bytes < (1L << 18) ? 1 : 4L * ek_get_threads();
    if (tasks > c->n) tasks = c->n;
    ek_parallel_for(tasks, qtask, c);
}

/* Quantizes the activations for `format` into the thread's buffer; returns 0 if it could not grow. */
static int prepare(qctx *c) {
    act_buf *a = &g_act;
    if (c->format == EK_WF_BF16) {
        if (c->path != P_AVX512BF16) return 1;
        if (!act_reserve(a, 0, 0, c->m * c->k)) return 0;
        ek_f32_to_bf16(c->x, a->xb, c->m * c->k);
        c->xb = a->xb;
        return 1;
    }
    if (!act_reserve(a, c->m * c->nb * 32, c->m * c->nb, 0)) return 0;
    quantize_act(c->format, c->x, c->m, c->k, a->q, a->d, a->c);
    c->xq = a->q; c->xd = a->d; c->xc = a->c;
    return 1;
}

int ek_gemv_quant(int format, const void *w, const float *wscale, const float *x, const float *bias, float *y,
                  long m, long n, long k) {
    if (m < 1 || n < 1 || k < 1) return 0;
    if (format != EK_WF_BF16 && format != EK_WF_INT8 && format != EK_WF_Q8_0 && format != EK_WF_Q4_0 &&
        format != EK_WF_Q4_1) return -1;
    qctx c;
    memset(&c, 0, sizeof c);
    c.format = format; c.path = path_for(format);
    c.w = (const uint8_t *)w; c.wscale = wscale; c.x = x; c.bias = bias; c.y = y;
    c.m = m; c.n = n; c.k = k; c.nb = (k + 31) / 32; c.row_bytes = ek_quant_row_bytes(format, k);
    if (!prepare(&c)) return -2;
    run_rows(&c);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* reference twins: one element at a time from dequantized values, in double                         */

/* Weight (r, j) as the format defines it. */
static double weight_at(int format, const uint8_t *w, const float *wscale, long r, long j, long k) {
    const uint8_t *wr = w + r * ek_quant_row_bytes(format, k);
    long b = j / 32, e = j % 32;
    switch (format) {
    case EK_WF_BF16: return bf16f(((const uint16_t *)w)[r * k + j]);
    case EK_WF_INT8: return (double)wscale[r] * ((const int8_t *)wr)[j];
    case EK_WF_Q8_0: return (double)f16_to_f32(rd16(wr + b * 34)) * ((const int8_t *)(wr + b * 34 + 2))[e];
    case EK_WF_Q4_0: {
        const uint8_t *blk = wr + b * 18;
        int q = e < 16 ? blk[2 + e] & 0xF : blk[2 + e - 16] >> 4;
        return (double)f16_to_f32(rd16(blk)) * (q - 8);
    }
    case EK_WF_Q4_1: {
        const uint8_t *blk = wr + b * 20;
        int q = e < 16 ? blk[4 + e] & 0xF : blk[4 + e - 16] >> 4;
        return (double)f16_to_f32(rd16(blk)) * q + f16_to_f32(rd16(blk + 2));
    }
    default: return 0;
    }
}

int ek_gemv_quant_ref(int format, const void *w, const float *wscale, const float *x, const float *bias, float *y,
                      long m, long n, long k) {
    if (m < 1 || n < 1 || k < 1) return 0;
    long nb = (k + 31) / 32;
    int8_t *q = NULL;
    float *d = NULL, *cc = NULL;
    if (format != EK_WF_BF16) {
        q = malloc((size_t)(m * nb * 32)); d = malloc(sizeof(float) * (size_t)(m * nb)); cc = malloc(sizeof(float) * (size_t)(m * nb));
        if (!q || !d || !cc) { free(q); free(d); free(cc); return -2; }
        quantize_act(format, x, m, k, q, d, cc);
    }
    for (long i = 0; i < m; i++) {
        for (long r = 0; r < n; r++) {
            double s = 0;
            if (format == EK_WF_BF16) {
                for (long j = 0; j < k; j++) s += weight_at(format, w, wscale, r, j, k) * x[i * k + j];
            } else if (format == EK_WF_Q4_1) {
                /* ggml's q4_1·q8_1: the m·x part uses the block's f16-rounded s = d_x Σ q_x */
                for (long j = 0; j < k; j++) {
                    const uint8_t *blk = (const uint8_t *)w + r * ek_quant_row_bytes(format, k) + (j / 32) * 20;
                    double wq = weight_at(format, w, wscale, r, j, k) - f16_to_f32(rd16(blk + 2));
                    s += wq * (double)d[i * nb + j / 32] * q[i * nb * 32 + j];
                }
                for (long b = 0; b < nb; b++)
                    s += (double)f16_to_f32(rd16((const uint8_t *)w + r * ek_quant_row_bytes(format, k) + b * 20 + 2)) * cc[i * nb + b];
            } else {
                for (long j = 0; j < k; j++)
                    s += weight_at(format, w, wscale, r, j, k) * (double)d[i * nb + j / 32] * q[i * nb * 32 + j];
            }
            y[i * n + r] = (float)s + (bias ? bias[r] : 0.0f);
        }
    }
    free(q); free(d); free(cc);
    return 0;
}

/* The bf16 reference with x rounded to bf16 (what the avx512bf16 path computes). */
int ek_gemv_bf16_xbf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k) {
    for (long i = 0; i < m; i++)
        for (long r = 0; r < n; r++) {
            double s = 0;
            for (long j = 0; j < k; j++) {
                uint16_t xb;
                ek_f32_to_bf16(x + i * k + j, &xb, 1);
                s += (double)bf16f(w[r * k + j]) * bf16f(xb);
            }
            y[i * n + r] = (float)s + (bias ? bias[r] : 0.0f);
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* weight quantizers (llama.cpp's reference rounding) and dequantizers                               */

int ek_quantize_rows(int format, const float *src, void *dst, float *scales, long rows, long cols) {
    long nb = (cols + 31) / 32, rb = ek_quant_row_bytes(format, cols);
    if (rb == 0 || format == EK_WF_F32) return -1;
    for (long r = 0; r < rows; r++) {
        const float *x = src + r * cols;
        uint8_t *out = (uint8_t *)dst + r * rb;
        if (format == EK_WF_BF16) { ek_f32_to_bf16(x, (uint16_t *)dst + r * cols, cols); continue; }
        if (format == EK_WF_INT8) {
            float amax = 0;
            for (long j = 0; j < cols; j++) { float a = fabsf(x[j]); if (a > amax) amax = a; }
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            int8_t *q = (int8_t *)out;
            for (long j = 0; j < nb * 32; j++) q[j] = j < cols ? (int8_t)lrintf(x[j] * id) : 0;
            scales[r] = d;
            continue;
        }
        for (long b = 0; b < nb; b++) {
            float v[32];
            long j0 = b * 32;
            for (long j = 0; j < 32; j++) v[j] = j0 + j < cols ? x[j0 + j] : 0.0f;
            if (format == EK_WF_Q8_0) {
                uint8_t *blk = out + b * 34;
                float amax = 0;
                for (int j = 0; j < 32; j++) { float a = fabsf(v[j]); if (a > amax) amax = a; }
                float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)roundf(v[j] * id);
            } else if (format == EK_WF_Q4_0) {
                uint8_t *blk = out + b * 18;
                float amax = 0, mx = 0;
                for (int j = 0; j < 32; j++) if (fabsf(v[j]) > amax) { amax = fabsf(v[j]); mx = v[j]; }
                float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                for (int j = 0; j < 16; j++) {
                    int q0 = (int)(int8_t)(v[j] * id + 8.5f), q1 = (int)(int8_t)(v[j + 16] * id + 8.5f);
                    if (q0 > 15) q0 = 15;
                    if (q1 > 15) q1 = 15;
                    blk[2 + j] = (uint8_t)(q0 | (q1 << 4));
                }
            } else { /* Q4_1 */
                uint8_t *blk = out + b * 20;
                float mn = v[0], mx = v[0];
                for (int j = 1; j < 32; j++) { if (v[j] < mn) mn = v[j]; if (v[j] > mx) mx = v[j]; }
                float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                wr16(blk + 2, f32_to_f16(mn));
                for (int j = 0; j < 16; j++) {
                    int q0 = (int)(int8_t)((v[j] - mn) * id + 0.5f), q1 = (int)(int8_t)((v[j + 16] - mn) * id + 0.5f);
                    if (q0 > 15) q0 = 15;
                    if (q1 > 15) q1 = 15;
                    blk[4 + j] = (uint8_t)(q0 | (q1 << 4));
                }
            }
        }
    }
    return 0;
}

int ek_dequantize_rows(int format, const void *src, const float *scales, float *dst, long rows, long cols) {
    long rb = ek_quant_row_bytes(format, cols);
    if (rb == 0) return -1;
    if (format == EK_WF_F32) { memcpy(dst, src, sizeof(float) * (size_t)(rows * cols)); return 0; }
    if (format == EK_WF_BF16) { ek_bf16_to_f32(src, dst, rows * cols); return 0; }
    if (format == EK_WF_INT8) {
        for (long r = 0; r < rows; r++) {
            const int8_t *q = (const int8_t *)src + r * rb;
            for (long j = 0; j < cols; j++) dst[r * cols + j] = scales[r] * (float)q[j];
        }
        return 0;
    }
    int type = format == EK_WF_Q8_0 ? EK_GGML_Q8_0 : format == EK_WF_Q4_0 ? EK_GGML_Q4_0 : EK_GGML_Q4_1;
    long nb = (cols + 31) / 32;
    if (cols % 32 == 0) return ek_dequantize(type, src, dst, rows * cols);
    float tmp[32];
    for (long r = 0; r < rows; r++)
        for (long b = 0; b < nb; b++) {
            ek_dequantize(type, (const uint8_t *)src + r * rb + b * (rb / nb), tmp, 32);
            long len = cols - b * 32 < 32 ? cols - b * 32 : 32;
            memcpy(dst + r * cols + b * 32, tmp, sizeof(float) * (size_t)len);
        }
    return 0;
}
