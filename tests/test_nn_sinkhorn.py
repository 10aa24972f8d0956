"""jaxkeops.nn.SinkhornLoss: the debiased Sinkhorn divergence against a dense float64 log-domain
Sinkhorn run to convergence (values) and finite differences (gradients); the nnx transforms;
an optax loop that moves a cloud onto another."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close

pytest.importorskip("flax")
from flax import nnx  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from jaxkeops.nn import SinkhornLoss  # noqa: E402

BLUR = 0.5  # eps = 0.25: the dense reference converges in under 200 iterations
CONVERGED = dict(blur=BLUR, tol=1e-12, max_extra_iter=3000)


def dense_ot(a, x, b, y, eps, iterations=300):
    """OT_eps(a, b) = <a, f> + <b, g> at the fixed point of log-domain Sinkhorn, with the
    cost |x - y|^2 / 2, in float64 numpy."""
    cost = 0.5 * ((x[:, None] - y[None]) ** 2).sum(-1)
    f, g = np.zeros(len(x)), np.zeros(len(y))
    for _ in range(iterations):
        f = -eps * logsumexp(np.log(b)[None] + (g[None] - cost) / eps, axis=1)
        g = -eps * logsumexp(np.log(a)[:, None] + (f[:, None] - cost) / eps, axis=0)
    return a @ f + b @ g


def dense_divergence(a, x, b, y, eps):
    return (dense_ot(a, x, b, y, eps) - dense_ot(a, x, a, x, eps) / 2
            - dense_ot(b, y, b, y, eps) / 2)


@pytest.fixture
def clouds(rng):
    x = rng.normal(size=(40, 2))
    y = rng.normal(size=(30, 2)) * 0.7 + np.array([1.0, -0.5])
    a = rng.random(40) + 0.5
    b = rng.random(30) + 0.5
    return x, y, a / a.sum(), b / b.sum()


def test_matches_a_dense_sinkhorn_divergence(clouds):
    x, y, a, b = clouds
    loss = SinkhornLoss(**CONVERGED)
    eps = BLUR**2
    assert_close(loss(jnp.asarray(x), jnp.asarray(y)),
                 dense_divergence(np.full(40, 1 / 40), x, np.full(30, 1 / 30), y, eps),
                 "float64", rtol=1e-9)
    weighted = loss(jnp.asarray(x), jnp.asarray(y), x_weights=jnp.asarray(a),
                    y_weights=jnp.asarray(b))
    assert_close(weighted, dense_divergence(a, x, b, y, eps), "float64", rtol=1e-9)
    biased = SinkhornLoss(debias=False, **CONVERGED)(jnp.asarray(x), jnp.asarray(y))
    assert_close(biased, dense_ot(np.full(40, 1 / 40), x, np.full(30, 1 / 30), y, eps),
                 "float64", rtol=1e-9)


def test_gradients_match_finite_differences(clouds, rng):
    x, y, _, _ = clouds
    loss = SinkhornLoss(**CONVERGED)
    grad = jax.grad(loss)(jnp.asarray(x), jnp.asarray(y))
    step = 1e-5
    for _ in range(4):
        i, d = rng.integers(40), rng.integers(2)
        shifted = [x.copy(), x.copy()]
        shifted[0][i, d] += step
        shifted[1][i, d] -= step
        values = [float(loss(jnp.asarray(s), jnp.asarray(y))) for s in shifted]
        assert_close(grad[i, d], (values[0] - values[1]) / (2 * step), "float64", rtol=1e-5,
                     atol=1e-8)


class PointCloud(nnx.Module):
    """A learnable cloud, scored against a target by the loss module it holds."""

    def __init__(self, points, loss: SinkhornLoss):
        self.points = nnx.Param(jnp.asarray(points))
        self.loss = loss

    def __call__(self, target):
        return self.loss(self.points[...], target)


def test_nnx_jit_value_and_grad_and_vmap(clouds, rng):
    x, y, _, _ = clouds
    model = PointCloud(x, SinkhornLoss(blur=0.1))
    eager = model(jnp.asarray(y))
    assert_close(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(y)), eager, "float64")
    value, grads = nnx.jit(nnx.value_and_grad(lambda m, t: m(t)))(model, jnp.asarray(y))
    assert_close(value, eager, "float64")
    assert_close(grads.points[...], jax.grad(SinkhornLoss(blur=0.1))(jnp.asarray(x),
                                                                     jnp.asarray(y)),
                 "float64")

    loss = SinkhornLoss(blur=0.1)
    xs, ys = jnp.asarray(rng.normal(size=(3, 25, 2))), jnp.asarray(rng.normal(size=(3, 20, 2)))
    mapped = nnx.vmap(lambda m, x, y: m(x, y), in_axes=(None, 0, 0))(loss, xs, ys)
    assert_close(mapped, jnp.stack([loss(xs[k], ys[k]) for k in range(3)]), "float64")


def test_optax_training_decreases_the_loss(clouds):
    x, y, _, _ = clouds
    model = PointCloud(x.astype(np.float32), SinkhornLoss(blur=0.05))
    target = jnp.asarray(y, jnp.float32)
    optimizer = nnx.Optimizer(model, optax.adam(5e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(lambda m: m(target))(model)
        optimizer.update(model, grads)
        return value

    losses = [float(step(model, optimizer)) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="give both x_weights and y_weights"):
        SinkhornLoss()(jnp.ones((3, 2)), jnp.ones((4, 2)), x_weights=jnp.ones(3) / 3)
    with pytest.raises(ValueError, match="potentials=True"):
        SinkhornLoss(potentials=True)
