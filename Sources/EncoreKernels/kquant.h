/* K-quant super-blocks (Q4_K, Q5_K, Q6_K: 256 values, ggml's layout) read as small integers: shared by the decode
 * GEMVs (gemv_quant.c, against Q8_K activations) and the prompt GEMM's block rows (gemm_int8.c, kq_row). Private to
 * EncoreKernels. */
#ifndef ENCORE_KQUANT_H
#define ENCORE_KQUANT_H
#include "EncoreKernels.h"
#include <stdint.h>

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block (as quant.c). */
static inline void kq_scale_min(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) { *sc = q[j] & 63; *mn = q[j + 4] & 63; }
    else { *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
}

/* Values of one super-block as small ints: Q4_K 0..15, Q5_K 0..31, Q6_K −32..31 (ggml's element order). */
static inline void kq_values(int format, const uint8_t *x, int8_t *a) {
    if (format == EK_WF_Q6_K) {
        const uint8_t *ql = x, *qh = x + 128;
        for (int n = 0; n < 256; n += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                a[n + l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                a[n + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                a[n + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                a[n + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        return;
    }
    const uint8_t *qh = format == EK_WF_Q5_K ? x + 16 : NULL, *q4 = format == EK_WF_Q5_K ? x + 48 : x + 16;
    for (int j = 0; j < 4; j++, q4 += 32)
        for (int l = 0; l < 32; l++) {
            a[64 * j + l] = (int8_t)((q4[l] & 0xF) + (qh && ((qh[l] >> (2 * j)) & 1) ? 16 : 0));
            a[64 * j + 32 + l] = (int8_t)((q4[l] >> 4) + (qh && ((qh[l] >> (2 * j + 1)) & 1) ? 16 : 0));
        }
}

#endif
