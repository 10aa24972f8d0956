"""The one entry point LazyTensor and Genred share: validate, build the kernel spec, bind."""

from __future__ import annotations

from collections.abc import Sequence

from .._shapes import check_call, index_dtype, kernel_operands
from ..codegen.spec import HALF_DTYPES, KernelSpec
from ..formulas import Node, Var
from ..primitive import bind_reduction


def run_reduction(
    formulas: Sequence[Node],
    reduction: str,
    axis: int,
    variables: Sequence[Var],
    arrays: Sequence,
    names: Sequence[str],
    k: int | None = None,
    sum_scheme: str = "block",
) -> tuple:
    """Reduces `formulas` over i (axis=0) or j (axis=1); one array per output of the reduction.

    `arrays` follow the Genred layout: (*batch, M, dim) for i-variables, (*batch, N, dim) for
    j-variables and (*batch, dim) for parameters. Outputs are (*batch, rows, *shape).
    """
    layout = check_call(variables, arrays, names)
    half = layout.dtype in HALF_DTYPES
    spec = KernelSpec(
        formulas=tuple(formulas), reduction=reduction, axis=axis,
        dtype="float32" if half else layout.dtype, index_dtype=index_dtype(), k=k,
        sum_scheme=sum_scheme, args=tuple(variables),
        storage_dtype=layout.dtype if half else None,
    )
    n_out, n_red = (layout.n_i, layout.n_j) if axis == 1 else (layout.n_j, layout.n_i)
    for n, label in ((n_out, "output"), (n_red, "reduced")):
        if n < 0:
            missing = "i" if (axis == 1) == (label == "output") else "j"
            raise ValueError(
                f"{spec.describe()}: the formula has no {missing}-variable, so the number of "
                f"{label} rows is unknown; add a Vi/Vj variable of that axis"
            )
    operands = kernel_operands(spec, arrays, layout.batch)
    outs = bind_reduction(spec, operands, n_out, n_red)
    return tuple(
        o.reshape(layout.batch + (n_out,) + out.shape) for o, out in zip(outs, spec.outputs)
    )
