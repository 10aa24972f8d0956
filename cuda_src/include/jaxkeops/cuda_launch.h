// Host side of a CUDA reduction call: validates the buffers, packs the kernels' parameter
// block (jk_cuda_params) and lists the launches. Plain C++ with no CUDA or XLA type, shared by
// the XLA FFI handler (cuda_src/jaxkeops_cuda.cc) and the CPU emulation of the tests, so that
// the tests run exactly the packing the GPU gets.
#ifndef JAXKEOPS_CUDA_LAUNCH_H
#define JAXKEOPS_CUDA_LAUNCH_H

#include <stdint.h>

#include <sstream>
#include <string>
#include <vector>

#include "jaxkeops/cuda_abi.h"

namespace jk {
namespace launch {

// OUTER..PARAM are the roles the lowering gives the kernel's inputs. RANGES marks the 3 int32
// arrays of a block-sparse call (ranges, slices, redranges, in this order, after the kernel's
// inputs); like every input it is below OUTPUT (the emulation of the tests tells the inputs,
// which a kernel may only read, by kind <= PARAM).
enum Kind { RANGES = -1, OUTER = 0, INNER = 1, PARAM = 2, OUTPUT = 3, SCRATCH = 4 };
enum Kernel { MAIN = 0, COMBINE = 1 };

struct Buffer {
  std::vector<int64_t> dims;
  int64_t elem_bytes;
  void* data;
  int kind;
};

// What the lowering decided (see jaxkeops/codegen/cuda.py: plan_launch).
struct Config {
  int64_t n_batch_dims;
  int64_t n_red;
  int64_t block;
  int64_t smem_bytes;
  int64_t n_chunks;
  int64_t chunk_len;
  int64_t max_grid_y = 65535;  // the hardware limit; the tests lower it to exercise the loop
  // Dynamic shared memory a block of the main kernel may use: 48 KiB on every GPU, more where
  // the launcher opted the kernel in (up to 227 KiB on sm_90).
  int64_t max_smem_bytes = 48 * 1024;
};

struct Launch {
  Kernel kernel;
  unsigned grid[3];
  unsigned block;
  unsigned smem_bytes;
};

inline std::string shape_str(const std::vector<int64_t>& dims) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < dims.size(); ++i) s << (i ? ", " : "") << dims[i];
  s << (dims.size() == 1 ? ",)" : ")");
  return s.str();
}

inline std::string name_of(const Buffer& b, size_t i, size_t n_inputs) {
  if (b.kind == OUTPUT) return "output " + std::to_string(i - n_inputs);
  if (b.kind == SCRATCH) return "the scratch output";
  return "input " + std::to_string(i);
}

// Points P at a block-sparse call's 3 arrays (kind RANGES, in order) after checking their
// shapes; their values stay unread (they live on the device): the kernels clamp every bound.
inline std::string pack_ranges(const std::vector<const Buffer*>& arrays, jk_cuda_params& P) {
  if (arrays.size() != 3)
    return "a block-sparse call takes 3 range arrays (ranges, slices, redranges), got " +
           std::to_string(arrays.size());
  const char* names[3] = {"ranges", "slices", "redranges"};
  for (int k = 0; k < 3; ++k) {
    const Buffer& b = *arrays[k];
    const bool pairs = k != 1;
    if (b.elem_bytes != 4 || b.dims.size() != (pairs ? 2u : 1u) || (pairs && b.dims[1] != 2))
      return std::string(names[k]) + " must be int32 of shape " + (pairs ? "(n, 2)" : "(n,)") +
             ", got shape " + shape_str(b.dims) + " of " + std::to_string(b.elem_bytes) +
             "-byte elements";
  }
  if (arrays[1]->dims[0] != arrays[0]->dims[0])
    return "slices has shape " + shape_str(arrays[1]->dims) + " but ranges has shape " +
           shape_str(arrays[0]->dims) + ": one slice end per row range";
  P.ranges = static_cast<const int32_t*>(arrays[0]->data);
  P.slices = static_cast<const int32_t*>(arrays[1]->data);
  P.redranges = static_cast<const int32_t*>(arrays[2]->data);
  P.n_ranges = arrays[0]->dims[0];
  P.n_redranges = arrays[2]->dims[0];
  return "";
}

// Fills P and the launches from the call's buffers (inputs, for a block-sparse call its 3
// range arrays, outputs, then the scratch buffer when cfg.n_chunks > 1). Returns "" or a
// message naming the buffer that does not fit. No launch is listed when there is nothing to
// compute (an empty grid is an error on a GPU).
inline std::string pack(const std::vector<Buffer>& bufs, const Config& cfg, jk_cuda_params& P,
                        std::vector<Launch>& launches) {
  launches.clear();
  P = jk_cuda_params{};
  P.n_ranges = -1;
  const int64_t nb = cfg.n_batch_dims;
  if (nb < 0 || cfg.n_red < 0 || cfg.block < 1 || cfg.block > 1024 || cfg.n_chunks < 1 ||
      cfg.n_chunks > 65535 || cfg.smem_bytes < 0 || cfg.chunk_len < 0 || cfg.max_grid_y < 1)
    return "invalid launch attributes: n_batch=" + std::to_string(nb) +
           ", n_red=" + std::to_string(cfg.n_red) + ", block=" + std::to_string(cfg.block) +
           ", smem=" + std::to_string(cfg.smem_bytes) +
           ", n_chunks=" + std::to_string(cfg.n_chunks);
  if (cfg.smem_bytes > cfg.max_smem_bytes)
    return "the kernel needs " + std::to_string(cfg.smem_bytes) +
           " bytes of dynamic shared memory per block (block=" + std::to_string(cfg.block) +
           "), more than the " + std::to_string(cfg.max_smem_bytes) +
           " this device allows: it was lowered for a GPU with more shared memory; lower it "
           "again in this process";
  size_t n_inputs = 0, first_out = bufs.size();
  std::vector<const Buffer*> range_arrays;
  for (size_t i = 0; i < bufs.size(); ++i) {
    if (bufs[i].kind <= PARAM) n_inputs = i + 1;
    if (bufs[i].kind == OUTPUT && first_out == bufs.size()) first_out = i;
    if (bufs[i].kind == RANGES) range_arrays.push_back(&bufs[i]);
  }
  // The range arrays get fields of their own: P.ptr holds the kernel's operands only.
  const size_t n_operands = bufs.size() - range_arrays.size();
  if (n_operands > JK_CUDA_MAX_OPERANDS)
    return "the call has " + std::to_string(n_operands) + " buffers, more than the " +
           std::to_string(JK_CUDA_MAX_OPERANDS) + " a kernel takes";
  if (first_out == bufs.size()) return "the call has no outputs";
  if (!range_arrays.empty()) {
    if (std::string msg = pack_ranges(range_arrays, P); !msg.empty()) return msg;
  }
  const bool split = cfg.n_chunks > 1;
  if (split != (bufs.back().kind == SCRATCH))
    return split ? "the split schedule needs a scratch output after the outputs"
                 : "a scratch output was passed to the row schedule";

  const std::vector<int64_t>& out0 = bufs[first_out].dims;
  const size_t rank = static_cast<size_t>(nb) + 2;
  if (out0.size() != rank)
    return "output 0 has shape " + shape_str(out0) + ", expected rank " + std::to_string(rank) +
           " (n_batch=" + std::to_string(nb) + " batch dims, rows, width)";
  const int64_t n_out = out0[nb];
  std::vector<int64_t> batch(out0.begin(), out0.begin() + nb);
  std::vector<std::vector<int64_t>> strides;
  size_t slot = 0;  // the buffer's index in P.ptr
  for (size_t i = 0; i < bufs.size(); ++i) {
    const Buffer& b = bufs[i];
    const std::string name = name_of(b, i, n_inputs);
    if (b.kind == RANGES) continue;
    if (b.kind == SCRATCH) {
      if (b.dims.size() != 1) return name + " must have rank 1, got " + shape_str(b.dims);
      P.ptr[slot++] = b.data;
      continue;
    }
    if (b.dims.size() != rank)
      return name + " has shape " + shape_str(b.dims) + ", expected rank " +
             std::to_string(rank) + " (n_batch=" + std::to_string(nb) + " batch dims, rows, dim)";
    const int64_t rows = b.kind == INNER ? cfg.n_red : b.kind == PARAM ? 1 : n_out;
    if (b.dims[nb] != rows)
      return name + " has shape " + shape_str(b.dims) + " but " + std::to_string(rows) +
             " rows were expected (output shape " + shape_str(out0) +
             ", n_red=" + std::to_string(cfg.n_red) + ")";
    std::vector<int64_t> s(nb);
    int64_t stride = b.elem_bytes * b.dims[nb] * b.dims[nb + 1];
    for (int64_t d = nb; d-- > 0;) {
      const bool ok = b.kind == OUTPUT ? b.dims[d] == batch[d]
                                       : (b.dims[d] == batch[d] || b.dims[d] == 1);
      if (!ok)
        return name + " has shape " + shape_str(b.dims) + " whose batch dim " +
               std::to_string(d) + " is neither 1 nor the output's (output shape " +
               shape_str(out0) + ")";
      s[d] = b.dims[d] == 1 ? 0 : stride;  // a batch dim of 1 broadcasts
      stride *= b.dims[d];
    }
    strides.push_back(s);
    P.ptr[slot++] = b.data;
  }

  // Fewer batch dims for the kernel to decode: drop those of size 1 and merge neighbours that
  // every operand steps through contiguously (or broadcasts along both).
  std::vector<int64_t> shape;
  std::vector<std::vector<int64_t>> merged(strides.size());
  for (int64_t d = 0; d < nb; ++d) {
    if (batch[d] == 1) continue;
    bool merge = !shape.empty();
    for (size_t k = 0; merge && k < strides.size(); ++k)
      merge = merged[k].back() == strides[k][d] * batch[d];
    if (merge) {
      shape.back() *= batch[d];
      for (size_t k = 0; k < strides.size(); ++k) merged[k].back() = strides[k][d];
    } else {
      shape.push_back(batch[d]);
      for (size_t k = 0; k < strides.size(); ++k) merged[k].push_back(strides[k][d]);
    }
  }
  if (shape.size() > JK_CUDA_MAX_BATCH_DIMS)
    return "the call has " + std::to_string(shape.size()) +
           " batch dims that cannot be merged, more than the " +
           std::to_string(JK_CUDA_MAX_BATCH_DIMS) + " a kernel takes";
  int64_t n_batch = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    P.batch_shape[d] = shape[d];
    n_batch *= shape[d];
    for (size_t k = 0; k < merged.size(); ++k) P.stride[k][d] = merged[k][d];
  }
  P.n_dims = static_cast<int32_t>(shape.size());
  P.n_batch = n_batch;
  P.n_out = n_out;
  P.n_red = cfg.n_red;
  P.n_chunks = static_cast<int32_t>(cfg.n_chunks);
  P.chunk_len = split ? cfg.chunk_len : cfg.n_red;
  if (split && cfg.chunk_len * cfg.n_chunks < cfg.n_red)
    return "chunks of " + std::to_string(cfg.chunk_len) + " rows x " +
           std::to_string(cfg.n_chunks) + " do not cover n_red=" + std::to_string(cfg.n_red);

  if (n_out == 0 || n_batch == 0) return "";
  const int64_t row_blocks = (n_out + cfg.block - 1) / cfg.block;
  if (row_blocks > 0x7fffffff) return "too many output rows: " + std::to_string(n_out);
  const unsigned gy = static_cast<unsigned>(n_batch < cfg.max_grid_y ? n_batch : cfg.max_grid_y);
  const unsigned gx = static_cast<unsigned>(row_blocks), bx = static_cast<unsigned>(cfg.block);
  if (split) {
    launches.push_back({MAIN, {gx, gy, static_cast<unsigned>(cfg.n_chunks)}, bx,
                        static_cast<unsigned>(cfg.smem_bytes)});
    launches.push_back({COMBINE, {gx, gy, 1}, bx, 0});
  } else {
    launches.push_back({MAIN, {gx, gy, 1}, bx, static_cast<unsigned>(cfg.smem_bytes)});
  }
  return "";
}

}  // namespace launch
}  // namespace jk

#endif  // JAXKEOPS_CUDA_LAUNCH_H
