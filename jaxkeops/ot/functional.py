"""Functional forms: `sinkhorn_divergence`, `sinkhorn_potentials` and `sinkhorn_plan`.

They take the point clouds first and the weights as optional arguments (uniform when None),
and the parameters of `SamplesLoss` (GeomLoss's) as keywords. All are jit-able, differentiable
(envelope theorem: the gradient does not backpropagate through the loop) and vmap-able.
"""

from __future__ import annotations

from typing import Any

import jax

from .costs import Cost
from .inputs import measures
from .plan import TransportPlan
from .sinkhorn import SinkhornParams, run
from .solver import SinkhornInfo

Array = jax.Array


def sinkhorn_divergence(
    x: Array, y: Array, a: Array | None = None, b: Array | None = None, *, p: int = 2,
    blur: float = 0.05, reach: float | None = None, diameter: Any = None, scaling: float = 0.5,
    cost: Cost = None, debias: bool = True, backend: str = "auto", tol: float | None = None,
    max_extra_iter: int = 1000, return_info: bool = False,
) -> Array | tuple[Array, SinkhornInfo]:
    """The (debiased) Sinkhorn divergence S_eps(a, b) between x (N, D) or (*batch, N, D) with
    weights a and y with weights b (None: uniform): a scalar, or (*batch,) values. Same
    parameters and values as `SamplesLoss("sinkhorn", ...)(a, x, b, y)`; with
    `return_info=True`, also a SinkhornInfo (iterations, last change, convergence).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.ot import sinkhorn_divergence
        >>> x = jax.random.uniform(jax.random.key(0), (50, 2))
        >>> round(float(sinkhorn_divergence(x, x + 0.5, blur=0.01)), 2)   # ~ |0.5, 0.5|^2 / 2
        0.25
        >>> jax.grad(sinkhorn_divergence)(x, x + 0.5).shape
        (50, 2)
    """
    params = SinkhornParams(p, blur, reach, diameter, scaling, cost, debias, backend, tol,
                            max_extra_iter)
    value, info = run("sinkhorn", measures(a, x, b, y), params)
    return (value, info) if return_info else value


def sinkhorn_potentials(
    x: Array, y: Array, a: Array | None = None, b: Array | None = None, *, p: int = 2,
    blur: float = 0.05, reach: float | None = None, diameter: Any = None, scaling: float = 0.5,
    cost: Cost = None, debias: bool = False, backend: str = "auto", tol: float | None = None,
    max_extra_iter: int = 1000, return_info: bool = False,
) -> tuple[Array, Array] | tuple[Array, Array, SinkhornInfo]:
    """The dual potentials (f on x, g on y) of entropic OT between (a, x) and (b, y), of shapes
    (*batch, N) and (*batch, M). By default (debias=False) those of OT_eps(a, b), which make
    the transport plan a_i b_j exp((f_i + g_j - C_ij) / eps); with debias=True, GeomLoss's
    debiased pair (f_ba - f_aa, g_ab - g_bb), as SamplesLoss(potentials=True) returns by
    default. With `return_info=True`, also a SinkhornInfo.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import sinkhorn_potentials
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0]])
        >>> f, g = sinkhorn_potentials(x, y, blur=0.01)
        >>> round(float(f.mean() + g.mean()), 3)      # OT cost: W2^2 / 2 = (0 + 1) / 4
        0.25
    """
    params = SinkhornParams(p, blur, reach, diameter, scaling, cost, debias, backend, tol,
                            max_extra_iter)
    (f, g), info = run("sinkhorn", measures(a, x, b, y), params, potentials=True)
    return (f, g, info) if return_info else (f, g)


def sinkhorn_plan(
    x: Array, y: Array, a: Array | None = None, b: Array | None = None, *, p: int = 2,
    blur: float = 0.05, reach: float | None = None, diameter: Any = None, scaling: float = 0.5,
    cost: Cost = None, backend: str = "auto", tol: float | None = None,
    max_extra_iter: int = 1000, return_info: bool = False,
) -> TransportPlan | tuple[TransportPlan, SinkhornInfo]:
    """Solves entropic OT between (a, x) and (b, y) and returns the lazy TransportPlan
    pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps), eps = blur**p (with `return_info`, also a
    SinkhornInfo).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import sinkhorn_plan
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.9], [0.1]])
        >>> sinkhorn_plan(x, y, blur=0.01).dense().round(3).tolist()   # x_0 -> y_1, x_1 -> y_0
        [[0.0, 0.5], [0.5, 0.0]]
    """
    params = SinkhornParams(p, blur, reach, diameter, scaling, cost, False, backend, tol,
                            max_extra_iter)
    m = measures(a, x, b, y)
    potentials, info = run("plan", m, params)
    plan = TransportPlan(m.x, m.y, potentials.f_ba, potentials.g_ab, m.a, m.b, eps=params.eps,
                         p=p, cost=cost, backend=backend)
    return (plan, info) if return_info else plan
