// jaxkeops._ext: the prebuilt half of every CPU reduction.
//
// Generated kernels are small shared libraries that implement the C ABI of
// jaxkeops/kernel_abi.h and include no XLA header, so they compile in well under a second. This
// module dlopens them into a process-wide registry and provides the one XLA FFI handler
// ("jaxkeops_cpu") that validates shapes, applies batch offsets (with stride-0 broadcasting) and
// spreads the rows over XLA's intra-op thread pool.
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "cpu_threads.h"
#include "python_errors.h"

#include "jaxkeops/kernel_abi.h"
#include "xla/ffi/api/ffi.h"

namespace nb = nanobind;
namespace ffi = xla::ffi;
using jk_threads::Clock;
using jk_threads::CpuRelax;
using jk_threads::LingerLimit;
using jk_threads::Lingerers;

namespace {

// ---------------------------------------------------------------------------------------------
// Kernel registry
// ---------------------------------------------------------------------------------------------

struct Registry {
  std::shared_mutex mutex;
  std::unordered_map<uint64_t, jk_run_fn> kernels;
};

// Leaked on purpose: XLA worker threads may still run a handler while the interpreter shuts
// down, after static destructors would have freed a plain global.
Registry& GetRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

std::string HexId(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, id);
  return buf;
}

jk_run_fn FindKernel(uint64_t id) {
  Registry& r = GetRegistry();
  std::shared_lock<std::shared_mutex> lock(r.mutex);
  auto it = r.kernels.find(id);
  return it == r.kernels.end() ? nullptr : it->second;
}

void RegisterKernel(uint64_t id, const std::string& path) {
  if (FindKernel(id) != nullptr) return;  // same id = same content hash: nothing new to load

  std::string error;
  jk_run_fn run = nullptr;
  {
    // dlopen runs the library's static initialisers and may take a while: let Python run.
    nb::gil_scoped_release release;
    // Handles are never dlclose'd: a compiled XLA executable may call the kernel at any time.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* msg = dlerror();
      error = "jaxkeops: cannot load kernel library '" + path + "': " + (msg ? msg : "unknown");
    } else {
      dlerror();
      run = reinterpret_cast<jk_run_fn>(dlsym(handle, "jk_run"));
      auto version = reinterpret_cast<jk_abi_version_fn>(dlsym(handle, "jk_abi_version"));
      if (run == nullptr || version == nullptr) {
        const char* msg = dlerror();
        error = "jaxkeops: kernel library '" + path + "' does not export jk_run/jk_abi_version: " +
                (msg ? msg : "symbol is null");
      } else if (int v = version(); v != JK_ABI_VERSION) {
        error = "jaxkeops: kernel library '" + path + "' has ABI version " + std::to_string(v) +
                ", this extension expects " + std::to_string(JK_ABI_VERSION) +
                " (stale kernel cache?)";
      }
    }
  }
  if (!error.empty()) throw std::runtime_error(error);

  Registry& r = GetRegistry();
  std::unique_lock<std::shared_mutex> lock(r.mutex);
  r.kernels.emplace(id, run);  // a concurrent registration of the same id wins; both are equal
}

// ---------------------------------------------------------------------------------------------
// Kernels missing from the registry: a computation deserialized by jax.export in a process that
// never lowered it. The call carries the kernel's source; Python (jaxkeops._lowering) builds or
// finds it in the disk cache and registers it under the call's id.
// ---------------------------------------------------------------------------------------------

// Leaked, like the registry: it must outlive any handler still running at interpreter exit.
nb::object& Resolver() {
  static nb::object* resolver = new nb::object();
  return *resolver;
}

void SetResolver(nb::object fn) { Resolver() = std::move(fn); }

// Returns "" once `id` is registered, else why it could not be.
std::string ResolveKernel(uint64_t id, std::string_view source) {
  if (FindKernel(id) != nullptr) return "";
  if (source.empty())
    return "kernel " + HexId(id) + " is not loaded in this process and the call carries no "
           "source to build it from";
  if (!Py_IsInitialized()) return "kernel " + HexId(id) + " is not loaded (Python has exited)";
  // The caller of an XLA computation releases the GIL while it runs (as for jax.pure_callback).
  nb::gil_scoped_acquire gil;
  nb::object resolver = Resolver();
  if (!resolver.is_valid())
    return "kernel " + HexId(id) + " is not loaded and no resolver is set (import jaxkeops)";
  try {
    resolver(static_cast<int64_t>(id), nb::str(source.data(), source.size()));
  } catch (nb::python_error& error) {
    return "kernel " + HexId(id) + " of an exported computation could not be built: " +
           jk_python::DescribePythonError(error);
  }
  if (FindKernel(id) == nullptr) return "the resolver did not register kernel " + HexId(id);
  return "";
}

// ---------------------------------------------------------------------------------------------
// Shape validation
// ---------------------------------------------------------------------------------------------

enum Role : int64_t { kOuter = 0, kInner = 1, kParam = 2 };

std::string ShapeStr(ffi::Span<const int64_t> dims) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < dims.size(); ++i) s << (i ? ", " : "") << dims[i];
  s << (dims.size() == 1 ? ",)" : ")");
  return s.str();
}

ffi::Error Invalid(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jaxkeops: " + msg);
}

// Everything a task needs, shared by the caller and the pool tasks until the last one is done.
struct Launch {
  jk_run_fn run = nullptr;
  uint64_t kernel_id = 0;
  int64_t n_out = 0;
  int64_t n_red = 0;
  std::vector<int64_t> batch_shape;  // the outputs' leading dims
  size_t n_args = 0;                 // bases/strides hold the inputs first, then the outputs
  std::vector<char*> bases;
  std::vector<int64_t> strides;  // bytes per batch index, [operand * n_batch + dim]; 0 = broadcast
  // Block-sparse ranges (shared by every batch element), or n_ranges = -1.
  int64_t n_ranges = -1;
  const int32_t* ranges = nullptr;
  const int32_t* slices = nullptr;
  const int32_t* redranges = nullptr;
  // The inner variables packed once for the whole call (PackOnce), or null.
  std::shared_ptr<void> packed;

  int64_t batch_count() const {
    int64_t n = 1;
    for (int64_t d : batch_shape) n *= d;
    return n;
  }

  // Has the kernel pack the inner variables of the whole reduced axis once, for every task
  // of this call to read, when that is worth it: a single batch element (their inner
  // variables may differ), no ranges, and at most kMaxPackedBytes. Kernels that do not
  // pre-pack (or an allocation that fails) leave each task packing its own tiles.
  ffi::Error PackOnce(int64_t max_bytes) {
    if (n_ranges >= 0 || batch_count() != 1) return ffi::Error::Success();
    std::vector<void*> ptrs(bases.begin(), bases.end());
    int64_t bytes = 0;
    jk_task query{ptrs.data(), ptrs.data() + n_args, n_out, n_red, 0, 0,
                  -1, nullptr, nullptr, nullptr, JK_PACK_SIZE, &bytes};
    if (run(&query) != 0 || bytes <= 0 || bytes > max_bytes) return ffi::Error::Success();
    void* buffer = aligned_alloc(64, (static_cast<size_t>(bytes) + 63) / 64 * 64);
    if (buffer == nullptr) return ffi::Error::Success();
    std::shared_ptr<void> owned(buffer, free);
    jk_task pack{ptrs.data(), ptrs.data() + n_args, n_out, n_red, 0, 0,
                 -1, nullptr, nullptr, nullptr, JK_PACK, buffer};
    if (int rc = run(&pack); rc != 0)
      return ffi::Error::Internal("jaxkeops: kernel " + HexId(kernel_id) +
                                  " failed to pack its inputs with code " + std::to_string(rc));
    packed = std::move(owned);
    return ffi::Error::Success();
  }

  // Runs the flattened (batch, output row) range [begin, end).
  ffi::Error RunRange(int64_t begin, int64_t end) const {
    const size_t n_ops = bases.size(), nb_dims = batch_shape.size();
    // On the stack for the usual few operands: a call runs this once per chunk, on every thread.
    void* local[16];
    std::vector<void*> heap(n_ops > 16 ? n_ops : 0);
    void** ptrs = n_ops > 16 ? heap.data() : local;
    jk_task task{ptrs, ptrs + n_args, n_out, n_red, 0, 0,
                 n_ranges, ranges, slices, redranges, JK_RUN, packed.get()};
    while (begin < end) {
      task.row_begin = begin % n_out;
      task.row_end = std::min(n_out, task.row_begin + (end - begin));
      for (size_t k = 0; k < n_ops; ++k) ptrs[k] = bases[k];
      int64_t rest = begin / n_out;
      for (size_t d = nb_dims; d-- > 0;) {
        int64_t idx = rest % batch_shape[d];
        rest /= batch_shape[d];
        for (size_t k = 0; k < n_ops; ++k)
          ptrs[k] = static_cast<char*>(ptrs[k]) + idx * strides[k * nb_dims + d];
      }
      if (int rc = run(&task); rc != 0) {
        if (rc == 1)
          return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                            "jaxkeops: out of memory in kernel " + HexId(kernel_id));
        return ffi::Error::Internal("jaxkeops: kernel " + HexId(kernel_id) +
                                    " failed with code " + std::to_string(rc));
      }
      begin += task.row_end - task.row_begin;
    }
    return ffi::Error::Success();
  }
};

// Deals the rows of a launch out to the threads that ask, chunk by chunk. The call's future
// completes when the last chunk is done, whichever thread ran it.
struct Dealer : jk_threads::OfferedWork {
  Dealer(Launch launch, int64_t units, int64_t chunk)
      : launch(std::move(launch)),
        units(units),
        chunk(chunk),
        chunks((units + chunk - 1) / chunk),
        done(chunks) {}
  const Launch launch;
  const int64_t units, chunk, chunks;
  ffi::CountDownPromise done;  // one count per chunk
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};
  std::atomic<bool> failed{false};

  bool Finished() const { return finished.load(std::memory_order_acquire) == chunks; }

  // Runs chunks until none is left. Every chunk is counted down exactly once, also the ones
  // skipped after a failure, so that the future always completes.
  void Work() override {
    for (;;) {
      const int64_t lo = next.fetch_add(chunk, std::memory_order_relaxed);
      if (lo >= units) return;
      ffi::Error err = ffi::Error::Success();
      if (!failed.load(std::memory_order_relaxed)) {
        err = launch.RunRange(lo, std::min(units, lo + chunk));
        if (!err.success()) failed.store(true, std::memory_order_relaxed);
      }
      // Counted down before it counts as finished: a caller that sees every chunk finished
      // then returns a future that is already complete.
      done.CountDown(err);
      finished.fetch_add(1, std::memory_order_acq_rel);
    }
  }
};

// Fills `launch` from the call's buffers, or explains which buffer does not fit.
// Checks the block-sparse ranges (the last 3 inputs) against n_out and n_red: a bad bound would
// make the kernel read outside its buffers.
ffi::Error PrepareRanges(const ffi::RemainingArgs& args, size_t first, Launch& launch) {
  const char* names[3] = {"ranges", "slices", "redranges"};
  const size_t ranks[3] = {2, 1, 2};
  const int32_t* data[3];
  int64_t lengths[3];
  for (size_t k = 0; k < 3; ++k) {
    auto buf = args.get<ffi::AnyBuffer>(first + k);
    if (buf.has_error()) return buf.error();
    auto dims = buf->dimensions();
    if (buf->element_type() != ffi::DataType::S32 || dims.size() != ranks[k] ||
        (ranks[k] == 2 && dims[1] != 2))
      return Invalid(std::string(names[k]) + " must be int32 of shape " +
                     (ranks[k] == 2 ? "(n, 2)" : "(n,)") + ", got shape " + ShapeStr(dims));
    data[k] = static_cast<const int32_t*>(buf->untyped_data());
    lengths[k] = dims[0];
  }
  if (lengths[1] != lengths[0])
    return Invalid("slices has " + std::to_string(lengths[1]) + " entries but ranges has " +
                   std::to_string(lengths[0]) + " rows");
  const int32_t *ranges = data[0], *slices = data[1], *red = data[2];
  int64_t previous_end = 0, previous_slice = 0;
  for (int64_t k = 0; k < lengths[0]; ++k) {
    const int64_t a = ranges[2 * k], b = ranges[2 * k + 1];
    if (a < previous_end || b < a || b > launch.n_out)
      return Invalid("ranges row " + std::to_string(k) + " is [" + std::to_string(a) + ", " +
                     std::to_string(b) + "): row ranges must be sorted, disjoint and within [0, " +
                     std::to_string(launch.n_out) + "]");
    if (slices[k] < previous_slice || slices[k] > lengths[2])
      return Invalid("slices[" + std::to_string(k) + "] = " + std::to_string(slices[k]) +
                     ": slices must be non-decreasing ends into redranges (" +
                     std::to_string(lengths[2]) + " rows)");
    previous_end = b;
    previous_slice = slices[k];
  }
  // The kernel reads the intervals up to the last slice only: capacity past it is not checked.
  for (int64_t q = 0; q < previous_slice; ++q) {
    const int64_t a = red[2 * q], b = red[2 * q + 1];
    if (a < 0 || b < a || b > launch.n_red)
      return Invalid("redranges row " + std::to_string(q) + " is [" + std::to_string(a) + ", " +
                     std::to_string(b) + "), not within [0, " + std::to_string(launch.n_red) +
                     "]");
  }
  launch.n_ranges = lengths[0];
  launch.ranges = ranges;
  launch.slices = slices;
  launch.redranges = red;
  return ffi::Error::Success();
}

ffi::Error Prepare(ffi::Span<const int64_t> roles, int64_t n_batch, int64_t n_red, bool ranged,
                   const ffi::RemainingArgs& args, const ffi::RemainingRets& rets, Launch& launch) {
  if (n_batch < 0 || n_red < 0)
    return Invalid("n_batch and n_red must be >= 0, got n_batch=" + std::to_string(n_batch) +
                   ", n_red=" + std::to_string(n_red));
  if (ranged && args.size() < 3) return Invalid("a block-sparse call needs its 3 range inputs");
  const size_t n_kernel_args = args.size() - (ranged ? 3 : 0);
  if (roles.size() != n_kernel_args)
    return Invalid("got " + std::to_string(n_kernel_args) + " kernel inputs but " +
                   std::to_string(roles.size()) + " roles");
  if (rets.size() == 0) return Invalid("the call has no outputs");
  const size_t rank = static_cast<size_t>(n_batch) + 2;

  std::vector<ffi::AnyBuffer> bufs;
  for (size_t i = 0; i < n_kernel_args; ++i) {
    auto buf = args.get<ffi::AnyBuffer>(i);
    if (buf.has_error()) return buf.error();
    bufs.push_back(*buf);
  }
  for (size_t i = 0; i < rets.size(); ++i) {
    auto buf = rets.get<ffi::AnyBuffer>(i);
    if (buf.has_error()) return buf.error();
    bufs.push_back(**buf);
  }

  auto out0 = bufs[n_kernel_args].dimensions();
  if (out0.size() != rank)
    return Invalid("output 0 has shape " + ShapeStr(out0) + ", expected rank " +
                   std::to_string(rank) + " (n_batch=" + std::to_string(n_batch) +
                   " batch dims, rows, width)");
  launch.batch_shape.assign(out0.begin(), out0.begin() + n_batch);
  launch.n_out = out0[n_batch];
  launch.n_red = n_red;
  launch.n_args = n_kernel_args;

  for (size_t k = 0; k < bufs.size(); ++k) {
    const bool is_out = k >= n_kernel_args;
    const size_t i = is_out ? k - n_kernel_args : k;
    const std::string name = (is_out ? "output " : "input ") + std::to_string(i);
    auto dims = bufs[k].dimensions();
    if (dims.size() != rank)
      return Invalid(name + " has shape " + ShapeStr(dims) + ", expected rank " +
                     std::to_string(rank) + " (n_batch=" + std::to_string(n_batch) +
                     " batch dims, rows, dim)");
    int64_t rows;
    if (is_out) {
      rows = launch.n_out;
    } else if (roles[i] == kOuter) {
      rows = launch.n_out;
    } else if (roles[i] == kInner) {
      rows = n_red;
    } else if (roles[i] == kParam) {
      rows = 1;
    } else {
      return Invalid(name + " has unknown role " + std::to_string(roles[i]) +
                     " (0 = outer, 1 = inner, 2 = parameter)");
    }
    if (dims[n_batch] != rows)
      return Invalid(name + " has shape " + ShapeStr(dims) + " but " + std::to_string(rows) +
                     " rows were expected (output shape " + ShapeStr(out0) +
                     ", n_red=" + std::to_string(n_red) + ")");
    // Strides in bytes, from the buffer's own dims: an input's batch dim of 1 is read with
    // stride 0, which is how vmap's expand_dims and pykeops-style broadcasting reach us.
    int64_t stride = static_cast<int64_t>(ffi::ByteWidth(bufs[k].element_type())) *
                     dims[n_batch] * dims[n_batch + 1];
    std::vector<int64_t> s(n_batch);
    for (int64_t d = n_batch; d-- > 0;) {
      const bool ok = is_out ? dims[d] == out0[d] : (dims[d] == out0[d] || dims[d] == 1);
      if (!ok)
        return Invalid(name + " has shape " + ShapeStr(dims) + " whose batch dim " +
                       std::to_string(d) + " is neither 1 nor the output's (output shape " +
                       ShapeStr(out0) + ")");
      s[d] = dims[d] == 1 ? 0 : stride;
      stride *= dims[d];
    }
    launch.strides.insert(launch.strides.end(), s.begin(), s.end());
    launch.bases.push_back(static_cast<char*>(bufs[k].untyped_data()));
  }
  if (ranged) return PrepareRanges(args, n_kernel_args, launch);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// FFI handler
// ---------------------------------------------------------------------------------------------

// Below this many (i, j) pairs, waking pool threads costs more than it saves (measured with a
// ~1 ns/pair kernel on 2 cores: no gain at 2^16 pairs, 1.3x at 2^18, 1.97x at 2^23).
constexpr int64_t kInlineWork = int64_t{1} << 18;
// Each part handed to a thread should carry at least this many pairs, so that machines with many
// cores do not fan a medium problem out into slivers.
constexpr int64_t kMinPartWork = int64_t{1} << 16;
// Rows are dealt out in about this many chunks per thread, of at least this many rows.
constexpr int64_t kChunksPerPart = 16;
constexpr int64_t kMinChunkRows = 64;
// With the inner variables packed once per call, chunks cost no packing: smaller ones leave
// less of a tail where one thread waits for the other's last chunk.
constexpr int64_t kMinChunkRowsPacked = 32;
constexpr int64_t kMaxPackedBytes = int64_t{16} << 20;

// How long the caller waits for the last chunks of its call.
constexpr std::chrono::microseconds kHelperWait{2000};

ffi::Future ReadyFuture(ffi::Error error) {
  ffi::Promise promise;
  ffi::Future future(promise);
  if (error.success()) {
    promise.SetAvailable();
  } else {
    promise.SetError(std::move(error));
  }
  return future;
}

ffi::Future Execute(ffi::ThreadPool pool, int64_t kernel_id, std::string_view source,
                    ffi::Span<const int64_t> roles, int64_t n_batch, int64_t n_red,
                    int64_t ranged, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  auto launch = std::make_shared<Launch>();
  launch->kernel_id = static_cast<uint64_t>(kernel_id);
  launch->run = FindKernel(launch->kernel_id);
  if (launch->run == nullptr) {
    if (std::string msg = ResolveKernel(launch->kernel_id, source); !msg.empty())
      return ReadyFuture(ffi::Error(ffi::ErrorCode::kFailedPrecondition, "jaxkeops: " + msg));
    launch->run = FindKernel(launch->kernel_id);
  }
  if (ffi::Error err = Prepare(roles, n_batch, n_red, ranged != 0, args, rets, *launch);
      !err.success())
    return ReadyFuture(std::move(err));

  // Parallelism is over output rows only (the reduction is not split), with batch elements
  // flattened into rows so one large batch element and many small ones both spread evenly.
  const int64_t units = launch->batch_count() * launch->n_out;
  if (units == 0) return ReadyFuture(ffi::Error::Success());
  const int64_t work = units * std::max<int64_t>(n_red, 1);
  int64_t parts = 1;
  if (work >= kInlineWork)
    parts = std::min({pool.num_threads(), units, std::max<int64_t>(work / kMinPartWork, 1)});
  if (parts <= 1) return ReadyFuture(launch->RunRange(0, units));

  // The rows are dealt out in chunks from a shared counter, so that a thread that starts late
  // or is slowed down by other work on its core takes fewer of them (a static split would make
  // everyone wait for it). Chunks keep at least kMinChunkRows rows where each call of the
  // kernel packs the reduced variables again (a few dozen rows amortise that), and
  // kMinChunkRowsPacked where PackOnce packed them for the whole call.
  if (ffi::Error err = launch->PackOnce(kMaxPackedBytes); !err.success())
    return ReadyFuture(std::move(err));
  // A chunk never needs more rows than a batch element has: each element packs its own inner
  // variables, so whole elements amortise their packing (a call split over its reduced axis
  // has a few rows per element, and its elements are then dealt out one by one).
  const int64_t min_rows =
      std::min(launch->packed ? kMinChunkRowsPacked : kMinChunkRows, launch->n_out);
  const int64_t per_part = (units + parts - 1) / parts;
  const int64_t chunk = std::min(per_part, std::max((units + parts * kChunksPerPart - 1) /
                                                        (parts * kChunksPerPart),
                                                    min_rows));
  const auto started = Clock::now();
  auto dealer = std::make_shared<Dealer>(std::move(*launch), units, chunk);
  ffi::Future future(dealer->done);
  Lingerers& lingerers = Lingerers::Get();
  const int64_t waiting = lingerers.Offer(dealer);
  for (int64_t p = 1 + std::min<int64_t>(waiting, parts - 1); p < parts; ++p)
    pool.Schedule([dealer, started]() {
      dealer->Work();
      const auto linger = std::min<Clock::duration>(LingerLimit(), Clock::now() - started);
      if (linger.count() > 0) Lingerers::Get().Linger(dealer->generation, linger);
    });
  dealer->Work();
  // Threads still on a chunk are at most one chunk from done: waiting for them here returns a
  // future that is already complete, so XLA goes on in this thread instead of being resumed
  // from the pool (measured at M = N = 1e3, 2 cores: 276 -> 231 us a call). After kHelperWait
  // (a preempted thread) the future completes from the thread that runs the last chunk.
  const auto give_up = Clock::now() + kHelperWait;
  for (int spins = 0; !dealer->Finished(); ++spins) {
    CpuRelax();
    if (spins % 256 == 255 && Clock::now() > give_up) break;
  }
  lingerers.Withdraw(dealer);
  return future;
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxkeopsCpu, Execute,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Attr<int64_t>("kernel_id")
                                  .Attr<std::string_view>("source")
                                  .Attr<ffi::Span<const int64_t>>("roles")
                                  .Attr<int64_t>("n_batch")
                                  .Attr<int64_t>("n_red")
                                  .Attr<int64_t>("ranged")
                                  .RemainingArgs()
                                  .RemainingRets());

// ---------------------------------------------------------------------------------------------
// Python module
// ---------------------------------------------------------------------------------------------

NB_MODULE(_ext, m) {
  using namespace nb::literals;
  m.doc() = "jaxkeops native extension: kernel registry and the generic XLA CPU FFI handler.";

  // Ids are 64-bit hashes; the FFI attribute is an int64, so accept either signedness.
  m.def("register_kernel", &RegisterKernel, "kernel_id"_a, "path"_a,
        "dlopen a generated kernel library and register it under kernel_id (a no-op if the id "
        "is already registered). Raises RuntimeError if it cannot be loaded.");
  m.def(
      "register_kernel",
      [](int64_t id, const std::string& path) { RegisterKernel(static_cast<uint64_t>(id), path); },
      "kernel_id"_a, "path"_a);
  m.def(
      "is_registered", [](uint64_t id) { return FindKernel(id) != nullptr; }, "kernel_id"_a);
  m.def(
      "is_registered",
      [](int64_t id) { return FindKernel(static_cast<uint64_t>(id)) != nullptr; }, "kernel_id"_a);
  m.def("registered_count", []() {
    Registry& r = GetRegistry();
    std::shared_lock<std::shared_mutex> lock(r.mutex);
    return r.kernels.size();
  });
  m.def("abi_version", []() { return JK_ABI_VERSION; });
  m.def("set_resolver", &SetResolver, "resolver"_a,
        "Sets resolver(kernel_id, source): called (with the GIL) when a call names a kernel that "
        "is not registered, as in a jax.export artifact run by a new process; it must build the "
        "source and register it under kernel_id.");
  m.def(
      "cpu_handler", []() { return nb::capsule(reinterpret_cast<void*>(JaxkeopsCpu)); },
      "PyCapsule of the XLA FFI handler, for jax.ffi.register_ffi_target(..., platform='cpu').");
}
