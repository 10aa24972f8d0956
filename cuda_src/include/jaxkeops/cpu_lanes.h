// Lanes of the CPU reductions' SIMD values: their reduced indices, one lane read as a scalar,
// and the widening of float terms into double sums (cpu_reductions.h, cpu_kmin.h).
#ifndef JAXKEOPS_CPU_LANES_H
#define JAXKEOPS_CPU_LANES_H

#include "jaxkeops/math.h"

namespace jk {

template <class V> using index_t = typename traits<V>::index;

// The tile-local indices base, base + 1, ... of the lanes.
template <class J> JK_FN J lane_indices(int base) {
  if constexpr (sizeof(J) <= 8) {
    return (J)base;
  } else {
    J j;
    for (int l = 0; l < (int)(sizeof(J) / sizeof(j[0])); ++l) j[l] = base + l;
    return j;
  }
}

template <class V> JK_FN scalar_t<V> lane(const V& v, int l) {
  if constexpr (traits<V>::lanes == 1) return v; else return v[l];
}
template <class J> JK_FN int64_t lane_index(const J& v, int l) {
  if constexpr (sizeof(J) <= 8) return (int64_t)v; else return (int64_t)v[l];
}

// Values of type V added into sums of scalar type T: T is the scalar of V (one accumulator per
// value), or double for float V, where each vector of L floats widens into N = 2 vectors of
// L / 2 doubles (lane l of the value is lane l % (L / 2) of accumulator l / (L / 2)).
template <class V, class T> struct Widen {
  static_assert(std::is_same<T, scalar_t<V>>::value, "accumulators are V's scalar or double");
  using A = V;
  static constexpr int N = 1;
  JK_FN static void split(const V& x, A* out) { out[0] = x; }
};
template <> struct Widen<float, double> {
  using A = double;
  static constexpr int N = 1;
  JK_FN static void split(float x, A* out) { out[0] = x; }
};
#if !JK_DEVICE
template <> struct Widen<vfloat, double> {
  using A = vdouble;
  static constexpr int N = 2;
  typedef float half_t __attribute__((vector_size(JK_VECTOR_BYTES / 2)));
  JK_FN static void split(const vfloat& x, A* out) {
    // The halves by memcpy: the same single extract as __builtin_shufflevector (measured),
    // which GCC only has from version 12.
    half_t lo, hi;
    memcpy(&lo, &x, sizeof(half_t));
    memcpy(&hi, (const char*)&x + sizeof(half_t), sizeof(half_t));
    out[0] = __builtin_convertvector(lo, vdouble);
    out[1] = __builtin_convertvector(hi, vdouble);
  }
};
#endif

// Lane l of a value vector, read from its widened accumulators.
template <class W> JK_FN auto widened_lane(const typename W::A* acc, int l) {
  constexpr int LA = traits<typename W::A>::lanes;
  return lane(acc[l / LA], l % LA);
}

}  // namespace jk

#endif  // JAXKEOPS_CPU_LANES_H
