"""jaxkeops.ott.PointCloud as a geometry: its kernel, log-kernel and cost applications and its
cost statistics against OTT's PointCloud and dense float64 matrices; the pytree methods; the
lazy import of OTT; bad input; the docstring examples."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

pytest.importorskip("ott")

from ott.geometry import costs, epsilon_scheduler, geometry, pointcloud  # noqa: E402

from jaxkeops.ott import PointCloud  # noqa: E402

N, M = 37, 29
ALL_COSTS = [costs.SqEuclidean(), costs.Euclidean(), costs.NegDotProduct(), costs.Cosine()]


@pytest.fixture
def points(rng):
    return jnp.asarray(rng.normal(size=(N, 3))), jnp.asarray(rng.normal(size=(M, 3)) + 0.3)


def dense_cost(x, y, cost_fn) -> np.ndarray:
    """The cost matrix in float64 numpy, written from the costs' definitions."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    diff = x[:, None, :] - y[None, :, :]
    if isinstance(cost_fn, costs.SqEuclidean):
        return (diff ** 2).sum(-1)
    if isinstance(cost_fn, costs.Euclidean):
        return np.sqrt((diff ** 2).sum(-1))
    if isinstance(cost_fn, costs.NegDotProduct):
        return -x @ y.T
    norms = np.linalg.norm(x, axis=1)[:, None] * np.linalg.norm(y, axis=1)[None, :]
    return 1.0 - (x @ y.T) / (norms + cost_fn._ridge)


def test_import_jaxkeops_does_not_import_ott():
    code = "import sys, jaxkeops; assert 'ott' not in sys.modules, 'ott was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


def test_missing_ott_raises_an_import_error_that_says_what_to_install():
    code = ("import sys; sys.modules['ott'] = None\n"
            "try:\n    import jaxkeops.ott\nexcept ImportError as e:\n    print(e)\n"
            "else:\n    raise SystemExit('no ImportError')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert 'pip install "jaxkeops[ott]"' in done.stdout


def test_is_an_ott_geometry_and_point_cloud(points):
    x, y = points
    geom = PointCloud(x, y, epsilon=0.1)
    assert isinstance(geom, geometry.Geometry) and isinstance(geom, pointcloud.PointCloud)
    assert geom.shape == (N, M) and geom.dtype == x.dtype and geom.is_online
    assert geom.can_LRC and geom.is_squared_euclidean
    assert PointCloud(x).shape == (N, N) and PointCloud(x).y is PointCloud(x).x


@pytest.mark.parametrize("cost_fn", ALL_COSTS, ids=lambda c: type(c).__name__)
def test_cost_matrix_and_applications_match_dense_products(points, rng, cost_fn):
    x, y = points
    geom = PointCloud(x, y, cost_fn=cost_fn, epsilon=0.3)
    cost = dense_cost(x, y, cost_fn)
    assert_close(geom.cost_matrix, cost, "float64")
    assert_close(geom.kernel_matrix, np.exp(-cost / 0.3), "float64")
    vec_n, vec_m = rng.normal(size=N), rng.normal(size=(M, 2))
    assert_close(geom.apply_cost(jnp.asarray(vec_n), axis=0), cost.T @ vec_n, "float64")
    assert_close(geom.apply_cost(jnp.asarray(vec_m), axis=1), cost @ vec_m, "float64")
    assert_close(geom.apply_square_cost(jnp.asarray(vec_n)), (cost ** 2).T @ vec_n, "float64")
    assert_close(geom.apply_kernel(jnp.asarray(vec_m), axis=1), np.exp(-cost / 0.3) @ vec_m,
                 "float64")
    assert_close(geom.apply_kernel(jnp.asarray(vec_n), eps=0.7, axis=0),
                 np.exp(-cost / 0.7).T @ vec_n, "float64")


@pytest.mark.parametrize("axis", [0, 1])
def test_apply_lse_kernel_matches_ott_with_signs_and_infinite_potentials(points, rng, axis):
    """The implicit-differentiation path: signed vectors, and -inf potentials (zero weights)
    that OTT propagates through the log-sum-exp."""
    x, y = points
    ours, theirs = PointCloud(x, y, epsilon=0.2), pointcloud.PointCloud(x, y, epsilon=0.2)
    f = jnp.asarray(rng.normal(size=N)).at[3].set(-jnp.inf)
    g = jnp.asarray(rng.normal(size=M)).at[5].set(-jnp.inf)
    size = N if axis == 0 else M
    signed = jnp.asarray(rng.normal(size=size))
    for vec in (None, signed, jnp.abs(signed), -jnp.abs(signed)):
        value, sign = ours.apply_lse_kernel(f, g, 0.2, vec=vec, axis=axis)
        ref_value, ref_sign = theirs.apply_lse_kernel(f, g, 0.2, vec=vec, axis=axis)
        assert_close(value, ref_value, "float64")
        assert_close(sign, jnp.broadcast_to(ref_sign, sign.shape), "float64")
    assert bool(jnp.isneginf(value[5 if axis == 0 else 3]))
    for axis_ in (0, 1):
        assert_close(ours.marginal_from_potentials(f, g, axis_),
                     theirs.marginal_from_potentials(f, g, axis_), "float64")
    vectors = jnp.asarray(rng.normal(size=(3, size)))
    assert_close(ours.apply_transport_from_potentials(f, g, vectors, axis=axis),
                 theirs.apply_transport_from_potentials(f, g, vectors, axis=axis), "float64")


@pytest.mark.parametrize("cost_fn", ALL_COSTS, ids=lambda c: type(c).__name__)
def test_cost_statistics_match_a_dense_ott_geometry(points, cost_fn):
    x, y = points
    ours = PointCloud(x, y, cost_fn=cost_fn, scale_cost=1.7)
    dense = geometry.Geometry(cost_matrix=dense_cost(x, y, cost_fn), scale_cost=1.7)
    for name in ("mean_cost_matrix", "std_cost_matrix", "median_cost_matrix"):
        assert_close(getattr(ours, name), getattr(dense, name), "float64")
    assert_close(ours.epsilon, dense.epsilon, "float64")  # 0.05 std, OTT's default


@pytest.mark.parametrize("shape", [(12, 10), (11, 9), (1, 7)], ids=str)
def test_median_is_exact_for_even_odd_and_repeated_costs(rng, shape):
    x = jnp.asarray(rng.integers(0, 3, size=(shape[0], 2)).astype(np.float64))
    y = jnp.asarray(rng.integers(0, 3, size=(shape[1], 2)).astype(np.float64))
    for data in ((x, y), (x - 5.0, y)):  # many ties; then all costs large
        expected = np.median(dense_cost(*data, costs.SqEuclidean()))
        assert float(1 / PointCloud(*data, scale_cost="median").inv_scale_cost) == expected
        assert float(PointCloud(*data).median_cost_matrix) == expected
    signed = PointCloud(x - 1.0, y, cost_fn=costs.NegDotProduct(), scale_cost="median")
    assert float(1 / signed.inv_scale_cost) == np.median(-(np.asarray(x) - 1.0) @ np.asarray(y).T)


def test_float32_median_and_mean(rng):
    x = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(33, 3)), jnp.float32)
    for scale in ("median", "mean", "max_cost"):
        ours = PointCloud(x, y, scale_cost=scale)
        theirs = pointcloud.PointCloud(x, y, scale_cost=scale)
        assert ours.inv_scale_cost.dtype == jnp.float32
        assert_close(ours.inv_scale_cost, theirs.inv_scale_cost, "float32")


def test_pytree_round_trip_keeps_the_statistics_without_recomputing_them(points, monkeypatch):
    x, y = points
    geom = PointCloud(x, y, cost_fn=costs.Euclidean(), scale_cost="mean",
                      relative_epsilon="std", epsilon=0.5)
    children, aux = geom.tree_flatten()
    leaves, treedef = jax.tree.flatten(geom)

    def refuse(*args, **kwargs):
        raise AssertionError("a statistic over all pairs was recomputed")

    monkeypatch.setattr(PointCloud, "_unscaled_statistic", refuse)
    monkeypatch.setattr(geometry.Geometry, "std_cost_matrix", property(refuse))
    for rebuilt in (PointCloud.tree_unflatten(aux, children), jax.tree.unflatten(treedef, leaves),
                    jax.tree.map(lambda v: v, geom)):
        assert type(rebuilt) is PointCloud and rebuilt.shape == geom.shape
        assert type(rebuilt.cost_fn) is costs.Euclidean
        assert_close(rebuilt.inv_scale_cost, geom.inv_scale_cost, "float64")
        assert_close(rebuilt.epsilon, geom.epsilon, "float64")
    shapes = jax.jit(lambda g: (g.inv_scale_cost, g.epsilon, g.x))(geom)
    assert_close(shapes[1], geom.epsilon, "float64")
    doubled = jax.tree.map(lambda v: 2 * v, PointCloud(x, y, epsilon=0.1))
    assert_close(doubled.x, 2 * x, "float64")
    assert float(doubled.epsilon) == pytest.approx(0.2)


def test_subset_set_scale_cost_and_copy_epsilon_match_ott(points):
    x, y = points
    kwargs = dict(cost_fn=costs.Euclidean(), scale_cost="mean")
    ours, theirs = PointCloud(x, y, **kwargs), pointcloud.PointCloud(x, y, **kwargs)
    rows, cols = jnp.arange(0, N, 2), jnp.asarray([1, 4, 7])
    sub, ref_sub = ours.subset(rows, cols), theirs.subset(rows, cols)
    assert sub.shape == ref_sub.shape == (rows.size, 3)
    assert_close(sub.inv_scale_cost, ref_sub.inv_scale_cost, "float64")
    assert_close(sub.epsilon, ref_sub.epsilon, "float64")
    rescaled, ref_rescaled = ours.set_scale_cost("max_cost"), theirs.set_scale_cost("max_cost")
    assert_close(rescaled.inv_scale_cost, ref_rescaled.inv_scale_cost, "float64")
    assert ours.set_scale_cost("mean") is ours
    copied = sub.copy_epsilon(PointCloud(x, y, epsilon=0.123))
    assert isinstance(copied.epsilon_scheduler, epsilon_scheduler.Epsilon)
    assert float(copied.epsilon) == pytest.approx(0.123)


def test_low_rank_factorisation_with_median_scale(points):
    """OTT's primal_cost goes through to_LRCGeometry, whose own geometry cannot compute a
    median: ours hands it the number."""
    x, y = points
    geom = PointCloud(x, y, scale_cost="median", epsilon=0.1)
    low_rank = geom.to_LRCGeometry()
    assert_close(low_rank.cost_matrix, geom.cost_matrix, "float64", atol=1e-10)


def test_batch_size_is_accepted_and_ignored(points):
    x, y = points
    assert_close(PointCloud(x, y, batch_size=8, epsilon=0.1).apply_kernel(jnp.ones(M), axis=1),
                 PointCloud(x, y, epsilon=0.1).apply_kernel(jnp.ones(M), axis=1), "float64")


def test_bad_input_raises_clear_errors(points):
    x, y = points
    with pytest.raises(NotImplementedError, match="SqEuclidean") as info:
        PointCloud(x, y, cost_fn=costs.PNormP(1.5))
    assert "PNormP" in str(info.value) and "Euclidean" in str(info.value)
    with pytest.raises(ValueError, match=r"x must have shape \(points, dim\), got \(37,\)"):
        PointCloud(x[:, 0], y)
    with pytest.raises(ValueError, match=r"x \(37, 3\) and y \(29, 2\)"):
        PointCloud(x, y[:, :2])
    with pytest.raises(TypeError, match="floating-point"):
        PointCloud(jnp.ones((3, 2), jnp.int32))
    with pytest.raises(ValueError, match="'std' is not a scaling of OTT's PointCloud"):
        PointCloud(x, y, scale_cost="std")
    with pytest.raises(ValueError, match="relative_epsilon"):
        PointCloud(x, y, relative_epsilon="max")
    with pytest.raises(ValueError, match="needs a cost with a norm"):
        PointCloud(x, y, cost_fn=costs.Euclidean(), scale_cost="max_norm")
    geom = PointCloud(x, y, epsilon=0.1)
    with pytest.raises(NotImplementedError, match="failed on a jaxkeops LazyTensor"):
        geom.apply_cost(jnp.ones(N), fn=jnp.square)
    with pytest.raises(ValueError, match=r"with axis=1 the vector must have 29 rows"):
        geom.apply_kernel(jnp.ones(N), axis=1)
