"""The conjugate gradient engine behind LazyTensor.solve and KernelSolve.

`regularized_solve` solves (alpha I + K) a = b for a matrix-free K (a function v -> K v) through
`jax.lax.custom_linear_solve(..., symmetric=True)`, so that the conjugate gradient loop is never
differentiated: the derivative of a = (alpha I + K)^-1 b is another solve with the same operator
(implicit differentiation), plus the derivative of K v at v = a. This gives gradients with
respect to b, alpha and every array K reads, in forward and reverse mode, under jit and vmap,
with memory that does not grow with the number of iterations.

Leading batch dimensions (*batch, rows, cols) are independent systems: every inner product, step
size and stopping test is computed per batch element, and an element that has converged stops
moving while the others go on.

Stopping rule (pykeops's): a system stops when its residual r = b - (alpha I + K) a satisfies
sum(r ** 2) < rows * cols * eps ** 2, i.e. when the root mean square of the residual falls below
`eps` (an absolute tolerance, in the units of b). The solves of derivatives (reverse and forward
mode) stop at the same *relative* accuracy |r| / |b| as the solve they differentiate, so that
gradients do not depend on the scale of the loss.

Non-convergence (maxiter reached, or p.(alpha I + K)p <= 0 met) is reported by a
`ConvergenceWarning`, or a `ConvergenceError` with on_nonconvergence="raise". Outside any
transformation the check runs in Python after the solve; inside jit, grad or vmap it runs on the
host through `jax.debug.callback`, only when a system failed (there a raised error reaches the
caller wrapped in a JAX runtime error). `return_info=True` also returns a `CGInfo`.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import JaxKeOpsError
from ._checks import (
    check_array,
    check_flag,
    check_integer,
    check_positive_number,
    check_real,
    check_string,
)

ON_NONCONVERGENCE = ("warn", "raise", "ignore")


class ConvergenceWarning(UserWarning):
    """Conjugate gradient stopped at `maxiter` (or broke down) before reaching `eps`.

    Example:
        >>> import warnings
        >>> import jax.numpy as jnp
        >>> from jaxkeops.lazy.conjugate_gradient import ConvergenceWarning, regularized_solve
        >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     a = regularized_solve(lambda v: A @ v, jnp.ones((2, 1)), 0.0, "demo", maxiter=1)
        >>> caught[0].category is ConvergenceWarning
        True
    """


class ConvergenceError(JaxKeOpsError):
    """Raised instead of `ConvergenceWarning` when a solve asks for on_nonconvergence="raise".

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.lazy.conjugate_gradient import ConvergenceError, regularized_solve
        >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
        >>> try:
        ...     regularized_solve(lambda v: A @ v, jnp.ones((2, 1)), 0.0, "demo", maxiter=1,
        ...                       on_nonconvergence="raise")
        ... except ConvergenceError as error:
        ...     print(str(error)[:38])
        conjugate gradient did not converge: t
    """


class CGInfo(NamedTuple):
    """Diagnostics of a conjugate gradient solve, one entry per system (leading batch shape).

    iterations: how many steps each system took (int32).
    residual: root mean square of each system's final residual b - (alpha I + K) a, the quantity
        compared with `eps`.
    converged: whether residual < eps (False also when the operator was found not positive
        definite, which stops that system early).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.lazy.conjugate_gradient import regularized_solve
        >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
        >>> a, info = regularized_solve(lambda v: A @ v, jnp.ones((2, 1)), 1.0, "demo",
        ...                             return_info=True)
        >>> bool(info.converged), int(info.iterations) <= 3
        (True, True)
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


# ------------------------------------------------------------------------------------------------
# The solver: a batched conjugate gradient, wrapped in custom_linear_solve.
def _report_nonconvergence(iterations: Any, residual: Any, converged: Any, *, eps: float,
                           maxiter: int, mode: str, stacklevel: int = 2) -> None:
    """Warns or raises if a system did not converge: called eagerly, or from the host by a
    `jax.debug.callback` inside traced code."""
    converged, iterations = np.asarray(converged), np.asarray(iterations)
    if converged.all():
        return
    # A system that stopped before maxiter without converging met p.Ap <= 0.
    breakdown = ~converged & (iterations < maxiter)
    failed = ~converged
    worst = float(np.max(np.asarray(residual)[failed]))
    steps = int(np.max(iterations[failed]))
    count = f"{int(failed.sum())} of {failed.size} systems" if failed.size > 1 else "the system"
    message = (f"conjugate gradient did not converge: {count} stopped at a residual RMS of "
               f"{worst:.3g} > eps={eps:g} after {steps} iterations (maxiter={maxiter})")
    if breakdown[failed].any():
        message += ("; p.(alpha I + K)p <= 0 was met, so the operator is not positive definite "
                    "(check that K is a symmetric positive kernel, or increase alpha)")
    else:
        message += "; increase maxiter or alpha, loosen eps, or pass a preconditioner"
    if mode == "raise":
        raise ConvergenceError(message)
    warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel)


def _report(info: CGInfo, *, eps: float, maxiter: int, mode: str) -> None:
    """The convergence check after a solve: in Python when the diagnostics are concrete,
    otherwise (an outer jit traced a solve whose inputs were all constants) from the host."""
    if mode == "ignore":
        return
    if all(_is_concrete(x) for x in info):
        _report_nonconvergence(*info, eps=eps, maxiter=maxiter, mode=mode, stacklevel=5)
    else:
        jax.debug.callback(functools.partial(_report_nonconvergence, eps=eps, maxiter=maxiter,
                                             mode=mode), *info)


def _squared_norms(b: jax.Array) -> jax.Array:
    return jnp.sum(b * b, axis=(-2, -1))


def _conjugate_gradient(matvec: Callable, b: jax.Array, *, eps: float, maxiter: int,
                        precond: Callable | None, on_nonconvergence: str,
                        primal_rr: jax.Array | None = None) -> tuple[jax.Array, CGInfo]:
    """Solves matvec(a) = b for each system of b (*batch, rows, cols); returns (a, CGInfo).

    `primal_rr` is |b|^2 of the solve being differentiated. custom_linear_solve calls this
    same function for the derivative solves (the transposed one of reverse mode, the tangent
    one of forward mode), whose right-hand sides have unrelated scales: an absolute tolerance
    would stop them at once when a loss is small (zero gradients) and never when it is large.
    They stop at the primal solve's relative accuracy instead; for the primal right-hand side
    itself the threshold is exactly pykeops's absolute one."""
    apply_precond = precond if precond is not None else (lambda r: r)
    dot = lambda u, v: jnp.sum(u * v, axis=(-2, -1))

    def expand(s):
        return s[..., None, None]

    rr = _squared_norms(b)
    threshold = b.shape[-2] * b.shape[-1] * eps**2
    if primal_rr is not None:
        scale = jnp.where(primal_rr > 0, rr / jnp.where(primal_rr > 0, primal_rr, 1), 1)
        threshold = threshold * scale
    z = apply_precond(b)
    batch_shape = rr.shape
    init = dict(
        a=jnp.zeros_like(b), r=b, p=z, rz=dot(b, z), rr=rr,
        done=(rr < threshold) | (rr == 0),
        iterations=jnp.zeros(batch_shape, jnp.int32),
        step=jnp.zeros((), jnp.int32),
    )

    def keep_going(s):
        return (s["step"] < maxiter) & jnp.any(~s["done"])

    def cg_step(s):
        p = s["p"]
        Ap = matvec(p)
        pAp = dot(p, Ap)
        active = ~s["done"]
        # pAp <= 0 (or NaN) means the operator is not positive definite on p: stop that system.
        breakdown = active & ~(pAp > 0)
        moving = active & ~breakdown
        gamma = jnp.where(moving, s["rz"] / jnp.where(moving, pAp, 1), 0)
        a = jnp.where(expand(moving), s["a"] + expand(gamma) * p, s["a"])
        r = jnp.where(expand(moving), s["r"] - expand(gamma) * Ap, s["r"])
        rr = dot(r, r)
        z = apply_precond(r)
        rz = dot(r, z)
        beta = jnp.where(moving, rz / jnp.where(moving & (s["rz"] != 0), s["rz"], 1), 0)
        return dict(
            a=a, r=r, p=jnp.where(expand(moving), z + expand(beta) * p, p),
            rz=jnp.where(moving, rz, s["rz"]), rr=jnp.where(moving, rr, s["rr"]),
            done=s["done"] | breakdown | (moving & (rr < threshold)),
            iterations=s["iterations"] + moving.astype(jnp.int32), step=s["step"] + 1,
        )

    s = jax.lax.while_loop(keep_going, cg_step, init)
    converged = (s["rr"] < threshold) | (s["rr"] == 0)
    residual = jnp.sqrt(s["rr"] / (b.shape[-2] * b.shape[-1]))
    if on_nonconvergence != "ignore":
        report = functools.partial(_report_nonconvergence, eps=eps, maxiter=maxiter,
                                   mode=on_nonconvergence)
        # The host is only called when something failed (under vmap the cond becomes a select
        # and the host function checks the flags itself).
        jax.lax.cond(jnp.all(converged), lambda: None,
                     lambda: jax.debug.callback(report, s["iterations"], residual, converged))
    return s["a"], CGInfo(s["iterations"], residual, converged)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def regularized_solve(apply_K: Callable[[jax.Array], jax.Array], b: jax.Array, alpha: Any,
                      what: str, *, eps: float = 1e-6, maxiter: int | None = None,
                      precond: Callable | None = None, on_nonconvergence: str = "warn",
                      return_info: bool = False) -> Any:
    """(alpha I + K)^-1 b by conjugate gradient, for K v = apply_K(v) symmetric positive
    (semi)definite (not checked) and b of shape (*batch, rows, cols).

    apply_K maps arrays shaped like b to arrays of the same (or a broadcast) shape; every array
    it closes over may be differentiated. `alpha` >= 0 is a scalar or broadcasts against the
    batch shape. `what` names the caller in error messages. `eps`, `maxiter` (default
    10 * rows * cols), `precond` (applies M^-1 for M a symmetric positive definite
    approximation of alpha I + K), `on_nonconvergence` and `return_info`: see the module
    docstring and `LazyTensor.solve`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.lazy.conjugate_gradient import regularized_solve
        >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
        >>> a = regularized_solve(lambda v: A @ v, jnp.array([[3.0], [4.0]]), 0.0, "demo")
        >>> bool(jnp.allclose(a, jnp.array([[1.0], [1.0]]), atol=1e-5))
        True
    """
    if not jnp.issubdtype(b.dtype, jnp.floating):
        raise TypeError(f"{what}: the right-hand side b must be a float array, got {b.dtype}")
    if on_nonconvergence not in ON_NONCONVERGENCE:
        raise ValueError(f"{what}: on_nonconvergence must be one of {ON_NONCONVERGENCE}, "
                         f"got {on_nonconvergence!r}")
    if not float(eps) > 0:
        raise ValueError(f"{what}: eps must be a positive float, got {eps!r}")
    if precond is not None and not callable(precond):
        raise TypeError(f"{what}: precond must be a callable applying M^-1, got {precond!r}")
    if precond is not None:
        shape = jax.eval_shape(precond, jax.ShapeDtypeStruct(b.shape, b.dtype)).shape
        if tuple(shape) != tuple(b.shape):
            raise ValueError(f"{what}: precond maps an array of b's shape {tuple(b.shape)} to "
                             f"shape {tuple(shape)}; it must keep the shape")
    alpha = jnp.asarray(alpha, dtype=b.dtype)
    if _is_concrete(alpha) and np.any(np.asarray(alpha) < 0):
        raise ValueError(f"{what}: alpha (the ridge added to K's diagonal) must be >= 0, "
                         f"got {np.asarray(alpha)}")
    traced_K, out = jax.make_jaxpr(apply_K, return_shape=True)(b)
    if tuple(out.shape[-2:]) != tuple(b.shape[-2:]):
        raise ValueError(f"{what}: K maps b of shape {tuple(b.shape)} to shape "
                         f"{tuple(out.shape)}; a solve needs a square operator "
                         "(as many output rows and columns as b has)")
    try:
        batch = np.broadcast_shapes(out.shape[:-2], b.shape[:-2], alpha.shape)
    except ValueError:
        raise ValueError(f"{what}: alpha of shape {alpha.shape} does not broadcast against the "
                         f"batch shape {tuple(out.shape[:-2])} of the systems") from None
    b = jnp.broadcast_to(b, batch + b.shape[-2:])
    ridge = alpha[..., None, None] if alpha.ndim else alpha
    maxiter = _resolved_maxiter(b.shape, maxiter)
    if maxiter < 1:
        raise ValueError(f"{what}: maxiter must be >= 1, got {maxiter}")

    def matvec(v):
        return apply_K(v) + ridge * v

    # Outside any transformation the check runs here, in Python, so that "raise" gives a plain
    # ConvergenceError; traced code (jit, grad, vmap) checks from the host instead.
    eager = all(_is_concrete(v) for v in (b, alpha, *traced_K.consts))
    cg = functools.partial(_conjugate_gradient, eps=float(eps), maxiter=maxiter,
                           precond=precond,
                           on_nonconvergence="ignore" if eager else on_nonconvergence,
                           primal_rr=jax.lax.stop_gradient(_squared_norms(b)))
    a, info = jax.lax.custom_linear_solve(matvec, b, cg, symmetric=True, has_aux=True)
    if eager:
        _report(info, eps=float(eps), maxiter=maxiter, mode=on_nonconvergence)
    return (a, info) if return_info else a


def _resolved_maxiter(b_shape: Sequence[int], maxiter: int | None) -> int:
    return 10 * int(b_shape[-2]) * int(b_shape[-1]) if maxiter is None else int(maxiter)


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


# Eager solves reuse one compiled program per operator structure and solver options (tracing
# and compiling the CG loop costs ~1 s, far more than a small solve); bounded, oldest first out.
_COMPILED_SOLVES: OrderedDict[Any, Callable] = OrderedDict()
_MAX_COMPILED_SOLVES = 64


def check_solver_options(what: str, b: Any, alpha: Any, *, eps: Any = 1e-6, maxiter: Any = None,
                         precond: Any = None, on_nonconvergence: Any = "warn",
                         return_info: Any = False) -> None:
    """The solver's arguments checked before anything is traced, each error naming the argument.

    Example:
        >>> check_solver_options("demo", jnp.ones((2, 1)), 0.1, eps="tight")
        Traceback (most recent call last):
        TypeError: demo: eps must be a positive number, got 'tight'
    """
    check_array(b, f"{what}: b")
    check_real(alpha, f"{what}: alpha")
    check_positive_number(eps, f"{what}: eps")
    if maxiter is not None:
        check_integer(maxiter, f"{what}: maxiter", minimum=1)
    if precond is not None and not callable(precond):
        raise TypeError(f"{what}: precond must be a callable applying M^-1, got {precond!r}")
    check_string(on_nonconvergence, f"{what}: on_nonconvergence", "'warn'")
    if on_nonconvergence not in ON_NONCONVERGENCE:
        raise ValueError(f"{what}: on_nonconvergence must be one of {ON_NONCONVERGENCE}, "
                         f"got {on_nonconvergence!r}")
    check_flag(return_info, f"{what}: return_info")


def run_solve(key: Any, operator: Callable[[Any], Callable[[jax.Array], jax.Array]],
              arrays: Any, b: jax.Array, alpha: Any, what: str, **options: Any) -> Any:
    """`regularized_solve` with K v = operator(arrays)(v), where the pytree `arrays` holds all
    the arrays K reads and `key` (hashable, or None for never) describes everything else about
    the operator. Outside any transformation the compiled program is cached under `key`, so
    that eager solves of one structure compile once; inside jit, grad or vmap this is
    `regularized_solve` itself.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.lazy.conjugate_gradient import run_solve
        >>> operator = lambda A: (lambda v: A @ v)
        >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
        >>> a = run_solve("dense 2x2", operator, A, jnp.array([[3.0], [4.0]]), 0.0, "demo")
        >>> bool(jnp.allclose(a, jnp.array([[1.0], [1.0]]), atol=1e-5))
        True
    """
    check_solver_options(what, b, alpha, **options)
    mode = options.get("on_nonconvergence", "warn")
    eager = all(_is_concrete(x) for x in jax.tree.leaves((arrays, b, alpha)))
    cacheable = (eager and key is not None and options.get("precond") is None
                 and _hashable(key))
    if not cacheable:
        return regularized_solve(operator(arrays), b, alpha, what, **options)
    if np.any(np.asarray(alpha) < 0):  # checked here: alpha is traced in the cached program
        raise ValueError(f"{what}: alpha (the ridge added to K's diagonal) must be >= 0, "
                         f"got {np.asarray(alpha)}")
    key = (key, tuple(sorted((k, v) for k, v in options.items()
                             if k not in ("on_nonconvergence", "return_info"))))
    program = _COMPILED_SOLVES.get(key)
    if program is None:
        silent = {**options, "on_nonconvergence": "ignore", "return_info": True}
        program = jax.jit(lambda arrays, b, alpha: regularized_solve(
            operator(arrays), b, alpha, what, **silent))
        _COMPILED_SOLVES[key] = program
        while len(_COMPILED_SOLVES) > _MAX_COMPILED_SOLVES:
            _COMPILED_SOLVES.popitem(last=False)
    else:
        _COMPILED_SOLVES.move_to_end(key)
    a, info = program(arrays, b, jnp.asarray(alpha))
    _report(info, eps=float(options.get("eps", 1e-6)),
            maxiter=_resolved_maxiter(b.shape, options.get("maxiter")), mode=mode)
    return (a, info) if options.get("return_info", False) else a
