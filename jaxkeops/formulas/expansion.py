"""Forward and reverse passes over a formula with the op table's rules, for the derivative
rules that are themselves defined by differentiating an equivalent formula of other ops (the
second derivative of soft-DTW, whose kernel computes its gradient natively).

These are the passes of `jaxkeops.autodiff.formula_ad`, over arbitrary leaf nodes instead of
variables; that package imports this layer, so it cannot be imported from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .algebra import add, unbroadcast, widen
from .nodes import Node, Op, walk
from .optable import OPS


def forward(formula: Node, tangents: Mapping[Node, Node | None]) -> Node | None:
    """The tangent of `formula` when each node of `tangents` moves along its tangent (None
    where the tangent is zero)."""
    tan: dict[Node, Node | None] = {}
    for node in walk(formula):
        if node in tangents:
            tan[node] = tangents[node]
            continue
        arg_tangents = tuple(tan[a] for a in node.children)
        if not isinstance(node, Op) or all(t is None for t in arg_tangents):
            tan[node] = None
            continue
        rule = OPS[node.name].jvp
        if rule is None:
            raise NotImplementedError(f"no derivative rule for {node.name}")
        tan[node] = widen(rule(node.args, arg_tangents, node, node.params), node.dim)
    return tan[formula]


def backward(formula: Node, linear: Sequence[Node], cotangent: Node) -> dict[Node, Node | None]:
    """For `formula` linear in the nodes `linear`: the cotangent of each of them."""
    wanted = set(linear)
    dependent: set[Node] = set()
    order = walk(formula)
    for node in order:
        if node in wanted or any(a in dependent for a in node.children):
            dependent.add(node)
    cts: dict[Node, Node | None] = {formula: cotangent}
    for node in reversed(order):
        ct = cts.get(node)
        if ct is None or node in wanted or node not in dependent or not isinstance(node, Op):
            continue
        rule = OPS[node.name].transpose
        if rule is None:
            raise NotImplementedError(f"{node.name} is not linear: {node!r}")
        flags = tuple(a in dependent for a in node.args)
        for arg, is_linear, c in zip(node.args, flags, rule(node.args, flags, ct, node,
                                                            node.params)):
            if is_linear and c is not None:
                cts[arg] = add(cts.get(arg), unbroadcast(c, arg.dim))
    return {v: cts.get(v) for v in linear}
