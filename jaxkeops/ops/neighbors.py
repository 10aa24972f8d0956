"""K-nearest neighbours by brute force, without the M x N distance matrix.

`knn(x, y, k)` finds, for every query point x_i, the k points y_j nearest to it with one
jaxkeops arg-K-min reduction: memory is O((M + N) D + M k), so a million queries against a
million points is fine where the dense matrix would take terabytes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import LazyTensor, Vi, Vj
from ._checks import points, positive_int, same_dim

__all__ = ["METRICS", "knn"]

METRICS = ("sqeuclidean", "euclidean", "cosine")


def _safe_sqrt(value: jax.Array) -> jax.Array:
    """sqrt with a zero (sub)gradient at 0, where jnp.sqrt's derivative is infinite: a query
    that coincides with a reference point gets gradient 0 instead of NaN."""
    positive = value > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, value, 1.0)), 0.0)


def _unit(v: jax.Array) -> jax.Array:
    """Rows scaled to norm 1 (zero rows stay zero)."""
    norm = _safe_sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    return v / jnp.where(norm > 0, norm, 1.0)


def _dissimilarity(x: jax.Array, y: jax.Array, metric: str) -> LazyTensor:
    """The symbolic (*batch, M, N) matrix whose k smallest entries per row are wanted."""
    if metric == "cosine":
        return 1.0 - (Vi(_unit(x)) | Vj(_unit(y)))
    return Vi(x).sqdist(Vj(y))


def knn(x: Any, y: Any, k: int, *, metric: str = "sqeuclidean") -> tuple[jax.Array, jax.Array]:
    """The k nearest neighbours in `y` of every point of `x`, by brute force.

    Args:
        x: query points, shape (*batch, M, D).
        y: reference points, shape (*batch, N, D); batch dimensions broadcast against x's.
        k: how many neighbours, 1 <= k <= N (a Python integer).
        metric: "sqeuclidean" (the default) returns squared euclidean distances |x - y|^2;
            "euclidean" returns |x - y| (the same neighbours); "cosine" returns the cosine
            distance 1 - <x, y> / (|x| |y|) (a zero vector is at distance 1 from everything).

    Returns:
        (distances, indices), both of shape (*batch, M, k), sorted by increasing distance:
        `indices[..., i, n]` is the row of y that is the (n + 1)-th nearest to x_i (int32, or
        int64 when jax_enable_x64 is on). Ties go to the smaller index. The distances are
        differentiable with respect to x and y (the indices are constants), under jit and
        vmap.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import knn
        >>> y = jnp.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
        >>> x = jnp.array([[2.5, 0.0]])
        >>> distances, indices = knn(x, y, k=2, metric="euclidean")
        >>> print(distances, indices)
        [[0.5 1.5]] [[2 1]]
    """
    x, y = points(x, "x"), points(y, "y")
    same_dim(x, y, "x", "y")
    k = positive_int(k, "k")
    if k > y.shape[-2]:
        raise ValueError(f"k={k} is larger than the number of reference points: y has shape "
                         f"{tuple(y.shape)}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    dtype = jnp.result_type(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    distances, indices = _dissimilarity(x, y, metric).Kmin_argKmin(K=k, axis=-2)
    if metric == "euclidean":
        distances = _safe_sqrt(distances)
    elif metric == "cosine":  # 1 - <u, u> can round to -1e-7 for parallel vectors
        distances = jnp.maximum(distances, 0.0)
    return distances, indices
