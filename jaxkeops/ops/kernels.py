"""Kernel builders: functions of two point sets that return symbolic kernel matrices.

Every builder takes `x` and `y` (arrays of shape (*batch, M, D) and (*batch, N, D), or
LazyTensors such as `Vi(x)` and `Vj(y)`), a `lengthscale` and a `variance`, and returns the
LazyTensor K_ij = variance * k(|x_i - y_j| / lengthscale) of shape (*batch, M, N). Nothing is
computed until K is reduced: `K @ b`, `K.sum(axis=1)`, `K.solve(b, alpha=...)`, ...

The hyperparameters enter the formula as parameters (`Pm`), so they may be traced values:
`jax.grad` with respect to them, or to x and y, works through any reduction of K.

    lengthscale: a scalar, or one value per coordinate (shape (D,), "automatic relevance
        determination"), or (*batch, 1) / (*batch, D) with batch dimensions.
    variance: a scalar, or (*batch, 1) with batch dimensions.

With r = |x - y| / lengthscale (euclidean):

    gaussian    variance * exp(-r^2 / 2)
    laplacian   variance * exp(-r)                                 (= matern12)
    cauchy      variance / (1 + r^2)
    matern12    variance * exp(-r)
    matern32    variance * (1 + sqrt(3) r) exp(-sqrt(3) r)
    matern52    variance * (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)

r is computed as sqrt(r^2 + 1e-30) for the kernels that need it, so first derivatives are
finite (zero) where x_i = y_j, e.g. on the diagonal of K(x, x); the value moves by at most
1e-15 relative to the variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import LazyTensor, Pm, Vi, Vj
from ._checks import dtype_of, hyperparameter, is_lazy, points

__all__ = ["KERNELS", "cauchy", "gaussian", "get_kernel", "laplacian", "matern", "matern12",
           "matern32", "matern52"]

KernelBuilder = Callable[..., LazyTensor]

# Added under the square root so that the derivative of r at r = 0 is finite.
_SQRT_GUARD = 1e-30


def _operands(x: Any, y: Any) -> tuple[LazyTensor, LazyTensor]:
    """(x_i, y_j) as LazyTensors; arrays become Vi(x) and Vj(y), and y=None means y = x."""
    if y is None:
        if is_lazy(x):
            raise ValueError("y=None (meaning y = x) needs x as an array, not a LazyTensor: "
                             "pass y explicitly, e.g. kernel(Vi(x), Vj(x))")
        y = x
    if not is_lazy(x) and not is_lazy(y):
        x_array, y_array = points(x, "x"), points(y, "y")
        if x_array.shape[-1] != y_array.shape[-1]:
            raise ValueError(f"x and y must have the same last dimension (the dimension of the "
                             f"points), got shapes {tuple(x_array.shape)} and "
                             f"{tuple(y_array.shape)}")
        return Vi(x_array), Vj(y_array)
    x_lazy = x if is_lazy(x) else Vi(points(x, "x"))
    y_lazy = y if is_lazy(y) else Vj(points(y, "y"))
    if x_lazy.ndim != y_lazy.ndim:
        raise ValueError(f"x and y must have the same dimension, got LazyTensors of shapes "
                         f"{x_lazy.shape} and {y_lazy.shape}")
    return x_lazy, y_lazy


def _scaled_sqdist(x: Any, y: Any, lengthscale: Any, variance: Any
                   ) -> tuple[LazyTensor, LazyTensor]:
    """(|x_i - y_j|^2 / lengthscale^2, Pm(variance)): the pieces every builder shares."""
    x_i, y_j = _operands(x, y)
    dtype = dtype_of(x_i, y_j)
    dim = x_i.ndim
    ell = hyperparameter(lengthscale, "lengthscale", dtype, dim, allow_vector=True)
    var = hyperparameter(variance, "variance", dtype, dim, allow_vector=False)
    # One weight (isotropic) or one per coordinate (diagonal): sum_k w_k (x_k - y_k)^2.
    r2 = x_i.weightedsqdist(y_j, Pm(1.0 / (ell * ell)))
    return r2, Pm(var)


def _distance(r2: LazyTensor) -> LazyTensor:
    return (r2 + _SQRT_GUARD).sqrt()


def gaussian(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0) -> LazyTensor:
    """The Gaussian (squared exponential, RBF) kernel variance * exp(-|x - y|^2 / (2 l^2)).

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,) (see the module docstring).
        variance: the value on the diagonal, a scalar.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import gaussian
        >>> x = jnp.array([[0.0], [1.0]])
        >>> K = gaussian(x, lengthscale=1.0, variance=2.0)
        >>> [round(float(v), 4) for v in K @ jnp.ones(2)]          # 2 + 2 exp(-1/2) on each row
        [3.2131, 3.2131]
    """
    r2, var = _scaled_sqdist(x, y, lengthscale, variance)
    return var * (-0.5 * r2).exp()


def laplacian(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0) -> LazyTensor:
    """The Laplacian (exponential) kernel variance * exp(-|x - y| / l), with the euclidean
    norm (KeOps's and the GP literature's meaning; scikit-learn's `laplacian_kernel` uses the
    L1 norm instead). It equals `matern12`.

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,).
        variance: the value on the diagonal, a scalar.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import laplacian
        >>> x, y = jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]])
        >>> [round(float(v), 4) for v in laplacian(x, y, lengthscale=5.0) @ jnp.ones(1)]   # exp(-1)
        [0.3679]
    """
    r2, var = _scaled_sqdist(x, y, lengthscale, variance)
    return var * (-_distance(r2)).exp()


def cauchy(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0) -> LazyTensor:
    """The Cauchy kernel variance / (1 + |x - y|^2 / l^2) (a rational quadratic kernel with
    exponent 1; KeOps's "cauchy").

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,).
        variance: the value on the diagonal, a scalar.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import cauchy
        >>> x, y = jnp.array([[0.0]]), jnp.array([[2.0]])
        >>> [float(v) for v in cauchy(x, y, lengthscale=2.0) @ jnp.ones(1)]   # 1 / (1 + 1)
        [0.5]
    """
    r2, var = _scaled_sqdist(x, y, lengthscale, variance)
    return var / (1.0 + r2)


def matern12(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0) -> LazyTensor:
    """The Matern kernel of smoothness 1/2: variance * exp(-r), r = |x - y| / l.

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,).
        variance: the value on the diagonal, a scalar.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import matern12
        >>> x, y = jnp.array([[0.0]]), jnp.array([[1.0]])
        >>> [round(float(v), 4) for v in matern12(x, y) @ jnp.ones(1)]   # exp(-1)
        [0.3679]
    """
    return laplacian(x, y, lengthscale, variance)   # the same kernel, under its Matern name


def matern32(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0) -> LazyTensor:
    """The Matern kernel of smoothness 3/2: variance * (1 + sqrt(3) r) exp(-sqrt(3) r), with
    r = |x - y| / l.

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,).
        variance: the value on the diagonal, a scalar.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import matern32
        >>> x, y = jnp.array([[0.0]]), jnp.array([[1.0]])
        >>> [round(float(v), 4) for v in matern32(x, y) @ jnp.ones(1)] # (1+r) exp(-r), r=3**.5
        [0.4834]
    """
    r2, var = _scaled_sqdist(x, y, lengthscale, variance)
    s = math.sqrt(3.0) * _distance(r2)
    return var * (1.0 + s) * (-s).exp()


def matern52(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0) -> LazyTensor:
    """The Matern kernel of smoothness 5/2: variance * (1 + sqrt(5) r + 5 r^2 / 3)
    exp(-sqrt(5) r), with r = |x - y| / l.

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,).
        variance: the value on the diagonal, a scalar.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import matern52
        >>> x, y = jnp.array([[0.0]]), jnp.array([[1.0]])
        >>> [round(float(v), 4) for v in matern52(x, y) @ jnp.ones(1)]
        [0.524]
    """
    r2, var = _scaled_sqdist(x, y, lengthscale, variance)
    s = math.sqrt(5.0) * _distance(r2)
    return var * (1.0 + s + (5.0 / 3.0) * r2) * (-s).exp()


_MATERN = {0.5: matern12, 1.5: matern32, 2.5: matern52}


def matern(x: Any, y: Any = None, lengthscale: Any = 1.0, variance: Any = 1.0,
           nu: float = 1.5) -> LazyTensor:
    """The Matern kernel of smoothness `nu`, one of 0.5, 1.5 and 2.5 (the half-integer cases
    with closed forms): `matern12`, `matern32` or `matern52`.

    Args:
        x: points (*batch, M, D), or a LazyTensor such as Vi(x).
        y: points (*batch, N, D), or a LazyTensor such as Vj(y); None means y = x.
        lengthscale: l, a scalar or one per coordinate (D,).
        variance: the value on the diagonal, a scalar.
        nu: the smoothness, 0.5, 1.5 or 2.5.

    Returns:
        The symbolic kernel matrix, a LazyTensor of shape (*batch, M, N).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.ops import matern
        >>> x, y = jnp.array([[0.0]]), jnp.array([[1.0]])
        >>> [round(float(v), 4) for v in matern(x, y, nu=2.5) @ jnp.ones(1)]
        [0.524]
    """
    builder = _MATERN.get(float(nu)) if isinstance(nu, (int, float)) else None
    if builder is None:
        raise ValueError(f"nu must be 0.5, 1.5 or 2.5 (the Matern kernels with a closed form), "
                         f"got {nu!r}")
    return builder(x, y, lengthscale, variance)


KERNELS: dict[str, KernelBuilder] = {
    "gaussian": gaussian, "laplacian": laplacian, "cauchy": cauchy,
    "matern12": matern12, "matern32": matern32, "matern52": matern52,
}


def get_kernel(kernel: str | KernelBuilder) -> KernelBuilder:
    """The builder for a kernel name of `KERNELS` ("gaussian", "matern32", ...), or `kernel`
    itself when it is already a callable (x, y, lengthscale, variance) -> LazyTensor.

    Example:
        >>> from jaxkeops.ops import get_kernel, matern32
        >>> get_kernel("matern32") is matern32
        True
    """
    if callable(kernel):
        return kernel
    if isinstance(kernel, str) and kernel in KERNELS:
        return KERNELS[kernel]
    raise ValueError(f"unknown kernel {kernel!r}: use one of {sorted(KERNELS)} or a callable "
                     "(x, y, lengthscale, variance) -> LazyTensor")
