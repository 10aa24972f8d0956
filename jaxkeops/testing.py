"""A dense, pure-jnp evaluator of any formula and reduction: the reference for every test.

It materialises the whole (*batch, M, N, dim) array of formula values, so it is only for the
small sizes of tests. It shares nothing with the code generator but the op table's `reference`
functions, which are plain jnp.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from ._shapes import check_call, index_dtype
from .codegen.spec import KernelSpec
from .formulas import CAT_I, CAT_J
from .formulas.dense import evaluate
from .reductions import INDEX


def dense_reduce(spec: KernelSpec, arrays: Sequence, names: Sequence[str] | None = None):
    """What jaxkeops computes for `spec` on `arrays` (Genred layout), by brute force.

    i-variables are (*batch, M, dim), j-variables (*batch, N, dim), parameters (*batch, dim).
    Returns a tuple with one array per output of the reduction, shaped as jaxkeops returns it.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Genred
        >>> from jaxkeops.codegen.spec import KernelSpec
        >>> from jaxkeops.testing import dense_reduce
        >>> sums = Genred("SqDist(x, y)", ["x = Vi(1)", "y = Vj(1)"], reduction_op="Sum", axis=1)
        >>> spec = KernelSpec(sums.formulas, sums.reduction, sums.axis, "float32",
        ...                   args=sums.variables)
        >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
        >>> print(dense_reduce(spec, [x, y])[0])   # 9 + 1 + 4, by brute force
        [[14.]
         [14.]]
        >>> bool(jnp.allclose(sums(x, y), dense_reduce(spec, [x, y])[0]))
        True
    """
    names = names or [repr(v) for v in spec.args]
    layout = check_call(spec.args, arrays, names)
    env = {}
    for var, a in zip(spec.args, arrays):
        a = jnp.asarray(a)
        if var.cat == CAT_I:
            env[var] = a[..., :, None, :]
        elif var.cat == CAT_J:
            env[var] = a[..., None, :, :]
        else:
            env[var] = a[..., None, None, :]
    # An axis without variables has one row; an axis of variables with 0 rows stays empty.
    n_i = layout.n_i if layout.n_i >= 0 else 1
    n_j = layout.n_j if layout.n_j >= 0 else 1
    full = layout.batch + (n_i, n_j)
    vals = []
    compute = spec.dtype  # float32 for half-precision storage, as in the kernels
    for f in spec.formulas:
        v = evaluate(f, env, compute)
        vals.append(jnp.broadcast_to(v, full + (f.dim,)))
    axis = -2 if spec.axis == 1 else -3
    outs = spec.reduction_spec.reference(jnp, vals, axis, k=spec.k)
    result = []
    for out, value in zip(spec.outputs, outs):
        dtype = index_dtype() if out.kind == INDEX else spec.value_dtype
        result.append(jnp.asarray(value).astype(dtype))
    return tuple(result)
