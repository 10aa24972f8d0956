"""LazyTensor: symbolic (*batch, M, N, D) tensors in the pykeops style, reduced into jax.Arrays.

A LazyTensor holds a formula and the arrays its variables stand for. Arithmetic builds a bigger
formula; a reduction over the i or j axis (`sum`, `logsumexp`, `argKmin`, ...; see
`reduction_methods.py`) compiles and runs a kernel and returns a plain jax.Array.

Shapes and axes follow pykeops exactly: how arrays become i-, j- and parameter variables and the
shape (*batch, M, N, D) their roles give is `shape_methods.py`. Reduction axes are absolute, as
in pykeops: with `nbatchdims` leading batch dims, `axis=nbatchdims` reduces over i and
`axis=nbatchdims + 1` over j (so without batch dims 0 is i and 1 is j, but with one batch dim 1
is i and 2 is j). -3 (i), -2 (j) and -1 (the vector axis) mean the same with or without batch
dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..formulas import CAT_I, CAT_J, CAT_P, OPS, Const, Node, Op, Var, make, walk
from ..formulas.optable import OpSpec
from ._checks import check_array, check_integer, check_variable_array
from .formula_methods import FormulaMethods
from .reduction_methods import ReductionMethods
from .shape_methods import ShapeMethods, Symbolic
from .solve import solve as _solve_linear_system


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


class LazyTensor(ShapeMethods, FormulaMethods, ReductionMethods):
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
    # KeOps's block-sparsity pattern: a 6-tuple of int32 arrays (see jaxkeops.cluster), set as
    # in pykeops (`K.ranges = ...`); it passes to the LazyTensors built from this one and to
    # their reductions, and .t() swaps its halves.
    ranges = None

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

    # ----------------------------------------------------------------------------------------
    # Structure.
    @classmethod
    def _make(cls, formula: Node, leaves: tuple, ranges: Any = None) -> LazyTensor:
        out = object.__new__(cls)
        out.formula, out._leaves = formula, leaves
        if ranges is not None:
            out.ranges = ranges
        return out

    @staticmethod
    def _shared_ranges(tensors: Sequence[LazyTensor]) -> Any:
        """The ranges of the tensors that have some; they must be the same tuple."""
        found = [t.ranges for t in tensors if getattr(t, "ranges", None) is not None]
        for other in found[1:]:
            if other is not found[0]:
                raise ValueError("the operands of this operation have different ranges "
                                 "(block-sparsity patterns); set the same tuple on both, or "
                                 "ranges on one only")
        return found[0] if found else None

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
        return self._make(formula, leaves, self._shared_ranges(tensors))

    def _binary_formula(self, other: Any, build) -> LazyTensor:
        """A LazyTensor whose formula `build(self.formula, other.formula)` makes."""
        tensors = (self, self._wrap(other))
        formulas, leaves = self._merge(*tensors)
        return self._make(build(*formulas), leaves, self._shared_ranges(tensors))

    def _rop(self, name: str, other: Any) -> LazyTensor:
        return self._wrap(other)._op(name, self)

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
        ranges = self.ranges
        if ranges is not None:  # the i-half and j-half of the block-sparsity pattern swap
            ranges = (*ranges[3:], *ranges[:3])
        return self._make(_substitute(self.formula, mapping), leaves, ranges)

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
