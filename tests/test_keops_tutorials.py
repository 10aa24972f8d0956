"""The code of the KeOps documentation pages in ../shared/keops-docs (the LazyTensor tutorial and
the conclusion), run with only the import changed (`from jaxkeops import LazyTensor`), torch
swapped for jax.numpy and the sizes shrunk. Each snippet's result is checked against numpy in
float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_close

from jaxkeops import LazyTensor

LazyTensor_np = LazyTensor  # the tutorial's `from pykeops.numpy import LazyTensor as ...`


def randn(key, *shape):
    return jax.random.normal(jax.random.key(key), shape, jnp.float64)


def test_first_steps_argmin_with_numpy_arrays():
    M, N = 100, 200
    rng = np.random.default_rng(0)
    x = rng.random((M, 2))
    y = rng.random((N, 2))
    x_i = LazyTensor_np(x[:, None, :])  # (M, 1, 2) KeOps LazyTensor
    y_j = LazyTensor_np(y[None, :, :])  # (1, N, 2) KeOps LazyTensor
    D_ij = ((x_i - y_j) ** 2).sum(-1)  # **Symbolic** (M, N) matrix of squared distances
    assert "Sum(Square(Subtract(Var(0,2,0),Var(1,2,1))))" in str(D_ij)
    assert D_ij.shape == (M, N)
    s_i = D_ij.argmin(dim=1).ravel()  # genuine (M,) array of integer indices
    assert s_i.shape == (M,)
    expected = np.argmin(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(np.asarray(s_i), expected)


def test_exponential_kernel_product_and_its_derivatives():
    M, N, D = 300, 400, 10
    x = randn(1, M, D)  # M target points in dimension D
    y = randn(2, N, D)  # N source points in dimension D
    b = randn(3, N, 4)  # N values of the 4D source signal

    def a_of(x):
        x_i = LazyTensor(x[:, None, :])  # (M, 1, D) LazyTensor
        y_j = LazyTensor(y[None, :, :])  # (1, N, D) LazyTensor
        D_ij = ((x_i - y_j) ** 2).sum(-1).sqrt()  # Symbolic (M, N) matrix of distances
        K_ij = (-D_ij).exp()  # Symbolic (M, N) Laplacian (aka. exponential) kernel matrix
        return K_ij @ b  # The matrix-vector product "@" can be used on "raw" arrays!

    a_i = a_of(x)
    assert a_i.shape == (M, 4)

    def dense_a(x):
        d = jnp.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
        return jnp.exp(-d) @ b

    assert_close(a_i, dense_a(x), "float64")
    # [g_i] = torch.autograd.grad((a_i**2).sum(), [x], create_graph=True)
    g = jax.grad(lambda x: (a_of(x) ** 2).sum())
    g_i = g(x)
    assert g_i.shape == (M, D)
    assert_close(g_i, jax.grad(lambda x: (dense_a(x) ** 2).sum())(x), "float64")
    # [h_i] = torch.autograd.grad(g_i.exp().sum(), [x], create_graph=True)
    h_i = jax.grad(lambda x: jnp.exp(g(x)).sum())(x)
    dense_g = jax.grad(lambda x: (dense_a(x) ** 2).sum())
    assert h_i.shape == (M, D)
    assert_close(h_i, jax.grad(lambda x: jnp.exp(dense_g(x)).sum())(x), "float64", rtol=1e-7)


def test_nearest_neighbours_through_argmin():
    M, N = 200, 300
    x = randn(4, M, 3)
    y = randn(5, N, 3)
    x_i = LazyTensor(x[:, None, :])  # (M, 1, 3) LazyTensor
    y_j = LazyTensor(y[None, :, :])  # (1, N, 3) LazyTensor
    D_ij = ((x_i - y_j) ** 2).sum(-1)  # Symbolic (M, N) matrix of squared distances
    to_nn = D_ij.min(dim=1).reshape(-1)
    s_i = D_ij.argmin(dim=1).reshape(-1)  # (M,) integer array
    to_nn_alt = ((x - y[s_i, :]) ** 2).sum(-1)
    assert float(jnp.abs(to_nn - to_nn_alt).max()) < 1e-12
    dense = ((np.asarray(x)[:, None] - np.asarray(y)[None]) ** 2).sum(-1)
    assert_close(to_nn, dense.min(1), "float64")

    def loss(x):
        s_i = LazyTensor(x[:, None, :]).sqdist(LazyTensor(y[None])).argmin(dim=1).reshape(-1)
        return ((x - y[s_i, :]) ** 2).sum(-1).sum()

    g_i = jax.grad(loss)(x)
    assert g_i.shape == (M, 3)
    assert_close(g_i, 2 * (np.asarray(x) - np.asarray(y)[dense.argmin(1)]), "float64")


def batch_data(M, N, D):
    A, B = 7, 3  # Batch dimensions
    return (randn(6, A, B, M, 1, D), randn(7, 1, 1, M, 1, D), randn(8, 1, B, 1, N, D),
            jax.random.uniform(jax.random.key(9), (A, 1, 1, 1, 1), jnp.float64))


def test_batch_processing():
    M, N, D = 40, 30, 10
    x, ell, y, s = batch_data(M, N, D)
    x_i, l_i, y_j, s_p = LazyTensor(x), LazyTensor(ell), LazyTensor(y), LazyTensor(s)
    D_ij = ((l_i * x_i - y_j) ** 2).sum(-1)  # Symbolic (A, B, M, N, 1) LazyTensor
    K_ij = -1.6 * D_ij / (1 + s_p**2)  # Some arbitrary (A, B, M, N, 1) Kernel matrix
    a_i = K_ij.sum(dim=3)
    assert a_i.shape == (7, 3, M, 1)
    assert K_ij.shape == (7, 3, M, N) and K_ij._shape == (7, 3, M, N, 1)
    xn, ln, yn, sn = (np.asarray(a) for a in (x, ell, y, s))
    dense = -1.6 * ((ln * xn - yn) ** 2).sum(-1, keepdims=True) / (1 + sn**2)
    assert_close(a_i, dense.sum(3), "float64")


def test_supported_formulas():
    M, N, D = 40, 30, 10
    x, ell, y, s = batch_data(M, N, D)
    x_i, l_i, y_j, s_p = LazyTensor(x), LazyTensor(ell), LazyTensor(y), LazyTensor(s)
    F_ij = (x_i**1.5 + y_j / l_i).cos() - (x_i | y_j) + (x_i[:, :, :, :, 2] * s_p.relu() * y_j)
    assert F_ij.shape == (7, 3, M, N, 10)
    a_j = F_ij.sum(dim=2)
    assert a_j.shape == (7, 3, N, 10)
    xn, ln, yn, sn = (np.asarray(a) for a in (x, ell, y, s))
    with np.errstate(invalid="ignore"):
        dense = (np.cos(xn**1.5 + yn / ln) - (xn * yn).sum(-1, keepdims=True)
                 + xn[..., 2:3] * np.maximum(sn, 0) * yn)
    assert_close(a_j, dense.sum(2), "float64")  # NaN where x < 0, in both


def test_conclusion_snippet_with_step_by_step_formula():
    """The conclusion page builds the same formula in three statements."""
    M, N, D = 40, 30, 10
    x, ell, y, s = batch_data(M, N, D)
    x_i = LazyTensor(x)  # "i"-variable
    l_i = LazyTensor(ell)  # "i"-variable
    y_j = LazyTensor(y)  # "j"-variable
    s = LazyTensor(s)  # parameter
    F_ij = (x_i ** 1.5 + y_j / l_i).cos()  # Algebraic expression
    F_ij = F_ij - (x_i | y_j)  # Scalar product
    F_ij = F_ij + (x_i[:, :, :, :, 2] * s.relu() * y_j)  # Indexing, ReLU activation
    a_j = F_ij.sum(dim=2)  # a_j.shape = [7, 3, N, 10]
    assert a_j.shape == (7, 3, N, 10)
    xn, ln, yn = (np.asarray(a) for a in (x, ell, y))
    with np.errstate(invalid="ignore"):
        first = np.cos(xn**1.5 + yn / ln).sum(2)
    np.testing.assert_array_equal(np.isnan(np.asarray(a_j)), np.isnan(first))


def test_linear_solver_snippet():
    """a_i = K_xx.solve(b_i, alpha=alpha): (alpha Id + K_xx)^-1 b by conjugate gradient."""
    N, alpha = 150, 0.1
    x = randn(10, N, 3)
    b_i = randn(11, N, 2)
    x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    K_xx = (-((x_i - x_j) ** 2).sum(-1) / 2).exp()  # symmetric positive definite
    a_i = K_xx.solve(b_i, alpha=alpha, eps=1e-12)
    assert a_i.shape == (N, 2)
    xn = np.asarray(x)
    dense = np.exp(-((xn[:, None] - xn[None]) ** 2).sum(-1) / 2)
    assert_close(a_i, np.linalg.solve(alpha * np.eye(N) + dense, np.asarray(b_i)), "float64",
                 rtol=1e-8)
