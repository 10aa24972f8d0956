"""Elementwise ops: arithmetic, comparisons and scalar functions (scalars broadcast to vectors).

Each reference takes the array module first (`jax.numpy`, or numpy for constant folding) and
arrays whose last axis is the formula dimension.
"""

from __future__ import annotations

from collections.abc import Callable

from .nodes import Const, Node
from .optable import EmitContext, OpSpec, broadcast_dims, make, register


def _elementwise_emit(template: str) -> Callable[[EmitContext], list[str]]:
    """C printing for `template`, whose {0}, {1}, ... are operands and {p0}, ... parameters."""

    def emit(ctx: EmitContext) -> list[str]:
        named = {f"p{i}": p for i, p in enumerate(ctx.params)}
        return ctx.loop(lambda k: template.format(*(a.bcast(k) for a in ctx.args), **named))

    return emit


def _same_dim(dims: tuple[int, ...], params: tuple) -> int:
    return dims[0]


def elementwise(
    name: str,
    arity: int,
    c: str,
    reference: Callable,
    method: str | None = None,
    params: tuple[str, ...] = (),
    simplify: Callable | None = None,
    **meta,
) -> OpSpec:
    def out_dim(dims: tuple[int, ...], p: tuple) -> int:
        return broadcast_dims(name, dims)

    spec = OpSpec(
        name=name,
        arity=arity,
        out_dim=out_dim if arity > 1 else _same_dim,
        emit=_elementwise_emit(c),
        reference=reference,
        param_kinds=params,
        method=method,
        elementwise=True,
        **meta,
    )
    return register(spec, simplify)


def _is_const(node: Node, value: float) -> bool:
    return isinstance(node, Const) and node.value == value


def _simplify_add(a: Node, b: Node, params: tuple, dim: int) -> Node | None:
    if _is_const(b, 0.0) and b.dim <= a.dim:
        return a
    if _is_const(a, 0.0) and a.dim <= b.dim:
        return b
    return None


def _simplify_subtract(a: Node, b: Node, params: tuple, dim: int) -> Node | None:
    if _is_const(b, 0.0) and b.dim <= a.dim:
        return a
    if _is_const(a, 0.0) and a.dim <= b.dim:
        return make("Minus", b)
    return None


def _simplify_mult(a: Node, b: Node, params: tuple, dim: int) -> Node | None:
    if _is_const(a, 0.0) or _is_const(b, 0.0):
        return Const(0.0, dim)
    if _is_const(b, 1.0) and b.dim <= a.dim:
        return a
    if _is_const(a, 1.0) and a.dim <= b.dim:
        return b
    return None


def _simplify_divide(a: Node, b: Node, params: tuple, dim: int) -> Node | None:
    if _is_const(b, 1.0) and b.dim <= a.dim:
        return a
    if _is_const(a, 0.0) and not isinstance(b, Const):
        return Const(0.0, dim)
    return None


def _simplify_minus(a: Node, params: tuple, dim: int) -> Node | None:
    if getattr(a, "name", None) == "Minus":
        return a.args[0]
    return None


def _simplify_pow(a: Node, params: tuple, dim: int) -> Node | None:
    (n,) = params
    if n == 1:
        return a
    if n == 0:
        return Const(1.0, dim)
    if n == 2:
        return make("Square", a)
    return None


def round_half_away(xp, x):
    """Rounding with halves away from zero, as C's round() (jnp.round rounds to even)."""
    return xp.sign(x) * xp.floor(xp.abs(x) + 0.5)


def _where(xp, cond, a, b):
    return xp.where(cond, a, b)


# Arithmetic.
elementwise("Add", 2, "{0} + {1}", lambda xp, a, b: a + b, simplify=_simplify_add)
elementwise("Subtract", 2, "{0} - {1}", lambda xp, a, b: a - b, simplify=_simplify_subtract)
elementwise("Mult", 2, "{0} * {1}", lambda xp, a, b: a * b, simplify=_simplify_mult)
elementwise(
    "Divide", 2, "{0} / {1}", lambda xp, a, b: a / b, simplify=_simplify_divide,
    domain=(0.5, 2.0),
)
elementwise("Minus", 1, "-{0}", lambda xp, a: -a, simplify=_simplify_minus)

# Comparisons give 1.0 where true and 0.0 where false, as in KeOps.
for _name, _c, _method, _ref in [
    ("Equal", "jk::eq({0}, {1})", "__eq__", lambda xp, a, b: (a == b)),
    ("NotEqual", "jk::ne({0}, {1})", "__ne__", lambda xp, a, b: (a != b)),
    ("LessThan", "jk::lt({0}, {1})", "__lt__", lambda xp, a, b: (a < b)),
    ("GreaterThan", "jk::lt({1}, {0})", "__gt__", lambda xp, a, b: (a > b)),
    ("LessOrEqual", "jk::le({0}, {1})", "__le__", lambda xp, a, b: (a <= b)),
    ("GreaterOrEqual", "jk::le({1}, {0})", "__ge__", lambda xp, a, b: (a >= b)),
]:
    elementwise(
        _name, 2, _c,
        (lambda r: lambda xp, a, b: r(xp, a, b).astype(xp.result_type(a, b)))(_ref),
        method=_method, smooth=False,
    )

# Scalar functions.
elementwise("Exp", 1, "jk::exp({0})", lambda xp, x: xp.exp(x), method="exp")
elementwise("Log", 1, "jk::log({0})", lambda xp, x: xp.log(x), method="log", domain=(0.2, 3.0))
elementwise(
    "XLogX", 1, "jk::xlogx({0})",
    lambda xp, x: _where(xp, x == 0, 0.0 * x, x * xp.log(xp.where(x == 0, 1.0, x))),
    method="xlogx", domain=(0.2, 3.0),
)
elementwise("Sin", 1, "jk::sin({0})", lambda xp, x: xp.sin(x), method="sin")
elementwise("Cos", 1, "jk::cos({0})", lambda xp, x: xp.cos(x), method="cos")
elementwise(
    "Asin", 1, "jk::asin({0})", lambda xp, x: xp.arcsin(x), method="asin", domain=(-0.9, 0.9)
)
elementwise(
    "Acos", 1, "jk::acos({0})", lambda xp, x: xp.arccos(x), method="acos", domain=(-0.9, 0.9)
)
elementwise("Atan", 1, "jk::atan({0})", lambda xp, x: xp.arctan(x), method="atan")
elementwise(
    "Atan2", 2, "jk::atan2({0}, {1})", lambda xp, y, x: xp.arctan2(y, x), method="atan2",
    domain=(0.2, 2.0),
)
elementwise(
    "SinXDivX", 1, "jk::sinxdivx({0})",
    lambda xp, x: _where(xp, x == 0, 1.0 + 0.0 * x, xp.sin(x) / xp.where(x == 0, 1.0, x)),
    method="sinxdivx",
)
elementwise("Sqrt", 1, "jk::sqrt({0})", lambda xp, x: xp.sqrt(x), method="sqrt", domain=(0.2, 3.0))
elementwise(
    "Rsqrt", 1, "jk::rsqrt({0})",
    lambda xp, x: _where(xp, x == 0, 0.0 * x, 1.0 / xp.sqrt(xp.where(x == 0, 1.0, x))),
    method="rsqrt", domain=(0.2, 3.0),
    doc="1/sqrt(x), and 0 at x = 0 as in KeOps",
)
elementwise("Inv", 1, "jk::inv({0})", lambda xp, x: 1.0 / x, method="inv", domain=(0.5, 2.0))
elementwise("Abs", 1, "jk::abs({0})", lambda xp, x: xp.abs(x), method="abs", smooth=False)
elementwise("Sign", 1, "jk::sign({0})", lambda xp, x: xp.sign(x), method="sign", smooth=False)
elementwise(
    "Step", 1, "jk::step({0})", lambda xp, x: _where(xp, x < 0, 0.0 * x, 1.0 + 0.0 * x),
    method="step", smooth=False, doc="0 for x < 0, else 1",
)
elementwise(
    "ReLU", 1, "jk::relu({0})", lambda xp, x: _where(xp, x < 0, 0.0 * x, x),
    method="relu", smooth=False,
)
elementwise("Floor", 1, "jk::floor({0})", lambda xp, x: xp.floor(x), method="floor", smooth=False)
elementwise("Square", 1, "{0} * {0}", lambda xp, x: x * x, method="square")
elementwise(
    "Pow", 1, "jk::powi({0}, {p0})", lambda xp, x, n: x**n, method="pow",
    params=("int",), simplify=_simplify_pow, example_params=(3,),
)
elementwise(
    "Powf", 2, "jk::powf({0}, {1})", lambda xp, x, y: xp.power(x, y), method="powf",
    domain=(0.2, 2.0), doc="x ** y for a formula y, defined for x > 0",
)
elementwise(
    "Round", 1, "jk::round_digits({0}, {p0})",
    lambda xp, x, d: round_half_away(xp, x * 10.0**d) / 10.0**d,
    method="round", params=("int",), smooth=False, example_params=(2,),
    doc="round to d decimals, halves away from zero",
)
elementwise(
    "ClampInt", 1, "jk::clamp({0}, {p0}, {p1})",
    lambda xp, x, a, b: xp.minimum(xp.maximum(x, a), b),
    method="clampint", params=("int", "int"), smooth=False, example_params=(-1, 1),
)
elementwise(
    "Clamp", 3, "jk::clamp({0}, {1}, {2})",
    lambda xp, x, a, b: xp.minimum(xp.maximum(x, a), b), method="clamp", smooth=False,
)
elementwise(
    "IfElse", 3, "jk::ifelse({0}, {1}, {2})", lambda xp, f, a, b: _where(xp, f >= 0, a, b),
    method="ifelse", smooth=False, doc="a where f >= 0, else b",
)
elementwise(
    "Mod", 3, "jk::mod({0}, {1}, {2})", lambda xp, x, n, d: x - n * xp.floor((x - d) / n),
    method="mod", smooth=False, domain=(0.5, 2.0), doc="x - n * floor((x - d) / n)",
)
