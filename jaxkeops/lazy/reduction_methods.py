"""The reductions of a LazyTensor (sum, logsumexp, min, argKmin, ..., `@`), with pykeops's
names, axes and keywords.

Axes are pykeops's absolute axes: with `nbatchdims` leading batch dims, `axis=nbatchdims`
reduces over i (the output is indexed by j) and `axis=nbatchdims + 1` over j (the output is
indexed by i). -3 and -2 name the i and j axes whatever the batch dims, and `sum`, `min`, `max`,
`argmin` and `argmax` with -1 (their default, as in pykeops) work on the vector axis and return
a LazyTensor. Every reduction also takes pykeops's keywords (see `options.py`) and `call=False`,
which returns the reduction as a callable instead of running it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._shapes import require_arrays
from ..formulas import CAT_I, CAT_J, Node, Var
from ._aliases import alias, documented_alias
from ._checks import check_array, check_flag, check_integer
from .options import (
    BUILD_KEYWORDS,
    CALL_KEYWORDS,
    accuracy_options,
    check_build_keywords,
    check_out,
    kernel_options,
    place,
    placement,
)
from .reduce import run_reduction

_KEYWORDS = (*BUILD_KEYWORDS, *CALL_KEYWORDS, "call")
I_AXIS, J_AXIS, VECTOR_AXIS = 0, 1, -1


def _check_k(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"K must be a positive integer (the number of neighbours), got {k!r}")
    return check_integer(k, "K", minimum=1)


def _vector_default(axis: Any, dim: Any) -> Any:
    """pykeops's default axis of sum/min/max/argmin/argmax: -1, the vector axis."""
    return -1 if axis is None and dim is None else axis


def _check_keywords(reduction: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_KEYWORDS))
    if unknown:
        raise TypeError(f"{reduction} reduction: unexpected keyword argument(s) "
                        f"{', '.join(map(repr, unknown))}; pykeops keywords are "
                        f"{', '.join(_KEYWORDS)}")


class LazyReduction:
    """A reduction of a LazyTensor, ready to run: pykeops's `call=False`, and what a reduction of
    a LazyTensor with symbolic variables returns. Call it with the arrays of the symbolic
    variables, in the order of their indices, plus pykeops's call keywords.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import LazyTensor
        >>> x_i = LazyTensor((0, 3, 0))  # a symbolic i-variable of dimension 3
        >>> y_j = LazyTensor(jnp.zeros((4, 3))[None])
        >>> norms = ((x_i - y_j) ** 2).sum(-1).sum(axis=1, call=False)
        >>> norms(jnp.ones((2, 3))).shape
        (2, 1)
    """

    def __init__(self, formulas: Sequence[Node], reduction: str, axis: int, leaves: tuple,
                 k: int | None, options: dict[str, Any], pad: bool = False):
        self.formulas = tuple(formulas)
        self.reduction = reduction
        self.axis = axis
        self.k = k
        self.pad = pad
        self._leaves = leaves
        check_build_keywords(f"{reduction} reduction", options)
        self._accuracy = accuracy_options(reduction, options.get("sum_scheme", "auto"),
                                          options.get("dtype_acc", "auto"),
                                          options.get("use_double_acc", False))
        self._call_options = {name: options[name] for name in CALL_KEYWORDS if name in options}
        self._call_options.setdefault("backend", "auto")
        self._call_options.setdefault("device_id", -1)
        self._symbolic = sorted((a.index, position) for position, (a, _) in enumerate(leaves)
                                if not hasattr(a, "dtype"))

    def __call__(self, *arrays: Any, backend: Any = None, device_id: Any = None,
                 ranges: Any = None, out: Any = None):
        check_out(out if out is not None else self._call_options.get("out"))
        ranges = ranges if ranges is not None else self._call_options.get("ranges")
        where = placement(self._call_options["backend"] if backend is None else backend,
                          self._call_options["device_id"] if device_id is None else device_id)
        if len(arrays) != len(self._symbolic):
            raise ValueError(f"this reduction takes {len(self._symbolic)} array(s) for its "
                             f"symbolic variables (indices {[i for i, _ in self._symbolic]}), "
                             f"got {len(arrays)}")
        values = [a for a, _ in self._leaves]
        for (index, position), array in zip(self._symbolic, arrays):
            declared, cat = self._leaves[position]
            shape = tuple(np.shape(array))
            if shape and shape[-1] != declared.dim:
                raise ValueError(f"the array of symbolic variable #{index} ({'ijp'[cat]}-variable "
                                 f"of dim {declared.dim}) has shape {shape}: its last dimension "
                                 f"must be {declared.dim}")
            values[position] = array
        names = [f"{'ijp'[c]}-variable #{i} {tuple(np.shape(a))}"
                 for i, (a, (_, c)) in enumerate(zip(values, self._leaves))]
        require_arrays(values, names)
        values = place(values, where)
        variables = [Var(i, int(np.shape(a)[-1]) if np.ndim(a) else 1, c)
                     for i, (a, (_, c)) in enumerate(zip(values, self._leaves))]
        options = kernel_options(self._accuracy, values)
        outs = run_reduction(self.formulas, self.reduction, self.axis, variables, values, names,
                             k=self.k, pad=self.pad, ranges=ranges, **options)
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        body = ", ".join(repr(f) for f in self.formulas)
        return f"LazyReduction({self.reduction}({body}), over {'ij'[self.axis]})"


class ReductionMethods:
    """The reductions of LazyTensor (a mixin: it relies on LazyTensor's structure methods)."""

    def _reduction_axis(self, axis: Any, dim: Any, allow_vector: bool) -> int:
        """I_AXIS, J_AXIS or VECTOR_AXIS for pykeops's `axis` (or its alias `dim`)."""
        nb = self.nbatchdims
        valid = f"{nb} or -3 (over i), {nb + 1} or -2 (over j)"
        if allow_vector:
            valid += f", -1 or {nb + 2} (the vector axis)"
        for keyword, value in (("axis", axis), ("dim", dim)):
            if value is not None and (isinstance(value, (bool, np.bool_))
                                      or not isinstance(value, (int, np.integer))):
                raise TypeError(f"{keyword} must be an integer ({valid}), got {value!r} "
                                f"({type(value).__name__})")
        keyword = "axis"
        if axis is None:
            axis, keyword = dim, "dim"
        elif dim is not None and dim != axis:
            raise ValueError(f"axis={axis!r} and dim={dim!r} disagree: give only one of them")
        if axis is None:
            raise ValueError(f"give the axis to reduce: {valid}; shape {self._shape}")
        if axis in (nb, -3):
            return I_AXIS
        if axis in (nb + 1, -2):
            return J_AXIS
        if allow_vector and axis in (nb + 2, -1):
            return VECTOR_AXIS
        raise ValueError(f"cannot reduce axis {axis} ({keyword}={axis}) of a LazyTensor of shape "
                         f"{self._shape} ({nb} batch dims): use {valid}")

    def _weight(self, weight: Any, axis: int, reduction: str):
        """`weight` as a LazyTensor whose rows and batch dims agree with self's, or an error
        naming it and both shapes (before the formulas are merged, whose errors cannot name it).
        An array takes pykeops's shapes: (..., 1, N, E) for j, (..., M, 1, E) for i, (E,)."""
        if not isinstance(weight, ReductionMethods):  # not a LazyTensor
            array = check_array(weight, f"{reduction}: weight")
            try:
                weight = self._wrap(weight)
            except ValueError:
                over = "j" if axis == J_AXIS else "i"
                wrapper = "Vj" if axis == J_AXIS else "Vi"
                raise ValueError(
                    f"{reduction}: cannot tell the role of weight, an array of shape "
                    f"{tuple(array.shape)}: pass {wrapper}(weight) for weights of the reduced "
                    f"{over}-variables (the LazyTensor has shape {self._shape})") from None
        for cat, letter in ((CAT_I, "M"), (CAT_J, "N")):
            mine, theirs = self._rows(cat), weight._rows(cat)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(f"{reduction}: weight has {letter}={theirs} (shape "
                                 f"{weight._shape}) but the LazyTensor has {letter}={mine} "
                                 f"(shape {self._shape})")
        try:
            np.broadcast_shapes(self.batch_shape, weight.batch_shape)
        except ValueError:
            raise ValueError(f"{reduction}: the batch dims {weight.batch_shape} of weight (shape "
                             f"{weight._shape}) do not broadcast against the LazyTensor's "
                             f"{self.batch_shape} (shape {self._shape})") from None
        return weight

    def _reduce(self, reduction: str, axis: int, options: dict[str, Any],
                extra: Sequence[Any] = (), k: int | None = None, pad: bool = False):
        _check_keywords(reduction, options)
        if not self.is_complex and any(self._wrap(e).is_complex for e in extra):
            return self._complex().reduce_with_complex_weights(self, reduction, axis, options,
                                                               extra, k)
        call = check_flag(options.pop("call", True), "call")
        wrapped = [self, *(self._wrap(e) for e in extra)]
        ranges = self._shared_ranges(wrapped)
        if ranges is not None:
            options.setdefault("ranges", ranges)
        formulas, leaves = self._merge(*wrapped)
        pending = LazyReduction(formulas, reduction, axis, leaves, k, options, pad)
        if call and not pending._symbolic:
            return pending()
        return pending

    def _vector_or_reduce(self, reduction: str, vector_op: str | None, axis, dim,
                          options: dict[str, Any]):
        # The vector axis is always kept, as in pykeops: keepdim is accepted and only checked.
        check_flag(options.pop("keepdim", True), "keepdim")
        a = self._reduction_axis(axis, dim, allow_vector=vector_op is not None)
        if a == VECTOR_AXIS:
            _check_keywords(vector_op, options)  # accepted and meaningless here, as in pykeops
            return self._op(vector_op)
        return self._reduce(reduction, a, options)

    def sum(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """Sum over the vector axis (axis=-1, the default: a LazyTensor), or the Sum reduction
        over i or j (a jax.Array of shape (*batch, N or M, D)).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.ones((5, 3)), jnp.zeros((4, 3))
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # symbolic (5, 4)
            >>> D_ij.sum(axis=1)                         # over j: (5, 1)
            Array([[12.],
                   [12.],
                   [12.],
                   [12.],
                   [12.]], dtype=float32)
        """
        return self._vector_or_reduce("Sum", "Sum", _vector_default(axis, dim), dim, kwargs)

    def sum_reduction(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """The Sum reduction over i or j (never the vector axis), as in pykeops.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.sum_reduction(axis=1))
            [[14.]
             [14.]]
        """
        return self._reduce("Sum", self._reduction_axis(axis, dim, False), kwargs)

    def min(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """Minimum over the vector axis (-1, a LazyTensor) or the Min reduction over i or j.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.min(axis=1))
            [[1.]
             [1.]]
            >>> (Vi(x) - Vj(y)).min().shape   # over the vector axis: still symbolic
            (2, 3)
        """
        return self._vector_or_reduce("Min", "Min", _vector_default(axis, dim), dim, kwargs)

    def max(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """Maximum over the vector axis (-1, a LazyTensor) or the Max reduction over i or j.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.max(axis=1))
            [[9.]
             [9.]]
        """
        return self._vector_or_reduce("Max", "Max", _vector_default(axis, dim), dim, kwargs)

    def argmin(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """Index of the minimum over the vector axis (-1) or over i or j (integers).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.argmin(axis=1))
            [[1]
             [1]]
        """
        return self._vector_or_reduce("ArgMin", "ArgMin", _vector_default(axis, dim), dim,
                                      kwargs)

    def argmax(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """Index of the maximum over the vector axis (-1) or over i or j (integers).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.argmax(axis=1))
            [[0]
             [0]]
        """
        return self._vector_or_reduce("ArgMax", "ArgMax", _vector_default(axis, dim), dim,
                                      kwargs)

    def min_argmin(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """(minimum, its index) over i or j.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> v, i = D_ij.min_argmin(axis=1)
            >>> v[:, 0].tolist(), i[:, 0].tolist()
            ([1.0, 1.0], [1, 1])
        """
        return self._vector_or_reduce("Min_ArgMin", None, axis, dim, kwargs)

    def max_argmax(self, axis: int | None = None, dim: int | None = None, **kwargs):
        """(maximum, its index) over i or j.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> v, i = D_ij.max_argmax(axis=1)
            >>> v[:, 0].tolist(), i[:, 0].tolist()
            ([9.0, 9.0], [0, 0])
        """
        return self._vector_or_reduce("Max_ArgMax", None, axis, dim, kwargs)

    def Kmin(self, K: int, axis: int | None = None, dim: int | None = None, pad: bool = False,
             **kwargs):
        """The K smallest values over i or j, ascending: (*batch, rows, K) for a scalar
        formula, (*batch, rows, K, D) otherwise. K may not exceed the reduced axis' size (a
        ValueError naming both) unless `pad=True`, which fills the last entries with +inf (and
        index -1 in argKmin / Kmin_argKmin).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.Kmin(K=2, axis=1))
            [[1. 4.]
             [1. 4.]]
        """
        return self._reduce("KMin", self._reduction_axis(axis, dim, False), kwargs,
                            k=_check_k(K), pad=check_flag(pad, "pad"))

    def argKmin(self, K: int, axis: int | None = None, dim: int | None = None, pad: bool = False,
                **kwargs):
        """The indices of the K smallest values over i or j (K nearest neighbours); `pad` as in
        `Kmin` (padding indices are -1).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.argKmin(K=2, axis=1))
            [[1 2]
             [1 2]]
        """
        return self._reduce("ArgKMin", self._reduction_axis(axis, dim, False), kwargs,
                            k=_check_k(K), pad=check_flag(pad, "pad"))

    def Kmin_argKmin(self, K: int, axis: int | None = None, dim: int | None = None,
                     pad: bool = False, **kwargs):
        """(the K smallest values, their indices) over i or j; `pad` as in `Kmin`.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> values, indices = D_ij.Kmin_argKmin(K=2, axis=1)
            >>> values[0].tolist(), indices[0].tolist()
            ([1.0, 4.0], [1, 2])
        """
        return self._reduce("KMin_ArgKMin", self._reduction_axis(axis, dim, False), kwargs,
                            k=_check_k(K), pad=check_flag(pad, "pad"))

    def logsumexp(self, axis: int | None = None, dim: int | None = None, weight: Any = None,
                  return_sign: bool = False, **kwargs):
        """log sum exp(F) over i or j, stable for any magnitude; with `weight` w (a LazyTensor
        such as Vj(w), or an array in pykeops's shapes: (..., 1, N, E) for a j-variable),
        log sum exp(F) w. With `return_sign=True`,
        (log |sum exp(F) w|, its sign), as jax.nn.logsumexp: weights may then be negative.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.logsumexp(axis=1).round(3))   # log(e^9 + e^1 + e^4)
            [[9.007]
             [9.007]]
        """
        a = self._reduction_axis(axis, dim, False)
        extra = () if weight is None else (self._weight(weight, a, "logsumexp"),)
        if check_flag(return_sign, "return_sign"):
            if extra == ():
                extra = (self._wrap(1.0),)
            return self._reduce("LogSumExpSigned", a, kwargs, extra)
        return self._reduce("LogSumExp", a, kwargs, extra)

    def sumsoftmaxweight(self, weight: Any, axis: int | None = None, dim: int | None = None,
                         **kwargs):
        """sum exp(F) w / sum exp(F) over i or j: soft-max weighted sum (attention).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij.sumsoftmaxweight(Vj(y), axis=1).round(3))   # mostly y at D = 9
            [[2.993]
             [2.993]]
        """
        a = self._reduction_axis(axis, dim, False)
        if weight is None:
            raise TypeError("sumsoftmaxweight needs weight, the LazyTensor (e.g. Vj(v)) whose "
                            "soft-max weighted sum it computes")
        return self._reduce("SumSoftMaxWeight", a, kwargs,
                            (self._weight(weight, a, "sumsoftmaxweight"),))

    # pykeops's long names and aliases.
    @documented_alias("min", "pykeops's long name; over i or j only, never the vector "
                      "axis", ">>> print(D_ij.min_reduction(axis=1))\n[[1.]\n [1.]]\n")
    def min_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("Min", self._reduction_axis(axis, dim, False), kwargs)

    @documented_alias("max", "pykeops's long name; over i or j only, never the vector "
                      "axis", ">>> print(D_ij.max_reduction(axis=1))\n[[9.]\n [9.]]\n")
    def max_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("Max", self._reduction_axis(axis, dim, False), kwargs)

    @documented_alias("argmin", "pykeops's long name; over i or j only, never the vector "
                      "axis", ">>> print(D_ij.argmin_reduction(axis=1))\n[[1]\n [1]]\n")
    def argmin_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("ArgMin", self._reduction_axis(axis, dim, False), kwargs)

    @documented_alias("argmax", "pykeops's long name; over i or j only, never the vector "
                      "axis", ">>> print(D_ij.argmax_reduction(axis=1))\n[[0]\n [0]]\n")
    def argmax_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("ArgMax", self._reduction_axis(axis, dim, False), kwargs)

    @documented_alias("min_argmin", "pykeops's long name",
                      ">>> D_ij.min_argmin_reduction(axis=1)[1][:, 0].tolist()\n[1, 1]\n")
    def min_argmin_reduction(self, **kwargs):
        return self.min_argmin(**kwargs)

    @documented_alias("max_argmax", "pykeops's long name",
                      ">>> D_ij.max_argmax_reduction(axis=1)[1][:, 0].tolist()\n[0, 0]\n")
    def max_argmax_reduction(self, **kwargs):
        return self.max_argmax(**kwargs)

    @documented_alias("Kmin", "pykeops's long name",
                      ">>> D_ij.Kmin_reduction(K=2, axis=1)[0].tolist()\n[1.0, 4.0]\n")
    def Kmin_reduction(self, **kwargs):
        return self.Kmin(**kwargs)

    @documented_alias("argKmin", "pykeops's long name",
                      ">>> D_ij.argKmin_reduction(K=2, axis=1)[0].tolist()\n[1, 2]\n")
    def argKmin_reduction(self, **kwargs):
        return self.argKmin(**kwargs)

    @documented_alias("Kmin_argKmin", "pykeops's long name",
                      ">>> D_ij.Kmin_argKmin_reduction(K=2, axis=1)[1][0].tolist()\n[1, 2]\n")
    def Kmin_argKmin_reduction(self, **kwargs):
        return self.Kmin_argKmin(**kwargs)

    @documented_alias("logsumexp", "pykeops's long name",
                      ">>> print(D_ij.logsumexp_reduction(axis=1).round(3))\n[[9.007]\n [9.007]]\n")
    def logsumexp_reduction(self, **kwargs):
        return self.logsumexp(**kwargs)

    @documented_alias("sumsoftmaxweight", "pykeops's long name",
                      ">>> D_ij.sumsoftmaxweight_reduction(weight=Vj(y), axis=1)"
                      ".shape\n(2, 1)\n")
    def sumsoftmaxweight_reduction(self, **kwargs):
        return self.sumsoftmaxweight(**kwargs)

    min_argKmin = alias(Kmin_argKmin, "min_argKmin", "the name KeOps's documentation uses",
                        ">>> D_ij.min_argKmin(K=2, axis=1)[1][0].tolist()\n[1, 2]\n")
    kmin = alias(Kmin, "kmin", "lower-case spelling",
                 ">>> D_ij.kmin(K=2, axis=1)[0].tolist()\n[1.0, 4.0]\n")
    argkmin = alias(argKmin, "argkmin", "lower-case spelling",
                    ">>> D_ij.argkmin(K=2, axis=1)[0].tolist()\n[1, 2]\n")
    kmin_argkmin = alias(Kmin_argKmin, "kmin_argkmin", "lower-case spelling",
                         ">>> D_ij.kmin_argkmin(K=2, axis=1)[0][0].tolist()\n[1.0, 4.0]\n")

    def __matmul__(self, v: Any, **kwargs):
        """K @ v = sum_j K_ij v_j for a scalar K and v of shape (N,), (*batch, N, E), or
        (*batch, N) when K has batch dims: (M,), (*batch, M, E) or (*batch, M).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x, y = jnp.zeros((2, 1)), jnp.array([[3.0], [1.0], [2.0]])
            >>> D_ij = ((Vi(x) - Vj(y)) ** 2).sum(-1)   # [[9, 1, 4], [9, 1, 4]]
            >>> print(D_ij @ jnp.ones(3))
            [14. 14.]
        """
        if self.ndim != 1:
            raise ValueError(f"K @ v needs a scalar LazyTensor K (trailing dimension 1); this one "
                             f"has shape {self.shape}")
        v = jnp.asarray(check_array(v, "K @ v: v"))
        if not jnp.issubdtype(v.dtype, jnp.inexact):
            raise TypeError(f"K @ v: v has dtype {v.dtype} (shape {v.shape}); K @ v takes a "
                            "float array (cast it with .astype)")
        if v.ndim == 0:
            raise ValueError("K @ v needs an array v of shape (N,) or (..., N, E), got a scalar")
        vector = v.ndim == 1 or (v.ndim == self.nbatchdims + 1 and self.nbatchdims > 0)
        vj = type(self)(v[..., None] if vector else v, axis=CAT_J)
        out = (self * vj)._reduce("Sum", J_AXIS, dict(kwargs))
        return out[..., 0] if vector else out
