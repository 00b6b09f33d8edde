/* kernel_parity: every SIMD path of EncoreKernels against its plain reference, in plain C, so it runs where
 * Swift does not (arm64 under qemu-aarch64: scripts/test-kernels.sh) as well as natively (x86-64: the AVX2 paths),
 * and with the AVX-VNNI / AVX-512 paths emulated by SIMDe (-I Tests/NativeKernels/emulated -DEK_EMULATED_FEATURES=…,
 * see scripts/test-kernels.sh) on CPUs without them.
 *
 *   cc -O2 -std=gnu11 -I Sources/EncoreKernels/include Sources/EncoreKernels/ *.c Tests/NativeKernels/kernel_parity.c \
 *      -lm -lpthread -o kernel_parity && ./kernel_parity            (scripts/test-kernels.sh --native does this)
 *
 * Each kernel runs twice, on the dispatched path (neon / avx2) and with ek_set_force_reference(1) (plain C), on
 * random inputs with ragged lengths (1 … 4099, not multiples of the vector width) and shapes big enough to take the
 * thread pool. The quantized GEMVs run at every ek_set_isa_limit level (arm64: scalar, neon, neon-dotprod; x86-64:
 * scalar, avx2, avxvnni, avx512vnni / avx512f / avx512bf16 as the CPU has them), the prompt GEMMs at each level whose
 * path differs.
 * Tolerances (|fast − reference| ≤ tol · scale, per element):
 *   dot, f32/bf16 GEMV, sum, attention     1e-5 · Σ|terms| (attention: max|v|; outputs are convex sums of v)
 *   axpy                                   1e-6 · (|y| + |αx|)                   (one fused rounding)
 *   exp                                    1e-6 · |exp(x)|                        (Cephes polynomial, ~2 ulp)
 *   gelu-tanh, bias-gelu                   1e-5 · |gelu(x)| + 1e-6 · |x|          (tanh from exp near ±1)
 *   rmsnorm                                1e-5 · |out|
 *   masked softmax                         1e-6 absolute (probabilities)
 *   int8/Q8_0/Q4_x GEMV vs ek_gemv_quant_ref 1e-5 · (Σ|w x| + |bias|): same quantized activations, exact int32
 *   (also as three matrices in one ek_gemv_quant_multi call; f16-K/V attention against its twin as attention)
 *                                          block sums, only the fp32 order of the block sums differs
 *   activation quantizer                   identical bytes, scales and corrections
 *   int8 prompt GEMM vs ek_gemm_int8_ref  1e-5 · (|twin| + 1): exact int32 sums, fp32 epilogue rounding only
 *   (also as two matrices in one ek_gemm_int8_multi call)
 *   Q8_0/Q4_0/Q4_1 prompt GEMM vs ek_gemm_q8_0_ref  identical floats (GELU: 1e-5 · (|twin| + 1)), ggml and x8 layouts, also
 *                                          as two matrices in one call; and against the fp32 product of the
 *                                          dequantized blocks within the activation rounding, Σ_b d_x,b/2 · Σ_b|w| + 1e-5
 * The dispatch must report "neon" on arm64 ("neon-dotprod" for int8 when the CPU has SDOT) and on x86-64 the path
 * the CPU's features select (avx2 with AVX2+FMA+F16C; avxvnni / avx512vnni / avx512f / avx512bf16 above), and
 * "scalar" when forced. Exit status: 0 when every check passes, 1 otherwise. */
#include "EncoreKernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_checks, g_failures;
static const char *g_mode = "";
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float urand(void) {   /* splitmix64 → [-1, 1) */
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static float *frand(long n, float scale) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (long i = 0; i < n; i++) p[i] = urand() * scale;
    return p;
}

/* worst err/(tol·scale) per kernel name and mode, printed at the end of each kernel's checks */
static double g_worst;

/* Passes when |got[i] − want[i]| ≤ tol · scale[i] for all i (scale NULL: 1). */
static int expect_close(const char *what, long case_id, const float *got, const double *want, const double *scale,
                        long n, double tol) {
    g_checks++;
    for (long i = 0; i < n; i++) {
        double s = scale ? scale[i] : 1.0, err = fabs((double)got[i] - want[i]);
        double bound = tol * s;
        if (bound > 0 && err / bound > g_worst) g_worst = err / bound;
        if (!(err <= bound) || isnan(got[i])) {
            printf("FAIL %-22s [%s] case %ld: element %ld of %ld: got %.9g want %.9g (|err| %.3g > bound %.3g)\n", what,
                   g_mode, case_id, i, n, got[i], want[i], err, bound);
            g_failures++;
            return 0;
        }
    }
    return 1;
}

/* The decode GEMVs compute four rows side by side and the leftover rows one at a time, each row in the same
 * operations either way: y from one call over all n rows must equal, bit for bit, row r computed alone (n = 1, where
 * only the one-row loop runs). gemv(r, yr) computes row r alone into yr[m]. */
static void expect_rows_alone(const char *what, long case_id, const float *y, long m, long n, void (*gemv)(void *, long, float *),
                              void *ctx) {
    g_checks++;
    float *yr = malloc(sizeof(float) * m);
    for (long r = 0; r < n; r++) {
        gemv(ctx, r, yr);
        for (long i = 0; i < m; i++)
            if (memcmp(&yr[i], &y[i * n + r], sizeof(float)) != 0) {
                printf("FAIL %-22s [%s] case %ld: row %ld input %ld: %.9g in the whole call, %.9g alone\n", what, g_mode,
                       case_id, r, i, y[i * n + r], yr[i]);
                g_failures++;
                free(yr);
                return;
            }
    }
    free(yr);
}

static void report(const char *what, const char *path) {
    printf("ok   %-22s [%-12s] worst |err|/bound %.3f\n", what, path, g_worst);
    g_worst = 0;
}

/* The path of the kernels that run on zmm at the default level with AVX-512F (softmax rows, GELU): level 0 is the
 * default ISA, 1 is capped at AVX2 */
static const char *zmm_level_path(int level) {
    const char *p = ek_kernel_path();
    return level == 0 && strcmp(p, "avx2") == 0 && (ek_cpu_features() & EK_CPU_AVX512F) ? "avx512f" : p;
}

static const long sizes[] = { 1, 3, 4, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 255, 257, 1000, 1023, 4099 };
#define NSIZES (long)(sizeof sizes / sizeof sizes[0])

/* ------------------------------------------------------------------------------------------------ */

static void test_elementwise(void) {
    for (long si = 0; si < NSIZES; si++) {   /* dot */
        long n = sizes[si];
        float *a = frand(n, 1), *b = frand(n, 2);
        float got = ek_dot_f32(a, b, n);
        double want = ek_dot_f32_ref(a, b, n), sc = 0;
        for (long i = 0; i < n; i++) sc += fabs((double)a[i] * b[i]);
        expect_close("dot_f32", n, &got, &want, &sc, 1, 1e-5);
        free(a); free(b);
    }
    report("dot_f32", ek_kernel_path());
    for (long si = 0; si < NSIZES; si++) {   /* axpy */
        long n = sizes[si];
        float *x = frand(n, 1), *y = frand(n, 1), alpha = urand() * 3;
        double *want = malloc(sizeof(double) * n), *sc = malloc(sizeof(double) * n);
        for (long i = 0; i < n; i++) { want[i] = y[i] + (double)alpha * x[i]; sc[i] = fabs(y[i]) + fabs((double)alpha * x[i]); }
        ek_axpy_f32(alpha, x, y, n);
        expect_close("axpy_f32", n, y, want, sc, n, 1e-6);
        free(x); free(y); free(want); free(sc);
    }
    report("axpy_f32", ek_kernel_path());
    for (long si = 0; si < NSIZES; si++) {   /* exp */
        long n = sizes[si];
        float *x = frand(n, 80);
        double *want = malloc(sizeof(double) * n), *sc = malloc(sizeof(double) * n);
        for (long i = 0; i < n; i++) { want[i] = exp((double)x[i]); sc[i] = want[i]; }
        ek_exp_f32(x, n);
        expect_close("exp_f32", n, x, want, sc, n, 1e-6);
        free(x); free(want); free(sc);
    }
    report("exp_f32", ek_kernel_path());
    long gelu_sizes[NSIZES + 1];
    memcpy(gelu_sizes, sizes, sizeof sizes);
    gelu_sizes[NSIZES] = 70001;   /* ≥ 65536: the thread-pool split */
    for (int level = 0; level < 2; level++) {   /* the default ISA (zmm GELU with AVX-512F), then capped at AVX2 */
    ek_set_isa_limit(level ? EK_ISA_AVX2 : -1);
    for (long si = 0; si <= NSIZES; si++) {   /* gelu-tanh */
        long n = gelu_sizes[si];
        float *x = frand(n, 6), *r = malloc(sizeof(float) * n);
        memcpy(r, x, sizeof(float) * n);
        ek_gelu_tanh_f32_ref(r, n);
        double *want = malloc(sizeof(double) * n), *sc = malloc(sizeof(double) * n);
        for (long i = 0; i < n; i++) { want[i] = r[i]; sc[i] = fabs(r[i]) + 0.1 * fabs(x[i]); }
        ek_gelu_tanh_f32(x, n);
        expect_close("gelu_tanh_f32", n, x, want, sc, n, 1e-5);
        free(x); free(r); free(want); free(sc);
    }
    report("gelu_tanh_f32", zmm_level_path(level));
    static const long shapes[][2] = { { 1, 1 }, { 1, 7 }, { 3, 17 }, { 2, 64 }, { 5, 100 }, { 300, 257 } };
    for (long s = 0; s < 6; s++) {   /* bias-gelu, rmsnorm */
        long rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        float *x = frand(n, 4), *bias = frand(cols, 1), *r = malloc(sizeof(float) * n), *w = frand(cols, 2);
        float *out = malloc(sizeof(float) * n), *rout = malloc(sizeof(float) * n);
        double *want = malloc(sizeof(double) * n), *sc = malloc(sizeof(double) * n);
        for (long i = 0; i < n; i++) r[i] = x[i] + bias[i % cols];
        float *pre = malloc(sizeof(float) * n);
        memcpy(pre, r, sizeof(float) * n);
        ek_gelu_tanh_f32_ref(r, n);
        for (long i = 0; i < n; i++) { want[i] = r[i]; sc[i] = fabs(r[i]) + 0.1 * fabs(pre[i]); }
        ek_rmsnorm_f32_ref(x, w, rout, rows, cols, 1e-6f);
        ek_rmsnorm_f32(x, w, out, rows, cols, 1e-6f);
        ek_bias_gelu_tanh_f32(x, bias, rows, cols);
        expect_close("bias_gelu_tanh_f32", s, x, want, sc, n, 1e-5);
        for (long i = 0; i < n; i++) { want[i] = rout[i]; sc[i] = fabs(rout[i]); }
        expect_close("rmsnorm_f32", s, out, want, sc, n, 1e-5);
        free(x); free(bias); free(r); free(w); free(out); free(rout); free(want); free(sc); free(pre);
    }
    report("bias_gelu + rmsnorm", zmm_level_path(level));
    }
    ek_set_isa_limit(-1);
    for (long si = 0; si < NSIZES; si++) {   /* sum (the read-ceiling probe) */
        long n = sizes[si] * 97;
        float *x = frand(n, 1);
        double want = 0, sc = 0;
        for (long i = 0; i < n; i++) { want += x[i]; sc += fabs(x[i]); }
        float got = ek_sum_f32(x, n);
        expect_close("sum_f32", n, &got, &want, &sc, 1, 1e-5);
        free(x);
    }
    report("sum_f32", ek_kernel_path());
}

/* ------------------------------------------------------------------------------------------------ */

static int allowed(const uint8_t *keep, long causal, long r, long c) {
    return (!keep || keep[c]) && (causal < 0 || c <= r + causal);
}

/* at the default ISA (zmm rows where AVX-512F runs) and capped at AVX2 (the ymm rows) */
static void test_softmax(void) {
    static const long shapes[][2] = { { 1, 1 }, { 3, 7 }, { 5, 33 }, { 4, 130 }, { 300, 257 } };
    for (int level = 0; level < 2; level++) {
    ek_set_isa_limit(level ? EK_ISA_AVX2 : -1);
    for (long s = 0; s < 5; s++) {
        for (int variant = 0; variant < 3; variant++) {
          /* a divisor with no exact reciprocal (divided), and a power of two (multiplied by 1/d: the same floats) */
          for (int si = 0; si < 2; si++) {
            const float div = si ? 8.0f : 1.7f;
            long rows = shapes[s][0], cols = shapes[s][1], ld = cols + 3, causal = variant == 2 ? 0 : -1;
            float *sc = frand(rows * ld, 8);
            uint8_t *keep = NULL;
            if (variant == 1) { keep = malloc((size_t)cols); for (long c = 0; c < cols; c++) keep[c] = urand() > -0.5f; keep[0] = 0; }
            if (variant == 1 && cols > 3) keep[1] = keep[2] = 0;
            double *want = malloc(sizeof(double) * rows * ld);
            for (long r = 0; r < rows; r++) {
                double mx = -INFINITY, sum = 0;
                long live = 0;
                for (long c = 0; c < cols; c++) if (allowed(keep, causal, r, c)) { live++; if (sc[r * ld + c] / (double)div > mx) mx = sc[r * ld + c] / (double)div; }
                for (long c = 0; c < cols; c++) {
                    double e = live == 0 ? 1.0 : allowed(keep, causal, r, c) ? exp((double)(sc[r * ld + c] / div) - mx) : 0.0;
                    want[r * ld + c] = e; sum += e;
                }
                for (long c = 0; c < cols; c++) want[r * ld + c] /= sum;
            }
            float *pad = malloc(sizeof(float) * rows * 3);   /* the 3 floats past each row: never written */
            for (long r = 0; r < rows; r++) memcpy(pad + r * 3, sc + r * ld + cols, sizeof(float) * 3);
            float *pre = malloc(sizeof(float) * rows * ld);   /* the scores divided beforehand, for a divisor of 1 */
            for (long i = 0; i < rows * ld; i++) pre[i] = sc[i] / div;
            ek_softmax_masked_f32(sc, rows, cols, ld, div, keep, causal);
            for (long r = 0; r < rows; r++) expect_close("softmax_masked_f32", (s * 3 + variant) * 2 + si, sc + r * ld, want + r * ld, NULL, cols, 1e-6);
            for (long r = 0; r < rows; r++)
                if (memcmp(pad + r * 3, sc + r * ld + cols, sizeof(float) * 3) != 0) {
                    printf("FAIL softmax_masked_f32     case %ld: row %ld wrote past its %ld columns\n", s * 3 + variant, r, cols);
                    g_failures++;
                }
            if (si) {   /* x·(1/8) is x/8 exactly: the same floats as dividing first */
                ek_softmax_masked_f32(pre, rows, cols, ld, 1.0f, keep, causal);
                g_checks++;
                for (long r = 0; r < rows; r++)
                    if (memcmp(pre + r * ld, sc + r * ld, sizeof(float) * (size_t)cols) != 0) {
                        printf("FAIL softmax_masked_f32 [%s] case %ld: divisor 8 differs from scores divided by 8 first\n", g_mode, s * 3 + variant);
                        g_failures++;
                        break;
                    }
            }
            free(sc); free(keep); free(want); free(pad); free(pre);
          }
        }
    }
    report("softmax_masked_f32", zmm_level_path(level));
    }
    ek_set_isa_limit(-1);
}

static void test_attention(void) {
    /* tq, tk, n_head, n_kv_head, head_dim, interleaved, masked, causal offset, relbias */
    static const long cfg[][9] = {
        { 1, 1, 2, 2, 64, 0, 0, -1, 0 },   { 1, 37, 4, 2, 64, 1, 0, -1, 0 },  { 1, 129, 8, 2, 64, 0, 1, -1, 0 },
        { 2, 300, 4, 4, 32, 0, 0, 299, 0 }, { 1, 513, 9, 3, 64, 1, 1, -1, 0 }, { 3, 200, 4, 1, 12, 0, 0, 197, 0 },
        { 1, 70, 2, 1, 6, 0, 1, -1, 0 },   { 1, 257, 6, 6, 64, 0, 0, -1, 1 }, { 4, 131, 4, 2, 20, 1, 1, 127, 1 },
        { 1, 40, 32, 2, 64, 1, 0, -1, 0 },  { 1, 9, 2, 2, 8, 0, 2, -1, 0 },
        /* the group kernels' head blocks (3, 2, 1 query heads per pass) with partial output blocks (D = 40, 24, 72) */
        { 1, 77, 6, 2, 40, 0, 0, -1, 0 },  { 2, 45, 4, 2, 24, 1, 1, -1, 0 },  { 1, 99, 5, 5, 72, 0, 1, -1, 0 },
        { 1, 150, 10, 2, 48, 1, 0, -1, 0 }, { 1, 45, 4, 4, 64, 0, 0, -1, 0 }, { 1, 50, 6, 2, 64, 0, 0, 30, 0 },
        { 1, 70, 4, 2, 16, 1, 0, -1, 0 },  { 1, 33, 2, 1, 128, 0, 1, -1, 0 } };
    for (long ci = 0; ci < (long)(sizeof cfg / sizeof cfg[0]); ci++) {
        long tq = cfg[ci][0], tk = cfg[ci][1], H = cfg[ci][2], KV = cfg[ci][3], D = cfg[ci][4], causal = cfg[ci][7];
        int inter = (int)cfg[ci][5], masked = (int)cfg[ci][6], relb = (int)cfg[ci][8];
        long qs = H * D + 5, ks = KV * D + 3, os = H * D + 1;
        float *q = frand(tq * qs, 1), *k = frand(tk * ks, 1), *v = frand(tk * ks, 2);
        float *out = malloc(sizeof(float) * tq * os), *ref = malloc(sizeof(float) * tq * os);
        uint8_t *keep = NULL;
        if (masked) {
            keep = malloc((size_t)tk);
            for (long s = 0; s < tk; s++) keep[s] = masked == 2 ? 0 : urand() > -0.3f;   /* 2: every key masked */
        }
        long bs = tq + tk - 1 + 2;
        float *bias = relb ? frand(H * bs, 2) : NULL;
        long nscr = ek_attention_scratch_floats(tq, tk, H, D);
        float *scr = malloc(sizeof(float) * nscr), *rscr = malloc(sizeof(float) * tk);
        if (relb) {
            ek_attention_relbias_f32(q, qs, k, ks, v, ks, out, os, tq, tk, H, KV, D, inter, keep, causal, bias, bs, scr);
            ek_attention_relbias_f32_ref(q, qs, k, ks, v, ks, ref, os, tq, tk, H, KV, D, inter, keep, causal, bias, bs, rscr);
        } else {
            ek_attention_f32(q, qs, k, ks, v, ks, out, os, tq, tk, H, KV, D, inter, keep, causal, sqrtf((float)D), scr);
            ek_attention_f32_ref(q, qs, k, ks, v, ks, ref, os, tq, tk, H, KV, D, inter, keep, causal, sqrtf((float)D), rscr);
        }
        double vmax = 0;
        for (long i = 0; i < tk * ks; i++) if (fabs(v[i]) > vmax) vmax = fabs(v[i]);
        for (long t = 0; t < tq; t++) {
            double want[4096], sc[4096];
            for (long i = 0; i < H * D; i++) { want[i] = ref[t * os + i]; sc[i] = vmax; }
            expect_close(relb ? "attention_relbias_f32" : "attention_f32", ci, out + t * os, want, sc, H * D, 1e-5);
        }
        if (!relb && causal < 0) {   /* K/V in f16 (Mu's opt-in cross-attention K/V) against its twin */
            uint16_t *k16 = malloc(sizeof(uint16_t) * tk * ks), *v16 = malloc(sizeof(uint16_t) * tk * ks);
            ek_f32_to_f16(k, k16, tk * ks);
            ek_f32_to_f16(v, v16, tk * ks);
            ek_attention_f16kv(q, qs, k16, ks, v16, ks, out, os, tq, tk, H, KV, D, inter, keep, -1, sqrtf((float)D), scr);
            ek_attention_f16kv_ref(q, qs, k16, ks, v16, ks, ref, os, tq, tk, H, KV, D, inter, keep, -1, sqrtf((float)D), rscr);
            for (long t = 0; t < tq; t++) {
                double want[4096], sc[4096];
                for (long i = 0; i < H * D; i++) { want[i] = ref[t * os + i]; sc[i] = vmax; }
                expect_close("attention_f16kv", ci, out + t * os, want, sc, H * D, 1e-5);
            }
            free(k16); free(v16);
        }
        for (int gi = 0; gi < 2 && !relb; gi++) {   /* K/V in int8 with a scale per key and group of values (int8 KV
                                                        caches, causal too; cross K/V): a head per scale, then blocks */
            long grp = gi == 0 ? D : D % 32 == 0 && D > 32 ? 32 : D % 8 == 0 && D > 8 ? 8 : D % 2 == 0 ? D / 2 : D;
            if (gi == 1 && grp == D) break;
            long ss = KV * D / grp + 1;   /* scale rows wider than needed: the kernel must use scale_stride */
            int8_t *k8 = malloc((size_t)(tk * ks)), *v8 = malloc((size_t)(tk * ks));
            float *ksc = malloc(sizeof(float) * tk * ss), *vsc = malloc(sizeof(float) * tk * ss);
            for (long i = 0; i < tk * ks; i++) { k8[i] = (int8_t)lrintf(127.0f * urand()); v8[i] = (int8_t)lrintf(127.0f * urand()); }
            for (long i = 0; i < tk * ss; i++) { ksc[i] = 0.002f + 0.02f * fabsf(urand()); vsc[i] = 0.002f + 0.03f * fabsf(urand()); }
            if (tk > 2) { ksc[1 * ss] = 0.0f; vsc[2 * ss] = 0.0f; }   /* an all-zero slice quantizes to scale 0 */
            ek_attention_i8kv(q, qs, k8, ksc, ks, v8, vsc, ks, ss, grp, out, os, tq, tk, H, KV, D, inter, keep, causal, sqrtf((float)D), scr);
            ek_attention_i8kv_ref(q, qs, k8, ksc, ks, v8, vsc, ks, ss, grp, ref, os, tq, tk, H, KV, D, inter, keep, causal, sqrtf((float)D), rscr);
            double vmax8 = 0;
            for (long s = 0; s < tk; s++)
                for (long i = 0; i < KV * D; i++) { double a = fabs((double)v8[s * ks + i] * vsc[s * ss + i / grp]); if (a > vmax8) vmax8 = a; }
            for (long t = 0; t < tq; t++) {
                double want[4096], sc[4096];
                for (long i = 0; i < H * D; i++) { want[i] = ref[t * os + i]; sc[i] = vmax8; }
                expect_close(gi ? "attention_i8kv blocks" : "attention_i8kv", ci, out + t * os, want, sc, H * D, 1e-5);
            }
            free(k8); free(v8); free(ksc); free(vsc);
        }
        free(q); free(k); free(v); free(out); free(ref); free(keep); free(bias); free(scr); free(rscr);
    }
    /* A query head gets the same bits whichever head block of its KV head it falls in: G = 5 runs as 3 + 2, so
       heads 0 and 3 of a group (same q) go through different block widths; also one head per KV head (G = 1). */
    for (int half = 0; half < 2; half++) {
        long tk = 77, H = 10, KV = 2, D = 64, qs = H * D;
        float *q = frand(qs, 3), *k = frand(tk * KV * D, 4), *v = frand(tk * KV * D, 5), *out = malloc(sizeof(float) * qs);
        memcpy(q + 3 * D, q, sizeof(float) * D);                       /* interleaved groups: heads 0-4 read KV head 0 */
        memcpy(q + 4 * D, q + 1 * D, sizeof(float) * D);
        float *scr = malloc(sizeof(float) * ek_attention_scratch_floats(1, tk, H, D));
        if (half) {
            uint16_t *k16 = malloc(sizeof(uint16_t) * tk * KV * D), *v16 = malloc(sizeof(uint16_t) * tk * KV * D);
            ek_f32_to_f16(k, k16, tk * KV * D); ek_f32_to_f16(v, v16, tk * KV * D);
            ek_attention_f16kv(q, qs, k16, KV * D, v16, KV * D, out, qs, 1, tk, H, KV, D, 1, NULL, -1, 8.0f, scr);
            free(k16); free(v16);
        } else {
            ek_attention_f32(q, qs, k, KV * D, v, KV * D, out, qs, 1, tk, H, KV, D, 1, NULL, -1, 8.0f, scr);
        }
        int same = memcmp(out, out + 3 * D, sizeof(float) * D) == 0 && memcmp(out + D, out + 4 * D, sizeof(float) * D) == 0;
        g_checks++;
        if (!same) {
            g_failures++;
            printf("FAIL attention head blocks [%s] %s: a head's output depends on its block width\n", g_mode, half ? "f16kv" : "f32");
        }
        free(q); free(k); free(v); free(out); free(scr);
    }
    report("attention (+relbias, f16kv, i8kv)", ek_kernel_path());
}

/* ------------------------------------------------------------------------------------------------ */

/* { 1, 203, 1083 } and { 3, 203, 1083 }: several row ranges (≥ 32 KiB of weights) of 25–26 rows, so the GEMVs' four-row
 * loops run with leftover rows, and k leaves every tail (AVX2: a 16-step, an 8-step and 3 elements; AVX-512: 16 + 11;
 * vdpbf16ps: 32 + 27) */
static const long gshapes[][3] = { { 1, 1, 1 }, { 1, 5, 7 }, { 2, 37, 48 }, { 3, 130, 64 }, { 5, 100, 100 },
                                   { 8, 300, 257 }, { 1, 300, 1024 }, { 2, 40, 4099 }, { 4, 17, 96 }, { 1, 513, 200 },
                                   { 1, 203, 1083 }, { 3, 203, 1083 }, { 2, 70, 960 }, { 1, 45, 384 } };   /* last groups of 2, 6, 4 */
#define NGSHAPES (long)(sizeof gshapes / sizeof gshapes[0])

/* scale[i, r] = Σ_j |w[r, j] x[i, j]| + |bias[r]| */
static double *gemv_scale(const float *w, const float *x, const float *b, long m, long n, long k) {
    double *sc = malloc(sizeof(double) * m * n);
    for (long i = 0; i < m; i++)
        for (long r = 0; r < n; r++) {
            double s = fabs(b[r]);
            for (long j = 0; j < k; j++) s += fabs((double)w[r * k + j] * x[i * k + j]);
            sc[i * n + r] = s;
        }
    return sc;
}

struct f32_row_ctx { const float *w, *x, *b; long m, k; };
static void f32_row(void *ctx, long r, float *yr) {
    const struct f32_row_ctx *c = ctx;
    for (long i = 0; i < c->m; i++) yr[i] = NAN;
    ek_gemv_f32(c->w + r * c->k, c->x, c->b + r, yr, c->m, 1, c->k);
}

static void test_gemv_f32_once(void) {
    for (long si = 0; si < NGSHAPES; si++) {
        long m = gshapes[si][0], n = gshapes[si][1], k = gshapes[si][2];
        float *w = frand(n * k, 1), *x = frand(m * k, 3), *b = frand(n, 1);
        float *y = malloc(sizeof(float) * m * n), *r = malloc(sizeof(float) * m * n);
        double *want = malloc(sizeof(double) * m * n), *sc = gemv_scale(w, x, b, m, n, k);
        ek_gemv_f32(w, x, b, y, m, n, k);
        ek_gemv_f32_ref(w, x, b, r, m, n, k);
        for (long i = 0; i < m * n; i++) want[i] = r[i];
        expect_close("gemv_f32", si, y, want, sc, m * n, 1e-5);
        struct f32_row_ctx rc = { w, x, b, m, k };
        expect_rows_alone("gemv_f32 row alone", si, y, m, n, f32_row, &rc);
        free(w); free(x); free(b); free(y); free(r); free(want); free(sc);
    }
    report("gemv_f32", ek_gemv_path(EK_WF_F32));
}

static void expect_str(const char *what, const char *got, const char *want);
/* every path this CPU has: on x86-64 with AVX-512F one input row runs on zmm, and capped at AVX2 on ymm */
static void test_gemv_f32(void) {
    test_gemv_f32_once();
#if defined(__x86_64__)
    if (!ek_get_force_reference() && strcmp(ek_gemv_path(EK_WF_F32), "avx512f") == 0) {
        ek_set_isa_limit(EK_ISA_AVX2);
        expect_str("ek_gemv_path(EK_WF_F32) at limit AVX2", ek_gemv_path(EK_WF_F32), "avx2");
        test_gemv_f32_once();
        ek_set_isa_limit(-1);
    }
#endif
}

static const char *const fmt_names[] = { "f32", "bf16", "int8", "q8_0", "q4_0", "q4_1", "q8_0x8", "q4_0x8", "q4_1x8",
                                         "q4_K", "q5_K", "q6_K", "q5_0", "q5_1" };
/* the formats the GEMV checks quantize with ek_quantize_rows (llama.cpp's reference rounding) */
static const int gemv_formats[] = { EK_WF_BF16, EK_WF_INT8, EK_WF_Q8_0, EK_WF_Q4_0, EK_WF_Q4_1, EK_WF_Q5_0, EK_WF_Q5_1 };
#define NGEMV_FORMATS (long)(sizeof gemv_formats / sizeof gemv_formats[0])

struct quant_row_ctx { int f; const void *q; const float *ws, *x, *b; long m, k; };
static void quant_row(void *ctx, long r, float *yr) {
    const struct quant_row_ctx *c = ctx;
    for (long i = 0; i < c->m; i++) yr[i] = NAN;
    if (ek_gemv_quant(c->f, (const uint8_t *)c->q + r * ek_quant_row_bytes(c->f, c->k), c->ws ? c->ws + r : NULL, c->x,
                      c->b + r, yr, c->m, 1, c->k) != 0) { printf("FAIL quant_row: rc\n"); g_failures++; }
}

/* every format at every ISA level vs its reference twin; seen[format][level] records the path each level ran */
/* The GEMV again into a fresh buffer: whether it gives y's floats (after a setting that must not change them). */
static void expect_same_rerun(const char *what, const char *setting, long case_id, int format, const void *w, const float *ws,
                              const float *x, const float *b, const float *y, long m, long n, long k) {
    float *yo = malloc(sizeof(float) * m * n);
    ek_gemv_quant(format, w, ws, x, b, yo, m, n, k);
    g_checks++;
    if (memcmp(yo, y, sizeof(float) * m * n) != 0) {
        printf("FAIL %s [%s] case %ld: %s changed the floats\n", what, g_mode, case_id, setting);
        g_failures++;
    }
    free(yo);
}

/* The grouped kernels with the other count of rows walked side by side (2 or 4, ek_set_x8_streams), and any GEMV with
 * the other fewest row ranges per thread (1 or 4, ek_set_gemv_tasks_per_thread), give y's floats. */
static void expect_same_other_streams(const char *what, long case_id, int format, const void *w, const float *ws,
                                      const float *x, const float *b, const float *y, long m, long n, long k) {
    ek_set_x8_streams(ek_get_x8_streams() == 4 ? 2 : 4);
    expect_same_rerun(what, "another stream count", case_id, format, w, ws, x, b, y, m, n, k);
    ek_set_x8_streams(-1);
    ek_set_gemv_tasks_per_thread(ek_get_gemv_tasks_per_thread() == 1 ? 4 : 1);
    expect_same_rerun(what, "another split into row ranges", case_id, format, w, ws, x, b, y, m, n, k);
    ek_set_gemv_tasks_per_thread(-1);
    ek_set_q4y(!ek_get_q4y());   /* Q4_0X8 / Q4_1X8 on AVX2: rows_q4y against the x8 group kernel */
    expect_same_rerun(what, "the other AVX2 4-bit kernel", case_id, format, w, ws, x, b, y, m, n, k);
    ek_set_q4y(-1);
}

/* rows_q4y keeps a pair's products in int16 and adds four pairs' lanes with vphaddw: exact only while |lane| <= 32767.
 * The largest products: every nibble 15 (Q4_0: one −1 and 31 of 0.875 per block; Q4_1: one 0 and 31 of 1) against
 * activations all ±127 (x constant), 4 products of 15·127 per lane and 4 lanes: 30480 (the lanes without element 0,
 * whose nibble is 0). Rows of 2, 8, 9, 12, 30 and 40 blocks (no whole group; one; one and a last group of 1; one and
 * 4; three and 6; five), each against the reference; a wrapped int16 would be off by 65536·d. Where the AVX2 path runs,
 * rows_q4y must be what ran (ek_q4y_runs), or the comparison would be x8 against x8. */
static void test_q4_int16_bound(void) {
    static const long ks[] = { 64, 256, 288, 384, 960, 1280 };
    const int fmts[] = { EK_WF_Q4_0, EK_WF_Q4_1 };
    for (int fi = 0; fi < 2; fi++)
        for (int ki = 0; ki < 6; ki++)
            for (int sign = -1; sign <= 1; sign += 2) {
                const int f = fmts[fi];
                const long n = 5, k = ks[ki], m = 2;
                float *w = malloc(sizeof(float) * n * k), *x = malloc(sizeof(float) * m * k), *ws = malloc(sizeof(float) * n);
                for (long i = 0; i < n * k; i++) w[i] = i % 32 == 0 ? (f == EK_WF_Q4_0 ? -1.0f : 0.0f) : (f == EK_WF_Q4_0 ? 0.875f : 1.0f);
                for (long i = 0; i < m * k; i++) x[i] = (float)sign * (i < k ? 1.0f : 3.0f);
                const long rb = ek_quant_row_bytes(f, k);
                uint8_t *q = malloc((size_t)(n * rb)), *qx = malloc((size_t)(n * rb));
                ek_quantize_rows(f, w, q, ws, n, k);
                g_checks++;
                if (q[f == EK_WF_Q4_0 ? 2 + 1 : 4 + 1] != 0xFF) {   /* the block's second byte: nibbles 15 and 15 */
                    printf("FAIL q4 int16 bound: %s block not all 15 (byte %02x)\n", fmt_names[f], q[f == EK_WF_Q4_0 ? 3 : 5]);
                    g_failures++;
                }
                ek_repack_x8(f, q, qx, n, k);
                float *y = malloc(sizeof(float) * m * n), *r = malloc(sizeof(float) * m * n);
                ek_gemv_quant_ref(f, q, ws, x, NULL, r, m, n, k);
                const int x8 = ek_x8_format(f);
                for (int on = 0; on <= 1; on++) {
                    ek_set_q4y(on);
                    const long calls = ek_q4y_row_calls();
                    ek_gemv_quant(x8, qx, NULL, x, NULL, y, m, n, k);
                    if (strcmp(ek_gemv_path(x8), "avx2") == 0) {   /* which kernel ran: rows_q4y exactly when on */
                        g_checks++;
                        if ((ek_q4y_row_calls() > calls) != on || ek_q4y_runs(x8) != on) {
                            printf("FAIL q4 int16 bound: %s x8 on avx2 with ek_set_q4y(%d): rows_q4y ran %ld ranges, ek_q4y_runs %d\n",
                                   fmt_names[f], on, ek_q4y_row_calls() - calls, ek_q4y_runs(x8));
                            g_failures++;
                        }
                    }
                    for (long i = 0; i < m * n; i++) {
                        g_checks++;
                        if (!(fabsf(y[i] - r[i]) <= 1e-5f * fabsf(r[i]) + 1e-6f)) {
                            printf("FAIL q4 int16 bound: %s x8 k=%ld x=%+d q4y=%d y[%ld] %.9g, reference %.9g\n",
                                   fmt_names[f], k, sign, on, i, y[i], r[i]);
                            g_failures++;
                            break;
                        }
                    }
                }
                ek_set_q4y(-1);
                free(w); free(x); free(ws); free(q); free(qx); free(y); free(r);
            }
}

/* ek_set_gemv_tasks_per_thread: 1..16 set P, anything else restores the default (EK_GEMV_TASKS_PER_THREAD, else 1). */
static void test_gemv_tasks_setting(void) {
    const long p = ek_get_gemv_tasks_per_thread();
    const long cases[][2] = { { 3, 3 }, { 16, 16 }, { 0, p }, { 17, p }, { -1, p } };
    for (int i = 0; i < 5; i++) {
        ek_set_gemv_tasks_per_thread(cases[i][0]);
        g_checks++;
        if (ek_get_gemv_tasks_per_thread() != cases[i][1]) {
            printf("FAIL gemv_tasks: set %ld, got %ld, expected %ld\n", cases[i][0], ek_get_gemv_tasks_per_thread(), cases[i][1]);
            g_failures++;
        }
    }
    ek_set_gemv_tasks_per_thread(-1);
}

static void test_gemv_quant(char seen[][8][16]) {
    for (long fi = 0; fi < NGEMV_FORMATS; fi++) {
        const int f = gemv_formats[fi];
        for (long si = 0; si < NGSHAPES; si++) {
            long m = gshapes[si][0], n = gshapes[si][1], k = gshapes[si][2];
            float *w = frand(n * k, 1), *x = frand(m * k, 3), *b = frand(n, 1);
            void *q = malloc((size_t)(n * ek_quant_row_bytes(f, k)));
            float *ws = malloc(sizeof(float) * n), *wd = malloc(sizeof(float) * n * k);
            ek_quantize_rows(f, w, q, ws, n, k);
            if (f == EK_WF_Q8_0 || f == EK_WF_INT8) {   /* −128 in every third row (no quantizer writes it; a file may) */
                long rb = ek_quant_row_bytes(f, k), off = f == EK_WF_Q8_0 ? 2 : 0;
                for (long r = 0; r < n; r += 3) ((int8_t *)q)[r * rb + off + r % (k < 32 ? k : 32)] = -128;
            }
            ek_dequantize_rows(f, q, ws, wd, n, k);
            float *y = malloc(sizeof(float) * m * n), *r = malloc(sizeof(float) * m * n);
            double *want = malloc(sizeof(double) * m * n), *sc = gemv_scale(wd, x, b, m, n, k);
            if (f == EK_WF_BF16) ek_gemv_bf16_ref(q, x, b, r, m, n, k);
            else ek_gemv_quant_ref(f, q, ws, x, b, r, m, n, k);
            for (int level = EK_ISA_SCALAR; level <= EK_ISA_AVX512; level++) {
                ek_set_isa_limit(level);
                const char *path = ek_gemv_path(f);
                snprintf(seen[f][level], 16, "%s", path);
                if (strcmp(path, "avx512bf16") == 0) ek_gemv_bf16_xbf16_ref(q, x, b, r, m, n, k);
                for (long i = 0; i < m * n; i++) want[i] = r[i];
                if (f == EK_WF_BF16 && level == EK_ISA_AVX2) ek_gemv_bf16(q, x, b, y, m, n, k);   /* the public wrapper */
                else ek_gemv_quant(f, q, ws, x, b, y, m, n, k);
                char what[48];
                snprintf(what, sizeof what, "gemv_%s@%s", fmt_names[f], path);
                expect_close(what, si, y, want, sc, m * n, 1e-5);
                struct quant_row_ctx rc = { f, q, ws, x, b, m, k };
                snprintf(what, sizeof what, "gemv_%s@%s row alone", fmt_names[f], path);
                expect_rows_alone(what, si, y, m, n, quant_row, &rc);
                int x8 = ek_x8_format(f);
                if (x8 >= 0) {   /* the same blocks regrouped by 8 (the decode layout): the x8 kernels */
                    void *qx = malloc((size_t)(n * ek_quant_row_bytes(f, k)));
                    float *yx = malloc(sizeof(float) * m * n);
                    ek_repack_x8(f, q, qx, n, k);
                    ek_gemv_quant(x8, qx, NULL, x, b, yx, m, n, k);
                    snprintf(what, sizeof what, "gemv_%s_x8@%s", fmt_names[f], path);
                    expect_close(what, si, yx, want, sc, m * n, 1e-5);
                    struct quant_row_ctx rx = { x8, qx, NULL, x, b, m, k };
                    snprintf(what, sizeof what, "gemv_%s_x8@%s row alone", fmt_names[f], path);
                    expect_rows_alone(what, si, yx, m, n, quant_row, &rx);
                    snprintf(what, sizeof what, "gemv_%s_x8@%s", fmt_names[f], path);
                    expect_same_other_streams(what, si, x8, qx, NULL, x, b, yx, m, n, k);
                    free(qx); free(yx);
                }
                if (f == EK_WF_INT8) {   /* int8 rows run the grouped kernels too */
                    snprintf(what, sizeof what, "gemv_int8@%s", path);
                    expect_same_other_streams(what, si, f, q, ws, x, b, y, m, n, k);
                    float *yy = malloc(sizeof(float) * m * n);   /* the x8 kernel instead of the rows' own */
                    ek_set_int8_zmm(0);
                    ek_gemv_quant(f, q, ws, x, b, yy, m, n, k);
                    snprintf(what, sizeof what, "gemv_int8 ymm@%s", path);
                    expect_close(what, si, yy, want, sc, m * n, 1e-5);
                    expect_same_other_streams(what, si, f, q, ws, x, b, yy, m, n, k);
                    ek_set_int8_zmm(-1);
                    free(yy);
                }
                float *single = malloc(sizeof(float) * m * n);
                memcpy(single, y, sizeof(float) * m * n);
                if (n >= 3) {   /* the rows as three matrices in one shared-activation call (q/k/v) */
                    long n0 = n / 3, n1 = n / 4 + 1, ns[3] = { n0, n1, n - n0 - n1 }, rb = ek_quant_row_bytes(f, k);
                    const void *wp[3]; const float *sp[3], *bp[3]; float *yp[3];
                    for (long j = 0, r0 = 0; j < 3; r0 += ns[j], j++) {
                        wp[j] = (const char *)q + r0 * rb; sp[j] = ws + r0; bp[j] = b + r0;
                        yp[j] = malloc(sizeof(float) * (size_t)(m * (ns[j] > 0 ? ns[j] : 1)));
                    }
                    ek_gemv_quant_multi(f, 3, wp, sp, bp, yp, ns, x, m, k);
                    for (long j = 0, r0 = 0; j < 3; r0 += ns[j], j++)
                        for (long i = 0; i < m; i++)
                            for (long r = 0; r < ns[j]; r++) y[i * n + r0 + r] = yp[j][i * ns[j] + r];
                    snprintf(what, sizeof what, "gemv_multi_%s@%s", fmt_names[f], path);
                    expect_close(what, si, y, want, sc, m * n, 1e-5);
                    g_checks++;   /* rows split differently across the threads than in one call: the same floats */
                    if (memcmp(y, single, sizeof(float) * m * n) != 0) {
                        printf("FAIL %s [%s] case %ld: not the floats of one call per matrix\n", what, g_mode, si);
                        g_failures++;
                    }
                    for (int j = 0; j < 3; j++) free(yp[j]);
                }
                free(single);
            }
            ek_set_isa_limit(-1);
            free(w); free(x); free(b); free(q); free(ws); free(wd); free(y); free(r); free(want); free(sc);
        }
        char paths[80] = "";
        for (int level = EK_ISA_SCALAR; level <= EK_ISA_AVX512; level++) {
            if (level == EK_ISA_SCALAR || strcmp(seen[f][level], seen[f][level - 1]) != 0) {
                if (paths[0]) strcat(paths, ",");
                strcat(paths, seen[f][level]);
            }
        }
        char what[32];
        snprintf(what, sizeof what, "gemv_%s", fmt_names[f]);
        report(what, paths);
    }
}

static void test_quantize_activations(void) {
    for (long fi = 1; fi < NGEMV_FORMATS; fi++) {   /* the integer formats */
        const int f = gemv_formats[fi];
        for (long si = 0; si < NSIZES; si++) {
            long m = 3, k = sizes[si], nb = (k + 31) / 32;
            float *x = frand(m * k, 5);
            if (k > 40) x[7] = 0, x[3] = 5.0f;   /* a tie-prone value and an exact amax */
            if (k > 64) {   /* the block scales' f16 rounding at its edges (F16C on AVX2, float_to_half in plain C) */
                for (long j = k; j < 2 * k; j++)                  /* row 1: subnormal (d < 6.1e-5) and zero f16 scales */
                    x[j] *= ((j - k) / 32) % 2 ? 1e-7f : 1e-3f;
                x[2 * k] = 127.06201171875f;                      /* row 2, block 0: d = 1 + 2^-11, a tie: to 1 */
                x[2 * k + 32] = 1e7f;                             /* block 1: d over 65504, an infinite scale */
            }
            int8_t *q0 = malloc((size_t)(m * nb * 32)), *q1 = malloc((size_t)(m * nb * 32));
            float *d0 = malloc(sizeof(float) * m * nb), *d1 = malloc(sizeof(float) * m * nb);
            float *c0 = malloc(sizeof(float) * m * nb), *c1 = malloc(sizeof(float) * m * nb);
            ek_quantize_activations(f, x, m, k, q0, d0, c0);
            int force = ek_get_force_reference();
            ek_set_force_reference(1);
            ek_quantize_activations(f, x, m, k, q1, d1, c1);
            ek_set_force_reference(force);
            g_checks++;
            if (memcmp(q0, q1, (size_t)(m * nb * 32)) || memcmp(d0, d1, sizeof(float) * m * nb) ||
                memcmp(c0, c1, sizeof(float) * m * nb)) {
                printf("FAIL quantize_activations [%s] %s k=%ld: bytes differ from plain C\n", g_mode, fmt_names[f], k);
                g_failures++;
            }
            free(x); free(q0); free(q1); free(d0); free(d1); free(c0); free(c1);
        }
    }
    report("quantize_activations", ek_kernel_path());
}

/* ek_quantize_rows (AVX2 int8 rows, Q8_0 and Q4_0 blocks; rows split over the threads) against its one-thread plain
 * twin: the same bytes, with a tie (x·id = 2.5 after scaling), zeros and −0, NaN, ±Inf, two values of the largest |x|,
 * denormal scales and values at the rounding boundaries among them. */
static void test_quantize_rows(void) {
    static const int formats[] = { EK_WF_INT8, EK_WF_Q8_0, EK_WF_Q4_0, EK_WF_Q4_1, EK_WF_BF16 };
    static const long shapes[][2] = { { 3, 1 }, { 5, 7 }, { 4, 40 }, { 9, 100 }, { 64, 1100 }, { 300, 260 } };
    for (int fi = 0; fi < 5; fi++) {
        for (int si = 0; si < 6; si++) {
            const int f = formats[fi];
            const long rows = shapes[si][0], cols = shapes[si][1], rb = ek_quant_row_bytes(f, cols);
            float *x = frand(rows * cols, 11 + si);
            if (cols >= 40) {
                x[0] = 127.0f; x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.0f;   /* row 0: amax 127, so 2.5 stays a tie */
                x[cols + 5] = NAN;                                       /* row 1: a NaN (skipped by amax) */
                x[2 * cols + 1] = INFINITY;                              /* row 2: an infinity (int8: scale inf, the rest 0) */
                for (long j = 32; j < 64 && j < cols; j++) x[3 * cols + j] = 0.0f;   /* row 3, block 1: zeros, a −0 */
                x[3 * cols + 33] = -0.0f;
                x[3 * cols + 35] = -3.0f; x[3 * cols + 36] = 3.0f;       /* ... and two of the largest |x|: the first counts */
                if (rows > 4) {                                          /* row 4, block 0: all zero, one −0 */
                    for (long j = 0; j < 32; j++) x[4 * cols + j] = 0.0f;
                    x[4 * cols + 1] = -0.0f;
                }
                if (rows > 6)                                            /* rows 5, 6, block 0: denormal scales */
                    for (long j = 0; j < 32; j++) {
                        x[5 * cols + j] = (float)(j + 1) * 1e-40f;                        /* 1/d overflows to inf */
                        x[6 * cols + j] = (float)((j % 2) ? -(j + 1) : (j + 1)) * 2e-38f;   /* d denormal, 1/d finite */
                    }
            }
            uint8_t *q0 = calloc((size_t)(rows * rb), 1), *q1 = calloc((size_t)(rows * rb), 1);
            float *s0 = calloc((size_t)rows, sizeof(float)), *s1 = calloc((size_t)rows, sizeof(float));
            int rc0 = ek_quantize_rows(f, x, q0, s0, rows, cols), rc1 = ek_quantize_rows_ref(f, x, q1, s1, rows, cols);
            g_checks++;
            if (rc0 != 0 || rc1 != 0 || memcmp(q0, q1, (size_t)(rows * rb)) ||
                (f == EK_WF_INT8 && memcmp(s0, s1, sizeof(float) * rows))) {
                printf("FAIL quantize_rows [%s] %s %ldx%ld: rc %d/%d, bytes differ from the plain twin\n", g_mode,
                       fmt_names[f], rows, cols, rc0, rc1);
                g_failures++;
            }
            free(x); free(q0); free(q1); free(s0); free(s1);
        }
    }
    /* Values a few ulps either side of where the rounding changes, after an inexact scaling: Q8_0 blocks led by 100
     * (id = 1.27) around (k + 0.5) / id, Q4_0 blocks led by 7 (id = −8/7) around (n − 8.5) / id. A multiply fused
     * with the add or subtract after it (an FMA where the plain loop rounds the product first) fails some of them. */
    for (int fi = 0; fi < 2; fi++) {
        const int f = fi == 0 ? EK_WF_Q8_0 : EK_WF_Q4_0;
        const float lead = f == EK_WF_Q8_0 ? 100.0f : 7.0f;
        const float d = f == EK_WF_Q8_0 ? lead / 127.0f : lead / -8.0f, id = 1.0f / d;
        const int k0 = f == EK_WF_Q8_0 ? -120 : 1, k1 = f == EK_WF_Q8_0 ? 120 : 15;
        long n = 0, cap = 32L * 2048;
        float *x = calloc((size_t)cap, sizeof(float));
        for (int k = k0; k <= k1; k++)
            for (int off = -12; off <= 12; off++) {
                if (n % 32 == 0) x[n++] = lead;                  /* each block's largest |x| first */
                float v = f == EK_WF_Q8_0 ? ((float)k + 0.5f) / id : ((float)k - 8.5f) / id;
                for (int i = 0; i < (off < 0 ? -off : off); i++) v = nextafterf(v, off < 0 ? -INFINITY : INFINITY);
                x[n++] = v;
            }
        n = (n + 31) / 32 * 32;
        const long rb = ek_quant_row_bytes(f, n);
        uint8_t *q0 = calloc((size_t)rb, 1), *q1 = calloc((size_t)rb, 1);
        int rc0 = ek_quantize_rows(f, x, q0, NULL, 1, n), rc1 = ek_quantize_rows_ref(f, x, q1, NULL, 1, n);
        g_checks++;
        if (rc0 != 0 || rc1 != 0 || memcmp(q0, q1, (size_t)rb)) {
            long at = 0;
            while (at < rb && q0[at] == q1[at]) at++;
            printf("FAIL quantize_rows [%s] %s rounding boundaries (%ld values): rc %d/%d, first differing byte %ld\n",
                   g_mode, fmt_names[f], n, rc0, rc1, at);
            g_failures++;
        }
        free(x); free(q0); free(q1);
    }
    g_checks++;
    if (ek_quantize_rows(EK_WF_INT8, (const float[]){ 1.0f }, (uint8_t[32]){ 0 }, NULL, 1, 1) != -1) {
        printf("FAIL quantize_rows: int8 without scales accepted\n");
        g_failures++;
    }
    report("quantize_rows", ek_kernel_path());
}

/* ------------------------------------------------------------------------------------------------ */

static void expect_str(const char *what, const char *got, const char *want) {
    g_checks++;
    if (strcmp(got, want) != 0) { printf("FAIL dispatch: %s is \"%s\", expected \"%s\"\n", what, got, want); g_failures++; }
}

/* the prompt-pass int8 GEMM (gemm_int8.c) vs its twin, every epilogue: exact int32 sums, so only the fp32
 * epilogue's rounding differs (and the GELU kernel's): 1e-5 · (|twin| + 1) */
/* GEMM outputs 64-byte aligned (as Encore's tensors are), so the streamed-output pass streams every row whose stride
 * keeps the alignment, whatever malloc returns. */
static float *out_alloc(long count) { return aligned_alloc(64, (size_t)((count * 4 + 63) / 64 * 64)); }

static void test_gemm_int8_once(void) {
    static const long shapes[][3] = { { 9, 1, 1 }, { 13, 17, 70 }, { 50, 100, 100 }, { 97, 33, 600 }, { 20, 300, 64 } };
    for (long si = 0; si < 5; si++) {
        long m = shapes[si][0], n = shapes[si][1], k = shapes[si][2], kp = (k + 31) / 32 * 32;
        float *w = frand(n * k, 1), *x = frand(m * k, 3), *b = frand(n, 1), *y0 = frand(m * n, 1);
        int8_t *q = malloc((size_t)(n * kp));
        float *s = malloc(sizeof(float) * n), *y = out_alloc(m * n), *r = malloc(sizeof(float) * m * n);
        double *want = malloc(sizeof(double) * m * n), *sc = malloc(sizeof(double) * m * n);
        ek_quantize_rows(EK_WF_INT8, w, q, s, n, k);
        for (int epi = EK_EPI_STORE; epi <= EK_EPI_RELU; epi++) {
            memcpy(y, y0, sizeof(float) * m * n); memcpy(r, y0, sizeof(float) * m * n);
            ek_gemm_int8(q, s, x, b, y, m, n, k, epi);
            ek_gemm_int8_ref(q, s, x, b, r, m, n, k, epi);
            for (long i = 0; i < m * n; i++) { want[i] = r[i]; sc[i] = fabs(r[i]) + 1; }
            expect_close("gemm_int8", si * 4 + epi, y, want, sc, m * n, 1e-5);
            /* the same matrix twice in one ek_gemm_int8_multi call (the second without bias): twin's results */
            float *y2 = out_alloc(m * n), *r2 = malloc(sizeof(float) * m * n);
            memcpy(y, y0, sizeof(float) * m * n); memcpy(y2, y0, sizeof(float) * m * n);
            memcpy(r2, y0, sizeof(float) * m * n);
            const int8_t *ws[2] = { q, q }; const float *ss[2] = { s, s }, *bs[2] = { b, NULL };
            float *ys[2] = { y, y2 }; long ns[2] = { n, n };
            g_checks++;
            if (ek_gemm_int8_multi(2, ws, ss, bs, ys, ns, x, m, k, epi) != 0) { printf("FAIL gemm_int8_multi: rc\n"); g_failures++; }
            ek_gemm_int8_ref(q, s, x, NULL, r2, m, n, k, epi);
            expect_close("gemm_int8_multi", si * 4 + epi, y, want, sc, m * n, 1e-5);
            for (long i = 0; i < m * n; i++) { want[i] = r2[i]; sc[i] = fabs(r2[i]) + 1; }
            expect_close("gemm_int8_multi", 100 + si * 4 + epi, y2, want, sc, m * n, 1e-5);
            free(y2); free(r2);
        }
        free(w); free(x); free(b); free(y0); free(q); free(s); free(y); free(r); free(want); free(sc);
    }
    report("gemm_int8", ek_gemm_int8_path());
}

/* The Q8_0 prompt GEMM (gemm_int8.c) vs its twin, both layouts, every epilogue: the same operations in the same
 * order, so identical floats (GELU: the fast GELU against the plain one, 1e-5 · (|twin| + 1)). And, the arithmetic
 * itself: the stored product against x · Wᵀ of the dequantized blocks in double, within what the activations'
 * rounding allows (ggml's q8_0 per block of 32: |Δx| ≤ d/2, d = amax/127; Σ_b d_b/2 · Σ_b|w| per output, plus
 * 1e-5 · (|want| + 1)). */
static void test_gemm_q8_0(void) {
    /* the last six reach the zmm tile's two-panel calls (10 panels: more than one per thread) with k > 256 (sums
       carried across k blocks): last calls of 5, 3, 7 and 1 rows, and a second row block (m > 96), the last one with
       the K-quants too */
    static const long shapes[][3] = { { 9, 1, 32 }, { 13, 17, 70 }, { 50, 100, 256 }, { 97, 33, 600 }, { 20, 300, 64 }, { 33, 70, 512 },
                                      { 130, 40, 320 }, { 21, 160, 288 }, { 19, 160, 288 }, { 23, 160, 288 },
                                      { 17, 160, 288 }, { 101, 160, 288 }, { 101, 160, 512 } };
    for (long si = 0; si < (long)(sizeof shapes / sizeof shapes[0]); si++) {
        long m = shapes[si][0], n = shapes[si][1], k = shapes[si][2], rb = ek_quant_row_bytes(EK_WF_Q8_0, k);
        float *w = frand(n * k, 1), *x = frand(m * k, 3), *b = frand(n, 1), *y0 = frand(m * n, 1);
        uint8_t *q = malloc((size_t)(n * rb)), *qx = malloc((size_t)(n * rb));
        float *wd = malloc(sizeof(float) * n * k), *y = out_alloc(m * n), *r = malloc(sizeof(float) * m * n);
        double *want = malloc(sizeof(double) * m * n), *sc = malloc(sizeof(double) * m * n);
      static const int block_bases[] = { EK_WF_Q8_0, EK_WF_Q4_0, EK_WF_Q4_1, EK_WF_Q5_0, EK_WF_Q5_1, EK_WF_Q4_K, EK_WF_Q5_K,
                                         EK_WF_Q6_K };
      /* Q8_0, Q4_0 (nibbles − 8), Q4_1 (+ minima), Q5_0 (5 bits − 16), Q5_1, Q4_K / Q5_K as 32-value blocks with
         scale d·sc_j and minimum −dmin·m_j, and Q6_K as 16-value blocks with scale d·sc_j (the K-quants for k % 256 == 0
         only: random bytes, f16 scales in [2^-10, 2^-8]; Q6_K's int8 scales any byte) */
      for (int bi = 0; bi < 8; bi++) {
        const int base = block_bases[bi], kq = base == EK_WF_Q4_K || base == EK_WF_Q5_K || base == EK_WF_Q6_K;
        if (kq && k % 256 != 0) continue;
        rb = ek_quant_row_bytes(base, k);
        if (kq) {
            const long sb = base == EK_WF_Q4_K ? 144 : base == EK_WF_Q5_K ? 176 : 210;
            for (long i = 0; i < n * rb; i++) q[i] = (uint8_t)((urand() + 1.0f) * 127.99f);
            for (long i = 0; i < n * rb; i += sb) {   /* d and dmin (Q6_K: d, its last two bytes): small positive normal f16 */
                if (base == EK_WF_Q6_K) { q[i + 209] = (uint8_t)(0x14 + (q[i + 209] & 3)); continue; }
                q[i + 1] = (uint8_t)(0x14 + (q[i + 1] & 3)); q[i + 3] = (uint8_t)(0x14 + (q[i + 3] & 3));
            }
        } else {
            ek_quantize_rows(base, w, q, NULL, n, k);
        }
        if (base == EK_WF_Q8_0)
            for (long r = 0; r < n; r += 3) ((int8_t *)q)[r * rb + 2 + r % 32] = -128;   /* a byte no quantizer writes */
        if (!kq) ek_repack_x8(base, q, qx, n, k);
        ek_dequantize_rows(base, q, NULL, wd, n, k);
        for (int layout = 0; layout < (kq ? 1 : 2); layout++) {
            int fmt = layout ? ek_x8_format(base) : base;
            const void *wq = layout ? (const void *)qx : (const void *)q;
            for (int epi = EK_EPI_STORE; epi <= EK_EPI_RELU; epi++) {
                double tol = epi == EK_EPI_GELU ? 1e-5 : 0.0;
                memcpy(y, y0, sizeof(float) * m * n); memcpy(r, y0, sizeof(float) * m * n);
                g_checks++;
                if (ek_gemm_q8_0(fmt, wq, x, b, y, m, n, k, epi) != 0 || ek_gemm_q8_0_ref(fmt, wq, x, b, r, m, n, k, epi) != 0) {
                    printf("FAIL gemm_q8_0: rc\n"); g_failures++;
                }
                for (long i = 0; i < m * n; i++) { want[i] = r[i]; sc[i] = tol > 0 ? fabs(r[i]) + 1 : 1; }
                if (tol > 0) expect_close("gemm_q8_0", layout * 10 + epi, y, want, sc, m * n, tol);
                else {
                    g_checks++;
                    if (memcmp(y, r, sizeof(float) * m * n) != 0) {
                        for (long i = 0; i < m * n; i++)
                            if (memcmp(y + i, r + i, 4) != 0) {
                                printf("FAIL gemm_q8_0 [%s] shape %ld layout %d epilogue %d: element %ld got %.9g want %.9g\n",
                                       g_mode, si, layout, epi, i, y[i], r[i]);
                                break;
                            }
                        g_failures++;
                    }
                }
                /* two matrices in one call (the second without bias) */
                float *y2 = out_alloc(m * n), *r2 = malloc(sizeof(float) * m * n);
                memcpy(y, y0, sizeof(float) * m * n); memcpy(y2, y0, sizeof(float) * m * n); memcpy(r2, y0, sizeof(float) * m * n);
                const void *ws[2] = { wq, wq }; const float *bs[2] = { b, NULL };
                float *ys[2] = { y, y2 }; long ns[2] = { n, n };
                g_checks++;
                if (ek_gemm_q8_0_multi(fmt, 2, ws, bs, ys, ns, x, m, k, epi) != 0) { printf("FAIL gemm_q8_0_multi: rc\n"); g_failures++; }
                ek_gemm_q8_0_ref(fmt, wq, x, NULL, r2, m, n, k, epi);
                if (tol > 0) {
                    expect_close("gemm_q8_0_multi", layout * 10 + epi, y, want, sc, m * n, tol);
                    for (long i = 0; i < m * n; i++) { want[i] = r2[i]; sc[i] = fabs(r2[i]) + 1; }
                    expect_close("gemm_q8_0_multi", 100 + layout * 10 + epi, y2, want, sc, m * n, tol);
                } else {   /* identical floats, as one call each */
                    g_checks++;
                    if (memcmp(y, r, sizeof(float) * m * n) != 0 || memcmp(y2, r2, sizeof(float) * m * n) != 0) {
                        printf("FAIL gemm_q8_0_multi [%s] shape %ld layout %d epilogue %d: not the twin's floats\n", g_mode, si,
                               layout, epi);
                        g_failures++;
                    }
                }
                free(y2); free(r2);
            }
            /* the decode GEMV on the same blocks (−128 included) against its reference, m ≤ 8 rows */
            {
                long mg = m < 8 ? m : 8;
                ek_gemv_quant(fmt, wq, NULL, x, b, y, mg, n, k);
                ek_gemv_quant_ref(base, q, NULL, x, b, r, mg, n, k);
                double *gs = gemv_scale(wd, x, b, mg, n, k);
                for (long i = 0; i < mg * n; i++) want[i] = r[i];
                static const char *const gemv_names[] = { "gemv_q8_0 (-128)", "gemv_q4_0 (x8)", "gemv_q4_1 (x8)", "gemv_q5_0 (x8)",
                                                          "gemv_q5_1 (x8)", "gemv_q4_K", "gemv_q5_K", "gemv_q6_K" };
                expect_close(gemv_names[bi],
                             layout, y, want, gs, mg * n, 1e-5);
                struct quant_row_ctx rc = { fmt, wq, NULL, x, b, mg, k };
                expect_rows_alone("gemv blocks row alone", layout, y, mg, n, quant_row, &rc);
                free(gs);
            }
            /* against the dequantized product: per block |Δx| ≤ d/2 with d = amax/127 (rounded to f16, ≤ 2^-11 more) */
            ek_gemm_q8_0(fmt, wq, x, NULL, y, m, n, k, EK_EPI_STORE);
            for (long i = 0; i < m; i++)
                for (long c = 0; c < n; c++) {
                    double acc = 0, bound = 0;
                    for (long j0 = 0; j0 < k; j0 += 32) {
                        double amax = 0, aw = 0;
                        for (long j = j0; j < k && j < j0 + 32; j++) {
                            acc += (double)x[i * k + j] * wd[c * k + j];
                            aw += fabs(wd[c * k + j]);
                            if (fabs(x[i * k + j]) > amax) amax = fabs(x[i * k + j]);
                        }
                        double sx = 0, wmax = 0;   /* Q4_1: the q8_1 sum s is rounded to f16 (≤ 2^-11 · |s| · |m|) */
                        for (long j = j0; j < k && j < j0 + 32; j++) {
                            sx += x[i * k + j];
                            if (fabs(wd[c * k + j]) > wmax) wmax = fabs(wd[c * k + j]);
                        }
                        bound += amax / 127 * (1 + 1.0 / 1024) / 2 * aw + (fabs(sx) + 32 * amax / 127) * wmax / 1024;
                    }
                    want[i * n + c] = acc;
                    sc[i * n + c] = (bound + 1e-5 * (fabs(acc) + 1)) * (1 + 1e-6);
                }
            expect_close("gemm_q8_0 vs fp32", base * 10 + layout, y, want, sc, m * n, 1.0);
        }
      }
        free(w); free(x); free(b); free(y0); free(q); free(qx); free(wd); free(y); free(r); free(want); free(sc);
    }
    g_checks++;
    if (ek_gemm_q8_0(EK_WF_Q6_K, NULL, NULL, NULL, NULL, 1, 1, 272, EK_EPI_STORE) != -1) { printf("FAIL gemm_q8_0: Q6_K with k %% 256 != 0 accepted\n"); g_failures++; }
    g_checks++;
    if (ek_gemm_q8_0(EK_WF_BF16, NULL, NULL, NULL, NULL, 1, 1, 256, EK_EPI_STORE) != -1) { printf("FAIL gemm_q8_0: bf16 accepted\n"); g_failures++; }
    g_checks++;
    if (ek_gemm_q8_0(EK_WF_Q4_K, NULL, NULL, NULL, NULL, 1, 1, 300, EK_EPI_STORE) != -1) { printf("FAIL gemm_q8_0: Q4_K with k %% 256 != 0 accepted\n"); g_failures++; }
    report("gemm_q8_0", ek_gemm_int8_path());
}

/* The bf16 prompt GEMM (gemm_int8.c) vs its twin (sums in double), every epilogue, k a multiple of 16 (the
 * transposing pack) and not: 1e-5 · (Σ|x_b·w| + |bias| + |old y|) per output (GELU: plus its kernel's 1e-5). */
static void test_gemm_bf16(void) {
    /* ragged m (calls of 1–8 rows, over one or two 96-row blocks), n across panels (tasks of 1–3 panels on 2
       threads: the two-panel tile and a lone last panel), k odd / not a multiple of 16 (scalar pack) / over the
       256-value k block with k % 16 == 0 (accumulators kept across blocks, the transposing pack) */
    static const long shapes[][3] = { { 1, 1, 1 }, { 5, 17, 37 }, { 13, 33, 64 }, { 97, 40, 160 }, { 20, 300, 70 },
                                       { 6, 40, 512 }, { 7, 17, 272 }, { 10, 33, 288 }, { 100, 300, 512 },
                                       { 13, 160, 272 } };
    for (long si = 0; si < 10; si++) {
        long m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        float *wf = frand(n * k, 1), *x = frand(m * k, 3), *b = frand(n, 1), *y0 = frand(m * n, 1);
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)(n * k)), *xb = malloc(sizeof(uint16_t) * (size_t)k);
        float *y = malloc(sizeof(float) * m * n), *r = malloc(sizeof(float) * m * n);
        double *want = malloc(sizeof(double) * m * n), *sc = malloc(sizeof(double) * m * n);
        ek_f32_to_bf16(wf, w, n * k);
        for (int epi = EK_EPI_STORE; epi <= EK_EPI_RELU; epi++) {
            memcpy(y, y0, sizeof(float) * m * n); memcpy(r, y0, sizeof(float) * m * n);
            g_checks++;
            if (ek_gemm_bf16(w, x, si % 2 ? NULL : b, y, m, n, k, epi) != 0) { printf("FAIL gemm_bf16: rc\n"); g_failures++; }
            ek_gemm_bf16_ref(w, x, si % 2 ? NULL : b, r, m, n, k, epi);
            for (long i = 0; i < m; i++) {
                ek_f32_to_bf16(x + i * k, xb, k);
                for (long c = 0; c < n; c++) {
                    double s = 0;
                    for (long j = 0; j < k; j++) {
                        float xv, wv; uint32_t u = (uint32_t)xb[j] << 16, v = (uint32_t)w[c * k + j] << 16;
                        memcpy(&xv, &u, 4); memcpy(&wv, &v, 4);
                        s += fabs((double)xv * wv);
                    }
                    want[i * n + c] = r[i * n + c];
                    sc[i * n + c] = s + (si % 2 ? 0 : fabs(b[c])) + (epi == EK_EPI_ACCUMULATE ? fabs(y0[i * n + c]) : 0)
                                    + (epi == EK_EPI_GELU ? fabs(r[i * n + c]) + 1 : 0);
                }
            }
            expect_close("gemm_bf16", si * 4 + epi, y, want, sc, m * n, 1e-5);
        }
        free(wf); free(x); free(b); free(y0); free(w); free(xb); free(y); free(r); free(want); free(sc);
    }
    {   /* ek_gemm_bf16_multi: 70 matrices (two batches of the pool job), empty ones among them, biases on some: every
           output has the bytes of its own ek_gemm_bf16 call */
        enum { COUNT = 70 };
        long m = 9, k = 40, n[COUNT];
        const uint16_t *w[COUNT]; const float *b[COUNT]; float *y[COUNT], *r[COUNT];
        float *x = frand(m * k, 2);
        for (long j = 0; j < COUNT; j++) {
            n[j] = j % 11 == 5 ? 0 : 1 + (j * 7) % 37;
            float *wf = frand(n[j] * k, 1);
            uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)(n[j] * k + 1));
            ek_f32_to_bf16(wf, wb, n[j] * k);
            free(wf);
            w[j] = wb;
            b[j] = j % 3 ? frand(n[j], 1) : NULL;
            y[j] = malloc(sizeof(float) * (size_t)(m * n[j] + 1));
            r[j] = malloc(sizeof(float) * (size_t)(m * n[j] + 1));
        }
        g_checks++;
        if (ek_gemm_bf16_multi(COUNT, w, b, y, n, x, m, k, EK_EPI_RELU) != 0) { printf("FAIL gemm_bf16_multi: rc\n"); g_failures++; }
        long differ = 0;
        for (long j = 0; j < COUNT; j++) {
            ek_gemm_bf16(w[j], x, b[j], r[j], m, n[j], k, EK_EPI_RELU);
            differ += memcmp(y[j], r[j], sizeof(float) * (size_t)(m * n[j])) != 0;
        }
        g_checks++;
        if (differ) { printf("FAIL gemm_bf16_multi: %ld of %d matrices differ from their own calls\n", differ, COUNT); g_failures++; }
        for (long j = 0; j < COUNT; j++) { free((void *)w[j]); free((void *)b[j]); free(y[j]); free(r[j]); }
        free(x);
    }
    /* ek_gemm_bf16_to_bf16 → ek_gemm_bf16_xb (an MLP's two matrices with bf16 rows between them): the rows have the
       bytes of ek_f32_to_bf16 over ek_gemm_bf16's result, zeros in the padding (garbage before), and the second
       product the bytes of ek_gemm_bf16 on the widened rows; the same shapes, every epilogue but ACCUMULATE */
    for (long si = 0; si < 10; si++) {
        long m = shapes[si][0], n = shapes[si][1], k = shapes[si][2], ld = (n + 15) / 16 * 16, n2 = 1 + (si * 13) % 40;
        float *wf = frand(n * k, 1), *x = frand(m * k, 3), *b = frand(n, 1), *wf2 = frand(n2 * n, 1), *bz = frand(n2, 2);
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)(n * k)), *w2 = malloc(sizeof(uint16_t) * (size_t)(n2 * n));
        uint16_t *yb = malloc(sizeof(uint16_t) * (size_t)(m * ld)), *want = malloc(sizeof(uint16_t) * (size_t)(m * ld));
        float *y = malloc(sizeof(float) * m * n), *wide = malloc(sizeof(float) * m * n);
        float *z = malloc(sizeof(float) * m * n2), *zr = malloc(sizeof(float) * m * n2);
        ek_f32_to_bf16(wf, w, n * k);
        ek_f32_to_bf16(wf2, w2, n2 * n);
        for (int epi = EK_EPI_STORE; epi <= EK_EPI_RELU; epi++) {
            if (epi == EK_EPI_ACCUMULATE) continue;
            memset(yb, 0xA5, sizeof(uint16_t) * (size_t)(m * ld));
            g_checks++;
            if (ek_gemm_bf16_to_bf16(w, x, si % 2 ? NULL : b, yb, ld, m, n, k, epi) != 0) { printf("FAIL gemm_bf16_to_bf16: rc\n"); g_failures++; }
            ek_gemm_bf16(w, x, si % 2 ? NULL : b, y, m, n, k, epi);
            memset(want, 0, sizeof(uint16_t) * (size_t)(m * ld));
            for (long i = 0; i < m; i++) ek_f32_to_bf16(y + i * n, want + i * ld, n);
            g_checks++;
            if (memcmp(yb, want, sizeof(uint16_t) * (size_t)(m * ld)) != 0) {
                printf("FAIL gemm_bf16_to_bf16: shape %ld epilogue %d differs from rounding ek_gemm_bf16's rows\n", si, epi);
                g_failures++;
            }
            for (long i = 0; i < m; i++)
                for (long c = 0; c < n; c++) { uint32_t u = (uint32_t)yb[i * ld + c] << 16; memcpy(wide + i * n + c, &u, 4); }
            const int epi2 = (epi + (int)si) % 4;   /* the second GEMM: every epilogue across the shapes, bias on some */
            const float *b2 = si % 3 ? bz : NULL;
            for (long i = 0; i < m * n2; i++) z[i] = zr[i] = (float)(i % 7) * 0.25f;   /* the residual ACCUMULATE adds to */
            g_checks++;
            if (ek_gemm_bf16_xb(w2, yb, b2, z, m, n2, n, epi2) != 0) { printf("FAIL gemm_bf16_xb: rc\n"); g_failures++; }
            ek_gemm_bf16(w2, wide, b2, zr, m, n2, n, epi2);
            g_checks++;
            if (memcmp(z, zr, sizeof(float) * (size_t)(m * n2)) != 0) {
                printf("FAIL gemm_bf16_xb: shape %ld epilogues %d / %d differ from ek_gemm_bf16 on the widened rows\n", si, epi, epi2);
                g_failures++;
            }
        }
        free(wf); free(x); free(b); free(wf2); free(bz); free(w); free(w2); free(yb); free(want); free(y); free(wide); free(z); free(zr);
    }
    g_checks++;
    if (ek_gemm_bf16_to_bf16(NULL, NULL, NULL, (uint16_t *)1, 16, 1, 1, 1, EK_EPI_ACCUMULATE) != -1) { printf("FAIL gemm_bf16_to_bf16: ACCUMULATE accepted\n"); g_failures++; }
    g_checks++;
    if (ek_gemm_bf16_to_bf16(NULL, NULL, NULL, (uint16_t *)1, 16, 1, 17, 1, EK_EPI_STORE) != -1) { printf("FAIL gemm_bf16_to_bf16: ldyb < n accepted\n"); g_failures++; }
    g_checks++;
    if (ek_gemm_bf16(NULL, NULL, NULL, NULL, 1, 1, 1, 99) != -1) { printf("FAIL gemm_bf16: bad epilogue accepted\n"); g_failures++; }
    report("gemm_bf16", ek_gemm_bf16_path());
}

/* Long-query attention with bf16 products (gemm_int8.c) vs its twin (sums in double). Queries and keys are eighths
 * of small integers, so every score is exact on both paths and the fp32 softmax between the products gets the same
 * inputs (no probability rounds to a different bf16 on one side); values are random: 1e-5 · max|v| per output
 * (a convex sum of bf16 values). Ragged query blocks (1–8-row tiles), keys (visible < nk, one or more 32-key
 * panels), head sizes (odd, not a multiple of 16 or 32), GQA heads, a key mask, a causal offset, T5's relative bias;
 * infinite values in the first key past the visible ones (odd visible: it shares the last pair) and nothing written
 * past head_dim. */
static void test_attention_bf16(void) {
    static const long shapes[][4] = { { 1, 1, 1, 2 }, { 5, 17, 17, 64 }, { 8, 33, 20, 48 }, { 37, 100, 97, 64 },
                                       { 128, 512, 512, 64 }, { 13, 40, 40, 80 }, { 9, 70, 65, 30 }, { 3, 31, 31, 7 },
                                       { 20, 64, 33, 128 } };
    for (long si = 0; si < 9; si++) {
        long bq = shapes[si][0], nk = shapes[si][1], visible = shapes[si][2], d = shapes[si][3], heads = 2;
        long stride = heads * d + 3, len = ek_attn_bf16_packed_len(nk, d);
        float *q = malloc(sizeof(float) * (size_t)(bq * stride)), *k = malloc(sizeof(float) * (size_t)(nk * stride));
        float *v = frand(nk * stride, 2), *bias = frand(bq + nk, 1);
        for (long i = 0; i < bq * stride; i++) q[i] = (float)((int)(urand() * 6.99f)) / 8;   /* -6/8 … 6/8 */
        for (long i = 0; i < nk * stride; i++) k[i] = (float)((int)(urand() * 6.99f)) / 8;
        uint16_t *pk = malloc(sizeof(uint16_t) * (size_t)(heads * len)), *pv = malloc(sizeof(uint16_t) * (size_t)(heads * len));
        uint8_t *keep = malloc((size_t)nk);
        for (long j = 0; j < nk; j++) keep[j] = (j % 7) != 3;
        float *y = malloc(sizeof(float) * (size_t)(bq * stride)), *r = malloc(sizeof(float) * (size_t)(bq * stride));
        double *want = malloc(sizeof(double) * (size_t)(bq * d)), *sc = malloc(sizeof(double) * (size_t)(bq * d));
        double vmax = 0;
        for (long i = 0; i < nk * stride; i++) vmax = fabs(v[i]) > vmax ? fabs(v[i]) : vmax;
        /* the first key past the visible ones holds infinities: no block may read it (0 · inf is NaN) */
        if (visible < nk) for (long i = 0; i < stride; i++) v[visible * stride + i] = INFINITY;
        g_checks++;
        if (ek_attn_bf16_pack(k, v, stride, nk, heads, d, pk, pv) != 0) { printf("FAIL attention_bf16: pack rc\n"); g_failures++; }
        for (int mode = 0; mode < 3; mode++)   /* plain; key mask + causal offset; relative bias */
            for (long g = 0; g < heads; g++) {
                const uint8_t *kk = mode == 1 ? keep : NULL;
                long causal = mode == 1 ? visible - bq : -1;
                const float *b = mode == 2 ? bias : NULL;
                float div = mode == 2 ? 1 : sqrtf((float)d);
                for (long i = 0; i < bq * stride; i++) y[i] = 12345.0f;   /* sentinels: columns past d stay */
                g_checks++;
                if (ek_attention_block_bf16(q + g * d, stride, bq, pk + g * len, pv + g * len, nk, visible, d, b, div, kk,
                                            causal, y, stride) != 0) { printf("FAIL attention_bf16: rc\n"); g_failures++; }
                long spilled = 0;
                for (long t = 0; t < bq; t++)
                    for (long e = d; e < stride; e++) spilled += y[t * stride + e] != 12345.0f;
                g_checks++;
                if (spilled) { printf("FAIL attention_bf16: case %ld wrote %ld values past head_dim\n", si, spilled); g_failures++; }
                ek_attention_block_bf16_ref(q + g * d, stride, bq, pk + g * len, pv + g * len, nk, visible, d, b, div, kk,
                                            causal, r, stride);
                float *got = malloc(sizeof(float) * (size_t)(bq * d));
                for (long t = 0; t < bq; t++)
                    for (long e = 0; e < d; e++) {
                        got[t * d + e] = y[t * stride + e];
                        want[t * d + e] = r[t * stride + e];
                        sc[t * d + e] = vmax;
                    }
                expect_close("attention_bf16", si * 8 + mode * 2 + g, got, want, sc, bq * d, 1e-5);
                free(got);
            }
        free(q); free(k); free(v); free(bias); free(pk); free(pv); free(keep); free(y); free(r); free(want); free(sc);
    }
    g_checks++;
    if (ek_attention_block_bf16(NULL, 1, 1, NULL, NULL, 4, 5, 8, NULL, 1, NULL, -1, NULL, 1) != -1) {
        printf("FAIL attention_bf16: visible > nk accepted\n");
        g_failures++;
    }
    report("attention_bf16", ek_attn_bf16_available() ? "avx512bf16" : "scalar");
}

/* every path this CPU has (int8 rows and Q8_0 blocks): on arm64 the SDOT and the SMULL tiles, on x86-64 the
 * AVX512-VNNI, AVX-VNNI and AVX2 tiles (each level of ek_set_isa_limit whose path differs from the level above) */
static void test_gemm_int8(void) {
    test_gemm_int8_once();
    test_gemm_q8_0();
    test_gemm_bf16();
    test_attention_bf16();
#if defined(__x86_64__)
    if (!ek_get_force_reference()) {
        char last[16];
        snprintf(last, sizeof last, "%s", ek_gemm_int8_path());
        for (int level = EK_ISA_AVX512 - 1; level >= EK_ISA_AVX2; level--) {
            ek_set_isa_limit(level);
            if (strcmp(ek_gemm_int8_path(), last) != 0) {
                snprintf(last, sizeof last, "%s", ek_gemm_int8_path());
                test_gemm_int8_once();
                test_gemm_q8_0();
            }
        }
        ek_set_isa_limit(-1);
    }
#if !defined(EK_EMULATED_FEATURES)
    /* outputs written with non-temporal stores at every size (by default only calls with ≥ 4 MiB of outputs, on Intel):
       the same floats, stored and ReLU'd (the other epilogues keep ordinary stores) */
    if (!ek_get_force_reference()) {
        const char *mode = g_mode;
        int before = ek_get_gemm_stream_outputs();
        g_mode = "streamed outputs";
        ek_set_gemm_stream_outputs(1);
        test_gemm_int8_once();
        test_gemm_q8_0();
        ek_set_gemm_stream_outputs(before);
        g_mode = mode;
    }
#endif
#endif
#if defined(__aarch64__)
    if (!ek_get_force_reference()) {
        ek_set_isa_limit(EK_ISA_AVX2);
        expect_str("ek_gemm_int8_path() at limit AVX2", ek_gemm_int8_path(), "neon");
        test_gemm_int8_once();
        test_gemm_q8_0();
        ek_set_isa_limit(-1);
        expect_str("ek_gemm_int8_path()", ek_gemm_int8_path(), (ek_cpu_features() & EK_CPU_NEON_DOTPROD) ? "neon-dotprod" : "neon");
    }
#endif
}

int main(void) {
    ek_set_threads(2);
    int f = ek_cpu_features();
    /* the decode GEMVs' default width follows the CPU (ymm on Zen 4, ek_cpu_splits_zmm); every check below runs the
       zmm kernels at the AVX-512 level, so both widths are covered whatever the CPU (the ymm ones at the AVX2 level) */
    g_checks++;
    const char *ymm_env = getenv("EK_GEMV_YMM");   /* "0" / "1" decide; anything else leaves the CPU's rule */
    if (ek_get_gemv_ymm() != (ymm_env && (ymm_env[0] == '0' || ymm_env[0] == '1') ? ymm_env[0] == '1' : ek_cpu_splits_zmm())) {
        printf("FAIL ek_get_gemv_ymm() default\n"); g_failures++;
    }
    g_checks++;
    if (ek_cpu_splits_zmm() && !(f & EK_CPU_AVX512F)) { printf("FAIL ek_cpu_splits_zmm() without AVX-512F\n"); g_failures++; }
    ek_set_gemv_ymm(0);
    g_checks++;   /* software prefetch in the decode kernels: off by default where zmm is split (Zen 4), else on */
    const char *pf_env = getenv("EK_GEMV_PREFETCH");
    if (ek_get_gemv_prefetch() != (pf_env && (pf_env[0] == '0' || pf_env[0] == '1') ? pf_env[0] == '1' : !ek_cpu_splits_zmm())) {
        printf("FAIL ek_get_gemv_prefetch() default\n"); g_failures++;
    }
    ek_set_gemv_prefetch(1);   /* the prefetching kernels run below (the results do not depend on it) */
#if defined(__aarch64__)
    const char *simd = "neon";
    const char *int8_path = (f & EK_CPU_NEON_DOTPROD) ? "neon-dotprod" : "neon";
    printf("kernel_parity: arm64, features 0x%x (neon%s)\n", f, (f & EK_CPU_NEON_DOTPROD) ? ", dotprod" : "");
#elif defined(__x86_64__)
    const char *simd = (f & EK_CPU_AVX2_FMA) ? "avx2" : "scalar";
    const char *int8_path = NULL;
    printf("kernel_parity: x86-64, features 0x%x\n", f);
#else
    const char *simd = "scalar", *int8_path = NULL;
    printf("kernel_parity: generic target, features 0x%x\n", f);
#endif
    expect_str("ek_kernel_path()", ek_kernel_path(), simd);
#if defined(__aarch64__)
    expect_str("ek_gemv_path(f32)", ek_gemv_path(EK_WF_F32), "neon");
    expect_str("ek_gemv_path(bf16)", ek_gemv_path(EK_WF_BF16), "neon");
    expect_str("ek_gemv_path(int8)", ek_gemv_path(EK_WF_INT8), int8_path);
    ek_set_isa_limit(EK_ISA_AVX2);
    expect_str("ek_gemv_path(int8) at limit AVX2", ek_gemv_path(EK_WF_INT8), "neon");
    ek_set_isa_limit(-1);
#endif
#if defined(__x86_64__)
    /* the paths this CPU's features select (in the emulated build, the features SIMDe stands in for), so a build
       that silently ran AVX2 everywhere would fail here */
    if (f & EK_CPU_AVX2_FMA) {
        int avx512 = (f & EK_CPU_AVX512F) && (f & EK_CPU_AVX512BWVL), f16c = f & EK_CPU_F16C;
        const char *want_int = avx512 && (f & EK_CPU_AVX512VNNI) && f16c ? "avx512vnni"
                             : (f & EK_CPU_AVXVNNI) && f16c ? "avxvnni" : f16c ? "avx2" : "scalar";
        const char *want_bf16 = avx512 && (f & EK_CPU_AVX512BF16) ? "avx512bf16"
                              : avx512 && f16c ? "avx512f" : f16c ? "avx2" : "scalar";
        expect_str("ek_gemv_path(int8)", ek_gemv_path(EK_WF_INT8), want_int);
        expect_str("ek_gemv_path(q4_0)", ek_gemv_path(EK_WF_Q4_0), want_int);
        expect_str("ek_gemv_path(bf16)", ek_gemv_path(EK_WF_BF16), want_bf16);
        expect_str("ek_gemv_path(f32)", ek_gemv_path(EK_WF_F32), (f & EK_CPU_AVX512F) ? "avx512f" : "avx2");
        g_checks++;   /* the label and the dispatch are one test (ek_gemv_f32_zmm) */
        if (ek_gemv_f32_zmm() != ((f & EK_CPU_AVX512F) != 0)) { printf("FAIL ek_gemv_f32_zmm() disagrees with the CPU\n"); g_failures++; }
        expect_str("ek_gemm_int8_path()", ek_gemm_int8_path(), want_int);
        expect_str("ek_gemm_bf16_path()", ek_gemm_bf16_path(), f16c && strcmp(want_bf16, "avx512bf16") == 0 ? "avx512bf16" : "scalar");
        ek_set_gemv_ymm(1);   /* fp32, bf16 and int8 GEMVs on ymm; the 4-bit blocks and the prompt GEMMs keep their paths */
        expect_str("ek_gemv_path(int8) on ymm", ek_gemv_path(EK_WF_INT8), avx512 && strcmp(want_int, "avx512vnni") == 0 ? ((f & EK_CPU_AVXVNNI) ? "avxvnni" : "avx2") : want_int);
        expect_str("ek_gemv_path(q4_0) on ymm", ek_gemv_path(EK_WF_Q4_0), want_int);
        expect_str("ek_gemv_path(bf16) on ymm", ek_gemv_path(EK_WF_BF16), avx512 && f16c ? "avx2" : want_bf16);
        expect_str("ek_gemv_path(f32) on ymm", ek_gemv_path(EK_WF_F32), "avx2");
        expect_str("ek_gemm_int8_path() on ymm", ek_gemm_int8_path(), want_int);
        expect_str("ek_gemm_bf16_path() on ymm", ek_gemm_bf16_path(), f16c && strcmp(want_bf16, "avx512bf16") == 0 ? "avx512bf16" : "scalar");
        ek_set_gemv_ymm(0);
        ek_set_isa_limit(EK_ISA_AVXVNNI);
        expect_str("ek_gemm_int8_path() at limit AVX-VNNI", ek_gemm_int8_path(),
                   !f16c ? "scalar" : (f & EK_CPU_AVXVNNI) ? "avxvnni" : "avx2");
        ek_set_isa_limit(EK_ISA_AVX2);
        expect_str("ek_gemm_int8_path() at limit AVX2", ek_gemm_int8_path(), f16c ? "avx2" : "scalar");
        expect_str("ek_gemm_bf16_path() at limit AVX2", ek_gemm_bf16_path(), "scalar");
        expect_str("ek_gemv_path(f32) at limit AVX2", ek_gemv_path(EK_WF_F32), "avx2");
        ek_set_isa_limit(EK_ISA_SCALAR);
        expect_str("ek_gemm_int8_path() at limit SCALAR", ek_gemm_int8_path(), "scalar");
        ek_set_isa_limit(-1);
        if (f & EK_CPU_AVXVNNI) {
            ek_set_isa_limit(EK_ISA_AVXVNNI);
            expect_str("ek_gemv_path(int8) at limit AVX-VNNI", ek_gemv_path(EK_WF_INT8), f16c ? "avxvnni" : "scalar");
            ek_set_isa_limit(-1);
        }
    }
#endif
#if defined(EK_EMULATED_FEATURES)
    {   /* the VNNI / BF16 instruction-peak loops run (under SIMDe: their rates mean nothing here, only that they run) */
        double i8 = ek_peak_int8_gops(), bf = ek_peak_bf16_gflops();
        g_checks++;
        if (!(i8 > 0 && i8 < 1e12) || ((strcmp(ek_gemm_bf16_path(), "avx512bf16") == 0) != (bf > 0 && bf < 1e12))) {
            printf("FAIL peaks: int8 %g, bf16 %g\n", i8, bf);
            g_failures++;
        } else printf("ok   peaks (emulated %s%s loops ran)\n", ek_gemm_int8_path(), bf > 0 ? " and vdpbf16ps" : "");
    }
#endif
    (void)int8_path;
    ek_set_isa_limit(EK_ISA_SCALAR);
    expect_str("ek_gemv_path(int8) at limit SCALAR", ek_gemv_path(EK_WF_INT8), "scalar");
    ek_set_isa_limit(-1);
    ek_set_force_reference(1);
    expect_str("forced ek_kernel_path()", ek_kernel_path(), "scalar");
    expect_str("forced ek_gemv_path(bf16)", ek_gemv_path(EK_WF_BF16), "scalar");
    expect_str("forced ek_gemv_path(int8)", ek_gemv_path(EK_WF_INT8), "scalar");
    ek_set_force_reference(0);

    char seen[16][8][16];
    memset(seen, 0, sizeof seen);
    for (int mode = 0; mode < 2; mode++) {
        ek_set_force_reference(mode);
        g_mode = mode ? "forced scalar" : "dispatched";
        printf("-- %s paths --\n", g_mode);
        test_elementwise();
        test_softmax();
        test_attention();
        test_gemv_f32();
        test_gemv_quant(seen);
        test_gemm_int8();
        if (mode == 0) {
            test_quantize_activations();
            test_quantize_rows();
            test_gemv_tasks_setting();
            ek_set_isa_limit(EK_ISA_AVX2);   /* rows_q4y where x86 has AVX2 (above it the zmm kernels run) */
#if defined(__x86_64__)
            if ((ek_cpu_features() & EK_CPU_AVX2_FMA) && (ek_cpu_features() & EK_CPU_F16C))
                expect_str("q4_0x8 runs rows_q4y at the AVX2 cap", ek_q4y_runs(EK_WF_Q4_0X8) ? "yes" : "no", "yes");
#endif
            test_q4_int16_bound();
            ek_set_isa_limit(-1);
            test_q4_int16_bound();
#if defined(__aarch64__)
            /* the NEON int8 paths must actually have run */
            char joined[64];
            snprintf(joined, sizeof joined, "%s,%s", seen[EK_WF_INT8][EK_ISA_AVX2], seen[EK_WF_INT8][EK_ISA_AVX512]);
            char want[64];
            snprintf(want, sizeof want, "neon,%s", int8_path);
            expect_str("int8 paths exercised", joined, want);
            expect_str("bf16 path exercised", seen[EK_WF_BF16][EK_ISA_AVX512], "neon");
#endif
        }
    }
    ek_set_force_reference(0);
    printf("kernel_parity: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
