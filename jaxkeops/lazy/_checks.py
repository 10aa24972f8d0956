"""Checks of the public arguments of the lazy API, run before any formula or kernel is built.

Each check names the argument in its message, raises TypeError for a value of the wrong type and
ValueError for a value of the right type but out of range, and returns the value in the form the
caller uses (a Python int, a bool, an array). numpy integer and bool scalars count as integers and
bools (they come out of numpy code all the time); Python bools do not count as integers, since
`K=True` is always a mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._shapes import is_array, short_repr

# numpy dtype kinds of data a LazyTensor may hold: bool, integers, floats, complex numbers (the
# reduction itself then asks for floats, with a message naming the variable).
_NUMERIC_KINDS = "biufc"




def _shown(value: Any) -> str:
    """`value` for an error message: its short repr, and its type when the repr hides it."""
    text = short_repr(value)
    kind = type(value).__name__
    return text if isinstance(value, (str, int, float, type(None))) else f"{text} ({kind})"


def _keyword(name: str) -> str:
    """The keyword at the end of a name such as "solve: maxiter"."""
    return name.rsplit(": ", 1)[-1]


def check_integer(value: Any, name: str, minimum: int | None = None, meaning: str = "") -> int:
    """`value` as a Python int; TypeError unless it is an int or a numpy integer (not a bool),
    ValueError when it is below `minimum`. `meaning` says what the integer is for.

    Example:
        >>> check_integer(np.int64(3), "K", minimum=1)
        3
        >>> check_integer(2.5, "K")
        Traceback (most recent call last):
        TypeError: K must be an integer, got 2.5
    """
    about = f" ({meaning})" if meaning else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{about}, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{about}, got {_keyword(name)}={int(value)}")
    return int(value)


def check_flag(value: Any, name: str) -> bool:
    """`value` as a bool; TypeError for anything but True, False and numpy bools.

    Example:
        >>> check_flag(np.bool_(True), "call")
        True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    return bool(value)


def check_string(value: Any, name: str, example: str) -> str:
    """`value` itself; TypeError unless it is a str (`example` shows what one looks like).

    Example:
        >>> check_string(3, "formula", "'Exp(-SqDist(x, y))'")
        Traceback (most recent call last):
        TypeError: formula must be a string such as 'Exp(-SqDist(x, y))', got 3
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as {example}, got {_shown(value)}")
    return value


def check_strings(values: Any, name: str, example: str) -> list[str]:
    """`values` as a list; TypeError unless it is a list or tuple of strings.

    Example:
        >>> check_strings(("x = Vi(3)",), "aliases", "['x = Vi(3)']")
        ['x = Vi(3)']
    """
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of strings such as {example}, got "
                        f"{_shown(values)}")
    for position, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{position}] must be a string such as {example}, got "
                            f"{_shown(value)}")
    return list(values)


def check_array(value: Any, name: str) -> Any:
    """`value` as an array with a numeric dtype: arrays are returned as they are, numbers and
    (nested) lists of numbers as jax arrays; TypeError for anything else (strings, None, other
    objects), naming the argument.

    Example:
        >>> check_array([1.0, 2.0], "x").shape
        (2,)
        >>> check_array("abc", "Vi(x)")
        Traceback (most recent call last):
        TypeError: Vi(x) must be an array (jax.Array or numpy.ndarray) or a number, got 'abc'
    """
    if is_array(value):
        dtype = np.dtype(value.dtype)
    elif isinstance(value, (int, float, complex, np.number, np.bool_, list, tuple)):
        try:
            dtype = np.asarray(value).dtype
        except ValueError:  # ragged nested lists
            dtype = np.dtype(object)
    else:
        raise TypeError(f"{name} must be an array (jax.Array or numpy.ndarray) or a number, got "
                        f"{_shown(value)}")
    # bfloat16 and the other ml_dtypes types have numpy kind "V": ask JAX whether they are numbers.
    numeric = dtype.kind in _NUMERIC_KINDS or jnp.issubdtype(dtype, jnp.number)
    if not numeric:
        raise TypeError(f"{name} must hold numbers, got an array of dtype {dtype} "
                        f"({_shown(value)})")
    return value if is_array(value) else jnp.asarray(value)


def check_real(value: Any, name: str) -> Any:
    """`value` itself; TypeError unless it is a real number or an array of real numbers.

    Example:
        >>> check_real(0.5, "alpha")
        0.5
    """
    array = check_array(value, name)
    if np.dtype(array.dtype).kind not in "iuf":
        raise TypeError(f"{name} must be a real number or an array of real numbers, got dtype "
                        f"{array.dtype}")
    return value


def check_positive_number(value: Any, name: str) -> float:
    """`value` as a float; TypeError unless it is a real Python or numpy number, ValueError
    unless it is > 0.

    Example:
        >>> check_positive_number(1e-6, "eps")
        1e-06
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a positive number, got {_shown(value)}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {_keyword(name)}={value!r}")
    return float(value)


def check_variable_array(x: Any, what: str, role: str, min_rank: int, expected: str) -> Any:
    """x checked for Vi/Vj/Pm (`what`): an array or number with at least `min_rank` axes and a
    non-empty last axis (the vector dimension), or an error naming `what`, `role` and the shape.

    Example:
        >>> check_variable_array(np.ones(()), "Vi(x)", "an i-variable", 1, "(*batch, M, D)")
        Traceback (most recent call last):
        ValueError: Vi(x): an i-variable needs shape (*batch, M, D), got a scalar (shape ())
    """
    if hasattr(x, "_leaves") and hasattr(x, "formula"):  # a LazyTensor (not imported here)
        raise TypeError(f"{what}: x is already a LazyTensor (shape {x.shape}); {what} takes an "
                        "array")
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{what}: x must be an array, got the boolean {x!r}")
    a = check_array(x, f"{what}: x")
    shape = tuple(a.shape)
    if len(shape) < min_rank:
        got = "a scalar (shape ())" if not shape else f"x of shape {shape}"
        raise ValueError(f"{what}: {role} needs shape {expected}, got {got}")
    if shape and shape[-1] == 0:
        raise ValueError(f"{what}: x has shape {shape}, with an empty last axis: it is the "
                         "vector dimension D, which must be >= 1")
    return a
