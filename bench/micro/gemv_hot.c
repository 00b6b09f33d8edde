/* Decode GEMV rate on hot weights: one m×k matrix small enough for the caches, the same call repeated, best of 15
 * passes of REPS calls (default 300), GB/s of weights read. What the kernel's own instructions allow, with memory out
 * of the way: where it is below what the cores stream from DRAM (bench/micro/gemv_cold.c), the kernel, not memory,
 * bounds a decode step. THREADS=n sets the threads (default 1). Formats as gemv_cold.c: f32, bf16, int8, q8_0, q4_0,
 * q4_1, q8_0x8, q4_0x8, q4_1x8. Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/gemv_hot.c Sources/EncoreKernels/[a-z]*.c -lm -lpthread \
 *       -o /tmp/gemv_hot
 *   /tmp/gemv_hot 512 960 int8        # 480 KB of int8 rows: in one core's L2
 *   EK_INT8_ZMM=0 /tmp/gemv_hot 512 960 int8   # the x8 group kernel instead of the int8 rows' own
 * Session 26 (AMD EPYC Zen 3, AVX2, 1 thread): see bench/README.md "Session 26".
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static const char *const names[] = { "f32", "bf16", "int8", "q8_0", "q4_0", "q4_1", "q8_0x8", "q4_0x8", "q4_1x8" };
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s m k [format]\n", argv[0]); return 2; }
    long m = atol(argv[1]), k = atol(argv[2]);
    const char *name = argc > 3 ? argv[3] : "f32";
    int fmt = -1;
    for (int f = 0; f < 9; f++) if (!strcmp(name, names[f])) fmt = f;
    if (fmt < 0 || m < 1 || k < 1) { fprintf(stderr, "bad shape or unknown format %s\n", name); return 2; }
    int reps = getenv("REPS") ? atoi(getenv("REPS")) : 300;
    if (reps < 1) reps = 1;
    ek_set_threads(getenv("THREADS") ? atoi(getenv("THREADS")) : 1);
    long row = fmt == EK_WF_F32 ? 4 * k : ek_quant_row_bytes(fmt, k);
    float *src = malloc(sizeof(float) * m * k), *scales = malloc(sizeof(float) * m);
    float *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * m);
    char *w = aligned_alloc(64, (size_t)((m * row + 63) & ~63L));
    if (!src || !scales || !x || !y || !w) { fprintf(stderr, "out of memory\n"); return 1; }
    for (long i = 0; i < m * k; i++) src[i] = (float)(i % 97) * 1e-3f - 0.04f;
    for (long i = 0; i < k; i++) x[i] = 1e-2f * (float)(i % 7);
    if (fmt == EK_WF_F32) memcpy(w, src, sizeof(float) * m * k);
    else if (fmt >= EK_WF_Q8_0X8) {   /* ggml order, then regrouped in place */
        ek_quantize_rows(fmt - EK_WF_Q8_0X8 + EK_WF_Q8_0, src, w, scales, m, k);
        ek_repack_x8(fmt, w, w, m, k);
    } else ek_quantize_rows(fmt, src, w, scales, m, k);
    double best = 1e9;
    for (int p = 0; p < 15; p++) {
        double t = now();
        for (int r = 0; r < reps; r++) {
            if (fmt == EK_WF_F32) ek_gemv_f32((const float *)w, x, NULL, y, 1, m, k);
            else ek_gemv_quant(fmt, w, scales, x, NULL, y, 1, m, k);
        }
        t = now() - t;
        if (t < best) best = t;
    }
    printf("%s %ldx%ld (%.0f KB), %s: %.1f GB/s, %.2f us a call (y[0] %g)\n", name, m, k, m * row / 1e3,
           ek_gemv_path(fmt), (double)m * row * reps / best / 1e9, best / reps * 1e6, y[0]);
    return 0;
}
