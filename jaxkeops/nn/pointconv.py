"""A point-cloud convolution over the K nearest neighbours (PointNet++ set abstraction style).

The neighbours come from a jaxkeops ArgKMin reduction, so finding them takes memory linear in
the number of points; only the (M, K) neighbourhoods are gathered and fed to the MLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkeops import Vi, Vj

AGGREGATIONS = ("max", "sum", "mean")


def knn_indices(queries: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """The indices (*batch, M, k) of the k points nearest each query, nearest first (ties go
    to the smaller index), from queries (*batch, M, P) and points (*batch, N, P). Integer
    indices: nothing to differentiate.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.nn import knn_indices
        >>> points = jnp.array([[0.0], [10.0], [1.0], [3.0]])
        >>> knn_indices(jnp.array([[0.2]]), points, k=3).tolist()
        [[0, 2, 3]]
    """
    if queries.shape[-1] != points.shape[-1]:
        raise ValueError(f"queries and points need the same dimension (last axis): "
                         f"queries.shape={queries.shape}, points.shape={points.shape}")
    if not 1 <= k <= points.shape[-2]:
        raise ValueError(f"k={k} must be between 1 and the number of points "
                         f"{points.shape[-2]} (points.shape={points.shape})")
    queries, points = jax.lax.stop_gradient(queries), jax.lax.stop_gradient(points)
    return Vi(queries).sqdist(Vj(points)).argKmin(K=k, axis=-2)


def gather_neighbours(values: jax.Array, indices: jax.Array) -> jax.Array:
    """values (*batch, N, C) at indices (*batch, M, k): (*batch, M, k, C), differentiable in
    `values`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.nn import gather_neighbours
        >>> values = jnp.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])   # (N, C) = (3, 2)
        >>> gather_neighbours(values, jnp.array([[2, 1], [0, 0]])).tolist()
        [[[2.0, 20.0], [1.0, 10.0]], [[0.0, 0.0], [0.0, 0.0]]]
    """
    batch = jnp.broadcast_shapes(values.shape[:-2], indices.shape[:-2])
    values = jnp.broadcast_to(values, batch + values.shape[-2:])
    indices = jnp.broadcast_to(indices, batch + indices.shape[-2:])
    m, k = indices.shape[-2:]
    flat = indices.reshape(*batch, m * k, 1)
    return jnp.take_along_axis(values, flat, axis=-2).reshape(*batch, m, k, values.shape[-1])


class PointConv(nnx.Module):
    """A convolution over the K nearest neighbours of each point (PointNet++ set abstraction).

    For queries q_i (default: the points themselves) and points p_j with features f_j,

        out_i = AGG_{j in N_K(i)} MLP([p_j - q_i, f_j])

    where N_K(i) are the K points nearest q_i in Euclidean distance (q_i itself when the
    queries are the points; ties go to the smaller index), [a, b] is concatenation, and
    AGG is the max (default), sum or mean over the K neighbours, taken per output feature.
    MLP is Linear -> activation -> ... -> Linear: `hidden_features` gives the widths of the
    hidden layers, the activation follows each hidden layer, and the last layer is linear.
    With `in_features=0` the MLP sees relative positions only.

    The neighbour search is a jaxkeops ArgKMin reduction (memory linear in N); gradients flow
    to the parameters, the features and the positions (through p_j - q_i), not through the
    choice of neighbours.

    Args:
        in_features: C, the feature dimension of `features` (0 for none).
        out_features: features of the output.
        hidden_features: widths of the MLP's hidden layers.
        k: number of neighbours K.
        position_dim: P, the dimension of the points (3 for 3-D clouds).
        aggregation: "max", "sum" or "mean".
        activation: the MLP's activation (default nnx.relu).
        param_dtype: dtype of the parameters.
        rngs: the nnx.Rngs that initialise the MLP.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxkeops.nn import PointConv
        >>> conv = PointConv(in_features=4, out_features=32, hidden_features=(16,), k=8,
        ...                  rngs=nnx.Rngs(0))
        >>> points = jax.random.normal(jax.random.key(0), (2, 200, 3))   # (batch, N, 3)
        >>> features = jnp.ones((2, 200, 4))                              # (batch, N, C)
        >>> conv(points, features).shape
        (2, 200, 32)
        >>> conv(points, features, queries=points[:, :50]).shape         # downsampled
        (2, 50, 32)
    """

    def __init__(self, in_features: int, out_features: int,
                 hidden_features: Sequence[int] = (64,), *, k: int = 16, position_dim: int = 3,
                 aggregation: str = "max", activation: Any = nnx.relu,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got k={k}")
        self.in_features = in_features
        self.position_dim = position_dim
        self.k = k
        self.aggregation = aggregation
        self.activation = activation
        widths = [position_dim + in_features, *hidden_features, out_features]
        self.layers = nnx.List([nnx.Linear(a, b, param_dtype=param_dtype, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:])])

    def mlp(self, inputs: jax.Array) -> jax.Array:
        """The MLP applied to the last axis of `inputs` (position_dim + in_features).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from jaxkeops.nn import PointConv
            >>> conv = PointConv(in_features=1, out_features=5, hidden_features=(8, 8), k=2,
            ...                  position_dim=2, rngs=nnx.Rngs(0))
            >>> conv.mlp(jnp.ones((7, 3))).shape          # 2 position + 1 feature channels
            (7, 5)
        """
        h = inputs
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        return self.layers[-1](h)

    def _check(self, points: jax.Array, features: jax.Array | None,
               queries: jax.Array) -> None:
        if points.ndim < 2 or points.shape[-1] != self.position_dim:
            raise ValueError(f"points must have shape (*batch, N, {self.position_dim}), got "
                             f"points.shape={points.shape}")
        if queries.ndim < 2 or queries.shape[-1] != self.position_dim:
            raise ValueError(f"queries must have shape (*batch, M, {self.position_dim}), got "
                             f"queries.shape={queries.shape}")
        if self.in_features and features is None:
            raise ValueError(f"this PointConv takes features of shape (*batch, N, "
                             f"{self.in_features}); got features=None")
        if features is not None and (features.shape[-1] != self.in_features
                                     or features.shape[-2] != points.shape[-2]):
            raise ValueError(f"features must have shape (*batch, N, {self.in_features}) with "
                             f"N = {points.shape[-2]}: features.shape={features.shape}, "
                             f"points.shape={points.shape}")

    def __call__(self, points: jax.Array, features: jax.Array | None = None, *,
                 queries: jax.Array | None = None) -> jax.Array:
        """points (*batch, N, P), features (*batch, N, C) or None, queries (*batch, M, P)
        (default `points`) -> (*batch, M, out_features).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from jaxkeops.nn import PointConv
            >>> conv = PointConv(in_features=0, out_features=3, k=4, position_dim=2,
            ...                  aggregation="mean", rngs=nnx.Rngs(0))
            >>> points = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5, 5]])
            >>> conv(points).shape                        # positions only: no features
            (5, 3)
            >>> conv(points + 7.0).tolist() == conv(points).tolist()   # translation invariant
            True
        """
        queries = points if queries is None else queries
        self._check(points, features, queries)
        neighbours = knn_indices(queries, points, self.k)           # (*batch, M, K)
        offsets = gather_neighbours(points, neighbours) - queries[..., None, :]
        if self.in_features:
            inputs = jnp.concatenate([offsets, gather_neighbours(features, neighbours)], -1)
        else:
            inputs = offsets
        messages = self.mlp(inputs)                                  # (*batch, M, K, out)
        if self.aggregation == "max":
            return messages.max(axis=-2)
        if self.aggregation == "sum":
            return messages.sum(axis=-2)
        return messages.mean(axis=-2)
