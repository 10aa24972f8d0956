"""Gaussian-process regression without the N x N kernel matrix.

Model: y = f(x) + noise, f ~ GP(0, k) with k one of `jaxkeops.ops.KERNELS` (or any builder
(x, y, lengthscale, variance) -> LazyTensor), noise ~ N(0, noise I). With A = K + noise I:

    log p(y) = -1/2 y^T A^-1 y  -  1/2 log det A  -  n/2 log(2 pi)

- the data-fit term uses a = A^-1 y from `LazyTensor.solve` (conjugate gradient), so its value
  is exact up to the solver's tolerance and its gradient with respect to every hyperparameter
  (and x and y) comes through `.solve`'s implicit derivative;
- log det A is estimated by stochastic Lanczos quadrature (`stochastic_logdet`), and its
  gradient tr(A^-1 dA) by the Hutchinson estimator with the same probes, one more `.solve`,
  which only runs when the result is differentiated (a custom JVP rule).

Both functions are compiled with jax.jit on first use for each set of static options and
shapes (except with on_nonconvergence="raise", which runs eagerly so that the solver's error
reaches the caller as such), so an optimisation loop does not re-trace every step.

The estimate is a deterministic function of `key`: reuse a key to compare hyperparameters
with the same probes, draw a fresh one per optimisation step to average the noise out.

With `preconditioner_rank` r > 0, a partial pivoted Cholesky factorisation K ~= L L^T of rank r
gives P = L L^T + noise I (see precondition.py): conjugate gradient is preconditioned by P^-1,
which often cuts its iterations tenfold for smooth kernels, and the log-determinant becomes
log det P (exact) + log det(P^-1/2 A P^-1/2) (estimated), whose probe noise is far smaller.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._checks import float_array, points, positive_int, same_dim
from .kernels import KernelBuilder, get_kernel
from .logdet import rademacher_probes, stochastic_logdet
from .precondition import (
    LowRankPreconditioner,
    kernel_columns,
    kernel_diagonal,
    low_rank_preconditioner,
    pivoted_cholesky,
)

__all__ = ["GPLikelihoodTerms", "gp_marginal_log_likelihood", "gp_predict"]


class GPLikelihoodTerms(NamedTuple):
    """The pieces of the log marginal likelihood: value = data_fit - log_det / 2 - n/2 log 2pi.

    value: the log marginal likelihood estimate.
    data_fit: -1/2 y^T (K + noise I)^-1 y (exact up to the solver's tolerance).
    log_det: the stochastic estimate of log det(K + noise I).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.ops import gp_marginal_log_likelihood
        >>> x = jnp.linspace(0, 5, 40)[:, None]
        >>> terms = gp_marginal_log_likelihood(x, jnp.sin(x[:, 0]), 1.0, 1.0, 0.01,
        ...                                    key=jax.random.key(0), return_terms=True)
        >>> total = terms.data_fit - terms.log_det / 2 - 20 * jnp.log(2 * jnp.pi)
        >>> bool(jnp.isclose(terms.value, total))
        True
    """

    value: jax.Array
    data_fit: jax.Array
    log_det: jax.Array


# ------------------------------------------------------------------------------------------------
class _Problem(NamedTuple):
    """The regularised kernel system A = K + noise I, how to solve it, and its preconditioner
    (None without one)."""

    K: Any
    noise: jax.Array
    solve: Callable[[jax.Array], jax.Array]
    preconditioner: LowRankPreconditioner | None
    trace: Callable[[], jax.Array]


def _problem(x: jax.Array, lengthscale: Any, variance: Any, noise: Any, builder: KernelBuilder,
             cg_tolerance: float, maxiter: int | None, preconditioner_rank: int,
             on_nonconvergence: str) -> _Problem:
    noise = float_array(noise, "noise").astype(x.dtype)
    if noise.ndim != 0:
        raise ValueError(f"noise (the noise variance) must be a scalar, got shape "
                         f"{tuple(noise.shape)}")
    K = builder(x, x, lengthscale, variance)
    preconditioner = None
    if preconditioner_rank:
        rank = min(positive_int(preconditioner_rank, "preconditioner_rank"), x.shape[0])
        L = pivoted_cholesky(x, rank, lengthscale, variance, kernel=builder)
        preconditioner = low_rank_preconditioner(L, noise)
    precond = None if preconditioner is None else preconditioner.inverse
    # The conjugate gradient solver runs on a copy of the operator that is a constant for
    # differentiation; derivatives come from custom_linear_solve (implicit differentiation with
    # `matvec`), whose transposed solve is `relative_cg` again. LazyTensor.solve's own tolerance
    # is absolute, so calling it directly would solve the transposed system to the same
    # absolute tolerance whatever the size of the cotangent: the gradient of 1e-3 * log p(y)
    # would stop conjugate gradient at once and come out as nearly zero.
    frozen_K = builder(*jax.lax.stop_gradient((x, x, lengthscale, variance)))
    frozen_noise = jax.lax.stop_gradient(noise)

    def relative_cg(_, b):
        # The solver stops on the absolute RMS residual of the whole (n, p) block: scale every
        # column to RMS 1 so that cg_tolerance is relative and every column weighs the same
        # (a column much smaller than the others, e.g. K(x, t) for a test point t far from the
        # data, would otherwise get a far looser relative tolerance). The solve is linear, so
        # scaling back is exact.
        scale = jnp.sqrt(jnp.mean(b * b, axis=0))
        scale = jnp.where(scale > 0, scale, 1.0)
        a = frozen_K.solve(b / scale, alpha=frozen_noise, eps=cg_tolerance, maxiter=maxiter,
                           precond=precond, on_nonconvergence=on_nonconvergence)
        return a * scale

    def matvec(v):
        return K @ v + noise * v

    def solve(b):
        return jax.lax.custom_linear_solve(matvec, b, relative_cg, symmetric=True)

    def trace():
        return jnp.sum(kernel_diagonal(builder, x, lengthscale, variance)) + x.shape[0] * noise

    return _Problem(K, noise, solve, preconditioner, trace)


def _check_data(x: Any, y: Any) -> tuple[jax.Array, jax.Array]:
    x = points(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, D), got shape {tuple(x.shape)}")
    y = float_array(y, "y").astype(x.dtype)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape (n,) = ({x.shape[0]},) to match x of shape "
                         f"{tuple(x.shape)}, got shape {tuple(y.shape)}")
    return x, y


def gp_marginal_log_likelihood(
    x: Any, y: Any, lengthscale: Any, variance: Any, noise: Any, *, key: jax.Array,
    kernel: str | KernelBuilder = "gaussian", num_probes: int = 16, lanczos_steps: int = 30,
    cg_tolerance: float = 1e-4, maxiter: int | None = None, preconditioner_rank: int = 0,
    on_nonconvergence: str = "warn", return_terms: bool = False,
) -> jax.Array | GPLikelihoodTerms:
    """The log marginal likelihood log p(y | x, hyperparameters) of a zero-mean GP, estimated
    without the n x n matrix (see the module docstring).

    Args:
        x: inputs (n, D).
        y: targets (n,) (subtract a mean first: the prior mean is zero).
        lengthscale: the kernel's lengthscale, a scalar or one per coordinate (D,).
        variance: the kernel's variance (signal variance), a scalar.
        noise: the noise variance, a scalar > 0.
        key: PRNG key of the Rademacher probes of the log-determinant estimate.
        kernel: a name of `KERNELS` or a builder (x, y, lengthscale, variance) -> LazyTensor.
        num_probes: probes p of the log-determinant (its error ~ 1/sqrt(p)).
        lanczos_steps: Lanczos steps m per probe (the quadrature's accuracy).
        cg_tolerance: relative tolerance of conjugate gradient: every right-hand side is
            scaled to RMS 1 and the solve of a block of p of them stops when the RMS of the
            block's residual is below cg_tolerance, so each one's residual is at most
            sqrt(p) cg_tolerance times its own norm.
        maxiter: cap on conjugate gradient iterations (default: the solver's).
        preconditioner_rank: rank of the pivoted Cholesky preconditioner (0: none).
        on_nonconvergence: "warn", "raise" or "ignore" when conjugate gradient does not
            converge (see `LazyTensor.solve`).
        return_terms: return `GPLikelihoodTerms(value, data_fit, log_det)` instead of the
            scalar value.

    Returns:
        The scalar estimate, differentiable with respect to lengthscale, variance, noise, x
        and y (the log-determinant's gradient is an unbiased stochastic estimate).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.ops import gp_marginal_log_likelihood
        >>> x = jnp.linspace(0, 5, 40)[:, None]
        >>> y = jnp.sin(x[:, 0])
        >>> mll = lambda log_ell: gp_marginal_log_likelihood(
        ...     x, y, jnp.exp(log_ell), 1.0, 0.01, key=jax.random.key(0))
        >>> value, slope = jax.value_and_grad(mll)(jnp.log(0.3))
        >>> bool(slope > 0)   # a lengthscale of 0.3 is too short for sin(x)
        True
    """
    builder = get_kernel(kernel)
    x, y = _check_data(x, y)
    config = dict(builder=builder, num_probes=positive_int(num_probes, "num_probes"),
                  lanczos_steps=positive_int(lanczos_steps, "lanczos_steps"),
                  cg_tolerance=float(cg_tolerance), maxiter=maxiter,
                  preconditioner_rank=_rank(preconditioner_rank),
                  on_nonconvergence=on_nonconvergence)
    terms = _compiled(_likelihood_terms, on_nonconvergence)(x, y, lengthscale, variance, noise,
                                                            key, **config)
    return terms if return_terms else terms.value


def _rank(preconditioner_rank: int) -> int:
    return 0 if preconditioner_rank == 0 else positive_int(preconditioner_rank,
                                                           "preconditioner_rank")


def _compiled(function: Callable, on_nonconvergence: str) -> Callable:
    """`function` under jit, so that repeated calls (an optimisation loop) reuse one compiled
    program instead of re-tracing every loop; but run eagerly with on_nonconvergence="raise",
    where jit would wrap the solver's ConvergenceError into a runtime error."""
    return function if on_nonconvergence == "raise" else _JITTED[function]


def _likelihood_terms(x: jax.Array, y: jax.Array, lengthscale: Any, variance: Any, noise: Any,
                      key: jax.Array, **config: Any) -> GPLikelihoodTerms:
    arrays = tuple(jnp.asarray(value) for value in (x, y, lengthscale, variance, noise))
    return _terms_with_gradient(tuple(sorted(config.items())), *arrays, key)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _terms_with_gradient(config: tuple, x: jax.Array, y: jax.Array, lengthscale: jax.Array,
                         variance: jax.Array, noise: jax.Array, key: jax.Array
                         ) -> GPLikelihoodTerms:
    # The value alone does not need the probes' solve, which only serves the gradient of the
    # log-determinant: it runs in the derivative rule below, not here.
    return _terms(dict(config), x, y, lengthscale, variance, noise, key, differentiable=False)


@_terms_with_gradient.defjvp
def _terms_with_gradient_jvp(config: tuple, primals: tuple, tangents: tuple
                             ) -> tuple[GPLikelihoodTerms, GPLikelihoodTerms]:
    *arrays, key = primals
    return jax.jvp(lambda *a: _terms(dict(config), *a, key, differentiable=True),
                   tuple(arrays), tuple(tangents[:-1]))


def _terms(config: dict, x: jax.Array, y: jax.Array, lengthscale: Any, variance: Any,
           noise: Any, key: jax.Array, differentiable: bool) -> GPLikelihoodTerms:
    n = x.shape[0]
    problem = _problem(x, lengthscale, variance, noise, config["builder"],
                       config["cg_tolerance"], config["maxiter"],
                       config["preconditioner_rank"], config["on_nonconvergence"])
    a = problem.solve(y[:, None])[:, 0]
    data_fit = -0.5 * jnp.dot(y, a)
    probes = rademacher_probes(key, n, config["num_probes"], x.dtype)
    log_det = stochastic_logdet(lambda v: problem.K @ v + problem.noise * v, probes,
                                solve=problem.solve if differentiable else None,
                                num_steps=config["lanczos_steps"],
                                preconditioner=problem.preconditioner, trace=problem.trace)
    value = data_fit - 0.5 * log_det - 0.5 * n * math.log(2 * math.pi)
    return GPLikelihoodTerms(value, data_fit, log_det)


def gp_predict(
    x: Any, y: Any, x_test: Any, lengthscale: Any, variance: Any, noise: Any, *,
    kernel: str | KernelBuilder = "gaussian", return_variance: bool = True,
    include_noise: bool = False, cg_tolerance: float = 1e-4, maxiter: int | None = None,
    preconditioner_rank: int = 0, on_nonconvergence: str = "warn",
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The GP posterior at `x_test` given the data (x, y): mean, and optionally variance.

    mean(t) = K(t, x) a with a = (K + noise I)^-1 y (one conjugate gradient solve), and
    variance(t) = k(t, t) - K(t, x) (K + noise I)^-1 K(x, t), exact up to the solver's
    tolerance: one more solve with the m test columns K(x, t) as right-hand sides, so it costs
    about m times more per iteration than the mean; it stores the (n, m) block K(x, x_test).
    Predict the variance on a few hundred points (e.g. a plotting grid), not millions.

    Args:
        x: training inputs (n, D).
        y: training targets (n,).
        x_test: test inputs (m, D).
        lengthscale: the kernel's lengthscale (see `gp_marginal_log_likelihood`).
        variance: the kernel's variance.
        noise: the noise variance.
        kernel: a name of `KERNELS` or a builder (x, y, lengthscale, variance) -> LazyTensor.
        return_variance: also return the posterior variance.
        include_noise: add the noise variance (the variance of a new observation y, rather
            than of f).
        cg_tolerance: as in `gp_marginal_log_likelihood`.
        maxiter: as in `gp_marginal_log_likelihood`.
        preconditioner_rank: as in `gp_marginal_log_likelihood`.
        on_nonconvergence: as in `gp_marginal_log_likelihood`.

    Returns:
        mean (m,), or (mean (m,), variance (m,)) with return_variance. Differentiable.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import gp_predict
        >>> x = jnp.linspace(0, 5, 30)[:, None]
        >>> mean, var = gp_predict(x, jnp.sin(x[:, 0]), jnp.array([[2.0], [20.0]]), 1.0, 1.0,
        ...                        1e-4)
        >>> [round(float(m), 2) for m in mean], [round(float(v), 2) for v in var]
        ([0.91, 0.0], [0.0, 1.0])
    """
    builder = get_kernel(kernel)
    x, y = _check_data(x, y)
    x_test = points(x_test, "x_test").astype(x.dtype)
    if x_test.ndim != 2:
        raise ValueError(f"x_test must have shape (m, D), got shape {tuple(x_test.shape)}")
    same_dim(x, x_test, "x", "x_test")
    config = dict(builder=builder, return_variance=bool(return_variance),
                  cg_tolerance=float(cg_tolerance), maxiter=maxiter,
                  preconditioner_rank=_rank(preconditioner_rank),
                  on_nonconvergence=on_nonconvergence)
    result = _compiled(_posterior, on_nonconvergence)(x, y, x_test, lengthscale, variance,
                                                      noise, **config)
    if return_variance and include_noise:
        mean, posterior = result
        return mean, posterior + float_array(noise, "noise").astype(x.dtype)
    return result


def _posterior(x: jax.Array, y: jax.Array, x_test: jax.Array, lengthscale: Any, variance: Any,
               noise: Any, *, builder: KernelBuilder, return_variance: bool,
               cg_tolerance: float, maxiter: int | None,
               preconditioner_rank: int, on_nonconvergence: str
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    problem = _problem(x, lengthscale, variance, noise, builder, cg_tolerance, maxiter,
                       preconditioner_rank, on_nonconvergence)
    a = problem.solve(y[:, None])
    mean = (builder(x_test, x, lengthscale, variance) @ a)[:, 0]
    if not return_variance:
        return mean
    cross = kernel_columns(builder, x, x_test, lengthscale, variance)        # (n, m)
    explained = jnp.sum(cross * problem.solve(cross), axis=0)
    prior = kernel_diagonal(builder, x_test, lengthscale, variance)
    return mean, jnp.maximum(prior - explained, 0.0)


_STATIC = ("builder", "num_probes", "lanczos_steps", "cg_tolerance", "maxiter",
           "preconditioner_rank", "on_nonconvergence", "return_variance")
_JITTED = {
    _likelihood_terms: jax.jit(_likelihood_terms, static_argnames=_STATIC[:-1]),
    _posterior: jax.jit(_posterior, static_argnames=tuple(
        name for name in _STATIC if name not in ("num_probes", "lanczos_steps"))),
}
