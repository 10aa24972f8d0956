"""Immutable, hashable formula nodes.

A formula is a DAG of three node kinds: variables (i-, j-indexed or parameters), constants and
applications of an op from the op table (`ops.py`). Nodes compare and hash by structure, with the
hash computed once, so they can key caches and common-subexpression tables.
"""

from __future__ import annotations

from typing import Any

CAT_I = 0
CAT_J = 1
CAT_P = 2
CATEGORY_NAMES = {CAT_I: "Vi", CAT_J: "Vj", CAT_P: "Pm"}


class Node:
    """Base class of formula nodes: immutable, structurally hashable, with a dimension."""

    __slots__ = ("dim", "_key", "_hash")

    dim: int
    _key: tuple
    _hash: int

    def _init(self, dim: int, key: tuple) -> None:
        object.__setattr__(self, "dim", int(dim))
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Node) or self._hash != other._hash:
            return False
        return self._key == other._key

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    @property
    def children(self) -> tuple[Node, ...]:
        return ()


class Var(Node):
    """Variable number `index` of category CAT_I, CAT_J or CAT_P, with `dim` components."""

    __slots__ = ("index", "cat")

    def __init__(self, index: int, dim: int, cat: int):
        if cat not in CATEGORY_NAMES:
            raise ValueError(f"variable category must be 0 (Vi), 1 (Vj) or 2 (Pm), got {cat}")
        if dim < 1:
            raise ValueError(f"variable dimension must be >= 1, got {dim}")
        if index < 0:
            raise ValueError(f"variable index must be >= 0, got {index}")
        object.__setattr__(self, "index", int(index))
        object.__setattr__(self, "cat", int(cat))
        self._init(dim, ("var", int(index), int(dim), int(cat)))

    def __repr__(self) -> str:
        return f"Var({self.index},{self.dim},{self.cat})"

    def __reduce__(self):
        return (Var, (self.index, self.dim, self.cat))


class Const(Node):
    """A constant vector whose `dim` components all equal `value`."""

    __slots__ = ("value",)

    def __init__(self, value: float, dim: int = 1):
        value = float(value)
        object.__setattr__(self, "value", value)
        # repr() keeps -0.0, nan and inf apart, which float equality would not.
        self._init(dim, ("const", repr(value), int(dim)))

    def __reduce__(self):
        return (Const, (self.value, self.dim))

    def __repr__(self) -> str:
        v = self.value
        text = str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
        return text if self.dim == 1 else f"{text}[{self.dim}]"


class Op(Node):
    """Op `name` of the op table applied to `args`, with static parameters `params`."""

    __slots__ = ("name", "args", "params")

    def __init__(self, name: str, args: tuple[Node, ...], params: tuple, dim: int):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "params", tuple(params))
        self._init(dim, ("op", name, self.args, self.params))

    @property
    def children(self) -> tuple[Node, ...]:
        return self.args

    def __reduce__(self):
        return (Op, (self.name, self.args, self.params, self.dim))

    def __repr__(self) -> str:
        return _op_text(self)


# Beyond this many nodes in the expanded tree, a formula prints with its shared subformulas
# named once ("let %0=...; %1=... in ..."): the tree of a formula with much sharing (a dynamic
# programme unrolled, a high-order derivative) is exponentially larger than its DAG.
_TREE_TEXT_LIMIT = 10_000


def _op_text(root: Op) -> str:
    """The text of `root`: nested calls, or a let-form linear in the size of the DAG."""
    order = walk(root)
    tree_size: dict[Node, int] = {}
    uses: dict[Node, int] = {}
    for node in order:
        tree_size[node] = 1 + sum(tree_size[c] for c in node.children)
        for child in node.children:
            uses[child] = uses.get(child, 0) + 1
    shared = tree_size[root] > _TREE_TEXT_LIMIT
    text: dict[Node, str] = {}
    bindings: list[str] = []
    for node in order:
        if not isinstance(node, Op):
            text[node] = repr(node)
            continue
        inner = ",".join([text[a] for a in node.args] + [str(p) for p in node.params])
        text[node] = f"{node.name}({inner})"
        if shared and uses.get(node, 0) > 1:
            bindings.append(f"%{len(bindings)}={text[node]}")
            text[node] = f"%{len(bindings) - 1}"
    if not bindings:
        return text[root]
    return f"let {'; '.join(bindings)} in {text[root]}"


def variables(*roots: Node) -> list[Var]:
    """The distinct variables of one or more formulas, sorted by (index, category)."""
    seen: dict[Var, None] = {}
    for node in walk(*roots):
        if isinstance(node, Var):
            seen[node] = None
    return sorted(seen, key=lambda v: (v.index, v.cat, v.dim))


def walk(*roots: Node) -> list[Node]:
    """Every distinct node under `roots`, children before parents (a topological order)."""
    order: list[Node] = []
    done: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if node in done:
            continue
        if expanded:
            done.add(node)
            order.append(node)
            continue
        stack.append((node, True))
        for child in reversed(node.children):
            if child not in done:
                stack.append((child, False))
    return order
