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

#include "jaxkeops/exp.h"
#include "jaxkeops/ieee.h"
#include "jaxkeops/math.h"
#include "jaxkeops/summation.h"

namespace jk {
namespace gpu {

template <class C> JK_FN bool is_nan(C x) { return x != x; }
JK_FN float ieee_log2(float x) { return log2f(x); }
JK_FN double ieee_log2(double x) { return ::log2(x); }

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

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define JK_PRAGMA(text) _Pragma(#text)
#define JK_UNROLL JK_PRAGMA(unroll)
#define JK_UNROLL_BY(n) JK_PRAGMA(unroll n)  // n: a constant expression, 1 for no unrolling
#else
#define JK_UNROLL
#define JK_UNROLL_BY(n)
#endif

// The least power of two >= N (N >= 1).
template <int N> struct Pow2AtLeast {
  static constexpr int value = 2 * Pow2AtLeast<(N + 1) / 2>::value;
};
template <> struct Pow2AtLeast<1> {
  static constexpr int value = 1;
};

// The K smallest values per component, ascending, and/or their indices, kept as a sorted list
// per thread, ranked in IEEE total order (total_order_key, as lax.top_k(-v, K)). A candidate
// enters only if strictly before the current K-th value (or into an empty slot), so equal
// values keep their order of arrival (that of a stable sort); +inf and NaN enter like any value.
//
// The lists live in registers: every loop over them is unrolled (K and DIM are compile-time)
// and indexes them with constants only. An insertion compares the candidate with every entry
// and carries the displaced one down (a select per entry, no data-dependent position), since
// an array indexed at a run-time position would be put in local memory (the former
// shift-from-the-end loop made 375 local loads and stores per ArgKMin K = 10 kernel). Past
// REGISTER_SLOTS entries per thread the lists could not stay in registers anyway (K = 64 takes
// 152 registers): the loops are not unrolled, which keeps large K quick to compile.
//
// IX is the type of the indices in the lists: int32_t when the outputs are int32 (the reduced
// axis is then shorter than 2^31, or the indices would not fit anyway), which saves DIM * K
// registers; the split schedule's records hold int64 either way.
// LARGEST: the K largest values, descending (KMax), padded with -inf: the reversed order.
template <class C, int DIM, int K, bool VALUE, bool ARG, class IX = int64_t, bool LARGEST = false>
struct KMinReduction {
  using Partial = C;
  // An empty slot's value (a function: INFINITY is no constant expression under NVRTC).
  JK_FN static C empty() { return LARGEST ? C(-INFINITY) : C(INFINITY); }
  // The rank of x: its total order key, reversed for LARGEST (~key keeps ties as ties).
  JK_FN static auto rank(C x) { return LARGEST ? ~total_order_key(x) : total_order_key(x); }
  static constexpr int PARTIAL_VALUES = DIM * K;
  static constexpr int PARTIAL_INDICES = DIM * K;
  static constexpr int REGISTER_SLOTS = 64;
  static constexpr bool IN_REGISTERS = DIM * K <= REGISTER_SLOTS;
  static constexpr int P = Pow2AtLeast<K>::value;  // see combine
  static constexpr int UNROLL_K = IN_REGISTERS ? K : 1, UNROLL_P = IN_REGISTERS ? P : 1;
  struct State {
    C val[DIM][K];
    IX arg[DIM][K];  // -1: an empty slot (+inf in val); empty slots come last
  };
  JK_FN static void init(State& s) {
    JK_UNROLL for (int k = 0; k < DIM; ++k)
      JK_UNROLL_BY(UNROLL_K) for (int q = 0; q < K; ++q) s.val[k][q] = empty(), s.arg[k][q] = -1;
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void end_tile(State&) {}
  // Whether value x with index ix ranks before value y with index iy (-1: an empty slot).
  JK_FN static bool before(C x, IX ix, C y, IX iy) {
    return ix >= 0 && (iy < 0 || rank(x) < rank(y));
  }
  // Inserts (x, j) into the sorted list `val`/`arg` before the first entry it ranks before;
  // the entries from there on move one slot down, the last one drops out.
  JK_FN static void insert(C (&val)[K], IX (&arg)[K], C x, IX j) {
    bool moving = false;
    JK_UNROLL_BY(UNROLL_K) for (int q = 0; q < K; ++q) {
      moving = moving || before(x, j, val[q], arg[q]);
      const C v = val[q];
      const IX a = arg[q];
      val[q] = moving ? x : v;
      arg[q] = moving ? j : a;
      x = moving ? v : x;
      j = moving ? a : j;
    }
  }
  JK_FN static void accumulate(State& s, const C* f, int64_t row) {
    const IX j = (IX)row;
    JK_UNROLL for (int k = 0; k < DIM; ++k) {
      // The common case once the list is full: the candidate does not beat the K-th entry.
      if (before(f[k], j, s.val[k][K - 1], s.arg[k][K - 1])) insert(s.val[k], s.arg[k], f[k], j);
    }
  }
  JK_FN static void save(const State& s, C* v, int64_t* ix, int64_t stride) {
    JK_UNROLL for (int k = 0; k < DIM; ++k)
      JK_UNROLL_BY(UNROLL_K) for (int q = 0; q < K; ++q) {
        v[(k * K + q) * stride] = s.val[k][q];
        ix[(k * K + q) * stride] = s.arg[k][q];
      }
  }
  JK_FN static void load(State& s, const C* v, const int64_t* ix, int64_t stride) {
    JK_UNROLL for (int k = 0; k < DIM; ++k)
      JK_UNROLL_BY(UNROLL_K) for (int q = 0; q < K; ++q) {
        s.val[k][q] = v[(k * K + q) * stride];
        s.arg[k][q] = (IX)ix[(k * K + q) * stride];
      }
  }
  // The order of the lists: value in total order, then index (the order of arrival, within a
  // list); empty slots last. Strict and total, as a sorting network needs.
  JK_FN static bool ranks_before(C x, IX ix, C y, IX iy) {
    if (ix < 0 || iy < 0) return ix >= 0 && iy < 0;
    const auto kx = rank(x), ky = rank(y);
    return kx < ky || (kx == ky && ix < iy);
  }
  // Puts (v0, a0) and (v1, a1) in order.
  JK_FN static void order(C& v0, IX& a0, C& v1, IX& a1) {
    const bool swap = ranks_before(v1, a1, v0, a0);
    const C v = v0;
    const IX a = a0;
    v0 = swap ? v1 : v0;
    a0 = swap ? a1 : a0;
    v1 = swap ? v : v1;
    a1 = swap ? a : a1;
  }
  // Merges b's list into a's with a bitonic network (compare-exchanges at compile-time
  // positions: K + P/2 log2 P of them, P the power of two >= K, rather than the K^2 of inserting
  // b's entries one by one, which made K = 64 kernels take a minute to compile). b covers later
  // reduced rows than a, so among equal values a's entries come first, as in a stable merge.
  JK_FN static void combine(State& a, const State& b) {
    JK_UNROLL for (int k = 0; k < DIM; ++k) {
      C val[P];
      IX arg[P];
      // The P smallest of both lists (padded with empty slots) as a bitonic sequence: a's q-th
      // entry against b's (P-1-q)-th, a ascending against b descending.
      JK_UNROLL_BY(UNROLL_P) for (int q = 0; q < P; ++q) {
        const int r = P - 1 - q;
        const C av = q < K ? a.val[k][q] : empty(), bv = r < K ? b.val[k][r] : empty();
        const IX aa = q < K ? a.arg[k][q] : IX(-1), ba = r < K ? b.arg[k][r] : IX(-1);
        const bool from_b = ranks_before(bv, ba, av, aa);
        val[q] = from_b ? bv : av;
        arg[q] = from_b ? ba : aa;
      }
      JK_UNROLL_BY(UNROLL_P) for (int stride = P / 2; stride > 0; stride /= 2)
        JK_UNROLL_BY(UNROLL_P) for (int q = 0; q < P; ++q)
          if ((q & stride) == 0) order(val[q], arg[q], val[q + stride], arg[q + stride]);
      JK_UNROLL_BY(UNROLL_K) for (int q = 0; q < K; ++q)
        a.val[k][q] = val[q], a.arg[k][q] = arg[q];
    }
  }
  template <class W> JK_FN static void finish(const State& s, W& w) {
    JK_UNROLL_BY(UNROLL_K) for (int q = 0; q < K; ++q)
      JK_UNROLL for (int k = 0; k < DIM; ++k) {
        if constexpr (VALUE) w.value(0, K * DIM, q * DIM + k, s.val[k][q]);
        if constexpr (ARG) w.index(VALUE ? 1 : 0, K * DIM, q * DIM + k, s.arg[k][q]);
      }
  }
};

// What a LogSumExpReduction outputs.
enum LseOutput { LSE_OUT = 0, SOFTMAX_OUT = 1, SIGNED_LSE_OUT = 2 };

// Streaming log-sum-exp of a scalar formula f with a running maximum m:
//   LSE_OUT:         out[k] = m + log(sum exp(f - m) * w[k])   (w = 1 when unweighted)
//   SIGNED_LSE_OUT:  out[k] = m + log|sum exp(f - m) * w[k]| and its sign (-1, 0, +1) in a
//                    second output
//   SOFTMAX_OUT:     out[k] = sum exp(f - m) * w[k] / sum exp(f - m)
// with w the WDIM components after f, the sums in scalars T (C, or double for float data)
// added up with SCHEME. As on the CPU, formula component 0 is f in base 2, f log2(e) (the code
// generator folds the constant into the formula's own), so that each term is one 2^x, and m
// and the sums are in base 2 until `finish` turns the logarithm back to base e. Every 2^x here
// is ieee_exp2 (exp.h): 2 ulp and IEEE semantics, never the flush-to-zero approximation of
// formula bodies. inf and NaN as in cpu_reductions.h: m is the largest term below +inf,
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
  // 2^(from - to): 1 where they are equal (also both -inf), 0 from -inf.
  JK_FN static T rescaling(C from, C to) {
    if (from == to) return T(1);
    return from == C(-INFINITY) ? T(0) : ieee_exp2((T)from - (T)to);
  }
  // sum * scale for a finite sum; one holding a +inf or NaN term stays as it is (inf * 0).
  JK_FN static T scaled(T sum, T scale) { return sum - sum == T(0) ? sum * scale : sum; }
  JK_FN static void accumulate(State& s, const C* f, int64_t) {
    C x = f[0];
    if (x < s.m) {  // the common case: the maximum stays, one exp per term
      add_terms(s, ieee_exp2(x - s.m), f);
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
  // log(2^m sum) = (m + log2(sum)) ln 2 for a finite sum; log(sum) (+inf or NaN) for a sum that
  // holds a special term.
  JK_FN static T natural_log(C m, T sum) {
    return sum - sum == T(0) ? ((T)m + ieee_log2(sum)) * T(0.6931471805599453) : jk::log(sum);
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
      for (int k = 0; k < ACC; ++k) w.value(0, ACC, k, (C)natural_log(s.m, acc[k]));
    } else {
      for (int k = 0; k < ACC; ++k) {
        T value = natural_log(s.m, acc[k] < 0 ? -acc[k] : acc[k]);
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
