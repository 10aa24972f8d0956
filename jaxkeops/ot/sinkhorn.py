"""Sinkhorn divergences and the Hausdorff divergence between sampled measures (GeomLoss's
`sinkhorn_samples.py` and `sinkhorn_divergence.py`), on top of the solver core.

    OT_eps,rho(a, b) = min_pi <pi, C> + eps KL(pi, a x b) + rho KL(pi 1, a) + rho KL(pi^T 1, b)
    S_eps,rho(a, b)  = OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2        (debias=True)

with eps = blur**p and rho = reach**p (rho = None: balanced OT, exact marginals).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .costs import Cost, check_cost, cost_matrix
from .inputs import Measures, check_positive
from .multiscale import multiscale_solve
from .schedule import Schedule, max_diameter
from .solver import (
    CostMatrices,
    DualPotentials,
    SinkhornInfo,
    extrapolate,
    log_weights,
    sinkhorn_loop,
)

Array = jax.Array
stop_gradient = jax.lax.stop_gradient
BACKENDS = ("auto", "online", "tensorized", "multiscale")


@dataclass(frozen=True)
class SinkhornParams:
    """The parameters of GeomLoss's Sinkhorn solver, checked.

    `p` (1 or 2 for the default costs |x - y| and |x - y|^2 / 2), `blur` (eps = blur**p),
    `reach` (rho = reach**p; None for balanced OT), `diameter` (the first blur of the
    epsilon-scaling descent; None: estimated from the data), `scaling` (ratio of successive
    blurs, in (0, 1)), `cost` (see `jaxkeops.ot.costs`), `debias`, `backend` ("auto"/"online":
    jaxkeops kernels; "tensorized": dense (*batch, N, M) matrices for the default costs),
    `tol` and `max_extra_iter` (the optional convergence check, see `sinkhorn_loop`).

    Example:
        >>> from jaxkeops.ot import SinkhornParams
        >>> SinkhornParams(p=2, blur=0.1, reach=0.5).eps, SinkhornParams(blur=0.1, reach=0.5).rho
        (0.010000000000000002, 0.25)
    """

    p: int = 2
    blur: float = 0.05
    reach: float | None = None
    diameter: Any = None
    scaling: float = 0.5
    cost: Cost = None
    debias: bool = True
    backend: str = "auto"
    tol: float | None = None
    max_extra_iter: int = 1000
    cluster_scale: float | None = None  # multiscale: the side of the grid's cells
    truncate: float | None = 5  # multiscale: keep blocks with f + g > C - truncate * eps

    def __post_init__(self):
        check_cost(self.cost, self.p)
        for name in ("blur", "reach", "scaling"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (int, float, np.integer,
                                                            np.floating)):
                raise TypeError(f"{name} must be a Python number (a static setting of the "
                                f"solver), got {value!r}")
        check_positive("blur", self.blur)
        check_positive("reach", self.reach, allow_none=True)
        check_positive("diameter", self.diameter, allow_none=True)
        check_positive("tol", self.tol, allow_none=True)
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)) \
                or not 0 < self.scaling < 1:
            raise ValueError(f"scaling must be a number in (0, 1), got {self.scaling!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "multiscale":
            check_positive("cluster_scale", self.cluster_scale, allow_none=True)
            check_positive("truncate", self.truncate, allow_none=True)
        if isinstance(self.max_extra_iter, bool) or not isinstance(self.max_extra_iter, int) \
                or self.max_extra_iter < 0:
            raise ValueError(f"max_extra_iter must be an integer >= 0, got "
                             f"{self.max_extra_iter!r}")
        if not isinstance(self.debias, bool):
            raise TypeError(f"debias must be True or False, got {self.debias!r}")

    @property
    def eps(self) -> Any:
        """The target temperature blur**p.

        Example:
            >>> from jaxkeops.ot import SinkhornParams
            >>> round(SinkhornParams(p=2, blur=0.1).eps, 6), SinkhornParams(p=1, blur=0.1).eps
            (0.01, 0.1)
        """
        return self.blur**self.p

    @property
    def rho(self) -> Any:
        """The strength reach**p of the marginal penalties (None: balanced).

        Example:
            >>> from jaxkeops.ot import SinkhornParams
            >>> SinkhornParams(p=2, reach=0.5).rho, SinkhornParams().rho is None
            (0.25, True)
        """
        return None if self.reach is None else self.reach**self.p

    @property
    def dense(self) -> bool:
        """Whether the cost matrices are dense arrays (tensorized backend, default cost).

        Example:
            >>> from jaxkeops.ot import SinkhornParams
            >>> SinkhornParams(backend="tensorized").dense, SinkhornParams().dense
            (True, False)
        """
        return self.backend == "tensorized" and self.cost is None

    def schedule(self, x: Array, y: Array) -> Schedule:
        """The epsilon-scaling schedule for these point clouds (from their `max_diameter`
        unless `diameter` was given).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import SinkhornParams
            >>> x, y = jnp.zeros((3, 2)), jnp.array([[3.0, 4.0]])   # diameter 5
            >>> s = SinkhornParams(blur=0.5).schedule(x, y)
            >>> [round(float(s.eps(k)), 4) for k in range(int(s.length))]
            [25.0, 25.0, 6.25, 1.5625, 0.3906, 0.25]
        """
        diameter = max_diameter(x, y) if self.diameter is None else self.diameter
        return Schedule.create(self.p, diameter, self.blur, self.scaling, x.dtype)

    def cost_matrices(self, x: Array, y: Array, cross: bool = True,
                      symmetric: bool = False) -> CostMatrices:
        """GeomLoss's C_xy = C(x, y~), C_yx = C(y, x~) (cross) and C_xx = C(x, x~),
        C_yy = C(y, y~) (symmetric), where ~ marks a constant (no gradient).

        Args:
            x: (*batch, N, D) points.
            y: (*batch, M, D) points.
            cross: build C_xy and C_yx (for OT(a, b)).
            symmetric: build C_xx and C_yy (for the debiasing terms OT(a, a), OT(b, b)).

        Returns:
            The CostMatrices, None where not asked for.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import SinkhornParams
            >>> x, y = jnp.zeros((3, 2)), jnp.ones((4, 2))
            >>> m = SinkhornParams(backend="tensorized").cost_matrices(x, y, symmetric=True)
            >>> m.xy.matrix.shape, m.yx.matrix.shape, m.yy.matrix.shape
            ((3, 4), (4, 3), (4, 4))
        """
        def make(u, v):
            return cost_matrix(u, stop_gradient(v), self.p, self.cost, self.dense)
        return CostMatrices(make(x, y) if cross else None, make(y, x) if cross else None,
                            make(x, x) if symmetric else None, make(y, y) if symmetric else None)


def unbalanced_weight(v: Array, eps: Any, rho: Any) -> Array:
    """(rho + eps/2) v, whose gradient is (rho + eps) times the incoming one: GeomLoss's
    UnbalancedWeight (Séjourné et al. 2019, Proposition 12).

    Example:
        >>> import jax
        >>> from jaxkeops.ot import unbalanced_weight
        >>> value, slope = jax.value_and_grad(unbalanced_weight)(1.0, 0.5, 2.0)
        >>> float(value), float(slope)
        (2.25, 2.5)
    """
    backward = (rho + eps) * v
    return backward - stop_gradient(backward) + stop_gradient((rho + eps / 2) * v)


def _scal(a: Array, f: Array) -> Array:
    return (a * f).sum(-1)


def sinkhorn_cost(eps: Any, rho: Any, a: Array, b: Array, potentials: DualPotentials,
                  debias: bool = True, return_potentials: bool = False) -> Any:
    """The Sinkhorn divergence (debias=True) or the entropic OT cost from the potentials
    (*batch,), or with `return_potentials` the pair (F on x, G on y): GeomLoss's
    `sinkhorn_cost`. In unbalanced OT the dual formulas of Séjourné et al. are used.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import DualPotentials, sinkhorn_cost
        >>> a = b = jnp.array([0.5, 0.5])
        >>> pots = DualPotentials(f_ba=jnp.array([1.0, 2.0]), g_ab=jnp.array([0.0, 1.0]))
        >>> float(sinkhorn_cost(0.01, None, a, b, pots, debias=False))
        2.0
    """
    f_ba, g_ab, f_aa, g_bb = potentials
    if return_potentials:
        return (f_ba - f_aa, g_ab - g_bb) if debias else (f_ba, g_ab)
    if rho is None:
        if debias:
            return _scal(a, f_ba - f_aa) + _scal(b, g_ab - g_bb)
        return _scal(a, f_ba) + _scal(b, g_ab)
    if debias:
        return (_scal(a, unbalanced_weight(jnp.exp(-f_aa / rho) - jnp.exp(-f_ba / rho), eps, rho))
                + _scal(b, unbalanced_weight(jnp.exp(-g_bb / rho) - jnp.exp(-g_ab / rho),
                                             eps, rho)))
    return (_scal(a, unbalanced_weight(1 - jnp.exp(-f_ba / rho), eps, rho))
            + _scal(b, unbalanced_weight(1 - jnp.exp(-g_ab / rho), eps, rho)))


def solve(m: Measures, params: SinkhornParams, cross: bool = True,
          symmetric: bool = False) -> tuple[DualPotentials, SinkhornInfo]:
    """The differentiable (extrapolated) potentials of OT(a, b) (cross) and of OT(a, a),
    OT(b, b) (symmetric), and the SinkhornInfo of the loop.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import SinkhornParams, measures
        >>> from jaxkeops.ot.sinkhorn import solve
        >>> m = measures(None, jnp.zeros((4, 2)), None, jnp.ones((3, 2)))
        >>> potentials, _ = solve(m, SinkhornParams(blur=0.01), symmetric=True)
        >>> potentials.f_ba.shape, potentials.g_bb.shape
        ((4,), (3,))
    """
    schedule = params.schedule(m.x, m.y)
    costs = params.cost_matrices(m.x, m.y, cross, symmetric)
    a_log, b_log = log_weights(m.a), log_weights(m.b)
    loop, info = sinkhorn_loop(a_log, b_log, costs, schedule, params.rho, params.tol,
                               params.max_extra_iter)
    return extrapolate(costs, a_log, b_log, loop, schedule.target, params.rho), info


def sinkhorn_loss(m: Measures, params: SinkhornParams,
                  potentials: bool = False) -> tuple[Any, SinkhornInfo]:
    """GeomLoss's `sinkhorn_tensorized` / `sinkhorn_online` on canonical measures: the
    (*batch,) values, or the potentials (F, G), and the SinkhornInfo.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import SinkhornParams, measures, sinkhorn_loss
        >>> m = measures(None, jnp.zeros((4, 2)), None, jnp.ones((3, 2)))
        >>> value, info = sinkhorn_loss(m, SinkhornParams(blur=0.01))
        >>> round(float(value), 4)          # |(1, 1)|^2 / 2
        1.0
    """
    pots, info = solve(m, params, cross=True, symmetric=params.debias)
    return sinkhorn_cost(params.eps, params.rho, m.a, m.b, pots, params.debias, potentials), info


def hausdorff_loss(m: Measures, params: SinkhornParams,
                   potentials: bool = False) -> tuple[Any, SinkhornInfo]:
    """The Hausdorff divergence of Feydy et al. (2019), built from the symmetric potentials
    p_a of OT(a, a) and p_b of OT(b, b), each extrapolated to both clouds:

        H(a, b) = 1/2 <a, p_b - p_a>_x + 1/2 <b, p_a - p_b>_y

    (F, G) = (1/2 (p_b - p_a) on x, 1/2 (p_a - p_b) on y) are its gradients with respect to
    the weights. Balanced only (GeomLoss 0.3.1 itself has no working "hausdorff" routine).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import SinkhornParams, hausdorff_loss, measures
        >>> m = measures(None, jnp.zeros((4, 2)), None, jnp.ones((3, 2)))
        >>> value, _ = hausdorff_loss(m, SinkhornParams(blur=0.01))
        >>> round(float(value), 4)          # |(1, 1)|^2 / 2 for two Dirac masses
        1.0
    """
    if params.rho is not None:
        raise NotImplementedError("loss='hausdorff' is implemented for balanced OT only "
                                  "(reach=None); use loss='sinkhorn' for unbalanced OT")
    schedule = params.schedule(m.x, m.y)
    a_log, b_log = log_weights(m.a), log_weights(m.b)
    symmetric = params.cost_matrices(m.x, m.y, cross=False, symmetric=True)
    loop, info = sinkhorn_loop(a_log, b_log, symmetric, schedule, None, params.tol,
                               params.max_extra_iter)
    # extrapolate() updates f_ba from g_ab through C_xy: feed it p_b to get p_b on x.
    everything = params.cost_matrices(m.x, m.y, cross=True, symmetric=True)
    crossed = DualPotentials(loop.f_aa, loop.g_bb, loop.f_aa, loop.g_bb)
    pb_x, pa_y, pa_x, pb_y = extrapolate(everything, a_log, b_log, crossed, schedule.target)
    F, G = 0.5 * (pb_x - pa_x), 0.5 * (pa_y - pb_y)
    if potentials:
        return (F, G), info
    return _scal(m.a, F) + _scal(m.b, G), info


def multiscale_sinkhorn_loss(m: Measures, params: SinkhornParams,
                             potentials: bool = False) -> tuple[Any, SinkhornInfo]:
    """`sinkhorn_loss` by GeomLoss's multiscale solver (`jaxkeops.ot.multiscale`): the
    (*batch,) values, or the potentials (F, G) in the order of the given points.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import SinkhornParams, measures
        >>> from jaxkeops.ot.sinkhorn import multiscale_sinkhorn_loss
        >>> m = measures(None, jnp.zeros((4, 2)), None, jnp.ones((3, 2)))
        >>> value, _ = multiscale_sinkhorn_loss(m, SinkhornParams(blur=0.01, backend="multiscale"))
        >>> round(float(value), 4)
        1.0
    """
    pots, cx, cy, info = multiscale_solve(m, params)
    batch = m.batch_shape
    if potentials:
        F, G = sinkhorn_cost(params.eps, params.rho, cx.weights, cy.weights, pots,
                             params.debias, True)
        F = jnp.zeros_like(F).at[cx.order].set(F).reshape(*batch, -1)
        G = jnp.zeros_like(G).at[cy.order].set(G).reshape(*batch, -1)
        return (F, G), info
    n = int(np.prod(batch, dtype=int))
    per_batch = DualPotentials(*(None if v is None else v.reshape(n, -1) for v in pots))
    value = sinkhorn_cost(params.eps, params.rho, cx.weights.reshape(n, -1),
                          cy.weights.reshape(n, -1), per_batch, params.debias)
    return value.reshape(batch), info


ROUTINES = {"sinkhorn": sinkhorn_loss, "hausdorff": hausdorff_loss}


def run(routine: str, m: Measures, params: SinkhornParams, potentials: bool = False) -> Any:
    """`sinkhorn_loss` ("sinkhorn"), `hausdorff_loss` ("hausdorff") or `solve` of OT(a, b)
    ("plan"), compiled once per set of static parameters (the diameter stays an argument), so
    that eager calls do not retrace the loop.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot.sinkhorn import SinkhornParams, run
        >>> from jaxkeops.ot import measures
        >>> m = measures(None, jnp.zeros((4, 2)), None, jnp.ones((3, 2)))
        >>> round(float(run("sinkhorn", m, SinkhornParams(blur=0.01))[0]), 4)
        1.0
    """
    if params.backend == "multiscale" and params.cluster_scale is not None:
        # The grid's size, diameter / cluster_scale cells per dim, must be static.
        return _run_jitted(m, None, params, routine, potentials)
    return _run_jitted(m, params.diameter, replace(params, diameter=None), routine, potentials)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _run_jitted(m: Measures, diameter: Any, params: SinkhornParams, routine: str,
                potentials: bool) -> Any:
    if diameter is not None:
        params = replace(params, diameter=diameter)
    if params.backend == "multiscale":
        if routine != "sinkhorn":
            raise NotImplementedError(f"backend='multiscale' computes loss='sinkhorn' only, not "
                                      f"{routine!r} (as in GeomLoss)")
        return multiscale_sinkhorn_loss(m, params, potentials)
    if routine == "plan":
        return solve(m, params, cross=True, symmetric=False)
    return ROUTINES[routine](m, params, potentials)
