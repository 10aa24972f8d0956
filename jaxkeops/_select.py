"""Dense evaluation of a formula at selected pairs: the derivative of Min, Max and KMin.

A selecting reduction's value is F at one pair (i, j*(i)) per output component, so its
derivative is dF at those pairs: O(M * K * D) work, after the kernel found the indices.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from .codegen.spec import ROLE_INNER, ROLE_OUTER, KernelSpec
from .formulas import Node, Var, variables
from .formulas.dense import evaluate


def evaluate_at_selection(
    formula: Node,
    formula_dim: int,
    spec: KernelSpec,
    operands: Mapping[Var, jnp.ndarray],
    indices: jnp.ndarray,
) -> jnp.ndarray:
    """`formula` at the pairs picked by `indices` (*batch, n_out, W), W = K * formula_dim:
    position p of a row holds component p % formula_dim at inner row indices[..., p].
    Variables are operands in kernel layout ((*batch, rows, dim)); -1 indices give 0."""
    batch = indices.shape[:-2]
    n_out, width = indices.shape[-2:]
    safe = jnp.maximum(indices, 0)
    env = {}
    for var in variables(formula):
        a = operands[var]
        role = spec.role(var)
        if role == ROLE_INNER:
            a = jnp.broadcast_to(a, batch + a.shape[-2:])
            rows = safe.reshape(batch + (n_out * width, 1))
            a = jnp.take_along_axis(a, rows, axis=-2)
            env[var] = a.reshape(batch + (n_out, width, var.dim))
        elif role == ROLE_OUTER:
            env[var] = a[..., :, None, :]
        else:
            env[var] = a[..., :, None, :]
    values = evaluate(formula, env, spec.dtype)
    values = jnp.broadcast_to(values, batch + (n_out, width, formula_dim))
    component = jnp.asarray(np.arange(width) % formula_dim)[:, None]
    picked = jnp.take_along_axis(values, jnp.broadcast_to(component, values.shape[:-1] + (1,)),
                                 axis=-1)[..., 0]
    return jnp.where(indices >= 0, picked, jnp.zeros((), picked.dtype))
