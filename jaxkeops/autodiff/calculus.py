"""KeOps's symbolic calculus on formulas: Grad, Diff, GradMatrix, Divergence, Laplacian,
TraceOperator and AdjointOperator.

Each one returns an ordinary formula, built from the symbolic JVP and transposition of
`formula_ad` (no op of its own exists at run time). The variable of differentiation must be a
variable node (a `Var`); other variables, including those that only appear in a gradient input,
are ordinary variables of the result. A derivative that is identically zero is a zero constant.

`CALCULUS` maps KeOps's formula-string names to these functions, for `parse_formula(...,
functions=CALCULUS)`; the parser itself does not import this module (imports point downwards).
"""

from __future__ import annotations

from ..formulas import CAT_P, Const, Node, Var, make, variables
from ..formulas.algebra import add, mul, widen
from ..formulas.functions import FormulaArgumentError
from .formula_ad import jvp, transpose

__all__ = ["CALCULUS", "adjoint_operator", "diff", "divergence", "grad", "grad_matrix",
           "laplacian", "trace_operator"]


def _formula(name: str, f, index: int = 0) -> Node:
    if not isinstance(f, Node):
        raise TypeError(f"{name}: argument {index + 1} must be a formula, got {type(f).__name__}")
    return f


def _variable(name: str, v, index: int = 1) -> Var:
    if not isinstance(v, Var):
        raise FormulaArgumentError(
            index, f"{name}: argument {index + 1} must be a variable to differentiate with "
                   f"respect to (an alias or Var(ind, dim, cat)), got {v!r}")
    return v


def _fresh(dim: int, *formulas: Node) -> Var:
    """A variable whose index no variable of `formulas` uses."""
    used = [v.index for v in variables(*formulas)]
    return Var(max(used, default=-1) + 1, dim, 0)


def _direction(name: str, e: Node, dim: int, what: str, index: int) -> Node:
    """`e` as a formula of dimension `dim` (a scalar is broadcast)."""
    _formula(name, e, index)
    if e.dim not in (1, dim):
        raise FormulaArgumentError(index, f"{name}: {what} must have dim {dim} (or 1), got "
                                          f"{e.dim}")
    return widen(e, dim)


def _basis(dim: int, i: int) -> Node:
    """The i-th vector of the standard basis of R^dim."""
    return make("ElemT", Const(1.0), params=(dim, i))


def _zero_or(node: Node | None, dim: int) -> Node:
    return Const(0.0, dim) if node is None else node


def _linearization(f: Node, v: Var) -> tuple[Node | None, Var]:
    """The differential of f at v, as a formula linear in a fresh tangent variable t (which
    transposition then eliminates: it never reaches a result)."""
    t = _fresh(v.dim, f, v)
    return jvp(f, {v: t}), t


def _pullback(tangent: Node | None, t: Var, cotangent: Node) -> Node | None:
    if tangent is None:
        return None
    return transpose(tangent, [t], cotangent)[t]


def grad(f: Node, v: Var, e: Node | None = None) -> Node:
    """KeOps's Grad(f, v, e): the gradient of <f, e> with respect to v, i.e. the adjoint of the
    differential of f at v applied to e (dim v.dim; e has f's dim, or is a scalar).

    Without e, as KeOps: a new variable of f's dim, indexed one past f's largest index, of the
    other category than v (i <-> j)."""
    f, v = _formula("Grad", f), _variable("Grad", v)
    if e is None:
        if v.cat == CAT_P:
            raise FormulaArgumentError(1, "Grad: without a gradient input, v must be an i- or "
                                          "j-variable (the input takes the other category)")
        e = Var(max((u.index for u in variables(f)), default=-1) + 1, f.dim, 1 - v.cat)
    e = _direction("Grad", e, f.dim, "the gradient input e", 2)
    tangent, t = _linearization(f, v)
    return _zero_or(_pullback(tangent, t, e), v.dim)


def diff(f: Node, v: Var, u: Node) -> Node:
    """KeOps's Diff(f, v, u): the differential of f with respect to v applied to u (forward
    mode; dim f.dim, u has v's dim or is a scalar)."""
    f, v = _formula("Diff", f), _variable("Diff", v)
    u = _direction("Diff", u, v.dim, "the direction u", 2)
    return _zero_or(jvp(f, {v: u}), f.dim)


def grad_matrix(f: Node, v: Var) -> Node:
    """KeOps's GradMatrix(f, v): the gradients of the components of f, one after the other
    (dim f.dim * v.dim): component i * v.dim + k is d f_i / d v_k."""
    f, v = _formula("GradMatrix", f), _variable("GradMatrix", v)
    tangent, t = _linearization(f, v)
    rows = [_zero_or(_pullback(tangent, t, _basis(f.dim, i)), v.dim) for i in range(f.dim)]
    out = rows[0]
    for row in rows[1:]:
        out = make("Concat", out, row)
    return out


def divergence(f: Node, v: Var) -> Node:
    """KeOps's Divergence(f, v) = sum_i d f_i / d v_i, for f of v's dim."""
    f, v = _formula("Divergence", f), _variable("Divergence", v)
    if f.dim != v.dim:
        raise ValueError(f"Divergence: the formula (dim {f.dim}) and the variable {v!r} must "
                         "have the same dim")
    return _diagonal_sum(f, v, None)


def laplacian(f: Node, v: Var) -> Node:
    """KeOps's Laplacian(f, v) = sum_i d^2 f / d v_i^2, for a scalar f."""
    f, v = _formula("Laplacian", f), _variable("Laplacian", v)
    if f.dim != 1:
        raise ValueError(f"Laplacian: the formula must be a scalar, got dim {f.dim}")
    return divergence(grad(f, v, Const(1.0)), v)


def _diagonal_sum(f: Node, v: Var, w: Node | None) -> Node:
    """sum_i w_i d f_i / d v_i (w = 1 when None), by one forward derivative per axis."""
    out = None
    for i in range(v.dim):
        term = jvp(f, {v: _basis(v.dim, i)})
        term = None if term is None else make("Elem", term, params=(i,))
        if w is not None and term is not None:
            term = mul(make("Elem", w, params=(i,)), term)
        out = add(out, term)
    return _zero_or(out, 1)


def _require_linear(name: str, f: Node, v: Var) -> None:
    """KeOps's linear operators need f linear in v (here: affine; the offset is ignored)."""
    try:
        transpose(f, [v], _fresh(f.dim, f, v))
    except (ValueError, NotImplementedError) as err:
        raise ValueError(f"{name}: the formula must be linear in {v!r}, which {f!r} is not "
                         f"({err})") from None


def trace_operator(f: Node, v: Var, w: Node | None = None) -> Node:
    """KeOps's TraceOperator(f, v, w): the trace of the linear map v -> f(v), whose matrix M
    is f.dim x v.dim. For f of v's dim: tr(M) = sum_i M_ii, or sum_i w_i M_ii for a weight of
    v's dim, or w tr(M) for a scalar w. For a scalar f: sum_i M_i (M is a row), or
    sum_i w_i M_i, or w sum_i M_i."""
    f, v = _formula("TraceOperator", f), _variable("TraceOperator", v)
    if f.dim not in (1, v.dim):
        raise ValueError(f"TraceOperator: the formula must have dim 1 or {v.dim} (the dim of "
                         f"{v!r}), got {f.dim}")
    if w is not None and (not isinstance(w, Node) or w.dim not in (1, v.dim)):
        raise FormulaArgumentError(2, f"TraceOperator: the weight must be a formula of dim 1 or "
                                      f"{v.dim}, got {w!r}")
    _require_linear("TraceOperator", f, v)
    scalar_weight = w is not None and w.dim == 1 and v.dim > 1
    vector_weight = None if w is None or scalar_weight else widen(w, v.dim)
    if f.dim == v.dim:
        out = _diagonal_sum(f, v, vector_weight)
    else:  # the sum of the row M, or its weighted sum: M applied to 1 or to w
        direction = vector_weight if vector_weight is not None else Const(1.0, v.dim)
        out = _zero_or(jvp(f, {v: direction}), 1)
    return make("Mult", w, out) if scalar_weight else out


def adjoint_operator(f: Node, v: Var, u: Node) -> Node:
    """KeOps's AdjointOperator(f, v, u): for f linear in v, f(v) = M v, the adjoint M^T u
    (dim v.dim; u has f's dim or is a scalar)."""
    f, v = _formula("AdjointOperator", f), _variable("AdjointOperator", v)
    u = _direction("AdjointOperator", u, f.dim, "the input u", 2)
    _require_linear("AdjointOperator", f, v)
    return _zero_or(transpose(f, [v], u)[v], v.dim)


CALCULUS = {
    "Grad": grad,
    "Diff": diff,
    "GradMatrix": grad_matrix,
    "Divergence": divergence,
    "Laplacian": laplacian,
    "TraceOperator": trace_operator,
    "Trace": trace_operator,
    "AdjointOperator": adjoint_operator,
    "Adjoint": adjoint_operator,
}
