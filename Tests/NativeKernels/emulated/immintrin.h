/* kernel_parity's emulated x86 build (scripts/test-kernels.sh): this directory comes first on the include path, so
 * every `#include <immintrin.h>` in Sources/EncoreKernels gets SIMDe's C implementations of the AVX2, F16C, FMA,
 * AVX-VNNI and AVX-512 intrinsics instead of the CPU's instructions. With EK_EMULATED_FEATURES the kernels then
 * dispatch to their AVX-VNNI / AVX-512 paths on a CPU that has neither, and kernel_parity checks them against the
 * plain references. Not used by the package build. */
#ifndef ENCORE_EMULATED_IMMINTRIN_H
#define ENCORE_EMULATED_IMMINTRIN_H
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#include <stdint.h>

/* AVX-VNNI's VEX vpdpbusd computes what AVX512-VNNI's EVEX form does */
#define _mm256_dpbusd_avx_epi32(src, a, b) simde_mm256_dpbusd_epi32(src, a, b)

/* three AVX-512F intrinsics SIMDe 0.7.4 lacks, written from Intel's pseudocode (more below) */
static inline simde__m512i encore_emulated_mm512_cvtepu16_epi32(simde__m256i a) {
    simde__m256i_private a_ = simde__m256i_to_private(a);
    simde__m512i_private r_;
    for (int i = 0; i < 16; i++) r_.i32[i] = (int32_t)a_.u16[i];
    return simde__m512i_from_private(r_);
}
#define _mm512_cvtepu16_epi32(a) encore_emulated_mm512_cvtepu16_epi32(a)
static inline simde__m512 encore_emulated_mm512_cvtepi32_ps(simde__m512i a) {
    simde__m512i_private a_ = simde__m512i_to_private(a);
    simde__m512_private r_;
    for (int i = 0; i < 16; i++) r_.f32[i] = (float)a_.i32[i];   /* round to nearest even, as vcvtdq2ps */
    return simde__m512_from_private(r_);
}
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps(a) encore_emulated_mm512_cvtepi32_ps(a)

/* GCC's order: 256-bit halves, 128-bit halves, then (2,3,0,1) and the last pair */
static inline float encore_emulated_mm512_reduce_add_ps(simde__m512 a) {
    simde__m512_private a_ = simde__m512_to_private(a);
    float t8[8], t4[4], t2[2];
    for (int i = 0; i < 8; i++) t8[i] = a_.f32[i + 8] + a_.f32[i];
    for (int i = 0; i < 4; i++) t4[i] = t8[i + 4] + t8[i];
    t2[0] = t4[0] + t4[2];
    t2[1] = t4[1] + t4[3];
    return t2[0] + t2[1];
}
#define _mm512_reduce_add_ps(a) encore_emulated_mm512_reduce_add_ps(a)

/* four AVX-512 intrinsics of the Q5 and K-quant decode kernels SIMDe 0.7.4 lacks (session 17) */
#define _cvtu64_mask64(a) ((simde__mmask64)(a))
#define _cvtu32_mask32(a) ((simde__mmask32)(a))
static inline simde__m256i encore_emulated_mm256_mask_add_epi8(simde__m256i src, simde__mmask32 k, simde__m256i a,
                                                               simde__m256i b) {
    simde__m256i_private s_ = simde__m256i_to_private(src), a_ = simde__m256i_to_private(a), b_ = simde__m256i_to_private(b);
    for (int i = 0; i < 32; i++) if ((k >> i) & 1) s_.i8[i] = (int8_t)(a_.i8[i] + b_.i8[i]);
    return simde__m256i_from_private(s_);
}
#define _mm256_mask_add_epi8(src, k, a, b) encore_emulated_mm256_mask_add_epi8(src, k, a, b)
static inline simde__m512i encore_emulated_mm512_zextsi256_si512(simde__m256i a) {
    simde__m256i_private a_ = simde__m256i_to_private(a);
    simde__m512i_private r_;
    for (int i = 0; i < 8; i++) { r_.i32[i] = a_.i32[i]; r_.i32[i + 8] = 0; }
    return simde__m512i_from_private(r_);
}
#define _mm512_zextsi256_si512(a) encore_emulated_mm512_zextsi256_si512(a)
/* SIMDe 0.7.4's native alias of _mm512_madd_epi16 takes four arguments (a bug): vpmaddwd from Intel's pseudocode */
static inline simde__m512i encore_emulated_mm512_madd_epi16(simde__m512i a, simde__m512i b) {
    simde__m512i_private a_ = simde__m512i_to_private(a), b_ = simde__m512i_to_private(b), r_;
    for (int i = 0; i < 16; i++)
        r_.i32[i] = (int32_t)a_.i16[2 * i] * b_.i16[2 * i] + (int32_t)a_.i16[2 * i + 1] * b_.i16[2 * i + 1];
    return simde__m512i_from_private(r_);
}
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) encore_emulated_mm512_madd_epi16(a, b)

/* the zmm softmax rows and GELU of the prompt passes (session 18): a mask type alias and seven AVX-512F intrinsics
 * SIMDe 0.7.4 lacks, from Intel's pseudocode (masked loads and stores touch only the selected lanes' memory) */
typedef simde__mmask16 __mmask16;
static inline simde__m512 encore_emulated_mm512_maskz_loadu_ps(simde__mmask16 k, const void *p) {
    simde__m512_private r_;
    for (int i = 0; i < 16; i++) r_.f32[i] = ((k >> i) & 1) ? ((const float *)p)[i] : 0.0f;
    return simde__m512_from_private(r_);
}
#define _mm512_maskz_loadu_ps(k, p) encore_emulated_mm512_maskz_loadu_ps(k, p)
static inline void encore_emulated_mm512_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a) {
    simde__m512_private a_ = simde__m512_to_private(a);
    for (int i = 0; i < 16; i++) if ((k >> i) & 1) ((float *)p)[i] = a_.f32[i];
}
#define _mm512_mask_storeu_ps(p, k, a) encore_emulated_mm512_mask_storeu_ps(p, k, a)
#define _mm512_mask_cmp_ps_mask(k, a, b, imm) ((simde__mmask16)((k) & simde_mm512_cmp_ps_mask(a, b, imm)))
static inline simde__m512i encore_emulated_mm512_cvttps_epi32(simde__m512 a) {
    simde__m512_private a_ = simde__m512_to_private(a);
    simde__m512i_private r_;
    for (int i = 0; i < 16; i++)   /* truncation; NaN and out of range give the "integer indefinite" 0x80000000 */
        r_.i32[i] = a_.f32[i] >= -2147483648.0f && a_.f32[i] < 2147483648.0f ? (int32_t)a_.f32[i] : INT32_MIN;
    return simde__m512i_from_private(r_);
}
#define _mm512_cvttps_epi32(a) encore_emulated_mm512_cvttps_epi32(a)
static inline simde__m512d encore_emulated_mm512_cvtps_pd(simde__m256 a) {
    simde__m256_private a_ = simde__m256_to_private(a);
    simde__m512d_private r_;
    for (int i = 0; i < 8; i++) r_.f64[i] = (double)a_.f32[i];
    return simde__m512d_from_private(r_);
}
#define _mm512_cvtps_pd(a) encore_emulated_mm512_cvtps_pd(a)
static inline float encore_emulated_mm512_reduce_max_ps(simde__m512 a) {
    simde__m512_private a_ = simde__m512_to_private(a);
    float m = a_.f32[0];
    for (int i = 1; i < 16; i++) if (a_.f32[i] > m) m = a_.f32[i];
    return m;
}
#define _mm512_reduce_max_ps(a) encore_emulated_mm512_reduce_max_ps(a)
/* GCC's order, as _mm512_reduce_add_ps above */
static inline double encore_emulated_mm512_reduce_add_pd(simde__m512d a) {
    simde__m512d_private a_ = simde__m512d_to_private(a);
    double t4[4], t2[2];
    for (int i = 0; i < 4; i++) t4[i] = a_.f64[i + 4] + a_.f64[i];
    t2[0] = t4[0] + t4[2];
    t2[1] = t4[1] + t4[3];
    return t2[0] + t2[1];
}
#define _mm512_reduce_add_pd(a) encore_emulated_mm512_reduce_add_pd(a)

/* F16C's scalar conversion and a rounding-control name SIMDe 0.7.4 does not alias */
#define _cvtsh_ss(h) simde_mm_cvtss_f32(simde_mm_cvtph_ps(simde_mm_cvtsi32_si128((int)(uint16_t)(h))))
#ifndef _MM_FROUND_NO_EXC
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#endif
/* the int8 decode rows on zmm (session 25): two mask types and two masked loads SIMDe 0.7.4 lacks, lane-exact (only the
 * selected lanes' memory is read, as the instructions do: the kernel's last blocks end where a row does) */
typedef simde__mmask8 __mmask8;
typedef simde__mmask64 __mmask64;
static inline simde__m256 encore_emulated_mm256_maskz_loadu_ps(simde__mmask8 k, const void *p) {
    simde__m256_private r_;
    for (int i = 0; i < 8; i++) r_.f32[i] = ((k >> i) & 1) ? ((const float *)p)[i] : 0.0f;
    return simde__m256_from_private(r_);
}
#undef _mm256_maskz_loadu_ps
#define _mm256_maskz_loadu_ps(k, p) encore_emulated_mm256_maskz_loadu_ps(k, p)
static inline simde__m512i encore_emulated_mm512_maskz_loadu_epi8(simde__mmask64 k, const void *p) {
    simde__m512i_private r_;
    for (int i = 0; i < 64; i++) r_.i8[i] = ((k >> i) & 1) ? ((const int8_t *)p)[i] : 0;
    return simde__m512i_from_private(r_);
}
#undef _mm512_maskz_loadu_epi8
#define _mm512_maskz_loadu_epi8(k, p) encore_emulated_mm512_maskz_loadu_epi8(k, p)

#endif
