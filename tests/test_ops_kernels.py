"""jaxkeops.ops kernel builders against dense float64 NumPy formulas, through reductions: values,
ARD lengthscales, batch dimensions, LazyTensor inputs, and derivatives (against jax.grad of a
dense jnp formula, and finite differences where x_i = y_j)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops import Vi, Vj
from jaxkeops.ops import KERNELS, gaussian, get_kernel, matern, matern12, matern32, matern52

M, N, D = 7, 9, 3


def profile(name, r, xp=np):
    """k(r) / variance for the scaled distance r = |x - y| / lengthscale."""
    s3, s5 = math.sqrt(3.0) * r, math.sqrt(5.0) * r
    return {
        "gaussian": lambda: xp.exp(-0.5 * r**2),
        "laplacian": lambda: xp.exp(-r),
        "cauchy": lambda: 1.0 / (1.0 + r**2),
        "matern12": lambda: xp.exp(-r),
        "matern32": lambda: (1.0 + s3) * xp.exp(-s3),
        "matern52": lambda: (1.0 + s5 + s5**2 / 3.0) * xp.exp(-s5),
    }[name]()


def dense_kernel(name, x, y, lengthscale, variance, xp=np):
    """(*batch, M, N) kernel matrix; lengthscale broadcasts against the last axis of x."""
    diff = (x[..., :, None, :] - y[..., None, :, :]) / xp.asarray(lengthscale)[..., None, None, :]
    r = xp.sqrt(xp.sum(diff**2, axis=-1))
    return xp.asarray(variance)[..., None, None, 0] * profile(name, r, xp)


@pytest.fixture
def data(rng):
    x = rng.normal(size=(M, D))
    y = rng.normal(size=(N, D))
    b = rng.normal(size=(N, 2))
    return x, y, b


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_matches_dense_reference(name, data):
    x, y, b = data
    for lengthscale in (0.7, np.array([0.5, 1.0, 2.0])):
        K = KERNELS[name](jnp.asarray(x), jnp.asarray(y), lengthscale=lengthscale, variance=1.7)
        assert K.shape == (M, N)
        expected = dense_kernel(name, x, y, np.broadcast_to(lengthscale, (D,)), [1.7]) @ b
        np.testing.assert_allclose(K @ jnp.asarray(b), expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", ["gaussian", "matern32"])
def test_batch_dimensions_and_per_batch_hyperparameters(name, rng):
    x, y = rng.normal(size=(2, M, D)), rng.normal(size=(2, N, D))
    b = rng.normal(size=(2, N, 1))
    ell, var = np.array([[0.5], [2.0]]), np.array([[1.0], [3.0]])
    K = KERNELS[name](jnp.asarray(x), jnp.asarray(y), lengthscale=ell, variance=var)
    assert K.shape == (2, M, N)
    out = (K * Vj(jnp.asarray(b))).sum(axis=-2)
    expected = np.stack([dense_kernel(name, x[n], y[n], np.repeat(ell[n], D), var[n]) @ b[n]
                         for n in range(2)])
    np.testing.assert_allclose(out, expected, rtol=1e-11, atol=1e-12)


def test_lazytensor_inputs_and_default_y(data):
    x, y, b = (jnp.asarray(a) for a in data)
    from_arrays = gaussian(x, y, lengthscale=0.8) @ b
    np.testing.assert_allclose(gaussian(Vi(x), Vj(y), lengthscale=0.8) @ b, from_arrays,
                               rtol=1e-13)
    np.testing.assert_allclose(gaussian(x, Vj(y), lengthscale=0.8) @ b, from_arrays, rtol=1e-13)
    # Swapping the roles gives the transposed matrix: reduce over i instead.
    swapped = (gaussian(Vj(x), Vi(y), lengthscale=0.8) * Vi(b)).sum(axis=-3)
    np.testing.assert_allclose(swapped, from_arrays, rtol=1e-13)
    xx = np.asarray(x)
    np.testing.assert_allclose(gaussian(x, lengthscale=0.8) @ x,
                               dense_kernel("gaussian", xx, xx, [0.8] * D, [1.0]) @ xx,
                               rtol=1e-12)


def test_matern_dispatches_on_nu(data):
    x, y, b = (jnp.asarray(a) for a in data)
    for nu, builder in ((0.5, matern12), (1.5, matern32), (2.5, matern52)):
        np.testing.assert_array_equal(matern(x, y, 0.9, 1.1, nu=nu) @ b,
                                      builder(x, y, 0.9, 1.1) @ b)
    with pytest.raises(ValueError, match="nu must be 0.5, 1.5 or 2.5"):
        matern(x, y, nu=2.0)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_gradients_match_dense_jnp(name, data):
    x, y, b = (jnp.asarray(a) for a in data)
    ell0, var0 = jnp.asarray([0.6, 0.9, 1.4]), jnp.asarray(1.3)

    def ours(x, y, ell, var):
        return jnp.sum((KERNELS[name](x, y, ell, var) @ b) ** 2)

    def dense(x, y, ell, var):
        return jnp.sum((dense_kernel(name, x, y, ell, var[None], xp=jnp) @ b) ** 2)

    got = jax.grad(ours, argnums=(0, 1, 2, 3))(x, y, ell0, var0)
    want = jax.grad(dense, argnums=(0, 1, 2, 3))(x, y, ell0, var0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_hyperparameter_derivatives_are_finite_where_x_equals_y(name, data):
    """K(x, x) has r = 0 on its diagonal, where d|x - y|/dx is undefined: the builders keep the
    hyperparameter derivatives finite and right there (checked by central differences)."""
    x, _, _ = data
    x = jnp.asarray(x)
    b = jnp.asarray(np.linspace(-1, 1, M))

    def f(ell):
        return jnp.sum(b * (KERNELS[name](x, None, ell, 1.0) @ b))

    slope = jax.grad(f)(0.8)
    step = 1e-6
    central = (f(0.8 + step) - f(0.8 - step)) / (2 * step)
    assert np.isfinite(slope)
    np.testing.assert_allclose(slope, central, rtol=1e-6)
    grad_x = jax.grad(lambda x: jnp.sum(KERNELS[name](x, None, 0.8, 1.0) @ b))(x)
    assert np.isfinite(np.asarray(grad_x)).all()


def test_float32_data_keeps_float32(data):
    x, y, b = (jnp.asarray(a, jnp.float32) for a in data)
    out = gaussian(x, y, lengthscale=np.float64(0.5)) @ b
    assert out.dtype == jnp.float32


def test_get_kernel():
    assert get_kernel("matern52") is matern52
    custom = lambda x, y, lengthscale, variance: gaussian(x, y, lengthscale, variance)  # noqa: E731
    assert get_kernel(custom) is custom
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        get_kernel("rbf")


def test_bad_inputs_name_the_argument(data):
    x, y, _ = (jnp.asarray(a) for a in data)
    with pytest.raises(ValueError, match=r"x and y must have the same last dimension.*\(7, 3\)"):
        gaussian(x, y[:, :2])
    with pytest.raises(ValueError, match=r"lengthscale must be .*got shape \(2,\)"):
        gaussian(x, y, lengthscale=jnp.ones(2))
    with pytest.raises(ValueError, match=r"variance must be .*got shape \(3,\)"):
        gaussian(x, y, variance=jnp.ones(3))
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, rows, dim\)"):
        gaussian(jnp.ones(5), y)
    with pytest.raises(ValueError, match="y=None"):
        gaussian(Vi(x))
