"""Checks and canonical shapes of measures: weights (*batch, N), points (*batch, N, D).

GeomLoss takes (N, D) or (B, N, D) points and (N,), (N, 1), (B, N) or (B, N, 1) weights, and
uniform weights 1/N when they are not given. We accept the same, and any number of leading
batch dimensions (shared by x and y).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Measures(NamedTuple):
    """Two weighted point clouds in canonical shapes: a (*batch, N), x (*batch, N, D),
    b (*batch, M), y (*batch, M, D), all of one floating dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import measures
        >>> measures(None, jnp.zeros((2, 5, 3)), None, jnp.zeros((2, 4, 3))).batch_shape
        (2,)
    """

    a: Array
    x: Array
    b: Array
    y: Array

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The leading batch dimensions shared by x and y (() for unbatched clouds).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import measures
            >>> measures(None, jnp.zeros((5, 3)), None, jnp.zeros((4, 3))).batch_shape
            ()
        """
        return tuple(self.x.shape[:-2])


def _points(name: str, x: Any) -> Array:
    if not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"points '{name}' must be floating point, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"points '{name}' must have shape (N, D) or (*batch, N, D), got "
                         f"{tuple(x.shape)}")
    return x


def uniform_weights(x: Array) -> Array:
    """1/N for each of the N points of x (*batch, N, D): GeomLoss's default weights.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import uniform_weights
        >>> uniform_weights(jnp.zeros((2, 4, 3))).tolist()
        [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]
    """
    return jnp.full(x.shape[:-1], 1 / x.shape[-2], x.dtype)


def _weights(name: str, w: Any, points: Array, points_name: str) -> Array:
    if w is None:
        return uniform_weights(points)
    if not hasattr(w, "dtype"):
        w = jnp.asarray(w)
    if not (jnp.issubdtype(w.dtype, jnp.floating) or jnp.issubdtype(w.dtype, jnp.integer)):
        raise TypeError(f"weights '{name}' must be real numbers, got dtype {w.dtype}")
    expected = tuple(points.shape[:-1])
    if tuple(w.shape) == expected + (1,):
        w = w[..., 0]
    if tuple(w.shape) != expected:
        raise ValueError(f"weights '{name}' of shape {tuple(w.shape)} do not match points "
                         f"'{points_name}' of shape {tuple(points.shape)}: expected {expected} "
                         f"or {expected + (1,)}")
    return w


def measures(a: Any, x: Any, b: Any, y: Any) -> Measures:
    """Checks two weighted point clouds (weights None: uniform) and puts them in canonical
    shapes and one dtype; raises ValueError/TypeError naming the argument and the shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import measures
        >>> m = measures(None, jnp.zeros((5, 3)), jnp.ones((4, 1)) / 4, jnp.zeros((4, 3)))
        >>> m.a.shape, m.b.shape
        ((5,), (4,))
    """
    x, y = _points("x", x), _points("y", y)
    if x.ndim != y.ndim:
        raise ValueError(f"points 'x' {tuple(x.shape)} and 'y' {tuple(y.shape)} must have the "
                         "same number of dimensions")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"points 'x' {tuple(x.shape)} and 'y' {tuple(y.shape)} must have the "
                         "same last dimension D")
    if x.shape[:-2] != y.shape[:-2]:
        raise ValueError(f"points 'x' {tuple(x.shape)} and 'y' {tuple(y.shape)} must have the "
                         "same batch dimensions")
    a, b = _weights("a", a, x, "x"), _weights("b", b, y, "y")
    dtype = jnp.result_type(x.dtype, y.dtype)
    return Measures(*(jnp.asarray(v, dtype) for v in (a, x, b, y)))


def split_args(args: tuple) -> tuple[Any, Any, Any, Any]:
    """(a, x, b, y) from GeomLoss's call forms L(x, y) and L(a, x, b, y)."""
    if len(args) == 2:
        return None, args[0], None, args[1]
    if len(args) == 4:
        return args
    if len(args) == 6:
        raise NotImplementedError("cluster labels L(l_x, a, x, l_y, b, y) (GeomLoss's "
                                  "multiscale call form) are not supported: jaxkeops's "
                                  "backend='multiscale' clusters the points itself, on a grid "
                                  "(cluster_scale=); call L(a, x, b, y)")
    raise ValueError(f"a SamplesLoss takes two (x, y) or four (a, x, b, y) arguments, got "
                     f"{len(args)}")


def check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    """Raises ValueError unless `value` is a positive number (or an array, checked at run
    time only when it is concrete)."""
    if value is None:
        if allow_none:
            return
        raise ValueError(f"{name} must be a positive number, got None")
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)) and not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
