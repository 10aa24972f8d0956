"""The epsilon-scaling schedule of GeomLoss, as jit-able array arithmetic.

GeomLoss anneals the temperature from `diameter**p` down to `blur**p`, dividing the blur scale
`eps**(1/p)` by `1/scaling` at each step:

    eps_list = [diameter**p] + [exp(e) for e in arange(p log diameter, p log blur, p log scaling)]
               + [blur**p]

The length of that list depends on the data (through the diameter estimate), so here the
schedule is a function of the step index `k` and of a length that may be a traced value: the
Sinkhorn loop is a `lax.while_loop` and runs under `jit` and `vmap` without knowing the number
of steps at trace time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def max_diameter(x: Array, y: Array) -> Array:
    """The diagonal of the bounding box of both point clouds (all batch dims together), as
    GeomLoss's `max_diameter`: an upper bound of every |x_i - y_j|, without gradient.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import max_diameter
        >>> float(max_diameter(jnp.zeros((3, 2)), jnp.array([[3.0, 4.0]])))
        5.0
    """
    dim = x.shape[-1]
    points = jnp.concatenate([x.reshape(-1, dim), y.reshape(-1, dim)])
    extent = points.max(axis=0) - points.min(axis=0)
    return jax.lax.stop_gradient(jnp.sqrt((extent**2).sum()))


def epsilon_schedule(p: int, diameter: float, blur: float, scaling: float) -> list[float]:
    """GeomLoss's list of temperatures, as Python floats (for inspection; the solver uses
    `Schedule`, which computes the same values inside the loop).

    Example:
        >>> from jaxkeops.ot import epsilon_schedule
        >>> [round(e, 4) for e in epsilon_schedule(p=2, diameter=1.0, blur=0.1, scaling=0.5)]
        [1.0, 1.0, 0.25, 0.0625, 0.0156, 0.01]
    """
    start, stop, step = p * np.log(diameter), p * np.log(blur), p * np.log(scaling)
    return [diameter**p] + [float(np.exp(e)) for e in np.arange(start, stop, step)] + [blur**p]


class Schedule(NamedTuple):
    """The temperatures eps_0, ..., eps_{length-1} of the epsilon-scaling descent, then the
    target `blur**p` for any later step (the extra steps of the convergence check).

    `length` and the logs are arrays (possibly traced); `eps(k)` works for an array `k`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import Schedule
        >>> s = Schedule.create(p=2, diameter=jnp.asarray(1.0), blur=0.1, scaling=0.5)
        >>> int(s.length), [round(float(s.eps(k)), 4) for k in range(int(s.length) + 1)]
        (6, [1.0, 1.0, 0.25, 0.0625, 0.0156, 0.01, 0.01])
    """

    length: Array  # int32 scalar: number of steps of the descent
    log_diameter_p: Array  # p log(diameter)
    log_scaling_p: Array  # p log(scaling)
    target: Array  # blur**p
    first: Array  # diameter**p

    @classmethod
    def create(cls, p: int, diameter: Any, blur: Any, scaling: Any,
               dtype: Any = None) -> Schedule:
        """The schedule for a diameter (a float or an array, e.g. `max_diameter(x, y)`).

        Args:
            p: the exponent of the cost (eps = blur**p).
            diameter: the first blur scale (a zero diameter starts at the target).
            blur: the target blur scale.
            scaling: the ratio of successive blur scales, in (0, 1).
            dtype: the floating dtype of the arrays (None: JAX's default float).

        Returns:
            The Schedule from diameter**p down to blur**p.

        Example:
            >>> from jaxkeops.ot import Schedule
            >>> s = Schedule.create(p=2, diameter=1.0, blur=0.1, scaling=0.5)
            >>> int(s.length), round(float(s.first), 4), round(float(s.target), 4)
            (6, 1.0, 0.01)
        """
        dtype = dtype or jnp.result_type(float)
        diameter = jnp.asarray(diameter, dtype)
        blur = jnp.asarray(blur, dtype)
        # All points at one place: start at the target instead of at log(0).
        diameter = jnp.where(diameter > 0, diameter, blur)
        start = p * jnp.log(diameter)
        stop = p * jnp.log(blur)
        step = p * jnp.log(jnp.asarray(scaling, dtype))
        # numpy's arange has ceil((stop - start) / step) elements, none when that is <= 0.
        count = jnp.maximum(jnp.ceil((stop - start) / step), 0).astype(jnp.int32)
        return cls(count + 2, start, step, blur**p, diameter**p)

    def eps(self, k: Any) -> Array:
        """The temperature of step k (the target for k >= length - 1); k may be an array.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import Schedule
            >>> s = Schedule.create(p=2, diameter=1.0, blur=0.1, scaling=0.5)
            >>> [round(v, 4) for v in s.eps(jnp.arange(7)).tolist()]
            [1.0, 1.0, 0.25, 0.0625, 0.0156, 0.01, 0.01]
        """
        k = jnp.asarray(k)
        middle = jnp.exp(self.log_diameter_p + (k - 1).astype(self.target.dtype)
                         * self.log_scaling_p)
        return jnp.where(k == 0, self.first, jnp.where(k >= self.length - 1, self.target, middle))


def dampening(eps: Any, rho: Any) -> Any:
    """The damping factor 1 / (1 + eps / rho) of unbalanced OT with KL marginal penalties
    (1 when rho is None: balanced OT), as GeomLoss's `dampening`.

    Example:
        >>> from jaxkeops.ot import dampening
        >>> dampening(0.5, None), dampening(0.5, 1.0)
        (1, 0.6666666666666666)
    """
    return 1 if rho is None else 1 / (1 + eps / rho)
