"""Dense evaluation of a formula with jnp, from the op table's reference functions.

Used by the dense test reference (`jaxkeops.testing`) and by the derivative of Min/Max/KMin,
which only ever evaluates the formula at the selected (i, j) pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from .nodes import Const, Node, Op, Var, walk
from .optable import OPS


def evaluate(formula: Node, env: Mapping[Var, jnp.ndarray], dtype) -> jnp.ndarray:
    """The values of `formula` given an array per variable (broadcastable, last axis = dim)."""
    values: dict[Node, jnp.ndarray] = {}
    for node in walk(formula):
        if isinstance(node, Var):
            values[node] = jnp.asarray(env[node], dtype)
        elif isinstance(node, Const):
            values[node] = jnp.full((node.dim,), node.value, dtype)
        elif isinstance(node, Op):
            args = [values[a] for a in node.args]
            values[node] = jnp.asarray(OPS[node.name].reference(jnp, *args, *node.params), dtype)
    return values[formula]
