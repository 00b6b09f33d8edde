/* Why prompt passes keep OpenBLAS's sgemm: a BLIS-style AVX2 SGEMM written for this project (6-row × 16-column
 * register tile, 12 accumulators; activations packed once and shared by the threads into 6-row micro-panels;
 * each task packs its weight panels' k block of 256 by 8×8 transposes; C updated per k block) against OpenBLAS
 * single-threaded on each thread's column slice, as Encore's pool runs it (BLAS.swift). Best of 12, wall time.
 * Measured on this project's VM (2026-11-29, session 6): 0.90–1.00× OpenBLAS at 1 and 2 threads on the Mu/T5 shapes
 * (512×4096×1024 122 vs 134 GFLOP/s, 512×384×1024 123 vs 128), so it was not adopted. Build and run from the
 * repository root:
 *   clang -O2 -I Sources/EncoreKernels/include -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       bench/micro/sgemm_6x16.c Sources/EncoreKernels/[a-z]*.c -lopenblas -lm -lpthread -o /tmp/sgemm_6x16
 *   /tmp/sgemm_6x16 512 4096 1024 2      # m n k threads
 */
#include "EncoreKernels.h"


#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#define AV __attribute__((target("avx2,fma")))
#define MR 6
#define NR 16
#ifndef MC
#define MC 96
#endif
#ifndef KC
#define KC 256
#endif
#ifndef MAXP
#define MAXP 16
#endif
typedef struct { const float *x, *w; float *y; long m, n, k, per; float *ap; } ctx;
static _Thread_local float *pack; static _Thread_local long packlen;
AV static void tr8(const float *src, long ld, float *dst, long ldd) {
  __m256 r0=_mm256_loadu_ps(src),r1=_mm256_loadu_ps(src+ld),r2=_mm256_loadu_ps(src+2*ld),r3=_mm256_loadu_ps(src+3*ld),
         r4=_mm256_loadu_ps(src+4*ld),r5=_mm256_loadu_ps(src+5*ld),r6=_mm256_loadu_ps(src+6*ld),r7=_mm256_loadu_ps(src+7*ld);
  __m256 t0=_mm256_unpacklo_ps(r0,r1),t1=_mm256_unpackhi_ps(r0,r1),t2=_mm256_unpacklo_ps(r2,r3),t3=_mm256_unpackhi_ps(r2,r3),
         t4=_mm256_unpacklo_ps(r4,r5),t5=_mm256_unpackhi_ps(r4,r5),t6=_mm256_unpacklo_ps(r6,r7),t7=_mm256_unpackhi_ps(r6,r7);
  __m256 u0=_mm256_shuffle_ps(t0,t2,0x44),u1=_mm256_shuffle_ps(t0,t2,0xEE),u2=_mm256_shuffle_ps(t1,t3,0x44),u3=_mm256_shuffle_ps(t1,t3,0xEE),
         u4=_mm256_shuffle_ps(t4,t6,0x44),u5=_mm256_shuffle_ps(t4,t6,0xEE),u6=_mm256_shuffle_ps(t5,t7,0x44),u7=_mm256_shuffle_ps(t5,t7,0xEE);
  _mm256_store_ps(dst,        _mm256_permute2f128_ps(u0,u4,0x20)); _mm256_store_ps(dst+ldd,  _mm256_permute2f128_ps(u1,u5,0x20));
  _mm256_store_ps(dst+2*ldd,  _mm256_permute2f128_ps(u2,u6,0x20)); _mm256_store_ps(dst+3*ldd,_mm256_permute2f128_ps(u3,u7,0x20));
  _mm256_store_ps(dst+4*ldd,  _mm256_permute2f128_ps(u0,u4,0x31)); _mm256_store_ps(dst+5*ldd,_mm256_permute2f128_ps(u1,u5,0x31));
  _mm256_store_ps(dst+6*ldd,  _mm256_permute2f128_ps(u2,u6,0x31)); _mm256_store_ps(dst+7*ldd,_mm256_permute2f128_ps(u3,u7,0x31));
}
/* panel of columns c0..c0+nc, k values k0..k0+kc → dst [kc][16] */
AV static void pack_b(const float *w, long k, long c0, long nc, long k0, long kc, float *dst) {
  if (nc == NR && kc % 8 == 0) {
    for (long p = 0; p < kc; p += 8) { tr8(w + c0*k + k0 + p, k, dst + p*NR, NR); tr8(w + (c0+8)*k + k0 + p, k, dst + p*NR + 8, NR); }
    return;
  }
  for (long p = 0; p < kc; p++) for (long j = 0; j < NR; j++) dst[p*NR + j] = j < nc ? w[(c0+j)*k + k0 + p] : 0.0f;
}
#define UN _Pragma("clang loop unroll(full)")
/* C[mr][16] (ldc) = (first ? 0 : C) + a[kc][6] · b[kc][16] */
#define KERNEL(R) AV static void kernel_##R(const float *a, const float *b, long kc, float *c, long ldc, long nc, int first) { \
  __m256 acc[R][2]; UN for (int r = 0; r < R; r++) { acc[r][0] = _mm256_setzero_ps(); acc[r][1] = _mm256_setzero_ps(); } \
  for (long p = 0; p < kc; p++) { __m256 b0 = _mm256_load_ps(b + p*NR), b1 = _mm256_load_ps(b + p*NR + 8); \
    UN for (int r = 0; r < R; r++) { __m256 av = _mm256_broadcast_ss(a + p*MR + r); \
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]); acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]); } } \
  if (nc == NR) { UN for (int r = 0; r < R; r++) { float *cr = c + r*ldc; \
      if (!first) { acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr)); acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8)); } \
      _mm256_storeu_ps(cr, acc[r][0]); _mm256_storeu_ps(cr + 8, acc[r][1]); } } \
  else { UN for (int r = 0; r < R; r++) { float l[16]; _mm256_storeu_ps(l, acc[r][0]); _mm256_storeu_ps(l + 8, acc[r][1]); \
      for (long j = 0; j < nc; j++) c[r*ldc + j] = first ? l[j] : c[r*ldc + j] + l[j]; } } }
KERNEL(1) KERNEL(2) KERNEL(3) KERNEL(4) KERNEL(5) KERNEL(6)
AV static void cols(const ctx *g, long c0, long nc) {
  long panels = (nc + NR - 1) / NR;
  long need = panels * KC * NR;
  if (need > packlen) { free(pack); pack = aligned_alloc(64, need*4); packlen = need; }
  for (long k0 = 0; k0 < g->k; k0 += KC) {
    long kc = g->k - k0 < KC ? g->k - k0 : KC;
    for (long p = 0; p < panels; p++) { long pc = c0 + p*NR; pack_b(g->w, g->k, pc, c0 + nc - pc < NR ? c0 + nc - pc : NR, k0, kc, pack + p*kc*NR); }
    for (long m0 = 0; m0 < g->m; m0 += MC) {
      long m1 = m0 + MC < g->m ? m0 + MC : g->m;
      for (long p = 0; p < panels; p++) {
        long pc = c0 + p*NR, pn = c0 + nc - pc < NR ? c0 + nc - pc : NR;
        const float *bk = pack + p*kc*NR;
        for (long r0 = m0; r0 < m1; r0 += MR) {
          int mr = (int)(m1 - r0 < MR ? m1 - r0 : MR);
          const float *a = g->ap + (r0/MR)*g->k*MR + k0*MR;
          float *c = g->y + r0*g->n + pc;
          switch (mr) { case 6: kernel_6(a,bk,kc,c,g->n,pn,k0==0); break; case 5: kernel_5(a,bk,kc,c,g->n,pn,k0==0); break;
                        case 4: kernel_4(a,bk,kc,c,g->n,pn,k0==0); break; case 3: kernel_3(a,bk,kc,c,g->n,pn,k0==0); break;
                        case 2: kernel_2(a,bk,kc,c,g->n,pn,k0==0); break; default: kernel_1(a,bk,kc,c,g->n,pn,k0==0); }
        }
      }
    }
  }
}
/* A → [m/6][k][6] (zero rows past m) */
AV static void packa(void *c, long i, long n) { const ctx *g = c; long np = (g->m + MR - 1)/MR;
  for (long t = np*i/n; t < np*(i+1)/n; t++) { float *d = g->ap + t*g->k*MR; long r0 = t*MR;
    if (r0 + MR <= g->m) {
      const float *s0 = g->x + r0*g->k;
      for (long p = 0; p < g->k; p++) { d[p*MR] = s0[p]; d[p*MR+1] = s0[g->k+p]; d[p*MR+2] = s0[2*g->k+p]; d[p*MR+3] = s0[3*g->k+p]; d[p*MR+4] = s0[4*g->k+p]; d[p*MR+5] = s0[5*g->k+p]; }
    } else for (long p = 0; p < g->k; p++) for (int r = 0; r < MR; r++) d[p*MR + r] = r0 + r < g->m ? g->x[(r0+r)*g->k + p] : 0.0f; } }
static void task(void *c, long i, long n) { (void)n; const ctx *g = c; long c0 = i * g->per * NR, c1 = c0 + g->per*NR; if (c1 > g->n) c1 = g->n; cols(g, c0, c1 - c0); }
void proto_gemm_f32(const float *x, const float *w, float *y, long m, long n, long k) {
  long np = (n + NR - 1)/NR, thr = ek_get_threads(), tasks = thr*4 < np ? thr*4 : np;
  long per = (np + tasks - 1)/tasks; if (per > MAXP) per = MAXP; tasks = (np + per - 1)/per;
  static float *ap; static long aplen; long need = (m + MR - 1)/MR*MR*k;
  if (need > aplen) { free(ap); ap = aligned_alloc(64, need*4); aplen = need; }
  ctx g = { x, w, y, m, n, k, per, ap }; ek_parallel_for(thr, packa, &g); ek_parallel_for(tasks, task, &g);
}
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef struct { const float *x,*w; float *y; long m,n,k; } job;
static void slice(void*c,long i,long cnt){ job*j=c; long per=((j->n+cnt-1)/cnt+15)/16*16, s=i*per, e=s+per<j->n?s+per:j->n; if(s>=e)return;
  cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,j->m,e-s,j->k,1,j->x,j->k,j->w+s*j->k,j->k,0,j->y+s,j->n); }
int main(int argc,char**argv){ long m=atol(argv[1]),n=atol(argv[2]),k=atol(argv[3]); int thr=atoi(argv[4]);
  ek_set_threads(thr); openblas_set_num_threads(1);
  float*x=malloc(4*m*k),*w=malloc(4*n*k),*y=malloc(4*m*n),*y2=malloc(4*m*n);
  for(long i=0;i<m*k;i++)x[i]=rand()/(float)RAND_MAX-0.5f; for(long i=0;i<n*k;i++)w[i]=rand()/(float)RAND_MAX-0.5f;
  double a=1e9,b=1e9; job j={x,w,y2,m,n,k};
  for(int it=0;it<12;it++){ double t=now(); proto_gemm_f32(x,w,y,m,n,k); t=now()-t; if(t<a)a=t;
    t=now(); ek_parallel_for(thr,slice,&j); t=now()-t; if(t<b)b=t; }
  double e=0,r=0; for(long i=0;i<m*n;i++){e=fmax(e,fabs(y[i]-y2[i]));r=fmax(r,fabs(y2[i]));}
  double fl=2.0*m*n*k; printf("m=%ld n=%ld k=%ld thr=%d proto %.1f GFLOP/s | openblas on the pool %.1f GFLOP/s | %.2fx | err %.2g of %.2g\n",m,n,k,thr,fl/a/1e9,fl/b/1e9,b/a,e,r);
}
