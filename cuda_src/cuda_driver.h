// The CUDA driver API as the launcher (jaxkeops_cuda.cc) uses it, reached through dlopen so that
// the launcher builds without a CUDA toolkit and imports on machines without a GPU: its own
// declarations of the few types and entry points, checked against cuda.h at compile time where
// CMake finds a CUDA toolkit >= 12 (JAXKEOPS_WITH_CUDA_H), the library loaded once per process
// (libcuda.so.1, or $JAXKEOPS_CUDA_DRIVER: the tests' fake driver), and the debugging switch
// JAXKEOPS_CUDA_SYNC.
#ifndef JAXKEOPS_CUDA_DRIVER_H
#define JAXKEOPS_CUDA_DRIVER_H

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#ifdef JAXKEOPS_WITH_CUDA_H
#include <cuda.h>
#if CUDA_VERSION < 12000
#error "jaxkeops: checking the launcher against cuda.h needs CUDA >= 12 (cuCtxGetId)"
#endif
#endif

namespace jk_driver {

// ---------------------------------------------------------------------------------------------
// The few driver API types and entry points used (stable C ABI; the _v2 names are the ones
// cuda.h maps to).
// ---------------------------------------------------------------------------------------------

#ifndef JAXKEOPS_WITH_CUDA_H
typedef int CUresult;
typedef int CUdevice;
typedef int CUdevice_attribute;
typedef int CUfunction_attribute;
typedef int CUstreamCaptureStatus;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef struct CUstream_st* CUstream;
#endif

constexpr CUresult kSuccess = static_cast<CUresult>(0);
constexpr CUdevice_attribute kComputeCapabilityMajor = static_cast<CUdevice_attribute>(75);
constexpr CUdevice_attribute kComputeCapabilityMinor = static_cast<CUdevice_attribute>(76);
constexpr CUdevice_attribute kMaxSharedPerBlockOptin = static_cast<CUdevice_attribute>(97);
constexpr CUfunction_attribute kStaticSharedBytes = static_cast<CUfunction_attribute>(1);
constexpr CUfunction_attribute kMaxDynamicSharedBytes = static_cast<CUfunction_attribute>(8);
constexpr CUstreamCaptureStatus kNotCapturing = static_cast<CUstreamCaptureStatus>(0);
constexpr int64_t kDefaultSharedBytes = 48 * 1024;  // per block, without an opt-in

struct Driver {
  CUresult (*Init)(unsigned int) = nullptr;
  CUresult (*GetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*DeviceGetCount)(int*) = nullptr;
  CUresult (*DeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*DeviceGetAttribute)(int*, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*StreamGetCtx)(CUstream, CUcontext*) = nullptr;
  CUresult (*StreamIsCapturing)(CUstream, CUstreamCaptureStatus*) = nullptr;
  CUresult (*StreamSynchronize)(CUstream) = nullptr;
  CUresult (*CtxGetId)(CUcontext, unsigned long long*) = nullptr;
  CUresult (*CtxPushCurrent)(CUcontext) = nullptr;
  CUresult (*CtxPopCurrent)(CUcontext*) = nullptr;
  CUresult (*CtxGetDevice)(CUdevice*) = nullptr;
  CUresult (*ModuleLoadData)(CUmodule*, const void*) = nullptr;
  CUresult (*ModuleGetFunction)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*FuncGetAttribute)(int*, CUfunction_attribute, CUfunction) = nullptr;
  CUresult (*FuncSetAttribute)(CUfunction, CUfunction_attribute, int) = nullptr;
  CUresult (*LaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                           unsigned int, unsigned int, unsigned int, CUstream, void**,
                           void**) = nullptr;
  std::string error;  // why the driver is unusable, or empty

  std::string Describe(CUresult rc) const {
    const char* msg = nullptr;
    if (GetErrorString) GetErrorString(rc, &msg);
    return "CUDA error " + std::to_string(static_cast<int>(rc)) +
           (msg ? std::string(" (") + msg + ")" : "");
  }
};

#ifdef JAXKEOPS_WITH_CUDA_H
// The declarations above must be cuda.h's, or a call through dlsym'd pointers is undefined.
#define JK_SAME_AS_CUDA_H(member, fn)                                              \
  static_assert(std::is_same_v<decltype(Driver::member), decltype(&fn)>, #fn     \
                " is declared differently in cuda.h")
JK_SAME_AS_CUDA_H(Init, cuInit);
JK_SAME_AS_CUDA_H(GetErrorString, cuGetErrorString);
JK_SAME_AS_CUDA_H(DeviceGetCount, cuDeviceGetCount);
JK_SAME_AS_CUDA_H(DeviceGet, cuDeviceGet);
JK_SAME_AS_CUDA_H(DeviceGetAttribute, cuDeviceGetAttribute);
JK_SAME_AS_CUDA_H(StreamGetCtx, cuStreamGetCtx);
JK_SAME_AS_CUDA_H(StreamIsCapturing, cuStreamIsCapturing);
JK_SAME_AS_CUDA_H(StreamSynchronize, cuStreamSynchronize);
JK_SAME_AS_CUDA_H(CtxGetId, cuCtxGetId);
JK_SAME_AS_CUDA_H(CtxPushCurrent, cuCtxPushCurrent);
JK_SAME_AS_CUDA_H(CtxPopCurrent, cuCtxPopCurrent);
JK_SAME_AS_CUDA_H(CtxGetDevice, cuCtxGetDevice);
JK_SAME_AS_CUDA_H(ModuleLoadData, cuModuleLoadData);
JK_SAME_AS_CUDA_H(ModuleGetFunction, cuModuleGetFunction);
JK_SAME_AS_CUDA_H(FuncGetAttribute, cuFuncGetAttribute);
JK_SAME_AS_CUDA_H(FuncSetAttribute, cuFuncSetAttribute);
JK_SAME_AS_CUDA_H(LaunchKernel, cuLaunchKernel);
static_assert(kSuccess == CUDA_SUCCESS);
static_assert(kComputeCapabilityMajor == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
static_assert(kComputeCapabilityMinor == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
static_assert(kMaxSharedPerBlockOptin == CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
static_assert(kStaticSharedBytes == CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
static_assert(kMaxDynamicSharedBytes == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
static_assert(kNotCapturing == CU_STREAM_CAPTURE_STATUS_NONE);
#undef JK_SAME_AS_CUDA_H
#endif

template <class T> inline void Resolve(void* lib, const char* name, T& fn, std::string& error) {
  fn = reinterpret_cast<T>(dlsym(lib, name));
  if (fn == nullptr && error.empty())
    error = std::string("the CUDA driver lacks ") + name + " (a driver for CUDA >= 12 is needed)";
}

// Loaded on first use and leaked on purpose (XLA threads may launch during interpreter exit).
inline const Driver& GetDriver() {
  static const Driver* driver = [] {
    auto* d = new Driver();
    const char* path = std::getenv("JAXKEOPS_CUDA_DRIVER");
    if (path == nullptr || *path == '\0') path = "libcuda.so.1";
    void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* msg = dlerror();
      d->error = std::string("cannot load the CUDA driver (") + path +
                 "): " + (msg ? msg : "unknown error");
      return d;
    }
    std::string& e = d->error;
    Resolve(lib, "cuInit", d->Init, e);
    Resolve(lib, "cuGetErrorString", d->GetErrorString, e);
    Resolve(lib, "cuDeviceGetCount", d->DeviceGetCount, e);
    Resolve(lib, "cuDeviceGet", d->DeviceGet, e);
    Resolve(lib, "cuDeviceGetAttribute", d->DeviceGetAttribute, e);
    Resolve(lib, "cuStreamGetCtx", d->StreamGetCtx, e);
    Resolve(lib, "cuStreamIsCapturing", d->StreamIsCapturing, e);
    Resolve(lib, "cuStreamSynchronize", d->StreamSynchronize, e);
    Resolve(lib, "cuCtxGetId", d->CtxGetId, e);
    Resolve(lib, "cuCtxPushCurrent_v2", d->CtxPushCurrent, e);
    Resolve(lib, "cuCtxPopCurrent_v2", d->CtxPopCurrent, e);
    Resolve(lib, "cuCtxGetDevice", d->CtxGetDevice, e);
    Resolve(lib, "cuModuleLoadData", d->ModuleLoadData, e);
    Resolve(lib, "cuModuleGetFunction", d->ModuleGetFunction, e);
    Resolve(lib, "cuFuncGetAttribute", d->FuncGetAttribute, e);
    Resolve(lib, "cuFuncSetAttribute", d->FuncSetAttribute, e);
    Resolve(lib, "cuLaunchKernel", d->LaunchKernel, e);
    if (e.empty()) {
      if (CUresult rc = d->Init(0); rc != kSuccess) e = "cuInit failed: " + d->Describe(rc);
    }
    return d;
  }();
  return *driver;
}

// JAXKEOPS_CUDA_SYNC, read once: anything but "" and "0" turns the debugging syncs on.
inline bool SyncMode() {
  static const bool on = [] {
    const char* v = std::getenv("JAXKEOPS_CUDA_SYNC");
    return v != nullptr && *v != '\0' && std::string_view(v) != "0";
  }();
  return on;
}

}  // namespace jk_driver

#endif  // JAXKEOPS_CUDA_DRIVER_H
