"""Complex LazyTensors (pykeops's ComplexLazyTensor) against dense jnp complex computations in
complex128: construction and shapes, arithmetic with complex, real and scalar operands on either
side, the complex parts, the sums over i and j, `@`, their derivatives (JAX's conventions for
complex inputs, checked against jax.grad of the same dense computation) under jit and vmap, and
clear errors for what complex numbers do not support.

The op-level checks (C printing, references, derivative rules) of the complex ops run with every
other op in test_ops.py, test_autodiff.py and the CUDA tests; here are the reference spot
checks, the dimension errors and the simplifications the LazyTensor layer relies on.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, assert_tree_close

from jaxkeops import Genred, LazyTensor, Pm, Vi, Vj
from jaxkeops.formulas import CAT_I, CAT_J, OPS, Const, Var, make
from jaxkeops.lazy.complex import ComplexLazyTensor, ComplexReduction

M, N, D = 5, 7, 3
F64 = "float64"


def crandn(rng, *shape):
    return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))


def close(actual, expected, **kw):
    """Complex arrays compared through their real and imaginary parts."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{actual.shape} != {expected.shape}"
    assert np.iscomplexobj(actual) == np.iscomplexobj(expected)
    assert_close(actual.real, expected.real, F64, **kw)
    assert_close(np.imag(actual), np.imag(expected), F64, **kw)


def tree_close(actual, expected):
    assert_tree_close(jax.tree.map(lambda a: jnp.stack([jnp.real(a), jnp.imag(a)]), actual),
                      jax.tree.map(lambda a: jnp.stack([jnp.real(a), jnp.imag(a)]), expected),
                      F64)


# The same expression on LazyTensors and on dense broadcast arrays.
def exp(t):
    return t.exp() if isinstance(t, LazyTensor) else jnp.exp(t)


def angle(t):
    return t.angle() if isinstance(t, LazyTensor) else jnp.angle(t)


def wrap(*arrays, keops):
    return [LazyTensor(a) for a in arrays] if keops else list(arrays)


# ---------------------------------------------------------------------------------------------
# pykeops's test_complex.py: a non-uniform discrete Fourier transform.

def nudft(x, p, f, keops=True):
    """x complex (..., 1, N, 1), p real (..., 1, N, 1), f real (..., M, 1, 1): the sum over i
    as in pykeops's example (axis=-3 names the i axis with or without batch dims)."""
    x, p, f = wrap(x, p, f, keops=keops)
    X = x * exp(-2 * math.pi * 1j * p * f)
    return X.sum(axis=-3)


def nudft_data(rng, batch=()):
    x = crandn(rng, *batch, 1, N, 1)
    p = jnp.asarray(rng.uniform(size=batch + (1, N, 1)))
    f = jnp.asarray(rng.uniform(size=batch + (M, 1, 1)))
    return x, p, f


def test_nudft_matches_dense(rng):
    x, p, f = nudft_data(rng)
    out = nudft(x, p, f)
    assert out.dtype == jnp.complex128 and out.shape == (N, 1)
    close(out, nudft(x, p, f, keops=False))


def test_nudft_in_complex64(rng):
    x, p, f = nudft_data(rng)
    x, p, f = x.astype(jnp.complex64), p.astype(jnp.float32), f.astype(jnp.float32)
    out = nudft(x, p, f)
    assert out.dtype == jnp.complex64
    expected = np.asarray(nudft(*(np.asarray(a).astype(np.result_type(a.dtype, np.float64))
                                  for a in (x, p, f)), keops=False))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


def _energy(fun):
    """sum |out|^2, the loss of pykeops's (commented-out) backward test."""
    return lambda x, p, f: jnp.sum(jnp.abs(fun(x, p, f)) ** 2)


@pytest.mark.parametrize("jit", [False, True])
def test_nudft_gradients_wrt_complex_and_real_inputs(jit, rng):
    x, p, f = nudft_data(rng)
    grad = jax.grad(_energy(nudft), argnums=(0, 1, 2))
    dense = jax.grad(_energy(lambda *a: nudft(*a, keops=False)), argnums=(0, 1, 2))
    got = (jax.jit(grad) if jit else grad)(x, p, f)
    assert got[0].dtype == jnp.complex128 and got[1].dtype == jnp.float64
    tree_close(got, dense(x, p, f))


def test_nudft_forward_mode_with_complex_tangents(rng):
    x, p, f = nudft_data(rng)
    tangents = (crandn(rng, *x.shape), jnp.asarray(rng.normal(size=p.shape)),
                jnp.asarray(rng.normal(size=f.shape)))
    got = jax.jvp(nudft, (x, p, f), tangents)
    expected = jax.jvp(lambda *a: nudft(*a, keops=False), (x, p, f), tangents)
    tree_close(got, expected)


def test_nudft_under_vmap_and_jit(rng):
    x, p, f = nudft_data(rng, batch=(3,))
    mapped = jax.jit(jax.vmap(nudft))
    close(mapped(x, p, f), jax.vmap(lambda *a: nudft(*a, keops=False))(x, p, f))
    grads = jax.jit(jax.vmap(jax.grad(_energy(nudft), argnums=(0, 1))))(x, p, f)
    expected = jax.vmap(jax.grad(_energy(lambda *a: nudft(*a, keops=False)),
                                 argnums=(0, 1)))(x, p, f)
    tree_close(grads, expected)


def test_nudft_with_batch_dims(rng):
    x, p, f = nudft_data(rng, batch=(2,))
    f = f[:1]  # the frequencies broadcast over the batch
    out = nudft(x, p, f)
    assert out.shape == (2, N, 1)
    close(out, nudft(x, p, f, keops=False))
    grad = jax.grad(_energy(nudft), argnums=(0, 1, 2))(x, p, f)
    tree_close(grad, jax.grad(_energy(lambda *a: nudft(*a, keops=False)),
                              argnums=(0, 1, 2))(x, p, f))


# ---------------------------------------------------------------------------------------------
# Construction, shapes, dtypes.

def test_complex_arrays_and_scalars_make_complex_lazytensors(rng):
    z_i, z_j, c = crandn(rng, M, 1, D), crandn(rng, 1, N, D), crandn(rng, D)
    for lt, shape, cat in [(LazyTensor(z_i), (M, 1, D), CAT_I), (LazyTensor(z_j), (1, N, D), CAT_J),
                           (LazyTensor(c), (1, 1, D), 2), (Vi(z_i[:, 0]), (M, 1, D), CAT_I),
                           (Vj(z_j[0]), (1, N, D), CAT_J), (Pm(c), (1, 1, D), 2),
                           (LazyTensor(z_i[:, 0], axis=0), (M, 1, D), CAT_I)]:
        assert isinstance(lt, ComplexLazyTensor) and lt.is_complex
        assert lt.shape == shape and lt.ndim == D and lt._shape == shape
        assert lt.formula == Var(0, 2 * D, cat)
        assert lt.dtype == jnp.complex128
        (array, _), = lt._leaves  # stored as interleaved (re, im) pairs
        np.testing.assert_array_equal(np.asarray(array)[..., 0::2], np.asarray(
            {CAT_I: z_i[:, 0], CAT_J: z_j[0], 2: c}[cat]).real)
    assert Vi(crandn(rng, M)).shape == (M, 1)  # one complex component: D is hidden
    for scalar in (1j, 2 + 3j, np.complex128(1 - 1j)):
        lt = LazyTensor(scalar)
        assert isinstance(lt, ComplexLazyTensor) and lt.ndim == 1 and lt.shape == (1, 1)
    assert not LazyTensor(jnp.ones((M, 1, D))).is_complex
    assert LazyTensor(z_i).real.shape == (M, 1, D) and not LazyTensor(z_i).real.is_complex
    assert LazyTensor(crandn(rng, M, 1, 1)).abs().shape == (M, 1)


def test_real_arrays_given_to_the_complex_class_are_promoted(rng):
    x = jnp.asarray(rng.normal(size=(M, 1, D)))
    lt = ComplexLazyTensor(x)
    assert lt.formula == make("Real2Complex", Var(0, D, CAT_I))
    assert ComplexLazyTensor(LazyTensor(x)).formula == lt.formula
    close(lt.sum(axis=1), x[:, 0] + 0j)


def test_reductions_of_the_parts_of_a_complex_array(rng):
    z = crandn(rng, M, 1, D)
    y = jnp.asarray(rng.normal(size=(1, N, D)))
    zi, yj = LazyTensor(z), LazyTensor(y)
    assert_close(zi.real.sum(axis=1), z[:, 0].real, F64)
    assert_close((zi.imag * yj).sum(axis=1), (z.imag * y).sum(1), F64)
    assert_close((abs(zi) - yj).sum(axis=0), (jnp.abs(z) - y).sum(0), F64)
    assert_close((zi.angle() + yj).sum(axis=1), (jnp.angle(z) + y).sum(1), F64)
    assert_close(zi.sqnorm2().sum(axis=1), (jnp.abs(z) ** 2).sum(-1), F64)


# ---------------------------------------------------------------------------------------------
# Arithmetic: every operator with complex, real and scalar operands on either side. Several
# expressions share one kernel (concatenated along the vector axis) to keep compilations few.

def operands(rng):
    return dict(
        z=crandn(rng, M, 1, D), w=crandn(rng, 1, N, D), c=crandn(rng, 1, 1, 1),
        x=jnp.asarray(rng.uniform(0.5, 1.5, size=(M, 1, D))),
        s=jnp.asarray(rng.uniform(0.5, 1.5, size=(1, N, 1))),
    )


EXPRESSIONS = [
    # complex with complex (vectors, and a complex scalar broadcast on either side)
    [lambda z, w, c, x, s: z + w, lambda z, w, c, x, s: z - w, lambda z, w, c, x, s: z * w,
     lambda z, w, c, x, s: z / w, lambda z, w, c, x, s: c * w - z / c,
     lambda z, w, c, x, s: c / z + w],
    # complex with real vectors and real scalars, both orders
    [lambda z, w, c, x, s: z + x, lambda z, w, c, x, s: x - w, lambda z, w, c, x, s: x * w,
     lambda z, w, c, x, s: w / x, lambda z, w, c, x, s: x / z, lambda z, w, c, x, s: s * z,
     lambda z, w, c, x, s: z * s - s / w, lambda z, w, c, x, s: s - z + z / s],
    # Python scalars, unary minus, powers, exp, conj
    [lambda z, w, c, x, s: 2 * z - w * 0.5 + 1, lambda z, w, c, x, s: 1j * z + (2 - 1j) / w,
     lambda z, w, c, x, s: (z - 1.5j) * 3j, lambda z, w, c, x, s: -z + 2.0 / w,
     lambda z, w, c, x, s: z ** 2 - w ** 3, lambda z, w, c, x, s: (z + w) ** -2,
     lambda z, w, c, x, s: exp(z - w), lambda z, w, c, x, s: (z * w).conj(),
     lambda z, w, c, x, s: z ** 0 + w],
]


def _concat(results):
    """Concatenation along the vector axis, of LazyTensors or of dense arrays (whose other
    axes broadcast)."""
    if isinstance(results[0], LazyTensor):
        return LazyTensor.concatenate(results)
    shape = np.broadcast_shapes(*(r.shape[:-1] for r in results))
    return jnp.concatenate([jnp.broadcast_to(r, shape + r.shape[-1:]) for r in results], -1)


@pytest.mark.parametrize("group", range(len(EXPRESSIONS)))
def test_arithmetic_matches_dense(group, rng):
    data = operands(rng)
    lazy = _concat([e(**{k: LazyTensor(v) for k, v in data.items()}) for e in EXPRESSIONS[group]])
    dense = _concat([jnp.broadcast_to(e(**data), (M, N, D)) for e in EXPRESSIONS[group]])
    assert isinstance(lazy, ComplexLazyTensor) and lazy.shape == dense.shape
    close(lazy.sum(axis=1), dense.sum(1))
    close(lazy.sum(axis=0), dense.sum(0))


def test_complex_parts_and_conversions_match_dense(rng):
    data = operands(rng)
    z, w, x = (LazyTensor(data[k]) for k in "zwx")
    lazy_real = _concat([z.real + w.imag, abs(z * w), (z / w).angle(), x.exp1j().real,
                         (x.real2complex() * w).imag, (x.imag2complex() - w).real])
    zd, wd, xd = data["z"], data["w"], data["x"]
    dense_real = _concat([jnp.broadcast_to(v, (M, N, D)) for v in [
        zd.real + wd.imag, jnp.abs(zd * wd), jnp.angle(zd / wd), jnp.cos(xd), (xd * wd).imag,
        (1j * xd - wd).real]])
    assert not lazy_real.is_complex
    assert_close(lazy_real.sum(axis=1), dense_real.sum(1), F64)
    lazy = _concat([x.exp1j() * w, x.real2complex() + w, x.imag2complex() * w])
    dense = _concat([jnp.exp(1j * xd) * wd, xd + wd, 1j * xd * wd])
    close(lazy.sum(axis=1), dense.sum(1))


def test_vector_axis_sum_indexing_and_concat(rng):
    data = operands(rng)
    z, w, x = (LazyTensor(data[k]) for k in "zwx")
    total = (z * w).sum()  # the vector axis by default, as pykeops: a complex scalar
    assert isinstance(total, ComplexLazyTensor) and total.shape == (M, N)
    assert total.formula.name == "ComplexSum"
    zd, wd, xd = data["z"], data["w"], data["x"]
    lazy = _concat([total, (z * w).sum(-1), z[1] * w[-1], w[1:3], x.concat(z)[:2]])
    dense = _concat([(zd * wd).sum(-1, keepdims=True)] * 2 + [
        zd[..., 1:2] * wd[..., 2:3], wd[..., 1:3], jnp.broadcast_to(xd[..., :2] + 0j, (M, 1, 2))])
    close(lazy.sum(axis=1), jnp.broadcast_to(dense, (M, N, dense.shape[-1])).sum(1))
    with pytest.raises(IndexError, match="out of range"):
        z.extract(2, 2)


# ---------------------------------------------------------------------------------------------
# K @ v and the soft-max weighted sum.

@pytest.mark.parametrize("kernel_kind,vector_kind", [("complex", "complex"),
                                                     ("complex", "real"),
                                                     ("real", "complex")])
def test_matmul(kernel_kind, vector_kind, rng):
    x, y = rng.normal(size=(M, 1, 1)), rng.normal(size=(1, N, 1))
    phase = LazyTensor(x) * LazyTensor(y)
    K = phase.exp1j() if kernel_kind == "complex" else (-phase ** 2).exp()
    K_dense = jnp.exp(1j * x * y)[..., 0] if kernel_kind == "complex" else \
        jnp.exp(-(x * y) ** 2)[..., 0]
    v = crandn(rng, N, 2) if vector_kind == "complex" else jnp.asarray(rng.normal(size=(N, 2)))
    close(K @ v, (K_dense @ v).astype(jnp.complex128))
    close(K @ v[:, 0], (K_dense @ v[:, 0]).astype(jnp.complex128))


def test_sumsoftmaxweight_of_complex_weights_through_the_method(rng):
    x, y, w = rng.normal(size=(M, 1, 2)), rng.normal(size=(1, N, 2)), crandn(rng, 1, N, D)
    F = -((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1)
    close(F.sumsoftmaxweight(LazyTensor(w), axis=1),
          (jax.nn.softmax(-((x - y) ** 2).sum(-1), axis=1)[..., None] * w).sum(1))


def test_sumsoftmaxweight_of_complex_weights_and_its_gradient(rng):
    x, y, w = rng.normal(size=(M, 1, 2)), rng.normal(size=(1, N, 2)), crandn(rng, 1, N, D)

    def lazy(x, w):
        F = -((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1)
        return ComplexLazyTensor.reduce_with_complex_weights(
            F, "SumSoftMaxWeight", 1, {}, (LazyTensor(w),))

    def dense(x, w):
        return (jax.nn.softmax(-((x - y) ** 2).sum(-1), axis=1)[..., None] * w).sum(1)

    close(lazy(x, w), dense(x, w))
    loss = [lambda *a, f=f: jnp.sum(jnp.abs(f(*a) - 0.3j) ** 2) for f in (lazy, dense)]
    tree_close(jax.grad(loss[0], argnums=(0, 1))(x, w), jax.grad(loss[1], argnums=(0, 1))(x, w))
    with pytest.raises(TypeError, match="LogSumExp"):
        ComplexLazyTensor.reduce_with_complex_weights(
            LazyTensor(x), "LogSumExp", 1, {}, (LazyTensor(w),))


# ---------------------------------------------------------------------------------------------
# Derivatives through the reductions, with respect to complex and real inputs.

@pytest.mark.parametrize("axis", [0, 1])
def test_gradients_and_jvps_wrt_complex_and_real_inputs(axis, rng):
    data = operands(rng)

    def fun(z, w, c, x, s, keops=True):
        """Every op with a derivative rule, and a complex scalar c broadcast against vectors
        in products, quotients and sums (whose cotangents add up over the components)."""
        z, w, c, x, s = wrap(z, w, c, x, s, keops=keops)
        out = (z * w.conj() + x / (w + 2.0)) * exp(1j * s * x) - abs(z) * s
        out = out + c * z / (c + w) - w / c + angle(z + 3.0) * (z - c).imag
        return out.sum(axis=axis)

    args = tuple(data[k] for k in "zwcxs")

    def energy(f):
        return lambda *a: jnp.sum(jnp.real(f(*a) * jnp.conj(f(*a) - 1j)))

    argnums = (0, 1, 2, 3, 4)
    tree_close(jax.grad(energy(fun), argnums)(*args),
               jax.grad(energy(lambda *a: fun(*a, keops=False)), argnums)(*args))
    tangents = tuple(crandn(rng, *a.shape) if jnp.iscomplexobj(a) else
                     jnp.asarray(rng.normal(size=a.shape)) for a in args)
    tree_close(jax.jvp(fun, args, tangents),
               jax.jvp(lambda *a: fun(*a, keops=False), args, tangents))


def test_gradient_of_matmul_wrt_kernel_and_vector(rng):
    x, y, v = rng.normal(size=(M, 1, 1)), rng.normal(size=(1, N, 1)), crandn(rng, N, 2)

    def fun(x, v, keops=True):
        K = (LazyTensor(x) * LazyTensor(y)).exp1j() if keops else jnp.exp(1j * x * y)[..., 0]
        return K @ v

    def energy(f):
        return lambda x, v: jnp.sum(jnp.abs(f(x, v)) ** 2)

    tree_close(jax.grad(energy(fun), (0, 1))(x, v),
               jax.grad(energy(lambda *a: fun(*a, keops=False)), (0, 1))(x, v))


def test_call_false_and_real_symbolic_variables(rng):
    z, x = crandn(rng, M, 1, D), jnp.asarray(rng.normal(size=(N, D)))
    formula = LazyTensor(z) * LazyTensor((0, D, CAT_J))
    pending = formula.sum(axis=1)  # the symbolic variable makes it wait for its array
    assert isinstance(pending, ComplexReduction)
    close(pending(x), (z * x[None]).sum(1))
    deferred = (LazyTensor(z) * LazyTensor(x[None])).sum(axis=0, call=False)
    assert isinstance(deferred, ComplexReduction)
    close(deferred(), (z * x[None]).sum(0))


# ---------------------------------------------------------------------------------------------
# Errors.

def test_unsupported_reductions_and_ops_raise_type_errors(rng):
    z = LazyTensor(crandn(rng, M, 1, 1)) * LazyTensor(crandn(rng, 1, N, 1))
    for reduce in [lambda: z.min(axis=1), lambda: z.max(axis=0), lambda: z.argmin(axis=1),
                   lambda: z.argKmin(K=2, axis=1), lambda: z.Kmin(2, axis=1),
                   lambda: z.min_argmin(axis=1), lambda: z.logsumexp(axis=1),
                   lambda: z.sumsoftmaxweight(z, axis=1), lambda: z.max_argmax(axis=1)]:
        with pytest.raises(TypeError, match="not defined for complex LazyTensors"):
            reduce()
    for op in [lambda: z.min(), lambda: z < z, lambda: z.sin(), lambda: z.log(), lambda: z | z,
               lambda: z ** 0.5, lambda: z.relu(), lambda: z.exp1j(), lambda: z.real2complex(),
               lambda: z.imag2complex(), lambda: z.solve(z)]:
        with pytest.raises(TypeError):
            op()
    with pytest.raises(TypeError, match="symbolic"):
        ComplexLazyTensor((0, 2, 0))


def test_dimension_errors_name_the_op_and_dims():
    with pytest.raises(ValueError, match="ComplexMult.*even"):
        make("ComplexMult", Var(0, 3, CAT_I), Var(1, 4, CAT_J))
    with pytest.raises(ValueError, match="ComplexAdd.*same dimension.*4, 6"):
        make("ComplexAdd", Var(0, 4, CAT_I), Var(1, 6, CAT_J))
    with pytest.raises(ValueError, match="ComplexRealScal"):
        make("ComplexRealScal", Var(0, 2, CAT_I), Var(1, 4, CAT_J))
    with pytest.raises(ValueError, match="ComplexSumT"):
        make("ComplexSumT", Var(0, 4, CAT_I), params=(6,))
    z, w = Vi(jnp.ones((M, 2), jnp.complex128)), Vj(jnp.ones((N, 3), jnp.complex128))
    with pytest.raises(ValueError, match="ComplexMult"):
        z * w


# ---------------------------------------------------------------------------------------------
# Op-level spot checks: references with hand-computed values, and simplifications.

SPOT_CHECKS = [
    ("ComplexMult", [[1.0, 2.0], [3.0, -1.0, 0.0, 1.0]], (), [5.0, 5.0, -2.0, 1.0]),
    ("ComplexDivide", [[5.0, 5.0], [1.0, 2.0]], (), [3.0, -1.0]),
    ("ComplexAdd", [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0]], (), [4.0, 6.0, 6.0, 8.0]),
    ("ComplexRealScal", [[2.0], [1.0, -1.0]], (), [2.0, -2.0]),
    ("Conj", [[1.0, 2.0]], (), [1.0, -2.0]),
    ("ComplexExp", [[0.0, math.pi / 2]], (), [0.0, 1.0]),
    ("ComplexExp1j", [[0.0, math.pi]], (), [1.0, 0.0, -1.0, 0.0]),
    ("ComplexAbs", [[3.0, 4.0]], (), [5.0]),
    ("ComplexSquareAbs", [[3.0, 4.0]], (), [25.0]),
    ("ComplexAngle", [[0.0, 1.0, -1.0, 0.0]], (), [math.pi / 2, math.pi]),
    ("ComplexReal", [[1.0, 2.0, 3.0, 4.0]], (), [1.0, 3.0]),
    ("ComplexImag", [[1.0, 2.0, 3.0, 4.0]], (), [2.0, 4.0]),
    ("Real2Complex", [[1.0, 2.0]], (), [1.0, 0.0, 2.0, 0.0]),
    ("Imag2Complex", [[1.0, 2.0]], (), [0.0, 1.0, 0.0, 2.0]),
    ("ComplexSum", [[1.0, 2.0, 3.0, 4.0]], (), [4.0, 6.0]),
    ("ComplexSumT", [[1.0, 2.0]], (4,), [1.0, 2.0, 1.0, 2.0]),
]


@pytest.mark.parametrize("name,args,params,expected", SPOT_CHECKS)
def test_reference_values(name, args, params, expected):
    out = OPS[name].reference(np, *(np.asarray(a) for a in args), *params)
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, atol=1e-15)


def test_simplifications():
    z, w, s = Var(0, 4, CAT_I), Var(1, 4, CAT_J), Var(2, 1, CAT_J)
    assert make("ComplexAdd", z, w) == make("Add", z, w)  # equal dims: plain Add
    assert make("ComplexRealScal", z, s) == make("ComplexRealScal", s, z)
    assert make("ComplexRealScal", Const(1.0), z) == z
    assert make("ComplexMult", make("Real2Complex", s), z) == make("ComplexRealScal", s, z)
    assert make("Conj", make("Conj", z)) == z
    assert make("ComplexReal", make("Real2Complex", s)) == s
    assert make("ComplexImag", make("Real2Complex", s)) == Const(0.0)
    assert make("ComplexSum", Var(3, 2, CAT_I)) == Var(3, 2, CAT_I)


def test_keops_formula_strings_with_complex_ops(rng):
    """Genred takes KeOps's complex op names on interleaved (re, im) arrays."""
    formula = "ComplexSumT(ComplexSum(ComplexMult(Conj(x), ComplexExp(y))), 4)"
    g = Genred(formula, ["x = Vi(4)", "y = Vj(4)"], reduction_op="Sum", axis=1)
    x, y = rng.normal(size=(M, 4)), rng.normal(size=(N, 4))
    cx, cy = x[:, 0::2] + 1j * x[:, 1::2], y[:, 0::2] + 1j * y[:, 1::2]
    expected = (np.conj(cx)[:, None] * np.exp(cy)[None]).sum(-1).sum(1)
    out = np.asarray(g(x, y))
    assert out.shape == (M, 4)
    close(out[:, 0::2] + 1j * out[:, 1::2], np.stack([expected] * 2, axis=-1))


def test_operators_build_the_keops_ops(rng):
    z, w = LazyTensor(crandn(rng, M, 1, 2)), LazyTensor(crandn(rng, 1, N, 2))
    c, s = LazyTensor(1j), LazyTensor(jnp.ones((1, N, 1)))
    names = {
        "ComplexMult": z * w, "ComplexDivide": z / w, "ComplexAdd": z + c,
        "ComplexSubtract": c - w, "ComplexRealScal": s * z, "ComplexExp": z.exp(),
        "Conj": z.conj(), "ComplexReal": z.real, "ComplexImag": z.imag, "ComplexAbs": abs(z),
        "ComplexAngle": z.angle(), "ComplexSum": z.sum(-1), "Real2Complex": s.real2complex(),
        "Imag2Complex": s.imag2complex(), "ComplexExp1j": s.exp1j(), "Add": z + w,
        "Subtract": z - w, "Minus": -z,
    }
    for name, lt in names.items():
        assert lt.formula.name == name, (name, lt.formula)
    assert (s * z).formula.args[0].dim == 1  # the real scalar first, as KeOps
