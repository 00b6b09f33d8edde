/* AVX2 math shared by the kernel files (kernels.c, train.c, gemv_quant.c): horizontal sum and max of 8 lanes,
 * and the Cephes-style expf (~2 ulp over the float range), whose constants neon.c's twin shares. Private to
 * EncoreKernels. */
#ifndef ENCORE_AVX2_MATH_H
#define ENCORE_AVX2_MATH_H
/* The Cephes expf constants: the clamp, log2(e), ln 2 in two parts (C1 + C2), the polynomial from the highest term.
 * exp256 below, its zmm twin exp512 (kernels.c) and its NEON twin exp4 (neon.c) all use them. */
#define EK_EXP_CLAMP 88.3762626647949f
#define EK_EXP_LOG2E 1.44269504088896341f
#define EK_EXP_C1 0.693359375f
#define EK_EXP_C2 (-2.12194440e-4f)
#define EK_EXP_P0 1.9875691500E-4f
#define EK_EXP_P1 1.3981999507E-3f
#define EK_EXP_P2 8.3334519073E-3f
#define EK_EXP_P3 4.1665795894E-2f
#define EK_EXP_P4 1.6666665459E-1f
#define EK_EXP_P5 5.0000001201E-1f

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define EK_AVX2_MATH __attribute__((target("avx2,fma")))

EK_AVX2_MATH static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

/* The largest of the 8 lanes. */
EK_AVX2_MATH static inline float hmax256(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

EK_AVX2_MATH static inline __m256 exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(EK_EXP_CLAMP), lo = _mm256_set1_ps(-EK_EXP_CLAMP);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(EK_EXP_LOG2E), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(EK_EXP_C1), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(EK_EXP_C2), x);
    __m256 y = _mm256_set1_ps(EK_EXP_P0);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(EK_EXP_P1));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(EK_EXP_P2));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(EK_EXP_P3));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(EK_EXP_P4));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(EK_EXP_P5));
    __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_cvttps_epi32(fx);
    n = _mm256_add_epi32(n, _mm256_set1_epi32(127));
    n = _mm256_slli_epi32(n, 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

#endif
#endif
