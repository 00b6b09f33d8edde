/* One decode step's self-attention over a cold KV cache: `layers` calls of ek_attention_f32, ek_attention_f16kv or
 * ek_attention_i8kv (int8 rows, a scale per key and 32 values, GROUP=64 per head; one query, tk keys, n_head query heads over n_kv_head KV heads of 64), a 256 MiB sweep before each round so the
 * cache comes from memory as in a real step. Best and median of 30 rounds, wall time. Defaults: Llama-362M
 * (SmolLM2-360M shapes: 32 layers, 15 heads over 5 KV heads) at 544 keys. Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/decode_attention_cache.c Sources/EncoreKernels/[a-z]*.c \
 *       -lm -lpthread -o /tmp/decode_attention_cache
 *   /tmp/decode_attention_cache 544 2 f16       # keys threads f16|f32|i8 [layers n_head n_kv_head]
 * SUMCHUNK=1 times the attention's reads alone (8 tasks per layer, each its chunk's K rows then V rows).
 * SUMONLY=1 times a plain two-thread sum over the same K and V buffers instead (the read floor).
 * HUGE=1 puts the cache in transparent huge pages.
 * WARM=1 in the environment skips the sweep (the cache then stays in L2/L3 when it fits).
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <immintrin.h>
static void *alloc(size_t n) {   /* HUGE=1: 2 MiB-aligned and madvise(MADV_HUGEPAGE) */
    if (!getenv("HUGE")) return malloc(n);
    size_t r = (n + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    void *p = aligned_alloc(2u << 20, r);
    madvise(p, r, MADV_HUGEPAGE);
    return p;
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
/* SUMCHUNK: the attention's reads without its arithmetic: 8 tasks per layer, each summing its chunk's K rows, then
 * its V rows (as a decode step's attention tasks do) */
typedef struct { const char *k, *v; long row_bytes, rows; float out[64]; } chunk_ctx;
__attribute__((target("avx2"))) static void chunk_task(void *ctx, long index, long count) {
    chunk_ctx *c = ctx;
    long r0 = c->rows * index / count, r1 = c->rows * (index + 1) / count;
    __m256 a = _mm256_setzero_ps();
    for (int kv = 0; kv < 2; kv++) {
        const char *base = (kv ? c->v : c->k) + r0 * c->row_bytes, *end = (kv ? c->v : c->k) + r1 * c->row_bytes;
        for (const char *p = base; p < end; p += 32) a = _mm256_add_ps(a, _mm256_loadu_ps((const float *)p));
    }
    float t[8]; _mm256_storeu_ps(t, a); c->out[index] = t[0];
}
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s keys threads f16|f32|i8 [layers n_head n_kv_head]\n", argv[0]); return 2; }
    long L = atol(argv[1]), D = 64; int thr = atoi(argv[2]), half = strcmp(argv[3], "f16") == 0, i8 = strcmp(argv[3], "i8") == 0;
    long layers = argc > 4 ? atol(argv[4]) : 32, H = argc > 5 ? atol(argv[5]) : 15, HKV = argc > 6 ? atol(argv[6]) : 5;
    ek_set_threads(thr);
    long n = L * HKV * D, elt = i8 ? 1 : half ? 2 : 4;
    void **k = malloc(sizeof(void *) * layers), **v = malloc(sizeof(void *) * layers);
    float **ks = malloc(sizeof(float *) * layers), **vs = malloc(sizeof(float *) * layers);   /* i8: [L][HKV*2] scales */
    long grp = getenv("GROUP") ? atol(getenv("GROUP")) : 32, nsc = HKV * D / grp;   /* i8: values per scale */
    float *tmp = malloc(4 * n), *q = malloc(4 * H * D), *o = malloc(4 * H * D);
    for (long l = 0; l < layers; l++) {
        k[l] = alloc(elt * n); v[l] = alloc(elt * n);
        ks[l] = malloc(sizeof(float) * L * nsc); vs[l] = malloc(sizeof(float) * L * nsc);
        for (int kv = 0; kv < 2; kv++) {
            for (long i = 0; i < n; i++) tmp[i] = (rand() % 100) / 100.f - 0.5f;
            if (i8) ek_quantize_rows(EK_WF_INT8, tmp, kv ? v[l] : k[l], kv ? vs[l] : ks[l], L * nsc, grp);
            else if (half) ek_f32_to_f16(tmp, kv ? v[l] : k[l], n); else memcpy(kv ? v[l] : k[l], tmp, 4 * n);
        }
    }
    for (long i = 0; i < H * D; i++) q[i] = (rand() % 100) / 100.f;
    long sw = 64L << 20; float *big = malloc(4 * sw); for (long i = 0; i < sw; i++) big[i] = 1;
    float *scr = malloc(4 * ek_attention_scratch_floats(1, L, H, D));
    double ts[30]; volatile float sink = 0;
    for (int r = 0; r < 30; r++) {
        if (!getenv("WARM")) sink += ek_sum_f32(big, sw);
        double t = now();
        for (long l = 0; l < layers; l++) {
            if (getenv("SUMCHUNK")) {
                chunk_ctx cc = { k[l], v[l], HKV * D * elt, L, {0} };
                ek_parallel_for(8, chunk_task, &cc); sink += cc.out[0]; continue;
            }
            if (getenv("SUMONLY")) { sink += ek_sum_f32(k[l], n * elt / 4) + ek_sum_f32(v[l], n * elt / 4); continue; }
            if (i8) ek_attention_i8kv(q, H * D, k[l], ks[l], HKV * D, v[l], vs[l], HKV * D, nsc, grp, o, H * D, 1, L, H, HKV, D, 1,
                                      NULL, -1, 8.0f, scr);
            else if (half) ek_attention_f16kv(q, H * D, k[l], HKV * D, v[l], HKV * D, o, H * D, 1, L, H, HKV, D, 1, NULL, -1, 8.0f, scr);
            else ek_attention_f32(q, H * D, k[l], HKV * D, v[l], HKV * D, o, H * D, 1, L, H, HKV, D, 1, NULL, -1, 8.0f, scr);
        }
        ts[r] = now() - t;
    }
    qsort(ts, 30, sizeof(double), cmp);
    double bytes = 2.0 * layers * n * elt + (i8 ? 2.0 * layers * L * nsc * 4 : 0);
    printf("%s keys=%ld layers=%ld heads %ld/%ld thr=%d cold: best %.3f ms (%.1f GB/s), median %.3f ms\n",
           i8 ? "i8" : half ? "f16" : "f32", L, layers, H, HKV, thr, ts[0] * 1e3, bytes / ts[0] / 1e9, ts[15] * 1e3);
    return 0;
}
