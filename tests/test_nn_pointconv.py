"""jaxkeops.nn.PointConv against a dense jnp implementation (all pairwise distances, lax.top_k)
in float64, values and gradients with respect to the parameters, features and points; the nnx
transforms; an optax training loop; knn_indices against numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close, assert_tree_close

pytest.importorskip("flax")
from flax import nnx  # noqa: E402

from jaxkeops.nn import PointConv, knn_indices  # noqa: E402


def dense_pointconv(conv: PointConv, points, features=None, queries=None):
    """PointConv's documented definition, from dense distances and lax.top_k."""
    queries = points if queries is None else queries
    sqdist = jnp.sum((queries[..., :, None, :] - points[..., None, :, :]) ** 2, axis=-1)
    _, neighbours = jax.lax.top_k(-sqdist, conv.k)                     # (*batch, M, K)
    gather = lambda values: jnp.vectorize(lambda v, i: v[i], signature="(n,c),(m,k)->(m,k,c)")(
        values, neighbours)
    inputs = gather(points) - queries[..., :, None, :]
    if features is not None:
        inputs = jnp.concatenate([inputs, gather(features)], axis=-1)
    h = inputs
    for number, layer in enumerate(conv.layers):
        h = h @ layer.kernel[...] + layer.bias[...]
        if number < len(conv.layers) - 1:
            h = jax.nn.relu(h)
    return {"max": jnp.max, "sum": jnp.sum, "mean": jnp.mean}[conv.aggregation](h, axis=-2)


def make_conv(aggregation="max", in_features=4, k=6, **kw) -> PointConv:
    return PointConv(in_features, 5, (8, 7), k=k, aggregation=aggregation,
                     param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize("aggregation", ["max", "sum", "mean"])
def test_matches_dense_with_gradients(rng, aggregation):
    conv = make_conv(aggregation)
    points = jnp.asarray(rng.normal(size=(2, 60, 3)))
    features = jnp.asarray(rng.normal(size=(2, 60, 4)))
    queries = points[:, ::3] + 0.01  # a downsampled cloud, not the points themselves
    out = conv(points, features, queries=queries)
    assert out.shape == (2, 20, 5)
    assert_close(out, dense_pointconv(conv, points, features, queries), "float64")

    weights = jnp.asarray(rng.normal(size=out.shape))
    loss = lambda f: lambda m, p, x: jnp.sum(jnp.tanh(f(m, p, x, p[:, ::3] + 0.01)) * weights)
    ours = loss(lambda m, p, x, q: m(p, x, queries=q))
    ref = loss(dense_pointconv)
    grads = nnx.grad(ours, argnums=(0, 1, 2))(conv, points, features)
    ref_grads = nnx.grad(ref, argnums=(0, 1, 2))(conv, points, features)
    assert_tree_close(nnx.to_pure_dict(grads[0]), nnx.to_pure_dict(ref_grads[0]), "float64")
    assert_close(grads[1], ref_grads[1], "float64")  # points (through p_j - q_i)
    assert_close(grads[2], ref_grads[2], "float64")  # features


def test_positions_only_without_batch_dims(rng):
    conv = make_conv("max", in_features=0, k=4, position_dim=2)
    points = jnp.asarray(rng.normal(size=(50, 2)))
    out = conv(points)
    assert out.shape == (50, 5)
    assert_close(out, dense_pointconv(conv, points), "float64")


def test_knn_indices_match_numpy(rng):
    points = rng.normal(size=(3, 80, 3))
    queries = rng.normal(size=(3, 25, 3))
    indices = knn_indices(jnp.asarray(queries), jnp.asarray(points), 7)
    sqdist = ((queries[:, :, None] - points[:, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices, np.argsort(sqdist, axis=-1, kind="stable")[..., :7])
    assert jnp.issubdtype(indices.dtype, jnp.integer)


def test_bad_inputs_name_the_arguments():
    conv = make_conv(k=6)
    points, features = jnp.ones((2, 10, 3)), jnp.ones((2, 10, 4))
    with pytest.raises(ValueError, match=r"points must have shape \(\*batch, N, 3\).*\(2, 10, 2\)"):
        conv(jnp.ones((2, 10, 2)), features)
    with pytest.raises(ValueError, match=r"features must have shape.*\(2, 9, 4\)"):
        conv(points, jnp.ones((2, 9, 4)))
    with pytest.raises(ValueError, match="takes features of shape"):
        conv(points)
    with pytest.raises(ValueError, match=r"queries must have shape.*\(5, 2\)"):
        conv(points, features, queries=jnp.ones((5, 2)))
    with pytest.raises(ValueError, match=r"k=6 must be between 1 and the number of points 5"):
        conv(jnp.ones((5, 3)), jnp.ones((5, 4)))
    with pytest.raises(ValueError, match="aggregation must be one of"):
        make_conv("median")


def test_nnx_jit_vmap_and_value_and_grad(rng):
    conv = make_conv("max")
    points = jnp.asarray(rng.normal(size=(3, 40, 3)))
    features = jnp.asarray(rng.normal(size=(3, 40, 4)))
    expected = dense_pointconv(conv, points, features)
    assert_close(nnx.jit(lambda m, p, f: m(p, f))(conv, points, features), expected, "float64")
    mapped = nnx.vmap(lambda m, p, f: m(p, f), in_axes=(None, 0, 0))(conv, points, features)
    assert_close(mapped, expected, "float64")

    loss = lambda m: jnp.mean(nnx.vmap(lambda m, p, f: m(p, f), in_axes=(None, 0, 0))(
        m, points, features) ** 2)
    value, grads = nnx.jit(nnx.value_and_grad(loss))(conv)
    ref_value, ref_grads = nnx.value_and_grad(
        lambda m: jnp.mean(dense_pointconv(m, points, features) ** 2))(conv)
    assert_close(value, ref_value, "float64")
    assert_tree_close(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref_grads), "float64")


def test_optax_training_decreases_the_loss(rng):
    """Learn each point's distance to the farthest of its 8 nearest neighbours."""
    points = jnp.asarray(rng.normal(size=(4, 200, 3)), jnp.float32)
    neighbours = np.asarray(knn_indices(points, points, 8))
    gathered = np.take_along_axis(np.asarray(points)[:, None], neighbours[..., None], axis=2)
    target = np.linalg.norm(gathered - np.asarray(points)[:, :, None], axis=-1).max(-1)
    conv = PointConv(0, 1, (32, 32), k=8, rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(conv, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(
            lambda m: jnp.mean((m(points)[..., 0] - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(conv, optimizer)) for _ in range(150)]
    assert losses[-1] < 0.05 * losses[0], losses[::15]
