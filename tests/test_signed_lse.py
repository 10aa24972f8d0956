"""LogSumExpSigned: log|sum_j exp(f_ij) w_ij| and its sign, per weight component, against
jax.nn.logsumexp(..., b=w, return_sign=True) on the dense matrix: mixed-sign, all-negative and
exactly cancelling rows, +inf and -inf terms, rows of -inf; then its derivatives (grad, jvp,
hessian, vmap) against those of the dense jax.nn.logsumexp and finite differences.

The special rows use f_ij = a_i + g_j, which puts an inf in a whole row (a_i) or column (g_j),
and weights w_j of dimension 2; one kernel per (axis, dtype).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, run_both
from jax.nn import logsumexp
from jax.test_util import check_grads

from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.lazy.reduce import run_reduction
from jaxkeops.reductions import REDUCTIONS, VALUE

M, N = 23, 1031  # 1031: not a multiple of any SIMD width, a masked last vector


def _variables(axis: int):
    """(a, g, w): a indexed like the output, g and the weights w like the reduced axis."""
    out_cat, red_cat = (CAT_I, CAT_J) if axis == 1 else (CAT_J, CAT_I)
    return Var(0, 1, out_cat), Var(1, 1, red_cat), Var(2, 2, red_cat)


def _signed_lse(a, g, w, axis=1):
    av, gv, wv = _variables(axis)
    f = make("Add", av, gv)
    return run_reduction([f, wv], "LogSumExpSigned", axis, [av, gv, wv], [a, g, w],
                         ["a", "g", "w"])


def _reference(a, g, w):
    """jax.nn.logsumexp on the dense (rows, reduced) matrix, in float64, per weight component."""
    with np.errstate(invalid="ignore"):  # -inf + inf: a NaN term, as in the kernel
        f = (a + g.T).astype(np.float64)  # rounded in the data's dtype, as the kernel does
    outs = [logsumexp(f, axis=1, b=w[None, :, k].astype(np.float64), return_sign=True)
            for k in range(w.shape[1])]
    return (np.stack([np.asarray(v) for v, _ in outs], -1),
            np.stack([np.asarray(s) for _, s in outs], -1))


def _data(rng, dtype="float32"):
    a = rng.uniform(-2, 2, (M, 1))
    g = rng.uniform(-3, 1, (N, 1))
    w = np.stack([rng.uniform(-1, 2, N), rng.uniform(-2, 1, N)], -1)  # mostly +, mostly -
    return a.astype(dtype), g.astype(dtype), w.astype(dtype)


def test_outputs_value_then_sign():
    outs = REDUCTIONS["LogSumExpSigned"].outputs((1, 3), None)
    assert [(o.kind, o.width) for o in outs] == [(VALUE, 3), (VALUE, 3)]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_jax_logsumexp_with_mixed_signs(axis, dtype, rng):
    a, g, w = _data(rng, dtype)
    value, sign = _signed_lse(a, g, w, axis)
    ref_value, ref_sign = _reference(a, g, w)
    assert value.dtype == sign.dtype == np.dtype(dtype)
    assert value.shape == sign.shape == (M, 2)
    assert set(np.unique(ref_sign)) == {-1.0, 1.0}  # both signs occur
    np.testing.assert_array_equal(np.asarray(sign), ref_sign)
    assert_close(value, ref_value, dtype)


def test_dense_reference_matches_jax_logsumexp(rng):
    """jaxkeops.testing's reference (used by the CUDA emulation tests) is jax's semantics."""
    av, gv, wv = _variables(1)
    a, g, w = _data(rng, "float64")
    a[3] = -np.inf  # with the +inf of g: NaN terms, a NaN row
    g[[5, 9]] = np.inf
    got, ref = run_both([make("Add", av, gv), wv], "LogSumExpSigned", 1, [av, gv, wv],
                        [a, g, w])
    ref_value, ref_sign = _reference(a, g, w)
    for values in (got, ref):
        np.testing.assert_array_equal(np.asarray(values[1]), ref_sign)
        assert_close(values[0], ref_value, "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_special_rows(dtype, rng):
    a, g, w = _data(rng, dtype)
    w[:, 0] = -np.abs(w[:, 0]) - 0.1  # component 0: all negative
    # Component 1 cancels exactly where every term of a row has the same exp: g = 0, weights
    # +-0.75 in pairs (N is odd: the last weight is 0).
    g[:] = 0
    w[:, 1] = np.where(np.arange(N) % 2 == 0, 0.75, -0.75)
    w[-1, 1] = 0
    a[4] = -np.inf  # a row of -inf terms: -inf, sign 0
    value, sign = (np.asarray(o) for o in _signed_lse(a, g, w))
    ref_value, ref_sign = _reference(a, g, w)
    np.testing.assert_array_equal(sign, ref_sign)
    assert_close(value, ref_value, dtype)
    assert (sign[:, 0] == -1).sum() == M - 1 and sign[4, 0] == 0
    assert (sign[:, 1] == 0).all() and (value[:, 1] == -np.inf).all()
    assert value[4, 0] == -np.inf


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_infinite_terms(dtype, rng):
    a, g, w = _data(rng, dtype)
    g[[0, 17, 600]] = -np.inf  # dropped terms, the first in the first SIMD vector
    value, sign = (np.asarray(o) for o in _signed_lse(a, g, w))
    ref_value, ref_sign = _reference(a, g, w)
    assert np.isfinite(value).all()
    np.testing.assert_array_equal(sign, ref_sign)
    assert_close(value, ref_value, dtype)
    # +inf terms dominate: +inf with the sign of their weights, NaN where those have both
    # signs (inf - inf, as jax.nn.logsumexp gives even if they do not cancel).
    g[[40, 1030]] = np.inf
    w[40] = [-1.0, -1.0]
    w[1030] = [-0.5, 2.0]
    value, sign = (np.asarray(o) for o in _signed_lse(a, g, w))
    ref_value, ref_sign = _reference(a, g, w)
    assert (value[:, 0] == np.inf).all() and (sign[:, 0] == -1).all()
    assert np.isnan(value[:, 1]).all() and np.isnan(sign[:, 1]).all()
    np.testing.assert_array_equal(sign, ref_sign)
    np.testing.assert_array_equal(value, ref_value)


def test_unweighted_is_logsumexp_with_sign_one(rng):
    av, gv, _ = _variables(1)
    a, g, _ = _data(rng, "float64")
    a[2] = -np.inf
    f = make("Add", av, gv)
    value, sign = run_reduction([f], "LogSumExpSigned", 1, [av, gv], [a, g], ["a", "g"])
    (expected,) = run_reduction([f], "LogSumExp", 1, [av, gv], [a, g], ["a", "g"])
    np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))
    assert (np.delete(np.asarray(sign), 2, 0) == 1).all() and sign[2, 0] == 0


def test_half_precision_storage(rng):
    a, g, w = _data(rng, "float32")
    value, sign = _signed_lse(*(v.astype(np.float16) for v in (a, g, w)))
    ref_value, ref_sign = _reference(*(v.astype(np.float16).astype(np.float32)
                                       for v in (a, g, w)))
    assert value.dtype == sign.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(sign, np.float32), ref_sign)
    np.testing.assert_allclose(np.asarray(value, np.float32), ref_value, rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------------------------
# Derivatives: f = -|x_i - y_j|^2 (so that x and y both move it) plus the weights.

X = Var(0, 2, CAT_I)
Y = Var(1, 2, CAT_J)
W = Var(2, 2, CAT_J)
F = make("Minus", make("SqDist", X, Y))


def _smooth_data(rng, m=7, n=40):
    x = rng.normal(size=(m, 2)) * 0.5
    y = rng.normal(size=(n, 2)) * 0.5
    # Weights of both signs whose sums stay away from 0 (log|S| is singular there).
    w = np.stack([rng.uniform(-0.5, 1.5, n), rng.uniform(-1.5, 0.5, n)], -1)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)


def _keops(x, y, w):
    return run_reduction([F, W], "LogSumExpSigned", 1, [X, Y, W], [x, y, w], ["x", "y", "w"])


def _dense(x, y, w):
    f = -((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    outs = [logsumexp(f, axis=1, b=w[None, :, k], return_sign=True) for k in range(2)]
    return jnp.stack([v for v, _ in outs], -1), jnp.stack([s for _, s in outs], -1)


def test_sums_stay_away_from_zero(rng):
    value, sign = _dense(*_smooth_data(rng))
    assert (value > -3).all() and set(np.unique(np.asarray(sign))) == {-1.0, 1.0}


def test_grad_matches_dense_jax(rng):
    x, y, w = _smooth_data(rng)
    r = jnp.asarray(rng.normal(size=(7, 2)))

    def loss(fn):
        return lambda x, y, w: jnp.sum(fn(x, y, w)[0] * r)

    got = jax.grad(loss(_keops), argnums=(0, 1, 2))(x, y, w)
    expected = jax.grad(loss(_dense), argnums=(0, 1, 2))(x, y, w)
    for a, b in zip(got, expected):
        assert_close(a, b, "float64")


def test_jvp_moves_the_value_not_the_sign(rng):
    x, y, w = _smooth_data(rng)
    tangents = tuple(jnp.asarray(rng.normal(size=v.shape)) for v in (x, y, w))
    (value, sign), (d_value, d_sign) = jax.jvp(_keops, (x, y, w), tangents)
    _, (ref_d_value, _) = jax.jvp(_dense, (x, y, w), tangents)
    assert_close(d_value, ref_d_value, "float64")
    assert not np.asarray(d_sign).any()
    # The formula of the tangent: sign * sum_j exp(f - value) (df w + dw).
    x_t, y_t, w_t = (np.asarray(t) for t in tangents)
    xn, yn, wn = (np.asarray(v) for v in (x, y, w))
    diff = xn[:, None] - yn[None]
    f = -(diff ** 2).sum(-1)
    df = -2 * (diff * (x_t[:, None] - y_t[None])).sum(-1)
    e = np.exp(f[..., None] - np.asarray(value)[:, None, :])
    expected = np.asarray(sign) * (e * (df[..., None] * wn[None] + w_t[None])).sum(1)
    assert_close(d_value, expected, "float64")


def test_second_order_and_finite_differences(rng):
    x, y, w = _smooth_data(rng, m=4, n=9)
    check_grads(lambda x, y, w: _keops(x, y, w)[0], (x, y, w), order=2, modes=("fwd", "rev"))
    hessian = jax.hessian(lambda x: jnp.sum(_keops(x, y, w)[0]))(x)
    expected = jax.hessian(lambda x: jnp.sum(_dense(x, y, w)[0]))(x)
    assert_close(hessian, expected, "float64")


def test_vmap_of_grad(rng):
    x, y, w = _smooth_data(rng)
    ws = jnp.stack([w, w * 1.5, w[::-1]])

    def loss(fn, w):
        return jnp.sum(fn(x, y, w)[0] ** 2)

    got = jax.vmap(jax.grad(lambda w: loss(_keops, w)))(ws)
    expected = jnp.stack([jax.grad(lambda w: loss(_dense, w))(v) for v in ws])
    assert_close(got, expected, "float64")
