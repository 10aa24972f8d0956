"""SamplesLoss(backend="multiscale"): GeomLoss's coarse-to-fine Sinkhorn on block-sparse
kernels. Checked against GeomLoss's own multiscale solver (pykeops, CPU) without truncation,
where both compute the same algorithm on the same clusters; against itself without truncation
(the truncation error); with batch dims against each element alone; and its gradient against
GeomLoss's autograd."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops.ot import SamplesLoss, SinkhornParams, measures
from jaxkeops.ot.multiscale import Bounds, cluster, truncated_ranges
from jaxkeops.ot.sinkhorn import run

N, M, D = 300, 250, 3
SETTINGS = dict(p=2, blur=0.02, scaling=0.5, diameter=2.0, cluster_scale=0.2)


def clouds(seed: int = 0, n: int = N, m: int = M):
    """Clustered clouds whose smallest coordinates are 0 in both (so that GeomLoss's grids,
    anchored at each cloud's minimum, and jaxkeops's, anchored at both clouds' minimum, are
    the same grid)."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.1, 0.9, size=(6, D))
    x = centers[rng.integers(0, 6, n)] + 0.04 * rng.normal(size=(n, D))
    y = centers[rng.integers(0, 6, m)] + 0.04 * rng.normal(size=(m, D)) + 0.05
    both_min = np.minimum(x.min(0), y.min(0))
    x, y = x - both_min, y - both_min
    x[0], y[0] = 0.0, 0.0
    return x.astype(np.float64), y.astype(np.float64)


@pytest.fixture(scope="module")
def geomloss_multiscale():
    torch = pytest.importorskip("torch")
    geomloss = pytest.importorskip("geomloss")
    pytest.importorskip("pykeops")

    def run(x, y, truncate, grad=False):
        xt = torch.tensor(x, requires_grad=grad)
        loss = geomloss.SamplesLoss("sinkhorn", backend="multiscale", truncate=truncate,
                                    **SETTINGS)(xt, torch.tensor(y))
        if grad:
            (g,) = torch.autograd.grad(loss, [xt])
            return float(loss), g.numpy()
        return float(loss)

    return run


def ours(truncate, **kw):
    return SamplesLoss("sinkhorn", backend="multiscale", truncate=truncate, **SETTINGS, **kw)


def test_without_truncation_equals_geomloss_multiscale(geomloss_multiscale):
    x, y = clouds()
    want = geomloss_multiscale(x, y, None)
    got = float(ours(None)(x, y))
    assert abs(got - want) <= 1e-6 * abs(want) + 1e-9, (got, want)


def test_truncation_changes_the_loss_by_less_than_its_bound():
    x, y = clouds(1)
    full = float(ours(None)(x, y))
    for truncate in (5,):  # GeomLoss's default
        cut = float(ours(truncate)(x, y))
        assert abs(cut - full) <= 1e-3 * abs(full), (truncate, cut, full)


def test_as_close_to_the_converged_divergence_as_the_online_backend():
    """Both backends stop after the epsilon-scaling schedule, short of convergence; the
    multiscale one must not be further from the converged value (the online backend run until
    no potential moves by 1e-6) than the online one."""
    x, y = clouds(2)
    settings = dict(SETTINGS, scaling=0.9)
    dense_settings = {k: v for k, v in settings.items() if k != "cluster_scale"}
    converged = float(SamplesLoss("sinkhorn", backend="online", tol=1e-6, max_extra_iter=3000,
                                  **dense_settings)(x, y))
    online = float(SamplesLoss("sinkhorn", backend="online", **dense_settings)(x, y))
    multi = float(SamplesLoss("sinkhorn", backend="multiscale", **settings)(x, y))
    assert abs(multi - converged) <= 1.05 * abs(online - converged), (multi, online, converged)


def test_converged_multiscale_equals_converged_online():
    """With tol, both backends go on at the target temperature until no potential moves by
    more than tol: they reach the same divergence (to 1e-3, the issue's accuracy target), the
    multiscale one on its truncated kernels. The clouds are two samples of the same blobs:
    where the blobs' masses differ, mass crosses between far blobs and plain Sinkhorn needs
    thousands of iterations at this blur, whatever the backend."""
    rng = np.random.default_rng(4)
    centers = rng.uniform(0.1, 0.9, size=(6, D))
    labels = rng.integers(0, 6, N)
    x = centers[labels] + 0.04 * rng.normal(size=(N, D))
    y = centers[labels] + 0.04 * rng.normal(size=(N, D)) + 0.03
    m = measures(None, x, None, y)
    common = dict(p=2, blur=SETTINGS["blur"], diameter=SETTINGS["diameter"], scaling=0.5,
                  tol=1e-5, max_extra_iter=500)
    online, online_info = run("sinkhorn", m, SinkhornParams(**common, backend="online"))
    ms, ms_info = run("sinkhorn", m, SinkhornParams(
        **common, backend="multiscale", cluster_scale=SETTINGS["cluster_scale"], truncate=5))
    schedule_only, _ = run("sinkhorn", m, SinkhornParams(
        **{**common, "tol": None}, backend="multiscale", cluster_scale=SETTINGS["cluster_scale"]))
    assert bool(online_info.converged) and bool(ms_info.converged), (online_info, ms_info)
    assert int(ms_info.iterations) > 10, ms_info  # the loop ran past the schedule's 10 steps
    assert abs(float(ms) - float(online)) <= 1e-3 * abs(float(online)), (ms, online)
    # ... and it moved the value: the schedule alone stops further from the converged one.
    assert abs(float(schedule_only) - float(online)) > abs(float(ms) - float(online))


def test_gradient_equals_geomloss_multiscale(geomloss_multiscale):
    x, y = clouds(3)
    want_value, want_grad = geomloss_multiscale(x, y, None, grad=True)
    value, grad = jax.value_and_grad(ours(None))(jnp.asarray(x), jnp.asarray(y))
    assert abs(float(value) - want_value) <= 1e-6 * abs(want_value)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5,
                               atol=1e-6 * np.abs(want_grad).max())


def test_batch_dims_solve_each_element_alone():
    x0, y0 = clouds(4)
    x1, y1 = clouds(5)
    batched = ours(5)(jnp.stack([x0, x1]), jnp.stack([y0, y1]))
    assert batched.shape == (2,)
    for k, (x, y) in enumerate(((x0, y0), (x1, y1))):
        assert abs(float(batched[k]) - float(ours(5)(x, y))) <= 1e-9 * abs(float(batched[k]))


def test_potentials_come_back_in_the_order_of_the_points():
    x, y = clouds(6)
    perm = np.random.default_rng(0).permutation(N)
    F, G = ours(None, potentials=True)(x, y)
    F_perm, G_perm = ours(None, potentials=True)(x[perm], y)
    np.testing.assert_allclose(np.asarray(F_perm), np.asarray(F)[perm], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(G_perm), np.asarray(G), rtol=1e-9, atol=1e-12)


def test_runs_under_jit():
    x, y = clouds(7)
    loss = ours(5)
    assert abs(float(jax.jit(loss)(x, y)) - float(loss(x, y))) <= 1e-9


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(cluster_scale=0.1, diameter=None), ValueError, "needs diameter="),
    (dict(cost="SqDist(X,Y)"), NotImplementedError, "default costs"),
])
def test_unsupported_settings_say_why(kwargs, error, words):
    x, y = clouds(8)
    with pytest.raises(error, match=words):
        SamplesLoss("sinkhorn", backend="multiscale", **{**SETTINGS, **kwargs})(x, y)


def test_hausdorff_is_not_multiscale():
    x, y = clouds(9)
    with pytest.raises(NotImplementedError, match="loss='sinkhorn' only"):
        SamplesLoss("hausdorff", backend="multiscale", blur=0.05)(x, y)


def test_a_cloud_against_itself_keeps_a_symmetric_pattern():
    """OT(a, a)'s two halves of the ranges tuple are computed once: the kept blocks must be
    exactly symmetric, so that the second half is the first (checked against building both
    halves from the keep matrix)."""
    x, _ = clouds(10)
    xs = jnp.asarray(x)[None]
    weights = jnp.full((1, N), 1.0 / N)
    lower = xs.min((0, 1))
    cx = cluster(weights, xs, lower, jnp.asarray(0.2), 10)
    bounds = Bounds.create(2, cx, cx, debias=True)
    f = jnp.asarray(np.random.default_rng(11).normal(size=N) * 0.01)
    eps = 0.02**2
    got = bounds.ranges("xx", cx, cx, f, f, 5.0, eps)
    gap = bounds.gaps["xx"]
    f_max = jax.ops.segment_max(f, cx.labels, gap.shape[-1]).reshape(1, -1)
    keep = f_max[..., :, None] + f_max[..., None, :] - gap > -5.0 * eps
    assert bool(jnp.all(keep == jnp.swapaxes(keep, -1, -2)))
    assert 0 < int(keep.sum()) < keep.size  # some blocks kept, some dropped
    want = truncated_ranges(keep, cx.ranges, cx.ranges)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
