/* Counts heap allocations of the whole test process (glibc only), so a test can check that a code path does
 * not allocate: malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign are interposed (the test
 * executable's definitions take precedence over libc's for every library) and forwarded to glibc's
 * __libc_* entry points. Elsewhere the counters stay at zero and ek_alloc_counter_available() is 0. */
#ifndef ENCORE_ALLOC_COUNTER_H
#define ENCORE_ALLOC_COUNTER_H
#include <stddef.h>
#include <stdint.h>

/** 1 when allocations are counted on this platform. */
int ek_alloc_counter_available(void);
/** Allocation calls and requested bytes since the process started; `large` counts calls of >= 1024 bytes. */
void ek_alloc_counter_read(uint64_t *calls, uint64_t *bytes, uint64_t *large);

#endif
