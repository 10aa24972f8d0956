"""Kernel methods on jaxkeops's public API: kernel builders, k-nearest neighbours, k-means and
Gaussian-process regression, none of which ever stores an M x N matrix.

    kernels      gaussian, laplacian, cauchy, matern12/32/52 (and matern(nu=...)): LazyTensors
    neighbors    knn(x, y, k, metric=...) -> (distances, indices)
    clustering   kmeans(x, k, iters, key=..., init=...) -> KMeansResult
    logdet       stochastic_logdet: stochastic Lanczos quadrature, with Hutchinson gradients
    precondition pivoted_cholesky, low_rank_preconditioner (for conjugate gradient and log det)
    gp           gp_marginal_log_likelihood, gp_predict

This package is a top floor: it imports only jax, numpy, the standard library and the names
that `jaxkeops` itself exports (tests/test_ops_layering.py checks it). The user guide is
docs/kernel-methods.md.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxkeops.ops import gaussian, knn
    >>> x = jnp.array([[0.0], [1.0], [5.0]])
    >>> print(knn(x, x, k=2)[1])
    [[0 1]
     [1 0]
     [2 1]]
    >>> (gaussian(x, lengthscale=2.0) @ jnp.ones(3)).shape
    (3,)
"""

from .clustering import INITS, KMeansResult, kmeans
from .gp import GPLikelihoodTerms, gp_marginal_log_likelihood, gp_predict
from .kernels import (
    KERNELS,
    cauchy,
    gaussian,
    get_kernel,
    laplacian,
    matern,
    matern12,
    matern32,
    matern52,
)
from .logdet import rademacher_probes, stochastic_logdet
from .neighbors import METRICS, knn
from .precondition import LowRankPreconditioner, low_rank_preconditioner, pivoted_cholesky

__all__ = [
    "INITS", "KERNELS", "METRICS", "GPLikelihoodTerms", "KMeansResult", "LowRankPreconditioner",
    "cauchy", "gaussian", "get_kernel", "gp_marginal_log_likelihood", "gp_predict", "kmeans",
    "knn", "laplacian", "low_rank_preconditioner", "matern", "matern12", "matern32",
    "matern52", "pivoted_cholesky", "rademacher_probes", "stochastic_logdet",
]
