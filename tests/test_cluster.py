"""jaxkeops.cluster against plain-numpy loops written here and, where pykeops is installed,
against pykeops.numpy.cluster / pykeops.torch.cluster element for element. Pure array code:
no kernel is compiled."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops.cluster import (
    cluster_centroids,
    cluster_ranges,
    cluster_ranges_centroids,
    from_matrix,
    grid_cluster,
    sort_clusters,
    swap_axes,
)

SEEDS = [0, 1, 2]
DIMS = [1, 2, 3]


@pytest.fixture(scope="module")
def keops_numpy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("pykeops.numpy.cluster")


@pytest.fixture(scope="module")
def keops_torch():
    pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("pykeops.torch.cluster")


# ---------------------------------------------------------------------------------------------
# Plain-numpy references (loops on small sizes).
def loop_grid_labels(x, size):
    """Cells anchored at the per-dimension minimum, numbered in lexicographic order."""
    sides = np.broadcast_to(np.asarray(size, x.dtype), (x.shape[1],))
    low = x.min(axis=0)
    cells = [tuple(np.floor((row - low) / sides).tolist()) for row in x]
    number = {cell: n for n, cell in enumerate(sorted(set(cells)))}
    return np.array([number[cell] for cell in cells])


def loop_ranges(labels, count):
    labels = np.asarray(labels)
    return np.array([[np.sum(labels < k), np.sum(labels <= k)] for k in range(count)])


def loop_centroids(x, labels, count, weights=None):
    """float64 barycentres; NaN for a cluster without points."""
    weights = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    out = np.full((count, x.shape[1]), np.nan)
    for k in range(count):
        members = labels == k
        if members.any():
            out[k] = (weights[members, None] * x[members]).sum(0) / weights[members].sum()
    return out


def loop_from_matrix(ranges_i, ranges_j, keep):
    slices_i, redranges_j, slices_j, redranges_i = [], [], [], []
    for k in range(keep.shape[0]):
        redranges_j += [ranges_j[c] for c in range(keep.shape[1]) if keep[k, c]]
        slices_i.append(len(redranges_j))
    for c in range(keep.shape[1]):
        redranges_i += [ranges_i[k] for k in range(keep.shape[0]) if keep[k, c]]
        slices_j.append(len(redranges_i))
    as_rows = lambda rows: np.array(rows, dtype=np.int64).reshape(-1, 2)
    return (np.asarray(ranges_i), np.array(slices_i), as_rows(redranges_j),
            np.asarray(ranges_j), np.array(slices_j), as_rows(redranges_i))


def decode_half(ranges_a, slices_a, redranges_b, size_a, size_b):
    """How many times each (a, b) pair is visited by a reduction over b: target cluster k
    covers rows ranges_a[k] and reduces over redranges_b[slices_a[k-1]:slices_a[k]]."""
    ranges_a, slices_a, redranges_b = (np.asarray(r) for r in (ranges_a, slices_a, redranges_b))
    visits = np.zeros((size_a, size_b), int)
    start = 0
    for k in range(len(ranges_a)):
        for low, high in redranges_b[start:slices_a[k]]:
            visits[ranges_a[k, 0]:ranges_a[k, 1], low:high] += 1
        start = slices_a[k]
    return visits


def assert_same_tuple(actual, expected):
    assert len(actual) == len(expected) == 6
    for a, e in zip(actual, expected):
        assert a.dtype == jnp.int32, a.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def labels_with_gaps(rng, size, used=(0, 2, 3, 6)):
    """Labels that skip some values, so that some clusters (1, 4, 5) are empty."""
    return rng.choice(np.array(used), size=size)


# ---------------------------------------------------------------------------------------------
# grid_cluster
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_grid_cluster_matches_a_loop_over_cells(dim, seed):
    rng = np.random.default_rng(seed)
    x = (2 * rng.normal(size=(300, dim))).astype(np.float32)
    size = 0.7 if seed != 1 else rng.uniform(0.3, 1.5, size=dim).astype(np.float32)
    labels = grid_cluster(jnp.asarray(x), size)
    assert labels.dtype == jnp.int32 and labels.shape == (300,)
    np.testing.assert_array_equal(labels, loop_grid_labels(x, size))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", DIMS)
def test_grid_cluster_matches_pykeops_torch(keops_torch, dim, dtype):
    import torch

    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        x = (3 * rng.normal(size=(200, dim)) - 1).astype(dtype)
        size = 0.5 if seed != 2 else rng.uniform(0.4, 1.2, size=dim).astype(dtype)
        theirs = keops_torch.grid_cluster(torch.from_numpy(x), torch.as_tensor(size))
        np.testing.assert_array_equal(grid_cluster(x, size), theirs.numpy())


@pytest.mark.parametrize("dim", DIMS)
def test_grid_cluster_matches_pykeops_numpy(keops_numpy, dim):
    # pykeops.numpy anchors its grid at 0 instead of at the minimum: both agree when every
    # dimension's minimum is exactly 0.
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        x = rng.uniform(-2, 3, size=(200, dim)).astype(np.float32)
        x = x - x.min(axis=0)
        np.testing.assert_array_equal(grid_cluster(x, 0.3), keops_numpy.grid_cluster(x, 0.3))


def test_grid_cluster_traces_under_jit():
    x = np.random.default_rng(3).normal(size=(100, 2)).astype(np.float32)
    sides = np.array([0.5, 0.8], np.float32)
    np.testing.assert_array_equal(jax.jit(grid_cluster)(x, sides), loop_grid_labels(x, sides))


def test_grid_cluster_any_dimension_and_no_merged_cells():
    x = np.random.default_rng(4).normal(size=(150, 5))
    np.testing.assert_array_equal(grid_cluster(x, 1.0), loop_grid_labels(x, 1.0))
    # KeOps packs cells into 10 bits per dimension, so (0, 1024) and (1, 0) would share a
    # label there; they are distinct cells.
    far = np.array([[0.0, 1024.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(grid_cluster(far, 1.0), [1, 2, 0])


def test_grid_cluster_one_and_no_points():
    np.testing.assert_array_equal(grid_cluster(np.ones((1, 2)), 0.1), [0])
    assert grid_cluster(np.zeros((0, 3)), 0.1).shape == (0,)


# ---------------------------------------------------------------------------------------------
# sort_clusters
def test_sort_clusters_keeps_points_with_their_labels():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, size=60)
    x = rng.normal(size=(60, 3))
    (x_sorted, ids), labels_sorted = sort_clusters((x, np.arange(60)), labels)
    ids = np.asarray(ids)
    assert np.all(np.diff(np.asarray(labels_sorted)) >= 0)
    np.testing.assert_array_equal(ids, np.argsort(labels, kind="stable"))
    np.testing.assert_array_equal(labels_sorted, labels[ids])
    np.testing.assert_array_equal(x_sorted, x[ids])


def test_sort_clusters_keeps_the_container():
    labels = np.array([1, 0, 1])
    x = np.arange(6.0).reshape(3, 2)
    as_list, _ = sort_clusters([x, x[:, 0]], labels)
    as_tuple, _ = sort_clusters((x,), labels)
    single, _ = sort_clusters(x, labels)
    assert isinstance(as_list, list) and isinstance(as_tuple, tuple)
    np.testing.assert_array_equal(single, x[[1, 0, 2]])
    np.testing.assert_array_equal(as_list[1], [2.0, 0.0, 4.0])


def test_sort_clusters_matches_pykeops_numpy(keops_numpy):
    # pykeops's sort is not stable: compare the labels, and every cluster as a set of rows.
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        labels = labels_with_gaps(rng, 80)
        x = rng.normal(size=(80, 2))
        ours, our_labels = sort_clusters(x, labels)
        theirs, their_labels = keops_numpy.sort_clusters(x, labels)
        np.testing.assert_array_equal(our_labels, their_labels)
        for k in np.unique(labels):
            members = their_labels == k
            np.testing.assert_array_equal(np.sort(np.asarray(ours)[members], 0),
                                          np.sort(theirs[members], 0))


# ---------------------------------------------------------------------------------------------
# cluster_ranges
@pytest.mark.parametrize("seed", SEEDS)
def test_cluster_ranges_with_empty_clusters(keops_numpy, seed):
    labels = np.sort(labels_with_gaps(np.random.default_rng(seed), 50))
    ranges = cluster_ranges(labels)
    assert ranges.dtype == jnp.int32 and ranges.shape == (7, 2)
    np.testing.assert_array_equal(ranges, loop_ranges(labels, 7))
    np.testing.assert_array_equal(ranges, keops_numpy.cluster_ranges(labels))
    counts = np.bincount(labels)
    for given in (counts, counts.astype(np.float32)):
        np.testing.assert_array_equal(cluster_ranges(labels, given), loop_ranges(labels, 7))
    np.testing.assert_array_equal(cluster_ranges(labels, num_clusters=9),
                                  loop_ranges(labels, 9))


def test_cluster_ranges_under_jit():
    labels = np.sort(labels_with_gaps(np.random.default_rng(6), 40))
    expected = loop_ranges(labels, 8)
    by_count = jax.jit(functools.partial(cluster_ranges, num_clusters=8))
    np.testing.assert_array_equal(by_count(labels), expected)
    np.testing.assert_array_equal(jax.jit(cluster_ranges)(labels, np.bincount(labels, minlength=8)),
                                  expected)
    with pytest.raises(ValueError, match="num_clusters"):
        jax.jit(cluster_ranges)(labels)


# ---------------------------------------------------------------------------------------------
# cluster_centroids and cluster_ranges_centroids
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_cluster_centroids_match_loops_and_pykeops(keops_numpy, dim, seed):
    rng = np.random.default_rng(seed)
    labels = labels_with_gaps(rng, 70)
    x = rng.normal(size=(70, dim))
    weights = rng.uniform(0.5, 2.0, size=70)
    with np.errstate(invalid="ignore"):  # pykeops divides 0 by 0 for the empty clusters
        for w in (None, weights):
            ours = cluster_centroids(x, labels, weights=w)
            np.testing.assert_allclose(ours, loop_centroids(x, labels, 7, w), rtol=1e-12)
            np.testing.assert_allclose(ours, keops_numpy.cluster_centroids(x, labels, weights=w),
                                       rtol=1e-12)
        totals = 2 * np.bincount(labels, weights=weights)
        np.testing.assert_allclose(
            cluster_centroids(x, labels, weights=weights, weights_c=totals),
            keops_numpy.cluster_centroids(x, labels, weights=weights, weights_c=totals),
            rtol=1e-12)
    assert np.isnan(np.asarray(ours)[[1, 4, 5]]).all()


def test_cluster_centroids_given_counts_and_jit():
    rng = np.random.default_rng(7)
    labels = labels_with_gaps(rng, 30)
    x = rng.normal(size=(30, 2)).astype(np.float32)
    expected = loop_centroids(x.astype(np.float64), labels, 9)
    counts = np.bincount(labels, minlength=9)
    np.testing.assert_allclose(cluster_centroids(x, labels, Nlab=counts), expected, rtol=1e-6)
    traced = jax.jit(functools.partial(cluster_centroids, num_clusters=9))(x, labels)
    assert traced.dtype == jnp.float32
    np.testing.assert_allclose(traced, expected, rtol=1e-6)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_cluster_ranges_centroids_match_pykeops_numpy(keops_numpy, dim, seed):
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, 6, size=90))
    x = rng.normal(size=(90, dim))
    weights = rng.uniform(0.1, 3.0, size=90)
    for w in (None, weights):
        ours = cluster_ranges_centroids(x, labels, weights=w)
        theirs = keops_numpy.cluster_ranges_centroids(x, labels, weights=w)
        assert ours[0].dtype == jnp.int32
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_cluster_ranges_centroids_clamp_small_weights_like_pykeops_torch(keops_torch):
    import torch

    rng = np.random.default_rng(8)
    labels = np.sort(labels_with_gaps(rng, 40))
    x = rng.normal(size=(40, 3))
    weights = np.where(rng.uniform(size=40) < 0.3, 0.0, rng.uniform(0.5, 1.0, size=40))
    ours = cluster_ranges_centroids(x, labels, weights=weights, min_weight=1e-3)
    theirs = keops_torch.cluster_ranges_centroids(
        torch.from_numpy(x), torch.from_numpy(labels), weights=torch.from_numpy(weights),
        min_weight=1e-3)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12)
    clamped = np.maximum(weights, 1e-3)
    np.testing.assert_allclose(ours[1], loop_centroids(x, labels, 7, clamped), rtol=1e-12)
    np.testing.assert_allclose(ours[2], np.bincount(labels, weights=clamped), rtol=1e-12)


def test_cluster_ranges_centroids_under_jit():
    rng = np.random.default_rng(9)
    labels = np.sort(labels_with_gaps(rng, 25))
    x = rng.normal(size=(25, 2))
    run = jax.jit(functools.partial(cluster_ranges_centroids, num_clusters=8))
    ranges, centroids, totals = run(x, labels)
    np.testing.assert_array_equal(ranges, loop_ranges(labels, 8))
    np.testing.assert_allclose(centroids, loop_centroids(x, labels, 8), rtol=1e-12)
    np.testing.assert_array_equal(totals, np.bincount(labels, minlength=8))


# ---------------------------------------------------------------------------------------------
# from_matrix and swap_axes
def test_from_matrix_keops_documented_example():
    r_i = np.array([[2, 5], [7, 12]])
    r_j = np.array([[1, 4], [4, 9], [20, 30]])
    keep = np.array([[True, True, False], [False, True, False]])
    assert_same_tuple(from_matrix(r_i, r_j, keep), (
        r_i, [2, 3], [[1, 4], [4, 9], [4, 9]],
        r_j, [1, 3, 3], [[2, 5], [2, 5], [7, 12]]))


def random_clusters(rng, count, total):
    """`count` consecutive [start, end) ranges covering [0, total), some of them empty."""
    cuts = np.sort(rng.integers(0, total + 1, size=count - 1))
    bounds = np.concatenate([[0], cuts, [total]])
    return np.stack([bounds[:-1], bounds[1:]], axis=1)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 4)])
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_from_matrix_matches_loops_and_pykeops(keops_numpy, shape, density):
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        r_i, r_j = random_clusters(rng, shape[0], 30), random_clusters(rng, shape[1], 20)
        keep = rng.uniform(size=shape) < density
        ours = from_matrix(r_i, r_j, keep)
        assert_same_tuple(ours, loop_from_matrix(r_i, r_j, keep))
        assert_same_tuple(ours, keops_numpy.from_matrix(r_i, r_j, keep))
        assert_same_tuple(from_matrix(r_i, r_j, keep.astype(np.uint8)), ours)


@pytest.mark.parametrize("seed", SEEDS)
def test_swap_axes(seed):
    rng = np.random.default_rng(seed)
    r_i, r_j = random_clusters(rng, 4, 25), random_clusters(rng, 6, 15)
    keep = rng.uniform(size=(4, 6)) < 0.5
    ranges = from_matrix(r_i, r_j, keep)
    twice = swap_axes(swap_axes(ranges))
    assert all(a is b for a, b in zip(twice, ranges))
    assert_same_tuple(swap_axes(ranges), from_matrix(r_j, r_i, keep.T))
    assert swap_axes(None) is None


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_ranges_decode_to_the_pairs_of_kept_clusters(dim, seed):
    # The whole recipe: every pair (i, j) of points is visited exactly once when the
    # clusters of i and j are kept, and never otherwise, by both halves of the 6-tuple.
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 4, size=(120, dim)), rng.uniform(0, 4, size=(90, dim))
    x_sorted, labels_x = sort_clusters(x, grid_cluster(x, 1.0))
    y_sorted, labels_y = sort_clusters(y, grid_cluster(y, 1.3))
    ranges_x, centres_x, _ = cluster_ranges_centroids(x_sorted, labels_x)
    ranges_y, centres_y, _ = cluster_ranges_centroids(y_sorted, labels_y)
    distances = np.linalg.norm(np.asarray(centres_x)[:, None] - np.asarray(centres_y)[None], axis=2)
    keep = distances < 1.5
    ranges = from_matrix(ranges_x, ranges_y, keep)
    expected = keep[np.asarray(labels_x)][:, np.asarray(labels_y)].astype(int)
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(decode_half(*ranges[:3], 120, 90), expected)
    np.testing.assert_array_equal(decode_half(*ranges[3:], 90, 120), expected.T)


@pytest.mark.parametrize("seed", SEEDS)
def test_ranges_decode_with_empty_clusters(seed):
    rng = np.random.default_rng(seed)
    labels_i = np.sort(labels_with_gaps(rng, 40))
    labels_j = np.sort(labels_with_gaps(rng, 30, used=(1, 2, 4)))
    keep = rng.uniform(size=(7, 5)) < 0.5
    ranges = from_matrix(cluster_ranges(labels_i), cluster_ranges(labels_j, num_clusters=5), keep)
    expected = keep[labels_i][:, labels_j].astype(int)
    np.testing.assert_array_equal(decode_half(*ranges[:3], 40, 30), expected)
    np.testing.assert_array_equal(decode_half(*ranges[3:], 30, 40), expected.T)


# ---------------------------------------------------------------------------------------------
# Bad input
X = np.zeros((4, 2))
LABELS = np.array([0, 1, 1, 0])
RANGES = np.array([[0, 2], [2, 4]])
BAD_CALLS = {
    "grid x 1-D": (lambda: grid_cluster(np.zeros(4), 0.5), ValueError, r"x .*\(4,\)"),
    "grid size shape": (lambda: grid_cluster(X, np.ones(3)), ValueError, r"size .*\(3,\)"),
    "grid size sign": (lambda: grid_cluster(X, 0.0), ValueError, "size must be positive"),
    "sort labels 2-D": (lambda: sort_clusters(X, LABELS[:, None]), ValueError,
                        r"labels .*\(4, 1\)"),
    "sort lengths": (lambda: sort_clusters((X, np.zeros(3)), LABELS), ValueError,
                     r"x\[1\] has shape \(3,\) but labels has shape \(4,\)"),
    "sort float labels": (lambda: sort_clusters(X, LABELS * 1.0), TypeError, "integer"),
    "ranges negative": (lambda: cluster_ranges(np.array([0, -1])), ValueError, ">= 0"),
    "ranges Nlab 2-D": (lambda: cluster_ranges(LABELS, np.ones((2, 2))), ValueError,
                        r"Nlab .*\(2, 2\)"),
    "centroids x 3-D": (lambda: cluster_centroids(np.zeros((4, 2, 1)), LABELS), ValueError,
                        r"x .*\(4, 2, 1\)"),
    "centroids lengths": (lambda: cluster_centroids(X[:3], LABELS), ValueError,
                          r"x has shape \(3, 2\) but labels has shape \(4,\)"),
    "centroids weights": (lambda: cluster_centroids(X, LABELS, weights=np.ones(5)), ValueError,
                          r"weights .*\(4,\).*\(5,\)"),
    "centroids Nlab vs labels": (lambda: cluster_centroids(X, np.array([0, 1, 2, 0]),
                                                           Nlab=np.ones(2)), ValueError,
                                 "max\\(labels\\) = 2"),
    "centroids counts disagree": (lambda: cluster_centroids(X, LABELS, Nlab=np.ones(2),
                                                            num_clusters=3), ValueError,
                                  "inconsistent"),
    "rc weights": (lambda: cluster_ranges_centroids(X, LABELS, weights=np.ones((4, 2))),
                   ValueError, r"weights .*\(4, 2\)"),
    "matrix keep shape": (lambda: from_matrix(RANGES, RANGES, np.ones((2, 3), bool)),
                          ValueError, r"keep .*\(2, 2\).*\(2, 3\)"),
    "matrix keep dtype": (lambda: from_matrix(RANGES, RANGES, np.ones((2, 2))), TypeError,
                          "keep must be a boolean"),
    "matrix ranges shape": (lambda: from_matrix(np.zeros((2, 3), int), RANGES,
                                                np.ones((2, 2), bool)),
                            ValueError, r"ranges_i .*\(2, 3\)"),
    "matrix ranges order": (lambda: from_matrix(np.array([[3, 1]]), RANGES,
                                                np.ones((1, 2), bool)),
                            ValueError, "start <= end"),
    "matrix under jit": (lambda: jax.jit(from_matrix)(RANGES, RANGES, np.ones((2, 2), bool)),
                         ValueError, "outside jax.jit"),
    "swap not 6": (lambda: swap_axes((RANGES,) * 3), ValueError, "6-tuple"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_names_the_argument(name):
    call, error, message = BAD_CALLS[name]
    with pytest.raises(error, match=message):
        call()
