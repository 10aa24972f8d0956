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
from ..formulas.optable import Access, EmitContext, known_sign

ROLE_ARRAYS = ("o", "n", "p")
OUTER_ROLE = 0


class ScalarAccess(Access):
    """An operand stored as scalars (the outer variables): broadcast to V where it is read."""

    broadcast = True

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
    signs: dict[Node, int] = {}
    lines: list[str] = []
    for node, name in _each_op(formulas, layout, access, "{}"):
        emit, operands = _emit_and_operands(node, access, signs)
        lines.append(f"V {name}[{node.dim}];  // {node.name}")
        lines.extend(emit(EmitContext(name, operands, node.dim, node.params)))
    return lines + _store_outputs(formulas, access, "out")


def _emit_and_operands(node: Op, access: Mapping[Node, Access], signs: dict[Node, int]):
    """How to print `node` and from which accesses: f(-a) from a's, where the op absorbs the
    negation (the Minus is still printed, and the C++ compiler drops it if nothing else reads
    it), else the op's own printing from its operands'; either without range clamps where
    the operand's sign allows (`known_sign`)."""
    spec = OPS[node.name]
    if spec.emit_of_negated is not None:
        (operand,) = node.args
        if isinstance(operand, Op) and operand.name == "Minus":
            negated = operand.args[0]
            emit = spec.emit_of_negated
            if spec.emit_of_negated_nonnegative and known_sign(negated, signs) > 0:
                emit = spec.emit_of_negated_nonnegative
            return emit, (access[negated],)
    if spec.emit_of_nonpositive and known_sign(node.args[0], signs) < 0:
        return spec.emit_of_nonpositive, (access[node.args[0]],)
    return spec.emit, tuple(access[a] for a in node.args)


def _each_op(formulas: tuple[Node, ...], layout: Mapping[Var, tuple[int, int]],
             access: dict[Node, Access], temp_access: str):
    """Yields (op, temporary name) in evaluation order, filling `access` as it goes: leaves
    from the layout, each op (once its code is emitted) as `temp_access` of its name."""
    temp = 0
    for node in walk(*formulas):
        if not isinstance(node, Op):
            access[node] = _leaf_access(node, layout)
            continue
        name = f"t{temp}"
        temp += 1
        yield node, name
        access[node] = Access(node, temp_access.format(name), node.dim)


def _store_outputs(formulas: tuple[Node, ...], access: Mapping[Node, Access], out: str
                   ) -> list[str]:
    """`out[...] = ...` for the components of the formulas, one after the other."""
    lines = []
    offset = 0
    for f in formulas:
        a = access[f]
        if f.dim == 1:
            lines.append(f"{out}[{offset}] = {a.at(0)};")
        else:
            lines.append(f"for (int k = 0; k < {f.dim}; ++k) {out}[{offset} + k] = {a.at('k')};")
        offset += f.dim
    return lines


# Inside a tile, pair q reads output row q % NR (scalars `orow[.]`) and the column vector q / NR
# (`ngrp[.]`); these bind the names `o` and `n` the operand accesses use.
_PAIR_SETUP = "const S* o = orow[q % NR]; const V* n = ngrp[q / NR]; (void)o; (void)n;"


def print_tile_body(formulas: tuple[Node, ...], layout: Mapping[Var, tuple[int, int]]
                    ) -> list[str]:
    """C++ statements computing `formulas` for a tile of NQ = NR x NG pairs into `out[q]`.

    Each op is computed for every pair of the tile before the next op starts, which gives the
    core NQ independent chains of work; a fold (a sum over a dimension, say) runs its loop over
    the dimension outside the loop over pairs, so that one load of each component serves all
    the pairs that share it (NR rows x NG column vectors: a register tile, as in a GEMM).
    """
    access: dict[Node, Access] = {}
    signs: dict[Node, int] = {}
    lines: list[str] = []
    for node, name in _each_op(formulas, layout, access, "{}[q]"):
        emit, operands = _emit_and_operands(node, access, signs)
        ctx = EmitContext(f"{name}[q]", operands, node.dim, node.params)
        spec = OPS[node.name]
        lines.append(f"V {name}[NQ][{node.dim}];  // {node.name}")
        fold = spec.fold
        if fold is not None:
            length = fold.length(ctx)
            lines += ["{", "  V acc[NQ];", *_fold_step(ctx, fold, "0", "acc[q] = {b};")]
            if length > 1:
                update = f"acc[q] = {fold.combine.format(a='acc[q]', b='{b}')};"
                lines += [f"  for (int k = 1; k < {length}; ++k) {{",
                          *("  " + line for line in _fold_step(ctx, fold, "k", update)), "  }"]
            lines += [f"  for (int q = 0; q < NQ; ++q) {name}[q][0] = acc[q];", "}"]
        else:
            preload, ctx = _preload(ctx, "0", scalars_only=True)
            body = ["for (int q = 0; q < NQ; ++q) {", f"  {_PAIR_SETUP}",
                    *("  " + line for line in emit(ctx)), "}"]
            lines += ["{", *preload, *("  " + line for line in body), "}"] if preload else body
    return [*lines, "for (int q = 0; q < NQ; ++q) {", f"  {_PAIR_SETUP}",
            *("  " + line for line in _store_outputs(formulas, access, "out[q]")), "}"]


class _Loaded(Access):
    """An inner operand's component k, loaded once per vector of the tile (`name[g]`)."""

    def at(self, k: int | str) -> str:
        return f"{self.base}[q / NR]"

    def bcast(self, k: int | str) -> str:
        return self.at(k)


def _preload(ctx: EmitContext, k: str, scalars_only: bool) -> tuple[list[str], EmitContext]:
    """Loads component k of the inner operands (only the scalar ones if `scalars_only`) into
    registers, once per vector of the tile, and a context that reads them from there."""
    lines = []
    args = list(ctx.args)
    for t, a in enumerate(ctx.args):
        if isinstance(a.node, Var) and a.base.startswith(_INNER_BASE) and (
                a.dim == 1 or not scalars_only):
            name, offset = f"loaded{t}", a.base[len(_INNER_BASE):-1]
            index = "0" if a.dim == 1 else k
            lines.append(f"  V {name}[NG]; for (int g = 0; g < NG; ++g) "
                         f"{name}[g] = jk::in_register((ngrp[g] + {offset})[{index}]);")
            args[t] = _Loaded(a.node, name, a.dim)
    return lines, EmitContext(ctx.out, tuple(args), ctx.dim, ctx.params)


def _fold_step(ctx: EmitContext, fold, k: str, update: str) -> list[str]:
    """One step k of a fold over a tile: the inner operands' component k is loaded into a
    register once per vector of the tile, then every pair of the tile folds in its term."""
    lines, local = _preload(ctx, k, scalars_only=False)
    term = fold.term(local, k)
    lines.append(f"  for (int q = 0; q < NQ; ++q) {{ {_PAIR_SETUP} {update.format(b=term)} }}")
    return lines


_INNER_BASE = f"({ROLE_ARRAYS[1]} + "


def _leaf_access(node: Node, layout: Mapping[Var, tuple[int, int]]) -> Access:
    if isinstance(node, Var):
        role, offset = layout[node]
        base = f"({ROLE_ARRAYS[role]} + {offset})"
        return ScalarAccess(node, base, node.dim) if role == OUTER_ROLE else \
            Access(node, base, node.dim)
    if isinstance(node, Const):
        return Access(node, _const_literal(node.value), node.dim, is_const=True)
    raise TypeError(f"not a formula node: {node!r}")
