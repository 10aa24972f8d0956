// Pool threads that stay between calls: the CPU handler (jaxkeops_ext.cc) offers each threaded
// call's work here, and XLA pool threads that just finished their part of a call spin a moment
// to join it.
#ifndef JAXKEOPS_CPU_THREADS_H
#define JAXKEOPS_CPU_THREADS_H

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>

#include <sched.h>

namespace jk_threads {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

using Clock = std::chrono::steady_clock;

// A call's work that any thread may join: Work() runs parts of it until none is left.
struct OfferedWork {
  virtual ~OfferedWork() = default;
  virtual void Work() = 0;
  uint64_t generation = 0;  // set by Lingerers::Offer before any helper starts
};

// Pool threads that finished their part of a call stay a moment (LingerLimit() at most) for
// the next call's rows, as OpenMP's threads do: a parked pool thread takes 30-300 us to wake
// on a virtual machine, as long as a whole call at M = N = 1e3, so without this the caller
// ran small calls alone (measured: CPU/wall 1.0-1.4 on 2 cores at M = N = 1e3).
class Lingerers {
 public:
  static Lingerers& Get() {
    static Lingerers* lingerers = new Lingerers();  // leaked: pool threads may outlive exit
    return *lingerers;
  }

  // Makes `work` the call that lingering threads join; returns how many are lingering.
  int Offer(const std::shared_ptr<OfferedWork>& work) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      latest_ = work;
      work->generation = generation_.fetch_add(1, std::memory_order_seq_cst) + 1;
    }
    return lingering_.load(std::memory_order_seq_cst);
  }

  void Withdraw(const std::shared_ptr<OfferedWork>& work) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (latest_ == work) latest_.reset();
  }

  // Spins on this pool thread, working on every call offered after the one it helped (seen:
  // that call's generation), until no call came for `linger`.
  void Linger(uint64_t seen, Clock::duration linger) {
    lingering_.fetch_add(1, std::memory_order_seq_cst);
    auto give_up = Clock::now() + linger;
    for (int spins = 0;; ++spins) {
      if (generation_.load(std::memory_order_seq_cst) != seen) {
        lingering_.fetch_sub(1, std::memory_order_seq_cst);
        seen = Join();
        lingering_.fetch_add(1, std::memory_order_seq_cst);
        give_up = Clock::now() + linger;
      }
      CpuRelax();
      // Hands the core to any thread that is ready to run on it (the thread carrying the next
      // call, another process's) instead of spinning through its time slice; with no such
      // thread it returns at once. Measured on 2 cores: the Gaussian sum at M = N = 1e3,
      // 0.78 against 0.73 of the reference (median of 9 runs); two processes each calling it
      // at 3e3, 4.1-4.6 ms a call against 4.6-6.5 ms spinning and 4.3-5.1 ms not lingering.
      if (spins % 8 == 7) sched_yield();
      if (spins % 64 == 63 && Clock::now() > give_up) break;
    }
    lingering_.fetch_sub(1, std::memory_order_seq_cst);
    // A call offered after its caller counted this thread as lingering: help it (the caller
    // either saw the count drop, or its offer is visible here).
    if (generation_.load(std::memory_order_seq_cst) != seen) Join();
  }

 private:
  // Works on the latest offer; returns the generation it saw.
  uint64_t Join() {
    std::shared_ptr<OfferedWork> work;
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      seen = generation_.load(std::memory_order_seq_cst);
      work = latest_;
    }
    if (work) work->Work();
    return seen;
  }

  std::mutex mutex_;
  std::shared_ptr<OfferedWork> latest_;  // guarded by mutex_
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> lingering_{0};
};

// The longest a pool thread lingers after a call (it also never lingers longer than the call
// took).
constexpr std::chrono::microseconds kDefaultLinger{250};

// JAXKEOPS_CPU_LINGER_US (read once per process) overrides kDefaultLinger: 0 parks pool
// threads right after each call, for processes that share their cores with others.
std::chrono::microseconds LingerLimit() {
  static const std::chrono::microseconds limit = [] {
    const char* text = std::getenv("JAXKEOPS_CPU_LINGER_US");
    if (text == nullptr || *text == '\0') return kDefaultLinger;
    char* end = nullptr;
    const long long us = std::strtoll(text, &end, 10);
    if (*end != '\0' || us < 0) return kDefaultLinger;
    return std::chrono::microseconds(std::min<long long>(us, 100000));
  }();
  return limit;
}

}  // namespace jk_threads

#endif  // JAXKEOPS_CPU_THREADS_H
