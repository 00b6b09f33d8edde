/* Decode GEMV rate on cold weights: as many m×k matrices as fill 512 MiB of fp32 (the same count in every format),
 * one ek_gemv_f32 / ek_gemv_quant call after another, best of 10 passes, GB/s of weights read. THREADS=n sets the
 * threads (default 2); the first argument 1 puts the weights in transparent huge pages (madvise), 0 forbids them.
 * Formats: f32 (default), bf16, int8, q8_0, q4_0, q4_1, q5_0, q5_1 (ggml rows), q8_0x8, q4_0x8, q4_1x8, q5_0x8, q5_1x8
 * (the decode layouts),
 * q4_K, q5_K, q6_K (bytes 0x11: every f16 scale a small normal number; the speed does not depend on the values).
 * Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/gemv_cold.c Sources/EncoreKernels/[a-z]*.c -lm -lpthread \
 *       -o /tmp/gemv_cold
 *   /tmp/gemv_cold 0 5120 960 bf16      # huge-pages m k [format]: Llama-362M's gate/up
 *   /tmp/gemv_cold 0 1024 1024          # fp32
 * Session 10 (2026-11-30, this VM, 2 threads, 3 runs each): bf16 2560×960 16.5–17.6 GB/s with one row at a time,
 * 19–26 with four rows from four quarters of each thread's range walked side by side; fp32 20–23 → 18–29.
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static const char *const names[] = { "f32", "bf16", "int8", "q8_0", "q4_0", "q4_1", "q8_0x8", "q4_0x8", "q4_1x8", "q4_K",
                                      "q5_K", "q6_K", "q5_0", "q5_1", "q5_0x8", "q5_1x8" };
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s huge(0|1) m k [format]\n", argv[0]); return 2; }
    int huge = atoi(argv[1]), fmt = -1;
    long m = atol(argv[2]), k = atol(argv[3]);
    const char *name = argc > 4 ? argv[4] : "f32";
    for (int f = 0; f < 16; f++) if (!strcmp(name, names[f])) fmt = f;
    if (fmt < 0) { fprintf(stderr, "unknown format %s\n", name); return 2; }
    ek_set_threads(getenv("THREADS") ? atoi(getenv("THREADS")) : 2);
    long nmat = ((getenv("MIB") ? atol(getenv("MIB")) : 512L) << 20) / (m * k * 4), row = fmt == EK_WF_F32 ? 4 * k : ek_quant_row_bytes(fmt, k);
    if (nmat < 1) nmat = 1;
    size_t per = (size_t)m * row, bytes = (size_t)nmat * per, r = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    char *w = aligned_alloc(2u << 20, r);
    float *scales = malloc(sizeof(float) * m * nmat), *src = malloc(sizeof(float) * m * k);
    madvise(w, r, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (long i = 0; i < m * k; i++) src[i] = (float)(i % 97) * 1e-3f - 0.04f;
    for (long j = 0; j < nmat; j++) {
        if (fmt == EK_WF_F32) memcpy(w + j * per, src, per);
        else if (fmt >= EK_WF_Q4_K && fmt <= EK_WF_Q6_K) memset(w + j * per, 0x11, per);
        else if ((fmt >= EK_WF_Q8_0X8 && fmt <= EK_WF_Q4_1X8) || fmt >= EK_WF_Q5_0X8) {   /* ggml order, then regrouped in place */
            int base = fmt >= EK_WF_Q5_0X8 ? fmt - EK_WF_Q5_0X8 + EK_WF_Q5_0 : fmt - EK_WF_Q8_0X8 + EK_WF_Q8_0;
            ek_quantize_rows(base, src, w + j * per, scales + j * m, m, k);
            ek_repack_x8(fmt, w + j * per, w + j * per, m, k);
        } else ek_quantize_rows(fmt, src, w + j * per, scales + j * m, m, k);
    }
    float *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * m);
    for (long i = 0; i < k; i++) x[i] = 1e-2f * (float)(i % 7);
    double best = 1e9;
    for (int rep = 0; rep < 10; rep++) {
        double t = now();
        for (long j = 0; j < nmat; j++) {
            if (fmt == EK_WF_F32) ek_gemv_f32((const float *)(w + j * per), x, NULL, y, 1, m, k);
            else ek_gemv_quant(fmt, w + j * per, scales + j * m, x, NULL, y, 1, m, k);
        }
        t = now() - t;
        if (t < best) best = t;
    }
    printf("huge=%d %s %ldx%ld x%ld: %.1f GB/s\n", huge, name, m, k, nmat, (double)bytes / best / 1e9);
    return 0;
}
