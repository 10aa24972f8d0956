"""Sums of (scalar x vector variable): the reduction becomes a small matrix product.

A Sum reduction whose formula is a combination  F_ij = sum_t s_t(i, j) v_t  of a few scalar
formulas s_t and whole variables v_t of a long dimension D is computed as

    sum_j F_ij = sum_{t: v_t = x_i outer}  x_i * (sum_j s_t(i, j))
               + sum_{t: v_t = y_j inner}  sum_j s_t(i, j) y_j

The kernel evaluates only the scalars s_t per pair; the second kind of term is a product of the
(rows x reduced rows) matrix of s_t with the (reduced rows x D) matrix y, which the CPU reduction
accumulates row by row of y, D/16 fused multiply-adds per pair, as a GEMM micro-kernel does.
Without it, every pair computes and accumulates a D-vector: 3 D operations and D accumulators
per output row, which do not fit in registers. The gradient of a kernel sum with respect to x,
sum_j w_ij (x_i - y_j), is the typical case.

Like the dot-product form of a squared distance, x_i sum_j s - sum_j s y_j rounds differently
from sum_j s (x_i - y_j) when |x_i| is much larger than |x_i - y_j| (by about eps |x_i| / |x_i -
y_j| relatively), so it is used from D = 32 on, where it pays.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..formulas import Const, Node, Op, Var, make
from .spec import ROLE_INNER, ROLE_OUTER, KernelSpec

MIN_DIM = 32


@dataclass(frozen=True)
class LinearTerm:
    coef: int  # index of the scalar formula
    var: Var  # the whole variable it multiplies
    factor: float  # a constant factor


@dataclass(frozen=True)
class LinearPlan:
    coefs: tuple[Node, ...]  # scalar formulas, evaluated per pair
    terms: tuple[LinearTerm, ...]
    dim: int


# A term: (constant factor, scalar formula or None for 1, variable).
Term = tuple[float, "Node | None", Var]


def _times(terms: list[Term], factor: float = 1.0, scalar: Node | None = None) -> list[Term]:
    out = []
    for c, s, v in terms:
        if scalar is not None:
            s = scalar if s is None else make("Mult", scalar, s)
        out.append((c * factor, s, v))
    return out


def _scalar_terms(node: Node) -> tuple[float, Node | None] | None:
    """A scalar (possibly broadcast to a vector as s * c[D]) as (constant, formula or None)."""
    if isinstance(node, Const):
        return node.value, None
    if isinstance(node, Op) and node.name == "Minus":
        inner = _scalar_terms(node.args[0])
        return None if inner is None else (-inner[0], inner[1])
    if isinstance(node, Op) and node.name == "Mult":
        a, b = (_scalar_terms(x) for x in node.args)
        if a is not None and b is not None:
            s = a[1] if b[1] is None else b[1] if a[1] is None else make("Mult", a[1], b[1])
            return a[0] * b[0], s
    if isinstance(node, Op) and node.name == "Divide" and isinstance(node.args[1], Const):
        inner = _scalar_terms(node.args[0])
        return None if inner is None else (inner[0] / node.args[1].value, inner[1])
    if node.dim == 1:
        return 1.0, node
    return None


def _terms(node: Node) -> list[Term] | None:
    """node = sum of constant * scalar * variable, as a list of terms; None if it is not."""
    if isinstance(node, Var):
        return [(1.0, None, node)]
    if not isinstance(node, Op):
        return None
    name, args = node.name, node.args
    if name in ("Add", "Subtract") and args[0].dim == args[1].dim == node.dim:
        left, right = _terms(args[0]), _terms(args[1])
        if left is None or right is None:
            return None
        return left + (_times(right, -1.0) if name == "Subtract" else right)
    if name == "Minus":
        inner = _terms(args[0])
        return None if inner is None else _times(inner, -1.0)
    if name == "Mult":
        for s, rest in ((args[0], args[1]), (args[1], args[0])):
            scalar = _scalar_terms(s)
            if scalar is not None and rest.dim == node.dim:
                inner = _terms(rest)
                if inner is not None:
                    return _times(inner, *scalar)
        return None
    if name == "Divide" and isinstance(args[1], Const) and args[1].dim == 1:
        inner = _terms(args[0])
        return None if inner is None else _times(inner, 1.0 / args[1].value)
    return None


def plan_linear_sum(spec: KernelSpec) -> LinearPlan | None:
    """The plan of a Sum reduction that is worth computing as a matrix product, or None."""
    if spec.reduction != "Sum" or spec.sum_scheme != "block" or len(spec.formulas) != 1:
        return None
    formula = spec.formulas[0]
    if formula.dim < MIN_DIM:
        return None
    terms = _terms(formula)
    if not terms or len(terms) > 4:
        return None
    roles = {v: r for v, r in zip(spec.args, spec.roles)}
    if not any(roles.get(v) == ROLE_INNER for _, _, v in terms):
        return None  # nothing to multiply: the plain schedule is as good
    coefs: list[Node] = []
    planned = []
    for factor, scalar, var in terms:
        if roles.get(var) not in (ROLE_OUTER, ROLE_INNER) or var.dim != formula.dim:
            return None
        scalar = Const(1.0) if scalar is None else scalar
        if scalar not in coefs:
            coefs.append(scalar)
        planned.append(LinearTerm(coefs.index(scalar), var, factor))
    return LinearPlan(tuple(coefs), tuple(planned), formula.dim)
