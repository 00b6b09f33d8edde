/* Decode GEMV rate on cold weights: as many m×k matrices as fill 512 MiB of fp32 (same count in bf16), one
 * ek_gemv_f32 / ek_gemv_bf16 call after another, best of 10 passes, GB/s of weights read. THREADS=n sets the
 * threads (default 2); the first argument 1 puts the weights in transparent huge pages (madvise), 0 forbids them.
 * Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/gemv_cold.c Sources/EncoreKernels/[a-z]*.c -lm -lpthread \
 *       -o /tmp/gemv_cold
 *   /tmp/gemv_cold 0 5120 960 bf16      # huge-pages m k [bf16]: Llama-362M's gate/up
 *   /tmp/gemv_cold 0 1024 1024          # fp32
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s huge(0|1) m k [bf16]\n", argv[0]); return 2; }
    int huge = atoi(argv[1]); long m = atol(argv[2]), k = atol(argv[3]); int bf = argc > 4 && !strcmp(argv[4], "bf16");
    ek_set_threads(getenv("THREADS") ? atoi(getenv("THREADS")) : 2);
    long nmat = (512L << 20) / (m * k * 4), elt = bf ? 2 : 4;
    if (nmat < 1) nmat = 1;
    size_t bytes = (size_t)nmat * m * k * elt, r = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    char *w = aligned_alloc(2u << 20, r);
    madvise(w, r, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    if (bf) for (size_t i = 0; i < bytes / 2; i++) ((uint16_t *)w)[i] = (uint16_t)(0x3c00 + i % 13);
    else for (size_t i = 0; i < bytes / 4; i++) ((float *)w)[i] = (float)(i % 97) * 1e-3f;
    float *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * m);
    for (long i = 0; i < k; i++) x[i] = 1e-2f * (float)(i % 7);
    double best = 1e9;
    for (int rep = 0; rep < 10; rep++) {
        double t = now();
        for (long j = 0; j < nmat; j++) {
            if (bf) ek_gemv_bf16((const uint16_t *)(w + j * m * k * elt), x, NULL, y, 1, m, k);
            else ek_gemv_f32((const float *)(w + j * m * k * elt), x, NULL, y, 1, m, k);
        }
        t = now() - t;
        if (t < best) best = t;
    }
    printf("huge=%d %s %ldx%ld x%ld: %.1f GB/s\n", huge, bf ? "bf16" : "f32", m, k, nmat, (double)bytes / best / 1e9);
    return 0;
}
