"""Docstrings for the other names of LazyTensor's methods (pykeops's long names and spellings).

An alias gets a docstring of its own: one line naming the method it stands for and why the
name exists, then a short example, so that `help(x.kmin)` and the API pages say what it is
without copying the original's text.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

# The setting of the reduction examples: the squared distances from two points at 0 to the
# points 3, 1, 2, so that every reduction over j reads off [9, 1, 4].
REDUCTION_SETUP = """\
>>> import jax.numpy as jnp
>>> from jaxkeops import Vi, Vj
>>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
>>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
"""


def alias_docstring(original: str, why: str, example: str, setup: str = REDUCTION_SETUP) -> str:
    """The docstring of an alias of `original`, with `example` run after `setup`.

    Example:
        >>> alias_docstring("Kmin", "lower-case spelling", ">>> 1 + 1\\n2\\n", setup="")
        'Alias of `Kmin` (lower-case spelling).\\n\\nExample:\\n    >>> 1 + 1\\n    2\\n'
    """
    return (f"Alias of `{original}` ({why}).\n\nExample:\n"
            + textwrap.indent(setup + example, "    "))


def documented_alias(original: str, why: str, example: str,
                     setup: str = REDUCTION_SETUP) -> Callable[[F], F]:
    """A decorator giving a method that only forwards to `original` its alias docstring.

    Example:
        >>> @documented_alias("len", "a longer name", ">>> length([1, 2])\\n2\\n", setup="")
        ... def length(x):
        ...     return len(x)
        >>> length.__doc__.splitlines()[0]
        'Alias of `len` (a longer name).'
    """
    def document(method: F) -> F:
        method.__doc__ = alias_docstring(original, why, example, setup)
        return method

    return document


def alias(method: F, name: str, why: str, example: str, setup: str = REDUCTION_SETUP) -> F:
    """A new method `name` that calls `method` and has its own alias docstring (an assignment
    `name = method` would share, and so repeat, the original's docstring).

    Example:
        >>> class Counter:
        ...     def count(self, items):
        ...         return len(items)
        ...     size = alias(count, "size", "a shorter name",
        ...                  ">>> Counter().size([1, 2, 3])\\n3\\n", setup="")
        >>> Counter().size("ab"), Counter.size.__name__
        (2, 'size')
    """
    def aliased(self, *args, **kwargs):
        return method(self, *args, **kwargs)

    # Not functools.wraps: its __wrapped__ would make inspect.unwrap (and so the API pages)
    # show the original's docstring. The signature is the original's all the same.
    aliased.__signature__ = inspect.signature(method)
    aliased.__module__ = method.__module__
    aliased.__name__ = name
    aliased.__qualname__ = method.__qualname__.rsplit(".", 1)[0] + "." + name
    aliased.__doc__ = alias_docstring(method.__name__, why, example, setup)
    return aliased
