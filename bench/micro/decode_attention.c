/* Decode cross-attention (one query) over Mu-330M's 10 layers of cold K/V (a 256 MiB sweep before each round):
 * Encore's layout [L, 3 KV heads × 64] (one ek_attention_f32 call per layer) against a head-major [3][L][64]
 * layout (three calls of one KV head per layer). Best of 30 rounds, wall time. Build and run from the repository root:
 *   clang -O2 -I Sources/EncoreKernels/include bench/micro/decode_attention.c Sources/EncoreKernels/[a-z]*.c -lm \
 *       -lpthread -o /tmp/decode_attention
 *   /tmp/decode_attention 512 2        # keys threads
 */
#include "EncoreKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  long L=atol(argv[1]), H=6, HKV=3, D=64, layers=10; int thr=atoi(argv[2]);
  ek_set_threads(thr);
  float *k[10],*v[10]; float*q=malloc(4*H*D),*o=malloc(4*H*D);
  for(int l=0;l<layers;l++){k[l]=malloc(4*L*HKV*D);v[l]=malloc(4*L*HKV*D);for(long i=0;i<L*HKV*D;i++){k[l][i]=(rand()%100)/100.f;v[l][i]=(rand()%100)/100.f;}}
  for(long i=0;i<H*D;i++)q[i]=(rand()%100)/100.f;
  long sw=64L<<20; float*big=malloc(4*sw); for(long i=0;i<sw;i++)big[i]=1;
  float*scr=malloc(4*ek_attention_scratch_floats(1,L,H,D));
  double a=1e9,b=1e9; volatile float sink=0;
  for(int r=0;r<30;r++){
    sink+=ek_sum_f32(big,sw);
    double t=now();
    for(int l=0;l<layers;l++) ek_attention_f32(q,H*D,k[l],HKV*D,v[l],HKV*D,o,H*D,1,L,H,HKV,D,0,NULL,-1,8.0f,scr);
    t=now()-t; if(t<a)a=t;
    sink+=ek_sum_f32(big,sw);
    t=now();
    for(int l=0;l<layers;l++) for(int g=0;g<3;g++) ek_attention_f32(q+g*2*D,2*D,k[l]+g*L*D,D,v[l]+g*L*D,D,o+g*2*D,2*D,1,L,2,1,D,0,NULL,-1,8.0f,scr);
    t=now()-t; if(t<b)b=t;
  }
  double bytes=2.0*layers*L*HKV*D*4;
  printf("L=%ld thr=%d cold: interleaved %.3f ms (%.1f GB/s) | head-major, 3 calls %.3f ms (%.1f GB/s)\n",L,thr,a*1e3,bytes/a/1e9,b*1e3,bytes/b/1e9);
}
