"""float16 and bfloat16 inputs: stored in half precision, computed in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops import Vi, Vj
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import Var, make
from jaxkeops.lazy.reduce import run_reduction
from jaxkeops.testing import dense_reduce

HALF = [jnp.float16, jnp.bfloat16]
TOLERANCE = {jnp.float16: 2e-3, jnp.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", HALF, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("reduction", ["Sum", "LogSumExp", "Min_ArgMin", "KMin_ArgKMin"])
def test_half_precision_reductions_match_float32_reference(dtype, reduction):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((37, 3)), dtype)
    y = jnp.asarray(rng.standard_normal((53, 3)), dtype)
    xv, yv = Var(0, 3, 0), Var(1, 3, 1)
    f = make("SqDist", xv, yv)
    if reduction == "Sum":
        f = make("Exp", make("Minus", f))
    k = 3 if reduction.startswith("KMin") else None
    outs = run_reduction((f,), reduction, 1, (xv, yv), (x, y), ("x", "y"), k=k)
    spec = KernelSpec((f,), reduction, 1, "float32", k=k, storage_dtype=jnp.dtype(dtype).name)
    refs = dense_reduce(spec, (x, y))
    for out, ref in zip(outs, refs):
        assert out.dtype == ref.dtype
        if jnp.issubdtype(out.dtype, jnp.integer):
            assert (np.asarray(out) == np.asarray(ref)).mean() > 0.97  # ties after rounding
        else:
            assert out.dtype == dtype
            np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                                       rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", HALF, ids=["float16", "bfloat16"])
def test_half_precision_gradient_matches_float32(dtype):
    rng = np.random.default_rng(4)
    x32 = rng.standard_normal((20, 3)).astype(np.float32)
    y32 = rng.standard_normal((30, 3)).astype(np.float32)

    def loss(x, y):
        return ((-((Vi(x) - Vj(y)) ** 2).sum(-1)).exp().sum(axis=1)).astype(jnp.float32).sum()

    g_half = jax.grad(loss)(jnp.asarray(x32, dtype), jnp.asarray(y32, dtype))
    g32 = jax.grad(loss)(jnp.asarray(jnp.asarray(x32, dtype), jnp.float32),
                         jnp.asarray(jnp.asarray(y32, dtype), jnp.float32))
    assert g_half.dtype == dtype
    np.testing.assert_allclose(np.asarray(g_half, np.float32), np.asarray(g32),
                               rtol=4 * TOLERANCE[dtype], atol=4 * TOLERANCE[dtype])
