"""Kernel (MMD) losses of GeomLoss: "energy", "gaussian" and "laplacian".

    Loss(a, b) = 1/2 <a - b, k * (a - b)>
               = 1/2 sum_ij a_i a_j k(x_i, x_j) + 1/2 sum_ij b_i b_j k(y_i, y_j)
                 - sum_ij a_i b_j k(x_i, y_j)

with k(x, y) = exp(-|x - y|^2 / 2 blur^2) ("gaussian"), exp(-|x - y| / blur) ("laplacian") or
-|x - y| ("energy", which does not depend on blur). Distances are floored at 1e-4 (in units of
blur for the laplacian) as in GeomLoss's tensorized backend, so gradients stay finite on the
diagonal. As GeomLoss, the self-interaction terms are differentiated through one side only, with
the gradient doubled (exact for a symmetric kernel, and half the kernels).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxkeops import LazyTensor, Vi, Vj

from .costs import dense_distances, dense_squared_distances, lazy_distance

Array = jax.Array
KernelFunction = Callable[[LazyTensor, LazyTensor], LazyTensor]
KERNEL_LOSSES = ("energy", "gaussian", "laplacian")
stop_gradient = jax.lax.stop_gradient


def _lazy_kernel(name: str, blur: Any, kernel: KernelFunction | None):
    """(x, y) arrays -> the kernel as a LazyTensor."""
    if kernel is not None:
        def custom(x, y):
            K = kernel(Vi(x), Vj(y))
            if not isinstance(K, LazyTensor) or K.ndim != 1:
                raise TypeError("a kernel function must return a scalar LazyTensor built from "
                                f"its arguments (x_i, y_j), got {K!r}")
            return K
        return custom
    if name == "gaussian":
        return lambda x, y: (-((Vi(x / blur) - Vj(y / blur)) ** 2).sum(-1) / 2).exp()
    if name == "laplacian":
        return lambda x, y: (-lazy_distance(Vi(x / blur), Vj(y / blur))).exp()
    return lambda x, y: -lazy_distance(Vi(x), Vj(y))


def _dense_kernel(name: str, blur: Any):
    """(x, y) arrays -> the (*batch, N, M) kernel matrix, as GeomLoss's tensorized backend."""
    if name == "gaussian":
        return lambda x, y: jnp.exp(-dense_squared_distances(x / blur, y / blur) / 2)
    if name == "laplacian":
        return lambda x, y: jnp.exp(-dense_distances(x / blur, y / blur))
    return lambda x, y: -dense_distances(x, y)


def _transpose(K: Any) -> Any:
    return K.T if isinstance(K, LazyTensor) else jnp.swapaxes(K, -1, -2)


def _apply(K: Any, v: Array) -> Array:
    """sum_j K_ij v_j for v (*batch, M): (*batch, N)."""
    return (K @ v[..., None])[..., 0]


def double_grad(v: Array) -> Array:
    """v, whose gradient is doubled (GeomLoss's DoubleGrad).

    Example:
        >>> import jax
        >>> from jaxkeops.ot import double_grad
        >>> float(jax.grad(lambda v: 3 * double_grad(v))(1.0))
        6.0
    """
    return v + (v - stop_gradient(v))


def kernel_loss(a: Array, x: Array, b: Array, y: Array, name: str = "gaussian",
                blur: Any = 0.05, kernel: KernelFunction | None = None,
                potentials: bool = False, dense: bool = False) -> Any:
    """GeomLoss's `kernel_loss` on canonical measures (a (*batch, N), x (*batch, N, D), ...):
    the (*batch,) loss values, or with `potentials=True` the pair (k * (a - b) on x,
    k * (b - a) on y) of shapes (*batch, N) and (*batch, M): the gradients of the loss with
    respect to the weights. `kernel` replaces the named kernel by a function of LazyTensors
    (x_i, y_j); `dense=True` builds (*batch, N, M) matrices instead of running kernels.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ot import kernel_loss
        >>> x, y = jnp.zeros((3, 2)), jnp.ones((4, 2))
        >>> a, b = jnp.full(3, 1 / 3), jnp.full(4, 1 / 4)
        >>> round(float(kernel_loss(a, x, b, y, name="energy")), 3)   # |0 - (1, 1)|
        1.414
    """
    if name not in KERNEL_LOSSES:
        raise ValueError(f"kernel loss name must be one of {KERNEL_LOSSES}, got {name!r}")
    make = _dense_kernel(name, blur) if dense and kernel is None else \
        _lazy_kernel(name, blur, kernel)
    K_xx = make(double_grad(x), stop_gradient(x))
    K_yy = make(double_grad(y), stop_gradient(y))
    K_xy = make(x, y)
    a_x = _apply(K_xx, stop_gradient(a))
    b_y = _apply(K_yy, stop_gradient(b))
    b_x = _apply(K_xy, b)
    if potentials:
        a_y = _apply(_transpose(K_xy), a)
        return a_x - b_x, b_y - a_y
    return (0.5 * (double_grad(a) * a_x).sum(-1) + 0.5 * (double_grad(b) * b_y).sum(-1)
            - (a * b_x).sum(-1))


# Compiled once per kernel and options, so that eager calls stay cheap.
jitted_kernel_loss = functools.partial(
    jax.jit, static_argnames=("name", "kernel", "potentials", "dense"))(kernel_loss)
