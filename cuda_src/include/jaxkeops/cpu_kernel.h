// The CPU loop schedule of a generated kernel.
//
// A generated kernel defines a `Formula` struct (its arguments and an `evaluate_tile`
// template printed from the formula) and instantiates `jk::run_cpu<Formula, Reduction>` as its
// `jk_run`. The schedule:
//   - rows of the output are taken in super-blocks of up to SB rows, whose reduction states
//     live across the sweep of the reduced axis;
//   - the reduced axis is swept in tiles of TJ rows; each tile of the inner variables is copied
//     once into a structure-of-arrays buffer, zero-padded to whole SIMD vectors, so that the
//     formula reads L consecutive reduced rows as one aligned vector;
//   - RB output rows are evaluated against NG vectors of reduced rows at once (a register tile),
//     so that each load of the inner variables serves RB rows, and each broadcast of an outer
//     value serves NG vectors.
#ifndef JAXKEOPS_CPU_KERNEL_H
#define JAXKEOPS_CPU_KERNEL_H

#include <stdlib.h>

#include <utility>

#include "jaxkeops/cpu_reductions.h"
#include "jaxkeops/kernel_abi.h"

namespace jk {

enum Role { OUTER = 0, INNER = 1, PARAM = 2 };

struct ArgInfo {
  int role;
  int dim;
  int offset;  // where the argument's components start among those of its role
};

// `count` T, 64-byte aligned: in the object itself when they fit in LOCAL_BYTES, else on the
// heap. A call's chunks of a few dozen rows are tasks of their own, and two aligned heap
// allocations per task were a few percent of a call at M = N = 1e3.
template <class T, size_t LOCAL_BYTES = 0> struct AlignedBuffer {
  T* ptr = nullptr;
  explicit AlignedBuffer(size_t count) {
    size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
    if (bytes <= LOCAL_BYTES) {
      ptr = (T*)local;
    } else {
      ptr = (T*)aligned_alloc(64, bytes ? bytes : 64);
    }
  }
  ~AlignedBuffer() {
    if ((void*)ptr != (void*)local) free(ptr);
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

 private:
  alignas(64) unsigned char local[LOCAL_BYTES > 0 ? LOCAL_BYTES : 1];
};

// Whether reduction R reads the arguments itself (it has a `bind`).
template <class R, class = void> struct has_bind : std::false_type {};
template <class R> struct has_bind<R, std::void_t<decltype(&R::bind)>> : std::true_type {};
// Whether reduction R folds several rows at once (an `accumulate_rows`).
template <class R, class = void> struct has_rows : std::false_type {};
template <class R>
struct has_rows<R, std::void_t<decltype(&R::template accumulate_rows<1, false, int, int>)>>
    : std::true_type {};

template <class F, class R> struct CpuSchedule {
  using S = typename F::S;
  using V = simd_t<S>;
  using J = index_t<V>;
  using M = mask_t<V>;
  using State = typename R::State;
  static constexpr int L = traits<V>::lanes;
  static constexpr int DO = F::OUTER_DIM, DI = F::INNER_DIM, DP = F::PARAM_DIM;
  static constexpr int DO1 = DO > 0 ? DO : 1, DI1 = DI > 0 ? DI : 1, DP1 = DP > 0 ? DP : 1;
  static constexpr int RB = F::ROW_BLOCK;
  // A tile of the inner variables fills about 128 KiB: it stays in L2 while SB rows use it.
  // At large D, at least 16 vectors of reduced rows per tile, even if the tile outgrows
  // 128 KiB: each output row streams the whole tile once per step, and with fewer columns the
  // per-tile work (loading the rows' values, merging the states) dominates (measured at
  // D = 1024: 16 vectors per tile give the throughput per flop of D = 64, 1 gives a third).
  static constexpr int TJ_RAW = (128 * 1024) / (int)(DI1 * sizeof(S));
  static constexpr int TJ_MIN = 16 * L;
  static constexpr int TJ = TJ_RAW < TJ_MIN ? TJ_MIN : (TJ_RAW > 4096 ? 4096 : TJ_RAW / L * L);
  // Each super-block packs every tile of the inner variables again: at most SB rows, split
  // evenly (measured at D = 3: 2048 rows instead of 512 make the Gaussian sum 8% faster).
  static constexpr int SB = 4096;

  // Copies one argument's rows [j0, j0 + nj) into the tile, component-major within each
  // group of L rows (scalar copies: vector shuffles for D = 3 measured no faster, as packing
  // waits on memory). Meanwhile it has the memory system fetch the same rows of the next
  // tile, those before `next_end`: they arrive while this tile is swept, where the next
  // packing would otherwise wait for them (measured, Gaussian sum, N = 1e7, D = 3, one core:
  // 9-18% faster for one output row, 7-8% for 10 and 6% for 100).
  template <int A>
  JK_FN static void pack_arg(const jk_task* t, S* buf, int64_t j0, int nj, int64_t next_end) {
    constexpr ArgInfo info = F::ARGS[A];
    if constexpr (info.role == INNER) {
      constexpr int D = info.dim;
      constexpr int GROUP_BYTES = L * D * (int)sizeof(S);
      const S* src = (const S*)t->args[A] + j0 * D;
      const int full = nj / L;
      // Addresses as integers: the next tile may lie past the end of the array.
      const uintptr_t ahead = (uintptr_t)(src + (size_t)TJ * D);
      const int64_t ahead_rows = next_end - j0 - TJ;
      const int ahead_groups =
          ahead_rows <= 0 ? 0 : (ahead_rows >= nj ? full : (int)((ahead_rows + L - 1) / L));
      for (int g = 0; g < full; ++g) {
        S* dst = buf + (size_t)g * DI * L + (size_t)info.offset * L;
        const S* rows = src + (size_t)g * L * D;
        if (g < ahead_groups)
          for (int b = 0; b < GROUP_BYTES; b += 64)
            __builtin_prefetch((const void*)(ahead + (uintptr_t)g * GROUP_BYTES + b), 0, 3);
        for (int k = 0; k < D; ++k)
          for (int l = 0; l < L; ++l) dst[k * L + l] = rows[l * D + k];
      }
      if (full * L < nj) {
        S* dst = buf + (size_t)full * DI * L + (size_t)info.offset * L;
        for (int l = 0; l < L; ++l) {
          const int j = full * L + l;
          for (int k = 0; k < D; ++k) dst[k * L + l] = j < nj ? src[(size_t)j * D + k] : S(0);
        }
      }
    }
  }
  template <int... A>
  JK_FN static void pack_args(const jk_task* t, S* buf, int64_t j0, int nj, int64_t next_end,
                              std::integer_sequence<int, A...>) {
    (pack_arg<A>(t, buf, j0, nj, next_end), ...);
  }

  // Packs the tile of rows [j0, j0 + nj); the next one to pack ends at next_end at most.
  JK_OUTLINE static void pack_tile(const jk_task* t, S* buf, const V* p, int64_t j0, int nj,
                                   int64_t next_end) {
    pack_args(t, buf, j0, nj, next_end, std::make_integer_sequence<int, F::N_ARGS>{});
    if constexpr (F::INNER_DIM > F::INNER_RAW) {
      const int groups = (nj + L - 1) / L;
      for (int g = 0; g < groups; ++g) {
        S* group = buf + (size_t)g * DI * L;
        F::pre_inner((const V*)group, p, (V*)(group + (size_t)F::INNER_RAW * L));
      }
    }
  }

  // The outer values stay scalars: the formula broadcasts them where it uses them, which the
  // compiler turns into broadcast loads hoisted out of the loop over reduced rows.
  JK_FN static void load_raw_outer(const jk_task* t, int64_t row, S* o) {
    for (int a = 0; a < F::N_ARGS; ++a) {
      const ArgInfo& info = F::ARGS[a];
      if (info.role != OUTER) continue;
      const S* src = (const S*)t->args[a] + row * info.dim;
      for (int k = 0; k < info.dim; ++k) o[info.offset + k] = src[k];
    }
  }
  JK_FN static void load_outer(const jk_task* t, int64_t row, const S* ps, S* o) {
    load_raw_outer(t, row, o);
    if constexpr (F::OUTER_DIM > F::OUTER_RAW) F::pre_outer(o, ps, o + F::OUTER_RAW);
  }

  // Writes a row's outputs: the reduction's values, through the formula's epilogue if it has
  // one (the factors of the row, multiplied once per row rather than every pair).
  JK_FN static void finish_row(const jk_task* t, const S* ps, const State& st, int64_t row) {
    R::finish(st, t->outs, row);
    if constexpr (F::EPILOGUE) {
      S o[DO1], reduced[F::DIM];
      load_raw_outer(t, row, o);
      S* out = (S*)t->outs[0] + row * F::DIM;
      for (int k = 0; k < F::DIM; ++k) reduced[k] = out[k];
      F::epilogue(o, reduced, ps, out);
    }
  }

  // Evaluates NR rows against NG consecutive vectors of the tile starting at vector g, and
  // folds the values into the rows' states (vector by vector, so indices stay in order).
  template <int NR, int NG, bool MASKED>
  JK_FN static void step(const S* buf, const S (*o)[DO1], const V* p, State* st, int g, M valid,
                         int64_t j0) {
    const V* n[NG];
    for (int c = 0; c < NG; ++c) n[c] = (const V*)(buf + (size_t)(g + c) * DI * L);
    V f[NR * NG][F::DIM];
    F::template evaluate_tile<NR, NG>(o, n, p, f);
    for (int c = 0; c < NG; ++c) {
      if constexpr (has_rows<R>::value) {
        R::template accumulate_rows<NR, MASKED>(st, f + c * NR, (g + c) * L, valid, j0);
      } else {
        for (int r = 0; r < NR; ++r)
          R::template accumulate<MASKED>(st[r], f[c * NR + r], (g + c) * L, valid, j0);
      }
    }
  }

  template <int NR>
  JK_FN static void sweep_tile(const S* buf, const S (*o)[DO1], const V* p, State* states,
                               int nj, int64_t j0) {
    // The states are copied to locals so that the compiler can keep them in registers: through
    // the pointer they might alias the tile buffer.
    State st[NR];
    for (int r = 0; r < NR; ++r) st[r] = states[r];
    constexpr int NG = F::COL_BLOCK;
    const int full = nj / L;
    int g = 0;
    for (; g + NG <= full; g += NG) step<NR, NG, false>(buf, o, p, st, g, M{}, j0);
    for (; g < full; ++g) step<NR, 1, false>(buf, o, p, st, g, M{}, j0);
    if (full * L < nj) {
      M valid = lane_indices<J>(full * L) < (J{} + nj);
      step<NR, 1, true>(buf, o, p, st, full, valid, j0);
    }
    for (int r = 0; r < NR; ++r) states[r] = st[r];
  }

  // Everything a task's rows share: the tile buffer (or the call's packed tiles), the states,
  // the parameters.
  struct Work {
    const jk_task* t;
    S* buf;
    const S* packed;
    State* states;
    int sb;
    const V* p;
    const S* ps;
  };

  // Rows [row_a, row_b), each reduced over the intervals iv[2q]:iv[2q+1], q < n_iv. One
  // instantiation only: this loop is most of a kernel's compile time.
  static void reduce_rows(const Work& w, int64_t row_a, int64_t row_b, const int64_t* iv,
                          int64_t n_iv) {
    const jk_task* t = w.t;
    for (int64_t row0 = row_a; row0 < row_b; row0 += w.sb) {
      const int rows = (int)(row_b - row0 < w.sb ? row_b - row0 : w.sb);
      for (int r = 0; r < rows; ++r) {
        if constexpr (has_bind<R>::value) R::bind(w.states[r], t, row0 + r);
        R::start_row(w.states[r]);
      }
      for (int64_t q = 0; q < n_iv;) {
        // Intervals that touch (adjacent clusters) are one: fewer, fuller tiles.
        const int64_t j_begin = iv[2 * q];
        int64_t j_end = iv[2 * q + 1];
        for (++q; q < n_iv && iv[2 * q] == j_end; ++q) j_end = iv[2 * q + 1];
        for (int64_t j0 = j_begin; j0 < j_end; j0 += TJ) {
          const int nj = (int)(j_end - j0 < TJ ? j_end - j0 : TJ);
          // Packed tiles start at whole multiples of TJ (calls without ranges only).
          const S* tile = w.packed ? w.packed + (size_t)(j0 / TJ) * TJ * DI : w.buf;
          if constexpr (DI > 0)
            if (!w.packed) pack_tile(t, w.buf, w.p, j0, nj, j_end);
          int r = 0;
          for (; r < rows; r += RB) {
            const int nr = rows - r < RB ? rows - r : RB;
            S o[RB][DO1];
            for (int k = 0; k < nr; ++k) {
              load_outer(t, row0 + r + k, w.ps, o[k]);
              R::start_tile(w.states[r + k]);
            }
            if (nr == RB) {
              sweep_tile<RB>(tile, o, w.p, w.states + r, nj, j0);
            } else {
              for (int k = 0; k < nr; ++k) sweep_tile<1>(tile, o + k, w.p, w.states + r + k, nj, j0);
            }
            for (int k = 0; k < nr; ++k) R::end_tile(w.states[r + k], j0);
          }
        }
      }
      for (int r = 0; r < rows; ++r) finish_row(t, w.ps, w.states[r], row0 + r);
    }
  }

  // Block-sparse: the task's rows, cut where the row ranges start and end.
  static int reduce_ranges(const Work& w) {
    const jk_task* t = w.t;
    const int32_t* ranges = t->ranges;
    int64_t most = 0;  // intervals of the largest cluster, widened to int64 one cluster at a time
    for (int64_t c = 0; c < t->n_ranges; ++c) {
      const int64_t n = t->slices[c] - (c ? t->slices[c - 1] : 0);
      most = n > most ? n : most;
    }
    AlignedBuffer<int64_t> wide((size_t)(2 * most + 2));
    if (!wide.ptr) return 1;
    // The first range that ends after row_begin (ranges are sorted and disjoint).
    int64_t lo = 0, hi = t->n_ranges;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (ranges[2 * mid + 1] <= t->row_begin) lo = mid + 1; else hi = mid;
    }
    int64_t k = lo;
    for (int64_t row = t->row_begin; row < t->row_end;) {
      while (k < t->n_ranges && ranges[2 * k + 1] <= row) ++k;
      if (k == t->n_ranges || row < ranges[2 * k]) {  // rows in no range reduce over nothing
        const int64_t gap = k == t->n_ranges || ranges[2 * k] > t->row_end ? t->row_end
                                                                            : ranges[2 * k];
        reduce_rows(w, row, gap, wide.ptr, 0);
        row = gap;
        continue;
      }
      const int64_t end = ranges[2 * k + 1] < t->row_end ? ranges[2 * k + 1] : t->row_end;
      const int64_t first = k ? t->slices[k - 1] : 0;
      const int64_t n_iv = t->slices[k] - first;
      for (int64_t q = 0; q < 2 * n_iv; ++q) wide.ptr[q] = t->redranges[2 * first + q];
      reduce_rows(w, row, end, wide.ptr, n_iv);
      row = end;
    }
    return 0;
  }

  static int64_t packed_bytes(int64_t n_red) {
    const int64_t tiles = (n_red + TJ - 1) / TJ;
    return DI > 0 ? tiles * TJ * DI * (int64_t)sizeof(S) : 0;
  }

  static int run(const jk_task* t) {
    if (t->mode == JK_PACK_SIZE) {
      *(int64_t*)t->scratch = t->n_ranges < 0 ? packed_bytes(t->n_red) : 0;
      return 0;
    }
    const S* packed = t->mode == JK_RUN && t->n_ranges < 0 ? (const S*)t->scratch : nullptr;
    // No tile buffer where the call's tiles are packed already.
    AlignedBuffer<S, 64> buf(packed || t->mode == JK_PACK ? 1 : (size_t)TJ * DI1);
    const int64_t n_rows = t->row_end - t->row_begin;
    const int64_t n_blocks = (n_rows + SB - 1) / SB;
    const int sb = (int)(n_blocks > 0 ? (n_rows + n_blocks - 1) / n_blocks : 1);
    AlignedBuffer<State, 16384> states(sb);
    if (!buf.ptr || !states.ptr) return 1;
    V p[DP1];
    S ps[DP1];
    for (int a = 0; a < F::N_ARGS; ++a) {
      const ArgInfo& info = F::ARGS[a];
      if (info.role != PARAM) continue;
      for (int k = 0; k < info.dim; ++k) {
        ps[info.offset + k] = ((const S*)t->args[a])[k];
        p[info.offset + k] = cst<V>(ps[info.offset + k]);
      }
    }
    if (t->mode == JK_PACK) {
      if constexpr (DI > 0)
        for (int64_t j0 = 0; j0 < t->n_red; j0 += TJ)
          pack_tile(t, (S*)t->scratch + (size_t)(j0 / TJ) * TJ * DI, p, j0,
                    (int)(t->n_red - j0 < TJ ? t->n_red - j0 : TJ), t->n_red);
      return 0;
    }
    const Work w{t, buf.ptr, packed, states.ptr, sb, p, ps};
    if (t->n_ranges >= 0) return reduce_ranges(w);
    const int64_t all[2] = {0, t->n_red};
    reduce_rows(w, t->row_begin, t->row_end, all, 1);
    return 0;
  }
};

template <class F, class R> int run_cpu(const jk_task* t) { return CpuSchedule<F, R>::run(t); }

}  // namespace jk

#endif  // JAXKEOPS_CPU_KERNEL_H
