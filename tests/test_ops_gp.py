"""Gaussian-process regression of jaxkeops.ops against dense float64 linear algebra at N = 300:
the exact data-fit term, the stochastic log-determinant within its stated tolerance, hyperparameter
gradients against jax.grad of the dense log marginal likelihood, and the posterior.

Where the tolerances come from. With m = 30 Lanczos steps the quadrature error is negligible
at this size (test_ops_logdet checks the estimate against the exact Hutchinson average with the
same probes), so the error of a log-determinant estimate is the Hutchinson probe error: for p
Rademacher probes and symmetric S, (1/p) sum z^T S z has standard deviation
sqrt(2/p * sum_{i != j} S_ij^2). S is log A without a preconditioner, and log(P^-1/2 A P^-1/2)
with one (log det P is exact); for the gradient, S is the symmetric part of A^-1 dA, or of
(A^-1 - P^-1) dA with the preconditioner as a control variate. Every stochastic check allows
four of these standard deviations, computed here from dense matrices, and also checks that the
allowance is small enough to mean something."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops.ops import (
    GPLikelihoodTerms,
    gp_marginal_log_likelihood,
    gp_predict,
    pivoted_cholesky,
)

N, D = 300, 2
PARAMS = (0.6, 1.3, 0.05)   # lengthscale, variance, noise variance
TIGHT = 1e-10               # conjugate gradient tolerance far below the tolerances checked


def dense_kernel(name, x, y, ell, var):
    r = jnp.sqrt(jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1) + 1e-300) / ell
    if name == "gaussian":
        return var * jnp.exp(-0.5 * r**2)
    return var * (1.0 + math.sqrt(3.0) * r) * jnp.exp(-math.sqrt(3.0) * r)   # matern32


def dense_mll(name, x, y, ell, var, noise):
    """(value, data_fit, log_det) by Cholesky."""
    A = dense_kernel(name, x, x, ell, var) + noise * jnp.eye(x.shape[0])
    L = jnp.linalg.cholesky(A)
    a = jax.scipy.linalg.cho_solve((L, True), y)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    data_fit = -0.5 * y @ a
    return data_fit - 0.5 * log_det - 0.5 * x.shape[0] * math.log(2 * math.pi), data_fit, log_det


def hutchinson_std(S, probes):
    """Standard deviation of the Rademacher estimate of tr(S), S symmetric, p probes."""
    off = S - np.diag(np.diag(S))
    return math.sqrt(2.0 / probes * np.sum(off**2))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 3, size=(N, D))
    y = np.sin(2 * x[:, 0]) * np.cos(x[:, 1]) + 0.2 * rng.normal(size=N)
    return jnp.asarray(x), jnp.asarray(y)


def estimate(x, y, params, *, kernel, probes, rank=0, key=0, **options):
    return gp_marginal_log_likelihood(x, y, *params, key=jax.random.key(key), kernel=kernel,
                                      num_probes=probes, cg_tolerance=TIGHT,
                                      preconditioner_rank=rank, **options)


def dense_log(S):
    w, V = np.linalg.eigh(S)
    return (V * np.log(w)) @ V.T


def dense_system(kernel, x, rank=0):
    """(A, P) as float64 numpy arrays: A = K + noise I and, for rank > 0, the preconditioner
    P = L L^T + noise I that gp_marginal_log_likelihood builds from the same pivoted Cholesky
    factor (None for rank 0)."""
    A = np.asarray(dense_kernel(kernel, x, x, *PARAMS[:2])) + PARAMS[2] * np.eye(N)
    if not rank:
        return A, None
    L = np.asarray(pivoted_cholesky(x, rank, *PARAMS[:2], kernel=kernel))
    return A, L @ L.T + PARAMS[2] * np.eye(N)


@pytest.mark.parametrize("kernel", ["gaussian", "matern32"])
def test_data_fit_exact_and_log_det_within_tolerance(kernel, data):
    x, y = data
    # The probe error falls as 1/sqrt(p): four standard deviations are 2.3% (gaussian) and 3.2%
    # (matern32) of |log det A| with 64 probes, 1.2% and 1.6% with 256, which the last
    # assertion below requires to be under 2%.
    probes = 256
    terms = estimate(x, y, PARAMS, kernel=kernel, probes=probes, return_terms=True)
    assert isinstance(terms, GPLikelihoodTerms)
    value, data_fit, log_det = dense_mll(kernel, x, y, *PARAMS)
    np.testing.assert_allclose(terms.data_fit, data_fit, rtol=1e-8)
    A, _ = dense_system(kernel, x)
    tolerance = 4 * hutchinson_std(dense_log(A), probes)
    assert abs(float(terms.log_det - log_det)) < tolerance
    assert tolerance < 0.02 * abs(float(log_det))
    constant = 0.5 * N * math.log(2 * math.pi)
    np.testing.assert_allclose(terms.value, terms.data_fit - 0.5 * terms.log_det - constant,
                               rtol=1e-12)


@pytest.mark.parametrize("kernel, rank", [("gaussian", 60), ("matern32", 150)])
def test_preconditioned_log_det_is_accurate(kernel, rank, data):
    """Only log det(P^-1/2 A P^-1/2) is estimated, so the allowance is four Hutchinson standard
    deviations of its log, which the preconditioner makes over ten times smaller than without
    it (0.51 against 49 for the gaussian kernel, 4.2 against 51 for matern32, at 8 probes)."""
    x, y = data
    probes = 8
    terms = estimate(x, y, PARAMS, kernel=kernel, probes=probes, rank=rank, return_terms=True)
    _, data_fit, log_det = dense_mll(kernel, x, y, *PARAMS)
    np.testing.assert_allclose(terms.data_fit, data_fit, rtol=1e-8)
    A, P = dense_system(kernel, x, rank)
    w, V = np.linalg.eigh(P)
    root = (V / np.sqrt(w)) @ V.T                                  # P^-1/2
    tolerance = 4 * hutchinson_std(dense_log(root @ A @ root), probes)
    assert abs(float(terms.log_det - log_det)) < tolerance
    assert tolerance < 0.1 * 4 * hutchinson_std(dense_log(A), probes)


def test_gradients_within_the_estimators_tolerance(data):
    """Without a preconditioner: the data-fit gradient is exact, the log-determinant's is a
    Hutchinson estimate of tr(A^-1 dA), within four of its standard deviations; the gradient
    with respect to y (data fit only) is exact. The objective is scaled by 1e-12 (as a loss
    divided by n would be, only more): the cotangents of the solves are then tiny, and the
    transposed solves must still meet the relative cg_tolerance (with an absolute one they
    would stop at once and return zero gradients)."""
    x, y = data
    probes = 64
    scale = 1e-12
    params = jnp.asarray(PARAMS)
    got, got_y = jax.grad(lambda p, y: scale * estimate(x, y, p, kernel="gaussian",
                                                        probes=probes), argnums=(0, 1))(params, y)
    got, got_y = got / scale, got_y / scale
    want = jax.grad(lambda p: dense_mll("gaussian", x, y, *p)[0])(params)
    A = dense_kernel("gaussian", x, x, *PARAMS[:2]) + PARAMS[2] * jnp.eye(N)
    dA = jax.jacfwd(lambda p: dense_kernel("gaussian", x, x, p[0], p[1])
                    + p[2] * jnp.eye(N))(params)
    for n in range(3):
        S = np.linalg.solve(np.asarray(A), np.asarray(dA[..., n]))
        tolerance = 4 * 0.5 * hutchinson_std(0.5 * (S + S.T), probes)
        assert abs(float(got[n] - want[n])) < tolerance, (n, got, want, tolerance)
    want_y = jax.grad(lambda y: dense_mll("gaussian", x, y, *PARAMS)[0])(y)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-7, atol=1e-9)


def gradient_tolerances(kernel, x, rank, probes):
    """Four standard deviations of the log-determinant's share (-1/2 tr(A^-1 dA)) of each
    hyperparameter's gradient estimate, with and without the preconditioner P as a control
    variate: the estimate is (1/p) sum_z z^T (A^-1 - P^-1) dA z + tr(P^-1 dA) (exact)."""
    params = jnp.asarray(PARAMS)
    A, P = dense_system(kernel, x, rank)
    dA = np.asarray(jax.jacfwd(lambda p: dense_kernel(kernel, x, x, p[0], p[1])
                               + p[2] * jnp.eye(N))(params))
    with_p, without_p = [], []
    for n in range(3):
        for inverse_gap, out in ((np.linalg.inv(A) - np.linalg.inv(P), with_p),
                                 (np.linalg.inv(A), without_p)):
            S = inverse_gap @ dA[..., n]
            out.append(4 * 0.5 * hutchinson_std(0.5 * (S + S.T), probes))
    return np.array(with_p), np.array(without_p)


@pytest.mark.parametrize("kernel, rank", [("gaussian", 60), ("matern32", 150)])
def test_preconditioned_gradients_close_to_exact(kernel, rank, data):
    """The allowance is four standard deviations of the control-variate estimate; the
    preconditioner must cut them at least in half (about 25x for the gaussian kernel at rank 60,
    3x for the rougher matern32 at rank 150)."""
    x, y = data
    probes = 16
    params = jnp.asarray(PARAMS)
    got = jax.grad(lambda p: estimate(x, y, p, kernel=kernel, probes=probes, rank=rank))(params)
    want = jax.grad(lambda p: dense_mll(kernel, x, y, *p)[0])(params)
    tolerance, without = gradient_tolerances(kernel, x, rank, probes)
    assert np.all(np.abs(np.asarray(got - want)) < tolerance), (got, want, tolerance)
    assert np.all(tolerance < 0.5 * without), (tolerance, without)


def test_key_determinism_and_jit(data):
    x, y = data
    f = lambda key: estimate(x, y, PARAMS, kernel="gaussian", probes=4, key=key)  # noqa: E731
    assert float(f(1)) == float(f(1))
    assert float(f(1)) != float(f(2))
    jitted = jax.jit(lambda p, key: gp_marginal_log_likelihood(
        x, y, *p, key=key, num_probes=4, cg_tolerance=TIGHT))
    np.testing.assert_allclose(jitted(jnp.asarray(PARAMS), jax.random.key(1)), f(1), rtol=1e-9)


@pytest.mark.parametrize("rank", [0, 40])
def test_predict_matches_dense_posterior(rank, data):
    x, y = data
    x_test = jnp.asarray(np.random.default_rng(1).uniform(-1, 4, size=(25, D)))
    mean, var = gp_predict(x, y, x_test, *PARAMS, cg_tolerance=TIGHT, preconditioner_rank=rank)
    A = dense_kernel("gaussian", x, x, *PARAMS[:2]) + PARAMS[2] * jnp.eye(N)
    cross = dense_kernel("gaussian", x_test, x, *PARAMS[:2])
    np.testing.assert_allclose(mean, cross @ jnp.linalg.solve(A, y), rtol=1e-7, atol=1e-9)
    want_var = PARAMS[1] - jnp.sum(cross * jnp.linalg.solve(A, cross.T).T, axis=1)
    np.testing.assert_allclose(var, want_var, rtol=1e-6, atol=1e-9)
    _, noisy = gp_predict(x, y, x_test, *PARAMS, cg_tolerance=TIGHT, include_noise=True)
    np.testing.assert_allclose(noisy, want_var + PARAMS[2], rtol=1e-6, atol=1e-9)
    if rank:   # (one rank is enough: the same solve of y as the full call, the same mean)
        only_mean = gp_predict(x, y, x_test, *PARAMS, cg_tolerance=TIGHT,
                               return_variance=False, preconditioner_rank=rank)
        np.testing.assert_allclose(only_mean, mean, rtol=1e-12, atol=1e-15)


def test_bad_inputs(data):
    x, y = data
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"y must have shape \(n,\) = \(300,\).*\(299,\)"):
        gp_marginal_log_likelihood(x, y[:-1], *PARAMS, key=key)
    with pytest.raises(ValueError, match=r"noise \(the noise variance\) must be a scalar"):
        gp_marginal_log_likelihood(x, y, 1.0, 1.0, jnp.ones(2), key=key)
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, rows, dim\)"):
        gp_marginal_log_likelihood(x[:, 0], y, *PARAMS, key=key)
    with pytest.raises(ValueError, match="unknown kernel"):
        gp_marginal_log_likelihood(x, y, *PARAMS, key=key, kernel="rbf")
    with pytest.raises(ValueError, match=r"x and x_test must have the same last dimension"):
        gp_predict(x, y, jnp.ones((3, 1)), *PARAMS)
