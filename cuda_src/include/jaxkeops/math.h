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

// JK_OUTLINE keeps a function that runs once per tile out of line: each inlined copy is
// compile time, which is most of the first call of a new formula (the CPU tile packer, inlined
// twice, was a sixth of a kernel's code: out of line, the Gaussian sum and the log-sum-exp
// step compile about 0.3 s faster, 1.1-1.3 s instead of 1.4-1.6 s without the precompiled
// header, and run as fast).
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define JK_FN __device__ __forceinline__
#define JK_OUTLINE __device__ __noinline__
#define JK_DEVICE 1
#else
#define JK_FN inline __attribute__((always_inline))
#define JK_OUTLINE __attribute__((noinline))
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

}  // namespace jk

#endif  // JAXKEOPS_MATH_H
