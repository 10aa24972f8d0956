// Reductions for the CUDA schedule (cuda_kernel.h): one output row per thread, the reduced
// rows taken one at a time in increasing order. Same semantics as cpu_reductions.h, inf, NaN
// and empty rows included (ties go to the smallest index, a NaN wins Min/Max, KMin ranks in
// IEEE total order as lax.top_k does and pads with +inf and index -1, LogSumExp never makes a
// NaN out of all -inf terms and gives +inf for +inf terms, an empty row gives index -1). The
// contract, per reduction:
//
//   State                        the running result of one output row, in registers
//   init(State&)                 the neutral element
//   start_tile / end_tile        bracket the rows of one shared-memory tile (block sums)
//   accumulate(State&, const C* f, int64_t j)    folds in f, the formula at reduced row j
//   finish(const State&, W& w)   writes the row's outputs through w.value / w.index
//   Partial, PARTIAL_VALUES, PARTIAL_INDICES, save, load, combine
//                                the split schedule: a state as a record of values (of type
//                                Partial) and int64 indices in global memory (field f at
//                                [f * stride]), and combine(a, b) with b covering later reduced
//                                rows than a.
#ifndef JAXKEOPS_CUDA_REDUCTIONS_H
#define JAXKEOPS_CUDA_REDUCTIONS_H

#include "jaxkeops/ieee.h"
#include "jaxkeops/math.h"
#include "jaxkeops/summation.h"

namespace jk {
namespace gpu {

template <class C> JK_FN bool is_nan(C x) { return x != x; }

// Sum per component, in scalars T (C, or double for float data), with the scheme SCHEME.
template <class C, int DIM, int SCHEME, class T = C> struct SumReduction {
  using Partial = T;
  static constexpr bool KAHAN = SCHEME == KAHAN_SUM;
  static constexpr int PARTIAL_VALUES = KAHAN ? 2 * DIM : DIM;
  static constexpr int PARTIAL_INDICES = 0;
  struct State {
    T total[DIM], part[DIM];  // part: the tile's sum (block) or the compensation (Kahan)
  };
  JK_FN static void init(State& s) {
    for (int k = 0; k < DIM; ++k) s.total[k] = 0, s.part[k] = 0;
  }
  JK_FN static void start_tile(State& s) {
    if constexpr (SCHEME == BLOCK_SUM)
      for (int k = 0; k < DIM; ++k) s.part[k] = 0;
  }
  JK_FN static void accumulate(State& s, const C* f, int64_t) {
    for (int k = 0; k < DIM; ++k) {
      if constexpr (KAHAN) {
        kahan_add<T>(s.total[k], s.part[k], (T)f[k]);
      } else if constexpr (SCHEME == BLOCK_SUM) {
        s.part[k] += (T)f[k];
      } else {
        s.total[k] += (T)f[k];
      }
    }
  }
  JK_FN static void end_tile(State& s) {
    if constexpr (SCHEME == BLOCK_SUM)
      for (int k = 0; k < DIM; ++k) s.total[k] += s.part[k];
  }
  JK_FN static void save(const State& s, T* v, int64_t*, int64_t stride) {
    for (int k = 0; k < DIM; ++k) {
      v[k * stride] = s.total[k];
      if constexpr (KAHAN) v[(DIM + k) * stride] = s.part[k];
    }
  }
  JK_FN static void load(State& s, const T* v, const int64_t*, int64_t stride) {
    for (int k = 0; k < DIM; ++k) {
      s.total[k] = v[k * stride];
      s.part[k] = KAHAN ? v[(DIM + k) * stride] : T(0);
    }
  }
  JK_FN static void combine(State& a, const State& b) {
    for (int k = 0; k < DIM; ++k) {
      if constexpr (KAHAN) {
        merge_compensated<T>(a.total[k], a.part[k], b.total[k], b.part[k]);
      } else {
        a.total[k] += b.total[k];
      }
    }
  }
  template <class W> JK_FN static void finish(const State& s, W& w) {
    for (int k = 0; k < DIM; ++k)
      w.value(0, DIM, k, (C)(KAHAN ? s.total[k] - s.part[k] : s.total[k]));
  }
};

// Min or Max per component (MAX), with the value (VALUE) and/or the index of the extremum
// (ARG). A NaN wins, the first one seen; on equal values the earlier index stays; the first
// row is always taken (a row of +inf gives index 0 for Min). An empty row keeps index -1.
template <class C, int DIM, bool MAX, bool VALUE, bool ARG> struct ExtremumReduction {
  using Partial = C;
  static constexpr int PARTIAL_VALUES = DIM;
  static constexpr int PARTIAL_INDICES = ARG ? DIM : 0;
  struct State {
    C best[DIM];
    int64_t arg[DIM];
  };
  JK_FN static bool better(C x, C best) {
    return (MAX ? x > best : x < best) || (is_nan(x) && !is_nan(best));
  }
  JK_FN static void init(State& s) {
    for (int k = 0; k < DIM; ++k) s.best[k] = MAX ? -INFINITY : INFINITY, s.arg[k] = -1;
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void end_tile(State&) {}
  JK_FN static void accumulate(State& s, const C* f, int64_t j) {
    for (int k = 0; k < DIM; ++k) {
      if (better(f[k], s.best[k]) || s.arg[k] < 0) {
        s.best[k] = f[k];
        s.arg[k] = j;
      }
    }
  }
  JK_FN static void save(const State& s, C* v, int64_t* ix, int64_t stride) {
    for (int k = 0; k < DIM; ++k) {
      v[k * stride] = s.best[k];
      if constexpr (ARG) ix[k * stride] = s.arg[k];
    }
  }
  JK_FN static void load(State& s, const C* v, const int64_t* ix, int64_t stride) {
    for (int k = 0; k < DIM; ++k) {
      s.best[k] = v[k * stride];
      s.arg[k] = ARG ? ix[k * stride] : 0;
    }
  }
  JK_FN static void combine(State& a, const State& b) {
    for (int k = 0; k < DIM; ++k) {
      if (better(b.best[k], a.best[k]) || (a.arg[k] < 0 && b.arg[k] >= 0)) {
        a.best[k] = b.best[k];
        a.arg[k] = b.arg[k];
      }
    }
  }
  template <class W> JK_FN static void finish(const State& s, W& w) {
    for (int k = 0; k < DIM; ++k) {
      if constexpr (VALUE) w.value(0, DIM, k, s.best[k]);
      if constexpr (ARG) w.index(VALUE ? 1 : 0, DIM, k, s.arg[k]);
    }
  }
};

// The K smallest values per component, ascending, and/or their indices, kept as a sorted list
// per thread, ranked in IEEE total order (total_order_key, as lax.top_k(-v, K)). A candidate
// enters only if strictly before the current K-th value (or into an empty slot), so equal
// values keep their order of arrival (that of a stable sort); +inf and NaN enter like any value.
template <class C, int DIM, int K, bool VALUE, bool ARG> struct KMinReduction {
  using Partial = C;
  static constexpr int PARTIAL_VALUES = DIM * K;
  static constexpr int PARTIAL_INDICES = DIM * K;
  struct State {
    C val[DIM][K];
    int64_t arg[DIM][K];  // -1: an empty slot (+inf in val); empty slots come last
  };
  JK_FN static void init(State& s) {
    for (int k = 0; k < DIM; ++k)
      for (int q = 0; q < K; ++q) s.val[k][q] = INFINITY, s.arg[k][q] = -1;
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void end_tile(State&) {}
  // Whether value x with index ix ranks before value y with index iy (-1: an empty slot).
  JK_FN static bool before(C x, int64_t ix, C y, int64_t iy) {
    return ix >= 0 && (iy < 0 || total_order_key(x) < total_order_key(y));
  }
  JK_FN static void accumulate(State& s, const C* f, int64_t j) {
    for (int k = 0; k < DIM; ++k) {
      C x = f[k];
      if (!before(x, j, s.val[k][K - 1], s.arg[k][K - 1])) continue;
      int q = K - 1;
      while (q > 0 && before(x, j, s.val[k][q - 1], s.arg[k][q - 1])) {
        s.val[k][q] = s.val[k][q - 1];
        s.arg[k][q] = s.arg[k][q - 1];
        --q;
      }
      s.val[k][q] = x;
      s.arg[k][q] = j;
    }
  }
  JK_FN static void save(const State& s, C* v, int64_t* ix, int64_t stride) {
    for (int k = 0; k < DIM; ++k)
      for (int q = 0; q < K; ++q) {
        v[(k * K + q) * stride] = s.val[k][q];
        ix[(k * K + q) * stride] = s.arg[k][q];
      }
  }
  JK_FN static void load(State& s, const C* v, const int64_t* ix, int64_t stride) {
    for (int k = 0; k < DIM; ++k)
      for (int q = 0; q < K; ++q) {
        s.val[k][q] = v[(k * K + q) * stride];
        s.arg[k][q] = ix[(k * K + q) * stride];
      }
  }
  // Merges two sorted lists, a's entries first among equal values (a has the earlier rows),
  // empty slots last.
  JK_FN static void combine(State& a, const State& b) {
    for (int k = 0; k < DIM; ++k) {
      C val[K];
      int64_t arg[K];
      int i = 0, j = 0;
      for (int q = 0; q < K; ++q) {  // i + j == q < K: neither list runs out
        if (before(b.val[k][j], b.arg[k][j], a.val[k][i], a.arg[k][i])) {
          val[q] = b.val[k][j];
          arg[q] = b.arg[k][j++];
        } else {
          val[q] = a.val[k][i];
          arg[q] = a.arg[k][i++];
        }
      }
      for (int q = 0; q < K; ++q) a.val[k][q] = val[q], a.arg[k][q] = arg[q];
    }
  }
  template <class W> JK_FN static void finish(const State& s, W& w) {
    for (int q = 0; q < K; ++q)
      for (int k = 0; k < DIM; ++k) {
        if constexpr (VALUE) w.value(0, K * DIM, q * DIM + k, s.val[k][q]);
        if constexpr (ARG) w.index(VALUE ? 1 : 0, K * DIM, q * DIM + k, s.arg[k][q]);
      }
  }
};

// What a LogSumExpReduction outputs.
enum LseOutput { LSE_OUT = 0, SOFTMAX_OUT = 1, SIGNED_LSE_OUT = 2 };

// Streaming log-sum-exp of the scalar formula component f[0] with a running maximum m:
//   LSE_OUT:         out[k] = m + log(sum exp(f - m) * w[k])   (w = 1 when unweighted)
//   SIGNED_LSE_OUT:  out[k] = m + log|sum exp(f - m) * w[k]| and its sign (-1, 0, +1) in a
//                    second output
//   SOFTMAX_OUT:     out[k] = sum exp(f - m) * w[k] / sum exp(f - m)
// with w the WDIM components after f, the sums in scalars T (C, or double for float data)
// added up with SCHEME. inf and NaN as in cpu_reductions.h: m is the largest term below +inf,
// a +inf or NaN term goes into the sums as itself times its weight (dropped where the weight is
// 0, except for softmax), such sums are never rescaled and give +inf, or NaN (weights of both
// signs, a NaN, or any of them for softmax); all -inf terms and an empty row give -inf (LSE) or
// 0/0 (softmax).
template <class C, int WDIM, bool WEIGHTED, int OUT, int SCHEME, class T = C>
struct LogSumExpReduction {
  using Partial = T;  // m is stored as a T too: exact, and one type per record
  static constexpr bool SOFTMAX = OUT == SOFTMAX_OUT;
  static constexpr bool KAHAN = SCHEME == KAHAN_SUM;
  static constexpr int FIRST_WEIGHT = (SOFTMAX || !WEIGHTED) ? 1 : 0;
  static constexpr int ACC = (WEIGHTED ? WDIM : 0) + FIRST_WEIGHT;
  static constexpr int PARTIAL_VALUES = 1 + (KAHAN ? 2 : 1) * ACC;
  static constexpr int PARTIAL_INDICES = 0;
  struct State {
    C m;  // the largest term below +inf, -inf while there is none
    T s[ACC];  // the row's sums, scaled by exp(-m)
    T part[ACC];  // BLOCK_SUM: this tile's sums; KAHAN_SUM: the compensation of s
  };
  JK_FN static void init(State& s) {
    s.m = -INFINITY;
    for (int k = 0; k < ACC; ++k) s.s[k] = 0, s.part[k] = 0;
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void end_tile(State& s) {
    if constexpr (SCHEME == BLOCK_SUM)
      for (int k = 0; k < ACC; ++k) s.s[k] += s.part[k], s.part[k] = 0;
  }
  JK_FN static void add(State& s, int k, T x) {
    if constexpr (KAHAN) {
      kahan_add<T>(s.s[k], s.part[k], x);
    } else if constexpr (SCHEME == BLOCK_SUM) {
      s.part[k] += x;
    } else {
      s.s[k] += x;
    }
  }
  JK_FN static void add_terms(State& s, C e, const C* f) {
    if constexpr (FIRST_WEIGHT == 1) add(s, 0, (T)e);
    if constexpr (WEIGHTED)
      for (int q = 0; q < WDIM; ++q) add(s, FIRST_WEIGHT + q, (T)e * (T)f[1 + q]);
  }
  // A +inf or NaN term x, as itself (see above).
  JK_FN static void add_special_term(State& s, C x, const C* f) {
    if constexpr (FIRST_WEIGHT == 1) add(s, 0, (T)x);
    if constexpr (WEIGHTED)
      for (int q = 0; q < WDIM; ++q)
        add(s, FIRST_WEIGHT + q, !SOFTMAX && f[1 + q] == C(0) ? T(0) : (T)x * (T)f[1 + q]);
  }
  // exp(from - to): 1 where they are equal (also both -inf), 0 from -inf.
  JK_FN static T rescaling(C from, C to) {
    if (from == to) return T(1);
    return from == C(-INFINITY) ? T(0) : (T)jk::exp((T)from - (T)to);
  }
  // sum * scale for a finite sum; one holding a +inf or NaN term stays as it is (inf * 0).
  JK_FN static T scaled(T sum, T scale) { return sum - sum == T(0) ? sum * scale : sum; }
  JK_FN static void accumulate(State& s, const C* f, int64_t) {
    C x = f[0];
    if (x < s.m) {  // the common case: the maximum stays, one exp per term
      add_terms(s, jk::exp(x - s.m), f);
      return;
    }
    if (!(x < C(INFINITY))) {  // +inf or NaN
      add_special_term(s, x, f);
      return;
    }
    // m <= x < +inf: x becomes the maximum, its term is 1 (0 if x and m are both -inf).
    if (x > s.m) {
      T scale = rescaling(s.m, x);
      for (int k = 0; k < ACC; ++k)
        s.s[k] = scaled(s.s[k], scale), s.part[k] = scaled(s.part[k], scale);
      s.m = x;
    }
    add_terms(s, x == C(-INFINITY) ? C(0) : C(1), f);
  }
  JK_FN static void save(const State& s, T* v, int64_t*, int64_t stride) {
    v[0] = (T)s.m;
    for (int k = 0; k < ACC; ++k) {
      v[(1 + k) * stride] = s.s[k];
      if constexpr (KAHAN) v[(1 + ACC + k) * stride] = s.part[k];
    }
  }
  JK_FN static void load(State& s, const T* v, const int64_t*, int64_t stride) {
    s.m = (C)v[0];
    for (int k = 0; k < ACC; ++k) {
      s.s[k] = v[(1 + k) * stride];
      s.part[k] = KAHAN ? v[(1 + ACC + k) * stride] : T(0);
    }
  }
  JK_FN static void combine(State& a, const State& b) {
    C m_new = b.m > a.m ? b.m : a.m;
    T wa = rescaling(a.m, m_new), wb = rescaling(b.m, m_new);
    for (int k = 0; k < ACC; ++k) {
      if constexpr (KAHAN) {
        a.s[k] = scaled(a.s[k], wa), a.part[k] = scaled(a.part[k], wa);
        merge_compensated<T>(a.s[k], a.part[k], scaled(b.s[k], wb), scaled(b.part[k], wb));
      } else {
        a.s[k] = scaled(a.s[k], wa) + scaled(b.s[k], wb);
      }
    }
    a.m = m_new;
  }
  template <class W> JK_FN static void finish(const State& s, W& w) {
    T acc[ACC];
    for (int k = 0; k < ACC; ++k) acc[k] = KAHAN ? s.s[k] - s.part[k] : s.s[k];
    if constexpr (SOFTMAX) {
      // An inf or NaN denominator means a special term: jax.nn.softmax gives NaN there.
      const bool special = !(acc[0] - acc[0] == T(0));
      for (int q = 0; q < WDIM; ++q)
        w.value(0, WDIM, q, special ? (C)NAN : (C)(acc[1 + q] / acc[0]));
    } else if constexpr (OUT == LSE_OUT) {
      for (int k = 0; k < ACC; ++k) {
        const T log_sum = jk::log(acc[k]);
        w.value(0, ACC, k, (C)(acc[k] - acc[k] == T(0) ? (T)s.m + log_sum : log_sum));
      }
    } else {
      for (int k = 0; k < ACC; ++k) {
        const T log_size = jk::log(acc[k] < 0 ? -acc[k] : acc[k]);
        T value = acc[k] - acc[k] == T(0) ? (T)s.m + log_size : log_size;
        T sign = value != value ? (T)NAN : (T)((acc[k] > 0) - (acc[k] < 0));
        w.value(0, ACC, k, (C)value);
        w.value(1, ACC, k, (C)sign);
      }
    }
  }
};

}  // namespace gpu
}  // namespace jk

#endif  // JAXKEOPS_CUDA_REDUCTIONS_H
