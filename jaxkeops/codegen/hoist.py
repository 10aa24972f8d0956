"""Loop-invariant code motion for the CPU schedule.

A subexpression that depends only on the outer variables and parameters (or only on parameters)
is the same for every reduced row: it is computed once per output row. One that depends only on
the inner variables is the same for every output row: it is computed once per reduced row, when
the tile of inner values is packed, and stored next to them. Both become pseudo-variables of the
main formula. E.g. |y_j|^2 in the dot-product form of a squared distance is computed N times,
not M * N.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..formulas import CAT_I, CAT_J, Const, Node, Op, Var, make, walk
from .spec import ROLE_INNER, ROLE_OUTER, KernelSpec

OUTER, INNER = 1, 2
_ARITHMETIC = {"Add", "Subtract", "Mult", "Divide", "Minus"}


@dataclass(frozen=True)
class Hoisted:
    formulas: tuple[Node, ...]  # the main formulas, over raw and pseudo variables
    outer: tuple[Node, ...]  # per-output-row subexpressions, in pseudo-variable order
    inner: tuple[Node, ...]  # per-reduced-row subexpressions
    outer_vars: tuple[Var, ...]  # the pseudo-variables standing for them
    inner_vars: tuple[Var, ...]


def dependencies(spec: KernelSpec, formulas: tuple[Node, ...]) -> dict[Node, int]:
    """For each node: OUTER, INNER, both (OR-ed) or 0, by the variables it depends on."""
    deps: dict[Node, int] = {}
    for node in walk(*formulas):
        if isinstance(node, Var):
            role = spec.role(node)
            deps[node] = OUTER if role == ROLE_OUTER else INNER if role == ROLE_INNER else 0
        elif isinstance(node, Const):
            deps[node] = 0
        else:
            d = 0
            for a in node.args:
                d |= deps[a]
            deps[node] = d
    return deps


def _worth_hoisting(node: Node) -> bool:
    """Hoisting pays whenever it takes work out of the pair loop, unless the result is larger
    than the variables it reads and is only arithmetic (a product of vectors, say), which would
    trade a few operations for more data to stream."""
    if not isinstance(node, Op):
        return False
    var_dims = sum(n.dim for n in walk(node) if isinstance(n, Var))
    if node.dim <= var_dims:
        return True
    return any(isinstance(n, Op) and n.name not in _ARITHMETIC for n in walk(node))


def hoist(spec: KernelSpec, formulas: tuple[Node, ...]) -> Hoisted:
    deps = dependencies(spec, formulas)
    used_by_mixed = set(formulas)
    for node, d in deps.items():
        if d == OUTER | INNER and isinstance(node, Op):
            used_by_mixed.update(node.args)
    frontier: dict[Node, None] = {}
    for node in walk(*formulas):
        if deps[node] != OUTER | INNER and node in used_by_mixed and _worth_hoisting(node):
            frontier[node] = None
    next_index = max((v.index for v in spec.args), default=-1) + 1
    replace: dict[Node, Node] = {}
    outer, inner, outer_vars, inner_vars = [], [], [], []
    outer_cat = CAT_I if spec.axis == 1 else CAT_J
    inner_cat = CAT_J if spec.axis == 1 else CAT_I
    for node in frontier:
        is_outer = deps[node] != INNER  # parameter-only values go with the output row
        var = Var(next_index, node.dim, outer_cat if is_outer else inner_cat)
        next_index += 1
        replace[node] = var
        (outer if is_outer else inner).append(node)
        (outer_vars if is_outer else inner_vars).append(var)
    rebuilt: dict[Node, Node] = {}
    for node in walk(*formulas):
        if node in replace:
            rebuilt[node] = replace[node]
        elif isinstance(node, Op):
            args = tuple(rebuilt[a] for a in node.args)
            rebuilt[node] = node if args == node.args else make(node.name, *args,
                                                               params=node.params)
        else:
            rebuilt[node] = node
    return Hoisted(tuple(rebuilt[f] for f in formulas), tuple(outer), tuple(inner),
                   tuple(outer_vars), tuple(inner_vars))
