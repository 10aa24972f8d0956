"""The one JAX primitive behind every jaxkeops reduction, and its rules.

This is the only module that touches JAX internals (`jax.extend.core`, `jax.interpreters.*`).
The primitive takes the kernel operands ((*batch, rows, dim) each, see `_shapes.py`) and the
static parameters `spec` (a `KernelSpec`), `n_out` and `n_red`; it returns one
(*batch, n_out, width) array per output of the reduction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from ._lowering import lower_cpu
from .codegen.spec import KernelSpec
from .reductions import INDEX

reduction_p = Primitive("jaxkeops_reduction")
reduction_p.multiple_results = True


def _out_avals(avals, spec: KernelSpec, n_out: int, n_red: int):
    if avals:
        batch = np.broadcast_shapes(*(tuple(a.shape[:-2]) for a in avals))
    else:
        batch = ()
    result = []
    for out in spec.outputs:
        dtype = spec.index_dtype if out.kind == INDEX else spec.dtype
        result.append(jax.core.ShapedArray(tuple(batch) + (n_out, out.width), jnp.dtype(dtype)))
    return result


def _abstract_eval(*avals, spec: KernelSpec, n_out: int, n_red: int):
    return _out_avals(avals, spec, n_out, n_red)


@functools.cache
def _jitted(spec: KernelSpec, n_out: int, n_red: int):
    return jax.jit(lambda *a: reduction_p.bind(*a, spec=spec, n_out=n_out, n_red=n_red))


def _impl(*args, spec, n_out, n_red):
    """Eager calls run through a jitted call of the primitive, one per kernel and size."""
    return _jitted(spec, n_out, n_red)(*args)


reduction_p.def_impl(_impl)
reduction_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(reduction_p, lower_cpu, platform="cpu")


def _batch_rule(args, dims, *, spec, n_out, n_red):
    """vmap: the mapped axis becomes one more leading batch dim of the kernel (no loop)."""
    moved = []
    for a, d in zip(args, dims):
        if d is None:  # not mapped
            moved.append(a.reshape((1,) + a.shape))
        else:
            moved.append(jnp.moveaxis(a, d, 0))
    outs = reduction_p.bind(*moved, spec=spec, n_out=n_out, n_red=n_red)
    return outs, [0] * len(outs)


batching.primitive_batchers[reduction_p] = _batch_rule


def bind_reduction(spec: KernelSpec, operands: Sequence, n_out: int, n_red: int) -> list:
    return reduction_p.bind(*operands, spec=spec, n_out=int(n_out), n_red=int(n_red))
