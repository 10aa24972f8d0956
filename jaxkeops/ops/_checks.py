"""Input checks shared by jaxkeops.ops: arrays of points and kernel hyperparameters.

Every check names the offending argument and its shape, at trace time, so that a mistake is
reported where the user made it rather than deep inside a reduction.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import LazyTensor


def is_lazy(value: Any) -> bool:
    """Whether `value` is a jaxkeops LazyTensor (a symbolic operand, not an array).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vi
        >>> from jaxkeops.ops._checks import is_lazy
        >>> is_lazy(Vi(jnp.ones((3, 1)))), is_lazy(jnp.ones((3, 1)))
        (True, False)
    """
    return isinstance(value, LazyTensor)


def float_array(value: Any, name: str) -> jax.Array:
    """`value` as a floating-point jax array; integer and boolean data become JAX's default
    float type (so that point coordinates given as integers just work).

    Example:
        >>> from jaxkeops.ops._checks import float_array
        >>> print(float_array([1, 2], "x"))
        [1. 2.]
    """
    array = jnp.asarray(value)
    if jnp.issubdtype(array.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {array.dtype}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.result_type(float))
    return array


def points(value: Any, name: str) -> jax.Array:
    """An array of points of shape (*batch, rows, D), with at least one row.

    Example:
        >>> from jaxkeops.ops._checks import points
        >>> points([[0, 1], [2, 3]], "x").shape
        (2, 2)
        >>> points([1.0, 2.0], "x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: x must have shape (*batch, rows, dim), got shape (2,); ...
    """
    array = float_array(value, name)
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (*batch, rows, dim), got shape "
                         f"{tuple(array.shape)}; reshape a 1-D array of n scalars to (n, 1)")
    if array.shape[-2] < 1 or array.shape[-1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape "
                         f"{tuple(array.shape)}")
    return array


def same_dim(x: jax.Array, y: jax.Array, x_name: str, y_name: str) -> None:
    """x and y are points in the same space (the same last dimension).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops._checks import same_dim
        >>> same_dim(jnp.ones((3, 2)), jnp.ones((5, 2)), "x", "y")   # passes silently
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"{x_name} and {y_name} must have the same last dimension (the "
                         f"dimension of the points), got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")


def positive_int(value: Any, name: str) -> int:
    """A Python integer >= 1 (a static size, such as k or a number of iterations).

    Example:
        >>> from jaxkeops.ops._checks import positive_int
        >>> positive_int(3, "k")
        3
        >>> positive_int(0, "k")
        Traceback (most recent call last):
        ...
        ValueError: k must be >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a Python integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def hyperparameter(value: Any, name: str, dtype: Any, dim: int, allow_vector: bool) -> jax.Array:
    """A kernel hyperparameter as an array for `Pm`: shape (1,) for a scalar, or (*batch, 1) or
    (*batch, dim) when `allow_vector` (one value per coordinate), cast to the data's dtype so
    that its gradient flows back to the caller's array.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops._checks import hyperparameter
        >>> hyperparameter(0.5, "lengthscale", jnp.float32, 3, allow_vector=True).shape
        (1,)
        >>> hyperparameter(jnp.ones(3), "lengthscale", jnp.float32, 3, allow_vector=True).shape
        (3,)
    """
    array = float_array(value, name).astype(dtype)
    if array.ndim == 0:
        return array.reshape(1)
    allowed = (1, dim) if allow_vector else (1,)
    if array.shape[-1] not in allowed:
        wanted = (f"a scalar, or an array of shape (dim,) = ({dim},) or (*batch, 1) or "
                  f"(*batch, {dim})" if allow_vector and dim != 1
                  else "a scalar, or an array of shape (1,) or (*batch, 1)")
        raise ValueError(f"{name} must be {wanted}; got shape {tuple(array.shape)}")
    return array


def dtype_of(*operands: Any) -> Any:
    """The floating dtype of the data among arrays and LazyTensors (JAX's default if none).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops._checks import dtype_of
        >>> dtype_of(jnp.ones(2, jnp.float16), None, jnp.ones(2, jnp.int32))
        dtype('float16')
    """
    dtypes = [op.dtype for op in operands if op is not None and op.dtype is not None]
    floats = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.result_type(float)
