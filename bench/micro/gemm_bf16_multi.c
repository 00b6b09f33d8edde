/* ek_gemm_bf16_multi (x rounded once, one pool job over every matrix's panels) against one ek_gemm_bf16 call per
 * matrix, m = 512, hot, alternated, best of 40, and whether every output has the same bytes. Build and run from the
 * repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/gemm_bf16_multi.c Sources/EncoreKernels/[a-z]*.c -lm \
 *       -lpthread -o /tmp/gemm_bf16_multi
 *   /tmp/gemm_bf16_multi 1024 384 192 192    # k, then each matrix's rows: Mu-330M's q/k/v
 * Session 24 (Zen 4, 2 threads): Mu's q/k/v 2.36 → 2.11 ms (1.12×), 8 cross-K/V matrices of 192 rows 1.14×, T5's
 * q/k/v (3 × 384) 1.14×, Llama-362M's (960, 320, 320; k = 960) 1.05×; same bytes in every case.
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  if(argc<3||argc>66){fprintf(stderr,"usage: %s k rows... (1 to 64 matrices)\n",argv[0]);return 2;}
  long m=512,k=atol(argv[1]),count=argc-2; long n[64]; ek_set_threads(2);
  const uint16_t*w[64]; float*y[64],*y2[64]; const float*b[64];
  float*x=malloc(4*m*k); for(long i=0;i<m*k;i++)x[i]=rand()/(float)RAND_MAX-0.5f;
  for(long j=0;j<count;j++){ n[j]=atol(argv[j+2]); uint16_t*q=malloc(2*n[j]*k); for(long i=0;i<n[j]*k;i++)q[i]=0x3c00+(rand()&0xff); w[j]=q; y[j]=malloc(4*m*n[j]); y2[j]=malloc(4*m*n[j]); b[j]=NULL;}
  double bs=1e9,bm=1e9;
  for(int it=0;it<40;it++){ double t=now(); for(long j=0;j<count;j++) ek_gemm_bf16(w[j],x,NULL,y[j],m,n[j],k,0); t=now()-t; if(t<bs)bs=t;
    t=now(); ek_gemm_bf16_multi(count,w,b,y2,n,x,m,k,0); t=now()-t; if(t<bm)bm=t; }
  int same=1; for(long j=0;j<count;j++) same&=!memcmp(y[j],y2[j],4*m*n[j]);
  printf("k=%ld %ld matrices: separate %.3f ms, multi %.3f ms (%.2fx), same bytes %d\n",k,count,bs*1e3,bm*1e3,bs/bm,same);
}
