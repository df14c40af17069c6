#!/usr/bin/env bash
# Single-core peak of this CPU for float32 multiply-add, the ceiling for any
# inference kernel (BENCHMARKS.md, "the floor"): a tiny C loop of
# independent fused multiply-adds, with 256-bit (AVX2/FMA) and, where the
# CPU has it, 512-bit (AVX-512F) vectors; best of 200 short runs (the machine is shared), GFLOP/s counting
# an FMA as 2 operations. Needs gcc (x86-64).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/cpu-peak
cat > target/cpu-peak/peak.c <<'EOF'
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

/* 12 independent chains (FMA latency x pipes, with headroom), spelled out
   so that they stay in registers. */
#define ACC 12
#define STEP(f) a0 = f(a0, x, y); a1 = f(a1, x, y); a2 = f(a2, x, y); a3 = f(a3, x, y); \
  a4 = f(a4, x, y); a5 = f(a5, x, y); a6 = f(a6, x, y); a7 = f(a7, x, y);           \
  a8 = f(a8, x, y); a9 = f(a9, x, y); a10 = f(a10, x, y); a11 = f(a11, x, y);
#define SUM(e) (a0[0] + a1[0] + a2[0] + a3[0] + a4[0] + a5[0] + a6[0] + a7[0] + a8[0] + a9[0] + a10[0] + a11[0])
#define ITERS 2000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx2,fma"))) static double avx2(void) {
  __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  /* Distinct starting values, or the compiler merges equal chains. */
  __m256 a0 = _mm256_set1_ps(1.00f), a1 = _mm256_set1_ps(1.01f), a2 = _mm256_set1_ps(1.02f), a3 = _mm256_set1_ps(1.03f), a4 = _mm256_set1_ps(1.04f), a5 = _mm256_set1_ps(1.05f), a6 = _mm256_set1_ps(1.06f), a7 = _mm256_set1_ps(1.07f), a8 = _mm256_set1_ps(1.08f), a9 = _mm256_set1_ps(1.09f), a10 = _mm256_set1_ps(1.10f), a11 = _mm256_set1_ps(1.11f);
  double t = now();
  for (long n = 0; n < ITERS; n++) { STEP(_mm256_fmadd_ps) }
  t = now() - t;
  if (SUM() == 42.0f) puts("");
  return 2.0 * 8 * ACC * ITERS / t / 1e9;
}

__attribute__((target("avx512f"))) static double avx512(void) {
  __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  /* Distinct starting values, or the compiler merges equal chains. */
  __m512 a0 = _mm512_set1_ps(1.00f), a1 = _mm512_set1_ps(1.01f), a2 = _mm512_set1_ps(1.02f), a3 = _mm512_set1_ps(1.03f), a4 = _mm512_set1_ps(1.04f), a5 = _mm512_set1_ps(1.05f), a6 = _mm512_set1_ps(1.06f), a7 = _mm512_set1_ps(1.07f), a8 = _mm512_set1_ps(1.08f), a9 = _mm512_set1_ps(1.09f), a10 = _mm512_set1_ps(1.10f), a11 = _mm512_set1_ps(1.11f);
  double t = now();
  for (long n = 0; n < ITERS; n++) { STEP(_mm512_fmadd_ps) }
  t = now() - t;
  if (SUM() == 42.0f) puts("");
  return 2.0 * 16 * ACC * ITERS / t / 1e9;
}

int main(void) {
  double b2 = 0, b5 = 0;
  for (int r = 0; r < 200; r++) {
    if (__builtin_cpu_supports("fma")) { double g = avx2(); if (g > b2) b2 = g; }
    if (__builtin_cpu_supports("avx512f")) { double g = avx512(); if (g > b5) b5 = g; }
  }
  printf("cpu-peak: float32 FMA, one core: AVX2 %.1f GFLOP/s", b2);
  if (b5 > 0) printf(", AVX-512 %.1f GFLOP/s", b5);
  printf("\n");
  return 0;
}
EOF
gcc -O2 -o target/cpu-peak/peak target/cpu-peak/peak.c
target/cpu-peak/peak
