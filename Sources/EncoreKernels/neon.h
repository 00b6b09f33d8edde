/* Private: the arm64 NEON kernels of neon.c, called from the dispatch hooks in kernels.c and gemv_quant.c.
 * Each one mirrors an AVX2 kernel of those files and is checked against the same `_ref` twin
 * (Tests/NativeKernels/kernel_parity.c, run under qemu-aarch64 by scripts/test-kernels.sh). */
#ifndef ENCORE_NEON_H
#define ENCORE_NEON_H
#include <stdint.h>

#if defined(__aarch64__)
/** EK_CPU_NEON, plus EK_CPU_NEON_DOTPROD when the CPU has SDOT (getauxval on Linux, sysctl on Apple). */
int ek_neon_features(void);

float ek_neon_dot_f32(const float *a, const float *b, long n);
void ek_neon_axpy_f32(float alpha, const float *x, float *y, long n);
void ek_neon_exp_f32(float *x, long n);
/** x: [rows, cols]; x = gelu_tanh(x + bias), bias may be NULL */
void ek_neon_bias_gelu_f32(float *x, const float *bias, long rows, long cols);
void ek_neon_rmsnorm_f32(const float *x, const float *w, float *out, long rows, long dim, float eps);
/** y[i, r] = w[r, :] . x[i, :] + bias[r] for rows r in [r0, r1) of w [n, k], i < m */
void ek_neon_gemv_rows_f32(const float *w, const float *x, const float *bias, float *y, long m, long n, long k,
                           long r0, long r1);
float ek_neon_sum_f32(const float *x, long n);
/* attention engine pieces (D % 4 == 0); same contracts as group_scores_avx2 / group_values_avx2 /
   chunk_softmax_avx2 in kernels.c */
void ek_neon_group_scores(const float *const *qs, long G, const float *k, long k_stride, long n, long D,
                          float *scores, long ld);
void ek_neon_group_values(const float *p, long ld, long G, const float *v, long v_stride, long n, long D,
                          float *const *os);
float ek_neon_chunk_softmax(float *sc, long n, float scale_div, const float *b, double *sum_out);

/* gemv_quant.c pieces */
/** One full block of 32: q = round-half-even(x * 127/amax) clamped to ±127; returns amax, *sum_out = Σq. */
float ek_neon_quantize_block(const float *x, int8_t *q, int *sum_out);
/** bf16 weights [n, k] widened to fp32, rows [r0, r1) */
void ek_neon_rows_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k,
                       long r0, long r1);
/** int8 weights [n, nb*32] with row scales, quantized activations xq [m, nb*32] and block scales xd [m, nb];
 *  dotprod: use SDOT (only when ek_neon_features() has EK_CPU_NEON_DOTPROD). */
void ek_neon_rows_int8(const int8_t *w, const float *wscale, const int8_t *xq, const float *xd, const float *bias,
                       float *y, long m, long n, long nb, long r0, long r1, int dotprod);
/** The int8 prompt GEMM's tile: out[r*4 + c] = Σ_k a[r*lda + k] · w[c*ldw + k] (exact int32) for r < mr ≤ 4,
 *  c < nc ≤ 4, kp % 16 == 0; dotprod: SDOT, else SMULL + SADALP. */
void ek_neon_tile_s8(const int8_t *a, long lda, const int8_t *w, long ldw, long kp, int mr, int nc, int32_t *out,
                     int dotprod);
#endif
#endif
