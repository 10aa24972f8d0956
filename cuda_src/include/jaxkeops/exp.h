// Exponentials for generated formula code and the reductions: exp, 2^x (exp2, and its forms
// for arguments known to be below 128 or negated), vectorised without libm on the CPU, and the
// GPU's special-function 2^x in CUDA threads. Same value types as math.h.
#ifndef JAXKEOPS_EXP_H
#define JAXKEOPS_EXP_H

#include "jaxkeops/math.h"

namespace jk {

// exp without libm, so that it vectorises with no -ffast-math. Cody-Waite reduction to
// r in [-ln2/2, ln2/2], a Taylor polynomial accurate to the last bit on that interval, and 2^n
// applied as two exponent-field scalings so that results down in the subnormal range stay right.
#if JK_AVX512
// exp for full AVX-512 vectors: 2^n e^r with vscalefps/pd doing the 2^n, which saturates to
// inf and 0 and handles subnormal results by itself. Clamping |x| first (in an order that keeps
// a NaN) maps +-inf to results that saturate correctly.
JK_FN vfloat exp_scaled(vfloat p, vfloat n) {
  return bit_cast<vfloat>(_mm512_scalef_ps(bit_cast<__m512>(p), bit_cast<__m512>(n)));
}
JK_FN vdouble exp_scaled(vdouble p, vdouble n) {
  return bit_cast<vdouble>(_mm512_scalef_pd(bit_cast<__m512d>(p), bit_cast<__m512d>(n)));
}
template <class V> JK_FN V clamp_keep_nan(V x, double lo, double hi) {
  // max/min return their 2nd operand on NaN, so a NaN x comes through.
  if constexpr (sizeof(scalar_t<V>) == 4) {
    __m512 v = bit_cast<__m512>(x);
    v = _mm512_min_ps(_mm512_set1_ps((float)hi), _mm512_max_ps(_mm512_set1_ps((float)lo), v));
    return bit_cast<V>(v);
  } else {
    __m512d v = bit_cast<__m512d>(x);
    v = _mm512_min_pd(_mm512_set1_pd(hi), _mm512_max_pd(_mm512_set1_pd(lo), v));
    return bit_cast<V>(v);
  }
}
JK_FN __m512 round_nearest(__m512 v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
JK_FN __m512d round_nearest(__m512d v) { return _mm512_roundscale_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
#endif

// e^r for |r| <= ln2 / 2, the reduced argument of exp.
template <class V> JK_FN V exp_reduced(V r) {
  V p;
  if constexpr (sizeof(scalar_t<V>) == 4) {
    // Chebyshev-node interpolant: relative error 2.5e-9.
    p = cst<V>(0.0013941108427927);
    p = p * r + cst<V>(0.008375126397942719);
    p = p * r + cst<V>(0.04166635289695859);
    p = p * r + cst<V>(0.16666415514654104);
    p = p * r + cst<V>(0.5000000047117675);
    p = p * r + cst<V>(1.0000000377162142);
    return p * r + cst<V>(1.0);
  } else {
    p = cst<V>(1.0 / 6227020800.0);
    p = p * r + cst<V>(1.0 / 479001600.0);
    p = p * r + cst<V>(1.0 / 39916800.0);
    p = p * r + cst<V>(1.0 / 3628800.0);
    p = p * r + cst<V>(1.0 / 362880.0);
    p = p * r + cst<V>(1.0 / 40320.0);
    p = p * r + cst<V>(1.0 / 5040.0);
    p = p * r + cst<V>(1.0 / 720.0);
    p = p * r + cst<V>(1.0 / 120.0);
    p = p * r + cst<V>(1.0 / 24.0);
    p = p * r + cst<V>(1.0 / 6.0);
    p = p * r + cst<V>(0.5);
    p = p * r + cst<V>(1);
    return p * r + cst<V>(1);
  }
}

template <class V> JK_FN V exp2(V x);

// 2^f for |f| <= 1/2, the reduced argument of exp2: a degree-5 near-minimax polynomial with its
// constant term exactly 1, so that 2^0 = e^0 = 1 exactly (a Gaussian kernel's diagonal is 1);
// relative error 9.1e-8, 1.6 ulp in float arithmetic.
template <class V> JK_FN V exp2_reduced(V f) {
  V p = cst<V>(0.0013264725691990997);
  p = p * f + cst<V>(0.009671513090083284);
  p = p * f + cst<V>(0.05550733751451026);
  p = p * f + cst<V>(0.2402224207766486);
  p = p * f + cst<V>(0.6931469775920138);
  return p * f + cst<V>(1.0);
}

#if !JK_DEVICE
// p 2^n for integer-valued lanes n, as p 2^(n/2) 2^(n - n/2): each factor is a normal number
// even where 2^n alone is not. VI: integer lanes of V's width; bias and mantissa_bits: V's
// exponent field.
template <class VI, class V>
inline V times_pow2_in_halves(V p, V n, int bias, int mantissa_bits) {
  VI ni = __builtin_convertvector(n, VI);
  VI n1 = ni >> 1, n2 = ni - n1;
  return (p * bit_cast<V>((n1 + bias) << mantissa_bits)) *
         bit_cast<V>((n2 + bias) << mantissa_bits);
}
#endif

template <class V> JK_FN V exp(V x) {
  using S = scalar_t<V>;
  constexpr bool single = sizeof(S) == 4;
#if JK_AVX512
  if constexpr (sizeof(V) == 64) {
    V xc = clamp_keep_nan(x, single ? -200.0 : -1600.0, single ? 200.0 : 1600.0);
    V t = xc * cst<V>(1.4426950408889634);
    V n;
    if constexpr (single) {
      n = bit_cast<V>(round_nearest(bit_cast<__m512>(t)));
    } else {
      n = bit_cast<V>(round_nearest(bit_cast<__m512d>(t)));
    }
    V r = xc - n * cst<V>(single ? 0.693145751953125 : 6.93147180369123816490e-01);
    r = r - n * cst<V>(single ? 1.428606820309417e-06 : 1.90821492927058770002e-10);
    return exp_scaled(exp_reduced(r), n);
  }
#endif
  const V hi = cst<V>(single ? 88.72283935546875 : 709.782712893384);
  const V lo = cst<V>(single ? -103.972084045410 : -745.1332191019412);
  V xc = select(x > hi, hi, select(x < lo, lo, x));
  xc = select(xc != xc, cst<V>(0), xc);
  const V shifter = cst<V>(single ? 12582912.0 : 6755399441055744.0);  // 1.5 * 2^mantissa
  V n = (xc * cst<V>(1.4426950408889634) + shifter) - shifter;
  V r = xc - n * cst<V>(0.693145751953125);
  r = r - n * cst<V>(1.428606820309417e-06);
  V p = exp_reduced(r);
  V scaled;
  if constexpr (traits<V>::lanes == 1) {
    scaled = ldexp(p, (int)n);
  }
#if !JK_DEVICE  // vector types do not exist in device code
  else if constexpr (single) {
    scaled = times_pow2_in_halves<vint32>(p, n, 127, 23);
  } else {
    scaled = times_pow2_in_halves<vint64>(p, n, 1023, 52);
  }
#endif
  scaled = select(x > hi, cst<V>(INFINITY), scaled);
  scaled = select(x < lo, cst<V>(0), scaled);
  return select(x != x, x, scaled);
}


#if JK_AVX2
// 2^t (2^-t when NEGATED) for float t < 128 (t > -128) or NaN, with AVX2: n = round(t), then
// 2^(t - n) (2^(n - t)) from `exp2_reduced`, with n added to (subtracted from) its exponent
// field; a result below 2^-126 (a subnormal or zero, infinite t included) gives +0, as XLA's
// CPU threads flush subnormal results anyway. The negated form costs no negation.
template <bool NEGATED, class V> JK_FN V exp2_avx2(V t) {
  V n = __builtin_ia32_roundps256(t, 0x08);  // to nearest, no exceptions (vroundps)
  V p = exp2_reduced(NEGATED ? n - t : t - n);
  vint32 scale = __builtin_convertvector(n, vint32) << 23;  // exact where it matters
  vint32 bits = NEGATED ? bit_cast<vint32>(p) - scale : bit_cast<vint32>(p) + scale;
  return bit_cast<V>(bits & ~(NEGATED ? t > cst<V>(126.0) : t < cst<V>(-126.0)));
}
#endif

// 2^x. With AVX-512 or AVX2 (float): n = round(x), 2^(x - n) from `exp2_reduced`, then 2^n;
// elsewhere exp(x * ln2).
// The code generator uses it for exp(c * a), folding log2(e) into the constant c.
template <class V> JK_FN V exp2(V x) {
  using S = scalar_t<V>;
#if JK_AVX512
  if constexpr (sizeof(V) == 64 && sizeof(S) == 4) {
    V n, f;
#if defined(__AVX512DQ__)
    // vreduceps gives x - round(x) exactly, and 0 for +-inf, which vscalef then saturates to
    // inf or 0: no clamp needed.
    __m512 t = bit_cast<__m512>(x);
    n = bit_cast<V>(round_nearest(t));
    f = bit_cast<V>(_mm512_reduce_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    V xc = clamp_keep_nan(x, -300.0, 300.0);
    n = bit_cast<V>(round_nearest(bit_cast<__m512>(xc)));
    f = xc - n;
#endif
    V p = exp2_reduced(f);
    return exp_scaled(p, n);
  }
#endif
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(S) == 4) {
    // vminps returns its second operand when either is a NaN, so a NaN x stays NaN through
    // p; x >= 128 gives n = 128 and p = 1 exactly, whose bits plus 128 << 23 are those of +inf.
    return exp2_avx2<false>(__builtin_ia32_minps256(cst<V>(128.0), x));
  }
#endif
  if constexpr (traits<V>::lanes == 1) {
    if constexpr (sizeof(S) == 4) return exp2f(x); else return ::exp2(x);
  } else {
    return exp(x * cst<V>(0.6931471805599453));
  }
}

// 2^x for x < 128 or NaN (the log-sum-exp reductions' terms, at most 2^SLACK): exp2 without
// its clamp against overflow.
template <class V> JK_FN V exp2_below_128(V x) {
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4) return exp2_avx2<false>(x);
#endif
  return exp2(x);
}

// 2^-x, for exp(-c |x - y|^2) once the constant has moved into x and y (rewrite.py, scaling.py):
// with AVX2 one vector op less per pair than exp2(-x), and the same values (the mirror image
// of exp2's clamps: x <= -128 gives +inf, x > 126 gives +0, NaN stays NaN). Elsewhere it is
// exp2(-x).
template <class V> JK_FN V exp2_neg(V x) {
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4)
    return exp2_avx2<true>(__builtin_ia32_maxps256(cst<V>(-128.0), x));  // NaN x: x
#endif
  return exp2(-x);
}

// The forms the code generator prints where it knows the argument's sign (OpSpec.sign): 2^x for
// x <= 0 or NaN, and 2^-x for x >= 0 or NaN (the Gaussian's -c |x - y|^2), which cannot
// overflow, so need no clamp: one vector op less per pair with AVX2 (measured on the Gaussian
// sum at M = N = 3e3, D = 3, one core: 8% faster). Same values as exp2 and exp2_neg.
template <class V> JK_FN V exp2_nonpositive(V x) { return exp2_below_128(x); }
template <class V> JK_FN V exp2_neg_nonnegative(V x) {
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4) return exp2_avx2<true>(x);
#endif
  return exp2_neg(x);
}

// ---------------------------------------------------------------------------------------------
// CUDA only (and the CPU emulation of the CUDA kernels in the tests, JK_CUDA_EMULATION): a CPU
// kernel never sees this part.
//
// A CUDA thread computes one scalar, so the polynomials above (there to vectorise on the CPU)
// give way to the GPU's own functions. In formula bodies, float exp and exp2 are the special
// function unit's 2^x, ex2.approx.ftz.f32, as KeOps's default -use_fast_math makes them: exp(x)
// is 2^(x log2 e), and the code generator folds log2 e into the formula's constants where it
// can (rewrite.py), so that exp(-c |x - y|^2) costs one MUFU.EX2 and no multiply per pair.
// Accuracy: ex2.approx errs by at most 2 ulp (PTX ISA; CUDA documents the same bound for exp2f),
// and the exponent (x log2 e, or a folded constant times a) is rounded to float, which adds up
// to |x| 2^-23 relative: the order of the rounding of the exponent c a itself (CUDA documents
// 2 + 1.17 |x| ulp for __expf). inf and NaN keep their IEEE meaning (2^inf = inf, 2^-inf = 0,
// NaN stays NaN, 2^+-0 = 1 exactly), but results below 2^-126 (e^x for x < -87.3) are flushed
// to +0. The reductions do not use these: they call ieee_exp2 (2 ulp, subnormal results kept).
// double data use CUDA's exp and exp2 (1 ulp); float16/bfloat16 data compute in float, so take
// the float path.
#if JK_DEVICE || defined(JK_CUDA_EMULATION)
namespace gpu {

// The tests' emulation defines JK_EMULATED_EX2(x, ftz) as its model of the instruction.
JK_FN float ex2_approx_ftz(float x) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#elif defined(JK_EMULATED_EX2)
  return JK_EMULATED_EX2(x, true);
#else
  return exp2f(x);  // nvcc's host pass: never called
#endif
}

// 2^x with IEEE semantics throughout, for the reductions: CUDA's exp2f (ex2.approx.f32 without
// ftz: 2 ulp, subnormal results kept).
JK_FN float ieee_exp2(float x) {
#if defined(JK_EMULATED_EX2)
  return JK_EMULATED_EX2(x, false);
#else
  return exp2f(x);
#endif
}
JK_FN double ieee_exp2(double x) { return ::exp2(x); }

}  // namespace gpu

JK_FN float exp(float x) { return gpu::ex2_approx_ftz(x * 1.4426950408889634f); }
JK_FN double exp(double x) { return ::exp(x); }
JK_FN float exp2(float x) { return gpu::ex2_approx_ftz(x); }
JK_FN double exp2(double x) { return ::exp2(x); }
JK_FN float exp2_neg(float x) { return gpu::ex2_approx_ftz(-x); }  // ex2's operand negates free
JK_FN double exp2_neg(double x) { return ::exp2(-x); }
// ex2.approx has no clamp to drop: the forms for a known sign are the plain ones.
JK_FN float exp2_nonpositive(float x) { return exp2(x); }
JK_FN double exp2_nonpositive(double x) { return exp2(x); }
JK_FN float exp2_neg_nonnegative(float x) { return exp2_neg(x); }
JK_FN double exp2_neg_nonnegative(double x) { return exp2_neg(x); }
#endif

}  // namespace jk

#endif  // JAXKEOPS_EXP_H
