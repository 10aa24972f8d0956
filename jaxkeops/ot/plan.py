"""The entropic transport plan, never stored: pi_ij = a_i b_j exp((f_i + g_j - C(x_i, y_j)) / eps).

Products with the plan are log-domain jaxkeops reductions, so they stay exact for small eps:

    (pi @ v)_i = a_i exp(f_i / eps) sum_j exp(log b_j + (g_j - C_ij) / eps) v_j
               = sign_i exp(log a_i + f_i / eps + log|sum_j ...|)        (signed log-sum-exp)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .costs import Cost, cost_matrix
from .inputs import measures
from .solver import log_weights

Array = jax.Array


@jax.tree_util.register_pytree_node_class
class TransportPlan:
    """A lazy (*batch, N, M) transport plan pi_ij = a_i b_j exp((f_i + g_j - C(x_i, y_j)) / eps)
    between x (*batch, N, D) with weights a and y (*batch, M, D) with weights b (None: uniform),
    from the potentials f (*batch, N) and g (*batch, M) of entropic OT at temperature `eps`.
    `p`, `cost` and `backend` mean what they mean for SamplesLoss ("tensorized": dense arrays).

    `plan @ v` is sum_j pi_ij v_j, `plan.T @ u` is sum_i pi_ij u_i (v of shape (M,),
    (*batch, M) or (*batch, M, E)), `plan.marginals()` is (pi 1, pi^T 1), and
    `plan.barycentric_map()` sends each x_i to sum_j pi_ij y_j / sum_j pi_ij. A TransportPlan
    is a pytree: it goes through jit, grad and vmap. `sinkhorn_plan` builds one.

    Its marginals are (a, b) only as far as the potentials are converged: the epsilon-scaling
    descent alone gives accurate costs but rough plans at small blur; pass `tol` to
    `sinkhorn_plan` to iterate until the potentials settle.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import sinkhorn_plan
        >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.1], [1.1], [2.0]])
        >>> plan = sinkhorn_plan(x, y, blur=0.1, tol=1e-9)
        >>> plan.shape
        (2, 3)
        >>> [round(v, 3) for v in (plan @ jnp.ones(3)).tolist()]      # the weights of x
        [0.5, 0.5]
        >>> [round(v, 2) for v in plan.barycentric_map()[:, 0].tolist()]
        [0.43, 1.7]
    """

    def __init__(self, x: Array, y: Array, f: Array, g: Array, a: Array | None = None,
                 b: Array | None = None, *, eps: Any, p: int = 2, cost: Cost = None,
                 backend: str = "auto", transposed: bool = False):
        m = measures(a, x, b, y)
        self.a, self.x, self.b, self.y = m
        self.f, self.g = jnp.asarray(f, self.x.dtype), jnp.asarray(g, self.x.dtype)
        for name, potential, weights in (("f", self.f, self.a), ("g", self.g, self.b)):
            if potential.shape != weights.shape:
                raise ValueError(f"potential '{name}' of shape {potential.shape} does not match "
                                 f"its weights, of shape {weights.shape}")
        self.eps, self.p, self.cost, self.backend = eps, p, cost, backend
        self.transposed = transposed

    # Pytree protocol.
    def tree_flatten(self):
        children = (self.x, self.y, self.f, self.g, self.a, self.b, self.eps)
        return children, (self.p, self.cost, self.backend, self.transposed)

    @classmethod
    def tree_unflatten(cls, aux, children):
        out = object.__new__(cls)
        out.x, out.y, out.f, out.g, out.a, out.b, out.eps = children
        out.p, out.cost, out.backend, out.transposed = aux
        return out

    # ----------------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The leading batch dimensions of the plan (() for one pair of clouds).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import TransportPlan
            >>> x, y = jnp.zeros((4, 2, 1)), jnp.ones((4, 3, 1))    # a batch of 4 problems
            >>> TransportPlan(x, y, jnp.zeros((4, 2)), jnp.zeros((4, 3)), eps=0.1).batch_shape
            (4,)
        """
        return tuple(self.x.shape[:-2])

    @property
    def shape(self) -> tuple[int, ...]:
        """(*batch, N, M), or (*batch, M, N) for the transpose.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import TransportPlan
            >>> plan = TransportPlan(jnp.zeros((2, 1)), jnp.ones((3, 1)), jnp.zeros(2),
            ...                      jnp.zeros(3), eps=0.1)
            >>> plan.shape, plan.T.shape
            ((2, 3), (3, 2))
        """
        n, m = self.x.shape[-2], self.y.shape[-2]
        return self.batch_shape + ((m, n) if self.transposed else (n, m))

    @property
    def T(self) -> TransportPlan:
        """The transposed plan (*batch, M, N): `plan.T @ u` sums over i.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import sinkhorn_plan
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.1], [1.1], [2.0]])
            >>> plan = sinkhorn_plan(x, y, blur=0.1, tol=1e-9)
            >>> [round(v, 3) for v in (plan.T @ jnp.ones(2)).tolist()]     # the weights of y
            [0.333, 0.333, 0.333]
        """
        children, (p, cost, backend, transposed) = self.tree_flatten()
        return TransportPlan.tree_unflatten((p, cost, backend, not transposed), children)

    def _matrix(self):
        return cost_matrix(self.x, self.y, self.p, self.cost, self.backend == "tensorized")

    def _log_factors(self) -> tuple[Array, Array]:
        """(log a_i + f_i / eps, log b_j + g_j / eps)."""
        return (log_weights(self.a) + self.f / self.eps, log_weights(self.b) + self.g / self.eps)

    def _output_and_reduced(self) -> tuple[Array, Array, str]:
        """(log factor of the output rows, of the reduced rows, the reduced index)."""
        row, col = self._log_factors()
        return (col, row, "i") if self.transposed else (row, col, "j")

    def __matmul__(self, v: Any) -> Array:
        """sum over the reduced index of pi times v: (*batch, rows) or (*batch, rows, E)."""
        v = jnp.asarray(v, self.x.dtype)
        n_out, n_red = self.shape[-2:]
        nb = len(self.batch_shape)
        vector = v.ndim == nb + 1
        if not vector and v.ndim != nb + 2:
            raise ValueError(f"plan @ v needs v of shape {self.batch_shape + (n_red,)} or "
                             f"{self.batch_shape + (n_red, 'E')}, got {tuple(v.shape)}")
        w = v[..., None] if vector else v
        if w.shape[-2] != n_red:
            raise ValueError(f"plan of shape {self.shape} @ v: v has {w.shape[-2]} rows, "
                             f"expected {n_red} (shape {tuple(v.shape)})")
        w = jnp.broadcast_to(w, self.batch_shape + w.shape[-2:])
        out_log, red_log, over = self._output_and_reduced()
        log_abs, sign = self._matrix().log_sum(red_log, 1 / self.eps, over, w, signed=True)
        out = sign * jnp.exp(out_log[..., None] + log_abs)
        return out[..., 0] if vector else out

    def marginals(self) -> tuple[Array, Array]:
        """(pi 1 on x, pi^T 1 on y): equal to (a, b) at convergence of balanced OT.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import sinkhorn_plan
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.1], [1.1], [2.0]])
            >>> plan = sinkhorn_plan(x, y, blur=0.1, tol=1e-9)
            >>> on_x, on_y = plan.marginals()
            >>> [round(v, 3) for v in on_x.tolist()], [round(v, 3) for v in on_y.tolist()]
            ([0.5, 0.5], [0.333, 0.333, 0.333])
        """
        row, col = self._log_factors()
        C = self._matrix()
        first = jnp.exp(row + C.log_sum(col, 1 / self.eps, "j"))
        second = jnp.exp(col + C.log_sum(row, 1 / self.eps, "i"))
        return (second, first) if self.transposed else (first, second)

    def barycentric_map(self) -> Array:
        """sum_j pi_ij y_j / sum_j pi_ij for each x_i, (*batch, N, D) (for the transpose, the
        image of each y_j in the space of x).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import sinkhorn_plan
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.1], [1.1], [2.0]])
            >>> plan = sinkhorn_plan(x, y, blur=0.1, tol=1e-9)
            >>> [round(v, 2) for v in plan.barycentric_map()[:, 0].tolist()]
            [0.43, 1.7]
            >>> [round(v, 2) for v in plan.T.barycentric_map()[:, 0].tolist()]
            [0.0, 0.5, 1.0]
        """
        _, red_log, over = self._output_and_reduced()
        target = self.x if self.transposed else self.y
        return self._matrix().softmax_sum(red_log, 1 / self.eps, target, over)

    def dense(self) -> Array:
        """The (*batch, N, M) array of the plan (small problems, tests).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops.ot import sinkhorn_plan
            >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.1], [1.1], [2.0]])
            >>> plan = sinkhorn_plan(x, y, blur=0.1, tol=1e-9)
            >>> [[round(v, 3) for v in row] for row in plan.dense().tolist()]
            [[0.333, 0.167, 0.0], [0.0, 0.167, 0.333]]
        """
        n_red = self.shape[-1]
        eye = jnp.broadcast_to(jnp.eye(n_red, dtype=self.x.dtype),
                               self.batch_shape + (n_red, n_red))
        return self @ eye

    def __repr__(self) -> str:
        return f"TransportPlan(shape={self.shape}, eps={self.eps!r}, p={self.p})"
