"""Lowering of the reduction primitive to the prebuilt XLA FFI handler, through `jax.ffi`.

Lowering is where a kernel is rendered, compiled (or found in the disk cache) and loaded, so
that it exists before XLA runs the call. The call also carries the kernel's source (a few KB):
a computation serialized with `jax.export` and run by another process, where the kernel was
never lowered, has the handler ask `resolve_exported_kernel` to build it (or find it in that
process's disk cache) at its first execution.
"""

from __future__ import annotations

import threading
from pathlib import Path

import jax
import numpy as np

from . import _ext
from .codegen.cpu import render_cpu
from .codegen.spec import KernelSpec
from .runtime import build_cpu_kernel, find_toolchain, kernel_key, load_kernel

CPU_TARGET = "jaxkeops_cpu"
jax.ffi.register_ffi_target(CPU_TARGET, _ext.cpu_handler(), platform="cpu")
# Calls lowered for several devices carry num_batch_dims (see _partition.py): XLA's SPMD
# partitioner then splits them along those leading dims.
jax.ffi.register_ffi_target_as_batch_partitionable(CPU_TARGET)

_kernels: dict[KernelSpec, tuple[int, str]] = {}
_lock = threading.Lock()


def _build_and_load(source: str) -> tuple[int, Path]:
    key = kernel_key(source, find_toolchain())
    binary = build_cpu_kernel(source, key)
    return load_kernel(key, binary), binary


def cpu_kernel(spec: KernelSpec) -> tuple[int, str]:
    """Renders, compiles (or finds in the cache) and loads the CPU kernel of `spec`; returns
    its id and source."""
    with _lock:
        found = _kernels.get(spec)
        if found is None:
            source = render_cpu(spec)
            found = _kernels[spec] = (_build_and_load(source)[0], source)
        return found


def resolve_exported_kernel(exported_id: int, source: str) -> None:
    """Builds `source` here and registers it under the id the call names (called by the FFI
    handler, for a kernel lowered by another process). The ids differ when the other process
    had another compiler or optimization level: both name the same source."""
    with _lock:
        local_id, binary = _build_and_load(source)
        if local_id != exported_id:
            _ext.register_kernel(exported_id, str(binary))


_ext.set_resolver(resolve_exported_kernel)


_ffi_rule = jax.ffi.ffi_lowering(CPU_TARGET)


def lower_cpu(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int,
              extra_attributes: dict | None = None):
    """`operands`: the kernel's, then for a block-sparse spec the 3 range arrays of its axis."""
    kid, source = cpu_kernel(spec)
    n_batch = len(ctx.avals_out[0].shape) - 2
    rule = (_ffi_rule if extra_attributes is None
            else jax.ffi.ffi_lowering(CPU_TARGET, extra_attributes=extra_attributes))
    return rule(
        ctx,
        *operands,
        kernel_id=np.int64(kid),
        source=source,
        roles=np.asarray(spec.roles, dtype=np.int64),
        n_batch=np.int64(n_batch),
        n_red=np.int64(n_red),
        ranged=np.int64(spec.ranged),
    )
