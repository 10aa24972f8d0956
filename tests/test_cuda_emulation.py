"""CUDA kernels without a GPU, part 2: the generated CUDA sources run on the CPU under an
emulation of the CUDA execution model (tests/cuda_emulator: blocks of threads as fibers,
dynamic shared memory per block, __syncthreads as a real barrier, race and bounds checks) and
must match `jaxkeops.testing.dense_reduce`: every reduction, in float32/float64 and with
float16/bfloat16 storage, both schedules, sizes that are not multiples of the block size,
batch dims, ties, NaN/-inf, K > N, every sum scheme and float64 accumulators (and how their
accuracy ranks), the signed log-sum-exp's special rows, and the derivative kernels. Planted
bugs (a missing barrier, a short or overrunning last tile) must be caught.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import assert_close
from cuda_emulator import specs
from cuda_emulator.harness import EmulationError, build_module, convert, emulate

from jaxkeops.codegen.cuda import FAULTS, plan_launch, render_cuda
from jaxkeops.reductions import INDEX
from jaxkeops.testing import dense_reduce

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulation needs g++")

M, N, BLOCK = 37, 453, 32  # 2 row blocks, 15 tiles (the last one partial), 15 chunks
# (schedule, chunks, thread order): 4 chunks of 4 tiles (the last chunk and tile partial), or
# one tile per chunk; threads run forward, shuffled or in reverse between barriers.
SCHEDULES = [("rows", None, 0), ("split", 4, 2), ("split", None, 1)]
HALF_TOL = {"float16": 2e-3, "bfloat16": 1.6e-2}


@pytest.fixture(scope="session")
def kernels():
    catalog = specs.catalog_specs()
    derivatives = specs.derivative_specs()
    sources = {k: render_cuda(s, in_dtype=d, out_dtype=d) for k, (s, d) in catalog.items()}
    sources.update({k: render_cuda(s) for k, s in derivatives.items()})
    items = list(sources.items())
    with ThreadPoolExecutor(2) as pool:  # two translation units, one per core
        modules = list(pool.map(lambda part: build_module(dict(part), tag="emulated"),
                                [items[0::2], items[1::2]]))
    by_name = {name: m for m in modules for name in m.suffixes}
    return by_name, catalog, derivatives


def run(kernels, name, spec, arrays, **kw):
    return emulate(kernels[0][name], name, spec, arrays, **kw)


def check(got, spec, arrays, rtol=None, atol=None, ref_arrays=None):
    ref = dense_reduce(spec, ref_arrays or arrays)
    assert len(got) == len(ref)
    for g, r, out in zip(got, ref, spec.outputs):
        r = np.asarray(r)
        if out.kind == INDEX:
            np.testing.assert_array_equal(g, r)
        else:  # half-precision outputs are checked with explicit tolerances
            assert_close(g, r, "float32" if g.dtype.itemsize < 4 else g.dtype, rtol=rtol,
                         atol=atol)


def data(spec, m=M, n=N, seed=0, dtype=None):
    return specs.random_arrays(spec, m, n, np.random.default_rng(seed), dtype=dtype)


@pytest.mark.parametrize("schedule, chunks, order", SCHEDULES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(specs.CATALOG))
def test_every_reduction(kernels, name, dtype, schedule, chunks, order):
    key = f"{name}_{dtype}"
    spec = kernels[1][key][0]
    arrays = data(spec)
    got = run(kernels, key, spec, arrays, schedule=schedule, block=BLOCK, chunks=chunks,
              order=order)
    check(got, spec, arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("dtype", specs.HALF_DTYPES)
@pytest.mark.parametrize("name", list(specs.CATALOG))
def test_half_precision_storage(kernels, name, dtype, schedule):
    """float16/bfloat16 operands and outputs, float32 arithmetic: the reference computes in
    float32 on the same (rounded) inputs, so only the output rounding differs."""
    key = f"{name}_{dtype}"
    spec = kernels[1][key][0]
    arrays = [a.astype(np.float32) for a in data(spec)]
    stored = [a.astype(np.float16) if dtype == "float16" else a for a in arrays]
    if dtype == "bfloat16":
        import ml_dtypes

        stored = [a.astype(ml_dtypes.bfloat16) for a in arrays]
    ref_arrays = [a.astype(np.float32) for a in stored]
    got = run(kernels, key, spec, stored, out_dtype=dtype, schedule=schedule, block=BLOCK)
    for g, out in zip(got, spec.outputs):
        assert g.dtype == (np.int32 if out.kind == INDEX else stored[0].dtype)
    check(got, spec, stored, rtol=HALF_TOL[dtype], atol=HALF_TOL[dtype], ref_arrays=ref_arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", specs.AXIS0)
def test_reduction_over_i(kernels, name, schedule):
    spec = kernels[1][f"{name}_axis0"][0]
    arrays = data(spec, m=300, n=41)
    got = run(kernels, f"{name}_axis0", spec, arrays, schedule=schedule, block=BLOCK)
    check(got, spec, arrays)


@pytest.mark.parametrize("name, m, n, split", [
    ("sum_float32", 200, 500, False), ("lse_weighted_float32", 200, 500, False),
    ("sum_float32", 5, 3500, True), ("kmin_argkmin_float64", 3, 3500, True),
    ("ssw_float32", 7, 3500, True),
])
def test_default_launch_plan(kernels, name, m, n, split):
    """The plan the lowering picks (block 192, split chosen by the heuristic)."""
    spec = kernels[1][name][0]
    arrays = data(spec, m=m, n=n)
    plan = plan_launch(spec, m, n, 1)
    assert plan.block == 192 and plan.split == split
    check(run(kernels, name, spec, arrays, plan=plan), spec, arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["sum_float32", "kmin_argkmin_float64", "lse_weighted_float32",
                                  "sum_kahan"])
def test_batch_dims_broadcast(kernels, name, schedule):
    """Leading batch dims with stride-0 broadcasting, more batch elements than the grid holds
    (the kernels loop over gridDim.y)."""
    spec = kernels[1][name][0]
    rng = np.random.default_rng(3)
    shapes = {0: (2, 1, 19, 3), 1: (1, 3, 70, 3), 2: (2, 3, 70, 2), 3: (2, 1, 1)}
    arrays = [(rng.standard_normal(shapes[i]) * 0.5).astype(spec.dtype) for i in range(4)]
    arrays[3] = np.abs(arrays[3]) + 0.2
    got = run(kernels, name, spec, arrays, schedule=schedule, block=BLOCK, max_grid_y=4)
    assert got[0].shape[:2] == (2, 3)
    check(got, spec, arrays)


def test_int64_indices_and_kahan(kernels):
    for name in ("argkmin_int64", "kmin_argkmin_int64", "sum_kahan"):
        spec = kernels[1][name][0]
        arrays = data(spec)
        for schedule in ("rows", "split"):
            got = run(kernels, name, spec, arrays, schedule=schedule, block=BLOCK)
            if spec.index_dtype == "int64":
                assert got[-1].dtype == np.int64
            check(got, spec, arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["argmin", "min_argmin", "max_argmax", "argkmin",
                                  "kmin_argkmin"])
def test_ties_go_to_the_smallest_index(kernels, name, schedule):
    """Integer-valued data: every value is exact, ties are everywhere, across tiles and chunks."""
    spec = kernels[1][f"{name}_float32"][0]
    rng = np.random.default_rng(5)
    arrays = [rng.integers(-1, 2, a.shape).astype(np.float32) for a in data(spec)]
    arrays[3] = np.ones(1, np.float32)
    got = run(kernels, f"{name}_float32", spec, arrays, schedule=schedule, block=BLOCK)
    check(got, spec, arrays)
    same = [a.copy() for a in arrays]  # y identical for every j: all values tie
    same[1][:] = 1.0
    same[2][:] = 1.0
    got = run(kernels, f"{name}_float32", spec, same, schedule=schedule, block=BLOCK)
    check(got, spec, same)
    first = np.asarray(got[-1]).reshape(M, -1)
    assert first.min() == 0 and first.max() <= (spec.k or 1) - 1


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["min_argmin", "max_argmax", "kmin_argkmin", "lse", "sum"])
def test_nan_propagation(kernels, name, schedule):
    spec = kernels[1][f"{name}_float32"][0]
    arrays = data(spec)
    arrays[1][5, 0] = np.nan  # in the first tile and chunk
    arrays[1][300, 1] = np.nan  # in a later one
    got = run(kernels, f"{name}_float32", spec, arrays, schedule=schedule, block=BLOCK)
    if name in ("min_argmin", "max_argmax"):
        # The first NaN wins (jnp.argmin's rule). Not checked against dense_reduce: XLA's CPU
        # min/max reductions over a long axis may drop NaNs (jnp.min gives a finite value here
        # while jnp.argmin points at the NaN).
        assert np.isnan(got[0]).all() and (got[1] == 5).all()
        return
    if name == "kmin_argkmin":  # a NaN ranks after +inf (lax.top_k order): far from the K smallest
        assert np.isfinite(got[0]).all() and not np.isin(got[1], [5, 300]).any()
        return
    check(got, spec, arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["lse", "lse_weighted", "ssw"])
def test_all_minus_inf(kernels, name, schedule):
    """-s |x - y|^2 with s = inf: every term is -inf. LSE gives -inf, the softmax 0/0 = NaN,
    never a NaN from (-inf) - (-inf) in LSE."""
    spec = kernels[1][f"{name}_float32"][0]
    arrays = data(spec)
    arrays[3][:] = np.inf
    got = run(kernels, f"{name}_float32", spec, arrays, schedule=schedule, block=BLOCK)
    if name.startswith("lse"):
        assert (got[0] == -np.inf).all()
    check(got, spec, arrays)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_k_larger_than_n_pads(kernels, dtype):
    spec = kernels[1][f"kmin_argkmin_{dtype}"][0]
    arrays = data(spec, n=2)
    got = run(kernels, f"kmin_argkmin_{dtype}", spec, arrays, block=BLOCK)
    values, indices = (np.asarray(g) for g in got)
    assert (values[:, 2] == np.inf).all() and (indices[:, 2] == -1).all()
    check(got, spec, arrays)


def test_empty_axes(kernels):
    spec = kernels[1]["kmin_argkmin_float32"][0]
    got = run(kernels, "kmin_argkmin_float32", spec, data(spec, n=0), block=BLOCK)
    assert (got[0] == np.inf).all() and (got[1] == -1).all()
    spec = kernels[1]["sum_float32"][0]
    assert (run(kernels, "sum_float32", spec, data(spec, n=0), block=BLOCK)[0] == 0).all()
    assert run(kernels, "sum_float32", spec, data(spec, m=0), block=BLOCK)[0].shape == (0, 2)


@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_derivative_kernels(kernels, schedule):
    """Every kernel that grad/jvp of the catalog reductions generate (Sums of transposed or
    differentiated formulas over either axis, LogSumExp, Arg* selections)."""
    for seed, (name, spec) in enumerate(kernels[2].items()):
        arrays = data(spec, seed=seed)
        got = run(kernels, name, spec, arrays, schedule=schedule, block=BLOCK)
        check(got, spec, arrays)


# ----------------------------------------------------------------------------------------------
# Sum schemes, float64 accumulators and the signed log-sum-exp.
@pytest.mark.parametrize("schedule, chunks, order", SCHEDULES)
@pytest.mark.parametrize("name", list(specs.ACCURACY))
def test_sum_schemes_and_accumulators(kernels, name, schedule, chunks, order):
    spec = kernels[1][name][0]
    assert spec.sum_scheme == specs.ACCURACY[name][1]
    arrays = data(spec)
    got = run(kernels, name, spec, arrays, schedule=schedule, block=BLOCK, chunks=chunks,
              order=order)
    assert all(g.dtype == np.float32 for g in got)
    check(got, spec, arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_float64_accumulator_with_float16_storage(kernels, schedule):
    spec = kernels[1]["sum_acc64_float16"][0]
    stored = [a.astype(np.float16) for a in data(spec)]
    got = run(kernels, "sum_acc64_float16", spec, stored, out_dtype="float16",
              schedule=schedule, block=BLOCK)
    assert got[0].dtype == np.float16
    check(got, spec, stored, rtol=HALF_TOL["float16"], atol=HALF_TOL["float16"],
          ref_arrays=[a.astype(np.float32) for a in stored])


def _cancelling_weights(n: int, rng) -> np.ndarray:
    """Runs of 5000 terms near +1e4, then near -1e4: float32 sums of them lose most digits."""
    runs = np.where((np.arange(n) // 5000) % 2 == 0, 1e4, -1e4)[:, None]
    return (runs + rng.uniform(0, 1, (n, 2))).astype(np.float32)


@pytest.mark.parametrize("schedule", ["rows", None])  # None: the plan's split, 116 chunks
def test_sum_accuracy_ranks_the_schemes(kernels, schedule):
    """s = 0 makes every term exactly b_j: the float64 sum of the float32 b is exact. One thread
    summing 2e5 terms in float32 (direct) loses most digits, tile sums (block) fewer, Kahan
    and float64 accumulators keep them all, chunks merged included."""
    rng = np.random.default_rng(11)
    n = 200_003
    spec = kernels[1]["sum_float32"][0]
    arrays = data(spec, m=3, n=n)
    arrays[2] = _cancelling_weights(n, rng)
    arrays[3][:] = 0
    exact = arrays[2].astype(np.float64).sum(0)
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    errors = {}
    for name in ("sum_direct", "sum_float32", "sum_kahan", "sum_acc64", "sum_direct_acc64",
                 "sum_kahan_acc64"):
        got = run(kernels, name, kernels[1][name][0], arrays, schedule=schedule, block=192)
        errors[name] = (np.abs(got[0].astype(np.float64) - exact) / ulp).max()
    for name in ("sum_acc64", "sum_direct_acc64", "sum_kahan_acc64"):
        assert errors[name] <= 0.5, errors  # only the final rounding to float32
    assert errors["sum_kahan"] <= 1.0, errors
    assert errors["sum_direct"] > 3 * errors["sum_float32"] > 30, errors


@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_signed_logsumexp_special_rows(kernels, schedule):
    """With s = 0 every term is exp(0) b_j = b_j: rows whose weights are all negative, cancel
    exactly, are all zero, or mixed; and s = -inf, where every term is +inf (inf b_j)."""
    spec = kernels[1]["lse_signed_float32"][0]
    n = 300
    arrays = data(spec, m=4, n=n)
    base = np.random.default_rng(2).uniform(0.5, 1.5, (n, 1)).astype(np.float32)
    b = np.concatenate([-base, np.where(np.arange(n)[:, None] % 2 == 0, 1, -1) * base.mean()],
                       axis=1).astype(np.float32)
    arrays[2] = b
    arrays[3][:] = 0
    got = run(kernels, "lse_signed_float32", spec, arrays, schedule=schedule, block=BLOCK)
    check(got, spec, arrays)
    value, sign = got
    assert (sign[:, 0] == -1).all()  # all negative
    assert (sign[:, 1] == 0).all() and (value[:, 1] == -np.inf).all()  # exact cancellation
    arrays[2] = np.zeros_like(b)
    value, sign = run(kernels, "lse_signed_float32", spec, arrays, schedule=schedule,
                      block=BLOCK)
    assert (value == -np.inf).all() and (sign == 0).all()
    arrays[2] = b
    arrays[3][:] = -np.inf
    got = run(kernels, "lse_signed_float32", spec, arrays, schedule=schedule, block=BLOCK)
    check(got, spec, arrays)
    value, sign = got
    assert (value[:, 0] == np.inf).all() and (sign[:, 0] == -1).all()
    assert np.isnan(value[:, 1]).all()  # inf - inf, as in jax.nn.logsumexp


# ----------------------------------------------------------------------------------------------
# Planted bugs: each must fail, by a detected race or bad access or by a wrong result.
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_planted_schedule_bug_is_caught(fault):
    spec = specs.reduction_spec("sum")
    module = build_module({"faulty": render_cuda(spec, faults=(fault,))}, tag=f"fault-{fault}")
    arrays = data(spec)
    ref = np.asarray(dense_reduce(spec, arrays)[0])
    caught = []
    for schedule in ("rows", "split"):
        try:
            got = emulate(module, "faulty", spec, arrays, schedule=schedule, block=BLOCK,
                          chunks=4)
            caught.append(not np.allclose(got[0], ref, rtol=1e-4, atol=1e-4))
        except EmulationError as e:
            caught.append(True)
            assert any(w in str(e) for w in ("race", "no thread", "out of bounds")), e
    assert all(caught), f"{fault} went unnoticed: {caught}"


def test_emulator_reports_a_missing_barrier_as_a_race():
    spec = specs.reduction_spec("sum")
    module = build_module({"faulty": render_cuda(spec, faults=("no_barrier_after_tile",))},
                          tag="fault-no_barrier_after_tile")
    for order in (0, 1, 2):
        with pytest.raises(EmulationError, match="data race on shared memory"):
            emulate(module, "faulty", spec, data(spec), schedule="rows", block=BLOCK,
                    order=order)


# ----------------------------------------------------------------------------------------------
# Storage conversions of half-precision operands.
def test_float16_conversions_are_exact_and_round_to_nearest_even():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    got = convert("float16", bits)
    assert np.array_equal(got, expected, equal_nan=True)
    rng = np.random.default_rng(0)
    floats = np.concatenate([
        rng.integers(0, 1 << 32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        expected[np.isfinite(expected)],
        (expected[np.isfinite(expected)].astype(np.float64) * (1 + 2.0**-11)).astype(np.float32),
        np.float32([65504, 65519.99, 65520, 2.0**-25, 2.0**-25 * 1.0001, 2.0**-24 * 1.5,
                    np.inf, -np.inf, np.nan]),
    ])
    with np.errstate(over="ignore"):
        ref = floats.astype(np.float16)
    got = convert("float16", floats).view(np.float16)
    same = (got.view(np.uint16) == ref.view(np.uint16)) | (np.isnan(got) & np.isnan(ref))
    assert same.all(), floats[~same][:10]


def test_bfloat16_conversions_round_to_nearest_even():
    import ml_dtypes

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    expected = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(convert("bfloat16", bits), expected, equal_nan=True)
    rng = np.random.default_rng(1)
    floats = rng.integers(0, 1 << 32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    with np.errstate(invalid="ignore"):  # NaN inputs
        ref = floats.astype(ml_dtypes.bfloat16)
    got = convert("bfloat16", floats).view(ml_dtypes.bfloat16)
    same = (got.view(np.uint16) == ref.view(np.uint16)) | (np.isnan(got.astype(np.float32)) &
                                                          np.isnan(ref.astype(np.float32)))
    assert same.all()
