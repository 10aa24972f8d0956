"""inf, NaN and empty reduced axes: every reduction gives what jax.numpy / jax.lax give on the
same dense matrix of formula values (issue 12).

One formula, F = a + b with scalar a (outer) and b (reduced), serves every reduction, over both
axes and in float32 and float64: the data change from case to case, not the formula, so each
(reduction, axis, dtype) compiles one kernel. The outer values hold three finite rows, a row of
+inf and a row of -inf; the reduced values are finite but for +inf, -inf or NaN placed in the
first SIMD vector, in the middle, in the tail (N = 37: 4 float32 vectors of 8 and a tail of 5, 9
float64 vectors of 4 and a tail of 1), in a second CPU tile (N = 4100), or everywhere. The
expected values are jnp/lax expressions on that matrix (jnp.sum, jax.nn.logsumexp, jax.nn.softmax's
formula, jnp.min/argmin, lax.top_k(-v, K)), never our own dense evaluator. The same table runs
through the generated CUDA source under the emulator (tests/cuda_emulator), in both schedules.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from cuda_emulator.harness import build_module, emulate

from jaxkeops import Vi, Vj
from jaxkeops._shapes import index_dtype, kernel_operands
from jaxkeops.codegen.cuda import render_cuda
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.primitive import bind_reduction
from jaxkeops.reductions import INDEX, REDUCTIONS, check_k_rows

INF, NAN = float("inf"), float("nan")
N, N_TILES = 37, 4100  # 4100 > the CPU tile of 4096 reduced rows
FIRST, MIDDLE, TAIL = 2, 17, 36
K = 4
OUTER = [0.25, -0.5, 1.0, INF, -INF]  # +inf + -inf or NaN: NaN entries in the last rows
DTYPES = ["float32", "float64"]
AXES = [1, 0]


@dataclass(frozen=True)
class Case:
    name: str
    specials: dict = field(default_factory=dict)  # reduced row -> value (None: every row)
    weights: dict = field(default_factory=dict)  # (reduced row, component) -> weight
    n: int = N


CASES = [
    *(Case(f"{label} {where}", {row: value})
      for label, value in (("+inf", INF), ("-inf", -INF), ("nan", NAN))
      for where, row in (("first vector", FIRST), ("middle", MIDDLE), ("tail", TAIL))),
    Case("-nan (sign bit set) in the middle", {MIDDLE: -NAN}),
    Case("+inf, -inf and nan together", {FIRST: NAN, MIDDLE: INF, TAIL: -INF}),
    Case("two +inf, first and tail", {FIRST: INF, TAIL: INF}),
    Case("two -inf, first and tail", {FIRST: -INF, TAIL: -INF}),
    Case("all +inf", {None: INF}),
    Case("all -inf", {None: -INF}),
    Case("+inf with a zero weight", {MIDDLE: INF}, {(MIDDLE, 0): 0.0}),
    Case("nan with a zero weight", {FIRST: NAN}, {(FIRST, 1): 0.0}),
    Case("+inf with weights of both signs", {FIRST: INF, TAIL: INF}, {(TAIL, 1): -1.0}),
    Case("a +inf weight", {}, {(MIDDLE, 0): INF}),
    Case("a -inf weight", {}, {(FIRST, 1): -INF}),
    Case("a nan weight", {}, {(TAIL, 0): NAN}),
    Case("a +inf weight on a -inf term", {MIDDLE: -INF}, {(MIDDLE, 0): INF}),
    Case("+inf in a second CPU tile", {4099: INF}, n=N_TILES),
    Case("all +inf, two CPU tiles", {None: INF}, n=N_TILES),
    Case("nan in a second CPU tile", {4097: NAN}, n=N_TILES),
    Case("empty reduced axis", n=0),
]

A = Var(0, 1, CAT_I)
B = Var(1, 1, CAT_J)
F = make("Add", A, B)
WEIGHTED = ("LogSumExp-weighted", "LogSumExpSigned", "SumSoftMaxWeight")
NAMES = sorted(set(REDUCTIONS) | {"LogSumExp-weighted"})
# Sum schemes and accumulators add their terms differently: each gets the same table, on the
# sum-type reductions where the scheme shows (axis 1; the axis does not change the sums).
VARIANTS = [("Sum", "kahan", None), ("LogSumExp", "kahan", None),
            ("LogSumExp-weighted", "kahan", None), ("LogSumExpSigned", "kahan", None),
            ("SumSoftMaxWeight", "kahan", None), ("LogSumExp", "direct", None),
            ("LogSumExp-weighted", "block", "float64"), ("Sum", "kahan", "float64")]


def reduced_var(axis: int) -> Var:
    return B if axis == 1 else A


def spec_for(name: str, axis: int, dtype: str, sum_scheme: str = "block",
             accumulator: str | None = None) -> KernelSpec:
    reduction = name.split("-")[0]
    formulas, args = (F,), (A, B)
    if name in WEIGHTED:
        weight = Var(2, 2, CAT_J if axis == 1 else CAT_I)
        formulas, args = (F, weight), (A, B, weight)
    return KernelSpec(formulas, reduction, axis, dtype, index_dtype=index_dtype(),
                      k=K if REDUCTIONS[reduction].needs_k else None, sum_scheme=sum_scheme,
                      args=args, accumulator=accumulator)


def case_data(case: Case, dtype: str):
    """(outer values (M,), reduced values (n,), weights (n, 2)) of a case."""
    rng = np.random.default_rng(len(case.name))
    reduced = rng.uniform(-1.0, 1.0, case.n)
    weights = rng.uniform(0.5, 2.0, (case.n, 2))
    for row, value in case.specials.items():
        reduced[slice(None) if row is None else row] = value
    for (row, component), value in case.weights.items():
        weights[row, component] = value
    return (np.asarray(OUTER, dtype), reduced.astype(dtype), weights.astype(dtype))


def kernel_arrays(spec: KernelSpec, outer, reduced, weights):
    """The arrays of the spec's arguments (Genred layout) for the dense values outer + reduced."""
    by_var = {reduced_var(spec.axis): reduced[:, None]}
    other = A if spec.axis == 1 else B
    by_var[other] = outer[:, None]
    if len(spec.args) > 2:
        by_var[spec.args[2]] = weights
    return [by_var[v] for v in spec.args]


def run_kernel(spec: KernelSpec, arrays):
    """The CPU kernel's outputs, (rows, *shape) each. Through the primitive, with the true
    sizes (the public API cannot yet pass N = 0, see test_public_api_empty_axis)."""
    n_out, n_red = len(OUTER), arrays[spec.args.index(reduced_var(spec.axis))].shape[0]
    outs = bind_reduction(spec, kernel_operands(spec, arrays, ()), n_out, n_red)
    return tuple(np.asarray(o).reshape((n_out,) + out.shape)
                 for o, out in zip(outs, spec.outputs))


def expected(name: str, dense, weights):
    """What jax.numpy / jax.lax give on the dense (rows, n) values, shaped as the outputs."""
    n = dense.shape[1]
    reduction = name.split("-")[0]
    is_max = reduction.startswith("Max") or reduction == "ArgMax"
    if reduction == "Sum":
        return (jnp.sum(dense, axis=1)[:, None],)
    if name == "LogSumExp":
        return (jax.nn.logsumexp(dense, axis=1)[:, None],)
    if reduction in ("LogSumExp", "LogSumExpSigned"):
        out = jax.nn.logsumexp(dense[:, :, None], axis=1, b=weights[None],
                               return_sign=reduction == "LogSumExpSigned")
        return out if isinstance(out, tuple) else (out,)
    if reduction == "SumSoftMaxWeight":
        # jax.nn.softmax's own formula, e / sum(e) with e = exp(f - max f), which also says
        # what an empty axis gives (0/0).
        e = jnp.exp(dense - jnp.max(dense, axis=1, keepdims=True, initial=-INF))
        return (jnp.sum(e[:, :, None] * weights[None], axis=1) / jnp.sum(e, axis=1)[:, None],)
    if REDUCTIONS[reduction].needs_k:
        top = min(K, n)
        largest = reduction in ("KMax", "ArgKMax", "KMax_ArgKMax")  # lax.top_k(v, K)
        values, indices = jax.lax.top_k(dense if largest else -dense, top)
        values = jnp.pad(values if largest else -values, ((0, 0), (0, K - top)),
                         constant_values=-INF if largest else INF)
        indices = jnp.pad(indices, ((0, 0), (0, K - top)), constant_values=-1)
        return {"KMin": (values,), "ArgKMin": (indices,), "KMin_ArgKMin": (values, indices),
                "KMax": (values,), "ArgKMax": (indices,), "KMax_ArgKMax": (values, indices)}[
            reduction]
    # jnp.min/max's identity on an empty axis; jnp.argmin has none there: the sentinel -1.
    value = (jnp.max(dense, axis=1, initial=-INF) if is_max
             else jnp.min(dense, axis=1, initial=INF))[:, None]
    # jnp.max propagates NaN, as documented, but XLA's CPU max over 4100 values drops it.
    value = jnp.where(jnp.isnan(dense).any(axis=1, keepdims=True), NAN, value)
    if n == 0:
        index = jnp.full((dense.shape[0], 1), -1)
    else:
        index = (jnp.argmax(dense, axis=1) if is_max else jnp.argmin(dense, axis=1))[:, None]
    return {"Min": (value,), "Max": (value,), "ArgMin": (index,), "ArgMax": (index,),
            "Min_ArgMin": (value, index), "Max_ArgMax": (value, index)}[reduction]


def check_case(spec: KernelSpec, name: str, case: Case, dtype: str, compute):
    outer, reduced, weights = case_data(case, dtype)
    got = compute(spec, kernel_arrays(spec, outer, reduced, weights))
    want = expected(name, jnp.asarray(outer)[:, None] + jnp.asarray(reduced)[None, :],
                    jnp.asarray(weights))
    assert len(got) == len(want)
    for g, w, out in zip(got, want, spec.outputs):
        w = np.asarray(w)
        message = f"{case.name}: got {g.tolist()}, jax gives {w.tolist()}"
        if out.kind == INDEX:
            np.testing.assert_array_equal(g, w, err_msg=message)
        else:
            assert g.dtype == np.dtype(dtype)
            try:
                assert_close(g, w, dtype)
            except AssertionError as error:
                raise AssertionError(message) from error


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("name", NAMES)
def test_inf_nan_and_empty_like_jax(name, axis, dtype):
    spec = spec_for(name, axis, dtype)
    for case in CASES:
        check_case(spec, name, case, dtype, run_kernel)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, scheme, accumulator", VARIANTS)
def test_sum_schemes_keep_inf(name, scheme, accumulator, dtype):
    """Kahan's compensation of a sum that reached inf is (inf - inf) = NaN: it must not leak.
    (A float64 accumulator for float64 data is the plain float64 kernel.)"""
    spec = spec_for(name, 1, dtype, sum_scheme=scheme, accumulator=accumulator)
    for case in CASES:
        check_case(spec, name, case, dtype, run_kernel)


def test_nan_ranks_as_in_lax_top_k():
    """Total order: a NaN ranks after +inf, unless its sign bit is set (the NaN of inf - inf
    on x86); +inf entries are kept, never replaced by index -1."""
    spec = spec_for("KMin_ArgKMin", 1, "float32")
    reduced = np.array([3.0, NAN, -NAN, INF, 1.0, INF], np.float32)
    values, indices = run_kernel(spec, [np.zeros((5, 1), np.float32), reduced[:, None]])
    assert indices[0].tolist() == [2, 4, 0, 3]
    assert np.signbit(values[0, 0]) and np.isnan(values[0, 0])
    reduced[2] = 5.0
    values, indices = run_kernel(spec, [np.zeros((5, 1), np.float32), reduced[:, None]])
    assert indices[0].tolist() == [4, 0, 2, 3] and values[0, 3] == INF


def test_k_larger_than_n_raises_naming_k_and_n():
    with pytest.raises(ValueError, match=r"K=5.*N=3"):
        check_k_rows("ArgKMin", 5, 3, axis=1)
    with pytest.raises(ValueError, match=r"K=4.*M=0"):
        spec_for("KMin", 0, "float32").check_reduced_rows(0)
    spec_for("KMin", 1, "float32").check_reduced_rows(K)  # K = N is fine
    spec_for("KMin", 1, "float32").check_reduced_rows(0, pad=True)  # padding asked for
    spec_for("ArgMin", 1, "float32").check_reduced_rows(0)  # no K


def test_public_api_empty_axis():
    x = np.ones((3, 1), np.float32)
    y = np.ones((0, 1), np.float32)
    formula = Vi(x) + Vj(y)
    assert (np.asarray(formula.sum(axis=1)) == 0).all()
    assert (np.asarray(formula.argmin(axis=1)) == -1).all()


def test_public_api_k_larger_than_n():
    x, y = np.ones((3, 1), np.float32), np.ones((2, 1), np.float32)
    with pytest.raises(ValueError, match=r"K=3.*N=2"):
        Vi(x).sqdist(Vj(y)).argKmin(K=3, axis=1)
    padded = np.asarray(Vi(x).sqdist(Vj(y)).argKmin(K=3, axis=1, pad=True))
    assert padded.tolist() == [[0, 1, -1]] * 3


# The CUDA source, emulated on the CPU: one library for every kernel of this file.
# key (a C identifier) -> (name in NAMES, spec)
CUDA_SPECS = {f"{name.replace('-', '_')}_{axis}_{dtype}": (name, spec_for(name, axis, dtype))
              for name in NAMES for axis in AXES for dtype in DTYPES}
CUDA_SPECS.update({f"{name.replace('-', '_')}_{scheme}_{acc}_{dtype}":
                   (name, spec_for(name, 1, dtype, scheme, acc))
                   for name, scheme, acc in VARIANTS for dtype in DTYPES})


@pytest.fixture(scope="module")
def cuda_module():
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulation needs g++")
    return build_module({key: render_cuda(spec) for key, (_, spec) in CUDA_SPECS.items()},
                        tag="ieee")


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("key", list(CUDA_SPECS))
def test_cuda_source_inf_nan_and_empty_like_jax(cuda_module, key, schedule):
    """The split schedule puts one tile of 8 rows in each chunk, so partial states merge."""
    name, spec = CUDA_SPECS[key]

    def compute(spec, arrays):
        return emulate(cuda_module, key, spec, arrays, schedule=schedule, block=8)

    for case in CASES:
        if case.n <= N:  # 4100 rows are for the CPU tiles: slow under the emulator
            check_case(spec, name, case, spec.dtype, compute)
