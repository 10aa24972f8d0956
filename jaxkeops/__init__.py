"""jaxkeops: KeOps-style symbolic kernel reductions for JAX, without the M x N matrix.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxkeops import Vi, Vj
    >>> x, y = jnp.ones((1000, 3)), jnp.zeros((2000, 3))
    >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    >>> D_ij.argKmin(K=5, axis=1).shape
    (1000, 5)
"""

from ._export import export, export_disabled_checks
from ._version import __version__
from .errors import CompilerNotFoundError, JaxKeOpsError, KernelCacheWarning, KernelCompileError
from .lazy.genred import Genred
from .lazy.lazytensor import LazyTensor, Pm, Vi, Vj
from .lazy.solve import ConvergenceError, ConvergenceWarning, KernelSolve
from .runtime import cache_dir, clear_cache

__all__ = [
    "CompilerNotFoundError", "ConvergenceError", "ConvergenceWarning", "Genred",
    "JaxKeOpsError", "KernelCacheWarning", "KernelCompileError", "KernelSolve", "LazyTensor",
    "Pm", "Vi", "Vj", "__version__", "cache_dir", "clear_cache", "export",
    "export_disabled_checks",
]
