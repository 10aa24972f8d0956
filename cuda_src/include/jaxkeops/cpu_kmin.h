// The K-min family of CPU reductions (KMin, ArgKMin, KMin_ArgKMin and, with LARGEST, the
// K-max ones), under the contract of cpu_reductions.h.
#ifndef JAXKEOPS_CPU_KMIN_H
#define JAXKEOPS_CPU_KMIN_H

#include "jaxkeops/cpu_lanes.h"
#include "jaxkeops/ieee.h"
#include "jaxkeops/math.h"

namespace jk {

// The K smallest values per component, ascending, and/or their indices, ranked as
// lax.top_k(-v, K) ranks them: in IEEE total order (total_order_key: -inf first, +inf and NaN
// kept, a NaN last unless its sign bit is set), ties to the first index. Candidates are rejected
// L at a time against the current K-th value; the few that pass are inserted one by one into a
// sorted list. Rows with fewer than K reduced rows pad with +inf and index -1.
// LARGEST: the K largest values, descending (KMax, lax.top_k(v, K): a NaN first unless its sign
// bit is set, +inf, finite values, -inf), padded with -inf: the same code on the reversed order.
template <class V, int DIM, int K, bool VALUE, bool ARG, class I, bool LARGEST = false>
struct KMinReduction {
  using S = scalar_t<V>;
  using J = index_t<V>;
  // An empty slot's value (a function: INFINITY is no constant expression under NVRTC).
  JK_FN static S empty() { return LARGEST ? S(-INFINITY) : S(INFINITY); }
  // The rank of x: its total order key, reversed for LARGEST (~key keeps ties as ties).
  JK_FN static auto rank(S x) { return LARGEST ? ~total_order_key(x) : total_order_key(x); }
  struct State {
    S val[DIM][K];
    int64_t arg[DIM][K];  // -1: an empty slot (+inf in val); empty slots come last
    // val[k][K - 1] in every lane, or NaN while that slot is empty: a lane x can only enter if
    // !(bar < x) (a NaN bar lets every lane through to the exact test).
    V bar[DIM];
  };
  JK_FN static void start_row(State& s) {
    for (int k = 0; k < DIM; ++k) {
      for (int q = 0; q < K; ++q) s.val[k][q] = empty(), s.arg[k][q] = -1;
      s.bar[k] = cst<V>(NAN);
    }
  }
  JK_FN static void start_tile(State&) {}
  // Whether x, from a later row, ranks before slot q.
  JK_FN static bool before(const State& s, int k, int q, S x) {
    return s.arg[k][q] < 0 || rank(x) < rank(s.val[k][q]);
  }
  JK_FN static void insert(State& s, int k, S x, int64_t a) {
    if (!before(s, k, K - 1, x)) return;
    int q = K - 1;
    while (q > 0 && before(s, k, q - 1, x)) {
      s.val[k][q] = s.val[k][q - 1];
      s.arg[k][q] = s.arg[k][q - 1];
      --q;
    }
    s.val[k][q] = x;
    s.arg[k][q] = a;
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int base, M valid, int64_t j0) {
    for (int k = 0; k < DIM; ++k) {
      // Total order puts x after the K-th value wherever x > bar in IEEE order (x < bar for
      // LARGEST; never with a NaN): such vectors need no look at their lanes. The tail's lanes
      // are all looked at.
      if constexpr (MASKED) {
        for (int l = 0; l < traits<V>::lanes; ++l)
          if (lane_index(valid, l) != 0) insert(s, k, lane(f[k], l), j0 + base + l);
      } else {
        // Only the lanes the bar does not settle, in index order (ties keep the first index).
        unsigned open = LARGEST ? lanes_not_lt(f[k], s.bar[k]) : lanes_not_lt(s.bar[k], f[k]);
        if (!open) continue;
        for (; open; open &= open - 1) {
          const int l = __builtin_ctz(open);
          insert(s, k, lane(f[k], l), j0 + base + l);
        }
      }
      s.bar[k] = cst<V>(s.arg[k][K - 1] < 0 ? (S)NAN : s.val[k][K - 1]);
    }
  }
  JK_FN static void end_tile(State&, int64_t) {}
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    int o = 0;
    if constexpr (VALUE) {
      S* out = (S*)outs[o++] + row * K * DIM;
      for (int q = 0; q < K; ++q)
        for (int k = 0; k < DIM; ++k) out[q * DIM + k] = s.val[k][q];
    }
    if constexpr (ARG) {
      I* out = (I*)outs[o] + row * K * DIM;
      for (int q = 0; q < K; ++q)
        for (int k = 0; k < DIM; ++k) out[q * DIM + k] = (I)s.arg[k][q];
    }
  }
};

}  // namespace jk

#endif  // JAXKEOPS_CPU_KMIN_H
