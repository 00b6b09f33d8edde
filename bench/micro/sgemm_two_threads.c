/* OpenBLAS sgemm on two cores: two threads of one process against two single-threaded processes (session 12 read
 * 60–67% of a core's peak for the first and 84–88% for the second, one sample each, and could not explain it).
 * Each thread multiplies its own matrices (nothing shared: C[M, N] = A[M, K] · B[N, K]ᵀ, the prompt GEMM's shape),
 * OpenBLAS single-threaded in every thread, as Encore's pool runs it. Prints GFLOP/s per thread.
 * Build and run from the repository root (OPENBLAS_CORETYPE=SkylakeX: what Encore switches Debian's OpenBLAS to):
 *   cc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/micro/sgemm_two_threads.c -lopenblas -lpthread \
 *       -o /tmp/sgemm_two_threads
 *   export OPENBLAS_CORETYPE=SkylakeX
 *   /tmp/sgemm_two_threads 2                                   # one process, two threads
 *   /tmp/sgemm_two_threads 1 & /tmp/sgemm_two_threads 1; wait  # two processes, one thread each
 * Optional: M N K reps after the thread count (default 512 1024 1024 20).
 * Session 13 (2026-11-30, Intel Xeon 6/207, 2 vCPUs), alternated in one loop: see bench/README "Session 13".
 */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static long M = 512, N = 1024, K = 1024;
static int reps = 20;
typedef struct { float *a, *b, *c; double seconds; } job;
static pthread_barrier_t start;

static void *run(void *p) {
    job *j = p;
    pthread_barrier_wait(&start);
    double t0 = now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1, j->a, (int)K, j->b, (int)K, 0,
                    j->c, (int)N);
    j->seconds = now() - t0;
    return NULL;
}

static int fill(job *j) {
    j->a = malloc(sizeof(float) * M * K); j->b = malloc(sizeof(float) * N * K); j->c = malloc(sizeof(float) * M * N);
    if (!j->a || !j->b || !j->c) return -1;
    for (long i = 0; i < M * K; i++) j->a[i] = rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < N * K; i++) j->b[i] = rand() / (float)RAND_MAX - 0.5f;
    return 0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 5) { M = atol(argv[2]); N = atol(argv[3]); K = atol(argv[4]); reps = atoi(argv[5]); }
    if (threads < 1 || threads > 2 || M < 1 || N < 1 || K < 1 || reps < 1) {
        fprintf(stderr, "usage: %s threads(1|2) [M N K reps]\n", argv[0]);
        return 2;
    }
    openblas_set_num_threads(1);
    job jobs[2];
    pthread_t th[2];
    for (int i = 0; i < threads; i++)
        if (fill(&jobs[i]) != 0) { fprintf(stderr, "out of memory\n"); return 1; }
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, run, &jobs[i]);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < threads; i++)
        printf("%s thread %d: %.1f GFLOP/s (%s, %ldx%ldx%ld)\n", threads == 2 ? "in-process" : "process", i,
               2.0 * M * N * K * reps / jobs[i].seconds / 1e9, openblas_get_corename(), M, N, K);
    return 0;
}
