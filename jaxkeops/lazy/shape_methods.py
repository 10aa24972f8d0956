"""The variables of a LazyTensor, their roles, and the pykeops shape those roles give.

A LazyTensor's leaves are (array, role) pairs: an i-variable (rows indexed by i), a j-variable
(rows indexed by j) or a parameter (the same for every (i, j)), or a `Symbolic` placeholder whose
array comes when the reduction is called. An array's role is given (`LazyTensor(x, axis=...)`,
Vi/Vj/Pm) or read off its shape as in pykeops; the roles in turn give the shape of the
LazyTensor. The internal shape `_shape` is (*batch, M, N, D); `shape` hides D when it is 1, so
a scalar formula looks like an (M, N) matrix, and `ndim` is pykeops's: the vector dimension D.

`ShapeMethods` is a mixin of LazyTensor: it relies on LazyTensor's `formula` and `_leaves`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..formulas import CAT_I, CAT_J, CAT_P, Node, Var
from ._aliases import alias_docstring

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


class ShapeMethods:
    """How arrays become the variables of a LazyTensor, and the shape, batch dims and dtype
    their roles give it."""

    # ----------------------------------------------------------------------------------------
    # Variables: an array or a symbolic (index, dim, cat) becomes a leaf with a role.
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

    def _concrete_leaves(self) -> list[tuple[Any, int]]:
        return [(a, c) for a, c in self._leaves if not isinstance(a, Symbolic)]

    # ----------------------------------------------------------------------------------------
    # The shape the roles give.
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
