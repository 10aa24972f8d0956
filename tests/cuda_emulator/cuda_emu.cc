// The CPU emulation of the CUDA execution model (see cuda_emu.h), and the entry point the
// Python harness calls: jk_emu_call packs the parameter block with the launcher's own code
// (jaxkeops/cuda_launch.h) and runs the listed launches block by block.
//
// Threads of a block are ucontext fibers run by one scheduler: each runs until it reaches a
// barrier or returns; when all have reached the barrier they are released together and the
// barrier epoch advances. Fibers run in a configurable order (forward, reverse, or a seeded
// shuffle per phase) so that a schedule that depends on thread order shows it. Shared memory
// starts each block filled with NaN bytes and has a shadow per byte (last writer and epoch, last
// reader and epoch), which turns a missing barrier into a reported race whatever the order.
#include "cuda_emu.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <string>
#include <vector>

#include "jaxkeops/cuda_kernel.h"
#include "jaxkeops/cuda_launch.h"

namespace jk_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
enum State { READY, AT_BARRIER, DONE };

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;
  jk_emu_dim3 tid;
  State state = READY;
};

struct Shadow {
  uint32_t write_epoch, read_epoch;  // 0: never in this block
  int32_t writer, reader;            // reader -2: several threads
};

struct Range {
  const char* begin;
  const char* end;
  bool readable, writable;
};

struct Emulator {
  jk_emu_dim3 grid, block, block_id;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  void (*kernel)(jk_cuda_params) = nullptr;
  const jk_cuda_params* params = nullptr;
  std::vector<unsigned char> smem;
  std::vector<Shadow> shadow;
  uint32_t epoch = 1;
  std::vector<Range> ranges;
  std::string error;

  // Records the first error and, from inside a thread, stops it before the faulty access
  // happens (an out-of-bounds write must not corrupt the test process): the fiber is never
  // resumed and the launch ends.
  void fail(const std::string& what) {
    if (error.empty()) {
      char where[160];
      snprintf(where, sizeof(where), " (block (%u, %u, %u), thread %u, barrier epoch %u)",
               block_id.x, block_id.y, block_id.z, current ? current->tid.x : 0u, epoch);
      error = what + where;
    }
    if (current) swapcontext(&current->ctx, &scheduler);
  }
};

Emulator* g_emu = nullptr;

void trampoline() {
  Emulator& e = *g_emu;
  e.kernel(*e.params);
  e.current->state = DONE;
  swapcontext(&e.current->ctx, &e.scheduler);
}

// A deterministic permutation of 0..n-1 for one phase of one block.
void order_threads(std::vector<int>& order, int mode, uint64_t seed) {
  const int n = (int)order.size();
  for (int i = 0; i < n; ++i) order[i] = mode == 1 ? n - 1 - i : i;
  if (mode != 2) return;
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int i = n - 1; i > 0; --i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    int j = (int)((s >> 33) % (uint64_t)(i + 1));
    int t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
}

void run_block(Emulator& e, int mode) {
  const unsigned n = e.block.x;
  std::fill(e.smem.begin(), e.smem.end(), 0xff);  // NaN in every float type
  std::fill(e.shadow.begin(), e.shadow.end(), Shadow{0, 0, -1, -1});
  e.epoch = 1;
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = e.fibers[t];
    f.tid = {t, 0, 0};
    f.state = READY;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &e.scheduler;
    makecontext(&f.ctx, trampoline, 0);
  }
  std::vector<int> order(n);
  for (uint64_t phase = 0;; ++phase) {
    order_threads(order, mode, phase * 7919 + e.block_id.x * 131 + e.block_id.y * 31 + e.block_id.z);
    for (int t : order) {
      Fiber& f = e.fibers[t];
      if (f.state == DONE) continue;
      f.state = READY;
      e.current = &f;
      swapcontext(&e.scheduler, &f.ctx);
      if (!e.error.empty()) {
        e.current = nullptr;
        return;
      }
    }
    e.current = nullptr;
    unsigned waiting = 0, done = 0;
    for (unsigned t = 0; t < n; ++t) {
      waiting += e.fibers[t].state == AT_BARRIER;
      done += e.fibers[t].state == DONE;
    }
    if (done == n) return;
    if (done > 0) {
      e.fail("barrier divergence: " + std::to_string(done) + " threads returned while " +
             std::to_string(waiting) + " wait at __syncthreads()");
      return;  // the waiting fibers are abandoned; their stacks are reused
    }
    ++e.epoch;  // every thread reached the barrier: release them together
  }
}

}  // namespace

const jk_emu_dim3& thread_idx() { return g_emu->current->tid; }
const jk_emu_dim3& block_idx() { return g_emu->block_id; }
const jk_emu_dim3& block_dim() { return g_emu->block; }
const jk_emu_dim3& grid_dim() { return g_emu->grid; }
unsigned char* dynamic_smem() { return g_emu->smem.data(); }

void sync_threads() {
  Emulator& e = *g_emu;
  Fiber* f = e.current;
  f->state = AT_BARRIER;
  swapcontext(&f->ctx, &e.scheduler);
}

void smem_access(const void* p, size_t bytes, bool write) {
  Emulator& e = *g_emu;
  if (bytes == 0) return;
  const unsigned char* c = (const unsigned char*)p;
  if (c < e.smem.data() || c + bytes > e.smem.data() + e.smem.size()) {
    e.fail("shared memory access out of bounds: bytes [" +
           std::to_string(c - e.smem.data()) + ", +" + std::to_string(bytes) + ") of " +
           std::to_string(e.smem.size()));
    return;
  }
  const int32_t tid = (int32_t)e.current->tid.x;
  const size_t base = (size_t)(c - e.smem.data());
  for (size_t i = base; i < base + bytes; ++i) {
    Shadow& s = e.shadow[i];
    const bool other_wrote = s.write_epoch == e.epoch && s.writer != tid;
    if (write) {
      if (other_wrote || (s.read_epoch == e.epoch && s.reader != tid)) {
        e.fail("data race on shared memory byte " + std::to_string(i) + ": written by thread " +
               std::to_string(tid) + " while thread " +
               std::to_string(other_wrote ? s.writer : s.reader) + " " +
               (other_wrote ? "wrote" : "read") + " it since the last barrier");
        return;
      }
      s.write_epoch = e.epoch;
      s.writer = tid;
    } else {
      if (s.write_epoch == 0) {
        e.fail("read of shared memory byte " + std::to_string(i) +
               " that no thread of this block wrote");
        return;
      }
      if (other_wrote) {
        e.fail("data race on shared memory byte " + std::to_string(i) + ": read by thread " +
               std::to_string(tid) + " while thread " + std::to_string(s.writer) +
               " wrote it since the last barrier");
        return;
      }
      if (s.read_epoch != e.epoch) {
        s.read_epoch = e.epoch;
        s.reader = tid;
      } else if (s.reader != tid) {
        s.reader = -2;
      }
    }
  }
}

void global_access(const void* p, size_t bytes, bool write) {
  Emulator& e = *g_emu;
  const char* c = (const char*)p;
  for (const Range& r : e.ranges) {
    if (c >= r.begin && c + bytes <= r.end) {
      if (write ? r.writable : r.readable) return;
      e.fail(std::string(write ? "write to an input" : "read of an output") + " buffer");
      return;
    }
  }
  char msg[96];
  snprintf(msg, sizeof(msg), "global memory access out of bounds (%zu bytes at %p)", bytes, p);
  e.fail(msg);
}

// A model of the GPU's ex2.approx.f32 (and of its .ftz form): the correctly rounded 2^x moved by
// 0, 1 or 2 ulp up or down, an amount picked deterministically from the bits of x. The PTX ISA
// documents a maximum error of 2 ulp, so the tests' tolerances are checked against errors as
// large as the instruction may make (2.5 ulp in all, with the rounding), not against an exact
// result that would hide a tolerance too tight for a GPU. Exact where CUDA documents it: 2^+-0 =
// 1, 2^inf = inf, 2^-inf = 0, NaN. The .ftz form flushes subnormal inputs (2^x = 1) and
// results (+0); without it, subnormal results are the correctly rounded ones.
float ex2_approx(float x, bool ftz) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  if (x != x) return x;
  if (x == 0.0f || (ftz && (bits & 0x7f800000u) == 0)) return 1.0f;
  const float r = (float)exp2((double)x);
  if (r == 0.0f || r == INFINITY) return r;
  if (r < FLT_MIN) return ftz ? 0.0f : r;
  uint32_t h = bits * 2654435761u;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  uint32_t moved;
  memcpy(&moved, &r, 4);
  moved += (uint32_t)((int32_t)(h % 5u) - 2);
  float out;
  memcpy(&out, &moved, 4);
  return out >= FLT_MIN && out < INFINITY ? out : r;
}

}  // namespace jk_emu

// The emulated 2^x of n floats (for the tests of the model itself).
extern "C" __attribute__((visibility("default"))) void jk_emu_ex2(const float* in, float* out,
                                                                  int64_t n, int ftz) {
  for (int64_t i = 0; i < n; ++i) out[i] = jk_emu::ex2_approx(in[i], ftz != 0);
}

// Runs one reduction call: buffers as the FFI handler sees them (inputs, outputs, then the
// scratch buffer of the split schedule), the lowering's launch attributes in `config`
// (n_batch_dims, n_red, block, smem_bytes, n_chunks, chunk_len, max_grid_y), and the kernels of
// the module. Returns 0, or 1 with a message in `err`.
extern "C" __attribute__((visibility("default"))) int jk_emu_call(
    void* main_kernel, void* combine, int n_bufs, const int64_t* dims, const int32_t* ranks,
    const int64_t* elem_bytes, const int32_t* kinds, void** data, const int64_t* config,
    int order, char* err, int err_len) {
  std::vector<jk::launch::Buffer> bufs;
  jk_emu::Emulator e;
  for (int i = 0, at = 0; i < n_bufs; at += ranks[i++]) {
    bufs.push_back({std::vector<int64_t>(dims + at, dims + at + ranks[i]), elem_bytes[i],
                    data[i], kinds[i]});
    int64_t bytes = elem_bytes[i];
    for (int d = 0; d < ranks[i]; ++d) bytes *= dims[at + d];
    const bool input = kinds[i] <= jk::launch::PARAM, scratch = kinds[i] == jk::launch::SCRATCH;
    e.ranges.push_back({(const char*)data[i], (const char*)data[i] + bytes, input || scratch,
                        !input});
  }
  jk::launch::Config cfg{config[0], config[1], config[2], config[3], config[4], config[5],
                         config[6]};
  jk_cuda_params P;
  std::vector<jk::launch::Launch> launches;
  std::string msg = jk::launch::pack(bufs, cfg, P, launches);
  if (msg.empty()) {
    e.params = &P;
    jk_emu::g_emu = &e;
    for (const jk::launch::Launch& l : launches) {
      void* fn = l.kernel == jk::launch::MAIN ? main_kernel : combine;
      e.kernel = (void (*)(jk_cuda_params))fn;
      e.grid = {l.grid[0], l.grid[1], l.grid[2]};
      e.block = {l.block, 1, 1};
      e.smem.assign(l.smem_bytes, 0);
      e.shadow.assign(l.smem_bytes, jk_emu::Shadow{});
      if (e.fibers.size() < l.block) e.fibers.resize(l.block);
      for (jk_emu::Fiber& f : e.fibers)
        if (!f.stack) f.stack = (char*)malloc(jk_emu::kStackBytes);
      for (unsigned z = 0; z < e.grid.z && e.error.empty(); ++z)
        for (unsigned y = 0; y < e.grid.y && e.error.empty(); ++y)
          for (unsigned x = 0; x < e.grid.x && e.error.empty(); ++x) {
            e.block_id = {x, y, z};
            jk_emu::run_block(e, order);
          }
      if (!e.error.empty()) break;
    }
    for (jk_emu::Fiber& f : e.fibers) free(f.stack);
    jk_emu::g_emu = nullptr;
    msg = e.error;
  }
  if (msg.empty()) return 0;
  snprintf(err, (size_t)err_len, "%s", msg.c_str());
  return 1;
}

// The storage conversions of float16/bfloat16 operands (the emulated, non-PTX path).
extern "C" __attribute__((visibility("default"))) void jk_emu_convert(
    int kind, int to_float, const void* in, void* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (to_float) {
      uint16_t h = ((const uint16_t*)in)[i];
      ((float*)out)[i] = kind == 0 ? jk::gpu::f16_to_float(h) : jk::gpu::bf16_to_float(h);
    } else {
      float f = ((const float*)in)[i];
      ((uint16_t*)out)[i] = kind == 0 ? jk::gpu::float_to_f16(f) : jk::gpu::float_to_bf16(f);
    }
  }
}
