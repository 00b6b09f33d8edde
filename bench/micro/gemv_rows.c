/* Decode-GEMV cost per block by row width, one thread, weights resident in L2 (~200 KB), thread CPU time: shows
 * the per-row cost of the x8 kernels' last group (k = 384: 8 + 4 blocks; k = 576: 16 + 2) against whole groups
 * (k = 512, 1024). Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include -I Sources/EncoreKernels bench/micro/gemv_rows.c \
 *       Sources/EncoreKernels/*.c -lpthread -lm -o /tmp/gemv_rows && /tmp/gemv_rows
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    ek_set_threads(1);
    const int formats[3] = { EK_WF_Q4_0, EK_WF_Q8_0, EK_WF_Q4_1 };
    const char *names[3] = { "q4_0", "q8_0", "q4_1" };
    const long ks[] = { 384, 512, 576, 1024 };
    for (int fi = 0; fi < 3; fi++) {
        int f = formats[fi];
        for (int ki = 0; ki < 4; ki++) {
            long k = ks[ki], n = 200000 / ek_quant_row_bytes(f, k);
            float *w = malloc(sizeof(float) * n * k), *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * n);
            for (long i = 0; i < n * k; i++) w[i] = rand() / (float)RAND_MAX - 0.5f;
            for (long i = 0; i < k; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
            void *q = malloc((size_t)(ek_quant_row_bytes(f, k) * n));
            ek_quantize_rows(f, w, q, NULL, n, k);
            ek_repack_x8(f, q, q, n, k);
            double best = 1e9;
            for (int r = 0; r < 9; r++) {
                double t0 = thread_seconds();
                for (int it = 0; it < 200; it++) ek_gemv_quant(ek_x8_format(f), q, NULL, x, NULL, y, 1, n, k);
                double t = (thread_seconds() - t0) / 200;
                if (t < best) best = t;
            }
            printf("%s k=%4ld (%ld blocks/row, last group %ld): %.3f ns per block\n", names[fi], k, (k + 31) / 32,
                   ((k + 31) / 32) % 8 ? ((k + 31) / 32) % 8 : 8, best * 1e9 / (n * ((k + 31) / 32)));
            free(w); free(x); free(y); free(q);
        }
    }
    return 0;
}
