"""pykeops's LazyTensor and Genred surface: shapes, absolute axes with batch dims, keywords,
method names, symbolic variables, pickling. Results are compared with numpy in float64.

These are the behaviours that made ported pykeops code fail before computing anything.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from jaxkeops import Genred, LazyTensor, Pm, Vi, Vj

M, N, D = 7, 5, 3


@pytest.fixture
def xyb(rng):
    return rng.uniform(-1, 1, (M, D)), rng.uniform(-1, 1, (N, D)), rng.uniform(-1, 1, (N, 2))


def sqdist(x, y):
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


def gaussian_lazy(x, y):
    return (-((LazyTensor(x[..., :, None, :]) - LazyTensor(y[..., None, :, :])) ** 2)
            .sum(-1)).exp()


# ---------------------------------------------------------------------------------------------
# Shapes.

def test_shape_hides_a_trailing_dimension_of_one_as_pykeops(xyb):
    x, y, _ = xyb
    K = gaussian_lazy(x, y)
    assert K.shape == (M, N) and K._shape == (M, N, 1)
    assert K.ndim == 1 and K.dim() == 3 and K.nbatchdims == 0
    assert (K.ni, K.nj) == (M, N)
    diff = Vi(x) - Vj(y)
    assert diff.shape == (M, N, D) and diff.ndim == D
    batched = LazyTensor(np.ones((2, M, 1, D))) - LazyTensor(y[None, None])
    assert batched.shape == (2, M, N, D) and batched.nbatchdims == 1 and batched.dim() == 4
    assert Vi(x).shape == (M, 1, D)
    assert Pm(2.0).shape == (1, 1)


def test_batch_axes_are_absolute_as_in_pykeops(rng):
    """With one batch dim, axis=1 is the i axis and axis=2 the j axis (pykeops's convention);
    a user with (B, M, D) inputs reduced over the wrong axis when the README said otherwise."""
    x = rng.uniform(-1, 1, (2, M, D))
    y = rng.uniform(-1, 1, (2, N, D))
    K = gaussian_lazy(x, y)
    assert K.shape == (2, M, N)
    dense = np.exp(-sqdist(x, y))  # (2, M, N)
    over_i = K.sum(axis=1)
    over_j = K.sum(axis=2)
    assert over_i.shape == (2, N, 1) and over_j.shape == (2, M, 1)
    assert_close(over_i[..., 0], dense.sum(1), "float64")
    assert_close(over_j[..., 0], dense.sum(2), "float64")
    np.testing.assert_array_equal(np.asarray(K.sum(axis=-3)), np.asarray(over_i))
    np.testing.assert_array_equal(np.asarray(K.sum(dim=-2)), np.asarray(over_j))
    with pytest.raises(ValueError, match=r"cannot reduce axis 0 .*1 batch dims.*use 1 or -3"):
        K.sum(axis=0)
    assert "nbatchdims" in type(K).sum.__doc__ or "over i or j" in type(K).sum.__doc__


def test_dim_and_axis_keywords_are_aliases(xyb):
    x, y, b = xyb
    K = gaussian_lazy(x, y)
    expected = np.exp(-sqdist(x, y)).sum(1, keepdims=True)
    for out in (K.sum(1), K.sum(axis=1), K.sum(dim=1), K.sum_reduction(dim=1),
                K.sum(axis=1, dim=1)):
        assert_close(out, expected, "float64")
    with pytest.raises(ValueError, match="disagree"):
        K.sum(axis=0, dim=1)
    with pytest.raises(TypeError, match="axis must be an integer"):
        K.sum(axis="1")


def test_vector_axis_is_the_default_and_keepdim_is_accepted(xyb):
    x, y, _ = xyb
    diff = Vi(x) - Vj(y)
    for s in (diff.sum(), diff.sum(-1, keepdim=True), diff.sum(dim=2)):
        assert isinstance(s, LazyTensor) and s.shape == (M, N)
    assert isinstance(diff.min(), LazyTensor) and isinstance(diff.argmax(), LazyTensor)


# ---------------------------------------------------------------------------------------------
# Keywords.

@pytest.mark.parametrize("scheme", ["auto", "direct_sum", "block_sum", "kahan_scheme"])
def test_sum_schemes_give_the_sum(xyb, scheme):
    x, y, b = xyb
    K = gaussian_lazy(x, y)
    expected = np.exp(-sqdist(x, y)) @ b
    assert_close(K.__matmul__(b, sum_scheme=scheme), expected, "float64")
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], axis=1,
               sum_scheme=scheme)
    assert_close(g(x, y, b), expected, "float64")


def test_accuracy_keywords_are_checked_as_in_pykeops(xyb):
    x, y, _ = xyb
    d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    with pytest.raises(ValueError, match="only applies to sum-type reductions"):
        d.min(axis=1, sum_scheme="kahan_scheme")
    with pytest.raises(ValueError, match="only applies to sum-type reductions"):
        d.argKmin(K=2, axis=1, dtype_acc="float64")
    with pytest.raises(ValueError, match="set only one"):
        d.sum(axis=1, dtype_acc="float64", use_double_acc=True)
    with pytest.raises(ValueError, match="sum_scheme='pairwise' is not one of"):
        d.sum(axis=1, sum_scheme="pairwise")
    with pytest.raises(ValueError, match="less precise than the float64 data"):
        d.sum(axis=1, dtype_acc="float32")
    # direct_sum is the only scheme of the other reductions, as in pykeops
    assert_close(d.min(axis=1, sum_scheme="direct_sum")[:, 0], sqdist(x, y).min(1), "float64")


def test_out_is_refused_because_arrays_are_immutable(xyb):
    x, y, b = xyb
    with pytest.raises(TypeError, match="immutable"):
        gaussian_lazy(x, y).__matmul__(b, out=np.zeros((M, 2)))
    g = Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], axis=1)
    with pytest.raises(TypeError, match="immutable"):
        g(x, y, out=np.zeros((M, 1)))


def test_ranges_without_arrays_name_the_first_one(xyb):
    """ranges= is supported (tests/test_ranges.py); a tuple of Nones names what is wrong."""
    x, y, _ = xyb
    with pytest.raises(TypeError, match="ranges_i must hold integers"):
        gaussian_lazy(x, y).sum(axis=1, ranges=(None,) * 6)


def test_backend_runs_there_or_says_why_not(xyb):
    x, y, b = xyb
    expected = np.exp(-sqdist(x, y)) @ b
    out = gaussian_lazy(x, y).__matmul__(b, backend="CPU", device_id=0)
    assert_close(out, expected, "float64")
    assert out.devices() == {jax.devices("cpu")[0]}
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], axis=1)
    assert_close(g(x, y, b, backend="auto"), expected, "float64")
    if not any(d.platform == "gpu" for d in jax.devices()):
        for backend in ("GPU", "GPU_1D", "GPU_2D_device"):
            with pytest.raises(RuntimeError, match=rf"backend='{backend}' asks for a GPU.*none"):
                g(x, y, b, backend=backend)
    with pytest.raises(ValueError, match="device_id=7 is out of range"):
        g(x, y, b, backend="CPU", device_id=7)
    with pytest.raises(ValueError, match="backend='TPU' is not one of"):
        g(x, y, b, backend="TPU")


def test_unknown_keyword_is_named(xyb):
    x, y, _ = xyb
    with pytest.raises(TypeError, match="'bakend'"):
        gaussian_lazy(x, y).sum(axis=1, bakend="CPU")


def test_genred_constructor_takes_pykeops_keywords(xyb):
    x, y, b = xyb
    with pytest.warns(UserWarning, match="dtype='float32' is deprecated"):
        g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"],
                   reduction_op="Sum", axis=1, dtype="float32", enable_chunks=False,
                   use_fast_math=False, rec_multVar_highdim=True)
    assert_close(g(x, y, b), np.exp(-sqdist(x, y)) @ b, "float64")


@pytest.mark.parametrize("alias, name", [("SoftMax", "SumSoftMaxWeight"),
                                         ("LogSumExpWeight", "LogSumExp"),
                                         ("MinArgMin", "Min_ArgMin"),
                                         ("MaxArgMax", "Max_ArgMax"),
                                         ("KMinArgKMin", "KMin_ArgKMin")])
def test_genred_reduction_aliases(alias, name):
    g = Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], reduction_op=alias, axis=1,
               opt_arg=2 if "KMin" in alias else None,
               formula2="y" if alias in ("SoftMax", "LogSumExpWeight") else None)
    assert g.reduction == name


# ---------------------------------------------------------------------------------------------
# Methods.

def test_power_and_sinc(rng):
    x = rng.uniform(0.1, 2.0, (M, 1))
    y = rng.uniform(0.1, 2.0, (N, 1))
    u = Vi(x) + Vj(y)
    un = x[:, None, :] + y[None, :, :]
    assert_close(u.power(3).sum(axis=1), (un ** 3).sum(1), "float64")
    assert_close(u.power(1.5).sum(axis=1), (un ** 1.5).sum(1), "float64")
    assert_close(u.sinc().sum(axis=1), np.sinc(un).sum(1), "float64")
    grad = jax.grad(lambda x: Vi(x).sinc().sum(axis=0).sum())(x)  # no j-variable: one row
    assert_close(grad, jax.grad(lambda x: jnp.sinc(x).sum())(x), "float64")


def test_transpose(xyb):
    x, y, _ = xyb
    K = gaussian_lazy(x, y)
    w = np.linspace(-1, 1, M)
    dense = np.exp(-sqdist(x, y))
    assert K.t().shape == (N, M) and K.T.shape == (N, M)
    assert_close(K.t() @ w, dense.T @ w, "float64")
    assert_close(K.rmatvec(w), dense.T @ w, "float64")
    assert_close(K.matvec(np.ones(N)), dense.sum(1), "float64")
    assert_close((K.T * Vj(x[:, :1])).sum(axis=1), dense.T @ x[:, :1], "float64")


def test_min_argkmin_alias_and_long_reduction_names(xyb):
    x, y, _ = xyb
    d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    dn = sqdist(x, y)
    v, i = d.min_argKmin(K=2, axis=1)
    np.testing.assert_array_equal(np.asarray(i), np.argsort(dn, 1, kind="stable")[:, :2])
    assert_close(v, np.sort(dn, 1)[:, :2], "float64")
    assert_close(d.min_reduction(axis=1)[:, 0], dn.min(1), "float64")
    np.testing.assert_array_equal(np.asarray(d.argmax_reduction(dim=0)[:, 0]), dn.argmax(0))
    np.testing.assert_array_equal(np.asarray(d.argKmin_reduction(K=3, axis=1)),
                                  np.argsort(dn, 1, kind="stable")[:, :3])
    assert_close(d.logsumexp_reduction(axis=1)[:, 0], np.log(np.exp(dn).sum(1)), "float64")


def test_concatenate_and_norm(xyb):
    x, y, _ = xyb
    u, v = Vi(x), Vj(y)
    both = LazyTensor.concatenate((u, v, u))
    assert both.ndim == 3 * D
    assert_close(LazyTensor.cat((u, v), dim=-1).sum(axis=1),
                 np.concatenate([np.broadcast_to(x[:, None], (M, N, D)),
                                 np.broadcast_to(y[None], (M, N, D))], -1).sum(1), "float64")
    assert_close((u - v).norm(-1).sum(axis=1)[:, 0], np.sqrt(sqdist(x, y)).sum(1), "float64")
    with pytest.raises(ValueError, match="dim=-1"):
        (u - v).norm(0)


def test_symbolic_variables_and_call_false(xyb):
    x, y, b = xyb
    x_sym = LazyTensor((0, D, 0))
    K = (-((x_sym - Vj(y)) ** 2).sum(-1)).exp()
    pending = (K * Vj(b)).sum(axis=1)  # a symbolic variable: returned as a callable
    assert callable(pending)
    assert_close(pending(x), np.exp(-sqdist(x, y)) @ b, "float64")
    later = gaussian_lazy(x, y).sum(axis=1, call=False)
    assert_close(later(), np.exp(-sqdist(x, y)).sum(1, keepdims=True), "float64")
    with pytest.raises(ValueError, match="takes 1 array"):
        pending()


def test_genred_and_lazytensor_pickle_round_trip(xyb):
    x, y, b = xyb
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], axis=1)
    g2 = pickle.loads(pickle.dumps(g))
    np.testing.assert_array_equal(np.asarray(g2(x, y, b)), np.asarray(g(x, y, b)))
    K = gaussian_lazy(x, y) * Vj(b)
    K2 = pickle.loads(pickle.dumps(K))
    assert K2.formula == K.formula
    np.testing.assert_array_equal(np.asarray(K2.sum(axis=1)), np.asarray(K.sum(axis=1)))


def test_float64_numpy_without_x64_warns_once():
    """pykeops.numpy users pass float64 arrays: with x64 off they are computed in float32, which
    the README promised would raise; now a one-time warning says how to enable x64."""
    script = textwrap.dedent("""
        import warnings
        import numpy as np
        from jaxkeops import Vi, Vj
        x = np.random.rand(4, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = ((Vi(x) - Vj(x)) ** 2).sum(-1).sum(axis=1)
            ((Vi(x) - Vj(x)) ** 2).sum(-1).sum(axis=1)
        msgs = [str(w.message) for w in caught if "64-bit" in str(w.message)]
        print(len(msgs), out.dtype, "jax_enable_x64" in msgs[0])
    """)
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "float32", "True"]


def test_keops_kron_and_keops_tensordot_methods(rng):
    """pykeops's test_kron.py and test_lazytensor_tensordot.py, as LazyTensor methods."""
    dimfa, dimfb = [3, 2, 1, 2], [1, 2, 2, 3]
    x = rng.random((M, int(np.prod(dimfa))))
    y = rng.random((N, int(np.prod(dimfb))))
    got = LazyTensor(x[:, None, :]).keops_kron(LazyTensor(y[None, :, :]), dimfa, dimfb).sum(
        axis=1)
    expected = sum(np.stack([np.kron(x[i].reshape(dimfa), y[j].reshape(dimfb)).ravel()
                             for i in range(M)]) for j in range(N))
    assert_close(got, expected, "float64")
    a, b = rng.random((4 * 7,)), rng.random((7,))
    A, B = LazyTensor(a[None, None, :]), LazyTensor(b[None, None, :])
    C = A.keops_tensordot(B, (4, 7), (7,), (1,), (0,)).sum_reduction(dim=1)
    assert_close(C[0], a.reshape(4, 7) @ b, "float64")
    # with KeOps's permutation argument: kept axis t goes to output position perm[t]
    p, q = rng.random((M, 6)), rng.random((N, 4))
    perm = [0, 2, 1, 3]
    got = Vi(p).keops_tensordot(Vj(q), [2, 3], [2, 2], [], [], perm).sum(axis=1)
    # output axes (a, c, b, d): axes a, b, c, d of the plain tensordot at 0, 2, 1, 3
    full = np.einsum("mab,ncd->mnacbd", p.reshape(M, 2, 3), q.reshape(N, 2, 2))
    assert_close(got, full.reshape(M, N, -1).sum(1), "float64")


def test_bspline_grad_and_difference_matrix_methods(rng):
    x = rng.uniform(-1, 1, (M, D))
    y = rng.uniform(-1, 1, (N, D))
    x_i, y_j = Vi(x), Vj(y)
    g = ((x_i - y_j) ** 2).sum(-1).grad(x_i, 1.0)  # 2 (x_i - y_j)
    assert_close(g.sum(axis=1), 2 * (x[:, None] - y[None]).sum(1), "float64")
    dm = x_i.difference_matrix(y_j).sum(axis=1)
    # KeOps's layout: component j * dim(x) + i is x_i - y_j
    assert_close(dm, (x[:, None, None, :] - y[None, :, :, None]).reshape(M, N, -1).sum(1),
                 "float64")
    knots = np.linspace(0.0, 1.0, 6)
    t = rng.uniform(0.0, 0.99, (M, 1))
    basis = Pm(knots).bspline(Vi(t), k=0).sum(axis=1)  # no j-variable: one column
    piecewise = ((t >= knots[:-1]) & (t < knots[1:])).astype(float)
    assert_close(basis, piecewise, "float64")


def test_signed_logsumexp_method(rng):
    x = rng.uniform(-1, 1, (M, D))
    y = rng.uniform(-1, 1, (N, D))
    w = rng.normal(size=(N, 2))
    f = -((Vi(x) - Vj(y)) ** 2).sum(-1)
    value, sign = f.logsumexp(axis=1, weight=Vj(w), return_sign=True)
    ref_value, ref_sign = jax.nn.logsumexp(-sqdist(x, y)[..., None], axis=1, b=w[None],
                                           return_sign=True)
    assert_close(value, ref_value, "float64")
    np.testing.assert_array_equal(np.asarray(sign), np.asarray(ref_sign))
    assert np.isnan(np.asarray(f.logsumexp(axis=1, weight=Vj(w)))).any()  # unsigned: NaN
