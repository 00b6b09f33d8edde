/* Decode GEMVs over quantized weights, and the quantizers that make those weights.
 *
 * Weight formats (every row padded with zeros to nb = ceil(k/32) blocks of 32 values; GGUF rows already are):
 *   bf16   uint16 [n, k]                                 x in fp32, or rounded to bf16 for vdpbf16ps (below)
 *   int8   int8 [n, nb*32] + fp32 scale per row          w = scale[r] * q
 *   Q8_0   ggml blocks of 34 B: f16 d, int8 q[32]        w = d*q
 *   Q4_0   ggml blocks of 18 B: f16 d, u8 q[16]          w = d*(nibble-8), low nibbles = values 0..15
 *   Q4_1   ggml blocks of 20 B: f16 d, f16 m, u8 q[16]   w = d*nibble + m
 *   Q5_0   ggml blocks of 22 B: f16 d, u32 qh, u8 q[16]  w = d*(v-16), v = nibble | (bit i of qh) << 4 for value i
 *   Q5_1   ggml blocks of 24 B: f16 d, f16 m, u32 qh, u8 q[16]   w = d*v + m
 *   Q4_K / Q5_K / Q6_K   GGUF super-blocks of 256 (activations as ggml's Q8_K; see k_block_avx2)
 *
 * Activations of the integer formats are quantized once per call, as llama.cpp does (ggml's q8_0/q8_1): per
 * block of 32, d = amax/127, q = round-to-nearest-even(x/d) in [-127, 127], d rounded to f16 (int8 keeps the
 * fp32 d). A block's dot product is an exact int32 sum, scaled by d_w*d_x in fp32:
 *   Q8_0, int8:  sum_b d_w d_x Σ q_w q_x
 *   Q4_0:        sum_b d_w d_x (Σ nib q_x − 8 Σ q_x)
 *   Q4_1:        sum_b d_w d_x Σ nib q_x + m_w s_x,     s_x = f16(d_x Σ q_x)   (ggml's q8_1 "s")
 *   Q5_0, Q5_1:  as Q4_0 (with 16 for 8) and Q4_1, on the 5-bit values v
 * The signed×signed int8 products use the unsigned×signed instructions with |x| and sign(w, x); this needs
 * q_w ≠ −128, which every quantizer here (and llama.cpp's) guarantees.
 *
 * bf16 with AVX512_BF16: x is rounded to bf16 once per call and vdpbf16ps multiplies pairs (products of two
 * bf16 values are exact in fp32; the error is x's rounding, ≤ 2^-9 relative per element, ~2e-3 on a dot
 * product of random signs). Without AVX512_BF16, weights are widened and multiplied by the fp32 x.
 *
 * Paths (run-time dispatch, capped by ek_set_isa_limit for tests):
 *   integer formats: avx512vnni (EVEX vpdpbusd: on ymm, and on zmm for the x8 Q4_0/Q4_1/Q5_0/Q5_1 groups) >
 *                    avxvnni (VEX vpdpbusd) > avx2 (vpmaddubsw + vpmaddwd) > scalar
 *   K-quants:        avx512bw (vpmaddubsw + vpmaddwd on zmm) > avx2 > scalar
 *   bf16:            avx512bf16 (vdpbf16ps on zmm) > avx512f (widen + FMA) > avx2 (widen + FMA) > scalar
 *   On CPUs that run zmm instructions in two halves (AMD Zen 4: ek_cpu_splits_zmm) the int8 and bf16 rows, and
 *   kernels.c's one-row fp32 GEMV, take their ymm paths by default (ek_set_gemv_ymm): session 31's Zen 4 decoded
 *   Llama-362M / T5-347M / Mu-330M 1.06–1.26× faster per step that way in fp32 and bf16, 0.89–1.31× in int8 (1.09–1.31×
 *   in 6 of 8 runs), alternated step by step (`encore bench --step-ab ymm`); the 4-bit x8 groups and the K-quants
 *   stay on zmm (cold GEMVs faster there).
 * arm64 (neon.c):  bf16 neon (widen + FMA); int8 neon-dotprod (SDOT) > neon (SMULL + SADALP); Q8_0/Q4_x/Q5_x and
 *                  the K-quants still scalar. The activation quantizer has a NEON block too (same bytes as plain C).
 *
 * Every call is parallel over rows on the ek_parallel_for pool (ek_gemv_tasks: 1 (Intel) or 4 to 16 contiguous row ranges per thread, claimed
 * dynamically), streams each weight once for up to m ≤ 8 activation rows, and allocates nothing once its
 * thread-local activation buffer has grown to the largest m*k seen. */
#include "EncoreKernels.h"
#include <math.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define EQ_X86 1
#include <immintrin.h>
#define EQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#if defined(EK_EMULATED_FEATURES)
/* kernel_parity's emulated build (scripts/test-kernels.sh): SIMDe implements the AVX-VNNI and AVX-512 intrinsics with
   AVX2 code, so these paths run their parity checks on a CPU without them */
#define EQ_AVXVNNI EQ_AVX2
#define EQ_AVX512VNNI EQ_AVX2
#define EQ_AVX512F EQ_AVX2
#define EQ_AVX512BF16 EQ_AVX2
#define EQ_AVX512BW EQ_AVX2
#else
#define EQ_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define EQ_AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define EQ_AVX512F __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define EQ_AVX512BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))
#define EQ_AVX512BW __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#endif
#define EQ_HSUM256(v, out) do { \
        __m128 lo_ = _mm256_castps256_ps128(v), hi_ = _mm256_extractf128_ps(v, 1); \
        lo_ = _mm_add_ps(lo_, hi_); lo_ = _mm_add_ps(lo_, _mm_movehl_ps(lo_, lo_)); \
        lo_ = _mm_add_ss(lo_, _mm_movehdup_ps(lo_)); out = _mm_cvtss_f32(lo_); } while (0)
#endif
#include "avx2_math.h" /* hmax256 */
#include "neon.h"   /* arm64 kernels; hooks marked "NEON hook" */
#include "kquant.h" /* kq_scale_min, kq_values */

enum { P_SCALAR = 0, P_AVX2, P_AVXVNNI, P_AVX512VNNI, P_AVX512F, P_AVX512BF16, P_NEON, P_NEON_DOTPROD, P_AVX512BW };
static const char *const path_names[] = { "scalar", "avx2", "avxvnni", "avx512vnni", "avx512f", "avx512bf16", "neon",
                                          "neon-dotprod", "avx512bw" };

static int g_isa_limit = EK_ISA_AVX512;

void ek_set_isa_limit(int level) { g_isa_limit = level < 0 ? EK_ISA_AVX512 : level; }
int ek_get_isa_limit(void) { return g_isa_limit; }

/* A switch settled once: *setting if already 0 or 1, else the environment variable `name` when it starts with 0 or
 * 1, else `fallback` (stored in *setting). */
static int settle_switch(int *setting, const char *name, int fallback) {
    if (*setting < 0) {
        const char *e = getenv(name);
        *setting = e && (e[0] == '0' || e[0] == '1') ? e[0] == '1' : fallback != 0;
    }
    return *setting;
}

/* fp32 / bf16 / int8 decode GEMVs on ymm where the CPU has AVX-512 (ek_set_gemv_ymm in the header). */
static int g_gemv_ymm = -1;
void ek_set_gemv_ymm(int on) { g_gemv_ymm = on < 0 ? -1 : on != 0; }
int ek_get_gemv_ymm(void) { return settle_switch(&g_gemv_ymm, "EK_GEMV_YMM", ek_cpu_splits_zmm()); }

/* Whether the quantized decode kernels issue their software prefetches (ek_set_gemv_prefetch in the header; off by
 * default on Zen 4, where session 31's int8 / Q8_0 / Q4 decode steps ran 2–14% faster without them in 20 of 21 medians; the
 * K-quants' EQ_KPF is not switched): settled
 * on the caller's thread before a call's tasks run (read_int8_grouped), read by the kernels as a plain int. */
static int g_gemv_prefetch = -1;
void ek_set_gemv_prefetch(int on) { g_gemv_prefetch = on < 0 ? -1 : on != 0; }
int ek_get_gemv_prefetch(void) { return settle_switch(&g_gemv_prefetch, "EK_GEMV_PREFETCH", !ek_cpu_splits_zmm()); }

/* The path a format runs on this CPU under the current limit. */
static int path_for(int format) {
    if (ek_get_force_reference()) return P_SCALAR;
    int f = ek_cpu_features(), lim = g_isa_limit;
    if ((format == EK_WF_BF16 || format == EK_WF_INT8) && (f & EK_CPU_AVX512F) && lim > EK_ISA_AVXVNNI && ek_get_gemv_ymm())
        lim = EK_ISA_AVXVNNI;   /* ymm: AVX-VNNI's kernels where the CPU has them, else AVX2's */
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
    if (format == EK_WF_F32)   /* kernels.c: zmm for one input row (ek_gemv_f32_zmm), else AVX2 */
        return !((f & EK_CPU_AVX2_FMA) && lim >= EK_ISA_AVX2) ? P_SCALAR : ek_gemv_f32_zmm() ? P_AVX512F : P_AVX2;
    if (format == EK_WF_Q4_K || format == EK_WF_Q5_K || format == EK_WF_Q6_K) {    /* K-quants: zmm or ymm kernels */
        if (lim >= EK_ISA_AVX512 && avx512 && (f & EK_CPU_AVX2_FMA) && (f & EK_CPU_F16C)) return P_AVX512BW;
        return lim >= EK_ISA_AVX2 && (f & EK_CPU_AVX2_FMA) && (f & EK_CPU_F16C) ? P_AVX2 : P_SCALAR;
    }
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

static void quantize_act_k(const float *x, long m, long k, int8_t *q, float *d, int16_t *bsums);

/* ---- the x8 layouts: ggml blocks regrouped by 8 (see ek_repack_x8) ---- */

static int is_x8(int f) {
    return f == EK_WF_Q8_0X8 || f == EK_WF_Q4_0X8 || f == EK_WF_Q4_1X8 || f == EK_WF_Q5_0X8 || f == EK_WF_Q5_1X8;
}
static int is_q5x8(int f) { return f == EK_WF_Q5_0X8 || f == EK_WF_Q5_1X8; }
/* The ggml format an x8 layout regroups (others: themselves). */
static int base_format(int f) {
    return f == EK_WF_Q8_0X8 ? EK_WF_Q8_0 : f == EK_WF_Q4_0X8 ? EK_WF_Q4_0 : f == EK_WF_Q4_1X8 ? EK_WF_Q4_1
         : f == EK_WF_Q5_0X8 ? EK_WF_Q5_0 : f == EK_WF_Q5_1X8 ? EK_WF_Q5_1 : f;
}
static long block_bytes(int base) {
    return base == EK_WF_INT8 ? 32 : base == EK_WF_Q8_0 ? 34 : base == EK_WF_Q4_0 ? 18 : base == EK_WF_Q5_0 ? 22 : base == EK_WF_Q5_1 ? 24 : 20;
}
/* Bytes before a block's values: the f16 scale (and minimum), and the Q5 formats' 32 high bits */
static long header_bytes(int base) {
    return base == EK_WF_INT8 ? 0 : base == EK_WF_Q4_1 ? 4 : base == EK_WF_Q5_0 ? 6 : base == EK_WF_Q5_1 ? 8 : 2;
}
/* The 32-value block formats with a Q4_1-style minimum (q8_1 activations, m·s correction). */
static int has_min(int base) { return base == EK_WF_Q4_1 || base == EK_WF_Q5_1; }

/* The Q5 x8 layout. A full group of 8 blocks (22 / 24 bytes each as ggml's) holds the 8 f16 scales, (Q5_1) the 8 f16
 * minima, then for each quad of blocks (4j…4j+3) two 64-bit masks: bits 16L…16L+15 of the first are block 4j+L's
 * qh bits 0…15 (its values 0…15, the low nibbles), of the second its qh bits 16…31 (values 16…31, the high
 * nibbles), so one masked byte add gives the 5th bits of four blocks; then the 8 blocks' 16 nibble bytes in order.
 * The last nb % 8 blocks of a row stay ggml blocks. Same bytes per row. pack: ggml → x8, else back. */
static void x8_row5(int base, const uint8_t *src, uint8_t *dst, long nb, int pack) {
    const int one = base == EK_WF_Q5_1;
    const long B = 22 + 2 * one, full = nb / 8 * 8;
    for (long g0 = 0; g0 < full; g0 += 8) {
        const long grp = g0 * B, qm = grp + 16 + 16 * one, q = qm + 32;
        for (long j = 0; j < 8; j++) {
            const long plain = (g0 + j) * B, hb = plain + 2 + 2 * one, quad = qm + 16 * (j / 4) + 2 * (j % 4);
            long off[5][3] = { { plain, grp + 2 * j, 2 }, { plain + 2, grp + 16 + 2 * j, one ? 2 : 0 },
                               { hb, quad, 2 }, { hb + 2, quad + 8, 2 }, { hb + 4, q + 16 * j, 16 } };
            for (int f = 0; f < 5; f++) {
                if (off[f][2] == 0) continue;
                if (pack) memcpy(dst + off[f][1], src + off[f][0], (size_t)off[f][2]);
                else memcpy(dst + off[f][0], src + off[f][1], (size_t)off[f][2]);
            }
        }
    }
    memcpy(dst + full * B, src + full * B, (size_t)((nb - full) * B));   /* the last blocks as they are */
}

/* Copies block b of an x8 row (nb blocks) into `out` as the ggml block. */
static void x8_block(int base, const uint8_t *row, long nb, long b, uint8_t *out) {
    if (base == EK_WF_Q5_0 || base == EK_WF_Q5_1) {
        const int one = base == EK_WF_Q5_1;
        const long B = 22 + 2 * one, g0 = b / 8 * 8, j = b - g0;
        if (g0 + 8 > nb) { memcpy(out, row + b * B, (size_t)B); return; }
        const uint8_t *grp = row + g0 * B, *qm = grp + 16 + 16 * one, *quad = qm + 16 * (j / 4) + 2 * (j % 4);
        uint8_t *hb = out + 2 + 2 * one;
        memcpy(out, grp + 2 * j, 2);
        if (one) memcpy(out + 2, grp + 16 + 2 * j, 2);
        memcpy(hb, quad, 2); memcpy(hb + 2, quad + 8, 2);
        memcpy(hb + 4, qm + 32 + 16 * j, 16);
        return;
    }
    long B = block_bytes(base), h = header_bytes(base), g0 = b / 8 * 8, g = nb - g0 < 8 ? nb - g0 : 8, j = b - g0;
    const uint8_t *grp = row + g0 * B;
    out[0] = grp[2 * j]; out[1] = grp[2 * j + 1];
    if (h == 4) { out[2] = grp[2 * g + 2 * j]; out[3] = grp[2 * g + 2 * j + 1]; }
    memcpy(out + h, grp + h * g + (B - h) * j, (size_t)(B - h));
}

long ek_quant_row_bytes(int format, long k) {
    long nb = (k + 31) / 32;
    switch (format) {
    case EK_WF_F32: return 4 * k;
    case EK_WF_BF16: return 2 * k;
    case EK_WF_INT8: return 32 * nb;
    case EK_WF_Q8_0: case EK_WF_Q8_0X8: return 34 * nb;
    case EK_WF_Q4_0: case EK_WF_Q4_0X8: return 18 * nb;
    case EK_WF_Q4_1: case EK_WF_Q4_1X8: return 20 * nb;
    case EK_WF_Q5_0: case EK_WF_Q5_0X8: return 22 * nb;
    case EK_WF_Q5_1: case EK_WF_Q5_1X8: return 24 * nb;
    case EK_WF_Q4_K: return 144 * ((k + 255) / 256);
    case EK_WF_Q5_K: return 176 * ((k + 255) / 256);
    case EK_WF_Q6_K: return 210 * ((k + 255) / 256);
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
    float amax = hmax256(m);
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

#if EQ_X86
/* The full blocks [0, nfull) of one row on AVX2, as the plain loop below: the f16 rounding by F16C, one instruction
 * each way instead of two calls to the array conversions with n = 1 (the same values: IEEE round-to-nearest-even
 * both ways; a NaN stays a quiet NaN of its sign). */
EQ_AVX2 static inline float f16_round_f16c(float f) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT)));
}
EQ_AVX2 static void quantize_act_row_avx2(int format, const float *xr, long nfull, int8_t *q, float *d, float *c) {
    for (long b = 0; b < nfull; b++) {
        int sum;
        const float db = quantize_block_avx2(xr + b * 32, q + b * 32, &sum) / 127.0f;
        const float dq = format == EK_WF_INT8 ? db : f16_round_f16c(db);
        d[b] = dq;
        if (format == EK_WF_Q4_0) c[b] = 8.0f * dq * (float)sum;
        else if (format == EK_WF_Q5_0) c[b] = 16.0f * dq * (float)sum;
        else if (has_min(format)) c[b] = f16_round_f16c(db * (float)sum);
        else c[b] = 0.0f;
    }
}
#endif

/* x [m, k] → q [m, nb*32] (zero padded), d/c [m, nb]. */
static void quantize_act_impl(int format, const float *x, long m, long k, int8_t *q, float *d, float *c, int plain) {
    long nb = (k + 31) / 32;
    (void)plain;
#if EQ_X86
    int simd = !plain && !ek_get_force_reference() && (ek_cpu_features() & EK_CPU_AVX2_FMA) &&
               (ek_cpu_features() & EK_CPU_F16C);   /* quantize_act_row_avx2 rounds the scales with F16C */
#elif defined(__aarch64__)
    int simd = !plain && !ek_get_force_reference() && (ek_cpu_features() & EK_CPU_NEON);   /* NEON hook */
#define EQ_QBLOCK ek_neon_quantize_block
#endif
    for (long i = 0; i < m; i++) {
        const float *xr = x + i * k;
        long b = 0;
#if EQ_X86
        if (simd) {
            b = k / 32;
            quantize_act_row_avx2(format, xr, b, q + i * nb * 32, d + i * nb, c + i * nb);
        }
#endif
        for (; b < nb; b++) {
            long j0 = b * 32, len = k - j0 < 32 ? k - j0 : 32;
#if defined(__aarch64__)
            if (simd && len == 32) {
                int sum;
                float db = EQ_QBLOCK(xr + j0, q + (i * nb + b) * 32, &sum) / 127.0f;
                float dq = format == EK_WF_INT8 ? db : f16_round(db);
                d[i * nb + b] = dq;
                if (format == EK_WF_Q4_0) c[i * nb + b] = 8.0f * dq * (float)sum;
                else if (format == EK_WF_Q5_0) c[i * nb + b] = 16.0f * dq * (float)sum;
                else if (has_min(format)) c[i * nb + b] = f16_round(db * (float)sum);
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
            else if (format == EK_WF_Q5_0) c[i * nb + b] = 16.0f * dq * (float)sum;
            else if (has_min(format)) c[i * nb + b] = f16_round(db * (float)sum);
            else c[i * nb + b] = 0.0f;
        }
    }
}

/* 4-bit x8 kernels read two blocks' nibbles with one 32-byte load; their activations are arranged to match:
 * each pair of blocks (2p, 2p+1) becomes [a0..15, b0..15, a16..31, b16..31]; an odd last block stays as is. */
static void interleave_pairs(int8_t *q, long m, long nb) {
    int8_t t[64];
    for (long i = 0; i < m; i++)
        for (long b = 0; b + 2 <= nb; b += 2) {
            int8_t *p = q + (i * nb + b) * 32;
            memcpy(t, p, 16); memcpy(t + 16, p + 32, 16); memcpy(t + 32, p + 16, 16); memcpy(t + 48, p + 48, 16);
            memcpy(p, t, 64);
        }
}

/* The zmm 4-bit kernels' arrangement (x8z_group): in each full group of 8 blocks, blocks 4j…4j+3 (a, b, c, d) become
 * [a0..15 b0..15 c0..15 d0..15 a16..31 b16..31 c16..31 d16..31]; the blocks of a shorter last group are arranged by
 * pairs, as interleave_pairs does. */
static void interleave_quads(int8_t *q, long m, long nb, int tail_pairs) {
    int8_t t[128];
    const long full = nb / 8 * 8;
    for (long i = 0; i < m; i++) {
        for (long b = 0; b < full; b += 4) {
            int8_t *p = q + (i * nb + b) * 32;
            for (int j = 0; j < 4; j++) { memcpy(t + 16 * j, p + 32 * j, 16); memcpy(t + 64 + 16 * j, p + 32 * j + 16, 16); }
            memcpy(p, t, 128);
        }
        if (full < nb && tail_pairs) interleave_pairs(q + (i * nb + full) * 32, 1, nb - full);
    }
}

static void quantize_act(int format, const float *x, long m, long k, int8_t *q, float *d, float *c) {
    quantize_act_impl(format, x, m, k, q, d, c, 0);
}

void ek_quantize_activations(int format, const float *x, long m, long k, int8_t *q, float *d, float *c) {
    quantize_act(format, x, m, k, q, d, c);
}

void ek_quantize_activations_ref(int format, const float *x, long m, long k, int8_t *q, float *d, float *c) {
    quantize_act_impl(format, x, m, k, q, d, c, 1);
}

void ek_quantize_activations_q8k(const float *x, long m, long k, int8_t *q, float *d, int16_t *bsums) {
    quantize_act_k(x, m, k, q, d, bsums);
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
    const int16_t *xbs;      /* K-quants: Q8_K sums of 16 activations [m, k/16] */
    const uint16_t *xb;      /* bf16 activations */
    const float *xs;         /* bf16 on AVX2: x with every full 16 split into its even and odd elements [m, k] */
    const float *bias;
    float *y;
    long m, n, k, nb, row_bytes;
    int streams;             /* x8 kernels: rows walked side by side (ek_get_x8_streams) */
} qctx;

/* ------------------------------------------------------------------------------------------------ */
/* K-quants (Q4_K, Q5_K, Q6_K: super-blocks of 256) against Q8_K activations, llama.cpp's arithmetic      */
/*
 * Activations (ggml's quantize_row_q8_K): per block of 256, max = the value of largest |x|, iscale = −127/max,
 * q = round-to-nearest-even(iscale·x) capped at 127, d = 1/iscale in fp32 (not f16), bsums = Σ q per 16.
 * Per super-block of the weights (sc, m: 6-bit scales/minima of the 8 sub-blocks of 32; Q6_K: int8 scales of
 * 16 sub-blocks of 16, values q−32):
 *   Q4_K/Q5_K:  d_w d_x Σ_j sc_j Σ_{l∈j} q_l x_l  −  dmin_w d_x Σ_j m_j (bsums_{2j} + bsums_{2j+1})
 *   Q6_K:       d_w d_x Σ_j sc_j (Σ_{l∈j} q_l x_l − 32 bsums_j)
 * with every inner sum an exact int32, as ggml_vec_dot_q{4,5,6}_K_q8_K. Rows hold k/256 super-blocks (k a
 * multiple of 256, as GGUF stores K-quant rows).
 */
static int is_kq(int f) { return f == EK_WF_Q4_K || f == EK_WF_Q5_K || f == EK_WF_Q6_K; }

#if EQ_X86
/* One Q8_K block on AVX2: the same operations as the plain loop below (first value of largest |x|, iscale·x
 * rounded half to even, capped at 127, sums of 16), so the same bytes. Returns 0 for an all-zero block. */
EQ_AVX2 static int quantize_block_k_avx2(const float *xb, int8_t *qb, float *d, int16_t *bsums) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_setzero_ps();
    for (int j = 0; j < 256; j += 8) a = _mm256_max_ps(a, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + j)));
    float amax = hmax256(a);
    if (amax == 0.0f) return 0;
    float mx = 0;
    for (int j = 0; j < 256; j++) if (fabsf(xb[j]) == amax) { mx = xb[j]; break; }
    float iscale = -127.0f / mx;
    const __m256 s = _mm256_set1_ps(iscale);
    const __m256i cap = _mm256_set1_epi32(127);
    for (int g = 0; g < 8; g++) {                 /* 32 values: two sums of 16 */
        const float *xg = xb + 32 * g;
        __m256i i0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg), s)), cap);
        __m256i i1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 8), s)), cap);
        __m256i i2 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 16), s)), cap);
        __m256i i3 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 24), s)), cap);
        __m256i s01 = _mm256_add_epi32(i0, i1), s23 = _mm256_add_epi32(i2, i3);
        __m256i hs = _mm256_hadd_epi32(s01, s23);          /* [a01 a23 b01 b23 | a45 a67 b45 b67] */
        hs = _mm256_hadd_epi32(hs, hs);                      /* [a0-3 b0-3 . . | a4-7 b4-7 . .] */
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(hs), _mm256_extracti128_si256(hs, 1));
        bsums[2 * g] = (int16_t)_mm_cvtsi128_si32(t);
        bsums[2 * g + 1] = (int16_t)_mm_extract_epi32(t, 1);
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qb + 32 * g), p);
    }
    *d = 1.0f / iscale;
    return 1;
}
#endif

static void quantize_act_k(const float *x, long m, long k, int8_t *q, float *d, int16_t *bsums) {
    long nb = k / 256;
#if EQ_X86
    const int simd = !ek_get_force_reference() && (ek_cpu_features() & EK_CPU_AVX2_FMA);
#endif
    for (long i = 0; i < m * nb; i++) {
        const float *xb = x + i * 256;
        int8_t *qb = q + i * 256;
#if EQ_X86
        if (simd) {
            if (quantize_block_k_avx2(xb, qb, d + i, bsums + i * 16)) continue;
            d[i] = 0.0f;
            memset(qb, 0, 256);
            for (int j = 0; j < 16; j++) bsums[i * 16 + j] = 0;
            continue;
        }
#endif
        float amax = 0, mx = 0;
        for (int j = 0; j < 256; j++) { float a = fabsf(xb[j]); if (a > amax) { amax = a; mx = xb[j]; } }
        if (amax == 0.0f) {
            d[i] = 0.0f;
            memset(qb, 0, 256);
            for (int j = 0; j < 16; j++) bsums[i * 16 + j] = 0;
            continue;
        }
        float iscale = -127.0f / mx;
        for (int j = 0; j < 256; j++) { int v = (int)lrintf(iscale * xb[j]); qb[j] = (int8_t)(v > 127 ? 127 : v); }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += qb[j * 16 + l];
            bsums[i * 16 + j] = (int16_t)sum;
        }
        d[i] = 1.0f / iscale;
    }
}

static long kq_block_bytes(int format) { return format == EK_WF_Q4_K ? 144 : format == EK_WF_Q5_K ? 176 : 210; }

/* Scalar dot of weight row r with activation row i (also the "scalar" dispatch level). */
static float row_dot_k_scalar(const qctx *c, long r, long i) {
    const long nb = c->k / 256, bb = kq_block_bytes(c->format);
    const uint8_t *wr = c->w + r * c->row_bytes;
    const int8_t *xq = c->xq + i * c->k;
    const float *xd = c->xd + i * nb;
    const int16_t *bs = c->xbs + i * nb * 16;
    int8_t a[256];
    float acc = 0, accm = 0;
    for (long b = 0; b < nb; b++) {
        const uint8_t *x = wr + b * bb;
        const int8_t *q8 = xq + b * 256;
        const int16_t *bsum = bs + b * 16;
        kq_values(c->format, x, a);
        int sumi = 0;
        if (c->format == EK_WF_Q6_K) {
            const int8_t *sc = (const int8_t *)(x + 192);
            for (int j = 0; j < 16; j++) {
                int s = 0;
                for (int l = 0; l < 16; l++) s += a[16 * j + l] * q8[16 * j + l];
                sumi += sc[j] * s;
            }
            acc += f16_to_f32(rd16(x + 208)) * xd[b] * (float)sumi;
        } else {
            int summ = 0;
            for (int j = 0; j < 8; j++) {
                int sc, mn, s = 0;
                kq_scale_min(j, x + 4, &sc, &mn);
                for (int l = 0; l < 32; l++) s += a[32 * j + l] * q8[32 * j + l];
                sumi += sc * s;
                summ += mn * (bsum[2 * j] + bsum[2 * j + 1]);
            }
            acc += f16_to_f32(rd16(x)) * xd[b] * (float)sumi;
            accm += f16_to_f32(rd16(x + 2)) * xd[b] * (float)summ;
        }
    }
    return acc - accm;
}

#ifndef EQ_KPF
#define EQ_KPF 1024   /* software prefetch distance (bytes) in the K-quant kernel */
#endif
#if EQ_X86
/* The decode GEMVs' row walk: a thread's rows [r0, r1) cut into `parts` equal parts; walk step t < walk_steps
 * computes row t of every part side by side, and each later step one leftover row. walk_rows fills rows[] for step t
 * and returns how many it holds (parts, or 1). Several weight streams in flight per thread read DRAM faster than
 * one (bench/micro/gemv_streams.c). */
static inline long walk_steps(long r0, long r1, int parts) {
    long p = (r1 - r0) / parts;
    return p + (r1 - r0 - parts * p);
}
static inline int walk_rows(long r0, long r1, int parts, long t, long *rows) {
    long p = (r1 - r0) / parts;
    if (t < p) {
        for (int u = 0; u < parts; u++) rows[u] = r0 + u * p + t;
        return parts;
    }
    rows[0] = r0 + (parts - 1) * p + t;
    return 1;
}

/* AVX2: unsigned values (Q6_K: q+32, corrected with 32·bsums) × int8 activations with vpmaddubsw (|sum of a
 * pair| ≤ 63·127·2 < 2^15), then vpmaddwd by the sub-block scales into exact int32 sums; one fp32 FMA per
 * super-block. The minima (Q4_K/Q5_K) and the Q6_K offset: vpmaddwd of the 16 bsums by the matching scales. */
/* Super-block b of row wr against activation row (xq, xd, bs): into *acc (and *accm, the minima). */
EQ_AVX2 static inline __attribute__((always_inline)) void k_block_avx2(const qctx *c, const uint8_t *wr, long b, const int8_t *xq,
                                                                       const float *xd, const int16_t *bs, __m256 *acc, __m256 *accm) {
    const long bb = kq_block_bytes(c->format);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03), one = _mm256_set1_epi8(1);
    const uint8_t *x = wr + b * bb;
    const int8_t *q8 = xq + b * 256;
    if (EQ_KPF) {                /* the lines of the super-block EQ_KPF bytes ahead */
        _mm_prefetch((const char *)x + EQ_KPF, _MM_HINT_T0);
        _mm_prefetch((const char *)x + EQ_KPF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)x + EQ_KPF + 128, _MM_HINT_T0);
        if (bb > 192) _mm_prefetch((const char *)x + EQ_KPF + 192, _MM_HINT_T0);
    }
    const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
    __m256i sumi = _mm256_setzero_si256();
    if (c->format == EK_WF_Q6_K) {
        const int8_t *sc = (const int8_t *)(x + 192);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));   /* 16 scales */
        const uint8_t *ql = x, *qh = x + 128;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)qh);
            __m256i v[4];
            v[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
            v[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
            v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
            v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
            for (int qq = 0; qq < 4; qq++) {
                __m256i p = _mm256_maddubs_epi16(v[qq], _mm256_loadu_si256((const __m256i *)(q8 + 128 * half + 32 * qq)));
                int j = 8 * half + 2 * qq;         /* scales j (values 0..15) and j+1 (16..31) */
                __m256i s = _mm256_set_m128i(_mm_set1_epi16((short)sc[j + 1]), _mm_set1_epi16((short)sc[j]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        /* − 32 Σ_j sc_j bsums_j */
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(bsv, sc16), 5));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(rd16(x + 208)) * xd[b]), _mm256_cvtepi32_ps(sumi), *acc);
    } else {
        /* the 8 6-bit scales to bytes 0..7 and minima to bytes 8..15 of u (kq_scale_min, 4 words at once) */
        uint32_t u[4];
        memcpy(u, x + 4, 12);
        u[3] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
        const uint32_t mins_lo = u[1] & 0x3f3f3f3f;
        u[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
        u[2] = mins_lo;
        u[0] &= 0x3f3f3f3f;
        const uint8_t *sc = (const uint8_t *)u;
        const uint8_t *q4 = c->format == EK_WF_Q5_K ? x + 48 : x + 16;
        __m256i hb = c->format == EK_WF_Q5_K ? _mm256_loadu_si256((const __m256i *)(x + 16)) : _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(q4 + 32 * j));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (c->format == EK_WF_Q5_K) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                hb = _mm256_srli_epi16(hb, 2);
            }
            __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(q8 + 64 * j)));
            __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 64 * j + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(plo, _mm256_set1_epi16((short)sc[2 * j])),
                                                           _mm256_madd_epi16(phi, _mm256_set1_epi16((short)sc[2 * j + 1]))));
        }
        /* minima: Σ_j m_j (bsums_2j + bsums_2j+1) */
        __m256i pairs = _mm256_madd_epi16(bsv, _mm256_set1_epi16(1));
        __m256i mv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sc + 8)));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(rd16(x)) * xd[b]), _mm256_cvtepi32_ps(sumi), *acc);
        *accm = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(rd16(x + 2)) * xd[b]), _mm256_cvtepi32_ps(_mm256_mullo_epi32(pairs, mv)), *accm);
    }
}

/* Rows [r0, r1) walked in four parts (walk_rows), super-block by super-block; each row's float is the same
 * whichever step computed it. */
EQ_AVX2 static void rows_k_avx2(const qctx *c, long r0, long r1) {
    const long nb = c->k / 256;
    for (long t = 0, steps = walk_steps(r0, r1, 4); t < steps; t++) {
        long rows[4];
        const int nr = walk_rows(r0, r1, 4, t, rows);
        for (long i = 0; i < c->m; i++) {
            const int8_t *xq = c->xq + i * c->k;
            const float *xd = c->xd + i * nb;
            const int16_t *bs = c->xbs + i * nb * 16;
            __m256 acc[4], accm[4];
            for (int u = 0; u < 4; u++) acc[u] = accm[u] = _mm256_setzero_ps();
            for (long b = 0; b < nb; b++) {
                if (nr == 4)
                    for (int u = 0; u < 4; u++) k_block_avx2(c, c->w + rows[u] * c->row_bytes, b, xq, xd, bs, &acc[u], &accm[u]);
                else k_block_avx2(c, c->w + rows[0] * c->row_bytes, b, xq, xd, bs, &acc[0], &accm[0]);
            }
            for (int u = 0; u < nr; u++) {
                float s;
                EQ_HSUM256(_mm256_sub_ps(acc[u], accm[u]), s);
                c->y[i * c->n + rows[u]] = s + (c->bias ? c->bias[rows[u]] : 0.0f);
            }
        }
    }
}
#endif

#if EQ_X86
/* AVX-512BW: the AVX2 kernel's arithmetic (vpmaddubsw into int16 pairs, vpmaddwd by the sub-block scales into exact
 * int32 sums, one fp32 FMA per super-block) on 64 values per instruction. Q6_K: one 64-byte load of ql covers 64
 * values of a half with its 2 high bits from qh and qh >> 2 side by side; Q4_K/Q5_K: one 64-byte load of nibbles
 * covers sub-blocks 4j' and 4j'+2 (low nibbles) and 4j'+1, 4j'+3 (high), their activations joined from two 32-byte
 * halves. The scales reach their lanes by one vpermw each. Session 17: single-thread hot rows of Q6_K / Q4_K read
 * 11-13 GB/s with the AVX2 kernel, below what a core streams from memory. */
EQ_AVX512BW static inline __attribute__((always_inline)) __m512i kq_join(const int8_t *a, const int8_t *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}
/* vpermw index: word lanes [a ×16 | b ×16] */
#define EQ_KQ_IDX2(a, b) _mm512_set_epi16(b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, \
                                          a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a)
/* word lanes [a ×8 | a+1 ×8 | a+2 ×8 | a+3 ×8] */
EQ_AVX512BW static inline __m512i kq_spread4(__m512i v, int a) {
    const __m512i base = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2,
                                          1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_epi16(_mm512_add_epi16(base, _mm512_set1_epi16((short)a)), v);
}
EQ_AVX512BW static inline __attribute__((always_inline)) void k_block_avx512(const qctx *c, const uint8_t *wr, long b,
        const int8_t *xq, const float *xd, const int16_t *bs, __m512 *acc, __m256 *accm) {
    const long bb = kq_block_bytes(c->format);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const uint8_t *x = wr + b * bb;
    const int8_t *q8 = xq + b * 256;
    if (EQ_KPF) {
        _mm_prefetch((const char *)x + EQ_KPF, _MM_HINT_T0);
        _mm_prefetch((const char *)x + EQ_KPF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)x + EQ_KPF + 128, _MM_HINT_T0);
        if (bb > 192) _mm_prefetch((const char *)x + EQ_KPF + 192, _MM_HINT_T0);
    }
    const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
    __m512i sumi = _mm512_setzero_si512();
    if (c->format == EK_WF_Q6_K) {
        const int8_t *sc = (const int8_t *)(x + 192);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));   /* 16 scales */
        const __m512i scw = _mm512_castsi256_si512(sc16), m30 = _mm512_set1_epi8(0x30);
        for (int half = 0; half < 2; half++) {
            const __m512i l = _mm512_loadu_si512((const void *)(x + 64 * half));
            const __m256i h = _mm256_loadu_si256((const __m256i *)(x + 128 + 32 * half));
            const __m512i h2 = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 2), 1);
            const __m512i v01 = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_slli_epi16(h2, 4), m30));
            const __m512i v23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_and_si512(h2, m30));
            const __m512i p01 = _mm512_maddubs_epi16(v01, _mm512_loadu_si512((const void *)(q8 + 128 * half)));
            const __m512i p23 = _mm512_maddubs_epi16(v23, _mm512_loadu_si512((const void *)(q8 + 128 * half + 64)));
            sumi = _mm512_add_epi32(sumi, _mm512_add_epi32(_mm512_madd_epi16(p01, kq_spread4(scw, 8 * half)),
                                                           _mm512_madd_epi16(p23, kq_spread4(scw, 8 * half + 4))));
        }
        /* − 32 Σ_j sc_j bsums_j */
        sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_madd_epi16(bsv, sc16), 5)));
        *acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(rd16(x + 208)) * xd[b]), _mm512_cvtepi32_ps(sumi), *acc);
    } else {
        /* the 8 6-bit scales to bytes 0..7 and minima to bytes 8..15 of s16 (kq_scale_min, 4 words at once), in one
         * vector: with u0, u1, u2 the scale bytes' words, lanes u0 & 0x3f3f3f3f, (u2 & 0x0f0f0f0f) | ((u0 >> 6) &
         * 0x03030303) << 4, u1 & 0x3f3f3f3f, ((u2 >> 4) & 0x0f0f0f0f) | ((u1 >> 6) & 0x03030303) << 4 (the 16-byte
         * load reads 4 bytes of nibbles past the scales, inside the block) */
        const __m128i v = _mm_loadu_si128((const __m128i *)(x + 4));
        const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), bq = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
        const __m128i even = _mm_and_si128(a, _mm_set1_epi32(0x3f3f3f3f));
        const __m128i odd = _mm_or_si128(_mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)), _mm_set1_epi32(0x0f0f0f0f)),
                                         _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(bq, 6), _mm_set1_epi32(0x03030303)), 4));
        const __m128i s16 = _mm_blend_epi32(even, odd, 0xA);
        const __m512i scw = _mm512_castsi128_si512(_mm_cvtepu8_epi16(s16));
        const int five = c->format == EK_WF_Q5_K;
        const uint8_t *q4 = five ? x + 48 : x + 16;
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(x + 16)) : _mm256_setzero_si256();
        const __m512i b4 = _mm512_set1_epi8(0x10);
        const __m512i idx[4] = { EQ_KQ_IDX2(0, 2), EQ_KQ_IDX2(1, 3), EQ_KQ_IDX2(4, 6), EQ_KQ_IDX2(5, 7) };
        for (int jp = 0; jp < 2; jp++) {   /* sub-blocks 4jp … 4jp+3 */
            const __m512i v = _mm512_loadu_si512((const void *)(q4 + 64 * jp));
            __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            if (five) {          /* 5th bits: sub-block s takes bit s of qh[l] */
                const __m512i hq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(qh, 4 * jp)),
                                                      _mm256_srli_epi16(qh, 4 * jp + 2), 1);
                lo = _mm512_or_si512(lo, _mm512_and_si512(_mm512_slli_epi16(hq, 4), b4));
                hi = _mm512_or_si512(hi, _mm512_and_si512(_mm512_slli_epi16(hq, 3), b4));
            }
            const int8_t *a = q8 + 128 * jp;
            const __m512i plo = _mm512_maddubs_epi16(lo, kq_join(a, a + 64));
            const __m512i phi = _mm512_maddubs_epi16(hi, kq_join(a + 32, a + 96));
            sumi = _mm512_add_epi32(sumi, _mm512_add_epi32(_mm512_madd_epi16(plo, _mm512_permutexvar_epi16(idx[2 * jp], scw)),
                                                           _mm512_madd_epi16(phi, _mm512_permutexvar_epi16(idx[2 * jp + 1], scw))));
        }
        /* minima: m_j (bsums_2j + bsums_2j+1) in one vpmaddwd, each minimum beside its two sums of 16 */
        const __m128i mins = _mm_srli_si128(s16, 8);
        const __m256i mw = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
        *acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(rd16(x)) * xd[b]), _mm512_cvtepi32_ps(sumi), *acc);
        *accm = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(rd16(x + 2)) * xd[b]), _mm256_cvtepi32_ps(_mm256_madd_epi16(bsv, mw)), *accm);
    }
}

EQ_AVX512BW static void rows_k_avx512(const qctx *c, long r0, long r1) {
    const long nb = c->k / 256;
    for (long t = 0, steps = walk_steps(r0, r1, 4); t < steps; t++) {
        long rows[4];
        const int nr = walk_rows(r0, r1, 4, t, rows);
        for (long i = 0; i < c->m; i++) {
            const int8_t *xq = c->xq + i * c->k;
            const float *xd = c->xd + i * nb;
            const int16_t *bs = c->xbs + i * nb * 16;
            __m512 acc[4];
            __m256 accm[4];
            for (int u = 0; u < 4; u++) { acc[u] = _mm512_setzero_ps(); accm[u] = _mm256_setzero_ps(); }
            for (long b = 0; b < nb; b++) {
                if (nr == 4)
                    for (int u = 0; u < 4; u++) k_block_avx512(c, c->w + rows[u] * c->row_bytes, b, xq, xd, bs, &acc[u], &accm[u]);
                else k_block_avx512(c, c->w + rows[0] * c->row_bytes, b, xq, xd, bs, &acc[0], &accm[0]);
            }
            for (int u = 0; u < nr; u++) {
                float s;
                EQ_HSUM256(accm[u], s);
                c->y[i * c->n + rows[u]] = _mm512_reduce_add_ps(acc[u]) - s + (c->bias ? c->bias[rows[u]] : 0.0f);
            }
        }
    }
}
#endif

/* ---- scalar block dots (also the "scalar" dispatch level) ---- */

static float row_dot_scalar(const qctx *c, long r, long i) {
    const uint8_t *wr = c->w + r * c->row_bytes;
    const int8_t *xq = c->xq + i * c->nb * 32;
    const float *xd = c->xd + i * c->nb, *xc = c->xc + i * c->nb;
    const int fmt = base_format(c->format), x8 = is_x8(c->format);
    uint8_t tmp[34];
    float acc = 0;
    for (long b = 0; b < c->nb; b++) {
        const int8_t *xb = xq + b * 32;
        int s = 0;
        if (fmt == EK_WF_INT8) {
            const int8_t *q = (const int8_t *)wr + b * 32;
            for (int j = 0; j < 32; j++) s += q[j] * xb[j];
            acc += xd[b] * (float)s;
            continue;
        }
        const uint8_t *blk = wr + b * block_bytes(fmt);
        if (x8) { x8_block(fmt, wr, c->nb, b, tmp); blk = tmp; }
        switch (fmt) {
        case EK_WF_Q8_0: {
            const int8_t *q = (const int8_t *)(blk + 2);
            for (int j = 0; j < 32; j++) s += q[j] * xb[j];
            acc += f16_to_f32(rd16(blk)) * xd[b] * (float)s;
            break;
        }
        case EK_WF_Q4_0: {
            const uint8_t *q = blk + 2;
            for (int j = 0; j < 16; j++) s += (q[j] & 0xF) * xb[j] + (q[j] >> 4) * xb[j + 16];
            float dw = f16_to_f32(rd16(blk));
            acc += dw * xd[b] * (float)s - dw * xc[b];
            break;
        }
        case EK_WF_Q4_1: {
            const uint8_t *q = blk + 4;
            for (int j = 0; j < 16; j++) s += (q[j] & 0xF) * xb[j] + (q[j] >> 4) * xb[j + 16];
            acc += f16_to_f32(rd16(blk)) * xd[b] * (float)s + f16_to_f32(rd16(blk + 2)) * xc[b];
            break;
        }
        case EK_WF_Q5_0: case EK_WF_Q5_1: {   /* values q | h<<4 in 0..31; Q5_0's −16 through xc = 16·d_x·Σq_x */
            const int one = fmt == EK_WF_Q5_1;
            const uint8_t *hb = blk + 2 + 2 * one, *q = hb + 4;
            uint32_t qh = (uint32_t)hb[0] | (uint32_t)hb[1] << 8 | (uint32_t)hb[2] << 16 | (uint32_t)hb[3] << 24;
            for (int j = 0; j < 16; j++)
                s += ((q[j] & 0xF) | (int)((qh >> j) & 1) << 4) * xb[j] + ((q[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) * xb[j + 16];
            float dw = f16_to_f32(rd16(blk));
            acc += dw * xd[b] * (float)s + (one ? f16_to_f32(rd16(blk + 2)) * xc[b] : -dw * xc[b]);
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
            } else if (is_kq(c->format)) {
                s = row_dot_k_scalar(c, r, i);
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

/* signed int8 weights at WP (32 bytes), block B of the activations, scale SC */
#define EQ_STEP_S8(DOT, ACC, WP, B, SC) do { \
        __m256i xv_ = _mm256_load_si256((const __m256i *)(xq + (B) * 32)); \
        __m256i wv_ = _mm256_loadu_si256((const __m256i *)(WP)); \
        __m256i p_ = DOT(_mm256_sign_epi8(wv_, wv_), _mm256_sign_epi8(xv_, wv_)); /* |w| unsigned: exact for −128 */ \
        ACC = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_set1_ps(SC), ACC); } while (0)

/* 4-bit block at BLK (nibbles at BLK+QO), block B; CORR += Q4_0: −d·c, Q4_1: m·c */
#define EQ_STEP_Q4(DOT, ACC, CORR, BLK, QO, B) do { \
        __m128i r_ = _mm_loadu_si128((const __m128i *)((BLK) + (QO))); \
        __m256i q_ = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(r_, 4), r_), m4); \
        __m256i p_ = DOT(q_, _mm256_load_si256((const __m256i *)(xq + (B) * 32))); \
        float dw_ = _cvtsh_ss(rd16(BLK)); \
        ACC = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_set1_ps(dw_ * xd[B]), ACC); \
        CORR += ((QO) == 2 ? -dw_ : _cvtsh_ss(rd16((BLK) + 2))) * xc[B]; } while (0)

/* 5-bit block at BLK (qh at BLK+HO, nibbles at BLK+HO+4), block B: the nibbles as EQ_STEP_Q4, each value's 5th bit
 * from qh spread to its byte (bit i → byte i, ggml's bytes_from_bits_32), 16 where set; CORR += Q5_0: −d·c, Q5_1: m·c */
#define EQ_STEP_Q5(DOT, ACC, CORR, BLK, HO, B) do { \
        uint32_t h_; memcpy(&h_, (BLK) + (HO), 4); \
        __m256i hb_ = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h_), hshuf); \
        hb_ = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_or_si256(hb_, hbits), _mm256_set1_epi64x(-1)), h16); \
        __m128i r_ = _mm_loadu_si128((const __m128i *)((BLK) + (HO) + 4)); \
        __m256i q_ = _mm256_or_si256(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(r_, 4), r_), m4), hb_); \
        __m256i p_ = DOT(q_, _mm256_load_si256((const __m256i *)(xq + (B) * 32))); \
        float dw_ = _cvtsh_ss(rd16(BLK)); \
        ACC = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_set1_ps(dw_ * xd[B]), ACC); \
        CORR += ((HO) == 2 ? -dw_ : _cvtsh_ss(rd16((BLK) + 2))) * xc[B]; } while (0)

/* The 4- and 5-bit blocks of B bytes from block b on: four per iteration into the four accumulators, then one at a
 * time (STEP EQ_STEP_Q4 or EQ_STEP_Q5, O its offset argument: 2 without a minimum, 4 with) */
#define EQ_BLOCKS4(DOT, STEP, B, O) do { \
        for (; b + 4 <= nb; b += 4) { \
            const uint8_t *k0 = wr + b * (B); \
            STEP(DOT, a0, c0, k0, O, b); \
            STEP(DOT, a1, c1, k0 + (B), O, b + 1); \
            STEP(DOT, a2, c2, k0 + 2 * (B), O, b + 2); \
            STEP(DOT, a3, c3, k0 + 3 * (B), O, b + 3); \
        } \
        for (; b < nb; b++) STEP(DOT, a0, c0, wr + b * (B), O, b); } while (0)

#define EQ_DEFINE_INT_ROWS(SUFFIX, ATTR, DOT)                                                                  \
ATTR static void rows_##SUFFIX(const qctx *c, long r0, long r1) {                                              \
    const __m256i m4 = _mm256_set1_epi8(0x0F), h16 = _mm256_set1_epi8(0x10);                                   \
    const __m256i hshuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);    \
    const __m256i hbits = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);                                              \
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
                EQ_BLOCKS4(DOT, EQ_STEP_Q4, 18, 2);                                                            \
                break;                                                                                         \
            case EK_WF_Q4_1:                                                                                   \
                EQ_BLOCKS4(DOT, EQ_STEP_Q4, 20, 4);                                                            \
                break;                                                                                         \
            case EK_WF_Q5_0:                                                                                   \
                EQ_BLOCKS4(DOT, EQ_STEP_Q5, 22, 2);                                                            \
                break;                                                                                         \
            case EK_WF_Q5_1:                                                                                   \
                EQ_BLOCKS4(DOT, EQ_STEP_Q5, 24, 4);                                                            \
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

/* ---- x8 layouts: the scales of 8 blocks are one vector (one vcvtph2ps, one multiply by the activation
 * scales), the int32 sums of 8 blocks are gathered into one vector by a vphaddd tree, and one FMA applies the
 * 8 scales: no scalar work per block. 4-bit pairs share one 32-byte load of nibbles (activations arranged by
 * interleave_pairs) and one vpmaddwd (the two vpmaddubsw results are added as int16: |sum| ≤ 4·15·127). ---- */
#ifndef EQ_PF
#define EQ_PF 1024   /* software prefetch distance (bytes) in the x8 kernels */
#endif
#define EQ_PF_ON (EQ_PF && g_gemv_prefetch > 0)
#define EQ_BF16_PF_ON (EQ_BF16_PF && g_gemv_prefetch > 0)
/* Software prefetch distance of the AVX-512 bf16 GEMVs, in elements (768: 1,536 bytes, most of a 960-wide row, ahead
 * in each of the four rows walked side by side), as the x8 kernels' EQ_PF. On the Intel Xeon of sessions 11-15 (one
 * core streams only 11-12 GB/s alone) the hardware prefetchers keep too few misses in flight for four 2-KB rows:
 * bench/micro/gemv_cold.c bf16, cold 5120×960 and 960×2560, 2 threads, 4 alternations, medians: 19.8 / 19.5 GB/s
 * without, 22.4 / 21.8 at 1,024 bytes, 23.3 / 23.9 at 1,536 (session 15). 0 turns it off. */
#ifndef EQ_BF16_PF
#define EQ_BF16_PF 768
#endif
/* Rows the x8 kernels walk side by side, from as many equal parts of a thread's range: 2 or 4 (ek_get_x8_streams()).
 * On the AMD EPYC of sessions 1–10 two were best (bench/micro/gemv_cold.c, cold 2560×960 and 960×2560, 2 threads,
 * means of 3: int8 15.5 / 15.1 GB/s with 1, 16.4 / 16.9 with 2, 14.8 / 13.3 with 4; Q8_0 15.9 / 15.1, 17.8 / 16.3,
 * 16.6 / 16.2; Q4_0 14.9 / 14.7, 15.2 / 15.3, 15.3 / 16.3). On the Intel Xeon of session 12, where one core streams
 * only 11–12 GB/s (so more misses in flight pay), four were: Llama-362M decode, 128 → 64 tokens, f16 KV, medians of
 * 8 runs alternating builds, 2 → 4 streams gave Q4_0 74.5 → 80.1 tok/s, Q8_0 42.6 → 48.0, int8 47.9 → 48.4, and 8
 * streams fell back (Q4_0 63.1, Q8_0 41.9 against 79.5 and 48.0 with 4 in the same runs). The AMD Zen 4 of session
 * 21 (AVX-512) also gains from 4 streams with 1 range per thread (ek_gemv_tasks): Llama-362M int8 decode, 128 → 64
 * tokens, three alternations, 81 → 93 tok/s on average (2 streams with 1 range: 86); the binaries before and after,
 * alternated three times, Mu-330M q4_0 350 → 385 tok/s on average. So CPUs where ek_cpu_prefers_long_streams()
 * (Intel, AVX-512) walk 4, others 2; EK_X8_STREAMS=2|4 in the environment or ek_set_x8_streams overrides. A row's
 * float is the same either way. */
#define EQ_X8_MAX_STREAMS 4
/* The x8 bodies' loop over the S rows unrolled, so each row's accumulators stay in registers: clang kept them in a
 * stack array otherwise, one store-to-load round trip per group (bench/micro/gemv_hot.c, session 26, hot Q4_0 groups
 * 1.11-1.33x on one core; bench/README.md "Session 26"). */
#if defined(__clang__)
#define EQ_UNROLL _Pragma("clang loop unroll(full)")
#else
#define EQ_UNROLL _Pragma("GCC unroll 4")
#endif
#define EQ_DEFINE_X8_ROWS(SUFFIX, ATTR, DOT, PAIRDOT)                                                          \
ATTR static inline __m256i x8_pair_##SUFFIX(const uint8_t *wq, const int8_t *xq, __m256i m4) {                 \
    __m256i v_ = _mm256_loadu_si256((const __m256i *)wq);                                                      \
    return PAIRDOT(_mm256_and_si256(v_, m4), _mm256_load_si256((const __m256i *)xq),                           \
                   _mm256_and_si256(_mm256_srli_epi16(v_, 4), m4), _mm256_load_si256((const __m256i *)(xq + 32))); \
}                                                                                                              \
ATTR static inline __m256i x8_s8_##SUFFIX(const uint8_t *wq, const int8_t *xq) {                               \
    __m256i xv_ = _mm256_load_si256((const __m256i *)xq), wv_ = _mm256_loadu_si256((const __m256i *)wq);       \
    return DOT(_mm256_sign_epi8(wv_, wv_), _mm256_sign_epi8(xv_, wv_)); /* |w| unsigned: exact for −128 */    \
}                                                                                                              \
/* One group of up to 8 blocks (from block b0) of row wr against activation row (xq, xd, xc): into *acc, *corr */ \
ATTR static inline __attribute__((always_inline)) void x8_group_##SUFFIX(const uint8_t *wr, long b0, long nb, const int8_t *xq, \
        const float *xd, const float *xc, const int fmt, __m256 *acc, __m256 *corr) {                          \
    const __m256i m4 = _mm256_set1_epi8(0x0F), order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);              \
    const long B = block_bytes(fmt), h = header_bytes(fmt);                                                    \
    const uint8_t *grp = wr + b0 * B;                                                                          \
    const long g = nb - b0 < 8 ? nb - b0 : 8;                                                                  \
    const uint8_t *q = grp + h * g;                                                                            \
    const int8_t *xg = xq + b0 * 32;                                                                           \
    if (EQ_PF_ON) { _mm_prefetch((const char *)grp + EQ_PF, _MM_HINT_T0);                                         \
        _mm_prefetch((const char *)grp + EQ_PF + 64, _MM_HINT_T0);                                             \
        _mm_prefetch((const char *)grp + EQ_PF + 128, _MM_HINT_T0);                                            \
        if (B * 8 > 192) _mm_prefetch((const char *)grp + EQ_PF + 192, _MM_HINT_T0); }                         \
    __m256 dw, xdv, xcv, mw = _mm256_setzero_ps();                                                             \
    __m256i p0, p1, p2, p3, p4 = _mm256_setzero_si256(), p5 = p4, p6 = p4, p7 = p4;                            \
    if (g == 8) {                                                                                              \
        dw = fmt == EK_WF_INT8 ? _mm256_set1_ps(1.0f) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)grp)); \
        if (h == 4) mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(grp + 16)));                        \
        xdv = _mm256_loadu_ps(xd + b0); xcv = _mm256_loadu_ps(xc + b0);                                        \
        if (fmt == EK_WF_Q8_0 || fmt == EK_WF_INT8) {                                                          \
            p0 = x8_s8_##SUFFIX(q, xg); p1 = x8_s8_##SUFFIX(q + 32, xg + 32);                                  \
            p2 = x8_s8_##SUFFIX(q + 64, xg + 64); p3 = x8_s8_##SUFFIX(q + 96, xg + 96);                        \
            p4 = x8_s8_##SUFFIX(q + 128, xg + 128); p5 = x8_s8_##SUFFIX(q + 160, xg + 160);                    \
            p6 = x8_s8_##SUFFIX(q + 192, xg + 192); p7 = x8_s8_##SUFFIX(q + 224, xg + 224);                    \
        } else {                                                                                               \
            p0 = x8_pair_##SUFFIX(q, xg, m4); p1 = x8_pair_##SUFFIX(q + 32, xg + 64, m4);                      \
            p2 = x8_pair_##SUFFIX(q + 64, xg + 128, m4); p3 = x8_pair_##SUFFIX(q + 96, xg + 192, m4);          \
        }                                                                                                      \
    } else {                     /* last group of a row: fewer blocks, zeros for the rest */                   \
        /* lanes >= g masked to zero; the 16-byte header loads stay inside the group (g·B >= 2h + 16) */       \
        const __m256i live_ = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)g),                                    \
                                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));                   \
        const __m256 livef_ = _mm256_castsi256_ps(live_);                                                      \
        dw = fmt == EK_WF_INT8 ? _mm256_and_ps(_mm256_set1_ps(1.0f), livef_)                                   \
                               : _mm256_and_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)grp)), livef_); \
        if (h == 4) mw = _mm256_and_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(grp + 2 * g))), livef_); \
        xdv = _mm256_maskload_ps(xd + b0, live_); xcv = _mm256_maskload_ps(xc + b0, live_);                    \
        __m256i p_[8];                                                                                         \
        for (int j = 0; j < 8; j++) p_[j] = _mm256_setzero_si256();                                            \
        if (fmt == EK_WF_Q8_0 || fmt == EK_WF_INT8) {                                                          \
            for (long j = 0; j < g; j++) p_[j] = x8_s8_##SUFFIX(q + 32 * j, xg + 32 * j);                      \
        } else {                                                                                               \
            long j = 0;                                                                                        \
            for (; j + 2 <= g; j += 2) p_[j / 2] = x8_pair_##SUFFIX(q + 16 * j, xg + 32 * j, m4);              \
            if (j < g) {         /* odd last block, activations in plain order */                              \
                __m128i r_ = _mm_loadu_si128((const __m128i *)(q + 16 * j));                                   \
                __m256i u_ = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(r_, 4), r_), m4);                \
                __m256i s_ = DOT(u_, _mm256_load_si256((const __m256i *)(xg + 32 * j)));                       \
                __m128i l_ = _mm_add_epi32(_mm256_castsi256_si128(s_), _mm256_extracti128_si256(s_, 1));       \
                p_[j / 2] = _mm256_zextsi128_si256(l_);                                                        \
            }                                                                                                  \
        }                                                                                                      \
        p0 = p_[0]; p1 = p_[1]; p2 = p_[2]; p3 = p_[3]; p4 = p_[4]; p5 = p_[5]; p6 = p_[6]; p7 = p_[7];        \
    }                                                                                                          \
    __m256 sc = _mm256_mul_ps(dw, xdv);                                                                        \
    __m256i t;                                                                                                 \
    if (fmt == EK_WF_Q8_0 || fmt == EK_WF_INT8) {                                                              \
        __m256i u_ = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));                  \
        __m256i v_ = _mm256_hadd_epi32(_mm256_hadd_epi32(p4, p5), _mm256_hadd_epi32(p6, p7));                  \
        t = _mm256_add_epi32(_mm256_permute2x128_si256(u_, v_, 0x20), _mm256_permute2x128_si256(u_, v_, 0x31)); \
    } else {             /* blocks in lanes [0 2 4 6 | 1 3 5 7] */                                             \
        t = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));                           \
        sc = _mm256_permutevar8x32_ps(sc, order);                                                              \
        if (fmt == EK_WF_Q4_0) *corr = _mm256_fnmadd_ps(dw, xcv, *corr);                                       \
        else *corr = _mm256_fmadd_ps(mw, xcv, *corr);                                                          \
    }                                                                                                          \
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), sc, *acc);                                                   \
}                                                                                                              \
/* Rows [r0, r1) walked in S parts (2 or 4) (walk_rows), group by group; each row's float is the same whichever \
 * step computed it. */                                                                                        \
ATTR static inline __attribute__((always_inline)) void x8_body_##SUFFIX(const qctx *c, long r0, long r1, const int fmt, const int S) { \
    const long nb = c->nb;                                                                                     \
    for (long t = 0, steps = walk_steps(r0, r1, S); t < steps; t++) {                              \
        long rows[EQ_X8_MAX_STREAMS];                                                                              \
        const int lanes = walk_rows(r0, r1, S, t, rows);                                           \
        for (long i = 0; i < c->m; i++) {                                                                      \
            const int8_t *xq = c->xq + i * nb * 32;                                                            \
            const float *xd = c->xd + i * nb, *xc = c->xc + i * nb;                                            \
            __m256 acc[EQ_X8_MAX_STREAMS], corr[EQ_X8_MAX_STREAMS];                                                    \
            for (int u = 0; u < S; u++) acc[u] = corr[u] = _mm256_setzero_ps();                    \
            for (long b0 = 0; b0 < nb; b0 += 8) {                                                              \
                if (lanes > 1)                                                                                 \
                    EQ_UNROLL for (int u = 0; u < S; u++)                                                      \
                        x8_group_##SUFFIX(c->w + rows[u] * c->row_bytes, b0, nb, xq, xd, xc, fmt, &acc[u], &corr[u]); \
                else x8_group_##SUFFIX(c->w + rows[0] * c->row_bytes, b0, nb, xq, xd, xc, fmt, &acc[0], &corr[0]); \
            }                                                                                                  \
            for (int u = 0; u < lanes; u++) {                                                                  \
                float s;                                                                                       \
                EQ_HSUM256(_mm256_add_ps(acc[u], corr[u]), s);                                                 \
                if (fmt == EK_WF_INT8) s *= c->wscale[rows[u]];                                                \
                c->y[i * c->n + rows[u]] = s + (c->bias ? c->bias[rows[u]] : 0.0f);                            \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
}                                                                                                              \
ATTR static void rows_x8_##SUFFIX(const qctx *c, long r0, long r1) {   /* one specialised body per format and S */ \
    const int four = c->streams == 4;                                                                          \
    switch (c->format) {                                                                                       \
    case EK_WF_INT8:   /* header-less groups of 8 */                                                           \
        if (four) x8_body_##SUFFIX(c, r0, r1, EK_WF_INT8, 4); else x8_body_##SUFFIX(c, r0, r1, EK_WF_INT8, 2); return; \
    case EK_WF_Q8_0X8:                                                                                         \
        if (four) x8_body_##SUFFIX(c, r0, r1, EK_WF_Q8_0, 4); else x8_body_##SUFFIX(c, r0, r1, EK_WF_Q8_0, 2); return; \
    case EK_WF_Q4_0X8:                                                                                         \
        if (four) x8_body_##SUFFIX(c, r0, r1, EK_WF_Q4_0, 4); else x8_body_##SUFFIX(c, r0, r1, EK_WF_Q4_0, 2); return; \
    default:                                                                                                   \
        if (four) x8_body_##SUFFIX(c, r0, r1, EK_WF_Q4_1, 4); else x8_body_##SUFFIX(c, r0, r1, EK_WF_Q4_1, 2); return; \
    }                                                                                                          \
}

#define EQ_DOT_AVX2(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define EQ_DOT_AVXVNNI(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
#define EQ_DOT_AVX512VNNI(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))

EQ_DEFINE_INT_ROWS(avx2, EQ_AVX2, EQ_DOT_AVX2)
EQ_DEFINE_INT_ROWS(avxvnni, EQ_AVXVNNI, EQ_DOT_AVXVNNI)
EQ_DEFINE_INT_ROWS(avx512vnni, EQ_AVX512VNNI, EQ_DOT_AVX512VNNI)

#define EQ_PAIR_AVX2(a, x, b, y) _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16((a), (x)), _mm256_maddubs_epi16((b), (y))), _mm256_set1_epi16(1))
#define EQ_PAIR_AVXVNNI(a, x, b, y) _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (a), (x)), (b), (y))
#define EQ_PAIR_AVX512VNNI(a, x, b, y) _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), (a), (x)), (b), (y))
EQ_DEFINE_X8_ROWS(avx2, EQ_AVX2, EQ_DOT_AVX2, EQ_PAIR_AVX2)
EQ_DEFINE_X8_ROWS(avxvnni, EQ_AVXVNNI, EQ_DOT_AVXVNNI, EQ_PAIR_AVXVNNI)
EQ_DEFINE_X8_ROWS(avx512vnni, EQ_AVX512VNNI, EQ_DOT_AVX512VNNI, EQ_PAIR_AVX512VNNI)

/* ---- int8 rows on AVX2 without the x8 group's horizontal sums: two blocks per step and R rows (1 or the stream
 * count) against each pair of activation loads; a block's 8 int32 lanes (vpmaddubsw of |w| and x signed by w, then
 * vpmaddwd by ones) are converted and scaled by the block's activation scale in one FMA, two accumulators per row.
 * Six uops per block and row instead of the x8 group's nine and a share of its vphaddd tree. ---- */
EQ_AVX2 static inline __m256i int8y_dot(__m256i w, __m256i x, __m256i ones) {   /* one block: 8 int32 partial sums */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)), ones);
}
EQ_AVX2 static inline __attribute__((always_inline)) void int8y_rows(const qctx *c, const long *rows, const int R, long i) {
    const long nb = c->nb;
    const int8_t *xq = c->xq + i * nb * 32;
    const float *xd = c->xd + i * nb;
    const __m256i ones = _mm256_set1_epi16(1);
    const uint8_t *w[EQ_X8_MAX_STREAMS];
    __m256 a0[EQ_X8_MAX_STREAMS], a1[EQ_X8_MAX_STREAMS];
    for (int u = 0; u < R; u++) { w[u] = c->w + rows[u] * c->row_bytes; a0[u] = a1[u] = _mm256_setzero_ps(); }
    long b = 0;
    for (; b + 2 <= nb; b += 2) {
        if (EQ_PF_ON) for (int u = 0; u < R; u++) _mm_prefetch((const char *)(w[u] + b * 32 + EQ_PF), _MM_HINT_T0);
        const __m256i x0 = _mm256_load_si256((const __m256i *)(xq + b * 32));
        const __m256i x1 = _mm256_load_si256((const __m256i *)(xq + b * 32 + 32));
        const __m256 d0 = _mm256_broadcast_ss(xd + b), d1 = _mm256_broadcast_ss(xd + b + 1);
        for (int u = 0; u < R; u++) {
            const __m256i p0 = int8y_dot(_mm256_loadu_si256((const __m256i *)(w[u] + b * 32)), x0, ones);
            const __m256i p1 = int8y_dot(_mm256_loadu_si256((const __m256i *)(w[u] + b * 32 + 32)), x1, ones);
            a0[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), d0, a0[u]);
            a1[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), d1, a1[u]);
        }
    }
    if (b < nb) {
        const __m256i x0 = _mm256_load_si256((const __m256i *)(xq + b * 32));
        const __m256 d0 = _mm256_broadcast_ss(xd + b);
        for (int u = 0; u < R; u++) {
            const __m256i p0 = int8y_dot(_mm256_loadu_si256((const __m256i *)(w[u] + b * 32)), x0, ones);
            a0[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), d0, a0[u]);
        }
    }
    for (int u = 0; u < R; u++) {
        float s;
        EQ_HSUM256(_mm256_add_ps(a0[u], a1[u]), s);
        c->y[i * c->n + rows[u]] = s * c->wscale[rows[u]] + (c->bias ? c->bias[rows[u]] : 0.0f);
    }
}
EQ_AVX2 static inline __attribute__((always_inline)) void int8y_body(const qctx *c, long r0, long r1, const int S) {
    for (long t = 0, steps = walk_steps(r0, r1, S); t < steps; t++) {
        long rows[EQ_X8_MAX_STREAMS];
        const int lanes = walk_rows(r0, r1, S, t, rows);
        for (long i = 0; i < c->m; i++) {
            if (lanes > 1) int8y_rows(c, rows, S, i);
            else int8y_rows(c, rows, 1, i);
        }
    }
}
EQ_AVX2 static void rows_int8y(const qctx *c, long r0, long r1) {
    if (c->streams == 4) int8y_body(c, r0, r1, 4); else int8y_body(c, r0, r1, 2);
}

/* ---- Q4_0 / Q4_1 x8 rows on AVX2 in a loop of whole groups, the last shorter group after it (x8_group_avx2's
 * tail), R rows side by side. A pair of blocks' products stay int16 (|lane| <= 2·2·15·127 = 7620) and a group's four
 * pairs are reduced by three vphaddw in two levels (|lane| <= 30480) and one vpmaddwd: the same int32 block sums as x8_group_avx2's
 * four vpmaddwd and vphaddd tree, three uops fewer. Each row's activation pointer passes through an empty asm, so
 * the compiler reloads the activations (folded into vpmaddubsw) instead of holding all eight in registers for the
 * rows and spilling the accumulators. Same floats as x8_group_avx2, in the same order. ---- */
EQ_AVX2 static inline __m256i q4y_pair16(const uint8_t *wq, const int8_t *xq, __m256i m4) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)wq);
    return _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, m4), _mm256_load_si256((const __m256i *)xq)),
                            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                                 _mm256_load_si256((const __m256i *)(xq + 32))));
}
/* One whole group (8 blocks at grp: scales [, minima], payloads) against activations xg: into *acc, *corr. */
EQ_AVX2 static inline __attribute__((always_inline)) void q4y_group(const uint8_t *grp, const int8_t *xg, __m256 xdv,
        __m256 xcv, const int fmt, __m256 *acc, __m256 *corr) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const long h = fmt == EK_WF_Q4_1 ? 4 : 2;
    const uint8_t *q = grp + 8 * h;
    if (EQ_PF_ON) { _mm_prefetch((const char *)grp + EQ_PF, _MM_HINT_T0);
        _mm_prefetch((const char *)grp + EQ_PF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)grp + EQ_PF + 128, _MM_HINT_T0);
        if (h == 4) _mm_prefetch((const char *)grp + EQ_PF + 192, _MM_HINT_T0); }
    __asm__ volatile("" : "+r"(xg));
    const __m256i s0 = q4y_pair16(q, xg, m4), s1 = q4y_pair16(q + 32, xg + 64, m4);
    const __m256i s2 = q4y_pair16(q + 64, xg + 128, m4), s3 = q4y_pair16(q + 96, xg + 192, m4);
    const __m256i t = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(s0, s1), _mm256_hadd_epi16(s2, s3)),
                                        _mm256_set1_epi16(1));   /* blocks in lanes [0 2 4 6 | 1 3 5 7] */
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)grp));
    const __m256 sc = _mm256_permutevar8x32_ps(_mm256_mul_ps(dw, xdv), order);
    if (fmt == EK_WF_Q4_0) *corr = _mm256_fnmadd_ps(dw, xcv, *corr);
    else *corr = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(grp + 16))), xcv, *corr);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), sc, *acc);
}
/* Two rows' EQ_HSUM256 side by side, one row per 128-bit half: the same additions of the same operands in the same
 * order ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)), so the same floats, in about half the instructions. */
EQ_AVX2 static inline void q4y_hsum2(__m256 a, __m256 b, float *out) {
    __m256 t = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    t = _mm256_add_ps(t, _mm256_shuffle_ps(t, t, _MM_SHUFFLE(3, 2, 3, 2)));
    t = _mm256_add_ps(t, _mm256_movehdup_ps(t));
    out[0] = _mm256_cvtss_f32(t);
    out[1] = _mm_cvtss_f32(_mm256_extractf128_ps(t, 1));
}
/* A row's last group of an even g < 8 blocks (Llama's k = 960: 6; T5's 384: 4), as x8_group_avx2's tail computes it
 * (lanes >= g masked to zero in the scales; the same int32 sums, from int16 pairs): whole pairs, no block of its own. */
EQ_AVX2 static inline __attribute__((always_inline)) void q4y_tail(const uint8_t *grp, long g, const int8_t *xg,
        const float *xd, const float *xc, const int fmt, __m256 *acc, __m256 *corr) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const long h = fmt == EK_WF_Q4_1 ? 4 : 2;
    const uint8_t *q = grp + h * g;
    const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)g), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 livef = _mm256_castsi256_ps(live);
    /* the 16-byte header loads stay inside the group (g·B >= 2h + 16) */
    const __m256 dw = _mm256_and_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)grp)), livef);
    const __m256 xdv = _mm256_maskload_ps(xd, live), xcv = _mm256_maskload_ps(xc, live);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i s0 = q4y_pair16(q, xg, m4);
    const __m256i s1 = g > 2 ? q4y_pair16(q + 32, xg + 64, m4) : zero;
    const __m256i s2 = g > 4 ? q4y_pair16(q + 64, xg + 128, m4) : zero;
    const __m256i t = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(s0, s1), _mm256_hadd_epi16(s2, zero)),
                                        _mm256_set1_epi16(1));
    const __m256 sc = _mm256_permutevar8x32_ps(_mm256_mul_ps(dw, xdv), order);
    if (fmt == EK_WF_Q4_0) *corr = _mm256_fnmadd_ps(dw, xcv, *corr);
    else *corr = _mm256_fmadd_ps(_mm256_and_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(grp + 2 * g))), livef),
                                 xcv, *corr);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), sc, *acc);
}
EQ_AVX2 static inline __attribute__((always_inline)) void q4y_rows(const qctx *c, const long *rows, const int R,
                                                                   long i, const int fmt) {
    const long nb = c->nb, full = nb / 8 * 8, gbytes = 8 * (fmt == EK_WF_Q4_1 ? 20 : 18);
    const int8_t *xq = c->xq + i * nb * 32;
    const float *xd = c->xd + i * nb, *xc = c->xc + i * nb;
    const uint8_t *w[EQ_X8_MAX_STREAMS];
    __m256 acc[EQ_X8_MAX_STREAMS], corr[EQ_X8_MAX_STREAMS];
    for (int u = 0; u < R; u++) { w[u] = c->w + rows[u] * c->row_bytes; acc[u] = corr[u] = _mm256_setzero_ps(); }
    for (long b0 = 0; b0 < full; b0 += 8) {
        const __m256 xdv = _mm256_loadu_ps(xd + b0), xcv = _mm256_loadu_ps(xc + b0);
        EQ_UNROLL for (int u = 0; u < R; u++) q4y_group(w[u] + b0 / 8 * gbytes, xq + b0 * 32, xdv, xcv, fmt, &acc[u], &corr[u]);
    }
    if (full < nb && (nb - full) % 2 == 0)
        for (int u = 0; u < R; u++)
            q4y_tail(w[u] + full / 8 * gbytes, nb - full, xq + full * 32, xd + full, xc + full, fmt, &acc[u], &corr[u]);
    else if (full < nb)   /* an odd last block (activations in plain order there) */
        for (int u = 0; u < R; u++) x8_group_avx2(w[u], full, nb, xq, xd, xc, fmt, &acc[u], &corr[u]);
    float s[EQ_X8_MAX_STREAMS];
    int u = 0;
    for (; u + 2 <= R; u += 2) q4y_hsum2(_mm256_add_ps(acc[u], corr[u]), _mm256_add_ps(acc[u + 1], corr[u + 1]), &s[u]);
    if (u < R) EQ_HSUM256(_mm256_add_ps(acc[u], corr[u]), s[u]);
    for (u = 0; u < R; u++) c->y[i * c->n + rows[u]] = s[u] + (c->bias ? c->bias[rows[u]] : 0.0f);
}
/* walk_rows' order (S parts side by side, then the leftover rows one by one) with its division done once */
EQ_AVX2 static inline __attribute__((always_inline)) void q4y_body(const qctx *c, long r0, long r1, const int S, const int fmt) {
    const long p = (r1 - r0) / S;
    long rows[EQ_X8_MAX_STREAMS];
    for (long t = 0; t < p; t++) {
        for (int u = 0; u < S; u++) rows[u] = r0 + u * p + t;
        for (long i = 0; i < c->m; i++) q4y_rows(c, rows, S, i, fmt);
    }
    for (long r = r0 + S * p; r < r1; r++) {
        rows[0] = r;
        for (long i = 0; i < c->m; i++) q4y_rows(c, rows, 1, i, fmt);
    }
}
static _Atomic long g_q4y_calls;   /* row ranges rows_q4y ran (ek_q4y_row_calls: tests check it ran) */
EQ_AVX2 static void rows_q4y(const qctx *c, long r0, long r1) {   /* Q4_0X8 / Q4_1X8 */
    atomic_fetch_add_explicit(&g_q4y_calls, 1, memory_order_relaxed);
    const int four = c->streams == 4;
    if (c->format == EK_WF_Q4_0X8) { if (four) q4y_body(c, r0, r1, 4, EK_WF_Q4_0); else q4y_body(c, r0, r1, 2, EK_WF_Q4_0); }
    else if (four) q4y_body(c, r0, r1, 4, EK_WF_Q4_1); else q4y_body(c, r0, r1, 2, EK_WF_Q4_1);
}

/* ---- 4-bit x8 groups on zmm (AVX-512 VNNI): a full group's 8 payloads are two 64-byte loads, one block per 128-bit
 * lane, and each vpdpbusd covers four blocks. The activations of full groups are arranged by interleave_quads to match
 * (blocks 4j…4j+3 as [a0..15 b0..15 c0..15 d0..15 a16..31 … d16..31]); a row's last, shorter group keeps the pair
 * arrangement and runs x8_group_avx512vnni. No horizontal sum per group: each block's four int32 partial sums are
 * scaled in their lanes (its scale spread over them by one vpermps) and summed at the row's end, so only the fp32
 * order of the partial sums differs from the ymm kernel (bench/micro/gemv_cold.c, session 17: the ymm kernel reads
 * 2.8 MB of hot Q4_0 rows at 18.9 GB/s, no faster than cold ones: it was bound by its per-block instructions). ---- */
EQ_AVX512VNNI static inline __attribute__((always_inline)) void x8z_group(const uint8_t *grp, const int fmt,
        __m512i xlo0, __m512i xhi0, __m512i xlo1, __m512i xhi1, __m256 xdv, __m256 xcv,
        __m512 *acc0, __m512 *acc1, __m256 *corr) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i spread0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i spread1 = _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    const long h = header_bytes(fmt);
    const uint8_t *q = grp + 8 * h;
    if (EQ_PF_ON) { _mm_prefetch((const char *)grp + EQ_PF, _MM_HINT_T0);
        _mm_prefetch((const char *)grp + EQ_PF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)grp + EQ_PF + 128, _MM_HINT_T0); }
    const __m512i v0 = _mm512_loadu_si512((const void *)q), v1 = _mm512_loadu_si512((const void *)(q + 64));
    __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v0, m4), xlo0);
    __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v1, m4), xlo1);
    p0 = _mm512_dpbusd_epi32(p0, _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4), xhi0);
    p1 = _mm512_dpbusd_epi32(p1, _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4), xhi1);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)grp));
    const __m512 sc = _mm512_castps256_ps512(_mm256_mul_ps(dw, xdv));
    *acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_permutexvar_ps(spread0, sc), *acc0);
    *acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), _mm512_permutexvar_ps(spread1, sc), *acc1);
    if (fmt == EK_WF_Q4_0) *corr = _mm256_fnmadd_ps(dw, xcv, *corr);
    else *corr = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(grp + 16))), xcv, *corr);
}

/* Q5 x8 rows on the AVX2 / AVX-VNNI paths (matrices regrouped while the AVX-512 kernel ran, then capped by
 * ek_set_isa_limit; ek_x8_pays keeps them in ggml order otherwise): each row back to ggml blocks in the thread's
 * buffer (grown once), then the per-block kernel, against activations in plain order. */
static _Thread_local uint8_t *g_q5_row;
static _Thread_local long g_q5_row_cap;
static void rows_q5x8_plain(const qctx *c, long r0, long r1, void (*rows)(const qctx *, long, long)) {
    if (c->row_bytes > g_q5_row_cap) {
        uint8_t *p = realloc(g_q5_row, (size_t)c->row_bytes);
        if (!p) {   /* no memory for the row: block by block through the scalar dot, the same arithmetic */
            rows_scalar(c, r0, r1);
            return;
        }
        g_q5_row = p;
        g_q5_row_cap = c->row_bytes;
    }
    uint8_t *buf = g_q5_row;
    qctx t = *c;
    t.format = base_format(c->format);
    t.w = buf;
    for (long r = r0; r < r1; r++) {
        x8_row5(t.format, c->w + r * c->row_bytes, buf, c->nb, 0);
        t.y = c->y + r;                      /* row 0 of t is row r of c: y[i·n + r] */
        t.bias = c->bias ? c->bias + r : NULL;
        rows(&t, 0, 1);
    }
}

/* ---- Q5_0 / Q5_1 x8 groups on zmm (AVX-512 VNNI), as x8z_group with the 5th bits added by one masked byte add per
 * quad of blocks (x8_row5's masks); the last nb % 8 blocks are ggml blocks, one ymm step each (qh as a 32-bit mask),
 * against activations in plain order (interleave_quads without pairs). ---- */
EQ_AVX512VNNI static inline __attribute__((always_inline)) void x8z5_group(const uint8_t *grp, const int one,
        __m512i xlo0, __m512i xhi0, __m512i xlo1, __m512i xhi1, __m256 xdv, __m256 xcv,
        __m512 *acc0, __m512 *acc1, __m256 *corr) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), h16 = _mm512_set1_epi8(0x10);
    const __m512i spread0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i spread1 = _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    const uint8_t *qm = grp + 16 + 16 * one, *q = qm + 32;
    if (EQ_PF_ON) { _mm_prefetch((const char *)grp + EQ_PF, _MM_HINT_T0);
        _mm_prefetch((const char *)grp + EQ_PF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)grp + EQ_PF + 128, _MM_HINT_T0); }
    uint64_t k[4];
    memcpy(k, qm, 32);
    const __m512i v0 = _mm512_loadu_si512((const void *)q), v1 = _mm512_loadu_si512((const void *)(q + 64));
    __m512i l0 = _mm512_and_si512(v0, m4), l1 = _mm512_and_si512(v1, m4);
    __m512i h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
    l0 = _mm512_mask_add_epi8(l0, _cvtu64_mask64(k[0]), l0, h16);
    h0 = _mm512_mask_add_epi8(h0, _cvtu64_mask64(k[1]), h0, h16);
    l1 = _mm512_mask_add_epi8(l1, _cvtu64_mask64(k[2]), l1, h16);
    h1 = _mm512_mask_add_epi8(h1, _cvtu64_mask64(k[3]), h1, h16);
    __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), l0, xlo0);
    __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), l1, xlo1);
    p0 = _mm512_dpbusd_epi32(p0, h0, xhi0);
    p1 = _mm512_dpbusd_epi32(p1, h1, xhi1);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)grp));
    const __m512 sc = _mm512_castps256_ps512(_mm256_mul_ps(dw, xdv));
    *acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_permutexvar_ps(spread0, sc), *acc0);
    *acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), _mm512_permutexvar_ps(spread1, sc), *acc1);
    if (one) *corr = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(grp + 16))), xcv, *corr);
    else *corr = _mm256_fnmadd_ps(dw, xcv, *corr);
}

/* One ggml Q5 block (the last blocks of an x8 row) on ymm: into *acc, its correction into *corr. */
EQ_AVX512VNNI static inline __attribute__((always_inline)) void q5_block_ymm(const uint8_t *blk, const int one,
        const int8_t *xb, float xd, float xc, __m256 *acc, float *corr) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), h16 = _mm256_set1_epi8(0x10);
    uint32_t h;
    memcpy(&h, blk + 2 + 2 * one, 4);
    const __m128i r = _mm_loadu_si128((const __m128i *)(blk + 6 + 2 * one));
    __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(r, 4), r), m4);
    v = _mm256_mask_add_epi8(v, _cvtu32_mask32(h), v, h16);
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), v, _mm256_loadu_si256((const __m256i *)xb));
    const float dw = _cvtsh_ss(rd16(blk));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xd), *acc);
    *corr += (one ? _cvtsh_ss(rd16(blk + 2)) : -dw) * xc;
}

/* Rows [r0, r1) in S parts (walk_rows) as x8_body: full groups on zmm (the activations loaded once per group for the
 * S rows; Q4_0 / Q4_1: x8z_group, Q5_0 / Q5_1: x8z5_group), then a row's last nb % 8 blocks (Q4: one shorter group
 * on ymm, x8_group_avx512vnni; Q5: ggml blocks one by one, q5_block_ymm); fmt is the ggml format. Each row's float is
 * the same whichever step computed it. */
EQ_AVX512VNNI static inline __attribute__((always_inline)) void x8z_body(const qctx *c, long r0, long r1, const int fmt,
                                                                         const int S) {
    const int five = fmt == EK_WF_Q5_0 || fmt == EK_WF_Q5_1, one = fmt == EK_WF_Q5_1;
    const long nb = c->nb, full = nb / 8 * 8, B = block_bytes(fmt);
    for (long t = 0, steps = walk_steps(r0, r1, S); t < steps; t++) {
        long rows[EQ_X8_MAX_STREAMS];
        const int lanes = walk_rows(r0, r1, S, t, rows);
        const int L = lanes > 1 ? S : 1;
        const uint8_t *wr[EQ_X8_MAX_STREAMS];
        for (int u = 0; u < L; u++) wr[u] = c->w + rows[u] * c->row_bytes;
        for (long i = 0; i < c->m; i++) {
            const int8_t *xq = c->xq + i * nb * 32;
            const float *xd = c->xd + i * nb, *xc = c->xc + i * nb;
            __m512 a0[EQ_X8_MAX_STREAMS], a1[EQ_X8_MAX_STREAMS];
            __m256 corr[EQ_X8_MAX_STREAMS], tail[EQ_X8_MAX_STREAMS];
            float tcorr[EQ_X8_MAX_STREAMS];   /* Q5: the last blocks' corrections */
            for (int u = 0; u < S; u++) {
                a0[u] = a1[u] = _mm512_setzero_ps(); corr[u] = tail[u] = _mm256_setzero_ps(); tcorr[u] = 0;
            }
            for (long b0 = 0; b0 < full; b0 += 8) {
                const int8_t *xg = xq + b0 * 32;
                const __m512i xlo0 = _mm512_loadu_si512((const void *)xg), xhi0 = _mm512_loadu_si512((const void *)(xg + 64));
                const __m512i xlo1 = _mm512_loadu_si512((const void *)(xg + 128)), xhi1 = _mm512_loadu_si512((const void *)(xg + 192));
                const __m256 xdv = _mm256_loadu_ps(xd + b0), xcv = _mm256_loadu_ps(xc + b0);
#define EQ_X8Z_GROUP(u) do { \
        if (five) x8z5_group(wr[u] + b0 * B, one, xlo0, xhi0, xlo1, xhi1, xdv, xcv, &a0[u], &a1[u], &corr[u]); \
        else x8z_group(wr[u] + b0 * B, fmt, xlo0, xhi0, xlo1, xhi1, xdv, xcv, &a0[u], &a1[u], &corr[u]); } while (0)
                if (L > 1)   /* S constant: the S rows' groups side by side */
                    for (int u = 0; u < S; u++) EQ_X8Z_GROUP(u);
                else EQ_X8Z_GROUP(0);
#undef EQ_X8Z_GROUP
            }
            if (five) {
                for (long b = full; b < nb; b++)
                    for (int u = 0; u < L; u++) q5_block_ymm(wr[u] + b * B, one, xq + b * 32, xd[b], xc[b], &tail[u], &tcorr[u]);
            } else if (full < nb) {
                for (int u = 0; u < L; u++) x8_group_avx512vnni(wr[u], full, nb, xq, xd, xc, fmt, &tail[u], &corr[u]);
            }
            for (int u = 0; u < lanes; u++) {
                float s;
                EQ_HSUM256(_mm256_add_ps(tail[u], corr[u]), s);
                const float z = _mm512_reduce_add_ps(_mm512_add_ps(a0[u], a1[u]));
                s += five ? z + tcorr[u] : z;
                c->y[i * c->n + rows[u]] = s + (c->bias ? c->bias[rows[u]] : 0.0f);
            }
        }
    }
}
/* The x8 Q4_0 / Q4_1 / Q5_0 / Q5_1 rows on zmm: one specialised body per format and stream count. */
EQ_AVX512VNNI static void rows_x8z(const qctx *c, long r0, long r1) {
    const int four = c->streams == 4;
    switch (c->format) {
    case EK_WF_Q4_0X8: if (four) x8z_body(c, r0, r1, EK_WF_Q4_0, 4); else x8z_body(c, r0, r1, EK_WF_Q4_0, 2); return;
    case EK_WF_Q4_1X8: if (four) x8z_body(c, r0, r1, EK_WF_Q4_1, 4); else x8z_body(c, r0, r1, EK_WF_Q4_1, 2); return;
    case EK_WF_Q5_0X8: if (four) x8z_body(c, r0, r1, EK_WF_Q5_0, 4); else x8z_body(c, r0, r1, EK_WF_Q5_0, 2); return;
    default:           if (four) x8z_body(c, r0, r1, EK_WF_Q5_1, 4); else x8z_body(c, r0, r1, EK_WF_Q5_1, 2); return;
    }
}

/* ---- int8 rows on zmm (AVX-512 VNNI): each 64-byte load covers two blocks of 32 (lanes 0–7 the first, 8–15 the
 * second); |w| times x with w's sign moved onto x (vpabsb, vpmovb2m and a masked subtract: AVX-512 has no vpsignb) in
 * one vpdpbusd; the activation scales of a group of 8 blocks are spread over their lanes by one vpermps per load, once
 * for the S rows walked side by side, and each product is scaled in its lanes and summed at the row's end: no
 * horizontal sum per group, and a row's last nb % 8 blocks run as pairs with masked loads. Only the fp32 order of the
 * partial sums differs from the ymm x8 kernel. On the AMD Zen 5 of session 25 the ymm kernel read hot int8 rows at
 * 24–44 GB/s on one core (bf16: 58–62), too slow to keep the reads of a decode step in flight: cold GEMVs
 * (bench/micro/gemv_cold.c, 2 threads, 7 alternations, medians) 5120×960 31.7 → 33.8 GB/s, 960×2560 35.9 → 41.3,
 * 4096×1024 30.3 → 34.8, 1024×4096 32.2 → 38.6; Llama-362M int8 decode at 512 tokens 76.1 → 79.6 tok/s (6 alternations),
 * Mu-330M's 196 → 217 (3). Q8_0 groups on zmm (their f16 scales spread per row) were no faster for Llama-362M's
 * Q8_0 GGUF (62–67 → 61–64 tok/s) and keep the ymm kernel. EK_INT8_ZMM=0 in the environment selects the ymm kernel
 * for int8 too (A/B runs). ---- */
EQ_AVX512VNNI static inline __attribute__((always_inline)) __m512i z8_dot(__m512i w, __m512i xv) {
    const __m512i sx = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(w), _mm512_setzero_si512(), xv);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sx);   /* |−128| = 128 as u8: exact */
}
/* The four lines EQ_PF bytes past a group's start (a row's later groups, or the next rows' first bytes), as x8_group. */
EQ_AVX512VNNI static inline __attribute__((always_inline)) void int8z_prefetch(const int8_t *group) {
    if (EQ_PF_ON)
        for (int l = 0; l < 4; l++) _mm_prefetch((const char *)group + EQ_PF + 64 * l, _MM_HINT_T0);
}
/* Rows [r0, r1) of int8 weights in S parts (walk_rows), as x8_body; each row's float is the same whichever step
 * computed it. */
EQ_AVX512VNNI static inline __attribute__((always_inline)) void int8z_body(const qctx *c, long r0, long r1, const int S) {
    const long nb = c->nb, full = nb / 8 * 8;
    const __m512i sp[4] = { _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                            _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
                            _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5),
                            _mm512_setr_epi32(6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7) };
    for (long t = 0, steps = walk_steps(r0, r1, S); t < steps; t++) {
        long rows[EQ_X8_MAX_STREAMS];
        const int lanes = walk_rows(r0, r1, S, t, rows);
        const int L = lanes > 1 ? S : 1;
        const int8_t *wr[EQ_X8_MAX_STREAMS];
        for (int u = 0; u < L; u++) wr[u] = (const int8_t *)c->w + rows[u] * c->row_bytes;
        for (long i = 0; i < c->m; i++) {
            const int8_t *xq = c->xq + i * nb * 32;
            const float *xd = c->xd + i * nb;
            __m512 a0[EQ_X8_MAX_STREAMS], a1[EQ_X8_MAX_STREAMS];
            for (int u = 0; u < S; u++) a0[u] = a1[u] = _mm512_setzero_ps();
            for (long b0 = 0; b0 < nb; b0 += 8) {   /* groups of 8 blocks; the last may be shorter (g < 8) */
                const long g = nb - b0 < 8 ? nb - b0 : 8;
                const int8_t *xg = xq + b0 * 32;
                const __m512 xs = _mm512_castps256_ps512(b0 < full ? _mm256_loadu_ps(xd + b0)
                                                                    : _mm256_maskz_loadu_ps((__mmask8)((1u << g) - 1), xd + b0));
                if (b0 < full) {
                    const __m512i x0 = _mm512_loadu_si512((const void *)xg), x1 = _mm512_loadu_si512((const void *)(xg + 64));
                    const __m512i x2 = _mm512_loadu_si512((const void *)(xg + 128)), x3 = _mm512_loadu_si512((const void *)(xg + 192));
                    const __m512 s0 = _mm512_permutexvar_ps(sp[0], xs), s1 = _mm512_permutexvar_ps(sp[1], xs);
                    const __m512 s2 = _mm512_permutexvar_ps(sp[2], xs), s3 = _mm512_permutexvar_ps(sp[3], xs);
#define EQ_INT8Z_GROUP(u) do { \
        const int8_t *q_ = wr[u] + b0 * 32; \
        int8z_prefetch(q_); \
        a0[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(z8_dot(_mm512_loadu_si512((const void *)q_), x0)), s0, a0[u]); \
        a1[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(z8_dot(_mm512_loadu_si512((const void *)(q_ + 64)), x1)), s1, a1[u]); \
        a0[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(z8_dot(_mm512_loadu_si512((const void *)(q_ + 128)), x2)), s2, a0[u]); \
        a1[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(z8_dot(_mm512_loadu_si512((const void *)(q_ + 192)), x3)), s3, a1[u]); } while (0)
                    if (L > 1)   /* S constant: the S rows' groups side by side */
                        for (int u = 0; u < S; u++) EQ_INT8Z_GROUP(u);
                    else EQ_INT8Z_GROUP(0);
#undef EQ_INT8Z_GROUP
                } else {   /* the last g < 8 blocks: pairs, masked loads past the row's end */
                    for (int u = 0; u < L; u++) {
                        const int8_t *q_ = wr[u] + b0 * 32;
                        int8z_prefetch(q_);   /* as a full group: the next rows' lines */
                        for (long j = 0; 2 * j < g; j++) {
                            const __mmask64 bytes = 2 * j + 2 <= g ? ~(__mmask64)0 : (__mmask64)0xFFFFFFFFu;
                            const __m512i w = _mm512_maskz_loadu_epi8(bytes, q_ + 64 * j), xv = _mm512_maskz_loadu_epi8(bytes, xg + 64 * j);
                            a0[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(z8_dot(w, xv)), _mm512_permutexvar_ps(sp[j], xs), a0[u]);
                        }
                    }
                }
            }
            for (int u = 0; u < lanes; u++) {
                const float s = _mm512_reduce_add_ps(_mm512_add_ps(a0[u], a1[u])) * c->wscale[rows[u]];
                c->y[i * c->n + rows[u]] = s + (c->bias ? c->bias[rows[u]] : 0.0f);
            }
        }
    }
}
EQ_AVX512VNNI static void rows_int8z(const qctx *c, long r0, long r1) {
    if (c->streams == 4) int8z_body(c, r0, r1, 4); else int8z_body(c, r0, r1, 2);
}

/* bf16 weights widened to fp32 (x fp32), AVX2 */
EQ_AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* bf16 rows. Each path's dots function sums nr (1 or 4, constant after inlining) rows against one x row with the
 * same per-row operations, so a row's float does not depend on how many rows were computed beside it. */

/* AVX2: 16 weights per 32-byte load, widened in two halves without a shuffle: the even elements by a left shift of
 * each 32-bit pair (low half to the high bits), the odd ones by masking off the low half, each against x in the
 * same order (bf16_split_x: every full 16 of x as its 8 even then its 8 odd elements, the rest as they are). Two
 * uops per 16 weights instead of four (vpmovzxwd + vpslld per 8): bench/micro/gemv_hot.c bf16, session 26. An
 * 8-element step in plain order, then the scalar tail. */
EQ_AVX2 static inline __attribute__((always_inline)) void bf16_dots_avx2(const uint16_t *const *w, const int nr,
                                                                         const float *xr, long k, float *s) {
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256 a[4][2];
    for (int t = 0; t < nr; t++) a[t][0] = a[t][1] = _mm256_setzero_ps();
    long j = 0;
    for (; j + 16 <= k; j += 16) {
        __m256 xe = _mm256_loadu_ps(xr + j), xo = _mm256_loadu_ps(xr + j + 8);
        for (int t = 0; t < nr; t++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w[t] + j));
            a[t][0] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, a[t][0]);
            a[t][1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, high)), xo, a[t][1]);
        }
    }
    long tail = j;
    if (j + 8 <= k) {
        __m256 x0 = _mm256_loadu_ps(xr + j);
        for (int t = 0; t < nr; t++) a[t][0] = _mm256_fmadd_ps(bf16x8(w[t] + j), x0, a[t][0]);
        tail = j + 8;
    }
    for (int t = 0; t < nr; t++) {
        EQ_HSUM256(_mm256_add_ps(a[t][0], a[t][1]), s[t]);
        for (long i = tail; i < k; i++) s[t] += bf16f(w[t][i]) * xr[i];
    }
}

/* bf16 widened (x fp32), AVX-512F: two accumulators over 32-element steps, a 16-element step, the scalar tail */
EQ_AVX512F static inline __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

EQ_AVX512F static inline __attribute__((always_inline)) void bf16_dots_avx512f(const uint16_t *const *w, const int nr,
                                                                               const float *xr, long k, float *s) {
    __m512 a[4][2];
    for (int t = 0; t < nr; t++) a[t][0] = a[t][1] = _mm512_setzero_ps();
    long j = 0;
    for (; j + 32 <= k; j += 32) {
        __m512 x0 = _mm512_loadu_ps(xr + j), x1 = _mm512_loadu_ps(xr + j + 16);
        if (EQ_BF16_PF_ON) for (int t = 0; t < nr; t++) _mm_prefetch((const char *)(w[t] + j + EQ_BF16_PF), _MM_HINT_T0);
        for (int t = 0; t < nr; t++) {
            a[t][0] = _mm512_fmadd_ps(bf16x16(w[t] + j), x0, a[t][0]);
            a[t][1] = _mm512_fmadd_ps(bf16x16(w[t] + j + 16), x1, a[t][1]);
        }
    }
    long tail = j;
    if (j + 16 <= k) {
        __m512 x0 = _mm512_loadu_ps(xr + j);
        for (int t = 0; t < nr; t++) a[t][0] = _mm512_fmadd_ps(bf16x16(w[t] + j), x0, a[t][0]);
        tail = j + 16;
    }
    for (int t = 0; t < nr; t++) {
        s[t] = _mm512_reduce_add_ps(_mm512_add_ps(a[t][0], a[t][1]));
        for (long i = tail; i < k; i++) s[t] += bf16f(w[t][i]) * xr[i];
    }
}

/* bf16 × bf16 pairs with vdpbf16ps (x rounded to bf16 once per call): 64-element steps, a 32-element step, the tail */
EQ_AVX512BF16 static inline __attribute__((always_inline)) void bf16_dots_avx512bf16(const uint16_t *const *w, const int nr,
                                                                                     const uint16_t *xr, long k, float *s) {
    __m512 a[4][2];
    for (int t = 0; t < nr; t++) a[t][0] = a[t][1] = _mm512_setzero_ps();
    long j = 0;
    for (; j + 64 <= k; j += 64) {
        __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)(xr + j)), x1 = (__m512bh)_mm512_loadu_si512((const void *)(xr + j + 32));
        if (EQ_BF16_PF_ON) for (int t = 0; t < nr; t++) {   /* the two lines this step's 128 bytes will be, 768 elements on */
            _mm_prefetch((const char *)(w[t] + j + EQ_BF16_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(w[t] + j + EQ_BF16_PF) + 64, _MM_HINT_T0);
        }
        for (int t = 0; t < nr; t++) {
            a[t][0] = _mm512_dpbf16_ps(a[t][0], (__m512bh)_mm512_loadu_si512((const void *)(w[t] + j)), x0);
            a[t][1] = _mm512_dpbf16_ps(a[t][1], (__m512bh)_mm512_loadu_si512((const void *)(w[t] + j + 32)), x1);
        }
    }
    long tail = j;
    if (j + 32 <= k) {
        __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)(xr + j));
        for (int t = 0; t < nr; t++) a[t][0] = _mm512_dpbf16_ps(a[t][0], (__m512bh)_mm512_loadu_si512((const void *)(w[t] + j)), x0);
        tail = j + 32;
    }
    for (int t = 0; t < nr; t++) {
        s[t] = _mm512_reduce_add_ps(_mm512_add_ps(a[t][0], a[t][1]));
        for (long i = tail; i < k; i++) s[t] += bf16f(w[t][i]) * bf16f(xr[i]);
    }
}

/* Rows [r0, r1) of a bf16 call walked in four parts (walk_rows). */
#define EQ_DEFINE_BF16_ROWS(SUFFIX, ATTR, X)                                                                   \
ATTR static void rows_bf16_##SUFFIX(const qctx *c, long r0, long r1) {                                         \
    const long k = c->k;                                                                                       \
    for (long t = 0, steps = walk_steps(r0, r1, 4); t < steps; t++) {                                          \
        long rows[4];                                                                                          \
        const uint16_t *w[4];                                                                                  \
        const int nr = walk_rows(r0, r1, 4, t, rows);                                                          \
        for (int u = 0; u < nr; u++) w[u] = (const uint16_t *)c->w + rows[u] * k;                              \
        for (long i = 0; i < c->m; i++) {                                                                      \
            float s[4];                                                                                        \
            if (nr == 4) bf16_dots_##SUFFIX(w, 4, (X) + i * k, k, s);                                          \
            else bf16_dots_##SUFFIX(w, 1, (X) + i * k, k, s);                                                  \
            for (int u = 0; u < nr; u++) c->y[i * c->n + rows[u]] = s[u] + (c->bias ? c->bias[rows[u]] : 0.0f); \
        }                                                                                                      \
    }                                                                                                          \
}
EQ_DEFINE_BF16_ROWS(avx2, EQ_AVX2, c->xs)
EQ_DEFINE_BF16_ROWS(avx512f, EQ_AVX512F, c->x)
EQ_DEFINE_BF16_ROWS(avx512bf16, EQ_AVX512BF16, c->xb)
#endif /* EQ_X86 */

/* The x8 kernels' stream count (comment above EQ_X8_MAX_STREAMS): defined on every CPU, read by the x86 kernels only. */
static int g_x8_streams = -1;
void ek_set_x8_streams(int n) { g_x8_streams = n == 2 || n == 4 ? n : -1; }
int ek_get_x8_streams(void) {
    if (g_x8_streams < 0) {
        const char *e = getenv("EK_X8_STREAMS");
        int n = e ? atoi(e) : 0;
        if (n != 2 && n != 4) n = ek_cpu_prefers_long_streams() ? 4 : 2;
        g_x8_streams = n;
    }
    return g_x8_streams;
}

/* int8 rows in groups of blocks: the int8 rows' own kernels (rows_int8z, rows_int8y) or the x8 kernels (8 blocks'
 * int32 sums scaled by one vector); EK_INT8_BLOCKWISE=1 in the environment selects the per-block kernel again, for A/B
 * runs. */
static int g_int8_zmm = -1;   /* int8 rows' own kernels (rows_int8z on AVX-512 VNNI, rows_int8y on AVX2); EK_INT8_ZMM=0: x8 */
void ek_set_int8_zmm(int on) { g_int8_zmm = on < 0 ? -1 : on != 0; }
static void read_int8_zmm(void) {
    if (g_int8_zmm < 0) { const char *e = getenv("EK_INT8_ZMM"); g_int8_zmm = !(e && e[0] == '0'); }
}
static int g_int8_groups = -1;
void ek_set_int8_grouped(int on) { g_int8_groups = on < 0 ? -1 : on != 0; }

/* Q4_0X8 / Q4_1X8 rows on the AVX2 path: rows_q4y (the default) or rows_x8_avx2 (EK_Q4Y=0); the same floats. */
static int g_q4y = -1;
void ek_set_q4y(int on) { g_q4y = on < 0 ? -1 : on != 0; }
int ek_get_q4y(void) {
    if (g_q4y < 0) { const char *e = getenv("EK_Q4Y"); g_q4y = !(e && e[0] == '0'); }
    return g_q4y;
}

static int picks_q4y(int format) { return (format == EK_WF_Q4_0X8 || format == EK_WF_Q4_1X8) && g_q4y; }
int ek_q4y_runs(int format) { (void)ek_get_q4y(); return path_for(format) == P_AVX2 && picks_q4y(format); }
long ek_q4y_row_calls(void) {
#if EQ_X86
    return atomic_load_explicit(&g_q4y_calls, memory_order_relaxed);
#else
    return 0;
#endif
}

/* The entry points read the environment once, on the caller's thread, before any task runs. */
static void read_int8_grouped(void) {
    (void)ek_get_q4y();
    (void)ek_get_gemv_prefetch();
    read_int8_zmm();
    if (g_int8_groups < 0) { const char *e = getenv("EK_INT8_BLOCKWISE"); g_int8_groups = !(e && e[0] == '1'); }
}

#if EQ_X86
/* Whether `format`'s rows run through the x8 kernels: the x8 layouts, and int8 unless set block by block. */
static int runs_grouped(int format) { return is_x8(format) || (format == EK_WF_INT8 && g_int8_groups); }
#endif

/* Rows [r0, r1) of one call on its path. */
static void run_range(const qctx *c, long r0, long r1) {
    switch (c->path) {
#if EQ_X86
    case P_AVX2:
        if (is_q5x8(c->format)) rows_q5x8_plain(c, r0, r1, rows_avx2);
        else if (c->format == EK_WF_BF16) rows_bf16_avx2(c, r0, r1);
        else if (is_kq(c->format)) rows_k_avx2(c, r0, r1);
        else if (c->format == EK_WF_INT8 && g_int8_groups && g_int8_zmm) rows_int8y(c, r0, r1);
        else if (picks_q4y(c->format)) rows_q4y(c, r0, r1);
        else if (runs_grouped(c->format)) rows_x8_avx2(c, r0, r1);
        else rows_avx2(c, r0, r1);
        return;
    case P_AVXVNNI:
        if (is_q5x8(c->format)) rows_q5x8_plain(c, r0, r1, rows_avxvnni);
        else if (runs_grouped(c->format)) rows_x8_avxvnni(c, r0, r1);
        else rows_avxvnni(c, r0, r1);
        return;
    case P_AVX512VNNI:
        if (c->format == EK_WF_Q4_0X8 || c->format == EK_WF_Q4_1X8 || is_q5x8(c->format)) rows_x8z(c, r0, r1);
        else if (c->format == EK_WF_INT8 && g_int8_groups && g_int8_zmm) rows_int8z(c, r0, r1);
        else if (runs_grouped(c->format)) rows_x8_avx512vnni(c, r0, r1);
        else rows_avx512vnni(c, r0, r1);
        return;
    case P_AVX512F: rows_bf16_avx512f(c, r0, r1); return;
    case P_AVX512BW: rows_k_avx512(c, r0, r1); return;
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

static void qtask(void *ctx, long index, long count) {
    const qctx *c = (const qctx *)ctx;
    run_range(c, c->n * index / count, c->n * (index + 1) / count);
}

static void run_rows(qctx *c) {
    long bytes = c->n * c->row_bytes;
    long tasks = ek_gemv_tasks(bytes);
    if (tasks > c->n) tasks = c->n;
    ek_parallel_for(tasks, qtask, c);
}

/* x [m, k] → xs [m, k] for the AVX2 bf16 rows (bf16_dots_avx2): each full 16 of a row as its 8 even elements, then
 * its 8 odd ones; the last k % 16 in order. */
static void bf16_split_x(const float *x, long m, long k, float *xs) {
    for (long i = 0; i < m; i++) {
        const float *xr = x + i * k;
        float *o = xs + i * k;
        long j = 0;
        for (; j + 16 <= k; j += 16)
            for (int e = 0; e < 8; e++) { o[j + e] = xr[j + 2 * e]; o[j + 8 + e] = xr[j + 2 * e + 1]; }
        for (; j < k; j++) o[j] = xr[j];
    }
}

/* Quantizes the activations for `format` into the thread's buffer; returns 0 if it could not grow. */
static int prepare(qctx *c) {
    act_buf *a = &g_act;
    if (c->format == EK_WF_BF16) {
        if (c->path == P_AVX2) {
            if (!act_reserve(a, (long)sizeof(float) * c->m * c->k, 0, 0)) return 0;
            bf16_split_x(c->x, c->m, c->k, (float *)a->q);
            c->xs = (const float *)a->q;
            return 1;
        }
        if (c->path != P_AVX512BF16) return 1;
        if (!act_reserve(a, 0, 0, c->m * c->k)) return 0;
        ek_f32_to_bf16(c->x, a->xb, c->m * c->k);
        c->xb = a->xb;
        return 1;
    }
    if (is_kq(c->format)) {      /* Q8_K: q [m, k], d [m, k/256], bsums int16 [m, k/16] in the c buffer */
        if (!act_reserve(a, c->m * c->k, c->m * c->k / 32, 0)) return 0;
        quantize_act_k(c->x, c->m, c->k, a->q, a->d, (int16_t *)a->c);
        c->xq = a->q; c->xd = a->d; c->xbs = (const int16_t *)a->c;
        return 1;
    }
    if (!act_reserve(a, c->m * c->nb * 32, c->m * c->nb, 0)) return 0;
    quantize_act(base_format(c->format), c->x, c->m, c->k, a->q, a->d, a->c);
    if ((c->format == EK_WF_Q4_0X8 || c->format == EK_WF_Q4_1X8) && c->path != P_SCALAR) {
        if (c->path == P_AVX512VNNI) interleave_quads(a->q, c->m, c->nb, 1);   /* the zmm kernels (x8z_group) */
        else interleave_pairs(a->q, c->m, c->nb);
    }
    if (is_q5x8(c->format) && c->path == P_AVX512VNNI) interleave_quads(a->q, c->m, c->nb, 0);   /* x8z5_group */
    c->xq = a->q; c->xd = a->d; c->xc = a->c;
    return 1;
}

int ek_gemv_quant(int format, const void *w, const float *wscale, const float *x, const float *bias, float *y,
                  long m, long n, long k) {
    if (m < 1 || n < 1 || k < 1) return 0;
    if (format != EK_WF_BF16 && format != EK_WF_INT8 && format != EK_WF_Q8_0 && format != EK_WF_Q4_0 &&
        format != EK_WF_Q4_1 && format != EK_WF_Q5_0 && format != EK_WF_Q5_1 && !is_x8(format) && !is_kq(format)) return -1;
    if (is_kq(format) && k % 256 != 0) return -1;
    read_int8_grouped();
    qctx c;
    memset(&c, 0, sizeof c);
    c.format = format; c.path = path_for(format); c.streams = ek_get_x8_streams();
    c.w = (const uint8_t *)w; c.wscale = wscale; c.x = x; c.bias = bias; c.y = y;
    c.m = m; c.n = n; c.k = k; c.nb = (k + 31) / 32; c.row_bytes = ek_quant_row_bytes(format, k);
    if (!prepare(&c)) return -2;
    run_rows(&c);
    return 0;
}

/* Several matrices of one format against the same x (q/k/v, gate/up): the activations are quantized once and
 * one pool job covers the rows of all of them, cut into equal runs of the concatenated rows. */
typedef struct {
    long count;
    qctx c[EK_GEMV_MULTI_MAX];
    long row0[EK_GEMV_MULTI_MAX + 1];   /* first concatenated row of each matrix; row0[count] = total */
} multi_ctx;

static void multi_task(void *ctx, long index, long count) {
    const multi_ctx *mc = (const multi_ctx *)ctx;
    long total = mc->row0[mc->count];
    long g0 = total * index / count, g1 = total * (index + 1) / count;
    for (long j = 0; j < mc->count && g0 < g1; j++) {
        long a = mc->row0[j], b = mc->row0[j + 1];
        if (b <= g0) continue;
        long e = g1 < b ? g1 : b;
        run_range(&mc->c[j], g0 - a, e - a);
        g0 = e;
    }
}

int ek_gemv_quant_multi(int format, long count, const void *const *w, const float *const *wscale,
                        const float *const *bias, float *const *y, const long *n, const float *x, long m, long k) {
    if (count < 1 || count > EK_GEMV_MULTI_MAX) return -1;
    if (m < 1 || k < 1) return 0;
    if (format != EK_WF_BF16 && format != EK_WF_INT8 && format != EK_WF_Q8_0 && format != EK_WF_Q4_0 &&
        format != EK_WF_Q4_1 && format != EK_WF_Q5_0 && format != EK_WF_Q5_1 && !is_x8(format) && !is_kq(format)) return -1;
    if (is_kq(format) && k % 256 != 0) return -1;
    read_int8_grouped();
    multi_ctx mc;
    memset(&mc, 0, sizeof mc);
    mc.count = count;
    qctx *c0 = &mc.c[0];
    c0->format = format; c0->path = path_for(format); c0->x = x; c0->streams = ek_get_x8_streams();
    c0->m = m; c0->k = k; c0->nb = (k + 31) / 32; c0->row_bytes = ek_quant_row_bytes(format, k);
    if (!prepare(c0)) return -2;                       /* one quantization of x for every matrix */
    long bytes = 0;
    for (long j = 0; j < count; j++) {
        if (n[j] < 0) return -1;
        mc.c[j] = *c0;
        mc.c[j].w = (const uint8_t *)w[j]; mc.c[j].wscale = wscale ? wscale[j] : NULL;
        mc.c[j].bias = bias ? bias[j] : NULL; mc.c[j].y = y[j]; mc.c[j].n = n[j];
        mc.row0[j + 1] = mc.row0[j] + n[j];
        bytes += n[j] * c0->row_bytes;
    }
    long total = mc.row0[count];
    if (total == 0) return 0;
    long tasks = ek_gemv_tasks(bytes);
    if (tasks > total) tasks = total;
    ek_parallel_for(tasks, multi_task, &mc);
    return 0;
}

int ek_gemv_quant_multi_ref(int format, long count, const void *const *w, const float *const *wscale,
                            const float *const *bias, float *const *y, const long *n, const float *x, long m, long k) {
    if (count < 1 || count > EK_GEMV_MULTI_MAX) return -1;
    for (long j = 0; j < count; j++) {
        int rc = ek_gemv_quant_ref(format, w[j], wscale ? wscale[j] : NULL, x, bias ? bias[j] : NULL, y[j], m, n[j], k);
        if (rc != 0) return rc;
    }
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
    case EK_WF_Q5_0: case EK_WF_Q5_1: {
        const int one = format == EK_WF_Q5_1;
        const uint8_t *blk = wr + b * (22 + 2 * one), *hb = blk + 2 + 2 * one;
        int q = e < 16 ? hb[4 + e] & 0xF : hb[4 + e - 16] >> 4;
        q |= ((hb[e / 8] >> (e % 8)) & 1) << 4;
        return one ? (double)f16_to_f32(rd16(blk)) * q + f16_to_f32(rd16(blk + 2)) : (double)f16_to_f32(rd16(blk)) * (q - 16);
    }
    default: return 0;
    }
}

int ek_gemv_quant_ref(int format, const void *w, const float *wscale, const float *x, const float *bias, float *y,
                      long m, long n, long k) {
    if (m < 1 || n < 1 || k < 1) return 0;
    if (is_kq(format)) {        /* Q8_K activations, weights dequantized in double from their integer parts */
        if (k % 256 != 0) return -1;
        long nb = k / 256, bb = kq_block_bytes(format);
        int8_t *q = malloc((size_t)(m * k));
        float *d = malloc(sizeof(float) * (size_t)(m * nb));
        int16_t *bs = malloc(sizeof(int16_t) * (size_t)(m * nb * 16));
        double *wv = malloc(sizeof(double) * (size_t)k);
        if (!q || !d || !bs || !wv) { free(q); free(d); free(bs); free(wv); return -2; }
        quantize_act_k(x, m, k, q, d, bs);
        int8_t a[256];
        for (long r = 0; r < n; r++) {
            const uint8_t *wr = (const uint8_t *)w + r * ek_quant_row_bytes(format, k);
            for (long b = 0; b < nb; b++) {
                const uint8_t *blk = wr + b * bb;
                kq_values(format, blk, a);
                for (int j = 0; j < 256; j++) {
                    if (format == EK_WF_Q6_K) {
                        wv[b * 256 + j] = (double)f16_to_f32(rd16(blk + 208)) * ((const int8_t *)(blk + 192))[j / 16] * a[j];
                    } else {
                        int sc, mn;
                        kq_scale_min(j / 32, blk + 4, &sc, &mn);
                        wv[b * 256 + j] = (double)f16_to_f32(rd16(blk)) * sc * a[j] - (double)f16_to_f32(rd16(blk + 2)) * mn;
                    }
                }
            }
            for (long i = 0; i < m; i++) {
                double acc = 0;
                for (long j = 0; j < k; j++) acc += wv[j] * (double)d[i * nb + j / 256] * q[i * k + j];
                y[i * n + r] = (float)acc + (bias ? bias[r] : 0.0f);
            }
        }
        free(q); free(d); free(bs); free(wv);
        return 0;
    }
    if (is_x8(format)) {        /* back to ggml blocks, then the same arithmetic */
        long bytes = n * ek_quant_row_bytes(format, k);
        void *plain = malloc((size_t)bytes);
        if (!plain) return -2;
        ek_unpack_x8(format, w, plain, n, k);
        int rc = ek_gemv_quant_ref(base_format(format), plain, wscale, x, bias, y, m, n, k);
        free(plain);
        return rc;
    }
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
            } else if (has_min(format)) {
                /* ggml's q4_1·q8_1 (q5_1·q8_1): the m·x part uses the block's f16-rounded s = d_x Σ q_x */
                const long bb = block_bytes(format);
                for (long j = 0; j < k; j++) {
                    const uint8_t *blk = (const uint8_t *)w + r * ek_quant_row_bytes(format, k) + (j / 32) * bb;
                    double wq = weight_at(format, w, wscale, r, j, k) - f16_to_f32(rd16(blk + 2));
                    s += wq * (double)d[i * nb + j / 32] * q[i * nb * 32 + j];
                }
                for (long b = 0; b < nb; b++)
                    s += (double)f16_to_f32(rd16((const uint8_t *)w + r * ek_quant_row_bytes(format, k) + b * bb + 2)) * cc[i * nb + b];
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

/* C's (int8_t) cast of a float as x86 compilers emit it (cvttss2si's int32 — INT32_MIN for NaN, ±Inf and |y| >= 2^31
 * — cut to its low byte), defined for every float: the cast itself is undefined out of range, and clang's vectorised
 * plain loops saturated NaN to −128 where gcc's kept the low byte 0, so the plain loops' bytes (the AVX2 quantizers'
 * twins, and what arm64 runs) depended on the compiler. */
static inline int8_t cvt_low8(float y) {
    const int32_t t = fabsf(y) < 2147483648.0f ? (int32_t)y : INT32_MIN;
    return (int8_t)(uint8_t)(uint32_t)t;
}

#if EQ_X86
/* One int8 row (cols ≥ 1) on AVX2: the same bytes as the plain loop in quantize_rows_serial — the largest |x| skipping
 * NaN (vmaxps returns its second operand when the first is NaN, as `a > amax` fails), lrintf's rounding (vcvtps2dq
 * rounds to nearest even in the default MXCSR mode), NaN to 0 (lrintf's LONG_MIN has a zero low byte). */
EQ_AVX2 static float quantize_row_int8_avx2(const float *x, long cols, long padded, int8_t *q) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    long j = 0;
    for (; j + 8 <= cols; j += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
    float amax = hmax256(m);
    for (; j < cols; j++) { float a = fabsf(x[j]); if (a > amax) amax = a; }
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    j = 0;
    for (; j + 32 <= cols; j += 32) {
        __m256i i4[4];
        for (int u = 0; u < 4; u++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * u), idv);
            i4[u] = _mm256_cvtps_epi32(_mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)));
        }
        __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(i4[0], i4[1]), _mm256_packs_epi32(i4[2], i4[3]));
        _mm256_storeu_si256((__m256i *)(q + j), _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    for (; j < padded; j++) q[j] = j < cols ? (int8_t)lrintf(x[j] * id) : 0;
    return d;
}

/* The low byte of each int32 lane of a, b, c, d as 32 bytes in lane order (a's 8, then b's, c's, d's): C's (int8_t)
 * and (uint8_t) casts of an int, which keep the low byte (no saturation). */
EQ_AVX2 static inline __m256i low_bytes4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ff = _mm256_set1_epi32(0xFF);
    __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(_mm256_and_si256(a, ff), _mm256_and_si256(b, ff)),
                                    _mm256_packus_epi32(_mm256_and_si256(c, ff), _mm256_and_si256(d, ff)));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The largest |v| of a block's 32 values, skipping NaN as the plain loops' `a > amax` does (vmaxps returns its
 * second operand, the running maximum, when the first is NaN). */
EQ_AVX2 static inline float block_amax_avx2(const __m256 *v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int u = 0; u < 4; u++) m = _mm256_max_ps(_mm256_andnot_ps(sign, v[u]), m);
    return hmax256(m);
}

/* Keeps a product rounded on its own: a compiler that contracts (gcc's default -ffp-contract=fast under the FMA target
 * of these functions) would otherwise fuse it with the add or subtract that follows, which the plain loops (built
 * without FMA) never do. */
#define EQ_NO_CONTRACT(v) __asm__("" : "+x"(v))

/* One Q8_0 block (32 values, zero-padded) on AVX2: the same bytes as the plain loop in quantize_rows_serial. roundf
 * (halves away from zero) as trunc(y) ± 1 where |y − trunc(y)| ≥ 0.5 (the difference is exact), and the (int8_t) cast
 * as vcvttps2dq's value (0x80000000 for NaN and ±Inf) cut to its low byte. For NaN, ±Inf and values out of range
 * that cast is undefined in C; the plain loop's bytes are what x86 compilers emit for it (cvttss2si, then the low
 * byte), which is what this matches. */
EQ_AVX2 static void quantize_block_q8_0_avx2(const float *v, uint8_t *blk) {
    __m256 x[4];
    for (int u = 0; u < 4; u++) x[u] = _mm256_loadu_ps(v + 8 * u);
    const float amax = block_amax_avx2(x), d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    wr16(blk, f32_to_f16(d));
    const __m256 idv = _mm256_set1_ps(id), sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256i q[4];
    for (int u = 0; u < 4; u++) {
        __m256 y = _mm256_mul_ps(x[u], idv);
        EQ_NO_CONTRACT(y);
        const __m256 t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 away = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(y, t)), half, _CMP_GE_OQ);
        const __m256 step = _mm256_and_ps(away, _mm256_or_ps(_mm256_and_ps(y, sign), one));   /* ±1 or 0 */
        q[u] = _mm256_cvttps_epi32(_mm256_add_ps(t, step));
    }
    _mm256_storeu_si256((__m256i *)(blk + 2), low_bytes4(q[0], q[1], q[2], q[3]));
}

/* One Q4_0 block on AVX2, as quantize_block_q8_0_avx2: the value of the largest |v| (its first occurrence; +0 when
 * every value is zero or NaN) scales the block by −8, then (int)(int8_t)(v·id + 8.5) with the plain loop's separate
 * multiply and add (no FMA), capped at 15; byte j holds values j and j + 16. */
EQ_AVX2 static void quantize_block_q4_0_avx2(const float *v, uint8_t *blk) {
    __m256 x[4];
    for (int u = 0; u < 4; u++) x[u] = _mm256_loadu_ps(v + 8 * u);
    const float amax = block_amax_avx2(x);
    float mx = 0.0f;
    if (amax > 0.0f) {
        const __m256 sign = _mm256_set1_ps(-0.0f), a = _mm256_set1_ps(amax);
        uint32_t hit = 0;
        for (int u = 0; u < 4; u++)
            hit |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, x[u]), a, _CMP_EQ_OQ)) << (8 * u);
        mx = v[__builtin_ctz(hit)];
    }
    const float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    wr16(blk, f32_to_f16(d));
    const __m256 idv = _mm256_set1_ps(id), bias = _mm256_set1_ps(8.5f);
    const __m256i fifteen = _mm256_set1_epi32(15);
    __m256i q[4];
    for (int u = 0; u < 4; u++) {
        __m256 y = _mm256_mul_ps(x[u], idv);
        EQ_NO_CONTRACT(y);
        __m256i t = _mm256_cvttps_epi32(_mm256_add_ps(y, bias));
        t = _mm256_srai_epi32(_mm256_slli_epi32(t, 24), 24);   /* (int)(int8_t) */
        q[u] = _mm256_min_epi32(t, fifteen);
    }
    const __m256i lo = low_bytes4(_mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4)),
                                  _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4)), _mm256_setzero_si256(), _mm256_setzero_si256());
    _mm_storeu_si128((__m128i *)(blk + 2), _mm256_castsi256_si128(lo));
}
#endif

/* Rows [0, rows) one after another; `plain` keeps every format on the plain C loops (ek_quantize_rows_ref). */
static int quantize_rows_serial(int format, const float *src, void *dst, float *scales, long rows, long cols, int plain) {
    long nb = (cols + 31) / 32, rb = ek_quant_row_bytes(format, cols);
#if EQ_X86
    const int simd = !plain && !ek_get_force_reference() && (ek_cpu_features() & EK_CPU_AVX2_FMA);
#else
    (void)plain;
#endif
    for (long r = 0; r < rows; r++) {
        const float *x = src + r * cols;
        uint8_t *out = (uint8_t *)dst + r * rb;
        if (format == EK_WF_BF16) { ek_f32_to_bf16(x, (uint16_t *)dst + r * cols, cols); continue; }
#if EQ_X86
        if (format == EK_WF_INT8 && simd) { scales[r] = quantize_row_int8_avx2(x, cols, nb * 32, (int8_t *)out); continue; }
#endif
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
#if EQ_X86
            if (simd && format == EK_WF_Q8_0) { quantize_block_q8_0_avx2(v, out + b * 34); continue; }
            if (simd && format == EK_WF_Q4_0) { quantize_block_q4_0_avx2(v, out + b * 18); continue; }
#endif
            if (format == EK_WF_Q8_0) {
                uint8_t *blk = out + b * 34;
                float amax = 0;
                for (int j = 0; j < 32; j++) { float a = fabsf(v[j]); if (a > amax) amax = a; }
                float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)cvt_low8(roundf(v[j] * id));
            } else if (format == EK_WF_Q4_0) {
                uint8_t *blk = out + b * 18;
                float amax = 0, mx = 0;
                for (int j = 0; j < 32; j++) if (fabsf(v[j]) > amax) { amax = fabsf(v[j]); mx = v[j]; }
                float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                for (int j = 0; j < 16; j++) {
                    int q0 = cvt_low8(v[j] * id + 8.5f), q1 = cvt_low8(v[j + 16] * id + 8.5f);
                    if (q0 > 15) q0 = 15;
                    if (q1 > 15) q1 = 15;
                    blk[2 + j] = (uint8_t)(q0 | (q1 << 4));
                }
            } else if (format == EK_WF_Q5_0 || format == EK_WF_Q5_1) {   /* quantize_row_q5_0_ref / q5_1_ref */
                const int one = format == EK_WF_Q5_1;
                uint8_t *blk = out + b * (22 + 2 * one), *hb = blk + 2 + 2 * one;
                float d, id, mn = 0;
                if (one) {
                    float mx = v[0];
                    mn = v[0];
                    for (int j = 1; j < 32; j++) { if (v[j] < mn) mn = v[j]; if (v[j] > mx) mx = v[j]; }
                    d = (mx - mn) / 31.0f;
                    wr16(blk + 2, f32_to_f16(mn));
                } else {
                    float amax = 0, mx = 0;
                    for (int j = 0; j < 32; j++) if (fabsf(v[j]) > amax) { amax = fabsf(v[j]); mx = v[j]; }
                    d = mx / -16.0f;
                }
                id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                uint32_t qh = 0;
                for (int j = 0; j < 16; j++) {
                    int q0, q1;
                    if (one) { q0 = (uint8_t)cvt_low8((v[j] - mn) * id + 0.5f); q1 = (uint8_t)cvt_low8((v[j + 16] - mn) * id + 0.5f); }
                    else {
                        q0 = cvt_low8(v[j] * id + 16.5f); q1 = cvt_low8(v[j + 16] * id + 16.5f);
                        if (q0 > 31) q0 = 31;
                        if (q1 > 31) q1 = 31;
                    }
                    hb[4 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
                    qh |= (uint32_t)((q0 & 0x10) >> 4) << j;
                    qh |= (uint32_t)((q1 & 0x10) >> 4) << (j + 16);
                }
                hb[0] = (uint8_t)qh; hb[1] = (uint8_t)(qh >> 8); hb[2] = (uint8_t)(qh >> 16); hb[3] = (uint8_t)(qh >> 24);
            } else { /* Q4_1 */
                uint8_t *blk = out + b * 20;
                float mn = v[0], mx = v[0];
                for (int j = 1; j < 32; j++) { if (v[j] < mn) mn = v[j]; if (v[j] > mx) mx = v[j]; }
                float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                wr16(blk, f32_to_f16(d));
                wr16(blk + 2, f32_to_f16(mn));
                for (int j = 0; j < 16; j++) {
                    int q0 = cvt_low8((v[j] - mn) * id + 0.5f), q1 = cvt_low8((v[j + 16] - mn) * id + 0.5f);
                    if (q0 > 15) q0 = 15;
                    if (q1 > 15) q1 = 15;
                    blk[4 + j] = (uint8_t)(q0 | (q1 << 4));
                }
            }
        }
    }
    return 0;
}

/* Tasks a row-wise conversion of rows × cols values is split into over the kernel threads: 0 (run it on the caller's
 * thread) below 64 Ki values, for a single row or a single thread. Each row's bytes are the same either way. */
static long row_split_tasks(long rows, long cols) {
    if (rows < 2 || rows * cols < (1L << 16) || ek_get_threads() <= 1) return 0;
    long tasks = 2L * ek_get_threads();
    return tasks < rows ? tasks : rows;
}

/* Whether ek_quantize_rows has a quantizer for `format` and what it needs (int8: the scales). */
static int quantize_rows_accepts(int format, const float *scales, long cols) {
    return ek_quant_row_bytes(format, cols) != 0 && format != EK_WF_F32 && !is_kq(format) && !is_x8(format) &&
           !(format == EK_WF_INT8 && !scales);
}

typedef struct { int format; const float *src; void *dst; float *scales; long rows, cols, rb; int rc; } qr_ctx;

static void qr_task(void *ctx, long index, long count) {
    qr_ctx *c = ctx;
    long r0 = c->rows * index / count, r1 = c->rows * (index + 1) / count;
    if (r0 >= r1) return;
    int rc = quantize_rows_serial(c->format, c->src + r0 * c->cols, (uint8_t *)c->dst + r0 * c->rb,
                                  c->scales ? c->scales + r0 : NULL, r1 - r0, c->cols, 0);
    if (rc != 0) c->rc = rc;
}

/* Rows split over the kernel threads when there are many values (a checkpoint quantized as it loads): each row's
 * bytes are the same whichever thread wrote them. */
int ek_quantize_rows(int format, const float *src, void *dst, float *scales, long rows, long cols) {
    if (!quantize_rows_accepts(format, scales, cols)) return -1;
    long tasks = row_split_tasks(rows, cols);
    if (tasks == 0) return quantize_rows_serial(format, src, dst, scales, rows, cols, 0);
    qr_ctx c = { format, src, dst, scales, rows, cols, ek_quant_row_bytes(format, cols), 0 };
    ek_parallel_for(tasks, qr_task, &c);
    return c.rc;
}

int ek_quantize_rows_ref(int format, const float *src, void *dst, float *scales, long rows, long cols) {
    if (!quantize_rows_accepts(format, scales, cols)) return -1;
    return quantize_rows_serial(format, src, dst, scales, rows, cols, 1);
}

static int dequantize_rows_serial(int format, const void *src, const float *scales, float *dst, long rows, long cols);

typedef struct { int format; const void *src; const float *scales; float *dst; long rows, cols, rb; int rc; } dqr_ctx;

static void dqr_task(void *ctx, long index, long count) {
    dqr_ctx *c = ctx;
    long r0 = c->rows * index / count, r1 = c->rows * (index + 1) / count;
    if (r0 >= r1) return;
    int rc = dequantize_rows_serial(c->format, (const uint8_t *)c->src + r0 * c->rb, c->scales ? c->scales + r0 : NULL,
                                    c->dst + r0 * c->cols, r1 - r0, c->cols);
    if (rc != 0) c->rc = rc;   /* any failing range fails the call (they fail alike: same format and width) */
}

/* Rows split over the kernel threads when there are many values (prompt passes widen a whole matrix per call). */
int ek_dequantize_rows(int format, const void *src, const float *scales, float *dst, long rows, long cols) {
    long rb = ek_quant_row_bytes(format, cols);
    if (rb == 0) return -1;
    long tasks = is_kq(format) ? 0 : row_split_tasks(rows, cols);   /* K-quants: ek_dequantize splits */
    if (tasks == 0) return dequantize_rows_serial(format, src, scales, dst, rows, cols);
    dqr_ctx c = { format, src, scales, dst, rows, cols, rb, 0 };
    ek_parallel_for(tasks, dqr_task, &c);
    return c.rc;
}

static int dequantize_rows_serial(int format, const void *src, const float *scales, float *dst, long rows, long cols) {
    long rb = ek_quant_row_bytes(format, cols);
    if (rb == 0) return -1;
    if (is_kq(format)) {
        if (cols % 256 != 0) return -1;
        int type = format == EK_WF_Q4_K ? EK_GGML_Q4_K : format == EK_WF_Q5_K ? EK_GGML_Q5_K : EK_GGML_Q6_K;
        return ek_dequantize(type, src, dst, rows * cols);
    }
    if (is_x8(format)) {        /* one row at a time through a ggml copy (on the stack for rows ≤ 8 KiB) */
        uint8_t stack_row[8192];
        uint8_t *row = rb <= (long)sizeof stack_row ? stack_row : malloc((size_t)rb);
        if (!row) return -2;
        for (long r = 0; r < rows; r++) {
            ek_unpack_x8(format, (const uint8_t *)src + r * rb, row, 1, cols);
            dequantize_rows_serial(base_format(format), row, NULL, dst + r * cols, 1, cols);
        }
        if (row != stack_row) free(row);
        return 0;
    }
    if (format == EK_WF_F32) { memcpy(dst, src, sizeof(float) * (size_t)(rows * cols)); return 0; }
    if (format == EK_WF_BF16) { ek_bf16_to_f32(src, dst, rows * cols); return 0; }
    if (format == EK_WF_INT8) {
        for (long r = 0; r < rows; r++) {
            const int8_t *q = (const int8_t *)src + r * rb;
            for (long j = 0; j < cols; j++) dst[r * cols + j] = scales[r] * (float)q[j];
        }
        return 0;
    }
    int type = format == EK_WF_Q8_0 ? EK_GGML_Q8_0 : format == EK_WF_Q4_0 ? EK_GGML_Q4_0 : format == EK_WF_Q5_0 ? EK_GGML_Q5_0
             : format == EK_WF_Q5_1 ? EK_GGML_Q5_1 : EK_GGML_Q4_1;
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

/* ------------------------------------------------------------------------------------------------ */
/* x8 layouts: ggml blocks regrouped by 8                                                            */

/* One row: ggml → x8 (pack = 1) or x8 → ggml (pack = 0); src and dst do not overlap. */
static void x8_row(int base, const uint8_t *src, uint8_t *dst, long nb, int pack) {
    const long B = block_bytes(base), h = header_bytes(base), P = B - h;
    for (long g0 = 0; g0 < nb; g0 += 8) {
        long g = nb - g0 < 8 ? nb - g0 : 8;
        for (long j = 0; j < g; j++) {
            long plain = (g0 + j) * B, grp = g0 * B;
            long off[3][2] = { { plain, grp + 2 * j }, { plain + 2, grp + 2 * g + 2 * j }, { plain + h, grp + h * g + P * j } };
            for (int f = 0; f < 3; f++) {
                long len = f == 0 ? 2 : f == 1 ? (h == 4 ? 2 : 0) : P;
                if (len == 0) continue;
                if (pack) memcpy(dst + off[f][1], src + off[f][0], (size_t)len);
                else memcpy(dst + off[f][0], src + off[f][1], (size_t)len);
            }
        }
    }
}

static int x8_convert(int format, const void *src, void *dst, long rows, long cols, int pack) {
    int base = base_format(format);
    if (!is_x8(format) && !(base == EK_WF_Q8_0 || base == EK_WF_Q4_0 || base == EK_WF_Q4_1 || base == EK_WF_Q5_0 ||
                            base == EK_WF_Q5_1)) return -1;
    long rb = ek_quant_row_bytes(base, cols), nb = (cols + 31) / 32;
    uint8_t *tmp = malloc((size_t)rb);
    if (!tmp) return -2;
    for (long r = 0; r < rows; r++) {
        memcpy(tmp, (const uint8_t *)src + r * rb, (size_t)rb);        /* src may be dst */
        if (base == EK_WF_Q5_0 || base == EK_WF_Q5_1) x8_row5(base, tmp, (uint8_t *)dst + r * rb, nb, pack);
        else x8_row(base, tmp, (uint8_t *)dst + r * rb, nb, pack);
    }
    free(tmp);
    return 0;
}

int ek_x8_pays(int format) {
    if (format == EK_WF_Q8_0 || format == EK_WF_Q4_0 || format == EK_WF_Q4_1) return 1;
    if (format == EK_WF_Q5_0 || format == EK_WF_Q5_1) return path_for(ek_x8_format(format)) == P_AVX512VNNI;
    return 0;
}

void ek_x8_block(int format, const void *row, long nb, long b, void *out) {
    x8_block(base_format(format), (const uint8_t *)row, nb, b, (uint8_t *)out);
}

int ek_repack_x8(int format, const void *src, void *dst, long rows, long cols) { return x8_convert(format, src, dst, rows, cols, 1); }
int ek_unpack_x8(int format, const void *src, void *dst, long rows, long cols) { return x8_convert(format, src, dst, rows, cols, 0); }
int ek_x8_format(int format) {
    return format == EK_WF_Q8_0 ? EK_WF_Q8_0X8 : format == EK_WF_Q4_0 ? EK_WF_Q4_0X8 : format == EK_WF_Q4_1 ? EK_WF_Q4_1X8
         : format == EK_WF_Q5_0 ? EK_WF_Q5_0X8 : format == EK_WF_Q5_1 ? EK_WF_Q5_1X8 : -1;
}
