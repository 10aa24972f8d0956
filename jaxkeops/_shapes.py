"""Shape and dtype checking for a reduction call, and the layout the kernel expects.

Users pass i-variables as (*batch, M, dim), j-variables as (*batch, N, dim) and parameters as
(*batch, dim). Leading batch dims broadcast as in numpy. The kernel takes every operand as
(*batch, rows, dim) with the same number of batch dims (missing ones are 1: broadcast with
stride 0 inside the kernel, never copied), and returns (*batch, n_out, width) blocks.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .codegen.spec import KernelSpec
from .formulas import CAT_I, CAT_J, CAT_P, Var

_CAT_LABEL = {CAT_I: "Vi", CAT_J: "Vj", CAT_P: "Pm"}


@dataclass(frozen=True)
class CallLayout:
    batch: tuple[int, ...]
    n_i: int
    n_j: int
    dtype: str


def _describe(name: str, var: Var) -> str:
    return f"argument {name!r} ({_CAT_LABEL[var.cat]}, dim {var.dim})"


_warned_about_x64 = []


def _warn_float64_without_x64(name: str, a) -> None:
    """numpy float64 arrays become float32 in JAX unless x64 is on: say so once per process
    (pykeops.numpy users pass float64 arrays by default)."""
    if _warned_about_x64:
        return
    _warned_about_x64.append(True)
    warnings.warn(
        f"argument {name!r} is a float64 {type(a).__name__} of shape {tuple(np.shape(a))}, but "
        "JAX's 64-bit mode is off, so jaxkeops computes in float32 (as every JAX function "
        "would). To compute in float64, call jax.config.update('jax_enable_x64', True) at "
        "start-up (or set JAX_ENABLE_X64=1). This warning is shown once.",
        UserWarning, stacklevel=5,
    )


_CAST_HINTS = {
    "b": " (cast boolean data with .astype first)",
    "i": " (cast integer data with .astype first)",
    "u": " (cast integer data with .astype first)",
    "c": " (complex data go through LazyTensor, which splits them into real parts)",
}


def short_repr(value) -> str:
    """The repr of `value`, shortened for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_array(value) -> bool:
    """True for jax arrays, tracers and numpy arrays: anything with a shape and a dtype."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def require_arrays(arrays: Sequence, names: Sequence[str]) -> None:
    """TypeError naming the first of `arrays` that is not an array.

    Example:
        >>> require_arrays([np.ones(2), [1.0]], ["x", "y"])
        Traceback (most recent call last):
        TypeError: argument 'y' must be an array (jax.Array or numpy.ndarray), got list: [1.0]
    """
    for a, name in zip(arrays, names):
        if not is_array(a):
            raise TypeError(f"argument {name!r} must be an array (jax.Array or numpy.ndarray), "
                            f"got {type(a).__name__}: {short_repr(a)}")


def float_dtype(arrays: Sequence, names: Sequence[str]) -> str:
    """The common float dtype of `arrays`, or a TypeError naming the ones that differ.

    float64 numpy arrays with JAX's x64 mode off are computed in float32, with a one-time
    warning that says how to enable x64."""
    dtypes = []
    x64 = jax.config.jax_enable_x64
    require_arrays(arrays, names)
    for a, name in zip(arrays, names):
        if not x64 and isinstance(a, np.ndarray) and a.dtype == np.float64:
            _warn_float64_without_x64(name, a)
        dt = jnp.result_type(a)
        if not jnp.issubdtype(dt, jnp.floating):
            hint = _CAST_HINTS.get(np.dtype(dt).kind, "")
            raise TypeError(
                f"argument {name!r} has dtype {dt} (shape {tuple(a.shape)}): jaxkeops formulas "
                f"take float32 or float64 arrays{hint}"
            )
        if dt not in (jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16):
            raise TypeError(f"argument {name!r} has dtype {dt}; jaxkeops takes float16, "
                            "bfloat16, float32 or float64")
        dtypes.append((name, dt))
    distinct = {dt for _, dt in dtypes}
    if len(distinct) > 1:
        listed = ", ".join(f"{n!r}: {dt}" for n, dt in dtypes)
        raise TypeError(f"mixed dtypes in one reduction ({listed}); cast them to one float dtype")
    if not dtypes:
        return "float64" if jax.config.jax_enable_x64 else "float32"
    return str(dtypes[0][1])


def check_call(
    variables: Sequence[Var], arrays: Sequence, names: Sequence[str]
) -> CallLayout:
    """Validates the arrays of one call against their variables; returns the call's layout."""
    if len(arrays) != len(variables):
        raise ValueError(f"expected {len(variables)} arrays ({', '.join(names)}), "
                         f"got {len(arrays)}")
    dtype = float_dtype(arrays, names)
    rows: dict[int, tuple[int, str, tuple]] = {}
    batches = []
    for var, a, name in zip(variables, arrays, names):
        shape = tuple(np.shape(a))
        min_rank = 1 if var.cat == CAT_P else 2
        if len(shape) < min_rank:
            expected = "(..., dim)" if var.cat == CAT_P else "(..., rows, dim)"
            raise ValueError(f"{_describe(name, var)} must have shape {expected}, got {shape}")
        if shape[-1] != var.dim:
            raise ValueError(
                f"{_describe(name, var)} has last dimension {shape[-1]} instead of {var.dim}: "
                f"shape {shape}"
            )
        if var.cat != CAT_P:
            n = shape[-2]
            if var.cat in rows and rows[var.cat][0] != n:
                other_n, other_name, other_shape = rows[var.cat]
                axis = "M" if var.cat == CAT_I else "N"
                raise ValueError(
                    f"{axis} differs between {_CAT_LABEL[var.cat]} arguments {other_name!r} "
                    f"(shape {other_shape}) and {name!r} (shape {shape})"
                )
            rows.setdefault(var.cat, (n, name, shape))
            batches.append((name, shape[:-2]))
        else:
            batches.append((name, shape[:-1]))
    try:
        batch = np.broadcast_shapes(*(b for _, b in batches)) if batches else ()
    except ValueError:
        listed = ", ".join(f"{n!r}: {b}" for n, b in batches)
        raise ValueError(f"batch dimensions do not broadcast ({listed})") from None
    return CallLayout(
        batch=tuple(batch),
        n_i=rows[CAT_I][0] if CAT_I in rows else -1,
        n_j=rows[CAT_J][0] if CAT_J in rows else -1,
        dtype=dtype,
    )


def kernel_operands(spec: KernelSpec, arrays: Sequence, batch: tuple[int, ...]) -> list:
    """Each array as (*batch, rows, dim) with len(batch) leading dims (size 1 to broadcast)."""
    nb = len(batch)
    out = []
    for var, a in zip(spec.args, arrays):
        a = jnp.asarray(a)
        if var.cat == CAT_P:
            a = a[..., None, :]
        missing = nb - (a.ndim - 2)
        out.append(a.reshape((1,) * missing + a.shape) if missing else a)
    return out


def index_dtype() -> str:
    return "int64" if jax.config.jax_enable_x64 else "int32"
