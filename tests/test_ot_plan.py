"""The lazy TransportPlan against the dense plan a_i b_j exp((f_i + g_j - C_ij) / eps) built in
numpy float64 from the same potentials: products with signed vectors and matrices, the
transpose, marginals, the barycentric map, batch dims, the three kinds of cost, small
temperatures (where only the log domain is exact), and jit / vmap / grad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from jaxkeops.ot import TransportPlan, sinkhorn_plan, sinkhorn_potentials

N, M, D = 11, 8, 2
TOL = dict(rtol=1e-10, atol=1e-12)

COSTS = {
    "default": (None, lambda x, y: ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1) / 2),
    "formula": ("SqDist(X,Y) + Norm2(X-Y)",
                lambda x, y: (lambda d2: d2 + np.sqrt(d2))(
                    ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1))),
    "lazytensor": (lambda x_i, y_j: (x_i - y_j).abs().sum(-1),
                   lambda x, y: np.abs(x[..., :, None, :] - y[..., None, :, :]).sum(-1)),
}


def _data(rng, batch=()):
    x = rng.uniform(size=batch + (N, D))
    y = rng.uniform(size=batch + (M, D)) + 0.2
    a = rng.uniform(0.5, 1.5, batch + (N,))
    b = rng.uniform(0.5, 1.5, batch + (M,))
    return a / a.sum(-1, keepdims=True), x, b / b.sum(-1, keepdims=True), y


def _dense_plan(a, x, b, y, f, g, eps, dense_cost):
    """In the log domain, then exponentiated: exact even when exp(f / eps) overflows."""
    f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
    log_pi = (np.log(a)[..., :, None] + np.log(b)[..., None, :]
              + (f[..., :, None] + g[..., None, :] - dense_cost(x, y)) / eps)
    return np.exp(log_pi)


def _solve(rng, kind="default", batch=(), blur=0.1, backend="auto"):
    a, x, b, y = _data(rng, batch)
    cost, dense_cost = COSTS[kind]
    plan = sinkhorn_plan(jnp.asarray(x), jnp.asarray(y), jnp.asarray(a), jnp.asarray(b),
                         blur=blur, cost=cost, backend=backend, tol=1e-12)
    dense = _dense_plan(a, x, b, y, plan.f, plan.g, blur**2, dense_cost)
    return plan, dense, (a, x, b, y)


@pytest.mark.parametrize("kind", COSTS)
def test_products_match_the_dense_plan(rng, kind):
    plan, dense, _ = _solve(rng, kind)
    v = rng.normal(size=(M, 3))  # signed: goes through the signed log-sum-exp
    u = rng.normal(size=(N,))
    assert plan.shape == (N, M) and plan.T.shape == (M, N)
    assert_close(plan @ jnp.asarray(v), dense @ v, "float64", **TOL)
    assert_close(plan @ jnp.asarray(v[:, 0]), dense @ v[:, 0], "float64", **TOL)
    assert_close(plan.T @ jnp.asarray(u), dense.T @ u, "float64", **TOL)
    assert_close(plan.dense(), dense, "float64", **TOL)
    assert_close(plan.T.dense(), dense.T, "float64", **TOL)


def test_tensorized_backend_gives_the_same_plan(rng):
    plan, dense, _ = _solve(rng, backend="tensorized")
    v = rng.normal(size=(M, 2))
    assert_close(plan @ jnp.asarray(v), dense @ v, "float64", **TOL)
    assert_close(plan.barycentric_map(), (dense @ plan.y) / dense.sum(1, keepdims=True),
                 "float64", **TOL)
    first, second = plan.marginals()
    assert_close(first, dense.sum(1), "float64", **TOL)
    assert_close(second, dense.sum(0), "float64", **TOL)


def test_marginals_are_the_weights_at_convergence(rng):
    plan, dense, (a, _, b, _) = _solve(rng)
    first, second = plan.marginals()
    assert_close(first, dense.sum(1), "float64", **TOL)
    assert_close(second, dense.sum(0), "float64", **TOL)
    np.testing.assert_allclose(first, a, atol=1e-9)
    np.testing.assert_allclose(second, b, atol=1e-9)
    swapped = plan.T.marginals()
    np.testing.assert_array_equal(swapped[0], second)


def test_barycentric_map_both_ways(rng):
    plan, dense, (_, x, _, y) = _solve(rng)
    expected = (dense @ y) / dense.sum(1, keepdims=True)
    assert_close(plan.barycentric_map(), expected, "float64", **TOL)
    back = (dense.T @ x) / dense.sum(0)[:, None]
    assert_close(plan.T.barycentric_map(), back, "float64", **TOL)


def test_small_temperature_stays_exact_in_the_log_domain(rng):
    """blur = 0.005: exp(f / eps) alone overflows float64, the plan does not."""
    plan, dense, _ = _solve(rng, blur=0.005)
    assert float(jnp.abs(plan.f).max()) / 0.005**2 > 710
    v = rng.normal(size=(M,))
    out = plan @ jnp.asarray(v)
    assert np.isfinite(out).all()
    assert_close(out, dense @ v, "float64", rtol=1e-9, atol=1e-12)


def test_batch_dims(rng):
    plan, dense, _ = _solve(rng, batch=(3,))
    v = rng.normal(size=(3, M))
    w = rng.normal(size=(3, M, 2))
    assert plan.shape == (3, N, M)
    assert_close(plan @ jnp.asarray(v), np.einsum("bnm,bm->bn", dense, v), "float64", **TOL)
    assert_close(plan @ jnp.asarray(w), dense @ w, "float64", **TOL)
    assert_close(plan.dense(), dense, "float64", **TOL)


def test_plan_goes_through_jit_vmap_and_grad(rng):
    plan, dense, (a, x, b, y) = _solve(rng)
    v = jnp.asarray(rng.normal(size=(M,)))
    assert_close(jax.jit(lambda p, v: p @ v)(plan, v), dense @ np.asarray(v), "float64", **TOL)
    vs = jnp.asarray(rng.normal(size=(4, M)))
    assert_close(jax.vmap(lambda v: plan @ v)(vs), np.asarray(vs) @ dense.T, "float64", **TOL)
    # Linear in v: the gradient of <u, pi v> with respect to v is pi^T u.
    u = jnp.asarray(rng.normal(size=(N,)))
    grad_v = jax.grad(lambda v: u @ (plan @ v))(v)
    assert_close(grad_v, dense.T @ np.asarray(u), "float64", **TOL)


def test_plan_from_given_potentials_and_errors(rng):
    a, x, b, y = _data(rng)
    f, g = sinkhorn_potentials(jnp.asarray(x), jnp.asarray(y), jnp.asarray(a), jnp.asarray(b),
                               blur=0.1)
    plan = TransportPlan(jnp.asarray(x), jnp.asarray(y), f, g, jnp.asarray(a), jnp.asarray(b),
                         eps=0.01)
    dense = _dense_plan(a, x, b, y, f, g, 0.01, COSTS["default"][1])
    assert_close(plan.dense(), dense, "float64", **TOL)
    with pytest.raises(ValueError, match=r"potential 'g' of shape \(7,\)"):
        TransportPlan(jnp.asarray(x), jnp.asarray(y), f, g[:-1], eps=0.01)
    with pytest.raises(ValueError, match="v has 5 rows, expected 8"):
        plan @ jnp.ones((5, 2))
