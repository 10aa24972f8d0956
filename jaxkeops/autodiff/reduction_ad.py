"""The derivative of each reduction, as formulas for new generated reductions.

The JVP of every value-producing reduction whose table entry says `derivative="sum"` is a Sum
reduction whose formula (the entry's `tangent`) is linear in the tangent variables, so reverse
mode only ever has to transpose a Sum:

    Sum:               d out_i = sum_j dF_ij
    LogSumExp:         d out_i = sum_j exp(F_ij - out_i) (dF_ij w_j + dw_j)     (w = 1 unweighted)
    LogSumExpSigned:   d out_i = sign_i sum_j exp(F_ij - out_i) (dF_ij w_j + dw_j)
    SumSoftMaxWeight:  d out_i = sum_j exp(F_ij - lse_i) (dF_ij (v_j - out_i) + dv_j)

`derivative="select"` (Min, Max, KMin): dF at the selected pairs (evaluated densely, see
primitive.py); `derivative="none"`: index outputs, zero tangents. `out_i`, `sign_i` and
`lse_i` enter the formulas as new variables indexed like the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace

from ..formulas import Node, Var, make
from ..formulas.algebra import add, mul, sub
from ..reductions import reduction
from .formula_ad import jvp

# What the table's tangent rules build formulas with (None stands for a zero formula).
ALGEBRA = SimpleNamespace(make=make, add=add, mul=mul, sub=sub)

def sum_tangent_formula(name: str, formulas: tuple[Node, ...], tangents: Mapping[Var, Var],
                        inputs: Mapping[str, Var]) -> Node | None:
    """The formula of the Sum reduction that is the JVP of the first output of reduction
    `name` (None if zero); `inputs` holds the variables its `tangent_inputs` name."""
    spec = reduction(name)
    if spec.derivative != "sum":
        raise ValueError(f"{name} has no Sum-shaped JVP")
    missing = set(spec.tangent_inputs) - set(inputs)
    if missing:
        raise ValueError(f"the JVP of {name} needs the variables {sorted(missing)}")
    return spec.tangent(ALGEBRA, formulas, [jvp(f, tangents) for f in formulas], inputs)
