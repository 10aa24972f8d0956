"""The CPU code generator's rewrites: each keeps the value (checked against numpy in float64)
and does what it promises in the generated code (checked on the rewritten formulas)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops import Pm, Vi, Vj
from jaxkeops.codegen.cpu import _kernel_formulas, column_block, render_cpu
from jaxkeops.codegen.hoist import hoist
from jaxkeops.codegen.linear import plan_linear_sum
from jaxkeops.codegen.rewrite import for_codegen
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, Const, Op, Var, make, walk


def _pair_loop(formula, args):
    """The main formula of the kernel (after rewriting and hoisting) for a Sum over j."""
    spec = KernelSpec((formula,), "Sum", 1, "float32", args=tuple(args))
    return hoist(spec, for_codegen(spec, spec.formulas)).formulas[0]


def _constant_products(formula):
    return [n for n in walk(formula) if isinstance(n, Op) and n.name == "Mult"
            and any(isinstance(a, Const) for a in n.args)]


def test_gaussian_exponent_constant_moves_into_hoisted_operands():
    """exp(-|x - y|^2 / 2) b: the constant scales x and y once per row, not every pair."""
    x, y, b = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_J)
    gauss = make("Mult", make("Exp", make("Mult", make("Minus", make("SqDist", x, y)),
                                          Const(-0.5))), b)
    main = _pair_loop(gauss, (x, y, b))
    assert _constant_products(main) == []
    assert any(isinstance(n, Op) and n.name == "Exp2" for n in walk(main))


def test_gradient_constants_gather_into_one_hoisted_factor():
    """-(a_i b_j e)/2 * 1[3] * (2 (x - y)) multiplies by no constant in the pair loop, and the
    x - y it shares with the exponent is computed once."""
    x, y, b, a = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_J), Var(3, 1, CAT_I)
    diff = make("Subtract", x, y)
    e = make("Exp", make("Mult", make("Minus", make("Sum", make("Square", diff))), Const(0.5)))
    grad = make("Mult", make("Mult", make("Minus", make("Mult", make("Mult", make("Mult", a, b), e),
                                                         Const(0.5))), Const(1.0, 3)),
                make("Mult", Const(2.0), diff))
    main = _pair_loop(grad, (x, y, b, a))
    assert [n for n in _constant_products(main) if n.dim > 1] == []
    assert sum(1 for n in walk(main) if isinstance(n, Op) and n.name == "Subtract") == 1


def _lse_pair_loop(formula, args):
    """The main formula and hoisted per-row values of a base-2 LogSumExp kernel over j."""
    spec = KernelSpec((formula,), "LogSumExp", 1, "float32", args=tuple(args))
    return hoist(spec, for_codegen(spec, _kernel_formulas(spec, None)))


def test_sinkhorn_exponent_multiplies_once_per_pair_by_a_hoisted_parameter_constant():
    """(h_j - |x - y|^2 / 2 * p) log2 e, the softmin of the OT solvers: a product nested in the
    exponent used to lose its own rewrite when log2 e was absorbed (/2, p log2 e and the product
    were three pair multiplies); now p / 2 log2 e is one per-row value."""
    x, y, h, p = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_J), Var(3, 1, CAT_P)
    cost = make("Divide", make("Sum", make("Square", make("Subtract", x, y))), Const(2.0))
    hoisted = _lse_pair_loop(make("Subtract", h, make("Mult", cost, p)), (x, y, h, p))
    main = hoisted.formulas[0]
    multiplies = [n for n in walk(main) if isinstance(n, Op) and n.name in ("Mult", "Divide")]
    assert len(multiplies) == 1, multiplies
    assert not any(isinstance(a, Const) for a in multiplies[0].args)
    assert p in set(walk(*hoisted.outer))   # the parameter's product is computed per row


@pytest.mark.parametrize("eps", [0.05, 3.0])
def test_sinkhorn_exponent_with_a_parameter_matches_numpy(eps, rng):
    x = rng.normal(size=(40, 3))
    y = rng.normal(size=(300, 3))
    g = rng.normal(size=(300, 1))
    inv = np.array([1 / eps])
    got = (Vj(g) - ((Vi(x) - Vj(y)) ** 2).sum(-1) / 2 * Pm(inv)).logsumexp(axis=1)
    v = g.T - ((x[:, None, :] - y[None]) ** 2).sum(-1) / 2 / eps
    m = v.max(axis=1, keepdims=True)
    expected = m + np.log(np.exp(v - m).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_gaussian_sum_with_scaled_exponent_matches_numpy(scale, rng):
    x = rng.normal(size=(50, 3))
    y = rng.normal(size=(77, 3))
    b = rng.normal(size=(77, 1))
    got = (-((Vi(x) - Vj(y)) ** 2).sum(-1) * scale).exp() @ b
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(np.asarray(got), np.exp(-scale * d2) @ b, rtol=1e-12)


@pytest.mark.parametrize("eps", [0.1, 2.0])
def test_logsumexp_in_base_two_matches_numpy(eps, rng):
    """The CPU kernel works in base 2 (the exponent times log2 e, folded into the formula)."""
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.normal(size=(300, 3)).astype(np.float32)
    g = rng.normal(size=(300, 1)).astype(np.float32)
    got = ((Vj(g) - ((Vi(x) - Vj(y)) ** 2).sum(-1)) / eps).logsumexp(axis=1)
    v = (g.T.astype(np.float64) - ((x[:, None, :].astype(np.float64) - y[None]) ** 2).sum(-1)) / eps
    m = v.max(axis=1, keepdims=True)
    expected = m + np.log(np.exp(v - m).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-6, atol=2e-6)


def _linear_spec(d, axis=1):
    """sum_j w_ij (x_i - y_j) with w = a_i b_j exp(-|x - y|^2 / 2): a gradient."""
    i, j = (CAT_I, CAT_J)
    x, y, b, a = Var(0, d, i), Var(1, d, j), Var(2, 1, j), Var(3, 1, i)
    w = make("Mult", make("Mult", a, b), make("Exp", make("Minus", make("Mult", make(
        "SqDist", x, y), Const(0.5)))))
    formula = make("Mult", w, make("Subtract", x, y))
    return KernelSpec((formula,), "Sum", axis, "float32", args=(x, y, b, a))


def test_gradient_of_large_dim_is_planned_as_a_matrix_product():
    plan = plan_linear_sum(_linear_spec(64))
    assert plan is not None and len(plan.coefs) == 1
    assert sorted(t.factor for t in plan.terms) == [-1.0, 1.0]
    assert "LinearSumReduction" in render_cpu(_linear_spec(64))
    assert plan_linear_sum(_linear_spec(8)) is None  # small D: the plain schedule


def _gradient_numpy(x, y, b, a, scale=0.5):
    x, y, b, a = (np.asarray(v, np.float64) for v in (x, y, b, a))
    d2 = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    w = a * np.swapaxes(b, -1, -2) * np.exp(-scale * d2)
    return w.sum(-1, keepdims=True) * x - w @ y


@pytest.mark.parametrize("d", [32, 40, 64])
@pytest.mark.parametrize("n", [1, 37, 4099])
def test_linear_sum_matches_numpy(d, n, rng):
    """Dims with and without a remainder of 16, reduced sizes with a partial last vector and
    a partial last tile."""
    m = 9
    x = rng.normal(size=(m, d)).astype(np.float32) * 0.2
    y = rng.normal(size=(n, d)).astype(np.float32) * 0.2
    b = rng.normal(size=(n, 1)).astype(np.float32)
    a = rng.normal(size=(m, 1)).astype(np.float32)
    w = Vi(a) * Vj(b) * (-((Vi(x) - Vj(y)) ** 2).sum(-1) * 0.5).exp()
    got = (w * (Vi(x) - Vj(y))).sum(axis=1)
    np.testing.assert_allclose(np.asarray(got), _gradient_numpy(x, y, b, a), rtol=2e-5,
                               atol=2e-5)


def test_linear_sum_over_i_with_batch_dims(rng):
    """Reduced over i (roles swapped), with a broadcast batch dim."""
    d = 48
    x = rng.normal(size=(2, 30, d)).astype(np.float32) * 0.2
    y = rng.normal(size=(1, 20, d)).astype(np.float32) * 0.2
    got = ((-((Vi(x) - Vj(y)) ** 2).sum(-1)).exp() * (Vj(y) - Vi(x))).sum(axis=-3)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    w = np.exp(-((x64[:, :, None, :] - y64[:, None, :, :]) ** 2).sum(-1))  # (2, 30, 20)
    expected = np.swapaxes(w, 1, 2).sum(-1, keepdims=True) * y64 - np.swapaxes(w, 1, 2) @ x64
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-5, atol=2e-5)


def test_jax_grad_at_large_dim_uses_the_matrix_product_and_matches_numpy(rng):
    x = jnp.asarray(rng.normal(size=(25, 64)).astype(np.float32) * 0.15)
    y = jnp.asarray(rng.normal(size=(33, 64)).astype(np.float32) * 0.15)
    b = jnp.asarray(rng.normal(size=(33, 1)).astype(np.float32))

    def energy(x):
        return ((-((Vi(x) - Vj(y)) ** 2).sum(-1) * 0.5).exp() @ b).sum()

    got = jax.grad(energy)(x)
    expected = -_gradient_numpy(x, y, b, np.ones((25, 1)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-5, atol=2e-5)


def test_linear_sum_float32_accuracy_over_many_terms(rng):
    """Block summation keeps float32 sums of 2e5 terms within 1e-5 of float64."""
    n, d = 200_000, 32
    x = np.zeros((3, 1), np.float32)
    u = rng.uniform(0.0, 1.0, size=(n, 1)).astype(np.float32)
    y = rng.uniform(0.5, 1.5, size=(n, d)).astype(np.float32)
    got = ((Vi(x) - Vj(u)).exp() * Vj(y)).sum(axis=1)
    expected = np.exp(-u.astype(np.float64)).T @ y.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got), np.repeat(expected, 3, 0), rtol=1e-5)


def test_dot_products_of_large_dim_take_a_two_vector_register_tile():
    x, y = Var(0, 64, CAT_I), Var(1, 64, CAT_J)
    assert column_block((make("Scalprod", x, y),)) == 2
    assert column_block((make("SqDist", Var(0, 3, CAT_I), Var(1, 3, CAT_J)),)) == 1
    source = render_cpu(KernelSpec((make("Scalprod", x, y),), "Sum", 1, "float32"))
    assert "jk::in_register" in source


@pytest.mark.parametrize("m", [4097, 9001])
def test_rows_split_into_even_super_blocks(m, rng):
    """A call small enough to run inline hands the kernel all its rows at once: more than one
    super-block (4096 rows), split evenly, each sweeping the reduced axis again."""
    x = rng.normal(size=(m, 2))
    y = rng.normal(size=(7, 2))
    got = ((Vi(x) - Vj(y)) ** 2).sum(-1).min(axis=1)
    expected = ((x[:, None, :] - y[None]) ** 2).sum(-1).min(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)


# How the exponent reaches Exp2, and the C function it prints as (codegen/printer.py): any
# sign, its negation (absorbed by the exponential), and the same two known to be <= 0 in the
# end (no clamp against overflow).
EXP2_FORMS = {
    "exp2": "jk::exp2(",
    "exp2_of_minus": "jk::exp2_neg(",
    "exp2_of_nonpositive": "jk::exp2_nonpositive(",
    "exp2_of_minus_nonnegative": "jk::exp2_neg_nonnegative(",
}


def _exp2_exponent(form: str, x: np.ndarray):
    """The exponent of `form` as a LazyTensor of the values x, and the float64 exponent. The
    exponent is a per-pair value (x_i + y_j, y_j = 0: x_i alone would be computed once per row,
    in scalars), and .elem(0) keeps a Minus in front of it (the code generator would push -1
    into x_i and y_j)."""
    pair = (Vi(np.stack([x, x], 1)) + Vj(np.zeros((1, 2), np.float32))).elem(0)
    x64 = x.astype(np.float64)
    if form == "exp2":
        return pair, x64
    if form == "exp2_of_minus":
        return -pair, -x64
    if form == "exp2_of_nonpositive":
        return pair.abs() * -2.0, -2.0 * np.abs(x64)
    return -pair.abs(), -np.abs(x64)


@pytest.mark.parametrize("form", sorted(EXP2_FORMS))
def test_vector_exp2_matches_numpy_over_the_whole_float32_range(form):
    """2^x as the kernels compute it (one SIMD path per instruction set), in each of the forms
    the code generator prints: within 2 ulp for normal results, IEEE at +-inf and NaN;
    subnormal results are 0 where XLA's CPU threads flush them (as jnp.exp2 does there), else
    within one subnormal step."""
    x = np.concatenate([np.linspace(-160, 130, 20_011), [np.inf, -np.inf, np.nan, 0.0, -0.0,
                                                         128.0, -126.0, -149.0]])
    x = (-x if "minus" in form else x).astype(np.float32)  # the same values of 2^(.) either way
    exponent, exponent64 = _exp2_exponent(form, x)
    got = np.asarray(exponent.exp2().sum(axis=1))[:, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.exp2(exponent64)
    special = ~np.isfinite(exponent64) | (expected > np.finfo(np.float32).max)
    with np.errstate(over="ignore"):  # 2^128 and up: inf in float32
        assert np.array_equal(got[special], expected[special].astype(np.float32), equal_nan=True)
    tiny = np.finfo(np.float32).tiny
    normal = ~special & (expected >= tiny)
    np.testing.assert_allclose(got[normal], expected[normal], rtol=2.5e-7)
    subnormal = ~special & (expected < tiny)
    error = np.abs(got[subnormal] - expected[subnormal])
    assert np.all((got[subnormal] == 0) | (error <= 1.5e-45))


@pytest.mark.parametrize("form", sorted(EXP2_FORMS))
def test_exp2_prints_the_form_its_exponent_allows(form):
    """Each form of the test above prints as its own C function, and only as that one."""
    x = Var(0, 2, CAT_I)
    pair = make("Elem", make("Add", x, Var(1, 2, CAT_J)), params=(0,))
    exponent = {"exp2": pair, "exp2_of_minus": make("Minus", pair),
                "exp2_of_nonpositive": make("Mult", make("Abs", pair), Const(-2.0)),
                "exp2_of_minus_nonnegative": make("Minus", make("Abs", pair))}[form]
    source = render_cpu(KernelSpec((make("Exp2", exponent),), "Sum", 1, "float32"))
    printed = [f for f in EXP2_FORMS.values() if f in source]
    assert printed == [EXP2_FORMS[form]]


def test_exp2_of_a_negated_pair_value_prints_as_exp2_neg():
    """exp(-|x - y|^2 / 2): the constant moves into x and y, and 2^-a takes the Minus, without
    a clamp since a squared distance is never negative. 2^-(x_0 + y_0) keeps it."""
    x, y, b = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_J)
    gauss = make("Mult", make("Exp", make("Mult", make("Minus", make("SqDist", x, y)),
                                          Const(0.5))), b)
    element = make("Exp2", make("Minus", make("Elem", make("Add", x, y), params=(0,))))
    for formula, printed in ((gauss, "jk::exp2_neg_nonnegative("), (element, "jk::exp2_neg(")):
        source = render_cpu(KernelSpec((formula,), "Sum", 1, "float32"))
        assert source.count(printed) == 1 and "jk::exp2(" not in source


def test_squared_distance_prints_the_broadcast_row_value_second():
    """|x_i - y_j|^2 prints as (y_j - x_i)^2, the same value, so that x86 can read the
    broadcast x_i from memory; |y_j - x_i|^2 keeps its order."""
    x, y = Var(0, 3, CAT_I), Var(1, 3, CAT_J)
    for operands, loaded in (((x, y), "loaded1"), ((y, x), "loaded0")):
        source = render_cpu(KernelSpec((make("SqDist", *operands),), "Sum", 1, "float32"))
        assert f"jk::square({loaded}[q / NR] - jk::cst<V>((o + 0)[0]))" in source


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gaussian_kernel_diagonal_is_exactly_one(dtype):
    """Regression: 2^0 came out as 1.0000001 in float32 (the polynomial's constant term was not
    exactly 1), so k(x, x) = exp(0) of a Gaussian kernel was not 1."""
    x = np.linspace(-1, 1, 37).reshape(-1, 1).astype(dtype)
    diagonal = (-Vi(x).sqdist(Vj(x[:1])) * 0.0).exp().sum(axis=1)
    k_xx = (-Vi(x).sqdist(Vj(x)) * 0.5).exp().max(axis=1)
    assert np.all(np.asarray(diagonal) == 1.0)
    assert np.all(np.asarray(k_xx) == 1.0)
