"""Stochastic log-determinants of symmetric positive definite operators given by a matvec.

The estimator is stochastic Lanczos quadrature (SLQ; Ubaru, Chen & Saad 2017):

    log det A = tr(log A) ~= (1/p) sum_z z^T log(A) z     (Hutchinson, Rademacher probes z)
    z^T log(A) z ~= |z|^2 sum_k tau_k^2 log(theta_k)      (Gauss quadrature from m Lanczos steps)

where theta_k are the eigenvalues of the m x m Lanczos tridiagonal matrix started at z/|z| and
tau_k the first components of its eigenvectors. It needs m products A v per probe (all probes
run together as the columns of one block) and no storage beyond a few (n, p) blocks.

Accuracy and cost: the quadrature error falls quickly with m (m = 20-50 is plenty unless A is
very ill-conditioned with a spread-out spectrum); the probe error is random, with standard
deviation about sqrt(2/p) |log A|_F (off-diagonal part), so it halves when p quadruples.

Gradients do not go through the Lanczos iterations (which would be slow, memory-hungry and
unstable). Instead d log det A = tr(A^-1 dA) is estimated with the same probes:
tr(A^-1 dA) ~= (1/p) sum_z (A^-1 z)^T dA z, which needs one linear solve per probe (the
`solve` argument: conjugate gradient in practice). This gradient estimator is unbiased for
exact solves, whatever m.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._checks import positive_int

__all__ = ["rademacher_probes", "stochastic_logdet"]


def rademacher_probes(key: jax.Array, size: int, num_probes: int, dtype: Any = None
                      ) -> jax.Array:
    """An (size, num_probes) array of independent +1/-1 entries, the columns being probe
    vectors z with E[z z^T] = I.

    Example:
        >>> import jax
        >>> from jaxkeops.ops import rademacher_probes
        >>> z = rademacher_probes(jax.random.key(0), 5, 3)
        >>> z.shape, bool((abs(z) == 1).all())
        ((5, 3), True)
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jax.random.rademacher(key, (positive_int(size, "size"),
                                       positive_int(num_probes, "num_probes")), dtype=dtype)


def _lanczos(matvec: Callable[[jax.Array], jax.Array], start: jax.Array, num_steps: int
             ) -> tuple[jax.Array, jax.Array]:
    """`num_steps` Lanczos steps for each column of `start` (n, p) at once: the diagonals
    (p, m) and off-diagonals (p, m - 1) of the p tridiagonal matrices.

    A column whose Krylov space is exhausted (beta ~ 0) stops: its remaining diagonal entries
    are 1 and off-diagonal entries 0, a block that is decoupled from e_1 and so has zero
    quadrature weight.
    """
    dtype = start.dtype
    tiny = 100 * jnp.finfo(dtype).eps
    q = start / jnp.sqrt(jnp.sum(start * start, axis=0))
    p = start.shape[1]
    init = (jnp.zeros_like(q), q, jnp.zeros(p, dtype), jnp.ones((num_steps, p), dtype),
            jnp.zeros((num_steps, p), dtype), jnp.ones(p, bool))

    def step(j, state):
        q_prev, q, beta_prev, alphas, betas, active = state
        w = matvec(q) - beta_prev * q_prev
        alpha = jnp.sum(q * w, axis=0)
        w = w - alpha * q
        # A second projection against q restores the local orthogonality that rounding
        # (float32 especially) erodes; its coefficient belongs to alpha.
        correction = jnp.sum(q * w, axis=0)
        w, alpha = w - correction * q, alpha + correction
        beta = jnp.sqrt(jnp.sum(w * w, axis=0))
        alive = active & (beta > tiny * (jnp.abs(alpha) + beta_prev))
        alphas = alphas.at[j].set(jnp.where(active, alpha, 1.0))
        betas = betas.at[j].set(jnp.where(alive, beta, 0.0))
        q_next = jnp.where(alive, w / jnp.where(alive, beta, 1.0), 0.0)
        return q, q_next, jnp.where(alive, beta, 0.0), alphas, betas, alive

    _, _, _, alphas, betas, _ = jax.lax.fori_loop(0, num_steps, step, init)
    return alphas.T, betas[:-1].T


def _quadrature_log(diagonals: jax.Array, off_diagonals: jax.Array) -> jax.Array:
    """e_1^T log(T) e_1 for each tridiagonal T (Gauss quadrature of log): shape (p,)."""
    def tridiagonal(a, b):
        return jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1)

    T = jax.vmap(tridiagonal)(diagonals, off_diagonals)
    theta, vectors = jnp.linalg.eigh(T)
    weights = vectors[:, 0, :] ** 2
    # A is positive definite, so theta > 0 but for rounding: floor it far below the spectrum.
    floor = jnp.finfo(theta.dtype).eps * jnp.max(jnp.abs(theta), axis=1, keepdims=True)
    return jnp.sum(weights * jnp.log(jnp.maximum(theta, floor)), axis=1)


def stochastic_logdet(matvec: Callable[[jax.Array], jax.Array], probes: jax.Array, *,
                      solve: Callable[[jax.Array], jax.Array] | None,
                      num_steps: int = 30, preconditioner: Any = None,
                      trace: Callable[[], jax.Array] | None = None) -> jax.Array:
    """log det A for a symmetric positive definite A given by its product, by stochastic
    Lanczos quadrature (see the module docstring for the estimator and its accuracy).

    Args:
        matvec: V -> A V for blocks V of shape (n, p). It may close over traced arrays (the
            parameters of A): the gradient with respect to them is estimated as below.
        probes: (n, p) probe vectors, e.g. `rademacher_probes(key, n, p)`; the estimate is a
            deterministic function of them.
        solve: B -> A^-1 B for blocks of shape (n, p) (e.g. conjugate gradient through
            `LazyTensor.solve`), used only for the gradient: d log det A is estimated by
            (1/p) sum_z (A^-1 z)^T dA z with the same probes. None: the result is a constant
            for jax.grad (no solve is run).
        num_steps: the number of Lanczos steps m per probe (the quadrature's nodes).
        preconditioner: None, or an approximation P of A with a symmetric `inverse_sqrt(V)`
            (V -> P^-1/2 V) and its exact `logdet`, e.g. a `low_rank_preconditioner`. Then
            log det A = log det P + log det(P^-1/2 A P^-1/2), and only the second term, whose
            matrix is close to I, is estimated: far less probe noise and fewer steps for a
            good P.
        trace: with a preconditioner that also has `inverse(V)` and
            `trace_inverse_product(matvec, trace)` (as `LowRankPreconditioner`), a function
            returning tr(A), differentiable like matvec. The gradient estimate then becomes
            d tr(P^-1 A) (exact, P held fixed) + (1/p) sum_z (A^-1 z - P^-1 z)^T dA z: the same
            expectation, with P^-1 as a control variate, so far less noise when P ~ A.

    Returns:
        The scalar estimate. Its value never depends on `solve`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.ops import rademacher_probes, stochastic_logdet
        >>> A = jnp.diag(jnp.arange(1.0, 11.0))
        >>> z = rademacher_probes(jax.random.key(0), 10, 4)
        >>> estimate = stochastic_logdet(lambda v: A @ v, z, solve=None, num_steps=10)
        >>> round(float(estimate), 3), round(float(jnp.linalg.slogdet(A)[1]), 3)
        (15.104, 15.104)
    """
    if probes.ndim != 2:
        raise ValueError(f"probes must have shape (n, num_probes), got shape "
                         f"{tuple(probes.shape)}")
    num_steps = positive_int(num_steps, "num_steps")
    probes = jax.lax.stop_gradient(probes)
    # The value is a constant for differentiation: its gradient comes from the surrogate below.
    if preconditioner is None:
        frozen = lambda v: jax.lax.stop_gradient(matvec(v))  # noqa: E731
        known = 0.0
    else:
        split = preconditioner.inverse_sqrt
        frozen = lambda v: jax.lax.stop_gradient(split(matvec(split(v))))  # noqa: E731
        known = jax.lax.stop_gradient(preconditioner.logdet)
    diagonals, off_diagonals = _lanczos(frozen, probes, num_steps)
    norms = jnp.sum(probes * probes, axis=0)
    value = known + jnp.mean(norms * _quadrature_log(diagonals, off_diagonals))
    if solve is None:
        return value
    solved = jax.lax.stop_gradient(solve(probes))
    if preconditioner is not None and trace is not None:
        solved = solved - jax.lax.stop_gradient(preconditioner.inverse(probes))
        exact = preconditioner.trace_inverse_product(matvec, trace())
    else:
        exact = 0.0
    surrogate = exact + jnp.sum(solved * matvec(probes)) / probes.shape[1]
    return value + (surrogate - jax.lax.stop_gradient(surrogate))
