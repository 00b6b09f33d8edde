/* ek_gemm_int8 against OpenBLAS sgemm of the same shape (best of 15; WALL=1 for wall time, else the calling
 * thread's CPU time), and its largest difference from the twin on small shapes. Build and run from the repository
 * root (A/B of two kernels: build once per gemm_int8.c):
 *   clang -O2 -I Sources/EncoreKernels/include -I Sources/EncoreKernels -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       bench/micro/gemm_int8_rate.c Sources/EncoreKernels/[a-z]*.c -lopenblas -lm -lpthread -o /tmp/gemm_int8_rate
 *   WALL=1 /tmp/gemm_int8_rate 512 4096 1024 2      # m n k threads
 *   WALL=1 /tmp/gemm_int8_rate 512 384 1024 2 3     # + count: 3 matrices [n, k] one call each, then one
 *                                                   #   ek_gemm_int8_multi call (q/k/v), alternating
 *   Q8=1 WALL=1 /tmp/gemm_int8_rate 512 4096 1024 2  # also ek_gemm_q8_0 on the same weights as Q8_0 blocks (x8)
 * Session 13 (Intel Xeon 6/207, 2 threads, 512 2560 960, alternated builds, 3 runs each): q8_0/int8 time 2.00-2.18x
 * with one panel per zmm call, 1.28-1.33x with two (kernel_q8_zmm2); bench/README.md "Session 13".
 * Since session 13 outputs of 4 MiB or more are written with non-temporal stores on Intel CPUs: EK_GEMM_NT=0 compares
 * with earlier figures (the micro benchmark does not pay the next operation's read from memory).
 */
#include "EncoreKernels.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <math.h>
#include <string.h>
static double now(void){struct timespec t;clock_gettime(getenv("WALL")?CLOCK_MONOTONIC:CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  long m=atol(argv[1]),n=atol(argv[2]),k=atol(argv[3]); int threads=atoi(argv[4]);
  ek_set_threads(threads); openblas_set_num_threads(threads);
  if(argc>5){ /* separate calls against one multi call over `count` matrices of [n, k] */
    long count=atol(argv[5]),kp=(k+31)/32*32;
    if(count<1||count>64){fprintf(stderr,"count must be 1..64\n");return 2;}
    float*x=malloc(4*m*k),*wf=malloc(4*n*k); srand(1);
    for(long i=0;i<m*k;i++)x[i]=(rand()/(float)RAND_MAX-0.5f);
    const int8_t*w[64];const float*ws[64];float*y[64],*y2[64];long ns[64];
    for(long j=0;j<count;j++){
      for(long i=0;i<n*k;i++)wf[i]=(rand()/(float)RAND_MAX-0.5f)*0.04f;
      int8_t*q=malloc(n*kp);float*s=malloc(4*n);ek_quantize_rows(EK_WF_INT8,wf,q,s,n,k);
      w[j]=q;ws[j]=s;y[j]=malloc(4*m*n);y2[j]=malloc(4*m*n);ns[j]=n;}
    double bs=1e9,bm=1e9;
    for(int it=0;it<30;it++){
      double t=now();for(long j=0;j<count;j++)ek_gemm_int8(w[j],ws[j],x,NULL,y[j],m,n,k,0);t=now()-t;if(t<bs)bs=t;
      t=now();ek_gemm_int8_multi(count,w,ws,NULL,y2,ns,x,m,k,0);t=now()-t;if(t<bm)bm=t;}
    int same=1;for(long j=0;j<count;j++)same&=!memcmp(y[j],y2[j],4*m*n);
    double op=2.0*m*n*k*count;
    printf("m=%ld %ldx n=%ld k=%ld thr=%d separate %.2f ms %.1f GOP/s | multi %.2f ms %.1f GOP/s | %.2fx | same bytes %s\n",
           m,count,n,k,threads,bs*1e3,op/bs/1e9,bm*1e3,op/bm/1e9,bs/bm,same?"yes":"NO");
    return 0;}
  long kp=(k+31)/32*32;
  float*x=malloc(4*m*k),*wf=malloc(4*n*k),*y=malloc(4*m*n),*y2=malloc(4*m*n),*ws=malloc(4*n);
  int8_t*w=malloc(n*kp);
  srand(1); for(long i=0;i<m*k;i++)x[i]=(rand()/(float)RAND_MAX-0.5f);
  for(long i=0;i<n*k;i++)wf[i]=(rand()/(float)RAND_MAX-0.5f)*0.04f;
  ek_quantize_rows(EK_WF_INT8,wf,w,ws,n,k);
  double best=1e9,bestb=1e9;
  /* int8 first, then sgemm: OpenBLAS's idle threads spin after a call and would take a core from Encore's */
  for(int it=0;it<15;it++){double t=now();ek_gemm_int8(w,ws,x,NULL,y,m,n,k,0);t=now()-t;if(t<best)best=t;}
  for(int it=0;it<15;it++){double t=now();cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,m,n,k,1,x,k,wf,k,0,y2,n);t=now()-t;if(t<bestb)bestb=t;}
  if(getenv("Q8")){ /* the same weights as Q8_0 blocks in the x8 layout (what decode keeps), interleaved with int8 */
    long rb=ek_quant_row_bytes(EK_WF_Q8_0,k); uint8_t*q8=malloc(n*rb); float*y4=malloc(4*m*n);
    ek_quantize_rows(EK_WF_Q8_0,wf,q8,NULL,n,k); ek_repack_x8(EK_WF_Q8_0,q8,q8,n,k);
    double bq=1e9,bi=1e9;
    for(int it=0;it<15;it++){double t=now();ek_gemm_q8_0(EK_WF_Q8_0X8,q8,x,NULL,y4,m,n,k,0);t=now()-t;if(t<bq)bq=t;
      t=now();ek_gemm_int8(w,ws,x,NULL,y,m,n,k,0);t=now()-t;if(t<bi)bi=t;}
    double e=0,r=0; for(long i=0;i<m*n;i++){e=fmax(e,fabs(y4[i]-y2[i]));r=fmax(r,fabs(y2[i]));}
    printf("q8_0 %.2f ms %.1f GOP/s | int8 %.2f ms %.1f GOP/s | q8_0/int8 time %.2fx | q8_0 maxerr %.3g of %.3g\n",
           bq*1e3,2.0*m*n*k/bq/1e9,bi*1e3,2.0*m*n*k/bi/1e9,bq/bi,e,r);}
  double err=0,ref=0; for(long i=0;i<m*n;i++){err=fmax(err,fabs(y[i]-y2[i]));ref=fmax(ref,fabs(y2[i]));}
  if(m*n*k<=64L*1024*1024){ float*y3=malloc(4*m*n); ek_gemm_int8_ref(w,ws,x,NULL,y3,m,n,k,0); double e=0; for(long i=0;i<m*n;i++)e=fmax(e,fabs(y[i]-y3[i])); printf("vs ref %.3g\n",e);}
  double fl=2.0*m*n*k;
  printf("m=%ld n=%ld k=%ld thr=%d int8 %.2f ms %.1f GOP/s | sgemm %.2f ms %.1f GFLOP/s | ratio %.2fx | maxerr %.3g of %.3g\n",m,n,k,threads,best*1e3,fl/best/1e9,bestb*1e3,fl/bestb/1e9,bestb/best,err,ref);
}
