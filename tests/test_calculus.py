"""KeOps's symbolic calculus (jaxkeops.autodiff.calculus): every operation against JAX's own
derivatives (jax.vjp, jax.jvp, jax.jacfwd, jax.hessian) of the dense evaluation of the formula,
nested Grad, the formula-string names, and the results inside a real reduction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, run_both

from jaxkeops.autodiff import (
    CALCULUS,
    adjoint_operator,
    diff,
    divergence,
    grad,
    grad_matrix,
    laplacian,
    trace_operator,
)
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, Const, Var, make, variables
from jaxkeops.formulas.dense import evaluate
from jaxkeops.formulas.parser import parse_aliases, parse_formula

F64 = "float64"
ALIASES = parse_aliases(["x = Vi(3)", "y = Vj(3)", "p = Pm(1)", "W = Pm(9)", "e = Vi(3)",
                         "u = Vj(3)", "s = Vi(1)"])
X, Y, P, W, E, U, S = ALIASES.values()

# A vector field of x (dim 3, so that its divergence exists) and a scalar function of x, with
# y and p as parameters of the formula.
FIELD = parse_formula("Exp(-p * SqDist(x, y)) * (Sin(x) * y + x * x[1])", ALIASES)
SCALAR = parse_formula("Exp(-p * SqDist(x, y)) * Cos(x | y) + SqNorm2(x) * x[0]", ALIASES)


def parse(text):
    return parse_formula(text, ALIASES, functions=CALCULUS)


@pytest.fixture
def env(rng):
    return {v: jnp.asarray(rng.normal(size=(v.dim,))) for v in ALIASES.values()}


def dense(formula, env, **moving):
    """The dense value of `formula`, as a function of the variables named in `moving`."""
    names = list(moving)

    def f(*arrays):
        values = dict(env)
        values.update({ALIASES[n]: a for n, a in zip(names, arrays)})
        return evaluate(formula, {v: values[v] for v in variables(formula)}, jnp.float64)

    return f, tuple(env[ALIASES[n]] for n in names)


def value(formula, env):
    return evaluate(formula, {v: env[v] for v in variables(formula)}, jnp.float64)


@pytest.mark.parametrize("wrt", ["x", "y", "p"])
def test_grad_is_the_vjp(wrt, env):
    f, args = dense(FIELD, env, **{wrt: None})
    _, pullback = jax.vjp(f, *args)
    (expected,) = pullback(env[E])
    assert_close(value(grad(FIELD, ALIASES[wrt], E), env), expected, F64)
    # A scalar gradient input is broadcast, as KeOps does.
    (expected_scalar,) = pullback(jnp.broadcast_to(env[S], (3,)))
    assert_close(value(grad(FIELD, ALIASES[wrt], S), env), expected_scalar, F64)


@pytest.mark.parametrize("wrt", ["x", "y"])
def test_diff_is_the_jvp(wrt, env):
    f, args = dense(FIELD, env, **{wrt: None})
    _, expected = jax.jvp(f, args, (env[U],))
    assert_close(value(diff(FIELD, ALIASES[wrt], U), env), expected, F64)


def test_grad_matrix_is_the_jacobian_row_by_row(env):
    f, args = dense(FIELD, env, x=None)
    jacobian = jax.jacfwd(f)(*args)  # (f.dim, x.dim): row i is the gradient of f_i
    got = grad_matrix(FIELD, X)
    assert got.dim == 9
    assert_close(value(got, env), jacobian.ravel(), F64)
    wide = parse_formula("Concat(Exp(x), y[0:2] * x[2])", ALIASES)  # f.dim 5 != x.dim 3
    f, args = dense(wide, env, x=None)
    assert_close(value(grad_matrix(wide, X), env), jax.jacfwd(f)(*args).ravel(), F64)


def test_divergence_is_the_trace_of_the_jacobian(env):
    f, args = dense(FIELD, env, x=None)
    assert_close(value(divergence(FIELD, X), env), [jnp.trace(jax.jacfwd(f)(*args))], F64)
    with pytest.raises(ValueError, match="Divergence: the formula \\(dim 1\\)"):
        divergence(SCALAR, X)


def test_laplacian_is_the_trace_of_the_hessian(env):
    f, args = dense(SCALAR, env, x=None)
    hessian = jax.hessian(lambda x: f(x)[0])(*args)
    assert_close(value(laplacian(SCALAR, X), env), [jnp.trace(hessian)], F64)
    with pytest.raises(ValueError, match="Laplacian: the formula must be a scalar"):
        laplacian(FIELD, X)


def test_nested_grad_is_a_second_derivative(env):
    inner = grad(SCALAR, X, S)  # s * grad f
    f, args = dense(SCALAR, env, x=None)

    def scaled_gradient(x):
        return jax.grad(lambda x: f(x)[0])(x) * env[S][0]

    _, pullback = jax.vjp(scaled_gradient, *args)
    (expected,) = pullback(env[E])
    assert_close(value(grad(inner, X, E), env), expected, F64)
    assert_close(value(parse("Grad(Grad(Exp(-p * SqDist(x, y)) * Cos(x | y) + SqNorm2(x) * "
                             "x[0], x, s), x, e)"), env), expected, F64)


def test_grad_of_a_formula_linear_in_x_twice_is_zero():
    """KeOps's test_formula_simplification: the variables of the inner gradient input are
    ordinary variables, and the result is a zero constant."""
    got = parse("Grad(Grad(x + Var(1,3,1), x, Var(2,3,0)), x, Var(3,3,0))")
    assert got == Const(0.0, 3)
    assert parse("Grad(x + Var(1,3,1), x, Var(2,3,0))") == Var(2, 3, CAT_I)


def test_trace_and_adjoint_of_linear_maps(env):
    linear = parse_formula("Exp(x) * y + MatVecMult(W, y) + (x | y) * x", ALIASES)
    f, args = dense(linear, env, y=None)
    jacobian = jax.jacfwd(f)(*args)
    assert_close(value(trace_operator(linear, Y), env), [jnp.trace(jacobian)], F64)
    assert_close(value(parse("Trace(Exp(x) * y + MatVecMult(W, y) + (x | y) * x, y, u)"), env),
                 [jnp.sum(jnp.diag(jacobian) * env[U])], F64)
    assert_close(value(trace_operator(linear, Y, P), env), [env[P][0] * jnp.trace(jacobian)],
                 F64)
    row = parse_formula("(x | y) + Sum(W[0:3] * y)", ALIASES)  # a scalar: M is a row
    f, args = dense(row, env, y=None)
    gradient = jax.grad(lambda y: f(y)[0])(*args)
    assert_close(value(trace_operator(row, Y), env), [jnp.sum(gradient)], F64)
    assert_close(value(trace_operator(row, Y, U), env), [jnp.sum(gradient * env[U])], F64)
    _, pullback = jax.vjp(lambda y: dense(linear, env, y=None)[0](y), env[Y])
    assert_close(value(adjoint_operator(linear, Y, E), env), pullback(env[E])[0], F64)
    assert_close(value(parse("AdjointOperator(Exp(x) * y + MatVecMult(W, y) + (x | y) * x, y, "
                             "e)"), env), pullback(env[E])[0], F64)
    for name in ("TraceOperator(Exp(y), y)", "Adjoint(y * y, y, e)"):
        with pytest.raises(ValueError, match="must be linear in Var\\(1,3,1\\)"):
            parse(name)


def test_grad_without_an_input_makes_one_as_keops():
    got = parse("Grad(SqNorm2(x - y), x)")
    new = Var(2, 1, CAT_J)  # one past the formula's largest index (x: 0, y: 1), other category
    assert got == grad(parse_formula("SqNorm2(x - y)", ALIASES), X, new)
    assert new in variables(got)
    with pytest.raises(ValueError, match="v must be an i- or j-variable"):
        parse("Grad(p * x, p)")


@pytest.mark.parametrize(
    "text, match, column",
    [
        ("Grad(x * y, x + y, e)", r"Grad: argument 2 must be a variable", 13),
        ("Diff(x, Exp(x), e)", r"Diff: argument 2 must be a variable", 9),
        ("GradMatrix(x, 2)", r"GradMatrix: argument 2 must be a variable", 15),
        ("Grad(x, x, Vi(9, 2))", r"the gradient input e must have dim 3 \(or 1\), got 2", 12),
        ("Laplacian(x, x)", r"Laplacian: the formula must be a scalar", 1),
        ("Grad(x)", r"Grad takes 2 to 3 formula arguments, got 1", 1),
    ],
)
def test_calculus_errors_are_located(text, match, column):
    with pytest.raises(ValueError, match=match) as info:
        parse(text)
    assert f"column {column} of the formula" in str(info.value)


def test_calculus_inside_a_reduction(rng):
    """The formulas run as kernels: their sums over j match both the dense reduction of the
    same formula and JAX's derivatives of the original one, pair by pair."""
    kernel = parse_formula("Exp(-p * SqDist(x, y)) * Sin(x | u)", ALIASES)  # scalar
    field = parse_formula("Exp(-p * SqDist(x, y)) * (x - y)", ALIASES)  # dim 3
    pieces = [grad(kernel, X, S), divergence(field, X), laplacian(kernel, X),
              grad_matrix(field, X), diff(kernel, Y, E)]
    formula = pieces[0]
    for piece in pieces[1:]:
        formula = make("Concat", formula, piece)
    m, n = 5, 7
    data = {X: rng.normal(size=(m, 3)), Y: rng.normal(size=(n, 3)), P: np.array([0.7]),
            S: rng.normal(size=(m, 1)), U: rng.normal(size=(n, 3)), E: rng.normal(size=(m, 3))}
    used = variables(formula)
    (got,), (ref,) = run_both([formula], "Sum", 1, used, [data[v] for v in used])
    assert_close(got, ref, F64)

    def per_pair(x, y, u, s, e):
        def kernel_of(x, y):
            return jnp.exp(-0.7 * jnp.sum((x - y) ** 2)) * jnp.sin(x @ u)

        def field_of(x):
            return jnp.exp(-0.7 * jnp.sum((x - y) ** 2)) * (x - y)

        jac = jax.jacfwd(field_of)(x)
        return jnp.concatenate([
            jax.grad(kernel_of)(x, y) * s, jnp.trace(jac)[None],
            jnp.trace(jax.hessian(kernel_of)(x, y))[None], jac.ravel(),
            (jax.grad(kernel_of, argnums=1)(x, y) @ e)[None],
        ])

    pairs = jax.vmap(jax.vmap(per_pair, (None, 0, 0, None, None)), (0, None, None, 0, 0))
    expected = pairs(data[X], data[Y], data[U], data[S], data[E]).sum(axis=1)
    assert_close(got, expected, F64)


def test_calculus_names():
    assert set(CALCULUS) == {"Grad", "Diff", "GradMatrix", "Divergence", "Laplacian",
                             "TraceOperator", "Trace", "AdjointOperator", "Adjoint"}
    assert CALCULUS["Trace"] is trace_operator and CALCULUS["Adjoint"] is adjoint_operator
    assert {v.cat for v in (X, Y, P)} == {CAT_I, CAT_J, CAT_P}
