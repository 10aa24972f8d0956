"""Ops that read a vector as a sequence: B-spline bases on a knot vector, and soft-DTW between
two sequences, with KeOps's conventions.

Both are computed in the kernel by a short loop (Cox-de Boor's recursion, the soft-DTW dynamic
programme). A B-spline's tangent is a combination of B-splines of lower orders. Soft-DTW's
tangent is its gradient, computed by a second op (the backward pass of the programme), and
that gradient's own tangent differentiates the programme unrolled into ordinary formulas (one
vector formula per anti-diagonal), so that every derivative order stays symbolic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .algebra import add, const, div, dot, mul, neg, sub
from .expansion import backward, forward
from .nodes import CAT_I, Const, Node, Var, variables
from .optable import EmitContext, OpSpec, attach_rules, make, register
from .vector_ops import dims_error

# ---------------------------------------------------------------------------------------------
# BSpline(knots, x, k): the n - k - 1 B-spline basis functions of order (degree) k on the knot
# vector `knots` (dim n), at the scalar x. Order 0 is the indicator of t_j <= x < t_{j+1}
# (right-open: x at the last knot gives zeros), and order k comes from order k - 1 by
#     B_{i,k}(x) = w_{i,k} B_{i,k-1}(x) + (1 - w_{i+1,k}) B_{i+1,k-1}(x),
#     w_{i,k} = (x - t_i) / (t_{i+k} - t_i) where t_i < t_{i+k}, and 0 elsewhere.


def _bspline_dims(dims, params):
    (order,) = params
    knots, x = dims
    if order < 0:
        raise ValueError(f"BSpline: the order must be >= 0, got {order}")
    if x != 1:
        raise dims_error("BSpline", "x must be a scalar", dims)
    if knots < order + 2:
        raise dims_error("BSpline", f"order {order} needs at least {order + 2} knots", dims)
    return knots - order - 1


def _emit_bspline(c: EmitContext) -> list[str]:
    knots, x = c.args
    (order,) = c.params
    n = knots.dim

    def ratio(i: str, k: str) -> str:
        lo, hi = knots.at(i), knots.at(f"{i} + {k}")
        return f"jk::select({lo} < {hi}, (bs_x - {lo}) / ({hi} - {lo}), jk::cst<V>(0))"

    lines = ["{", f"  const V bs_x = {x.at(0)};", f"  V bs_b[{n - 1}];",
             f"  for (int bs_j = 0; bs_j < {n - 1}; ++bs_j) bs_b[bs_j] = jk::select("
             f"({knots.at('bs_j')} <= bs_x) & (bs_x < {knots.at('bs_j + 1')}), "
             "jk::cst<V>(1), jk::cst<V>(0));"]
    if order:
        lines += [f"  for (int bs_k = 1; bs_k <= {order}; ++bs_k) {{",
                  f"    V bs_w0 = {ratio('0', 'bs_k')};",
                  f"    for (int bs_i = 0; bs_i < {n - 1} - bs_k; ++bs_i) {{",
                  f"      const V bs_w1 = {ratio('bs_i + 1', 'bs_k')};",
                  "      bs_b[bs_i] = bs_w0 * bs_b[bs_i] + (jk::cst<V>(1) - bs_w1) * "
                  "bs_b[bs_i + 1];",
                  "      bs_w0 = bs_w1;", "    }", "  }"]
    lines += [f"  for (int bs_j = 0; bs_j < {c.dim}; ++bs_j) {c.out}[bs_j] = bs_b[bs_j];", "}"]
    return lines


def _bspline_ratios(xp, knots, x, k):
    """w_{i,k} for i = 0 .. n-k-1, with a denominator of 1 where it is masked so that no
    infinity appears (not even in a gradient)."""
    lo, hi = knots[..., :-k], knots[..., k:]
    mask = lo < hi
    den = xp.where(mask, hi - lo, 1.0)
    return xp.where(mask, (x - lo) / den, 0.0)


def _bspline_reference(xp, knots, x, order):
    n = knots.shape[-1]
    b = ((knots[..., :-1] <= x) & (x < knots[..., 1:])).astype(knots.dtype)
    for k in range(1, order + 1):
        w = _bspline_ratios(xp, knots, x, k)
        size = n - 1 - k
        b = w[..., :size] * b[..., :size] + (1.0 - w[..., 1:size + 1]) * b[..., 1:size + 1]
    return b


register(OpSpec(
    name="BSpline", arity=2, out_dim=_bspline_dims, emit=_emit_bspline,
    reference=_bspline_reference, param_kinds=("int",), method="bspline", smooth=False,
    example_dims=(6, 1), example_params=(2,),
    doc="BSpline(knots, x, k): the B-spline basis functions of order k on the knot vector at "
        "the scalar x (Cox-de Boor, right-open intervals, as KeOps)",
))


def _bspline_tangent(knots: Node, x: Node, order: int, dknots: Node | None,
                     dx: Node | None) -> Node | None:
    """The tangent of BSpline(knots, x, order) by the product rule on its recursion: order 0
    is locally constant, and order k combines the ratios w_k and BSpline of order k - 1."""
    if order == 0 or (dknots is None and dx is None):
        return None
    n = knots.dim
    size = n - 1 - order
    lower = make("BSpline", knots, x, params=(order - 1,))
    dlower = _bspline_tangent(knots, x, order - 1, dknots, dx)

    def window(v: Node | None, start: int, length: int) -> Node | None:
        return None if v is None else make("Extract", v, params=(start, length))

    lo, hi = window(knots, 0, n - order), window(knots, order, n - order)
    dlo, dhi = window(dknots, 0, n - order), window(dknots, order, n - order)
    mask = make("LessThan", lo, hi)
    den = make("IfElse", sub(mask, const(0.5)), sub(hi, lo), const(1.0))
    w = div(mul(mask, sub(x, lo)), den)
    # d[(x - lo) / (hi - lo)] = ((dx - dlo) - w (dhi - dlo)) / (hi - lo), where unmasked.
    dw = div(mul(mask, sub(sub(dx, dlo), mul(w, sub(dhi, dlo)))), den)
    head = add(mul(window(dw, 0, size), window(lower, 0, size)),
               mul(window(w, 0, size), window(dlower, 0, size)))
    tail = add(neg(mul(window(dw, 1, size), window(lower, 1, size))),
               mul(sub(const(1.0), window(w, 1, size)), window(dlower, 1, size)))
    return add(head, tail)


attach_rules("BSpline", jvp=lambda args, ts, out, params: _bspline_tangent(
    args[0], args[1], params[0], ts[0], ts[1]))

# ---------------------------------------------------------------------------------------------
# SoftDTW_SqDist(x, y, gamma): soft dynamic time warping between the sequences x (dim n) and
# y (dim m), with the base cost d(i, j) = (x_i - y_j)^2 and smoothing gamma (a scalar), as KeOps:
#     r(0, 0) = d(0, 0),  r(i, 0) = d(i, 0) + r(i-1, 0),  r(0, j) = d(0, j) + r(0, j-1),
#     r(i, j) = d(i, j) + softmin(r(i-1, j-1), r(i-1, j), r(i, j-1)),
#     softmin(a) = -gamma log sum_k exp(-a_k / gamma)   (computed shifted by min_k a_k),
# and the value is r(n-1, m-1). GradSoftDTW_SqDist(x, y, gamma) is its gradient with respect to
# (x, y, gamma), by the backward pass of the same programme (KeOps's gradient op, with gamma's
# component added); the gradient's own derivative differentiates the programme unrolled.


def _softdtw_dims(dims, params):
    if dims[2] != 1:
        raise dims_error("SoftDTW_SqDist", "gamma must be a scalar", dims)
    return 1


def _softdtw_forward(c: EmitContext, keep_all: bool) -> list[str]:
    """The dynamic programme, leaving r(i, j) in sd_r[j * n + i] (keep_all) or r(i, m-1) in
    sd_r[i] (each column overwriting the previous one)."""
    x, y, gamma = c.args
    n, m = x.dim, y.dim

    def cell(i: str, j: str) -> str:
        return f"sd_r[{j} * {n} + {i}]" if keep_all else f"sd_r[{i}]"

    def before(i: str, j: str) -> str:  # r(i, j - 1)
        return f"sd_r[({j} - 1) * {n} + {i}]" if keep_all else f"sd_r[{i}]"

    cost = _softdtw_cost(c)
    return [
        f"const V sd_g = {gamma.at(0)};", f"V sd_r[{n * m if keep_all else n}];",
        f"{cell('0', '0')} = {cost('0', '0')};",
        f"for (int sd_i = 1; sd_i < {n}; ++sd_i) "
        f"{cell('sd_i', '0')} = {cost('sd_i', '0')} + {cell('sd_i - 1', '0')};",
        f"for (int sd_j = 1; sd_j < {m}; ++sd_j) {{",
        f"  V sd_diag = {before('0', 'sd_j')};",
        f"  {cell('0', 'sd_j')} = {cost('0', 'sd_j')} + sd_diag;",
        f"  V sd_left = {cell('0', 'sd_j')};",
        f"  for (int sd_i = 1; sd_i < {n}; ++sd_i) {{",
        f"    const V sd_up = {before('sd_i', 'sd_j')};",
        "    const V sd_mn = jk::min_nan(jk::min_nan(sd_diag, sd_up), sd_left);",
        "    const V sd_s = sd_mn - sd_g * jk::log(jk::exp((sd_mn - sd_diag) / sd_g) + "
        "jk::exp((sd_mn - sd_left) / sd_g) + jk::exp((sd_mn - sd_up) / sd_g));",
        f"    {cell('sd_i', 'sd_j')} = {cost('sd_i', 'sd_j')} + sd_s;",
        "    sd_diag = sd_up;", f"    sd_left = {cell('sd_i', 'sd_j')};", "  }", "}",
    ]


def _softdtw_cost(c: EmitContext):
    x, y = c.args[0], c.args[1]
    return lambda i, j: f"jk::square({x.at(i)} - {y.at(j)})"


def _emit_softdtw(c: EmitContext) -> list[str]:
    n = c.args[0].dim
    body = _softdtw_forward(c, keep_all=False) + [f"{c.out}[0] = sd_r[{n - 1}];"]
    return ["{", *("  " + line for line in body), "}"]


def _emit_grad_softdtw(c: EmitContext) -> list[str]:
    """The backward pass: e(i, j) = d value / d r(i, j), pulled from the cells that use
    r(i, j) (one column of e at a time, from the last), each adding its share to the gradient:
    2 (x_i - y_j) e(i, j) to x_i, the opposite to y_j, and e(i, j) d softmin / d gamma."""
    x, y = c.args[0], c.args[1]
    n, m = x.dim, y.dim
    cost = _softdtw_cost(c)

    def r(i: str, j: str) -> str:
        return f"sd_r[({j}) * {n} + {i}]"

    def weight(i: str, j: str) -> str:  # d r(i, j) / d r(predecessor) for an inner cell
        return f"jk::exp((({r(i, j)} - {cost(i, j)}) - sd_rij) / sd_g)"

    backward = [
        f"for (int k = 0; k < {n + m + 1}; ++k) {c.out}[k] = jk::cst<V>(0);",
        f"V sd_e[{n}], sd_next[{n}];",
        f"for (int sd_j = {m - 1}; sd_j >= 0; --sd_j) {{",
        f"  for (int sd_i = {n - 1}; sd_i >= 0; --sd_i) {{",
        f"    const V sd_rij = {r('sd_i', 'sd_j')};",
        f"    V sd_eij = jk::cst<V>(sd_i == {n - 1} && sd_j == {m - 1} ? 1 : 0);",
        f"    if (sd_i + 1 < {n}) sd_eij = sd_eij + sd_e[sd_i + 1] * (sd_j == 0 ? "
        f"jk::cst<V>(1) : {weight('sd_i + 1', 'sd_j')});",
        f"    if (sd_j + 1 < {m}) sd_eij = sd_eij + sd_next[sd_i] * (sd_i == 0 ? "
        f"jk::cst<V>(1) : {weight('sd_i', 'sd_j + 1')});",
        f"    if (sd_i + 1 < {n} && sd_j + 1 < {m}) sd_eij = sd_eij + sd_next[sd_i + 1] * "
        f"{weight('sd_i + 1', 'sd_j + 1')};",
        "    sd_e[sd_i] = sd_eij;",
        f"    const V sd_d = {x.at('sd_i')} - {y.at('sd_j')};",
        f"    {c.out}[sd_i] = {c.out}[sd_i] + jk::cst<V>(2) * sd_d * sd_eij;",
        f"    {c.out}[{n} + sd_j] = {c.out}[{n} + sd_j] - jk::cst<V>(2) * sd_d * sd_eij;",
        "    if (sd_i > 0 && sd_j > 0) {",
        "      const V sd_s = sd_rij - sd_d * sd_d;",
        f"      const V sd_a = {r('sd_i - 1', 'sd_j - 1')}, sd_b = {r('sd_i', 'sd_j - 1')}, "
        f"sd_c = {r('sd_i - 1', 'sd_j')};",
        "      const V sd_mean = jk::exp((sd_s - sd_a) / sd_g) * sd_a + "
        "jk::exp((sd_s - sd_b) / sd_g) * sd_b + jk::exp((sd_s - sd_c) / sd_g) * sd_c;",
        f"      {c.out}[{n + m}] = {c.out}[{n + m}] + sd_eij * (sd_s - sd_mean) / sd_g;",
        "    }", "  }",
        f"  for (int sd_i = 0; sd_i < {n}; ++sd_i) sd_next[sd_i] = sd_e[sd_i];", "}",
    ]
    body = _softdtw_forward(c, keep_all=True) + backward
    return ["{", *("  " + line for line in body), "}"]


def _softmin_reference(xp, a, b, c, gamma):
    mn = xp.minimum(xp.minimum(a, b), c)
    total = xp.exp((mn - a) / gamma) + xp.exp((mn - b) / gamma) + xp.exp((mn - c) / gamma)
    return mn - gamma * xp.log(total)


def _softdtw_reference(xp, x, y, gamma):
    n, m = x.shape[-1], y.shape[-1]
    g = gamma[..., 0]
    cost = (x[..., :, None] - y[..., None, :]) ** 2
    previous: list = []  # r(., j - 1)
    for j in range(m):
        column = []
        for i in range(n):
            if i == 0 and j == 0:
                r = cost[..., 0, 0]
            elif j == 0:
                r = cost[..., i, 0] + column[i - 1]
            elif i == 0:
                r = cost[..., 0, j] + previous[0]
            else:
                r = cost[..., i, j] + _softmin_reference(xp, previous[i - 1], previous[i],
                                                         column[i - 1], g)
            column.append(r)
        previous = column
    return previous[n - 1][..., None]


def _grad_softdtw_reference(xp, x, y, gamma):
    """The gradient of the reference, by JAX (the value is elementwise over the batch)."""
    batch = np.broadcast_shapes(x.shape[:-1], y.shape[:-1], gamma.shape[:-1])
    args = [jnp.broadcast_to(a, batch + a.shape[-1:]) for a in (x, y, gamma)]
    value, pullback = jax.vjp(lambda *a: _softdtw_reference(jnp, *a), *args)
    return jnp.concatenate(pullback(jnp.ones_like(value)), axis=-1)


register(OpSpec(
    name="SoftDTW_SqDist", arity=3, out_dim=_softdtw_dims, emit=_emit_softdtw,
    reference=_softdtw_reference, method="softdtw_sqdist", domain=(0.5, 2.0),
    example_dims=(2, 3, 1),
    doc="SoftDTW_SqDist(x, y, gamma): soft-DTW between the sequences x and y with the squared "
        "difference as base cost and smoothing gamma (as KeOps)",
))
register(OpSpec(
    name="GradSoftDTW_SqDist", arity=3,
    out_dim=lambda dims, params: _softdtw_dims(dims, params) and dims[0] + dims[1] + 1,
    emit=_emit_grad_softdtw, reference=_grad_softdtw_reference,
    method="grad_softdtw_sqdist", domain=(0.5, 2.0), example_dims=(2, 3, 1),
    doc="GradSoftDTW_SqDist(x, y, gamma): the gradient of SoftDTW_SqDist with respect to x, y "
        "and gamma, one after the other (dim n + m + 1)",
))


def _jvp_softdtw(args, ts, out, params):
    x, y, gamma = args
    n, m = x.dim, y.dim
    grad = make("GradSoftDTW_SqDist", x, y, gamma)
    along_x = dot(make("Extract", grad, params=(0, n)), ts[0])
    along_y = dot(make("Extract", grad, params=(n, m)), ts[1])
    return add(add(along_x, along_y), mul(make("Elem", grad, params=(n + m,)), ts[2]))


def _softdtw_expansion(x: Node, y: Node, gamma: Node) -> Node:
    """SoftDTW_SqDist(x, y, gamma) as a formula of other ops: the programme unrolled one
    anti-diagonal d = i + j at a time (its cells only need the two previous diagonals, and
    their i form a contiguous range, so each diagonal is one vector formula; y is read
    backwards along a diagonal, hence `y_rev`)."""
    n, m = x.dim, y.dim
    y_rev = make("Elem", y, params=(m - 1,))
    for k in range(m - 2, -1, -1):
        y_rev = make("Concat", y_rev, make("Elem", y, params=(k,)))

    def window(v: Node, start: int, length: int) -> Node:
        return make("Extract", v, params=(start, length))

    def cost(i: int, length: int, d: int) -> Node:  # d(i, d - i) for i = i .. i + length - 1
        return make("Square", sub(window(x, i, length), window(y_rev, m - 1 - d + i, length)))

    def softmin(a: Node, b: Node, c: Node) -> Node:
        low = make("IfElse", sub(b, a), a, b)
        low = make("IfElse", sub(c, low), low, c)
        total = None
        for t in (a, c, b):
            total = add(total, make("Exp", div(sub(low, t), gamma)))
        return sub(low, mul(gamma, make("Log", total)))

    lows: list[int] = []
    diagonals: list[Node] = []
    for d in range(n + m - 1):
        low, high = max(0, d - m + 1), min(n - 1, d)
        if d == 0:
            parts = [cost(0, 1, 0)]
        else:
            previous, parts = diagonals[d - 1], []
            if low == 0:  # the cell (0, d), after r(0, d - 1): the first of diagonal d - 1
                parts.append(add(cost(0, 1, d), window(previous, 0, 1)))
            first, last = max(1, low), min(high, d - 1)
            if first <= last:
                length = last - first + 1
                diag = window(diagonals[d - 2], first - 1 - lows[d - 2], length)
                up = window(previous, first - lows[d - 1], length)
                left = window(previous, first - 1 - lows[d - 1], length)
                parts.append(add(cost(first, length, d), softmin(diag, up, left)))
            if high == d:  # the cell (d, 0), after r(d - 1, 0): the last of diagonal d - 1
                parts.append(add(cost(d, 1, d), window(previous, previous.dim - 1, 1)))
        diagonal = parts[0]
        for part in parts[1:]:
            diagonal = make("Concat", diagonal, part)
        lows.append(low)
        diagonals.append(diagonal)
    return diagonals[-1]


def _jvp_grad_softdtw(args, ts, out, params):
    """The gradient's tangent (a Hessian-vector product), by differentiating the unrolled
    programme twice: its gradient with respect to stand-ins for (x, y, gamma), then that along
    the tangents. The result is a large formula: fine for short sequences."""
    value = _softdtw_expansion(*args)
    first = max((v.index for v in variables(*args)), default=-1) + 1
    stand_ins = [Var(first + k, a.dim, CAT_I) for k, a in enumerate(args)]
    linear = forward(value, dict(zip(args, stand_ins)))
    cotangents = backward(linear, stand_ins, Const(1.0))
    grad = None
    for v in stand_ins:
        piece = cotangents[v] if cotangents[v] is not None else Const(0.0, v.dim)
        grad = piece if grad is None else make("Concat", grad, piece)
    return forward(grad, dict(zip(args, ts)))


attach_rules("SoftDTW_SqDist", jvp=_jvp_softdtw)
attach_rules("GradSoftDTW_SqDist", jvp=_jvp_grad_softdtw)
