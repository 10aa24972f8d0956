"""The symmetric log-domain Sinkhorn loop of GeomLoss, with epsilon-scaling, jit-able.

This is the solver core: it only needs cost matrix objects with a `softmin(eps, h)` method
(`jaxkeops.ot.costs`), so a block-sparse (multiscale) cost can plug in unchanged.

Gradients follow GeomLoss's envelope-theorem trick. The loop runs on `stop_gradient`-ed inputs
(a `lax.while_loop`, whose length may depend on the data); then one last Sinkhorn update, from the
loop's potentials and with gradients enabled, "extrapolates" the potentials:

    f_i = -eps log sum_j b_j exp((g_j - C(x_i, y_j)) / eps)      (g_j, log b_j: constants)

At convergence, the derivatives of the OT cost with respect to x (through C) and to the weights
(the potentials themselves) are those of this one step, so memory and the size of the gradient's
program do not depend on the number of iterations. As in GeomLoss, C(x_i, y_j) is
differentiated with respect to its first argument only (y is held constant in C_xy, x in C_yx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .costs import CostMatrix
from .schedule import Schedule, dampening

Array = jax.Array
stop_gradient = jax.lax.stop_gradient

# GeomLoss replaces log(0) by -100000 so that empty weights never produce NaNs.
LOG_ZERO = -100000.0


def log_weights(a: Array) -> Array:
    """log(a), with -100000 where a <= 0 (GeomLoss's `log_weights`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import log_weights
        >>> log_weights(jnp.array([1.0, 0.0])).tolist()
        [0.0, -100000.0]
    """
    positive = a > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, a, 1)), LOG_ZERO)


class DualPotentials(NamedTuple):
    """The dual potentials of the OT problems that the loop solves (None when not solved):
    f_ba (on x) and g_ab (on y) for OT(a, b); f_aa (on x) for OT(a, a); g_bb (on y) for
    OT(b, b). Each has the shape of the weights it lives on, (*batch, N) or (*batch, M).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import DualPotentials
        >>> DualPotentials(f_ba=jnp.zeros(3), g_ab=jnp.zeros(2)).f_aa is None
        True
    """

    f_ba: Array | None = None
    g_ab: Array | None = None
    f_aa: Array | None = None
    g_bb: Array | None = None


class SinkhornInfo(NamedTuple):
    """How the loop ended: `iterations` (int32, the number of Sinkhorn updates, the
    epsilon-scaling steps included), `error` (the largest change max |f~ - f| of a potential
    in the last update, in units of the cost) and `converged` (error <= tol; None when no
    tolerance was asked for).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import sinkhorn_divergence
        >>> x = jnp.linspace(0, 1, 20).reshape(10, 2)
        >>> _, info = sinkhorn_divergence(x, x + 0.1, tol=1e-6, return_info=True)
        >>> bool(info.converged), bool(info.error <= 1e-6)
        (True, True)
    """

    iterations: Array
    error: Array
    converged: Array | None


@dataclass(frozen=True)
class CostMatrices:
    """The cost matrices of the problems to solve: C_xy and C_yx for OT(a, b), C_xx for OT(a, a)
    and C_yy for OT(b, b). GeomLoss builds them as cost(x, detached y), cost(y, detached x),
    cost(x, detached x) and cost(y, detached y).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import CostMatrices, cost_matrix
        >>> x, y = jnp.zeros((3, 2)), jnp.ones((4, 2))
        >>> costs = CostMatrices(xx=cost_matrix(x, x, 2, None, dense=True))
        >>> costs.xy is None, costs.xx.matrix.shape
        (True, (3, 3))
    """

    xy: CostMatrix | None = None
    yx: CostMatrix | None = None
    xx: CostMatrix | None = None
    yy: CostMatrix | None = None

    def detached(self) -> CostMatrices:
        """The same cost matrices without gradients (None stays None).

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jaxkeops.ot import CostMatrices, cost_matrix
            >>> def total(x):
            ...     costs = CostMatrices(xx=cost_matrix(x, x, 2, None, dense=True)).detached()
            ...     return costs.xx.matrix.sum()
            >>> jax.grad(total)(jnp.array([[0.0], [1.0]])).tolist()
            [[0.0], [0.0]]
        """
        return CostMatrices(*(None if c is None else c.detached()
                              for c in (self.xy, self.yx, self.xx, self.yy)))


def _update(costs: CostMatrices, a_log: Array, b_log: Array, potentials: DualPotentials,
            eps: Any, damping: Any) -> DualPotentials:
    """One Sinkhorn update of every potential, all from the previous ones (in parallel)."""
    f_ba, g_ab, f_aa, g_bb = potentials

    def softmin(cost, log_w, h):
        if cost is None:
            return None
        return damping * cost.softmin(eps, log_w if h is None else log_w + h / eps)

    return DualPotentials(softmin(costs.xy, b_log, g_ab), softmin(costs.yx, a_log, f_ba),
                          softmin(costs.xx, a_log, f_aa), softmin(costs.yy, b_log, g_bb))


def _largest_change(old: DualPotentials, new: DualPotentials) -> Array:
    changes = [jnp.max(jnp.abs(n - o)) for o, n in zip(old, new) if o is not None]
    return jnp.max(jnp.stack(changes))


def converging_step(costs: CostMatrices, a_log: Array, b_log: Array, eps: Any, rho: Any,
                      state: tuple) -> tuple:
    """One step of the convergence loop at the target temperature. OT(a, b) takes plain
    alternating updates (f from g, then g from the new f): at a fixed eps they converge several
    times faster than the averaged symmetric ones, and to the same fixed point. The symmetric
    problems OT(a, a) and OT(b, b) keep the averaged update, without which f = T(f) would
    oscillate."""
    k, old, _ = state
    damping = dampening(eps, rho)
    f_ba = g_ab = None
    if costs.xy is not None:
        f_ba = damping * costs.xy.softmin(eps, b_log + old.g_ab / eps)
        g_ab = damping * costs.yx.softmin(eps, a_log + f_ba / eps)
    symmetric = _update(CostMatrices(None, None, costs.xx, costs.yy), a_log, b_log,
                        DualPotentials(None, None, old.f_aa, old.g_bb), eps, damping)
    new = DualPotentials(f_ba, g_ab, symmetric.f_aa, symmetric.g_bb)
    kept = DualPotentials(f_ba, g_ab,
                          *(None if o is None else 0.5 * (o + n)
                            for o, n in zip(old[2:], new[2:])))
    return k + 1, kept, _largest_change(old, new)


def sinkhorn_loop(a_log: Array, b_log: Array, costs: CostMatrices, schedule: Schedule,
                  rho: Any = None, tol: float | None = None,
                  max_extra_iter: int = 0) -> tuple[DualPotentials, SinkhornInfo]:
    """GeomLoss's symmetric Sinkhorn loop with epsilon-scaling (`sinkhorn_loop`, single
    scale), without gradients: the potentials of the problems that `costs` holds, and a
    SinkhornInfo. Follow it with `extrapolate` to get differentiable potentials.

    Each step k updates every potential from the previous ones at eps = schedule.eps(k), then
    averages old and new ("symmetric" updates). With `tol`, the loop goes on at the target
    temperature after the schedule, until the largest change of a potential is <= tol or
    `max_extra_iter` extra steps were made; those steps update OT(a, b)'s potentials
    alternately, without averaging, which converges faster to the same potentials. `rho` is
    the strength of the KL marginal penalties of unbalanced OT (None: balanced).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import CostMatrices, Schedule, extrapolate, sinkhorn_loop
        >>> from jaxkeops.ot.costs import DenseCostMatrix
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0]])
        >>> costs = CostMatrices(DenseCostMatrix.from_points(x, y, 2),
        ...                      DenseCostMatrix.from_points(y, x, 2))
        >>> w = jnp.log(jnp.array([0.5, 0.5]))
        >>> schedule = Schedule.create(2, diameter=2.0, blur=0.01, scaling=0.5)
        >>> loop, info = sinkhorn_loop(w, w, costs, schedule)
        >>> f, g, _, _ = extrapolate(costs, w, w, loop, schedule.target)
        >>> round(float(0.5 * (f.sum() + g.sum())), 3)   # W2^2 / 2 of the two measures
        0.25
    """
    frozen = costs.detached()
    a_frozen, b_frozen = stop_gradient(a_log), stop_gradient(b_log)
    # A first update from zero potentials: at eps = diameter**p, nearly a convolution with C.
    eps0 = schedule.eps(0)
    first = _update(frozen, a_frozen, b_frozen, DualPotentials(), eps0, dampening(eps0, rho))
    dtype = next(f for f in first if f is not None).dtype

    def scaling_step(state):
        k, potentials, _ = state
        eps = schedule.eps(k)
        new = _update(frozen, a_frozen, b_frozen, potentials, eps, dampening(eps, rho))
        averaged = DualPotentials(*(None if o is None else 0.5 * (o + n)
                                    for o, n in zip(potentials, new)))
        return k + 1, averaged, _largest_change(potentials, new)

    init = (jnp.int32(0), first, jnp.asarray(jnp.inf, dtype))
    state = jax.lax.while_loop(lambda state: state[0] < schedule.length, scaling_step, init)
    if tol is not None:
        state = jax.lax.while_loop(
            lambda state: (state[0] < schedule.length + max_extra_iter) & (state[2] > tol),
            lambda state: converging_step(frozen, a_frozen, b_frozen, schedule.target, rho,
                                           state),
            state)
    steps, potentials, error = state
    info = SinkhornInfo(steps, error, None if tol is None else error <= tol)
    return potentials, info


def epsilon_scaling(costs: CostMatrices, a_log: Array, b_log: Array,
                    potentials: DualPotentials, schedule: Schedule, start: Any, stop: Any,
                    rho: Any = None) -> DualPotentials:
    """Steps start, ..., stop - 1 of the symmetric loop (each an update at schedule.eps(k)
    averaged with the previous potentials), from `potentials`, without gradients: the part of
    the loop that a multiscale solver runs at each resolution. start and stop may be traced.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import CostMatrices, DualPotentials, Schedule, cost_matrix
        >>> from jaxkeops.ot.solver import epsilon_scaling
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0]])
        >>> costs = CostMatrices(cost_matrix(x, y, 2, None, dense=True),
        ...                      cost_matrix(y, x, 2, None, dense=True))
        >>> w = jnp.log(jnp.array([0.5, 0.5]))
        >>> schedule = Schedule.create(2, diameter=2.0, blur=0.01, scaling=0.5)
        >>> zero = DualPotentials(jnp.zeros(2), jnp.zeros(2))
        >>> out = epsilon_scaling(costs, w, w, zero, schedule, 0, schedule.length)
        >>> out.f_ba.shape
        (2,)
    """
    frozen = costs.detached()
    a_frozen, b_frozen = stop_gradient(a_log), stop_gradient(b_log)

    def step(state):
        k, old = state
        eps = schedule.eps(k)
        new = _update(frozen, a_frozen, b_frozen, old, eps, dampening(eps, rho))
        return k + 1, DualPotentials(*(None if o is None else 0.5 * (o + n)
                                       for o, n in zip(old, new)))

    init = (jnp.asarray(start, jnp.int32), stop_gradient(potentials))
    return jax.lax.while_loop(lambda state: state[0] < stop, step, init)[1]


def extrapolate(costs: CostMatrices, a_log: Array, b_log: Array, potentials: DualPotentials,
                eps: Any, rho: Any = None) -> DualPotentials:
    """The envelope-theorem step: one Sinkhorn update, in parallel, of every potential that
    `costs` can update, from constant `potentials` and log-weights. Gradients flow through the
    cost matrices only (and through the weights where the caller uses them explicitly).

    f_ba is updated from g_ab through costs.xy, g_ab from f_ba through costs.yx, f_aa from f_aa
    through costs.xx and g_bb from g_bb through costs.yy.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.ot import CostMatrices, DualPotentials, cost_matrix, extrapolate
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.5]])
        >>> def f_on_x(x):   # the potential on x from g = 0 on y: C(x_i, y) = |x_i - y|^2 / 2
        ...     costs = CostMatrices(xy=cost_matrix(x, y, 2, None, dense=True))
        ...     return extrapolate(costs, jnp.zeros(2), jnp.zeros(1),
        ...                        DualPotentials(g_ab=jnp.zeros(1)), eps=0.01).f_ba
        >>> f_on_x(x).tolist(), jax.grad(lambda x: f_on_x(x).sum())(x).tolist()
        ([0.125, 0.125], [[-0.5], [0.5]])
    """
    return _update(costs, stop_gradient(a_log), stop_gradient(b_log),
                   stop_gradient(potentials), eps, dampening(eps, rho))


__all__ = ["CostMatrices", "DualPotentials", "SinkhornInfo", "converging_step", "epsilon_scaling",
           "extrapolate", "log_weights", "sinkhorn_loop"]
