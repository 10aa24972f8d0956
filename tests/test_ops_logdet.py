"""Stochastic log-determinants and low-rank preconditioners against dense float64 linear
algebra: exact cases, the Hutchinson standard deviation as the stated tolerance, gradient
estimates, and the pivoted Cholesky factor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops.ops import (
    gaussian,
    low_rank_preconditioner,
    pivoted_cholesky,
    rademacher_probes,
    stochastic_logdet,
)

N = 60


def spd(rng, n=N, decay=0.9):
    """A random symmetric positive definite matrix with eigenvalues 0.1 + 5 decay^k."""
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * (0.1 + 5.0 * decay ** np.arange(n))) @ Q.T


def hutchinson_std(log_A, probes):
    """Standard deviation of (1/p) sum z^T log(A) z over Rademacher probes:
    sqrt(2 / p * sum_{i != j} log(A)_ij^2)."""
    off = log_A - np.diag(np.diag(log_A))
    return np.sqrt(2.0 / probes * np.sum(off**2))


def dense_log(A):
    w, V = np.linalg.eigh(A)
    return (V * np.log(w)) @ V.T


def test_rademacher_probes(rng):
    z = rademacher_probes(jax.random.key(0), 1000, 8, jnp.float64)
    assert z.shape == (1000, 8) and z.dtype == jnp.float64
    assert set(np.unique(np.asarray(z))) == {-1.0, 1.0}
    assert abs(float(jnp.mean(z))) < 0.1


def test_exact_for_diagonal_matrices(rng):
    """z^T log(A) z = tr(log A) for diagonal A and +-1 probes, and n Lanczos steps are exact."""
    A = jnp.diag(jnp.asarray(rng.uniform(0.5, 4.0, size=12)))
    z = rademacher_probes(jax.random.key(1), 12, 3, jnp.float64)
    estimate = stochastic_logdet(lambda v: A @ v, z, solve=None, num_steps=12)
    np.testing.assert_allclose(estimate, np.linalg.slogdet(np.asarray(A))[1], rtol=1e-10)


@pytest.mark.parametrize("probes", [16, 128])
def test_estimate_within_four_standard_deviations(probes, rng):
    A = spd(rng)
    exact = np.linalg.slogdet(A)[1]
    tolerance = 4 * hutchinson_std(dense_log(A), probes) + 1e-6 * abs(exact)
    z = rademacher_probes(jax.random.key(probes), N, probes, jnp.float64)
    estimate = stochastic_logdet(lambda v: jnp.asarray(A) @ v, z, solve=None, num_steps=30)
    assert abs(float(estimate) - exact) < tolerance
    # The tolerance is meaningful: it would tell A from 1.5 A (log det differs by N log 1.5).
    assert tolerance < N * np.log(1.5)


def test_exact_preconditioner_removes_the_probe_noise(rng):
    """With P = A (a full-rank factor), log det A = log det P and the estimate is exact."""
    A = spd(rng)
    noise = 0.05
    L = np.linalg.cholesky(A - noise * np.eye(N))
    P = low_rank_preconditioner(jnp.asarray(L), noise)
    z = rademacher_probes(jax.random.key(0), N, 2, jnp.float64)
    estimate = stochastic_logdet(lambda v: jnp.asarray(A) @ v, z, solve=None, num_steps=5,
                                 preconditioner=P)
    np.testing.assert_allclose(estimate, np.linalg.slogdet(A)[1], rtol=1e-10)


def test_preconditioned_estimate_is_the_hutchinson_average_of_the_split(rng):
    """With a partial preconditioner P, the estimate is log det P + (1/p) sum z^T log(S) z with
    S = P^-1/2 A P^-1/2, for the very probes given: the quadrature adds no visible error
    (enough Lanczos steps for S's spectrum), so only the probe noise of log(S) remains, which
    test_ops_gp bounds for kernel matrices."""
    A = spd(rng)
    noise = 0.1
    L = np.linalg.cholesky(A - noise * np.eye(N))[:, :10]   # a rank-10 part of A - noise I
    P = low_rank_preconditioner(jnp.asarray(L), noise)
    z = rademacher_probes(jax.random.key(4), N, 6, jnp.float64)
    estimate = stochastic_logdet(lambda v: jnp.asarray(A) @ v, z, solve=None, num_steps=40,
                                 preconditioner=P)
    root = np.asarray(P.inverse_sqrt(jnp.eye(N)))
    log_split = dense_log(root @ A @ root)
    probes = np.asarray(z)
    hutchinson = np.mean(np.sum(probes * (log_split @ probes), axis=0))
    np.testing.assert_allclose(estimate, np.linalg.slogdet(L @ L.T + noise * np.eye(N))[1]
                               + hutchinson, rtol=1e-9)


def test_gradient_is_the_hutchinson_trace_estimate(rng):
    """d log det(B + t C) / dt = tr(A^-1 C), estimated by (1/p) sum (A^-1 z)^T C z, which this
    test computes by hand with the same probes."""
    B, C = spd(rng), spd(rng, decay=0.5)
    z = rademacher_probes(jax.random.key(2), N, 32, jnp.float64)

    def logdet(t):
        A = jnp.asarray(B) + t * jnp.asarray(C)
        return stochastic_logdet(lambda v: A @ v, z, solve=lambda b: jnp.linalg.solve(A, b))

    slope = jax.grad(logdet)(0.3)
    A = B + 0.3 * C
    by_hand = np.mean(np.sum(np.linalg.solve(A, np.asarray(z)) * (C @ np.asarray(z)), axis=0))
    np.testing.assert_allclose(slope, by_hand, rtol=1e-10)
    exact = np.trace(np.linalg.solve(A, C))
    trace_std = hutchinson_std(0.5 * (np.linalg.solve(A, C) + np.linalg.solve(A, C).T), 32)
    assert abs(float(slope) - exact) < 4 * trace_std
    # Without `solve`, the estimate is a constant for differentiation.
    frozen = stochastic_logdet(lambda v: jnp.asarray(B) @ v, z, solve=None)
    assert float(jax.grad(lambda t: t * frozen)(1.0)) == float(frozen)


def test_control_variate_gradient_with_a_good_preconditioner(rng):
    """With P ~ A the gradient is d tr(P^-1 A) + a small residual: nearly exact."""
    B = spd(rng)
    noise = 0.05
    L = np.linalg.cholesky(B)
    P = low_rank_preconditioner(jnp.asarray(L), noise)
    z = rademacher_probes(jax.random.key(3), N, 4, jnp.float64)

    def logdet(t):
        A = t * jnp.asarray(B) + noise * jnp.eye(N)
        return stochastic_logdet(lambda v: A @ v, z, solve=lambda b: jnp.linalg.solve(A, b),
                                 preconditioner=P, trace=lambda: jnp.trace(A))

    A = B + noise * np.eye(N)
    np.testing.assert_allclose(jax.grad(logdet)(1.0), np.trace(np.linalg.solve(A, B)),
                               rtol=1e-9)


def test_low_rank_preconditioner_powers_and_logdet(rng):
    L = rng.normal(size=(N, 5))
    P = low_rank_preconditioner(jnp.asarray(L), 0.3)
    dense = L @ L.T + 0.3 * np.eye(N)
    eye = jnp.eye(N)
    np.testing.assert_allclose(P.inverse(eye), np.linalg.inv(dense), rtol=1e-9, atol=1e-10)
    root = np.asarray(P.inverse_sqrt(eye))
    np.testing.assert_allclose(root, root.T, atol=1e-12)
    np.testing.assert_allclose(root @ root @ dense, np.eye(N), atol=1e-9)
    np.testing.assert_allclose(P.logdet, np.linalg.slogdet(dense)[1], rtol=1e-12)


def test_pivoted_cholesky_full_and_partial_rank(rng):
    x = jnp.asarray(rng.uniform(size=(30, 2)))
    K = np.asarray(gaussian(x, lengthscale=0.3) @ jnp.eye(30))
    full = np.asarray(pivoted_cholesky(x, 30, 0.3))
    np.testing.assert_allclose(full @ full.T, K, atol=1e-10)
    errors = []
    for rank in (2, 5, 10):
        L = np.asarray(pivoted_cholesky(x, rank, 0.3))
        residual = K - L @ L.T
        # The residual of a pivoted Cholesky factor is positive semidefinite, its trace falls.
        assert np.linalg.eigvalsh(residual).min() > -1e-10
        errors.append(np.trace(residual))
    assert errors[0] > errors[1] > errors[2]


def test_pivoted_cholesky_rejects_bad_rank(rng):
    x = jnp.asarray(rng.uniform(size=(10, 2)))
    with pytest.raises(ValueError, match=r"rank=11 exceeds .*\(10, 2\)"):
        pivoted_cholesky(x, 11, 0.3)


def test_stochastic_logdet_checks_probes():
    with pytest.raises(ValueError, match=r"probes must have shape \(n, num_probes\)"):
        stochastic_logdet(lambda v: v, jnp.ones(5), solve=None)
