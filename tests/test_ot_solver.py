"""jaxkeops.ot's solver: the epsilon-scaling schedule against GeomLoss's, jit / grad / vmap,
the envelope-theorem gradient (its program and memory do not depend on the number of
iterations, and it matches finite differences at convergence), the convergence check, input
errors, the layering rule (ot/ imports only jaxkeops's public API and jax), and the docstring
examples of every module of the package.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import jaxkeops
import jaxkeops.ot
from jaxkeops.ot import (
    SamplesLoss,
    Schedule,
    epsilon_schedule,
    log_weights,
    max_diameter,
    sinkhorn_divergence,
    sinkhorn_potentials,
)

N, M, D = 12, 9, 3
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def clouds(rng):
    x = jnp.asarray(rng.uniform(size=(N, D)))
    y = jnp.asarray(rng.uniform(size=(M, D)) + 0.3)
    return x, y


@pytest.fixture
def batches(rng):
    x = jnp.asarray(rng.uniform(size=(3, N, D)))
    y = jnp.asarray(rng.uniform(size=(3, M, D)) + 0.3)
    return x, y


# ------------------------------------------------------------------------------------------------
# The epsilon-scaling schedule.
@pytest.mark.parametrize("p, diameter, blur, scaling", [
    (2, 1.7, 0.05, 0.5), (1, 1.7, 0.05, 0.5), (2, 3.0, 0.01, 0.9), (1, 0.5, 0.3, 0.7),
    (2, 0.04, 0.05, 0.5),  # diameter < blur: no intermediate step
    (2, 1.0, 0.25, 0.5),  # log(blur) on the grid of the descent
])
def test_schedule_matches_geomloss(p, diameter, blur, scaling):
    legacy = pytest.importorskip("geomloss._legacy.sinkhorn_divergence")
    expected = legacy.epsilon_schedule(p, diameter, blur, scaling)
    assert epsilon_schedule(p, diameter, blur, scaling) == pytest.approx(expected, rel=1e-14)
    schedule = Schedule.create(p, jnp.asarray(diameter), blur, scaling, jnp.float64)
    assert int(schedule.length) == len(expected)
    values = [float(schedule.eps(k)) for k in range(len(expected) + 3)]
    np.testing.assert_allclose(values, expected + [blur**p] * 3, rtol=1e-13)


def test_schedule_under_jit_with_a_traced_diameter():
    create = jax.jit(lambda d: Schedule.create(2, d, 0.05, 0.5, jnp.float64).length)
    assert [int(create(jnp.asarray(d))) for d in (0.05, 1.0, 10.0)] == [
        len(epsilon_schedule(2, d, 0.05, 0.5)) for d in (0.05, 1.0, 10.0)]


def test_max_diameter_matches_geomloss(batches):
    legacy = pytest.importorskip("geomloss._legacy.sinkhorn_divergence")
    torch = pytest.importorskip("torch")
    x, y = batches
    expected = legacy.max_diameter(torch.tensor(np.asarray(x)).view(-1, D),
                                   torch.tensor(np.asarray(y)).view(-1, D))
    assert float(max_diameter(x, y)) == pytest.approx(expected, rel=1e-14)


def test_log_weights_replace_log_zero():
    out = log_weights(jnp.array([2.0, 0.0, -1.0]))
    np.testing.assert_array_equal(out, [np.log(2.0), -100000.0, -100000.0])
    assert np.isfinite(jax.grad(lambda a: log_weights(a).sum())(jnp.array([2.0, 0.0]))).all()


# ------------------------------------------------------------------------------------------------
# jit, vmap, grad.
def test_jit_matches_eager_with_a_traced_diameter(clouds):
    x, y = clouds
    L = SamplesLoss("sinkhorn")
    assert_close(jax.jit(L)(x, y), L(x, y), "float64", **TOL)
    # A diameter that is an array inside jit: the number of iterations is traced.
    f = jax.jit(lambda x, y, d: sinkhorn_divergence(x, y, diameter=d))
    assert_close(f(x, y, 3.0), sinkhorn_divergence(x, y, diameter=3.0), "float64", **TOL)


def test_vmap_matches_per_problem_calls(batches):
    """vmap estimates the diameter per problem; with a given diameter it equals the batched
    call (whose estimate covers the whole batch)."""
    x, y = batches
    L = SamplesLoss("sinkhorn")
    mapped = jax.vmap(L)(x, y)
    for i in range(3):
        assert_close(mapped[i], L(x[i], y[i]), "float64", **TOL)
    fixed = SamplesLoss("sinkhorn", diameter=2.0)
    assert_close(jax.vmap(fixed)(x, y), fixed(x, y), "float64", **TOL)


def test_vmap_of_grad_matches_per_problem_grads(batches):
    x, y = batches
    L = SamplesLoss("sinkhorn", p=1)
    grads = jax.jit(jax.vmap(jax.grad(L, argnums=(0, 1))))(x, y)
    for i in range(3):
        one = jax.grad(L, argnums=(0, 1))(x[i], y[i])
        for g, o in zip(grads, one):
            assert_close(g[i], o, "float64", **TOL)


def _sub_jaxprs(eqn):
    """The jaxprs inside an equation's parameters (loop bodies, branches, jitted calls)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(item, "jaxpr", item)  # ClosedJaxpr -> Jaxpr
            if hasattr(inner, "eqns"):
                yield inner


def _equation_count(jaxpr) -> int:
    return sum(1 + sum(_equation_count(sub) for sub in _sub_jaxprs(eqn)) for eqn in jaxpr.eqns)


def _primitives(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in _sub_jaxprs(eqn):
            names |= _primitives(sub)
    return names


@pytest.mark.parametrize("debias", [True, False])
def test_gradient_program_does_not_grow_with_the_iterations(clouds, debias):
    """The envelope theorem: the same gradient program for 8 or 75 iterations, and its
    backward pass (the VJP) holds no loop at all."""
    x, y = clouds
    iterations, sizes, temp_bytes = [], [], []
    for scaling in (0.5, 0.95):
        L = SamplesLoss("sinkhorn", scaling=scaling, debias=debias)
        _, info = sinkhorn_divergence(x, y, scaling=scaling, debias=debias, return_info=True)
        iterations.append(int(info.iterations))
        sizes.append(_equation_count(jax.make_jaxpr(jax.grad(L))(x, y).jaxpr))
        compiled = jax.jit(jax.grad(L)).lower(x, y).compile()
        analysis = compiled.memory_analysis()
        temp_bytes.append(None if analysis is None else analysis.temp_size_in_bytes)
        _, backward = jax.vjp(L, x, y)
        assert "while" not in _primitives(jax.make_jaxpr(backward)(1.0).jaxpr)
    assert iterations[1] > 5 * iterations[0]
    assert sizes[0] == sizes[1]
    assert temp_bytes[0] == temp_bytes[1]


def test_gradient_matches_finite_differences_at_convergence(clouds, rng):
    x, y = clouds
    a = jnp.asarray(rng.uniform(0.5, 1.5, N))
    a = a / a.sum()
    L = jax.jit(SamplesLoss("sinkhorn", blur=0.3, tol=1e-13, max_extra_iter=2000))
    b = jnp.full(M, 1 / M)
    grad_x, grad_a = jax.jit(jax.grad(L, argnums=(1, 0)))(a, x, b, y)
    h = 1e-6
    for i, k in [(0, 0), (5, 2)]:
        step = jnp.zeros_like(x).at[i, k].set(h)
        fd = (L(a, x + step, b, y) - L(a, x - step, b, y)) / (2 * h)
        np.testing.assert_allclose(grad_x[i, k], fd, rtol=1e-6, atol=1e-11)
    # Weights: the gradient along a direction that keeps the total mass.
    direction = jnp.zeros(N).at[2].set(1.0).at[7].set(-1.0)
    fd = (L(a + h * direction, x, b, y) - L(a - h * direction, x, b, y)) / (2 * h)
    np.testing.assert_allclose(grad_a @ direction, fd, rtol=1e-6, atol=1e-11)


# ------------------------------------------------------------------------------------------------
# The convergence check.
def test_tolerance_runs_extra_iterations_until_converged(clouds):
    x, y = clouds
    f0, _, plain = sinkhorn_potentials(x, y, blur=0.1, return_info=True)
    f, _, info = sinkhorn_potentials(x, y, blur=0.1, tol=1e-12, return_info=True)
    assert plain.converged is None
    assert int(plain.iterations) == len(epsilon_schedule(2, float(max_diameter(x, y)), 0.1, 0.5))
    assert bool(info.converged) and float(info.error) <= 1e-12
    assert int(info.iterations) > int(plain.iterations)
    assert float(jnp.abs(f - f0).max()) > 1e-9  # the schedule alone had not converged
    # Converged potentials satisfy the Sinkhorn fixed point f = softmin(C, log b + g / eps).
    f_ba, g_ab = sinkhorn_potentials(x, y, blur=0.1, tol=1e-12, debias=False)
    eps = 0.1**2
    C = ((np.asarray(x)[:, None] - np.asarray(y)[None]) ** 2).sum(-1) / 2
    h = np.log(1 / M) + (np.asarray(g_ab)[None] - C) / eps
    softmin = -eps * (h.max(1) + np.log(np.exp(h - h.max(1, keepdims=True)).sum(1)))
    np.testing.assert_allclose(f_ba, softmin, rtol=0, atol=1e-10)


def averaged_iterations_to_converge(x, y, eps, f, g, tol):
    """How many averaged symmetric updates of OT(a, b) (GeomLoss's scheme) from (f, g), at a
    fixed eps, until no potential moves by more than tol: numpy float64."""
    x, y = np.asarray(x), np.asarray(y)
    C = ((x[:, None] - y[None]) ** 2).sum(-1) / 2

    def softmin(C, log_w, h):
        z = log_w + (h[None, :] - C) / eps
        top = z.max(1)
        return -eps * (top + np.log(np.exp(z - top[:, None]).sum(1)))

    f, g = np.asarray(f, dtype=float), np.asarray(g, dtype=float)
    for k in range(1, 100_000):
        f_new = softmin(C, np.log(1 / M), g)
        g_new = softmin(C.T, np.log(1 / N), f)
        change = max(np.abs(f_new - f).max(), np.abs(g_new - g).max())
        f, g = 0.5 * (f + f_new), 0.5 * (g + g_new)
        if change <= tol:
            return k
    raise AssertionError("the averaged updates did not converge")


def test_convergence_loop_alternates_and_needs_fewer_iterations_than_averaging(clouds):
    """Regression: the convergence check kept GeomLoss's averaged updates, which took about
    2.5 times as many iterations to reach a given marginal error as plain alternating ones."""
    x, y = clouds
    blur, tol = 0.05, 1e-9
    schedule_f, schedule_g, plain = sinkhorn_potentials(x, y, blur=blur, debias=False,
                                                        return_info=True)
    f, g, info = sinkhorn_potentials(x, y, blur=blur, tol=tol, debias=False, return_info=True)
    assert bool(info.converged)
    extra = int(info.iterations) - int(plain.iterations)
    averaged = averaged_iterations_to_converge(x, y, blur**2, schedule_f, schedule_g, tol)
    assert extra < 0.7 * averaged, (extra, averaged)
    # The same fixed point: the plan's marginals are the uniform weights.
    C = ((np.asarray(x)[:, None] - np.asarray(y)[None]) ** 2).sum(-1) / 2
    plan = np.exp((np.asarray(f)[:, None] + np.asarray(g)[None] - C) / blur**2) / (N * M)
    np.testing.assert_allclose(plan.sum(1), 1 / N, rtol=1e-6)
    np.testing.assert_allclose(plan.sum(0), 1 / M, rtol=1e-6)


def test_max_extra_iter_caps_the_iterations(clouds):
    x, y = clouds
    _, _, base = sinkhorn_potentials(x, y, blur=0.01, return_info=True)
    _, _, info = sinkhorn_potentials(x, y, blur=0.01, tol=1e-15, max_extra_iter=3,
                                     return_info=True)
    assert int(info.iterations) == int(base.iterations) + 3
    assert not bool(info.converged)


def test_convergence_check_under_vmap_and_jit(batches):
    x, y = batches
    f = jax.jit(jax.vmap(lambda x, y: sinkhorn_divergence(x, y, blur=0.3, tol=1e-10,
                                                          return_info=True)))
    values, info = f(x, y)
    assert info.converged.shape == (3,) and bool(info.converged.all())
    for i in range(3):
        one = sinkhorn_divergence(x[i], y[i], blur=0.3, tol=1e-10)
        assert_close(values[i], one, "float64", rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Errors.
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(loss="wasserstein"), ValueError, "loss must be one of"),
    (dict(p=3), ValueError, "p must be 1 or 2"),
    (dict(blur=0.0), ValueError, "blur must be positive"),
    (dict(blur=jnp.asarray(0.1)), TypeError, "blur must be a Python number"),
    (dict(scaling=1.0), ValueError, "scaling must be a number in (0, 1)"),
    (dict(reach=-1.0), ValueError, "reach must be positive"),
    (dict(backend="GPU"), ValueError, "backend must be one of"),
    (dict(backend="multiscale", truncate=-1.0), ValueError, "truncate must be positive"),
    (dict(loss="gaussian", cost="SqDist(X,Y)"), ValueError, "pass kernel="),
    (dict(loss="sinkhorn", kernel=lambda x, y: x), ValueError, "pass cost="),
    (dict(loss="hausdorff", reach=1.0), NotImplementedError, "balanced"),
    (dict(cost=3), TypeError, "cost must be None"),
    (dict(tol=0.0), ValueError, "tol must be positive"),
])
def test_bad_settings_raise_clear_errors(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        SamplesLoss(**kwargs)


def test_bad_inputs_name_the_argument_and_shapes(clouds):
    x, y = clouds
    L = SamplesLoss()
    with pytest.raises(ValueError, match=r"'x' \(12, 3\) and 'y' \(9, 2\).*last dimension"):
        L(x, y[:, :2])
    with pytest.raises(ValueError, match=r"weights 'a' of shape \(11,\).*'x' of shape \(12, 3\)"):
        L(jnp.ones(11), x, jnp.ones(M) / M, y)
    with pytest.raises(ValueError, match="same batch dimensions"):
        L(x[None], jnp.stack([y, y]))
    with pytest.raises(TypeError, match="points 'y' must be floating point"):
        L(x, jnp.ones((M, D), jnp.int32))
    with pytest.raises(ValueError, match="two .* or four"):
        L(x)
    with pytest.raises(NotImplementedError, match="multiscale"):
        L(None, None, x, None, None, y)
    with pytest.raises(TypeError, match="scalar LazyTensor"):
        SamplesLoss(cost=lambda x_i, y_j: x_i - y_j)(x, y)


# ------------------------------------------------------------------------------------------------
# Layering: ot/ sits on jaxkeops's public API and jax only.
OT_DIR = pathlib.Path(jaxkeops.ot.__file__).parent
ALLOWED_ROOTS = {"jax", "jaxlib", "numpy", "__future__"}


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            yield node, node.module or "", node.level


def test_ot_imports_only_the_public_api_and_jax():
    files = sorted(OT_DIR.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for node, module, level in _imports(path):
            where = f"{path.name}:{node.lineno}"
            if level:  # relative: only inside jaxkeops.ot
                assert level == 1, f"{where} imports outside jaxkeops.ot ({'.' * level}{module})"
                continue
            root = module.split(".")[0]
            if root == "jaxkeops":
                assert module == "jaxkeops", f"{where} imports the internal module {module}"
                names = [a.name for a in node.names]
                assert set(names) <= set(jaxkeops.__all__), f"{where} imports {names}"
            else:
                assert root in ALLOWED_ROOTS or root in sys.stdlib_module_names, \
                    f"{where} imports {module}"
            assert "_src" not in module, f"{where} imports JAX internals ({module})"


def test_importing_ot_adds_no_internal_module_beyond_the_public_api():
    """In a fresh process: what `import jaxkeops.ot` loads beyond `import jaxkeops`."""
    code = ("import sys, jaxkeops; before = set(sys.modules); import jaxkeops.ot; "
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('jaxkeops')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    added = ast.literal_eval(out)  # a printed list of module names
    assert added and all(m.startswith("jaxkeops.ot") for m in added), added
