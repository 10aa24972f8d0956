"""Threaded CPU calls pack the reduced axis's variables once per call (kernel_abi.h, JK_PACK)
and every task reads the packed tiles: reduced axes across several tiles (4,096 rows at
D = 3) and not a multiple of the SIMD width, hoisted inner subexpressions, every kind of
reduction state, against float64 numpy. A batch (not pre-packed) checks the fallback. Also the
setting of the pool threads' lingering between calls."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxkeops import Vi, Vj

M, N = 300, 9_001  # 2.7e6 pairs: threaded; 3 tiles, the last one partial


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(M, 3)).astype(np.float32)
    y = rng.normal(size=(N, 3)).astype(np.float32)
    b = rng.normal(size=(N, 2)).astype(np.float32)
    return x, y, b


def d2_64(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def test_gaussian_sum_with_hoisted_scaling(data):
    x, y, b = data
    got = jax.jit(lambda x, y, b: (-Vi(x).sqdist(Vj(y)) / 0.5).exp() @ b)(x, y, b)
    expected = np.exp(-d2_64(x, y) / 0.5) @ b.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-5, atol=2e-5)


def test_logsumexp_and_its_gradient(data):
    x, y, _ = data

    def lse(x):
        return (-Vi(x).sqdist(Vj(y)) / 0.1).logsumexp(axis=1)

    got = jax.jit(lse)(x)
    z = -d2_64(x, y) / 0.1
    top = z.max(1, keepdims=True)
    expected = top + np.log(np.exp(z - top).sum(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    grad = jax.jit(jax.grad(lambda x: lse(x).sum()))(x)
    p = np.exp(z - top)
    p /= p.sum(1, keepdims=True)
    expected_grad = -2 / 0.1 * (x.astype(np.float64) - p @ y.astype(np.float64))
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-3, atol=1e-3)


def test_nearest_neighbours_and_min_argmin(data):
    x, y, _ = data
    idx = jax.jit(lambda x, y: Vi(x).sqdist(Vj(y)).argKmin(5, axis=1))(x, y)
    exact = np.argsort(d2_64(x, y), axis=1, kind="stable")[:, :5]
    assert np.mean(np.asarray(idx) == exact) > 0.999
    value, arg = jax.jit(lambda x, y: Vi(x).sqdist(Vj(y)).min_argmin(axis=1))(x, y)
    d2 = d2_64(x, y)
    np.testing.assert_allclose(np.asarray(value)[:, 0], d2.min(1), rtol=1e-4, atol=1e-5)
    assert np.mean(np.asarray(arg)[:, 0] == d2.argmin(1)) > 0.999


def test_a_batch_packs_per_task_and_agrees(data):
    x, y, b = data
    xb = np.stack([x, x[::-1]])
    got = jax.jit(lambda x, y, b: (-Vi(x).sqdist(Vj(y))).exp() @ b)(xb, y[None], b[None])
    for k in range(2):
        expected = np.exp(-d2_64(xb[k], y)) @ b.astype(np.float64)
        np.testing.assert_allclose(np.asarray(got[k]), expected, rtol=2e-5, atol=2e-5)


_LINGER_SCRIPT = """
import numpy as np
from jaxkeops import Vi, Vj
rng = np.random.default_rng(0)
x, y = rng.normal(size=(300, 3)).astype(np.float32), rng.normal(size=(3000, 3)).astype(np.float32)
for _ in range(20):
    got = np.asarray((-Vi(x).sqdist(Vj(y))).exp().sum(axis=1))
d2 = ((x[:, None, :].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1)
np.testing.assert_allclose(got[:, 0], np.exp(-d2).sum(1), rtol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("linger", ["0", "100000", "not a number"])
def test_linger_setting_keeps_threaded_calls_correct(linger):
    """JAXKEOPS_CPU_LINGER_US: 0 parks pool threads at once, a large value is capped, a bad
    one falls back to the default; back-to-back threaded calls stay right in each case."""
    env = dict(os.environ, JAXKEOPS_CPU_LINGER_US=linger)
    proc = subprocess.run([sys.executable, "-c", _LINGER_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
