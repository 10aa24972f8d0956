"""Block-sparse helpers: cluster points, sort them by cluster, and describe which clusters
interact, in the `ranges` format of KeOps's block-sparse reductions
(`pykeops.torch.cluster` / `pykeops.numpy.cluster`, for jax arrays).

The recipe: label the points (`grid_cluster`), make every cluster contiguous in memory
(`sort_clusters`), get each cluster's `[start, end)` rows and centroid
(`cluster_ranges_centroids`), decide from the centroids which pairs of clusters interact (a
boolean `keep` of shape (Mc, Nc)), and turn that into the 6-tuple (`from_matrix`):

    (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)

all int32. The first half drives a reduction over j (axis=1):

- `ranges_i` (Mc, 2): cluster k of the i-points is rows `ranges_i[k, 0]:ranges_i[k, 1]`;
- `redranges_j` (keep.sum(), 2): the j-ranges to reduce over, cluster after cluster: the
  j-clusters l with `keep[k, l]` for k = 0, then for k = 1, ..., each in increasing l;
- `slices_i` (Mc,): cumulative END offsets into `redranges_j` (the leading 0 is implicit): the
  i-cluster k reduces over `redranges_j[slices_i[k-1]:slices_i[k]]` (from 0 when k = 0), so
  `slices_i[-1] == len(redranges_j)` and an i-cluster that keeps nothing has an empty slice.

The second half is the same for a reduction over i (axis=0), with the roles swapped:
`ranges_j` (Nc, 2), `slices_j` (Nc,) ends into `redranges_i`, `redranges_i` (keep.sum(), 2)
listing, for l = 0, 1, ..., the i-clusters k with `keep[k, l]` in increasing k. `swap_axes`
exchanges the two halves (what a transposed reduction needs).

jit: `grid_cluster` and `sort_clusters` always trace (their outputs have the size of the
input). The number of clusters C is data-dependent, so `cluster_ranges`, `cluster_centroids`
and `cluster_ranges_centroids` run under `jax.jit` only when C is static: pass `Nlab` (counts
of a static length) or `num_clusters=` (a Python int; a jaxkeops addition); without them they
read C = labels.max() + 1 from concrete labels, like KeOps. `from_matrix` returns arrays whose
length is `keep.sum()`, so it runs eagerly only (on concrete `keep`).

Example:
    >>> import jax.numpy as jnp
    >>> from jaxkeops.cluster import (cluster_ranges_centroids, from_matrix, grid_cluster,
    ...                               sort_clusters)
    >>> x = jnp.array([[0.0], [5.1], [0.2], [5.0], [9.9]])
    >>> x_sorted, labels = sort_clusters(x, grid_cluster(x, 1.0))
    >>> ranges, centroids, weights = cluster_ranges_centroids(x_sorted, labels)
    >>> print(ranges.tolist(), centroids[:, 0], weights)
    [[0, 2], [2, 4], [4, 5]] [0.1  5.05 9.9 ] [2. 2. 1.]
    >>> keep = jnp.abs(centroids - centroids.T) < 6.0  # clusters closer than 6 interact
    >>> ranges_i, slices_i, redranges_j, *_ = from_matrix(ranges, ranges, keep)
    >>> print(slices_i.tolist(), redranges_j.tolist())
    [2, 5, 7] [[0, 2], [2, 4], [0, 2], [2, 4], [4, 5], [2, 4], [4, 5]]
"""

from __future__ import annotations

import functools
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "cluster_centroids",
    "cluster_ranges",
    "cluster_ranges_centroids",
    "from_matrix",
    "grid_cluster",
    "sort_clusters",
    "swap_axes",
]

Ranges = tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]
PointsT = TypeVar("PointsT")

_NOT_CONCRETE = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                 jax.errors.TracerIntegerConversionError)


# ---------------------------------------------------------------------------------------------
# Input checks: each names the argument and its shape.
def _floating(array: jax.Array) -> jax.Array:
    """Integer or boolean coordinates become JAX's default float type."""
    if jnp.issubdtype(array.dtype, jnp.complexfloating):
        raise TypeError(f"complex arrays are not supported, got dtype {array.dtype}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        return array.astype(jnp.result_type(float))
    return array


def _points(x: ArrayLike, name: str = "x") -> jax.Array:
    array = jnp.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (M, D), got shape {array.shape}")
    return _floating(array)


def _labels(labels: ArrayLike, name: str = "labels") -> jax.Array:
    array = jnp.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (M,), got shape {array.shape}")
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
    return array


def _same_length(array: jax.Array, name: str, labels: jax.Array) -> None:
    if array.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} has shape {array.shape} but labels has shape {labels.shape}: "
                         "they must have the same number of points (first axis)")


def _per_point(values: ArrayLike, name: str, length: int, what: str) -> jax.Array:
    """A vector of shape (length,); (length, 1) is accepted too, as KeOps flattens it."""
    array = jnp.asarray(values)
    if array.shape not in ((length,), (length, 1)):
        raise ValueError(f"{name} must have shape ({length},) (one value per {what}), got "
                         f"shape {array.shape}")
    return array.reshape(length)


def _ranges_array(ranges: ArrayLike, name: str) -> jax.Array:
    array = jnp.asarray(ranges)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} must have shape (C, 2) ([start, end) rows), got shape "
                         f"{array.shape}")
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
    try:
        concrete = np.asarray(array)
    except _NOT_CONCRETE:
        return array.astype(jnp.int32)
    if concrete.size and (concrete[:, 0].min() < 0 or (concrete[:, 1] < concrete[:, 0]).any()):
        raise ValueError(f"{name} must hold rows [start, end) with 0 <= start <= end")
    return array.astype(jnp.int32)


def _number_of_clusters(labels: jax.Array, counts: dict[str, int | None], caller: str) -> int:
    """C from the first of `counts` (name -> length or None) that is given, every given one
    agreeing; otherwise labels.max() + 1, which needs concrete labels. Concrete labels are
    checked to lie in [0, C)."""
    given = {name: value for name, value in counts.items() if value is not None}
    if len(set(given.values())) > 1:
        raise ValueError(f"{caller}: inconsistent numbers of clusters {given}")
    try:
        bounds = (int(jnp.min(labels)), int(jnp.max(labels))) if labels.size else None
    except _NOT_CONCRETE as error:
        if given:
            return next(iter(given.values()))
        raise ValueError(
            f"{caller}: the number of clusters is labels.max() + 1, which depends on the "
            "values of labels; under jax.jit pass num_clusters=<int> (or Nlab)") from error
    if bounds is not None and bounds[0] < 0:
        raise ValueError(f"{caller}: labels must be >= 0, got min(labels) = {bounds[0]}")
    if not given:
        return 0 if bounds is None else bounds[1] + 1
    count = next(iter(given.values()))
    if bounds is not None and bounds[1] >= count:
        raise ValueError(f"{caller}: max(labels) = {bounds[1]} but {given} says there are "
                         f"only {count} clusters")
    return count


def _vector_length(values: ArrayLike | None, name: str) -> int | None:
    if values is None:
        return None
    array = jnp.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        return array.shape[0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (C,) (one value per cluster), got shape "
                         f"{array.shape}")
    return array.shape[0]


# ---------------------------------------------------------------------------------------------
def grid_cluster(x: ArrayLike, size: ArrayLike) -> jax.Array:
    """Label points by the cell of a regular grid they fall in.

    The grid starts at the smallest coordinate of the points along each dimension (as
    `pykeops.torch.cluster.grid_cluster` does; `pykeops.numpy`'s version anchors it at 0
    instead) and has cells of side `size`: a scalar, or one side per dimension (D,). Two points
    share a label exactly when they share a cell, and the labels are 0..C-1 for the C non-empty
    cells, numbered in lexicographic order of the cells (dimension 0 first), like KeOps.

    Unlike KeOps, which packs the cell coordinates into one integer (10 bits per dimension, at
    most 3 dimensions), any D works and distinct cells never share a label.

    The output has shape (M,) whatever the data, so this traces under `jax.jit`; the number of
    clusters, `labels.max() + 1`, is a data-dependent value.

    Args:
        x: (M, D) points.
        size: cell side, a positive scalar or a (D,) vector.

    Returns:
        (M,) int32 labels.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import grid_cluster
        >>> x = jnp.array([[0.0], [0.1], [0.9], [0.05], [0.5]])
        >>> print(grid_cluster(x, 0.2))
        [0 0 2 0 1]
        >>> print(grid_cluster(jnp.array([[0.0, 0.0], [0.0, 3.0], [2.5, 0.0]]), [2.0, 1.0]))
        [0 1 2]
    """
    points = _points(x)
    sides = jnp.asarray(size, points.dtype)
    dim = points.shape[1]
    if sides.ndim > 1 or sides.size not in (1, dim):
        raise ValueError(f"size must be a scalar or have shape ({dim},) for x of shape "
                         f"{points.shape}, got shape {sides.shape}")
    try:
        if (np.asarray(sides) <= 0).any():
            raise ValueError(f"size must be positive, got {np.asarray(sides)}")
    except _NOT_CONCRETE:
        pass
    if points.shape[0] == 0:
        return jnp.zeros((0,), jnp.int32)
    return _grid_labels(points, sides)


@jax.jit
def _grid_labels(points: jax.Array, sides: jax.Array) -> jax.Array:
    # Cell coordinates stay floats: integers could overflow for tiny cells.
    cells = jnp.floor((points - jnp.min(points, axis=0)) / sides)
    order = jnp.lexsort(tuple(cells[:, d] for d in reversed(range(points.shape[1]))))
    sorted_cells = cells[order]
    starts_cell = jnp.concatenate(
        [jnp.ones((1,), bool), jnp.any(sorted_cells[1:] != sorted_cells[:-1], axis=1)])
    sorted_labels = jnp.cumsum(starts_cell, dtype=jnp.int32) - 1
    return jnp.zeros(points.shape[0], jnp.int32).at[order].set(sorted_labels)


def sort_clusters(x: PointsT, labels: ArrayLike) -> tuple[PointsT, jax.Array]:
    """Reorder points by label, so that every cluster is a contiguous block of rows.

    The sort is stable: points with the same label keep their relative order.

    Args:
        x: an (M, ...) array, or a tuple or list of (M, ...) arrays sorted alike.
        labels: (M,) integer labels.

    Returns:
        (the sorted array(s), in the container `x` came in; the sorted labels). Traces under
        `jax.jit`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import sort_clusters
        >>> x = jnp.array([[0.0], [5.0], [0.4], [0.3], [2.0]])
        >>> x_sorted, labels = sort_clusters(x, jnp.array([0, 2, 0, 0, 1]))
        >>> print(x_sorted[:, 0], labels)
        [0.  0.4 0.3 2.  5. ] [0 0 0 1 2]
    """
    labels = _labels(labels)
    order = jnp.argsort(labels, stable=True)

    def sort_one(array: ArrayLike, name: str) -> jax.Array:
        array = jnp.asarray(array)
        if array.ndim == 0:
            raise ValueError(f"{name} must have shape (M, ...), got shape {array.shape}")
        _same_length(array, name, labels)
        return array[order]

    if isinstance(x, (tuple, list)):
        sorted_x = type(x)(sort_one(a, f"x[{n}]") for n, a in enumerate(x))
    else:
        sorted_x = sort_one(x, "x")
    return sorted_x, labels[order]


def cluster_ranges(labels: ArrayLike, Nlab: ArrayLike | None = None, *,
                   num_clusters: int | None = None) -> jax.Array:
    """The `[start, end)` rows of every cluster of points sorted by label (`sort_clusters`).

    Args:
        labels: (M,) integer labels in [0, C).
        Nlab: optional (C,) number of points per cluster (if you have it already; integer or
            float counts). When given, the ranges come from it alone.
        num_clusters: optional C (a Python int), to count clusters that no point has at the
            end, or to run under `jax.jit` without `Nlab` (jaxkeops addition). By default C is
            `labels.max() + 1`, read from concrete labels.

    Returns:
        (C, 2) int32: cluster k is rows `ranges[k, 0]:ranges[k, 1]`; an empty cluster has
        start == end.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import cluster_ranges
        >>> print(cluster_ranges(jnp.array([0, 0, 0, 2, 3])).tolist())
        [[0, 3], [3, 3], [3, 4], [4, 5]]
        >>> print(cluster_ranges(jnp.array([0, 1]), num_clusters=3).tolist())
        [[0, 1], [1, 2], [2, 2]]
    """
    labels = _labels(labels)
    if Nlab is None:
        count = _number_of_clusters(labels, {"num_clusters": num_clusters}, "cluster_ranges")
        return _jit_ranges_of_labels(labels, count)
    sizes = jnp.asarray(Nlab)
    if sizes.ndim != 1:
        raise ValueError(f"Nlab must have shape (C,), got shape {sizes.shape}")
    if num_clusters is not None and num_clusters != sizes.shape[0]:
        raise ValueError(f"cluster_ranges: Nlab has shape {sizes.shape} but "
                         f"num_clusters={num_clusters}")
    return _jit_ranges(sizes)


# The array work of each function is one jitted program: run eagerly op by op, the many small
# operations would each compile and dispatch on their own.
def _ranges(sizes: jax.Array) -> jax.Array:
    if jnp.issubdtype(sizes.dtype, jnp.inexact):
        sizes = jnp.round(sizes)  # KeOps hands float counts around
    sizes = sizes.astype(jnp.int32)
    ends = jnp.cumsum(sizes, dtype=jnp.int32)
    return jnp.stack([ends - sizes, ends], axis=1)


_jit_ranges = jax.jit(_ranges)


@functools.partial(jax.jit, static_argnames="count")
def _jit_ranges_of_labels(labels: jax.Array, count: int) -> jax.Array:
    return _ranges(jnp.bincount(labels, length=count))


def _centroids(points: jax.Array, labels: jax.Array, weights: jax.Array | None,
               totals: jax.Array | None, count: int) -> tuple[jax.Array, jax.Array]:
    """(centroids, total weights); unit weights when `weights` is None, and the totals are
    summed from the weights when `totals` is None."""
    if weights is None:
        sums = jax.ops.segment_sum(points, labels, num_segments=count)
        if totals is None:
            totals = jnp.bincount(labels, length=count)
    else:
        sums = jax.ops.segment_sum(points * weights[:, None], labels, num_segments=count)
        if totals is None:
            totals = jax.ops.segment_sum(weights, labels, num_segments=count)
    totals = totals.astype(points.dtype)
    return sums / totals[:, None], totals


_jit_centroids = functools.partial(jax.jit, static_argnames="count")(_centroids)


@functools.partial(jax.jit, static_argnames="count")
def _jit_ranges_centroids(points: jax.Array, labels: jax.Array, weights: jax.Array | None,
                          min_weight: jax.Array, count: int,
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    sizes = jnp.bincount(labels, length=count)
    if weights is not None:
        weights = jnp.where(weights <= min_weight, min_weight, weights)
    centroids, totals = _centroids(points, labels, weights,
                                   sizes if weights is None else None, count)
    return _ranges(sizes), centroids, totals


def cluster_centroids(x: ArrayLike, labels: ArrayLike, Nlab: ArrayLike | None = None,
                      weights: ArrayLike | None = None, weights_c: ArrayLike | None = None, *,
                      num_clusters: int | None = None) -> jax.Array:
    """The (weighted) barycentre of every cluster: c_k = sum_{l_i = k} w_i x_i / sum w_i.

    Args:
        x: (M, D) points (need not be sorted).
        labels: (M,) integer labels in [0, C).
        Nlab: optional (C,) number of points per cluster, the divisor when `weights` is None.
        weights: optional (M,) positive weights w_i (1 by default).
        weights_c: optional (C,) total weight of every cluster, the divisor when `weights` is
            given (computed from `weights` when None).
        num_clusters: optional C (a Python int; jaxkeops addition). C comes from `Nlab`,
            `num_clusters` or `weights_c`, whichever is given (they must agree), else from
            `labels.max() + 1` on concrete labels. Given one of them, this traces under
            `jax.jit` (labels outside [0, C) are then dropped, not reported).

    Returns:
        (C, D) centroids in x's floating dtype. An empty cluster gets NaN (0 / 0), as in KeOps.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import cluster_centroids
        >>> x = jnp.array([[0.0], [1.0], [4.0], [5.0], [6.0]])
        >>> labels = jnp.array([0, 0, 1, 1, 1])
        >>> print(cluster_centroids(x, labels, weights=jnp.array([0.5, 0.5, 2.0, 1.0, 1.0])))
        [[0.5 ]
         [4.75]]
    """
    points = _points(x)
    labels = _labels(labels)
    _same_length(points, "x", labels)
    count = _number_of_clusters(
        labels, {"Nlab": _vector_length(Nlab, "Nlab"), "num_clusters": num_clusters,
                 "weights_c": _vector_length(weights_c, "weights_c")}, "cluster_centroids")
    if weights is None:
        w = None
        totals = None if Nlab is None else _per_point(Nlab, "Nlab", count, "cluster")
    else:
        w = _per_point(weights, "weights", points.shape[0], "point").astype(points.dtype)
        totals = (None if weights_c is None
                  else _per_point(weights_c, "weights_c", count, "cluster"))
    return _jit_centroids(points, labels, w, totals, count)[0]


def cluster_ranges_centroids(x: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None,
                             min_weight: float = 1e-9, *, num_clusters: int | None = None,
                             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Ranges, centroids and total weights of the clusters of a labelled point cloud.

    Weights at or below `min_weight` are raised to it first (as `pykeops.torch` does; the
    numpy version of KeOps does not clamp), so no cluster of points has a zero total weight.

    Args:
        x: (M, D) points.
        labels: (M,) integer labels in [0, C).
        weights: optional (M,) positive weights (1 by default).
        min_weight: the smallest weight a point may carry.
        num_clusters: optional C (a Python int; jaxkeops addition), to count empty trailing
            clusters or to trace under `jax.jit`; by default `labels.max() + 1`.

    Returns:
        ranges (C, 2) int32 `[start, end)` rows of every cluster once the points are sorted
        by label (`sort_clusters`), centroids (C, D) (NaN for an empty cluster), and the total
        weight of every cluster (C,) (its number of points without weights), in x's floating
        dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import cluster_ranges_centroids
        >>> x = jnp.array([[0.0], [0.5], [1.0], [2.0], [3.0]])
        >>> labels = jnp.array([0, 0, 1, 1, 1])
        >>> ranges, centroids, weights_c = cluster_ranges_centroids(x, labels)
        >>> print(ranges.tolist(), centroids[:, 0].tolist(), weights_c.tolist())
        [[0, 2], [2, 5]] [0.25, 2.0] [2.0, 3.0]
        >>> w = jnp.array([1.0, 0.5, 1.0, 1.0, 10.0])
        >>> _, centroids, weights_c = cluster_ranges_centroids(x, labels, weights=w)
        >>> print(centroids[:, 0], weights_c)
        [0.16666667 2.75      ] [ 1.5 12. ]
    """
    points = _points(x)
    labels = _labels(labels)
    _same_length(points, "x", labels)
    count = _number_of_clusters(labels, {"num_clusters": num_clusters},
                                "cluster_ranges_centroids")
    w = (None if weights is None
         else _per_point(weights, "weights", points.shape[0], "point").astype(points.dtype))
    return _jit_ranges_centroids(points, labels, w, jnp.asarray(min_weight, points.dtype), count)


def from_matrix(ranges_i: ArrayLike, ranges_j: ArrayLike, keep: ArrayLike) -> Ranges:
    """The block-sparse `ranges` 6-tuple from cluster ranges and a cluster-cluster mask.

    Points of i-cluster k and j-cluster l interact exactly when `keep[k, l]`. See the module
    docstring for the layout; `slices_*` are cumulative END offsets into `redranges_*` (an
    implicit 0 starts the first slice), as in KeOps.

    Runs eagerly only: `redranges_i` and `redranges_j` have `keep.sum()` rows, a number that
    depends on the values of `keep` (call it outside `jax.jit`, or on concrete `keep`).

    Args:
        ranges_i: (Mc, 2) integer `[start, end)` rows of the i-clusters.
        ranges_j: (Nc, 2) integer `[start, end)` rows of the j-clusters.
        keep: (Mc, Nc) boolean mask (or integers, nonzero meaning True).

    Returns:
        `(ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)`, all int32:
        shapes (Mc, 2), (Mc,), (keep.sum(), 2), (Nc, 2), (Nc,), (keep.sum(), 2).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import from_matrix
        >>> r_i = jnp.array([[2, 5], [7, 12]])
        >>> r_j = jnp.array([[1, 4], [4, 9], [20, 30]])
        >>> keep = jnp.array([[True, True, False], [False, True, False]])
        >>> ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i = from_matrix(
        ...     r_i, r_j, keep)
        >>> print(slices_i.tolist(), redranges_j.tolist())  # i-cluster 1: redranges_j[2:3]
        [2, 3] [[1, 4], [4, 9], [4, 9]]
        >>> print(slices_j.tolist(), redranges_i.tolist())  # j-cluster 2: nothing
        [1, 3, 3] [[2, 5], [2, 5], [7, 12]]
    """
    rows_i = _ranges_array(ranges_i, "ranges_i")
    rows_j = _ranges_array(ranges_j, "ranges_j")
    mask = jnp.asarray(keep)
    expected = (rows_i.shape[0], rows_j.shape[0])
    if mask.shape != expected:
        raise ValueError(f"keep must have shape (Mc, Nc) = {expected} for ranges_i of shape "
                         f"{rows_i.shape} and ranges_j of shape {rows_j.shape}, got shape "
                         f"{mask.shape}")
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise TypeError(f"keep must be a boolean (or integer) array, got dtype {mask.dtype}")
    try:
        mask = np.asarray(mask) != 0
    except _NOT_CONCRETE as error:
        raise ValueError("from_matrix: the output length is keep.sum(), which depends on the "
                         "values of keep; call it outside jax.jit") from error
    # Row-major nonzeros list, per i-cluster, its kept j-clusters; those of the transpose
    # list, per j-cluster, its kept i-clusters.
    kept_j = jnp.asarray(np.nonzero(mask)[1], jnp.int32)
    kept_i = jnp.asarray(np.nonzero(mask.T)[1], jnp.int32)
    slices_i = jnp.asarray(np.cumsum(mask.sum(axis=1)), jnp.int32)
    slices_j = jnp.asarray(np.cumsum(mask.sum(axis=0)), jnp.int32)
    redranges_j = rows_j[kept_j].reshape(-1, 2)
    redranges_i = rows_i[kept_i].reshape(-1, 2)
    return rows_i, slices_i, redranges_j, rows_j, slices_j, redranges_i


def swap_axes(ranges: Ranges | None) -> Ranges | None:
    """Exchange the i and j halves of a `ranges` 6-tuple (None stays None).

    `swap_axes(from_matrix(r_i, r_j, keep))` equals `from_matrix(r_j, r_i, keep.T)`: the
    ranges of the transposed problem, e.g. for a reduction over the other axis.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.cluster import from_matrix, swap_axes
        >>> r = from_matrix(jnp.array([[0, 2]]), jnp.array([[0, 1], [1, 3]]),
        ...                 jnp.array([[True, False]]))
        >>> [a.shape for a in swap_axes(r)]
        [(2, 2), (2,), (1, 2), (1, 2), (1,), (1, 2)]
        >>> swap_axes(None) is None
        True
    """
    if ranges is None:
        return None
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        raise ValueError("ranges must be a 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, "
                         f"slices_j, redranges_i), got {type(ranges).__name__} of length "
                         f"{len(ranges) if isinstance(ranges, (tuple, list)) else '?'}")
    return (*ranges[3:6], *ranges[0:3])
