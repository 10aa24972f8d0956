"""The op table: every op's definition, C printing, dense reference and test metadata in one place.

An `OpSpec` says how many formula arguments and static parameters an op takes, which dimension it
produces (raising `ValueError` on a mismatch), how it prints as C++ (component by component, over a
generic value type `V` so the same text serves the SIMD CPU kernel and a CUDA thread), how the
dense pure-jnp reference computes it, and how the tests should sample it. Ops are created through
`make`, which checks dims and applies the simplifications (constant folding, x*0, x*1, x+0, ...).

The derivative rules are attached next to each definition in the `vjp`/`jvp` slots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .nodes import Const, Node, Op


class Access:
    """C expressions for the components of one operand inside generated code."""

    def __init__(self, node: Node, base: str, dim: int, is_const: bool = False):
        self.node = node
        self.base = base
        self.dim = dim
        self.is_const = is_const

    # Whether the value is a scalar broadcast to V where it is read (an outer variable on the
    # CPU): x86 can take only the second operand of a subtraction from memory, so ops whose
    # value allows it print such an operand second.
    broadcast = False

    def at(self, k: int | str) -> str:
        if self.is_const:
            return self.base
        return f"{self.base}[{k}]"

    def bcast(self, k: int | str) -> str:
        """Component k, or the only component of a scalar operand broadcast against a vector."""
        return self.at(0) if self.dim == 1 else self.at(k)


@dataclass(frozen=True)
class EmitContext:
    out: str
    args: tuple[Access, ...]
    dim: int
    params: tuple

    def loop(self, expr: Callable[[str], str]) -> list[str]:
        """`out[k] = expr(k)` for every component k."""
        if self.dim == 1:
            return [f"{self.out}[0] = {expr('0')};"]
        return [f"for (int k = 0; k < {self.dim}; ++k) {self.out}[k] = {expr('k')};"]


@dataclass(frozen=True)
class Fold:
    """An op that folds terms over a dimension: out[0] = term(0) (+) term(1) (+) ... .

    The CPU printer uses it to evaluate the fold for a whole tile of (row, column-vector)
    pairs at once, so that each load of a component serves every pair of the tile."""

    term: Callable[[EmitContext, str], str]  # the k-th term, from the operands' accesses
    length: Callable[[EmitContext], int]  # the number of terms
    combine: str = "{a} + {b}"


@dataclass(frozen=True)
class OpSpec:
    name: str
    arity: int
    out_dim: Callable[[tuple[int, ...], tuple], int]
    emit: Callable[[EmitContext], list[str]]
    reference: Callable[..., Any]
    param_kinds: tuple[str, ...] = ()
    method: str | None = None
    elementwise: bool = False
    # Test metadata: the interval operands are drawn from, example parameters, and whether the
    # op is smooth enough on that interval for finite-difference gradient checks.
    domain: tuple[float, float] = (-2.0, 2.0)
    example_params: tuple = ()
    example_dims: tuple[int, ...] | None = None
    smooth: bool = True
    doc: str = ""
    # Derivatives. jvp(args, tangents, out, params) returns the tangent of `out` given the
    # tangents of its arguments (None for a zero tangent). Linear ops also have
    # transpose(args, linear, ct, out, params): the cotangent of each argument marked linear.
    jvp: Callable[..., Node | None] | None = None
    transpose: Callable[..., tuple] | None = None
    fold: Fold | None = None
    # C printing of op(-a) from a's accesses, for a unary op that can absorb the negation (2^-a
    # from the same polynomial as 2^a). The printers use it when the operand is a Minus.
    emit_of_negated: Callable[[EmitContext], list[str]] | None = None
    # What the op's value is known to be, from its operands' signs (each 1: >= 0 or NaN, -1:
    # <= 0 or NaN, 0: unknown); None: unknown. See `known_sign`.
    sign: Callable[[tuple[int, ...]], int] | None = None
    # C printing of op(a) for an operand known to be <= 0 or NaN, and of op(-a) (with
    # emit_of_negated) for a known >= 0 or NaN: no clamp against overflow (2^a with a <= 0).
    emit_of_nonpositive: Callable[[EmitContext], list[str]] | None = None
    emit_of_negated_nonnegative: Callable[[EmitContext], list[str]] | None = None


OPS: dict[str, OpSpec] = {}
_SIMPLIFIERS: dict[str, Callable[..., Node | None]] = {}


def register(spec: OpSpec, simplify: Callable[..., Node | None] | None = None) -> OpSpec:
    if spec.name in OPS:
        raise RuntimeError(f"op {spec.name} is defined twice")
    OPS[spec.name] = spec
    if simplify is not None:
        _SIMPLIFIERS[spec.name] = simplify
    return spec


def attach_rules(name: str, jvp: Callable | None = None, transpose: Callable | None = None) -> None:
    """Adds derivative rules to an op registered above them in the same file."""
    OPS[name] = dataclasses.replace(OPS[name], jvp=jvp, transpose=transpose)


def _check_params(spec: OpSpec, params: Sequence) -> tuple:
    if len(params) != len(spec.param_kinds):
        raise ValueError(
            f"{spec.name} takes {len(spec.param_kinds)} static parameter(s) "
            f"{spec.param_kinds}, got {len(params)}: {tuple(params)}"
        )
    out = []
    for kind, value in zip(spec.param_kinds, params):
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{spec.name}: parameter {value!r} must be an integer")
            out.append(int(value))
        elif kind == "float":
            out.append(float(value))
        elif kind == "ints":
            out.append(tuple(int(v) for v in value))
        else:
            raise AssertionError(kind)
    return tuple(out)


def make(name: str, *args: Node, params: Sequence = ()) -> Node:
    """Apply op `name` to formula arguments, checking dims and simplifying."""
    try:
        spec = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}") from None
    if len(args) != spec.arity:
        raise ValueError(f"{name} takes {spec.arity} formula argument(s), got {len(args)}")
    for a in args:
        if not isinstance(a, Node):
            raise TypeError(f"{name}: argument {a!r} is not a formula")
    params = _check_params(spec, params)
    dim = spec.out_dim(tuple(a.dim for a in args), params)
    simplify = _SIMPLIFIERS.get(name)
    if simplify is not None:
        simpler = simplify(*args, params=params, dim=dim)
        if simpler is not None:
            return simpler
    if spec.elementwise and args and all(isinstance(a, Const) for a in args):
        return _fold(spec, args, params, dim)
    return Op(name, args, params, dim)


def _fold(spec: OpSpec, args: Sequence[Const], params: tuple, dim: int) -> Node:
    values = [np.full((1,), a.value, dtype=np.float64) for a in args]
    with np.errstate(all="ignore"):
        result = np.asarray(spec.reference(np, *values, *params), dtype=np.float64)
    return Const(float(result.reshape(-1)[0]), dim)


def zero_jvp(args, ts, out, params):
    """The JVP of a piecewise-constant op (comparisons, indices, rounding): a zero tangent."""
    return None


# Sign rules for OpSpec.sign.
def nonnegative(signs: tuple[int, ...]) -> int:
    """An op whose value is >= 0 or NaN whatever its operands (exp, |x|, x^2, ...)."""
    return 1


def same_sign(signs: tuple[int, ...]) -> int:
    """A sum: the operands' common sign, if they share one."""
    return signs[0] if len(set(signs)) == 1 else 0


def product_sign(signs: tuple[int, ...]) -> int:
    return int(np.prod(signs))


def negated_sign(signs: tuple[int, ...]) -> int:
    return -signs[0]


def difference_sign(signs: tuple[int, ...]) -> int:
    return same_sign((signs[0], -signs[1]))


def known_sign(node: Node, memo: dict[Node, int]) -> int:
    """1 if every value of `node` is >= 0 or NaN (-0 included), -1 if every value is <= 0 or
    NaN, else 0, from the ops' `sign` rules (`memo` caches the answers of a walk).

        >>> from jaxkeops.formulas.nodes import Var
        >>> x, y = Var(0, 3, 0), Var(1, 3, 1)
        >>> known_sign(make("Mult", make("SqDist", x, y), Const(-2.0)), {})
        -1
        >>> known_sign(make("Subtract", x, y), {})
        0
    """
    if node not in memo:
        if isinstance(node, Const):
            memo[node] = 1 if node.value >= 0 else -1 if node.value < 0 else 0
        elif isinstance(node, Op) and OPS[node.name].sign is not None:
            memo[node] = OPS[node.name].sign(tuple(known_sign(a, memo) for a in node.args))
        else:
            memo[node] = 0
    return memo[node]


def broadcast_dims(name: str, dims: tuple[int, ...]) -> int:
    """The dim of an elementwise op: all operands equal, or scalars broadcast against a vector."""
    vector_dims = {d for d in dims if d != 1}
    if len(vector_dims) > 1:
        listed = " and ".join(str(d) for d in dims)
        raise ValueError(
            f"{name}: operand dims {listed} are incompatible "
            "(they must be equal, or 1 to broadcast a scalar)"
        )
    return vector_dims.pop() if vector_dims else 1
