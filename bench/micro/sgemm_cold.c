/* OpenBLAS sgemm with cold weights, as a prompt pass meets them: C[M, N] = X[M, K] · W[N, K]ᵀ, two threads sharing
 * each GEMM as Encore's pool does (each thread half of W's rows and of C's columns), W cycling through a pool of
 * weight matrices larger than the last-level cache, so every GEMM reads its weights from DRAM.
 *   mode anon4k   weights in anonymous memory, 4 KiB pages (MADV_NOHUGEPAGE)
 *   mode anon2m   weights in anonymous memory, 2 MiB pages where the kernel gives them (MADV_HUGEPAGE)
 *   mode file     weights in a file mapped read-only (as Encore maps a safetensors checkpoint): PATH in $SGEMM_FILE,
 *                 written once if absent
 *   mode warm     one weight matrix, reused as many times (the usual micro benchmark)
 * Prints GFLOP/s of the whole GEMM (both threads) as the median of `rounds` passes over the pool.
 * Build from the repository root:
 *   cc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/micro/sgemm_cold.c -lopenblas -lpthread \
 *       -o /tmp/sgemm_cold
 *   OPENBLAS_CORETYPE=SkylakeX /tmp/sgemm_cold anon4k 512 2560 960 1536
 * Intel MKL instead (`bash scripts/fetch-mkl.sh` first; MKL's cblas_sgemm behind OpenBLAS's cblas.h, same prototype):
 *   cc -O2 -DSGEMM_COLD_MKL -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/micro/sgemm_cold.c \
 *       models/mkl/libmkl_rt.so.3 -Wl,-rpath,$PWD/models/mkl -lpthread -o /tmp/sgemm_cold_mkl
 *   MKL_THREADING_LAYER=SEQUENTIAL /tmp/sgemm_cold_mkl file 512 2560 960 1536
 * Arguments: mode M N K pool-MiB [rounds, default 3].
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef SGEMM_COLD_MKL   /* the two OpenBLAS extensions this file calls, for a build against MKL */
void openblas_set_num_threads(int n) { (void)n; }
char *openblas_get_corename(void) { return "MKL"; }
#endif

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static long M, N, K, count;
static float *x, *c, *weights;
static pthread_barrier_t bar;
static volatile int stop;
static long current;   /* index of the weight matrix of this GEMM */

static void half(int t) {
    long n = N / 2, n0 = t * n;
    if (t == 1) n = N - n0;
    const float *w = weights + current * N * K + n0 * K;   /* current stays 0 in mode warm */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)n, (int)K, 1, x, (int)K, w, (int)K, 0, c + n0,
                (int)N);
}

static void *second(void *unused) {
    (void)unused;
    for (;;) {
        pthread_barrier_wait(&bar);
        if (stop) return NULL;
        half(1);
        pthread_barrier_wait(&bar);
    }
}

static int warm;
static int cmp(const void *a, const void *b) { double d = *(const double *)a - *(const double *)b; return (d > 0) - (d < 0); }

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: %s anon4k|anon2m|file|warm M N K pool-MiB [rounds]\n", argv[0]); return 2; }
    const char *mode = argv[1];
    M = atol(argv[2]); N = atol(argv[3]); K = atol(argv[4]);
    long pool = atol(argv[5]) << 20;
    int rounds = argc > 6 ? atoi(argv[6]) : 3;
    long bytes = N * K * 4;
    count = pool / bytes;
    warm = !strcmp(mode, "warm");
    if (M < 1 || N < 2 || K < 1 || count < 1 || rounds < 1) { fprintf(stderr, "bad arguments\n"); return 2; }
    openblas_set_num_threads(1);
    long total = (warm ? 1 : count) * bytes;
    if (!strcmp(mode, "file")) {
        const char *path = getenv("SGEMM_FILE") ? getenv("SGEMM_FILE") : "/var/tmp/sgemm_cold.bin";
        struct stat st;
        if (stat(path, &st) || st.st_size < total) {
            FILE *f = fopen(path, "wb");
            if (!f) { perror(path); return 1; }
            float *row = malloc(bytes);
            for (long i = 0; i < N * K; i++) row[i] = rand() / (float)RAND_MAX - 0.5f;
            for (long i = 0; i < count; i++) fwrite(row, 1, bytes, f);
            fclose(f);
            free(row);
        }
        int fd = open(path, O_RDONLY);
        weights = mmap(NULL, total, PROT_READ, MAP_PRIVATE, fd, 0);
        if (weights == MAP_FAILED) { perror("mmap"); return 1; }
    } else {
        weights = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (weights == MAP_FAILED) { perror("mmap"); return 1; }
        madvise(weights, total, strcmp(mode, "anon2m") ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
        for (long i = 0; i < total / 4; i++) weights[i] = (float)((i * 2654435761u) & 1023) / 1024.0f - 0.5f;
    }
    x = malloc(sizeof(float) * M * K);
    c = malloc(sizeof(float) * M * N);
    for (long i = 0; i < M * K; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t thread;
    pthread_create(&thread, NULL, second, NULL);
    double *rates = malloc(sizeof(double) * rounds);
    for (int r = -1; r < rounds; r++) {   /* round -1: warm-up (page faults, OpenBLAS's buffers) */
        double t0 = now();
        for (long g = 0; g < count; g++) {
            current = warm ? 0 : g;
            pthread_barrier_wait(&bar);
            half(0);
            pthread_barrier_wait(&bar);
        }
        if (r >= 0) rates[r] = 2.0 * M * N * K * count / (now() - t0) * 1e-9;
    }
    stop = 1;
    pthread_barrier_wait(&bar);
    pthread_join(thread, NULL);
    qsort(rates, rounds, sizeof(double), cmp);
    printf("%s %ldx%ldx%ld, %ld weight matrices (%.0f MiB): %.1f GFLOP/s (median of %d; min %.1f, max %.1f) [%s]\n",
           mode, M, N, K, count, count * bytes / 1048576.0, rates[rounds / 2], rounds, rates[0], rates[rounds - 1],
           openblas_get_corename());
    return 0;
}
