/* A decode step's GEMVs without the rest of the step: Llama-362M's 32 layers (hidden 960, 5 KV heads of 64, FFN 2560),
 * per layer q/k/v in one shared call (ek_gemv_quant_multi), o, gate/up in one shared call, down, as `encore` runs them;
 * against the same bytes in two calls per layer (every matrix of k = 960 stacked into one, then down) and in one call
 * per format over a single matrix of all the layers' bytes. A 512 MiB sweep before each round (weights from DRAM as in a
 * model: 0.2–1.4 GB a step does not fit the L3). Median and best of 15 rounds, GB/s of weights. Shows what the
 * number and size of the calls cost. Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/gemv_layers.c Sources/EncoreKernels/[a-z]*.c -lm -lpthread \
 *       -o /tmp/gemv_layers
 *   /tmp/gemv_layers q4_0x8     # f32 | bf16 | int8 | q8_0x8 | q4_0x8 [layers]
 *   EK_GEMV_TASKS_PER_THREAD=4 /tmp/gemv_layers q4_0x8   # the fewest row ranges per thread (ek_gemv_tasks)
 *   THREADS=1 /tmp/gemv_layers q4_0x8                     # one thread (default 2)
 *   HUGE=1|2|3 /tmp/gemv_layers int8   # weights in transparent huge pages: 1 each matrix 2 MiB-aligned and madvised,
 *                                      # 2 one madvised 4 GiB arena, 3 the arena without madvise (session 27, Zen 3:
 *                                      # no gain; bench/README.md "Session 27")
 * Session 12 (Intel Xeon, 2 threads, 08:40–08:52 UTC, one run each unless noted): Q4_0 as a decode step 9.0–9.9 ms, stacked
 * 8.1–8.6, one call 7.4–8.0 (its 128 calls cost about 14 µs each); int8 13.8–15.2 / 14.4–14.5 / 13.8–14.3; bf16
 * 29.2–31.4 / 29.2–32.4 / 27.8–31.2. Fewest ranges per thread 1 against 4 (the split used on Intel since): Q4_0 step
 * 8.4–9.0 against 9.4–9.9 ms (three pairs), int8 and bf16 within the noise. With the session's final settings
 * (10:05 UTC) Q4_0 8.2–9.2 / 7.7–9.4 / 7.8 ms; on one thread 16.4–16.8 / 16.1–16.6 / 16.7–17.0: one thread pays
 * nothing per call, so what two threads pay is the hand-over between them. See bench/README.md, Session 12.
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static int g_fmt;
static long row_bytes(long k) { return g_fmt == EK_WF_F32 ? 4 * k : ek_quant_row_bytes(g_fmt, k); }

/* n rows of k values in the format (values do not matter for the speed: a fixed pattern, quantized) */
static char *matrix(long n, long k, float **scales) {
    size_t size = (size_t)((n * row_bytes(k) + 63) / 64 * 64);
    char *w;
    static char *arena; static size_t used;
    int huge = getenv("HUGE") ? atoi(getenv("HUGE")) : 0;
    if (huge == 1) {   /* HUGE=1: each matrix 2 MiB-aligned, madvise(MADV_HUGEPAGE) before the first touch */
        size = (size + (2u << 20) - 1) / (2u << 20) * (2u << 20);
        w = aligned_alloc(2u << 20, size);
        madvise(w, size, MADV_HUGEPAGE);
    } else if (huge >= 2) {   /* HUGE=2: one 4 GiB arena, madvise(MADV_HUGEPAGE); HUGE=3: the same arena without it */
        if (!arena) {
            arena = mmap(NULL, 4ul << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (arena == MAP_FAILED) { fprintf(stderr, "HUGE=%d: cannot map a 4 GiB arena\n", huge); exit(1); }
            if (huge == 2) madvise(arena, 4ul << 30, MADV_HUGEPAGE);
        }
        if (used + size > (4ul << 30)) { fprintf(stderr, "HUGE=%d: the weights pass the 4 GiB arena (fewer layers)\n", huge); exit(1); }
        w = arena + used;
        used += size;
    } else {
        w = aligned_alloc(64, size);
    }
    *scales = malloc(sizeof(float) * n);
    float *src = malloc(sizeof(float) * k);
    for (long i = 0; i < k; i++) src[i] = (float)(i % 97) * 1e-3f - 0.04f;
    int base = g_fmt >= EK_WF_Q8_0X8 ? g_fmt - EK_WF_Q8_0X8 + EK_WF_Q8_0 : g_fmt;
    for (long r = 0; r < n; r++) {
        if (g_fmt == EK_WF_F32) memcpy(w + r * row_bytes(k), src, 4 * k);
        else ek_quantize_rows(base, src, w + r * row_bytes(k), *scales + r, 1, k);
    }
    if (g_fmt >= EK_WF_Q8_0X8) ek_repack_x8(g_fmt, w, w, n, k);
    free(src);
    return w;
}

static void gemv(const char *w, const float *s, const float *x, float *y, long n, long k) {
    if (g_fmt == EK_WF_F32) ek_gemv_f32((const float *)w, x, NULL, y, 1, n, k);
    else ek_gemv_quant(g_fmt, w, s, x, NULL, y, 1, n, k);
}

int main(int argc, char **argv) {
    static const char *const names[] = { "f32", "bf16", "int8", "q8_0", "q4_0", "q4_1", "q8_0x8", "q4_0x8", "q4_1x8" };
    if (argc < 2) { fprintf(stderr, "usage: gemv_layers f32|bf16|int8|q8_0x8|q4_0x8 [layers]\n"); return 2; }
    g_fmt = -1;
    for (int f = 0; f < 9; f++) if (!strcmp(argv[1], names[f])) g_fmt = f;
    if (g_fmt < 0 || g_fmt == EK_WF_Q8_0 || g_fmt == EK_WF_Q4_0 || g_fmt == EK_WF_Q4_1) { fprintf(stderr, "format?\n"); return 2; }
    long L = argc > 2 ? atol(argv[2]) : 32, C = 960, KV = 320, F = 2560;
    if (L < 1 || L > 64) { fprintf(stderr, "layers: 1 to 64\n"); return 2; }
    ek_set_threads(getenv("THREADS") ? atoi(getenv("THREADS")) : 2);   /* THREADS=1: no hand-over between threads */
    /* per layer: q, k, v, o, gate, up (k = C); down (k = F); and the stacked twin: all k = C rows in one, down */
    const long nq[6] = { C, KV, KV, C, F, F };
    char *w[64][7], *st[64]; float *s[64][7], *ss[64];
    long stacked = C + KV + KV + C + F + F;
    for (long l = 0; l < L; l++) {
        for (int j = 0; j < 6; j++) w[l][j] = matrix(nq[j], C, &s[l][j]);
        w[l][6] = matrix(C, F, &s[l][6]);
        st[l] = matrix(stacked, C, &ss[l]);
    }
    long bytes_layer = stacked * row_bytes(C) + C * row_bytes(F), total = L * bytes_layer;
    long big_rows = total / row_bytes(C);
    float *sbig; char *big = matrix(big_rows, C, &sbig);
    float *x = malloc(sizeof(float) * F), *y = malloc(sizeof(float) * (big_rows > 8 * F ? big_rows : 8 * F));
    for (long i = 0; i < F; i++) x[i] = 1e-2f * (float)(i % 7);
    long sw = 128L << 20; float *sweep = malloc(sizeof(float) * sw);
    for (long i = 0; i < sw; i++) sweep[i] = 1;
    double t3[3][15]; volatile float sink = 0;
    for (int r = 0; r < 15; r++)
        for (int mode = 0; mode < 3; mode++) {
            sink += ek_sum_f32(sweep, sw);
            double t = now();
            for (long l = 0; l < L && mode < 2; l++) {
                if (mode == 0) {   /* as a decode step calls them */
                    const void *wq[3] = { w[l][0], w[l][1], w[l][2] }, *wg[2] = { w[l][4], w[l][5] };
                    const float *sq[3] = { s[l][0], s[l][1], s[l][2] }, *sg[2] = { s[l][4], s[l][5] };
                    float *yq[3] = { y, y + C, y + C + KV }, *yg[2] = { y, y + F };
                    long n3[3] = { C, KV, KV }, n2[2] = { F, F };
                    if (g_fmt == EK_WF_F32) { gemv(w[l][0], NULL, x, y, C, C); gemv(w[l][1], NULL, x, y, KV, C); gemv(w[l][2], NULL, x, y, KV, C); }
                    else ek_gemv_quant_multi(g_fmt, 3, wq, sq, NULL, yq, n3, x, 1, C);
                    gemv(w[l][3], s[l][3], x, y, C, C);
                    if (g_fmt == EK_WF_F32) { gemv(w[l][4], NULL, x, y, F, C); gemv(w[l][5], NULL, x, y, F, C); }
                    else ek_gemv_quant_multi(g_fmt, 2, wg, sg, NULL, yg, n2, x, 1, C);
                    gemv(w[l][6], s[l][6], x, y, C, F);
                } else {           /* two calls per layer */
                    gemv(st[l], ss[l], x, y, stacked, C);
                    gemv(w[l][6], s[l][6], x, y, C, F);
                }
            }
            if (mode == 2) gemv(big, sbig, x, y, big_rows, C);
            t3[mode][r] = now() - t;
        }
    const char *label[3] = { "as a decode step (4 calls/layer)", "stacked (2 calls/layer)", "one call" };
    printf("%s, %ld layers, %.1f MB of weights:\n", argv[1], L, total / 1e6);
    for (int mode = 0; mode < 3; mode++) {
        qsort(t3[mode], 15, sizeof(double), cmp);
        double b = mode == 2 ? (double)big_rows * row_bytes(C) : (double)total;
        printf("  %-34s median %.3f ms (%.1f GB/s), best %.3f ms (%.1f GB/s)\n", label[mode], t3[mode][7] * 1e3,
               b / t3[mode][7] / 1e9, t3[mode][0] * 1e3, b / t3[mode][0] / 1e9);
    }
    return 0;
}
