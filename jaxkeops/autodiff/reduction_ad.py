"""The derivative of each reduction, as formulas for new generated reductions.

The JVP of every value-producing reduction is a Sum reduction whose formula is linear in the
tangent variables, so reverse mode only ever has to transpose a Sum:

    Sum:               d out_i = sum_j dF_ij
    LogSumExp:         d out_i = sum_j exp(F_ij - out_i) (dF_ij w_j + dw_j)     (w = 1 unweighted)
    LogSumExpSigned:   d out_i = sign_i sum_j exp(F_ij - out_i) (dF_ij w_j + dw_j)
                       (out = log|S|, S = sign exp(out): d out = dS / S); the sign has a zero
                       tangent
    SumSoftMaxWeight:  d out_i = sum_j exp(F_ij - lse_i) (dF_ij (v_j - out_i) + dv_j)
    Min, Max, KMin:    d out_i = dF at the selected pairs (evaluated densely, see primitive.py)

`out_i`, `sign_i` and `lse_i` enter these formulas as new variables indexed like the output.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..formulas import Node, Var, make
from ..formulas.algebra import add, mul, sub
from .formula_ad import jvp

# The reductions whose JVP is a Sum reduction built here; the rest select pairs.
SUM_TANGENT = ("Sum", "LogSumExp", "LogSumExpSigned", "SumSoftMaxWeight")
SELECTING = {"Min": "ArgMin", "Max": "ArgMax", "Min_ArgMin": None, "Max_ArgMax": None,
             "KMin": "ArgKMin", "KMin_ArgKMin": None}
INDEX_ONLY = ("ArgMin", "ArgMax", "ArgKMin")


def sum_tangent_formula(
    reduction: str,
    formulas: tuple[Node, ...],
    tangents: Mapping[Var, Var],
    out: Var | None = None,
    lse: Var | None = None,
    sign: Var | None = None,
) -> Node | None:
    """The formula of the Sum reduction that is the JVP of the first output of `reduction`
    (None if zero)."""
    d = [jvp(f, tangents) for f in formulas]
    if reduction == "Sum":
        return d[0]
    f = formulas[0]
    if reduction in ("LogSumExp", "LogSumExpSigned"):
        weighted = len(formulas) > 1
        if weighted:
            w, dw = formulas[1], d[1]
            inner = add(mul(d[0], w), dw)
        else:
            inner = d[0]
        if inner is None:
            return None
        tangent = make("Mult", make("Exp", make("Subtract", f, out)), inner)
        return tangent if reduction == "LogSumExp" else make("Mult", sign, tangent)
    if reduction == "SumSoftMaxWeight":
        v, dv = formulas[1], d[1]
        inner = add(mul(d[0], sub(v, out)), dv)
        if inner is None:
            return None
        return make("Mult", make("Exp", make("Subtract", f, lse)), inner)
    raise ValueError(f"{reduction} has no Sum-shaped JVP")
