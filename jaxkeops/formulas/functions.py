"""Named formula builders that a formula string may call besides the ops of the table.

KeOps accepts names that are not ops of their own: aliases of ops (SumT, SqNormIso, SqNormDiag,
SymSqNorm, DiffClampInt, DifferenceMatrix), optimisation hints that do not change the value
(Factorize, AutoFactorize: our code generator shares common subexpressions anyway), and longer
signatures of two ops (Kron with two shape lists, TensorDot with a permutation of its output
axes). Each is a `FormulaFunction`: formula arguments, then static parameters of the op table's
kinds, and a builder. A builder raises `FormulaArgumentError` to blame one argument, which the
parser then points at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .algebra import const, sub, widen
from .nodes import Node
from .optable import make
from .tensor_ops import kron, tensordot_permuted


class FormulaArgumentError(ValueError):
    """A builder's complaint about its argument number `index` (0-based, formula arguments
    first, then static parameters)."""

    def __init__(self, index: int, message: str):
        self.index = index
        super().__init__(message)


@dataclass(frozen=True)
class FormulaFunction:
    name: str
    arity: int  # formula arguments
    param_kinds: tuple[str, ...]  # static parameters after them: "int", "float" or "ints"
    build: Callable[..., Node]
    doc: str = ""


def sum_t(x: Node, dim: int) -> Node:
    """KeOps's SumT(x, dim): the scalar x repeated `dim` times (the transpose of Sum)."""
    if x.dim != 1:
        raise FormulaArgumentError(0, f"SumT: the operand must be a scalar, got dim {x.dim}")
    if dim < 1:
        raise FormulaArgumentError(1, f"SumT: the dimension must be >= 1, got {dim}")
    return widen(x, dim)


def _weighted_norm(name: str, weight_dim: Callable[[int], int]) -> Callable[[Node, Node], Node]:
    def build(s: Node, x: Node) -> Node:
        expected = weight_dim(x.dim)
        if s.dim != expected:
            raise FormulaArgumentError(0, f"{name}: the weight must have dim {expected} for a "
                                          f"vector of dim {x.dim}, got {s.dim}")
        return make("WeightedSqNorm", s, x)

    build.__name__ = name
    return build


def diff_clamp_int(x: Node, a: int, b: int) -> Node:
    """KeOps's DiffClampInt(x, a, b), the derivative of ClampInt: 0 where x < a or x > b,
    1 elsewhere (so 0 everywhere when a > b)."""
    return make("Mult", sub(const(1.0), make("LessThan", x, const(a))),
                sub(const(1.0), make("GreaterThan", x, const(b))))


def difference_matrix(x: Node, y: Node) -> Node:
    """pykeops's DifferenceMatrix(x, y): component j * x.dim + i is x_i - y_j."""
    return make("Subtract", make("TensorProd", const(1.0, y.dim), x),
                make("TensorProd", y, const(1.0, x.dim)))


_FUNCTIONS = [
    FormulaFunction("Kron", 2, ("ints", "ints"), kron,
                    "Kron(a, b, shape_a, shape_b): np.kron of a and b read with the two shapes"),
    FormulaFunction("TensorDot", 2, ("ints",) * 5, tensordot_permuted,
                    "TensorDot(a, b, dimfa, dimfb, contfa, contfb, perm): kept axis t of the "
                    "product goes to position perm[t]"),
    FormulaFunction("SumT", 1, ("int",), sum_t, "SumT(x, dim): the scalar x repeated dim times"),
    FormulaFunction("SqNormIso", 2, (), _weighted_norm("SqNormIso", lambda d: 1),
                    "SqNormIso(s, x) = s * |x|^2"),
    FormulaFunction("SqNormDiag", 2, (), _weighted_norm("SqNormDiag", lambda d: d),
                    "SqNormDiag(s, x) = sum_k s_k x_k^2"),
    FormulaFunction("SymSqNorm", 2, (), _weighted_norm("SymSqNorm", lambda d: d * d),
                    "SymSqNorm(S, x) = sum_kl S_kl x_k x_l"),
    FormulaFunction("DiffClampInt", 1, ("int", "int"), diff_clamp_int,
                    "DiffClampInt(x, a, b): 1 where a <= x <= b, 0 elsewhere"),
    FormulaFunction("DifferenceMatrix", 2, (), difference_matrix,
                    "DifferenceMatrix(x, y): x_i - y_j at component j * dim(x) + i"),
    FormulaFunction("Factorize", 2, (), lambda f, g: f,
                    "Factorize(f, g) = f (a hint: common subexpressions are shared anyway)"),
    FormulaFunction("AutoFactorize", 1, (), lambda f: f, "AutoFactorize(f) = f"),
]

FUNCTIONS: dict[str, tuple[FormulaFunction, ...]] = {}
for _function in _FUNCTIONS:
    FUNCTIONS[_function.name] = FUNCTIONS.get(_function.name, ()) + (_function,)
