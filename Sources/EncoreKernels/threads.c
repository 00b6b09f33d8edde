/* A persistent worker pool for the kernels.
 *
 * Workers spin briefly after each job (decode issues a job every few hundred microseconds), then park on a
 * condition variable, so an idle pool costs nothing. Tasks are claimed one at a time from a ticket that
 * packs (job id, next task index): the caller runs tasks too and only waits for tasks actually claimed, so
 * a helper that the OS has descheduled before claiming anything never delays a job, and a stale helper can
 * never claim a task of a later job. Dispatch's concurrentPerform wakes too slowly for 20-100 us jobs on
 * this kind of VM (see CPU.md). */
#include "EncoreKernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include <stdlib.h>
#include <time.h>

#define EK_MAX_THREADS 64
#define EK_SPIN_ITERS 6000    /* ~100 us of spinning before parking (EK_SPIN_ITERS in the environment overrides) */
static long g_spin_iters = EK_SPIN_ITERS;

typedef struct {
    _Atomic(ek_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic long ntasks;
} job_slot;

static struct {
    int nthreads;                 /* including the caller */
    int started;
    pthread_t threads[EK_MAX_THREADS];
    _Atomic uint64_t ticket;      /* job id << 32 | next task index */
    _Atomic long done;            /* tasks finished in the current job */
    job_slot slots[2];            /* parameters of job id % 2 */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t submit;       /* one job at a time */
} g_pool = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .submit = PTHREAD_MUTEX_INITIALIZER };

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Set while this thread runs a task: a parallel loop inside a task runs its tasks inline (the pool is busy with
 * the outer one, and its submit lock is held). */
static _Thread_local int g_in_task;

/* Claims and runs tasks of job `job` until none are left; returns when the ticket moved on. */
static void run_job(uint32_t job) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&g_pool.ticket, memory_order_acquire);
        if ((uint32_t)(t >> 32) != job) return;
        job_slot *s = &g_pool.slots[job & 1];
        ek_task_fn fn = atomic_load_explicit(&s->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&s->ctx, memory_order_relaxed);
        long n = atomic_load_explicit(&s->ntasks, memory_order_relaxed);
        long i = (long)(uint32_t)t;
        if (i >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&g_pool.ticket, &t, t + 1, memory_order_acq_rel, memory_order_relaxed))
            continue;   /* someone else claimed it, or a new job started: look again */
        g_in_task = 1;
        fn(ctx, i, n);
        g_in_task = 0;
        atomic_fetch_add_explicit(&g_pool.done, 1, memory_order_release);
    }
}

/* Which thread runs a task: 0 for the submitting thread, 1 + the creation index for a worker. */
static _Thread_local int g_slot;

int ek_thread_slot(void) { return g_slot; }

int ek_thread_slots(void) {
    /* No lock (a task may ask while its submitter holds the submit lock). Workers are only ever added, up to
     * threads - 1, so a stale count is covered by `threads`; a count above it (threads lowered after workers
     * started) is stable by then: those workers still claim tasks. */
    int threads = ek_get_threads(), started = __atomic_load_n(&g_pool.started, __ATOMIC_RELAXED);
    return started + 1 > threads ? started + 1 : threads;
}

static void *worker(void *arg) {
    uint32_t seen = (uint32_t)(uintptr_t)arg;   /* job id current when created: run the next one */
    g_slot = (int)((uintptr_t)arg >> 32);
    for (;;) {
        long spins = 0;
        uint32_t job;
        while ((job = (uint32_t)(atomic_load_explicit(&g_pool.ticket, memory_order_acquire) >> 32)) == seen) {
            if (++spins < g_spin_iters) { cpu_relax(); continue; }
            pthread_mutex_lock(&g_pool.mu);
            while ((uint32_t)(atomic_load(&g_pool.ticket) >> 32) == seen) pthread_cond_wait(&g_pool.cv, &g_pool.mu);
            pthread_mutex_unlock(&g_pool.mu);
        }
        seen = job;
        run_job(job);
    }
    return NULL;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > EK_MAX_THREADS) n = EK_MAX_THREADS;
    return (int)n;
}

void ek_set_threads(int n) {
    pthread_mutex_lock(&g_pool.submit);
    if (n < 1) n = 1;
    if (n > EK_MAX_THREADS) n = EK_MAX_THREADS;
    g_pool.nthreads = n;
    pthread_mutex_unlock(&g_pool.submit);
}

/* A positive integer from the environment (tuning knobs), else `fallback`. */
static long env_positive(const char *name, long fallback) {
    const char *e = getenv(name);
    long v = e ? atol(e) : 0;
    return v > 0 ? v : fallback;
}

/* Smallest decode GEMV (weight bytes) worth waking the other threads for; EK_PARALLEL_MIN_BYTES overrides. */
static long g_parallel_min_bytes = -1;

long ek_parallel_min_bytes(void) {
    if (g_parallel_min_bytes < 0) g_parallel_min_bytes = env_positive("EK_PARALLEL_MIN_BYTES", 1L << 15);
    return g_parallel_min_bytes;
}

/* Row ranges a decode GEMV of `bytes` weight bytes is split into (claimed dynamically): one task below the
 * threshold; else about 1 MiB per range, between P and 16 per thread. Large fp32 matrices (16 MiB and up) get finer
 * ranges, so the thread that finishes first waits less for the other (T5-347M fp32 decode: 16 ranges per thread
 * ≈ 5% faster than 4). P, the fewest per thread, is 4 on the AMD EPYC of sessions 1–10 (finer ranges were slower
 * there: Mu int8) and 1 on Intel CPUs: a core of the Intel Xeon streams only 11–12 GB/s, and longer ranges keep its
 * streams going (session 12, Llama-362M decode, 128 → 64 tokens, medians of 14 alternating runs: Q4_0 74.7 → 83.4
 * tok/s, int8 49.4 → 50.5, bf16 level; bench/micro/gemv_layers.c, Q4_0: 9.4–9.9 → 8.4–9.0 ms for a step's GEMVs).
 * The AMD Zen 4 of session 21 (AVX-512 kernels) also gains from 1: Llama-362M fp32 decode, 128 → 32 tokens, three
 * alternations, 21.4 → 25.3 tok/s on average, bf16 level. The AVX2-only Zen 3 of session 27 gains from 1 too
 * (`encore bench --step-ab tasks`, decode steps of the two settings alternated in one process, medians: q4_0 Llama-362M
 * 1.019×, Mu-330M 1.035–1.039×, T5-347M 1.046×; int8 1.006–1.025×; f32, bf16 and q8_0 0.994–1.014×), so P is 1 on
 * every CPU since.
 * EK_GEMV_TASKS_PER_THREAD=1..16 in the environment sets P. The count is rounded up to a multiple of the threads: 9
 * equal ranges on 2 threads (Llama-362M's bf16 gate/up, 9.4 MiB) end with one thread running the 5th while the other
 * waits, 11% longer than 10 ranges. */
static long g_min_tasks = -1;

long ek_get_gemv_tasks_per_thread(void) {
    long p = g_min_tasks;   /* read once (ek_set_gemv_tasks_per_thread may reset it meanwhile) */
    if (p < 0) {
        p = env_positive("EK_GEMV_TASKS_PER_THREAD", 1);
        if (p > 16) p = 16;
        g_min_tasks = p;
    }
    return p;
}

void ek_set_gemv_tasks_per_thread(long p) { g_min_tasks = p >= 1 && p <= 16 ? p : -1; }

long ek_gemv_tasks(long bytes) {
    if (bytes < ek_parallel_min_bytes()) return 1;
    long p = ek_get_gemv_tasks_per_thread();   /* read once: a setter on another thread may reset it to -1 */
    long threads = ek_get_threads(), per_mib = bytes >> 20;
    long n = per_mib < p * threads ? p * threads : per_mib > 16 * threads ? 16 * threads : per_mib;
    return (n + threads - 1) / threads * threads;   /* equal ranges: a count the threads share evenly */
}

int ek_get_threads(void) {
    if (g_pool.nthreads == 0) ek_set_threads(default_threads());
    return g_pool.nthreads;
}

/* ---- what the calling thread does between jobs (ek_pool_stats) ---- */
/* per thread: the thread that turns the stats on counts its own calls; a worker's nested calls never touch them */
static _Thread_local int g_stats_on, g_stats_depth;
static _Thread_local double g_stats_last_exit, g_stats_inside, g_stats_between;
static _Thread_local long g_stats_jobs;

static double stats_now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

void ek_pool_stats_enable(int on) {   /* on or off, from zero */
    g_stats_on = on != 0;
    g_stats_last_exit = 0; g_stats_inside = g_stats_between = 0; g_stats_jobs = 0;
}
void ek_pool_stats(long *jobs, double *inside_us, double *between_us) {
    if (jobs) *jobs = g_stats_jobs;
    if (inside_us) *inside_us = g_stats_inside;
    if (between_us) *between_us = g_stats_between;
}

static void parallel_for(long ntasks, ek_task_fn fn, void *ctx);

void ek_parallel_for(long ntasks, ek_task_fn fn, void *ctx) {
    if (!g_stats_on || g_stats_depth > 0) { parallel_for(ntasks, fn, ctx); return; }   /* inside a counted job: part of it */
    double t0 = stats_now_us();
    if (g_stats_last_exit > 0) g_stats_between += t0 - g_stats_last_exit;
    g_stats_depth++;
    parallel_for(ntasks, fn, ctx);
    g_stats_depth--;
    double t1 = stats_now_us();
    g_stats_inside += t1 - t0;
    g_stats_last_exit = t1;
    g_stats_jobs++;
}

static void parallel_for(long ntasks, ek_task_fn fn, void *ctx) {
    int n = ek_get_threads();
    if (ntasks <= 0) return;
    if (n <= 1 || ntasks == 1 || g_in_task) {
        for (long i = 0; i < ntasks; i++) fn(ctx, i, ntasks);
        return;
    }
    pthread_mutex_lock(&g_pool.submit);
    uint32_t current = (uint32_t)(atomic_load(&g_pool.ticket) >> 32);
    if (g_pool.started == 0) g_spin_iters = env_positive("EK_SPIN_ITERS", EK_SPIN_ITERS);   /* before the workers start */
    while (g_pool.started < n - 1) {
        uintptr_t arg = (uintptr_t)current | (uintptr_t)(g_pool.started + 1) << 32;   /* job id, slot */
        if (pthread_create(&g_pool.threads[g_pool.started], NULL, worker, (void *)arg) != 0) break;
        __atomic_store_n(&g_pool.started, g_pool.started + 1, __ATOMIC_RELAXED);   /* read unlocked by ek_thread_slots */
    }
    if (g_pool.started == 0) {
        pthread_mutex_unlock(&g_pool.submit);
        for (long i = 0; i < ntasks; i++) fn(ctx, i, ntasks);
        return;
    }
    uint32_t job = current + 1;
    job_slot *s = &g_pool.slots[job & 1];
    atomic_store_explicit(&s->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&s->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&s->ntasks, ntasks, memory_order_relaxed);
    atomic_store_explicit(&g_pool.done, 0, memory_order_relaxed);
    pthread_mutex_lock(&g_pool.mu);
    atomic_store_explicit(&g_pool.ticket, (uint64_t)job << 32, memory_order_release);
    pthread_cond_broadcast(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
    run_job(job);
    long spins = 0;
    while (atomic_load_explicit(&g_pool.done, memory_order_acquire) < ntasks) {
        if (++spins < 2000) cpu_relax(); else sched_yield();   /* a descheduled helper gets the core back */
    }
    pthread_mutex_unlock(&g_pool.submit);
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif
/* glibc keeps freed heap pages resident until trimmed; elsewhere a no-op. */
void ek_release_free_memory(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}
