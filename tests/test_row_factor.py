"""The factors of a Sum that depend on the output row only, applied once per row
(codegen/row_factor.py), and the shared difference of a gradient computed prescaled
(scaling.prescale_shared_differences): the rewritten formulas show each in place, and the CPU
kernels match numpy in float64 (rows, batch dims, both axes, block-sparse ranges). The CUDA
kernels are checked under emulation in test_cuda_rewrites.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops import Genred, Pm, Vi, Vj
from jaxkeops.cluster import cluster_ranges, from_matrix, grid_cluster, sort_clusters
from jaxkeops.codegen.cpu import render_cpu
from jaxkeops.codegen.hoist import hoist
from jaxkeops.codegen.rewrite import for_codegen
from jaxkeops.codegen.row_factor import pair_multiplies, split_row_factor
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Const, Op, Var, make, walk

X, Y, B, A = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_J), Var(3, 1, CAT_I)


def _gradient(distance):
    """-(a_i b_j e^(-|x - y|^2 / 2)) * (x - y), as autodiff writes the x-gradient of a Gaussian
    sum with cotangent a: the difference comes again, apart from the squared distance."""
    e = make("Exp", make("Mult", make("Minus", distance), Const(0.5)))
    weight = make("Minus", make("Mult", make("Mult", make("Mult", A, B), e), Const(0.5)))
    return make("Mult", make("Mult", weight, Const(1.0, 3)),
                make("Mult", Const(2.0), make("Subtract", X, Y)))


GRADIENTS = {
    "sum_of_squares": _gradient(make("Sum", make("Square", make("Subtract", X, Y)))),
    "sqdist": _gradient(make("SqDist", X, Y)),
}


def _kernel(formula, reduction="Sum", args=(X, Y, B, A)):
    spec = KernelSpec((formula,), reduction, 1, "float32", args=args)
    rewritten, epilogue = split_row_factor(spec, for_codegen(spec, spec.formulas))
    return spec, hoist(spec, rewritten), epilogue


def _ops(formula, name):
    return [n for n in walk(formula) if isinstance(n, Op) and n.name == name]


@pytest.mark.parametrize("form", sorted(GRADIENTS))
def test_gradient_pair_loop_multiplies_by_no_constant_and_reads_no_cotangent(form):
    """The pair loop is b_j 2^(-|x' - y'|^2) (x' - y') with x' and y' scaled once per row: one
    subtraction of vectors, no constant, no cotangent; a_i and the constants -1/r multiply
    the reduced value once per row."""
    spec, hoisted, epilogue = _kernel(GRADIENTS[form])
    main = hoisted.formulas[0]
    assert A not in set(walk(main))
    assert len(_ops(main, "Subtract")) == 1
    assert not [n for n in _ops(main, "Mult") if any(isinstance(a, Const) for a in n.args)]
    exp2 = _ops(main, "Exp2")
    assert len(exp2) == 1 and exp2[0].args[0].name == "Minus"
    (out,), (reduced,) = epilogue
    assert A in set(walk(out)) and reduced in set(walk(out)) and reduced.dim == 3
    # x and y scaled by r = sqrt(log2(e) / 2); the row factor carries -1 / r.
    root = np.sqrt(0.5 / np.log(2.0))
    assert any(isinstance(c, Const) and np.isclose(c.value, root) for c in walk(*hoisted.outer))
    assert any(isinstance(c, Const) and np.isclose(c.value, -1 / root) for c in walk(out))
    assert pair_multiplies(spec, for_codegen(spec, spec.formulas)) == 4  # b e, then e' (x'-y')
    source = render_cpu(spec)
    assert "EPILOGUE = true;" in source and "jk::exp2_neg_nonnegative(" in source


def test_difference_stays_unscaled_where_its_other_use_would_multiply():
    """exp(-|x - y|^2 / 2) ((x - y) + y): scaling x - y would put 1/r on a sum, three
    multiplies per pair for the one it saves, so the exponent keeps its constant."""
    d = make("Subtract", X, Y)
    e = make("Exp", make("Mult", make("Minus", make("Sum", make("Square", d))), Const(0.5)))
    spec, hoisted, epilogue = _kernel(make("Mult", e, make("Add", d, Y)), args=(X, Y))
    main = hoisted.formulas[0]
    assert epilogue is None and hoisted.outer == () and hoisted.inner == ()
    assert [n for n in _ops(main, "Mult") if any(isinstance(a, Const) for a in n.args)]


def test_only_sums_take_a_row_factor():
    """log sum_j a_i e^(f_ij) is not a_i times anything: the LogSumExp keeps a_i inside."""
    f = make("Mult", A, make("Minus", make("SqDist", X, Y)))
    assert _kernel(f, "LogSumExp", args=(X, Y, A))[2] is None
    assert _kernel(f, "Sum", args=(X, Y, A))[2] is not None
    assert "EPILOGUE = false;" in render_cpu(KernelSpec((f,), "Min", 1, "float32", args=(X, Y, A)))


def _sqdist(x, y):
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_with_a_cotangent_matches_numpy(dtype, rng):
    """jax.grad of sum_i w_i (K b)_i: the kernel reduces b_j K_ij (x_i - y_j), the epilogue
    multiplies by -w_i / sigma^2 once per row."""
    x = rng.normal(size=(70, 3)).astype(dtype)
    y = rng.normal(size=(90, 3)).astype(dtype)
    b = rng.normal(size=(90, 1)).astype(dtype)
    w = rng.normal(size=(70, 1)).astype(dtype)

    def energy(x):
        return jnp.vdot(w, (-Vi(x).sqdist(Vj(y)) * 0.8).exp() @ b)

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    k = np.exp(-0.8 * _sqdist(x64, y64)) * b[:, 0]
    want = -1.6 * w * (x64 * k.sum(1, keepdims=True) - k @ y64)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(jax.grad(energy)(x)), want, rtol=tol, atol=tol)


def test_vector_and_parameter_row_factors_over_i_with_batch_dims(rng):
    """sum_i p sin(y_j) * e^(-|x - y|^2) (y_j - x_i), reduced over i (y's rows are the
    output's), with a broadcast batch dim: the row factor p sin(y_j) is a vector."""
    x = rng.normal(size=(2, 30, 3))
    y = rng.normal(size=(1, 20, 3))
    p = np.array([0.7])
    k = (-Vi(x).sqdist(Vj(y))).exp()
    got = (Pm(p) * Vj(y).sin() * k * (Vj(y) - Vi(x))).sum(axis=-3)
    kk = np.swapaxes(np.exp(-_sqdist(x, y)), -1, -2)  # (2, 20, 30)
    want = 0.7 * np.sin(y) * (kk.sum(-1, keepdims=True) * y - kk @ x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_row_factor_on_block_sparse_ranges_matches_numpy(rng):
    """Rows whose clusters keep nothing reduce over nothing: a_i * 0 = 0 for a finite a_i."""
    x = jnp.asarray(rng.uniform(size=(40, 2)))
    y = jnp.asarray(rng.uniform(size=(50, 2)))
    x, lx = sort_clusters(x, grid_cluster(x, 0.34))
    y, ly = sort_clusters(y, grid_cluster(y, 0.34))
    keep = rng.uniform(size=(int(lx.max()) + 1, int(ly.max()) + 1)) < 0.5
    keep[0] = False
    ranges = from_matrix(cluster_ranges(lx), cluster_ranges(ly), keep)
    a = rng.normal(size=(40, 1))
    reduce = Genred("a * Exp(-SqDist(x, y)) * (x - y)",
                    ["a = Vi(1)", "x = Vi(2)", "y = Vj(2)"], "Sum", axis=1)
    got = reduce(a, x, y, ranges=ranges)
    x64, y64 = np.asarray(x), np.asarray(y)
    mask = keep[np.asarray(lx)][:, np.asarray(ly)]
    k = np.exp(-_sqdist(x64, y64)) * mask
    want = a * (x64 * k.sum(1, keepdims=True) - k @ y64)
    assert (~mask).all(1).any()  # some rows reduce over nothing
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
