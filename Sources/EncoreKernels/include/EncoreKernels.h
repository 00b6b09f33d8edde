/*
 * EncoreKernels: hand-written fp32 kernels over raw buffers, for the pieces BLAS has nothing for:
 * norms, activations, softmax, RoPE and attention. Each fast kernel has a plain `_ref` twin that the
 * tests compare against; the fast path is chosen at run time from the CPU's features
 * (AVX2+FMA on x86-64, NEON on arm64, plain C elsewhere). Threads never live here yet: callers own them.
 *
 * Shapes are given in comments as [rows, cols]; all matrices are row-major and dense unless a stride says
 * otherwise.
 */
#ifndef ENCORE_KERNELS_H
#define ENCORE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CPU features ---- */
enum { EK_CPU_AVX2_FMA = 1, EK_CPU_AVX512F = 2, EK_CPU_NEON = 4, EK_CPU_AVX512BF16 = 8, EK_CPU_AVX512VNNI = 16 };
/** Bit set of EK_CPU_* the running CPU has. */
int ek_cpu_features(void);
/** Force the plain-C paths (1) or allow SIMD paths (0); for tests and benchmarks. */
void ek_set_force_reference(int force);
/** Name of the kernel path in use: "avx2", "neon" or "scalar". */
const char *ek_kernel_path(void);

/* ---- elementwise ---- */
/** sum_i a[i]*b[i] */
float ek_dot_f32(const float *a, const float *b, long n);
float ek_dot_f32_ref(const float *a, const float *b, long n);
/** y[i] += alpha * x[i] */
void ek_axpy_f32(float alpha, const float *x, float *y, long n);
/** y[i] += x[i] */
void ek_add_f32(float *y, const float *x, long n);
/** x: [rows, cols]; x[r, c] += bias[c] */
void ek_add_bias_f32(float *x, const float *bias, long rows, long cols);
/** In place tanh-approximated GELU ("gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void ek_gelu_tanh_f32(float *x, long n);
void ek_gelu_tanh_f32_ref(float *x, long n);
/** x: [rows, cols]; x = gelu_tanh(x + bias) (bias may be NULL). */
void ek_bias_gelu_tanh_f32(float *x, const float *bias, long rows, long cols);
/** exp over a vector, in place (the SIMD path has ~2 ulp error). */
void ek_exp_f32(float *x, long n);

/* ---- normalisation ---- */
/** RMSNorm as the Mu reference: out = w * (x * rsqrt(mean(x^2) + eps)), per row of [rows, dim]. out may alias x. */
void ek_rmsnorm_f32(const float *x, const float *w, float *out, long rows, long dim, float eps);
void ek_rmsnorm_f32_ref(const float *x, const float *w, float *out, long rows, long dim, float eps);

/* ---- RoPE (GPT-NeoX "rotate_half" layout) ---- */
/**
 * Rotates `n_heads` heads of `head_dim` in each of `t` rows of x (row r starts at x + r*row_stride):
 * x' = x*cos + rotate_half(x)*sin, angle[r, j] = positions[r] * inv_freq[j], j < head_dim/2,
 * computed in fp32 like the reference.
 */
void ek_rope_neox_f32(float *x, long t, long n_heads, long head_dim, long row_stride,
                      const float *positions, const float *inv_freq);

/* ---- softmax and attention ---- */
/**
 * Row softmax with the Mu reference's masking: scores [rows, cols] (row stride `ld`) are scaled by
 * 1/scale_div; entries whose key is masked (`key_keep[c] == 0`, or c > r + causal_offset when
 * causal_offset >= 0) get probability 0. A row with every key masked becomes uniform over all cols,
 * exactly as the reference's masked_fill(finfo.min) does.
 */
void ek_softmax_masked_f32(float *scores, long rows, long cols, long ld, float scale_div,
                           const uint8_t *key_keep, long causal_offset);

/**
 * Attention for one batch element, any number of queries (best for few: decode steps).
 * q:   [tq, n_head*head_dim]   rows `q_stride` apart
 * k,v: [tk, n_kv_head*head_dim] rows `k_stride`/`v_stride` apart
 * out: [tq, n_head*head_dim]   rows `out_stride` apart
 * Query head h reads KV head (interleaved ? h / (n_head/n_kv_head) : h % n_kv_head).
 * key_keep[s] == 0 masks key s (NULL keeps all); causal_offset >= 0 masks keys s > t + causal_offset.
 * scratch: at least tk floats.
 */
void ek_attention_f32(const float *q, long q_stride, const float *k, long k_stride,
                      const float *v, long v_stride, float *out, long out_stride,
                      long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                      const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);
void ek_attention_f32_ref(const float *q, long q_stride, const float *k, long k_stride,
                          const float *v, long v_stride, float *out, long out_stride,
                          long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                          const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);

/* ---- attention with a relative-position bias (T5) ---- */
/**
 * As ek_attention_f32, with unscaled scores plus an additive bias that depends on the key index minus the
 * query index (T5's relative position buckets, looked up by the caller):
 *   score(t, s) = q_t . k_s + bias[h * bias_stride + (tq - 1) + s - t]
 * then the same masking (key_keep, causal_offset) and softmax. bias: [n_head, bias_stride] with
 * bias_stride >= tq + tk - 1, or NULL for no bias (T5 cross-attention). scratch: at least tk floats.
 */
void ek_attention_relbias_f32(const float *q, long q_stride, const float *k, long k_stride,
                              const float *v, long v_stride, float *out, long out_stride,
                              long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                              const uint8_t *key_keep, long causal_offset, const float *bias, long bias_stride,
                              float *scratch);
void ek_attention_relbias_f32_ref(const float *q, long q_stride, const float *k, long k_stride,
                                  const float *v, long v_stride, float *out, long out_stride,
                                  long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                                  const uint8_t *key_keep, long causal_offset, const float *bias, long bias_stride,
                                  float *scratch);
/** scores[r, c] += bias_row[(rows - 1) + c - r] over [rows, cols] (row stride ld): one head's relative bias,
 *  laid out as for ek_attention_relbias_f32, added to scores computed by BLAS (long queries). */
void ek_add_relbias_f32(float *scores, long rows, long cols, long ld, const float *bias_row);

/* ---- SwiGLU ---- */
/** out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)). */
void ek_swiglu_f32(const float *gate, const float *up, float *out, long n);

/* ---- conversions ---- */
void ek_bf16_to_f32(const uint16_t *src, float *dst, long n);
void ek_f16_to_f32(const uint16_t *src, float *dst, long n);
void ek_f32_to_bf16(const float *src, uint16_t *dst, long n);  /* round to nearest even */
void ek_f32_to_f16(const float *src, uint16_t *dst, long n);   /* round to nearest even */

/* ---- GGML block formats (GGUF tensors) → fp32 ---- */
/** GGML type ids as stored in GGUF tensor infos. */
enum { EK_GGML_F32 = 0, EK_GGML_F16 = 1, EK_GGML_Q4_0 = 2, EK_GGML_Q4_1 = 3, EK_GGML_Q8_0 = 8,
       EK_GGML_Q4_K = 12, EK_GGML_Q5_K = 13, EK_GGML_Q6_K = 14, EK_GGML_BF16 = 30 };
/** Values per block of a supported type (1 for F32/F16/BF16), 0 when unsupported. */
long ek_ggml_block_values(int type);
/** Bytes per block of a supported type, 0 when unsupported. */
long ek_ggml_block_bytes(int type);
/** dst[n] = dequantized src (n/block_values whole blocks); on the thread pool. Returns -1 for an unsupported
 *  type or n not a multiple of the block, 0 otherwise. */
int ek_dequantize(int type, const void *src, float *dst, long n);
/** The per-element reference twin of ek_dequantize. */
int ek_dequantize_ref(int type, const void *src, float *dst, long n);

/* ---- threads ---- */
/** A task of a parallel loop: called once for each index in [0, count). */
typedef void (*ek_task_fn)(void *ctx, long index, long count);
/** Runs fn(ctx, i, ntasks) for every i on the kernel thread pool (the caller takes part); returns when all are done. */
void ek_parallel_for(long ntasks, ek_task_fn fn, void *ctx);
/** Threads the kernels use (default: online cores). */
void ek_set_threads(int n);
int ek_get_threads(void);

/* ---- matrix-vector products for decode (weights streamed once, both cores) ---- */
/**
 * y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) for a few rows m (decode: m = batch, at most 8 per pass).
 * Each thread streams a contiguous block of weight rows once, reusing it for all m inputs.
 */
void ek_gemv_f32(const float *w, const float *x, const float *bias, float *y, long m, long n, long k);
void ek_gemv_f32_ref(const float *w, const float *x, const float *bias, float *y, long m, long n, long k);

/** As ek_gemv_f32 with bf16 weights (half the bytes per decode step), widened to fp32 in registers. */
void ek_gemv_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k);
void ek_gemv_bf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k);

/** Sum of n floats on the kernel threads, each streaming its own block: measures the memory read ceiling. */
float ek_sum_f32(const float *x, long n);

/* ---- sampling helpers ---- */
/** Index of the largest value (first on ties). */
long ek_argmax_f32(const float *x, long n);

#ifdef __cplusplus
}
#endif
#endif
