/* An MLP's two bf16 prompt GEMMs over cold weights, two ways, alternated layer pass by layer pass:
 *   fp32  ek_gemm_bf16 (GELU) → fp32 hidden rows → ek_gemm_bf16 (rounds them to bf16, accumulates into the residual)
 *   bf16  ek_gemm_bf16_to_bf16 (GELU, rounded while in cache) → bf16 hidden rows → ek_gemm_bf16_xb (accumulates)
 * `layers` (fc1 [h, c], fc2 [c, h]) pairs of bf16 matrices cycled so each pass reads its weights from memory, as a
 * model's encoder does. Prints the median time of a pass over all layers, each way, and their ratio.
 * Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/mlp_bf16_rows.c Sources/EncoreKernels/[a-z]*.c -lm -lpthread \
 *       -o /tmp/mlp_bf16_rows
 *   /tmp/mlp_bf16_rows 512 1024 4096 20 9      # m c h layers rounds: Mu-330M's encoder MLPs
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: mlp_bf16_rows m c h layers rounds\n"); return 2; }
    long m = atol(argv[1]), c = atol(argv[2]), h = atol(argv[3]), layers = atol(argv[4]), rounds = atol(argv[5]);
    ek_set_threads(2);
    long hp = (h + 15) / 16 * 16;
    float *wf = malloc(sizeof(float) * h * c), *x = malloc(sizeof(float) * m * c), *r = malloc(sizeof(float) * m * c);
    float *hid = malloc(sizeof(float) * m * h), *b1 = malloc(sizeof(float) * h), *b2 = malloc(sizeof(float) * c);
    uint16_t *hb = malloc(sizeof(uint16_t) * m * hp), **w1 = malloc(sizeof(void *) * layers), **w2 = malloc(sizeof(void *) * layers);
    srand(1);
    for (long i = 0; i < h * c; i++) wf[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.05f;
    for (long i = 0; i < m * c; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < h; i++) b1[i] = 0.01f * (i % 7);
    for (long i = 0; i < c; i++) b2[i] = 0.01f * (i % 5);
    for (long l = 0; l < layers; l++) {
        w1[l] = malloc(2 * h * c); w2[l] = malloc(2 * h * c);
        ek_f32_to_bf16(wf, w1[l], h * c); ek_f32_to_bf16(wf, w2[l], h * c);
    }
    memset(r, 0, sizeof(float) * m * c);
    double *t[2] = { malloc(sizeof(double) * rounds), malloc(sizeof(double) * rounds) };
    for (long it = 0; it < rounds + 1; it++)
        for (int way = 0; way < 2; way++) {
            double t0 = now();
            for (long l = 0; l < layers; l++) {
                if (way == 0) {
                    ek_gemm_bf16(w1[l], x, b1, hid, m, h, c, EK_EPI_GELU);
                    ek_gemm_bf16(w2[l], hid, b2, r, m, c, h, EK_EPI_ACCUMULATE);
                } else {
                    ek_gemm_bf16_to_bf16(w1[l], x, b1, hb, hp, m, h, c, EK_EPI_GELU);
                    ek_gemm_bf16_xb(w2[l], hb, b2, r, m, c, h, EK_EPI_ACCUMULATE);
                }
            }
            if (it > 0) t[way][it - 1] = now() - t0;   /* the first round warms up */
        }
    qsort(t[0], rounds, sizeof(double), cmp); qsort(t[1], rounds, sizeof(double), cmp);
    double a = t[0][rounds / 2], b = t[1][rounds / 2], fl = 4.0 * m * c * h * layers;
    printf("m %ld c %ld h %ld, %ld layers (%s): fp32 hidden %.2f ms (%.0f GFLOP/s), bf16 rows %.2f ms (%.0f GFLOP/s): %.3fx\n",
           m, c, h, layers, ek_gemm_bf16_path(), a * 1e3, fl / a * 1e-9, b * 1e3, fl / b * 1e-9, a / b);
    return 0;
}
