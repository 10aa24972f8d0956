"""Symbolic derivatives of formulas: forward mode (JVP) and transposition of linear formulas.

Both walk the formula DAG once and apply the per-op rules of the op table. Reverse mode is the
transpose of forward mode, as in JAX: the JVP of a formula is linear in the tangent variables,
and `transpose` turns a linear formula and a cotangent into the cotangent of each tangent
variable. Everything here is pure symbolic work: no JAX tracing, no M x N array.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..formulas import OPS, Const, Node, Op, Var, walk
from ..formulas.algebra import add, unbroadcast, widen


def jvp(formula: Node, tangents: Mapping[Var, Node]) -> Node | None:
    """The directional derivative of `formula` when each variable v moves along tangents[v].

    Variables missing from `tangents` are held fixed. Returns None when the derivative is
    identically zero.
    """
    tan: dict[Node, Node | None] = {}
    for node in walk(formula):
        if isinstance(node, Var):
            t = tangents.get(node)
            if t is not None and t.dim != node.dim:
                raise ValueError(f"tangent of {node!r} has dim {t.dim}, expected {node.dim}")
            tan[node] = t
        elif isinstance(node, Const):
            tan[node] = None
        elif isinstance(node, Op):
            arg_tangents = tuple(tan[a] for a in node.args)
            if all(t is None for t in arg_tangents):
                tan[node] = None
                continue
            rule = OPS[node.name].jvp
            if rule is None:
                raise NotImplementedError(f"no derivative rule for {node.name}")
            tan[node] = widen(rule(node.args, arg_tangents, node, node.params), node.dim)
    return tan[formula]


def depends_on(formula: Node, variables: Collection[Var]) -> set[Node]:
    """The nodes of `formula` whose value depends on any of `variables`."""
    wanted = set(variables)
    dependent: set[Node] = set()
    for node in walk(formula):
        if node in wanted or any(a in dependent for a in node.children):
            dependent.add(node)
    return dependent


def transpose(formula: Node, linear: Collection[Var], cotangent: Node) -> dict[Var, Node | None]:
    """For `formula` linear in the variables `linear`: each one's cotangent, i.e. the gradient
    of <formula, cotangent> with respect to it (None where it is zero)."""
    if cotangent.dim != formula.dim:
        raise ValueError(f"cotangent has dim {cotangent.dim}, formula has dim {formula.dim}")
    dependent = depends_on(formula, linear)
    cts: dict[Node, Node | None] = {formula: cotangent}
    for node in reversed(walk(formula)):
        ct = cts.get(node)
        if ct is None or node not in dependent or not isinstance(node, Op):
            continue
        rule = OPS[node.name].transpose
        if rule is None:
            raise NotImplementedError(
                f"reverse-mode differentiation through {node.name} is not implemented "
                f"(it is not a linear op with a transpose rule): {node!r}"
            )
        flags = tuple(a in dependent for a in node.args)
        contributions = rule(node.args, flags, ct, node, node.params)
        for arg, is_linear, c in zip(node.args, flags, contributions):
            if is_linear and c is not None:
                cts[arg] = add(cts.get(arg), unbroadcast(c, arg.dim))
    return {v: cts.get(v) for v in linear}
