"""Every reduction, over i and over j, in float32 and float64, against the dense reference.

The formulas are shared by all tests here (and with test_api.py), so each (reduction, axis,
dtype) compiles one kernel: F3 = (x_i - y_j)**2 componentwise (dim 3) for Sum, Min/Max, Arg*
and KMin*; f = -|x_i - y_j|^2 (scalar) with a weight w of dim 3 on the reduced axis for
LogSumExp (weighted and not) and SumSoftMaxWeight.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, run_both

from jaxkeops import Vi, Vj
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.lazy.reduce import run_reduction
from jaxkeops.reductions import INDEX, REDUCTIONS

DTYPES = ["float32", "float64"]
AXES = [0, 1]
K = 5
# (n_out, n_red): not multiples of any SIMD width; 1031 is not a tile multiple, 4100 crosses
# the CPU tile of 4096 reduced rows; and the degenerate single row / single term.
SIZES = [(45, 1031), (3, 4100), (1, 1)]

X = Var(0, 3, CAT_I)
Y = Var(1, 3, CAT_J)
F3 = make("Square", make("Subtract", X, Y))
F1 = make("Minus", make("Sum", F3))


def weight(axis: int) -> Var:
    """The weight of LogSumExp / SumSoftMaxWeight: a variable of the reduced axis."""
    return Var(2, 3, CAT_J if axis == 1 else CAT_I)


def case(name: str, axis: int):
    """(reduction, formulas, variables, k) of test case `name`."""
    if name == "LogSumExp":
        return "LogSumExp", [F1], [X, Y], None
    if name == "LogSumExp-weighted":
        return "LogSumExp", [F1, weight(axis)], [X, Y, weight(axis)], None
    if name in ("SumSoftMaxWeight", "LogSumExpSigned"):
        return name, [F1, weight(axis)], [X, Y, weight(axis)], None
    k = K if REDUCTIONS[name].needs_k else None
    return name, [F3], [X, Y], k


CASES = sorted(set(REDUCTIONS) | {"LogSumExp-weighted"})


def arrays_for(variables, axis, n_out, n_red, dtype, rng, low=-1.5, high=1.5):
    """Random arrays for `variables` with n_out outer rows and n_red reduced rows."""
    out = []
    for v in variables:
        reduced = (v.cat == CAT_J) == (axis == 1)
        rows = n_red if reduced else n_out
        if v.index == 2:  # weights: positive, so that a weighted LogSumExp is defined
            out.append(rng.uniform(0.1, 2.0, (rows, v.dim)).astype(dtype))
        else:
            out.append(rng.uniform(low, high, (rows, v.dim)).astype(dtype))
    return out


def check_outputs(name, got, ref, dtype, k):
    spec = REDUCTIONS[name.split("-")[0]]
    dims = (3,) if name not in ("LogSumExp", "LogSumExp-weighted", "SumSoftMaxWeight",
                                "LogSumExpSigned") else (
        (1,) if name == "LogSumExp" else (1, 3))
    for out, g, r in zip(spec.outputs(dims, k), got, ref):
        assert g.shape == r.shape
        assert g.shape[1:] == out.shape
        if out.kind == INDEX:
            assert g.dtype == jnp.int64, "indices must be int64 under x64"
            np.testing.assert_array_equal(np.asarray(g), np.asarray(r))
        else:
            assert g.dtype == jnp.dtype(dtype)
            assert_close(g, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("name", CASES)
def test_reduction(name, axis, dtype, rng):
    reduction, formulas, variables, k = case(name, axis)
    for n_out, n_red in SIZES:
        arrays = arrays_for(variables, axis, n_out, n_red, dtype, rng)
        padded = k is not None and n_red < k  # fewer rows than K: padding asked for
        got, ref = run_both(formulas, reduction, axis, variables, arrays, k=k, pad=padded)
        assert all(g.shape[0] == n_out for g in got)
        check_outputs(name, got, ref, dtype, k)


def test_cases_cover_every_reduction():
    assert {case(n, 1)[0] for n in CASES} == set(REDUCTIONS)


# ---------------------------------------------------------------------------------------------
# K larger than the reduced axis: padding with +inf and index -1.

@pytest.mark.parametrize("axis", AXES)
def test_kmin_k_larger_than_reduced_axis_pads(axis, rng):
    variables = [X, Y]
    arrays = arrays_for(variables, axis, 11, 3, "float64", rng)
    with pytest.raises(ValueError, match=f"K={K} .* only [MN]=3 rows"):
        run_both([F3], "KMin_ArgKMin", axis, variables, arrays, k=K)
    (values, idx), ref = run_both([F3], "KMin_ArgKMin", axis, variables, arrays, k=K, pad=True)
    check_outputs("KMin_ArgKMin", (values, idx), ref, "float64", K)
    values, idx = np.asarray(values), np.asarray(idx)
    assert values.shape == (11, K, 3)
    assert np.all(values[:, 3:] == np.inf)
    assert np.all(idx[:, 3:] == -1)
    assert np.all(np.sort(idx[:, :3], axis=1) == np.arange(3)[None, :, None])
    assert np.all(np.diff(values[:, :3], axis=1) >= 0)


# ---------------------------------------------------------------------------------------------
# Ties: duplicated reduced points; the first index wins, as with jnp.argmin / stable sorting.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", AXES)
def test_argmin_ties_return_first_index(axis, dtype, rng):
    base = 7
    reps = 600  # 4200 reduced rows: duplicates in every SIMD lane and in both CPU tiles
    variables = [X, Y]
    outer = rng.uniform(-1.5, 1.5, (13, 3)).astype(dtype)
    reduced = np.tile(rng.uniform(-1.5, 1.5, (base, 3)).astype(dtype), (reps, 1))
    arrays = [reduced, outer] if axis == 0 else [outer, reduced]
    # numpy, on the same float values: the first occurrence of the best base point
    f = (outer[:, None, :] - reduced[None, :base, :]) ** 2  # (n_out, base, 3)
    first_min, first_max = np.argmin(f, axis=1), np.argmax(f, axis=1)
    for name in ("ArgMin", "Min_ArgMin", "ArgMax", "Max_ArgMax", "ArgKMin", "KMin_ArgKMin"):
        k = K if REDUCTIONS[name].needs_k else None
        got, ref = run_both([F3], name, axis, variables, arrays, k=k)
        check_outputs(name, got, ref, dtype, k)
        idx = np.asarray(got[-1])
        if k is None:
            expected = first_min if "Min" in name else first_max
            np.testing.assert_array_equal(idx, expected)
        else:  # the K smallest are the first K occurrences of the best base point
            expected = first_min[:, None, :] + base * np.arange(K)[None, :, None]
            np.testing.assert_array_equal(idx, expected)


# ---------------------------------------------------------------------------------------------
# inf and NaN.

def _set_rows(arrays, variables, axis, reduced: bool, rows, value, component=None):
    for a, v in zip(arrays, variables):
        if v.index == 2:
            continue
        if ((v.cat == CAT_J) == (axis == 1)) == reduced:
            if component is None:
                a[rows] = value
            else:
                a[rows, component] = value


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", AXES)
def test_logsumexp_all_minus_inf_rows_give_minus_inf(axis, dtype, rng):
    for name in ("LogSumExp", "LogSumExp-weighted", "SumSoftMaxWeight"):
        reduction, formulas, variables, k = case(name, axis)
        arrays = arrays_for(variables, axis, 9, 1031, dtype, rng)
        _set_rows(arrays, variables, axis, reduced=False, rows=[0, 4], value=np.inf,
                  component=1)
        got, ref = run_both(formulas, reduction, axis, variables, arrays)
        check_outputs(name, got, ref, dtype, k)
        out = np.asarray(got[0])
        if reduction == "LogSumExp":
            assert np.all(out[[0, 4]] == -np.inf)
            assert np.all(np.isfinite(np.delete(out, [0, 4], axis=0)))
        else:  # a softmax over no finite term is 0/0, as in the dense reference
            assert np.all(np.isnan(out[[0, 4]]))
            assert np.all(np.isfinite(np.delete(out, [0, 4], axis=0)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", AXES)
def test_logsumexp_some_minus_inf_terms(axis, dtype, rng):
    # the first 20 terms (a whole SIMD vector and more), and a few later ones, are -inf
    rows = list(range(20)) + [100, 1030]
    for name in ("LogSumExp", "LogSumExp-weighted", "SumSoftMaxWeight"):
        reduction, formulas, variables, k = case(name, axis)
        arrays = arrays_for(variables, axis, 9, 1031, dtype, rng)
        _set_rows(arrays, variables, axis, reduced=True, rows=rows, value=-np.inf, component=2)
        got, ref = run_both(formulas, reduction, axis, variables, arrays)
        assert np.all(np.isfinite(np.asarray(got[0])))
        check_outputs(name, got, ref, dtype, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", AXES)
def test_min_nan_propagates_like_numpy_min(axis, dtype, rng):
    # The reference here is numpy: jnp.min on XLA:CPU (jax 0.10.2) drops NaNs when its
    # reduction is fused by YNNPACK (e.g. a (1031, 10, 3) array over axis 0), so the dense
    # reference cannot be trusted with NaNs.
    variables = [X, Y]
    arrays = arrays_for(variables, axis, 10, 1031, dtype, rng)
    _set_rows(arrays, variables, axis, reduced=True, rows=[700, 9], value=np.nan, component=1)
    _set_rows(arrays, variables, axis, reduced=False, rows=[3], value=np.nan, component=2)
    x, y = arrays
    f = (x[:, None, :] - y[None, :, :]) ** 2  # same float ops as the kernel, in `dtype`
    red = 1 if axis == 1 else 0
    expected = {"Min": np.min(f, axis=red), "Max": np.max(f, axis=red),
                "ArgMin": np.argmin(f, axis=red), "ArgMax": np.argmax(f, axis=red)}
    for name in ("Min", "Max", "Min_ArgMin", "Max_ArgMax", "ArgMin"):
        got = run_reduction([F3], name, axis, variables, arrays, ["x", "y"])
        kinds = [k for k in ("Min", "Max") if name.startswith(k)] if name != "ArgMin" else []
        kinds += ["Arg" + name[-3:]] if "Arg" in name else []
        for g, kind in zip(got, kinds):
            assert_close(g, expected[kind], dtype, rtol=0, atol=0)
        if name != "ArgMin":
            values = np.asarray(got[0])
            assert np.all(np.isnan(values[:, 1]))
            assert np.isnan(values[3, 2])
            assert not np.any(np.isnan(values[:, 0]))
            assert not np.any(np.isnan(np.delete(values, 3, axis=0)[:, 2]))
        if "Arg" in name:
            idx = np.asarray(got[-1])
            assert idx.dtype == np.int64
            assert np.all(idx[:, 1] == 9)  # the first NaN
            assert idx[3, 2] == 0  # a row of NaNs: index 0, as np.argmin


# ---------------------------------------------------------------------------------------------
# Float32 summation accuracy over a million terms.

@pytest.mark.parametrize("sum_scheme", ["block", "kahan"])
def test_float32_sum_of_a_million_terms_is_accurate(sum_scheme, rng):
    from jaxkeops import Vi, Vj

    m, n = 3, 1_000_000
    x = rng.uniform(0, 1, (m, 3)).astype(np.float32)
    y = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    got = np.asarray((-d).exp().sum(axis=1, sum_scheme=sum_scheme))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    expected = np.array([np.exp(-((y64 - x64[i]) ** 2).sum(1)).sum() for i in range(m)])
    assert got.dtype == np.float32 and got.shape == (m, 1)
    rel = np.abs(got[:, 0] - expected) / expected
    assert rel.max() < 1e-5, f"relative error {rel.max():.2e} with sum_scheme={sum_scheme}"


# ---------------------------------------------------------------------------------------------
# Index dtype: int32 without x64 (in a fresh interpreter: this session has x64 on).

def test_indices_are_int32_without_x64():
    script = textwrap.dedent("""
        import numpy as np
        import jax
        assert not jax.config.jax_enable_x64
        from jaxkeops import Vi, Vj
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(9, 3)).astype(np.float32)
        y = rng.uniform(size=(21, 3)).astype(np.float32)
        d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
        v, i = d.min_argmin(axis=1)
        k = d.argKmin(K=5, axis=1)
        ref = ((x[:, None] - y[None]) ** 2).sum(-1)
        assert i.dtype == np.int32 and k.dtype == np.int32, (i.dtype, k.dtype)
        assert v.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(i)[:, 0], ref.argmin(1))
        np.testing.assert_array_equal(np.asarray(k), np.argsort(ref, 1, kind="stable")[:, :5])
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_of_steadily_rising_terms_matches_float64(dtype):
    """The running maximum lags the largest term by up to 2^16 (SLACK in cpu_reductions.h):
    terms that rise along the reduced axis, by less and by more than that per vector, and
    weights up to 1e30, against float64 numpy."""
    n = 1031
    x = np.array([[0.001], [0.05], [1.0], [3.0], [-2.0]], dtype)
    t = np.linspace(0.0, 300.0, n, dtype=dtype)[:, None]
    w = np.geomspace(1e-3, 1e30, n).astype(dtype)[:, None]
    f = x[:, None, 0].astype(np.float64) * t[None, :, 0]
    for weights in (None, w):
        got = (Vi(x) * Vj(t)).logsumexp(axis=1, weight=None if weights is None else Vj(weights))
        logs = f if weights is None else f + np.log(weights[None, :, 0].astype(np.float64))
        top = logs.max(axis=1, keepdims=True)
        expected = top + np.log(np.exp(logs - top).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-6 if dtype == "float32"
                                   else 1e-12)
    soft = (Vi(x) * Vj(t)).sumsoftmaxweight(Vj(t), axis=1)
    p = np.exp(f - f.max(axis=1, keepdims=True))
    expected = (p @ t.astype(np.float64)) / p.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(soft), expected,
                               rtol=2e-5 if dtype == "float32" else 1e-12)
