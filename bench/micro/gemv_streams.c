/* How many weight streams a decode GEMV should keep in flight per thread: bf16 rows (widened + FMA, one accumulator
 * per row and 8 floats) over 256 MiB of cold m×k matrices, one after another, 2 threads (THREADS=n) on Encore's pool,
 * each thread taking half the rows of a matrix; best of 10 passes, GB/s of weights read. Variants:
 *   one        one row at a time (the kernel before session 10)
 *   halves     two rows side by side, from the two halves of the thread's rows
 *   quarters   four rows side by side, from the four quarters (the fp32, bf16 and K-quant decode GEMVs since
 *              session 10; the x8 integer kernels take two, as `halves`)
 *   eighths    eight rows side by side, from the eighths
 *   adjacent   two adjacent rows side by side
 *   turns      one row at a time, visiting the four quarters' rows in turn (streams without overlap)
 *   prefetch   one row at a time with prefetcht0 PD bytes ahead (environment PD, default 4096)
 *   read1 / read4   no arithmetic: 32-byte loads summed, one stream / four quarters side by side
 * Session 10 (2026-11-30 about 04:12 UTC, this VM, 2560×960, 3 runs each, GB/s): one 13.9–14.7, halves 17.0–18.4,
 * quarters 16.9–23.2, eighths 15.5–17.5, adjacent 8.8–9.1, turns 11.2–13.4, prefetch 15.0–15.9, read1 13.8–14.8,
 * read4 17.6–21.1.
 * Build and run from the repository root:
 *   clang -O2 -mavx2 -mfma -I Sources/EncoreKernels/include bench/micro/gemv_streams.c Sources/EncoreKernels/[a-z]*.c \
 *       -lm -lpthread -o /tmp/gemv_streams
 *   for v in one halves quarters eighths; do /tmp/gemv_streams 2560 960 $v; done
 */
#include "EncoreKernels.h"
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static inline float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

enum { ONE, HALVES, QUARTERS, EIGHTHS, ADJACENT, TURNS, PREFETCH, READ1, READ4 };
static const char *const names[] = { "one", "halves", "quarters", "eighths", "adjacent", "turns", "prefetch", "read1", "read4" };
static long g_pd = 4096;

/* S rows (pointers w[0..S-1]) against x side by side, into y[0..S-1]. */
static inline __attribute__((always_inline)) void dots(const uint16_t *const *w, const int S, const float *x, long k, float *y) {
    __m256 a[8];
    for (int s = 0; s < S; s++) a[s] = _mm256_setzero_ps();
    for (long j = 0; j + 8 <= k; j += 8) {
        __m256 xv = _mm256_loadu_ps(x + j);
        for (int s = 0; s < S; s++) a[s] = _mm256_fmadd_ps(bf16x8(w[s] + j), xv, a[s]);
    }
    for (int s = 0; s < S; s++) y[s] = hsum(a[s]);
}

typedef struct { const uint16_t *w; const float *x; float *y; long n, k; int v; } ctx;

static void task(void *vc, long index, long count) {
    ctx *c = vc;
    const long r0 = c->n * index / count, r1 = c->n * (index + 1) / count, k = c->k, rows = r1 - r0;
    const int S = c->v == HALVES ? 2 : c->v == QUARTERS || c->v == READ4 ? 4 : c->v == EIGHTHS ? 8 : c->v == ADJACENT ? 2 : 1;
    const long q = rows / S;
    for (long t = 0; t < q; t++) {
        const uint16_t *w[8];
        long r[8];
        for (int s = 0; s < S; s++) {
            r[s] = c->v == ADJACENT ? r0 + S * t + s : c->v == TURNS ? r0 + (t % 4) * (rows / 4) + t / 4 : r0 + s * q + t;
            w[s] = c->w + r[s] * k;
        }
        float y[8];
        if (c->v == READ1 || c->v == READ4) {
            __m256i acc = _mm256_setzero_si256();
            for (long j = 0; j + 16 <= k; j += 16)
                for (int s = 0; s < S; s++) acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)(w[s] + j)));
            c->y[r[0]] = (float)_mm256_extract_epi32(acc, 0);
            continue;
        }
        if (c->v == PREFETCH)
            for (long j = 0; j < 2 * k; j += 64) _mm_prefetch((const char *)w[0] + j + g_pd, _MM_HINT_T0);
        switch (S) {
        case 1: dots(w, 1, c->x, k, y); break;
        case 2: dots(w, 2, c->x, k, y); break;
        case 4: dots(w, 4, c->x, k, y); break;
        default: dots(w, 8, c->x, k, y); break;
        }
        for (int s = 0; s < S; s++) c->y[r[s]] = y[s];
    }
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s m k variant\n", argv[0]); return 2; }
    long m = atol(argv[1]), k = atol(argv[2]);
    int v = -1;
    for (int i = 0; i < 9; i++) if (!strcmp(argv[3], names[i])) v = i;
    if (v < 0 || m < 8 || k < 16) { fprintf(stderr, "unknown variant %s (or m < 8, k < 16)\n", argv[3]); return 2; }
    if (getenv("PD")) g_pd = atol(getenv("PD"));
    int threads = getenv("THREADS") ? atoi(getenv("THREADS")) : 2;
    ek_set_threads(threads);
    long nmat = (256L << 20) / (m * k * 2);
    if (nmat < 1) nmat = 1;
    size_t bytes = (size_t)nmat * m * k * 2, rounded = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    uint16_t *w = aligned_alloc(2u << 20, rounded);
    madvise(w, rounded, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < bytes / 2; i++) w[i] = (uint16_t)(0x3c00 + i % 13);
    float *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * m);
    for (long i = 0; i < k; i++) x[i] = 1e-2f * (float)(i % 7);
    double best = 1e9;
    for (int rep = 0; rep < 10; rep++) {
        double t = now();
        for (long j = 0; j < nmat; j++) {
            ctx c = { w + j * m * k, x, y, m, k, v };
            ek_parallel_for(threads, task, &c);
        }
        t = now() - t;
        if (t < best) best = t;
    }
    printf("%-9s %ldx%ld: %.1f GB/s\n", names[v], m, k, (double)bytes / best / 1e9);
    return 0;
}
