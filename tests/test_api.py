"""The LazyTensor API (shapes, operators, reductions, batching, jit/vmap), its error messages,
and the kernel cache and compiler plumbing.

Numerical results are compared against numpy in float64. The formulas deliberately repeat
those of test_reductions.py (the same LazyTensor expressions give the same kernels).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import jaxkeops
from jaxkeops import CompilerNotFoundError, KernelCompileError, LazyTensor, Pm, Vi, Vj
from jaxkeops.codegen.cpu import render_cpu
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, Const, Var, make
from jaxkeops.runtime import BuildStats, build_cpu_kernel, find_toolchain, kernel_key

M, N = 23, 31


@pytest.fixture
def data(rng):
    return {
        "x": rng.uniform(-1, 1, (M, 3)),
        "y": rng.uniform(-1, 1, (N, 3)),
        "b": rng.uniform(-1, 1, (N,)),
        "B": rng.uniform(-1, 1, (N, 2)),
        "a": rng.uniform(-1, 1, (M, 2)),
        "w": rng.uniform(0.1, 2, (N, 3)),
    }


def sqdist(x, y):
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


def gaussian(x, y):
    """The LazyTensor exp(-|x_i - y_j|^2) (shared by several tests: one kernel)."""
    d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    return (-d).exp()


def sqdist_lazy(x, y):
    return ((Vi(x) - Vj(y)) ** 2).sum(-1)


# ---------------------------------------------------------------------------------------------
# Shapes and roles.

def test_variable_shapes_and_roles(data):
    x, y = data["x"], data["y"]
    assert Vi(x).shape == (M, 1, 3)
    assert Vj(y).shape == (1, N, 3)
    assert Pm(np.ones(3)).shape == (1, 1, 3)
    assert Pm(2.0).shape == (1, 1)  # pykeops hides a trailing dimension of 1
    assert Vi(x[:, 0]).shape == (M, 1)  # a 1-D array is one value per row
    assert Vj(data["b"]).shape == (1, N)
    assert (Vi(x) - Vj(y)).shape == (M, N, 3)
    assert sqdist_lazy(x, y).shape == (M, N) and sqdist_lazy(x, y)._shape == (M, N, 1)
    assert sqdist_lazy(x, y).ndim == 1  # pykeops: ndim is the vector dimension
    assert LazyTensor(x[:, None, :]).formula == Var(0, 3, CAT_I)
    assert LazyTensor(y[None, :, :]).formula == Var(0, 3, CAT_J)
    assert LazyTensor(np.ones((1, 1, 3))).formula == Var(0, 3, CAT_P)
    assert LazyTensor(np.ones(3)).formula == Var(0, 3, CAT_P)
    assert LazyTensor(x, axis=0).formula == Var(0, 3, CAT_I)
    assert LazyTensor(y, axis=1).formula == Var(0, 3, CAT_J)
    batched = Vi(np.ones((2, 5, 3))) - Vj(y)
    assert batched.shape == (2, 5, N, 3)
    assert batched.batch_shape == (2,)


def test_repr_shows_formula_and_shape(data):
    d = sqdist_lazy(data["x"], data["y"])
    text = repr(d)
    assert "Sum(Square(Subtract(Var(0,3,0),Var(1,3,1))))" in text
    assert f"shape=({M}, {N})" in text


# ---------------------------------------------------------------------------------------------
# Reductions through the API.

def test_matmul_with_vector_and_matrix(data):
    x, y, b, B = data["x"], data["y"], data["b"], data["B"]
    k_np = np.exp(-sqdist(x, y))
    K = gaussian(x, y)
    out = K @ b
    assert out.shape == (M,)
    assert_close(out, k_np @ b, "float64")
    out2 = K @ B
    assert out2.shape == (M, 2)
    assert_close(out2, k_np @ B, "float64")
    # the same reduction spelled three other ways gives the very same numbers
    for spelled in ((K * Vj(B)).sum(axis=1), (K * Vj(B)).sum(axis=-2), (K * Vj(B)).sum(dim=1)):
        np.testing.assert_array_equal(np.asarray(spelled), np.asarray(out2))


def test_sum_over_i(data):
    x, y, a = data["x"], data["y"], data["a"]
    K = gaussian(x, y)
    out = (K * Vi(a)).sum(axis=0)
    assert out.shape == (N, 2)
    assert_close(out, np.exp(-sqdist(x, y)).T @ a, "float64")
    np.testing.assert_array_equal(np.asarray((K * Vi(a)).sum(axis=-3)), np.asarray(out))


def test_sum_over_vector_axis_is_symbolic(data):
    diff = Vi(data["x"]) - Vj(data["y"])
    for s in ((diff ** 2).sum(-1), (diff ** 2).sum(axis=2), (diff ** 2).sum(dim=-1)):
        assert isinstance(s, LazyTensor)
        assert s.formula == make("Sum", make("Square", diff.formula))
        assert s.shape == (M, N)


def test_logsumexp_weighted_and_unweighted(data):
    x, y, w = data["x"], data["y"], data["w"]
    f = -sqdist_lazy(x, y)
    e = np.exp(-sqdist(x, y))
    out = f.logsumexp(axis=1, weight=Vj(w))
    assert out.shape == (M, 3)
    assert_close(out, np.log(e @ w), "float64")
    out1 = f.logsumexp(axis=1)
    assert out1.shape == (M, 1)
    assert_close(out1, np.log(e.sum(1, keepdims=True)), "float64")


def test_argkmin_min_argmin_kmin(data):
    x, y = data["x"], data["y"]
    d_np = sqdist(x, y)
    d = sqdist_lazy(x, y)
    idx = d.argKmin(K=5, axis=1)
    assert idx.shape == (M, 5) and idx.dtype == jnp.int64
    np.testing.assert_array_equal(np.asarray(idx), np.argsort(d_np, axis=1, kind="stable")[:, :5])
    v, i = d.min_argmin(axis=1)
    assert v.shape == (M, 1) and i.shape == (M, 1) and i.dtype == jnp.int64
    assert_close(v[:, 0], d_np.min(1), "float64")
    np.testing.assert_array_equal(np.asarray(i)[:, 0], d_np.argmin(1))
    kmin = d.Kmin(K=4, axis=0)
    assert kmin.shape == (N, 4)
    assert_close(kmin, np.sort(d_np, axis=0)[:4].T, "float64")


def test_sumsoftmaxweight(rng):
    q, k, v = rng.normal(size=(M, 3)), rng.normal(size=(N, 3)), rng.normal(size=(N, 2))
    out = (Vi(q) | Vj(k)).sumsoftmaxweight(Vj(v), axis=1)
    s = q @ k.T
    p = np.exp(s - s.max(1, keepdims=True))
    assert out.shape == (M, 2)
    assert_close(out, (p / p.sum(1, keepdims=True)) @ v, "float64")


# ---------------------------------------------------------------------------------------------
# Operators: indexing, powers, comparisons, scalars.

def test_indexing_and_powers_build_the_expected_nodes(data):
    u = Vi(data["x"])
    v = u.formula
    assert u[1].formula == make("Elem", v, params=(1,))
    assert u[-1].formula == make("Elem", v, params=(2,))
    assert u[..., 1].formula == make("Elem", v, params=(1,))
    assert u[0:2].formula == make("Extract", v, params=(0, 2))
    assert u[1:].formula == make("Extract", v, params=(1, 2))
    assert (u ** 2).formula == make("Square", v)
    assert (u ** 2.0).formula == make("Square", v)
    assert (u ** 3).formula == make("Pow", v, params=(3,))
    assert (u ** -1).formula == make("Pow", v, params=(-1,))
    assert (u ** 0.5).formula == make("Sqrt", v)
    assert (u ** -0.5).formula == make("Rsqrt", v)
    assert (u ** 1.7).formula == make("Powf", v, Const(1.7))
    with pytest.raises(IndexError, match="slice"):
        u[0:3:2]
    with pytest.raises(ValueError, match="out of range"):
        u[3]


def test_power_with_lazytensor_exponent_is_powf(data):
    u, e = Vi(data["x"]), Vj(data["y"])
    got = (u ** e).formula
    assert got == make("Powf", Var(0, 3, CAT_I), Var(1, 3, CAT_J)), f"u ** e built {got!r}"


def test_indexing_and_powers_evaluate(rng):
    x = rng.uniform(0.2, 1.5, (M, 3))
    y = rng.uniform(0.2, 1.5, (N, 3))
    e = rng.uniform(-1, 1, (N, 1))
    u = Vi(x) + Vj(y)
    parts = [u[1], u[0:2], u[-1], u ** 2, u ** 3, u ** 0.5, u ** -0.5, u ** 1.7, u ** -2,
             u.powf(Vj(e))]
    f = parts[0]
    for p in parts[1:]:
        f = f.concat(p)
    got = f.sum(axis=1)
    un = x[:, None, :] + y[None, :, :]
    pieces = [un[..., 1:2], un[..., 0:2], un[..., 2:3], un ** 2, un ** 3, np.sqrt(un),
              1 / np.sqrt(un), un ** 1.7, un ** -2.0, un ** e[None, :, :]]
    assert_close(got, np.concatenate(pieces, axis=-1).sum(1), "float64")


def test_comparisons_build_formulas_not_booleans(data):
    a, b = Vi(data["x"]), Vj(data["y"])
    for op, name in [((a < b), "LessThan"), ((a > b), "GreaterThan"), ((a <= b), "LessOrEqual"),
                     ((a >= b), "GreaterOrEqual"), ((a == b), "Equal"), ((a != b), "NotEqual")]:
        assert isinstance(op, LazyTensor)
        assert op.formula == make(name, Var(0, 3, CAT_I), Var(1, 3, CAT_J))


C3 = np.array([1.0, 2.0, 3.0])


def broadcast_lazy(x, y, p):
    """Python scalars, a scalar parameter and a vector parameter broadcast against vectors."""
    return (Vi(x) * 2.0 + Pm(p)) * Vj(y) - 1.5 / Vj(y) + (1.0 - Vi(x)) * Pm(C3)


def broadcast_numpy(x, y, p):
    """broadcast_lazy densely: x (..., M, 3), y (..., N, 3), p (..., 1) -> (..., M, N, 3)."""
    xn, yn, pn = x[..., :, None, :], y[..., None, :, :], np.asarray(p)[..., None, None, :]
    return (xn * 2.0 + pn) * yn - 1.5 / yn + (1.0 - xn) * C3


def test_scalar_broadcasting(data):
    x, y = data["x"], data["y"] + 2.0
    got = broadcast_lazy(x, y, 0.75).sum(axis=1)
    assert got.shape == (M, 3)
    assert_close(got, broadcast_numpy(x, y, [0.75]).sum(1), "float64")
    # numpy and jax scalars on the left defer to LazyTensor
    assert isinstance(np.float64(2.0) * Vi(x), LazyTensor)
    assert isinstance(jnp.float64(2.0) * Vi(x), LazyTensor)


def test_same_array_used_twice(data):
    x, b = data["x"], data["b"][:M]
    assert len((Vi(x) * Vi(x))._leaves) == 1
    assert len((Vi(x) - Vj(x))._leaves) == 2  # one i-variable and one j-variable
    out = gaussian(x, x) @ b
    assert_close(out, np.exp(-sqdist(x, x)) @ b, "float64")


# ---------------------------------------------------------------------------------------------
# jit, batch dims, vmap.

def test_eager_and_jit_agree(data):
    x, y, b = data["x"], data["y"], data["b"]

    def f(x, y, b):
        return gaussian(x, y) @ b

    eager = f(x, y, b)
    compiled_before = BuildStats.compiled
    jitted = jax.jit(f)(x, y, b)
    assert BuildStats.compiled == compiled_before, "jit recompiled a kernel it already had"
    assert_close(jitted, eager, "float64")
    assert_close(eager, np.exp(-sqdist(x, y)) @ b, "float64")


def test_leading_batch_dims_broadcast(rng):
    bsz = 2
    x = rng.uniform(-1, 1, (bsz, M, 3))
    y = rng.uniform(-1, 1, (N, 3))
    b = rng.uniform(-1, 1, (N,))
    expected = np.exp(-sqdist(x, y[None])) @ b  # (bsz, M)
    # (B, M, 1, D) against (1, 1, N, D)
    xi = LazyTensor(x[:, :, None, :])
    yj = LazyTensor(y[None, None, :, :])
    K = (-((xi - yj) ** 2).sum(-1)).exp()
    assert K.shape == (bsz, M, N)
    out = K @ b
    assert out.shape == (bsz, M)
    assert_close(out, expected, "float64")
    # Vi((B, M, D)) against Vj((N, D)), with a batched vector
    bb = rng.uniform(-1, 1, (bsz, N))
    out2 = gaussian(x, y) @ bb
    assert out2.shape == (bsz, M)
    assert_close(out2, np.einsum("bmn,bn->bm", np.exp(-sqdist(x, y[None])), bb), "float64")
    # with a batch dim, axis=1 is the i axis (pykeops' absolute axes): a sum over i
    a = rng.uniform(-1, 1, (bsz, M, 2))
    out3 = (gaussian(x, y) * Vi(a)).sum(axis=1)
    assert out3.shape == (bsz, N, 2)
    assert_close(out3, np.einsum("bmn,bme->bne", np.exp(-sqdist(x, y[None])), a), "float64")


def test_batched_parameter_and_vmap_over_parameter(rng):
    bsz = 2
    x = rng.uniform(-1, 1, (bsz, M, 3))
    y = rng.uniform(1, 3, (N, 3))
    p = rng.uniform(0, 1, (bsz, 1))
    full = broadcast_numpy(x, y[None], p)  # (bsz, M, N, 3)
    f = broadcast_lazy(x, y, p)
    assert f.shape == (bsz, M, N, 3)
    assert_close(f.sum(axis=-2), full.sum(2), "float64")
    out = jax.vmap(lambda pp: broadcast_lazy(x[0], y, pp).sum(axis=1))(p)
    assert out.shape == (bsz, M, 3)
    assert_close(out, broadcast_numpy(x[0], y, p).sum(-2), "float64")


def test_vmap_over_x_with_y_unbatched(rng):
    xs = rng.uniform(-1, 1, (3, M, 3))
    y = rng.uniform(-1, 1, (N, 3))
    b = rng.uniform(-1, 1, (N,))
    out = jax.vmap(lambda x: gaussian(x, y) @ b)(xs)
    assert out.shape == (3, M)
    assert_close(out, np.stack([np.exp(-sqdist(x, y)) @ b for x in xs]), "float64")
    out_jit = jax.jit(jax.vmap(lambda x: gaussian(x, y) @ b))(xs)
    assert_close(out_jit, out, "float64")


# ---------------------------------------------------------------------------------------------
# Errors.

def test_mismatched_dims_name_both_dims(data):
    with pytest.raises(ValueError, match=r"Subtract.*3 and 4"):
        Vi(data["x"]) - Vj(np.ones((N, 4)))


def test_roles_that_cannot_be_inferred():
    with pytest.raises(ValueError, match=r"cannot tell the role.*\(5, 3\)"):
        LazyTensor(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"i-variable needs shape.*\(\)"):
        Vi(jnp.asarray(3.0))
    with pytest.raises(ValueError, match="axis must be 0"):
        LazyTensor(np.ones((5, 3)), axis=3)


def test_different_m_between_i_variables(data):
    f = (Vi(data["x"]) + Vi(np.ones((M + 1, 3)))) * Vj(data["y"])
    with pytest.raises(ValueError, match=rf"M differs.*\({M}, 3\).*\({M + 1}, 3\)"):
        f.sum(axis=1)


def test_wrong_length_vector_in_matmul(data):
    with pytest.raises(ValueError, match=rf"N differs.*\({N}, 3\).*\({N + 1}, 1\)"):
        gaussian(data["x"], data["y"]) @ np.ones(N + 1)


def test_mixed_float_dtypes(data):
    f = Vi(data["x"]) * Vj(data["y"].astype(np.float32))
    with pytest.raises(TypeError, match="mixed dtypes.*float64.*float32"):
        f.sum(axis=1)


def test_integer_arrays_are_rejected(data):
    f = Vi(data["x"]) * Vj(np.ones((N, 3), np.int32))
    with pytest.raises(TypeError, match="int32"):
        f.sum(axis=1)


def test_reducing_an_axis_that_does_not_exist(data):
    d = sqdist_lazy(data["x"], data["y"])
    with pytest.raises(ValueError, match=r"cannot reduce axis 3 .*\(23, 31, 1\)"):
        d.sum(axis=3)
    with pytest.raises(ValueError, match="give the axis"):
        d.logsumexp()
    with pytest.raises(ValueError, match="cannot reduce axis -1"):
        d.logsumexp(axis=-1)
    # no j-variable: one reduced row, as in pykeops
    assert_close((Vi(data["x"]) * 2.0).sum(axis=1), 2.0 * data["x"], "float64")


def test_kmin_needs_k(data):
    d = sqdist_lazy(data["x"], data["y"])
    with pytest.raises(TypeError, match="K must be a positive integer.*None"):
        d.Kmin(K=None, axis=1)
    with pytest.raises(ValueError, match="K must be >= 1, got K=0"):
        d.argKmin(K=0, axis=1)
    with pytest.raises(TypeError, match="K must be a positive integer.*2.5"):
        d.argKmin(K=2.5, axis=1)
    with pytest.raises(TypeError):
        d.Kmin(axis=1)  # K is a required argument


def test_unknown_sum_scheme(data):
    with pytest.raises(ValueError, match="sum_scheme.*bogus"):
        sqdist_lazy(data["x"], data["y"]).sum(axis=1, sum_scheme="bogus")


def test_incompatible_batch_dims_error_names_the_variables():
    f = Vi(np.ones((2, 5, 3))) - Vj(np.ones((3, 4, 3)))
    with pytest.raises(ValueError, match=r"batch.*\(2, 5, 3\).*\(3, 4, 3\)"):
        f.sum(-1).sum(axis=1)


# ---------------------------------------------------------------------------------------------
# The kernel cache and the compiler.

@pytest.fixture
def temp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(tmp_path))
    assert jaxkeops.cache_dir() == tmp_path
    return tmp_path


def _lone_spec() -> KernelSpec:
    """A kernel no other test compiles."""
    x, y = Var(0, 2, CAT_I), Var(1, 2, CAT_J)
    f = make("Mult", make("Add", x, y), Const(0.271828))
    return KernelSpec(formulas=(f,), reduction="Sum", axis=1, dtype="float64",
                      index_dtype="int64")


@pytest.mark.cpu_only
def test_second_identical_call_compiles_nothing(temp_cache, rng):
    x, y = rng.normal(size=(7, 2)), rng.normal(size=(9, 2))

    def call():
        return ((Vi(x) + Vj(y)) * 0.314159).sum(axis=1)

    before = BuildStats.compiled
    first = call()
    assert BuildStats.compiled == before + 1
    second = call()
    assert BuildStats.compiled == before + 1
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    assert_close(first, ((x[:, None] + y[None]) * 0.314159).sum(1), "float64")
    assert len(list(temp_cache.glob("*.so"))) == 1


@pytest.mark.cpu_only
def test_disk_cache_hit_and_clear_cache(temp_cache):
    source = render_cpu(_lone_spec())
    key = kernel_key(source, find_toolchain())
    compiled, hits = BuildStats.compiled, BuildStats.cache_hits
    path = build_cpu_kernel(source, key)
    assert path.is_file() and path.parent == temp_cache
    assert (BuildStats.compiled, BuildStats.cache_hits) == (compiled + 1, hits)
    assert build_cpu_kernel(source, key) == path
    assert (BuildStats.compiled, BuildStats.cache_hits) == (compiled + 1, hits + 1)
    jaxkeops.clear_cache()
    assert list(temp_cache.iterdir()) == []
    build_cpu_kernel(source, key)
    assert BuildStats.compiled == compiled + 2


_CONCURRENT_SCRIPT = textwrap.dedent("""
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    from jaxkeops import Vi, Vj
    from jaxkeops.runtime import BuildStats
    rng = np.random.default_rng(1)
    x, y, b = rng.normal(size=(40, 3)), rng.normal(size=(50, 3)), rng.normal(size=(50,))
    K = (-((Vi(x) - Vj(y)) ** 2).sum(-1) * 0.123457).exp()
    out = np.asarray(K @ b)
    ref = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) * 0.123457) @ b
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    print("OK", BuildStats.compiled, BuildStats.cache_hits)
""")


@pytest.mark.cpu_only
@pytest.mark.slow
def test_concurrent_processes_compile_the_same_kernel(tmp_path):
    env = dict(os.environ, JAXKEOPS_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_SCRIPT], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().startswith("OK"), out
    assert len(list(tmp_path.glob("*.so"))) == 1
    assert list(tmp_path.glob("*.tmp")) == []


def test_compile_failure_reports_log_and_source(temp_cache):
    key = "deadbeef" * 8
    with pytest.raises(KernelCompileError) as info:
        build_cpu_kernel("not c++ at all", key)
    err = info.value
    source = temp_cache / f"{key}.cpp"
    assert str(source) in str(err)
    assert err.source_path == str(source)
    assert source.read_text() == "not c++ at all"
    assert "error" in err.log and err.log in str(err)
    assert not list(temp_cache.glob("*.so")), "a failed build left a binary in the cache"
    assert isinstance(err, jaxkeops.JaxKeOpsError)


@pytest.mark.cpu_only
def test_compile_failure_through_the_api_then_recovery(temp_cache, monkeypatch, rng):
    import jaxkeops._lowering as lowering

    x, y = rng.normal(size=(5, 2)), rng.normal(size=(6, 2))

    def call():
        return ((Vi(x) - Vj(y)) * 0.577215).sum(axis=1)

    monkeypatch.setattr(lowering, "render_cpu", lambda spec: "this is not C++;\n")
    with pytest.raises(KernelCompileError, match="generated source"):
        call()
    monkeypatch.undo()
    # the failure poisoned no cache: the real kernel now builds and runs
    assert_close(call(), ((x[:, None] - y[None]) * 0.577215).sum(1), "float64")


@pytest.fixture
def fresh_toolchain():
    find_toolchain.cache_clear()
    yield
    find_toolchain.cache_clear()


@pytest.mark.cpu_only
def test_missing_compiler(fresh_toolchain, temp_cache, monkeypatch, rng):
    monkeypatch.setenv("JAXKEOPS_CXX", "/nonexistent/c++")
    with pytest.raises(CompilerNotFoundError, match="/nonexistent/c\\+\\+") as info:
        find_toolchain()
    assert "JAXKEOPS_CXX" in str(info.value) or "install" in str(info.value)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(6, 2))
    with pytest.raises(CompilerNotFoundError):
        ((Vi(x) - Vj(y)) * 0.662607).sum(axis=1)
