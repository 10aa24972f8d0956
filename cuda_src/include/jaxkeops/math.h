// Math used by generated formula code, for a value type V that is either a scalar (float,
// double: a CUDA thread, or the tail of a CPU loop) or a GCC/Clang SIMD vector of them (the CPU
// kernel evaluates one formula for L consecutive reduced rows at once).
//
// The formula printer emits the same text for every backend; only this header and the loop
// schedule differ. Nothing here relies on -ffast-math: inf and NaN keep their IEEE meaning.
#ifndef JAXKEOPS_MATH_H
#define JAXKEOPS_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>
#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__) && defined(__AVX512F__)
#include <immintrin.h>
#define JK_AVX512 1
#else
#define JK_AVX512 0
#endif
// 256-bit vectors with AVX2 and FMA (machines without AVX-512): a vector test and an exp2 with
// no libm call, through GCC/Clang builtins and vector arithmetic. Not <immintrin.h>: parsing it
// takes 0.7 s, which every kernel built without the precompiled header would pay.
#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__) && !JK_AVX512 && defined(__AVX2__) && \
    defined(__FMA__)
#define JK_AVX2 1
#else
#define JK_AVX2 0
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define JK_FN __device__ __forceinline__
#define JK_DEVICE 1
#else
#define JK_FN inline __attribute__((always_inline))
#define JK_DEVICE 0
#endif

namespace jk {

// ---------------------------------------------------------------------------------------------
// Value-type traits.
template <class V> struct traits;
template <> struct traits<float> {
  using scalar = float;
  using mask = bool;
  using index = int32_t;
  static constexpr int lanes = 1;
};
template <> struct traits<double> {
  using scalar = double;
  using mask = bool;
  using index = int64_t;
  static constexpr int lanes = 1;
};

#if !JK_DEVICE
#ifndef JK_VECTOR_BYTES
#if defined(__AVX512F__)
#define JK_VECTOR_BYTES 64
#elif defined(__AVX__)
#define JK_VECTOR_BYTES 32
#else
#define JK_VECTOR_BYTES 16
#endif
#endif
typedef float vfloat __attribute__((vector_size(JK_VECTOR_BYTES)));
typedef double vdouble __attribute__((vector_size(JK_VECTOR_BYTES)));
typedef int32_t vint32 __attribute__((vector_size(JK_VECTOR_BYTES)));
typedef int64_t vint64 __attribute__((vector_size(JK_VECTOR_BYTES)));
template <> struct traits<vfloat> {
  using scalar = float;
  using mask = vint32;
  using index = vint32;
  static constexpr int lanes = JK_VECTOR_BYTES / 4;
};
template <> struct traits<vdouble> {
  using scalar = double;
  using mask = vint64;
  using index = vint64;
  static constexpr int lanes = JK_VECTOR_BYTES / 8;
};
template <class S> struct simd_of;
template <> struct simd_of<float> { using type = vfloat; };
template <> struct simd_of<double> { using type = vdouble; };
#else
template <class S> struct simd_of { using type = S; };
#endif
// The value type a kernel evaluates formulas in for scalar type S: a SIMD vector on the CPU.
template <class S> using simd_t = typename simd_of<S>::type;

template <class V> using scalar_t = typename traits<V>::scalar;
template <class V> using mask_t = typename traits<V>::mask;

// c in every lane. With AVX-512 a plain broadcast: `V{} + c` costs an addition when c is only
// known at run time (0 + c is not c for c = -0, so the compiler must keep it).
template <class V> JK_FN V cst(double c) {
  if constexpr (traits<V>::lanes == 1) {
    return (V)c;
  } else {
#if JK_AVX512
    if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 4) {
      __m512 v = _mm512_set1_ps((float)c);
      V r;
      memcpy(&r, &v, 64);
      return r;
    } else if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 8) {
      __m512d v = _mm512_set1_pd(c);
      V r;
      memcpy(&r, &v, 64);
      return r;
    }
#endif
    V z = {};
    return z + (scalar_t<V>)c;
  }
}

template <class M, class V> JK_FN V select(M m, V a, V b) { return m ? a : b; }

template <class V> JK_FN V from_mask(mask_t<V> m) { return select(m, cst<V>(1), cst<V>(0)); }

// x, forced into a register: a value loaded once and used by several fused multiply-adds
// would otherwise be folded into each of them as a memory operand, one load per use.
template <class V> JK_FN V in_register(V x) {
#if !JK_DEVICE
  asm("" : "+v"(x));
#endif
  return x;
}

// Applies a scalar function lane by lane: the fallback for functions with no SIMD version.
template <class V, class F> JK_FN V map1(V x, F f) {
  if constexpr (traits<V>::lanes == 1) {
    return f(x);
  } else {
    V r;
    for (int l = 0; l < traits<V>::lanes; ++l) r[l] = f(x[l]);
    return r;
  }
}
template <class V, class F> JK_FN V map2(V x, V y, F f) {
  if constexpr (traits<V>::lanes == 1) {
    return f(x, y);
  } else {
    V r;
    for (int l = 0; l < traits<V>::lanes; ++l) r[l] = f(x[l], y[l]);
    return r;
  }
}

// Reinterprets the bits of a value as another type of the same size (GCC vectors <-> __m512).
template <class To, class From> JK_FN To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

template <class M> JK_FN bool any(M m) {
  if constexpr (sizeof(M) <= 8) {
    return (bool)m;
#if JK_AVX512
  } else if constexpr (sizeof(M) == 64) {
    __m512i bits;
    memcpy(&bits, &m, 64);
    return _mm512_test_epi32_mask(bits, bits) != 0;
#endif
#if JK_AVX2
  } else if constexpr (sizeof(M) == 32) {
    typedef long long v4i64 __attribute__((vector_size(32)));
    v4i64 bits;
    memcpy(&bits, &m, 32);
    return !__builtin_ia32_ptestz256(bits, bits);  // vptest: one instruction, no lane loop
#endif
  } else {
    bool r = false;
    for (int l = 0; l < (int)(sizeof(M) / sizeof(m[0])); ++l) r |= (m[l] != 0);
    return r;
  }
}

// Whether a < b in some lane, and in every lane (false where either is NaN). With AVX-512 the
// comparison goes straight to a mask register: a GCC vector comparison would materialise a
// vector of -1/0 and test it again.
template <class V> JK_FN bool any_lt(V a, V b) {
#if JK_AVX512
  if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 4)
    return _mm512_cmp_ps_mask(bit_cast<__m512>(a), bit_cast<__m512>(b), _CMP_LT_OQ) != 0;
  if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 8)
    return _mm512_cmp_pd_mask(bit_cast<__m512d>(a), bit_cast<__m512d>(b), _CMP_LT_OQ) != 0;
#endif
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4)
    return __builtin_ia32_movmskps256(__builtin_ia32_cmpps256(a, b, 0x11)) != 0;  // LT_OQ
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 8)
    return __builtin_ia32_movmskpd256(__builtin_ia32_cmppd256(a, b, 0x11)) != 0;
#endif
  return any(a < b);
}
template <class V> JK_FN bool all_lt(V a, V b) {
#if JK_AVX512
  if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 4)
    return _mm512_cmp_ps_mask(bit_cast<__m512>(a), bit_cast<__m512>(b), _CMP_LT_OQ) == 0xFFFF;
  if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 8)
    return _mm512_cmp_pd_mask(bit_cast<__m512d>(a), bit_cast<__m512d>(b), _CMP_LT_OQ) == 0xFF;
#endif
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4)
    return __builtin_ia32_movmskps256(__builtin_ia32_cmpps256(a, b, 0x11)) == 0xFF;
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 8)
    return __builtin_ia32_movmskpd256(__builtin_ia32_cmppd256(a, b, 0x11)) == 0xF;
#endif
  return !any(!(a < b));
}

// Bit l set where !(a < b) in lane l (a NaN on either side sets it): the lanes a test by
// a < b does not settle.
template <class V> JK_FN unsigned lanes_not_lt(V a, V b) {
#if JK_AVX512
  if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 4)
    return _mm512_cmp_ps_mask(bit_cast<__m512>(a), bit_cast<__m512>(b), _CMP_NLT_UQ);
  if constexpr (sizeof(V) == 64 && sizeof(scalar_t<V>) == 8)
    return _mm512_cmp_pd_mask(bit_cast<__m512d>(a), bit_cast<__m512d>(b), _CMP_NLT_UQ);
#endif
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4)
    return __builtin_ia32_movmskps256(__builtin_ia32_cmpps256(a, b, 0x15));  // NLT_UQ
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 8)
    return __builtin_ia32_movmskpd256(__builtin_ia32_cmppd256(a, b, 0x15));
#endif
  if constexpr (traits<V>::lanes == 1) {
    return !(a < b);
  } else {
    const auto open = !(a < b);
    unsigned bits = 0;
    for (int l = 0; l < traits<V>::lanes; ++l) bits |= unsigned(open[l] != 0) << l;
    return bits;
  }
}

// ---------------------------------------------------------------------------------------------
// Comparisons (1 where true, 0 where false) and selections.
template <class V> JK_FN V eq(V a, V b) { return from_mask<V>(a == b); }
template <class V> JK_FN V ne(V a, V b) { return from_mask<V>(a != b); }
template <class V> JK_FN V lt(V a, V b) { return from_mask<V>(a < b); }
template <class V> JK_FN V le(V a, V b) { return from_mask<V>(a <= b); }
template <class V> JK_FN V ifelse(V f, V a, V b) { return select(f >= cst<V>(0), a, b); }
// min/max that propagate a NaN from either side, as jnp.min and jnp.max do.
template <class V> JK_FN V max_nan(V a, V b) { return select((b > a) | (b != b), b, a); }
template <class V> JK_FN V min_nan(V a, V b) { return select((b < a) | (b != b), b, a); }
template <class V> JK_FN V clamp(V x, V a, V b) {
  V lo = select(x < a, a, x);
  return select(lo > b, b, lo);
}
template <class V> JK_FN V clamp(V x, int a, int b) { return clamp(x, cst<V>(a), cst<V>(b)); }
template <class V> JK_FN V square(V x) { return x * x; }
template <class V> JK_FN V abs(V x) { return select(x < cst<V>(0), -x, x); }
template <class V> JK_FN V sign(V x) {
  V zero = cst<V>(0);
  return select(x > zero, cst<V>(1), select(x < zero, cst<V>(-1), x * zero));
}
template <class V> JK_FN V step(V x) { return select(x < cst<V>(0), cst<V>(0), cst<V>(1)); }
template <class V> JK_FN V relu(V x) { return select(x < cst<V>(0), cst<V>(0), x); }
template <class V> JK_FN V inv(V x) { return cst<V>(1) / x; }

// Tracks the position of the best component for ArgMax (Greater = true) or ArgMin: ties keep
// the first position, a NaN wins as in jnp.argmax.
template <bool Greater, class V> JK_FN void arg_update(V& best, V& arg, V x, int k) {
  auto better = Greater ? (x > best) : (x < best);
  better = better | ((x != x) & (best == best));
  best = select(better, x, best);
  arg = select(better, cst<V>(k), arg);
}

// ---------------------------------------------------------------------------------------------
// Scalar functions. exp has a SIMD version below; the rest go lane by lane.
JK_FN float sc_floor(float x) { return floorf(x); }
JK_FN double sc_floor(double x) { return ::floor(x); }

#define JK_LANEWISE(NAME, FEXPR, DEXPR)                                   \
  template <class V> JK_FN V NAME(V x) {                                  \
    if constexpr (sizeof(scalar_t<V>) == 4)                               \
      return map1(x, [](float v) -> float { return FEXPR; });             \
    else                                                                  \
      return map1(x, [](double v) -> double { return DEXPR; });           \
  }
JK_LANEWISE(log, logf(v), ::log(v))
JK_LANEWISE(sin, sinf(v), ::sin(v))
JK_LANEWISE(cos, cosf(v), ::cos(v))
JK_LANEWISE(asin, asinf(v), ::asin(v))
JK_LANEWISE(acos, acosf(v), ::acos(v))
JK_LANEWISE(atan, atanf(v), ::atan(v))
JK_LANEWISE(floor, floorf(v), ::floor(v))
JK_LANEWISE(sqrt, sqrtf(v), ::sqrt(v))
JK_LANEWISE(round_half_away, roundf(v), ::round(v))
#undef JK_LANEWISE

template <class V> JK_FN V atan2(V y, V x) {
  if constexpr (sizeof(scalar_t<V>) == 4)
    return map2(y, x, [](float a, float b) -> float { return atan2f(a, b); });
  else
    return map2(y, x, [](double a, double b) -> double { return ::atan2(a, b); });
}
template <class V> JK_FN V powf(V x, V y) {
  if constexpr (sizeof(scalar_t<V>) == 4)
    return map2(x, y, [](float a, float b) -> float { return ::powf(a, b); });
  else
    return map2(x, y, [](double a, double b) -> double { return ::pow(a, b); });
}

// x ** n for a compile-time integer n, by repeated squaring (exact for small n, as jnp's
// integer_pow is).
template <class V> JK_FN V powi(V x, int n) {
  bool negative = n < 0;
  unsigned m = negative ? -n : n;
  V result = cst<V>(1), base = x;
  while (m) {
    if (m & 1u) result = result * base;
    base = base * base;
    m >>= 1;
  }
  return negative ? cst<V>(1) / result : result;
}

template <class V> JK_FN V rsqrt(V x) {
  V zero = cst<V>(0);
  return select(x == zero, zero, cst<V>(1) / sqrt(x));
}
template <class V> JK_FN V xlogx(V x) {
  V zero = cst<V>(0);
  return select(x == zero, zero, x * log(x));
}
template <class V> JK_FN V sinxdivx(V x) {
  V zero = cst<V>(0);
  return select(x == zero, cst<V>(1), sin(x) / x);
}
template <class V> JK_FN V mod(V x, V n, V d) { return x - n * floor((x - d) / n); }
template <class V> JK_FN V round_digits(V x, int digits) {
  double scale = 1;
  for (int i = 0; i < (digits < 0 ? -digits : digits); ++i) scale *= 10;
  if (digits < 0) scale = 1 / scale;
  return round_half_away(x * cst<V>(scale)) / cst<V>(scale);
}
template <class V> JK_FN V onehot(V x, int k) { return from_mask<V>(round_half_away(x) == cst<V>(k)); }

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
    vint32 ni = __builtin_convertvector(n, vint32);
    vint32 n1 = ni >> 1, n2 = ni - n1;
    vint32 b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    V s1, s2;
    memcpy(&s1, &b1, sizeof(V));
    memcpy(&s2, &b2, sizeof(V));
    scaled = (p * s1) * s2;
  } else {
    vint64 ni = __builtin_convertvector(n, vint64);
    vint64 n1 = ni >> 1, n2 = ni - n1;
    vint64 b1 = (n1 + 1023) << 52, b2 = (n2 + 1023) << 52;
    V s1, s2;
    memcpy(&s1, &b1, sizeof(V));
    memcpy(&s2, &b2, sizeof(V));
    scaled = (p * s1) * s2;
  }
#endif
  scaled = select(x > hi, cst<V>(INFINITY), scaled);
  scaled = select(x < lo, cst<V>(0), scaled);
  return select(x != x, x, scaled);
}


#if JK_AVX2
// 2^t for float t < 128 or NaN, with AVX2: `exp2_reduced`, then 2^n added to its exponent
// field; t < -126 (a subnormal or zero 2^t, -inf included) gives +0, as XLA's CPU threads
// flush subnormal results anyway.
template <class V> JK_FN V exp2_avx2_below_128(V t) {
  V n = __builtin_ia32_roundps256(t, 0x08);  // to nearest, no exceptions (vroundps)
  V p = exp2_reduced(t - n);
  vint32 whole = __builtin_convertvector(n, vint32);  // exact where it matters (n >= -126)
  vint32 bits = bit_cast<vint32>(p) + (whole << 23);
  return bit_cast<V>(bits & ~(t < cst<V>(-126.0)));
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
    return exp2_avx2_below_128(__builtin_ia32_minps256(cst<V>(128.0), x));
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
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4) return exp2_avx2_below_128(x);
#endif
  return exp2(x);
}

// 2^-x, for exp(-c |x - y|^2) once the constant has moved into x and y (rewrite.py, scaling.py):
// with AVX2 the negation folds into the reduction, n = round(x) and 2^(n - x) from
// `exp2_reduced`, then n subtracted from the exponent field; one vector op less per pair than
// exp2(-x), and the same values (the mirror image of exp2's clamps: x <= -128 gives +inf,
// x > 126 gives +0, NaN stays NaN). Elsewhere it is exp2(-x).
template <class V> JK_FN V exp2_neg(V x) {
#if JK_AVX2
  if constexpr (sizeof(V) == 32 && sizeof(scalar_t<V>) == 4) {
    V t = __builtin_ia32_maxps256(cst<V>(-128.0), x);  // NaN x: x, as with exp2's vminps
    V n = __builtin_ia32_roundps256(t, 0x08);
    V p = exp2_reduced(n - t);
    vint32 whole = __builtin_convertvector(n, vint32);
    vint32 bits = bit_cast<vint32>(p) - (whole << 23);
    return bit_cast<V>(bits & ~(t > cst<V>(126.0)));
  }
#endif
  return exp2(-x);
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
#endif

}  // namespace jk

#endif  // JAXKEOPS_MATH_H
