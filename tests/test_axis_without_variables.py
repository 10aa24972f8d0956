"""A formula with no variable of the output axis gives one output row, and one with no variable
of the reduced axis reduces a single row (as in pykeops): against the dense reference, which
takes such an axis to have one row, also under grad, jvp and vmap, and with batch dims.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, assert_tree_close, dense_reference, make_spec, run_both

from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, Var, make
from jaxkeops.lazy.reduce import run_reduction
from jaxkeops.reductions import INDEX

X = Var(0, 3, CAT_I)
Y = Var(1, 3, CAT_J)
S = Var(2, 1, CAT_P)
SQ_Y = make("Sum", make("Square", Y))  # |y_j|^2: no i-variable
EXP_X = make("Exp", make("Minus", X))  # exp(-x_i): no j-variable


def _check(formulas, reduction, axis, variables, arrays, k=None):
    got, ref = run_both(formulas, reduction, axis, variables, arrays, k=k)
    dtype = np.asarray(arrays[0]).dtype
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        if g.dtype.kind == "i":
            np.testing.assert_array_equal(np.asarray(g), np.asarray(r))
        else:
            assert_close(g, r, dtype)
    return got


@pytest.mark.parametrize("reduction", ["Sum", "LogSumExp", "Min_ArgMin", "KMin"])
def test_no_output_variable_gives_one_row(reduction, rng):
    y = rng.normal(size=(1031, 3))
    k = 4 if reduction == "KMin" else None
    got = _check([SQ_Y], reduction, 1, [Y], [y], k=k)
    assert got[0].shape[0] == 1
    if reduction == "Sum":
        np.testing.assert_allclose(np.asarray(got[0]), [[(y ** 2).sum()]], rtol=1e-12)
    if reduction == "Min_ArgMin":
        assert int(got[1][0, 0]) == int(np.argmin((y ** 2).sum(1)))


def test_no_reduced_variable_reduces_one_row(rng):
    x = rng.normal(size=(37, 3))
    (got,) = _check([EXP_X], "Sum", 1, [X], [x])
    np.testing.assert_allclose(np.asarray(got), np.exp(-x), rtol=1e-12)
    y = rng.normal(size=(29, 3))
    (got,) = _check([SQ_Y], "Sum", 0, [Y], [y])  # over i, which has no variable
    assert got.shape == (29, 1)
    np.testing.assert_allclose(np.asarray(got), (y ** 2).sum(1, keepdims=True), rtol=1e-12)
    value, index = _check([SQ_Y], "Min_ArgMin", 0, [Y], [y])
    assert (np.asarray(index) == 0).all()


def test_parameters_only_and_float32(rng):
    s = np.float32([0.5])
    formula = make("Exp", S)
    for axis in (0, 1):
        (got,) = _check([formula], "Sum", axis, [S], [s])
        assert got.shape == (1, 1) and got.dtype == np.float32
        np.testing.assert_allclose(np.asarray(got), np.exp(s)[None], rtol=1e-6)


def test_batch_dims(rng):
    y = rng.normal(size=(2, 3, 50, 3))
    (got,) = _check([SQ_Y], "Sum", 1, [Y], [y])
    assert got.shape == (2, 3, 1, 1)


def test_weighted_logsumexp_without_output_variable(rng):
    w = Var(3, 2, CAT_J)
    arrays = [rng.normal(size=(300, 3)), rng.uniform(0.5, 1.5, size=(300, 2))]
    got = _check([make("Minus", SQ_Y), w], "LogSumExp", 1, [Y, w], arrays)
    assert got[0].shape == (1, 2)


def _loss(formulas, reduction, axis, variables, fn):
    def loss(*arrays):
        outs = fn(*arrays)
        return sum(jnp.sum(jnp.sin(o)) for o, out in zip(outs, make_spec(
            formulas, reduction, axis, variables, "float64").outputs) if out.kind != INDEX)
    return loss


@pytest.mark.parametrize("reduction, axis", [("Sum", 1), ("LogSumExp", 1), ("Sum", 0),
                                             ("Min", 1)])
def test_derivatives_and_vmap(reduction, axis, rng):
    """f = -s |y_j|^2: y_j and a parameter, no i-variable."""
    formula = make("Mult", make("Minus", SQ_Y), S)
    variables = [Y, S]
    arrays = (jnp.asarray(rng.normal(size=(41, 3))), jnp.asarray([0.7]))
    spec = make_spec([formula], reduction, axis, variables, "float64")
    names = ["y", "s"]

    def keops(*a):
        return run_reduction([formula], reduction, axis, variables, list(a), names)

    def dense(*a):
        return dense_reference(spec)(*a)

    loss_k = _loss([formula], reduction, axis, variables, keops)
    loss_d = _loss([formula], reduction, axis, variables, dense)
    assert_tree_close(jax.grad(loss_k, argnums=(0, 1))(*arrays),
                      jax.grad(loss_d, argnums=(0, 1))(*arrays), "float64")
    tangents = tuple(jnp.asarray(rng.normal(size=a.shape)) for a in arrays)
    assert_tree_close(jax.jvp(loss_k, arrays, tangents), jax.jvp(loss_d, arrays, tangents),
                      "float64")
    batch = jnp.stack([arrays[0], arrays[0] * 0.5, -arrays[0]])
    got = jax.vmap(jax.grad(lambda y: loss_k(y, arrays[1])))(batch)
    expected = jnp.stack([jax.grad(lambda y: loss_d(y, arrays[1]))(b) for b in batch])
    assert_close(got, expected, "float64")
