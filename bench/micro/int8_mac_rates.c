/* Multiply-add rates of the AVX2 integer instruction mixes an int8 GEMM can use without VNNI, one thread, registers
 * only (no loads but the broadcast variants): why ek_gemm_int8 multiplies u8 x s8 bytes (vpmaddubsw, then vpmaddwd
 * by ones) instead of int16 pairs (vpmaddwd, then vpaddd). Build and run from the repository root:
 *   clang -O2 -mavx2 bench/micro/int8_mac_rates.c -o /tmp/int8_mac_rates && /tmp/int8_mac_rates
 * Rows: A/B int16 vpmaddwd + vpaddd (16 MACs per pair), C u8xs8 vpmaddubsw + vpmaddwd(ones) + vpaddd (32 MACs),
 * D two vpmaddubsw summed in int16 (saturates unless activations are 6-bit: not used), E/G the A and C mixes with a
 * broadcast activation load per two columns vectors (the GEMM's inner loop), F C with a vpsignb (8-bit signed
 * activations without saturation: slower than C). Measured on this project's Zen 4 VM (2026-11-29): A 2.5 G
 * vpmaddwd/s (40 GMAC/s), C 63-74 GMAC/s, E 37 GMAC/s, G 48-54 GMAC/s, F 39-48 GMAC/s. */
#include <stdio.h>
#include <time.h>
#include <immintrin.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define R 100000000L
int main(){
  double t;
  // A: 4 madd + 4 add into 4 accumulators (temps t0..t3)
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpmaddwd %%ymm14,%%ymm15,%%ymm0\n vpmaddwd %%ymm14,%%ymm15,%%ymm1\n vpmaddwd %%ymm14,%%ymm15,%%ymm2\n vpmaddwd %%ymm14,%%ymm15,%%ymm3\n"
   "vpaddd %%ymm0,%%ymm4,%%ymm4\n vpaddd %%ymm1,%%ymm5,%%ymm5\n vpaddd %%ymm2,%%ymm6,%%ymm6\n vpaddd %%ymm3,%%ymm7,%%ymm7\n"
   :::"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7");
  t=now()-t; printf("A madd+add 1:1  %.2f G madd/s\n",4*R/t/1e9);
  // B: 4 madd, pairwise add then add into 2 acc: 4 madd + 2 add(temp) + 2 add(acc)
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpmaddwd %%ymm14,%%ymm15,%%ymm0\n vpmaddwd %%ymm14,%%ymm15,%%ymm1\n vpmaddwd %%ymm14,%%ymm15,%%ymm2\n vpmaddwd %%ymm14,%%ymm15,%%ymm3\n"
   "vpaddd %%ymm0,%%ymm1,%%ymm0\n vpaddd %%ymm2,%%ymm3,%%ymm2\n vpaddd %%ymm0,%%ymm4,%%ymm4\n vpaddd %%ymm2,%%ymm5,%%ymm5\n"
   :::"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7");
  t=now()-t; printf("B same count    %.2f G madd/s\n",4*R/t/1e9);
  // C: MKL style: ubsw + madd(ones) + add, x4
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpmaddubsw %%ymm14,%%ymm15,%%ymm0\n vpmaddwd %%ymm0,%%ymm13,%%ymm0\n vpaddd %%ymm0,%%ymm4,%%ymm4\n"
   "vpmaddubsw %%ymm14,%%ymm15,%%ymm1\n vpmaddwd %%ymm1,%%ymm13,%%ymm1\n vpaddd %%ymm1,%%ymm5,%%ymm5\n"
   "vpmaddubsw %%ymm14,%%ymm15,%%ymm2\n vpmaddwd %%ymm2,%%ymm13,%%ymm2\n vpaddd %%ymm2,%%ymm6,%%ymm6\n"
   "vpmaddubsw %%ymm14,%%ymm15,%%ymm3\n vpmaddwd %%ymm3,%%ymm13,%%ymm3\n vpaddd %%ymm3,%%ymm7,%%ymm7\n"
   :::"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7");
  t=now()-t; printf("C ubsw+wd+add   %.2f G (32-MAC groups)/s = %.1f GMAC/s\n",4*R/t/1e9, 32*4*R/t/1e9);
  // D: ubsw x2 + vpaddsw + wd(ones) + add  (64 MAC)
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpmaddubsw %%ymm14,%%ymm15,%%ymm0\n vpmaddubsw %%ymm14,%%ymm15,%%ymm1\n vpaddsw %%ymm0,%%ymm1,%%ymm0\n vpmaddwd %%ymm0,%%ymm13,%%ymm0\n vpaddd %%ymm0,%%ymm4,%%ymm4\n"
   "vpmaddubsw %%ymm14,%%ymm15,%%ymm2\n vpmaddubsw %%ymm14,%%ymm15,%%ymm3\n vpaddsw %%ymm2,%%ymm3,%%ymm2\n vpmaddwd %%ymm2,%%ymm13,%%ymm2\n vpaddd %%ymm2,%%ymm5,%%ymm5\n"
   :::"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7");
  t=now()-t; printf("D 2ubsw+addsw+wd+add %.1f GMAC/s\n", 128.0*R/t/1e9);
  // E: madd with broadcast memory operand + add (like kernel): loads
  int buf[64] __attribute__((aligned(32))) = {1};
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpbroadcastd (%0),%%ymm12\n vpmaddwd %%ymm14,%%ymm12,%%ymm0\n vpmaddwd %%ymm15,%%ymm12,%%ymm1\n vpaddd %%ymm0,%%ymm4,%%ymm4\n vpaddd %%ymm1,%%ymm5,%%ymm5\n"
   "vpbroadcastd 4(%0),%%ymm12\n vpmaddwd %%ymm14,%%ymm12,%%ymm2\n vpmaddwd %%ymm15,%%ymm12,%%ymm3\n vpaddd %%ymm2,%%ymm6,%%ymm6\n vpaddd %%ymm3,%%ymm7,%%ymm7\n"
   ::"r"(buf):"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7","ymm12");
  t=now()-t; printf("E bcast+2madd+2add %.2f G madd/s = %.1f GMAC/s\n",4*R/t/1e9, 64.0*R/t/1e9);
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpsignb %%ymm12,%%ymm14,%%ymm0\n vpmaddubsw %%ymm0,%%ymm15,%%ymm0\n vpmaddwd %%ymm0,%%ymm13,%%ymm0\n vpaddd %%ymm0,%%ymm4,%%ymm4\n"
   "vpsignb %%ymm12,%%ymm14,%%ymm1\n vpmaddubsw %%ymm1,%%ymm15,%%ymm1\n vpmaddwd %%ymm1,%%ymm13,%%ymm1\n vpaddd %%ymm1,%%ymm5,%%ymm5\n"
   "vpsignb %%ymm12,%%ymm14,%%ymm2\n vpmaddubsw %%ymm2,%%ymm15,%%ymm2\n vpmaddwd %%ymm2,%%ymm13,%%ymm2\n vpaddd %%ymm2,%%ymm6,%%ymm6\n"
   "vpsignb %%ymm12,%%ymm14,%%ymm3\n vpmaddubsw %%ymm3,%%ymm15,%%ymm3\n vpmaddwd %%ymm3,%%ymm13,%%ymm3\n vpaddd %%ymm3,%%ymm7,%%ymm7\n"
   :::"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7");
  t=now()-t; printf("F sign+ubsw+wd+add %.1f GMAC/s\n", 128.0*R/t/1e9);
  t=now();
  for(long i=0;i<R;i++) __asm__ volatile(
   "vpbroadcastd (%0),%%ymm12\n vpmaddubsw %%ymm14,%%ymm12,%%ymm0\n vpmaddwd %%ymm0,%%ymm13,%%ymm0\n vpaddd %%ymm0,%%ymm4,%%ymm4\n vpmaddubsw %%ymm15,%%ymm12,%%ymm1\n vpmaddwd %%ymm1,%%ymm13,%%ymm1\n vpaddd %%ymm1,%%ymm5,%%ymm5\n"
   "vpbroadcastd 4(%0),%%ymm12\n vpmaddubsw %%ymm14,%%ymm12,%%ymm2\n vpmaddwd %%ymm2,%%ymm13,%%ymm2\n vpaddd %%ymm2,%%ymm6,%%ymm6\n vpmaddubsw %%ymm15,%%ymm12,%%ymm3\n vpmaddwd %%ymm3,%%ymm13,%%ymm3\n vpaddd %%ymm3,%%ymm7,%%ymm7\n"
   ::"r"(buf):"ymm0","ymm1","ymm2","ymm3","ymm4","ymm5","ymm6","ymm7","ymm12");
  t=now()-t; printf("G bcast MKL-style %.1f GMAC/s\n", 128.0*R/t/1e9);
  return 0;
}
