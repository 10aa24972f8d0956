"""Formula -> C++ statements, shared by every backend.

The printed body is the `eval` of a kernel: it reads the outer variables from `o` (scalars of
type S, broadcast where used), the inner (reduced) ones from `n` and the parameters from `p`
(arrays of a value type `V`), and writes
the formulas' components to `out`. V is a SIMD vector on the CPU and a scalar in a CUDA thread;
the text is the same. Each distinct subexpression is printed once (the formula DAG is walked
with structural sharing), so common subexpressions are computed once.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..formulas import OPS, Const, Node, Op, Var, walk
from ..formulas.optable import Access, EmitContext

ROLE_ARRAYS = ("o", "n", "p")
OUTER_ROLE = 0


class ScalarAccess(Access):
    """An operand stored as scalars (the outer variables): broadcast to V where it is read."""

    def at(self, k: int | str) -> str:
        return f"jk::cst<V>({self.base}[{k}])"


def _const_literal(value: float) -> str:
    if value != value:
        return "jk::cst<V>(NAN)"
    if value in (float("inf"), float("-inf")):
        return f"jk::cst<V>({'-' if value < 0 else ''}INFINITY)"
    return f"jk::cst<V>({value!r})"


def print_body(formulas: tuple[Node, ...], layout: Mapping[Var, tuple[int, int]]) -> list[str]:
    """C++ statements computing `formulas` into `out`, given each variable's (role, offset)."""
    access: dict[Node, Access] = {}
    lines: list[str] = []
    temp = 0
    for node in walk(*formulas):
        if isinstance(node, Var):
            role, offset = layout[node]
            base = f"({ROLE_ARRAYS[role]} + {offset})"
            if role == OUTER_ROLE:
                access[node] = ScalarAccess(node, base, node.dim)
            else:
                access[node] = Access(node, base, node.dim)
        elif isinstance(node, Const):
            access[node] = Access(node, _const_literal(node.value), node.dim, is_const=True)
        elif isinstance(node, Op):
            name = f"t{temp}"
            temp += 1
            ctx = EmitContext(name, tuple(access[a] for a in node.args), node.dim, node.params)
            lines.append(f"V {name}[{node.dim}];  // {node.name}")
            lines.extend(OPS[node.name].emit(ctx))
            access[node] = Access(node, name, node.dim)
        else:
            raise TypeError(f"not a formula node: {node!r}")
    offset = 0
    for f in formulas:
        a = access[f]
        if f.dim == 1:
            lines.append(f"out[{offset}] = {a.at(0)};")
        else:
            lines.append(f"for (int k = 0; k < {f.dim}; ++k) out[{offset} + k] = {a.at('k')};")
        offset += f.dim
    return lines
