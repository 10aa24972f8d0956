// CPU emulation of the CUDA execution model, for running generated CUDA kernels in the tests.
//
// Force-included (g++ -include cuda_emu.h) before a generated kernel source, which then
// compiles as plain C++: every block runs its threads as cooperative fibers, __syncthreads()
// is a real barrier (no thread passes it before every thread of the block reached it), and
// every shared and global memory access of the schedule goes through a checker that reports
// data races between barriers, reads of shared memory no thread wrote, out-of-bounds accesses
// and barrier divergence. The GPU's approximate 2^x (which formula bodies and reductions use
// for exp, see exp.h) is replaced by a model with the instruction's documented worst-case
// error. The implementation is cuda_emu.cc.
#ifndef JAXKEOPS_CUDA_EMU_H
#define JAXKEOPS_CUDA_EMU_H

#include <stddef.h>
#include <stdint.h>

#define JK_CUDA_EMULATION 1
#define __global__ __attribute__((visibility("default")))
#define __device__
#define __host__
#define __shared__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct jk_emu_dim3 {
  unsigned x, y, z;
};

namespace jk_emu {
const jk_emu_dim3& thread_idx();
const jk_emu_dim3& block_idx();
const jk_emu_dim3& block_dim();
const jk_emu_dim3& grid_dim();
void sync_threads();
unsigned char* dynamic_smem();
void smem_access(const void* p, size_t bytes, bool write);
void global_access(const void* p, size_t bytes, bool write);
float ex2_approx(float x, bool ftz);
}  // namespace jk_emu

#define threadIdx (jk_emu::thread_idx())
#define blockIdx (jk_emu::block_idx())
#define blockDim (jk_emu::block_dim())
#define gridDim (jk_emu::grid_dim())
#define __syncthreads() jk_emu::sync_threads()
#define JK_DYNAMIC_SMEM(name) unsigned char* name = jk_emu::dynamic_smem()
#define JK_SMEM_ACCESS(p, n, w) jk_emu::smem_access((p), (n), (w))
#define JK_GLOBAL_ACCESS(p, n, w) jk_emu::global_access((p), (n), (w))
// The GPU's 2^x instruction, ex2.approx.f32 (.ftz when ftz), as exp.h uses it.
#define JK_EMULATED_EX2(x, ftz) jk_emu::ex2_approx((x), (ftz))

#endif  // JAXKEOPS_CUDA_EMU_H
