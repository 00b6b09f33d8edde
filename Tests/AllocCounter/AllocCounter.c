#include "AllocCounter.h"

#if defined(__linux__) && defined(__GLIBC__)
#include <errno.h>
#include <stdatomic.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static _Atomic uint64_t g_calls, g_bytes, g_large;

static inline void count(size_t n) {
    atomic_fetch_add_explicit(&g_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_bytes, n, memory_order_relaxed);
    if (n >= 1024) atomic_fetch_add_explicit(&g_large, 1, memory_order_relaxed);
}

void *malloc(size_t n) { count(n); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(a * b); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(n); return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t al, size_t n) { count(n); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { count(n); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    if (al < sizeof(void *) || (al & (al - 1)) != 0) return EINVAL;
    count(n);
    void *p = __libc_memalign(al, n);
    if (!p && n) return ENOMEM;
    *out = p;
    return 0;
}

int ek_alloc_counter_available(void) { return 1; }
void ek_alloc_counter_read(uint64_t *calls, uint64_t *bytes, uint64_t *large) {
    *calls = atomic_load(&g_calls);
    *bytes = atomic_load(&g_bytes);
    *large = atomic_load(&g_large);
}
#else
int ek_alloc_counter_available(void) { return 0; }
void ek_alloc_counter_read(uint64_t *calls, uint64_t *bytes, uint64_t *large) { *calls = 0; *bytes = 0; *large = 0; }
#endif
