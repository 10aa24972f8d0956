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
//
// inf and NaN follow jax.numpy on the same data (tests/test_ieee.py): Sum and the log-sum-exp
// family give what jnp.sum / jax.nn.logsumexp / jax.nn.softmax give, Min/Max/ArgMin/ArgMax what
// jnp.min/jnp.argmin give (a NaN wins), KMin/ArgKMin what lax.top_k(-v, K) gives (IEEE total
// order, ieee.h). On an empty reduced axis (no finish without a start_row): Sum 0, LogSumExp
// -inf (sign 0), SumSoftMaxWeight NaN (0/0), Min +inf, Max -inf, every index -1.
#ifndef JAXKEOPS_CPU_REDUCTIONS_H
#define JAXKEOPS_CPU_REDUCTIONS_H

#include "jaxkeops/cpu_kmin.h"
#include "jaxkeops/cpu_lanes.h"
#include "jaxkeops/exp.h"
#include "jaxkeops/ieee.h"
#include "jaxkeops/kernel_abi.h"
#include "jaxkeops/math.h"
#include "jaxkeops/summation.h"

namespace jk {

// Sum per component, in scalars T, with the scheme SCHEME: the lanes add up their terms (per
// tile, then into the row's total, for BLOCK_SUM; over the whole row otherwise), and the lanes
// merge at the end of each tile (BLOCK_SUM) or of the row.
template <class V, int DIM, int SCHEME, class T = scalar_t<V>> struct SumReduction {
  using S = scalar_t<V>;
  using W = Widen<V, T>;
  using A = typename W::A;
  static constexpr int N = W::N, L = traits<V>::lanes;
  struct State {
    A lanes[DIM][N], comp[DIM][N];  // comp: Kahan's compensation (unused otherwise)
    T total[DIM];  // BLOCK_SUM: the sum of the tiles so far
  };
  JK_FN static void clear_lanes(State& s) {
    for (int k = 0; k < DIM; ++k)
      for (int h = 0; h < N; ++h) s.lanes[k][h] = cst<A>(0), s.comp[k][h] = cst<A>(0);
  }
  JK_FN static void start_row(State& s) {
    for (int k = 0; k < DIM; ++k) s.total[k] = 0;
    if constexpr (SCHEME != BLOCK_SUM) clear_lanes(s);
  }
  JK_FN static void start_tile(State& s) {
    if constexpr (SCHEME == BLOCK_SUM) clear_lanes(s);
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int, M valid, int64_t) {
    for (int k = 0; k < DIM; ++k) {
      V x = f[k];
      if constexpr (MASKED) x = select(valid, x, cst<V>(0));
      A xs[N];
      W::split(x, xs);
      for (int h = 0; h < N; ++h) {
        if constexpr (SCHEME == KAHAN_SUM) {
          kahan_add(s.lanes[k][h], s.comp[k][h], xs[h]);
        } else {
          s.lanes[k][h] = s.lanes[k][h] + xs[h];
        }
      }
    }
  }
  JK_FN static void end_tile(State& s, int64_t) {
    if constexpr (SCHEME == BLOCK_SUM) {
      for (int k = 0; k < DIM; ++k) {
        T tile = 0;
        for (int l = 0; l < L; ++l) tile += widened_lane<W>(s.lanes[k], l);
        s.total[k] += tile;
      }
    }
  }
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    S* out = (S*)outs[0] + row * DIM;
    for (int k = 0; k < DIM; ++k) {
      if constexpr (SCHEME == BLOCK_SUM) {
        out[k] = (S)s.total[k];
      } else if constexpr (SCHEME == DIRECT_SUM) {
        T sum = 0;
        for (int l = 0; l < L; ++l) sum += widened_lane<W>(s.lanes[k], l);
        out[k] = (S)sum;
      } else {
        T sum = 0, comp = 0;
        for (int l = 0; l < L; ++l) {
          merge_compensated<T>(sum, comp, widened_lane<W>(s.lanes[k], l),
                               widened_lane<W>(s.comp[k], l));
        }
        out[k] = (S)(sum - comp);
      }
    }
  }
};

// Min or Max (MAX) per component, optionally with the index of the extremum (ARG), and
// optionally with the value (VALUE). A NaN wins, as in jnp.min and jnp.argmin; a row of +inf
// (Min) or -inf (Max) only gives its first index. An empty row gives +inf (Min) or -inf (Max)
// and index -1.
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
    for (int k = 0; k < DIM; ++k) s.row_best[k] = MAX ? -INFINITY : INFINITY, s.row_arg[k] = -1;
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
      // No lane took anything so far: every value seen equals the starting +inf (-inf for
      // Max), and the first of them is this tile's first row (a tile is never empty).
      if (ARG && s.row_arg[k] < 0) s.row_arg[k] = j0;
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

// What a LogSumExpReduction outputs.
enum LseOutput { LSE_OUT = 0, SOFTMAX_OUT = 1, SIGNED_LSE_OUT = 2 };

// Streaming log-sum-exp of a scalar formula f, with a running maximum m per SIMD lane:
//   LSE_OUT:         out[k] = m + log(sum exp(f - m) * w[k])   (w = 1 when unweighted)
//   SIGNED_LSE_OUT:  out[k] = m + log|sum exp(f - m) * w[k]|, and its sign (-1, 0, +1) in a
//                    second output
//   SOFTMAX_OUT:     out[k] = sum exp(f - m) * w[k] / sum exp(f - m)   (SumSoftMaxWeight)
// Formula component 0 is f in base 2, f log2(e) (the code generator folds the constant into the
// formula), so that every term is one 2^x; w is the next WDIM components. Each lane keeps its
// maximum across tiles (give or take a factor 2^SLACK, below), so that after the first few
// vectors almost no vector raises it and the common case costs one exp per term. The sums are
// in scalars T (the terms are widened to it first, see Widen), added up with SCHEME: per tile,
// then into the row's sums (BLOCK_SUM), straight into the row's sums (DIRECT_SUM), or with
// compensation (KAHAN_SUM).
//
// inf and NaN, as jax.nn.logsumexp and jax.nn.softmax on the same values: m is the largest term
// below +inf (-inf while there is none), so it is never inf or NaN. A +inf or NaN term (a
// "special" one) goes into the sums as itself, times its weight (a zero weight drops it, as
// jax.nn.logsumexp drops the terms where b == 0; SumSoftMaxWeight has no such rule): a sum that
// holds one is +-inf or NaN, never rescaled, and gives log(+inf) = +inf, NaN (log of -inf, or
// +inf terms whose weights have both signs), or NaN for SumSoftMaxWeight (jax.nn.softmax: inf /
// inf). All -inf terms, and an empty row, give -inf (LSE, sign 0) or NaN (softmax, 0/0).
template <class V, int WDIM, bool WEIGHTED, int OUT, int SCHEME, class T = scalar_t<V>>
struct LogSumExpReduction {
  using S = scalar_t<V>;
  using W = Widen<V, T>;
  using A = typename W::A;
  static constexpr int N = W::N, L = traits<V>::lanes;
  static constexpr bool SOFTMAX = OUT == SOFTMAX_OUT;
  static constexpr int ACC = (WEIGHTED ? WDIM : 0) + (SOFTMAX || !WEIGHTED ? 1 : 0);
  static constexpr int FIRST_WEIGHT = (SOFTMAX || !WEIGHTED) ? 1 : 0;
  // A term up to 2^SLACK times the lane's m joins the sums without raising m: the slow path
  // (new maxima, rescaling) is then taken when some lane's term grows by more than 2^16, not
  // whenever one grows at all, which with 8 or 16 lanes was a third of the vectors of a short
  // row (single thread, AVX2, M = N = 1e3: 0.52 -> 0.81 of the reference kernel). The sums
  // hold terms up to 65536 times larger: a weight above 5e33 in float32 now overflows. A larger
  // slack costs accuracy: x - m, up to SLACK, is rounded to float before the exponential (2^64
  // without weights took the slow path less, 5-7% faster at M = N = 1e3 on one AVX2 core, but
  // an LSE near 0 was 2.3e-5 off in relative terms where 2^16 keeps it within 1e-5).
  static constexpr double SLACK = 16.0;
  struct State {
    V m;
    V limit;  // m + SLACK, kept beside m: the common case's test costs no add
    // BLOCK_SUM: this tile's sums; KAHAN_SUM: the compensation of the row's sums.
    A part[ACC][N];
    A row[ACC][N];  // the row's sums, scaled by 2^-m
  };
  JK_FN static void start_row(State& s) {
    s.m = s.limit = cst<V>(-INFINITY);
    for (int k = 0; k < ACC; ++k)
      for (int h = 0; h < N; ++h) s.part[k][h] = cst<A>(0), s.row[k][h] = cst<A>(0);
  }
  JK_FN static void start_tile(State&) {}
  JK_FN static void add(State& s, int k, const A* x) {
    for (int h = 0; h < N; ++h) {
      if constexpr (SCHEME == BLOCK_SUM) {
        s.part[k][h] = s.part[k][h] + x[h];
      } else if constexpr (SCHEME == DIRECT_SUM) {
        s.row[k][h] = s.row[k][h] + x[h];
      } else {
        kahan_add(s.row[k][h], s.part[k][h], x[h]);
      }
    }
  }
  // Adds e (and e times each weight w[q]) to the sums. The terms are formed in V, then
  // widened: one conversion per term (a float product is as accurate as the float e in it).
  JK_FN static void add_terms(State& s, V e, const V* w) {
    A term[N];
    if constexpr (FIRST_WEIGHT == 1) {
      W::split(e, term);
      add(s, 0, term);
    }
    if constexpr (WEIGHTED) {
      for (int q = 0; q < WDIM; ++q) {
        W::split(e * w[q], term);
        add(s, FIRST_WEIGHT + q, term);
      }
    }
  }
  // add_terms where some lanes hold a special term x (+inf or NaN), which goes in as itself.
  template <class M> JK_FN static void add_special_terms(State& s, V e, V x, M special,
                                                         const V* w) {
    A term[N];
    if constexpr (FIRST_WEIGHT == 1) {
      W::split(select(special, x, e), term);
      add(s, 0, term);
    }
    if constexpr (WEIGHTED) {
      for (int q = 0; q < WDIM; ++q) {
        V weighted = x * w[q];
        if constexpr (!SOFTMAX) weighted = select(w[q] == cst<V>(0), cst<V>(0), weighted);
        W::split(select(special, weighted, e * w[q]), term);
        add(s, FIRST_WEIGHT + q, term);
      }
    }
  }
  // sum * scale where the sum is finite; a sum holding a special term stays as it is (scale may
  // be 0, and inf * 0 is NaN).
  template <class X> JK_FN static X scaled(X sum, X scale) {
    return select(sum - sum == cst<X>(0), sum * scale, sum);
  }
  // Rescales the sums from the maxima m_old to m_new (lanes where it stays keep their scale).
  JK_FN static void rescale(State& s, V m_old, V m_new) {
    A mo[N], mn[N];
    W::split(m_old, mo);
    W::split(m_new, mn);
    for (int h = 0; h < N; ++h) {
      A scale = select(mo[h] == mn[h], cst<A>(1), exp2(mo[h] - mn[h]));
      for (int k = 0; k < ACC; ++k)
        s.part[k][h] = scaled(s.part[k][h], scale), s.row[k][h] = scaled(s.row[k][h], scale);
    }
  }
  template <bool MASKED, class M>
  JK_FN static void accumulate(State& s, const V* f, int, M valid, int64_t) {
    if constexpr (MASKED) {
      // Lanes past the end hold the formula at zero-padded rows: their weights may be inf or
      // NaN, which a zero factor would not cancel.
      V g[1 + (WEIGHTED ? WDIM : 0)];
      g[0] = select(valid, f[0], cst<V>(-INFINITY));
      if constexpr (WEIGHTED)
        for (int q = 0; q < WDIM; ++q) g[1 + q] = select(valid, f[1 + q], cst<V>(0));
      accumulate_values(s, g);
    } else {
      accumulate_values(s, f);
    }
  }
  // NR rows at once (the schedule's register tile): a single test that every row's vector is
  // in the common case, after which the rows' sums stay in registers; else row by row. Measured
  // on the LSE step at M = N = 1e3 and 3e3, AVX2, one core: 14% and 20% faster than row by row.
  template <int NR, bool MASKED, class M, class FV>
  JK_FN static void accumulate_rows(State* st, const FV* f, int base, M valid, int64_t j0) {
    // Vectors only: a scalar comparison gives a bool, whose ~ is not its negation.
    if constexpr (!MASKED && L > 1) {
      auto fits = f[0][0] < st[0].limit;
      for (int r = 1; r < NR; ++r) fits = fits & (f[r][0] < st[r].limit);
      if (!any(~fits)) {
        for (int r = 0; r < NR; ++r) add_terms(st[r], exp2_below_128(f[r][0] - st[r].m), f[r] + 1);
        return;
      }
    }
    for (int r = 0; r < NR; ++r) accumulate<MASKED>(st[r], f[r], base, valid, j0);
  }
  JK_FN static void accumulate_values(State& s, const V* f) {
    V x = f[0];
    if (all_lt(x, s.limit)) {  // the common case (never a special x: m < +inf)
      add_terms(s, exp2_below_128(x - s.m), f + 1);  // x - m < SLACK
      return;
    }
    auto special = (x == cst<V>(INFINITY)) | (x != x);
    V regular = select(special, cst<V>(-INFINITY), x);
    V m_new = select(regular > s.m, regular, s.m);
    auto empty = m_new == cst<V>(-INFINITY);
    V e = select(empty, cst<V>(0), select(regular == m_new, cst<V>(1), exp2(regular - m_new)));
    rescale(s, s.m, m_new);
    s.m = m_new;
    s.limit = m_new + cst<V>(SLACK);
    if (any(special)) add_special_terms(s, e, x, special, f + 1);
    else add_terms(s, e, f + 1);
  }
  JK_FN static void end_tile(State& s, int64_t) {
    if constexpr (SCHEME == BLOCK_SUM)
      for (int k = 0; k < ACC; ++k)
        for (int h = 0; h < N; ++h)
          s.row[k][h] = s.row[k][h] + s.part[k][h], s.part[k][h] = cst<A>(0);
  }
  JK_FN static void finish(const State& s, void* const* outs, int64_t row) {
    S m = -INFINITY;
    for (int l = 0; l < L; ++l) m = lane(s.m, l) > m ? lane(s.m, l) : m;
    // Every lane's scale 2^(m_l - m) in one vector exp2 (a libm call per lane cost a fifth of a
    // row of 1,000 terms); a lane at -inf below a finite m has only zero or special sums:
    // scale 0 leaves them so.
    const V lane_scales = select(s.m == cst<V>(m), cst<V>(1), exp2(s.m - cst<V>(m)));
    T acc[ACC], comp[ACC];
    for (int k = 0; k < ACC; ++k) acc[k] = 0, comp[k] = 0;
    for (int l = 0; l < L; ++l) {
      const T scale = (T)lane(lane_scales, l);
      for (int k = 0; k < ACC; ++k) {
        T sum = scaled<T>(widened_lane<W>(s.row[k], l), scale);
        if constexpr (SCHEME == KAHAN_SUM) {
          merge_compensated<T>(acc[k], comp[k], sum,
                               scaled<T>(widened_lane<W>(s.part[k], l), scale));
        } else {
          acc[k] += sum;
        }
      }
    }
    if constexpr (SCHEME == KAHAN_SUM)
      for (int k = 0; k < ACC; ++k) acc[k] -= comp[k];
    S* out = (S*)outs[0];
    constexpr double LN2 = 0.6931471805599453;
    if constexpr (SOFTMAX) {
      out += row * WDIM;
      // An inf or NaN denominator means a special term: jax.nn.softmax gives NaN there.
      const bool special = !(acc[0] - acc[0] == 0);
      for (int q = 0; q < WDIM; ++q) out[q] = special ? (S)NAN : (S)(acc[1 + q] / acc[0]);
    } else if constexpr (OUT == LSE_OUT) {
      out += row * ACC;
      for (int k = 0; k < ACC; ++k) {
        const double total = (double)acc[k];
        out[k] = (S)(total - total == 0 ? ((double)m + ::log2(total)) * LN2 : ::log(total));
      }
    } else {
      S* sign = (S*)outs[1] + row * ACC;
      out += row * ACC;
      for (int k = 0; k < ACC; ++k) {
        const double total = (double)acc[k], size = ::fabs(total);
        const double value = total - total == 0 ? ((double)m + ::log2(size)) * LN2 : ::log(size);
        out[k] = (S)value;
        sign[k] = value != value ? (S)NAN : (S)((total > 0) - (total < 0));
      }
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
