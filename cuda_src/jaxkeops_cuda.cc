// jaxkeops._ext_cuda: the prebuilt half of every GPU reduction.
//
// One generic XLA FFI handler ("jaxkeops_cuda", platform CUDA) launches generated kernels on the
// stream XLA passes in. Kernels arrive as cubin/PTX images registered from Python by kernel id
// and target ("sm_80", "compute_90"); each is loaded once per CUDA context, on first use, and
// never unloaded. The handler reaches the driver API through dlopen("libcuda.so.1") with its own
// minimal declarations, so this module builds without a CUDA toolkit and imports on machines
// without a GPU. A call validates and packs the parameter block (cuda_launch.h, the code the CPU
// emulation of the tests runs too) and enqueues one or two cuLaunchKernel: no host
// synchronisation, no allocation on the device (the split schedule's scratch is an XLA output),
// so the handler can be captured into command buffers (CUDA graphs).
//
// A block-sparse call (attribute ranged=1) has 3 more inputs after the kernel's, the int32
// ranges, slices and redranges of its reduced axis. Their shapes are checked here; their values
// are on the device and reading them would need a copy and a sync, so they are not checked:
// the kernel clamps every bound it reads (cuda_kernel.h), so bad values give unspecified
// results but never an access outside a buffer. (The CPU handler, which can read them, reports
// a bad tuple as an error.)
#include <dlfcn.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "python_errors.h"

#include "jaxkeops/cuda_abi.h"
#include "jaxkeops/cuda_launch.h"
#include "xla/ffi/api/ffi.h"

namespace nb = nanobind;
namespace ffi = xla::ffi;

namespace {

// ---------------------------------------------------------------------------------------------
// The few driver API types and entry points used (stable C ABI since CUDA 4; the _v2 names are
// the ones cuda.h maps to).
// ---------------------------------------------------------------------------------------------

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef struct CUstream_st* CUstream;
constexpr int kComputeCapabilityMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kComputeCapabilityMinor = 76;

struct Driver {
  CUresult (*Init)(unsigned) = nullptr;
  CUresult (*GetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*StreamGetCtx)(CUstream, CUcontext*) = nullptr;
  CUresult (*CtxGetCurrent)(CUcontext*) = nullptr;
  CUresult (*CtxPushCurrent)(CUcontext) = nullptr;
  CUresult (*CtxPopCurrent)(CUcontext*) = nullptr;
  CUresult (*CtxGetDevice)(CUdevice*) = nullptr;
  CUresult (*DeviceGetAttribute)(int*, int, CUdevice) = nullptr;
  CUresult (*ModuleLoadData)(CUmodule*, const void*) = nullptr;
  CUresult (*ModuleGetFunction)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, CUstream, void**, void**) = nullptr;
  std::string error;  // why the driver is unusable, or empty

  std::string Describe(CUresult rc) const {
    const char* msg = nullptr;
    if (GetErrorString) GetErrorString(rc, &msg);
    return "CUDA error " + std::to_string(rc) + (msg ? std::string(" (") + msg + ")" : "");
  }
};

template <class T> bool Resolve(void* lib, const char* name, T& fn, std::string& error) {
  fn = reinterpret_cast<T>(dlsym(lib, name));
  if (fn == nullptr && error.empty()) error = std::string("libcuda.so.1 lacks ") + name;
  return fn != nullptr;
}

// Loaded on first use and leaked on purpose (XLA threads may launch during interpreter exit).
const Driver& GetDriver() {
  static const Driver* driver = [] {
    auto* d = new Driver();
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* msg = dlerror();
      d->error = std::string("cannot load the CUDA driver (libcuda.so.1): ") +
                 (msg ? msg : "unknown error");
      return d;
    }
    std::string& e = d->error;
    Resolve(lib, "cuInit", d->Init, e);
    Resolve(lib, "cuGetErrorString", d->GetErrorString, e);
    Resolve(lib, "cuStreamGetCtx", d->StreamGetCtx, e);
    Resolve(lib, "cuCtxGetCurrent", d->CtxGetCurrent, e);
    Resolve(lib, "cuCtxPushCurrent_v2", d->CtxPushCurrent, e);
    Resolve(lib, "cuCtxPopCurrent_v2", d->CtxPopCurrent, e);
    Resolve(lib, "cuCtxGetDevice", d->CtxGetDevice, e);
    Resolve(lib, "cuDeviceGetAttribute", d->DeviceGetAttribute, e);
    Resolve(lib, "cuModuleLoadData", d->ModuleLoadData, e);
    Resolve(lib, "cuModuleGetFunction", d->ModuleGetFunction, e);
    Resolve(lib, "cuLaunchKernel", d->LaunchKernel, e);
    if (e.empty()) {
      if (CUresult rc = d->Init(0); rc != 0) e = "cuInit failed: " + d->Describe(rc);
    }
    return d;
  }();
  return *driver;
}

// ---------------------------------------------------------------------------------------------
// Kernel images (per id and target) and loaded modules (per context and id).
// ---------------------------------------------------------------------------------------------

struct Functions {
  CUfunction main = nullptr, combine = nullptr;
};

struct Registry {
  std::shared_mutex mutex;
  std::map<uint64_t, std::map<std::string, std::string>> images;  // id -> target -> bytes
  std::map<std::pair<CUcontext, uint64_t>, Functions> loaded;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

std::string HexId(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, id);
  return buf;
}

void RegisterImage(uint64_t id, const std::string& target, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("jaxkeops: cannot read CUDA kernel image '" + path + "'");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw std::runtime_error("jaxkeops: empty CUDA kernel image '" + path + "'");
  Registry& r = GetRegistry();
  std::unique_lock<std::shared_mutex> lock(r.mutex);
  r.images[id].emplace(target, std::move(bytes));  // same id and target = same content
}

// The image for a device of compute capability cc: its exact cubin, else the newest PTX the
// driver can compile for it.
const std::string* PickImage(const std::map<std::string, std::string>& images, int cc) {
  auto exact = images.find("sm_" + std::to_string(cc));
  if (exact != images.end()) return &exact->second;
  const std::string* best = nullptr;
  int best_cc = -1;
  for (const auto& [target, bytes] : images) {
    if (target.rfind("compute_", 0) != 0) continue;
    int t = std::atoi(target.c_str() + 8);
    if (t <= cc && t > best_cc) best = &bytes, best_cc = t;
  }
  return best;
}

#define JK_STR2(x) #x
#define JK_STR(x) JK_STR2(x)

// Kernels without images: a computation lowered without a GPU, or deserialized by jax.export in
// a process that never lowered it. The call carries the kernel's source; Python
// (jaxkeops._lowering_cuda) compiles it for the device's compute capability and registers it.
// Leaked, like the registry: it must outlive any handler still running at interpreter exit.
nb::object& Resolver() {
  static nb::object* resolver = new nb::object();
  return *resolver;
}

bool HasImages(uint64_t id) {
  Registry& r = GetRegistry();
  std::shared_lock<std::shared_mutex> lock(r.mutex);
  return r.images.count(id) != 0;
}

// Returns "" once `id` has images, else why it could not get them. Runs without r.mutex held:
// the resolver registers images.
std::string ResolveImages(uint64_t id, std::string_view source, int cc) {
  if (HasImages(id)) return "";
  if (source.empty())
    return "CUDA kernel " + HexId(id) + " is not registered in this process and the call "
           "carries no source to compile it from";
  if (!Py_IsInitialized()) return "CUDA kernel " + HexId(id) + " is not registered (Python has exited)";
  // The caller of an XLA computation releases the GIL while it runs (as for jax.pure_callback).
  nb::gil_scoped_acquire gil;
  nb::object resolver = Resolver();
  if (!resolver.is_valid())
    return "CUDA kernel " + HexId(id) + " is not registered and no resolver is set (import "
           "jaxkeops)";
  try {
    resolver(static_cast<int64_t>(id), nb::str(source.data(), source.size()), cc);
  } catch (nb::python_error& error) {
    return "CUDA kernel " + HexId(id) + " could not be compiled for sm_" + std::to_string(cc) +
           ": " + jk_python::DescribePythonError(error);
  }
  if (!HasImages(id)) return "the resolver did not register CUDA kernel " + HexId(id);
  return "";
}

// The kernels of `id` in context `ctx`, loading the module on first use (and compiling it
// from `source` when no image is registered). Must run with ctx current. Returns an error
// message or "".
std::string GetFunctions(const Driver& drv, CUcontext ctx, uint64_t id, std::string_view source,
                         Functions& out) {
  Registry& r = GetRegistry();
  {
    std::shared_lock<std::shared_mutex> lock(r.mutex);
    auto it = r.loaded.find({ctx, id});
    if (it != r.loaded.end()) {
      out = it->second;
      return "";
    }
  }
  CUdevice dev;
  int major = 0, minor = 0;
  CUresult rc = drv.CtxGetDevice(&dev);
  if (rc == 0) rc = drv.DeviceGetAttribute(&major, kComputeCapabilityMajor, dev);
  if (rc == 0) rc = drv.DeviceGetAttribute(&minor, kComputeCapabilityMinor, dev);
  if (rc != 0) return "cannot query the device: " + drv.Describe(rc);
  const int cc = major * 10 + minor;
  if (std::string msg = ResolveImages(id, source, cc); !msg.empty()) return msg;

  std::unique_lock<std::shared_mutex> lock(r.mutex);
  auto it = r.loaded.find({ctx, id});
  if (it != r.loaded.end()) {
    out = it->second;
    return "";
  }
  auto images = r.images.find(id);
  if (images == r.images.end()) return "CUDA kernel " + HexId(id) + " lost its images";
  const std::string* image = PickImage(images->second, cc);
  if (image == nullptr) {
    std::string have;
    for (const auto& kv : images->second) have += (have.empty() ? "" : ", ") + kv.first;
    return "CUDA kernel " + HexId(id) + " has no image for sm_" + std::to_string(cc) +
           " (registered: " + have + ")";
  }
  CUmodule module;
  if (rc = drv.ModuleLoadData(&module, image->data()); rc != 0)
    return "cannot load CUDA kernel " + HexId(id) + " for sm_" + std::to_string(cc) + ": " +
           drv.Describe(rc);
  Functions f;
  const char* names[2] = {"jk_main" JK_STR(JK_CUDA_KERNEL_SUFFIX),
                          "jk_combine" JK_STR(JK_CUDA_KERNEL_SUFFIX)};
  CUfunction* slots[2] = {&f.main, &f.combine};
  for (int k = 0; k < 2; ++k) {
    if (rc = drv.ModuleGetFunction(slots[k], module, names[k]); rc != 0)
      return "CUDA kernel " + HexId(id) + " has no function " + names[k] +
             " (stale kernel cache?): " + drv.Describe(rc);
  }
  r.loaded.emplace(std::make_pair(ctx, id), f);  // modules stay loaded: executables may run
  out = f;
  return "";
}

// Makes a context current for the scope (XLA's thread usually has it current already).
struct ScopedContext {
  const Driver& drv;
  bool pushed = false;
  ScopedContext(const Driver& d, CUcontext ctx) : drv(d) { pushed = drv.CtxPushCurrent(ctx) == 0; }
  ~ScopedContext() {
    CUcontext ignored;
    if (pushed) drv.CtxPopCurrent(&ignored);
  }
};

// ---------------------------------------------------------------------------------------------
// FFI handlers
// ---------------------------------------------------------------------------------------------

ffi::Error Fail(ffi::ErrorCode code, const std::string& msg) {
  return ffi::Error(code, "jaxkeops: " + msg);
}

ffi::Error Execute(CUstream stream, int64_t kernel_id, std::string_view source,
                   ffi::Span<const int64_t> roles,
                   int64_t n_batch, int64_t n_red, int64_t block, int64_t smem, int64_t n_chunks,
                   int64_t chunk_len, int64_t ranged, ffi::RemainingArgs args,
                   ffi::RemainingRets rets) {
  const uint64_t id = static_cast<uint64_t>(kernel_id);
  const size_t n_ranges_args = ranged != 0 ? 3 : 0;
  if (args.size() < n_ranges_args || roles.size() != args.size() - n_ranges_args)
    return Fail(ffi::ErrorCode::kInvalidArgument,
                "got " + std::to_string(args.size()) + " inputs but " +
                    std::to_string(roles.size()) + " roles" +
                    (ranged != 0 ? " and 3 block-sparse range arrays" : ""));
  std::vector<jk::launch::Buffer> bufs;
  for (size_t i = 0; i < args.size(); ++i) {
    auto buf = args.get<ffi::AnyBuffer>(i);
    if (buf.has_error()) return buf.error();
    auto dims = buf->dimensions();
    const bool range_array = i >= roles.size();
    if (range_array && buf->element_type() != ffi::DataType::S32)
      return Fail(ffi::ErrorCode::kInvalidArgument,
                  "block-sparse range input " + std::to_string(i) + " must be int32");
    bufs.push_back({std::vector<int64_t>(dims.begin(), dims.end()),
                    static_cast<int64_t>(ffi::ByteWidth(buf->element_type())),
                    buf->untyped_data(),
                    range_array ? jk::launch::RANGES : static_cast<int>(roles[i])});
    if (range_array) continue;
    if (roles[i] < jk::launch::OUTER || roles[i] > jk::launch::PARAM)
      return Fail(ffi::ErrorCode::kInvalidArgument,
                  "input " + std::to_string(i) + " has unknown role " + std::to_string(roles[i]));
  }
  for (size_t i = 0; i < rets.size(); ++i) {
    auto buf = rets.get<ffi::AnyBuffer>(i);
    if (buf.has_error()) return buf.error();
    auto dims = (*buf)->dimensions();
    const bool scratch = n_chunks > 1 && i + 1 == rets.size();
    bufs.push_back({std::vector<int64_t>(dims.begin(), dims.end()),
                    static_cast<int64_t>(ffi::ByteWidth((*buf)->element_type())),
                    (*buf)->untyped_data(), scratch ? jk::launch::SCRATCH : jk::launch::OUTPUT});
  }
  jk_cuda_params params;
  std::vector<jk::launch::Launch> launches;
  const jk::launch::Config cfg{n_batch, n_red, block, smem, n_chunks, chunk_len};
  if (std::string msg = jk::launch::pack(bufs, cfg, params, launches); !msg.empty())
    return Fail(ffi::ErrorCode::kInvalidArgument, msg + " (kernel " + HexId(id) + ")");
  if (launches.empty()) return ffi::Error::Success();

  const Driver& drv = GetDriver();
  if (!drv.error.empty()) return Fail(ffi::ErrorCode::kFailedPrecondition, drv.error);
  CUcontext ctx = nullptr;
  if (CUresult rc = drv.StreamGetCtx(stream, &ctx); rc != 0)
    return Fail(ffi::ErrorCode::kInternal, "cannot get the stream's context: " + drv.Describe(rc));
  ScopedContext scope(drv, ctx);
  Functions fns;
  if (std::string msg = GetFunctions(drv, ctx, id, source, fns); !msg.empty())
    return Fail(ffi::ErrorCode::kFailedPrecondition, msg);
  void* kernel_args[] = {&params};  // copied by the driver at launch: a stack block is fine
  for (const jk::launch::Launch& l : launches) {
    CUfunction fn = l.kernel == jk::launch::MAIN ? fns.main : fns.combine;
    if (CUresult rc = drv.LaunchKernel(fn, l.grid[0], l.grid[1], l.grid[2], l.block, 1, 1,
                                       l.smem_bytes, stream, kernel_args, nullptr);
        rc != 0)
      return Fail(ffi::ErrorCode::kInternal,
                  "launching CUDA kernel " + HexId(id) + " failed: " + drv.Describe(rc));
  }
  return ffi::Error::Success();
}

// Loads the module before XLA runs (or captures into a CUDA graph) the computation, where
// loading is not allowed. Without a current context it leaves that to the first execution.
ffi::Error Initialize(ffi::Dictionary attrs) {
  auto kernel_id = attrs.get<int64_t>("kernel_id");
  if (kernel_id.has_error()) return kernel_id.error();
  auto source = attrs.get<std::string_view>("source");
  if (source.has_error()) return source.error();
  const Driver& drv = GetDriver();
  CUcontext ctx = nullptr;
  if (!drv.error.empty() || drv.CtxGetCurrent(&ctx) != 0 || ctx == nullptr)
    return ffi::Error::Success();
  Functions fns;
  if (std::string msg = GetFunctions(drv, ctx, static_cast<uint64_t>(*kernel_id), *source, fns);
      !msg.empty())
    return Fail(ffi::ErrorCode::kFailedPrecondition, msg);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxkeopsCudaExecute, Execute,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<CUstream>>()
                                  .Attr<int64_t>("kernel_id")
                                  .Attr<std::string_view>("source")
                                  .Attr<ffi::Span<const int64_t>>("roles")
                                  .Attr<int64_t>("n_batch")
                                  .Attr<int64_t>("n_red")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("smem")
                                  .Attr<int64_t>("n_chunks")
                                  .Attr<int64_t>("chunk_len")
                                  .Attr<int64_t>("ranged")
                                  .RemainingArgs()
                                  .RemainingRets(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxkeopsCudaInitialize, Initialize,
                              ffi::Ffi::BindInitialize().Attrs());

// ---------------------------------------------------------------------------------------------
// Python module
// ---------------------------------------------------------------------------------------------

NB_MODULE(_ext_cuda, m) {
  using namespace nb::literals;
  m.doc() = "jaxkeops CUDA launcher: kernel image registry and the generic XLA FFI handler.";
  m.def(
      "register_image",
      [](int64_t id, const std::string& target, const std::string& path) {
        RegisterImage(static_cast<uint64_t>(id), target, path);
      },
      "kernel_id"_a, "target"_a, "path"_a,
      "Register a cubin ('sm_80') or PTX ('compute_80') file for a kernel id.");
  m.def(
      "registered_targets",
      [](int64_t id) {
        Registry& r = GetRegistry();
        std::shared_lock<std::shared_mutex> lock(r.mutex);
        nb::list out;
        auto it = r.images.find(static_cast<uint64_t>(id));
        if (it != r.images.end())
          for (const auto& kv : it->second) out.append(kv.first);
        return out;
      },
      "kernel_id"_a);
  m.def("driver_error", []() { return GetDriver().error; },
        "Why the CUDA driver cannot be used, or '' when it can.");
  m.def("abi_version", []() { return JK_CUDA_ABI_VERSION; });
  m.def(
      "set_resolver", [](nb::object fn) { Resolver() = std::move(fn); }, "resolver"_a,
      "Sets resolver(kernel_id, source, compute_capability): called (with the GIL) when a call "
      "names a kernel without images; it must compile the source and register its image.");
  m.def(
      "handlers",
      []() {
        nb::dict d;
        d["initialize"] = nb::capsule(reinterpret_cast<void*>(JaxkeopsCudaInitialize));
        d["execute"] = nb::capsule(reinterpret_cast<void*>(JaxkeopsCudaExecute));
        return d;
      },
      "PyCapsules of the FFI handler stages, for jax.ffi.register_ffi_target(..., "
      "platform='CUDA').");
}
