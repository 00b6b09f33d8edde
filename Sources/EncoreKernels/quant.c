/* Dequantization of GGML block formats (as stored in GGUF files) to fp32.
 *
 * Layouts follow ggml (ggml-common.h); every block starts at a multiple of its byte size:
 *   Q8_0  32 values, 34 B: f16 d, int8 q[32]                      x = d*q
 *   Q4_0  32 values, 18 B: f16 d, u8 q[16] (low nibbles first)   x = d*(q-8)
 *   Q4_1  32 values, 20 B: f16 d, f16 m, u8 q[16]                 x = d*q + m
 *   Q5_0  32 values, 22 B: f16 d, u32 qh, u8 q[16]                x = d*((q | h<<4) - 16), h = bit i of qh for value i
 *   Q5_1  32 values, 24 B: f16 d, f16 m, u32 qh, u8 q[16]         x = d*(q | h<<4) + m
 *   Q4_K 256 values, 144 B: f16 d, f16 dmin, u8 scales[12] (8 6-bit scale/min pairs), u8 q[128]
 *   Q5_K 256 values, 176 B: as Q4_K plus u8 qh[32] (5th bit) before q[128]
 *   Q6_K 256 values, 210 B: u8 ql[128], u8 qh[64], int8 scales[16], f16 d
 * ek_dequantize walks block by block on the thread pool; ek_dequantize_ref computes each element on its
 * own from its index (a different formulation, so the two check each other). */
#include "EncoreKernels.h"
#include <string.h>
#include <math.h>

static float h2f(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    float f;
    ek_f16_to_f32(&h, &f, 1);
    return f;
}

long ek_ggml_block_values(int type) {
    switch (type) {
    case EK_GGML_F32: case EK_GGML_F16: case EK_GGML_BF16: return 1;
    case EK_GGML_Q4_0: case EK_GGML_Q4_1: case EK_GGML_Q5_0: case EK_GGML_Q5_1: case EK_GGML_Q8_0: return 32;
    case EK_GGML_Q4_K: case EK_GGML_Q5_K: case EK_GGML_Q6_K: return 256;
    default: return 0;
    }
}

long ek_ggml_block_bytes(int type) {
    switch (type) {
    case EK_GGML_F32: return 4;
    case EK_GGML_F16: case EK_GGML_BF16: return 2;
    case EK_GGML_Q4_0: return 18;
    case EK_GGML_Q4_1: return 20;
    case EK_GGML_Q5_0: return 22;
    case EK_GGML_Q5_1: return 24;
    case EK_GGML_Q8_0: return 34;
    case EK_GGML_Q4_K: return 144;
    case EK_GGML_Q5_K: return 176;
    case EK_GGML_Q6_K: return 210;
    default: return 0;
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Dequantizes `nb` whole blocks starting at src into dst. */
static void dequant_blocks(int type, const uint8_t *src, float *dst, long nb) {
    const long bs = ek_ggml_block_bytes(type);
    for (long b = 0; b < nb; b++) {
        const uint8_t *x = src + b * bs;
        switch (type) {
        case EK_GGML_F32: memcpy(dst + b, x, 4); break;
        case EK_GGML_F16: dst[b] = h2f(x); break;
        case EK_GGML_BF16: { uint32_t u = (uint32_t)(x[0] | (x[1] << 8)) << 16; memcpy(dst + b, &u, 4); break; }
        case EK_GGML_Q8_0: {
            float d = h2f(x), *y = dst + b * 32;
            const int8_t *q = (const int8_t *)(x + 2);
            for (int j = 0; j < 32; j++) y[j] = d * (float)q[j];
            break;
        }
        case EK_GGML_Q4_0: {
            float d = h2f(x), *y = dst + b * 32;
            const uint8_t *q = x + 2;
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)((q[j] & 0xF) - 8);
                y[j + 16] = d * (float)((q[j] >> 4) - 8);
            }
            break;
        }
        case EK_GGML_Q4_1: {
            float d = h2f(x), m = h2f(x + 2), *y = dst + b * 32;
            const uint8_t *q = x + 4;
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)(q[j] & 0xF) + m;
                y[j + 16] = d * (float)(q[j] >> 4) + m;
            }
            break;
        }
        case EK_GGML_Q5_0: case EK_GGML_Q5_1: {
            const int one = type == EK_GGML_Q5_1;
            float d = h2f(x), m = one ? h2f(x + 2) : 0.0f, *y = dst + b * 32;
            const uint8_t *h = x + 2 + 2 * one, *q = h + 4;
            uint32_t qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
            const int off = one ? 0 : 16;
            for (int j = 0; j < 16; j++) {
                int v0 = (q[j] & 0xF) | (int)((qh >> j) & 1) << 4, v1 = (q[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                y[j] = d * (float)(v0 - off) + m;
                y[j + 16] = d * (float)(v1 - off) + m;
            }
            break;
        }
        case EK_GGML_Q4_K: case EK_GGML_Q5_K: {
            float d = h2f(x), dmin = h2f(x + 2), *y = dst + b * 256;
            const uint8_t *scales = x + 4;
            const uint8_t *qh = type == EK_GGML_Q5_K ? x + 16 : NULL;
            const uint8_t *ql = type == EK_GGML_Q5_K ? x + 48 : x + 16;
            uint8_t u1 = 1, u2 = 2;
            for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
                int sc, m;
                scale_min_k4(is, scales, &sc, &m);
                float d1 = d * sc, m1 = dmin * m;
                scale_min_k4(is + 1, scales, &sc, &m);
                float d2 = d * sc, m2 = dmin * m;
                for (int l = 0; l < 32; l++) {
                    int hi = qh && (qh[l] & u1) ? 16 : 0;
                    y[j + l] = d1 * (float)((ql[l] & 0xF) + hi) - m1;
                }
                for (int l = 0; l < 32; l++) {
                    int hi = qh && (qh[l] & u2) ? 16 : 0;
                    y[j + 32 + l] = d2 * (float)((ql[l] >> 4) + hi) - m2;
                }
                ql += 32;
                u1 <<= 2; u2 <<= 2;
            }
            break;
        }
        case EK_GGML_Q6_K: {
            const uint8_t *ql = x, *qh = x + 128;
            const int8_t *sc = (const int8_t *)(x + 192);
            float d = h2f(x + 208), *y = dst + b * 256;
            for (int n = 0; n < 256; n += 128) {
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[n + l] = d * sc[is + 0] * q1;
                    y[n + l + 32] = d * sc[is + 2] * q2;
                    y[n + l + 64] = d * sc[is + 4] * q3;
                    y[n + l + 96] = d * sc[is + 6] * q4;
                }
                ql += 64; qh += 32; sc += 8;
            }
            break;
        }
        default: break;
        }
    }
}

struct dq_ctx { int type; const uint8_t *src; float *dst; long nb; };

static void dq_task(void *ctx, long i, long n) {
    struct dq_ctx *c = ctx;
    long per = (c->nb + n - 1) / n, b0 = i * per, b1 = b0 + per < c->nb ? b0 + per : c->nb;
    if (b0 >= b1) return;
    long vals = ek_ggml_block_values(c->type), bytes = ek_ggml_block_bytes(c->type);
    dequant_blocks(c->type, c->src + b0 * bytes, c->dst + b0 * vals, b1 - b0);
}

int ek_dequantize(int type, const void *src, float *dst, long n) {
    long vals = ek_ggml_block_values(type);
    if (vals == 0 || n < 0 || n % vals != 0) return -1;
    struct dq_ctx c = { type, src, dst, n / vals };
    long tasks = c.nb * vals >= (1L << 16) ? ek_get_threads() : 1;
    if (tasks <= 1) dequant_blocks(type, src, dst, c.nb);
    else ek_parallel_for(tasks, dq_task, &c);
    return 0;
}

/* Element i on its own: find its block, its position in the block, and the bits that hold it. */
static float ref_one(int type, const uint8_t *src, long i) {
    long vals = ek_ggml_block_values(type), bytes = ek_ggml_block_bytes(type);
    const uint8_t *x = src + (i / vals) * bytes;
    int j = (int)(i % vals);
    switch (type) {
    case EK_GGML_F32: { float f; memcpy(&f, x, 4); return f; }
    case EK_GGML_F16: return h2f(x);
    case EK_GGML_BF16: { uint32_t u = (uint32_t)(x[0] | (x[1] << 8)) << 16; float f; memcpy(&f, &u, 4); return f; }
    case EK_GGML_Q8_0: return h2f(x) * (float)(int8_t)x[2 + j];
    case EK_GGML_Q4_0: { int q = j < 16 ? (x[2 + j] & 0xF) : (x[2 + j - 16] >> 4); return h2f(x) * (float)(q - 8); }
    case EK_GGML_Q4_1: { int q = j < 16 ? (x[4 + j] & 0xF) : (x[4 + j - 16] >> 4); return h2f(x) * (float)q + h2f(x + 2); }
    case EK_GGML_Q5_0: case EK_GGML_Q5_1: {   /* byte j % 16 holds values j % 16 (low nibble) and j % 16 + 16 */
        const int one = type == EK_GGML_Q5_1, hoff = 2 + 2 * one;
        int q = j < 16 ? (x[hoff + 4 + j] & 0xF) : (x[hoff + 4 + j - 16] >> 4);
        q |= ((x[hoff + j / 8] >> (j % 8)) & 1) << 4;
        return one ? h2f(x) * (float)q + h2f(x + 2) : h2f(x) * (float)(q - 16);
    }
    case EK_GGML_Q4_K: case EK_GGML_Q5_K: {
        int sub = j / 32;                  /* 8 sub-blocks of 32 */
        int chunk = sub / 2, high = sub % 2, l = j % 32;
        int sc, m;
        scale_min_k4(sub, x + 4, &sc, &m);
        const uint8_t *ql = x + (type == EK_GGML_Q5_K ? 48 : 16) + 32 * chunk;
        int q = high ? (ql[l] >> 4) : (ql[l] & 0xF);
        if (type == EK_GGML_Q5_K && ((x[16 + l] >> sub) & 1)) q += 16;
        return h2f(x) * (float)sc * (float)q - h2f(x + 2) * (float)m;
    }
    case EK_GGML_Q6_K: {
        int half = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
        const uint8_t *ql = x + 64 * half, *qh = x + 128 + 32 * half;
        const int8_t *sc = (const int8_t *)(x + 192) + 8 * half;
        int lo = (quarter & 1) ? ql[l + 32] : ql[l];
        lo = quarter >= 2 ? lo >> 4 : lo & 0xF;
        int hi = (qh[l] >> (2 * quarter)) & 3;
        return h2f(x + 208) * (float)sc[l / 16 + 2 * quarter] * (float)((lo | (hi << 4)) - 32);
    }
    default: return 0;
    }
}

int ek_dequantize_ref(int type, const void *src, float *dst, long n) {
    long vals = ek_ggml_block_values(type);
    if (vals == 0 || n < 0 || n % vals != 0) return -1;
    for (long i = 0; i < n; i++) dst[i] = ref_one(type, src, i);
    return 0;
}

/* ek_swiglu_f32 lives in kernels.c (AVX2 exp) */
