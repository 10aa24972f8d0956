"""ComplexLazyTensor: LazyTensors of complex numbers, as pykeops's.

`LazyTensor(z)` for a complex array z (or a Python complex scalar) is a ComplexLazyTensor. As in
KeOps, a complex vector of dimension D is a real formula of dimension 2D whose components
interleave (re, im) pairs; the conversions of the arrays in and out are jnp operations, so JAX
differentiates them itself and gradients with respect to complex arrays follow JAX's conventions.

Arithmetic mixes complex and real operands freely (a real operand is promoted with Real2Complex,
a real scalar scales through ComplexRealScal); `real`, `imag`, `abs()`, `angle()` return real
LazyTensors. The reductions that make sense for complex values are the sums: `sum` over i or j,
`K @ v`, and (on a real formula) `sumsoftmaxweight` with complex weights. Complex numbers have
no order, so min/max/argmin/Kmin/... raise TypeError, as does logsumexp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..formulas import CAT_P, Const, Node, Var, make
from ..formulas.complex_ops import NAMES as COMPLEX_OPS
from ..formulas.complex_ops import REAL_VALUED
from .lazytensor import LazyTensor
from .reduction_methods import LazyReduction, ReductionMethods

_SUPPORTED_REDUCTIONS = ("Sum",)


def to_interleaved(z: Any) -> jax.Array:
    """Complex (..., D) -> real (..., 2D) with (re, im) pairs."""
    pairs = jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)
    return pairs.reshape(pairs.shape[:-2] + (2 * pairs.shape[-2],))


def from_interleaved(x: Any) -> jax.Array:
    """Real (..., 2D) with (re, im) pairs -> complex (..., D)."""
    pairs = x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
    return jax.lax.complex(pairs[..., 0], pairs[..., 1])


class ComplexReduction:
    """A reduction with complex outputs that is not run yet (`call=False`, or symbolic
    variables): calling it runs the reduction and returns complex arrays."""

    def __init__(self, pending: LazyReduction):
        self.pending = pending

    def __call__(self, *arrays: Any, **kwargs: Any) -> jax.Array:
        return from_interleaved(self.pending(*arrays, **kwargs))

    def __repr__(self) -> str:
        return f"ComplexReduction({self.pending!r})"


def _complex_result(result: Any) -> Any:
    return ComplexReduction(result) if isinstance(result, LazyReduction) else \
        from_interleaved(result)


def _reduction_error(reduction: str) -> TypeError:
    return TypeError(
        f"the {reduction} reduction is not defined for complex LazyTensors: complex numbers "
        "have no order (min, max, argmin, Kmin, ...), logsumexp takes real values and weights, "
        "and the soft-max weights exp(F) need a real F. Complex LazyTensors support sum over "
        "i or j, K @ v, and real_F.sumsoftmaxweight(complex_weights); reduce .real, .imag, "
        ".abs() or .angle() for the rest"
    )


# ---------------------------------------------------------------------------------------------
# The complex version of each LazyTensor op. Each rule takes the operands' formulas and whether
# each is complex, and returns (formula, whether the result is complex).
def _promote(f: Node, is_complex: bool) -> Node:
    return f if is_complex else make("Real2Complex", f)


def _promoted(rule: Callable[..., Node]):
    def apply(formulas, kinds, params):
        return rule(*(_promote(f, c) for f, c in zip(formulas, kinds))), True

    return apply


def _mult(formulas, kinds, params):
    (a, b), (ca, cb) = formulas, kinds
    if not ca and a.dim == 1:
        return make("ComplexRealScal", a, b), True
    if not cb and b.dim == 1:
        return make("ComplexRealScal", b, a), True
    return make("ComplexMult", _promote(a, ca), _promote(b, cb)), True


def _divide(formulas, kinds, params):
    (a, b), (ca, cb) = formulas, kinds
    if not cb and b.dim == 1:
        return make("ComplexRealScal", make("Inv", b), a), True
    return make("ComplexDivide", _promote(a, ca), _promote(b, cb)), True


def _power(z: Node, n: int) -> Node:
    """z ** n by repeated squaring (complex products)."""
    if n == 0:
        return make("Real2Complex", Const(1.0, z.dim // 2))
    if n < 0:
        return make("ComplexDivide", make("Real2Complex", Const(1.0)), _power(z, -n))
    result, base = None, z
    while n:
        if n & 1:
            result = base if result is None else make("ComplexMult", result, base)
        n >>= 1
        if n:
            base = make("ComplexMult", base, base)
    return result


def _check_component(k: int, dim: int) -> None:
    if not 0 <= k < dim:
        raise IndexError(f"index {k} is out of range for a complex LazyTensor of {dim} "
                         "component(s)")


def _elem(formulas, kinds, params):
    (k,), f = params, formulas[0]
    _check_component(k, f.dim // 2)
    return make("Extract", f, params=(2 * k, 2)), True


def _extract(formulas, kinds, params):
    (start, length), f = params, formulas[0]
    _check_component(start, f.dim // 2)
    _check_component(start + length - 1, f.dim // 2)
    return make("Extract", f, params=(2 * start, 2 * length)), True


def _unary(op: str, is_complex: bool = True):
    return lambda formulas, kinds, params: (make(op, formulas[0]), is_complex)


_RULES: dict[str, Callable] = {
    "Add": _promoted(lambda a, b: make("ComplexAdd", a, b)),
    "Subtract": _promoted(lambda a, b: make("ComplexSubtract", a, b)),
    "Mult": _mult,
    "Divide": _divide,
    "Concat": _promoted(lambda a, b: make("Concat", a, b)),
    "Minus": _unary("Minus"),
    "Exp": _unary("ComplexExp"),
    "Abs": _unary("ComplexAbs", is_complex=False),
    "Sum": _unary("ComplexSum"),
    # The norm of a complex vector is the norm of its (re, im) components.
    "SqNorm2": _unary("SqNorm2", is_complex=False),
    "Norm2": _unary("Norm2", is_complex=False),
    "Square": lambda formulas, kinds, params: (_power(formulas[0], 2), True),
    "Pow": lambda formulas, kinds, params: (_power(formulas[0], params[0]), True),
    "Elem": _elem,
    "Extract": _extract,
}


def _apply(name: str, tensors: Sequence[LazyTensor], params: tuple) -> LazyTensor:
    formulas, leaves = LazyTensor._merge(*tensors)
    kinds = [t.is_complex for t in tensors]
    rule = _RULES.get(name)
    if rule is not None:
        formula, is_complex = rule(formulas, kinds, params)
    elif name in COMPLEX_OPS:  # a complex op of the table, on the raw interleaved formulas
        formula, is_complex = make(name, *formulas, params=params), name not in REAL_VALUED
    else:
        raise TypeError(
            f"{name} is not defined for complex LazyTensors (supported: + - * /, unary -, "
            "** with an integer, exp, abs, real, imag, angle, conj, sum, concat, indexing, "
            "sqnorm2, norm)"
        )
    return (ComplexLazyTensor if is_complex else LazyTensor)._make(formula, leaves)


# ---------------------------------------------------------------------------------------------
class ComplexLazyTensor(LazyTensor):
    """A symbolic complex tensor of internal shape (*batch, M, N, D), as pykeops's
    ComplexLazyTensor; `LazyTensor(z)` returns one for a complex array or scalar.

    Example:
        >>> import math
        >>> import jax.numpy as jnp
        >>> from jaxkeops import LazyTensor
        >>> x = jnp.ones((1, 4, 1), jnp.complex64)   # j-indexed samples
        >>> p = jnp.linspace(0, 1, 4)[None, :, None]    # their positions
        >>> f = jnp.arange(3.0)[:, None, None]          # frequencies, i-indexed
        >>> X = LazyTensor(x) * (-2 * math.pi * 1j * LazyTensor(p) * LazyTensor(f)).exp()
        >>> X.shape, X.sum(axis=1).dtype
        ((3, 4), dtype('complex64'))
    """

    is_complex = True

    def __init__(self, x: Any = None, axis: int | None = None):
        if isinstance(x, LazyTensor):
            source = x if x.is_complex else x.real2complex()
            self.formula, self._leaves = source.formula, source._leaves
            return
        if isinstance(x, tuple):
            raise TypeError("complex symbolic variables are not supported: give a real "
                            "symbolic variable and combine it, e.g. LazyTensor((0, 3, 0)) "
                            "* 1j or .real2complex()")
        if isinstance(x, (bool, np.bool_)):
            raise TypeError(f"a LazyTensor cannot be built from the boolean {x!r}")
        if isinstance(x, (int, float, complex, np.number)):
            if axis not in (None, CAT_P):
                raise ValueError(f"a scalar ({x!r}) cannot be an i- or j-variable; pass an "
                                 "array, or use the scalar directly in the formula")
            c = complex(x)
            self.formula, self._leaves = make("Concat", Const(c.real), Const(c.imag)), ()
            return
        a = x if hasattr(x, "shape") and hasattr(x, "dtype") else jnp.asarray(x)
        if not jnp.issubdtype(a.dtype, jnp.complexfloating):  # real data, seen as complex
            real = LazyTensor(a, axis)
            self.formula = make("Real2Complex", real.formula)
            self._leaves = real._leaves
            return
        ((array, cat),), var = self._leaf_of_array(a, axis)
        self._leaves = ((to_interleaved(array), cat),)
        self.formula = Var(0, 2 * var.dim, cat)

    # Conversions from real LazyTensors (their real2complex, imag2complex, exp1j methods).
    @classmethod
    def from_real(cls, lt: LazyTensor) -> ComplexLazyTensor:
        """lt as complex numbers lt + 0j (what `lt.real2complex()` calls).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> from jaxkeops.lazy.complex import ComplexLazyTensor
            >>> ComplexLazyTensor.from_real(Vi(jnp.ones((2, 3)))).shape
            (2, 1, 3)
        """
        return cls._make(make("Real2Complex", lt.formula), lt._leaves)

    @classmethod
    def from_imag(cls, lt: LazyTensor) -> ComplexLazyTensor:
        """lt as complex numbers 0 + lt j (what `lt.imag2complex()` calls).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> from jaxkeops.lazy.complex import ComplexLazyTensor
            >>> ComplexLazyTensor.from_imag(Vi(jnp.ones((2, 3)))).shape
            (2, 1, 3)
        """
        return cls._make(make("Imag2Complex", lt.formula), lt._leaves)

    @classmethod
    def exp1j_of(cls, lt: LazyTensor) -> ComplexLazyTensor:
        """exp(1j lt) for a real lt (what `lt.exp1j()` calls).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> from jaxkeops.lazy.complex import ComplexLazyTensor
            >>> ComplexLazyTensor.exp1j_of(Vi(jnp.ones((2, 3)))).ndim
            3
        """
        return cls._make(make("ComplexExp1j", lt.formula), lt._leaves)

    # ----------------------------------------------------------------------------------------
    # Structure.
    @property
    def ndim(self) -> int:
        """D, the number of complex components (the formula has 2D real components).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> z_i.ndim, z_i.formula.dim   # one complex component, two real ones
            (1, 2)
        """
        return self.formula.dim // 2

    @property
    def dtype(self):
        """complex64 or complex128, after the real dtype of the arrays (None if symbolic).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> z_i.dtype
            dtype('complex64')
        """
        real = super().dtype
        return None if real is None else jnp.result_type(real, jnp.complex64)

    def __repr__(self) -> str:
        return f"ComplexLazyTensor({self.formula!r}, shape={self.shape})"

    def __str__(self) -> str:
        return (f"jaxkeops ComplexLazyTensor\n    formula: {self.formula!r}\n"
                f"    shape: {self.shape}")

    def _op(self, name: str, *others: Any, params: Sequence = ()) -> LazyTensor:
        return _apply(name, [self, *(self._wrap(o) for o in others)], tuple(params))

    def _op_with_real(self, name: str, tensors: Sequence[LazyTensor], params: Sequence
                      ) -> LazyTensor:
        """`name` applied to `tensors` (some real, this one among them), for a real
        LazyTensor's operator whose other operand is complex."""
        return _apply(name, tensors, tuple(params))

    # ----------------------------------------------------------------------------------------
    # Complex parts.
    @property
    def real(self) -> LazyTensor:
        """The real parts (a real LazyTensor).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> print(z_i.real.sum(axis=0))
            [[1.]]
        """
        return self._op("ComplexReal")

    @property
    def imag(self) -> LazyTensor:
        """The imaginary parts (a real LazyTensor).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> print(z_i.imag.sum(axis=0))
            [[3.]]
        """
        return self._op("ComplexImag")

    def angle(self) -> LazyTensor:
        """The arguments atan2(imag, real), in [-pi, pi] (a real LazyTensor).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> print(z_i.angle().sum(axis=0).round(4))   # pi/4 + pi/2
            [[2.3562]]
        """
        return self._op("ComplexAngle")

    def conj(self) -> ComplexLazyTensor:
        """The complex conjugates.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> print(z_i.conj().sum(axis=0))
            [[1.-3.j]]
        """
        return self._op("Conj")

    def real2complex(self):
        """Raises TypeError: the LazyTensor is complex already.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> z_i.real2complex()
            Traceback (most recent call last):
                ...
            TypeError: real2complex applies to real LazyTensors; this one is complex
        """
        raise TypeError("real2complex applies to real LazyTensors; this one is complex")

    def imag2complex(self):
        """Raises TypeError: the LazyTensor is complex already.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> z_i.imag2complex()
            Traceback (most recent call last):
                ...
            TypeError: imag2complex applies to real LazyTensors; this one is complex
        """
        raise TypeError("imag2complex applies to real LazyTensors; this one is complex")

    def exp1j(self):
        """Raises TypeError: exp1j takes a real LazyTensor; write (1j * z).exp() for a complex z.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> z_i.exp1j()
            Traceback (most recent call last):
                ...
            TypeError: exp1j applies to real LazyTensors...
        """
        raise TypeError("exp1j applies to real LazyTensors (exp(1j x) for a real x); for a "
                        "complex z, write (1j * z).exp()")

    # ----------------------------------------------------------------------------------------
    # Reductions: the sums, with complex outputs.
    def _reduce(self, reduction: str, axis: int, options: dict[str, Any],
                extra: Sequence[Any] = (), k: int | None = None, pad: bool = False):
        if reduction not in _SUPPORTED_REDUCTIONS:
            raise _reduction_error(reduction)
        return _complex_result(ReductionMethods._reduce(self, reduction, axis, options, extra, k,
                                                        pad))

    @classmethod
    def reduce_with_complex_weights(cls, owner: LazyTensor, reduction: str, axis: int,
                                    options: dict[str, Any], extra: Sequence[Any],
                                    k: int | None = None):
        """A reduction of a real formula `owner` whose weights `extra` are complex: the
        soft-max weighted sum is complex-linear in its weights; other reductions raise.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor, Vi, Vj
            >>> x_i, y_j = Vi(jnp.zeros((2, 1))), Vj(jnp.zeros((3, 1)))
            >>> w_j = LazyTensor(jnp.array([[1j], [1j], [1j]])[None])   # complex weights
            >>> print((x_i - y_j).sqnorm2().sumsoftmaxweight(w_j, axis=1))
            [[0.+1.j]
             [0.+1.j]]
        """
        if reduction != "SumSoftMaxWeight":
            raise _reduction_error(reduction)
        as_real = tuple(LazyTensor._make(w.formula, w._leaves) for w in map(owner._wrap, extra))
        return _complex_result(ReductionMethods._reduce(owner, reduction, axis, options,
                                                        as_real, k))

    def solve(self, *args: Any, **kwargs: Any):
        """Raises TypeError: conjugate gradient needs a real symmetric positive operator.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor
            >>> z_i = LazyTensor(jnp.array([[1 + 1j], [2j]])[:, None, :])   # 2 complex i-variables
            >>> z_i.solve(jnp.ones(2))
            Traceback (most recent call last):
                ...
            TypeError: solve (conjugate gradient) needs a real symmetric positive definite...
        """
        raise TypeError("solve (conjugate gradient) needs a real symmetric positive definite "
                        "operator; it is not defined for complex LazyTensors")
