"""The one JAX primitive behind every jaxkeops reduction, and its rules.

This is the only module that touches JAX internals (`jax.extend.core`, `jax.interpreters.*`).
The primitive takes the kernel operands ((*batch, rows, dim) each, see `_shapes.py`) and the
static parameters `spec` (a `KernelSpec`), `n_out` and `n_red`; it returns one
(*batch, n_out, width) array per output of the reduction.

Rules:
- JVP: the tangent of every value-producing reduction is another generated Sum reduction,
  linear in the tangents (see `autodiff/reduction_ad.py`), or, for Min/Max/KMin, the formula's
  derivative evaluated densely at the selected pairs. Index outputs, and the sign output of
  LogSumExpSigned, have zero tangents. Derived reductions keep the spec's sum scheme and
  accumulator.
- Transpose: only Sum reductions appear linearly; the transpose of one is a Sum reduction per
  group of linear operands (over the other axis for inner variables), from the symbolic
  transpose of its formula. Reverse mode is the transpose of forward mode, to any order.
- Batching: a vmapped axis becomes one more leading batch dim of the kernel: no loop, no copy
  of unbatched operands.
- Lowering: one FFI call on one device; for several devices (jit over sharded arrays), one call
  over blocks of pairs that XLA's SPMD partitioner splits, and a merge (see `_partition.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.extend.mlir.dialects import sdy
from jax.interpreters import ad, batching, mlir

from ._lowering import lower_cpu
from ._lowering_cuda import lower_cuda
from ._partition import block_counts, blocked_reduction, sharding_factors, thread_split
from ._select import evaluate_at_selection
from .autodiff import jvp, sum_tangent_formula, transpose
from .codegen.spec import ROLE_INNER, ROLE_OUTER, ROLE_PARAM, KernelSpec
from .formulas import CAT_I, CAT_J, Node, Var, make, variables
from .reductions import INDEX, reduction

reduction_p = Primitive("jaxkeops_reduction")
reduction_p.multiple_results = True


def _abstract_eval(*avals, spec: KernelSpec, n_out: int, n_red: int):
    avals = avals[:len(spec.args)]  # a block-sparse call's range arrays follow
    batch = np.broadcast_shapes(*(tuple(a.shape[:-2]) for a in avals)) if avals else ()
    result = []
    for out in spec.outputs:
        dtype = spec.index_dtype if out.kind == INDEX else spec.value_dtype
        result.append(jax.core.ShapedArray(tuple(batch) + (n_out, out.width), jnp.dtype(dtype)))
    return result


@functools.cache
def _jitted(spec: KernelSpec, n_out: int, n_red: int):
    return jax.jit(lambda *a: reduction_p.bind(*a, spec=spec, n_out=n_out, n_red=n_red))


def _impl(*args, spec, n_out, n_red):
    """Eager calls run through a jitted call of the primitive, one per kernel and size."""
    return _jitted(spec, n_out, n_red)(*args)


reduction_p.def_impl(_impl)
reduction_p.def_abstract_eval(_abstract_eval)
# ----------------------------------------------------------------------------------------------
# Lowering. For several devices (under jit with sharded data) a reduction becomes one kernel call
# over S_i x S_j blocks of pairs, exposed as batch dims that XLA's SPMD partitioner splits, and a
# merge of the partial results (_partition.py). The blocked call binds `block_reduction_p`.
block_reduction_p = Primitive("jaxkeops_block_reduction")
block_reduction_p.multiple_results = True
block_reduction_p.def_abstract_eval(_abstract_eval)


def _spmd_devices(ctx) -> int:
    """How many devices XLA's SPMD partitioner spreads this call over (1 under shard_map or
    pmap, whose bodies run per device)."""
    context = ctx.module_context.axis_context
    if getattr(context, "manual_axes", None):
        return 1
    count = getattr(context, "num_devices", None)
    if count is None:
        mesh = getattr(context, "mesh", None)
        count = mesh.size if mesh is not None else 1
    return int(count)


def _partitioning_attributes(ctx, spec: KernelSpec) -> dict:
    """Tells XLA that the call's leading dims are batch dims it may split (GSPMD reads
    num_batch_dims, Shardy the sharding rule); rows and feature dims stay whole."""
    n_batch = len(ctx.avals_out[0].shape) - 2
    attributes = {"mhlo.frontend_attributes": mlir.ir_attribute({"num_batch_dims": str(n_batch)})}
    if jax.config.jax_use_shardy_partitioner:
        f = sharding_factors(spec.roles, [a.shape for a in ctx.avals_in],
                             [a.shape for a in ctx.avals_out])

        def mapping(dims):
            return sdy.TensorMappingAttr.get(
                dim_mappings=[sdy.DimMappingAttr.get(factor_indices=[d]) for d in dims])

        attributes["sdy.sharding_rule"] = sdy.OpShardingRuleAttr.get(
            factor_sizes=list(f.sizes), operand_mappings=[mapping(o) for o in f.operands],
            result_mappings=[mapping(r) for r in f.results], is_custom=True,
            reduction_factors=[], need_replication_factors=list(f.replicated),
            permutation_factors=[])
    return attributes


def _lower_blocks_cpu(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int):
    return lower_cpu(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red,
                     extra_attributes=_partitioning_attributes(ctx, spec))


def _lower_blocks_cuda(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int):
    return lower_cuda(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red,
                      extra_attributes=_partitioning_attributes(ctx, spec))


def _bind_blocks(spec: KernelSpec, operands: Sequence, n_out: int, n_red: int) -> list:
    return block_reduction_p.bind(*operands, spec=spec, n_out=n_out, n_red=n_red)


def _lower_blocked(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int,
                   counts: tuple[int, int]):
    return mlir.lower_fun(
        lambda *xs: blocked_reduction(spec, xs, n_out, n_red, counts, _bind_blocks),
        multiple_results=True)(ctx, *operands)


def _lower_spread(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int, devices: int):
    return _lower_blocked(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red,
                          counts=block_counts(spec, n_out, n_red, devices))


def _cpu_threads() -> int:
    """The cores XLA's CPU thread pool has: those this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _ranges_of_axis(ctx, operands, spec: KernelSpec):
    """A block-sparse call's context and operands: the kernel's, then the 3 range arrays of the
    reduced axis (the first half of the 6-tuple for axis=1, the second for axis=0)."""
    n = len(spec.args)
    half = slice(n, n + 3) if spec.axis == 1 else slice(n + 3, n + 6)
    avals = [*ctx.avals_in[:n], *ctx.avals_in[half]]
    return ctx.replace(avals_in=avals), [*operands[:n], *operands[half]]


def _lower_cuda(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int):
    if spec.ranged:
        # Not split over devices: block sizes would cut the clusters (XLA gathers the operands).
        ctx, operands = _ranges_of_axis(ctx, operands, spec)
        return lower_cuda(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red)
    if (devices := _spmd_devices(ctx)) > 1:
        return _lower_spread(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red,
                             devices=devices)
    return lower_cuda(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red)


def _lower_cpu(ctx, *operands, spec: KernelSpec, n_out: int, n_red: int):
    if spec.storage_dtype is None and spec.ranged:
        # Not split over devices: block sizes would cut the clusters (XLA gathers the operands).
        ctx, operands = _ranges_of_axis(ctx, operands, spec)
        return lower_cpu(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red)
    if spec.storage_dtype is None:
        if (devices := _spmd_devices(ctx)) > 1:
            return _lower_spread(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red,
                                 devices=devices)
        rows = math.prod(ctx.avals_out[0].shape[:-1])
        if (s_j := thread_split(spec, rows, n_red, _cpu_threads())) > 1:
            return _lower_blocked(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red,
                                  counts=(1, s_j))
        return lower_cpu(ctx, *operands, spec=spec, n_out=n_out, n_red=n_red)
    # CPU kernels compute half-precision data in float32: convert around a float32 kernel.
    wide = dataclasses.replace(spec, storage_dtype=None)

    def widened(*args):
        n = len(spec.args)  # range arrays (after the kernel operands) stay int32
        outs = reduction_p.bind(*(a.astype(jnp.float32) for a in args[:n]), *args[n:],
                                spec=wide, n_out=n_out, n_red=n_red)
        return [o if out.kind == INDEX else o.astype(spec.storage_dtype)
                for o, out in zip(outs, spec.outputs)]

    return mlir.lower_fun(widened, multiple_results=True)(ctx, *operands)


mlir.register_lowering(reduction_p, _lower_cpu, platform="cpu")
mlir.register_lowering(reduction_p, _lower_cuda, platform="cuda")
mlir.register_lowering(block_reduction_p, _lower_blocks_cpu, platform="cpu")
mlir.register_lowering(block_reduction_p, _lower_blocks_cuda, platform="cuda")


def bind_reduction(spec: KernelSpec, operands: Sequence, n_out: int, n_red: int) -> list:
    return reduction_p.bind(*operands, spec=spec, n_out=int(n_out), n_red=int(n_red))


def _bind_formulas(base: KernelSpec, formulas: tuple[Node, ...], reduction: str, axis: int,
                   operands: dict[Var, jax.Array], n_out: int, n_red: int,
                   k: int | None = None, ranges: Sequence = ()) -> list:
    """Binds a new reduction of `formulas`, taking from `operands` the variables they use;
    `ranges`: the base's 6 range arrays (a block-sparse derivative keeps them, and one over the
    other axis uses their other half)."""
    used = tuple(variables(*formulas))
    spec = dataclasses.replace(base, formulas=formulas, reduction=reduction, axis=axis, k=k,
                               args=used)
    return bind_reduction(spec, [*(operands[v] for v in used), *ranges], n_out, n_red)


class _Fresh:
    """New variable indices above those of a spec."""

    def __init__(self, spec: KernelSpec):
        self.next = max((v.index for v in spec.args), default=-1) + 1

    def var(self, dim: int, cat: int) -> Var:
        self.next += 1
        return Var(self.next - 1, dim, cat)


def _outer_cat(spec: KernelSpec) -> int:
    return CAT_I if spec.axis == 1 else CAT_J


# ----------------------------------------------------------------------------------------------
# JVP.
def _zero_tangent(x) -> ad.Zero:
    """A symbolic zero tangent for `x` (float0 for integer outputs)."""
    return ad.Zero(jax.typeof(x).to_tangent_aval())


def _jvp_rule(primals, tangents, *, spec: KernelSpec, n_out: int, n_red: int):
    outs = bind_reduction(spec, primals, n_out, n_red)
    ranges = primals[len(spec.args):]
    fresh = _Fresh(spec)
    operands = dict(zip(spec.args, primals))
    tangent_vars = {}
    for var, t in zip(spec.args, tangents):
        if type(t) is not ad.Zero:
            tv = fresh.var(var.dim, var.cat)
            tangent_vars[var] = tv
            operands[tv] = t
    zero_tangents = [_zero_tangent(o) for o in outs]
    rule = reduction(spec.reduction)
    if rule.derivative == "none" or not tangent_vars:
        return outs, zero_tangents
    if rule.derivative == "select":
        return outs, _selecting_tangents(spec, outs, operands, tangent_vars, n_out, n_red,
                                         ranges)
    inputs = {}
    for name in rule.tangent_inputs:
        if name == "lse":
            value = _bind_formulas(spec, spec.formulas[:1], "LogSumExp", spec.axis, operands,
                                   n_out, n_red, ranges=ranges)[0]
        else:
            value = outs[("out", "sign").index(name)]
        inputs[name] = fresh.var(value.shape[-1], _outer_cat(spec))
        operands[inputs[name]] = value
    formula = sum_tangent_formula(spec.reduction, spec.formulas, tangent_vars, inputs)
    if formula is None:
        return outs, zero_tangents
    tangent = _bind_formulas(spec, (formula,), "Sum", spec.axis, operands, n_out, n_red,
                             ranges=ranges)[0]
    # Only the first output moves: the other one of LogSumExpSigned is a sign.
    return outs, [tangent, *zero_tangents[1:]]


def _selecting_tangents(spec, outs, operands, tangent_vars, n_out, n_red, ranges):
    """Min/Max/KMin: dF at the pairs the reduction selected (index outputs: zero tangents)."""
    kinds = [o.kind for o in spec.outputs]
    if INDEX in kinds:
        indices = outs[kinds.index(INDEX)]
    else:
        selection = reduction(spec.reduction).selection
        indices = _bind_formulas(spec, spec.formulas, selection, spec.axis, operands, n_out,
                                 n_red, k=spec.k, ranges=ranges)[0]
    derivative = jvp(spec.formulas[0], tangent_vars)
    result = []
    for out, kind in zip(outs, kinds):
        if kind == INDEX or derivative is None:
            result.append(_zero_tangent(out))
            continue
        values = evaluate_at_selection(derivative, spec.formulas[0].dim, spec, operands,
                                       jax.lax.stop_gradient(indices))
        result.append(values.astype(out.dtype))
    return result


ad.primitive_jvps[reduction_p] = _jvp_rule


# ----------------------------------------------------------------------------------------------
# Transpose.
def _transpose_rule(cts, *operands, spec: KernelSpec, n_out: int, n_red: int):
    if spec.reduction != "Sum":
        raise NotImplementedError(f"jaxkeops: {spec.reduction} is not linear; only Sum "
                                  "reductions are transposed")
    ct = cts[0]
    linear = [v for v, op in zip(spec.args, operands) if ad.is_undefined_primal(op)]
    if type(ct) is ad.Zero or not linear:
        return [None] * len(operands)
    fresh = _Fresh(spec)
    g = fresh.var(spec.formulas[0].dim, _outer_cat(spec))
    known = {v: op for v, op in zip(spec.args, operands) if not ad.is_undefined_primal(op)}
    known[g] = ct
    cotangents = transpose(spec.formulas[0], linear, g)
    groups: dict[int, list[Var]] = {}
    for v in linear:
        if cotangents[v] is not None:
            groups.setdefault(spec.role(v), []).append(v)
    results: dict[Var, jax.Array] = {}
    for role, members in groups.items():
        axis = 1 - spec.axis if role == ROLE_INNER else spec.axis
        rows_out, rows_red = (n_red, n_out) if role == ROLE_INNER else (n_out, n_red)
        formula = cotangents[members[0]]
        for v in members[1:]:
            formula = make("Concat", formula, cotangents[v])
        out = _bind_formulas(spec, (formula,), "Sum", axis, known, rows_out, rows_red,
                             ranges=operands[len(spec.args):])[0]
        start = 0
        for v in members:
            part = out[..., start:start + v.dim]
            start += v.dim
            if role == ROLE_PARAM:
                part = jnp.sum(part, axis=-2, keepdims=True)
            results[v] = part
    return [*(_sum_to_shape(results[v], op.aval.shape) if v in results else None
              for v, op in zip(spec.args, operands)),
            *(None for _ in operands[len(spec.args):])]


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums `x` over the batch dims that were broadcast from size 1 in `shape`."""
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape)) if a != b)
    if axes:
        x = jnp.sum(x, axis=axes, keepdims=True)
    return x.reshape(shape)


ad.primitive_transposes[reduction_p] = _transpose_rule


# ----------------------------------------------------------------------------------------------
# Batching.
def _batch_rule(args, dims, *, spec, n_out, n_red):
    """vmap: the mapped axis becomes one more leading batch dim of the kernel (no loop)."""
    n = len(spec.args)
    if any(d is not None for d in dims[n:]):
        raise NotImplementedError(
            "jaxkeops: vmap over block-sparse ranges is not supported: every batch element "
            "shares one ranges tuple (pass it unbatched, or loop over the ranges)")
    moved = []
    for a, d in zip(args[:n], dims[:n]):
        if d is None:  # not mapped: a size-1 batch dim, broadcast inside the kernel
            moved.append(a.reshape((1,) + a.shape))
        else:
            moved.append(jnp.moveaxis(a, d, 0))
    outs = reduction_p.bind(*moved, *args[n:], spec=spec, n_out=n_out, n_red=n_red)
    return outs, [0] * len(outs)


batching.primitive_batchers[reduction_p] = _batch_rule

__all__ = ["ROLE_OUTER", "bind_reduction", "reduction_p"]
