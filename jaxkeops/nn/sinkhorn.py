"""SinkhornLoss: the debiased Sinkhorn divergence of `jaxkeops.ot` as a Flax nnx module, so
that it can be an attribute of a model and go through nnx.jit, nnx.grad and nnx.vmap."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jaxkeops.ot import SamplesLoss


class SinkhornLoss(nnx.Module):
    """The Sinkhorn divergence between two point clouds, as a loss module (no parameters).

    `SinkhornLoss(p, blur, ...)(x, y, x_weights=a, y_weights=b)` is
    `jaxkeops.ot.SamplesLoss("sinkhorn", p, blur, ...)(a, x, b, y)`: with the cost
    C(x, y) = |x - y|^p / p (p = 2) or |x - y| (p = 1) and eps = blur**p, the debiased
    divergence S(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2 (GeomLoss's
    definition), computed by epsilon-scaling Sinkhorn iterations on jaxkeops log-sum-exp
    reductions: memory linear in the number of points. Points are (N, D) or (*batch, N, D),
    weights (*batch, N) (uniform when omitted); the result is a scalar or (*batch,).
    Gradients with respect to the points and the weights use the envelope theorem, as
    GeomLoss.

    Args:
        p: 1 or 2, the exponent of the ground cost.
        blur: the length scale of the entropic blur (eps = blur**p): smaller is closer to
            exact OT and takes more iterations.
        reach: None for balanced OT, or the length scale of unbalanced OT.
        diameter: the first blur of the epsilon-scaling descent (None: from the data).
        scaling: the ratio of successive blurs in the descent, in (0, 1).
        debias: False gives the entropic OT cost OT_eps(a, b) instead of the divergence.
        **options: other keywords of `jaxkeops.ot.SamplesLoss` (cost, backend, tol, ...).

    Example:
        >>> import jax
        >>> from jaxkeops.nn import SinkhornLoss
        >>> loss = SinkhornLoss(blur=0.05)
        >>> x = jax.random.normal(jax.random.key(0), (300, 2))
        >>> y = jax.random.normal(jax.random.key(1), (200, 2)) + 2.0
        >>> value, grad_x = jax.value_and_grad(loss)(x, y)
        >>> bool(value > 3.0), grad_x.shape     # about |shift|^2 / 2 = 4
        (True, (300, 2))
    """

    def __init__(self, p: int = 2, blur: float = 0.05, reach: float | None = None,
                 diameter: float | None = None, scaling: float = 0.5, debias: bool = True,
                 **options: Any):
        if options.get("potentials"):
            raise ValueError("SinkhornLoss returns the loss; for the dual potentials use "
                             "jaxkeops.ot.SamplesLoss(..., potentials=True)")
        self.samples_loss = SamplesLoss("sinkhorn", p=p, blur=blur, reach=reach,
                                        diameter=diameter, scaling=scaling, debias=debias,
                                        **options)

    def __call__(self, x: jax.Array, y: jax.Array, *, x_weights: jax.Array | None = None,
                 y_weights: jax.Array | None = None) -> jax.Array:
        """The loss between the clouds x (*batch, N, D) and y (*batch, M, D), with optional
        weights (*batch, N) and (*batch, M) (uniform by default, each summing to 1 for
        balanced OT).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.nn import SinkhornLoss
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [1.0], [5.0]])
            >>> loss = SinkhornLoss(blur=0.01)
            >>> value = loss(x, y, x_weights=jnp.array([0.5, 0.5]),
            ...              y_weights=jnp.array([0.5, 0.5, 0.0]))   # the same measure
            >>> bool(abs(value) < 1e-5)
            True
            >>> loss(jnp.ones((3, 2, 1)), jnp.zeros((3, 4, 1))).shape   # a batch of 3 pairs
            (3,)
        """
        if (x_weights is None) != (y_weights is None):
            raise ValueError("give both x_weights and y_weights, or neither (uniform weights)")
        if x_weights is None:
            return self.samples_loss(x, y)
        return self.samples_loss(x_weights, x, y_weights, y)

    def __repr__(self) -> str:
        return f"SinkhornLoss({self.samples_loss!r})"
