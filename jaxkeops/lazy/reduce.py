"""The one entry point LazyTensor and Genred share: validate, build the kernel spec, bind."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._shapes import check_call, index_dtype, kernel_operands
from ..codegen.spec import HALF_DTYPES, KernelSpec
from ..formulas import Node, Var
from ..primitive import bind_reduction
from ..reductions import DEFAULT_SUM_SCHEME


def run_reduction(
    formulas: Sequence[Node],
    reduction: str,
    axis: int,
    variables: Sequence[Var],
    arrays: Sequence,
    names: Sequence[str],
    k: int | None = None,
    sum_scheme: str = DEFAULT_SUM_SCHEME,
    accumulator: str | None = None,
    pad: bool = False,
    ranges: Any = None,
) -> tuple:
    """Reduces `formulas` over i (axis=0) or j (axis=1); one array per output of the reduction.

    `arrays` follow the Genred layout: (*batch, M, dim) for i-variables, (*batch, N, dim) for
    j-variables and (*batch, dim) for parameters. Outputs are (*batch, rows, *shape). A formula
    with no variable of the output axis gives one output row, one with none of the reduced
    axis reduces one row (as in pykeops).

    `sum_scheme` ("direct", "block", "kahan", or KeOps' "auto", "direct_sum", "block_sum",
    "kahan_scheme") and `accumulator` (None/"auto", "float32" or "float64") say how sum-type
    reductions add their terms; other reductions take only the defaults (see KernelSpec).
    K-reductions need K <= the reduced axis' size (a ValueError naming both, at trace time),
    unless `pad`: the entries past the last row are then +inf with index -1.

    `ranges`: KeOps's block-sparsity 6-tuple (`jaxkeops.cluster`): a reduction over j uses its
    first half, one over i its second; its derivatives keep it. Every batch element shares it.
    """
    layout = check_call(variables, arrays, names)
    half = layout.dtype in HALF_DTYPES
    spec = KernelSpec(
        formulas=tuple(formulas), reduction=reduction, axis=axis,
        dtype="float32" if half else layout.dtype, index_dtype=index_dtype(), k=k,
        sum_scheme=sum_scheme, args=tuple(variables),
        storage_dtype=layout.dtype if half else None, accumulator=accumulator,
    )
    # An axis without variables (-1) has one row: the formula is constant along it. An axis whose
    # variables have no rows stays empty (each reduction then gives its documented value).
    n_i = layout.n_i if layout.n_i >= 0 else 1
    n_j = layout.n_j if layout.n_j >= 0 else 1
    n_out, n_red = (n_i, n_j) if axis == 1 else (n_j, n_i)
    spec.check_reduced_rows(n_red, pad=pad)
    operands = kernel_operands(spec, arrays, layout.batch)
    if ranges is not None:
        spec = dataclasses.replace(spec, ranged=True)
        operands = [*operands, *check_ranges(ranges)]
    outs = bind_reduction(spec, operands, n_out, n_red)
    return tuple(
        o.reshape(layout.batch + (n_out,) + out.shape) for o, out in zip(outs, spec.outputs)
    )


RANGE_NAMES = ("ranges_i", "slices_i", "redranges_j", "ranges_j", "slices_j", "redranges_i")


def check_ranges(ranges: Any) -> list:
    """The 6 arrays of a block-sparsity pattern as int32, with their shapes checked (their
    values, against M and N, are checked by the kernel call: they may be traced here)."""
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        raise ValueError("ranges must be the 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, "
                         "slices_j, redranges_i) of jaxkeops.cluster.from_matrix, got "
                         f"{type(ranges).__name__} {ranges!r:.80}")
    arrays = []
    for name, r in zip(RANGE_NAMES, ranges):
        dtype = np.dtype(r.dtype if hasattr(r, "dtype") else np.asarray(r).dtype)
        if dtype.kind not in "iu":
            raise TypeError(f"ranges: {name} must hold integers, got dtype {dtype}")
        arrays.append(jnp.asarray(r, jnp.int32))
    for half in (0, 3):
        rng, slices, red = (arrays[half + k] for k in range(3))
        names = RANGE_NAMES[half:half + 3]
        if rng.ndim != 2 or rng.shape[1] != 2:
            raise ValueError(f"ranges: {names[0]} must have shape (clusters, 2), got {rng.shape}")
        if slices.shape != (rng.shape[0],):
            raise ValueError(f"ranges: {names[1]} must have shape ({rng.shape[0]},) like "
                             f"{names[0]} {rng.shape}, got {slices.shape}")
        if red.ndim != 2 or red.shape[1] != 2:
            raise ValueError(f"ranges: {names[2]} must have shape (intervals, 2), got "
                             f"{red.shape}")
    return arrays
