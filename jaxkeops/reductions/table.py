"""The reductions: how many formulas each takes, what it outputs, its C++ accumulator, and its
dense reference.

The C++ side of each reduction (init / accumulate / merge / finalize) lives in
`cuda_src/include/jaxkeops/cpu_reductions.h`; here is what the rest of the package needs to know
about it. Every reduction reduces an (..., M, N, d) array of formula values along `axis`
(the reduced axis, -2 for j, -3 for i in the reference) and may return several outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

VALUE = "value"
INDEX = "index"
SUM_SCHEMES = ("block", "kahan")


@dataclass(frozen=True)
class Output:
    kind: str  # VALUE (the formula's dtype) or INDEX (int32, or int64 under x64)
    width: int  # components per output row, in the kernel's (n_out, width) layout
    shape: tuple[int, ...]  # the trailing shape users see after the row axis


@dataclass(frozen=True)
class ReductionSpec:
    name: str
    n_formulas: int  # 1, or 2 for a weighted LogSumExp and SumSoftMaxWeight
    needs_k: bool
    outputs: Callable[[tuple[int, ...], int | None], tuple[Output, ...]]
    cpp: Callable[[tuple[int, ...], int | None, str, str, str], str]
    reference: Callable
    scalar_formula: bool = False  # the first formula must have dim 1
    weight_optional: bool = False


REDUCTIONS: dict[str, ReductionSpec] = {}


def _register(spec: ReductionSpec) -> None:
    REDUCTIONS[spec.name] = spec


def _plain(kind):
    return lambda dims, k: (Output(kind, dims[0], (dims[0],)),)


def _kshape(d: int, k: int) -> tuple[int, ...]:
    return (k,) if d == 1 else (k, d)


# Sum. The C++ template argument KAHAN is chosen by `sum_scheme` at kernel construction.
def _sum_cpp(dims, k, vtype, itype, scheme):
    kahan = "true" if scheme == "kahan" else "false"
    return f"jk::SumReduction<{vtype}, {dims[0]}, {kahan}>"


def _sum_ref(xp, vals, axis, k=None):
    return (xp.sum(vals[0], axis=axis),)


_register(ReductionSpec("Sum", 1, False, _plain(VALUE), _sum_cpp, _sum_ref))


def _extremum(name, is_max, value, arg):
    def cpp(dims, k, vtype, itype, scheme):
        return (f"jk::ExtremumReduction<{vtype}, {dims[0]}, {str(is_max).lower()}, "
                f"{str(value).lower()}, {str(arg).lower()}, {itype}>")

    def outputs(dims, k):
        out = []
        if value:
            out.append(Output(VALUE, dims[0], (dims[0],)))
        if arg:
            out.append(Output(INDEX, dims[0], (dims[0],)))
        return tuple(out)

    def reference(xp, vals, axis, k=None):
        v = vals[0]
        out = []
        if value:
            best = xp.max(v, axis=axis) if is_max else xp.min(v, axis=axis)
            # A NaN wins, as in numpy (some fused XLA CPU reductions drop NaNs).
            out.append(xp.where(xp.any(xp.isnan(v), axis=axis), xp.nan, best))
        if arg:
            out.append(xp.argmax(v, axis=axis) if is_max else xp.argmin(v, axis=axis))
        return tuple(out)

    _register(ReductionSpec(name, 1, False, outputs, cpp, reference))


_extremum("Min", False, True, False)
_extremum("Max", True, True, False)
_extremum("ArgMin", False, False, True)
_extremum("ArgMax", True, False, True)
_extremum("Min_ArgMin", False, True, True)
_extremum("Max_ArgMax", True, True, True)


def _kmin(name, value, arg):
    def cpp(dims, k, vtype, itype, scheme):
        return (f"jk::KMinReduction<{vtype}, {dims[0]}, {k}, {str(value).lower()}, "
                f"{str(arg).lower()}, {itype}>")

    def outputs(dims, k):
        out = []
        if value:
            out.append(Output(VALUE, k * dims[0], _kshape(dims[0], k)))
        if arg:
            out.append(Output(INDEX, k * dims[0], _kshape(dims[0], k)))
        return tuple(out)

    def reference(xp, vals, axis, k):
        v = xp.moveaxis(vals[0], axis, -1)  # (..., rows, d, n)
        n = v.shape[-1]
        order = xp.argsort(v, axis=-1, stable=True)[..., :k]
        best = xp.take_along_axis(v, order, axis=-1)
        if n < k:  # pad as the kernel does
            pad = [(0, 0)] * (best.ndim - 1) + [(0, k - n)]
            best = xp.pad(best, pad, constant_values=float("inf"))
            order = xp.pad(order, pad, constant_values=-1)
        best = xp.moveaxis(best, -1, -2)  # (..., rows, k, d)
        order = xp.moveaxis(order, -1, -2)
        if vals[0].shape[-1] == 1:
            best, order = best[..., 0], order[..., 0]
        out = []
        if value:
            out.append(best)
        if arg:
            out.append(order)
        return tuple(out)

    _register(ReductionSpec(name, 1, True, outputs, cpp, reference))


_kmin("KMin", True, False)
_kmin("ArgKMin", False, True)
_kmin("KMin_ArgKMin", True, True)


def _lse_cpp(dims, k, vtype, itype, scheme):
    weighted = len(dims) > 1
    wdim = dims[1] if weighted else 1
    return f"jk::LogSumExpReduction<{vtype}, {wdim}, {str(weighted).lower()}, false>"


def _lse_outputs(dims, k):
    w = dims[1] if len(dims) > 1 else 1
    return (Output(VALUE, w, (w,)),)


def _lse_ref(xp, vals, axis, k=None):
    f = vals[0]
    m = xp.max(f, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.exp(f - m)
    if len(vals) > 1:
        e = e * vals[1]
    return (xp.log(xp.sum(e, axis=axis)) + xp.squeeze(m, axis),)


_register(ReductionSpec("LogSumExp", 2, False, _lse_outputs, _lse_cpp, _lse_ref,
                        scalar_formula=True, weight_optional=True))


def _ssw_cpp(dims, k, vtype, itype, scheme):
    return f"jk::LogSumExpReduction<{vtype}, {dims[1]}, true, true>"


def _ssw_ref(xp, vals, axis, k=None):
    f, w = vals
    m = xp.max(f, axis=axis, keepdims=True)
    e = xp.exp(f - m)
    return (xp.sum(e * w, axis=axis) / xp.sum(e, axis=axis),)


_register(ReductionSpec("SumSoftMaxWeight", 2, False,
                        lambda dims, k: (Output(VALUE, dims[1], (dims[1],)),),
                        _ssw_cpp, _ssw_ref, scalar_formula=True))


def reduction(name: str) -> ReductionSpec:
    try:
        return REDUCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(REDUCTIONS))
        raise ValueError(f"unknown reduction {name!r}; known reductions: {known}") from None
