"""Kernel linear solves (alpha I + K) a = b by conjugate gradient, with pykeops's interfaces:
`solve` (the method LazyTensor.solve) and `KernelSolve` (from a Genred-style formula string).

Both build a matrix-free operator v -> K v from a jaxkeops Sum reduction and hand it to the
engine of conjugate_gradient.py (see there for derivatives, batches, the stopping rule and how
non-convergence is reported). Eager calls reuse one compiled program per operator structure.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from ..formulas import CAT_I, CAT_J, CAT_P, Var
from ..formulas.parser import parse_aliases
from ._checks import check_array, check_flag, check_integer, check_real, check_string
from .conjugate_gradient import CGInfo, ConvergenceError, ConvergenceWarning, run_solve
from .genred import Genred

if TYPE_CHECKING:  # lazytensor.py imports this module (for LazyTensor.solve): no runtime import
    from .lazytensor import LazyTensor

__all__ = ["CGInfo", "ConvergenceError", "ConvergenceWarning", "KernelSolve", "solve"]

# pykeops's defaults for the options a solve forwards to its reductions. Only values that differ
# from these are forwarded, so a reduction that does not know an option yet still runs when the
# caller leaves it at its default (the reductions' own defaults are pykeops's).
_REDUCTION_INIT_DEFAULTS: dict[str, Any] = {
    "dtype": None, "dtype_acc": "auto", "use_double_acc": False, "sum_scheme": "auto",
    "enable_chunks": True, "use_fast_math": True, "rec_multVar_highdim": None,
    "optional_flags": None, "cuda_type": None,
}
_REDUCTION_CALL_DEFAULTS: dict[str, Any] = {"backend": "auto", "device_id": -1, "ranges": None}
_SOLVER_OPTIONS = ("eps", "maxiter", "precond", "on_nonconvergence", "return_info")
_CATEGORY_WORDS = {CAT_I: "i", CAT_J: "j", CAT_P: "parameter"}
_VARIABLE_PHRASES = {CAT_I: "an i-variable", CAT_J: "a j-variable", CAT_P: "a parameter"}
_VAR_TEXT = re.compile(r"^\s*Var\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)\s*$")


def _split_options(options: Mapping[str, Any], what: str) -> tuple[dict, dict]:
    """(solver options, reduction options that differ from pykeops's defaults)."""
    reduction_defaults = {**_REDUCTION_INIT_DEFAULTS, **_REDUCTION_CALL_DEFAULTS}
    unknown = sorted(set(options) - set(_SOLVER_OPTIONS) - set(reduction_defaults))
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {unknown}; a solve takes "
                        f"{sorted(_SOLVER_OPTIONS)} and the reduction options "
                        f"{sorted(reduction_defaults)}")
    solver = {k: v for k, v in options.items() if k in _SOLVER_OPTIONS}
    reduction = {k: v for k, v in options.items()
                 if k in reduction_defaults and not _is_default(v, reduction_defaults[k])}
    return solver, reduction


def _is_default(value: Any, default: Any) -> bool:
    return value is default or (isinstance(value, (str, bool, int)) and
                                type(value) is type(default) and value == default)


# ------------------------------------------------------------------------------------------------
# LazyTensor.solve.
def _plain_variable(t: LazyTensor, what: str) -> tuple[jax.Array, int]:
    """(array, category) of a LazyTensor that is one Vi/Vj variable and nothing else."""
    if len(t._leaves) != 1 or not isinstance(t.formula, Var):
        raise ValueError(f"{what} must be a plain Vi(...) or Vj(...) variable (or an array), "
                         f"not the formula {t.formula!r}")
    array, cat = t._leaves[0]
    if cat == CAT_P:
        raise ValueError(f"{what} must be an i- or j-variable, not a parameter "
                         f"(shape {tuple(array.shape)})")
    return array, cat


def _is_lazy(x: Any) -> bool:
    """A LazyTensor (duck-typed: this module may not import lazytensor.py, which imports it)."""
    return hasattr(x, "_leaves") and hasattr(x, "formula")


def _has_values(leaf: Any) -> bool:
    """False for the placeholder of a symbolic variable LazyTensor((index, dim, cat))."""
    return hasattr(leaf, "dtype")


def _same_leaf(leaf: Any, wanted: Any) -> bool:
    """The same array object, or equal placeholders of one symbolic variable."""
    return leaf is wanted or (not _has_values(leaf) and type(leaf) is type(wanted)
                              and leaf == wanted)


def _check_square(K: LazyTensor, rows: int, what: str) -> None:
    counts = {cat: sorted({int(a.shape[-2]) for a, c in K._leaves
                           if c == cat and _has_values(a) and len(a.shape) >= 2})
              for cat in (CAT_I, CAT_J)}
    wrong = {cat: n for cat, n in counts.items() if any(r != rows for r in n)}
    if wrong:
        found = ", ".join(f"{_CATEGORY_WORDS[c]}-variables with {n} rows"
                          for c, n in counts.items() if n)
        raise ValueError(f"{what}: a solve needs a square K (M = N = the rows of b), but K has "
                         f"{found} and b has {rows} rows")


def solve(K: LazyTensor, b: Any, var: LazyTensor | None = None, alpha: Any = 1e-10,
          call: bool = True, **options: Any) -> Any:
    """Solves (alpha I + K) a = b by conjugate gradient, as pykeops's `LazyTensor.solve`.

    K must be symmetric positive (semi)definite; this is not checked. b is a jax array, indexed
    by i like `Vi(b)`: shape (*batch, M, E) or (M,); or a LazyTensor `Vi(b)` / `Vj(b)` (with
    Vj(b) the reduction runs over i instead of j). K is scalar-valued (one kernel for the E
    columns of b) or E-valued (one kernel per column). The result has b's shape, broadcast
    against the batch dimensions of K and alpha.

    With `var`, K is instead an unreduced expression linear in the variable `var`, and the
    solve is alpha a + sum_j K(a)_ij = b_i; e.g. K = k_ij * Vj(a0), var = Vj(a0) is the plain
    case. `var` is a variable of K: the very Vj(a0) array object K was built from (its values
    are ignored), or a symbolic `LazyTensor((index, dim, cat))` used in K. Linearity is not
    checked.

    Args:
        K: the symmetric positive (semi)definite LazyTensor (M, M, 1 or E).
        b: the right-hand side.
        var: see above; None for the plain K a.
        alpha: ridge alpha >= 0, a scalar or an array broadcasting against the batch shape;
            differentiable.
        call: False returns a function of no argument that runs the solve (pykeops's
            deferred call).
        **options: `eps` (default 1e-6: stop when the RMS of each system's residual is below
            eps, pykeops's rule), `maxiter` (default 10 * M * E iterations), `precond` (a
            function applying M^-1, for M a symmetric positive definite approximation of
            alpha I + K, to an array shaped like the broadcast b, batch dims included; under
            vmap it sees one batch element; it is never differentiated),
            `on_nonconvergence` ("warn": a `ConvergenceWarning` issued from the host by
            `jax.debug.callback`, so also under jit; "raise": a `ConvergenceError`, which under
            jit reaches the caller wrapped in a JAX runtime error; "ignore"), `return_info`
            (True returns (a, CGInfo)); and pykeops's reduction options (backend, device_id,
            ranges, dtype_acc, use_double_acc, sum_scheme, enable_chunks, use_fast_math),
            forwarded to the Sum reductions when they differ from pykeops's defaults.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Vi, Vj
        >>> from jaxkeops.lazy.solve import solve
        >>> x = jnp.linspace(0, 1, 20).reshape(10, 2)
        >>> b = jnp.ones((10, 3))
        >>> K = (-((Vi(x) - Vj(x)) ** 2).sum(-1) / 0.1).exp()
        >>> a = solve(K, Vi(b), alpha=0.5)
        >>> a.shape
        (10, 3)
        >>> bool(jnp.allclose(0.5 * a + K @ a, b, atol=1e-4))
        True
    """
    if not _is_lazy(K):
        raise TypeError(f"solve: K must be a LazyTensor, got {type(K).__name__}")
    if not check_flag(call, "solve: call"):
        return functools.partial(solve, K, b, var=var, alpha=alpha, call=True, **options)
    solver_options, reduction_options = _split_options(options, "solve")
    if var is not None and not _is_lazy(var):
        raise TypeError(f"solve: var must be a LazyTensor variable of K (such as the Vj(a) K "
                        f"was built with), got {type(var).__name__}")
    check_real(alpha, "solve: alpha")
    lazy_class = type(K)
    b_lazy = b if _is_lazy(b) else lazy_class(check_array(b, "solve: b"), axis=CAT_I)
    b_array, b_cat = _plain_variable(b_lazy, "solve: b")
    if not _has_values(b_array):
        raise ValueError("solve: b is a symbolic variable; pass its array (pykeops's deferred "
                         "solve with a symbolic right-hand side is not supported)")
    out_shape = tuple(b_array.shape) if _is_lazy(b) else tuple(jnp.shape(b))
    rows, cols = int(b_array.shape[-2]), int(b_array.shape[-1])
    # b indexed by i gives a reduction over j and an unknown indexed by j, and conversely.
    unknown_cat = CAT_J if b_cat == CAT_I else CAT_I
    reduced_axis = -2 if unknown_cat == CAT_J else -3
    what = "solve"
    _check_square(K, rows, what)

    if var is None:
        if K.formula.dim not in (1, cols):
            raise ValueError(f"{what}: K has dimension {K.formula.dim}; with b of {cols} "
                             f"columns it must be 1 (one kernel) or {cols} (one per column)")
        slot = None
    else:
        placeholder, var_cat = _plain_variable(var, "solve: var")
        if var_cat != unknown_cat:
            raise ValueError(f"{what}: var must be {_VARIABLE_PHRASES[unknown_cat]}, since b is "
                             f"{_VARIABLE_PHRASES[b_cat]}")
        if var.formula.dim != cols:
            raise ValueError(f"{what}: var has dimension {var.formula.dim} but b has "
                             f"{cols} columns")
        slot = next((n for n, (a, c) in enumerate(K._leaves)
                     if _same_leaf(a, placeholder) and c == var_cat), None)
        if slot is None:
            raise ValueError(f"{what}: var {var.formula!r} is not a variable of K: build K with "
                             "that very variable (the same Vj(...) array, or the same "
                             "symbolic LazyTensor((index, dim, cat)))")
    if any(n != slot and not _has_values(a) for n, (a, _) in enumerate(K._leaves)):
        raise ValueError(f"{what}: K has symbolic variables (other than var) without arrays; "
                         "build K from arrays (a deferred solve over symbolic inputs is not "
                         "supported)")

    # K's arrays are passed to the operator as arguments (so that an eager solve can reuse a
    # compiled program); the template keeps K's formula and the category of every leaf.
    filled = tuple(n for n in range(len(K._leaves)) if n != slot)
    template = copy.copy(K)
    template._leaves = tuple((None, c) for _, c in K._leaves)

    def operator(values: tuple) -> Callable[[jax.Array], jax.Array]:
        leaves = list(template._leaves)
        for n, value in zip(filled, values):
            leaves[n] = (value, leaves[n][1])

        def apply_K(v):
            rebuilt = copy.copy(template)
            if slot is None:
                rebuilt._leaves = tuple(leaves)
                unknown = lazy_class(v, axis=unknown_cat)
                return (rebuilt * unknown).sum(axis=reduced_axis, **reduction_options)
            rebuilt._leaves = tuple(leaves[:slot]) + ((v, unknown_cat),) + tuple(leaves[slot + 1:])
            return rebuilt.sum(axis=reduced_axis, **reduction_options)

        return apply_K

    attributes = vars(K) if hasattr(K, "__dict__") else None
    key = None if attributes is None else (
        "LazyTensor.solve", type(K), tuple(c for _, c in K._leaves), slot, b_cat,
        tuple(sorted((k, v) for k, v in attributes.items() if k != "_leaves")),
        tuple(sorted(reduction_options.items())))
    values = tuple(K._leaves[n][0] for n in filled)
    result = run_solve(key, operator, values, b_array, alpha, what, **solver_options)
    a = result[0] if isinstance(result, tuple) else result
    if len(out_shape) == 1:
        a = a.reshape(a.shape[:-2] + (rows,))
    return (a, result[1]) if isinstance(result, tuple) else a


# ------------------------------------------------------------------------------------------------
# KernelSolve.
class KernelSolve:
    """A conjugate gradient solver of (alpha I + K) a = b for a Genred-style formula (pykeops's).

    The formula must be linear in the variable `varinvalias` (an alias name, or its
    "Var(index,dim,cat)" text) and define a symmetric positive (semi)definite operator; this is
    not checked. Calling the solver with one array per alias, as for `Genred`, passes b at the
    position of `varinvalias` and returns a, shaped like b (broadcast against batch dimensions).

    With axis=1 the reduction runs over j: `varinvalias` must be a j-variable and the result is
    indexed by i (so M = N); axis=0 is the converse. The accuracy options are forwarded to the
    underlying `Genred` Sum (only those that differ from pykeops's defaults); `opt_arg` is
    accepted for pykeops compatibility and unused, as in pykeops.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.lazy.solve import KernelSolve
        >>> Kinv = KernelSolve("Exp(-SqDist(x,y)) * a", ["x = Vi(3)", "y = Vj(3)", "a = Vj(2)"],
        ...                    "a", axis=1)
        >>> x = jnp.linspace(0, 3, 24).reshape(8, 3)
        >>> a = Kinv(x, x, jnp.ones((8, 2)), alpha=0.1)
        >>> a.shape
        (8, 2)
    """

    def __init__(
        self,
        formula: str,
        aliases: Sequence[str],
        varinvalias: str,
        axis: int = 0,
        dtype: str | None = None,
        opt_arg: int | None = None,
        dtype_acc: str = "auto",
        use_double_acc: bool = False,
        sum_scheme: str = "auto",
        enable_chunks: bool = True,
        rec_multVar_highdim: Any = None,
        use_fast_math: bool = True,
    ) -> None:
        axis = check_integer(axis, "KernelSolve: axis", meaning="0 reduces over i, 1 over j")
        if axis not in (0, 1):
            raise ValueError(f"KernelSolve: axis must be 0 (reduce over i) or 1 (reduce over "
                             f"j), got {axis!r}")
        check_string(varinvalias, "KernelSolve: varinvalias", "'a' (an alias name)")
        aliases = list(aliases)
        declared = parse_aliases(aliases)
        match = _VAR_TEXT.match(varinvalias) if isinstance(varinvalias, str) else None
        if match:
            unknown = Var(*(int(g) for g in match.groups()))
        elif varinvalias in declared:
            unknown = declared[varinvalias]
        else:
            raise ValueError(f"KernelSolve: varinvalias {varinvalias!r} is neither one of the "
                             f"aliases {sorted(declared)} nor a 'Var(index,dim,cat)' text")
        if unknown.cat != axis:
            raise ValueError(
                f"KernelSolve: with axis={axis} the formula is reduced over "
                f"{_CATEGORY_WORDS[axis]}, so the unknown {varinvalias!r} must be "
                f"{_VARIABLE_PHRASES[axis]}, not {_VARIABLE_PHRASES[unknown.cat]}"
            )
        init_options = dict(dtype=dtype, dtype_acc=dtype_acc, use_double_acc=use_double_acc,
                            sum_scheme=sum_scheme, enable_chunks=enable_chunks,
                            rec_multVar_highdim=rec_multVar_highdim, use_fast_math=use_fast_math)
        self.init_options = {k: v for k, v in init_options.items()
                             if not _is_default(v, _REDUCTION_INIT_DEFAULTS[k])}
        self.formula = formula
        self.aliases = aliases
        self.axis = axis
        self.varinvalias = varinvalias
        self.varinvpos = unknown.index
        self.opt_arg = opt_arg
        self.genred = Genred(formula, aliases, reduction_op="Sum", axis=axis,
                             **self.init_options)

    def __call__(self, *args: Any, backend: str = "auto", device_id: int = -1,
                 alpha: Any = 1e-10, eps: float = 1e-6, ranges: Any = None,
                 maxiter: int | None = None, precond: Callable | None = None,
                 on_nonconvergence: str = "warn", return_info: bool = False) -> Any:
        """Solves (alpha I + K) a = b, with b the argument at the position of `varinvalias`.

        `backend`, `device_id` and `ranges` go to the Genred call (when not at their
        defaults); `alpha`, `eps`, `maxiter`, `precond`, `on_nonconvergence` and
        `return_info` mean what they mean for `solve`. Differentiable with respect to every
        argument and alpha.
        """
        what = f"KernelSolve({self.formula!r})"
        if self.varinvpos >= len(args):
            raise ValueError(f"{what}: the unknown {self.varinvalias!r} is argument number "
                             f"{self.varinvpos}, but only {len(args)} arrays were passed")
        call_options = {k: v for k, v in
                        dict(backend=backend, device_id=device_id, ranges=ranges).items()
                        if not _is_default(v, _REDUCTION_CALL_DEFAULTS[k])}
        b = jnp.asarray(check_array(args[self.varinvpos],
                                    f"{what}: b (argument {self.varinvalias!r})"))
        if b.ndim < 2:
            raise ValueError(f"{what}: b (argument {self.varinvalias!r}) must have shape "
                             f"(*batch, rows, dim), got {tuple(b.shape)}")
        ranges = call_options.pop("ranges", None)

        def operator(arrays: tuple) -> Callable[[jax.Array], jax.Array]:
            before, after, ranges = arrays
            extra = {} if ranges is None else {"ranges": ranges}
            return lambda v: self.genred(*before, v, *after, **call_options, **extra)

        arrays = (args[: self.varinvpos], args[self.varinvpos + 1:], ranges)
        # Block-sparse ranges stay the caller's arrays (not arguments of a cached program).
        key = None if ranges is not None else (
            "KernelSolve", self, tuple(sorted(call_options.items())))
        return run_solve(key, operator, arrays, b, alpha, what, eps=eps, maxiter=maxiter,
                         precond=precond, on_nonconvergence=on_nonconvergence,
                         return_info=return_info)

    def __repr__(self) -> str:
        return (f"KernelSolve({self.formula!r}, unknown={self.varinvalias!r}, "
                f"axis={self.axis})")
