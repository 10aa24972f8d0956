// The CUDA schedule of a generated kernel.
//
// A generated kernel defines a `Formula` struct (compute type C, storage types IN/OUT/I, loaders
// of its outer, inner and parameter rows, `pre_outer` / `pre_inner` computing the hoisted
// subexpressions of one side into the values after the variables, and `evaluate_pair` printed
// from the formula, the same text as on the CPU) and instantiates JK_CUDA_KERNELS(Formula,
// Reduction). The schedule (KeOps'):
//   - one thread per output row, whose outer variables (and the values hoisted from them) and
//     reduction state stay in registers;
//   - the reduced rows are streamed through dynamic shared memory in tiles of blockDim.x rows
//     (TILE_STRIDE values apart, a multiple of 16 bytes past 8, so that the pair loop reads
//     them with vector loads): each thread loads one row of the inner variables, computes its
//     hoisted values and stores what the pair formula reads of them, a barrier, every thread
//     sweeps the tile, a barrier (so that the next load cannot overwrite a row still being
//     read);
//   - the linear form of a Sum (F::EPILOGUE) turns the reduced values into the outputs once
//     per row, reading the row's outer variables again;
//   - batch elements go on gridDim.y (looping if there are more than the grid holds);
//   - the split schedule also puts chunks of the reduced axis on gridDim.z, stores the partial
//     states, and a second kernel combines them in chunk order (deterministic results);
//   - block-sparse calls (P.n_ranges >= 0, see cuda_abi.h): a block walks the row ranges that
//     meet its rows (binary search for the first) and, for each, streams the tiles of that
//     range's reduced-row intervals only; every thread of the block loads and meets the
//     barriers, only those whose row is in the range accumulate (a thread's row is in one range
//     at most, so its state sees exactly its range's intervals; rows in none keep the empty
//     value). Indices stay absolute reduced-row numbers. Each interval is also cut to the
//     block's chunk, so both schedules are correct (the lowering uses the rows one).
//
// The file also compiles as plain C++ under the CPU emulation of the tests (JK_CUDA_EMULATION),
// which provides threadIdx & co. and checks every shared and global memory access through the
// JK_SMEM_ACCESS / JK_GLOBAL_ACCESS hooks. The JK_FAULT_* switches plant known bugs, only for
// the tests that prove the emulation catches them.
#ifndef JAXKEOPS_CUDA_KERNEL_H
#define JAXKEOPS_CUDA_KERNEL_H

#include "jaxkeops/cuda_abi.h"
#include "jaxkeops/cuda_reductions.h"
#include "jaxkeops/exp.h"
#include "jaxkeops/math.h"

#ifndef JK_SMEM_ACCESS
#define JK_SMEM_ACCESS(ptr, bytes, is_write) ((void)0)
#endif
#ifndef JK_GLOBAL_ACCESS
#define JK_GLOBAL_ACCESS(ptr, bytes, is_write) ((void)0)
#endif
#ifndef JK_DYNAMIC_SMEM
#define JK_DYNAMIC_SMEM(name)                                 \
  extern __shared__ __align__(16) unsigned char jk_smem_[]; \
  unsigned char* name = jk_smem_
#endif
#ifndef JK_FAULT_NO_BARRIER_AFTER_LOAD
#define JK_FAULT_NO_BARRIER_AFTER_LOAD 0
#endif
#ifndef JK_FAULT_NO_BARRIER_AFTER_TILE
#define JK_FAULT_NO_BARRIER_AFTER_TILE 0
#endif
#ifndef JK_FAULT_LAST_TILE_SHORT
#define JK_FAULT_LAST_TILE_SHORT 0
#endif
#ifndef JK_FAULT_TILE_OVERRUN
#define JK_FAULT_TILE_OVERRUN 0
#endif

namespace jk {

// Half precision storage, converted to float on load and rounded to nearest even on store.
// Only the bits are stored, so no cuda_fp16.h (absent under NVRTC without the toolkit).
struct f16 {
  uint16_t bits;
};
struct bf16 {
  uint16_t bits;
};

namespace gpu {

JK_FN float f16_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#else
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf, NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      man <<= 1;
      ++e;
    } while (!(man & 0x400u));
    bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
#endif
}

JK_FN uint16_t float_to_f16(float f) {
#if defined(__CUDA_ARCH__)
  uint16_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#else
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (ax < 0x33000001u) return (uint16_t)sign;               // <= 2^-25: rounds to 0
  int e = (int)(ax >> 23) - 127;
  uint32_t man = (ax & 0x7fffffu) | 0x800000u;
  int shift = e < -14 ? 13 + (-14 - e) : 13;  // subnormal results drop more bits
  uint32_t base = e < -14 ? 0 : (uint32_t)(e + 15) << 10;
  uint32_t kept = man >> shift, rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
  uint32_t h = base + (e < -14 ? kept : (kept & 0x3ffu));
  if (rest > half || (rest == half && (kept & 1u))) ++h;  // a carry may bump the exponent
  return (uint16_t)(sign | h);
#endif
}

JK_FN float bf16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

JK_FN uint16_t float_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

template <class T> struct io {
  template <class C> JK_FN static C load(const T& v) { return (C)v; }
  template <class C> JK_FN static T store(C v) { return (T)v; }
};
template <> struct io<f16> {
  template <class C> JK_FN static C load(const f16& v) { return (C)f16_to_float(v.bits); }
  template <class C> JK_FN static f16 store(C v) { return f16{float_to_f16((float)v)}; }
};
template <> struct io<bf16> {
  template <class C> JK_FN static C load(const bf16& v) { return (C)bf16_to_float(v.bits); }
  template <class C> JK_FN static bf16 store(C v) { return bf16{float_to_bf16((float)v)}; }
};

// Row `row` of a (rows, D) block of IN values, converted to C.
template <class IN, int D, class C> JK_FN void load_row(const void* base, int64_t row, C* dst) {
  const IN* src = (const IN*)base + row * D;
  JK_GLOBAL_ACCESS(src, D * sizeof(IN), false);
  for (int k = 0; k < D; ++k) dst[k] = io<IN>::template load<C>(src[k]);
}

// The base pointers of batch element b: per-operand strides, 0 for a broadcast dim. Unrolled
// over the fixed maximum so that the parameter block is read at constant offsets.
template <int N_OPS> JK_FN void batch_pointers(const jk_cuda_params& P, int64_t b, char** ptr) {
  for (int k = 0; k < N_OPS; ++k) ptr[k] = (char*)P.ptr[k];
#pragma unroll
  for (int d = JK_CUDA_MAX_BATCH_DIMS - 1; d >= 0; --d) {
    if (d < P.n_dims) {
      int64_t idx = b % P.batch_shape[d];
      b /= P.batch_shape[d];
      for (int k = 0; k < N_OPS; ++k) ptr[k] += idx * P.stride[k][d];
    }
  }
}

// Writes a row's outputs, converting values to OUT; indices go out as I.
template <class F> struct RowWriter {
  char* const* outs;
  int64_t row;
  template <class C> JK_FN void value(int o, int width, int k, C x) {
    typename F::OUT* dst = (typename F::OUT*)outs[o] + row * width + k;
    JK_GLOBAL_ACCESS(dst, sizeof(*dst), true);
    *dst = io<typename F::OUT>::template store<C>(x);
  }
  JK_FN void index(int o, int width, int k, int64_t i) {
    typename F::I* dst = (typename F::I*)outs[o] + row * width + k;
    JK_GLOBAL_ACCESS(dst, sizeof(*dst), true);
    *dst = (typename F::I)i;
  }
};

// Where the partial state of (batch b, chunk c, row) lives in the scratch buffer: all values
// (of the reduction's Partial type) first, then all int64 indices; field f of consecutive rows
// are adjacent (coalesced stores).
template <class F, class R> struct PartialLayout {
  using P = typename R::Partial;
  P* values;
  int64_t* indices;
  int64_t n_out;
  JK_FN PartialLayout(const jk_cuda_params& params) : n_out(params.n_out) {
    char* base = (char*)params.ptr[F::N_ARGS + F::N_OUTS];
    int64_t value_bytes =
        params.n_batch * params.n_chunks * R::PARTIAL_VALUES * params.n_out * (int64_t)sizeof(P);
    values = (P*)base;
    indices = (int64_t*)(base + (value_bytes + 7) / 8 * 8);
  }
  JK_FN P* v(int64_t b, int64_t n_chunks, int64_t c, int64_t row) const {
    return values + ((b * n_chunks + c) * R::PARTIAL_VALUES) * n_out + row;
  }
  JK_FN int64_t* ix(int64_t b, int64_t n_chunks, int64_t c, int64_t row) const {
    return indices + ((b * n_chunks + c) * R::PARTIAL_INDICES) * n_out + row;
  }
};

template <int N> struct MinOne {
  static constexpr int value = N > 0 ? N : 1;
};

// Collects the values a reduction's `finish` writes, for F::epilogue to turn into the outputs.
template <class F> struct ValueCollector {
  typename F::C values[F::DIM];
  template <class C> JK_FN void value(int, int, int k, C x) { values[k] = (typename F::C)x; }
  JK_FN void index(int, int, int, int64_t) {}
};

// Writes the outputs of a row from its final state: through F::epilogue for the linear form of
// a Sum, which reads the row's outer variables and the parameters again (once per row: better
// than keeping variables the pair loop does not read alive in registers), else as they are.
template <class F, class R>
JK_FN void write_row(const typename R::State& st, char* const* ptr, int64_t row) {
  using C = typename F::C;
  RowWriter<F> w{ptr + F::N_ARGS, row};
  if constexpr (F::EPILOGUE) {
    ValueCollector<F> reduced;
    R::finish(st, reduced);
    C o[MinOne<F::OUTER_RAW>::value], p[MinOne<F::PARAM_DIM>::value], out[F::OUT_DIM];
    F::load_outer(ptr, row, o);
    F::load_params(ptr, p);
    F::epilogue(o, reduced.values, p, out);
    for (int k = 0; k < F::OUT_DIM; ++k) w.value(0, F::OUT_DIM, k, out[k]);
  } else {
    R::finish(st, w);
  }
}

// Entry `at` of a block-sparse array, clamped into [lo, hi]. The host never reads these arrays
// (they are on the device), so nothing has checked them: clamping every bound keeps a bad tuple
// (unsorted, overlapping, past the ends) to unspecified results, never an access outside a
// buffer or a loop without end.
JK_FN int64_t clamped(const int32_t* array, int64_t at, int64_t lo, int64_t hi) {
  JK_GLOBAL_ACCESS(array + at, sizeof(int32_t), false);
  const int64_t v = array[at];
  return v < lo ? lo : v > hi ? hi : v;
}

// The first row range that ends after `row` (ranges are sorted and disjoint; all threads of a
// block read the same entries).
JK_FN int64_t first_range_after(const jk_cuda_params& P, int64_t row) {
  int64_t lo = 0, hi = P.n_ranges;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (clamped(P.ranges, 2 * mid + 1, 0, P.n_out) <= row) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Streams the reduced rows [j_a, j_b) through shared memory, a tile of blockDim.x rows at a
// time: every thread loads its row of the tile and meets both barriers, the `accumulating` ones
// fold the tile into their state.
template <class F, class R>
JK_FN void sweep(char* const* ptr, typename F::C* tile, const typename F::C* o,
                 const typename F::C* p, typename R::State& st, int64_t j_a, int64_t j_b,
                 bool accumulating) {
  using C = typename F::C;
  constexpr int DI = F::INNER_DIM, DT = F::TILE_DIM, STRIDE = F::TILE_STRIDE;
  const int tid = (int)threadIdx.x, width = (int)blockDim.x;
  for (int64_t j0 = j_a; j0 < j_b; j0 += width) {
    int nt = (int)(j_b - j0 < width ? j_b - j0 : width);
    if (JK_FAULT_LAST_TILE_SHORT && nt < width) --nt;
    if (DT > 0 && tid < nt) {
      C* dst = tile + tid * STRIDE;
      JK_SMEM_ACCESS(dst, DT * sizeof(C), true);
      if constexpr (DT == DI) {  // the whole row: built in place (no copy of a long row)
        F::load_inner(ptr, j0 + tid, dst);
        F::pre_inner(dst, p, dst + F::INNER_RAW);
      } else {  // what the pair formula reads of it: built in registers, then stored
        C row[DI];
        F::load_inner(ptr, j0 + tid, row);
        F::pre_inner(row, p, row + F::INNER_RAW);
        F::pack_inner(row, dst);
      }
    }
    if (!JK_FAULT_NO_BARRIER_AFTER_LOAD) __syncthreads();
    if (accumulating) {
      R::start_tile(st);
      for (int t = 0; t < nt + JK_FAULT_TILE_OVERRUN; ++t) {
        const C* n = tile + t * STRIDE;
        JK_SMEM_ACCESS(n, DT * sizeof(C), false);
        C f[F::DIM];
        F::evaluate_pair(o, n, p, f);
        R::accumulate(st, f, j0 + t);
      }
      R::end_tile(st);
    }
    if (!JK_FAULT_NO_BARRIER_AFTER_TILE) __syncthreads();
  }
}

// One output row per thread over the reduced rows [j_begin, j_end) of chunk blockIdx.z (for a
// block-sparse call, its range's intervals cut to that chunk). With one chunk (the rows
// schedule) it writes the outputs, else the partial state: one kernel for both, as the formula
// is the costly part to compile.
template <class F, class R> JK_FN void run_rows(const jk_cuda_params& P) {
  using C = typename F::C;
  constexpr int N_OPS = F::N_ARGS + F::N_OUTS;
  JK_DYNAMIC_SMEM(smem_bytes);
  C* tile = (C*)smem_bytes;
  const int width = (int)blockDim.x;
  const int64_t first_row = (int64_t)blockIdx.x * width, row = first_row + threadIdx.x;
  const int64_t end_row = P.n_out - first_row < width ? P.n_out : first_row + width;
  const bool active = row < P.n_out;
  const bool split = P.n_chunks > 1;
  const int64_t chunk = blockIdx.z;
  const int64_t j_begin = chunk * P.chunk_len;
  const int64_t j_end = P.n_red - j_begin < P.chunk_len ? P.n_red : j_begin + P.chunk_len;
  // Dense calls are one range of every row with one interval, the chunk: a single call site of
  // sweep, so that the formula is inlined (and compiled) once.
  const bool ranged = P.n_ranges >= 0;
  const int64_t n_ranges = ranged ? P.n_ranges : 1;
  const int64_t first_range = ranged ? first_range_after(P, first_row) : 0;
  for (int64_t b = blockIdx.y; b < P.n_batch; b += gridDim.y) {
    char* ptr[N_OPS];
    batch_pointers<N_OPS>(P, b, ptr);
    C o[MinOne<F::OUTER_DIM>::value], p[MinOne<F::PARAM_DIM>::value];
    F::load_params(ptr, p);
    if (active) {
      F::load_outer(ptr, row, o);
      F::pre_outer(o, p, o + F::OUTER_RAW);
    }
    typename R::State st;
    R::init(st);
    for (int64_t k = first_range; k < n_ranges; ++k) {
      int64_t rows_a = 0, rows_b = P.n_out, q_begin = 0, q_end = 1;
      if (ranged) {
        rows_a = clamped(P.ranges, 2 * k, 0, P.n_out);
        rows_b = clamped(P.ranges, 2 * k + 1, rows_a, P.n_out);
        if (rows_a >= end_row) break;  // this range and the next ones start after the block
        if (rows_b <= first_row || rows_b == rows_a) continue;  // none of the block's rows
        q_end = clamped(P.slices, k, 0, P.n_redranges);
        q_begin = k > 0 ? clamped(P.slices, k - 1, 0, q_end) : 0;
      }
      const bool in_range = rows_a <= row && row < rows_b;  // implies active
      for (int64_t q = q_begin; q < q_end; ++q) {
        int64_t j_a = j_begin, j_b = j_end;
        if (ranged) {
          j_a = clamped(P.redranges, 2 * q, j_begin, j_end);
          j_b = clamped(P.redranges, 2 * q + 1, j_a, j_end);
        }
        sweep<F, R>(ptr, tile, o, p, st, j_a, j_b, in_range);
      }
    }
    if (!active) continue;
    if (split) {
      PartialLayout<F, R> layout(P);
      typename R::Partial* v = layout.v(b, P.n_chunks, chunk, row);
      int64_t* ix = layout.ix(b, P.n_chunks, chunk, row);
      JK_GLOBAL_ACCESS(v + (R::PARTIAL_VALUES - 1) * P.n_out, sizeof(*v), true);
      if (R::PARTIAL_INDICES > 0)
        JK_GLOBAL_ACCESS(ix + (R::PARTIAL_INDICES - 1) * P.n_out, sizeof(int64_t), true);
      R::save(st, v, ix, P.n_out);
    } else {
      write_row<F, R>(st, ptr, row);
    }
  }
}

// Folds the partial states of every chunk of a row, in chunk order, and writes the outputs.
template <class F, class R> JK_FN void combine_rows(const jk_cuda_params& P) {
  constexpr int N_OPS = F::N_ARGS + F::N_OUTS;
  const int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= P.n_out) return;
  const PartialLayout<F, R> layout(P);
  for (int64_t b = blockIdx.y; b < P.n_batch; b += gridDim.y) {
    char* ptr[N_OPS];
    batch_pointers<N_OPS>(P, b, ptr);
    typename R::State st, next;
    const typename R::Partial* last = layout.v(b, P.n_chunks, P.n_chunks - 1, row);
    JK_GLOBAL_ACCESS(last + (R::PARTIAL_VALUES - 1) * P.n_out, sizeof(*last), false);
    R::load(st, layout.v(b, P.n_chunks, 0, row), layout.ix(b, P.n_chunks, 0, row), P.n_out);
    for (int64_t c = 1; c < P.n_chunks; ++c) {
      R::load(next, layout.v(b, P.n_chunks, c, row), layout.ix(b, P.n_chunks, c, row), P.n_out);
      R::combine(st, next);
    }
    write_row<F, R>(st, ptr, row);
  }
}

}  // namespace gpu
}  // namespace jk

#define JK_CUDA_CAT2(a, b) a##b
#define JK_CUDA_CAT(a, b) JK_CUDA_CAT2(a, b)
#define JK_CUDA_NAME(base) JK_CUDA_CAT(base, JK_CUDA_KERNEL_SUFFIX)

#define JK_CUDA_KERNELS(F, R)                                                                   \
  static_assert(R::PARTIAL_VALUES == F::PARTIAL_VALUES &&                                      \
                    R::PARTIAL_INDICES == F::PARTIAL_INDICES,                                   \
                "the scratch layout the launcher sized differs from the reduction's");          \
  static_assert(F::N_ARGS + F::N_OUTS + 1 <= JK_CUDA_MAX_OPERANDS, "too many operands");      \
  extern "C" __global__ void JK_CUDA_NAME(jk_main)(jk_cuda_params P) {                         \
    jk::gpu::run_rows<F, R>(P);                                                                 \
  }                                                                                             \
  extern "C" __global__ void JK_CUDA_NAME(jk_combine)(jk_cuda_params P) {                      \
    jk::gpu::combine_rows<F, R>(P);                                                             \
  }

#endif  // JAXKEOPS_CUDA_KERNEL_H
