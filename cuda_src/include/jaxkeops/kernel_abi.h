// The C ABI between the prebuilt FFI handler and a generated kernel.
//
// A generated kernel includes no XLA header: it exports `jk_run` and `jk_abi_version` with C
// linkage, and the handler (cuda_src/jaxkeops_ext.cc) calls them once per task. Keeping the ABI
// this small is what lets a new formula compile in well under a second.
#ifndef JAXKEOPS_KERNEL_ABI_H
#define JAXKEOPS_KERNEL_ABI_H

#include <stdint.h>

#define JK_ABI_VERSION 3

#ifdef __cplusplus
extern "C" {
#endif

// One task: output rows [row_begin, row_end) of one batch element.
//
// Every argument is a row-major (rows, dim) block whose batch offset the handler has already
// applied: "outer" arguments have n_out rows (the index of the output), "inner" arguments have
// n_red rows (the reduced index), parameters have one row. Outputs are (n_out, width) blocks,
// also already offset to the batch element.
//
// Block-sparse reductions (n_ranges >= 0): output rows ranges[2k]:ranges[2k+1] (sorted, disjoint)
// reduce over the reduced-row intervals redranges[2q]:redranges[2q+1] for q in
// [slices[k-1], slices[k]) (from 0 when k = 0); rows in no range reduce over nothing. The handler
// has checked every bound. n_ranges = -1: every row reduces over [0, n_red).
typedef struct jk_task {
  const void* const* args;
  void* const* outs;
  int64_t n_out;
  int64_t n_red;
  int64_t row_begin;
  int64_t row_end;
  int64_t n_ranges;
  const int32_t* ranges;
  const int32_t* slices;
  const int32_t* redranges;
  // What the call asks (JK_RUN unless the handler pre-packs, below), and its buffer.
  int32_t mode;
  void* scratch;
} jk_task;

// Modes. The handler may have the inner variables of the whole reduced axis packed once per
// call instead of once per task (a task of 64 rows of 1,000 spent 5% of its time packing):
//   JK_RUN:        reduce rows [row_begin, row_end); scratch: NULL, or what JK_PACK wrote
//   JK_PACK_SIZE:  write into *(int64_t*)scratch the bytes JK_PACK needs (0: no packing)
//   JK_PACK:       pack the inner variables of every reduced row into scratch (64-byte aligned)
// Packing applies to calls without block-sparse ranges; a kernel that ignores the modes (a
// JK_PACK_SIZE call has no rows) is never asked to pack.
enum { JK_RUN = 0, JK_PACK_SIZE = 1, JK_PACK = 2 };

// Returns 0 on success, or a nonzero code (1: out of memory).
typedef int (*jk_run_fn)(const jk_task* task);
typedef int (*jk_abi_version_fn)(void);

#ifdef __cplusplus
}
#endif

#endif  // JAXKEOPS_KERNEL_ABI_H
