"""jaxkeops.ops.kmeans against a NumPy float64 Lloyd's algorithm from the same start, the
empty-cluster rule, the initialisations, the tolerance, jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops.ops import kmeans

CENTRES = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])


@pytest.fixture
def blobs(rng):
    """Three well separated Gaussian blobs of 40 points each, and the true labels."""
    labels = np.repeat(np.arange(3), 40)
    return CENTRES[labels] + 0.5 * rng.normal(size=(120, 2)), labels


def numpy_lloyd(x, centroids, iters):
    """Plain Lloyd iterations (no cluster may become empty in the inputs used here)."""
    for _ in range(iters):
        d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
        labels = d.argmin(1)
        centroids = np.stack([x[labels == c].mean(0) for c in range(len(centroids))])
    d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return centroids, d.argmin(1), d.min(1).sum()


def test_matches_numpy_lloyd_from_the_same_start(rng):
    x = rng.normal(size=(200, 3))
    start = x[:5].copy()
    result = kmeans(jnp.asarray(x), 5, iters=4, init=jnp.asarray(start))
    centroids, labels, inertia = numpy_lloyd(x, start, 4)
    np.testing.assert_allclose(result.centroids, centroids, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.inertia, inertia, rtol=1e-12)
    assert int(result.iterations) == 4


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_recovers_separated_blobs(init, blobs):
    x, truth = blobs
    result = kmeans(jnp.asarray(x), 3, iters=20, key=jax.random.key(3), init=init)
    labels = np.asarray(result.labels)
    # The same partition up to a renaming of the clusters.
    mapping = {t: labels[truth == t][0] for t in range(3)}
    assert len(set(mapping.values())) == 3
    np.testing.assert_array_equal(labels, [mapping[t] for t in truth])
    for t in range(3):
        np.testing.assert_allclose(result.centroids[mapping[t]], x[truth == t].mean(0),
                                   rtol=1e-12)
    distances = ((x - np.asarray(result.centroids)[labels]) ** 2).sum()
    np.testing.assert_allclose(result.inertia, distances, rtol=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_initialisations_pick_distinct_data_points(init, blobs):
    x, _ = blobs
    result = kmeans(jnp.asarray(x), 6, iters=0, key=jax.random.key(1), init=init)
    centroids = np.asarray(result.centroids)
    rows = [np.flatnonzero((x == c).all(1)) for c in centroids]
    assert all(len(r) == 1 for r in rows)
    assert len({int(r[0]) for r in rows}) == 6
    assert int(result.iterations) == 0


def test_kmeans_plus_plus_spreads_the_seeds(blobs):
    """With three far-apart blobs, k-means++ seeds (almost surely) one centre per blob."""
    x, truth = blobs
    hits = 0
    for seed in range(5):
        centroids = np.asarray(kmeans(jnp.asarray(x), 3, iters=0, key=jax.random.key(seed),
                                      init="k-means++").centroids)
        blob_of = [truth[np.flatnonzero((x == c).all(1))[0]] for c in centroids]
        hits += len(set(blob_of)) == 3
    assert hits >= 4


def test_empty_cluster_moves_to_the_farthest_point(blobs):
    x, _ = blobs
    start = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [100.0, 100.0]])
    result = kmeans(jnp.asarray(x), 4, iters=1, init=jnp.asarray(start))
    # Step 1 by hand: the far centroid gets no point, so it moves onto the point farthest from
    # its own (nearest) centroid; the others move to their means.
    d = ((x[:, None, :] - start[None]) ** 2).sum(-1)
    labels, nearest = d.argmin(1), d.min(1)
    assert not (labels == 3).any()
    expected = np.stack([x[labels == c].mean(0) for c in range(3)] + [x[nearest.argmax()]])
    np.testing.assert_allclose(result.centroids, expected, rtol=1e-12)
    assert len(np.unique(np.asarray(result.labels))) == 4


def test_two_empty_clusters_take_distinct_points(blobs):
    x, _ = blobs
    start = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [100.0, 0.0], [0.0, 100.0]])
    result = kmeans(jnp.asarray(x), 5, iters=1, init=jnp.asarray(start))
    d = ((x[:, None, :] - start[None]) ** 2).sum(-1).min(1)
    farthest = np.argsort(-d, kind="stable")[:2]
    np.testing.assert_allclose(result.centroids[3:], x[farthest], rtol=1e-12)


def test_tolerance_stops_early(blobs):
    x, _ = blobs
    result = kmeans(jnp.asarray(x), 3, iters=50, key=jax.random.key(0))
    assert 1 <= int(result.iterations) < 50  # a fixed point is reached and detected
    loose = kmeans(jnp.asarray(x), 3, iters=50, key=jax.random.key(0), tol=1e6)
    assert int(loose.iterations) == 1


def test_jit_and_vmap(blobs):
    x, _ = blobs
    clouds = jnp.stack([jnp.asarray(x), jnp.asarray(x[::-1] * 2.0)])
    keys = jax.random.split(jax.random.key(5), 2)
    mapped = jax.vmap(lambda x, key: kmeans(x, 3, iters=10, key=key))(clouds, keys)
    jitted = jax.jit(lambda x, key: kmeans(x, 3, iters=10, key=key))
    for n in range(2):
        single = jitted(clouds[n], keys[n])
        np.testing.assert_allclose(mapped.centroids[n], single.centroids, rtol=1e-12)
        np.testing.assert_array_equal(mapped.labels[n], single.labels)


def test_float32_points(blobs):
    x, _ = blobs
    result = kmeans(jnp.asarray(x, jnp.float32), 3, iters=5)
    assert result.centroids.dtype == jnp.float32 and result.inertia.dtype == jnp.float32


def test_bad_inputs(blobs):
    x = jnp.asarray(blobs[0])
    with pytest.raises(ValueError, match=r"k=121 clusters need at least k points.*\(120, 2\)"):
        kmeans(x, 121)
    with pytest.raises(ValueError, match=r"init must have shape \(k, D\) = \(3, 2\)"):
        kmeans(x, 3, init=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="init must be one of"):
        kmeans(x, 3, init="kmeans||")
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\).*jax.vmap"):
        kmeans(jnp.stack([x, x]), 3)
    with pytest.raises(ValueError, match="iters must be"):
        kmeans(x, 3, iters=-1)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        kmeans(x, 3, tol=-1.0)
