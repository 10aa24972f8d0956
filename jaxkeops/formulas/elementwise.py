"""Elementwise ops: arithmetic, comparisons and scalar functions (scalars broadcast to vectors).

Each reference takes the array module first (`jax.numpy`, or numpy for constant folding) and
arrays whose last axis is the formula dimension.
"""

from __future__ import annotations

from collections.abc import Callable

from .algebra import add, const, div, mul, neg, scale, sub, zeros_or
from .nodes import Const, Node
from .optable import (
    EmitContext,
    OpSpec,
    broadcast_dims,
    difference_sign,
    make,
    negated_sign,
    nonnegative,
    product_sign,
    register,
    same_sign,
    zero_jvp,
)


def _elementwise_emit(template: str) -> Callable[[EmitContext], list[str]]:
    """C printing for `template`, whose {0}, {1}, ... are operands and {p0}, ... parameters."""

    def emit(ctx: EmitContext) -> list[str]:
        named = {f"p{i}": p for i, p in enumerate(ctx.params)}
        return ctx.loop(lambda k: template.format(*(a.bcast(k) for a in ctx.args), **named))

    return emit


def _optional_emit(template: str | None) -> Callable[[EmitContext], list[str]] | None:
    return None if template is None else _elementwise_emit(template)


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
    of_negated: str | None = None,
    of_nonpositive: str | None = None,
    of_negated_nonnegative: str | None = None,
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
        emit_of_negated=_optional_emit(of_negated),
        emit_of_nonpositive=_optional_emit(of_nonpositive),
        emit_of_negated_nonnegative=_optional_emit(of_negated_nonnegative),
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


# Derivative rules. Tangents may be None (zero); a scalar tangent of a vector result is
# broadcast by the caller, and cotangents are summed back to each argument's dim by the caller.
def _unary(derivative):
    """The JVP of f(a) given f'(a) as a formula of (a, out)."""
    return lambda args, ts, out, params: mul(derivative(args[0], out, *params), ts[0])


def _jvp_add(args, ts, out, params):
    return add(ts[0], ts[1])


def _jvp_sub(args, ts, out, params):
    return sub(ts[0], ts[1])


def _jvp_mult(args, ts, out, params):
    a, b = args
    return add(mul(ts[0], b), mul(a, ts[1]))


def _jvp_divide(args, ts, out, params):
    return div(sub(ts[0], mul(out, ts[1])), args[1])


def _t_add(args, linear, ct, out, params):
    return ct, ct


def _t_sub(args, linear, ct, out, params):
    return ct, neg(ct)


def _t_minus(args, linear, ct, out, params):
    return (neg(ct),)


def _t_mult(args, linear, ct, out, params):
    a, b = args
    if linear[0] and linear[1]:
        raise ValueError("Mult of two tangent-dependent factors is not linear")
    return (mul(ct, b) if linear[0] else None, mul(ct, a) if linear[1] else None)


def _t_divide(args, linear, ct, out, params):
    if linear[1]:
        raise ValueError("Divide by a tangent-dependent formula is not linear")
    return div(ct, args[1]), None


def _jvp_ifelse(args, ts, out, params):
    if ts[1] is None and ts[2] is None:
        return None
    return make("IfElse", args[0], zeros_or(ts[1], 1), zeros_or(ts[2], 1))


def _t_ifelse(args, linear, ct, out, params):
    if linear[0]:
        raise ValueError("IfElse on a tangent-dependent condition is not linear")
    zero = const(0.0)
    return (None, make("IfElse", args[0], ct, zero) if linear[1] else None,
            make("IfElse", args[0], zero, ct) if linear[2] else None)


def _jvp_clamp(args, ts, out, params):
    """KeOps's derivative of Clamp, which it gets from Clamp(x, a, b) = a + (b - a) *
    ClampInt((x - a) / (b - a), 0, 1): the tangent of x between the bounds (both included,
    whichever is larger), of a beyond a (on the side away from b), of b beyond b; and NaN
    where a == b, from the division by b - a."""
    x, a, b = args
    a_below_b, b_below_a = make("LessThan", a, b), make("LessThan", b, a)
    beyond_a = add(mul(make("LessThan", x, a), a_below_b),
                   mul(make("GreaterThan", x, a), b_below_a))
    beyond_b = add(mul(make("GreaterThan", x, b), a_below_b),
                   mul(make("LessThan", x, b), b_below_a))
    between = sub(sub(const(1.0), beyond_a), beyond_b)
    tangent = add(add(mul(between, ts[0]), mul(beyond_a, ts[1])), mul(beyond_b, ts[2]))
    width = sub(b, a)
    return mul(div(width, width), tangent)


def _jvp_clampint(args, ts, out, params):
    x = args[0]
    lo, hi = params
    inside = mul(make("GreaterOrEqual", x, const(lo)), make("LessOrEqual", x, const(hi)))
    return mul(inside, ts[0])


def _jvp_mod(args, ts, out, params):
    x, n, d = args
    return sub(ts[0], mul(make("Floor", div(sub(x, d), n)), ts[1]))


def _jvp_atan2(args, ts, out, params):
    y, x = args
    r2 = add(mul(x, x), mul(y, y))
    return div(sub(mul(x, ts[0]), mul(y, ts[1])), r2)


def _jvp_powf(args, ts, out, params):
    x, y = args
    return mul(out, add(mul(ts[1], make("Log", x)), mul(y, div(ts[0], x))))


def _rsqrt_of_one_minus_square(a):
    return make("Rsqrt", sub(const(1.0), mul(a, a)))


# Arithmetic.
elementwise("Add", 2, "{0} + {1}", lambda xp, a, b: a + b, simplify=_simplify_add, sign=same_sign,
            jvp=_jvp_add, transpose=_t_add)
elementwise("Subtract", 2, "{0} - {1}", lambda xp, a, b: a - b, simplify=_simplify_subtract,
            sign=difference_sign,
            jvp=_jvp_sub, transpose=_t_sub)
elementwise("Mult", 2, "{0} * {1}", lambda xp, a, b: a * b, simplify=_simplify_mult,
            sign=product_sign,
            jvp=_jvp_mult, transpose=_t_mult)
elementwise(
    "Divide", 2, "{0} / {1}", lambda xp, a, b: a / b, simplify=_simplify_divide,
    domain=(0.5, 2.0), jvp=_jvp_divide, transpose=_t_divide,
)
elementwise("Minus", 1, "-{0}", lambda xp, a: -a, simplify=_simplify_minus, sign=negated_sign,
            jvp=lambda args, ts, out, p: neg(ts[0]), transpose=_t_minus)

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
        method=_method, smooth=False, jvp=zero_jvp,
    )

# Scalar functions.
elementwise("Exp", 1, "jk::exp({0})", lambda xp, x: xp.exp(x), method="exp", sign=nonnegative,
            jvp=_unary(lambda a, out: out))
elementwise(
    "Exp2", 1, "jk::exp2({0})", lambda xp, x: xp.exp2(x), method="exp2",
    of_negated="jk::exp2_neg({0})",  # exp(-c |x - y|^2) once c has moved into x and y
    of_nonpositive="jk::exp2_nonpositive({0})",
    of_negated_nonnegative="jk::exp2_neg_nonnegative({0})",  # exp(-c |x - y|^2) again
    sign=nonnegative, jvp=_unary(lambda a, out: scale(out, 0.6931471805599453)),
)
elementwise("Log", 1, "jk::log({0})", lambda xp, x: xp.log(x), method="log", domain=(0.2, 3.0),
            jvp=_unary(lambda a, out: make("Inv", a)))
elementwise(
    "XLogX", 1, "jk::xlogx({0})",
    lambda xp, x: _where(xp, x == 0, 0.0 * x, x * xp.log(xp.where(x == 0, 1.0, x))),
    method="xlogx", domain=(0.2, 3.0),
    jvp=_unary(lambda a, out: add(make("Log", a), const(1.0))),
)
elementwise("Sin", 1, "jk::sin({0})", lambda xp, x: xp.sin(x), method="sin",
            jvp=_unary(lambda a, out: make("Cos", a)))
elementwise("Cos", 1, "jk::cos({0})", lambda xp, x: xp.cos(x), method="cos",
            jvp=_unary(lambda a, out: neg(make("Sin", a))))
elementwise(
    "Asin", 1, "jk::asin({0})", lambda xp, x: xp.arcsin(x), method="asin", domain=(-0.9, 0.9),
    jvp=_unary(lambda a, out: _rsqrt_of_one_minus_square(a)),
)
elementwise(
    "Acos", 1, "jk::acos({0})", lambda xp, x: xp.arccos(x), method="acos", domain=(-0.9, 0.9),
    jvp=_unary(lambda a, out: neg(_rsqrt_of_one_minus_square(a))),
)
elementwise("Atan", 1, "jk::atan({0})", lambda xp, x: xp.arctan(x), method="atan",
            jvp=_unary(lambda a, out: make("Inv", add(const(1.0), mul(a, a)))))
elementwise(
    "Atan2", 2, "jk::atan2({0}, {1})", lambda xp, y, x: xp.arctan2(y, x), method="atan2",
    domain=(0.2, 2.0), jvp=_jvp_atan2,
)
elementwise(
    "SinXDivX", 1, "jk::sinxdivx({0})",
    lambda xp, x: _where(xp, x == 0, 1.0 + 0.0 * x, xp.sin(x) / xp.where(x == 0, 1.0, x)),
    method="sinxdivx", domain=(0.2, 2.0),
    jvp=_unary(lambda a, out: div(sub(make("Cos", a), out), a)),
    doc="sin(x)/x, and 1 at x = 0 (its derivative is not defined at 0)",
)
elementwise("Sqrt", 1, "jk::sqrt({0})", lambda xp, x: xp.sqrt(x), method="sqrt", domain=(0.2, 3.0),
            sign=nonnegative,
            jvp=_unary(lambda a, out: div(const(0.5), out)))
elementwise(
    "Rsqrt", 1, "jk::rsqrt({0})",
    lambda xp, x: _where(xp, x == 0, 0.0 * x, 1.0 / xp.sqrt(xp.where(x == 0, 1.0, x))),
    method="rsqrt", domain=(0.2, 3.0),
    doc="1/sqrt(x), and 0 at x = 0 as in KeOps",
    jvp=_unary(lambda a, out: scale(mul(out, mul(out, out)), -0.5)),
)
elementwise("Inv", 1, "jk::inv({0})", lambda xp, x: 1.0 / x, method="inv", domain=(0.5, 2.0),
            jvp=_unary(lambda a, out: neg(mul(out, out))))
elementwise("Abs", 1, "jk::abs({0})", lambda xp, x: xp.abs(x), method="abs", smooth=False,
            sign=nonnegative,
            jvp=_unary(lambda a, out: make("Sign", a)))
elementwise("Sign", 1, "jk::sign({0})", lambda xp, x: xp.sign(x), method="sign", smooth=False,
            jvp=zero_jvp)
elementwise(
    "Step", 1, "jk::step({0})", lambda xp, x: _where(xp, x < 0, 0.0 * x, 1.0 + 0.0 * x),
    method="step", smooth=False, doc="0 for x < 0, else 1", jvp=zero_jvp,
)
elementwise(
    "ReLU", 1, "jk::relu({0})", lambda xp, x: _where(xp, x < 0, 0.0 * x, x),
    method="relu", smooth=False, sign=nonnegative, jvp=_unary(lambda a, out: make("Step", a)),
)
elementwise("Floor", 1, "jk::floor({0})", lambda xp, x: xp.floor(x), method="floor", smooth=False,
            jvp=zero_jvp)
elementwise("Square", 1, "{0} * {0}", lambda xp, x: x * x, method="square", sign=nonnegative,
            jvp=_unary(lambda a, out: scale(a, 2.0)))
elementwise(
    "Pow", 1, "jk::powi({0}, {p0})", lambda xp, x, n: x**n, method="pow",
    params=("int",), simplify=_simplify_pow, example_params=(3,),
    jvp=_unary(lambda a, out, n: scale(make("Pow", a, params=(n - 1,)), float(n))),
)
elementwise(
    "Powf", 2, "jk::powf({0}, {1})", lambda xp, x, y: xp.power(x, y), method="powf",
    domain=(0.2, 2.0), doc="x ** y for a formula y, defined for x > 0", jvp=_jvp_powf,
)
elementwise(
    "Round", 1, "jk::round_digits({0}, {p0})",
    lambda xp, x, d: round_half_away(xp, x * 10.0**d) / 10.0**d,
    method="round", params=("int",), smooth=False, example_params=(2,),
    doc="round to d decimals, halves away from zero", jvp=zero_jvp,
)
# KeOps's clamp: a where x < a, else b where x > b, else x. When a > b this is a for x < a
# and b for x >= a (not min(max(x, a), b), which is b everywhere).
_KEOPS_CLAMP = "jk::select({x} < {a}, {a}, jk::select({b} < {x}, {b}, {x}))"


def keops_clamp(xp, x, a, b):
    return xp.where(x < a, a, xp.where(x > b, b, x))


elementwise(
    "ClampInt", 1,
    _KEOPS_CLAMP.format(x="{0}", a="jk::cst<V>({p0})", b="jk::cst<V>({p1})"),
    keops_clamp, method="clampint", params=("int", "int"), smooth=False,
    example_params=(-1, 1), jvp=_jvp_clampint,
    doc="a where x < a, b where x > b, x elsewhere (KeOps's order of tests)",
)
elementwise(
    "Clamp", 3, _KEOPS_CLAMP.format(x="{0}", a="{1}", b="{2}"), keops_clamp, method="clamp",
    smooth=False, jvp=_jvp_clamp,
    doc="a where x < a, b where x > b, x elsewhere (KeOps's order of tests)",
)
elementwise(
    "IfElse", 3, "jk::ifelse({0}, {1}, {2})", lambda xp, f, a, b: _where(xp, f >= 0, a, b),
    method="ifelse", smooth=False, doc="a where f >= 0, else b",
    jvp=_jvp_ifelse, transpose=_t_ifelse,
)
elementwise(
    "Mod", 3, "jk::mod({0}, {1}, {2})", lambda xp, x, n, d: x - n * xp.floor((x - d) / n),
    method="mod", smooth=False, domain=(0.5, 2.0), doc="x - n * floor((x - d) / n)",
    jvp=_jvp_mod,
)
