"""Toolchain detection, compiling, the disk cache and kernel loading: the only code that runs a
compiler or loads a shared library."""

from .build import BuildStats, build_cpu_kernel, include_dir, kernel_key
from .cache import cache_dir, clear_cache
from .loader import kernel_id, load_kernel, loaded_kernels
from .toolchain import Toolchain, cpu_features, find_toolchain

__all__ = [
    "BuildStats", "Toolchain", "build_cpu_kernel", "cache_dir", "clear_cache", "cpu_features",
    "find_toolchain", "include_dir", "kernel_id", "kernel_key", "load_kernel", "loaded_kernels",
]

# The CUDA compile stage (NVRTC, else nvcc); importing it loads nothing.
from .cuda_build import (  # noqa: E402
    CudaBuildStats,
    build_cuda_kernel,
    cuda_kernel_key,
    find_cuda_compiler,
)
from .nvrtc import find_nvrtc  # noqa: E402

__all__ += ["CudaBuildStats", "build_cuda_kernel", "cuda_kernel_key", "find_cuda_compiler",
            "find_nvrtc"]
