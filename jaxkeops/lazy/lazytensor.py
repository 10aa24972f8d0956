"""LazyTensor: symbolic (*batch, M, N, D) tensors in the pykeops style, reduced into jax.Arrays.

A LazyTensor holds a formula and the arrays its variables stand for. Arithmetic builds a bigger
formula; a reduction over the i or j axis (`sum`, `logsumexp`, `argKmin`, ...) compiles and runs
a kernel and returns a plain jax.Array. Symbolic axes follow pykeops: -3 is i, -2 is j, -1 is
the vector dimension, batch dims come first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..formulas import CAT_I, CAT_J, CAT_P, OPS, Const, Node, Op, Var, make, walk
from .reduce import run_reduction

_ROLE_AXES = {CAT_I: "i", CAT_J: "j", CAT_P: "parameter"}


def _substitute(node: Node, mapping: dict[Var, Var]) -> Node:
    """`node` with its variables renamed by `mapping`, rebuilt through the op table."""
    if not mapping:
        return node
    new: dict[Node, Node] = {}
    for n in walk(node):
        if isinstance(n, Var):
            new[n] = mapping.get(n, n)
        elif isinstance(n, Op):
            new[n] = make(n.name, *(new[a] for a in n.args), params=n.params)
        else:
            new[n] = n
    return new[node]


class LazyTensor:
    """A symbolic tensor F(x_i, y_j, p) of shape (*batch, M, N, D), never materialised.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vi, Vj
        >>> x, y, b = jnp.ones((5, 3)), jnp.zeros((4, 3)), jnp.ones((4, 2))
        >>> K = (-((Vi(x) - Vj(y)) ** 2).sum(-1)).exp()
        >>> (K @ b).shape
        (5, 2)
    """

    __array_priority__ = 100  # so numpy arrays defer to LazyTensor operators
    __hash__ = None  # == builds a formula, as in pykeops

    def __init__(self, x: Any, axis: int | None = None):
        if isinstance(x, LazyTensor):
            self.formula, self._leaves = x.formula, x._leaves
            return
        if isinstance(x, (int, float, np.integer, np.floating)):
            if axis is not None:
                raise ValueError(f"a scalar ({x!r}) cannot be an i-, j- or parameter variable; "
                                 "pass an array, or use the scalar directly in the formula")
            self.formula, self._leaves = Const(float(x)), ()
            return
        a = x if hasattr(x, "shape") and hasattr(x, "dtype") else jnp.asarray(x)
        shape = tuple(a.shape)
        if axis is not None:
            if axis not in (0, 1, 2):
                raise ValueError(f"axis must be 0 (i), 1 (j) or 2 (parameter), got {axis}")
            cat = axis
            if len(shape) == 1 and cat != CAT_P:
                a, shape = a[:, None], shape + (1,)
        elif len(shape) <= 1:
            cat = CAT_P
            if len(shape) == 0:
                a, shape = a.reshape(1), (1,)
        elif len(shape) >= 3 and shape[-3:-1] == (1, 1):
            cat = CAT_P
            a = a.reshape(shape[:-3] + shape[-1:])
        elif len(shape) >= 3 and shape[-2] == 1:
            cat = CAT_I
            a = a.reshape(shape[:-2] + shape[-1:])
        elif len(shape) >= 3 and shape[-3] == 1:
            cat = CAT_J
            a = a.reshape(shape[:-3] + shape[-2:])
        else:
            raise ValueError(
                f"cannot tell the role of an array of shape {shape}: use Vi/Vj/Pm, "
                "LazyTensor(x, axis=...), or shapes (..., M, 1, D) for i, (..., 1, N, D) for j, "
                "(..., 1, 1, D) or (D,) for a parameter"
            )
        if cat != CAT_P and a.ndim < 2:
            raise ValueError(f"an {_ROLE_AXES[cat]}-variable needs shape (..., rows, dim), "
                             f"got {shape}")
        self._leaves = ((a, cat),)
        self.formula = Var(0, int(a.shape[-1]), cat)

    # ----------------------------------------------------------------------------------------
    # Structure.
    @classmethod
    def _make(cls, formula: Node, leaves: tuple) -> LazyTensor:
        out = cls.__new__(cls)
        out.formula, out._leaves = formula, leaves
        return out

    @staticmethod
    def _wrap(x: Any) -> LazyTensor:
        return x if isinstance(x, LazyTensor) else LazyTensor(x)

    @staticmethod
    def _merge(*tensors: LazyTensor) -> tuple[list[Node], tuple]:
        """The tensors' formulas over one shared list of leaves (an array used twice is one)."""
        leaves: list = []
        formulas = []
        for t in tensors:
            mapping = {}
            for index, (array, cat) in enumerate(t._leaves):
                position = next((p for p, (b, c) in enumerate(leaves)
                                 if b is array and c == cat), None)
                if position is None:
                    position = len(leaves)
                    leaves.append((array, cat))
                if position != index:
                    mapping[Var(index, int(array.shape[-1]), cat)] = Var(
                        position, int(array.shape[-1]), cat)
            formulas.append(_substitute(t.formula, mapping))
        return formulas, tuple(leaves)

    def _op(self, name: str, *others: Any, params: Sequence = ()) -> LazyTensor:
        tensors = [self, *(self._wrap(o) for o in others)]
        formulas, leaves = self._merge(*tensors)
        return self._make(make(name, *formulas, params=params), leaves)

    def _rop(self, name: str, other: Any) -> LazyTensor:
        return self._wrap(other)._op(name, self)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        shapes = [tuple(a.shape[:-1 if c == CAT_P else -2]) for a, c in self._leaves]
        try:
            return tuple(np.broadcast_shapes(*shapes)) if shapes else ()
        except ValueError:
            listed = ", ".join(f"{_ROLE_AXES[c]}-variable of shape {tuple(a.shape)}"
                               for a, c in self._leaves)
            raise ValueError(f"batch dimensions do not broadcast: {listed}") from None

    @property
    def shape(self) -> tuple[int, ...]:
        m = next((a.shape[-2] for a, c in self._leaves if c == CAT_I), 1)
        n = next((a.shape[-2] for a, c in self._leaves if c == CAT_J), 1)
        return self.batch_shape + (m, n, self.formula.dim)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"LazyTensor({self.formula!r}, shape={self.shape})"

    # ----------------------------------------------------------------------------------------
    # Arithmetic.
    def __add__(self, o): return self._op("Add", o)
    def __radd__(self, o): return self._rop("Add", o)
    def __sub__(self, o): return self._op("Subtract", o)
    def __rsub__(self, o): return self._rop("Subtract", o)
    def __mul__(self, o): return self._op("Mult", o)
    def __rmul__(self, o): return self._rop("Mult", o)
    def __truediv__(self, o): return self._op("Divide", o)
    def __rtruediv__(self, o): return self._rop("Divide", o)
    def __neg__(self): return self._op("Minus")
    def __rpow__(self, base): return self._wrap(base)._op("Powf", self)

    def __bool__(self):
        raise TypeError("a LazyTensor is symbolic: comparisons build formulas (1.0 where true), "
                        "and have no truth value")
    def __abs__(self): return self._op("Abs")
    def __or__(self, o): return self._op("Scalprod", o)
    def __ror__(self, o): return self._rop("Scalprod", o)
    def __eq__(self, o): return self._op("Equal", o)  # type: ignore[override]
    def __ne__(self, o): return self._op("NotEqual", o)  # type: ignore[override]
    def __lt__(self, o): return self._op("LessThan", o)
    def __gt__(self, o): return self._op("GreaterThan", o)
    def __le__(self, o): return self._op("LessOrEqual", o)
    def __ge__(self, o): return self._op("GreaterOrEqual", o)

    def __pow__(self, exponent: Any) -> LazyTensor:
        if isinstance(exponent, (int, np.integer)) or (
            isinstance(exponent, float) and exponent.is_integer() and abs(exponent) < 2**31
        ):
            return self._op("Pow", params=(int(exponent),))
        if isinstance(exponent, (float, np.floating)):
            if exponent == 0.5:
                return self._op("Sqrt")
            if exponent == -0.5:
                return self._op("Rsqrt")
        return self._op("Powf", exponent)

    def __getitem__(self, key) -> LazyTensor:
        if isinstance(key, tuple) and len(key) >= 1 and all(k is Ellipsis or k == slice(None)
                                                            for k in key[:-1]):
            key = key[-1]
        if isinstance(key, (int, np.integer)):
            k = int(key) + (self.formula.dim if key < 0 else 0)
            return self._op("Elem", params=(k,))
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.formula.dim)
            return self._op("Extract", params=(start, stop - start))
        raise IndexError(f"LazyTensor indexing takes an int or a slice of the last axis, not "
                         f"{key!r}")

    def __matmul__(self, v: Any) -> jnp.ndarray:
        """K @ v = sum_j K_ij v_j for v of shape (*batch, N) or (*batch, N, E)."""
        v = jnp.asarray(v)
        vector = v.ndim == 1 or (v.ndim == len(self.batch_shape) + 1 and self.formula.dim == 1)
        vj = LazyTensor(v[..., None] if vector else v, axis=CAT_J)
        out = (self * vj).sum(axis=-2)
        return out[..., 0] if vector else out

    # Vector operations with pykeops names (the elementwise functions come from the op table).
    def concat(self, other): return self._op("Concat", other)
    def sqdist(self, other): return self._op("SqDist", other)
    def weightedsqnorm(self, s): return self._wrap(s)._op("WeightedSqNorm", self)
    def weightedsqdist(self, other, s): return self._wrap(s)._op("WeightedSqDist", self, other)
    def matvecmult(self, other): return self._op("MatVecMult", other)
    def vecmatmult(self, other): return self._op("VecMatMult", other)
    def tensorprod(self, other): return self._op("TensorProd", other)
    def one_hot(self, dim: int): return self._op("OneHot", params=(dim,))
    def elem(self, k: int): return self._op("Elem", params=(k,))
    def extract(self, start: int, length: int): return self._op("Extract", params=(start, length))

    def kron(self, other, shape_a: Sequence[int] = (), shape_b: Sequence[int] = ()):
        """Kronecker product of self (a shape_a matrix) and other (shape_b); vectors by default."""
        return self._op("Kron", other, params=(tuple(shape_a) + tuple(shape_b),))

    def tensordot(self, other, dimfa, dimfb, contfa, contfb):
        params = tuple(tuple(int(v) for v in np.atleast_1d(p))
                       for p in (dimfa, dimfb, contfa, contfb))
        return self._op("TensorDot", other, params=params)

    def permute(self, shape: Sequence[int], axes: Sequence[int]):
        """self read as a row-major tensor of `shape`, axes permuted as numpy.transpose does."""
        return self._op("Permute", params=(tuple(shape), tuple(axes)))

    def clamp(self, a, b) -> LazyTensor:
        if all(isinstance(v, (int, np.integer)) for v in (a, b)):
            return self._op("ClampInt", params=(int(a), int(b)))
        return self._op("Clamp", a, b)

    def ifelse(self, a, b): return self._op("IfElse", a, b)
    def mod(self, modulus, offset=0.0): return self._op("Mod", modulus, offset)
    def round(self, decimals: int = 0): return self._op("Round", params=(decimals,))
    def pow(self, n): return self ** n
    def powf(self, y): return self._op("Powf", y)
    def atan2(self, x): return self._op("Atan2", x)
    def clampint(self, a: int, b: int): return self._op("ClampInt", params=(a, b))

    # ----------------------------------------------------------------------------------------
    # Reductions.
    def _axis(self, axis: int | None, dim: int | None, allow_vector: bool = True) -> int:
        """-1 for the vector axis, 0 to reduce over i, 1 to reduce over j."""
        if axis is None:
            axis = dim
        if axis is None:
            raise ValueError("give the axis to reduce: -3 (or M's axis) for i, -2 for j")
        nd = self.ndim
        a = axis + nd if axis < 0 else axis
        if a == nd - 1 and allow_vector:
            return -1
        if a == nd - 2:
            return 1
        if a == nd - 3:
            return 0
        raise ValueError(f"cannot reduce axis {axis} of a LazyTensor of shape {self.shape}: "
                         "use -3 (i), -2 (j)" + (" or -1 (vector)" if allow_vector else ""))

    def _reduce(self, reduction: str, axis: int, extra: Sequence[LazyTensor] = (),
                k: int | None = None, sum_scheme: str = "block"):
        formulas, leaves = self._merge(self, *extra)
        arrays = [a for a, _ in leaves]
        variables = [Var(i, int(a.shape[-1]), c) for i, (a, c) in enumerate(leaves)]
        names = [f"{'ijp'[c]}-variable #{i} {tuple(a.shape)}" for i, (a, c) in enumerate(leaves)]
        outs = run_reduction(formulas, reduction, axis, variables, arrays, names, k=k,
                             sum_scheme=sum_scheme)
        return outs[0] if len(outs) == 1 else outs

    def sum(self, axis: int | None = None, dim: int | None = None, sum_scheme: str = "block"):
        a = self._axis(axis, dim)
        if a == -1:
            return self._op("Sum")
        return self._reduce("Sum", a, sum_scheme=sum_scheme)

    def _extremum(self, name: str, vector_op: str | None, axis, dim):
        a = self._axis(axis, dim, allow_vector=vector_op is not None)
        if a == -1:
            return self._op(vector_op)
        return self._reduce(name, a)

    def min(self, axis=None, dim=None): return self._extremum("Min", "Min", axis, dim)
    def max(self, axis=None, dim=None): return self._extremum("Max", "Max", axis, dim)
    def argmin(self, axis=None, dim=None): return self._extremum("ArgMin", "ArgMin", axis, dim)
    def argmax(self, axis=None, dim=None): return self._extremum("ArgMax", "ArgMax", axis, dim)
    def min_argmin(self, axis=None, dim=None): return self._extremum("Min_ArgMin", None, axis, dim)
    def max_argmax(self, axis=None, dim=None): return self._extremum("Max_ArgMax", None, axis, dim)

    def Kmin(self, K: int, axis=None, dim=None):
        return self._reduce("KMin", self._axis(axis, dim, False), k=K)

    def argKmin(self, K: int, axis=None, dim=None):
        return self._reduce("ArgKMin", self._axis(axis, dim, False), k=K)

    def Kmin_argKmin(self, K: int, axis=None, dim=None):
        return self._reduce("KMin_ArgKMin", self._axis(axis, dim, False), k=K)

    kmin, argkmin, kmin_argkmin = Kmin, argKmin, Kmin_argKmin

    def logsumexp(self, axis=None, dim=None, weight: Any = None):
        a = self._axis(axis, dim, allow_vector=False)
        extra = () if weight is None else (self._wrap(weight),)
        return self._reduce("LogSumExp", a, extra)

    def sumsoftmaxweight(self, weight: Any, axis=None, dim=None):
        return self._reduce("SumSoftMaxWeight", self._axis(axis, dim, False), (self._wrap(weight),))


def _attach_table_methods() -> None:
    """Elementwise and vector methods named in the op table (exp, log, sqnorm2, ...)."""
    for spec in OPS.values():
        name = spec.method
        if not name or name.startswith("__") or hasattr(LazyTensor, name):
            continue

        def method(self, *args, _op=spec.name, _arity=spec.arity):
            formulas = args[: _arity - 1]
            params = args[_arity - 1:]
            return self._op(_op, *formulas, params=params)

        method.__name__ = name
        method.__doc__ = f"The {spec.name} op of the formula table. {spec.doc}".strip()
        setattr(LazyTensor, name, method)


_attach_table_methods()


def Vi(x: Any) -> LazyTensor:
    """An i-variable: x of shape (*batch, M, D) or (M,), indexed by the rows i."""
    return LazyTensor(x, axis=CAT_I)


def Vj(x: Any) -> LazyTensor:
    """A j-variable: x of shape (*batch, N, D) or (N,), indexed by the columns j."""
    return LazyTensor(x, axis=CAT_J)


def Pm(x: Any) -> LazyTensor:
    """A parameter: a scalar, or x of shape (D,) or (*batch, D), the same for every (i, j)."""
    a = jnp.asarray(x)
    return LazyTensor(a.reshape(1) if a.ndim == 0 else a, axis=CAT_P)
