// The ABI between the prebuilt CUDA launcher (cuda_src/jaxkeops_cuda.cc) and a generated CUDA
// kernel: one parameter block passed by value to every kernel of a module.
//
// It holds no CUDA type, so the launcher builds without a CUDA toolkit and the CPU emulation of
// the tests packs the very same struct. A kernel module exports, with C linkage,
//   jk_main<SUFFIX>(jk_cuda_params)     one thread per output row over chunk blockIdx.z of the
//                                       reduced axis: with one chunk (rows schedule) it writes
//                                       the outputs, else partial results to the scratch buffer
//   jk_combine<SUFFIX>(jk_cuda_params)  folds the chunks' partial results, in chunk order
// where SUFFIX is JK_CUDA_KERNEL_SUFFIX: a stale cached module then fails by name at load time
// instead of misreading this struct.
//
// Block-sparse reductions (KeOps's ranges, n_ranges >= 0): output rows ranges[2k]:ranges[2k+1]
// reduce over the reduced-row intervals redranges[2q]:redranges[2q+1] for q in
// [slices[k-1], slices[k]) (from 0 when k = 0); rows in no range reduce over nothing. The three
// arrays are int32 in device memory, shared by every batch element. Their values are NOT
// checked on the host (that would need a device-to-host copy and a sync): the kernels clamp
// every bound they read, so a bad tuple gives unspecified results but never an access outside
// a buffer. n_ranges = -1: every row reduces over [0, n_red).
#ifndef JAXKEOPS_CUDA_ABI_H
#define JAXKEOPS_CUDA_ABI_H

#include <stdint.h>

#define JK_CUDA_ABI_VERSION 2  // 2: block-sparse ranges
#define JK_CUDA_KERNEL_SUFFIX _v2
// Kernel parameters must fit in 4 KiB on every architecture: this block takes 2.8 KiB.
#define JK_CUDA_MAX_OPERANDS 48
#define JK_CUDA_MAX_BATCH_DIMS 6

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jk_cuda_params {
  // Inputs in kernel argument order, then outputs, then the scratch buffer of the split
  // schedule (not batch-strided: the kernels index it themselves).
  void* ptr[JK_CUDA_MAX_OPERANDS];
  // Bytes to advance per unit of each batch index; 0 broadcasts (a batch dim of size 1).
  int64_t stride[JK_CUDA_MAX_OPERANDS][JK_CUDA_MAX_BATCH_DIMS];
  int64_t batch_shape[JK_CUDA_MAX_BATCH_DIMS];
  int64_t n_batch;    // product of batch_shape
  int64_t n_out;      // output rows per batch element
  int64_t n_red;      // reduced rows
  int64_t chunk_len;  // reduced rows per chunk (split schedule), else n_red
  int32_t n_dims;     // batch dims in use
  int32_t n_chunks;   // 1 for the row schedule
  // Block-sparse ranges (see above), or n_ranges = -1 and null pointers.
  const int32_t* ranges;     // (n_ranges, 2)
  const int32_t* slices;     // (n_ranges,)
  const int32_t* redranges;  // (n_redranges, 2)
  int64_t n_ranges;
  int64_t n_redranges;
} jk_cuda_params;

#ifdef __cplusplus
}
static_assert(sizeof(jk_cuda_params) <= 4096, "kernel parameters are limited to 4 KiB");
#endif

#endif  // JAXKEOPS_CUDA_ABI_H
