/* EncoreKernels for training: the elementwise and per-row pieces of the backward pass and the optimizer step
 * that BLAS has nothing for. Each has a plain `_ref` twin; the fast path is AVX2 (run-time dispatch) and runs on
 * the kernel thread pool over independent elements or rows, so the result does not depend on the thread count. */
#include "EncoreKernels.h"
#include "avx2_math.h"   /* exp256 */
#include <math.h>

#if defined(__x86_64__) || defined(_M_X64)
#define EK_X86 1
#include <immintrin.h>
#define EK_AVX2 __attribute__((target("avx2,fma")))
#endif

#if EK_X86   /* only the x86 paths ask */
static int train_use_avx2(void) { return ek_kernel_path()[0] == 'a'; }
#endif

/* ------------------------------------------------------------------------------------------------ */
/* GELU (tanh) backward                                                                             */

/* dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3k x^2)), t = tanh(c (x + k x^3)), c = sqrt(2/pi), k = 0.044715 */
void ek_gelu_tanh_backward_f32_ref(const float *x, const float *dy, float *dx, long n) {
    const float c = 0.7978845608028654f;
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf(c * (v + 0.044715f * v * v * v));
        float du = c * (1.0f + 3.0f * 0.044715f * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

#if EK_X86
EK_AVX2 static void gelu_backward_avx2(const float *x, const float *dy, float *dx, long n) {
    const __m256 c = _mm256_set1_ps(0.7978845608028654f), k = _mm256_set1_ps(0.044715f), k3 = _mm256_set1_ps(3.0f * 0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), half = _mm256_set1_ps(0.5f);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), v2 = _mm256_mul_ps(v, v);
        __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(k, v2), v, v));
        __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(exp256(_mm256_mul_ps(two, u)), one)));
        __m256 du = _mm256_mul_ps(c, _mm256_fmadd_ps(k3, v2, one));
        __m256 g = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_fnmadd_ps(t, t, one)), du,
                                   _mm256_mul_ps(half, _mm256_add_ps(one, t)));
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), g));
    }
    if (i < n) ek_gelu_tanh_backward_f32_ref(x + i, dy + i, dx + i, n - i);
}
#endif

static void gelu_backward_serial(const float *x, const float *dy, float *dx, long n) {
#if EK_X86
    if (train_use_avx2()) { gelu_backward_avx2(x, dy, dx, n); return; }
#endif
    ek_gelu_tanh_backward_f32_ref(x, dy, dx, n);
}

typedef struct { const float *x, *dy; float *dx; long n; } gelu_bw_ctx;

/* ranges on multiples of 64, so each element takes the same (SIMD or tail) path as a serial call */
static void range_of(long n, long index, long count, long *a, long *b) {
    *a = (n * index / count) & ~63L;
    *b = index + 1 == count ? n : (n * (index + 1) / count) & ~63L;
}

static void gelu_bw_task(void *ctx, long index, long count) {
    gelu_bw_ctx *c = (gelu_bw_ctx *)ctx;
    long a, b;
    range_of(c->n, index, count, &a, &b);
    gelu_backward_serial(c->x + a, c->dy + a, c->dx + a, b - a);
}

void ek_gelu_tanh_backward_f32(const float *x, const float *dy, float *dx, long n) {
    if (n < (1L << 15)) { gelu_backward_serial(x, dy, dx, n); return; }
    gelu_bw_ctx c = { x, dy, dx, n };
    ek_parallel_for(ek_get_threads(), gelu_bw_task, &c);
}

/* ------------------------------------------------------------------------------------------------ */
/* AdamW step (torch.optim.AdamW, single-tensor algorithm)                                          */

/* p *= decay; m += (g - m) * b1c; v = v * b2 + (c2 * g) * g; p += -step * (m / (sqrt(v) / bc2 + eps)).
 * The SIMD path uses the same operations in the same order without fused multiply-adds, so it is bit-identical. */
void ek_adamw_f32_ref(float *p, const float *g, float *m, float *v, long n, float decay, float b1c, float b2, float c2,
                      float step, float bc2, float eps) {
    for (long i = 0; i < n; i++) {
        if (decay != 1.0f) p[i] *= decay;
        m[i] += (g[i] - m[i]) * b1c;
        v[i] = v[i] * b2 + (c2 * g[i]) * g[i];
        float denom = sqrtf(v[i]) / bc2 + eps;
        p[i] += -step * (m[i] / denom);
    }
}

#if EK_X86
EK_AVX2 static void adamw_avx2(float *p, const float *g, float *m, float *v, long n, float decay, float b1c, float b2,
                               float c2, float step, float bc2, float eps) {
    const __m256 vd = _mm256_set1_ps(decay), vb1 = _mm256_set1_ps(b1c), vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(c2);
    const __m256 vs = _mm256_set1_ps(-step), vbc = _mm256_set1_ps(bc2), ve = _mm256_set1_ps(eps);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pi = _mm256_loadu_ps(p + i), gi = _mm256_loadu_ps(g + i), mi = _mm256_loadu_ps(m + i), vi = _mm256_loadu_ps(v + i);
        if (decay != 1.0f) pi = _mm256_mul_ps(pi, vd);
        mi = _mm256_add_ps(mi, _mm256_mul_ps(_mm256_sub_ps(gi, mi), vb1));
        vi = _mm256_add_ps(_mm256_mul_ps(vi, vb2), _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc), ve);
        pi = _mm256_add_ps(pi, _mm256_mul_ps(vs, _mm256_div_ps(mi, denom)));
        _mm256_storeu_ps(p + i, pi); _mm256_storeu_ps(m + i, mi); _mm256_storeu_ps(v + i, vi);
    }
    if (i < n) ek_adamw_f32_ref(p + i, g + i, m + i, v + i, n - i, decay, b1c, b2, c2, step, bc2, eps);
}
#endif

typedef struct { float *p; const float *g; float *m, *v; long n; float decay, b1c, b2, c2, step, bc2, eps; } adamw_ctx;

static void adamw_serial(adamw_ctx *c, long a, long b) {
#if EK_X86
    if (train_use_avx2()) {
        adamw_avx2(c->p + a, c->g + a, c->m + a, c->v + a, b - a, c->decay, c->b1c, c->b2, c->c2, c->step, c->bc2, c->eps);
        return;
    }
#endif
    ek_adamw_f32_ref(c->p + a, c->g + a, c->m + a, c->v + a, b - a, c->decay, c->b1c, c->b2, c->c2, c->step, c->bc2, c->eps);
}

static void adamw_task(void *ctx, long index, long count) {
    adamw_ctx *c = (adamw_ctx *)ctx;
    long a, b;
    range_of(c->n, index, count, &a, &b);
    adamw_serial(c, a, b);
}

void ek_adamw_f32(float *p, const float *g, float *m, float *v, long n, float decay, float b1c, float b2, float c2,
                  float step, float bc2, float eps) {
    adamw_ctx c = { p, g, m, v, n, decay, b1c, b2, c2, step, bc2, eps };
    if (n < (1L << 15)) { adamw_serial(&c, 0, n); return; }
    ek_parallel_for(ek_get_threads(), adamw_task, &c);
}

/* ------------------------------------------------------------------------------------------------ */
/* Cross-entropy rows                                                                               */

/* For each row r of logits [rows, v] whose target t[r] >= 0: loss[r] = logsumexp(row) - row[t] (max-shifted, the
 * sum in double) and grad[r] = scale * (softmax(row) - onehot(t)); rows with t[r] < 0 get loss 0 and grad 0. */
void ek_cross_entropy_f32_ref(const float *logits, const long *targets, long rows, long v, float scale, float *grad,
                              double *loss) {
    for (long r = 0; r < rows; r++) {
        const float *x = logits + r * v;
        float *gr = grad + r * v;
        if (targets[r] < 0) {
            for (long i = 0; i < v; i++) gr[i] = 0.0f;
            loss[r] = 0.0;
            continue;
        }
        float mx = -INFINITY;
        for (long i = 0; i < v; i++) if (x[i] > mx) mx = x[i];
        double sum = 0.0;
        for (long i = 0; i < v; i++) sum += (double)expf(x[i] - mx);
        float lse = mx + (float)log(sum);
        for (long i = 0; i < v; i++) gr[i] = expf(x[i] - lse) * scale;
        gr[targets[r]] -= scale;
        loss[r] = (double)(lse - x[targets[r]]);
    }
}

#if EK_X86
EK_AVX2 static void cross_entropy_avx2(const float *logits, const long *targets, long rows, long v, float scale, float *grad,
                                       double *loss) {
    for (long r = 0; r < rows; r++) {
        const float *x = logits + r * v;
        float *gr = grad + r * v;
        if (targets[r] < 0) {
            for (long i = 0; i < v; i++) gr[i] = 0.0f;
            loss[r] = 0.0;
            continue;
        }
        __m256 vmx = _mm256_set1_ps(-INFINITY);
        long i = 0;
        for (; i + 8 <= v; i += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + i));
        float lanes[8];
        _mm256_storeu_ps(lanes, vmx);
        float mx = lanes[0];
        for (int l = 1; l < 8; l++) if (lanes[l] > mx) mx = lanes[l];
        for (; i < v; i++) if (x[i] > mx) mx = x[i];
        /* the exponentials in float (SIMD), their sum in double lanes */
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        const __m256 vm = _mm256_set1_ps(mx);
        for (i = 0; i + 8 <= v; i += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        double d[4];
        _mm256_storeu_pd(d, _mm256_add_pd(s0, s1));
        double sum = d[0] + d[1] + d[2] + d[3];
        for (; i < v; i++) sum += (double)expf(x[i] - mx);
        float lse = mx + (float)log(sum);
        const __m256 vl = _mm256_set1_ps(lse), vs = _mm256_set1_ps(scale);
        for (i = 0; i + 8 <= v; i += 8) _mm256_storeu_ps(gr + i, _mm256_mul_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vl)), vs));
        for (; i < v; i++) gr[i] = expf(x[i] - lse) * scale;
        gr[targets[r]] -= scale;
        loss[r] = (double)(lse - x[targets[r]]);
    }
}
#endif

typedef struct { const float *logits; const long *targets; long rows, v; float scale; float *grad; double *loss; } ce_ctx;

static void ce_serial(ce_ctx *c, long r0, long r1) {
#if EK_X86
    if (train_use_avx2()) {
        cross_entropy_avx2(c->logits + r0 * c->v, c->targets + r0, r1 - r0, c->v, c->scale, c->grad + r0 * c->v, c->loss + r0);
        return;
    }
#endif
    ek_cross_entropy_f32_ref(c->logits + r0 * c->v, c->targets + r0, r1 - r0, c->v, c->scale, c->grad + r0 * c->v, c->loss + r0);
}

static void ce_task(void *ctx, long index, long count) {
    ce_ctx *c = (ce_ctx *)ctx;
    ce_serial(c, c->rows * index / count, c->rows * (index + 1) / count);
}

void ek_cross_entropy_f32(const float *logits, const long *targets, long rows, long v, float scale, float *grad, double *loss) {
    ce_ctx c = { logits, targets, rows, v, scale, grad, loss };
    if (rows < 2 || rows * v < (1L << 15)) { ce_serial(&c, 0, rows); return; }
    ek_parallel_for(ek_get_threads(), ce_task, &c);
}
