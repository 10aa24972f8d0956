"""The one entry point LazyTensor and Genred share: validate, build the kernel spec, bind."""

from __future__ import annotations

from collections.abc import Sequence

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
    outs = bind_reduction(spec, operands, n_out, n_red)
    return tuple(
        o.reshape(layout.batch + (n_out,) + out.shape) for o, out in zip(outs, spec.outputs)
    )
