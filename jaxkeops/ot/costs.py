"""Ground costs C(x_i, y_j) and the log-domain reductions the OT solvers need from them.

A cost is given as in GeomLoss:

- `None`: the default of `p`: |x - y| (p=1, computed as sqrt(max(|x - y|^2, 1e-8)) like
  GeomLoss's tensorized backend, which keeps gradients finite where points coincide) or
  |x - y|^2 / 2 (p=2);
- a KeOps formula string in the variables `X` and `Y`, e.g. "SqDist(X,Y) / IntCst(2)" (run
  through `Genred`, as GeomLoss's online backend does);
- a function of LazyTensors `cost(x_i, y_j)` that returns a scalar LazyTensor, e.g.
  `lambda x_i, y_j: ((x_i - y_j) ** 2).sum(-1).sqrt()`.

Each pair of point clouds becomes a "cost matrix" object that is never stored: it offers
`log_sum` (log sum_j exp(h_j - C_ij / eps) w_j, optionally signed), `softmax_sum` and `softmin`,
reduced over j or over i. `LazyCostMatrix` and `FormulaCostMatrix` run jaxkeops kernels;
`DenseCostMatrix` holds an (*batch, N, M) array (GeomLoss's "tensorized" backend). A block-sparse
(multiscale) variant only has to offer the same methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp

from jaxkeops import Genred, LazyTensor, Pm, Vi, Vj

Array = jax.Array
CostFunction = Callable[[LazyTensor, LazyTensor], LazyTensor]
Cost = None | str | CostFunction

# GeomLoss's tensorized backend computes |x - y| as sqrt(max(|x - y|^2, 1e-8)).
DISTANCE_FLOOR = 1e-8


def lazy_distance(x_i: LazyTensor, y_j: LazyTensor) -> LazyTensor:
    """|x_i - y_j|, floored at 1e-4 as in GeomLoss's tensorized backend (finite gradients).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vi, Vj
        >>> from jaxkeops.ot import lazy_distance
        >>> x, y = jnp.zeros((1, 2)), jnp.array([[3.0, 4.0]])
        >>> float(lazy_distance(Vi(x), Vj(y)).sum(axis=1)[0, 0])
        5.0
        >>> round(float(lazy_distance(Vi(x), Vj(x)).sum(axis=1)[0, 0]), 6)   # floored
        0.0001
    """
    squared = ((x_i - y_j) ** 2).sum(-1)
    return (squared - DISTANCE_FLOOR).ifelse(squared, DISTANCE_FLOOR).sqrt()


def lazy_half_squared_distance(x_i: LazyTensor, y_j: LazyTensor) -> LazyTensor:
    """|x_i - y_j|^2 / 2, GeomLoss's cost for p=2.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vi, Vj
        >>> from jaxkeops.ot import lazy_half_squared_distance
        >>> x, y = jnp.zeros((1, 2)), jnp.array([[3.0, 4.0]])
        >>> round(float(lazy_half_squared_distance(Vi(x), Vj(y)).sum(axis=1)[0, 0]), 4)
        12.5
    """
    return ((x_i - y_j) ** 2).sum(-1) / 2


DEFAULT_COSTS: dict[int, CostFunction] = {1: lazy_distance, 2: lazy_half_squared_distance}


def dense_squared_distances(x: Array, y: Array) -> Array:
    """(*batch, N, M) |x_i - y_j|^2 as GeomLoss's tensorized backend computes it
    (|x|^2 - 2 <x, y> + |y|^2)."""
    xx = (x * x).sum(-1)[..., :, None]
    yy = (y * y).sum(-1)[..., None, :]
    return xx - 2 * jnp.einsum("...nd,...md->...nm", x, y) + yy


def dense_distances(x: Array, y: Array) -> Array:
    """(*batch, N, M) |x_i - y_j|, floored at 1e-4 as in GeomLoss's tensorized backend."""
    return jnp.sqrt(jnp.maximum(dense_squared_distances(x, y), DISTANCE_FLOOR))


DENSE_COSTS: dict[int, Callable[[Array, Array], Array]] = {
    1: dense_distances,
    2: lambda x, y: dense_squared_distances(x, y) / 2,
}


def check_cost(cost: Any, p: Any) -> None:
    """Raises a clear error for a `cost` or `p` that the solvers cannot use."""
    if cost is None:
        if p not in (1, 2) or isinstance(p, bool):
            raise ValueError(f"p must be 1 or 2 with the default cost, got p={p!r}; pass cost= "
                             "for another ground cost")
    elif not (isinstance(cost, str) or callable(cost)):
        raise TypeError("cost must be None, a KeOps formula string in X and Y, or a function "
                        f"of LazyTensors (x_i, y_j) -> LazyTensor; got {cost!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0:
        raise ValueError(f"p must be a positive number (1 or 2 for the default cost), got {p!r}")


def _vector(h: Array) -> Array:
    """(*batch, rows) -> (*batch, rows, 1): the layout of a one-dimensional variable."""
    return h[..., None]


def _scale(inv_eps: Any, dtype: Any) -> Array:
    return jnp.reshape(jnp.asarray(inv_eps, dtype), (1,))


class CostMatrix:
    """The reductions of exp(h - C / eps) that the solvers and transport plans need.

    Subclasses implement `log_sum` and `softmax_sum`; `over` is "j" (one output per x_i) or
    "i" (one output per y_j). `h` has shape (*batch, rows reduced), the optional weight
    (*batch, rows reduced, E).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import cost_matrix
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
        >>> C = cost_matrix(x, y, p=2, cost=None, dense=False)      # |x - y|^2 / 2, lazily
        >>> [round(v, 3) + 0.0 for v in C.softmin(1e-3, jnp.zeros(2)).tolist()]  # min_j C_ij
        [0.0, 0.5]
    """

    x: Array
    y: Array

    def log_sum(self, h: Array, inv_eps: Any, over: str = "j", weight: Array | None = None,
                signed: bool = False) -> Any:
        """log sum exp(h - C * inv_eps) [* weight], reduced over j (one value per x_i) or over i.

        Args:
            h: (*batch, rows reduced) log-weights added to the exponent.
            inv_eps: 1 / the temperature.
            over: "j" (one output per x_i) or "i" (one output per y_j).
            weight: optional (*batch, rows reduced, E) weights.
            signed: return (log|sum|, sign), for weights of any sign.

        Returns:
            (*batch, rows) without a weight, (*batch, rows, E) with one; with `signed=True`, the
            pair (log|sum|, sign).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import cost_matrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = cost_matrix(x, y, p=2, cost=None, dense=False)      # C = [[0, 4.5], [.5, 2]]
            >>> [round(v, 4) for v in C.log_sum(jnp.zeros(2), 1.0).tolist()]
            [0.011, -0.2986]
            >>> log_abs, sign = C.log_sum(jnp.zeros(2), 1.0, weight=jnp.array([[1.0], [-1.0]]),
            ...                           signed=True)                # sum_j exp(-C_ij) w_j
            >>> [round(v, 4) for v in (sign * jnp.exp(log_abs))[:, 0].tolist()]
            [0.9889, 0.4712]
        """
        raise NotImplementedError

    def softmax_sum(self, h: Array, inv_eps: Any, weight: Array, over: str = "j") -> Array:
        """sum softmax(h - C * inv_eps) * weight, reduced over j or over i.

        Args:
            h: (*batch, rows reduced) log-weights added to the exponent.
            inv_eps: 1 / the temperature.
            weight: (*batch, rows reduced, E) values to average.
            over: "j" (one output per x_i) or "i" (one output per y_j).

        Returns:
            (*batch, rows, E): softmax-weighted averages of `weight`.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import cost_matrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = cost_matrix(x, y, p=2, cost=None, dense=False)
            >>> [round(v, 4) for v in C.softmax_sum(jnp.zeros(2), 1.0, y)[:, 0].tolist()]
            [0.033, 0.5473]
        """
        raise NotImplementedError

    def softmin(self, eps: Any, h: Array) -> Array:
        """-eps log sum_j exp(h_j - C_ij / eps): GeomLoss's soft C-transform, (*batch, N).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import cost_matrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = cost_matrix(x, y, p=2, cost=None, dense=False)
            >>> [round(v, 4) for v in C.softmin(1.0, jnp.zeros(2)).tolist()]
            [-0.011, 0.2986]
        """
        return -eps * self.log_sum(h, 1 / eps)

    def detached(self) -> CostMatrix:
        """The same matrix without gradients (for the iterations of the Sinkhorn loop).

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jaxkeops.ot import cost_matrix
            >>> y = jnp.array([[0.0], [3.0]])
            >>> def total(x):
            ...     return cost_matrix(x, y, p=2, cost=None, dense=False).detached().x.sum()
            >>> jax.grad(total)(jnp.array([[0.0], [1.0]])).tolist()
            [[0.0], [0.0]]
        """
        return replace(self, x=jax.lax.stop_gradient(self.x), y=jax.lax.stop_gradient(self.y))


@dataclass(frozen=True)
class LazyCostMatrix(CostMatrix):
    """C(x_i, y_j) = cost(Vi(x), Vj(y)) for a function of LazyTensors: jaxkeops kernels.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import LazyCostMatrix
        >>> C = LazyCostMatrix(jnp.zeros((2, 1)), jnp.ones((3, 1)),
        ...                    lambda x_i, y_j: (x_i - y_j).abs().sum(-1))
        >>> [round(v, 4) for v in C.log_sum(jnp.zeros(3), 1.0).tolist()]   # log(3 exp(-1))
        [0.0986, 0.0986]
    """

    x: Array
    y: Array
    cost: CostFunction

    def _exponent(self, h: Array, inv_eps: Any, over: str) -> LazyTensor:
        C = self.cost(Vi(self.x), Vj(self.y))
        if not isinstance(C, LazyTensor) or C.ndim != 1:
            raise TypeError("a cost function must return a scalar LazyTensor built from its "
                            f"arguments (x_i, y_j), got {C!r}")
        h_var = Vj(_vector(h)) if over == "j" else Vi(_vector(h))
        return h_var - C * Pm(_scale(inv_eps, self.x.dtype))

    def log_sum(self, h, inv_eps, over="j", weight=None, signed=False):
        """`CostMatrix.log_sum` by a jaxkeops log-sum-exp reduction.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import LazyCostMatrix, lazy_half_squared_distance
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = LazyCostMatrix(x, y, lazy_half_squared_distance)
            >>> [round(v, 4) for v in C.log_sum(jnp.zeros(2), 1.0).tolist()]
            [0.011, -0.2986]
        """
        exponent = self._exponent(h, inv_eps, over)
        axis = -2 if over == "j" else -3
        role = Vj if over == "j" else Vi
        if weight is None and not signed:
            return exponent.logsumexp(axis=axis)[..., 0]
        w = None if weight is None else role(weight)
        return exponent.logsumexp(axis=axis, weight=w, return_sign=signed)

    def softmax_sum(self, h, inv_eps, weight, over="j"):
        """`CostMatrix.softmax_sum` by a jaxkeops SumSoftMaxWeight reduction.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import LazyCostMatrix, lazy_half_squared_distance
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = LazyCostMatrix(x, y, lazy_half_squared_distance)
            >>> [round(v, 4) for v in C.softmax_sum(jnp.zeros(2), 1.0, y)[:, 0].tolist()]
            [0.033, 0.5473]
        """
        exponent = self._exponent(h, inv_eps, over)
        role = Vj if over == "j" else Vi
        return exponent.sumsoftmaxweight(role(weight), axis=-2 if over == "j" else -3)


@functools.lru_cache(maxsize=256)
def _formula_reduction(cost: str, dim: int, weight_dim: int | None, reduction: str,
                       over: str) -> Genred:
    """Genred of `Hh - Pe * (cost)` (X = Vi, Y = Vj), reduced over j or i, with a weight."""
    reduced = "Vj" if over == "j" else "Vi"
    aliases = [f"X = Vi({dim})", f"Y = Vj({dim})", f"Hh = {reduced}(1)", "Pe = Pm(1)"]
    if weight_dim is not None:
        aliases.append(f"Ww = {reduced}({weight_dim})")
    return Genred(f"Hh - Pe * ({cost})", aliases, reduction_op=reduction,
                  axis=1 if over == "j" else 0,
                  formula2=None if weight_dim is None else "Ww")


@dataclass(frozen=True)
class FormulaCostMatrix(CostMatrix):
    """C(x_i, y_j) given by a KeOps formula string in `X` (the x_i) and `Y` (the y_j).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import FormulaCostMatrix
        >>> C = FormulaCostMatrix(jnp.zeros((2, 1)), jnp.ones((3, 1)), "Norm2(X-Y)")
        >>> [round(v, 4) for v in C.log_sum(jnp.zeros(3), 1.0).tolist()]   # log(3 exp(-1))
        [0.0986, 0.0986]
    """

    x: Array
    y: Array
    cost: str

    def _run(self, reduction: str, h, inv_eps, over, weight):
        routine = _formula_reduction(self.cost, int(self.x.shape[-1]),
                                     None if weight is None else int(weight.shape[-1]),
                                     reduction, over)
        arrays = [self.x, self.y, _vector(h), _scale(inv_eps, self.x.dtype)]
        return routine(*arrays, *(() if weight is None else (weight,)))

    def log_sum(self, h, inv_eps, over="j", weight=None, signed=False):
        """`CostMatrix.log_sum` by a `Genred` LogSumExp (LogSumExpSigned) reduction.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import FormulaCostMatrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = FormulaCostMatrix(x, y, "SqDist(X,Y) / IntCst(2)")
            >>> [round(v, 4) for v in C.log_sum(jnp.zeros(2), 1.0).tolist()]
            [0.011, -0.2986]
        """
        if signed:
            if weight is None:
                weight = jnp.ones(h.shape + (1,), h.dtype)
            return self._run("LogSumExpSigned", h, inv_eps, over, weight)
        out = self._run("LogSumExp", h, inv_eps, over, weight)
        return out[..., 0] if weight is None else out

    def softmax_sum(self, h, inv_eps, weight, over="j"):
        """`CostMatrix.softmax_sum` by a `Genred` SumSoftMaxWeight reduction.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import FormulaCostMatrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = FormulaCostMatrix(x, y, "SqDist(X,Y) / IntCst(2)")
            >>> [round(v, 4) for v in C.softmax_sum(jnp.zeros(2), 1.0, y)[:, 0].tolist()]
            [0.033, 0.5473]
        """
        return self._run("SumSoftMaxWeight", h, inv_eps, over, weight)


@dataclass(frozen=True)
class DenseCostMatrix(CostMatrix):
    """An (*batch, N, M) cost array, for GeomLoss's "tensorized" backend (small problems).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import DenseCostMatrix
        >>> C = DenseCostMatrix.from_points(jnp.zeros((2, 1)), jnp.ones((3, 1)), p=1)
        >>> C.matrix.shape, [round(v, 4) for v in C.log_sum(jnp.zeros(3), 1.0).tolist()]
        ((2, 3), [0.0986, 0.0986])
    """

    matrix: Array

    @classmethod
    def from_points(cls, x: Array, y: Array, p: int) -> DenseCostMatrix:
        """The default cost of `p` between x (*batch, N, D) and y (*batch, M, D).

        Args:
            x: (*batch, N, D) points.
            y: (*batch, M, D) points.
            p: 1 for |x - y|, 2 for |x - y|^2 / 2.

        Returns:
            The DenseCostMatrix of the (*batch, N, M) costs.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import DenseCostMatrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> DenseCostMatrix.from_points(x, y, p=2).matrix.tolist()
            [[0.0, 4.5], [0.5, 2.0]]
        """
        return cls(DENSE_COSTS[p](x, y))

    def detached(self) -> DenseCostMatrix:
        """The same matrix without gradients.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jaxkeops.ot import DenseCostMatrix
            >>> y = jnp.array([[0.0], [3.0]])
            >>> def total(x):
            ...     return DenseCostMatrix.from_points(x, y, p=2).detached().matrix.sum()
            >>> jax.grad(total)(jnp.array([[0.0], [1.0]])).tolist()
            [[0.0], [0.0]]
        """
        return DenseCostMatrix(jax.lax.stop_gradient(self.matrix))

    def _exponent(self, h, inv_eps, over):
        C = self.matrix if over == "j" else jnp.swapaxes(self.matrix, -1, -2)
        return h[..., None, :] - C * jnp.asarray(inv_eps, C.dtype)

    def log_sum(self, h, inv_eps, over="j", weight=None, signed=False):
        """`CostMatrix.log_sum` with `jax.nn.logsumexp` on the dense array.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import DenseCostMatrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = DenseCostMatrix.from_points(x, y, p=2)
            >>> [round(v, 4) for v in C.log_sum(jnp.zeros(2), 1.0).tolist()]
            [0.011, -0.2986]
        """
        exponent = self._exponent(h, inv_eps, over)
        if weight is None and not signed:
            return jax.nn.logsumexp(exponent, axis=-1)
        if weight is None:
            weight = jnp.ones(h.shape + (1,), h.dtype)
        # (*batch, rows, reduced, 1) against (*batch, 1, reduced, E).
        return jax.nn.logsumexp(exponent[..., None], axis=-2, b=weight[..., None, :, :],
                                return_sign=signed)

    def softmax_sum(self, h, inv_eps, weight, over="j"):
        """`CostMatrix.softmax_sum` with `jax.nn.softmax` on the dense array.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import DenseCostMatrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = DenseCostMatrix.from_points(x, y, p=2)
            >>> [round(v, 4) for v in C.softmax_sum(jnp.zeros(2), 1.0, y)[:, 0].tolist()]
            [0.033, 0.5473]
        """
        return jax.nn.softmax(self._exponent(h, inv_eps, over), axis=-1) @ weight

    def softmin(self, eps, h):
        """`CostMatrix.softmin`, dividing the matrix by eps as GeomLoss's tensorized backend does.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import DenseCostMatrix
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [3.0]])
            >>> C = DenseCostMatrix.from_points(x, y, p=2)
            >>> [round(v, 4) for v in C.softmin(1.0, jnp.zeros(2)).tolist()]
            [-0.011, 0.2986]
        """
        # GeomLoss divides the matrix by eps (rather than multiplying by 1 / eps).
        return -eps * jax.nn.logsumexp(h[..., None, :] - self.matrix / eps, axis=-1)


def cost_matrix(x: Array, y: Array, p: int, cost: Cost, dense: bool) -> CostMatrix:
    """The cost matrix object of (x, y) for a GeomLoss-style (p, cost); `dense` asks for the
    tensorized backend, which only has the default costs (custom ones always run kernels).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import cost_matrix
        >>> x, y = jnp.zeros((2, 3)), jnp.ones((4, 3))
        >>> [type(cost_matrix(x, y, 2, c, dense=True)).__name__
        ...  for c in (None, "SqDist(X,Y)", lambda x_i, y_j: x_i.sqdist(y_j))]
        ['DenseCostMatrix', 'FormulaCostMatrix', 'LazyCostMatrix']
    """
    if cost is None:
        if dense:
            return DenseCostMatrix.from_points(x, y, p)
        return LazyCostMatrix(x, y, DEFAULT_COSTS[p])
    if isinstance(cost, str):
        return FormulaCostMatrix(x, y, cost)
    return LazyCostMatrix(x, y, cost)
