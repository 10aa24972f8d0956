"""Genred (formula strings) gives the same formulas and results as the equivalent LazyTensor
expressions, checked against numpy in float64; malformed strings raise clear ValueErrors."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import assert_close

from jaxkeops import Genred, Pm, Vi, Vj

M, N = 19, 41


@pytest.fixture
def data(rng):
    return {
        "x": rng.uniform(-1, 1, (M, 3)),
        "y": rng.uniform(-1, 1, (N, 3)),
        "b": rng.uniform(-1, 1, (N, 2)),
    }


def sqdist(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def test_gaussian_sum(data):
    x, y, b = data["x"], data["y"], data["b"]
    gauss = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"],
                   reduction_op="Sum", axis=1)
    lazy = (-Vi(x).sqdist(Vj(y))).exp() * Vj(b)
    assert gauss.formulas == (lazy.formula,)
    out = gauss(x, y, b)
    assert out.shape == (M, 2)
    assert_close(out, np.exp(-sqdist(x, y)) @ b, "float64")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(lazy.sum(axis=1)))
    np.testing.assert_array_equal(np.asarray(jax.jit(gauss)(x, y, b)), np.asarray(out))


def test_logsumexp(data):
    x, y = data["x"], data["y"]
    lse = Genred("-SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], reduction_op="LogSumExp", axis=1)
    out = lse(x, y)
    assert out.shape == (M, 1)
    assert_close(out[:, 0], np.log(np.exp(-sqdist(x, y)).sum(1)), "float64")
    lazy = (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1)
    assert_close(out, lazy, "float64")


def test_argkmin_with_opt_arg_over_i(data):
    x, y = data["x"], data["y"]
    knn = Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], reduction_op="ArgKMin", axis=0,
                 opt_arg=4)
    idx = knn(x, y)
    assert idx.shape == (N, 4) and idx.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(idx),
                                  np.argsort(sqdist(x, y), axis=0, kind="stable")[:4].T)
    np.testing.assert_array_equal(np.asarray(idx),
                                  np.asarray(Vi(x).sqdist(Vj(y)).argKmin(K=4, axis=0)))


def test_sumsoftmaxweight_with_formula2(data):
    x, y, b = data["x"], data["y"], data["b"]
    ssw = Genred("-SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"],
                 reduction_op="SumSoftMaxWeight", axis=1, formula2="b")
    out = ssw(x, y, b)
    p = np.exp(-sqdist(x, y))
    assert out.shape == (M, 2)
    assert_close(out, (p / p.sum(1, keepdims=True)) @ b, "float64")
    lazy = (-Vi(x).sqdist(Vj(y))).sumsoftmaxweight(Vj(b), axis=1)
    assert_close(out, lazy, "float64")


def test_var_syntax_without_aliases(data):
    x, y = data["x"], data["y"]
    g = Genred("Sum(Square(Var(0,3,0) - Var(1,3,1)))", [], reduction_op="Min_ArgMin", axis=1)
    values, idx = g(x, y)
    d = sqdist(x, y)
    assert_close(values[:, 0], d.min(1), "float64")
    np.testing.assert_array_equal(np.asarray(idx)[:, 0], d.argmin(1))
    lazy = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    assert g.formulas == (lazy.formula,)


def test_parameter(data):
    x, y, b = data["x"], data["y"], data["b"]
    s = np.array([0.37])
    g = Genred("Exp(-(SqDist(x,y) * s)) * b", ["x = Vi(3)", "y = Vj(3)", "s = Pm(1)", "b = Vj(2)"],
               reduction_op="Sum", axis=1)
    lazy = (-(Vi(x).sqdist(Vj(y)) * Pm(s))).exp() * Vj(b)
    assert g.formulas == (lazy.formula,)
    out = g(x, y, s, b)
    assert_close(out, np.exp(-0.37 * sqdist(x, y)) @ b, "float64")
    # a new parameter value needs no new kernel
    assert_close(g(x, y, 2 * s, b), np.exp(-0.74 * sqdist(x, y)) @ b, "float64")


ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"]


@pytest.mark.parametrize("formula,match", [
    ("Exp(-SqDist(x,y) * b", r"parenthes"),
    ("x +* y", r"unexpected '\*'"),
    ("SqDist(x,y) $ 2", r"unexpected character '\$'"),
    ("", r"empty formula"),
])
def test_malformed_formula(formula, match):
    with pytest.raises(ValueError, match=match) as info:
        Genred(formula, ALIASES, reduction_op="Sum", axis=1)
    assert "^" in str(info.value)  # a caret under the offending position


def test_unknown_op_and_variable():
    with pytest.raises(ValueError, match=r"unknown variable or op 'Expp'.*Exp"):
        Genred("Expp(-SqDist(x,y)) * b", ALIASES, reduction_op="Sum", axis=1)
    with pytest.raises(ValueError, match=r"'z'"):
        Genred("SqDist(x,z)", ALIASES, reduction_op="Sum", axis=1)


def test_dimension_errors():
    with pytest.raises(ValueError, match=r"3 and 2"):
        Genred("x - b", ALIASES, reduction_op="Sum", axis=1)
    with pytest.raises(ValueError, match=r"SqDist takes 2"):
        Genred("SqDist(x)", ALIASES, reduction_op="Sum", axis=1)


def test_reduction_arguments():
    with pytest.raises(ValueError, match="unknown reduction 'Bogus'.*ArgKMin"):
        Genred("SqDist(x,y)", ALIASES, reduction_op="Bogus", axis=1)
    with pytest.raises(ValueError, match="KMin needs opt_arg"):
        Genred("SqDist(x,y)", ALIASES, reduction_op="KMin", axis=1)
    with pytest.raises(ValueError, match="SumSoftMaxWeight needs formula2"):
        Genred("-SqDist(x,y)", ALIASES, reduction_op="SumSoftMaxWeight", axis=1)
    with pytest.raises(ValueError, match="axis must be 0"):
        Genred("SqDist(x,y)", ALIASES, reduction_op="Sum", axis=2)


def test_call_errors_name_the_arguments(data):
    g = Genred("Exp(-SqDist(x,y)) * b", ALIASES, reduction_op="Sum", axis=1)
    with pytest.raises(ValueError, match=r"takes 3 arrays \(x, y, b\), got 2"):
        g(data["x"], data["y"])
    with pytest.raises(ValueError, match=r"'b' \(Vj, dim 2\) has last dimension 3"):
        g(data["x"], data["y"], data["y"])
