"""The CUDA devices of this process and the launcher's kernel images.

What the CUDA lowering needs from the machine: the compute capabilities of the GPUs JAX sees
(to compile each kernel for them), how much shared memory a block may use there (to size the
blocks), and the prebuilt launcher (`jaxkeops._ext_cuda`), with which this module registers
the FFI target, the compiled images and the resolver that compiles a kernel the process never
lowered (a `jax.export` artifact). Importing it loads no CUDA library; the launcher dlopens the
driver on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Iterable
from types import ModuleType

import jax

from .cuda_build import build_cuda_kernel, cuda_kernel_key, write_cuda_source

CUDA_TARGET = "jaxkeops_cuda"
# Dynamic shared memory per block that every CUDA GPU grants without an opt-in; what a kernel
# lowered without a GPU (to run anywhere) may use.
DEFAULT_SHARED_MEMORY = 48 * 1024

_lock = threading.Lock()
_target_registered = False


def launcher() -> ModuleType:
    """The prebuilt launcher extension (ImportError in a build without it)."""
    from .. import _ext_cuda  # optional: a build may lack it, and lowering works without it

    return _ext_cuda


def cuda_plugin_installed() -> bool:
    names = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins.xla_cuda12",
             "jax_plugins.xla_cuda13")
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except ModuleNotFoundError:
            continue
    return False


@functools.cache
def gpu_archs() -> tuple[int, ...]:
    """The distinct compute capabilities (e.g. 80) of this process's CUDA devices, or ()."""
    try:
        devices = jax.devices("cuda")
    except RuntimeError:
        return ()
    archs = set()
    for d in devices:
        major, _, minor = str(getattr(d, "compute_capability", "0.0")).partition(".")
        archs.add(int(major) * 10 + int(minor or 0))
    return tuple(sorted(archs))


def common_shared_memory_limit(per_device: Iterable[int]) -> int:
    """The dynamic shared memory per block that every device listed allows (bytes): the
    smallest of their opt-in limits, never below the 48 KiB every GPU grants."""
    limits = [int(v) for v in per_device]
    return max(DEFAULT_SHARED_MEMORY, min(limits)) if limits else DEFAULT_SHARED_MEMORY


@functools.cache
def shared_memory_limit() -> int:
    """The dynamic shared memory a kernel block may use on every GPU of this process, once the
    launcher has opted the kernel in (227 KiB on H100/H200); 48 KiB without GPUs, so that a
    computation lowered there runs on any GPU."""
    if not gpu_archs():
        return DEFAULT_SHARED_MEMORY
    try:
        per_device = launcher().device_shared_memory_limits()
    except ImportError:
        return DEFAULT_SHARED_MEMORY
    return common_shared_memory_limit(per_device)


def register_cuda_target() -> None:
    """Registers the launcher with JAX for platform CUDA (once; JAX defers it until its CUDA
    backend starts)."""
    global _target_registered
    with _lock:
        if not _target_registered:
            ext = launcher()
            ext.set_resolver(resolve_cuda_kernel)
            jax.ffi.register_ffi_target(CUDA_TARGET, ext.handlers(), platform="CUDA")
            jax.ffi.register_ffi_target_as_batch_partitionable(CUDA_TARGET)
            _target_registered = True


def register_kernel(kid: int, source: str, key: str, archs: Iterable[int]) -> None:
    """Compiles `source` (content key `key`) for each compute capability in `archs` and
    registers the images with the launcher under `kid`, with the source's path for its error
    messages."""
    ext = launcher()
    ext.register_source_path(kid, str(write_cuda_source(source, key)))
    for arch in archs:
        image, target = build_cuda_kernel(source, key, arch)
        ext.register_image(kid, target, str(image))


def resolve_cuda_kernel(kid: int, source: str, arch: int) -> None:
    """Compiles `source` for compute capability `arch` (e.g. 90) and registers its image under
    `kid` (called by the launcher for a call whose kernel this process never lowered)."""
    register_kernel(kid, source, cuda_kernel_key(source), (arch,))


def register_if_cuda_plugin() -> None:
    """Registers the FFI target at import when JAX's CUDA plugin is installed."""
    if cuda_plugin_installed():
        try:
            register_cuda_target()
        except ImportError:  # a build without the launcher: lowering still works, running fails
            pass


__all__ = ["CUDA_TARGET", "DEFAULT_SHARED_MEMORY", "common_shared_memory_limit",
           "cuda_plugin_installed", "gpu_archs", "launcher", "register_cuda_target",
           "register_if_cuda_plugin", "register_kernel", "resolve_cuda_kernel",
           "shared_memory_limit"]
