"""Small helpers that build formulas, with `None` standing for a symbolic zero.

Derivative rules in the op table are written with these, so that zero tangents and cotangents
vanish instead of growing the formula, and broadcasting between scalars and vectors is explicit.
"""

from __future__ import annotations

from .nodes import Const, Node
from .optable import make

Maybe = Node | None


def const(value: float, dim: int = 1) -> Node:
    return Const(value, dim)


def add(a: Maybe, b: Maybe) -> Maybe:
    if a is None:
        return b
    if b is None:
        return a
    return make("Add", a, b)


def sub(a: Maybe, b: Maybe) -> Maybe:
    if b is None:
        return a
    if a is None:
        return make("Minus", b)
    return make("Subtract", a, b)


def neg(a: Maybe) -> Maybe:
    return None if a is None else make("Minus", a)


def mul(a: Maybe, b: Maybe) -> Maybe:
    if a is None or b is None:
        return None
    return make("Mult", a, b)


def div(a: Maybe, b: Node) -> Maybe:
    return None if a is None else make("Divide", a, b)


def scale(a: Maybe, c: float) -> Maybe:
    return None if a is None else make("Mult", Const(c), a)


def total(a: Maybe) -> Maybe:
    """Sum over the vector axis."""
    return None if a is None else make("Sum", a)


def dot(a: Maybe, b: Maybe) -> Maybe:
    if a is None or b is None:
        return None
    if a.dim != b.dim:
        return make("Sum", make("Mult", a, b))
    return make("Scalprod", a, b)


def widen(a: Maybe, dim: int) -> Maybe:
    """`a` as a formula of dimension `dim` (a scalar is broadcast)."""
    if a is None or a.dim == dim:
        return a
    if a.dim != 1:
        raise ValueError(f"cannot broadcast a formula of dim {a.dim} to dim {dim}")
    if isinstance(a, Const):
        return Const(a.value, dim)
    return make("Mult", a, Const(1.0, dim))


def unbroadcast(ct: Maybe, dim: int) -> Maybe:
    """The adjoint of `widen`: a cotangent of dim `dim` (summing what was broadcast)."""
    if ct is None or ct.dim == dim:
        return ct
    if dim != 1:
        raise ValueError(f"cannot reduce a cotangent of dim {ct.dim} to dim {dim}")
    return make("Sum", ct)


def zeros_or(a: Maybe, dim: int) -> Node:
    return Const(0.0, dim) if a is None else a


def embed(a: Maybe, start: int, dim: int) -> Maybe:
    """A vector of dimension `dim`, zero but for `a` at components start..start+a.dim-1."""
    if a is None:
        return None
    out = a
    if start > 0:
        out = make("Concat", Const(0.0, start), out)
    rest = dim - start - a.dim
    if rest > 0:
        out = make("Concat", out, Const(0.0, rest))
    return out


def indicator(op: str, a: Node, b: Node) -> Node:
    """1 where the comparison `op` holds, 0 elsewhere."""
    return make(op, a, b)
