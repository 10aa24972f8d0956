"""Derivatives of every op and every reduction, against finite differences (`check_grads`) and
against JAX autodiff of the dense reference (`jaxkeops.testing.dense_reduce`).

Every test runs in float64 at small sizes (M = 7, N = 9). Kernels compile on first use and each
derivative order creates new ones, so the number of distinct formulas is kept small:
- each op gets one formula, differentiated with respect to i-variables only, so that every
  transposed kernel is a single reduction over j (7 kernels per smooth op for check_grads to
  second order in both modes);
- the reductions share one set of formulas over an i-variable, a j-variable, a parameter and a
  weight, differentiated with respect to all of them at once (about 21 kernels per Sum-shaped
  reduction and axis to second order; Min/Max/KMin only need their Arg* kernel).
The finite-difference tests are marked slow: they hold most of the kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, assert_tree_close, dense_reference, make_spec, random_like
from jax.test_util import check_grads

from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, OPS, Var, make, variables
from jaxkeops.formulas.dense import evaluate
from jaxkeops.lazy.reduce import run_reduction
from jaxkeops.reductions import REDUCTIONS

M, N = 7, 9
DTYPE = "float64"

# Ops whose value is locally constant: every derivative is zero (away from the jumps).
PIECEWISE_CONSTANT = {
    "Equal", "NotEqual", "LessThan", "GreaterThan", "LessOrEqual", "GreaterOrEqual",
    "Floor", "Round", "Sign", "Step", "OneHot", "ArgMax", "ArgMin",
}
# Per-operand sampling intervals where the op's single `domain` is not enough.
OPERAND_DOMAINS = {
    "Clamp": [(-2.0, 2.0), (-1.6, -0.4), (0.4, 1.6)],  # lower bound < upper bound
}


def _tree_close(actual, expected, **kw):
    assert_tree_close(actual, expected, DTYPE, **kw)


def _cotangent_vjp(f):
    """x -> vjp(f, x)(f(x)): reverse mode whose cotangent depends on x (as in check_grads),
    so that differentiating it again reuses the kernels check_grads compiled."""

    def f_vjp(*args):
        out, pullback = jax.vjp(f, *args)
        return pullback(out)

    return f_vjp


def _derivatives(f, args, tangents, ct=None, second=False):
    """f's value, JVP, VJP (given a cotangent) and forward-over-reverse derivative."""
    out = {"value": f(*args), "jvp": jax.jvp(f, args, tangents)}
    if ct is not None:
        out["vjp"] = jax.vjp(f, *args)[1](ct)
    if second:
        out["jvp_of_vjp"] = jax.jvp(_cotangent_vjp(f), args, tangents)
    return out


def _compare_with_dense(f, dense, args, tangents, ct=None, second=False):
    """The derivatives of f (eager) against those of the dense reference (one jitted program,
    instead of one compilation per transformation)."""
    expected = jax.jit(lambda a, t, c: _derivatives(dense, a, t, c, second))(args, tangents, ct)
    _tree_close(_derivatives(f, args, tangents, ct, second), expected)


class Problem:
    """One reduction, as a function of the arrays we differentiate (the others are fixed), and
    the same function through the dense reference."""

    def __init__(self, formulas, reduction, axis, variables, arrays, wrt, k=None):
        self.formulas, self.reduction, self.axis = tuple(formulas), reduction, axis
        self.variables, self.k = tuple(variables), k
        self.arrays = [jnp.asarray(a) for a in arrays]
        self.wrt = tuple(wrt)
        self.names = [repr(v) for v in variables]
        self.spec = make_spec(formulas, reduction, axis, variables, DTYPE, k=k)

    @property
    def args(self):
        return tuple(self.arrays[i] for i in self.wrt)

    def _full(self, args):
        arrays = list(self.arrays)
        for i, a in zip(self.wrt, args):
            arrays[i] = a
        return arrays

    def keops(self, *args):
        outs = run_reduction(self.formulas, self.reduction, self.axis, self.variables,
                             self._full(args), self.names, k=self.k)
        return outs[0] if len(outs) == 1 else outs

    def dense(self, *args):
        outs = dense_reference(self.spec)(*self._full(args))
        return outs[0] if len(outs) == 1 else outs


# ---------------------------------------------------------------------------------------------
# Every op of the op table.

def op_problem(name: str, rng) -> Problem:
    """Sum over j of op(x1_i + z1_j, x2_i + z2_j, ...), a function of the i-variables x.

    Each operand is an i-variable plus a fixed j-variable, so the kernel depends on both
    indices while every differentiated variable is indexed by i: each derivative order adds
    one kernel per transposition instead of one per role."""
    spec = OPS[name]
    dims = tuple(spec.example_dims) if spec.example_dims is not None else (3,) * spec.arity
    xs = [Var(t, d, CAT_I) for t, d in enumerate(dims)]
    zs = [Var(len(dims) + t, d, CAT_J) for t, d in enumerate(dims)]
    formula = make(name, *(make("Add", x, z) for x, z in zip(xs, zs)),
                   params=spec.example_params)
    domains = OPERAND_DOMAINS.get(name, [spec.domain] * spec.arity)
    arrays = []
    for rows, group in ((M, xs), (N, zs)):
        for v, (lo, hi) in zip(group, domains):
            arrays.append(rng.uniform(lo / 2, hi / 2, size=(rows, v.dim)))
    return Problem([formula], "Sum", 1, xs + zs, arrays, wrt=range(len(xs)))


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_derivatives_match_dense_autodiff(name, rng):
    """First-order JVP and VJP of every op, exactly as JAX differentiates the dense reference
    (non-smooth ops included: the data stay away from their kinks with probability 1)."""
    p = op_problem(name, rng)
    args = p.args
    tangents = random_like(rng, args)
    ct = random_like(rng, p.dense(*args))
    _compare_with_dense(p.keops, p.dense, args, tangents, ct)


# Ops whose second derivatives are third derivatives of another op: their kernels unroll a
# dynamic programme into formulas of thousands of nodes that take about 15 minutes to compile
# on 2 cores, too long for CI. Their first derivatives are checked above, and the second
# derivatives of the op they differentiate (SoftDTW_SqDist) below.
THIRD_ORDER_ONLY = {
    "GradSoftDTW_SqDist": "the gradient of SoftDTW_SqDist: its second derivatives (soft-DTW's "
                          "third) compile for ~15 minutes",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_check_grads_second_order(name, rng):
    """Finite differences to second order, both modes, and the second-order derivatives
    against the dense reference."""
    if not OPS[name].smooth:
        pytest.skip("not smooth: no finite differences (its derivatives are checked against "
                    "dense autodiff by test_op_derivatives_match_dense_autodiff)")
    if name in THIRD_ORDER_ONLY:
        pytest.skip(THIRD_ORDER_ONLY[name])
    p = op_problem(name, rng)
    args = p.args
    check_grads(p.keops, args, order=2, modes=("fwd", "rev"))
    tangents = random_like(rng, args)
    _compare_with_dense(_cotangent_vjp(p.keops), _cotangent_vjp(p.dense), args, tangents)


@pytest.mark.parametrize("name", sorted(PIECEWISE_CONSTANT))
def test_piecewise_constant_ops_have_zero_derivatives(name, rng):
    """Comparisons, Floor, Round, Sign, Step, OneHot, ArgMax, ArgMin: exactly zero tangents
    and gradients (no kernel at all: their JVP rules return symbolic zeros)."""
    p = op_problem(name, rng)
    args = p.args
    tangents = random_like(rng, args)
    _, tangent_out = jax.jvp(p.keops, args, tangents)
    np.testing.assert_array_equal(np.asarray(tangent_out), 0.0)
    grads = jax.grad(lambda *a: jnp.sum(p.keops(*a) ** 2), argnums=tuple(range(len(args))))(
        *args)
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_non_smooth_ops_are_exactly_the_ones_not_checked_by_finite_differences():
    non_smooth = {n for n in OPS if not OPS[n].smooth}
    assert PIECEWISE_CONSTANT <= non_smooth


@pytest.mark.parametrize("params", [
    ((2, 3), (3, 4), (1,), (0,)),          # matrix product
    ((2, 3, 2), (2, 3), (0, 1), (0, 1)),   # contraction over two axes
    ((3, 2), (2, 3), (0,), (1,)),          # contracted axes in crossed order
    ((2, 3), (2,), (), ()),                # outer product: nothing contracted
    ((2, 3), (3, 2), (0, 1), (1, 0)),      # full contraction, axes crossed
])
def test_reverse_mode_through_tensordot(params, rng):
    """Regression: grad through TensorDot raised NotImplementedError (no transpose rule). Its
    cotangents are TensorDots of the output cotangent, permuted back into the operand's axes."""
    fa, fb = params[0], params[1]
    da, db = int(np.prod(fa)), int(np.prod(fb))
    x, y = Var(0, da, CAT_I), Var(1, db, CAT_J)
    p = Problem([make("TensorDot", x, y, params=params)], "Sum", 1, [x, y],
                [rng.standard_normal((M, da)), rng.standard_normal((N, db))], wrt=(0, 1))
    args = p.args
    ct = random_like(rng, p.dense(*args))
    _compare_with_dense(p.keops, p.dense, args, random_like(rng, args), ct)
    check_grads(p.keops, args, order=2, modes=("rev",))


def test_reverse_mode_through_kron_with_matrix_shapes(rng):
    """Regression: grad through Kron raised NotImplementedError."""
    x, y = Var(0, 6, CAT_I), Var(1, 4, CAT_J)
    p = Problem([make("Kron", x, y, params=((2, 3, 1, 4),))], "Sum", 1, [x, y],
                [rng.standard_normal((M, 6)), rng.standard_normal((N, 4))], wrt=(0, 1))
    args = p.args
    ct = random_like(rng, p.dense(*args))
    _compare_with_dense(p.keops, p.dense, args, random_like(rng, args), ct, second=True)


# ---------------------------------------------------------------------------------------------
# Every reduction, with respect to every kind of input.

K = 3
X, Y, P = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_P)
# The scalar formula of LogSumExp and SumSoftMaxWeight, and the weight (indexed by the reduced
# axis, as weights are).
F = make("Subtract", make("Scalprod", X, Y), make("Mult", P, make("SqDist", X, Y)))


def weight(axis: int) -> Var:
    return Var(3, 2, CAT_J if axis == 1 else CAT_I)


def reduction_formulas(name: str, axis: int) -> tuple:
    """The formulas of reduction `name` ("<name>_weighted": with its optional weight), from its
    table entry, so that a new reduction is tested without a new case here."""
    w = weight(axis)
    rule = REDUCTIONS[name.removesuffix("_weighted")]
    if rule.derivative == "sum":
        if not rule.scalar_formula:
            return (make("Mult", make("Exp", F), w),)
        weighted = rule.n_formulas == 2 and (not rule.weight_optional or name.endswith("_weighted"))
        return (F, w) if weighted else (F,)
    # Selecting reductions: a 2-dim formula (each component selects its own pairs) that
    # depends on every variable.
    return (make("Concat", F, make("Mult", make("Elem", w, params=(0,)),
                                   make("Sin", make("Scalprod", X, make("Cos", Y))))),)


# Every reduction of the table with a derivative (a weight-optional one also weighted), but
# LogSumExpSigned, whose weights of both signs tests/test_signed_lse.py covers.
VALUE_REDUCTIONS = [variant for name, rule in REDUCTIONS.items()
                    if rule.derivative != "none" and name != "LogSumExpSigned"
                    for variant in ((name, f"{name}_weighted") if rule.weight_optional
                                    else (name,))]
SELECTING = {name for name, rule in REDUCTIONS.items() if rule.derivative != "sum"}
INDEX_REDUCTIONS = tuple(name for name, rule in REDUCTIONS.items() if rule.derivative == "none")


def reduction_data(rng, axis: int) -> list[np.ndarray]:
    x = rng.uniform(-1.0, 1.0, size=(M, 3))
    y = rng.uniform(-1.0, 1.0, size=(N, 3))
    p = rng.uniform(0.5, 1.5, size=(1,))
    w = rng.uniform(0.5, 1.5, size=(N if axis == 1 else M, 2))  # positive: LogSumExp weights
    return [x, y, p, w]


def reduction_problem(name: str, axis: int, rng) -> Problem:
    """`name` over i (axis=0) or j (axis=1), differentiated with respect to all its inputs.
    Min/Max/KMin get data whose selected pairs are isolated (redrawn until they are)."""
    formulas = reduction_formulas(name, axis)
    reduction = name.removesuffix("_weighted")
    used = sorted(variables(*formulas), key=lambda v: v.index)
    k = K if REDUCTIONS[reduction].needs_k else None
    for _ in range(100):
        data = reduction_data(rng, axis)
        arrays = [data[v.index] for v in used]
        problem = Problem(formulas, reduction, axis, used, arrays, wrt=range(len(used)), k=k)
        if reduction not in SELECTING or min_gap(problem) > 1e-3:
            return problem
    raise AssertionError("could not draw data without near ties")


def min_gap(problem: Problem) -> float:
    """The smallest gap, along the reduced axis, between the values that Min/Max/KMin select
    and the next ones: finite differences must not flip a selection."""
    env = {}
    for v, a in zip(problem.variables, problem.arrays):
        env[v] = a[:, None, :] if v.cat == CAT_I else a[None, :, :] if v.cat == CAT_J else a
    reduced = 1 - problem.axis
    values = np.sort(np.asarray(evaluate(problem.formulas[0], env, DTYPE)), axis=reduced)
    smallest = np.take(values, range((K if problem.k else 1) + 1), axis=reduced)
    largest = np.take(values, range(-2, 0), axis=reduced)
    return float(min(np.diff(smallest, axis=reduced).min(), np.diff(largest, axis=reduced).min()))


def _values_only(problem: Problem):
    """The value output of a reduction that also returns indices."""
    kinds = [o.kind for o in problem.spec.outputs]
    if len(kinds) == 1:
        return problem.keops, problem.dense
    return (lambda *a: problem.keops(*a)[0]), (lambda *a: problem.dense(*a)[0])


@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("name", VALUE_REDUCTIONS)
def test_reduction_derivatives_match_dense_autodiff(name, axis, rng):
    """JVP, VJP and a second-order derivative (forward over reverse) with respect to the
    i-variable, the j-variable, the parameter and the weight at once."""
    p = reduction_problem(name, axis, rng)
    f, dense = _values_only(p)
    args = p.args
    tangents = random_like(rng, args)
    ct = random_like(rng, dense(*args))
    _compare_with_dense(f, dense, args, tangents, ct, second=True)
    if len(p.spec.outputs) > 1:  # Min_ArgMin, Max_ArgMax, KMin_ArgKMin: the index output
        (values, idx), (t_values, t_idx) = jax.jvp(p.keops, args, tangents)
        np.testing.assert_array_equal(np.asarray(idx), np.asarray(p.dense(*args)[1]))
        assert t_idx.dtype == jax.dtypes.float0 and t_idx.shape == idx.shape
        assert_close(t_values, jax.jvp(f, args, tangents)[1], DTYPE)
        float0_ct = np.zeros(idx.shape, jax.dtypes.float0)
        _tree_close(jax.vjp(p.keops, *args)[1]((ct, float0_ct)), jax.vjp(f, *args)[1](ct))


@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("name", INDEX_REDUCTIONS)
def test_index_reductions_have_zero_derivatives(name, axis, rng):
    """ArgMin/ArgMax/ArgKMin return integers: float0 tangents, zero gradients through a cast to
    float, and jax.grad of an integer output fails as it does for the dense reference."""
    p = reduction_problem(name, axis, rng)
    args = p.args
    idx = p.keops(*args)
    assert jnp.issubdtype(idx.dtype, jnp.integer)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(p.dense(*args)))
    tangents = random_like(rng, args)
    for fn in (p.keops, p.dense):
        primal, tangent = jax.jvp(fn, args, tangents)
        assert tangent.dtype == jax.dtypes.float0 and tangent.shape == idx.shape
        np.testing.assert_array_equal(np.asarray(primal), np.asarray(idx))
    argnums = tuple(range(len(args)))
    grads = jax.grad(lambda *a: jnp.sum(p.keops(*a).astype(DTYPE) ** 2), argnums=argnums)(*args)
    for g, a in zip(grads, args):
        assert g.shape == a.shape
        np.testing.assert_array_equal(np.asarray(g), 0.0)
    errors = []
    for fn in (p.keops, p.dense):
        with pytest.raises(TypeError) as info:
            jax.grad(lambda *a, fn=fn: jnp.sum(fn(*a)))(*args)
        errors.append(str(info.value).split("(")[0])
    assert errors[0] == errors[1]


@pytest.mark.slow
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("name", VALUE_REDUCTIONS)
def test_reduction_check_grads(name, axis, rng):
    """Finite differences, both modes: to second order over j (axis=1); to first order over i
    (axis=0: the second-order kernels of that axis are checked against the dense reference
    above, and each order of check_grads costs about a dozen new kernels)."""
    p = reduction_problem(name, axis, rng)
    f, _ = _values_only(p)
    check_grads(f, p.args, order=2 if axis == 1 else 1, modes=("fwd", "rev"))
