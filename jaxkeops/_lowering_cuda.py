"""Lowering of the reduction primitive for CUDA, to the prebuilt launcher of `_ext_cuda`.

Lowering renders the kernel's CUDA source and derives its id from the source alone, so it
needs neither a GPU nor a CUDA compiler: `jax.jit(f).trace(...).lower(lowering_platforms=
("cuda",))` works on any machine. The kernel is compiled (NVRTC, else nvcc) during lowering
only when this process has CUDA devices, once per distinct compute capability, and its images
are registered with the launcher by id before XLA runs the call; a compile error then surfaces
as a `KernelCompileError` at lowering time, like on the CPU, rather than inside XLA.
The call also carries the kernel's source: a computation lowered without a GPU, or serialized
with `jax.export` and run by another process, has the handler ask `resolve_cuda_kernel` to
compile it for the device's compute capability (or find it in the disk cache) when it first
initializes the call.

The launch plan (block size, rows or split schedule) is decided here from the static shapes
and passed as attributes; the split schedule's scratch memory is an extra output of the custom
call that XLA allocates, so the handler never allocates device memory.

A block-sparse call (`spec.ranged`) passes the 3 int32 range arrays of its reduced axis after
the kernel's operands, with attribute `ranged = 1`. Its values are only read by the kernel on
the device, which clamps every bound (see cuda_src/jaxkeops_cuda.cc): unlike on the CPU, a bad
tuple is not reported, its result is unspecified.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading

import jax
import numpy as np

from .codegen.cuda import plan_launch, render_cuda
from .codegen.spec import KernelSpec
from .reductions import VALUE
from .runtime.cuda_build import build_cuda_kernel, cuda_kernel_key, write_cuda_source
from .runtime.loader import kernel_id

CUDA_TARGET = "jaxkeops_cuda"
_lock = threading.Lock()
_kernels: dict[tuple, tuple[int, str]] = {}
_target_registered = False


def _ext_cuda():
    from . import _ext_cuda

    return _ext_cuda


def register_cuda_target() -> None:
    """Registers the launcher with JAX for platform CUDA (once; JAX defers it until its CUDA
    backend starts)."""
    global _target_registered
    with _lock:
        if not _target_registered:
            ext = _ext_cuda()
            ext.set_resolver(resolve_cuda_kernel)
            jax.ffi.register_ffi_target(CUDA_TARGET, ext.handlers(), platform="CUDA")
            jax.ffi.register_ffi_target_as_batch_partitionable(CUDA_TARGET)
            _target_registered = True


def _build_and_register(kid: int, source: str, key: str, arch: int) -> None:
    path, target = build_cuda_kernel(source, key, arch)
    _ext_cuda().register_image(kid, target, str(path))


def resolve_cuda_kernel(kid: int, source: str, arch: int) -> None:
    """Compiles `source` for compute capability `arch` (e.g. 90) and registers its image under
    `kid` (called by the launcher for a call whose kernel this process never lowered)."""
    _build_and_register(kid, source, cuda_kernel_key(source), arch)


def _cuda_plugin_installed() -> bool:
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


def cuda_kernel(spec: KernelSpec, in_dtype: str, out_dtype: str) -> tuple[int, str]:
    """Renders the kernel (writing its source to the cache) and, when this process has GPUs,
    compiles and registers it for each of their architectures; returns its id and source."""
    with _lock:
        found = _kernels.get((spec, in_dtype, out_dtype))
    if found is not None:
        return found
    source = render_cuda(spec, in_dtype=in_dtype, out_dtype=out_dtype)
    key = cuda_kernel_key(source)
    kid = kernel_id(key)
    write_cuda_source(source, key)
    archs = gpu_archs()
    if archs:
        register_cuda_target()
        for arch in archs:
            _build_and_register(kid, source, key, arch)
    with _lock:
        _kernels[(spec, in_dtype, out_dtype)] = (kid, source)
    return kid, source


def cuda_kernel_id(spec: KernelSpec, in_dtype: str, out_dtype: str) -> int:
    """The id of `spec`'s CUDA kernel (see `cuda_kernel`)."""
    return cuda_kernel(spec, in_dtype, out_dtype)[0]


_ffi_rule = jax.ffi.ffi_lowering(CUDA_TARGET)


def lower_cuda(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int,
               extra_attributes: dict | None = None):
    """`operands`: the kernel's, then for a block-sparse spec the 3 range arrays of its axis.
    `extra_attributes` (SPMD partitioning) also forces the rows schedule: the split one's
    scratch output has no batch dims for the partitioner to split."""
    kernel_avals = ctx.avals_in[:len(spec.args)]  # without the int32 range arrays
    in_dtype = np.dtype(kernel_avals[0].dtype).name if kernel_avals else spec.dtype
    values = [a for a, o in zip(ctx.avals_out, spec.outputs) if o.kind == VALUE]
    out_dtype = np.dtype(values[0].dtype).name if values else spec.dtype
    kid, source = cuda_kernel(spec, in_dtype, out_dtype)
    batch = tuple(ctx.avals_out[0].shape[:-2])
    # Block-sparse calls take the rows schedule too (the kernel would also be right split): the
    # heuristic sizes chunks for the dense n_red, and the ranges already cut each block's work
    # to its clusters' intervals, so the chunks would mostly be empty launches plus a combine.
    rows_only = extra_attributes is not None or spec.ranged
    plan = plan_launch(spec, n_out, n_red, math.prod(batch),
                       schedule="rows" if rows_only else None)
    avals_out = list(ctx.avals_out)
    if plan.split:
        avals_out.append(jax.core.ShapedArray((plan.scratch_bytes,), np.dtype(np.uint8)))
    rule = (_ffi_rule if extra_attributes is None
            else jax.ffi.ffi_lowering(CUDA_TARGET, extra_attributes=extra_attributes))
    results = rule(
        ctx.replace(avals_out=avals_out),
        *operands,
        kernel_id=np.int64(kid),
        source=source,
        roles=np.asarray(spec.roles, dtype=np.int64),
        n_batch=np.int64(len(batch)),
        n_red=np.int64(n_red),
        block=np.int64(plan.block),
        smem=np.int64(plan.smem_bytes),
        n_chunks=np.int64(plan.n_chunks),
        chunk_len=np.int64(plan.chunk_len),
        ranged=np.int64(spec.ranged),
    )
    return list(results)[: len(ctx.avals_out)]


if _cuda_plugin_installed():
    try:
        register_cuda_target()
    except ImportError:  # a build without the launcher: lowering still works, running fails
        pass

__all__ = ["CUDA_TARGET", "cuda_kernel", "cuda_kernel_id", "gpu_archs", "lower_cuda",
           "register_cuda_target", "resolve_cuda_kernel"]
