"""LazyTensor: symbolic (*batch, M, N, D) tensors in the pykeops style, reduced into jax.Arrays.

A LazyTensor holds a formula and the arrays its variables stand for. Arithmetic builds a bigger
formula; a reduction over the i or j axis (`sum`, `logsumexp`, `argKmin`, ...; see
`reduction_methods.py`) compiles and runs a kernel and returns a plain jax.Array.

Shapes and axes follow pykeops exactly. The internal shape `_shape` is
(*batch, M, N, D); `shape` hides D when it is 1, so a scalar formula looks like an (M, N)
matrix. Reduction axes are absolute, as in pykeops: with `nbatchdims` leading batch dims,
`axis=nbatchdims` reduces over i and `axis=nbatchdims + 1` over j (so without batch dims 0 is i
and 1 is j, but with one batch dim 1 is i and 2 is j). -3 (i), -2 (j) and -1 (the vector axis)
mean the same with or without batch dims. `ndim` is pykeops's: the vector dimension D.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..formulas import CAT_I, CAT_J, CAT_P, OPS, Const, Node, Op, Var, make, walk
from ..formulas.optable import OpSpec
from ._aliases import alias_docstring
from ._checks import check_array, check_integer, check_variable_array
from .formula_methods import FormulaMethods
from .reduction_methods import ReductionMethods
from .solve import solve as _solve_linear_system

_ROLE_AXES = {CAT_I: "i", CAT_J: "j", CAT_P: "parameter"}


@dataclass(frozen=True)
class Symbolic:
    """The array of a pykeops symbolic variable `LazyTensor((index, dim, cat))`, given only
    when the reduction is called."""

    index: int
    dim: int

    @property
    def shape(self) -> tuple[int, ...]:
        """(dim,), the shape of the array's last axis."""
        return (self.dim,)


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


def _same_leaf(a: Any, b: Any) -> bool:
    return a is b or (isinstance(a, Symbolic) and isinstance(b, Symbolic) and a == b)


def _is_complex_scalar(x: Any) -> bool:
    return isinstance(x, (complex, np.complexfloating))


def _is_complex_array(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating)


class LazyTensor(FormulaMethods, ReductionMethods):
    """A symbolic tensor F(x_i, y_j, p) of internal shape (*batch, M, N, D), never materialised.

    Built from arrays as in pykeops: (..., M, 1, D) is an i-variable, (..., 1, N, D) a
    j-variable, (..., 1, 1, D), (D,) or a scalar a parameter; `LazyTensor(x, axis=0|1|2)` takes
    (..., rows, D) arrays with an explicit role, and `LazyTensor((index, dim, cat))` a symbolic
    variable whose array is given when the reduction is called.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import LazyTensor
        >>> x, y, b = jnp.ones((5, 3)), jnp.zeros((4, 3)), jnp.ones((4, 2))
        >>> x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
        >>> K = (-((x_i - y_j) ** 2).sum(-1)).exp()
        >>> K.shape
        (5, 4)
        >>> (K @ b).shape
        (5, 2)
    """

    __array_priority__ = 100  # numpy arrays defer to LazyTensor operators
    __array_ufunc__ = None  # ... including numpy ufuncs such as np.float64(2) * x
    __hash__ = None  # == builds a formula, as in pykeops
    is_complex = False
    _complex_class: type | None = None  # the subclass that handles complex data

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.is_complex:
            LazyTensor._complex_class = cls

    def __new__(cls, x: Any = None, axis: int | None = None):
        if cls is LazyTensor and (_is_complex_scalar(x) or _is_complex_array(x)
                                  or getattr(x, "is_complex", False)):
            if LazyTensor._complex_class is None:
                raise TypeError("complex LazyTensors need jaxkeops.lazy.complex to be imported")
            return object.__new__(LazyTensor._complex_class)
        return object.__new__(cls)

    def __init__(self, x: Any = None, axis: int | None = None):
        if axis is not None:
            axis = check_integer(axis, "axis", meaning="0 for i, 1 for j, 2 for a parameter")
        if isinstance(x, LazyTensor):
            if axis is not None:
                raise TypeError(f"LazyTensor(x, axis={axis}): x is already a LazyTensor (shape "
                                f"{x.shape}); axis= gives the role of an array")
            self.formula, self._leaves = x.formula, x._leaves
            return
        if isinstance(x, tuple):
            self._init_symbolic(x, axis)
            return
        if isinstance(x, (bool, np.bool_)):
            raise TypeError(f"a LazyTensor cannot be built from the boolean {x!r}")
        if isinstance(x, (int, float, np.integer, np.floating)):
            if axis not in (None, CAT_P):
                raise ValueError(f"a scalar ({x!r}) cannot be an i- or j-variable; pass an "
                                 "array, or use the scalar directly in the formula")
            self.formula, self._leaves = Const(float(x)), ()
            return
        self._leaves, self.formula = self._leaf_of_array(check_array(x, "LazyTensor(x): x"), axis)

    def _init_symbolic(self, x: tuple, axis: Any) -> None:
        if len(x) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in x):
            raise ValueError(f"LazyTensor(tuple) takes a symbolic variable (index, dim, cat) of "
                             f"three integers, got {x!r}")
        if axis is not None:
            raise ValueError("axis must not be given with a symbolic variable (index, dim, cat)")
        index, dim, cat = (int(v) for v in x)
        var = Var(0, dim, cat)  # checks dim and cat
        self._leaves = ((Symbolic(index, dim), cat),)
        self.formula = var

    @staticmethod
    def _leaf_of_array(a: Any, axis: int | None) -> tuple[tuple, Node]:
        shape = tuple(a.shape)
        if shape and shape[-1] == 0:
            raise ValueError(f"an array of shape {shape} has an empty last axis: a LazyTensor's "
                             "last axis is its vector dimension D, which must be >= 1")
        if axis is not None:
            if isinstance(axis, bool) or axis not in (0, 1, 2):
                raise ValueError(f"axis must be 0 (i), 1 (j) or 2 (parameter), got {axis!r}")
            cat = axis
            if len(shape) == 1 and cat != CAT_P:
                a, shape = a[:, None], shape + (1,)
            elif len(shape) == 0 and cat == CAT_P:
                a = a.reshape(1)
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
        return ((a, cat),), Var(0, int(a.shape[-1]), cat)

    # ----------------------------------------------------------------------------------------
    # Structure.
    @classmethod
    def _make(cls, formula: Node, leaves: tuple) -> LazyTensor:
        out = object.__new__(cls)
        out.formula, out._leaves = formula, leaves
        return out

    def _wrap(self, x: Any, what: str = "the other operand") -> LazyTensor:
        if isinstance(x, LazyTensor):
            return x
        if not isinstance(x, (int, float, complex, np.number)):
            check_array(x, what)  # so that the error names the operand, not LazyTensor(x)
        return LazyTensor(x)

    @staticmethod
    def _merge(*tensors: LazyTensor) -> tuple[list[Node], tuple]:
        """The tensors' formulas over one shared list of leaves (an array used twice is one)."""
        leaves: list = []
        formulas = []
        for t in tensors:
            mapping = {}
            for index, (array, cat) in enumerate(t._leaves):
                position = next((p for p, (b, c) in enumerate(leaves)
                                 if _same_leaf(b, array) and c == cat), None)
                if position is None:
                    position = len(leaves)
                    leaves.append((array, cat))
                if position != index:
                    dim = int(array.shape[-1])
                    mapping[Var(index, dim, cat)] = Var(position, dim, cat)
            formulas.append(_substitute(t.formula, mapping))
        return formulas, tuple(leaves)

    def _op(self, name: str, *others: Any, params: Sequence = ()) -> LazyTensor:
        tensors = [self, *(self._wrap(o, f"{name}: the other operand") for o in others)]
        complex_operand = next((t for t in tensors if t.is_complex), None)
        if complex_operand is not None and not self.is_complex:
            return complex_operand._op_with_real(name, tensors, params)
        formulas, leaves = self._merge(*tensors)
        try:
            formula = make(name, *formulas, params=params)
        except ValueError as err:
            if type(err) is not ValueError:
                raise
            shapes = ", ".join(str(t.shape) for t in tensors)
            raise ValueError(f"{err} (LazyTensor shapes {shapes})") from err
        return self._make(formula, leaves)

    def _binary_formula(self, other: Any, build) -> LazyTensor:
        """A LazyTensor whose formula `build(self.formula, other.formula)` makes."""
        formulas, leaves = self._merge(self, self._wrap(other))
        return self._make(build(*formulas), leaves)

    def _rop(self, name: str, other: Any) -> LazyTensor:
        return self._wrap(other)._op(name, self)

    def _concrete_leaves(self) -> list[tuple[Any, int]]:
        return [(a, c) for a, c in self._leaves if not isinstance(a, Symbolic)]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The leading batch dims every variable broadcasts to.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> (Vi(jnp.ones((5, 2, 3))) - Vj(jnp.ones((1, 4, 3)))).batch_shape
            (5,)
        """
        shapes = [tuple(a.shape[:-1 if c == CAT_P else -2]) for a, c in self._concrete_leaves()]
        try:
            return tuple(np.broadcast_shapes(*shapes)) if shapes else ()
        except ValueError:
            listed = ", ".join(f"{_ROLE_AXES[c]}-variable of shape {tuple(a.shape)}"
                               for a, c in self._concrete_leaves())
            raise ValueError(f"batch dimensions do not broadcast: {listed}") from None

    batchdims = property(batch_shape.fget, doc=alias_docstring(
        "batch_shape", "pykeops's name", ">>> Vi(jnp.ones((5, 2, 3))).batchdims\n(5,)\n",
        setup=">>> import jax.numpy as jnp\n>>> from jaxkeops import Vi\n"))

    @property
    def nbatchdims(self) -> int:
        """The number of leading batch dims.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((5, 2, 3))).nbatchdims
            1
        """
        return len(self.batch_shape)

    def _rows(self, cat: int) -> int | None:
        return next((int(a.shape[-2]) for a, c in self._concrete_leaves() if c == cat), None)

    @property
    def ni(self) -> int | None:
        """M, the number of i-rows (None without an i-variable).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).ni, y_j.ni
            (2, None)
        """
        return self._rows(CAT_I)

    @property
    def nj(self) -> int | None:
        """N, the number of j-rows (None without a j-variable).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).nj, x_i.nj
            (4, None)
        """
        return self._rows(CAT_J)

    @property
    def ndim(self) -> int:
        """The vector dimension D of the formula (pykeops's meaning, not len(shape)).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).ndim, (x_i - y_j).sqnorm2().ndim
            (3, 1)
        """
        return self.formula.dim

    @property
    def _shape(self) -> tuple[int, ...]:
        """pykeops's internal shape (*batch, M, N, D), with 1 for a missing M or N."""
        return self.batch_shape + (self.ni or 1, self.nj or 1, self.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        """(*batch, M, N) for a scalar formula, (*batch, M, N, D) otherwise (as in pykeops).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).shape, (x_i - y_j).sqnorm2().shape
            ((2, 4, 3), (2, 4))
        """
        s = self._shape
        return s[:-1] if s[-1] == 1 else s

    def dim(self) -> int:
        """The number of axes of the internal shape, as torch's `dim()`: nbatchdims + 3.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).dim()
            3
        """
        return len(self._shape)

    @property
    def dtype(self):
        """The common dtype of the arrays, or None for a purely symbolic LazyTensor.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).dtype
            dtype('float32')
        """
        arrays = [a for a, _ in self._concrete_leaves()]
        return jnp.result_type(*arrays) if arrays else None

    @property
    def variables(self) -> tuple:
        """The arrays of the variables, in the order the formula numbers them.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> [a.shape for a in (x_i - y_j).variables]
            [(2, 3), (4, 3)]
        """
        return tuple(a for a, _ in self._leaves)

    def __repr__(self) -> str:
        return f"LazyTensor({self.formula!r}, shape={self.shape})"

    def __str__(self) -> str:
        return f"jaxkeops LazyTensor\n    formula: {self.formula!r}\n    shape: {self.shape}"

    # ----------------------------------------------------------------------------------------
    # Arithmetic. A complex operand takes over (see `jaxkeops.lazy.complex`).
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
        """x ** n: Square for 2, Pow for other integers, Sqrt and Rsqrt for 0.5 and -0.5,
        Powf for other floats and for LazyTensor exponents (defined for x > 0)."""
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

    def power(self, exponent: Any) -> LazyTensor:
        """`x.power(y)` is `x ** y`, as in pykeops.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).power(3).shape
            (2, 1, 3)
        """
        return self ** exponent

    def pow(self, exponent: Any) -> LazyTensor:
        """`x.pow(y)` is `x ** y`.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).pow(0.5).shape
            (2, 1, 3)
        """
        return self ** exponent

    def __getitem__(self, key) -> LazyTensor:
        """x[k], x[a:b], or the same key after leading `:`/`...`: indexing of the vector axis."""
        if isinstance(key, tuple) and len(key) >= 1 and all(k is Ellipsis or k == slice(None)
                                                            for k in key[:-1]):
            key = key[-1]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            k = int(key) + (self.ndim if key < 0 else 0)
            return self._op("Elem", params=(k,))
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.ndim)
            return self._op("Extract", params=(start, stop - start))
        if isinstance(key, slice):
            raise IndexError(f"LazyTensor indexing takes a slice of the last axis without a step, "
                             f"not {key!r}")
        raise TypeError(f"LazyTensor indexing takes an int or a slice of the last axis, not "
                        f"{key!r} ({type(key).__name__})")

    # ----------------------------------------------------------------------------------------
    # Linear-operator views.
    def solve(self, other: Any, var: Any = None, call: bool = True, **kwargs: Any) -> Any:
        """(alpha I + self)^-1 other by conjugate gradient, as pykeops's LazyTensor.solve, for a
        symmetric positive (semi-)definite self: `alpha` (default 1e-10), `eps` (stop when the
        RMS residual is below it, default 1e-6), `maxiter`, `precond`, `on_nonconvergence`,
        `return_info` and pykeops's reduction keywords; see `jaxkeops.lazy.solve.solve`.
        Differentiable with respect to other, alpha and every array of self, without
        differentiating the CG loop.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x = jnp.linspace(0, 1, 20).reshape(10, 2)
            >>> K = (-((Vi(x) - Vj(x)) ** 2).sum(-1) / 0.1).exp()
            >>> K.solve(Vi(jnp.ones((10, 3))), alpha=0.5).shape
            (10, 3)
        """
        return _solve_linear_system(self, other, var=var, call=call, **kwargs)

    def t(self) -> LazyTensor:
        """The transpose: i- and j-variables swap roles, so `K.t().shape == (..., N, M)`.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).sqnorm2().t().shape
            (4, 2)
        """
        swap = {CAT_I: CAT_J, CAT_J: CAT_I, CAT_P: CAT_P}
        leaves = tuple((a, swap[c]) for a, c in self._leaves)
        mapping = {Var(k, int(a.shape[-1]), c): Var(k, int(a.shape[-1]), swap[c])
                   for k, (a, c) in enumerate(self._leaves) if c != CAT_P}
        return self._make(_substitute(self.formula, mapping), leaves)

    @property
    def T(self) -> LazyTensor:
        """numpy-style alias of `t()`.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> (x_i - y_j).sqnorm2().T.shape
            (4, 2)
        """
        return self.t()

    def matvec(self, v: Any):
        """`K @ v`, for scipy.sparse.linalg.LinearOperator.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> K = (-(x_i - y_j).sqnorm2()).exp()
            >>> K.matvec(jnp.ones(4)).shape
            (2,)
        """
        return self @ v

    def rmatvec(self, v: Any):
        """`K.T @ v`, for scipy.sparse.linalg.LinearOperator.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> K = (-(x_i - y_j).sqnorm2()).exp()
            >>> K.rmatvec(jnp.ones(2)).shape
            (4,)
        """
        return self.T @ v

    # Complex numbers (the complex subclass does the work).
    def _complex(self) -> type:
        if LazyTensor._complex_class is None:
            raise TypeError("complex LazyTensors need jaxkeops.lazy.complex to be imported")
        return LazyTensor._complex_class

    def real2complex(self) -> LazyTensor:
        """self as complex numbers with a zero imaginary part.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> z = Vi(jnp.ones((2, 3))).real2complex()
            >>> type(z).__name__, z.shape
            ('ComplexLazyTensor', (2, 1, 3))
        """
        return self._complex().from_real(self)

    def imag2complex(self) -> LazyTensor:
        """1j * self, as complex numbers.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> z = Vi(jnp.ones((2, 3))).imag2complex()
            >>> type(z).__name__, z.shape
            ('ComplexLazyTensor', (2, 1, 3))
        """
        return self._complex().from_imag(self)

    def exp1j(self) -> LazyTensor:
        """exp(1j * self), as complex numbers.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> z = Vi(jnp.ones((2, 3))).exp1j()
            >>> type(z).__name__, z.shape
            ('ComplexLazyTensor', (2, 1, 3))
        """
        return self._complex().exp1j_of(self)


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
        method.__qualname__ = f"LazyTensor.{name}"
        method.__doc__ = _table_method_docstring(spec)
        setattr(LazyTensor, name, method)


def _table_method_docstring(spec: OpSpec) -> str:
    """What the op does, and an example on operands inside its domain with its test shapes."""
    dims = spec.example_dims or (3,) * spec.arity
    value = round(sum(spec.domain) / 2, 2)
    operands = [f"Vi(jnp.full((2, {dims[0]}), {value}))"]
    operands += [f"Vj(jnp.full((4, {d}), {value}))" for d in dims[1:]]
    arguments = ", ".join([*operands[1:], *map(repr, spec.example_params)])
    out_dim = spec.out_dim(tuple(dims), tuple(spec.example_params))
    shape = (2, 4 if spec.arity > 1 else 1) + ((out_dim,) if out_dim != 1 else ())
    what = spec.doc or ("componentwise" if spec.elementwise else "on the vector axis")
    return (f"The {spec.name} op of the formula table: {what}.\n\n"
            "Example:\n"
            "    >>> import jax.numpy as jnp\n"
            "    >>> from jaxkeops import Vi, Vj\n"
            f"    >>> {operands[0]}.{spec.method}({arguments}).shape\n"
            f"    {shape}\n")


_attach_table_methods()


def Vi(x: Any) -> LazyTensor:
    """An i-variable: x of shape (*batch, M, D) or (M,), indexed by the rows i.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vi
        >>> Vi(jnp.ones((10, 3))).shape
        (10, 1, 3)
    """
    a = check_variable_array(x, "Vi(x)", "an i-variable", 1, "(*batch, M, D) or (M,)")
    return LazyTensor(a, axis=CAT_I)


def Vj(x: Any) -> LazyTensor:
    """A j-variable: x of shape (*batch, N, D) or (N,), indexed by the columns j.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vj
        >>> Vj(jnp.ones(7)).shape
        (1, 7)
    """
    a = check_variable_array(x, "Vj(x)", "a j-variable", 1, "(*batch, N, D) or (N,)")
    return LazyTensor(a, axis=CAT_J)


def Pm(x: Any) -> LazyTensor:
    """A parameter: a scalar, or x of shape (D,) or (*batch, D), the same for every (i, j).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Pm
        >>> Pm(jnp.ones(3)).shape
        (1, 1, 3)
    """
    a = check_variable_array(x, "Pm(x)", "a parameter", 0, "() or (*batch, D)")
    return LazyTensor(a.reshape(1) if a.ndim == 0 else a, axis=CAT_P)
