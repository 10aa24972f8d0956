"""KeOps's ops beyond the basic table, against independent references: ElemT and ExtractT,
BSpline (a textbook Cox-de Boor recursion and scipy), SoftDTW_SqDist (the soft-DTW dynamic
programme with infinite borders, finite differences), Clamp with crossed bounds (KeOps's
rule, by hand), N-d Kron and permuted TensorDot (numpy), and KeOps's aliases.

Every kernel here runs in float64 on a handful of points; the table-driven tests
(test_ops.py, test_autodiff.py, the CUDA tests) cover float32 and every derivative rule.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy.interpolate import BSpline as ScipyBSpline
from scipy.special import logsumexp

from jaxkeops import Genred, Pm, Vi, Vj
from jaxkeops.autodiff import transpose
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, OPS, Const, Var, make
from jaxkeops.formulas.dense import evaluate
from jaxkeops.formulas.functions import FUNCTIONS
from jaxkeops.formulas.parser import parse_aliases, parse_formula
from jaxkeops.formulas.tensor_ops import kron, tensordot_permuted
from jaxkeops.lazy.reduce import run_reduction

F64 = "float64"


def reduce_rows(formula, variables, arrays):
    """Sum over j of `formula` (the formula itself, row by row, when it has no j-variable)."""
    names = [repr(v) for v in variables]
    (out,) = run_reduction((formula,), "Sum", 1, tuple(variables), list(arrays), names)
    return out


# ---------------------------------------------------------------------------------------------
# ElemT and ExtractT.


def test_injection_references_follow_keops():
    ref_elemt, ref_extractt = OPS["ElemT"].reference, OPS["ExtractT"].reference
    np.testing.assert_array_equal(ref_elemt(np, np.array([[5.0]]), 4, 2), [[0, 0, 5, 0]])
    np.testing.assert_array_equal(ref_extractt(np, np.array([[1.0, 2.0]]), 1, 4),
                                  [[0, 1, 2, 0]])
    with pytest.raises(ValueError, match=r"ElemT: position 4 is out of range"):
        make("ElemT", Var(0, 1, 0), params=(4, 4))
    with pytest.raises(ValueError, match=r"ElemT: the operand must be a scalar"):
        make("ElemT", Var(0, 2, 0), params=(4, 1))
    with pytest.raises(ValueError, match=r"ExtractT: components \[3:5\] do not fit"):
        make("ExtractT", Var(0, 2, 0), params=(3, 4))


def test_elem_and_extract_transpose_to_injections():
    x, ct1, ct2 = Var(0, 5, CAT_I), Var(1, 1, CAT_J), Var(2, 2, CAT_J)
    assert transpose(make("Elem", x, params=(3,)), [x], ct1)[x] == make(
        "ElemT", ct1, params=(5, 3))
    assert transpose(make("Extract", x, params=(1, 2)), [x], ct2)[x] == make(
        "ExtractT", ct2, params=(1, 5))
    s = Var(3, 1, CAT_I)
    assert transpose(make("ElemT", s, params=(5, 3)), [s], x)[s] == make("Elem", x, params=(3,))


def test_injections_simplify_where_they_are_read():
    s, v, a = Var(0, 1, CAT_I), Var(1, 2, CAT_I), Var(2, 4, CAT_J)
    e = make("ElemT", s, params=(4, 2))
    assert make("Elem", e, params=(2,)) == s
    assert make("Elem", e, params=(1,)) == Const(0.0)
    assert make("Sum", e) == s
    t = make("ExtractT", v, params=(1, 4))
    assert make("Extract", t, params=(1, 2)) == v
    assert make("Extract", t, params=(3, 1)) == Const(0.0, 1)
    assert make("Elem", t, params=(2,)) == make("Elem", v, params=(1,))
    assert make("ElemT", Const(0.0), params=(3, 1)) == Const(0.0, 3)
    # An elementwise op of an injection is only evaluated at the component read.
    assert make("Elem", make("Mult", a, e), params=(2,)) == make(
        "Mult", make("Elem", a, params=(2,)), s)


# ---------------------------------------------------------------------------------------------
# Clamp with a lower bound above the upper bound.


@pytest.mark.parametrize("op", ["Clamp", "ClampInt"])
def test_clamp_with_lower_bound_above_upper_bound_matches_keops(op):
    """KeOps tests x < a first: with a > b, Clamp(x, a, b) is a where x < a and b elsewhere
    (min(max(x, a), b) would be b everywhere). Its derivative, which KeOps gets from
    a + (b - a) ClampInt((x - a) / (b - a), 0, 1), follows x for b <= x <= a, a beyond a and
    b beyond b (values and derivatives worked out by hand from keopscore)."""
    x = jnp.asarray([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])[:, None]
    X, A, B = Var(0, 1, CAT_I), Var(1, 1, CAT_P), Var(2, 1, CAT_P)
    if op == "ClampInt":
        formula = make("ClampInt", X, params=(1, -1))
        out = reduce_rows(formula, [X], [x])
        np.testing.assert_array_equal(out[:, 0], [1, 1, 1, 1, 1, -1, -1])
        np.testing.assert_array_equal(jax.grad(lambda x: reduce_rows(formula, [X], [x]).sum())(x),
                                      0.0)
        return
    formula = make("Clamp", X, A, B)
    a, b = jnp.asarray([0.5]), jnp.asarray([-0.5])

    def f(x, a, b):
        return reduce_rows(formula, [X, A, B], [x, a, b])

    np.testing.assert_array_equal(f(x, a, b)[:, 0], [0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5])
    dx, da, db = jax.grad(lambda *args: f(*args).sum(), argnums=(0, 1, 2))(x, a, b)
    np.testing.assert_array_equal(dx[:, 0], [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(da, [2.0])  # x = 1 and 2 lie beyond a
    np.testing.assert_array_equal(db, [2.0])  # x = -2 and -1 lie beyond b
    _, tangent = jax.jvp(f, (x, a, b), (jnp.ones_like(x), 10 * jnp.ones(1), 100 * jnp.ones(1)))
    np.testing.assert_array_equal(tangent[:, 0], [100, 100, 1, 1, 1, 10, 10])
    # The ordinary case is unchanged, and a == b gives NaN derivatives, as KeOps's division
    # by b - a does.
    np.testing.assert_array_equal(f(x, b, a)[:, 0], [-0.5, -0.5, -0.5, 0, 0.5, 0.5, 0.5])
    grads = jax.grad(lambda *args: f(*args).sum(), argnums=(0, 1, 2))(x, a, a)
    assert all(np.isnan(np.asarray(g)).all() for g in grads)


# ---------------------------------------------------------------------------------------------
# BSpline.


def cox_de_boor(knots: np.ndarray, x: float, order: int) -> np.ndarray:
    """The textbook recursion, with KeOps's conventions: right-open support intervals, and
    0 for the terms whose knot span is empty."""

    def basis(i: int, k: int) -> float:
        if k == 0:
            return float(knots[i] <= x < knots[i + 1])
        out = 0.0
        if knots[i] < knots[i + k]:
            out += (x - knots[i]) / (knots[i + k] - knots[i]) * basis(i, k - 1)
        if knots[i + 1] < knots[i + k + 1]:
            out += (knots[i + k + 1] - x) / (knots[i + k + 1] - knots[i + 1]) * basis(i + 1, k - 1)
        return out

    return np.array([basis(i, order) for i in range(len(knots) - order - 1)])


def cox_de_boor_derivative(knots: np.ndarray, x: float, order: int) -> np.ndarray:
    """d B_{i,k} / dx = k B_{i,k-1} / (t_{i+k} - t_i) - k B_{i+1,k-1} / (t_{i+k+1} - t_{i+1})."""
    lower = cox_de_boor(knots, x, order - 1)
    out = np.zeros(len(knots) - order - 1)
    for i in range(len(out)):
        if knots[i] < knots[i + order]:
            out[i] += order * lower[i] / (knots[i + order] - knots[i])
        if knots[i + 1] < knots[i + order + 1]:
            out[i] -= order * lower[i + 1] / (knots[i + order + 1] - knots[i + 1])
    return out


KNOTS = np.array([-1.0, -0.5, -0.5, 0.0, 0.25, 1.0, 1.5, 2.0])  # one repeated knot
ORDERS = (0, 1, 2, 3)
T, XS = Var(0, len(KNOTS), CAT_P), Var(1, 1, CAT_I)


def bspline_formula():
    """All four orders side by side, as one formula (one kernel)."""
    out = make("BSpline", T, XS, params=(ORDERS[0],))
    for k in ORDERS[1:]:
        out = make("Concat", out, make("BSpline", T, XS, params=(k,)))
    return out


def split_orders(values: np.ndarray) -> list[np.ndarray]:
    sizes = [len(KNOTS) - k - 1 for k in ORDERS]
    return np.split(values, np.cumsum(sizes)[:-1], axis=-1)


def test_bspline_matches_the_cox_de_boor_recursion(rng):
    # Knots themselves (left-closed, right-open intervals), the last knot (all zero), points
    # outside the knots, and random points.
    x = np.concatenate([KNOTS, [-3.0, 3.0], rng.uniform(-1.2, 2.2, 20)])[:, None]
    out = np.asarray(reduce_rows(bspline_formula(), [T, XS], [KNOTS, x]))
    for k, got in zip(ORDERS, split_orders(out)):
        expected = np.stack([cox_de_boor(KNOTS, xi, k) for xi in x[:, 0]])
        assert_close(got, expected, F64)
    last = split_orders(out[len(KNOTS) - 1])
    assert all(np.all(v == 0) for v in last), "x at the last knot is outside every interval"


def test_bspline_agrees_with_scipy_inside_the_base_interval(rng):
    knots = np.sort(rng.uniform(-1.0, 1.0, 9))
    for k in (1, 2, 3):
        x = rng.uniform(knots[k], knots[-k - 1], 15)
        expected = ScipyBSpline.design_matrix(x, knots, k).toarray()
        got = OPS["BSpline"].reference(np, knots, x[:, None], k)
        assert_close(got, expected, F64)


def test_bspline_derivatives(rng):
    """d/dx against the closed-form derivative, d/dknots against central differences (away
    from the knots, where B-splines are smooth)."""
    x = rng.uniform(-0.9, 1.9, 12)
    x = x[np.min(np.abs(x[:, None] - KNOTS), axis=1) > 0.05][:, None]
    formula = bspline_formula()

    def values(knots, x):
        return reduce_rows(formula, [T, XS], [knots, x])

    _, dx = jax.jvp(lambda x: values(KNOTS, x), (x,), (jnp.ones_like(x),))
    for k, got in zip(ORDERS, split_orders(np.asarray(dx))):
        expected = np.stack([cox_de_boor_derivative(KNOTS, xi, k) if k else
                             np.zeros(len(KNOTS) - 1) for xi in x[:, 0]])
        assert_close(got, expected, F64)
    weights = rng.normal(size=(len(x), formula.dim))
    grad = jax.grad(lambda t: jnp.sum(values(t, x) * weights))(jnp.asarray(KNOTS))

    def numeric(t):
        return sum(np.sum(w * np.concatenate([cox_de_boor(t, xi, k) for k in ORDERS]))
                   for xi, w in zip(x[:, 0], weights))

    eps = 1e-6
    expected = [(numeric(KNOTS + eps * e) - numeric(KNOTS - eps * e)) / (2 * eps)
                for e in np.eye(len(KNOTS))]
    assert_close(grad, np.asarray(expected), F64, rtol=1e-6, atol=1e-7)


def test_bspline_method_and_errors():
    knots, x = jnp.asarray(KNOTS), jnp.zeros((3, 1))
    assert Pm(knots).bspline(Vi(x), 2).formula == make("BSpline", Var(0, 8, CAT_P),
                                                      Var(1, 1, CAT_I), params=(2,))
    with pytest.raises(ValueError, match="order 7 needs at least 9 knots"):
        make("BSpline", T, XS, params=(7,))
    with pytest.raises(ValueError, match="x must be a scalar"):
        make("BSpline", T, Var(1, 2, CAT_I), params=(1,))
    with pytest.raises(ValueError, match="order must be >= 0"):
        make("BSpline", T, XS, params=(-1,))


# ---------------------------------------------------------------------------------------------
# SoftDTW_SqDist.


def soft_dtw(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """Soft-DTW with infinite borders: R(0, 0) = 0, R(i, 0) = R(0, j) = inf."""
    n, m = len(x), len(y)
    R = np.full((n + 1, m + 1), np.inf)
    R[0, 0] = 0.0
    for i, j in itertools.product(range(1, n + 1), range(1, m + 1)):
        previous = np.array([R[i - 1, j - 1], R[i - 1, j], R[i, j - 1]])
        R[i, j] = (x[i - 1] - y[j - 1]) ** 2 - gamma * logsumexp(-previous / gamma)
    return R[n, m]


def hard_dtw(x: np.ndarray, y: np.ndarray) -> float:
    n, m = len(x), len(y)
    R = np.full((n + 1, m + 1), np.inf)
    R[0, 0] = 0.0
    for i, j in itertools.product(range(1, n + 1), range(1, m + 1)):
        R[i, j] = (x[i - 1] - y[j - 1]) ** 2 + min(R[i - 1, j - 1], R[i - 1, j], R[i, j - 1])
    return R[n, m]


SX, SY, SG = Var(0, 4, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_P)


def softdtw_formula():
    """SoftDTW between x (n = 4) and y (m = 3), and the degenerate n = 1 and m = 1 cases."""
    first_x, first_y = make("Extract", SX, params=(0, 1)), make("Extract", SY, params=(0, 1))
    out = make("SoftDTW_SqDist", SX, SY, SG)
    out = make("Concat", out, make("SoftDTW_SqDist", first_x, SY, SG))
    return make("Concat", out, make("SoftDTW_SqDist", SX, first_y, SG))


def _softdtw_reference(x, y, gamma, dtw=soft_dtw):
    rows = []
    for xi in x:
        row = []
        for x_part, y_part in ((xi, y), (xi[:1], y), (xi, y[:, :1])):
            row.append(sum((dtw(x_part, yj, gamma) if dtw is soft_dtw else dtw(x_part, yj))
                           for yj in y_part))
        rows.append(row)
    return np.array(rows)


def test_softdtw_matches_the_dynamic_programme(rng):
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(6, 3))
    for gamma in (0.7, 1e-3):
        got = reduce_rows(softdtw_formula(), [SX, SY, SG], [x, y, np.array([gamma])])
        assert_close(got, _softdtw_reference(x, y, gamma), F64)
    # As gamma -> 0, soft-DTW tends to DTW (from below, by at most gamma log 3 per cell).
    assert_close(got, _softdtw_reference(x, y, None, dtw=hard_dtw), F64, rtol=0, atol=0.1)


def test_softdtw_derivatives_match_finite_differences(rng):
    """Gradients with respect to both sequences and gamma (KeOps has the first two only)."""
    x, y, gamma = rng.normal(size=(3, 4)), rng.normal(size=(4, 3)), np.array([0.6])
    weights = rng.normal(size=(3, 3))

    def loss(x, y, g):
        return jnp.sum(reduce_rows(softdtw_formula(), [SX, SY, SG], [x, y, g]) * weights)

    def numeric(x, y, g):
        return float(np.sum(_softdtw_reference(x, y, g[0]) * weights))

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, y, gamma)
    eps = 1e-6
    for which, (array, grad) in enumerate(zip((x, y, gamma), grads)):
        expected = np.zeros(array.shape)
        for index in np.ndindex(array.shape):
            step = np.zeros(array.shape)
            step[index] = eps
            args_plus = [x, y, gamma]
            args_minus = [x, y, gamma]
            args_plus[which], args_minus[which] = array + step, array - step
            expected[index] = (numeric(*args_plus) - numeric(*args_minus)) / (2 * eps)
        assert_close(grad, expected, F64, rtol=1e-6, atol=1e-7)
    tangents = tuple(rng.normal(size=a.shape) for a in (x, y, gamma))
    _, forward = jax.jvp(loss, (x, y, gamma), tangents)
    assert_close(forward, sum(np.sum(g * t) for g, t in zip(grads, tangents)), F64)


def test_softdtw_method_and_errors():
    x, y = jnp.zeros((2, 4)), jnp.zeros((3, 3))
    lazy = Vi(x).softdtw_sqdist(Vj(y), Pm(jnp.ones(1)))
    assert lazy.formula == make("SoftDTW_SqDist", Var(0, 4, CAT_I), Var(1, 3, CAT_J),
                                Var(2, 1, CAT_P))
    with pytest.raises(ValueError, match="gamma must be a scalar"):
        make("SoftDTW_SqDist", SX, SY, Var(2, 2, CAT_P))


# ---------------------------------------------------------------------------------------------
# Kron on N-d shapes and TensorDot with a permutation (pykeops's test_kron.py and
# test_torch.py::test_TensorDot_with_permute).


@pytest.mark.parametrize("shape_a, shape_b", [
    ((3, 2, 1, 2), (1, 2, 2, 3)),
    ((2, 3, 2), (2, 2, 3)),
    ((2, 3), (2, 2)),
])
def test_kron_of_nd_shapes_matches_numpy(shape_a, shape_b, rng):
    da, db = int(np.prod(shape_a)), int(np.prod(shape_b))
    x, y = rng.random((4, da)), rng.random((5, db))
    text = f"Kron(x, y, {list(shape_a)}, {list(shape_b)},)"
    got = Genred(text, [f"x = Vi(0, {da})", f"y = Vj(1, {db})"], reduction_op="Sum",
                 axis=1)(x, y)
    expected = np.stack([sum(np.kron(xi.reshape(shape_a), yj.reshape(shape_b)).ravel()
                             for yj in y) for xi in x])
    assert_close(got, expected, F64)
    via_lazy = (Vi(x).kron(Vj(y), shape_a, shape_b)).sum(axis=1)
    assert_close(via_lazy, expected, F64)


def test_kron_of_nd_shapes_gradients(rng):
    shape_a, shape_b = (2, 3, 2), (2, 2, 3)
    X, Y = Var(0, 12, CAT_I), Var(1, 12, CAT_J)
    formula = kron(X, Y, shape_a, shape_b)
    x, y = rng.normal(size=(3, 12)), rng.normal(size=(4, 12))
    weights = rng.normal(size=(3, 144))

    def dense(x, y):
        out = jax.vmap(lambda xi: sum(jnp.kron(xi.reshape(shape_a), yj.reshape(shape_b)).ravel()
                                      for yj in y))(x)
        return jnp.sum(out * weights)

    def keops(x, y):
        return jnp.sum(reduce_rows(formula, [X, Y], [x, y]) * weights)

    got = jax.grad(keops, argnums=(0, 1))(x, y)
    expected = jax.grad(dense, argnums=(0, 1))(x, y)
    for g, e in zip(got, expected):
        assert_close(g, e, F64)
    with pytest.raises(ValueError, match="must have the same number of axes"):
        kron(X, Y, (12,), (2, 6))


def test_tensordot_permutation_sends_kept_axis_t_to_position_perm_t(rng):
    """KeOps's perm is the inverse of numpy.transpose's axes: kept axis t goes to perm[t]."""
    a, b = rng.normal(size=(1, 6)), rng.normal(size=(1, 12))
    A, B = Var(0, 6, CAT_I), Var(1, 12, CAT_J)
    formula = tensordot_permuted(A, B, (2, 3), (3, 2, 2), (1,), (0,), (2, 0, 1))
    product = np.tensordot(a[0].reshape(2, 3), b[0].reshape(3, 2, 2), axes=([1], [0]))
    expected = np.transpose(product, np.argsort((2, 0, 1)))  # kept axes (2, 2, 2) -> ...
    got = evaluate(formula, {A: a, B: b}, jnp.float64)
    np.testing.assert_allclose(got[0], expected.ravel(), rtol=1e-12)
    assert got.shape[-1] == 8
    shaped = tensordot_permuted(A, B, (2, 3), (3, 4), (1,), (0,), (1, 0))
    b2 = rng.normal(size=(1, 12))
    np.testing.assert_allclose(evaluate(shaped, {A: a, B: b2}, jnp.float64)[0],
                               (a[0].reshape(2, 3) @ b2[0].reshape(3, 4)).T.ravel(), rtol=1e-12)


def test_tensordot_with_permutation_matches_numpy_and_its_gradients(rng):
    dimfa, dimfb = (2, 3, 2, 2, 4), (2, 4, 2, 3, 2, 3)
    contfa, contfb, perm = (4, 0, 2), (1, 4, 2), (4, 3, 2, 0, 1)
    da, db = int(np.prod(dimfa)), int(np.prod(dimfb))
    x, y = rng.normal(size=(3, da)), rng.normal(size=(4, db))
    text = (f"TensorDot(x, y, {list(dimfa)}, {list(dimfb)}, {list(contfa)}, {list(contfb)}, "
            f"{list(perm)})")
    gen = Genred(text, [f"x = Vi(0, {da})", f"y = Vj(1, {db})"], reduction_op="Sum", axis=1)

    def dense(x, y):
        def one(xi, yj):
            t = jnp.tensordot(xi.reshape(dimfa), yj.reshape(dimfb), axes=(contfa, contfb))
            return jnp.transpose(t, np.argsort(perm)).ravel()

        return jax.vmap(lambda xi: sum(one(xi, yj) for yj in y))(x)

    out = gen(x, y)
    assert_close(out, dense(x, y), F64)
    weights = rng.normal(size=out.shape)
    got = jax.grad(lambda x, y: jnp.sum(gen(x, y) * weights), argnums=(0, 1))(x, y)
    expected = jax.grad(lambda x, y: jnp.sum(dense(x, y) * weights), argnums=(0, 1))(x, y)
    for g, e in zip(got, expected):
        assert_close(g, e, F64)


# ---------------------------------------------------------------------------------------------
# KeOps's other names.


def test_keops_aliases_evaluate_as_documented(rng):
    aliases = parse_aliases(["x = Vi(3)", "y = Vj(2)", "s = Pm(1)", "d = Pm(3)", "S = Pm(9)"])
    x, y, s, d, S = (rng.normal(size=(1, v.dim)) for v in aliases.values())
    env = {v: a for v, a in zip(aliases.values(), (x, y, s, d, S))}

    def value(text):
        return np.asarray(evaluate(parse_formula(text, aliases), env, jnp.float64))[0]

    xv, yv = x[0], y[0]
    np.testing.assert_allclose(value("SumT(s, 4)"), np.full(4, s[0, 0]))
    np.testing.assert_allclose(value("SqNormIso(s, x)"), [s[0, 0] * xv @ xv])
    np.testing.assert_allclose(value("SqNormDiag(d, x)"), [np.sum(d[0] * xv ** 2)])
    np.testing.assert_allclose(value("SymSqNorm(S, x)"), [xv @ S[0].reshape(3, 3) @ xv])
    np.testing.assert_allclose(value("DifferenceMatrix(x, y)"),
                               (xv[None, :] - yv[:, None]).ravel())
    np.testing.assert_allclose(value("Factorize(Exp(x) * x, Exp(x))"), np.exp(xv) * xv)
    np.testing.assert_allclose(value("AutoFactorize(x + x)"), 2 * xv)
    np.testing.assert_allclose(value("RatCst(3, 4) + IntInv(8)"), [0.875])
    grid = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(evaluate(parse_formula("DiffClampInt(x, 0, 2)", aliases),
                                           {aliases["x"]: grid}, jnp.float64)[0], [0, 1, 0])
    with pytest.raises(ValueError, match=r"SqNormDiag: the weight must have dim 3"):
        parse_formula("SqNormDiag(s, x)", aliases)
    with pytest.raises(ValueError, match=r"SumT: the operand must be a scalar"):
        parse_formula("SumT(x, 3)", aliases)


def test_every_builtin_function_is_documented():
    for name, forms in FUNCTIONS.items():
        for form in forms:
            assert form.name == name and form.doc
