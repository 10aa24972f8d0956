"""The reductions: how many formulas each takes, what it outputs, its C++ accumulator, and its
dense reference.

The C++ side of each reduction (init / accumulate / merge / finalize) lives in
`cuda_src/include/jaxkeops/cpu_reductions.h` and `cpu_kmin.h` (`cuda_reductions.h` for CUDA);
here is what the rest of the package needs to know about it. Every reduction reduces an
(..., M, N, d) array of formula values along `axis` (the reduced axis, -2 for j, -3 for i in
the reference) and may return several outputs.

inf and NaN give what jax.numpy gives on the same dense values v (tests/test_ieee.py):

- Sum: `jnp.sum(v)` (any sum scheme: Kahan's compensation never turns an inf into a NaN).
- LogSumExp (weighted or not) and LogSumExpSigned: `jax.nn.logsumexp(f, b=w,
  return_sign=...)`: +inf terms give +inf (NaN where their weights have both signs), a NaN term
  gives NaN, all -inf terms give -inf; a term whose weight is 0 is left out, as there.
- SumSoftMaxWeight: `sum(jax.nn.softmax(f) * w)`: NaN as soon as a term is +inf or NaN, or all
  are -inf (0/0).
- Min, Max, ArgMin, ArgMax and the pairs: `jnp.min` / `jnp.argmin`: a NaN wins (the first
  one), ties go to the first index, a row of +inf (Min) gives index 0.
- KMin, ArgKMin, KMin_ArgKMin: `lax.top_k(-v, K)`, i.e. IEEE total order: -inf first, then
  finite values, +inf, and NaNs last (a NaN with its sign bit set, such as the NaN of inf - inf
  on x86, ranks first, as in lax.top_k); -0.0 before +0.0; ties to the first index. +inf and
  NaN entries are kept like any other: an index is never -1 while there are K reduced rows.
- KMax, ArgKMax, KMax_ArgKMax: the K largest, descending, in the reversed total order
  (`lax.top_k(v, K)`: a NaN first unless its sign bit is set, +inf, finite values, -inf);
  ties to the first index.

On an empty reduced axis (N = 0, or M = 0 for axis=0) every reduction returns without reading
anything: Sum 0; LogSumExp -inf; LogSumExpSigned -inf with sign 0; SumSoftMaxWeight NaN (an
average over nothing, 0/0); Min +inf; Max -inf; ArgMin and ArgMax -1 (no such row: check
before indexing with it, as jnp reads index -1 as the last element); Min_ArgMin (+inf, -1);
Max_ArgMax (-inf, -1). The K-reductions need K <= N (`check_k_rows`): with K > N they raise
a ValueError, unless the caller asks for padding, which fills the last K - N entries with
value +inf (KMax: -inf) and index -1 (so N = 0 gives only padding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

VALUE = "value"
INDEX = "index"
# How a sum-type reduction adds its terms (KeOps' sum_scheme): "direct", a plain running sum;
# "block", partial sums per tile of reduced rows added into the row total (the default); "kahan",
# compensated summation of every term. KeOps' spellings are accepted as aliases.
SUM_SCHEMES = ("direct", "block", "kahan")
DEFAULT_SUM_SCHEME = "block"
SUM_SCHEME_ALIASES = {"auto": DEFAULT_SUM_SCHEME, "direct_sum": "direct", "block_sum": "block",
                      "kahan_scheme": "kahan"}
# The C++ spelling of each scheme (jaxkeops/summation.h, used by the CPU and CUDA reductions).
SCHEME_ENUMS = {"direct": "DIRECT_SUM", "block": "BLOCK_SUM", "kahan": "KAHAN_SUM"}


@dataclass(frozen=True)
class Output:
    kind: str  # VALUE (the formula's dtype) or INDEX (int32, or int64 under x64)
    width: int  # components per output row, in the kernel's (n_out, width) layout
    shape: tuple[int, ...]  # the trailing shape users see after the row axis


@dataclass(frozen=True)
class CppOptions:
    """What the C++ type of a reduction depends on besides the formula dims and K."""
    vtype: str  # the value type the formula is evaluated in
    itype: str  # the C++ index type of index outputs
    scheme: str = DEFAULT_SUM_SCHEME  # one of SUM_SCHEMES
    accumulator: str | None = None  # the C++ scalar type of the sums; None: that of vtype

    def sum_args(self) -> str:
        """The trailing template arguments of a sum-type reduction."""
        acc = f", {self.accumulator}" if self.accumulator else ""
        return f"jk::{SCHEME_ENUMS[self.scheme]}{acc}"


MERGES = ("sum", "lse", "softmax", "min", "max", "kmin", "kmax")


@dataclass(frozen=True)
class ReductionSpec:
    name: str
    n_formulas: int  # 1, or 2 for a weighted LogSumExp and SumSoftMaxWeight
    needs_k: bool
    outputs: Callable[[tuple[int, ...], int | None], tuple[Output, ...]]
    cpp: Callable[[tuple[int, ...], int | None, CppOptions], str]  # the CPU C++ type
    reference: Callable
    # The CUDA side: (formula dims, K, options) -> (C++ type in cuda_reductions.h, values and
    # int64 indices in one partial state of the split schedule). None: no CUDA kernel.
    cuda: Callable[[tuple[int, ...], int | None, CppOptions], tuple[str, int, int]] | None
    scalar_formula: bool = False  # the first formula must have dim 1
    weight_optional: bool = False
    sum_type: bool = False  # adds terms: takes a sum scheme and a wider accumulator
    # Derivatives (autodiff/reduction_ad.py and primitive.py read these, never the name):
    # "sum": the JVP of the first output is a Sum reduction of `tangent`'s formula (the other
    # outputs have zero tangents); "select": the tangent is dF at the pairs the reduction
    # selects (read from its index output, or from the `selection` reduction's); "none": index
    # outputs only, zero tangents.
    derivative: str = "sum"
    # (algebra, formulas, tangents of the formulas, inputs) -> the Sum's formula, or None for
    # zero. `algebra` has make/add/mul/sub (formulas/algebra.py, None standing for zero), so
    # that this table needs nothing from the formula layer above it; `inputs` maps each name
    # of `tangent_inputs` to a variable indexed like the output: "out" (the first output),
    # "sign" (the second), "lse" (the LogSumExp of the first formula).
    tangent: Callable | None = None
    tangent_inputs: tuple[str, ...] = ()
    selection: str | None = None  # "select" without an index output: the reduction giving it
    # How partial results over chunks of the reduced axis combine (_partition.py): "sum",
    # "lse" (max-shifted, signed), "softmax", "min" or "max" (value and global index, from
    # Min_ArgMin / Max_ArgMax partials), "kmin" or "kmax" (the K best of KMin_ArgKMin /
    # KMax_ArgKMax partials).
    merge: str = "sum"
    base2: bool = False  # the CPU generator may compute it in base 2 (exp2, log2)

    def __post_init__(self):
        if self.derivative not in ("sum", "select", "none"):
            raise ValueError(f"{self.name}: derivative must be 'sum', 'select' or 'none'")
        if (self.derivative == "sum") != (self.tangent is not None):
            raise ValueError(f"{self.name}: a 'sum' derivative needs a tangent, others none")
        if self.merge not in MERGES:
            raise ValueError(f"{self.name}: merge must be one of {MERGES}")


REDUCTIONS: dict[str, ReductionSpec] = {}


def _register(spec: ReductionSpec) -> None:
    REDUCTIONS[spec.name] = spec


def _plain(kind):
    return lambda dims, k: (Output(kind, dims[0], (dims[0],)),)


def _kshape(d: int, k: int) -> tuple[int, ...]:
    return (k,) if d == 1 else (k, d)


def _sum_cpp(dims, k, o: CppOptions):
    return f"jk::SumReduction<{o.vtype}, {dims[0]}, {o.sum_args()}>"


def _sum_ref(xp, vals, axis, k=None):
    return (xp.sum(vals[0], axis=axis),)


def _sum_cuda(dims, k, o: CppOptions):
    d = sum(dims)  # the linear form (codegen/linear.py) sums several formulas at once
    return (f"jk::gpu::SumReduction<{o.vtype}, {d}, {o.sum_args()}>",
            2 * d if o.scheme == "kahan" else d, 0)


def _sum_tangent(algebra, formulas, tangents, inputs):
    return tangents[0]  # d out_i = sum_j dF_ij


_register(ReductionSpec("Sum", 1, False, _plain(VALUE), _sum_cpp, _sum_ref, _sum_cuda,
                        sum_type=True,
                        tangent=_sum_tangent))


def _extremum(name, is_max, value, arg):
    def cpp(dims, k, o: CppOptions):
        return (f"jk::ExtremumReduction<{o.vtype}, {dims[0]}, {str(is_max).lower()}, "
                f"{str(value).lower()}, {str(arg).lower()}, {o.itype}>")

    def cuda(dims, k, o: CppOptions):
        return (f"jk::gpu::ExtremumReduction<{o.vtype}, {dims[0]}, {str(is_max).lower()}, "
                f"{str(value).lower()}, {str(arg).lower()}>", dims[0], dims[0] if arg else 0)

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
            # The identity (-inf for max) on an empty axis, where jnp.max has none.
            neutral = -float("inf") if is_max else float("inf")
            best = (xp.max(v, axis=axis, initial=neutral) if is_max
                    else xp.min(v, axis=axis, initial=neutral))
            # A NaN wins, as in numpy (some fused XLA CPU reductions drop NaNs).
            out.append(xp.where(xp.any(xp.isnan(v), axis=axis), xp.nan, best))
        if arg:
            if v.shape[axis] == 0:  # no row to point to: the sentinel -1
                kept = [d for i, d in enumerate(v.shape) if i != axis % v.ndim]
                out.append(xp.full(tuple(kept), -1))
            else:
                out.append(xp.argmax(v, axis=axis) if is_max else xp.argmin(v, axis=axis))
        return tuple(out)

    derivative = "select" if value else "none"
    selection = ("ArgMax" if is_max else "ArgMin") if value and not arg else None
    _register(ReductionSpec(name, 1, False, outputs, cpp, reference, cuda, derivative=derivative,
                            selection=selection, merge="max" if is_max else "min"))


_extremum("Min", False, True, False)
_extremum("Max", True, True, False)
_extremum("ArgMin", False, False, True)
_extremum("ArgMax", True, False, True)
_extremum("Min_ArgMin", False, True, True)
_extremum("Max_ArgMax", True, True, True)


def _kmin(name, value, arg, largest=False):
    """KMin and its kin (the K smallest values) or, `largest`, KMax and its kin (the K largest,
    descending, padded with -inf): one C++ reduction on the reversed order."""
    flag = ", true" if largest else ""

    def cpp(dims, k, o: CppOptions):
        return (f"jk::KMinReduction<{o.vtype}, {dims[0]}, {k}, {str(value).lower()}, "
                f"{str(arg).lower()}, {o.itype}{flag}>")

    def cuda(dims, k, o: CppOptions):
        return (f"jk::gpu::KMinReduction<{o.vtype}, {dims[0]}, {k}, {str(value).lower()}, "
                f"{str(arg).lower()}, {o.itype}{flag}>", dims[0] * k, dims[0] * k)

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
        key = _total_order_key(xp, v)
        order = xp.argsort(~key if largest else key, axis=-1, stable=True)[..., :k]
        best = xp.take_along_axis(v, order, axis=-1)
        if n < k:  # pad as the kernel does
            pad = [(0, 0)] * (best.ndim - 1) + [(0, k - n)]
            best = xp.pad(best, pad, constant_values=-float("inf") if largest else float("inf"))
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

    index_only = "ArgKMax" if largest else "ArgKMin"
    _register(ReductionSpec(name, 1, True, outputs, cpp, reference, cuda,
                            derivative="select" if value else "none",
                            selection=index_only if value and not arg else None,
                            merge="kmax" if largest else "kmin"))


def _total_order_key(xp, v):
    """Integers ordered as the IEEE total order of v (that of lax.top_k): -NaN < -inf < -0 <
    +0 < +inf < +NaN; the C++ side is jk::total_order_key (ieee.h)."""
    bits = v.view(xp.int32 if v.dtype.itemsize == 4 else xp.int64)
    flip = xp.iinfo(bits.dtype).max
    return xp.where(bits < 0, bits ^ flip, bits)


_kmin("KMin", True, False)
_kmin("ArgKMin", False, True)
_kmin("KMin_ArgKMin", True, True)
_kmin("KMax", True, False, largest=True)
_kmin("ArgKMax", False, True, largest=True)
_kmin("KMax_ArgKMax", True, True, largest=True)


# The log-sum-exp family shares one C++ reduction; what it outputs is its LSE_OUT /
# SOFTMAX_OUT / SIGNED_LSE_OUT template argument.
def _lse_family_cpp(kind: str):
    def cpp(dims, k, o: CppOptions):
        weighted = len(dims) > 1
        wdim = dims[1] if weighted else 1
        return (f"jk::LogSumExpReduction<{o.vtype}, {wdim}, {str(weighted).lower()}, "
                f"jk::{kind}, {o.sum_args()}>")

    return cpp


def _lse_family_cuda(kind: str):
    def cuda(dims, k, o: CppOptions):
        weighted = len(dims) > 1
        wdim = dims[1] if weighted else 1
        # The running sums: one per weight component, plus the plain sum of the softmax's
        # denominator (or the unweighted sum).
        sums = (wdim if weighted else 0) + (1 if kind == "SOFTMAX_OUT" or not weighted else 0)
        return (f"jk::gpu::LogSumExpReduction<{o.vtype}, {wdim}, {str(weighted).lower()}, "
                f"jk::gpu::{kind}, {o.sum_args()}>",
                1 + (2 if o.scheme == "kahan" else 1) * sums, 0)

    return cuda


def _weight_dim(dims) -> int:
    return dims[1] if len(dims) > 1 else 1


def _shifted_sum(xp, vals, axis):
    """(sum exp(f - m) w, m) along axis, with m the finite part of the maximum of f, as
    jax.nn.logsumexp computes it: terms with a zero weight are left out."""
    f = vals[0]
    if len(vals) > 1:
        f = xp.where(vals[1] != 0, f, -float("inf"))
    m = xp.max(f, axis=axis, keepdims=True, initial=-float("inf"))
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.exp(f - m)
    if len(vals) > 1:
        e = e * vals[1]
    return xp.sum(e, axis=axis), xp.squeeze(m, axis)


def _lse_tangent(signed: bool):
    """d out_i = [sign_i] sum_j exp(F_ij - out_i) (dF_ij w_j + dw_j), w = 1 unweighted (for
    the signed one out = log|S|, S = sign exp(out), so d out = dS / S)."""
    def tangent(algebra, formulas, tangents, inputs):
        inner = (algebra.add(algebra.mul(tangents[0], formulas[1]), tangents[1])
                 if len(formulas) > 1 else tangents[0])
        if inner is None:
            return None
        shifted = algebra.make("Exp", algebra.make("Subtract", formulas[0], inputs["out"]))
        term = algebra.make("Mult", shifted, inner)
        return algebra.make("Mult", inputs["sign"], term) if signed else term

    return tangent


def _lse_ref(xp, vals, axis, k=None):
    total, m = _shifted_sum(xp, vals, axis)
    return (xp.log(total) + m,)


_register(ReductionSpec("LogSumExp", 2, False,
                        lambda dims, k: (Output(VALUE, _weight_dim(dims), (_weight_dim(dims),)),),
                        _lse_family_cpp("LSE_OUT"), _lse_ref, _lse_family_cuda("LSE_OUT"),
                        scalar_formula=True,
                        weight_optional=True, sum_type=True, tangent=_lse_tangent(False),
                        tangent_inputs=("out",), merge="lse", base2=True))


# log |sum_j exp(f_ij) w_ij| and its sign (-1, 0 or +1), per weight component: a log-sum-exp
# whose weights may be negative (jax.nn.logsumexp(..., return_sign=True)). A zero sum gives
# -inf and sign 0.
def _lse_signed_outputs(dims, k):
    w = _weight_dim(dims)
    return (Output(VALUE, w, (w,)), Output(VALUE, w, (w,)))


def _lse_signed_ref(xp, vals, axis, k=None):
    total, m = _shifted_sum(xp, vals, axis)
    return (xp.log(xp.abs(total)) + m, xp.sign(total))


_register(ReductionSpec("LogSumExpSigned", 2, False, _lse_signed_outputs,
                        _lse_family_cpp("SIGNED_LSE_OUT"), _lse_signed_ref,
                        _lse_family_cuda("SIGNED_LSE_OUT"), scalar_formula=True,
                        weight_optional=True, sum_type=True, tangent=_lse_tangent(True),
                        tangent_inputs=("out", "sign"), merge="lse", base2=True))


def _ssw_tangent(algebra, formulas, tangents, inputs):
    """d out_i = sum_j exp(F_ij - lse_i) (dF_ij (v_j - out_i) + dv_j)."""
    inner = algebra.add(algebra.mul(tangents[0], algebra.sub(formulas[1], inputs["out"])),
                        tangents[1])
    if inner is None:
        return None
    return algebra.make("Mult", algebra.make("Exp", algebra.make("Subtract", formulas[0],
                                                                  inputs["lse"])), inner)


def _ssw_ref(xp, vals, axis, k=None):
    """sum(jax.nn.softmax(f) * w) along axis; NaN (0/0) on an empty axis."""
    f, w = vals
    m = xp.max(f, axis=axis, keepdims=True, initial=-float("inf"))
    e = xp.exp(f - m)
    return (xp.sum(e * w, axis=axis) / xp.sum(e, axis=axis),)


_register(ReductionSpec("SumSoftMaxWeight", 2, False,
                        lambda dims, k: (Output(VALUE, dims[1], (dims[1],)),),
                        _lse_family_cpp("SOFTMAX_OUT"), _ssw_ref, _lse_family_cuda("SOFTMAX_OUT"),
                        scalar_formula=True,
                        sum_type=True, tangent=_ssw_tangent, tangent_inputs=("out", "lse"),
                        merge="softmax", base2=True))


def check_k_rows(name: str, k: int | None, n_red: int, axis: int, pad: bool = False) -> None:
    """Raises a ValueError naming K and the reduced axis' size where reduction `name` asks for
    more neighbours than there are reduced rows, unless `pad`: then the missing entries are
    padding (value +inf, index -1). Shapes are static, so this runs at trace time."""
    if not reduction(name).needs_k or pad or k is None or k <= n_red:
        return
    size = "N" if axis == 1 else "M"
    raise ValueError(
        f"{name} with K={k} reduces over {'j' if axis == 1 else 'i'}, which has only "
        f"{size}={n_red} rows: K must be <= {size}. Lower K, or ask for padding (pad=True), "
        f"which fills the last K - {size} = {k - n_red} entries with value +inf and index -1"
    )


def sum_type_reductions() -> tuple[str, ...]:
    return tuple(name for name, spec in REDUCTIONS.items() if spec.sum_type)


def reduction(name: str) -> ReductionSpec:
    try:
        return REDUCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(REDUCTIONS))
        raise ValueError(f"unknown reduction {name!r}; known reductions: {known}") from None
