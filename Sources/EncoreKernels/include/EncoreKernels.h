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
enum { EK_CPU_AVX2_FMA = 1, EK_CPU_AVX512F = 2, EK_CPU_NEON = 4, EK_CPU_AVX512BF16 = 8, EK_CPU_AVX512VNNI = 16,
       EK_CPU_AVXVNNI = 32, EK_CPU_AVX512BWVL = 64, EK_CPU_F16C = 128, EK_CPU_NEON_DOTPROD = 256 };
/** Bit set of EK_CPU_* the running CPU has. */
int ek_cpu_features(void);
/** 1 on an Intel CPU (cpuid vendor "GenuineIntel"), else 0: picks tuning defaults (the prompt GEMMs' streamed outputs, ek_cpu_prefers_long_streams). */
int ek_cpu_is_intel(void);
/** 1 on a CPU with AVX-512F whose cores run 512-bit instructions as two 256-bit halves (AMD family 19h: Zen 4), else 0:
 *  the decode GEMVs' width (ek_get_gemv_ymm). */
int ek_cpu_splits_zmm(void);
/** 1 on an Intel CPU or a CPU with AVX-512F, else 0: the decode GEMVs' tuning (ek_get_x8_streams). */
int ek_cpu_prefers_long_streams(void);
/** Force the plain-C paths (1) or allow SIMD paths (0); for tests and benchmarks. */
void ek_set_force_reference(int force);
int ek_get_force_reference(void);
/** Name of the kernel path in use: "avx2", "neon" (arm64, neon.c) or "scalar" (with AVX-512F the masked softmax rows
 *  and GELU run on zmm under the "avx2" name; ek_set_isa_limit(EK_ISA_AVX2) keeps them on ymm). */
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
/**
 * The angles' cos and sin once for every layer of a pass: cos_out/sin_out [t, half], entry (r, j) = cosf/sinf of
 * positions[r] * inv_freq[j] (an fp32 product), half = head_dim / 2.
 */
void ek_rope_table_f32(const float *positions, long t, const float *inv_freq, long half, float *cos_out, float *sin_out);
/** ek_rope_neox_f32 with the angles' cos/sin from ek_rope_table_f32 ([t, head_dim/2] each): the same floats,
 *  without a cosf/sinf per row and head group (a 512-token pass of a 32-layer model called them 2M times). */
void ek_rope_neox_table_f32(float *x, long t, long n_heads, long head_dim, long row_stride,
                            const float *cos_table, const float *sin_table);

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
 * scratch: at least ek_attention_scratch_floats(tq, tk, n_head, head_dim) floats (the _ref twin: tk).
 * Keys are split into chunks of 128 processed on all threads (split-K, merged exactly); the query heads that
 * share a KV head are handled together, so each key and value row is read once per group.
 */
/** Floats of scratch ek_attention_f32 / ek_attention_relbias_f32 need for these sizes. */
long ek_attention_scratch_floats(long tq, long tk, long n_head, long head_dim);
void ek_attention_f32(const float *q, long q_stride, const float *k, long k_stride,
                      const float *v, long v_stride, float *out, long out_stride,
                      long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                      const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);
void ek_attention_f32_ref(const float *q, long q_stride, const float *k, long k_stride,
                          const float *v, long v_stride, float *out, long out_stride,
                          long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                          const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);

/** As ek_attention_f32 with K and V stored as IEEE half floats (Mu's cross-attention K/V kept in f16, half the
 *  bytes a decode step reads; opt-in): each key/value element is widened to fp32, the arithmetic is ek_attention_f32's.
 *  Strides count elements. For few queries (decode steps; any tq works). */
void ek_attention_f16kv(const float *q, long q_stride, const uint16_t *k, long k_stride,
                        const uint16_t *v, long v_stride, float *out, long out_stride,
                        long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                        const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);
void ek_attention_f16kv_ref(const float *q, long q_stride, const uint16_t *k, long k_stride,
                            const uint16_t *v, long v_stride, float *out, long out_stride,
                            long tq, long tk, long n_head, long n_kv_head, long head_dim, int interleaved,
                            const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);

/** As ek_attention_f16kv with K and V stored as int8, one fp32 scale per key and `group` values of a row (group
 *  divides head_dim; head_dim: one scale per KV head): column c of key s is k[s * k_stride + c] *
 *  k_scale[s * scale_stride + c / group] (the same for v; ek_quantize_rows' EK_WF_INT8 rows of `group` values, back to
 *  back). Per block of `group` values, scores are (q . k_int8) * scale, summed over a head's blocks; each probability
 *  is multiplied by a block's value scales after the chunk's softmax sums are taken, before the weighted sum of the
 *  widened int8 values. For few queries (decode steps over int8 KV caches and cross-attention K/V: about a quarter of
 *  fp32's bytes). */
void ek_attention_i8kv(const float *q, long q_stride, const int8_t *k, const float *k_scale, long k_stride,
                       const int8_t *v, const float *v_scale, long v_stride, long scale_stride, long group,
                       float *out, long out_stride, long tq, long tk, long n_head, long n_kv_head, long head_dim,
                       int interleaved, const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);
/** Twin: each key and value element dequantized (int8 · scale) in double, softmax and P·V in double. */
void ek_attention_i8kv_ref(const float *q, long q_stride, const int8_t *k, const float *k_scale, long k_stride,
                           const int8_t *v, const float *v_scale, long v_stride, long scale_stride, long group,
                           float *out, long out_stride, long tq, long tk, long n_head, long n_kv_head, long head_dim,
                           int interleaved, const uint8_t *key_keep, long causal_offset, float scale_div, float *scratch);

/* ---- attention with a relative-position bias (T5) ---- */
/**
 * As ek_attention_f32, with unscaled scores plus an additive bias that depends on the key index minus the
 * query index (T5's relative position buckets, looked up by the caller):
 *   score(t, s) = q_t . k_s + bias[h * bias_stride + (tq - 1) + s - t]
 * then the same masking (key_keep, causal_offset) and softmax. bias: [n_head, bias_stride] with
 * bias_stride >= tq + tk - 1, or NULL for no bias (T5 cross-attention).
 * scratch: at least ek_attention_scratch_floats(tq, tk, n_head, head_dim) floats (the _ref twin: tk).
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
/** out[i] = silu(gate[i]) · up[i] (SwiGLU); AVX2 exp where present, all cores for long inputs. out may alias gate. */
void ek_swiglu_f32(const float *gate, const float *up, float *out, long n);
void ek_swiglu_f32_ref(const float *gate, const float *up, float *out, long n);

/* ---- conversions ---- */
void ek_bf16_to_f32(const uint16_t *src, float *dst, long n);
void ek_f16_to_f32(const uint16_t *src, float *dst, long n);
void ek_f32_to_bf16(const float *src, uint16_t *dst, long n);  /* round to nearest even */
void ek_f32_to_f16(const float *src, uint16_t *dst, long n);   /* round to nearest even */
/** 1 when every x[i] is finite within f16's range (|x| <= 65504; NaN and ±inf fail), else 0. */
int ek_f16_fits(const float *x, long n);
/** 1 when every |x[i]| <= limit (NaN fails; limit FLT_MAX: every value finite), else 0. */
int ek_all_within(const float *x, long n, float limit);

/* ---- GGML block formats (GGUF tensors) → fp32 ---- */
/** GGML type ids as stored in GGUF tensor infos. */
enum { EK_GGML_F32 = 0, EK_GGML_F16 = 1, EK_GGML_Q4_0 = 2, EK_GGML_Q4_1 = 3, EK_GGML_Q5_0 = 6, EK_GGML_Q5_1 = 7,
       EK_GGML_Q8_0 = 8,
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

/* ---- training (train.c): backward pieces and the optimizer step; thread-pool parallel, bit-independent of threads ---- */
/** dx[i] = dy[i] * gelu_tanh'(x[i]) (the derivative of ek_gelu_tanh_f32). */
void ek_gelu_tanh_backward_f32(const float *x, const float *dy, float *dx, long n);
void ek_gelu_tanh_backward_f32_ref(const float *x, const float *dy, float *dx, long n);
/**
 * One AdamW update of n parameters (torch.optim.AdamW, single-tensor): p *= decay (1 − lr·wd, or 1);
 * m += (g − m)·b1c; v = v·b2 + c2·g·g; p += −step · m / (sqrt(v) / bc2 + eps), with b1c = 1 − β1, c2 = 1 − β2,
 * step = lr / (1 − β1ᵗ), bc2 = sqrt(1 − β2ᵗ). The SIMD path is bit-identical to the twin (no fused multiply-add).
 */
void ek_adamw_f32(float *p, const float *g, float *m, float *v, long n, float decay, float b1c, float b2, float c2,
                  float step, float bc2, float eps);
void ek_adamw_f32_ref(float *p, const float *g, float *m, float *v, long n, float decay, float b1c, float b2, float c2,
                      float step, float bc2, float eps);
/**
 * Cross-entropy rows of logits [rows, v]: for targets[r] >= 0, loss[r] = logsumexp(row) − row[target] and
 * grad[r] = scale · (softmax(row) − onehot(target)); rows with targets[r] < 0 (ignored) get 0 and a zero gradient.
 */
void ek_cross_entropy_f32(const float *logits, const long *targets, long rows, long v, float scale, float *grad, double *loss);
void ek_cross_entropy_f32_ref(const float *logits, const long *targets, long rows, long v, float scale, float *grad,
                              double *loss);

/* ---- threads ---- */
/** A task of a parallel loop: called once for each index in [0, count). */
typedef void (*ek_task_fn)(void *ctx, long index, long count);
/** Runs fn(ctx, i, ntasks) for every i on the kernel thread pool (the caller takes part); returns when all are done. */
/** Smallest decode GEMV, in weight bytes, that is split across threads (default 32 KiB; the environment variable
 *  EK_PARALLEL_MIN_BYTES overrides it, for tuning on other machines). */
long ek_parallel_min_bytes(void);
/** Tasks a decode GEMV over `bytes` weight bytes is split into: 1 below ek_parallel_min_bytes(), else about one per
 *  MiB, between P and 16 per thread (P: 1; EK_GEMV_TASKS_PER_THREAD or ek_set_gemv_tasks_per_thread overrides). */
long ek_gemv_tasks(long bytes);
/** Sets P of ek_gemv_tasks (1..16; -1: the default again, as the environment says, else 1). For A/B runs
 *  (`encore bench --step-ab tasks`); the results are the same bytes whatever P. */
void ek_set_gemv_tasks_per_thread(long p);
/** P of ek_gemv_tasks now. */
long ek_get_gemv_tasks_per_thread(void);
/** Runs fn(ctx, i, ntasks) for i in [0, ntasks), tasks claimed by the kernel threads and the caller; returns when all
 *  are done. Called from inside a task, it runs the tasks inline on that thread. */
void ek_parallel_for(long ntasks, ek_task_fn fn, void *ctx);
/** Inside a task: which thread runs it, in [0, ek_thread_slots()) (0 = the thread that called ek_parallel_for); a
 *  task can index per-thread scratch with it. */
int ek_thread_slot(void);
/** Threads that may run tasks of the next ek_parallel_for (call outside tasks). */
int ek_thread_slots(void);
/**
 * Where a step's serial time goes (`ENCORE_STEP_PROFILE=1`): with stats on, each outermost ek_parallel_for (a kernel
 * call through the pool, inline ones too) counts as a job; `inside_us` sums the jobs' wall time and `between_us` the
 * time from each job's end to the next one's start on the calling thread (the model code between kernels: norms,
 * RoPE, activation quantization, Swift), since stats were last turned on or off. Per thread: the thread that turns them on counts its
 * own calls (a call made inside a counted one, e.g. a kernel that runs another inline, is part of it).
 */
void ek_pool_stats_enable(int on);
void ek_pool_stats(long *jobs, double *inside_us, double *between_us);
/** Returns the C allocator's free pages to the system (glibc malloc_trim; a no-op elsewhere). */
void ek_release_free_memory(void);
/** Threads the kernels use (default: online cores). */
void ek_set_threads(int n);
int ek_get_threads(void);

/* ---- matrix-vector products for decode (weights streamed once, both cores) ---- */
/**
 * y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) for a few rows m (decode: m = batch, at most 8 per pass).
 * Each thread streams a contiguous block of weight rows once, reusing it for all m inputs. One input row runs on zmm
 * with AVX-512F (ek_gemv_path(EK_WF_F32) "avx512f"; capped by ek_set_isa_limit and ek_set_gemv_ymm), else on ymm ("avx2").
 */
void ek_gemv_f32(const float *w, const float *x, const float *bias, float *y, long m, long n, long k);
/** 1 when ek_gemv_f32 runs one input row on zmm now (AVX-512F, not forced to the reference, ISA cap at EK_ISA_AVX512,
 *  ek_get_gemv_ymm() 0). */
int ek_gemv_f32_zmm(void);
void ek_gemv_f32_ref(const float *w, const float *x, const float *bias, float *y, long m, long n, long k);

/** As ek_gemv_f32 with bf16 weights (half the bytes per decode step): ek_gemv_quant(EK_WF_BF16, …). With
 *  AVX512_BF16, x is rounded to bf16 (see ek_gemv_bf16_xbf16_ref); otherwise weights are widened to fp32. */
void ek_gemv_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k);
void ek_gemv_bf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k);

/* ---- quantized weights for decode (gemv_quant.c) ---- */
/** Weight formats. Rows are padded to ceil(k/32) blocks of 32 (GGUF rows already are):
 *  BF16 uint16 [n, k]; INT8 int8 [n, nb*32] + fp32 scale per row; Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 ggml blocks
 *  (34/18/20/22/24 B). */
enum { EK_WF_F32 = 0, EK_WF_BF16 = 1, EK_WF_INT8 = 2, EK_WF_Q8_0 = 3, EK_WF_Q4_0 = 4, EK_WF_Q4_1 = 5,
       /* the same blocks regrouped by 8 (ek_repack_x8): what the fast decode kernels read */
       EK_WF_Q8_0X8 = 6, EK_WF_Q4_0X8 = 7, EK_WF_Q4_1X8 = 8,
       /* GGUF K-quants, super-blocks of 256 (rows of k % 256 == 0), activations as ggml's Q8_K */
       EK_WF_Q4_K = 9, EK_WF_Q5_K = 10, EK_WF_Q6_K = 11,
       /* GGUF Q5_0 / Q5_1 blocks of 32 (22 / 24 B: f16 d, [f16 m,] u32 qh (bit i = 5th bit of value i), u8 qs[16]),
        * activations as for Q4_0 / Q4_1: what llama.cpp's Q4_K_M files hold where a row is not a multiple of 256 */
       EK_WF_Q5_0 = 12, EK_WF_Q5_1 = 13,
       /* Q5_0 / Q5_1 rows regrouped for the decode kernels (ek_repack_x8; layout in gemv_quant.c, x8_row5) */
       EK_WF_Q5_0X8 = 14, EK_WF_Q5_1X8 = 15 };
/** Instruction-set levels, for capping the dispatch in tests and benchmarks. On arm64, EK_ISA_AVX2 means plain NEON
 *  and EK_ISA_AVXVNNI and above also allow the SDOT int8 path ("neon-dotprod"); EK_ISA_SCALAR is plain C everywhere. */
enum { EK_ISA_SCALAR = 0, EK_ISA_AVX2 = 1, EK_ISA_AVXVNNI = 2, EK_ISA_AVX512 = 3 };
/** Highest level the quantized GEMVs, the one-row fp32 GEMV, the masked softmax rows and GELU (zmm at EK_ISA_AVX512)
 *  and the int8 / block prompt GEMMs may use (default and -1: EK_ISA_AVX512, i.e. the best the CPU has). */
void ek_set_isa_limit(int level);
int ek_get_isa_limit(void);
/** int8 GEMV kernel on x86: 1 = blocks in groups (the int8 rows' own kernels, or the x8 ones: see ek_set_int8_zmm;
 *  the default), 0 = the per-block kernel, -1 = the default again (EK_INT8_BLOCKWISE=1 in the environment selects the per-block one). */
void ek_set_int8_grouped(int on);
/** int8 rows' own kernels: 1 = on the AVX-512 VNNI path the zmm kernel (two blocks per vpdpbusd), on the AVX2 path
 *  the row kernel without horizontal sums (each block's lanes scaled by one FMA); the default. 0 = the x8 group kernel
 *  on both, -1 = the default again (EK_INT8_ZMM=0 in the environment selects the x8 one). Only the fp32 order of the
 *  partial sums differs. */
void ek_set_int8_zmm(int on);
/** Q4_0X8 / Q4_1X8 decode rows on the AVX2 path: 1 = the kernel with int16 pair sums and a loop of whole groups
 *  (rows_q4y; the default), 0 = the generic x8 group kernel, -1 = the default again (EK_Q4Y=0 in the environment
 *  selects the x8 one). The same floats either way. ek_get_q4y: the setting now. */
void ek_set_q4y(int on);
int ek_get_q4y(void);
/** 1 when a GEMV of `format` (EK_WF_Q4_0X8 / EK_WF_Q4_1X8) would run rows_q4y now (the AVX2 path under the ISA limit,
 *  and ek_get_q4y()), else 0. For tests. */
int ek_q4y_runs(int format);
/** Row ranges rows_q4y has run since the start (0 off x86): tests check that it, not the x8 kernel, ran. */
long ek_q4y_row_calls(void);
/** Rows the x86 grouped (x8 / int8) decode kernels walk side by side in each thread's range: 4 where
 *  ek_cpu_prefers_long_streams() (Intel CPUs, CPUs with AVX-512: more misses in flight pay), 2 elsewhere;
 *  EK_X8_STREAMS=2|4 in the environment or ek_set_x8_streams(2|4) overrides (-1: the default again). Results are the same bytes either way. */
void ek_set_x8_streams(int n);
int ek_get_x8_streams(void);
/** Whether the fp32, bf16 and int8 decode GEMVs run their ymm (AVX2) kernels on a CPU with AVX-512: 1 = ymm, 0 = the
 *  zmm kernels (gemv_dots_avx512, the avx512bf16 / avx512f bf16 rows, rows_int8z), -1 = the default again:
 *  ek_cpu_splits_zmm() (on session 31's Zen 4 the ymm kernels read cold weights 10–20% faster; the 4-bit x8 kernels,
 *  faster on zmm there too, keep it), or as EK_GEMV_YMM=0|1 in the environment says. The bf16 rows on ymm keep x in
 *  fp32 (as on AVX2 CPUs) instead of rounding it to bf16; fp32 and int8 agree up to rounding (partial sums added in
 *  another order). Read once per call on the caller's thread. */
void ek_set_gemv_ymm(int on);
int ek_get_gemv_ymm(void);
/** Whether the int8, block (Q8_0 / Q4 / Q5, x8 layouts) and bf16 decode GEMVs of gemv_quant.c issue software
 *  prefetches ahead of their weight rows (the K-quants' and ek_gemv_f32's are not switched):
 *  1 = yes, 0 = no, -1 = the default again: off where ek_cpu_splits_zmm() (session 31's Zen 4 streamed int8 rows
 *  faster without them), on elsewhere (the Intel Xeon of session 15 needed them), or as EK_GEMV_PREFETCH=0|1 in the
 *  environment says. The same floats either way. */
void ek_set_gemv_prefetch(int on);
int ek_get_gemv_prefetch(void);
/** Path a format runs on under the current limit: "avx512vnni", "avxvnni", "avx2", "avx512bf16", "avx512f", "avx512bw"
 *  (the K-quants), "neon", "neon-dotprod" (arm64: bf16 and int8 only so far), "scalar". */
const char *ek_gemv_path(int format);
/** Bytes of one stored row of k values in `format`. */
long ek_quant_row_bytes(int format, long k);
/**
 * y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias) for m ≤ 8 decode rows with W in `format` (wscale: INT8 row scales, else
 * NULL). Integer formats quantize x per block of 32 as ggml's q8_0 (Q4_1, Q5_1: q8_1) once per call; see gemv_quant.c
 * for the arithmetic. Returns 0, -1 for an unknown format, -2 if the activation buffer could not grow.
 */
/** The activation quantizer of the integer GEMVs (llama.cpp's Q8_0 rule: per 32 values d = amax/127, q = round-half-even
 *  (x/d)): x [m, k] → q [m, nb*32] (zero padded, nb = ceil(k/32)), d [m, nb], c [m, nb] (the Q4_0/Q4_1/Q5_0/Q5_1 offset term).
 *  AVX2 where present, else plain C; both give identical bytes (tested). */
void ek_quantize_activations(int format, const float *x, long m, long k, int8_t *q, float *d, float *c);
/** The same quantizer in plain C whatever the CPU (the twins' quantizer; thread-safe, no global switch). */
void ek_quantize_activations_ref(int format, const float *x, long m, long k, int8_t *q, float *d, float *c);
/** The K-quant GEMVs' activation quantizer (ggml's Q8_K: per 256 values iscale = −127/(value of largest |x|),
 *  q = round-half-even(iscale·x) capped at 127, d = 1/iscale, bsums = Σq per 16): x [m, k] (k % 256 == 0) →
 *  q [m, k], d [m, k/256], bsums [m, k/16]. AVX2 where present, else plain C; identical bytes (tested). */
void ek_quantize_activations_q8k(const float *x, long m, long k, int8_t *q, float *d, int16_t *bsums);
int ek_gemv_quant(int format, const void *w, const float *wscale, const float *x, const float *bias, float *y,
                  long m, long n, long k);
/** Most matrices one ek_gemv_quant_multi call takes. */
#define EK_GEMV_MULTI_MAX 4
/**
 * ek_gemv_quant for `count` ≤ EK_GEMV_MULTI_MAX matrices of one `format` and width k that read the same x [m, k]
 * (q/k/v, gate/up): y[j] [m, n[j]] = x · w[j]ᵀ (+ bias[j]). x is quantized once and one pool job covers every
 * matrix's rows; each y[j] equals what ek_gemv_quant gives for w[j] (same bytes). wscale/bias may be NULL or
 * hold NULL entries. Returns as ek_gemv_quant (-1 also for count outside 1…EK_GEMV_MULTI_MAX).
 */
int ek_gemv_quant_multi(int format, long count, const void *const *w, const float *const *wscale,
                        const float *const *bias, float *const *y, const long *n, const float *x, long m, long k);
/** Reference twin: ek_gemv_quant_ref for each matrix in turn. */
int ek_gemv_quant_multi_ref(int format, long count, const void *const *w, const float *const *wscale,
                            const float *const *bias, float *const *y, const long *n, const float *x, long m, long k);
/** Reference twin: the same activation quantization, then element by element from dequantized weights in double. */
int ek_gemv_quant_ref(int format, const void *w, const float *wscale, const float *x, const float *bias, float *y,
                      long m, long n, long k);
/** bf16 reference with x rounded to bf16 first (the avx512bf16 path's arithmetic). */
int ek_gemv_bf16_xbf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k);
/** src [rows, cols] fp32 → dst rows of ek_quant_row_bytes (llama.cpp's reference rounding for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1;
 *  INT8: per-row scale amax/127 into scales[rows], NULL scales rejected). Rows split over the kernel threads from 64 Ki
 *  values; INT8 rows on AVX2 where the CPU has it. Returns -1 for F32 or an unknown format. */
int ek_quantize_rows(int format, const float *src, void *dst, float *scales, long rows, long cols);
/** Reference twin: one thread, plain C loops; the same bytes as ek_quantize_rows. */
int ek_quantize_rows_ref(int format, const float *src, void *dst, float *scales, long rows, long cols);
/**
 * x8 layouts: each row's ggml blocks (Q8_0/Q4_0/Q4_1) regrouped by 8 (the last group of a row may be shorter),
 * same bytes per row. A group of g blocks holds the g f16 scales d, then (Q4_1) the g f16 minima m, then the g
 * payloads in order (int8[32] or the 16 nibble bytes as in ggml). So 8 scales convert with one vcvtph2ps and two
 * 4-bit blocks' nibbles load as one 32-byte vector. Arithmetic as the ggml format's.
 * ek_repack_x8(format = the ggml format or its x8 id) writes x8 rows, ek_unpack_x8 the ggml rows back; src may
 * equal dst. Return 0, -1 for another format, -2 out of memory. ek_x8_format: the x8 id of Q8_0/Q4_0/Q4_1/Q5_0/Q5_1,
 * else -1. Q5_0/Q5_1 regroup differently (full groups of 8: the 8 scales, the 8 minima, each quad's 5th bits as two
 * 64-bit masks, the 8 nibble payloads; the last nb % 8 blocks stay ggml blocks): see x8_row5 in gemv_quant.c.
 */
/** Whether regrouping ggml `format` into its x8 layout speeds this CPU's decode GEMVs under the current ISA limit:
 *  Q8_0/Q4_0/Q4_1 always (every x86 SIMD path reads x8); Q5_0/Q5_1 where the AVX-512 VNNI kernel runs (the AVX2 paths
 *  would unpack each x8 row per call). 0 for formats without an x8 layout. */
int ek_x8_pays(int format);
/** Block b of one x8 row of nb blocks (`format` an x8 id) copied out as the ggml block (out: its block bytes). */
void ek_x8_block(int format, const void *row, long nb, long b, void *out);
int ek_repack_x8(int format, const void *src, void *dst, long rows, long cols);
int ek_unpack_x8(int format, const void *src, void *dst, long rows, long cols);
int ek_x8_format(int format);
/** The inverse: dst [rows, cols] fp32. */
int ek_dequantize_rows(int format, const void *src, const float *scales, float *dst, long rows, long cols);

/* ---- prompt-pass GEMM over int8 weights (gemm_int8.c) ---- */
/** Epilogues of ek_gemm_int8: y = product (+ bias); y += product (+ bias); y = gelu_tanh(product + bias);
 *  y = max(product + bias, 0). */
enum { EK_EPI_STORE = 0, EK_EPI_ACCUMULATE = 1, EK_EPI_GELU = 2, EK_EPI_RELU = 3 };
/**
 * y[m, n] = x[m, k] · Wᵀ (+ bias[n]) for prompt passes, W the EK_WF_INT8 rows [n, ceil(k/32)*32] with their fp32
 * row scales, no fp32 copy needed. x is quantized per row to 7 bits with a zero point (d = (hi − lo)/127 over the
 * row's range holding 0, z = round(−lo/d), u = round-half-even(x/d) + z in [0, 127], as PyTorch's x86 int8 GEMM with
 * reduce_range), the dot products are exact int32 sums, y = d_x·wscale·(Σ u·q − z·Σ q) (+ bias), then the epilogue.
 * AVX2: vpmaddubsw + vpmaddwd on a 4×16 register tile of packed quads (never saturates: u ≤ 127), parallel over
 * 16-column panels; arm64: SDOT or SMULL tiles; else plain C.
 * Returns 0, -1 for an unknown epilogue, -2 out of memory. Example: ek_gemm_int8(w, s, x, NULL, y, 512, 1024, 1024, EK_EPI_STORE).
 */
int ek_gemm_int8(const int8_t *w, const float *wscale, const float *x, const float *bias, float *y,
                 long m, long n, long k, int epilogue);
/**
 * ek_gemm_int8 for `count` matrices of width k that read the same x [m, k] (q/k/v, gate/up, every decoder layer's
 * cross-attention K/V): x is quantized once and one pool job covers every matrix's panels, so small matrices share
 * the threads; y[j] [m, n[j]] equals what ek_gemm_int8 gives for w[j] (same bytes). bias may be NULL or hold NULL
 * entries. Returns as ek_gemm_int8 (-1 also for count < 1).
 */
int ek_gemm_int8_multi(long count, const int8_t *const *w, const float *const *wscale, const float *const *bias,
                       float *const *y, const long *n, const float *x, long m, long k, int epilogue);
/** Twin: ek_gemm_int8_ref for each matrix in turn. */
int ek_gemm_int8_multi_ref(long count, const int8_t *const *w, const float *const *wscale, const float *const *bias,
                           float *const *y, const long *n, const float *x, long m, long k, int epilogue);
/** Path ek_gemm_int8 and ek_gemm_q8_0 run: "avx512vnni" (EVEX vpdpbusd on ymm), "avxvnni" (VEX vpdpbusd), "avx2"
 *  (vpmaddubsw + vpmaddwd), "neon-dotprod" (SDOT), "neon" (SMULL + SADALP) or "scalar". The ek_set_isa_limit cap
 *  applies as for the GEMVs (arm64: EK_ISA_AVX2 = plain NEON, EK_ISA_AVXVNNI and up = SDOT too). */
const char *ek_gemm_int8_path(void);
/** Whether the int8 and Q8_0/Q4_x prompt GEMMs write their outputs with non-temporal stores (x86 tile paths; stored and
 *  ReLU'd outputs only; each 32-byte-aligned vector of 8 outputs, the rest as usual): -1 (default) as the environment's
 *  EK_GEMM_NT=0|1 says (read at the first GEMM), else on Intel CPUs when a call's outputs are 4 MiB or more; 0 never;
 *  1 at any size (tests). The floats are the same either way. Output rows 64-byte aligned stream whole cache lines. */
void ek_set_gemm_stream_outputs(int mode);
int ek_get_gemm_stream_outputs(void);
/** Twin: the same quantization, int64 dot products element by element, the plain GELU. */
int ek_gemm_int8_ref(const int8_t *w, const float *wscale, const float *x, const float *bias, float *y,
                     long m, long n, long k, int epilogue);
/**
 * The prompt GEMM with q8_0 activations over Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 blocks (`format` EK_WF_Q8_0 /
 * EK_WF_Q4_0 / EK_WF_Q4_1 / EK_WF_Q5_0 / EK_WF_Q5_1: ggml rows, or their x8 ids), and over Q4_K / Q5_K rows
 * (k % 256 == 0; each sub-block of 32 as a Q4_1 block with scale d·sc_j and minimum −dmin·m_j, q8_1 activations per
 * 32 values where llama.cpp's use Q8_K per 256) and Q6_K rows (k % 256 == 0; each sub-block of 16 a block of its own
 * with scale d·sc_j, values −32…31, against the q8_0 activations of its block of 32), no fp32 copy: GGUF weights as
 * stored, with llama.cpp's arithmetic (its q8_0, q4_0, q4_1, q5_0 and q5_1 matmuls). x is quantized per block of 32 as
 * ggml's q8_0 (Q4_1, Q5_1: q8_1, with the block sums s = d·Σq; the GEMVs' quantizer, ek_quantize_activations), each
 * block's int32 sum Σ q_x·q_w is exact (Q4_0: q_w = nibble − 8; Q4_1: the nibble; Q5_0: the 5-bit value − 16; Q5_1:
 * the 5-bit value), and y = Σ_b [(d_x·d_w)_b · sum_b (+ s_b·m_b for Q4_1 / Q5_1)] (+ bias) in fp32 (one
 * FMA per term, b in order), then the epilogue (llama.cpp: the same products and scales; its fp32 sums run in
 * another order). The int8 path's 4×16 AVX2 tiles with llama.cpp's sign trick, vpmaddubsw(|q_w|, sign(q_x, q_w)),
 * exact for every weight byte, −128 included (arm64: SDOT / SMULL tiles per block; other CPUs: plain C); every path
 * gives the same floats as ek_gemm_q8_0_ref. Returns 0, -1 for another format or an unknown epilogue,
 * -2 out of memory. Example: ek_gemm_q8_0(EK_WF_Q8_0, blocks, x, NULL, y, 512, 1024, 1024, EK_EPI_STORE).
 */
int ek_gemm_q8_0(int format, const void *w, const float *x, const float *bias, float *y, long m, long n, long k,
                 int epilogue);
/** ek_gemm_q8_0 for `count` matrices that read the same x (as ek_gemm_int8_multi); same floats per matrix. */
int ek_gemm_q8_0_multi(int format, long count, const void *const *w, const float *const *bias, float *const *y,
                       const long *n, const float *x, long m, long k, int epilogue);
/** Twins: the same (plain) quantizer, per-block int32 sums and fp32 FMAs in the same order, element by element. */
int ek_gemm_q8_0_ref(int format, const void *w, const float *x, const float *bias, float *y, long m, long n, long k,
                     int epilogue);
int ek_gemm_q8_0_multi_ref(int format, long count, const void *const *w, const float *const *bias, float *const *y,
                           const long *n, const float *x, long m, long k, int epilogue);

/**
 * Prompt-pass GEMM over bf16 weight rows w [n, k] (a bf16 decode copy) with AVX512-BF16: y [m, n] = bf16(x) · wᵀ
 * (+ bias) with ek_gemm_int8's epilogues. x is rounded to bf16 (nearest even) as the avx512bf16 GEMV does; products
 * are exact in fp32, sums fp32. Without AVX512-BF16 it runs plain C, far slower than widening w for BLAS: call it
 * where ek_gemm_bf16_path() is "avx512bf16". Returns 0, -1 for a bad epilogue, -2 out of memory.
 */
int ek_gemm_bf16(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k, int epilogue);
/**
 * ek_gemm_bf16 over `count` matrices that read the same x (w[j] [n[j], k] → y[j] [m, n[j]], bias[j] or NULL; `bias`
 * itself may be NULL): x rounded to bf16 once and every matrix's panels in one pool job, split as one matrix of all
 * the panels would be. Each y[j] has the bytes of its own ek_gemm_bf16 call. Returns 0, -1 for a bad epilogue or
 * count < 1, -2 out of memory.
 */
int ek_gemm_bf16_multi(long count, const uint16_t *const *w, const float *const *bias, float *const *y, const long *n,
                       const float *x, long m, long k, int epilogue);
/**
 * ek_gemm_bf16 with its result rounded to bf16 rows yb [m, ldyb] (ldyb >= n; columns n … ldyb − 1 set to 0) instead
 * of fp32 rows: the same bytes as ek_f32_to_bf16 of ek_gemm_bf16's result, each row rounded while it is in cache. The
 * input of a following ek_gemm_bf16_xb (an MLP's second matrix, which rounds its input to bf16 anyway) with no fp32
 * pass between them. Epilogues STORE, GELU, RELU. Returns 0, -1 for a bad epilogue or ldyb < n, -2 out of memory.
 */
int ek_gemm_bf16_to_bf16(const uint16_t *w, const float *x, const float *bias, uint16_t *yb, long ldyb, long m, long n,
                         long k, int epilogue);
/**
 * ek_gemm_bf16 over activations already rounded to bf16: xb [m, (k + 15) / 16 * 16], zero past k in every row (as
 * ek_gemm_bf16_to_bf16 writes them with ldyb = that width). The bytes of ek_gemm_bf16 on x with those values.
 */
int ek_gemm_bf16_xb(const uint16_t *w, const uint16_t *xb, const float *bias, float *y, long m, long n, long k,
                    int epilogue);
/** Twin: x rounded to bf16, sums in double, the plain GELU. */
int ek_gemm_bf16_ref(const uint16_t *w, const float *x, const float *bias, float *y, long m, long n, long k, int epilogue);
/** "avx512bf16" (vdpbf16ps tiles; capped by ek_set_isa_limit below EK_ISA_AVX512) or "scalar". */
const char *ek_gemm_bf16_path(void);

/**
 * Long-query attention with bf16 products, for prompt passes over bf16 weights or int8 rows on CPUs with AVX512-BF16 (what
 * PyTorch's bf16 attention computes): per head and block of queries, scores = bf16(q)·bf16(k)ᵀ in fp32 sums, the
 * fp32 relative bias and masked softmax of the fp32 path (ek_add_relbias_f32, ek_softmax_masked_f32), then
 * out = bf16(p)·bf16(v). Keys and values are packed once per call for every KV head:
 *   ek_attn_bf16_pack(k, v, kv_stride, nk, kv_heads, head_dim, pk, pv): k, v [nk, kv_heads*head_dim] rows kv_stride
 *   floats apart → pk, pv of ek_attn_bf16_packed_len(nk, head_dim) uint16 per KV head each (head g at g * len).
 * ek_attention_block_bf16(q, q_stride, bq, pk_g, pv_g, nk, visible, head_dim, bias_row, scale_div, key_keep,
 * causal_offset, out, out_stride): bq query rows of one head against the first `visible` keys of KV head g's packed
 * rows; bias_row as ek_add_relbias_f32's (or NULL), scale_div / key_keep / causal_offset as ek_softmax_masked_f32's
 * for the block's first row. Meant for pool tasks, where it runs on the calling thread (outside one, the softmax of
 * a large block spreads over the pool). Returns 0, -1 for bad sizes, -2 out of memory. Without AVX512-BF16
 * (ek_attn_bf16_available() == 0) it runs the twin, plain C: callers then keep the fp32 path.
 */
long ek_attn_bf16_packed_len(long nk, long head_dim);
int ek_attn_bf16_pack(const float *k, const float *v, long kv_stride, long nk, long kv_heads, long head_dim,
                      uint16_t *pk, uint16_t *pv);
int ek_attention_block_bf16(const float *q, long q_stride, long bq, const uint16_t *pk, const uint16_t *pv, long nk,
                            long visible, long head_dim, const float *bias_row, float scale_div,
                            const uint8_t *key_keep, long causal_offset, float *out, long out_stride);
/** Twin: the same bf16 roundings, sums in double. */
int ek_attention_block_bf16_ref(const float *q, long q_stride, long bq, const uint16_t *pk, const uint16_t *pv, long nk,
                                long visible, long head_dim, const float *bias_row, float scale_div,
                                const uint8_t *key_keep, long causal_offset, float *out, long out_stride);
/** 1 where ek_attention_block_bf16 runs vdpbf16ps tiles (as ek_gemm_bf16_path() == "avx512bf16"), else 0. */
int ek_attn_bf16_available(void);

/** Sum of n floats on the kernel threads, each reading its own block as four streams (its quarters side by side, as
 *  the decode GEMVs read their weights): measures the memory read ceiling. */
float ek_sum_f32(const float *x, long n);
/** Instruction ceilings on the kernel threads, registers only (peaks.c): fp32 FMA chains (zmm with AVX-512F, else
 *  AVX2+FMA, NEON or plain C) in GFLOP/s; the int8 GEMM's instructions on this CPU (ek_gemm_int8_path: the AVX2 mix
 *  of vpmaddubsw, vpmaddwd by ones and vpaddd, vpdpbusd on ymm with AVX-VNNI, on zmm with AVX512-VNNI) in GOP/s (2
 *  per multiply-add; 0 for other paths); and vdpbf16ps on zmm in GFLOP/s where ek_gemm_bf16_path() is "avx512bf16"
 *  (else 0). Best of 12 calls of about 5–10 ms. */
double ek_peak_fma_gflops(void);
double ek_peak_int8_gops(void);
double ek_peak_bf16_gflops(void);

/* ---- sampling helpers ---- */
/** Index of the largest value (first on ties). */
long ek_argmax_f32(const float *x, long n);

#ifdef __cplusplus
}
#endif
#endif
