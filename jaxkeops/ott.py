"""OTT-JAX on jaxkeops: a point-cloud geometry whose kernel and cost applications are jaxkeops
reductions, so that OTT's own solvers (Sinkhorn, its accelerations, implicit or unrolled
differentiation, `sinkhorn_divergence`) run on clouds of any size without the n x m matrix.

This module needs the optional extra `ott` (`pip install "jaxkeops[ott]"`); `import jaxkeops`
never imports it.

Example:
    >>> import jax
    >>> from ott.solvers import linear
    >>> from jaxkeops.ott import PointCloud
    >>> x = jax.random.normal(jax.random.key(0), (300, 3))
    >>> y = jax.random.normal(jax.random.key(1), (200, 3)) + 1.0
    >>> out = linear.solve(PointCloud(x, y, epsilon=0.1))
    >>> bool(out.converged), out.f.shape, out.g.shape
    (True, (300,), (200,))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from . import LazyTensor, Pm, Vi, Vj

try:
    from ott.geometry import costs, epsilon_scheduler, geometry, pointcloud
except ImportError as _error:  # the extra is optional: say how to get it
    raise ImportError(
        'jaxkeops.ott needs OTT-JAX, which is not installed: pip install "jaxkeops[ott]" '
        f"(or pip install ott-jax). Import error: {_error}"
    ) from _error

__all__ = ["PointCloud", "SUPPORTED_COSTS", "SUPPORTED_SCALE_COSTS"]

ScaleCost = float | Literal["mean", "max_cost", "median", "max_norm", "max_bound"]

# OTT cost function class -> the formula of C(x_i, y_j) as a LazyTensor. Exact classes only: a
# subclass may redefine __call__, and its cost would silently differ from ours.
_COSTS: dict[type, Callable[[costs.CostFn, LazyTensor, LazyTensor, jax.Array, jax.Array],
                            LazyTensor]] = {
    costs.SqEuclidean: lambda fn, x_i, y_j, x, y: x_i.sqdist(y_j),
    # |x - y| as D * rsqrt(D): rsqrt(0) = 0, so the value and the gradient are 0 (not NaN) at
    # x = y, as OTT's custom norm gives on the diagonal of a symmetric problem.
    costs.Euclidean: lambda fn, x_i, y_j, x, y: _euclidean(x_i.sqdist(y_j)),
    costs.NegDotProduct: lambda fn, x_i, y_j, x, y: -(x_i | y_j),
    costs.Cosine: lambda fn, x_i, y_j, x, y: 1.0 - (x_i | y_j) / (
        Vi(jnp.linalg.norm(x, axis=-1)) * Vj(jnp.linalg.norm(y, axis=-1)) + fn._ridge),
}
SUPPORTED_COSTS: tuple[str, ...] = tuple(sorted(c.__name__ for c in _COSTS))
SUPPORTED_SCALE_COSTS: tuple[str, ...] = ("mean", "max_cost", "median", "max_norm", "max_bound")


def _euclidean(d2: LazyTensor) -> LazyTensor:
    return d2 * d2.rsqrt()


def _check_cost_fn(cost_fn: Any) -> costs.CostFn:
    if cost_fn is None:
        return costs.SqEuclidean()
    if type(cost_fn) not in _COSTS:
        raise NotImplementedError(
            f"cost_fn={cost_fn!r} has no jaxkeops formula; jaxkeops.ott.PointCloud supports "
            f"ott.geometry.costs.{', '.join(SUPPORTED_COSTS)} (use OTT's own PointCloud for "
            "other costs)")
    return cost_fn


def _check_points(x: Any, y: Any) -> tuple[jax.Array, jax.Array]:
    x = jnp.asarray(x)
    y = x if y is None else jnp.asarray(y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 2:
            raise ValueError(f"PointCloud: {name} must have shape (points, dim), got {a.shape}")
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"PointCloud: {name} must hold floating-point numbers, got {a.dtype}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"PointCloud: x {x.shape} and y {y.shape} must have the same dimension")
    if x.dtype != y.dtype:
        raise TypeError(f"PointCloud: x ({x.dtype}) and y ({y.dtype}) must share one dtype")
    return x, y


def _check_scale_cost(scale_cost: Any) -> ScaleCost:
    if isinstance(scale_cost, str):
        if scale_cost not in SUPPORTED_SCALE_COSTS:
            hint = (" ('std' is not a scaling of OTT's PointCloud either)"
                    if scale_cost == "std" else "")
            raise ValueError(f"scale_cost={scale_cost!r} is not supported{hint}; use a float or "
                             f"one of {', '.join(map(repr, SUPPORTED_SCALE_COSTS))}")
        return scale_cost
    if isinstance(scale_cost, bool) or not np.ndim(scale_cost) == 0:
        raise TypeError(f"scale_cost must be a positive float or one of "
                        f"{SUPPORTED_SCALE_COSTS}, got {scale_cost!r}")
    return scale_cost


def _ordered_keys(values: jax.Array) -> jax.Array:
    """Integers whose order is the order of the floats `values` (IEEE sign-magnitude bits)."""
    int_type = jnp.int64 if values.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(values, int_type)
    magnitude = bits & jnp.asarray(jnp.iinfo(int_type).max, int_type)
    return jnp.where(bits < 0, -magnitude, bits)


def _float_of_key(key: jax.Array, dtype: Any) -> jax.Array:
    int_type = key.dtype
    sign_bit = jnp.asarray(jnp.iinfo(int_type).min, int_type)
    bits = jnp.where(key < 0, (-key) | sign_bit, key)
    return jax.lax.bitcast_convert_type(bits, dtype)


@jax.tree_util.register_pytree_node_class
class PointCloud(pointcloud.PointCloud):
    """OTT's `PointCloud` geometry (an `ott.geometry.geometry.Geometry`), with every kernel,
    log-kernel and cost application computed by a jaxkeops reduction: memory stays O(n + m) and
    OTT's solvers run on it unchanged.

    Args:
        x: points of shape (n, d).
        y: points of shape (m, d); None means x.
        cost_fn: `ott.geometry.costs.SqEuclidean()` (the default), `Euclidean()`,
            `NegDotProduct()` or `Cosine()`.
        epsilon: the entropic regularisation (a float or an OTT `Epsilon` scheduler); None uses
            OTT's default, 0.05 times the standard deviation of the cost matrix.
        relative_epsilon: "mean" or "std": `epsilon` multiplies that statistic of the costs.
        scale_cost: a positive float (the cost is divided by it), or "mean", "max_cost",
            "median", "max_norm", "max_bound" as in OTT; the statistic is computed once, when the
            geometry is built, by reductions over all pairs.
        batch_size: OTT's online chunk size; accepted so that OTT code runs unchanged, and
            ignored: jaxkeops computes online at every size.

    The n x m cost matrix is only built by the properties that return it (`cost_matrix`,
    `kernel_matrix`) and by what needs it by definition (`transport_from_potentials`, i.e.
    `SinkhornOutput.matrix`); the solvers never call them.

    Example:
        >>> import jax
        >>> from ott.geometry import costs
        >>> from ott.solvers import linear
        >>> from jaxkeops.ott import PointCloud
        >>> x = jax.random.uniform(jax.random.key(0), (500, 2))
        >>> y = jax.random.uniform(jax.random.key(1), (400, 2))
        >>> geom = PointCloud(x, y, cost_fn=costs.Euclidean(), epsilon=0.05)
        >>> out = linear.solve(geom)
        >>> out.marginal(1).shape, round(float(out.marginal(0).sum()), 3)
        ((500,), 1.0)
    """

    def __init__(self, x: jax.Array, y: jax.Array | None = None,
                 cost_fn: costs.CostFn | None = None, batch_size: int | None = None,
                 scale_cost: ScaleCost = 1.0,
                 epsilon: float | epsilon_scheduler.Epsilon | None = None,
                 relative_epsilon: Literal["mean", "std"] | None = None):
        del batch_size  # every jaxkeops reduction is online
        x, y = _check_points(x, y)
        if relative_epsilon not in (None, "mean", "std"):
            raise ValueError(f"relative_epsilon must be None, 'mean' or 'std', "
                             f"got {relative_epsilon!r}")
        super().__init__(x, y, cost_fn=_check_cost_fn(cost_fn),
                         scale_cost=_check_scale_cost(scale_cost), epsilon=epsilon,
                         relative_epsilon=relative_epsilon)
        # Statistics over all pairs cost a full pass each: compute them once, here, and carry
        # them as pytree leaves (a property would recompute them at every Sinkhorn iteration).
        self._inv_scale = None
        self._epsilon_resolved = None
        if isinstance(self._scale_cost, str):
            self._inv_scale = 1.0 / self._unscaled_statistic(self._scale_cost)
        if self._needs_epsilon_statistic:
            self._epsilon_resolved = geometry.Geometry.epsilon_scheduler.fget(self)

    # -------------------------------------------------------------------------------------
    # The formula of the cost, and the statistics computed from it.
    def _cost(self) -> LazyTensor:
        """The unscaled cost C(x_i, y_j), symbolic (n, m)."""
        return _COSTS[type(self.cost_fn)](self.cost_fn, Vi(self.x), Vj(self.y), self.x, self.y)

    def _param(self, value: Any) -> LazyTensor:
        """A run-time scalar parameter in the data dtype (a Python float would be compiled into
        the kernel, and every new epsilon would then compile a new one)."""
        return Pm(jnp.asarray(value, dtype=self.dtype))

    def _as_data(self, v: jax.Array) -> jax.Array:
        return jnp.asarray(v, dtype=self.dtype)

    @property
    def _needs_epsilon_statistic(self) -> bool:
        init = self._epsilon_init
        if isinstance(init, epsilon_scheduler.Epsilon):
            return False
        return init is None or self._relative_epsilon is not None

    def _unscaled_statistic(self, kind: str) -> jax.Array:
        n, m = self.shape
        if kind == "mean":
            return jnp.sum(self._cost().sum(axis=-2)) / (n * m)
        if kind == "max_cost":
            return jnp.max(self._cost().max(axis=-2))
        if kind == "median":
            return self._median_of_costs()
        if kind in ("max_norm", "max_bound"):
            if not hasattr(self.cost_fn, "norm"):
                raise ValueError(f"scale_cost={kind!r} needs a cost with a norm "
                                 f"(SqEuclidean, NegDotProduct); {self.cost_fn!r} has none")
            norm_x, norm_y = jnp.max(self.cost_fn.norm(self.x)), jnp.max(self.cost_fn.norm(self.y))
            if kind == "max_norm":
                return jnp.maximum(norm_x, norm_y)
            if self.is_squared_euclidean:
                return norm_x + norm_y + 2.0 * jnp.sqrt(norm_x * norm_y)
            if self.is_neg_dotp:
                return jnp.sqrt(norm_x * norm_y)
            raise ValueError(f"scale_cost='max_bound' needs SqEuclidean or NegDotProduct costs, "
                             f"got {self.cost_fn!r}")
        raise ValueError(f"unknown cost statistic {kind!r}")

    def _median_of_costs(self) -> jax.Array:
        """jnp.median of the n x m costs without them: each order statistic is found by a
        bisection over the (ordered) bits of floats, counting the costs <= t by a reduction. The
        value is then recomputed from its pair of points, so that it has OTT's gradient."""
        n, m = self.shape
        count_type = jnp.asarray(0).dtype  # int64 under x64, else int32
        if n * m > jnp.iinfo(count_type).max:
            raise ValueError(f"scale_cost='median' over {n} x {m} pairs needs 64-bit counts: "
                             "enable jax_enable_x64, or use 'mean' or 'max_cost'")
        cost = self._cost()
        key_bits = 64 if self.dtype == jnp.float64 else 32

        def count_at_most(t):
            row_counts = (self._param(t) - cost).step().sum(axis=-2)
            return jnp.sum(row_counts.astype(count_type))

        low = _ordered_keys(jnp.min(cost.min(axis=-2)))
        high = _ordered_keys(jnp.max(cost.max(axis=-2)))

        def kth_smallest(k):
            def halve(_, bounds):
                lo, hi = bounds  # the answer's key is in [lo, hi]
                mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
                below = count_at_most(_float_of_key(mid, self.dtype)) >= k
                return jnp.where(below, lo, mid + 1), jnp.where(below, mid, hi)

            _, hi = jax.lax.fori_loop(0, key_bits + 1, halve, (low, high))
            return jax.lax.stop_gradient(_float_of_key(hi, self.dtype))

        def value_with_gradient(t):
            distance = (cost - self._param(t)).abs()
            gaps, columns = distance.min_argmin(axis=-2)
            row = jnp.argmin(gaps[:, 0])
            return self.cost_fn(self.x[row], self.y[columns[row, 0]])

        total = n * m
        upper = value_with_gradient(kth_smallest(total // 2 + 1))
        if total % 2:
            return upper
        return 0.5 * (value_with_gradient(kth_smallest(total // 2)) + upper)

    @property
    def inv_scale_cost(self) -> jax.Array | float:
        """1 / the scale of the cost (computed once, when the geometry was built).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.inv_scale_cost, round(float(geom.set_scale_cost("max_cost").inv_scale_cost), 4)
            (1.0, 0.1111)
        """
        if self._inv_scale is not None:
            return self._inv_scale
        return 1.0 / self._scale_cost

    @property
    def epsilon_scheduler(self) -> epsilon_scheduler.Epsilon:
        """OTT's epsilon scheduler; a statistic it needs was computed when the geometry was
        built.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> type(geom.epsilon_scheduler).__name__, geom.epsilon_scheduler.target
            ('Epsilon', 0.1)
        """
        if isinstance(self._epsilon_init, epsilon_scheduler.Epsilon):
            return self._epsilon_init
        if self._epsilon_resolved is not None:
            return self._epsilon_resolved
        return epsilon_scheduler.Epsilon(self._epsilon_init)

    @property
    def is_online(self) -> bool:
        """True: costs and kernels are computed on the fly (OTT's initialisers that need the
        cost matrix, such as SortingInitializer, refuse online geometries).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.is_online
            True
        """
        return True

    @property
    def median_cost_matrix(self) -> jax.Array:
        """Median of the (scaled) cost matrix, without building it.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> round(float(geom.median_cost_matrix), 4)      # median of 0, 4, 9, 1, 1, 4
            2.5
        """
        return self._median_of_costs() * self.inv_scale_cost

    # -------------------------------------------------------------------------------------
    # What OTT's solvers call: every n x m operation is a jaxkeops reduction.
    def apply_lse_kernel(self, f: jax.Array, g: jax.Array, eps: float,
                         vec: jax.Array | None = None,
                         axis: int = 0) -> tuple[jax.Array, jax.Array]:
        """OTT's log-domain kernel application: with axis=0, over i,
        eps * log sum_i exp((f_i - C_ij) / eps) vec_i (size m); with axis=1, over j (size n).

        Args:
            f: (n,) potential on x.
            g: (m,) potential on y.
            eps: the temperature.
            vec: optional weights on the reduced points; may hold negative numbers (implicit
                differentiation).
            axis: 0 to reduce over i (the x), 1 over j (the y).

        Returns:
            (value, sign), as OTT's own geometries return them.

        Example:
            >>> import jax
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> value, sign = geom.apply_lse_kernel(jnp.zeros(2), jnp.zeros(3), 1.0, axis=0)
            >>> [round(v, 4) for v in value.tolist()]            # log sum_i exp(-C_ij)
            [0.3133, -0.9514, -3.9933]
            >>> bool(jnp.allclose(value, jax.nn.logsumexp(-geom.cost_matrix, axis=0)))
            True
        """
        inv_eps = 1.0 / eps
        over_i = axis == 0
        potential, other = (f, g) if over_i else (g, f)
        variable = Vi if over_i else Vj
        exponent = (variable(self._as_data(potential) * inv_eps)
                    - self._param(self.inv_scale_cost * inv_eps) * self._cost())
        reduced_axis = -3 if over_i else -2
        if vec is None:
            log_sum = exponent.logsumexp(axis=reduced_axis)[:, 0]
            sign = jnp.ones((1,), self.dtype)
        else:
            log_sum, sign = exponent.logsumexp(axis=reduced_axis,
                                               weight=variable(self._as_data(vec)),
                                               return_sign=True)
            # OTT sums exp(f_i + g_j - C_ij): a -inf `other` (a zero weight) makes it 0.
            log_sum, sign = log_sum[:, 0], jnp.where(jnp.isneginf(other), 0, sign[:, 0])
        value = eps * log_sum
        # OTT puts `other` inside its log-sum-exp and takes it out again where it is finite: an
        # infinite potential therefore propagates, and so it must here.
        return jnp.where(jnp.isfinite(other), value, value + other), sign

    def apply_kernel(self, vec: jax.Array, eps: float | None = None,
                     axis: int = 0) -> jax.Array:
        """exp(-C / eps) applied to vec: over j (axis=1, K @ vec) or over i (axis=0, K.T @ vec);
        vec of shape (size,) or (size, k).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> [round(v, 4) for v in geom.apply_kernel(jnp.ones(3), eps=1.0, axis=1).tolist()]
            [1.0184, 0.7541]
        """
        if eps is None:
            eps = self.epsilon
        kernel = (-self._param(self.inv_scale_cost / eps) * self._cost()).exp()
        return self._apply_to(kernel, vec, axis)

    def apply_cost(self, arr: jax.Array, axis: int = 0,
                   fn: Callable[[Any], Any] | None = None, is_linear: bool = False) -> jax.Array:
        """C.T @ arr (axis=0) or C @ arr (axis=1), for arr of shape (size,) or (size, p), with
        `fn` applied to every cost first. `fn` must work on a jaxkeops LazyTensor, as OTT's
        own `lambda x: x ** 2` does.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.apply_cost(jnp.ones(2), axis=0).tolist()     # column sums of C
            [1.0, 5.0, 13.0]
            >>> geom.apply_cost(jnp.ones(3), axis=1).tolist()     # row sums of C
            [13.0, 6.0]
        """
        del is_linear
        return self._apply_cost_to_vec(arr, axis=axis, fn=fn)

    def _apply_cost_to_vec(self, vec: jax.Array, axis: int = 0,
                           fn: Callable[[Any], Any] | None = None, is_linear: bool = False,
                           scale_cost: float | None = None) -> jax.Array:
        del is_linear
        scale = self.inv_scale_cost if scale_cost is None else scale_cost
        cost = self._param(scale) * self._cost()
        if fn is not None:
            try:
                cost = fn(cost)
            except Exception as error:
                raise NotImplementedError(
                    f"apply_cost: fn={fn!r} failed on a jaxkeops LazyTensor ({error}); write it "
                    "with arithmetic operators or LazyTensor methods (x ** 2, x.exp(), ...)"
                ) from error
            if not isinstance(cost, LazyTensor):
                raise NotImplementedError(f"apply_cost: fn={fn!r} must return a LazyTensor, got "
                                          f"{type(cost).__name__}")
        return self._apply_to(cost, vec, axis)

    def _apply_to(self, matrix: LazyTensor, vec: jax.Array, axis: int) -> jax.Array:
        vec = self._as_data(vec)
        if vec.ndim not in (1, 2):
            raise ValueError(f"the vector must have shape (size,) or (size, k), got {vec.shape}")
        expected = self.shape[0] if axis == 0 else self.shape[1]
        if vec.shape[0] != expected:
            raise ValueError(f"with axis={axis} the vector must have {expected} rows, "
                             f"got shape {vec.shape} for a geometry of shape {self.shape}")
        columns = vec[:, None] if vec.ndim == 1 else vec
        if axis == 0:
            out = (matrix * Vi(columns)).sum(axis=-3)
        else:
            out = (matrix * Vj(columns)).sum(axis=-2)
        return out[:, 0] if vec.ndim == 1 else out

    def transport_cost(self, f: jax.Array, g: jax.Array) -> jax.Array:
        """<P, C> = sum_ij exp((f_i + g_j - C_ij) / eps) C_ij for the plan of potentials f, g,
        without building it (OTT's `SinkhornOutput.primal_cost` builds it for costs other than
        the squared Euclidean one).

        Example:
            >>> from ott.solvers import linear
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> out = linear.solve(geom)
            >>> cost = geom.transport_cost(out.f, out.g)
            >>> bool(jnp.allclose(cost, jnp.sum(out.matrix * geom.cost_matrix), rtol=1e-4))
            True
        """
        inv_eps = 1.0 / self.epsilon
        cost = self._param(self.inv_scale_cost) * self._cost()
        plan = (Vi(self._as_data(f) * inv_eps) + Vj(self._as_data(g) * inv_eps)
                - self._param(inv_eps) * cost).exp()
        return jnp.sum((plan * cost).sum(axis=-2))

    # -------------------------------------------------------------------------------------
    # Explicit materialisation (debugging, small problems).
    @property
    def cost_matrix(self) -> jax.Array:
        """The full n x m (scaled) cost matrix. Builds it: for checks on small problems only.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.cost_matrix.tolist()
            [[0.0, 4.0, 9.0], [1.0, 1.0, 4.0]]
        """
        return self.inv_scale_cost * self._unscaled_cost_matrix

    @property
    def kernel_matrix(self) -> jax.Array:
        """The full n x m kernel exp(-C / eps). Builds it: for checks on small problems only.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.kernel_matrix.shape
            (2, 3)
            >>> bool(jnp.allclose(geom.kernel_matrix, jnp.exp(-geom.cost_matrix / 0.1)))
            True
        """
        return jnp.exp(-self.cost_matrix / self.epsilon)

    # -------------------------------------------------------------------------------------
    # New geometries: rebuilt through __init__, so that the statistics are recomputed.
    def _rebuilt(self, **changes: Any) -> PointCloud:
        options = dict(x=self.x, y=self.y, cost_fn=self.cost_fn, scale_cost=self._scale_cost,
                       epsilon=self._epsilon_init, relative_epsilon=self._relative_epsilon)
        options.update(changes)
        return type(self)(**options)

    def subset(self, row_ixs: jax.Array | None = None,
               col_ixs: jax.Array | None = None) -> PointCloud:
        """The geometry of the rows `row_ixs` of x and the rows `col_ixs` of y (None: all).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.subset(row_ixs=jnp.array([1])).shape
            (1, 3)
            >>> geom.subset(col_ixs=jnp.array([0, 2])).cost_matrix.tolist()
            [[0.0, 9.0], [1.0, 4.0]]
        """
        x = self.x if row_ixs is None else self.x[jnp.atleast_1d(row_ixs)]
        y = self.y if col_ixs is None else self.y[jnp.atleast_1d(col_ixs)]
        return self._rebuilt(x=x, y=y)

    def set_scale_cost(self, scale_cost: ScaleCost) -> PointCloud:
        """The same geometry with another `scale_cost` (its statistic computed anew).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> geom.set_scale_cost("max_cost").cost_matrix.tolist()[1]   # C / max C = C / 9
            [0.1111..., 0.1111..., 0.4444...]
        """
        return self if scale_cost == self._scale_cost else self._rebuilt(scale_cost=scale_cost)

    def _cosine_to_sqeucl(self) -> PointCloud:
        x = self.x / jnp.linalg.norm(self.x, axis=-1, keepdims=True)
        y = self.y / jnp.linalg.norm(self.y, axis=-1, keepdims=True)
        return self._rebuilt(x=x, y=y, cost_fn=costs.SqEuclidean(),
                             scale_cost=2.0 / self.inv_scale_cost)

    def to_LRCGeometry(self, scale: float = 1.0, **kwargs: Any) -> geometry.Geometry:
        """OTT's low-rank factorisation of the cost: exact and matrix-free for SqEuclidean and
        NegDotProduct costs (OTT's `primal_cost` uses it); for other costs OTT's generic
        factorisation, which reads (parts of) the cost matrix.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ott import PointCloud
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [3.0]])
            >>> geom = PointCloud(x, y, epsilon=0.1)       # C = [[0, 4, 9], [1, 1, 4]]
            >>> low_rank = geom.to_LRCGeometry()
            >>> type(low_rank).__name__, bool(jnp.allclose(low_rank.cost_matrix, geom.cost_matrix))
            ('LRCGeometry', True)
        """
        if not (self.is_squared_euclidean or self.is_neg_dotp):
            return super().to_LRCGeometry(scale=scale, **kwargs)
        # The scale and epsilon as numbers: OTT's low-rank geometry cannot compute a median.
        dense = pointcloud.PointCloud(self.x, self.y, cost_fn=self.cost_fn,
                                      scale_cost=1.0 / self.inv_scale_cost,
                                      epsilon=self.epsilon_scheduler)
        return dense.to_LRCGeometry(scale=scale, **kwargs)

    def tree_flatten(self):  # noqa: D102
        children = (self.x, self.y, self._epsilon_init, self.cost_fn, self._inv_scale,
                    self._epsilon_resolved)
        return children, {"scale_cost": self._scale_cost,
                          "relative_epsilon": self._relative_epsilon}

    @classmethod
    def tree_unflatten(cls, aux_data, children):  # noqa: D102
        # JAX unflattens with tracers, tangents and placeholders: no checks, no statistics.
        x, y, epsilon, cost_fn, inv_scale, epsilon_resolved = children
        geom = object.__new__(cls)
        geometry.Geometry.__init__(geom, epsilon=epsilon,
                                   relative_epsilon=aux_data["relative_epsilon"],
                                   scale_cost=aux_data["scale_cost"])
        geom.x, geom.y, geom.cost_fn, geom._batch_size = x, y, cost_fn, None
        geom._inv_scale, geom._epsilon_resolved = inv_scale, epsilon_resolved
        return geom

    def __repr__(self) -> str:
        return (f"jaxkeops.ott.PointCloud(shape={self.shape}, cost_fn={self.cost_fn!r}, "
                f"scale_cost={self._scale_cost!r})")
