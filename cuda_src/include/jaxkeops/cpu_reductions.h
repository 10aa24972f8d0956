// Reductions for the CPU schedule (cpu_kernel.h), one struct each, with a common contract:
//
//   State                      the running result of one output row: a scalar part that lives
//                              across tiles, and a SIMD part (one value per lane) for one tile
//   start_row(State&)          the neutral element
//   start_tile(State&)         resets the SIMD part
//   accumulate<MASKED>(State&, const V* f, int base, M valid, int64_t j0)
//                              folds in f, the formula at the L consecutive reduced rows whose
//                              tile-local indices start at base (MASKED: only the lanes where
//                              valid is set)
//   end_tile(State&, int64_t j0)   merges the lanes into the scalar part (j0: the tile's start)
//   finish(const State&, void* const* outs, int64_t row)   writes the outputs of one row
//   bind(State&, const jk_task*, int64_t row)   optional: lets the state read the arguments
//
// Lanes and tiles both take reduced indices in increasing order, so ties resolve to the first
// index, as jnp.argmin and lax.top_k do.
#ifndef JAXKEOPS_CPU_REDUCTIONS_H
#define JAXKEOPS_CPU_REDUCTIONS_H

#include "jaxkeops/kernel_abi.h"
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

// Sum, with block summation (lanes add up within a tile, tiles add up per row) or, with
// KAHAN, compensated summation of every term.
template <class V, int DIM, bool KAHAN> struct SumReduction {
  using S = scalar_t<V>;
  struct State {
    V lanes[DIM], comp[DIM];
    S total[DIM];
  };
  JK_FN static void start_row(State& s) {
    for (int k = 0; k < DIM; ++k) s.total[k] = 0;
  }
  JK_FN static void start_tile(State& s) {
    for (int k = 0; k < DIM; ++k) s.lanes[k] = cst<V>(0), s.comp[k] = cst<V>(0);
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int, M valid, int64_t) {
    for (int k = 0; k < DIM; ++k) {
      V x = f[k];
      if constexpr (MASKED) x = select(valid, x, cst<V>(0));
      if constexpr (KAHAN) {
        V y = x - s.comp[k];
        V t = s.lanes[k] + y;
        s.comp[k] = (t - s.lanes[k]) - y;
        s.lanes[k] = t;
      } else {
        s.lanes[k] = s.lanes[k] + x;
      }
    }
  }
  JK_FN static void end_tile(State& s, int64_t) {
    for (int k = 0; k < DIM; ++k) {
      S tile = 0;
      for (int l = 0; l < traits<V>::lanes; ++l) tile += lane(s.lanes[k], l);
      s.total[k] += tile;
    }
  }
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    S* out = (S*)outs[0] + row * DIM;
    for (int k = 0; k < DIM; ++k) out[k] = s.total[k];
  }
};

// Min or Max (MAX) per component, optionally with the index of the extremum (ARG), and
// optionally with the value (VALUE). A NaN wins, as in jnp.min and jnp.argmin.
template <class V, int DIM, bool MAX, bool VALUE, bool ARG, class I> struct ExtremumReduction {
  using S = scalar_t<V>;
  using J = index_t<V>;
  struct State {
    V best[DIM];
    J arg[DIM];
    S row_best[DIM];
    int64_t row_arg[DIM];
  };
  JK_FN static bool better(S x, S best) {
    return (MAX ? x > best : x < best) || (x != x && best == best);
  }
  JK_FN static void start_row(State& s) {
    for (int k = 0; k < DIM; ++k) s.row_best[k] = MAX ? -INFINITY : INFINITY, s.row_arg[k] = 0;
  }
  JK_FN static void start_tile(State& s) {
    for (int k = 0; k < DIM; ++k) {
      s.best[k] = cst<V>(MAX ? -INFINITY : INFINITY);
      s.arg[k] = J{} - 1;
    }
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int base, M valid, int64_t) {
    J j = lane_indices<J>(base);
    for (int k = 0; k < DIM; ++k) {
      V x = f[k];
      auto take = MAX ? (x > s.best[k]) : (x < s.best[k]);
      take = take | ((x != x) & (s.best[k] == s.best[k]));
      if constexpr (MASKED) take = take & valid;
      s.best[k] = select(take, x, s.best[k]);
      if constexpr (ARG) s.arg[k] = select(take, j, s.arg[k]);
    }
  }
  JK_FN static void end_tile(State& s, int64_t j0) {
    for (int k = 0; k < DIM; ++k) {
      for (int l = 0; l < traits<V>::lanes; ++l) {
        int64_t a = lane_index(s.arg[k], l);
        if (ARG && a < 0) continue;  // this lane took nothing in this tile
        S x = lane(s.best[k], l);
        bool same = x == s.row_best[k] || (x != x && s.row_best[k] != s.row_best[k]);
        // Lanes hold interleaved indices: on equal values the smaller index wins.
        if (better(x, s.row_best[k]) || (ARG && same && j0 + a < s.row_arg[k])) {
          s.row_best[k] = x;
          s.row_arg[k] = j0 + a;
        }
      }
    }
  }
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    int o = 0;
    if constexpr (VALUE) {
      S* out = (S*)outs[o++] + row * DIM;
      for (int k = 0; k < DIM; ++k) out[k] = s.row_best[k];
    }
    if constexpr (ARG) {
      I* out = (I*)outs[o] + row * DIM;
      for (int k = 0; k < DIM; ++k) out[k] = (I)s.row_arg[k];
    }
  }
};

// The K smallest values per component, ascending, and/or their indices. Candidates are
// rejected L at a time against the current K-th value; the few that pass are inserted one by
// one into a sorted list. Rows with fewer than K reduced rows pad with +inf and index -1.
template <class V, int DIM, int K, bool VALUE, bool ARG, class I> struct KMinReduction {
  using S = scalar_t<V>;
  using J = index_t<V>;
  struct State {
    S val[DIM][K];
    int64_t arg[DIM][K];
    V worst[DIM];  // val[k][K - 1] in every lane: the bar a candidate must pass
  };
  JK_FN static void start_row(State& s) {
    for (int k = 0; k < DIM; ++k) {
      for (int q = 0; q < K; ++q) s.val[k][q] = INFINITY, s.arg[k][q] = -1;
      s.worst[k] = cst<V>(INFINITY);
    }
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void insert(State& s, int k, S x, int64_t a) {
    int q = K - 1;
    while (q > 0 && x < s.val[k][q - 1]) {
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
      if constexpr (MASKED) {
        if (!any((f[k] < s.worst[k]) & valid)) continue;
      } else {
        if (!any_lt(f[k], s.worst[k])) continue;
      }
      for (int l = 0; l < traits<V>::lanes; ++l) {
        S x = lane(f[k], l);
        bool ok = x < s.val[k][K - 1];
        if constexpr (MASKED) ok = ok && lane_index(valid, l) != 0;
        if (ok) insert(s, k, x, j0 + base + l);
      }
      s.worst[k] = cst<V>(s.val[k][K - 1]);
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

// Streaming log-sum-exp of a scalar formula f, with a running maximum m per SIMD lane:
//   LSE (SOFTMAX false):  out[k] = m + log(sum exp(f - m) * w[k])   (w = 1 when unweighted)
//   SumSoftMaxWeight:     out[k] = sum exp(f - m) * w[k] / sum exp(f - m)
// Formula component 0 is f in base 2, f log2(e) (the code generator folds the constant into the
// formula), so that every term is one 2^x; w is the next WDIM components. Each lane keeps its maximum across
// tiles, so that after the first few vectors almost no vector raises it and the common case
// costs one exp per term; sums are blocked per tile (s), then added to per-lane totals (t).
// All -inf terms give -inf (LSE) or NaN (softmax, 0/0), never a NaN from (-inf) - (-inf).
template <class V, int WDIM, bool WEIGHTED, bool SOFTMAX> struct LogSumExpReduction {
  using S = scalar_t<V>;
  static constexpr int ACC = (WEIGHTED ? WDIM : 0) + (SOFTMAX || !WEIGHTED ? 1 : 0);
  static constexpr int FIRST_WEIGHT = (SOFTMAX || !WEIGHTED) ? 1 : 0;
  struct State {
    V m, s[ACC], t[ACC];
  };
  JK_FN static void start_row(State& s) {
    s.m = cst<V>(-INFINITY);
    for (int k = 0; k < ACC; ++k) s.s[k] = cst<V>(0), s.t[k] = cst<V>(0);
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void add_terms(State& s, V e, const V* f) {
    if constexpr (FIRST_WEIGHT == 1) s.s[0] = s.s[0] + e;
    if constexpr (WEIGHTED)
      for (int q = 0; q < WDIM; ++q) s.s[FIRST_WEIGHT + q] = s.s[FIRST_WEIGHT + q] + e * f[1 + q];
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int, M valid, int64_t) {
    V x = f[0];
    if constexpr (MASKED) x = select(valid, x, cst<V>(-INFINITY));
    if (all_lt(x, s.m)) {
      add_terms(s, exp2(x - s.m), f);
      return;
    }
    V m_new = max_nan(s.m, x);
    auto empty = m_new == cst<V>(-INFINITY);
    V scale = select(empty, cst<V>(1), exp2(s.m - m_new));
    V e = select(empty, cst<V>(0), exp2(x - m_new));
    for (int k = 0; k < ACC; ++k) s.s[k] = s.s[k] * scale, s.t[k] = s.t[k] * scale;
    s.m = m_new;
    add_terms(s, e, f);
  }
  JK_FN static void end_tile(State& s, int64_t) {
    for (int k = 0; k < ACC; ++k) s.t[k] = s.t[k] + s.s[k], s.s[k] = cst<V>(0);
  }
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    S m = -INFINITY;
    for (int l = 0; l < traits<V>::lanes; ++l) {
      S ml = lane(s.m, l);
      if (ml > m || ml != ml) m = ml;
    }
    S acc[ACC];
    for (int k = 0; k < ACC; ++k) acc[k] = 0;
    if (m != -INFINITY) {
      for (int l = 0; l < traits<V>::lanes; ++l) {
        S ml = lane(s.m, l);
        if (ml == -INFINITY) continue;
        S scale = (S)::exp2((double)(ml - m));
        for (int k = 0; k < ACC; ++k) acc[k] += lane(s.t[k], l) * scale;
      }
    }
    S* out = (S*)outs[0];
    if constexpr (SOFTMAX) {
      out += row * WDIM;
      for (int q = 0; q < WDIM; ++q) out[q] = acc[1 + q] / acc[0];
    } else {
      out += row * ACC;
      for (int k = 0; k < ACC; ++k)
        out[k] = (S)(((double)m + ::log2((double)acc[k])) * 0.6931471805599453);
    }
  }
};

// Sum of a combination of whole variables with scalar formulas (codegen/linear.py):
//   out_i = sum_t factor_t * (sum_j s_t(i, j) * v_t)
// where the formula's components are the scalars s (one per distinct coefficient) and v_t is a
// variable of dimension DIM, read by the reduction itself: an outer one (x_i: its sum of s is
// taken, and multiplied by x_i once per tile) or an inner one (y_j: each pair adds s * y_j, a
// row of y by vectors of components, as a GEMM micro-kernel does).
struct LinearTermInfo {
  int coef;  // formula component
  int arg;  // argument index
  bool inner;  // the variable is indexed by the reduced index
  double factor;
};

template <class V, int DIM, class Terms> struct LinearSumReduction {
  using S = scalar_t<V>;
  static constexpr int L = traits<V>::lanes;
  static constexpr int NT = Terms::COUNT;
  static constexpr int DV = DIM / L, DR = DIM % L;  // whole vectors, then single components
  struct State {
    V acc[NT][DV > 0 ? DV : 1];  // inner terms, this tile
    S acc_rest[NT][DR > 0 ? DR : 1];
    V coef_sum[NT];  // outer terms, this tile: per-lane sums of s
    S total[DIM];
    const S* data[NT];  // outer: this row of the variable; inner: the whole variable
  };
  JK_FN static void bind(State& s, const jk_task* t, int64_t row) {
    for (int q = 0; q < NT; ++q) {
      const LinearTermInfo& info = Terms::TERMS[q];
      s.data[q] = (const S*)t->args[info.arg] + (info.inner ? 0 : row * DIM);
    }
  }
  JK_FN static void start_row(State& s) {
    for (int k = 0; k < DIM; ++k) s.total[k] = 0;
  }
  JK_FN static void start_tile(State& s) {
    for (int q = 0; q < NT; ++q) {
      s.coef_sum[q] = cst<V>(0);
      for (int v = 0; v < (DV > 0 ? DV : 1); ++v) s.acc[q][v] = cst<V>(0);
      for (int r = 0; r < (DR > 0 ? DR : 1); ++r) s.acc_rest[q][r] = 0;
    }
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int base, M valid, int64_t j0) {
    accumulate_rows<1, MASKED>(&s, &f, base, valid, j0);
  }
  // NR rows at once: each row of an inner variable is loaded once for all of them.
  template <int NR, bool MASKED, class M, class FV>
  JK_FN static void accumulate_rows(State* st, const FV* f, int base, M valid, int64_t j0) {
    int lanes = L;
    if constexpr (MASKED) {
      lanes = 0;
      while (lanes < L && lane_index(valid, lanes) != 0) ++lanes;
    }
    for (int q = 0; q < NT; ++q) {
      const LinearTermInfo& info = Terms::TERMS[q];
      alignas(64) S ws[NR][L];
      for (int r = 0; r < NR; ++r) {
        V w = f[r][info.coef];
        if (info.factor != 1.0) w = w * cst<V>(info.factor);
        if constexpr (MASKED) w = select(valid, w, cst<V>(0));
        if (!info.inner) st[r].coef_sum[q] = st[r].coef_sum[q] + w;
        memcpy(ws[r], &w, sizeof(V));
      }
      if (!info.inner) continue;
      const S* rows = st[0].data[q] + (j0 + base) * DIM;
      // Whole vectors in chunks of up to 4 per row, held in registers across the lanes; the L
      // terms are summed apart, then added to the tile's sum (block summation, as in Sum).
      constexpr int CHUNK = DV < 4 ? (DV > 0 ? DV : 1) : 4;
      for (int v0 = 0; v0 < DV; v0 += CHUNK) {
        V acc[NR][CHUNK];
        for (int r = 0; r < NR; ++r)
          for (int v = 0; v < CHUNK; ++v) acc[r][v] = cst<V>(0);
        for (int l = 0; l < lanes; ++l) {
          const S* y = rows + (int64_t)l * DIM + v0 * L;
          for (int v = 0; v < CHUNK && v0 + v < DV; ++v) {
            V yv;
            memcpy(&yv, y + v * L, sizeof(V));
            yv = in_register(yv);
            for (int r = 0; r < NR; ++r) acc[r][v] = acc[r][v] + cst<V>(ws[r][l]) * yv;
          }
        }
        for (int r = 0; r < NR; ++r)
          for (int v = 0; v < CHUNK && v0 + v < DV; ++v)
            st[r].acc[q][v0 + v] = st[r].acc[q][v0 + v] + acc[r][v];
      }
      for (int l = 0; l < lanes; ++l) {
        const S* y = rows + (int64_t)l * DIM;
        for (int k = 0; k < DR; ++k)
          for (int r = 0; r < NR; ++r) st[r].acc_rest[q][k] += ws[r][l] * y[DV * L + k];
      }
    }
  }
  JK_FN static void end_tile(State& s, int64_t) {
    for (int q = 0; q < NT; ++q) {
      if (!Terms::TERMS[q].inner) {
        S c = 0;
        for (int l = 0; l < L; ++l) c += lane(s.coef_sum[q], l);
        for (int k = 0; k < DIM; ++k) s.total[k] += c * s.data[q][k];
      } else {
        for (int v = 0; v < DV; ++v)
          for (int l = 0; l < L; ++l) s.total[v * L + l] += lane(s.acc[q][v], l);
        for (int r = 0; r < DR; ++r) s.total[DV * L + r] += s.acc_rest[q][r];
      }
    }
  }
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    S* out = (S*)outs[0] + row * DIM;
    for (int k = 0; k < DIM; ++k) out[k] = s.total[k];
  }
};

}  // namespace jk

#endif  // JAXKEOPS_CPU_REDUCTIONS_H
