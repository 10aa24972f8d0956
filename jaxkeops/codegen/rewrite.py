"""Rewrites applied just before printing: same value, cheaper code.

|x - y|^2 between an outer and an inner vector of dim >= 32 becomes |x|^2 + |y|^2 - 2 <x, y>
(clamped at 0): with the norms hoisted out of the pair loop (hoist.py), each pair costs one
fused multiply-add per dimension instead of a subtraction and a multiply-add. It rounds
differently for nearly equal points, by about eps * (|x|^2 + |y|^2).

exp(c * a) becomes 2^((c log2 e) * a): the constant multiply that the formula already has
absorbs log2(e), and 2^t is cheaper than e^x (no Cody-Waite reduction). The exponent gets one
more rounding (of the folded constant), the same order as the rounding of c * a itself.
|x - y|^2 of a formula that also computes x - y (a gradient) becomes |(x - y)|^2, sharing the
difference. Shared with a scaled squared norm, as in exp(-c |x - y|^2) (x - y), the difference
is computed scaled where that multiplies less per pair (scaling.prescale_shared_differences).
Derivatives and the dense reference always see the formula as written.
"""

from __future__ import annotations

import math

from ..formulas import Const, Node, Op, Var, make, walk
from .hoist import INNER, OUTER, dependencies
from .row_factor import pair_multiplies
from .scaling import prescale_shared_differences, rearrange_products, use_counts
from .spec import ROLE_INNER, ROLE_OUTER, KernelSpec

LOG2E = 1.0 / math.log(2.0)
DOT_FORM_MIN_DIM = 32


def _scaled_exponent(arg: Node) -> Node | None:
    """(c * log2 e) * a when `arg` is c * a, a * c, a / c or -a; else None."""
    if not isinstance(arg, Op):
        return None
    if arg.name == "Minus":
        return make("Mult", arg.args[0], Const(-LOG2E))
    if arg.name in ("Mult", "Divide"):
        a, b = arg.args
        if isinstance(b, Const) and b.dim == 1:
            c = b.value if arg.name == "Mult" else 1.0 / b.value
            return make("Mult", a, Const(c * LOG2E))
        if arg.name == "Mult" and isinstance(a, Const) and a.dim == 1:
            return make("Mult", b, Const(a.value * LOG2E))
    return None


def _canonical_sum(arg: Node, uses) -> Node | None:
    """Sum((a - b)^2) -> SqDist(a, b), Sum(a^2) -> SqNorm2(a), Sum(a * b) -> Scalprod(a, b):
    the fused ops fold over the dims without a temporary vector per term. When a - b is used
    elsewhere too (as in a gradient), SqNorm2(a - b) shares the differences instead."""
    if not isinstance(arg, Op) or arg.dim == 1:
        return None
    if arg.name == "Square":
        inner = arg.args[0]
        if isinstance(inner, Op) and inner.name == "Subtract" and uses[inner] == 1 and \
                inner.args[0].dim == inner.args[1].dim:
            return make("SqDist", *inner.args)
        return make("SqNorm2", inner)
    if arg.name == "Mult" and arg.args[0].dim == arg.args[1].dim:
        return make("Scalprod", *arg.args)
    return None


def _dot_form(a: Node, b: Node) -> Node:
    cross = make("Mult", make("Scalprod", a, b), Const(-2.0))
    return make("ReLU", make("Add", make("Add", make("SqNorm2", a), make("SqNorm2", b)), cross))


def for_codegen(spec: KernelSpec, formulas: tuple[Node, ...]) -> tuple[Node, ...]:
    deps = dependencies(spec, formulas)
    uses = use_counts(formulas)
    differences = {n.args for n in walk(*formulas) if isinstance(n, Op) and n.name == "Subtract"}
    new: dict[Node, Node] = {}
    for node in walk(*formulas):
        if not isinstance(node, Op):
            new[node] = node
            continue
        args = tuple(new[a] for a in node.args)
        name, sides = node.name, tuple(deps[a] for a in node.args)
        if name == "SqDist" and args[0].dim < DOT_FORM_MIN_DIM:
            # x - y is computed for another use too (a gradient's): |x - y|^2 shares it.
            for operands in (node.args, node.args[::-1]):
                if operands in differences:
                    name, args = "SqNorm2", (make("Subtract", *(new[a] for a in operands)),)
                    break
        if name == "Sum":
            fused = _canonical_sum(args[0], uses)
            if fused is not None:
                inner = node.args[0].args[0]  # Square's or Mult's operand(s)
                originals = inner.args if fused.name == "SqDist" else node.args[0].args
                name, args, sides = fused.name, fused.args, tuple(deps[a] for a in originals)
        if name == "SqDist" and args[0].dim == args[1].dim >= DOT_FORM_MIN_DIM:
            if set(sides) == {OUTER, INNER}:
                new[node] = _dot_form(*args)
                continue
        if name == "Exp":
            exponent = _scaled_exponent(args[0])
            if exponent is not None and exponent.dim == node.dim:
                new[node] = make("Exp2", exponent)
                continue
        if name != node.name or args != node.args:
            new[node] = make(name, *args, params=node.params if name == node.name else ())
        else:
            new[node] = node
    rewritten = tuple(new[f] for f in formulas)
    side = _side_function(spec, deps)
    plain = rearrange_products(rewritten, side)
    prescaled = prescale_shared_differences(rewritten, side)
    if prescaled is None:
        return plain
    prescaled = rearrange_products(prescaled, side)
    return prescaled if pair_multiplies(spec, prescaled) < pair_multiplies(spec, plain) else plain


def _side_function(spec: KernelSpec, deps: dict[Node, int]):
    """OUTER, INNER, both or 0 for any node, including those the rewrites create."""
    memo = dict(deps)

    def side(node: Node) -> int:
        if node not in memo:
            if isinstance(node, Var):
                role = spec.role(node)
                memo[node] = OUTER if role == ROLE_OUTER else INNER if role == ROLE_INNER else 0
            elif isinstance(node, Op):
                d = 0
                for a in node.args:
                    d |= side(a)
                memo[node] = d
            else:
                memo[node] = 0
        return memo[node]

    return side
