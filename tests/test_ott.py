"""OTT-JAX's own solvers on jaxkeops.ott.PointCloud, against the same solvers on OTT's dense
PointCloud with the same data: Sinkhorn with fixed iterations and to convergence (log and kernel
modes), unbalanced, Anderson acceleration, sinkhorn_divergence, gradients by implicit
differentiation and by unrolling, vmap and jit; and, at n = 1000, that a traced solve (and its
gradient) holds no n x m value while OTT's dense one does.

The issue asks for agreement within 1e-5 at n = 1000 (the `slow` tests); the others use a few
hundred points. Everything runs in float64 (tests/conftest.py turns x64 on), except one float32
check.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest
from conftest import assert_close

pytest.importorskip("ott")

from ott.geometry import costs, pointcloud  # noqa: E402
from ott.solvers import linear  # noqa: E402
from ott.solvers.linear import acceleration  # noqa: E402
from ott.tools import sinkhorn_divergence as ott_divergence  # noqa: E402

from jaxkeops.ott import PointCloud  # noqa: E402

TOL = 1e-5  # the tolerance; deterministic forward values match to rounding (FORWARD)
FORWARD = 1e-9
EPSILON = 0.1
COSTS = {"sqeuclidean": costs.SqEuclidean(), "euclidean": costs.Euclidean()}


def clouds(rng, n: int, m: int, d: int = 3, dtype: str = "float64"):
    """Two point clouds a little apart, and positive weights that each sum to 1."""
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * 0.8 + 0.5
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, m)
    return (jnp.asarray(x, dtype), jnp.asarray(y, dtype), jnp.asarray(a / a.sum(), dtype),
            jnp.asarray(b / b.sum(), dtype))


def both(x, y, **kwargs):
    """(ours, OTT's) geometries with the same arguments."""
    return PointCloud(x, y, **kwargs), pointcloud.PointCloud(x, y, **kwargs)


def assert_same_solution(ours, theirs, rng, tol: float):
    """reg_ot_cost, potentials, marginals and matrix-free applications of the plan."""
    assert_close(ours.reg_ot_cost, theirs.reg_ot_cost, "float64", rtol=tol, atol=tol)
    assert_close(ours.f, theirs.f, "float64", rtol=tol, atol=tol)
    assert_close(ours.g, theirs.g, "float64", rtol=tol, atol=tol)
    for axis in (0, 1):
        assert_close(ours.marginal(axis), theirs.marginal(axis), "float64", rtol=tol, atol=tol)
    n, m = theirs.geom.shape
    for axis, size in ((0, n), (1, m)):
        vectors = jnp.asarray(rng.normal(size=(2, size)))  # signed: the log-domain sign path
        assert_close(ours.apply(vectors, axis=axis), theirs.apply(vectors, axis=axis),
                     "float64", rtol=tol, atol=tol)


@pytest.mark.parametrize("lse_mode", [True, False], ids=["lse", "kernel"])
@pytest.mark.parametrize("cost", list(COSTS))
def test_sinkhorn_fixed_iterations_matches_ott(rng, cost, lse_mode):
    x, y, a, b = clouds(rng, 130, 90)
    ours, theirs = both(x, y, cost_fn=COSTS[cost], epsilon=EPSILON)
    solve = dict(a=a, b=b, lse_mode=lse_mode, min_iterations=40, max_iterations=40)
    out, ref = linear.solve(ours, **solve), linear.solve(theirs, **solve)
    assert_same_solution(out, ref, rng, FORWARD)


@pytest.mark.parametrize("lse_mode", [True, False], ids=["lse", "kernel"])
@pytest.mark.parametrize("cost", list(COSTS))
def test_sinkhorn_to_convergence_matches_ott(rng, cost, lse_mode):
    x, y, a, b = clouds(rng, 130, 90)
    ours, theirs = both(x, y, cost_fn=COSTS[cost], epsilon=EPSILON)
    solve = dict(a=a, b=b, lse_mode=lse_mode, threshold=1e-9, max_iterations=3000)
    out, ref = linear.solve(ours, **solve), linear.solve(theirs, **solve)
    assert bool(out.converged) and bool(ref.converged)
    assert int(out.n_iters) == int(ref.n_iters)
    assert_same_solution(out, ref, rng, TOL)


def test_unbalanced_matches_ott(rng):
    x, y, a, b = clouds(rng, 130, 90)
    ours, theirs = both(x, y, epsilon=EPSILON)
    solve = dict(a=a, b=2.0 * b, tau_a=0.9, tau_b=0.7, threshold=1e-9)
    out, ref = linear.solve(ours, **solve), linear.solve(theirs, **solve)
    assert int(out.n_iters) == int(ref.n_iters)
    assert_same_solution(out, ref, rng, TOL)
    assert_close(out.transport_mass, ref.transport_mass, "float64", rtol=TOL, atol=TOL)


def test_anderson_acceleration_matches_ott(rng):
    x, y, a, b = clouds(rng, 130, 90)
    ours, theirs = both(x, y, epsilon=EPSILON)
    solve = dict(a=a, b=b, threshold=1e-9, anderson=acceleration.AndersonAcceleration(memory=5))
    out, ref = linear.solve(ours, **solve), linear.solve(theirs, **solve)
    plain = linear.solve(ours, a=a, b=b, threshold=1e-9)
    assert int(out.n_iters) == int(ref.n_iters) < int(plain.n_iters)
    assert_same_solution(out, ref, rng, TOL)


@pytest.mark.parametrize("cost", list(COSTS))
def test_sinkhorn_divergence_matches_ott(rng, cost):
    x, y, a, b = clouds(rng, 110, 80)
    kwargs = dict(a=a, b=b, cost_fn=COSTS[cost], epsilon=EPSILON,
                  solve_kwargs=dict(threshold=1e-9))
    value, out = ott_divergence.sinkhorn_divergence(PointCloud, x, y, **kwargs)
    expected, ref = ott_divergence.sinkhorn_divergence(pointcloud.PointCloud, x, y, **kwargs)
    assert all(isinstance(g, PointCloud) for g in out.geoms)
    assert_close(value, expected, "float64", rtol=TOL, atol=TOL)
    for pair, ref_pair in zip(out.potentials, ref.potentials):
        for potential, ref_potential in zip(pair, ref_pair):
            assert_close(potential, ref_potential, "float64", rtol=TOL, atol=TOL)


def _gradients(cls, x, y, a, b, implicit: bool):
    """d/dx and d/da of reg_ot_cost, and d/dx of a loss that reads the potentials (which
    exercises the implicit linear solve or the unrolled loop, not only Danskin's theorem)."""
    solve = dict(b=b, threshold=1e-10, max_iterations=3000)
    if not implicit:
        solve["implicit_diff"] = None

    def cost(x, a):
        return linear.solve(cls(x, y, epsilon=EPSILON), a=a, **solve).reg_ot_cost

    def potentials_loss(x):
        out = linear.solve(cls(x, y, epsilon=EPSILON), a=a, **solve)
        return jnp.sum(out.f * jnp.linspace(-1.0, 1.0, out.f.size)) + jnp.sum(out.g ** 2)

    return (*jax.jit(jax.grad(cost, argnums=(0, 1)))(x, a), jax.jit(jax.grad(potentials_loss))(x))


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "unrolled"])
def test_gradients_match_ott(rng, implicit):
    x, y, a, b = clouds(rng, 70, 50)
    got = _gradients(PointCloud, x, y, a, b, implicit)
    expected = _gradients(pointcloud.PointCloud, x, y, a, b, implicit)
    for g, e in zip(got, expected):
        assert float(jnp.max(jnp.abs(e))) > 1e-3  # a real gradient, not zeros on both sides
        assert_close(g, e, "float64", rtol=TOL, atol=TOL)


def test_gradient_of_divergence_with_euclidean_cost_is_finite_and_matches_ott(rng):
    """The x-x problem puts |x_i - x_i| = 0 on the diagonal: OTT's norm has a zero gradient
    there, and so must ours (no NaN)."""
    x, y, a, b = clouds(rng, 60, 40)

    def divergence(cls, x):
        return ott_divergence.sinkhorn_divergence(cls, x, y, a=a, b=b, cost_fn=costs.Euclidean(),
                                                  epsilon=EPSILON)[0]

    got = jax.grad(lambda x: divergence(PointCloud, x))(x)
    expected = jax.grad(lambda x: divergence(pointcloud.PointCloud, x))(x)
    assert bool(jnp.all(jnp.isfinite(got)))
    assert_close(got, expected, "float64", rtol=TOL, atol=TOL)


def test_vmap_and_jit_over_a_batch_of_point_clouds(rng):
    x, y, _, _ = clouds(rng, 80, 60)
    batch = jnp.stack([x, 1.3 * x - 0.2, x[::-1] + 0.5])

    def solve(cls):
        return jax.jit(jax.vmap(lambda x: linear.solve(cls(x, y, epsilon=EPSILON),
                                                       threshold=1e-9).reg_ot_cost))(batch)

    got, expected = solve(PointCloud), solve(pointcloud.PointCloud)
    one_by_one = [linear.solve(PointCloud(c, y, epsilon=EPSILON), threshold=1e-9).reg_ot_cost
                  for c in batch]
    assert_close(got, expected, "float64", rtol=TOL, atol=TOL)
    assert_close(got, jnp.stack(one_by_one), "float64", rtol=TOL, atol=TOL)


def test_geometry_passes_through_jit_as_an_argument(rng):
    x, y, a, b = clouds(rng, 80, 60)
    ours, theirs = both(x, y, epsilon=EPSILON, scale_cost="mean")
    solve = jax.jit(lambda geom, a, b: linear.solve(geom, a=a, b=b, threshold=1e-9).reg_ot_cost)
    assert_close(solve(ours, a, b), solve(theirs, a, b), "float64", rtol=TOL, atol=TOL)


@pytest.mark.parametrize("scale_cost", ["mean", "max_cost", "median", "max_norm", "max_bound",
                                        2.5])
def test_sinkhorn_with_scale_cost_matches_ott(rng, scale_cost):
    x, y, a, b = clouds(rng, 90, 70)
    ours, theirs = both(x, y, epsilon=EPSILON, scale_cost=scale_cost)
    assert_close(ours.inv_scale_cost, theirs.inv_scale_cost, "float64", rtol=1e-12)
    out = linear.solve(ours, a=a, b=b, threshold=1e-9)
    ref = linear.solve(theirs, a=a, b=b, threshold=1e-9)
    assert_same_solution(out, ref, rng, TOL)


@pytest.mark.parametrize("scale_cost", ["mean", "max_cost", "median"])
def test_euclidean_scale_cost_and_its_gradient_match_ott(rng, scale_cost):
    """The scale is a statistic of all costs: its gradient flows back to x as in OTT."""
    x, y, a, b = clouds(rng, 41, 30)  # 41 x 30 pairs: an even count, median of two values

    def cost(cls, x):
        geom = cls(x, y, cost_fn=costs.Euclidean(), epsilon=EPSILON, scale_cost=scale_cost)
        return linear.solve(geom, a=a, b=b, threshold=1e-10).reg_ot_cost

    assert_close(cost(PointCloud, x), cost(pointcloud.PointCloud, x), "float64", rtol=TOL,
                 atol=TOL)
    assert_close(jax.grad(lambda x: cost(PointCloud, x))(x),
                 jax.grad(lambda x: cost(pointcloud.PointCloud, x))(x), "float64", rtol=TOL,
                 atol=TOL)


@pytest.mark.parametrize("epsilon, relative", [(None, None), (0.2, "mean"), (None, "std")])
def test_default_and_relative_epsilon_match_ott(rng, epsilon, relative):
    x, y, a, b = clouds(rng, 90, 70)
    ours, theirs = both(x, y, epsilon=epsilon, relative_epsilon=relative)
    assert_close(ours.epsilon, theirs.epsilon, "float64", rtol=1e-12)
    out = linear.solve(ours, a=a, b=b, threshold=1e-9)
    ref = linear.solve(theirs, a=a, b=b, threshold=1e-9)
    assert_close(out.reg_ot_cost, ref.reg_ot_cost, "float64", rtol=TOL, atol=TOL)


def test_other_costs_match_ott(rng):
    x, y, a, b = clouds(rng, 90, 70)
    for cost_fn in (costs.NegDotProduct(), costs.Cosine()):
        ours, theirs = both(x, y, cost_fn=cost_fn, epsilon=0.05)
        out = linear.solve(ours, a=a, b=b, threshold=1e-9)
        ref = linear.solve(theirs, a=a, b=b, threshold=1e-9)
        assert_same_solution(out, ref, rng, TOL)


def test_float32_matches_ott(rng):
    x, y, a, b = clouds(rng, 130, 90, dtype="float32")
    ours, theirs = both(x, y, epsilon=EPSILON)
    out = linear.solve(ours, a=a, b=b, min_iterations=50, max_iterations=50)
    ref = linear.solve(theirs, a=a, b=b, min_iterations=50, max_iterations=50)
    assert out.f.dtype == jnp.float32
    assert_close(out.reg_ot_cost, ref.reg_ot_cost, "float32", rtol=1e-4, atol=1e-5)
    assert_close(out.f, ref.f, "float32", rtol=1e-4, atol=1e-5)


def test_transport_cost_is_ott_primal_cost(rng):
    """<P, C> without the plan; OTT's primal_cost builds it for the Euclidean cost."""
    x, y, a, b = clouds(rng, 90, 70)
    for cost_fn in COSTS.values():
        ours, theirs = both(x, y, cost_fn=cost_fn, epsilon=EPSILON)
        ref = linear.solve(theirs, a=a, b=b, threshold=1e-9)
        assert_close(ours.transport_cost(ref.f, ref.g), ref.primal_cost, "float64",
                     rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# No n x m value on any solver path.
def _value_shapes(jaxpr):
    """Shapes of every value of a jaxpr and of the jaxprs nested in its equations."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for var in (*jaxpr.invars, *jaxpr.constvars):
        yield var.aval.shape
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield var.aval.shape
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from _value_shapes(sub)


def _largest_value(fn, *args) -> int:
    return max(math.prod(shape) for shape in _value_shapes(jax.make_jaxpr(fn)(*args)))


SOLVER_PATHS = {
    "fixed iterations": lambda cls, x, y: linear.solve(
        cls(x, y, epsilon=EPSILON), min_iterations=20, max_iterations=20).reg_ot_cost,
    "convergence, kernel mode, Euclidean": lambda cls, x, y: linear.solve(
        cls(x, y, cost_fn=costs.Euclidean(), epsilon=EPSILON), lse_mode=False).reg_ot_cost,
    "unbalanced, Anderson, mean scale": lambda cls, x, y: linear.solve(
        cls(x, y, epsilon=EPSILON, scale_cost="mean"), tau_a=0.9,
        anderson=acceleration.AndersonAcceleration()).reg_ot_cost,
    "default epsilon, applied plan": lambda cls, x, y: jnp.sum(linear.solve(
        cls(x, y)).apply(jnp.ones((3, y.shape[0])), axis=1)),
    "sinkhorn_divergence": lambda cls, x, y: ott_divergence.sinkhorn_divergence(
        cls, x, y, epsilon=EPSILON)[0],
}


@pytest.mark.parametrize("path", list(SOLVER_PATHS))
def test_solvers_never_build_an_n_by_m_value(path):
    """The traced program of a jitted solve (and of its gradient, implicit differentiation and
    unrolled) at n = 1000, m = 999 holds no value of n x m elements; OTT's dense PointCloud
    does (so this check can fail)."""
    n, m = 1000, 999
    x, y = jnp.ones((n, 3)), jnp.ones((m, 3))
    fn = SOLVER_PATHS[path]
    small = 20 * (n + m)  # potentials, points, Anderson's history: O(n + m) values
    for transform in (jax.jit, jax.grad):
        assert _largest_value(transform(lambda x, y: fn(PointCloud, x, y)), x, y) < small
        assert _largest_value(transform(lambda x, y: fn(pointcloud.PointCloud, x, y)),
                              x, y) >= n * min(n, m)
    unrolled = lambda x, y: linear.solve(PointCloud(x, y, epsilon=EPSILON), implicit_diff=None,
                                         max_iterations=30).reg_ot_cost
    assert _largest_value(jax.grad(unrolled), x, y) < small


def test_solvers_never_call_the_materialising_properties(rng, monkeypatch):
    x, y, a, b = clouds(rng, 60, 50)

    def refuse(self):
        raise AssertionError("a solver built the n x m matrix")

    for name in ("cost_matrix", "kernel_matrix", "_unscaled_cost_matrix"):
        monkeypatch.setattr(PointCloud, name, property(refuse))
    geom = PointCloud(x, y, scale_cost="median")
    out = linear.solve(geom, a=a, b=b, anderson=acceleration.AndersonAcceleration())
    jax.grad(lambda x: linear.solve(PointCloud(x, y, epsilon=EPSILON), a=a, b=b).reg_ot_cost)(x)
    ott_divergence.sinkhorn_divergence(PointCloud, x, y, epsilon=EPSILON)
    assert out.primal_cost.shape == () and geom.median_cost_matrix.shape == ()
    with pytest.raises(AssertionError, match="built the n x m"):
        _ = out.matrix


# ---------------------------------------------------------------------------------------------
# n = 1000, the size.
@pytest.mark.slow
def test_matches_ott_at_n_1000(rng):
    x, y, a, b = clouds(rng, 1000, 1000)
    ours, theirs = both(x, y, epsilon=EPSILON)
    for solve in (dict(min_iterations=50, max_iterations=50), dict(threshold=1e-8),
                  dict(threshold=1e-8, lse_mode=False), dict(tau_a=0.8, tau_b=0.9),
                  dict(anderson=acceleration.AndersonAcceleration(memory=4), threshold=1e-8)):
        out = linear.solve(ours, a=a, b=b, **solve)
        ref = linear.solve(theirs, a=a, b=b, **solve)
        assert_same_solution(out, ref, rng, TOL)
    value, _ = ott_divergence.sinkhorn_divergence(PointCloud, x, y, a=a, b=b, epsilon=EPSILON)
    expected, _ = ott_divergence.sinkhorn_divergence(pointcloud.PointCloud, x, y, a=a, b=b,
                                                     epsilon=EPSILON)
    assert_close(value, expected, "float64", rtol=TOL, atol=TOL)


@pytest.mark.slow
def test_implicit_gradients_match_ott_at_n_1000(rng):
    """OTT's default (implicit) gradients at N = 1000; unrolled ones are checked at a small N
    by test_gradients_match_ott (at 1000 they took 50 s of CI time for the same code path)."""
    x, y, a, b = clouds(rng, 1000, 1000)
    got = _gradients(PointCloud, x, y, a, b, True)
    expected = _gradients(pointcloud.PointCloud, x, y, a, b, True)
    for g, e in zip(got, expected):
        assert_close(g, e, "float64", rtol=TOL, atol=TOL)
