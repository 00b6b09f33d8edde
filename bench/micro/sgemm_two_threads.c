/* OpenBLAS sgemm on two cores, three ways (session 12 read 60–67% of a core's peak with Encore's pool and 84–88% in two
 * pinned single-threaded processes, and could not explain the gap):
 *   1   one thread (run two such processes side by side, e.g. pinned with taskset -c 0 / -c 1)
 *   2   two threads of one process, each multiplying its own matrices (nothing shared)
 *   s   two threads of one process sharing one GEMM as Encore's pool runs it (BLAS.swift gemmTask): the same A, each
 *       thread half of B's rows and of C's columns (ldc = N)
 * Every GEMM is C[M, N] = A[M, K] · B[N, K]ᵀ (the prompt GEMM's shape), OpenBLAS single-threaded in every thread, one
 * warm-up call, then `reps` calls timed per thread. Prints GFLOP/s per thread (mode s: per thread, of its half).
 * Build and run from the repository root (OPENBLAS_CORETYPE=SkylakeX: what Encore switches Debian's OpenBLAS to):
 *   cc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/micro/sgemm_two_threads.c -lopenblas -lpthread \
 *       -o /tmp/sgemm_two_threads
 *   export OPENBLAS_CORETYPE=SkylakeX
 *   /tmp/sgemm_two_threads 2                                   # one process, two threads
 *   /tmp/sgemm_two_threads s                                   # one process, one shared GEMM
 *   /tmp/sgemm_two_threads 1 & /tmp/sgemm_two_threads 1; wait  # two processes, one thread each
 * Optional, all four: M N K reps after the mode (default 512 1024 1024 20; mode s: N is the whole GEMM's).
 * Session 13 (2026-11-30, Intel Xeon 6/207, 2 vCPUs), alternated in one loop: see bench/README.md "Session 13".
 */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static long M = 512, N = 1024, K = 1024;
static int reps = 20;
typedef struct { const float *a, *b; float *c; long n, ldc; double seconds; } job;
static pthread_barrier_t start;

static void gemm(const job *j) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)j->n, (int)K, 1, j->a, (int)K, j->b, (int)K, 0,
                j->c, (int)j->ldc);
}

static void *run(void *p) {
    job *j = p;
    gemm(j);   /* warm-up: page faults, OpenBLAS's buffers */
    pthread_barrier_wait(&start);
    double t0 = now();
    for (int r = 0; r < reps; r++) gemm(j);
    j->seconds = now() - t0;
    return NULL;
}

static float *filled(long count) {
    float *p = malloc(sizeof(float) * count);
    if (p) for (long i = 0; i < count; i++) p[i] = rand() / (float)RAND_MAX - 0.5f;
    return p;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "2";
    int shared = !strcmp(mode, "s"), threads = shared ? 2 : atoi(mode);
    if (argc == 6) { M = atol(argv[2]); N = atol(argv[3]); K = atol(argv[4]); reps = atoi(argv[5]); }
    if ((argc != 2 && argc != 6) || threads < 1 || threads > 2 || M < 1 || N < 2 || K < 1 || reps < 1) {
        fprintf(stderr, "usage: %s 1|2|s [M N K reps]\n", argv[0]);
        return 2;
    }
    openblas_set_num_threads(1);
    job jobs[2];
    pthread_t th[2];
    if (shared) {   /* one GEMM: columns [0, N/2) and [N/2, N), as the pool's slices */
        float *a = filled(M * K), *b = filled(N * K), *c = malloc(sizeof(float) * M * N);
        if (!a || !b || !c) { fprintf(stderr, "out of memory\n"); return 1; }
        long half = N / 2;
        jobs[0] = (job){ a, b, c, half, N, 0 };
        jobs[1] = (job){ a, b + half * K, c + half, N - half, N, 0 };
    } else {
        for (int i = 0; i < threads; i++) {
            float *a = filled(M * K), *b = filled(N * K), *c = malloc(sizeof(float) * M * N);
            if (!a || !b || !c) { fprintf(stderr, "out of memory\n"); return 1; }
            jobs[i] = (job){ a, b, c, N, N, 0 };
        }
    }
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, run, &jobs[i]);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    const char *label = shared ? "shared GEMM" : threads == 2 ? "in-process" : "process";
    for (int i = 0; i < threads; i++)
        printf("%s thread %d: %.1f GFLOP/s (%s, %ldx%ldx%ld)\n", label, i,
               2.0 * M * jobs[i].n * K * reps / jobs[i].seconds / 1e9, openblas_get_corename(), M, jobs[i].n, K);
    return 0;
}
