/* EncoreKernels: see include/EncoreKernels.h. Each SIMD kernel has a `_ref` twin in plain C. */
#include "EncoreKernels.h"
#include <math.h>
#include <string.h>
#include <float.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(_M_X64)
#define EK_X86 1
#include <immintrin.h>
#include <cpuid.h>
#define EK_AVX2 __attribute__((target("avx2,fma")))
#endif
#include "avx2_math.h" /* hsum256, hmax256, exp256 */
#include "neon.h"   /* arm64 NEON twins of the AVX2 kernels (neon.c); hooks marked "NEON hook" */

/* ------------------------------------------------------------------------------------------------ */
/* CPU features and dispatch                                                                         */

static int g_force_ref = 0;
static int g_features = -1;

int ek_cpu_features(void) {
    if (g_features >= 0) return g_features;
    int f = 0;
#if EK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= EK_CPU_AVX2_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= EK_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) f |= EK_CPU_AVX512BWVL;
    if (__builtin_cpu_supports("avx512vnni")) f |= EK_CPU_AVX512VNNI;
    {
        /* CPUID leaf 1 ECX bit 29 F16C; leaf 7.1 EAX bit 4 AVX-VNNI, bit 5 AVX512_BF16 (the OS-saved register
           state is already implied by the avx2 / avx512f checks above) */
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29))) f |= EK_CPU_F16C;
        if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
            if ((a & (1u << 4)) && (f & EK_CPU_AVX2_FMA)) f |= EK_CPU_AVXVNNI;
            if ((a & (1u << 5)) && (f & EK_CPU_AVX512F)) f |= EK_CPU_AVX512BF16;
        }
    }
#elif defined(__aarch64__)
    f |= ek_neon_features();   /* NEON hook */
#endif
#if defined(EK_EMULATED_FEATURES)
    /* kernel_parity's emulated build only (scripts/test-kernels.sh): exactly the emulated AVX-512 / VNNI features,
       whatever this CPU has, so each feature set dispatches to the paths it is meant to test */
    f &= ~(EK_CPU_AVX512F | EK_CPU_AVX512BWVL | EK_CPU_AVX512VNNI | EK_CPU_AVX512BF16 | EK_CPU_AVXVNNI);
    f |= EK_EMULATED_FEATURES;
#endif
    g_features = f;
    return f;
}

int ek_cpu_is_intel(void) {
    static int intel = -1;   /* one store of the final answer: a thread reading early computes it too */
    if (intel < 0) {
        int v = 0;
#if EK_X86
        unsigned a, b, c, d;   /* leaf 0: the vendor string "GenuineIntel" in EBX, EDX, ECX */
        if (__get_cpuid(0, &a, &b, &c, &d)) v = b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;
#endif
        intel = v;
    }
    return intel;
}

/* AMD family 19h (Zen 3 / Zen 4; of these only Zen 4 has AVX-512) runs a 512-bit instruction as two 256-bit halves;
 * Intel's AVX-512 cores and server / desktop Zen 5 (family 1Ah) have full-width units (Zen 5 mobile parts split them
 * too, and are not detected here: they keep zmm). */
int ek_cpu_splits_zmm(void) {
    static int split = -1;   /* one store of the final answer, as ek_cpu_is_intel */
    if (split < 0) {
        int v = 0;
#if EK_X86
        unsigned a, b, c, d;   /* leaf 0: "AuthenticAMD" in EBX, EDX, ECX; leaf 1: family = base + extended */
        if ((ek_cpu_features() & EK_CPU_AVX512F) && __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u &&
            d == 0x69746e65u && c == 0x444d4163u && __get_cpuid(1, &a, &b, &c, &d)) {
            unsigned family = (a >> 8) & 0xF;
            if (family == 0xF) family += (a >> 20) & 0xFF;
            v = family == 0x19;
        }
#endif
        split = v;
    }
    return split;
}

/* Intel CPUs and CPUs with AVX-512 (both kinds timed: session 12's Intel Xeon, session 21's AMD Zen 4) walk more rows
 * side by side in the decode GEMVs; the AVX2-only AMD EPYCs of sessions 1–10 and 27 do as well with two (the longer
 * row ranges these CPUs also took first are every CPU's since session 27: ek_gemv_tasks). The CPU's features decide,
 * not the ISA cap (the callers read it once). */
int ek_cpu_prefers_long_streams(void) {
    return ek_cpu_is_intel() || (ek_cpu_features() & EK_CPU_AVX512F) != 0;
}

void ek_set_force_reference(int force) { g_force_ref = force; }
int ek_get_force_reference(void) { return g_force_ref; }

static inline int use_avx2(void) {
#if EK_X86
    return !g_force_ref && (ek_cpu_features() & EK_CPU_AVX2_FMA);
#else
    return 0;
#endif
}

#if EK_X86
/* zmm kernels: AVX-512F present and not capped by ek_set_isa_limit */
static inline int use_avx512f(void) {
    return use_avx2() && (ek_cpu_features() & EK_CPU_AVX512F) && ek_get_isa_limit() >= EK_ISA_AVX512;
}
#endif

/* NEON hook: arm64 paths in neon.c */
static inline int use_neon(void) {
#if defined(__aarch64__)
    return !g_force_ref && (ek_cpu_features() & EK_CPU_NEON);
#else
    return 0;
#endif
}

const char *ek_kernel_path(void) { return use_avx2() ? "avx2" : use_neon() ? "neon" : "scalar"; }

/* ------------------------------------------------------------------------------------------------ */
/* AVX2 helpers                                                                                      */

#if EK_X86
EK_AVX2 static float dot_avx2(const float *a, const float *b, long n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

EK_AVX2 static void axpy_avx2(float alpha, const float *x, float *y, long n) {
    __m256 a = _mm256_set1_ps(alpha);
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += alpha * x[i];
}

EK_AVX2 static void exp_avx2(float *x, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp256(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = expf(x[i]);
}

#if defined(EK_EMULATED_FEATURES)
#define EK_AVX512F_MATH EK_AVX2   /* kernel_parity's emulated build: SIMDe */
#else
#define EK_AVX512F_MATH __attribute__((target("avx2,fma,avx512f")))
#endif
/* exp256's polynomial on 16 lanes (the same operations per lane, avx2_math.h's EK_EXP_* constants) */
EK_AVX512F_MATH static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-EK_EXP_CLAMP)), _mm512_set1_ps(EK_EXP_CLAMP));
    __m512 fx = _mm512_fmadd_ps(x, _mm512_set1_ps(EK_EXP_LOG2E), _mm512_set1_ps(0.5f));
    fx = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF);   /* floor (SIMDe 0.7.4 misreads the SAE bit as scale) */
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(EK_EXP_C1), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(EK_EXP_C2), x);
    __m512 y = _mm512_set1_ps(EK_EXP_P0);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(EK_EXP_P1));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(EK_EXP_P2));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(EK_EXP_P3));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(EK_EXP_P4));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(EK_EXP_P5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i n = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(n));
}

/* bias_gelu_avx2 on zmm: the same operations per lane (exp512 is exp256's polynomial), and the row's last partial
 * vector under a mask instead of tanhf (there the two paths may differ by an ulp or two) */
EK_AVX512F_MATH static void bias_gelu_avx512(float *x, const float *bias, long rows, long cols) {
    const __m512 c = _mm512_set1_ps(0.7978845608028654f), k = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f), half = _mm512_set1_ps(0.5f);
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        for (long i = 0; i < cols; i += 16) {
            const __mmask16 lanes = cols - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(lanes, row + i);
            if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, bias + i));
            __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
            __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(k, v3, v));
            __m512 e = exp512(_mm512_mul_ps(two, u));
            __m512 t = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(e, one)));
            _mm512_mask_storeu_ps(row + i, lanes, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, t)));
        }
    }
}

/* gelu(x) = 0.5 x (1 + tanh(u)), tanh(u) = 1 - 2 / (exp(2u) + 1) */
EK_AVX2 static void bias_gelu_avx2(float *x, const float *bias, long rows, long cols) {
    const __m256 c = _mm256_set1_ps(0.7978845608028654f), k = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), half = _mm256_set1_ps(0.5f);
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        long i = 0;
        for (; i + 8 <= cols; i += 8) {
            __m256 v = _mm256_loadu_ps(row + i);
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
            __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
            __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(k, v3, v));
            __m256 e = exp256(_mm256_mul_ps(two, u));
            __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
            _mm256_storeu_ps(row + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, t)));
        }
        for (; i < cols; i++) {
            float v = row[i] + (bias ? bias[i] : 0.0f);
            row[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        }
    }
}

EK_AVX2 static void rmsnorm_avx2(const float *x, const float *w, float *out, long rows, long dim, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *o = out + r * dim;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        long i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m256 a = _mm256_loadu_ps(xr + i), b = _mm256_loadu_ps(xr + i + 8);
            s0 = _mm256_fmadd_ps(a, a, s0);
            s1 = _mm256_fmadd_ps(b, b, s1);
        }
        float ss = hsum256(_mm256_add_ps(s0, s1));
        for (; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        __m256 vi = _mm256_set1_ps(inv);
        i = 0;
        for (; i + 8 <= dim; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(xr + i), vi)));
        for (; i < dim; i++) o[i] = w[i] * (xr[i] * inv);
    }
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* elementwise                                                                                       */

static void rmsnorm_serial(const float *x, const float *w, float *out, long rows, long dim, float eps);

float ek_dot_f32_ref(const float *a, const float *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return (float)s;
}

float ek_dot_f32(const float *a, const float *b, long n) {
#if EK_X86
    if (use_avx2()) return dot_avx2(a, b, n);
#elif defined(__aarch64__)
    if (use_neon()) return ek_neon_dot_f32(a, b, n);   /* NEON hook */
#endif
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3]; }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

void ek_axpy_f32(float alpha, const float *x, float *y, long n) {
#if EK_X86
    if (use_avx2()) { axpy_avx2(alpha, x, y, n); return; }
#elif defined(__aarch64__)
    if (use_neon()) { ek_neon_axpy_f32(alpha, x, y, n); return; }   /* NEON hook */
#endif
    for (long i = 0; i < n; i++) y[i] += alpha * x[i];
}

void ek_add_f32(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}

void ek_add_bias_f32(float *x, const float *bias, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        for (long c = 0; c < cols; c++) row[c] += bias[c];
    }
}

void ek_exp_f32(float *x, long n) {
#if EK_X86
    if (use_avx2()) { exp_avx2(x, n); return; }
#elif defined(__aarch64__)
    if (use_neon()) { ek_neon_exp_f32(x, n); return; }   /* NEON hook */
#endif
    for (long i = 0; i < n; i++) x[i] = expf(x[i]);
}

void ek_gelu_tanh_f32_ref(float *x, long n) {
    for (long i = 0; i < n; i++) {
        double v = x[i];
        x[i] = (float)(0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
    }
}

static void bias_gelu_serial(float *x, const float *bias, long rows, long cols) {
#if EK_X86
    if (use_avx512f()) { bias_gelu_avx512(x, bias, rows, cols); return; }
    if (use_avx2()) { bias_gelu_avx2(x, bias, rows, cols); return; }
#elif defined(__aarch64__)
    if (use_neon()) { ek_neon_bias_gelu_f32(x, bias, rows, cols); return; }   /* NEON hook */
#endif
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        for (long i = 0; i < cols; i++) {
            float v = row[i] + (bias ? bias[i] : 0.0f);
            row[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        }
    }
}

/* SwiGLU: out = silu(gate) · up = gate / (1 + exp(−gate)) · up */
void ek_swiglu_f32_ref(const float *gate, const float *up, float *out, long n) {
    for (long i = 0; i < n; i++) out[i] = (float)((double)gate[i] / (1.0 + exp(-(double)gate[i])) * (double)up[i]);
}

#if EK_X86
EK_AVX2 static void swiglu_avx2(const float *gate, const float *up, float *out, long n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp256(_mm256_xor_ps(g, sign));                       /* exp(−g), clamped to ±88.4 */
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
#endif

static void swiglu_serial(const float *gate, const float *up, float *out, long n) {
#if EK_X86
    if (use_avx2()) { swiglu_avx2(gate, up, out, n); return; }
#endif
    for (long i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

typedef struct { const float *gate, *up; float *out; long n; } swiglu_ctx;

static void swiglu_task(void *ctx, long index, long count) {
    swiglu_ctx *c = (swiglu_ctx *)ctx;
    long i0 = c->n * index / count, i1 = c->n * (index + 1) / count;
    swiglu_serial(c->gate + i0, c->up + i0, c->out + i0, i1 - i0);
}

void ek_swiglu_f32(const float *gate, const float *up, float *out, long n) {
    swiglu_ctx c = { gate, up, out, n };
    long tasks = n < (1L << 16) ? 1 : 4 * ek_get_threads();   /* prompt passes: all cores; decode rows: inline */
    ek_parallel_for(tasks, swiglu_task, &c);
}

/* Row-parallel wrappers: prompt passes (hundreds of rows) use all cores; decode rows stay on the caller. */
typedef struct { float *x; const float *bias; long rows, cols; } gelu_ctx;

static void gelu_task(void *ctx, long index, long count) {
    gelu_ctx *c = (gelu_ctx *)ctx;
    long r0 = c->rows * index / count, r1 = c->rows * (index + 1) / count;
    bias_gelu_serial(c->x + r0 * c->cols, c->bias, r1 - r0, c->cols);
}

void ek_bias_gelu_tanh_f32(float *x, const float *bias, long rows, long cols) {
    if (rows < 2 || rows * cols < (1L << 16)) { bias_gelu_serial(x, bias, rows, cols); return; }
    gelu_ctx c = { x, bias, rows, cols };
    ek_parallel_for(ek_get_threads(), gelu_task, &c);
}

static void gelu_flat_task(void *ctx, long index, long count) {
    gelu_ctx *c = (gelu_ctx *)ctx;
    /* boundaries on multiples of 64 so every element takes the same (SIMD or scalar-tail) path as serially */
    long a = (c->cols * index / count) & ~63L, b = index + 1 == count ? c->cols : (c->cols * (index + 1) / count) & ~63L;
    bias_gelu_serial(c->x + a, NULL, 1, b - a);
}

void ek_gelu_tanh_f32(float *x, long n) {
    if (n < (1L << 16)) { bias_gelu_serial(x, NULL, 1, n); return; }
    gelu_ctx c = { x, NULL, 1, n };   /* one flat row of n values, split into equal ranges */
    ek_parallel_for(ek_get_threads(), gelu_flat_task, &c);
}

typedef struct { const float *x, *w; float *out; long rows, dim; float eps; } rms_ctx;

static void rms_task(void *ctx, long index, long count) {
    rms_ctx *c = (rms_ctx *)ctx;
    long r0 = c->rows * index / count, r1 = c->rows * (index + 1) / count;
    rmsnorm_serial(c->x + r0 * c->dim, c->w, c->out + r0 * c->dim, r1 - r0, c->dim, c->eps);
}

void ek_rmsnorm_f32(const float *x, const float *w, float *out, long rows, long dim, float eps) {
    if (rows < 2 || rows * dim < (1L << 16)) { rmsnorm_serial(x, w, out, rows, dim, eps); return; }
    rms_ctx c = { x, w, out, rows, dim, eps };
    ek_parallel_for(ek_get_threads(), rms_task, &c);
}

/* ------------------------------------------------------------------------------------------------ */
/* RMSNorm                                                                                           */

void ek_rmsnorm_f32_ref(const float *x, const float *w, float *out, long rows, long dim, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double ss = 0;
        for (long i = 0; i < dim; i++) ss += (double)xr[i] * (double)xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
        for (long i = 0; i < dim; i++) out[r * dim + i] = w[i] * (xr[i] * inv);
    }
}

static void rmsnorm_serial(const float *x, const float *w, float *out, long rows, long dim, float eps) {
#if EK_X86
    if (use_avx2()) { rmsnorm_avx2(x, w, out, rows, dim, eps); return; }
#elif defined(__aarch64__)
    if (use_neon()) { ek_neon_rmsnorm_f32(x, w, out, rows, dim, eps); return; }   /* NEON hook */
#endif
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float ss = 0;
        for (long i = 0; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (long i = 0; i < dim; i++) out[r * dim + i] = w[i] * (xr[i] * inv);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* RoPE                                                                                              */

/* cos/sin of one row's angles positions[r] * inv_freq[j] (an fp32 product, as torch.einsum in float32) */
static void rope_angles(float p, const float *inv_freq, long half, float *cs, float *sn) {
    for (long j = 0; j < half; j++) {
        float ang = p * inv_freq[j];
        cs[j] = cosf(ang);
        sn[j] = sinf(ang);
    }
}

/* one row's heads rotated by the angles whose cos/sin are cs/sn */
static void rope_apply_row(float *row, long n_heads, long head_dim, const float *cs, const float *sn) {
    long half = head_dim / 2;
    for (long h = 0; h < n_heads; h++) {
        float *v = row + h * head_dim;
        for (long j = 0; j < half; j++) {
            float a = v[j], b = v[j + half];
            v[j] = a * cs[j] - b * sn[j];
            v[j + half] = b * cs[j] + a * sn[j];
        }
    }
}

void ek_rope_neox_f32(float *x, long t, long n_heads, long head_dim, long row_stride,
                      const float *positions, const float *inv_freq) {
    long half = head_dim / 2;
    float stack[2 * 512], *cs = half <= 512 ? stack : malloc(sizeof(float) * 2 * (size_t)half);
    if (!cs) abort();   /* head_dim > 1024 and no memory for its angles */
    float *sn = cs + (half <= 512 ? 512 : half);
    for (long r = 0; r < t; r++) {
        rope_angles(positions[r], inv_freq, half, cs, sn);
        rope_apply_row(x + r * row_stride, n_heads, head_dim, cs, sn);
    }
    if (cs != stack) free(cs);
}

void ek_rope_table_f32(const float *positions, long t, const float *inv_freq, long half, float *cos_out, float *sin_out) {
    for (long r = 0; r < t; r++) rope_angles(positions[r], inv_freq, half, cos_out + r * half, sin_out + r * half);
}

typedef struct { float *x; long t, n_heads, head_dim, row_stride; const float *cs, *sn; } rope_ctx;

static void rope_rows_task(void *ctx, long index, long count) {
    const rope_ctx *c = (const rope_ctx *)ctx;
    long half = c->head_dim / 2, r0 = c->t * index / count, r1 = c->t * (index + 1) / count;
    for (long r = r0; r < r1; r++)
        rope_apply_row(c->x + r * c->row_stride, c->n_heads, c->head_dim, c->cs + r * half, c->sn + r * half);
}

void ek_rope_neox_table_f32(float *x, long t, long n_heads, long head_dim, long row_stride,
                            const float *cos_table, const float *sin_table) {
    rope_ctx c = { x, t, n_heads, head_dim, row_stride, cos_table, sin_table };
    /* a prompt pass's rows on the kernel threads (each row on its own: the same floats however they are split) */
    long tasks = t * n_heads * head_dim >= (1L << 16) ? ek_get_threads() : 1;
    ek_parallel_for(tasks < t ? tasks : (t > 0 ? t : 1), rope_rows_task, &c);
}

/* ------------------------------------------------------------------------------------------------ */
/* softmax and attention                                                                             */

static inline int key_allowed(const uint8_t *keep, long causal_offset, long r, long c) {
    if (keep && !keep[c]) return 0;
    if (causal_offset >= 0 && c > r + causal_offset) return 0;
    return 1;
}

#if EK_X86
EK_AVX2 static float chunk_softmax_avx2(float *sc, long n, float scale_div, const float *b, double *sum_out);
#endif

#if EK_X86
/* The vector softmax rows' shared start: the keys row r may see end at the returned limit (causal_offset); those
 * masked by keep become −inf. */
static long softmax_row_limit(float *s, long cols, const uint8_t *keep, long causal_offset, long r) {
    long limit = cols;
    if (causal_offset >= 0 && r + causal_offset + 1 < limit) limit = r + causal_offset + 1 > 0 ? r + causal_offset + 1 : 0;
    if (keep && memchr(keep, 0, (size_t)limit)) for (long c = 0; c < limit; c++) if (!keep[c]) s[c] = -INFINITY;
    return limit;
}

/* 1/d when it is exact, so that x·(1/d) == x/d for every float x (both are the correctly rounded x/d): d a power of
 * two (attention's √head_dim for head_dim 4, 16, 64, 256, …) whose reciprocal is a normal float; 0 otherwise (the
 * caller divides). A multiply instead of vdivps per score: the prompt passes' softmax at 4,096 keys spent most of its
 * first pass in the division. */
static float exact_reciprocal(float d) {
    int e;
    if (!(d > 0.0f) || !isfinite(d) || frexpf(d, &e) != 0.5f) return 0.0f;
    float r = 1.0f / d;
    return isnormal(r) ? r : 0.0f;
}

/* A row with every key masked: uniform over all cols, as the reference's masked_fill(finfo.min). */
static void softmax_row_uniform(float *s, long cols) {
    float u = 1.0f / (float)cols;
    for (long c = 0; c < cols; c++) s[c] = u;
}

/* softmax_row on AVX2: masked keys to −inf, the vector chunk softmax, then normalise. */
EK_AVX2 static void softmax_row_avx2(float *s, long cols, float scale_div, const uint8_t *keep, long causal_offset, long r) {
    long limit = softmax_row_limit(s, cols, keep, causal_offset, r);
    double sum = 0;
    float m = chunk_softmax_avx2(s, limit, scale_div, NULL, &sum);
    if (m == -INFINITY) { softmax_row_uniform(s, cols); return; }
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    long c = 0;
    for (; c + 8 <= limit; c += 8) _mm256_storeu_ps(s + c, _mm256_mul_ps(_mm256_loadu_ps(s + c), inv));
    for (; c < limit; c++) s[c] *= (float)(1.0 / sum);
    for (c = limit; c < cols; c++) s[c] = 0.0f;
}
#endif

#if EK_X86
/* exp(x − m) of 16 scores (x = s·(1/d) when `recip`, else s as the first pass stored it), 0 where x is −inf. */
EK_AVX512F_MATH static inline __m512 softmax_exp16(const float *p, float recip, __m512 rv, __m512 mv) {
    __m512 x = recip != 0.0f ? _mm512_mul_ps(_mm512_loadu_ps(p), rv) : _mm512_loadu_ps(p);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ), exp512(_mm512_sub_ps(x, mv)));
}

/* softmax_row_avx2 on zmm (ek_softmax_masked_f32's rows: the prompt passes' scores of 128 queries against up to
 * thousands of keys, and training's attention): 16 lanes, the row's last partial vector under a mask instead of
 * scalar expf, the sum in double over four 8-lane accumulators (two vectors per step). The same arithmetic per entry
 * (x·(1/d) when 1/d is exact, else x / scale_div; exp256's polynomial; a float 1/sum) except the summation order and
 * the tail's exp (the polynomial rather than libm's expf): within ~2 ulp of the ymm path. */
EK_AVX512F_MATH static void softmax_row_avx512(float *s, long cols, float scale_div, const uint8_t *keep,
                                                  long causal_offset, long r) {
    long limit = softmax_row_limit(s, cols, keep, causal_offset, r);
    const __m512 div = _mm512_set1_ps(scale_div), ninf = _mm512_set1_ps(-INFINITY);
    /* an exact reciprocal: x = s·(1/d) is recomputed in the second pass instead of stored by the first (same floats) */
    const float recip = exact_reciprocal(scale_div);
    const __m512 rv = _mm512_set1_ps(recip);
    __m512 m16 = ninf;
    long c = 0;
    if (recip != 0.0f)
        for (; c + 16 <= limit; c += 16) m16 = _mm512_max_ps(m16, _mm512_mul_ps(_mm512_loadu_ps(s + c), rv));
    else
        for (; c + 16 <= limit; c += 16) {
            __m512 x = _mm512_div_ps(_mm512_loadu_ps(s + c), div);
            _mm512_storeu_ps(s + c, x);
            m16 = _mm512_max_ps(m16, x);
        }
    const __mmask16 tail = (__mmask16)((1u << (limit - c)) - 1);
    if (tail) {   /* the tail is always stored divided: the second pass reads it as it is */
        __m512 x = _mm512_div_ps(_mm512_maskz_loadu_ps(tail, s + c), div);
        _mm512_mask_storeu_ps(s + c, tail, x);
        m16 = _mm512_mask_max_ps(m16, tail, m16, x);
    }
    float m = _mm512_reduce_max_ps(m16);
    if (m == -INFINITY) { softmax_row_uniform(s, cols); return; }
    const __m512 mv = _mm512_set1_ps(m);
    /* four double accumulators over two vectors per step: the sums' add latency no longer paces the exp pass */
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), s2 = _mm512_setzero_pd(), s3 = _mm512_setzero_pd();
    for (c = 0; c + 32 <= limit; c += 32) {
        __m512 e = softmax_exp16(s + c, recip, rv, mv), f = softmax_exp16(s + c + 16, recip, rv, mv);
        _mm512_storeu_ps(s + c, e);
        _mm512_storeu_ps(s + c + 16, f);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
        s2 = _mm512_add_pd(s2, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
        s3 = _mm512_add_pd(s3, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
    }
    for (; c + 16 <= limit; c += 16) {
        __m512 e = softmax_exp16(s + c, recip, rv, mv);
        _mm512_storeu_ps(s + c, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    if (tail) {
        __m512 x = _mm512_maskz_loadu_ps(tail, s + c);
        __m512 e = _mm512_maskz_mov_ps(_mm512_mask_cmp_ps_mask(tail, x, ninf, _CMP_NEQ_OQ), exp512(_mm512_sub_ps(x, mv)));
        _mm512_mask_storeu_ps(s + c, tail, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s2), _mm512_add_pd(s1, s3)));
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (c = 0; c + 16 <= limit; c += 16) _mm512_storeu_ps(s + c, _mm512_mul_ps(_mm512_loadu_ps(s + c), inv));
    if (tail) _mm512_mask_storeu_ps(s + c, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + c), inv));
    if (limit < cols) memset(s + limit, 0, sizeof(float) * (size_t)(cols - limit));
}
#endif

/* Softmax of one row in place over `cols` entries, with the masking rule above. */
static void softmax_row(float *s, long cols, float scale_div, const uint8_t *keep, long causal_offset, long r) {
#if EK_X86
    if (use_avx512f()) { softmax_row_avx512(s, cols, scale_div, keep, causal_offset, r); return; }
    if (use_avx2()) { softmax_row_avx2(s, cols, scale_div, keep, causal_offset, r); return; }
#endif
    float mx = -INFINITY;
    long allowed = 0;
    for (long c = 0; c < cols; c++) {
        if (key_allowed(keep, causal_offset, r, c)) {
            s[c] = s[c] / scale_div;
            if (s[c] > mx) mx = s[c];
            allowed++;
        }
    }
    if (allowed == 0) {  /* reference: every score is finfo.min -> uniform */
        float u = 1.0f / (float)cols;
        for (long c = 0; c < cols; c++) s[c] = u;
        return;
    }
    for (long c = 0; c < cols; c++) s[c] = key_allowed(keep, causal_offset, r, c) ? s[c] - mx : -INFINITY;
    ek_exp_f32(s, cols);
    double sum = 0;
    for (long c = 0; c < cols; c++) {
        if (!key_allowed(keep, causal_offset, r, c)) s[c] = 0.0f;
        sum += s[c];
    }
    float inv = (float)(1.0 / sum);
    for (long c = 0; c < cols; c++) s[c] *= inv;
}

typedef struct { float *s; long rows, cols, ld; float scale_div; const uint8_t *keep; long causal; } softmax_ctx;

static void softmax_task(void *ctx, long index, long count) {
    softmax_ctx *c = (softmax_ctx *)ctx;
    long r0 = c->rows * index / count, r1 = c->rows * (index + 1) / count;
    for (long r = r0; r < r1; r++) softmax_row(c->s + r * c->ld, c->cols, c->scale_div, c->keep, c->causal, r);
}

void ek_softmax_masked_f32(float *scores, long rows, long cols, long ld, float scale_div,
                           const uint8_t *key_keep, long causal_offset) {
    softmax_ctx c = { scores, rows, cols, ld, scale_div, key_keep, causal_offset };
    long tasks = rows * cols < (1L << 16) || rows < 2 ? 1 : ek_get_threads();   /* big prompt passes: all cores */
    ek_parallel_for(tasks, softmax_task, &c);
}

static inline long kv_head_for(long h, long n_head, long n_kv_head, int interleaved) {
    long groups = n_head / n_kv_head;
    return interleaved ? h / groups : h % n_kv_head;
}

/* Split-K attention for few queries (decode steps). Work is cut into tasks of (query t, chunk of keys): for each
 * KV head g in turn, a task scores its keys against every query head that reads g (GQA: the key and value rows
 * are loaded once for the whole group), takes a chunk-local softmax (max, sum of exp, weighted value sum), and
 * leaves them in `scratch`; the caller then merges the chunks exactly (rescaling by exp(max_c − max)). A task
 * covers whole rows of K and V (every KV head's slice), so it reads contiguous memory: Mu-330M's cold 10-layer
 * cross-attention at 512 keys took 0.77 ms instead of 0.88 (medians of 8 alternations) with one task per (chunk,
 * KV head), which read a third of each row. The tasks run
 * on all threads, so a decode step's attention over a long cache or a 512-row encoder memory uses both cores.
 * Rows whose every key is masked become uniform over all tk keys, as in softmax_row. */
#define EK_ATTN_CHUNK 128    /* keys per chunk at most */
#define EK_ATTN_GROUP 16     /* query heads per KV head handled in one pass (larger groups loop) */

/* Keys per chunk: about tk/8 (8 tasks per query to balance two threads), 32 to EK_ATTN_CHUNK, a multiple of 8;
 * tk itself up to 32. */
static long attn_chunk(long tk) {
    if (tk <= 32) return tk > 0 ? tk : 1;
    long c = ((tk + 7) / 8 + 7) / 8 * 8;
    c = c < 32 ? 32 : c > EK_ATTN_CHUNK ? EK_ATTN_CHUNK : c;
    long n = (tk + c - 1) / c;
    if (n % 2 == 1) {   /* an odd count of like tasks leaves one of two threads idle for a task's time: one chunk
                           fewer (longer ones), else one more (shorter, at least 16 keys), when a multiple of 8 gets it */
        long fewer = ((tk + n - 2) / (n - 1) + 7) / 8 * 8, more = ((tk + n) / (n + 1) + 7) / 8 * 8;
        if (fewer <= EK_ATTN_CHUNK && (tk + fewer - 1) / fewer == n - 1) return fewer;
        if (more >= 16 && (tk + more - 1) / more == n + 1) return more;
    }
    return c;
}
static long attn_chunks(long tk) { return tk > 0 ? (tk + attn_chunk(tk) - 1) / attn_chunk(tk) : 1; }

long ek_attention_scratch_floats(long tq, long tk, long n_head, long head_dim) {
    /* room for at least 8 chunks: a growing decode cache (chunks of 32 to 48 up to 256 keys, at most 8 chunks up to
     * 1024) then resizes its scratch past 1024 keys, not at every chunk */
    long chunks = attn_chunks(tk) > 8 ? attn_chunks(tk) : 8;
    long parts = tq * n_head * chunks * (head_dim + 2);
    return parts > tk ? parts : tk;
}

typedef struct {
    const float *q, *k, *v; float *out;
    long q_stride, k_stride, v_stride, out_stride;
    long tq, tk, n_head, n_kv_head, head_dim; int interleaved;
    const uint8_t *keep; long causal; float scale_div;
    const float *bias; long bias_stride;        /* T5: additive relative bias, or NULL */
    long chunk, nchunks;
    float *part;                                /* [tq][n_head][nchunks][head_dim + 2]: max, sum, o[D] */
    const uint16_t *k16, *v16;                  /* f16 K/V (then k, v are NULL), or NULL */
    const int8_t *k8, *v8;                      /* int8 K/V (then k, v, k16, v16 are NULL), or NULL, with */
    const float *k8_scale, *v8_scale;           /* one scale per key and `group` values of a row: [tk][scale_stride], */
    long scale_stride, group;                   /* column c's at c / group; group divides head_dim */
} attn_ctx;

static inline float h2f(uint16_t h) { float f; ek_f16_to_f32(&h, &f, 1); return f; }

static inline long group_head(const attn_ctx *c, long g, long j) {
    long groups = c->n_head / c->n_kv_head;
    return c->interleaved ? g * groups + j : g + j * c->n_kv_head;
}

#if EK_X86
/* [Σ a, Σ b, Σ c, Σ d] */
EK_AVX2 static inline __m128 hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* The attention engine's two inner kernels, for K/V of element type T read as 8 floats by LD (fp32 loads, or f16
 * widened by F16C: the same fp32 arithmetic on the widened values). The G query heads that share a KV head are
 * taken up to three at a time (JN), so each K or V vector is loaded (and widened) once for all of them:
 *   group_scores_SUF: scores[j][i] = q_{h_j} . k_{s0+i}, D % 8 == 0: JN heads × 4 keys in 4·JN FMA chains
 *                     (one head: 8 keys), one combined reduction per 4 keys;
 *   group_values_SUF: o_j[:] = Σ_i p[j][i] · v_{s0+i}, D % 8 == 0: JN heads × 16 (JN = 3) or 32 output floats
 *                     in registers per pass over the chunk's value rows (one head × 64 needs a 17th register:
 *                     1–9% slower on T5's and 5/5-head shapes).
 * A score is the same sum in the same order whatever JN (eight lanes over d, then the lanes pairwise), and so is
 * an output float, so the grouping never changes a result's bits. */
#define EK_GROUP_KERNELS(SUF, ATTR, T, LD)                                                                         \
ATTR __attribute__((always_inline)) static inline void scores_jn_##SUF(const float *const *qs, int JN,             \
        const T *k, long k_stride, long n, long D, float *scores, long ld) {                                      \
    long i = 0;                                                                                                   \
    if (JN == 1) {                                                                                                \
        const float *qh = qs[0];                                                                                  \
        for (; i + 8 <= n; i += 8) {                                                                              \
            const T *k0 = k + i * k_stride;                                                                       \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;       \
            for (long d = 0; d < D; d += 8) {                                                                     \
                __m256 qv = _mm256_loadu_ps(qh + d);                                                              \
                a0 = _mm256_fmadd_ps(qv, LD(k0 + d), a0);                                                         \
                a1 = _mm256_fmadd_ps(qv, LD(k0 + k_stride + d), a1);                                              \
                a2 = _mm256_fmadd_ps(qv, LD(k0 + 2 * k_stride + d), a2);                                          \
                a3 = _mm256_fmadd_ps(qv, LD(k0 + 3 * k_stride + d), a3);                                          \
                a4 = _mm256_fmadd_ps(qv, LD(k0 + 4 * k_stride + d), a4);                                          \
                a5 = _mm256_fmadd_ps(qv, LD(k0 + 5 * k_stride + d), a5);                                          \
                a6 = _mm256_fmadd_ps(qv, LD(k0 + 6 * k_stride + d), a6);                                          \
                a7 = _mm256_fmadd_ps(qv, LD(k0 + 7 * k_stride + d), a7);                                          \
            }                                                                                                     \
            _mm_storeu_ps(scores + i, hsum4x8(a0, a1, a2, a3));                                                   \
            _mm_storeu_ps(scores + i + 4, hsum4x8(a4, a5, a6, a7));                                               \
        }                                                                                                         \
    }                                                                                                             \
    for (; i + 4 <= n; i += 4) {                                                                                  \
        const T *k0 = k + i * k_stride;                                                                           \
        __m256 acc[3][4];                                                                                         \
        for (int j = 0; j < JN; j++) for (int c = 0; c < 4; c++) acc[j][c] = _mm256_setzero_ps();                \
        for (long d = 0; d < D; d += 8) {                                                                         \
            for (int c = 0; c < 4; c++) {                                                                         \
                __m256 kv = LD(k0 + c * k_stride + d);                                                            \
                for (int j = 0; j < JN; j++) acc[j][c] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[j] + d), kv, acc[j][c]); \
            }                                                                                                     \
        }                                                                                                         \
        for (int j = 0; j < JN; j++) _mm_storeu_ps(scores + j * ld + i, hsum4x8(acc[j][0], acc[j][1], acc[j][2], acc[j][3])); \
    }                                                                                                             \
    for (; i < n; i++) {                                                                                          \
        const T *kr = k + i * k_stride;                                                                           \
        for (int j = 0; j < JN; j++) {                                                                            \
            __m256 a = _mm256_setzero_ps(), z = a;                                                                \
            for (long d = 0; d < D; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qs[j] + d), LD(kr + d), a);      \
            scores[j * ld + i] = _mm_cvtss_f32(hsum4x8(a, z, z, z));                                              \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
ATTR static void group_scores_##SUF(const float *const *qs, long G, const T *k, long k_stride, long n, long D,     \
                                    float *scores, long ld) {                                                     \
    for (long j0 = 0; j0 < G; j0 += 3) {                                                                          \
        long jn = G - j0 < 3 ? G - j0 : 3;                                                                        \
        if (jn == 3) scores_jn_##SUF(qs + j0, 3, k, k_stride, n, D, scores + j0 * ld, ld);                       \
        else if (jn == 2) scores_jn_##SUF(qs + j0, 2, k, k_stride, n, D, scores + j0 * ld, ld);                  \
        else scores_jn_##SUF(qs + j0, 1, k, k_stride, n, D, scores + j0 * ld, ld);                               \
    }                                                                                                             \
}                                                                                                                 \
/* JN heads, 8·NV output floats from d on, per pass over the n value rows */                                       \
ATTR __attribute__((always_inline)) static inline void values_jn_##SUF(const float *p, long ld, int JN, int NV,    \
        const T *v, long v_stride, long n, long d, float *const *os) {                                            \
    __m256 acc[3][4];                                                                                             \
    for (int j = 0; j < JN; j++) for (int e = 0; e < NV; e++) acc[j][e] = _mm256_setzero_ps();                   \
    const T *vr = v + d;                                                                                          \
    for (long i = 0; i < n; i++, vr += v_stride) {                                                                \
        __m256 vv[4];                                                                                             \
        for (int e = 0; e < NV; e++) vv[e] = LD(vr + 8 * e);                                                      \
        for (int j = 0; j < JN; j++) {                                                                            \
            __m256 w = _mm256_broadcast_ss(p + j * ld + i);                                                       \
            for (int e = 0; e < NV; e++) acc[j][e] = _mm256_fmadd_ps(w, vv[e], acc[j][e]);                        \
        }                                                                                                         \
    }                                                                                                             \
    for (int j = 0; j < JN; j++) for (int e = 0; e < NV; e++) _mm256_storeu_ps(os[j] + d + 8 * e, acc[j][e]);    \
}                                                                                                                 \
ATTR static void group_values_##SUF(const float *p, long ld, long G, const T *v, long v_stride, long n, long D,     \
                                    float *const *os) {                                                           \
    for (long j0 = 0; j0 < G; j0 += 3) {                                                                          \
        long jn = G - j0 < 3 ? G - j0 : 3;                                                                        \
        const float *pj = p + j0 * ld;                                                                            \
        float *const *oj = os + j0;                                                                               \
        long d = 0;                                                                                               \
        if (jn == 3) {                                                                                            \
            for (; d + 16 <= D; d += 16) values_jn_##SUF(pj, ld, 3, 2, v, v_stride, n, d, oj);                    \
            for (; d < D; d += 8) values_jn_##SUF(pj, ld, 3, 1, v, v_stride, n, d, oj);                           \
        } else if (jn == 2) {                                                                                     \
            for (; d + 32 <= D; d += 32) values_jn_##SUF(pj, ld, 2, 4, v, v_stride, n, d, oj);                    \
            for (; d < D; d += 8) values_jn_##SUF(pj, ld, 2, 1, v, v_stride, n, d, oj);                           \
        } else {                                                                                                  \
            for (; d + 32 <= D; d += 32) values_jn_##SUF(pj, ld, 1, 4, v, v_stride, n, d, oj);                    \
            for (; d < D; d += 8) values_jn_##SUF(pj, ld, 1, 1, v, v_stride, n, d, oj);                           \
        }                                                                                                         \
    }                                                                                                             \
}
#define EK_AVX2_F16C __attribute__((target("avx2,fma,f16c")))
#define EK_LDH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
EK_GROUP_KERNELS(avx2, EK_AVX2, float, _mm256_loadu_ps)
EK_GROUP_KERNELS(f16_avx2, EK_AVX2_F16C, uint16_t, EK_LDH)
#undef EK_LDH
#define EK_LDB(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
EK_GROUP_KERNELS(i8_avx2, EK_AVX2, int8_t, EK_LDB)
#undef EK_LDB
#undef EK_GROUP_KERNELS

/* In place over one chunk's scores: x = sc/scale_div (or sc + b when b), then exp(x − max); returns max, sum.
   Masked entries must already be −inf; they come out as exactly 0. */
EK_AVX2 static float chunk_softmax_avx2(float *sc, long n, float scale_div, const float *b, double *sum_out) {
    const __m256 inv = _mm256_set1_ps(scale_div), ninf = _mm256_set1_ps(-INFINITY);
    const float recip = exact_reciprocal(scale_div);   /* x·(1/d) == x/d: a multiply instead of vdivps */
    const __m256 rv = _mm256_set1_ps(recip);
    __m256 m8 = ninf;
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(sc + i);
        x = b ? _mm256_add_ps(x, _mm256_loadu_ps(b + i)) : recip != 0.0f ? _mm256_mul_ps(x, rv) : _mm256_div_ps(x, inv);
        _mm256_storeu_ps(sc + i, x);
        m8 = _mm256_max_ps(m8, x);
    }
    float m = hmax256(m8);
    for (; i < n; i++) { sc[i] = b ? sc[i] + b[i] : sc[i] / scale_div; if (sc[i] > m) m = sc[i]; }
    if (m == -INFINITY) { memset(sc, 0, sizeof(float) * n); *sum_out = 0; return m; }   /* all masked */
    const __m256 mv = _mm256_set1_ps(m);
    __m256d s4a = _mm256_setzero_pd(), s4b = _mm256_setzero_pd();   /* the sum in double, as the plain-C path */
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(sc + i);
        __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(x, mv)), _mm256_cmp_ps(x, ninf, _CMP_NEQ_OQ));
        _mm256_storeu_ps(sc + i, e);
        s4a = _mm256_add_pd(s4a, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s4b = _mm256_add_pd(s4b, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4], sum;
    _mm256_storeu_pd(lanes, _mm256_add_pd(s4a, s4b));
    sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++) { sc[i] = sc[i] == -INFINITY ? 0.0f : expf(sc[i] - m); sum += sc[i]; }
    *sum_out = sum;
    return m;
}
#endif

/* Keys [*s0, return) of chunk chunk_i that query t reads: keys past a causal limit are masked anyway. */
static inline long chunk_keys(const attn_ctx *c, long t, long chunk_i, long *s0) {
    long s1 = (*s0 = chunk_i * c->chunk) + c->chunk;
    if (s1 > c->tk) s1 = c->tk;
    if (c->causal >= 0 && s1 > t + c->causal + 1) s1 = t + c->causal + 1;
    return s1;
}

/* Query t, KV head g, keys of chunk chunk_i. K/V in fp32, f16 (widened per element) or int8 (widened per element;
 * each score times its key's scale, each probability times its value's scale before the weighted sum: the chunk's
 * sum of exponentials is taken before, so it stays the softmax's denominator). */
static void attn_chunk_head(const attn_ctx *c, long t, long g, long chunk_i) {
    long D = c->head_dim, groups = c->n_head / c->n_kv_head;
    long s0, s1 = chunk_keys(c, t, chunk_i, &s0);
    long n = s1 > s0 ? s1 - s0 : 0;
    float scores[EK_ATTN_GROUP * EK_ATTN_CHUNK];
    const float *qs[EK_ATTN_GROUP];
    float *os[EK_ATTN_GROUP], *mxs[EK_ATTN_GROUP];   /* each head's partial: [max, sum, o[D]] in c->part */
    const int half = c->k16 != NULL, bytes = c->k8 != NULL;
    const float *kbase = c->k ? c->k + s0 * c->k_stride + g * D : NULL, *vbase = c->v ? c->v + s0 * c->v_stride + g * D : NULL;
    const uint16_t *kb16 = half ? c->k16 + s0 * c->k_stride + g * D : NULL, *vb16 = half ? c->v16 + s0 * c->v_stride + g * D : NULL;
    const int8_t *kb8 = bytes ? c->k8 + s0 * c->k_stride + g * D : NULL, *vb8 = bytes ? c->v8 + s0 * c->v_stride + g * D : NULL;
    const long group = bytes ? c->group : D, blocks = D / group;   /* int8: scales per KV head's slice of a row */
    const float *ksc = bytes ? c->k8_scale + s0 * c->scale_stride + g * blocks : NULL;
    const float *vsc = bytes ? c->v8_scale + s0 * c->scale_stride + g * blocks : NULL;
    int simd = 0;
#if EK_X86
    simd = use_avx2() && D % 8 == 0 && group % 8 == 0 && (!half || (ek_cpu_features() & EK_CPU_F16C));
#elif defined(__aarch64__)
    simd = !half && !bytes && use_neon() && D % 4 == 0;   /* NEON hook: the three calls below (f16, int8 K/V: plain C) */
#endif
    int any_masked = c->keep && n > 0 && memchr(c->keep + s0, 0, (size_t)n) != NULL;   /* once per chunk */
    float part[EK_ATTN_GROUP * EK_ATTN_CHUNK];   /* int8: one block's scores, then the probabilities times its scales */
    float scale_i[EK_ATTN_CHUNK];                 /* int8: the chunk's scales of one block of KV head g, side by side */
    for (long j0 = 0; j0 < groups; j0 += EK_ATTN_GROUP) {
        long G = groups - j0 < EK_ATTN_GROUP ? groups - j0 : EK_ATTN_GROUP;
        for (long j = 0; j < G; j++) {
            long h = group_head(c, g, j0 + j);
            qs[j] = c->q + t * c->q_stride + h * D;
            mxs[j] = c->part + ((t * c->n_head + h) * c->nchunks + chunk_i) * (D + 2);
            os[j] = mxs[j] + 2;
        }
        /* scores */
        if (bytes) {   /* per block of `group` values: its dot products times its keys' scales, summed over the blocks */
            for (long b = 0; b < blocks; b++) {
                const float *qb[EK_ATTN_GROUP];
                for (long j = 0; j < G; j++) qb[j] = qs[j] + b * group;
                float *dst = b == 0 ? scores : part;
#if EK_X86
                if (simd) group_scores_i8_avx2(qb, G, kb8 + b * group, c->k_stride, n, group, dst, EK_ATTN_CHUNK);
                else
#endif
                for (long j = 0; j < G; j++)
                    for (long i = 0; i < n; i++) {
                        const int8_t *kr = kb8 + i * c->k_stride + b * group;
                        float a = 0;
                        for (long d = 0; d < group; d++) a += qb[j][d] * (float)kr[d];
                        dst[j * EK_ATTN_CHUNK + i] = a;
                    }
                for (long i = 0; i < n; i++) scale_i[i] = ksc[i * c->scale_stride + b];
                for (long j = 0; j < G; j++) {
                    float *sc = scores + j * EK_ATTN_CHUNK;
                    const float *pt = part + j * EK_ATTN_CHUNK;
                    if (b == 0) for (long i = 0; i < n; i++) sc[i] *= scale_i[i];
                    else for (long i = 0; i < n; i++) sc[i] += pt[i] * scale_i[i];
                }
            }
        } else if (half) {
#if EK_X86
            if (simd) group_scores_f16_avx2(qs, G, kb16, c->k_stride, n, D, scores, EK_ATTN_CHUNK);
            else
#endif
            for (long j = 0; j < G; j++)
                for (long i = 0; i < n; i++) {
                    const uint16_t *kr = kb16 + i * c->k_stride;
                    float a = 0;
                    for (long d = 0; d < D; d++) a += qs[j][d] * h2f(kr[d]);
                    scores[j * EK_ATTN_CHUNK + i] = a;
                }
        } else
#if EK_X86
        if (simd) group_scores_avx2(qs, G, kbase, c->k_stride, n, D, scores, EK_ATTN_CHUNK);
        else
#elif defined(__aarch64__)
        if (simd) ek_neon_group_scores(qs, G, kbase, c->k_stride, n, D, scores, EK_ATTN_CHUNK);
        else
#endif
        for (long j = 0; j < G; j++)
            for (long i = 0; i < n; i++) scores[j * EK_ATTN_CHUNK + i] = ek_dot_f32(qs[j], kbase + i * c->k_stride, D);
        /* chunk-local softmax per head */
        float mx[EK_ATTN_GROUP], sum[EK_ATTN_GROUP];
        for (long j = 0; j < G; j++) {
            long h = group_head(c, g, j0 + j);
            float *sc = scores + j * EK_ATTN_CHUNK;
            const float *b = c->bias ? c->bias + h * c->bias_stride + (c->tq - 1) - t + s0 : NULL;
            if (any_masked) for (long i = 0; i < n; i++) if (!c->keep[s0 + i]) sc[i] = -INFINITY;
#if EK_X86
            if (simd) { double sd; mx[j] = chunk_softmax_avx2(sc, n, c->scale_div, b, &sd); sum[j] = (float)sd; continue; }
#elif defined(__aarch64__)
            if (simd) { double sd; mx[j] = ek_neon_chunk_softmax(sc, n, c->scale_div, b, &sd); sum[j] = (float)sd; continue; }
#endif
            float m = -INFINITY;
            for (long i = 0; i < n; i++) {
                if (sc[i] == -INFINITY) continue;
                sc[i] = b ? sc[i] + b[i] : sc[i] / c->scale_div;
                if (sc[i] > m) m = sc[i];
            }
            mx[j] = m;
            if (m == -INFINITY) { for (long i = 0; i < n; i++) sc[i] = 0.0f; sum[j] = 0; continue; }
            double sm = 0;
            for (long i = 0; i < n; i++) { sc[i] = sc[i] == -INFINITY ? 0.0f : expf(sc[i] - m); sm += sc[i]; }
            sum[j] = (float)sm;
        }
        /* weighted values */
        if (bytes) {   /* per block of `group` values: the probabilities times its values' scales, its slice of o */
            for (long b = 0; b < blocks; b++) {
                float *ob[EK_ATTN_GROUP];
                for (long i = 0; i < n; i++) scale_i[i] = vsc[i * c->scale_stride + b];
                for (long j = 0; j < G; j++) {
                    ob[j] = os[j] + b * group;
                    const float *sc = scores + j * EK_ATTN_CHUNK;
                    float *pt = part + j * EK_ATTN_CHUNK;
                    for (long i = 0; i < n; i++) pt[i] = sc[i] * scale_i[i];
                }
#if EK_X86
                if (simd) group_values_i8_avx2(part, EK_ATTN_CHUNK, G, vb8 + b * group, c->v_stride, n, group, ob);
                else
#endif
                for (long j = 0; j < G; j++) {
                    memset(ob[j], 0, sizeof(float) * group);
                    for (long i = 0; i < n; i++) {
                        float p = part[j * EK_ATTN_CHUNK + i];
                        const int8_t *vr = vb8 + i * c->v_stride + b * group;
                        if (p != 0.0f) for (long d = 0; d < group; d++) ob[j][d] += p * (float)vr[d];
                    }
                }
            }
        } else if (half) {
#if EK_X86
            if (simd) group_values_f16_avx2(scores, EK_ATTN_CHUNK, G, vb16, c->v_stride, n, D, os);
            else
#endif
            for (long j = 0; j < G; j++) {
                memset(os[j], 0, sizeof(float) * D);
                for (long i = 0; i < n; i++) {
                    float p = scores[j * EK_ATTN_CHUNK + i];
                    const uint16_t *vr = vb16 + i * c->v_stride;
                    if (p != 0.0f) for (long d = 0; d < D; d++) os[j][d] += p * h2f(vr[d]);
                }
            }
        } else
#if EK_X86
        if (simd) group_values_avx2(scores, EK_ATTN_CHUNK, G, vbase, c->v_stride, n, D, os);
        else
#elif defined(__aarch64__)
        if (simd) ek_neon_group_values(scores, EK_ATTN_CHUNK, G, vbase, c->v_stride, n, D, os);
        else
#endif
        for (long j = 0; j < G; j++) {
            memset(os[j], 0, sizeof(float) * D);
            for (long i = 0; i < n; i++) {
                float p = scores[j * EK_ATTN_CHUNK + i];
                if (p != 0.0f) ek_axpy_f32(p, vbase + i * c->v_stride, os[j], D);
            }
        }
        for (long j = 0; j < G; j++) { mxs[j][0] = mx[j]; mxs[j][1] = sum[j]; }
    }
}

#ifndef EK_ATTN_TOUCH
#define EK_ATTN_TOUCH 1
#endif
/* Reads one byte of every cache line of a chunk's K and V rows (n rows of row_bytes, ks / vs bytes apart): plain
 * loads, so the core keeps many misses in flight, which the arithmetic that follows does not; K and V each in two
 * halves walked side by side, four streams at once (bench/micro/decode_attention_cache.c, Llama-362M's 32 layers at
 * 544 keys: fp32 K/V 4.6-5.4 -> 3.7-4.1 ms, f16 2.9-3.4 -> 2.8-3.4 ms, against K rows then V rows in one stream). */
static uint8_t touch_chunk(const uint8_t *kb, const uint8_t *vb, long row_bytes, long ks, long vs, long n) {
    uint8_t acc = 0;
    long h = n / 2;
    for (long i = 0; i < h; i++) {
        const uint8_t *k0 = kb + i * ks, *v0 = vb + i * vs, *k1 = kb + (i + h) * ks, *v1 = vb + (i + h) * vs;
        for (long b = 0; b < row_bytes; b += 64) acc ^= k0[b] ^ v0[b] ^ k1[b] ^ v1[b];
        acc ^= k0[row_bytes - 1] ^ v0[row_bytes - 1] ^ k1[row_bytes - 1] ^ v1[row_bytes - 1];
    }
    if (n % 2) {
        const uint8_t *kr = kb + (n - 1) * ks, *vr = vb + (n - 1) * vs;
        for (long b = 0; b < row_bytes; b += 64) acc ^= kr[b] ^ vr[b];
        acc ^= kr[row_bytes - 1] ^ vr[row_bytes - 1];
    }
    return acc;
}

static void attn_task(void *ctx, long index, long count) {
    (void)count;
    const attn_ctx *c = (const attn_ctx *)ctx;
    long t = index / c->nchunks, chunk_i = index % c->nchunks;
    if (EK_ATTN_TOUCH && c->tq == 1) {   /* decode step: the chunk's K/V rows come from memory; bring them in first */
        long s0, s1 = chunk_keys(c, t, chunk_i, &s0);
        long elt = c->k8 ? 1 : c->k16 ? 2 : 4, row = c->n_kv_head * c->head_dim * elt;
        if (s1 > s0 && row > 0) {
            const uint8_t *kb = c->k8 ? (const uint8_t *)(c->k8 + s0 * c->k_stride)
                              : c->k16 ? (const uint8_t *)(c->k16 + s0 * c->k_stride) : (const uint8_t *)(c->k + s0 * c->k_stride);
            const uint8_t *vb = c->v8 ? (const uint8_t *)(c->v8 + s0 * c->v_stride)
                              : c->v16 ? (const uint8_t *)(c->v16 + s0 * c->v_stride) : (const uint8_t *)(c->v + s0 * c->v_stride);
            uint8_t seen = touch_chunk(kb, vb, row, c->k_stride * elt, c->v_stride * elt, s1 - s0);
            __asm__ __volatile__("" : : "r"(seen));
        }
    }
    for (long g = 0; g < c->n_kv_head; g++) attn_chunk_head(c, t, g, chunk_i);
}

static void attention_engine(attn_ctx *c) {
    long D = c->head_dim;
    long tasks = c->tq * c->nchunks;
    double work = (double)c->tq * c->tk * c->n_head * D;
    if (work < 32768.0) for (long i = 0; i < tasks; i++) attn_task(c, i, tasks);   /* tiny: no thread wake-up */
    else ek_parallel_for(tasks, attn_task, c);
    /* merge the chunks of every (t, h) */
    for (long t = 0; t < c->tq; t++) {
        for (long h = 0; h < c->n_head; h++) {
            const float *parts = c->part + (t * c->n_head + h) * c->nchunks * (D + 2);
            float *o = c->out + t * c->out_stride + h * D;
            float m = -INFINITY;
            for (long ch = 0; ch < c->nchunks; ch++) if (parts[ch * (D + 2)] > m) m = parts[ch * (D + 2)];
            if (m == -INFINITY) {   /* every key masked: uniform over all tk keys */
                long g = c->interleaved ? h / (c->n_head / c->n_kv_head) : h % c->n_kv_head;
                memset(o, 0, sizeof(float) * D);
                for (long s = 0; s < c->tk; s++) {
                    if (c->v8) {
                        const int8_t *vr = c->v8 + s * c->v_stride + g * D;
                        const float *vs = c->v8_scale + s * c->scale_stride + g * D / c->group;
                        for (long d = 0; d < D; d++) o[d] += vs[d / c->group] / (float)c->tk * (float)vr[d];
                    } else if (c->v16) {   /* widened 64 at a time: the same axpy as the fp32 path */
                        float row[64];
                        for (long d0 = 0; d0 < D; d0 += 64) {
                            long len = D - d0 < 64 ? D - d0 : 64;
                            ek_f16_to_f32(c->v16 + s * c->v_stride + g * D + d0, row, len);
                            ek_axpy_f32(1.0f / (float)c->tk, row, o + d0, len);
                        }
                    } else ek_axpy_f32(1.0f / (float)c->tk, c->v + s * c->v_stride + g * D, o, D);
                }
                continue;
            }
            double total = 0;
            memset(o, 0, sizeof(float) * D);
            for (long ch = 0; ch < c->nchunks; ch++) {
                const float *p = parts + ch * (D + 2);
                if (p[0] == -INFINITY) continue;
                float w = expf(p[0] - m);
                total += (double)w * p[1];
                ek_axpy_f32(w, p + 2, o, D);
            }
            float inv = (float)(1.0 / total);
            for (long d = 0; d < D; d++) o[d] *= inv;
        }
    }
}

void ek_attention_f32(const float *q, long q_stride, const float *k, long k_stride,
                      const float *v, long v_stride, float *out, long out_stride,
                      long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                      const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch) {
    attn_ctx c = { q, k, v, out, q_stride, k_stride, v_stride, out_stride, tq, tk, n_head, n_kv_head, head_dim,
                   interleaved, key_keep, causal_offset, scale_div, NULL, 0, attn_chunk(tk), attn_chunks(tk), scratch, NULL, NULL,
                   NULL, NULL, NULL, NULL, 0, 1 };
    attention_engine(&c);
}

/* K or V as the twins read it: fp32 (f), f16 (h) or int8 (b, column c of key s times scale[s * scale_stride + c / group]). */
typedef struct { const float *f; const uint16_t *h; const int8_t *b; const float *scale; long scale_stride, group; } kv_src;

static inline double kv_at(const kv_src *x, long i, long s, long col) {
    if (x->f) return x->f[i];
    if (x->h) return h2f(x->h[i]);
    return (double)x->b[i] * x->scale[s * x->scale_stride + col / x->group];
}

/* The attention twins in one loop: keys and values fp32, f16 or int8 (kv_src); score = q·k, rounded to float for
 * fp32 keys (as ek_dot_f32_ref returns it), + bias[h, (tq - 1) + s - t] when given, / scale_div; softmax and P·V in
 * double. A row with every key masked is uniform over all keys, as the reference's masked_fill. */
static void attention_ref(const float *q, long q_stride, const kv_src *K, long k_stride,
                          const kv_src *V, long v_stride, float *out, long out_stride,
                          long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                          const uint8_t *key_keep, long causal_offset, float scale_div, const float *bias,
                          long bias_stride, float *scratch) {
    for (long t = 0; t < tq; t++) {
        for (long h = 0; h < n_head; h++) {
            long g = kv_head_for(h, n_head, n_kv_head, interleaved);
            const float *qh = q + t * q_stride + h * head_dim;
            double mx = -INFINITY;
            long allowed = 0;
            for (long s = 0; s < tk; s++) {
                if (!key_allowed(key_keep, causal_offset, t, s)) continue;
                long k0 = s * k_stride + g * head_dim;
                double score = K->f ? (double)ek_dot_f32_ref(qh, K->f + k0, head_dim) : 0.0;
                if (!K->f) for (long d = 0; d < head_dim; d++) score += (double)qh[d] * kv_at(K, k0 + d, s, g * head_dim + d);
                if (bias) score += bias[h * bias_stride + (tq - 1) + s - t];
                scratch[s] = (float)(score / scale_div);
                if (scratch[s] > mx) mx = scratch[s];
                allowed++;
            }
            double sum = 0;
            for (long s = 0; s < tk; s++) {
                if (allowed == 0) scratch[s] = 1.0f;
                else scratch[s] = key_allowed(key_keep, causal_offset, t, s) ? (float)exp(scratch[s] - mx) : 0.0f;
                sum += scratch[s];
            }
            float *o = out + t * out_stride + h * head_dim;
            for (long d = 0; d < head_dim; d++) {
                double acc = 0;
                for (long s = 0; s < tk; s++) acc += (double)scratch[s] * kv_at(V, s * v_stride + g * head_dim + d, s, g * head_dim + d);
                o[d] = (float)(acc / sum);
            }
        }
    }
}

void ek_attention_f32_ref(const float *q, long q_stride, const float *k, long k_stride,
                          const float *v, long v_stride, float *out, long out_stride,
                          long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                          const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch) {
    kv_src K = { k, NULL, NULL, NULL, 0, 1 }, V = { v, NULL, NULL, NULL, 0, 1 };
    attention_ref(q, q_stride, &K, k_stride, &V, v_stride, out, out_stride, tq, tk, n_head, n_kv_head,
                  head_dim, interleaved, key_keep, causal_offset, scale_div, NULL, 0, scratch);
}

void ek_attention_f16kv(const float *q, long q_stride, const uint16_t *k, long k_stride,
                        const uint16_t *v, long v_stride, float *out, long out_stride,
                        long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                        const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch) {
    attn_ctx c = { q, NULL, NULL, out, q_stride, k_stride, v_stride, out_stride, tq, tk, n_head, n_kv_head, head_dim,
                   interleaved, key_keep, causal_offset, scale_div, NULL, 0, attn_chunk(tk), attn_chunks(tk), scratch, k, v,
                   NULL, NULL, NULL, NULL, 0, 1 };
    attention_engine(&c);
}

void ek_attention_f16kv_ref(const float *q, long q_stride, const uint16_t *k, long k_stride,
                            const uint16_t *v, long v_stride, float *out, long out_stride,
                            long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                            const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch) {
    kv_src K = { NULL, k, NULL, NULL, 0, 1 }, V = { NULL, v, NULL, NULL, 0, 1 };
    attention_ref(q, q_stride, &K, k_stride, &V, v_stride, out, out_stride, tq, tk, n_head, n_kv_head,
                  head_dim, interleaved, key_keep, causal_offset, scale_div, NULL, 0, scratch);
}

void ek_attention_i8kv(const float *q, long q_stride, const int8_t *k, const float *k_scale, long k_stride,
                       const int8_t *v, const float *v_scale, long v_stride, long scale_stride, long group,
                       float *out, long out_stride, long tq, long tk, long n_head, long n_kv_head, long head_dim,
                       int interleaved, const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch) {
    if (group <= 0 || head_dim % group != 0) group = head_dim;   /* programmer error: one scale per head */
    attn_ctx c = { q, NULL, NULL, out, q_stride, k_stride, v_stride, out_stride, tq, tk, n_head, n_kv_head, head_dim,
                   interleaved, key_keep, causal_offset, scale_div, NULL, 0, attn_chunk(tk), attn_chunks(tk), scratch,
                   NULL, NULL, k, v, k_scale, v_scale, scale_stride, group };
    attention_engine(&c);
}

void ek_attention_i8kv_ref(const float *q, long q_stride, const int8_t *k, const float *k_scale, long k_stride,
                           const int8_t *v, const float *v_scale, long v_stride, long scale_stride, long group,
                           float *out, long out_stride, long tq, long tk, long n_head, long n_kv_head, long head_dim,
                           int interleaved, const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch) {
    if (group <= 0 || head_dim % group != 0) group = head_dim;
    kv_src K = { NULL, NULL, k, k_scale, scale_stride, group }, V = { NULL, NULL, v, v_scale, scale_stride, group };
    attention_ref(q, q_stride, &K, k_stride, &V, v_stride, out, out_stride, tq, tk, n_head, n_kv_head,
                  head_dim, interleaved, key_keep, causal_offset, scale_div, NULL, 0, scratch);
}

/* ------------------------------------------------------------------------------------------------ */
/* attention with a relative-position bias (T5): unscaled scores + bias[(tq - 1) + s - t]              */

void ek_attention_relbias_f32(const float *q, long q_stride, const float *k, long k_stride,
                              const float *v, long v_stride, float *out, long out_stride,
                              long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                              const uint8_t *key_keep, long causal_offset, const float *bias, long bias_stride,
                              float *scratch) {
    attn_ctx c = { q, k, v, out, q_stride, k_stride, v_stride, out_stride, tq, tk, n_head, n_kv_head, head_dim,
                   interleaved, key_keep, causal_offset, 1.0f, bias, bias_stride, attn_chunk(tk), attn_chunks(tk), scratch, NULL, NULL,
                   NULL, NULL, NULL, NULL, 0, 1 };
    attention_engine(&c);
}

void ek_attention_relbias_f32_ref(const float *q, long q_stride, const float *k, long k_stride,
                                  const float *v, long v_stride, float *out, long out_stride,
                                  long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                                  const uint8_t *key_keep, long causal_offset, const float *bias, long bias_stride,
                                  float *scratch) {
    kv_src K = { k, NULL, NULL, NULL, 0, 1 }, V = { v, NULL, NULL, NULL, 0, 1 };
    attention_ref(q, q_stride, &K, k_stride, &V, v_stride, out, out_stride, tq, tk, n_head, n_kv_head,
                  head_dim, interleaved, key_keep, causal_offset, 1.0f, bias, bias_stride, scratch);
}

void ek_add_relbias_f32(float *scores, long rows, long cols, long ld, const float *bias_row) {
    for (long r = 0; r < rows; r++) {
        const float *b = bias_row + (rows - 1) - r;
        float *s = scores + r * ld;
        for (long c = 0; c < cols; c++) s[c] += b[c];
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* conversions                                                                                       */

void ek_bf16_to_f32(const uint16_t *src, float *dst, long n) {
    for (long i = 0; i < n; i++) { uint32_t b = (uint32_t)src[i] << 16; memcpy(dst + i, &b, 4); }
}

#if EK_X86
/* AVX2, 8 values per step: the scalar loop's integer arithmetic (b + 0x7fff + bit 16 of b, NaN → (b >> 16) | 0x40),
 * so the same bytes on every path, denormals included (vcvtneps2bf16 would flush them to zero) */
__attribute__((target("avx2"))) static long f32_to_bf16_avx2(const float *src, uint16_t *dst, long n) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
                  bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), inf);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, bias),
                                                             _mm256_and_si256(_mm256_srli_epi32(b, 16), one)), 16);
        __m256i h = _mm256_blendv_epi8(rounded, _mm256_or_si256(_mm256_srli_epi32(b, 16), quiet), nan);
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0x08);   /* lanes 0, 2: 8 × uint16 */
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_castsi256_si128(packed));
    }
    return i;
}
#endif

void ek_f32_to_bf16(const float *src, uint16_t *dst, long n) {
    long i = 0;
#if EK_X86
    if (use_avx2()) i = f32_to_bf16_avx2(src, dst, n);
#endif
    for (; i < n; i++) {
        uint32_t b; memcpy(&b, src + i, 4);
        if ((b & 0x7fffffffu) > 0x7f800000u) { dst[i] = (uint16_t)((b >> 16) | 0x40); continue; } /* NaN stays NaN */
        b += 0x7fffu + ((b >> 16) & 1u);
        dst[i] = (uint16_t)(b >> 16);
    }
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {  /* subnormal */
            float f = (float)man * (1.0f / 16777216.0f);  /* man * 2^-24 */
            memcpy(&bits, &f, 4);
            bits |= sign;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float out; memcpy(&out, &bits, 4);
    return out;
}

#if EK_X86
/* F16C on 256-bit registers: also needs the OS to save AVX state, which the AVX2 check establishes */
static inline int use_f16c(void) { return use_avx2() && (ek_cpu_features() & EK_CPU_F16C); }

/* F16C, 8 values per instruction: exact widening (the same floats as half_to_float; NaNs stay NaN, but their
 * payloads may differ: the CPU quiets signaling NaNs) */
__attribute__((target("avx,f16c"))) static long f16_to_f32_f16c(const uint16_t *src, float *dst, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    return i;
}

/* F16C rounding to nearest even: the same bytes as float_to_half (overflow → inf, subnormal halves); a block of 8
 * holding a NaN goes through float_to_half, whose NaN is sign | 0x7e00 */
__attribute__((target("avx,f16c"))) static long f32_to_f16_f16c(const float *src, uint16_t *dst, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) break;
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    return i;
}
#endif

void ek_f16_to_f32(const uint16_t *src, float *dst, long n) {
    long i = 0;
#if EK_X86
    if (use_f16c()) i = f16_to_f32_f16c(src, dst, n);
#endif
    for (; i < n; i++) dst[i] = half_to_float(src[i]);
}

static uint16_t float_to_half(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);              /* NaN */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);             /* overflow -> inf */
    if (absx < 0x38800000u) {                                                /* subnormal half */
        float a; memcpy(&a, &absx, 4);
        float scaled = a * 16777216.0f;                                      /* / 2^-24 */
        uint32_t m = (uint32_t)lrintf(scaled);                               /* nearest even */
        return (uint16_t)(sign | m);
    }
    uint32_t mant = absx & 0x7fffffu;
    uint32_t e = (absx >> 23) - 112;
    uint32_t h = (e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

void ek_f32_to_f16(const float *src, uint16_t *dst, long n) {
    long i = 0;
#if EK_X86
    while (use_f16c() && i + 8 <= n) {   /* a NaN block stops the vector loop: that block in plain C, then resume */
        i += f32_to_f16_f16c(src + i, dst + i, n - i);
        if (i + 8 > n) break;
        for (long e = i + 8; i < e; i++) dst[i] = float_to_half(src[i]);
    }
#endif
    for (; i < n; i++) dst[i] = float_to_half(src[i]);
}

#if EK_X86
/* the vector part of ek_all_within: 1 while every |x| <= limit (a NaN compares false), over whole blocks of 8 */
EK_AVX2 static int all_within_avx2(const float *x, long n, float limit, long *done) {
    const __m256 lim = _mm256_set1_ps(limit), abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    long i = 0;
    for (; i + 8 <= n; i += 8)
        ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), lim, _CMP_LE_OQ));
    *done = i;
    return _mm256_movemask_ps(ok) == 0xff;
}
#endif

int ek_all_within(const float *x, long n, float limit) {
    long i = 0;
#if EK_X86
    if (use_avx2() && !all_within_avx2(x, n, limit, &i)) return 0;
#endif
    for (; i < n; i++) if (!(fabsf(x[i]) <= limit)) return 0;   /* NaN fails the comparison too */
    return 1;
}

int ek_f16_fits(const float *x, long n) { return ek_all_within(x, n, 65504.0f); }

long ek_argmax_f32(const float *x, long n) {
    long best = 0;
    for (long i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

/* ------------------------------------------------------------------------------------------------ */
/* GEMV / small-M GEMM for decode                                                                    */

typedef struct { const float *w, *x, *bias; float *y; long m, n, k; int zmm; } gemv_ctx;   /* zmm: ek_gemv_f32_zmm() on the caller */

#if EK_X86
/* nr (1 or 4, constant after inlining) fp32 weight rows against x for the GEMV, side by side: two accumulators per
 * row over 16-element steps, an 8-element step, the scalar tail; the same operations per row whatever nr is. */
EK_AVX2 static inline __attribute__((always_inline)) void gemv_dots_avx2(const float *const *w, const int nr,
                                                                         const float *x, long k, float *s) {
    __m256 a[4][2];
    for (int t = 0; t < nr; t++) a[t][0] = a[t][1] = _mm256_setzero_ps();
    long j = 0;
    for (; j + 16 <= k; j += 16) {
        __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
        for (int t = 0; t < nr; t++) {
            a[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(w[t] + j), x0, a[t][0]);
            a[t][1] = _mm256_fmadd_ps(_mm256_loadu_ps(w[t] + j + 8), x1, a[t][1]);
        }
    }
    long tail = j;
    if (j + 8 <= k) {
        __m256 x0 = _mm256_loadu_ps(x + j);
        for (int t = 0; t < nr; t++) a[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(w[t] + j), x0, a[t][0]);
        tail = j + 8;
    }
    for (int t = 0; t < nr; t++) {
        s[t] = hsum256(_mm256_add_ps(a[t][0], a[t][1]));
        for (long i = tail; i < k; i++) s[t] += w[t][i] * x[i];
    }
}

/* AVX-512F: the same with zmm, two accumulators over 32-element steps, a 16-element step, the scalar tail; each row's
 * 16 lanes are added as their two halves, then hsum256 (a fixed order). Half the instructions per cache line let a
 * core keep more lines in flight (one core of the Intel Xeon of session 12 streams only 11–12 GB/s): Llama-362M's
 * step GEMVs (bench/micro/gemv_layers.c f32, 9 alternated runs) 58.5 ms (median) against 62.1 with ymm; fp32 decode,
 * 128 → 32 tokens, 6 alternated runs each, medians: Llama-362M 12.90 → 14.05 tok/s, T5-347M 29.35 → 34.40, Mu-330M
 * 37.35 → 41.10. Several input rows (batches) keep the ymm loop. */
#if defined(EK_EMULATED_FEATURES)
#define EK_AVX512F_GEMV EK_AVX2   /* kernel_parity's emulated build: SIMDe */
#else
#define EK_AVX512F_GEMV __attribute__((target("avx2,fma,avx512f")))
#endif
/* Software prefetch distance of the zmm fp32 GEMV, in elements (768: 3,072 bytes ahead in each of the four rows walked
 * side by side; the bf16 GEMVs' EQ_BF16_PF): bench/micro/gemv_cold.c f32, cold 5120×960 and 960×2560, 2 threads,
 * 4 alternations, medians: 22.9 / 21.9 GB/s without, 24.6 / 22.9 at 1,536 bytes, 25.3 / 24.2 at 3,072 (session 15,
 * Intel Xeon). 0 turns it off. */
#ifndef EK_GEMV_PF
#define EK_GEMV_PF 768
#endif
EK_AVX512F_GEMV static inline __attribute__((always_inline)) void gemv_dots_avx512(const float *const *w, const int nr,
                                                                                 const float *x, long k, float *s) {
    __m512 a[4][2];
    for (int t = 0; t < nr; t++) a[t][0] = a[t][1] = _mm512_setzero_ps();
    long j = 0;
    for (; j + 32 <= k; j += 32) {
        __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
        if (EK_GEMV_PF) for (int t = 0; t < nr; t++) {   /* the two lines of this step's 128 bytes, 768 elements on */
            _mm_prefetch((const char *)(w[t] + j + EK_GEMV_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(w[t] + j + EK_GEMV_PF) + 64, _MM_HINT_T0);
        }
        for (int t = 0; t < nr; t++) {
            a[t][0] = _mm512_fmadd_ps(_mm512_loadu_ps(w[t] + j), x0, a[t][0]);
            a[t][1] = _mm512_fmadd_ps(_mm512_loadu_ps(w[t] + j + 16), x1, a[t][1]);
        }
    }
    long tail = j;
    if (j + 16 <= k) {
        __m512 x0 = _mm512_loadu_ps(x + j);
        for (int t = 0; t < nr; t++) a[t][0] = _mm512_fmadd_ps(_mm512_loadu_ps(w[t] + j), x0, a[t][0]);
        tail = j + 16;
    }
    for (int t = 0; t < nr; t++) {
        __m512 v = _mm512_add_ps(a[t][0], a[t][1]);
        s[t] = hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
        for (long i = tail; i < k; i++) s[t] += w[t][i] * x[i];
    }
}

/* One input (decode): rows [r0, r1) in four quarters walked side by side. Four weight streams in flight per thread
 * read DRAM faster than one (bench/micro/gemv_cold.c); the rows left over go one at a time, to the same floats. */
#define EK_GEMV_ROWS1(SUF, ATTR)                                                                                  \
ATTR static void gemv_rows1_##SUF(const gemv_ctx *c, long r0, long r1) {                                          \
    const long k = c->k, quarter = (r1 - r0) / 4;                                                                 \
    for (long t = 0; t < quarter; t++) {                                                                          \
        long rows[4] = { r0 + t, r0 + quarter + t, r0 + 2 * quarter + t, r0 + 3 * quarter + t };                  \
        const float *w[4] = { c->w + rows[0] * k, c->w + rows[1] * k, c->w + rows[2] * k, c->w + rows[3] * k };   \
        float s[4];                                                                                               \
        gemv_dots_##SUF(w, 4, c->x, k, s);                                                                        \
        for (int u = 0; u < 4; u++) c->y[rows[u]] = s[u] + (c->bias ? c->bias[rows[u]] : 0.0f);                  \
    }                                                                                                             \
    for (long r = r0 + 4 * quarter; r < r1; r++) {                                                                \
        const float *w = c->w + r * k;                                                                            \
        float s;                                                                                                  \
        gemv_dots_##SUF(&w, 1, c->x, k, &s);                                                                      \
        c->y[r] = s + (c->bias ? c->bias[r] : 0.0f);                                                              \
    }                                                                                                             \
}
EK_GEMV_ROWS1(avx2, EK_AVX2)
EK_GEMV_ROWS1(avx512, EK_AVX512F_GEMV)
#undef EK_GEMV_ROWS1

/* Whether single-input fp32 GEMVs run on zmm (ek_gemv_path(EK_WF_F32) reports this same test). */
int ek_gemv_f32_zmm(void) { return use_avx512f() && !ek_get_gemv_ymm(); }

EK_AVX2 static void gemv_rows_avx2(const gemv_ctx *c, long r0, long r1) {
    const long k = c->k;
    if (c->m == 1) {
        if (c->zmm) gemv_rows1_avx512(c, r0, r1);
        else gemv_rows1_avx2(c, r0, r1);
        return;
    }
    for (long r = r0; r < r1; r++) {   /* several inputs: each weight row is read once and dotted with the m inputs */
        const float *wr = c->w + r * k;
        for (long i0 = 0; i0 < c->m; i0 += 4) {
            long mm = c->m - i0 < 4 ? c->m - i0 : 4;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            const float *x0 = c->x + i0 * k;
            const float *x1 = mm > 1 ? x0 + k : x0, *x2 = mm > 2 ? x0 + 2 * k : x0, *x3 = mm > 3 ? x0 + 3 * k : x0;
            long j = 0;
            for (; j + 8 <= k; j += 8) {
                __m256 wv = _mm256_loadu_ps(wr + j);
                a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + j), a0);
                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + j), a1);
                a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + j), a2);
                a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + j), a3);
            }
            float s[4] = { hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3) };
            for (; j < k; j++) { s[0] += wr[j] * x0[j]; s[1] += wr[j] * x1[j]; s[2] += wr[j] * x2[j]; s[3] += wr[j] * x3[j]; }
            float b = c->bias ? c->bias[r] : 0.0f;
            for (long i = 0; i < mm; i++) c->y[(i0 + i) * c->n + r] = s[i] + b;
        }
    }
}
#else
int ek_gemv_f32_zmm(void) { return 0; }
#endif

static void gemv_rows_scalar(const gemv_ctx *c, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        float b = c->bias ? c->bias[r] : 0.0f;
        for (long i = 0; i < c->m; i++) c->y[i * c->n + r] = ek_dot_f32(c->w + r * c->k, c->x + i * c->k, c->k) + b;
    }
}

static void gemv_task(void *ctx, long index, long count) {
    const gemv_ctx *c = (const gemv_ctx *)ctx;
    long r0 = c->n * index / count, r1 = c->n * (index + 1) / count;
#if EK_X86
    if (use_avx2()) { gemv_rows_avx2(c, r0, r1); return; }
#elif defined(__aarch64__)
    if (use_neon()) { ek_neon_gemv_rows_f32(c->w, c->x, c->bias, c->y, c->m, c->n, c->k, r0, r1); return; }   /* NEON hook */
#endif
    gemv_rows_scalar(c, r0, r1);
}

void ek_gemv_f32(const float *w, const float *x, const float *bias, float *y, long m, long n, long k) {
    gemv_ctx c = { w, x, bias, y, m, n, k, ek_gemv_f32_zmm() };   /* the width chosen once, on the caller's thread */
    long bytes = n * k * 4;
    /* tiny matrices are not worth a wake-up; otherwise contiguous row blocks (ek_gemv_tasks), claimed
       dynamically so a busy core's share is picked up by the others */
    long tasks = ek_gemv_tasks(bytes);
    if (tasks > n) tasks = n;
    ek_parallel_for(tasks, gemv_task, &c);
}

void ek_gemv_f32_ref(const float *w, const float *x, const float *bias, float *y, long m, long n, long k) {
    for (long i = 0; i < m; i++)
        for (long r = 0; r < n; r++) y[i * n + r] = ek_dot_f32_ref(w + r * k, x + i * k, k) + (bias ? bias[r] : 0.0f);
}

/* ------------------------------------------------------------------------------------------------ */
/* memory read ceiling (for benchmarks): sums n floats, each thread streaming its own block          */

#if EK_X86
/* The four quarters of x side by side (four read streams in flight, as the decode GEMVs read their weights: this
 * sum is `encore bench`'s read ceiling), each prefetched EK_GEMV_PF floats ahead as the zmm fp32 GEMV does (without
 * it the GEMVs, which prefetch, read faster than this "ceiling": 25.0 GB/s against 21.9, session 15), the rest
 * after them. */
EK_AVX2 static float sum_avx2(const float *x, long n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    const long q = n / 64 * 16;   /* a multiple of 16 floats (one cache line) per quarter */
    const float *x1 = x + q, *x2 = x + 2 * q, *x3 = x + 3 * q;
    for (long i = 0; i < q; i += 16) {
        if (EK_GEMV_PF) {
            _mm_prefetch((const char *)(x + i + EK_GEMV_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(x1 + i + EK_GEMV_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(x2 + i + EK_GEMV_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(x3 + i + EK_GEMV_PF), _MM_HINT_T0);
        }
        s0 = _mm256_add_ps(s0, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(x + i + 8)));
        s1 = _mm256_add_ps(s1, _mm256_add_ps(_mm256_loadu_ps(x1 + i), _mm256_loadu_ps(x1 + i + 8)));
        s2 = _mm256_add_ps(s2, _mm256_add_ps(_mm256_loadu_ps(x2 + i), _mm256_loadu_ps(x2 + i + 8)));
        s3 = _mm256_add_ps(s3, _mm256_add_ps(_mm256_loadu_ps(x3 + i), _mm256_loadu_ps(x3 + i + 8)));
    }
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (long i = 4 * q; i < n; i++) s += x[i];
    return s;
}
#endif

typedef struct { const float *x; long n; float partial[64]; } sum_ctx;

static void sum_task(void *ctx, long index, long count) {
    sum_ctx *c = (sum_ctx *)ctx;
    long a = c->n * index / count, b = c->n * (index + 1) / count;
#if EK_X86
    if (use_avx2()) { c->partial[index] = sum_avx2(c->x + a, b - a); return; }
#elif defined(__aarch64__)
    if (use_neon()) { c->partial[index] = ek_neon_sum_f32(c->x + a, b - a); return; }   /* NEON hook */
#endif
    float s = 0;
    for (long i = a; i < b; i++) s += c->x[i];
    c->partial[index] = s;
}

float ek_sum_f32(const float *x, long n) {
    sum_ctx c;
    c.x = x;
    c.n = n;
    long tasks = ek_get_threads();
    if (tasks > 64) tasks = 64;
    ek_parallel_for(tasks, sum_task, &c);
    float s = 0;
    for (long i = 0; i < tasks; i++) s += c.partial[i];
    return s;
}

/* ------------------------------------------------------------------------------------------------ */
/* bf16-weight GEMV for decode: the dispatch and kernels live in gemv_quant.c                        */

static inline float bf16_to_float(uint16_t h) { uint32_t b = (uint32_t)h << 16; float f; memcpy(&f, &b, 4); return f; }

void ek_gemv_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k) {
    /* the AVX2 and AVX512-BF16 paths arrange x in a buffer; if it cannot grow, the reference (no buffer) writes y */
    if (ek_gemv_quant(EK_WF_BF16, w, NULL, x, bias, y, m, n, k) == -2) ek_gemv_bf16_ref(w, x, bias, y, m, n, k);
}

void ek_gemv_bf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k) {
    for (long i = 0; i < m; i++)
        for (long r = 0; r < n; r++) {
            double s = 0;
            for (long j = 0; j < k; j++) s += (double)bf16_to_float(w[r * k + j]) * x[i * k + j];
            y[i * n + r] = (float)s + (bias ? bias[r] : 0.0f);
        }
}
