"""jaxkeops.ops.knn against NumPy brute force (distances and indices for every metric), with
batch dimensions, jit, vmap, and gradients against a dense jnp computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops.ops import METRICS, knn

M, N, D, K = 20, 50, 3, 4


def brute_force(x, y, k, metric):
    """(distances, indices) of the k nearest rows of y for each row of x, in float64."""
    if metric == "cosine":
        xu = x / np.linalg.norm(x, axis=-1, keepdims=True)
        yu = y / np.linalg.norm(y, axis=-1, keepdims=True)
        dist = 1.0 - xu @ yu.T
    else:
        dist = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        if metric == "euclidean":
            dist = np.sqrt(dist)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


@pytest.fixture
def clouds(rng):
    return rng.normal(size=(M, D)), rng.normal(size=(N, D))


@pytest.mark.parametrize("metric", METRICS)
def test_knn_matches_brute_force(metric, clouds):
    x, y = clouds
    distances, indices = knn(jnp.asarray(x), jnp.asarray(y), K, metric=metric)
    want_d, want_i = brute_force(x, y, K, metric)
    assert distances.shape == indices.shape == (M, K)
    assert jnp.issubdtype(indices.dtype, jnp.integer)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, rtol=1e-12, atol=1e-12)
    assert (np.diff(np.asarray(distances), axis=1) >= 0).all()


def test_sqeuclidean_is_the_default_and_self_query_finds_itself(clouds):
    _, y = clouds
    distances, indices = knn(jnp.asarray(y), jnp.asarray(y), 1)
    np.testing.assert_array_equal(indices[:, 0], np.arange(N))
    np.testing.assert_array_equal(distances[:, 0], np.zeros(N))


def test_batch_dims_broadcast(rng):
    x = rng.normal(size=(2, M, D))
    y = rng.normal(size=(N, D))
    distances, indices = knn(jnp.asarray(x), jnp.asarray(y), K)
    assert distances.shape == (2, M, K)
    for n in range(2):
        want_d, want_i = brute_force(x[n], y, K, "sqeuclidean")
        np.testing.assert_array_equal(indices[n], want_i)
        np.testing.assert_allclose(distances[n], want_d, rtol=1e-12)


def test_jit_and_vmap(rng):
    x = jnp.asarray(rng.normal(size=(3, M, D)))
    y = jnp.asarray(rng.normal(size=(3, N, D)))
    direct = knn(x, y, K, metric="euclidean")
    jitted = jax.jit(lambda x, y: knn(x, y, K, metric="euclidean"))(x, y)
    mapped = jax.vmap(lambda x, y: knn(x, y, K, metric="euclidean"))(x, y)
    for got in (jitted, mapped):
        np.testing.assert_array_equal(got[1], direct[1])
        np.testing.assert_allclose(got[0], direct[0], rtol=1e-13)


@pytest.mark.parametrize("metric", METRICS)
def test_distance_gradients_match_dense_jnp(metric, clouds):
    x, y = (jnp.asarray(a) for a in clouds)
    weights = jnp.asarray(np.linspace(0.5, 1.5, M * K).reshape(M, K))
    _, indices = knn(x, y, K, metric=metric)

    def ours(x, y):
        return jnp.sum(weights * knn(x, y, K, metric=metric)[0])

    def dense(x, y):
        if metric == "cosine":
            xu = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
            yu = y / jnp.linalg.norm(y, axis=-1, keepdims=True)
            dist = 1.0 - xu @ yu.T
        else:
            dist = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
            dist = jnp.sqrt(dist) if metric == "euclidean" else dist
        return jnp.sum(weights * jnp.take_along_axis(dist, indices, axis=1))

    got = jax.grad(ours, argnums=(0, 1))(x, y)
    want = jax.grad(dense, argnums=(0, 1))(x, y)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_euclidean_gradient_is_finite_at_zero_distance(clouds):
    _, y = clouds
    y = jnp.asarray(y)
    grad = jax.grad(lambda x: jnp.sum(knn(x, y, 2, metric="euclidean")[0]))(y[:5])
    assert np.isfinite(np.asarray(grad)).all()


def test_bad_inputs(clouds):
    x, y = (jnp.asarray(a) for a in clouds)
    with pytest.raises(ValueError, match=r"k=51 is larger .*\(50, 3\)"):
        knn(x, y, 51)
    with pytest.raises(ValueError, match="metric must be one of"):
        knn(x, y, 2, metric="manhattan")
    with pytest.raises(ValueError, match=r"same last dimension.*\(20, 3\) and \(50, 2\)"):
        knn(x, y[:, :2], 2)
    with pytest.raises(TypeError, match="k must be a Python integer"):
        knn(x, y, 2.0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn(x, y, 0)
