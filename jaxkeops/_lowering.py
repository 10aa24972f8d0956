"""Lowering of the reduction primitive to the prebuilt XLA FFI handler, through `jax.ffi`.

Lowering is where a kernel is rendered, compiled (or found in the disk cache) and loaded, so
that it exists before XLA runs the call.
"""

from __future__ import annotations

import threading

import jax
import numpy as np

from . import _ext
from .codegen.cpu import render_cpu
from .codegen.spec import KernelSpec
from .runtime import build_cpu_kernel, find_toolchain, kernel_key, load_kernel

CPU_TARGET = "jaxkeops_cpu"
jax.ffi.register_ffi_target(CPU_TARGET, _ext.cpu_handler(), platform="cpu")

_ids: dict[KernelSpec, int] = {}
_lock = threading.Lock()


def cpu_kernel_id(spec: KernelSpec) -> int:
    """Renders, compiles (or finds in the cache) and loads the CPU kernel of `spec`."""
    with _lock:
        kid = _ids.get(spec)
        if kid is None:
            source = render_cpu(spec)
            key = kernel_key(source, find_toolchain())
            kid = load_kernel(key, build_cpu_kernel(source, key))
            _ids[spec] = kid
        return kid


_ffi_rule = jax.ffi.ffi_lowering(CPU_TARGET)


def lower_cpu(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int):
    kid = cpu_kernel_id(spec)
    n_batch = len(ctx.avals_out[0].shape) - 2
    return _ffi_rule(
        ctx,
        *operands,
        kernel_id=np.int64(kid),
        roles=np.asarray(spec.roles, dtype=np.int64),
        n_batch=np.int64(n_batch),
        n_red=np.int64(n_red),
    )
