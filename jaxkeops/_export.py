"""`jax.export` for functions that use jaxkeops reductions.

A reduction lowers to an XLA custom call ("jaxkeops_cpu", or "jaxkeops_cuda") that carries its
kernel's id and C++ or CUDA source. `jax.export` refuses custom calls that are not on JAX's own
list of targets with a frozen ABI, unless the caller disables that check for them: the check
protects artifacts from a library whose calls might change meaning. jaxkeops's calls stay
loadable for as long as the process that runs the artifact has a jaxkeops with the same FFI
attributes and kernel ABI (the handler checks the ABI version of every kernel it loads).

The process that runs an artifact must `import jaxkeops` (which registers the handlers); it
needs no kernel cache: the handler builds each kernel from the source in the call at its first
execution (about a second per kernel, or a millisecond from that process's disk cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jax import export as jax_export

from ._lowering import CPU_TARGET
from ._lowering_cuda import CUDA_TARGET


def export_disabled_checks() -> list[jax_export.DisabledSafetyCheck]:
    """The `jax.export.DisabledSafetyCheck`s that an export of jaxkeops reductions needs.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops import Vi, Vj, export_disabled_checks
        >>> f = jax.jit(lambda x, y: (-Vi(x).sqdist(Vj(y))).exp().sum(axis=1))
        >>> x = jnp.ones((5, 3))
        >>> exported = jax.export.export(f, disabled_checks=export_disabled_checks())(x, x)
        >>> exported.out_avals[0].shape
        (5, 1)
    """
    return [jax_export.DisabledSafetyCheck.custom_call(target)
            for target in (CPU_TARGET, CUDA_TARGET)]


def export(fun_jit: Callable, *, platforms: Sequence[str] | None = None,
           disabled_checks: Sequence[jax_export.DisabledSafetyCheck] = (),
           **kwargs: Any) -> Callable[..., jax_export.Exported]:
    """`jax.export.export` with the safety checks that jaxkeops's custom calls need.

    Args:
        fun_jit: a `jax.jit`-wrapped function.
        platforms: the platforms to lower for, e.g. `("cpu", "cuda")`; by default the
            default backend's. Lowering for "cuda" needs no GPU.
        disabled_checks: further checks to disable.
        **kwargs: passed on to `jax.export.export`.

    Returns:
        A function of example arguments (or `jax.ShapeDtypeStruct`s) that returns the
        `jax.export.Exported`; its `serialize()` bytes run in another process with
        `jax.export.deserialize(blob).call(...)` after `import jaxkeops`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jaxkeops
        >>> from jaxkeops import Vi, Vj
        >>> f = jax.jit(lambda x, y: (-Vi(x).sqdist(Vj(y))).exp().sum(axis=1))
        >>> x = jnp.ones((5, 3))
        >>> exported = jaxkeops.export(f)(x, x)
        >>> restored = jax.export.deserialize(exported.serialize())
        >>> restored.call(x, x)[:, 0].tolist()
        [5.0, 5.0, 5.0, 5.0, 5.0]
    """
    checks = [*export_disabled_checks(), *disabled_checks]
    return jax_export.export(fun_jit, platforms=platforms, disabled_checks=checks, **kwargs)
