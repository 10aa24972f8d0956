"""LazyTensor.solve: (alpha I + K) a = b by conjugate gradient, against dense float64 solves,
finite differences, and per-element solves for batches, jit and vmap."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkeops
import jaxkeops.lazy.conjugate_gradient as cg_module
import jaxkeops.lazy.solve as solve_module
from jaxkeops import LazyTensor, Pm, Vi, Vj
from jaxkeops.lazy.solve import CGInfo, ConvergenceError, ConvergenceWarning, solve

M, D, E = 60, 3, 2
TIGHT = 1e-12  # eps for solves compared with dense ones: far below the float64 tolerances used


def gaussian(x, g):
    """exp(-g |x_i - x_j|^2) as a LazyTensor; g a scalar, (*batch, 1), or (E,) per column."""
    return (-Pm(jnp.asarray(g, x.dtype)) * ((Vi(x) - Vj(x)) ** 2).sum(-1)).exp()


def dense_gaussian(x, g):
    """(..., M, M) float64 numpy Gaussian kernel matrix with bandwidth parameter g."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    sq = ((x[..., :, None, :] - x[..., None, :, :]) ** 2).sum(-1)
    scale = g.reshape(g.shape[:-1] + (1, 1)) if g.ndim else g  # (*batch, 1) -> (*batch, 1, 1)
    return np.exp(-scale * sq)


def dense_solve(x, g, alpha, b):
    K = dense_gaussian(x, g)
    n = K.shape[-1]
    alpha = np.asarray(alpha, np.float64).reshape(np.shape(alpha) + (1, 1))
    return np.linalg.solve(K + alpha * np.eye(n), np.asarray(b, np.float64))


@pytest.fixture
def data(rng):
    x = jnp.asarray(rng.uniform(size=(M, D)))
    b = jnp.asarray(rng.normal(size=(M, E)))
    return x, b


# ------------------------------------------------------------------------------------------------
# Values.
def test_solve_matches_dense_solve(data):
    x, b = data
    a = solve(gaussian(x, 4.0), Vi(b), alpha=0.3, eps=TIGHT)
    np.testing.assert_allclose(a, dense_solve(x, 4.0, 0.3, b), rtol=1e-9, atol=1e-9)
    # A plain array is read as an i-variable, as in pykeops.
    np.testing.assert_allclose(solve(gaussian(x, 4.0), b, alpha=0.3, eps=TIGHT), a, rtol=1e-12)


def test_b_indexed_by_j_reduces_over_i(data):
    x, b = data
    a = solve(gaussian(x, 4.0), Vj(b), alpha=0.3, eps=TIGHT)
    np.testing.assert_allclose(a, dense_solve(x, 4.0, 0.3, b), rtol=1e-9, atol=1e-9)


def test_one_dimensional_b_keeps_its_shape(data):
    x, b = data
    a = solve(gaussian(x, 4.0), b[:, 0], alpha=0.3, eps=TIGHT)
    assert a.shape == (M,)
    np.testing.assert_allclose(a, dense_solve(x, 4.0, 0.3, b)[:, 0], rtol=1e-9, atol=1e-9)


def test_vector_valued_kernel_solves_each_column_with_its_own_kernel(data):
    x, b = data
    g = jnp.array([1.0, 9.0])  # K has dimension E: one bandwidth per column of b
    a = solve(gaussian(x, g), b, alpha=0.2, eps=TIGHT)
    for column in range(E):
        expected = dense_solve(x, float(g[column]), 0.2, b[:, column])
        np.testing.assert_allclose(a[:, column], expected, rtol=1e-9, atol=1e-9)


def test_stopping_rule_is_the_rms_of_the_residual(data):
    """pykeops stops when sum(r^2) < size * eps^2, i.e. RMS(r) < eps, for r = b - (aI + K)a."""
    x, b = data
    K = dense_gaussian(x, 4.0) + 0.01 * np.eye(M)
    loose, loose_info = solve(gaussian(x, 4.0), b, alpha=0.01, eps=1e-3, return_info=True)
    tight, tight_info = solve(gaussian(x, 4.0), b, alpha=0.01, eps=1e-9, return_info=True)
    true_rms = np.sqrt(np.mean((np.asarray(b) - K @ np.asarray(loose)) ** 2))
    assert bool(loose_info.converged) and float(loose_info.residual) < 1e-3
    assert true_rms < 1e-3 * 1.001  # the recursive residual is the true one up to rounding
    assert true_rms > 1e-9  # ... and the loose solve did stop early:
    assert int(loose_info.iterations) < int(tight_info.iterations)
    # A right-hand side already below eps gives a = 0 without any iteration, as in pykeops.
    tiny, tiny_info = solve(gaussian(x, 4.0), 1e-8 * b, alpha=0.01, eps=1e-6, return_info=True)
    assert int(tiny_info.iterations) == 0 and not np.any(np.asarray(tiny))


def test_var_form_solves_for_the_given_variable(data, rng):
    x, b = data
    placeholder = jnp.zeros((M, E))  # its values are never read
    expression = gaussian(x, 4.0) * Vj(placeholder)
    a = solve(expression, Vi(b), var=Vj(placeholder), alpha=0.3, eps=TIGHT)
    np.testing.assert_allclose(a, dense_solve(x, 4.0, 0.3, b), rtol=1e-9, atol=1e-9)
    # A non-trivial linear expression: w_j scales the unknown inside the kernel sum, so the
    # operator is K diag(w); symmetric here because the solve is checked against it densely.
    w = jnp.asarray(rng.uniform(0.5, 2.0, size=(M, 1)))
    scaled = gaussian(x, 4.0) * Vi(w) * Vj(w) * Vj(placeholder)
    a = solve(scaled, b, var=Vj(placeholder), alpha=0.3, eps=TIGHT)
    W = np.asarray(w)[:, 0]
    dense = W[:, None] * dense_gaussian(x, 4.0) * W[None, :] + 0.3 * np.eye(M)
    np.testing.assert_allclose(a, np.linalg.solve(dense, np.asarray(b)), rtol=1e-9, atol=1e-9)


def test_var_form_accepts_a_symbolic_variable(data):
    """pykeops's var= form with a symbolic LazyTensor((index, dim, cat)) as the unknown."""
    x, b = data
    try:
        unknown = LazyTensor((3, E, 1))
    except (TypeError, ValueError):
        pytest.skip("this LazyTensor has no symbolic variables")
    a = solve(gaussian(x, 4.0) * unknown, Vi(b), var=unknown, alpha=0.3, eps=TIGHT)
    np.testing.assert_allclose(a, dense_solve(x, 4.0, 0.3, b), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="symbolic variables"):
        solve(gaussian(x, 4.0) * unknown, Vi(b), alpha=0.3)


def test_eager_solves_reuse_one_program_without_baking_in_values(data, rng):
    """A second eager solve of the same structure reuses the compiled program, and still reads
    its own points, right-hand side and alpha."""
    x, b = data
    solve(gaussian(x, 4.0), b, alpha=0.3, eps=TIGHT)
    cached = len(cg_module._COMPILED_SOLVES)
    x2 = jnp.asarray(rng.uniform(size=(M, D)))
    b2 = jnp.asarray(rng.normal(size=(M, E)))
    a2 = solve(gaussian(x2, 2.0), b2, alpha=0.7, eps=TIGHT)
    assert len(cg_module._COMPILED_SOLVES) == cached
    np.testing.assert_allclose(a2, dense_solve(x2, 2.0, 0.7, b2), rtol=1e-9, atol=1e-9)


def test_call_false_returns_a_deferred_solve(data):
    x, b = data
    deferred = solve(gaussian(x, 4.0), Vi(b), alpha=0.3, call=False, eps=TIGHT)
    assert callable(deferred)
    np.testing.assert_allclose(deferred(), dense_solve(x, 4.0, 0.3, b), rtol=1e-9, atol=1e-9)


def test_preconditioner_cuts_iterations_and_keeps_the_solution(data, rng):
    """Jacobi preconditioning of alpha I + W K W, for a narrow kernel (K near the identity) and
    a wide spread of weights w: the diagonal W^2 is what makes the system ill-conditioned."""
    x, b = data
    w = jnp.asarray(np.exp(rng.uniform(-2.0, 2.0, size=(M, 1))))
    K = gaussian(x, 50.0) * Vi(w) * Vj(w)
    alpha = 0.05
    diagonal = alpha + w**2  # K's diagonal is w_i^2 (the Gaussian is 1 at i = j)
    plain, plain_info = solve(K, b, alpha=alpha, eps=1e-10, return_info=True)
    jacobi, jacobi_info = solve(K, b, alpha=alpha, eps=1e-10, return_info=True,
                                precond=lambda r: r / diagonal)
    W = np.asarray(w)[:, 0]
    dense = W[:, None] * dense_gaussian(x, 50.0) * W[None, :] + alpha * np.eye(M)
    expected = np.linalg.solve(dense, np.asarray(b))
    np.testing.assert_allclose(jacobi, expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())
    np.testing.assert_allclose(plain, expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())
    assert bool(jacobi_info.converged) and bool(plain_info.converged)
    assert 2 * int(jacobi_info.iterations) < int(plain_info.iterations)


# ------------------------------------------------------------------------------------------------
# Convergence failures.
def test_nonconvergence_warns_eagerly_and_under_jit(data):
    x, b = data
    with pytest.warns(ConvergenceWarning, match="did not converge.*maxiter=2"):
        a, info = solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2, return_info=True)
        a.block_until_ready()
    assert not bool(info.converged) and int(info.iterations) == 2
    jitted = jax.jit(lambda x, b: solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2))
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        jitted(x, b).block_until_ready()
        jax.effects_barrier()
    # A jitted function whose inputs are all closed-over constants, and a vmap.
    constants_only = jax.jit(lambda: solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2))
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        constants_only().block_until_ready()
        jax.effects_barrier()
    mapped = jax.vmap(lambda b: solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2))
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        mapped(jnp.stack([b, 2 * b])).block_until_ready()
        jax.effects_barrier()


def test_nonconvergence_can_raise_or_be_ignored(data):
    x, b = data
    with pytest.raises(ConvergenceError, match="did not converge"):
        solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2, on_nonconvergence="raise")
    jitted = jax.jit(lambda x, b: solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2,
                                        on_nonconvergence="raise"))
    with pytest.raises(Exception, match="ConvergenceError.*did not converge"):
        jitted(x, b).block_until_ready()
        jax.effects_barrier()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = solve(gaussian(x, 4.0), b, alpha=1e-3, maxiter=2, on_nonconvergence="ignore",
                        return_info=True)
        jax.effects_barrier()
    assert not bool(info.converged)


def test_indefinite_operator_is_reported(data):
    x, b = data
    with pytest.warns(ConvergenceWarning, match="not positive definite"):
        _, info = solve(-gaussian(x, 4.0), b, alpha=0.0, return_info=True)
        jax.effects_barrier()
    assert not bool(info.converged) and int(info.iterations) == 0


def test_converged_solves_do_not_warn(data):
    x, b = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.jit(lambda x, b: solve(gaussian(x, 4.0), b, alpha=0.3))(x, b).block_until_ready()
        jax.effects_barrier()


# ------------------------------------------------------------------------------------------------
# Derivatives.
def _loss(x, b, alpha, g, weights):
    return jnp.sum(weights * solve(gaussian(x, g), b, alpha=alpha, eps=TIGHT))


def _dense_loss(x, b, alpha, g, weights):
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    K = jnp.exp(-g * sq) + alpha * jnp.eye(x.shape[0])
    return jnp.sum(weights * jnp.linalg.solve(K, b))


def test_gradients_match_finite_differences_and_dense_gradients(data, rng):
    x, b = data
    alpha, g = jnp.asarray(0.3), jnp.asarray(4.0)
    weights = jnp.asarray(rng.normal(size=(M, E)))
    primals = (x, b, alpha, g)
    grads = jax.grad(_loss, argnums=(0, 1, 2, 3))(*primals, weights)
    dense_grads = jax.grad(_dense_loss, argnums=(0, 1, 2, 3))(*primals, weights)
    step = 1e-5
    for k, name in enumerate(("x", "b", "alpha", "g")):
        direction = jnp.asarray(rng.normal(size=np.shape(primals[k])))
        moved = [list(primals), list(primals)]
        moved[0][k] = primals[k] + step * direction
        moved[1][k] = primals[k] - step * direction
        finite = (_loss(*moved[0], weights) - _loss(*moved[1], weights)) / (2 * step)
        analytic = jnp.sum(grads[k] * direction)
        np.testing.assert_allclose(analytic, finite, rtol=1e-6, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(grads[k], dense_grads[k], rtol=1e-7, atol=1e-9,
                                   err_msg=name)
    # Forward mode: the same directional derivative with respect to x.
    direction = jnp.asarray(rng.normal(size=x.shape))
    _, tangent = jax.jvp(lambda x: _loss(x, b, alpha, g, weights), (x,), (direction,))
    np.testing.assert_allclose(tangent, jnp.sum(grads[0] * direction), rtol=1e-8)


@pytest.mark.parametrize("loss_scale", [1e-12, 1e8])
def test_gradient_of_a_scaled_loss_does_not_depend_on_the_loss_scale(data, loss_scale):
    """Regression: the transposed (and tangent) solves stopped at the absolute eps of the
    primal one, so the gradient of 1e-12 * loss was zero and that of a huge loss ran to
    maxiter. They now stop at the primal solve's relative accuracy."""
    x, b = data
    weights = jnp.linspace(-1.0, 1.0, M * E).reshape(M, E)

    def loss(b):
        return loss_scale * jnp.sum(weights * solve(gaussian(x, 4.0), Vi(b), alpha=0.3,
                                                    eps=1e-8))

    # d/db sum(w * A^-1 b) = A^-1 w (A symmetric), in float64.
    want = loss_scale * dense_solve(x, 4.0, 0.3, weights)
    np.testing.assert_allclose(jax.grad(loss)(b), want, rtol=1e-5, atol=1e-5 * loss_scale)
    direction = jnp.ones_like(b)
    _, tangent = jax.jvp(loss, (b,), (direction,))
    np.testing.assert_allclose(tangent, np.sum(want * np.asarray(direction)), rtol=1e-5)


def test_second_order_derivatives_match_dense(data, rng):
    """Hessian-vector products (forward over reverse) with respect to x and alpha."""
    x, b = data
    weights = jnp.asarray(rng.normal(size=(M, E)))
    loss = lambda x, alpha: _loss(x, b, alpha, 4.0, weights)
    dense = lambda x, alpha: _dense_loss(x, b, alpha, 4.0, weights)
    direction = jnp.asarray(rng.normal(size=x.shape))
    hvp = [jax.jit(lambda x, v, f=f: jax.jvp(lambda x: jax.grad(f)(x, 0.3), (x,), (v,))[1])(
        x, direction) for f in (loss, dense)]
    np.testing.assert_allclose(hvp[0], hvp[1], rtol=1e-6, atol=1e-8 * np.abs(hvp[1]).max())
    curvature = [jax.jit(jax.hessian(f, argnums=1))(x, jnp.asarray(0.3)) for f in (loss, dense)]
    np.testing.assert_allclose(curvature[0], curvature[1], rtol=1e-7)


def _equations(jaxpr, inside_solve=False):
    """(primitive name, nested inside a custom_linear_solve?) for every equation, recursively."""
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name, inside_solve
        nested = inside_solve or eqn.primitive.name == "custom_linear_solve"
        for value in eqn.params.values():
            for sub in _subjaxprs(value):
                yield from _equations(sub, nested)


def _subjaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _subjaxprs(item)


@pytest.mark.parametrize("mode", ["grad", "jvp"])
def test_derivatives_never_run_through_the_cg_loop(data, rng, mode):
    """Every while loop of the derivative program is the body of a custom_linear_solve: the
    CG iterations are re-run on new right-hand sides, never differentiated or unrolled, so the
    program (and its memory) does not depend on how many iterations the solve takes."""
    x, b = data
    weights = jnp.asarray(rng.normal(size=(M, E)))

    def loss(x, b, alpha, g, maxiter):
        return jnp.sum(weights * solve(gaussian(x, g), b, alpha=alpha, maxiter=maxiter))

    def program(maxiter):
        f = lambda *p: loss(*p, maxiter)
        args = (x, b, jnp.asarray(0.3), jnp.asarray(4.0))
        if mode == "grad":
            return jax.make_jaxpr(jax.grad(f, argnums=(0, 1, 2, 3)))(*args)
        return jax.make_jaxpr(lambda *p: jax.jvp(f, p, p))(*args)

    equations = list(_equations(program(50).jaxpr))
    loops = [inside for name, inside in equations if name == "while"]
    solves = [name for name, _ in equations if name == "custom_linear_solve"]
    assert loops and all(loops), "a while loop outside custom_linear_solve is differentiated"
    assert len(solves) >= 2  # the primal solve and the solve of the tangent / cotangent
    assert len(equations) == len(list(_equations(program(5000).jaxpr)))


# ------------------------------------------------------------------------------------------------
# Transformations and batches.
def test_jit_matches_eager_with_traced_alpha(data):
    x, b = data
    jitted = jax.jit(lambda x, b, alpha: solve(gaussian(x, 4.0), Vi(b), alpha=alpha, eps=TIGHT))
    np.testing.assert_allclose(jitted(x, b, 0.3), dense_solve(x, 4.0, 0.3, b), rtol=1e-9,
                               atol=1e-9)


def _two_different_systems(rng):
    """A well-conditioned and an ill-conditioned system, stacked on a leading batch axis."""
    x = jnp.asarray(rng.uniform(size=(2, M, D)))
    b = jnp.asarray(rng.normal(size=(2, M, E)))
    g = jnp.array([[30.0], [1.0]])  # a narrow kernel (near identity), a wide one (near singular)
    alpha = jnp.array([1.0, 1e-4])
    return x, b, g, alpha


def test_batch_elements_get_their_own_step_sizes(rng):
    x, b, g, alpha = _two_different_systems(rng)
    a, info = solve(gaussian(x, g), b, alpha=alpha, eps=1e-10, return_info=True)
    assert a.shape == (2, M, E) and info.iterations.shape == (2,)
    alone = [solve(gaussian(x[k], g[k]), b[k], alpha=alpha[k], eps=1e-10, return_info=True)
             for k in range(2)]
    for k in range(2):
        expected = dense_solve(x[k], g[k, 0], alpha[k], b[k])
        np.testing.assert_allclose(a[k], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        # Converges as fast as the system alone (a CG mixing the batch would not).
        assert abs(int(info.iterations[k]) - int(alone[k][1].iterations)) <= 1
        assert bool(info.converged[k])
    assert int(info.iterations[0]) * 3 < int(info.iterations[1])


def test_vmap_over_points_bandwidth_and_alpha(rng):
    x, b, g, alpha = _two_different_systems(rng)
    f = lambda x, b, g, alpha: solve(gaussian(x, g), b, alpha=alpha, eps=1e-10,
                                     return_info=True)
    a, info = jax.vmap(f)(x, b, g, alpha)
    batched, batched_info = solve(gaussian(x, g), b, alpha=alpha, eps=1e-10, return_info=True)
    np.testing.assert_allclose(a, batched, rtol=1e-9, atol=1e-9 * np.abs(batched).max())
    assert np.abs(np.asarray(info.iterations) - np.asarray(batched_info.iterations)).max() <= 1
    for k in range(2):
        expected = dense_solve(x[k], g[k, 0], alpha[k], b[k])
        np.testing.assert_allclose(a[k], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_vmap_over_b_only_and_jit_of_vmap(data, rng):
    x, _ = data
    bs = jnp.asarray(rng.normal(size=(3, M, E)))
    f = jax.jit(jax.vmap(lambda b: solve(gaussian(x, 4.0), b, alpha=0.3, eps=TIGHT)))
    out = f(bs)
    for k in range(3):
        np.testing.assert_allclose(out[k], dense_solve(x, 4.0, 0.3, bs[k]), rtol=1e-9,
                                   atol=1e-9)


def test_batched_kernel_broadcasts_an_unbatched_b(rng):
    x, b, g, alpha = _two_different_systems(rng)
    a = solve(gaussian(x, g), b[0], alpha=alpha, eps=TIGHT)
    assert a.shape == (2, M, E)
    for k in range(2):
        expected = dense_solve(x[k], g[k, 0], alpha[k], b[0])
        np.testing.assert_allclose(a[k], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_gradient_of_batched_solve_matches_dense(rng):
    x, b, g, _ = _two_different_systems(rng)
    alpha = jnp.array([1.0, 0.1])
    weights = jnp.asarray(rng.normal(size=(2, M, E)))

    def loss(x, alpha):
        return jnp.sum(weights * solve(gaussian(x, g), b, alpha=alpha, eps=TIGHT))

    def dense(x, alpha):
        sq = ((x[..., :, None, :] - x[..., None, :, :]) ** 2).sum(-1)
        K = jnp.exp(-g[:, :, None] * sq) + alpha[:, None, None] * jnp.eye(M)
        return jnp.sum(weights * jnp.linalg.solve(K, b))

    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, alpha)
    expected = jax.grad(dense, argnums=(0, 1))(x, alpha)
    for u, v in zip(got, expected):
        np.testing.assert_allclose(u, v, rtol=1e-7, atol=1e-8 * np.abs(v).max())


# ------------------------------------------------------------------------------------------------
# pykeops's reduction options.
def test_reduction_options_reach_every_sum(data, monkeypatch):
    x, b = data
    seen = []
    real_sum = LazyTensor.sum

    def recording_sum(self, axis=None, dim=None, **options):
        if axis in (-2, -3):  # a reduction (not the vector sum inside the kernel's formula)
            seen.append(options)
        return real_sum(self, axis=axis, dim=dim)

    monkeypatch.setattr(LazyTensor, "sum", recording_sum)
    solve(gaussian(x, 4.0), b, alpha=0.3, sum_scheme="kahan_scheme", use_double_acc=True,
          backend="CPU", device_id=-1, enable_chunks=True, maxiter=3, on_nonconvergence="ignore")
    # Values at pykeops's defaults (device_id=-1, enable_chunks=True) are not forwarded.
    assert seen and all(o == dict(sum_scheme="kahan_scheme", use_double_acc=True,
                                  backend="CPU") for o in seen)


def test_float32_solve_with_accuracy_options(data):
    x, b = (a.astype(jnp.float32) for a in data)
    expected = dense_solve(x, 4.0, 0.3, b)
    for options in ({}, dict(use_double_acc=True, sum_scheme="kahan_scheme"),
                    dict(dtype_acc="float64", backend="CPU")):
        a = solve(gaussian(x, 4.0), b, alpha=0.3, eps=1e-5, **options)
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max(),
                                   err_msg=str(options))


# ------------------------------------------------------------------------------------------------
# The pykeops entry points: the LazyTensor method and the package export.
@pytest.mark.skipif(not hasattr(LazyTensor, "solve"), reason="LazyTensor.solve is not wired yet")
def test_lazytensor_solve_method_is_this_solve(data):
    x, b = data
    K = gaussian(x, 4.0)
    expected = dense_solve(x, 4.0, 0.3, b)
    np.testing.assert_allclose(K.solve(Vi(b), alpha=0.3, eps=TIGHT), expected, rtol=1e-9,
                               atol=1e-9)
    # pykeops's example style: keops.solve(K_xx, Vi(b), alpha=alpha, call=False)()
    deferred = LazyTensor.solve(K, Vi(b), alpha=0.3, call=False, eps=TIGHT)
    np.testing.assert_allclose(deferred(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not hasattr(jaxkeops, "KernelSolve"), reason="not exported yet")
def test_kernelsolve_is_exported():
    assert jaxkeops.KernelSolve is solve_module.KernelSolve


# ------------------------------------------------------------------------------------------------
# Bad input.
def test_bad_input_raises_clear_errors(data, rng):
    x, b = data
    K = gaussian(x, 4.0)
    with pytest.raises(ValueError, match="square K.*59 rows"):
        solve(K, b[:-1])
    with pytest.raises(ValueError, match="square K"):
        solve(gaussian(x, 4.0) * Vj(jnp.ones((M + 1, 1))), b)
    with pytest.raises(ValueError, match="plain Vi"):
        solve(K, Vi(b) * 2.0)
    with pytest.raises(ValueError, match="not a parameter"):
        solve(K, Pm(jnp.ones(2)))
    with pytest.raises(ValueError, match="dimension 3.*1 .one kernel. or 2"):
        solve(K * Pm(jnp.ones(3)), b)
    with pytest.raises(ValueError, match="var .* is not a variable of K"):
        solve(K * Vj(jnp.zeros((M, E))), b, var=Vj(jnp.zeros((M, E))))
    with pytest.raises(ValueError, match="var must be a j-variable"):
        placeholder = jnp.zeros((M, E))
        solve(K * Vi(placeholder), b, var=Vi(placeholder))
    with pytest.raises(ValueError, match="alpha .* must be >= 0"):
        solve(K, b, alpha=-1.0)
    with pytest.raises(ValueError, match="on_nonconvergence"):
        solve(K, b, on_nonconvergence="shout")
    with pytest.raises(TypeError, match="unknown option.*tolerance"):
        solve(K, b, tolerance=1e-3)
    with pytest.raises(TypeError, match="must be a LazyTensor"):
        solve(np.eye(3), b)
    with pytest.raises(ValueError, match="alpha of shape \\(3,\\) does not broadcast"):
        solve(K, jnp.stack([b, b]), alpha=jnp.ones(3))
    with pytest.raises(ValueError, match="precond maps"):
        solve(K, b, precond=lambda r: r[:, :1])


def test_cginfo_is_a_pytree_of_arrays(data):
    x, b = data
    _, info = jax.jit(lambda x, b: solve(gaussian(x, 4.0), b, alpha=0.3, return_info=True))(x, b)
    assert isinstance(info, CGInfo)
    assert info.iterations.dtype == jnp.int32 and info.converged.dtype == jnp.bool_
