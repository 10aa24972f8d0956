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
call that XLA allocates, so the handler never allocates device memory. Blocks hold 192 threads
unless a tile of the reduced variables does not fit in the shared memory a block may use: 48
KiB without GPUs (a computation lowered there runs on any GPU), else the opt-in limit of this
process's GPUs (227 KiB on H100/H200), which the launcher unlocks when it loads the kernel.

A block-sparse call (`spec.ranged`) passes the 3 int32 range arrays of its reduced axis after
the kernel's operands, with attribute `ranged = 1`. Its values are only read by the kernel on
the device, which clamps every bound (see cuda_src/jaxkeops_cuda.cc): unlike on the CPU, a bad
tuple is not reported, its result is unspecified.
"""

from __future__ import annotations

import math
import threading

import jax
import numpy as np

from .codegen.cuda import DEFAULT_BLOCK, plan_launch, render_cuda, tile_row_bytes
from .codegen.spec import KernelSpec
from .reductions import VALUE
from .runtime import cuda_devices
from .runtime.cuda_build import cuda_kernel_key, write_cuda_source
from .runtime.cuda_devices import (
    CUDA_TARGET,
    DEFAULT_SHARED_MEMORY,
    gpu_archs,
    register_cuda_target,
    resolve_cuda_kernel,
)
from .runtime.loader import kernel_id

_lock = threading.Lock()
_kernels: dict[tuple, tuple[int, str]] = {}


def choose_block(row_bytes: int, smem_limit: int) -> int:
    """Threads per block (= reduced rows per shared-memory tile) for reduced rows of
    `row_bytes` bytes and `smem_limit` bytes of shared memory per block: KeOps' 192, else as
    many as fit, in whole warps of 32 when a warp fits; 0 when not even one row fits."""
    if row_bytes * DEFAULT_BLOCK <= smem_limit:
        return DEFAULT_BLOCK
    fits = smem_limit // row_bytes
    return fits // 32 * 32 if fits >= 32 else fits


def block_for_shared_memory(spec: KernelSpec, smem_limit: int) -> int | None:
    """The block size where `smem_limit` bytes per block change the launch plan's choice (a
    tile of 192 wide rows overflowing 48 KiB), else None: the plan's own choice stands."""
    row_bytes = tile_row_bytes(spec)
    if smem_limit <= DEFAULT_SHARED_MEMORY or row_bytes * DEFAULT_BLOCK <= DEFAULT_SHARED_MEMORY:
        return None
    block = choose_block(row_bytes, smem_limit)
    if block < 1:
        raise ValueError(
            f"{spec.describe()}: one row of the reduced variables takes {row_bytes} bytes, more "
            f"than the {smem_limit} bytes of shared memory a CUDA block may use on this GPU"
        )
    return block


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
    archs = cuda_devices.gpu_archs()
    if archs:
        cuda_devices.register_cuda_target()
        cuda_devices.register_kernel(kid, source, key, archs)
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
                       schedule="rows" if rows_only else None,
                       block=block_for_shared_memory(spec, cuda_devices.shared_memory_limit()))
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


cuda_devices.register_if_cuda_plugin()

# CUDA_TARGET, gpu_archs, register_cuda_target and resolve_cuda_kernel live in
# runtime/cuda_devices.py; they stay importable from here (jaxkeops._export, tools).
__all__ = ["CUDA_TARGET", "block_for_shared_memory", "choose_block", "cuda_kernel",
           "cuda_kernel_id", "gpu_archs", "lower_cuda", "register_cuda_target",
           "resolve_cuda_kernel", "tile_row_bytes"]
