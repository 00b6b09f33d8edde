/* The prompt GEMMs over cold weights, as in a model's prompt pass (every matrix read from memory, packed per call):
 * as many [n, k] matrices as fill 256 MiB, ek_gemm_bf16 or ek_gemm_int8 (`i`) on each in turn, best of 5 passes,
 * time per call. Build and run from the repository root (A/B of the packing's prefetch: -DEG_PACK_PF=0):
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/gemm_cold.c Sources/EncoreKernels/[a-z]*.c -lm -lpthread \
 *       -o /tmp/gemm_cold
 *   /tmp/gemm_cold 512 5120 960        # m n k: Llama-362M's gate/up, bf16
 *   /tmp/gemm_cold 512 4096 1024 i     # T5-347M's MLP up, int8 rows
 * Session 24 (Zen 4, 2 threads, 6 alternations, medians): the next panel prefetched while one is packed, int8
 * 512×4096×1024 8.4 → 7.3 ms, 128×4096×1024 2.03 → 1.84, bf16 512×5120×960 15.8 → 13.6 (the host moved single
 * runs by ±20%). */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  long m=atol(argv[1]),n=atol(argv[2]),k=atol(argv[3]); int int8=argc>4&&argv[4][0]=='i';
  ek_set_threads(2);
  long kp=(k+31)/32*32, bytes=int8? n*kp : 2*n*k, count=(256L<<20)/bytes;
  float*x=malloc(4*m*k),*y=malloc(4*m*n),*wf=malloc(4*n*k); for(long i=0;i<m*k;i++)x[i]=rand()/(float)RAND_MAX-0.5f;
  for(long i=0;i<n*k;i++)wf[i]=(rand()/(float)RAND_MAX-0.5f)*0.05f;
  void**w=malloc(sizeof(void*)*count); float*sc=malloc(4*n);
  for(long c=0;c<count;c++){ w[c]=malloc(bytes); if(int8) ek_quantize_rows(EK_WF_INT8,wf,w[c],sc,n,k); else ek_f32_to_bf16(wf,w[c],n*k);}
  double best=1e9;
  for(int pass=0;pass<5;pass++){ double t=now();
    for(long c=0;c<count;c++){ if(int8) ek_gemm_int8(w[c],sc,x,NULL,y,m,n,k,0); else ek_gemm_bf16(w[c],x,NULL,y,m,n,k,0);}
    t=(now()-t)/count; if(t<best)best=t; }
  printf("%s m=%ld n=%ld k=%ld cold x%ld: %.3f ms per call, %.1f G/s\n", int8?"int8":"bf16", m,n,k,count,best*1e3, 2.0*m*n*k/best/1e9);
}
