/* Instruction ceilings of this CPU, measured on the kernel threads with registers only (no memory traffic): the
 * limits `encore bench` sets prompt passes against, beside the BLAS GEMM rate.
 *
 *   fp32: 12 independent FMA chains per thread (16 lanes on zmm with AVX-512F, 8 with AVX2+FMA, 4 with NEON, 1 in
 *         plain C), 2 FLOPs each.
 *   int8: on "avx2" (ek_gemm_int8_path) the int8 tile's mix (vpmaddubsw, vpmaddwd by ones, vpaddd: 32 multiply-adds
 *         per group), 4 independent chains per thread; on "avx512vnni" 12 chains of vpdpbusd on zmm (64
 *         multiply-adds each: the machine's ceiling, twice the ymm tile's on CPUs with two 512-bit ports), on
 *         "avxvnni" on ymm (32); 2 ops per multiply-add. 0 elsewhere.
 *   bf16: 12 chains of vdpbf16ps on zmm (32 multiply-adds each, 2 FLOPs per) where the CPU has AVX512-BF16, else 0.
 * These are the machine's ceilings, which a kernel on narrower registers cannot reach: on AVX-512 CPUs with two
 * 512-bit FMA ports (Intel Xeon) zmm doubles the ymm rate, on Zen 4 (512-bit instructions in two halves) it does not.
 * The VNNI and BF16 chains are intrinsics (their encodings chosen by the compiler for each function's target), so
 * at -O0 they spill and read low; the AVX2 and AVX-512F ones are inline assembly. kernel_parity's emulated build
 * (AVX-512 by SIMDe on an AVX2 CPU) runs the VNNI / BF16 chains through SIMDe, only to check that they run, and
 * keeps the fp32 chains on ymm (the zmm ones are assembly).
 *
 * Each thread runs the same number of iterations; the rate is the total over the wall time of the slowest, best of
 * 12 calls. Measured on 2 threads (vCPUs): AMD EPYC VM with AVX2 only, fp32 164–187 GFLOP/s (≈ 96 on one thread);
 * Intel Xeon (family 6 model 207, session 11) with AVX-512: fp32 on ymm 171–188, on zmm 319–346; vpdpbusd on zmm
 * 1,376–1,454 GOP/s (ymm 705–757); vdpbf16ps on zmm 156–171 GFLOP/s (ymm 91–94), about half the fp32 FMA rate there. */
#include "EncoreKernels.h"
#include <time.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>
#define PK_X86 1
#define PK_AVX2 __attribute__((target("avx2,fma")))
#if defined(EK_EMULATED_FEATURES)   /* kernel_parity's emulated build: SIMDe stands in for the instructions */
#define PK_AVX512VNNI PK_AVX2
#define PK_AVXVNNI PK_AVX2
#define PK_AVX512BF16 PK_AVX2
#else
#define PK_AVX512VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#define PK_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#define PK_AVX512BF16 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")))
#endif
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

static double pk_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct { long iters; float (*loop)(long iters); float out[64]; } pk_ctx;   /* loop: loop_task's */

#ifdef PK_X86
/* Whole loops in inline asm: the same instructions at any optimisation level (SwiftPM's debug builds compile C at
 * -O0, where intrinsics would spill every chain to the stack), and nothing for the compiler to merge or hoist. */
#define PK_FMA12 "vfmadd213ps %%ymm13,%%ymm12,%%ymm0\n vfmadd213ps %%ymm13,%%ymm12,%%ymm1\n" \
                 "vfmadd213ps %%ymm13,%%ymm12,%%ymm2\n vfmadd213ps %%ymm13,%%ymm12,%%ymm3\n" \
                 "vfmadd213ps %%ymm13,%%ymm12,%%ymm4\n vfmadd213ps %%ymm13,%%ymm12,%%ymm5\n" \
                 "vfmadd213ps %%ymm13,%%ymm12,%%ymm6\n vfmadd213ps %%ymm13,%%ymm12,%%ymm7\n" \
                 "vfmadd213ps %%ymm13,%%ymm12,%%ymm8\n vfmadd213ps %%ymm13,%%ymm12,%%ymm9\n" \
                 "vfmadd213ps %%ymm13,%%ymm12,%%ymm10\n vfmadd213ps %%ymm13,%%ymm12,%%ymm11\n"
PK_AVX2 static float fma_chains_avx2(long iters, float seed) {
    /* a = a·b + c with b < 1 converges to c / (1 − b): the values stay normal (no denormal slow path) */
    float one = seed, b = 0.999999f, c = 1e-7f, out;
    __asm__ volatile(
        "vbroadcastss %[one], %%ymm0\n vmovaps %%ymm0, %%ymm1\n vmovaps %%ymm0, %%ymm2\n vmovaps %%ymm0, %%ymm3\n"
        "vmovaps %%ymm0, %%ymm4\n vmovaps %%ymm0, %%ymm5\n vmovaps %%ymm0, %%ymm6\n vmovaps %%ymm0, %%ymm7\n"
        "vmovaps %%ymm0, %%ymm8\n vmovaps %%ymm0, %%ymm9\n vmovaps %%ymm0, %%ymm10\n vmovaps %%ymm0, %%ymm11\n"
        "vbroadcastss %[b], %%ymm12\n vbroadcastss %[c], %%ymm13\n"
        "1:\n" PK_FMA12
        "dec %[n]\n jnz 1b\n"
        "vaddps %%ymm1, %%ymm0, %%ymm0\n vmovss %%xmm0, %[out]\n vzeroupper\n"
        : [n] "+r"(iters), [out] "=m"(out)
        : [one] "m"(one), [b] "m"(b), [c] "m"(c)
        : "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm8", "ymm9", "ymm10", "ymm11", "ymm12",
          "ymm13", "cc");
    return out;
}

#if !defined(EK_EMULATED_FEATURES)
#define PK_FMA12Z "vfmadd213ps %%zmm13,%%zmm12,%%zmm0\n vfmadd213ps %%zmm13,%%zmm12,%%zmm1\n" \
                  "vfmadd213ps %%zmm13,%%zmm12,%%zmm2\n vfmadd213ps %%zmm13,%%zmm12,%%zmm3\n" \
                  "vfmadd213ps %%zmm13,%%zmm12,%%zmm4\n vfmadd213ps %%zmm13,%%zmm12,%%zmm5\n" \
                  "vfmadd213ps %%zmm13,%%zmm12,%%zmm6\n vfmadd213ps %%zmm13,%%zmm12,%%zmm7\n" \
                  "vfmadd213ps %%zmm13,%%zmm12,%%zmm8\n vfmadd213ps %%zmm13,%%zmm12,%%zmm9\n" \
                  "vfmadd213ps %%zmm13,%%zmm12,%%zmm10\n vfmadd213ps %%zmm13,%%zmm12,%%zmm11\n"
/* fma_chains_avx2 on zmm (AVX-512F) */
__attribute__((target("avx2,fma,avx512f"))) static float fma_chains_avx512(long iters, float seed) {
    float one = seed, b = 0.999999f, c = 1e-7f, out;
    __asm__ volatile(
        "vbroadcastss %[one], %%zmm0\n vmovaps %%zmm0, %%zmm1\n vmovaps %%zmm0, %%zmm2\n vmovaps %%zmm0, %%zmm3\n"
        "vmovaps %%zmm0, %%zmm4\n vmovaps %%zmm0, %%zmm5\n vmovaps %%zmm0, %%zmm6\n vmovaps %%zmm0, %%zmm7\n"
        "vmovaps %%zmm0, %%zmm8\n vmovaps %%zmm0, %%zmm9\n vmovaps %%zmm0, %%zmm10\n vmovaps %%zmm0, %%zmm11\n"
        "vbroadcastss %[b], %%zmm12\n vbroadcastss %[c], %%zmm13\n"
        "1:\n" PK_FMA12Z
        "dec %[n]\n jnz 1b\n"
        "vaddps %%zmm1, %%zmm0, %%zmm0\n vmovss %%xmm0, %[out]\n vzeroupper\n"
        : [n] "+r"(iters), [out] "=m"(out)
        : [one] "m"(one), [b] "m"(b), [c] "m"(c)
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
          "xmm13", "cc");
    return out;
}
#endif

/* 4 chains of vpmaddubsw (u8 × s8 pairs into int16), vpmaddwd by ones (into int32), vpaddd: ek_gemm_int8's tile */
PK_AVX2 static float int8_mix_avx2(long iters) {
    int32_t ones = 0x00010001, bytes = 0x03020101, out;
    __asm__ volatile(
        "vpbroadcastd %[ones], %%ymm13\n vpbroadcastd %[bytes], %%ymm14\n vmovdqa %%ymm14, %%ymm15\n"
        "vpxor %%ymm4, %%ymm4, %%ymm4\n vpxor %%ymm5, %%ymm5, %%ymm5\n vpxor %%ymm6, %%ymm6, %%ymm6\n"
        "vpxor %%ymm7, %%ymm7, %%ymm7\n"
        "1:\n"
        "vpmaddubsw %%ymm14,%%ymm15,%%ymm0\n vpmaddwd %%ymm0,%%ymm13,%%ymm0\n vpaddd %%ymm0,%%ymm4,%%ymm4\n"
        "vpmaddubsw %%ymm14,%%ymm15,%%ymm1\n vpmaddwd %%ymm1,%%ymm13,%%ymm1\n vpaddd %%ymm1,%%ymm5,%%ymm5\n"
        "vpmaddubsw %%ymm14,%%ymm15,%%ymm2\n vpmaddwd %%ymm2,%%ymm13,%%ymm2\n vpaddd %%ymm2,%%ymm6,%%ymm6\n"
        "vpmaddubsw %%ymm14,%%ymm15,%%ymm3\n vpmaddwd %%ymm3,%%ymm13,%%ymm3\n vpaddd %%ymm3,%%ymm7,%%ymm7\n"
        "dec %[n]\n jnz 1b\n"
        "vpaddd %%ymm5, %%ymm4, %%ymm4\n vmovd %%xmm4, %[out]\n vzeroupper\n"
        : [n] "+r"(iters), [out] "=m"(out)
        : [ones] "m"(ones), [bytes] "m"(bytes)
        : "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm13", "ymm14", "ymm15", "cc");
    return (float)out;
}

/* Iterations per call of the VNNI / BF16 chain loops: ~6 cycles each, 5–10 ms at ~3 GHz (the emulated build only
 * checks that they run: fewer) */
#if defined(EK_EMULATED_FEATURES)
#define PK_CHAIN_ITERS 20000
#else
#define PK_CHAIN_ITERS 4000000
#endif

/* 12 chains of DOT (vpdpbusd) on vectors of type T; the operands come through volatile loads so nothing folds.
 * LOW32 returns the first int32 lane (the result only keeps the chains alive). */
#define PK_VNNI_CHAINS(NAME, ATTR, T, SET1, DOT, ADD, LOW32) \
ATTR static float NAME(long iters) { \
    volatile int32_t av = 0x01010101, bv = 0x01ff01ff;   /* u8 1 × s8 (1, −1): each step adds 0 */ \
    const T a = SET1(av), b = SET1(bv); \
    T c[12]; \
    for (int j = 0; j < 12; j++) c[j] = SET1(j); \
    for (long i = 0; i < iters; i++) \
        for (int j = 0; j < 12; j++) c[j] = DOT(c[j], a, b); \
    T s = c[0]; \
    for (int j = 1; j < 12; j++) s = ADD(s, c[j]); \
    return (float)LOW32(s); \
}
#define PK_LOW32_256(s) _mm256_extract_epi32(s, 0)
#define PK_LOW32_512(s) _mm_cvtsi128_si32(_mm512_castsi512_si128(s))
/* AVX512-VNNI on zmm (64 multiply-adds per instruction), AVX-VNNI's VEX form on ymm (32) */
PK_VNNI_CHAINS(vnni_chains_zmm, PK_AVX512VNNI, __m512i, _mm512_set1_epi32, _mm512_dpbusd_epi32, _mm512_add_epi32,
               PK_LOW32_512)
PK_VNNI_CHAINS(vnni_chains_avx, PK_AVXVNNI, __m256i, _mm256_set1_epi32, _mm256_dpbusd_avx_epi32, _mm256_add_epi32,
               PK_LOW32_256)

/* 12 chains of vdpbf16ps on zmm (32 multiply-adds each): each step adds 1.0 × 2⁻²⁰ twice to each lane (the sums
 * stay normal) */
PK_AVX512BF16 static float bf16_chains(long iters) {
    volatile int32_t av = 0x3f803f80, bv = 0x35803580;
    const __m512i ai = _mm512_set1_epi32(av), bi = _mm512_set1_epi32(bv);
    __m512bh a, b;
    memcpy(&a, &ai, sizeof a);
    memcpy(&b, &bi, sizeof b);
    __m512 c[12];
    for (int j = 0; j < 12; j++) c[j] = _mm512_set1_ps((float)(j + 1));
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = _mm512_dpbf16_ps(c[j], a, b);
    __m512 s = c[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_ps(s, c[j]);
    return _mm_cvtss_f32(_mm512_castps512_ps128(s));
}
#endif

#if defined(__aarch64__)
static float fma_chains_neon(long iters, float seed) {
    float32x4_t b = vdupq_n_f32(0.999999f), c = vdupq_n_f32(seed * 1e-7f);
    float32x4_t a[12];
    for (int j = 0; j < 12; j++) a[j] = vdupq_n_f32(seed + (float)j);   /* distinct: not merged by the compiler */
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) a[j] = vfmaq_f32(c, a[j], b);
    float32x4_t s = a[0];
    for (int j = 1; j < 12; j++) s = vaddq_f32(s, a[j]);
    return vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 3);
}
#endif

static float fma_chains_plain(long iters, float seed) {
    float a[12];
    for (int j = 0; j < 12; j++) a[j] = seed + (float)j;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) a[j] = a[j] * 0.999999f + 1e-7f;
    float s = 0;
    for (int j = 0; j < 12; j++) s += a[j];
    return s;
}

/* lanes per chain of the fp32 path this CPU runs */
static int fma_lanes(void) {
#ifdef PK_X86
#if !defined(EK_EMULATED_FEATURES)
    if (!ek_get_force_reference() && (ek_cpu_features() & EK_CPU_AVX512F) && (ek_cpu_features() & EK_CPU_AVX2_FMA)) return 16;
#endif
    if (!ek_get_force_reference() && (ek_cpu_features() & EK_CPU_AVX2_FMA)) return 8;
#elif defined(__aarch64__)
    if (!ek_get_force_reference() && (ek_cpu_features() & EK_CPU_NEON)) return 4;
#endif
    return 1;
}

static void fma_task(void *ctx, long index, long count) {
    (void)count;
    pk_ctx *c = ctx;
    float seed = 1.0f + (float)index;
#ifdef PK_X86
#if !defined(EK_EMULATED_FEATURES)
    if (fma_lanes() == 16) { c->out[index % 64] = fma_chains_avx512(c->iters, seed); return; }
#endif
    if (fma_lanes() == 8) { c->out[index % 64] = fma_chains_avx2(c->iters, seed); return; }
#elif defined(__aarch64__)
    if (fma_lanes() == 4) { c->out[index % 64] = fma_chains_neon(c->iters, seed); return; }
#endif
    c->out[index % 64] = fma_chains_plain(c->iters, seed);
}

#ifdef PK_X86
/* One thread's run of the context's loop (the int8 and bf16 chains) */
static void loop_task(void *ctx, long index, long count) {
    (void)count;
    pk_ctx *c = ctx;
    c->out[index % 64] = c->loop(c->iters);
}
#endif

/* best of 12 calls (a busy sibling vCPU halves single samples on a shared host): each thread runs `iters` iterations
 * of `ops_per_iter` operations */
static double rate(ek_task_fn task, float (*loop)(long), long iters, double ops_per_iter) {
    long threads = ek_get_threads();
    pk_ctx c = { .iters = iters, .loop = loop };
    double best = 1e30;
    task(&c, 0, 1);   /* warm-up (clock ramp) */
    for (int r = 0; r < 12; r++) {
        double t = pk_now();
        ek_parallel_for(threads, task, &c);
        t = pk_now() - t;
        if (t < best) best = t;
    }
    return (double)threads * (double)iters * ops_per_iter / best / 1e9;
}

double ek_peak_fma_gflops(void) {
    int lanes = fma_lanes();
    return rate(fma_task, NULL, lanes == 1 ? 2000000 : 4000000, 12.0 * lanes * 2.0);   /* ≥ 1 iteration: asm loops */
}

double ek_peak_int8_gops(void) {
#ifdef PK_X86
    const char *path = ek_gemm_int8_path();
    if (strcmp(path, "avx512vnni") == 0) return rate(loop_task, vnni_chains_zmm, PK_CHAIN_ITERS, 12.0 * 64.0 * 2.0);
    if (strcmp(path, "avxvnni") == 0) return rate(loop_task, vnni_chains_avx, PK_CHAIN_ITERS, 12.0 * 32.0 * 2.0);
    if (strcmp(path, "avx2") == 0) return rate(loop_task, int8_mix_avx2, 4000000, 4.0 * 32.0 * 2.0);
#endif
    return 0.0;
}

double ek_peak_bf16_gflops(void) {
#ifdef PK_X86
    if (strcmp(ek_gemm_bf16_path(), "avx512bf16") == 0) return rate(loop_task, bf16_chains, PK_CHAIN_ITERS, 12.0 * 32.0 * 2.0);
#endif
    return 0.0;
}
