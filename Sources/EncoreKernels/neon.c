/* arm64 NEON kernels (Apple Silicon, phones, Graviton): the twins of the AVX2 kernels in kernels.c and
 * gemv_quant.c, selected at run time by the hooks there (ek_kernel_path() / ek_gemv_path() report "neon", and
 * "neon-dotprod" for the int8 GEMV on CPUs with SDOT). Every kernel is checked against the plain-C `_ref` twin
 * by Tests/NativeKernels/kernel_parity.c (scripts/test-kernels.sh runs it under qemu-aarch64).
 *
 * Arithmetic: fp32 with fused multiply-add and 4-16 independent accumulators, as the AVX2 kernels; exp is the
 * same Cephes polynomial (~2 ulp); the activation quantizer gives the plain-C bytes exactly (vcvtnq rounds half
 * to even like lrintf); int8 block dots are exact int32 sums (SMULL+SADALP, or SDOT). */
#include "EncoreKernels.h"
#include "neon.h"
#include "avx2_math.h"   /* EK_EXP_* (the rest of it is x86-only) */

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define EK_DOTPROD __attribute__((target("dotprod")))

int ek_neon_features(void) {
    int f = EK_CPU_NEON;
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) f |= EK_CPU_NEON_DOTPROD;
#elif defined(__APPLE__)
    int v = 0;
    size_t len = sizeof v;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0 && v) f |= EK_CPU_NEON_DOTPROD;
#endif
    return f;
}

/* ------------------------------------------------------------------------------------------------ */
/* elementwise                                                                                       */

float ek_neon_dot_f32(const float *a, const float *b, long n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void ek_neon_axpy_f32(float alpha, const float *x, float *y, long n) {
    const float32x4_t a = vdupq_n_f32(alpha);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), a, vld1q_f32(x + i)));
        vst1q_f32(y + i + 4, vfmaq_f32(vld1q_f32(y + i + 4), a, vld1q_f32(x + i + 4)));
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), a, vld1q_f32(x + i)));
    for (; i < n; i++) y[i] += alpha * x[i];
}

float ek_neon_sum_f32(const float *x, long n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vaddq_f32(s0, vld1q_f32(x + i));
        s1 = vaddq_f32(s1, vld1q_f32(x + i + 4));
        s2 = vaddq_f32(s2, vld1q_f32(x + i + 8));
        s3 = vaddq_f32(s3, vld1q_f32(x + i + 12));
    }
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) s += x[i];
    return s;
}

/* Cephes-style expf, ~2 ulp over the float range (exp256's polynomial, avx2_math.h's EK_EXP_* constants). */
static inline float32x4_t exp4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-EK_EXP_CLAMP)), vdupq_n_f32(EK_EXP_CLAMP));
    float32x4_t fx = vrndmq_f32(vfmaq_f32(vdupq_n_f32(0.5f), x, vdupq_n_f32(EK_EXP_LOG2E)));
    x = vfmsq_f32(x, fx, vdupq_n_f32(EK_EXP_C1));
    x = vfmsq_f32(x, fx, vdupq_n_f32(EK_EXP_C2));
    float32x4_t y = vdupq_n_f32(EK_EXP_P0);
    y = vfmaq_f32(vdupq_n_f32(EK_EXP_P1), y, x);
    y = vfmaq_f32(vdupq_n_f32(EK_EXP_P2), y, x);
    y = vfmaq_f32(vdupq_n_f32(EK_EXP_P3), y, x);
    y = vfmaq_f32(vdupq_n_f32(EK_EXP_P4), y, x);
    y = vfmaq_f32(vdupq_n_f32(EK_EXP_P5), y, x);
    y = vfmaq_f32(vaddq_f32(x, vdupq_n_f32(1.0f)), y, vmulq_f32(x, x));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

void ek_neon_exp_f32(float *x, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, exp4(vld1q_f32(x + i)));
    for (; i < n; i++) x[i] = expf(x[i]);
}

/* gelu(x) = 0.5 x (1 + tanh(u)), tanh(u) = 1 - 2 / (exp(2u) + 1) */
void ek_neon_bias_gelu_f32(float *x, const float *bias, long rows, long cols) {
    const float32x4_t c = vdupq_n_f32(0.7978845608028654f), k = vdupq_n_f32(0.044715f);
    const float32x4_t one = vdupq_n_f32(1.0f), two = vdupq_n_f32(2.0f), half = vdupq_n_f32(0.5f);
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        long i = 0;
        for (; i + 4 <= cols; i += 4) {
            float32x4_t v = vld1q_f32(row + i);
            if (bias) v = vaddq_f32(v, vld1q_f32(bias + i));
            float32x4_t v3 = vmulq_f32(vmulq_f32(v, v), v);
            float32x4_t u = vmulq_f32(c, vfmaq_f32(v, k, v3));
            float32x4_t e = exp4(vmulq_f32(two, u));
            float32x4_t t = vsubq_f32(one, vdivq_f32(two, vaddq_f32(e, one)));
            vst1q_f32(row + i, vmulq_f32(vmulq_f32(half, v), vaddq_f32(one, t)));
        }
        for (; i < cols; i++) {
            float v = row[i] + (bias ? bias[i] : 0.0f);
            row[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        }
    }
}

void ek_neon_rmsnorm_f32(const float *x, const float *w, float *out, long rows, long dim, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *o = out + r * dim;
        float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
        long i = 0;
        for (; i + 8 <= dim; i += 8) {
            float32x4_t a = vld1q_f32(xr + i), b = vld1q_f32(xr + i + 4);
            s0 = vfmaq_f32(s0, a, a);
            s1 = vfmaq_f32(s1, b, b);
        }
        float ss = vaddvq_f32(vaddq_f32(s0, s1));
        for (; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        const float32x4_t vi = vdupq_n_f32(inv);
        for (i = 0; i + 4 <= dim; i += 4) vst1q_f32(o + i, vmulq_f32(vld1q_f32(w + i), vmulq_f32(vld1q_f32(xr + i), vi)));
        for (; i < dim; i++) o[i] = w[i] * (xr[i] * inv);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* decode f32 GEMV: each weight row read once, dotted with up to 4 inputs per pass                   */

void ek_neon_gemv_rows_f32(const float *w, const float *x, const float *bias, float *y, long m, long n, long k,
                           long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        const float *wr = w + r * k;
        float b = bias ? bias[r] : 0.0f;
        if (m == 1) { y[r] = ek_neon_dot_f32(wr, x, k) + b; continue; }
        for (long i0 = 0; i0 < m; i0 += 4) {
            long mm = m - i0 < 4 ? m - i0 : 4;
            const float *x0 = x + i0 * k;
            const float *x1 = mm > 1 ? x0 + k : x0, *x2 = mm > 2 ? x0 + 2 * k : x0, *x3 = mm > 3 ? x0 + 3 * k : x0;
            float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
            long j = 0;
            for (; j + 8 <= k; j += 8) {
                float32x4_t wv = vld1q_f32(wr + j), wu = vld1q_f32(wr + j + 4);
                a0 = vfmaq_f32(a0, wv, vld1q_f32(x0 + j)); e0 = vfmaq_f32(e0, wu, vld1q_f32(x0 + j + 4));
                a1 = vfmaq_f32(a1, wv, vld1q_f32(x1 + j)); e1 = vfmaq_f32(e1, wu, vld1q_f32(x1 + j + 4));
                a2 = vfmaq_f32(a2, wv, vld1q_f32(x2 + j)); e2 = vfmaq_f32(e2, wu, vld1q_f32(x2 + j + 4));
                a3 = vfmaq_f32(a3, wv, vld1q_f32(x3 + j)); e3 = vfmaq_f32(e3, wu, vld1q_f32(x3 + j + 4));
            }
            for (; j + 4 <= k; j += 4) {
                float32x4_t wv = vld1q_f32(wr + j);
                a0 = vfmaq_f32(a0, wv, vld1q_f32(x0 + j)); a1 = vfmaq_f32(a1, wv, vld1q_f32(x1 + j));
                a2 = vfmaq_f32(a2, wv, vld1q_f32(x2 + j)); a3 = vfmaq_f32(a3, wv, vld1q_f32(x3 + j));
            }
            float s[4] = { vaddvq_f32(vaddq_f32(a0, e0)), vaddvq_f32(vaddq_f32(a1, e1)),
                           vaddvq_f32(vaddq_f32(a2, e2)), vaddvq_f32(vaddq_f32(a3, e3)) };
            for (; j < k; j++) { s[0] += wr[j] * x0[j]; s[1] += wr[j] * x1[j]; s[2] += wr[j] * x2[j]; s[3] += wr[j] * x3[j]; }
            for (long i = 0; i < mm; i++) y[(i0 + i) * n + r] = s[i] + b;
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* attention engine pieces                                                                           */

/* scores[j][i] = q_{h_j} . k_{s0+i}, D % 4 == 0: four keys per pass, eight FMA chains, one pairwise reduction */
void ek_neon_group_scores(const float *const *qs, long G, const float *k, long k_stride, long n, long D,
                          float *scores, long ld) {
    for (long j = 0; j < G; j++) {
        const float *qh = qs[j];
        float *out = scores + j * ld;
        long i = 0;
        for (; i + 4 <= n; i += 4) {
            const float *k0 = k + i * k_stride, *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride;
            float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            long d = 0;
            for (; d + 8 <= D; d += 8) {
                float32x4_t qv = vld1q_f32(qh + d), qu = vld1q_f32(qh + d + 4);
                a0 = vfmaq_f32(a0, qv, vld1q_f32(k0 + d)); b0 = vfmaq_f32(b0, qu, vld1q_f32(k0 + d + 4));
                a1 = vfmaq_f32(a1, qv, vld1q_f32(k1 + d)); b1 = vfmaq_f32(b1, qu, vld1q_f32(k1 + d + 4));
                a2 = vfmaq_f32(a2, qv, vld1q_f32(k2 + d)); b2 = vfmaq_f32(b2, qu, vld1q_f32(k2 + d + 4));
                a3 = vfmaq_f32(a3, qv, vld1q_f32(k3 + d)); b3 = vfmaq_f32(b3, qu, vld1q_f32(k3 + d + 4));
            }
            for (; d < D; d += 4) {
                float32x4_t qv = vld1q_f32(qh + d);
                a0 = vfmaq_f32(a0, qv, vld1q_f32(k0 + d)); a1 = vfmaq_f32(a1, qv, vld1q_f32(k1 + d));
                a2 = vfmaq_f32(a2, qv, vld1q_f32(k2 + d)); a3 = vfmaq_f32(a3, qv, vld1q_f32(k3 + d));
            }
            a0 = vaddq_f32(a0, b0); a1 = vaddq_f32(a1, b1); a2 = vaddq_f32(a2, b2); a3 = vaddq_f32(a3, b3);
            vst1q_f32(out + i, vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3)));
        }
        for (; i < n; i++) {
            const float *kr = k + i * k_stride;
            float32x4_t a = vdupq_n_f32(0);
            for (long d = 0; d < D; d += 4) a = vfmaq_f32(a, vld1q_f32(qh + d), vld1q_f32(kr + d));
            out[i] = vaddvq_f32(a);
        }
    }
}

/* o_j[:] = Σ_i p[j][i] · v_{s0+i}, D % 4 == 0: 16 output floats in four registers per pass over the rows */
void ek_neon_group_values(const float *p, long ld, long G, const float *v, long v_stride, long n, long D,
                          float *const *os) {
    for (long j = 0; j < G; j++) {
        const float *pj = p + j * ld;
        float *o = os[j];
        long d = 0;
        for (; d + 16 <= D; d += 16) {
            float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
            const float *vr = v + d;
            for (long i = 0; i < n; i++, vr += v_stride) {
                float w = pj[i];
                a0 = vfmaq_n_f32(a0, vld1q_f32(vr), w);
                a1 = vfmaq_n_f32(a1, vld1q_f32(vr + 4), w);
                a2 = vfmaq_n_f32(a2, vld1q_f32(vr + 8), w);
                a3 = vfmaq_n_f32(a3, vld1q_f32(vr + 12), w);
            }
            vst1q_f32(o + d, a0); vst1q_f32(o + d + 4, a1); vst1q_f32(o + d + 8, a2); vst1q_f32(o + d + 12, a3);
        }
        for (; d < D; d += 4) {
            float32x4_t a0 = vdupq_n_f32(0);
            const float *vr = v + d;
            for (long i = 0; i < n; i++, vr += v_stride) a0 = vfmaq_n_f32(a0, vld1q_f32(vr), pj[i]);
            vst1q_f32(o + d, a0);
        }
    }
}

/* In place over one chunk's scores: x = sc/scale_div (or sc + b when b), then exp(x − max); returns max, sum
   (in double, as the plain-C path). Masked entries must already be −inf; they come out as exactly 0. */
float ek_neon_chunk_softmax(float *sc, long n, float scale_div, const float *b, double *sum_out) {
    const float32x4_t div = vdupq_n_f32(scale_div), ninf = vdupq_n_f32(-INFINITY);
    float32x4_t m4 = ninf;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t x = vld1q_f32(sc + i);
        x = b ? vaddq_f32(x, vld1q_f32(b + i)) : vdivq_f32(x, div);
        vst1q_f32(sc + i, x);
        m4 = vmaxq_f32(m4, x);
    }
    float m = vmaxvq_f32(m4);
    for (; i < n; i++) { sc[i] = b ? sc[i] + b[i] : sc[i] / scale_div; if (sc[i] > m) m = sc[i]; }
    if (m == -INFINITY) { memset(sc, 0, sizeof(float) * (size_t)n); *sum_out = 0; return m; }   /* all masked */
    const float32x4_t mv = vdupq_n_f32(m);
    float64x2_t sa = vdupq_n_f64(0), sb = sa;
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t x = vld1q_f32(sc + i);
        uint32x4_t live = vmvnq_u32(vceqq_f32(x, ninf));
        float32x4_t e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(exp4(vsubq_f32(x, mv))), live));
        vst1q_f32(sc + i, e);
        sa = vaddq_f64(sa, vcvt_f64_f32(vget_low_f32(e)));
        sb = vaddq_f64(sb, vcvt_high_f64_f32(e));
    }
    double sum = vaddvq_f64(vaddq_f64(sa, sb));
    for (; i < n; i++) { sc[i] = sc[i] == -INFINITY ? 0.0f : expf(sc[i] - m); sum += sc[i]; }
    *sum_out = sum;
    return m;
}

/* ------------------------------------------------------------------------------------------------ */
/* gemv_quant.c pieces                                                                               */

float ek_neon_quantize_block(const float *x, int8_t *q, int *sum_out) {
    float32x4_t v[8];
    float32x4_t m = vdupq_n_f32(0);
    for (int j = 0; j < 8; j++) { v[j] = vld1q_f32(x + 4 * j); m = vmaxq_f32(m, vabsq_f32(v[j])); }
    float amax = vmaxvq_f32(m);
    const float32x4_t id = vdupq_n_f32(amax != 0.0f ? 127.0f / amax : 0.0f);
    const int32x4_t hi = vdupq_n_s32(127), lo = vdupq_n_s32(-127);
    int32x4_t s = vdupq_n_s32(0);
    int16x8_t h[4];
    for (int j = 0; j < 8; j += 2) {
        int32x4_t a = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_f32(v[j], id)), hi), lo);
        int32x4_t b = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_f32(v[j + 1], id)), hi), lo);
        s = vaddq_s32(s, vaddq_s32(a, b));
        h[j / 2] = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
    }
    vst1q_s8(q, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
    vst1q_s8(q + 16, vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])));
    *sum_out = vaddvq_s32(s);
    return amax;
}

static inline float32x4_t bf16x4(uint16x4_t h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }

void ek_neon_rows_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k,
                       long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        const uint16_t *wr = w + r * k;
        float b = bias ? bias[r] : 0.0f;
        for (long i = 0; i < m; i++) {
            const float *xr = x + i * k;
            float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
            long j = 0;
            for (; j + 16 <= k; j += 16) {
                uint16x8_t w0 = vld1q_u16(wr + j), w1 = vld1q_u16(wr + j + 8);
                a0 = vfmaq_f32(a0, bf16x4(vget_low_u16(w0)), vld1q_f32(xr + j));
                a1 = vfmaq_f32(a1, bf16x4(vget_high_u16(w0)), vld1q_f32(xr + j + 4));
                a2 = vfmaq_f32(a2, bf16x4(vget_low_u16(w1)), vld1q_f32(xr + j + 8));
                a3 = vfmaq_f32(a3, bf16x4(vget_high_u16(w1)), vld1q_f32(xr + j + 12));
            }
            for (; j + 4 <= k; j += 4) a0 = vfmaq_f32(a0, bf16x4(vld1_u16(wr + j)), vld1q_f32(xr + j));
            float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
            for (; j < k; j++) {
                uint32_t bits = (uint32_t)wr[j] << 16;
                float wf;
                memcpy(&wf, &bits, 4);
                s += wf * xr[j];
            }
            y[i * n + r] = s + b;
        }
    }
}

/* Σ w·x over one block of 32 int8 pairs, exactly: SMULL/SMLAL2 pairs (|sum| ≤ 2·127² fits int16), SADALP. */
static inline int32x4_t block_dot_s8(const int8_t *w, const int8_t *x) {
    int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16), x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), w0, x0);
    int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), w1, x1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

EK_DOTPROD static inline int32x4_t block_dot_sdot(const int8_t *w, const int8_t *x) {
    int32x4_t z = vdupq_n_s32(0);
    return vdotq_s32(vdotq_s32(z, vld1q_s8(w), vld1q_s8(x)), vld1q_s8(w + 16), vld1q_s8(x + 16));
}

/* Four blocks per iteration into four fp32 accumulators (scale d_x per block), row scale at the end. */
#define EK_NEON_INT8_ROWS(NAME, ATTR, DOT)                                                                      \
ATTR static void NAME(const int8_t *w, const float *wscale, const int8_t *xq, const float *xd, const float *bias, \
                      float *y, long m, long n, long nb, long r0, long r1) {                                    \
    for (long r = r0; r < r1; r++) {                                                                            \
        const int8_t *wr = w + r * nb * 32;                                                                     \
        float bias_r = bias ? bias[r] : 0.0f;                                                                   \
        for (long i = 0; i < m; i++) {                                                                          \
            const int8_t *xr = xq + i * nb * 32;                                                                \
            const float *d = xd + i * nb;                                                                       \
            float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;                                         \
            long b = 0;                                                                                         \
            for (; b + 4 <= nb; b += 4) {                                                                       \
                const int8_t *wb = wr + b * 32, *xb = xr + b * 32;                                              \
                a0 = vfmaq_n_f32(a0, vcvtq_f32_s32(DOT(wb, xb)), d[b]);                                         \
                a1 = vfmaq_n_f32(a1, vcvtq_f32_s32(DOT(wb + 32, xb + 32)), d[b + 1]);                           \
                a2 = vfmaq_n_f32(a2, vcvtq_f32_s32(DOT(wb + 64, xb + 64)), d[b + 2]);                           \
                a3 = vfmaq_n_f32(a3, vcvtq_f32_s32(DOT(wb + 96, xb + 96)), d[b + 3]);                           \
            }                                                                                                   \
            for (; b < nb; b++) a0 = vfmaq_n_f32(a0, vcvtq_f32_s32(DOT(wr + b * 32, xr + b * 32)), d[b]);       \
            float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));                              \
            y[i * n + r] = s * wscale[r] + bias_r;                                                              \
        }                                                                                                       \
    }                                                                                                           \
}

EK_NEON_INT8_ROWS(rows_int8_neon, , block_dot_s8)
EK_NEON_INT8_ROWS(rows_int8_sdot, EK_DOTPROD, block_dot_sdot)

void ek_neon_rows_int8(const int8_t *w, const float *wscale, const int8_t *xq, const float *xd, const float *bias,
                       float *y, long m, long n, long nb, long r0, long r1, int dotprod) {
    if (dotprod) rows_int8_sdot(w, wscale, xq, xd, bias, y, m, n, nb, r0, r1);
    else rows_int8_neon(w, wscale, xq, xd, bias, y, m, n, nb, r0, r1);
}

/* ---- the int8 prompt GEMM's tile (gemm_int8.c): out[r][c] = Σ_k a[r, k] w[c, k], exact int32 ---- */

/* 16 int8 pairs of one row and one column into the four lanes: SMULL/SMLAL2 then SADALP (|pair sum| ≤ 2·127²). */
static inline int32x4_t dot16_s8(int32x4_t acc, int8x16_t a, int8x16_t w) {
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(w)), a, w));
}
EK_DOTPROD static inline int32x4_t dot16_sdot(int32x4_t acc, int8x16_t a, int8x16_t w) { return vdotq_s32(acc, a, w); }

/* Up to 4 rows × 4 columns (rows/columns past mr/nc read row 0 / column 0 and are not written); kp % 16 == 0. */
#define EK_NEON_TILE_S8(NAME, ATTR, DOT)                                                                        \
ATTR static void NAME(const int8_t *a, long lda, const int8_t *w, long ldw, long kp, int mr, int nc, int32_t *out) { \
    const int8_t *ar[4], *wc[4];                                                                                \
    for (int i = 0; i < 4; i++) { ar[i] = a + (i < mr ? i : 0) * lda; wc[i] = w + (i < nc ? i : 0) * ldw; }     \
    int32x4_t acc[4][4];                                                                                        \
    for (int r = 0; r < 4; r++) for (int c = 0; c < 4; c++) acc[r][c] = vdupq_n_s32(0);                         \
    for (long k = 0; k < kp; k += 16) {                                                                         \
        int8x16_t av[4], wv[4];                                                                                 \
        for (int i = 0; i < 4; i++) { av[i] = vld1q_s8(ar[i] + k); wv[i] = vld1q_s8(wc[i] + k); }              \
        for (int r = 0; r < 4; r++) for (int c = 0; c < 4; c++) acc[r][c] = DOT(acc[r][c], av[r], wv[c]);       \
    }                                                                                                           \
    for (int r = 0; r < mr; r++) for (int c = 0; c < nc; c++) out[r * 4 + c] = vaddvq_s32(acc[r][c]);           \
}
EK_NEON_TILE_S8(tile_s8_neon, , dot16_s8)
EK_NEON_TILE_S8(tile_s8_sdot, EK_DOTPROD, dot16_sdot)

void ek_neon_tile_s8(const int8_t *a, long lda, const int8_t *w, long ldw, long kp, int mr, int nc, int32_t *out,
                     int dotprod) {
    if (dotprod) tile_s8_sdot(a, lda, w, ldw, kp, mr, nc, out);
    else tile_s8_neon(a, lda, w, ldw, kp, mr, nc, out);
}

#else
typedef int ek_neon_unused;   /* not arm64: nothing here (ISO C wants a declaration per file) */
#endif
