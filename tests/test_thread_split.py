"""A one-device CPU call with few output rows and a long reduced axis is cut into chunks of the
reduced axis (one kernel call over S_j blocks, merged as the SPMD partials are), so that every
pool thread sweeps a share of it. The thread count is fixed to 2 here; results are compared
with numpy in float64."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkeops.primitive as primitive
from jaxkeops import Vi, Vj
from jaxkeops._partition import MIN_SPLIT_PAIRS, ROWS_PER_THREAD, thread_split

M, N = 4, 300_000  # 1.2e6 pairs: above MIN_SPLIT_PAIRS


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(primitive, "_cpu_threads", lambda: 2)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(M, 3))
    y = rng.uniform(size=(N, 3))
    b = rng.normal(size=(N, 1))
    return x, y, b


def _kernel_calls(f, *args) -> list[str]:
    # A new function each time: jit caches the lowering of a function it has seen.
    text = jax.jit(lambda *a: f(*a)).lower(*args).as_text()
    return [line for line in text.splitlines() if "jaxkeops_cpu" in line and "call" in line]


def _split_count(call: str, rows: int) -> int:
    """S_j of a call whose outputs carry (S_i, S_j) = (1, S_j) block dims, else 1."""
    found = re.search(rf"<1x(\d+)x{rows}x", call)
    return int(found.group(1)) if found else 1


def _sqdist(x, y):
    return ((x[:, None, :] - y[None]) ** 2).sum(-1)


CASES = {
    "Sum": (lambda x, y, b: (-Vi(x).sqdist(Vj(y)) * 10).exp() @ b,
            lambda x, y, b: np.exp(-10 * _sqdist(x, y)) @ b),
    "LogSumExp": (lambda x, y, b: (-Vi(x).sqdist(Vj(y)) * 10).logsumexp(axis=1),
                  lambda x, y, b: np.log(np.exp(-10 * _sqdist(x, y)).sum(1, keepdims=True))),
    "Min_ArgMin": (lambda x, y, b: jnp.concatenate(
        [a.astype(x.dtype) for a in Vi(x).sqdist(Vj(y)).min_argmin(axis=1)], -1),
        lambda x, y, b: np.stack([_sqdist(x, y).min(1), _sqdist(x, y).argmin(1)], -1)),
    "ArgKMin": (lambda x, y, b: Vi(x).sqdist(Vj(y)).argKmin(5, axis=1),
                lambda x, y, b: np.argsort(_sqdist(x, y), 1, kind="stable")[:, :5]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_few_rows_split_the_reduced_axis_and_match_numpy(two_threads, data, name):
    f, reference = CASES[name]
    x, y, b = data
    calls = _kernel_calls(f, x, y, b)
    assert len(calls) == 1, calls
    # The call's outputs carry the (S_i, S_j) = (1, 8) block dims: (1, 8, M, width).
    assert _split_count(calls[0], M) == 8, calls[0]
    np.testing.assert_allclose(np.asarray(f(x, y, b)), reference(x, y, b), rtol=1e-10,
                               atol=1e-12)


def test_gradient_of_a_split_reduction_matches_numpy(two_threads, data):
    x, y, b = data

    def total(x):
        return ((-Vi(x).sqdist(Vj(y)) * 10).exp() @ b).sum()

    k = np.exp(-10 * _sqdist(x, y)) * b[:, 0]
    want = -20 * (x * k.sum(1, keepdims=True) - k @ y)
    assert any(_split_count(call, M) == 8 for call in _kernel_calls(jax.grad(total), x))
    np.testing.assert_allclose(np.asarray(jax.grad(total)(x)), want, rtol=1e-10, atol=1e-12)


def test_many_rows_or_one_thread_keep_one_block(monkeypatch, data):
    x, y, b = data
    f = CASES["Sum"][0]
    monkeypatch.setattr(primitive, "_cpu_threads", lambda: 1)
    assert _split_count(_kernel_calls(f, x, y, b)[0], M) == 1
    monkeypatch.setattr(primitive, "_cpu_threads", lambda: 2)
    assert _split_count(_kernel_calls(f, x, y, b)[0], M) == 8
    many = np.zeros((2 * ROWS_PER_THREAD, 3))
    assert _split_count(_kernel_calls(f, many, y, b)[0], 2 * ROWS_PER_THREAD) == 1


def test_thread_split_policy():
    spec = SimpleNamespace(reduction="Sum", k=0)  # the policy reads these two fields only
    KSpec = SimpleNamespace(reduction="ArgKMin", k=2000)

    assert thread_split(spec, 10, 10_000_000, 2) == 8           # 4 chunks a thread
    assert thread_split(spec, 10, 10_000_000, 4) == 16
    assert thread_split(spec, 10, 10_000_000, 1) == 1           # one thread
    assert thread_split(spec, 2 * ROWS_PER_THREAD, 10**7, 2) == 1  # rows enough
    assert thread_split(spec, 1, MIN_SPLIT_PAIRS // 2, 2) == 1  # too little work
    assert thread_split(spec, 10, 3 * 10**6 + 3, 2) == 3        # odd: the largest divisor up to 4x
    assert thread_split(spec, 10, 10_000_019, 2) == 1           # prime: no equal chunks
    assert thread_split(KSpec, 1, 6000, 2) == 1                 # chunks shorter than 1024
    assert thread_split(KSpec, 1, 5_000_000, 2) == 8
    KBig = SimpleNamespace(reduction="ArgKMin", k=60_000)        # 8 or 6 chunks: < K each
    assert thread_split(KBig, 10, 300_000, 2) == 5
