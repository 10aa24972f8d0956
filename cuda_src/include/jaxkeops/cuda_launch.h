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

enum Kind { OUTER = 0, INNER = 1, PARAM = 2, OUTPUT = 3, SCRATCH = 4 };
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

// Fills P and the launches from the call's buffers (inputs, outputs, then the scratch buffer
// when cfg.n_chunks > 1). Returns "" or a message naming the buffer that does not fit. No
// launch is listed when there is nothing to compute (an empty grid is an error on a GPU).
inline std::string pack(const std::vector<Buffer>& bufs, const Config& cfg, jk_cuda_params& P,
                        std::vector<Launch>& launches) {
  launches.clear();
  P = jk_cuda_params{};
  const int64_t nb = cfg.n_batch_dims;
  if (nb < 0 || cfg.n_red < 0 || cfg.block < 1 || cfg.block > 1024 || cfg.n_chunks < 1 ||
      cfg.n_chunks > 65535 || cfg.smem_bytes < 0 || cfg.smem_bytes > 48 * 1024 ||
      cfg.chunk_len < 0 || cfg.max_grid_y < 1)
    return "invalid launch attributes: n_batch=" + std::to_string(nb) +
           ", n_red=" + std::to_string(cfg.n_red) + ", block=" + std::to_string(cfg.block) +
           ", smem=" + std::to_string(cfg.smem_bytes) +
           ", n_chunks=" + std::to_string(cfg.n_chunks);
  if (bufs.size() > JK_CUDA_MAX_OPERANDS)
    return "the call has " + std::to_string(bufs.size()) + " buffers, more than the " +
           std::to_string(JK_CUDA_MAX_OPERANDS) + " a kernel takes";
  size_t n_inputs = 0, first_out = bufs.size();
  for (size_t i = 0; i < bufs.size(); ++i) {
    if (bufs[i].kind <= PARAM) n_inputs = i + 1;
    if (bufs[i].kind == OUTPUT && first_out == bufs.size()) first_out = i;
  }
  if (first_out == bufs.size()) return "the call has no outputs";
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
  for (size_t i = 0; i < bufs.size(); ++i) {
    const Buffer& b = bufs[i];
    const std::string name = name_of(b, i, n_inputs);
    if (b.kind == SCRATCH) {
      if (b.dims.size() != 1) return name + " must have rank 1, got " + shape_str(b.dims);
      P.ptr[i] = b.data;
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
    P.ptr[i] = b.data;
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
