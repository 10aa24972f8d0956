// The AVX-512 intrinsics that ../shared/perf/refkern.cpp uses, as pairs of AVX2 registers.
//
// Only for the benchmark's measuring stick: on a machine without AVX-512, methods.build_ref
// force-includes this header (g++ -include) so that the hand-written reference kernel still
// compiles and runs, unchanged, on 8-wide registers. It is a weaker stick than the original:
// each 16-wide value takes two of AVX2's 16 registers (AVX-512 has 32), so kernels that keep
// many rows in registers spill, and scalef, roundscale and the mask compare take several
// instructions. docs/benchmarks.md says which form a table was measured with.
#ifndef JAXKEOPS_BENCH_AVX512_ON_AVX2_H
#define JAXKEOPS_BENCH_AVX512_ON_AVX2_H

#include <immintrin.h>  // first, so that the names below do not rename anything inside it

#if defined(__AVX512F__)
#error "avx512_on_avx2.h is for machines without AVX-512: compile refkern.cpp as it is"
#endif
#if !defined(__AVX2__) || !defined(__FMA__)
#error "avx512_on_avx2.h needs AVX2 and FMA (-march=native on an AVX2 machine)"
#endif

struct jkb_m512 {
  __m256 lo, hi;
};
typedef unsigned short jkb_mask16;

#define JKB_MAP1(name, op)                                                              \
  static inline jkb_m512 name(jkb_m512 a) { return {op(a.lo), op(a.hi)}; }
#define JKB_MAP2(name, op)                                                              \
  static inline jkb_m512 name(jkb_m512 a, jkb_m512 b) { return {op(a.lo, b.lo), op(a.hi, b.hi)}; }
#define JKB_MAP3(name, op)                                                              \
  static inline jkb_m512 name(jkb_m512 a, jkb_m512 b, jkb_m512 c) {                     \
    return {op(a.lo, b.lo, c.lo), op(a.hi, b.hi, c.hi)};                                \
  }

JKB_MAP2(jkb_add_ps, _mm256_add_ps)
JKB_MAP2(jkb_sub_ps, _mm256_sub_ps)
JKB_MAP2(jkb_mul_ps, _mm256_mul_ps)
JKB_MAP2(jkb_max_ps, _mm256_max_ps)
JKB_MAP3(jkb_fmadd_ps, _mm256_fmadd_ps)
JKB_MAP3(jkb_fnmadd_ps, _mm256_fnmadd_ps)

static inline jkb_m512 jkb_set1_ps(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
static inline jkb_m512 jkb_setzero_ps() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
static inline jkb_m512 jkb_load_ps(const float* p) { return {_mm256_load_ps(p), _mm256_load_ps(p + 8)}; }
static inline void jkb_store_ps(float* p, jkb_m512 a) {
  _mm256_store_ps(p, a.lo);
  _mm256_store_ps(p + 8, a.hi);
}

// Rounding to the nearest integer is the only mode refkern asks of roundscale.
static inline __m256 jkb_round_nearest(__m256 a) {
  return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline jkb_m512 jkb_roundscale_ps(jkb_m512 a, int) {
  return {jkb_round_nearest(a.lo), jkb_round_nearest(a.hi)};
}

// a * 2^n for integer-valued n: the exponent field of 2^n, clamped so that a very negative n
// gives 0 (refkern's exp2 relies on that) and a large one overflows to inf.
static inline __m256 jkb_scalef8(__m256 a, __m256 n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  e = _mm256_min_epi32(_mm256_max_epi32(e, _mm256_setzero_si256()), _mm256_set1_epi32(255));
  return _mm256_mul_ps(a, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}
JKB_MAP2(jkb_scalef_ps, jkb_scalef8)

static inline jkb_mask16 jkb_cmp_ps_mask(jkb_m512 a, jkb_m512 b, int) {  // _CMP_LT_OQ only
  const int lo = _mm256_movemask_ps(_mm256_cmp_ps(a.lo, b.lo, _CMP_LT_OQ));
  const int hi = _mm256_movemask_ps(_mm256_cmp_ps(a.hi, b.hi, _CMP_LT_OQ));
  return (jkb_mask16)(lo | (hi << 8));
}

static inline float jkb_hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline float jkb_hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline float jkb_reduce_add_ps(jkb_m512 a) { return jkb_hsum8(_mm256_add_ps(a.lo, a.hi)); }
static inline float jkb_reduce_max_ps(jkb_m512 a) { return jkb_hmax8(_mm256_max_ps(a.lo, a.hi)); }

#define __m512 jkb_m512
#define __mmask16 jkb_mask16
#define _mm512_add_ps jkb_add_ps
#define _mm512_sub_ps jkb_sub_ps
#define _mm512_mul_ps jkb_mul_ps
#define _mm512_max_ps jkb_max_ps
#define _mm512_fmadd_ps jkb_fmadd_ps
#define _mm512_fnmadd_ps jkb_fnmadd_ps
#define _mm512_set1_ps jkb_set1_ps
#define _mm512_setzero_ps jkb_setzero_ps
#define _mm512_load_ps jkb_load_ps
#define _mm512_store_ps jkb_store_ps
#define _mm512_roundscale_ps jkb_roundscale_ps
#define _mm512_scalef_ps jkb_scalef_ps
#define _mm512_cmp_ps_mask jkb_cmp_ps_mask
#define _mm512_reduce_add_ps jkb_reduce_add_ps
#define _mm512_reduce_max_ps jkb_reduce_max_ps

#endif  // JAXKEOPS_BENCH_AVX512_ON_AVX2_H
