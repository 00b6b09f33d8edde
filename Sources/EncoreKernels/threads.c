/* A persistent worker pool for the kernels: workers spin briefly after each job (decode issues a job
 * every few hundred microseconds), then park on a condition variable so an idle pool costs nothing.
 * Dispatch's concurrentPerform wakes too slowly for 20-100 us jobs on this kind of VM (see CPU.md). */
#include "EncoreKernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdint.h>
#include <sched.h>

#define EK_MAX_THREADS 64
#define EK_SPIN_ITERS 6000    /* ~100 us of spinning before parking */

static struct {
    int nthreads;            /* including the caller */
    int started;             /* workers started */
    pthread_t threads[EK_MAX_THREADS];
    _Atomic long generation;
    _Atomic long next_task;
    _Atomic int pending;
    long ntasks;
    ek_task_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t submit;  /* one job at a time */
} g_pool = { .nthreads = 0, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
             .submit = PTHREAD_MUTEX_INITIALIZER };

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void run_tasks(void) {
    long i;
    while ((i = atomic_fetch_add(&g_pool.next_task, 1)) < g_pool.ntasks) g_pool.fn(g_pool.ctx, i, g_pool.ntasks);
}

static void *worker(void *arg) {
    /* the generation current when this worker was created: it must run the job submitted right after */
    long seen = (long)(intptr_t)arg;
    for (;;) {
        long spins = 0;
        while (atomic_load_explicit(&g_pool.generation, memory_order_acquire) == seen) {
            if (++spins < EK_SPIN_ITERS) { cpu_relax(); continue; }
            pthread_mutex_lock(&g_pool.mu);
            while (atomic_load(&g_pool.generation) == seen) pthread_cond_wait(&g_pool.cv, &g_pool.mu);
            pthread_mutex_unlock(&g_pool.mu);
        }
        seen = atomic_load(&g_pool.generation);
        run_tasks();
        atomic_fetch_sub_explicit(&g_pool.pending, 1, memory_order_release);
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

int ek_get_threads(void) {
    if (g_pool.nthreads == 0) ek_set_threads(default_threads());
    return g_pool.nthreads;
}

void ek_parallel_for(long ntasks, ek_task_fn fn, void *ctx) {
    int n = ek_get_threads();
    if (ntasks <= 0) return;
    if (n <= 1 || ntasks == 1) {
        for (long i = 0; i < ntasks; i++) fn(ctx, i, ntasks);
        return;
    }
    pthread_mutex_lock(&g_pool.submit);
    while (g_pool.started < n - 1) {
        void *gen = (void *)(intptr_t)atomic_load(&g_pool.generation);
        if (pthread_create(&g_pool.threads[g_pool.started], NULL, worker, gen) != 0) break;
        g_pool.started++;
    }
    int helpers = g_pool.started < n - 1 ? g_pool.started : n - 1;
    if (helpers == 0) {
        pthread_mutex_unlock(&g_pool.submit);
        for (long i = 0; i < ntasks; i++) fn(ctx, i, ntasks);
        return;
    }
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.ntasks = ntasks;
    atomic_store(&g_pool.next_task, 0);
    /* every started worker wakes for each job; the ones beyond `helpers` find no task and return */
    atomic_store(&g_pool.pending, g_pool.started);
    pthread_mutex_lock(&g_pool.mu);
    atomic_fetch_add_explicit(&g_pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
    run_tasks();
    long spins = 0;
    while (atomic_load_explicit(&g_pool.pending, memory_order_acquire) > 0) {
        if (++spins < 2000) cpu_relax(); else sched_yield();   /* a descheduled helper gets the core back */
    }
    pthread_mutex_unlock(&g_pool.submit);
}
