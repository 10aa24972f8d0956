"""k-means clustering (Lloyd's algorithm) with the assignment step as one jaxkeops reduction.

Each iteration assigns every point to its nearest centroid with a Min-ArgMin reduction over the
centroids (no N x k distance matrix), then moves every centroid to the mean of its points with
`jax.ops.segment_sum`. The whole loop is one jitted `lax.while_loop`, so `kmeans` also runs
inside the caller's jit and under vmap (a batch of point clouds).

Empty clusters: a centroid that receives no point is moved onto the point that is currently
farthest from its own centroid (with several empty clusters, the e-th empty one, in index
order, takes the e-th farthest point), as scikit-learn does. A far outlier is thus what an
empty cluster picks up, and no centroid is left stranded away from the data.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import Vi, Vj
from ._checks import float_array, points, positive_int

__all__ = ["INITS", "KMeansResult", "kmeans"]

INITS = ("k-means++", "random")


class KMeansResult(NamedTuple):
    """The output of `kmeans` (a pytree of arrays).

    centroids: (k, D) cluster centres.
    labels: (N,) index of the centroid nearest to each point (for the final centroids).
    inertia: sum over the points of the squared distance to their centroid.
    iterations: how many Lloyd updates ran (<= iters; fewer when `tol` stopped the loop).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import kmeans
        >>> result = kmeans(jnp.array([[0.0], [1.0], [9.0], [11.0]]), k=2, iters=5)
        >>> result.labels.shape, float(result.inertia), int(result.iterations) <= 5
        ((4,), 2.5, True)
    """

    centroids: jax.Array
    labels: jax.Array
    inertia: jax.Array
    iterations: jax.Array


def _assign(x: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(squared distance to the nearest centroid, its index), each of shape (N,)."""
    distances, labels = Vi(x).sqdist(Vj(centroids)).min_argmin(axis=-2)
    return distances[:, 0], labels[:, 0]


def _kmeans_plus_plus(x: jax.Array, k: int, key: jax.Array) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly at random,
    each next one drawn with probability proportional to the squared distance to the nearest
    centre chosen so far."""
    n = x.shape[0]
    first_key, key = jax.random.split(key)
    first = x[jax.random.randint(first_key, (), 0, n)]
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    nearest = jnp.sum((x - first) ** 2, axis=1)
    keys = jax.random.split(key, max(k - 1, 1))

    def add_centre(c, state):
        centroids, nearest = state
        total = jnp.sum(nearest)
        # All points on the chosen centres (duplicates): fall back to uniform draws.
        p = jnp.where(total > 0, nearest / jnp.where(total > 0, total, 1.0), 1.0 / n)
        new = x[jax.random.choice(keys[c - 1], n, p=p)]
        nearest = jnp.minimum(nearest, jnp.sum((x - new) ** 2, axis=1))
        return centroids.at[c].set(new), nearest

    return jax.lax.fori_loop(1, k, add_centre, (centroids, nearest))[0]


def _lloyd_step(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """One assignment + update; empty clusters move to the farthest points."""
    k = centroids.shape[0]
    distances, labels = _assign(x, centroids)
    sums = jax.ops.segment_sum(x, labels, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones_like(distances), labels, num_segments=k)
    empty = counts == 0
    means = sums / jnp.maximum(counts, 1)[:, None]

    def reseed(means):
        _, farthest = jax.lax.top_k(distances, k)
        rank = jnp.maximum(jnp.cumsum(empty) - 1, 0)
        return jnp.where(empty[:, None], x[farthest[rank]], means)

    return jax.lax.cond(jnp.any(empty), reseed, lambda means: means, means)


@functools.partial(jax.jit, static_argnames=("k", "iters", "method"))
def _kmeans(x: jax.Array, key: jax.Array, initial: jax.Array | None, tol: jax.Array, *,
            k: int, iters: int, method: str) -> KMeansResult:
    if initial is not None:
        centroids = initial
    elif method == "k-means++":
        centroids = _kmeans_plus_plus(x, k, key)
    else:
        centroids = x[jax.random.choice(key, x.shape[0], (k,), replace=False)]
    # scikit-learn's rule: tol is relative to the mean variance of the coordinates.
    threshold = tol * jnp.mean(jnp.var(x, axis=0))

    def keep_going(state):
        step, _, shift = state
        return (step < iters) & (shift > threshold)

    def step(state):
        count, centroids, _ = state
        new = _lloyd_step(x, centroids)
        return count + 1, new, jnp.sum((new - centroids) ** 2)

    start = (jnp.zeros((), jnp.int32), centroids, jnp.asarray(jnp.inf, x.dtype))
    count, centroids, _ = jax.lax.while_loop(keep_going, step, start)
    distances, labels = _assign(x, centroids)
    return KMeansResult(centroids, labels, jnp.sum(distances), count)


def kmeans(x: Any, k: int, iters: int = 20, *, key: jax.Array | None = None,
           init: str | Any = "k-means++", tol: float = 0.0) -> KMeansResult:
    """k-means clustering of the rows of x by Lloyd's algorithm.

    Args:
        x: points, shape (N, D). For a batch of point clouds, use jax.vmap.
        k: the number of clusters, 1 <= k <= N (a Python integer).
        iters: the maximum number of Lloyd iterations (a Python integer >= 0).
        key: a PRNG key for the initialisation (default: jax.random.key(0), so results are
            reproducible).
        init: "k-means++" (the default), "random" (k distinct points drawn uniformly), or an
            array of k initial centroids, shape (k, D).
        tol: stop before `iters` once the squared centroid shift of an iteration is
            <= tol * (the mean variance of the coordinates of x), scikit-learn's rule. The
            default 0.0 stops only at a fixed point (no centroid moved).

    Returns:
        A `KMeansResult(centroids (k, D), labels (N,), inertia (), iterations ())`. Empty
        clusters are re-seeded at the farthest points (see the module docstring). Jit-able
        (k, iters and init as a string are static), and vmap-able over x and key.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import kmeans
        >>> x = jnp.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
        >>> result = kmeans(x, k=2, iters=10)
        >>> print(result.centroids[jnp.argsort(result.centroids[:, 0])])
        [[ 0.   0.5]
         [10.   0.5]]
        >>> print(result.inertia)
        1.0
    """
    x = points(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got shape {tuple(x.shape)}; for a batch "
                         "of point clouds use jax.vmap(lambda x: kmeans(x, k))(x)")
    k = positive_int(k, "k")
    if k > x.shape[0]:
        raise ValueError(f"k={k} clusters need at least k points, but x has shape "
                         f"{tuple(x.shape)}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iters must be a Python integer >= 0, got {iters!r}")
    if not isinstance(tol, jax.Array) and not float(tol) >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    initial = None
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} or an array of shape ({k}, "
                             f"{x.shape[1]}), got {init!r}")
        method = init
    else:
        initial = float_array(init, "init").astype(x.dtype)
        if initial.shape != (k, x.shape[1]):
            raise ValueError(f"init must have shape (k, D) = ({k}, {x.shape[1]}), got shape "
                             f"{tuple(initial.shape)}")
        method = "given"
    key = jax.random.key(0) if key is None else key
    return _kmeans(x, key, initial, jnp.asarray(tol, x.dtype), k=k, iters=int(iters),
                   method=method)
