"""Block-sparse reductions (KeOps's `ranges`) on the CUDA backend, without a GPU: the kernels of
a ranged Sum, LogSumExp, ArgMin and KMin_ArgKMin compile with NVRTC and nvcc; under the CPU
emulation of CUDA (tests/cuda_emulator) they reduce over i and over j exactly the pairs the
6-tuple keeps (against test_ranges's per-row float64 reference), with rows in no range, a
cluster that keeps nothing, empty clusters and blocks whose rows span several ranges, in both
schedules and thread orders; a corrupted tuple never makes the kernel read outside a buffer;
and the lowering passes the 3 range arrays of the reduced axis with `ranged = 1`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import pytest
from cuda_emulator.harness import (
    INCLUDE,
    KINDS,
    OUTPUT,
    SCRATCH,
    EmulationError,
    build_module,
    bundle,
    call_emulator,
    kernel_operands,
)
from test_ranges import K, compare, genred, reference

from jaxkeops.cluster import cluster_ranges, from_matrix, grid_cluster, sort_clusters
from jaxkeops.codegen.cuda import plan_launch, render_cuda
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.reductions import INDEX, REDUCTIONS
from jaxkeops.runtime import cuda_build
from jaxkeops.runtime.nvrtc import find_nvrtc

M, N, BLOCK = 61, 53, 16  # 4 row blocks of 16 (the last one partial) for either axis
RANGES = -1  # the kind of a range array (jk::launch::RANGES in cuda_launch.h)
NAMES = ("Sum", "LogSumExp", "ArgMin", "KMin_ArgKMin")
# The reference's log of an empty (or signed) sum: -inf or NaN, as the kernels give.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")
needs_gpp = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulation needs g++")


def ranged_spec(name: str, axis: int) -> KernelSpec:
    """test_ranges's formula, -|x_i - y_j|^2, with w as LogSumExp's weight, in float64."""
    x, y = Var(0, 2, CAT_I), Var(1, 2, CAT_J)
    w = Var(2, 2, CAT_J if axis == 1 else CAT_I)
    formulas = (make("Minus", make("SqDist", x, y)),)
    args = (x, y)
    if REDUCTIONS[name].n_formulas == 2:
        formulas, args = (*formulas, w), (x, y, w)
    return KernelSpec(formulas, name, axis, "float64", k=K if REDUCTIONS[name].needs_k else None,
                      args=args, ranged=True)


def sources() -> dict[str, str]:
    return {f"{name.lower()}_{axis}": render_cuda(ranged_spec(name, axis))
            for name in NAMES for axis in (0, 1)}


def clustered(seed: int = 0):
    """Sorted points in [0, 1]^2 with grid clusters of side 0.3 (about 7 rows each, some
    empty), and a tuple from a random cluster-cluster `keep` where i-cluster 1 and j-cluster 1
    keep nothing and one cluster of each axis is left out of the tuple (its rows are in no
    range: reduced over nothing, and never reduced over). Returns x, y, the weights of either
    axis, the tuple and the (M, N) mask of kept pairs."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(size=(M, 2)), rng.uniform(size=(N, 2))
    x, lx = sort_clusters(x, grid_cluster(x, 0.3))
    y, ly = sort_clusters(y, grid_cluster(y, 0.3))
    x, y, lx, ly = map(np.asarray, (x, y, lx, ly))
    rx, ry = np.asarray(cluster_ranges(lx)), np.asarray(cluster_ranges(ly))
    keep = rng.uniform(size=(len(rx), len(ry))) < 0.5
    keep[1], keep[:, 1] = False, False
    gone_i, gone_j = len(rx) // 2, len(ry) // 2
    ranges = from_matrix(np.delete(rx, gone_i, 0), np.delete(ry, gone_j, 0),
                         np.delete(np.delete(keep, gone_i, 0), gone_j, 1))
    keep[gone_i], keep[:, gone_j] = False, False
    mask = keep[lx][:, ly]
    weights = {1: rng.normal(size=(N, 2)), 0: rng.normal(size=(M, 2))}
    return x, y, weights, tuple(np.asarray(r) for r in ranges), mask


def emulate_ranged(module, name: str, spec: KernelSpec, arrays, ranges, *, schedule="rows",
                   chunks=None, order=0, range_arrays=None):
    """The outputs of `spec` on `arrays` (Genred layout) with the 6-tuple `ranges`, computed by
    the emulated kernel: harness.emulate's call with the 3 range arrays of the reduced axis
    (kind RANGES) after the inputs, as the launcher passes them. `range_arrays` overrides them."""
    ops, batch, n_i, n_j = kernel_operands(spec, arrays)
    n_out, n_red = (n_i, n_j) if spec.axis == 1 else (n_j, n_i)
    plan = plan_launch(spec, n_out, n_red, int(np.prod(batch)) if batch else 1,
                       schedule=schedule, block=BLOCK, chunks=chunks)
    half = ranges[:3] if spec.axis == 1 else ranges[3:]
    if range_arrays is None:
        range_arrays = [np.ascontiguousarray(r, np.int32) for r in half]
    outs = [np.full(batch + (n_out, out.width), -7 if out.kind == INDEX else 12345,
                    np.int32 if out.kind == INDEX else spec.dtype) for out in spec.outputs]
    bufs = [(a, KINDS[r]) for a, r in zip(ops, spec.roles)]
    bufs += [(r, RANGES) for r in range_arrays] + [(o, OUTPUT) for o in outs]
    if plan.split:
        bufs.append((np.full(plan.scratch_bytes, 0xFF, np.uint8), SCRATCH))
    config = [len(batch), n_red, plan.block, plan.smem_bytes, plan.n_chunks, plan.chunk_len,
              65535]
    call_emulator(module, name, bufs, config, order)
    return tuple(o.reshape(batch + (n_out,) + out.shape) for o, out in zip(outs, spec.outputs))


@pytest.fixture(scope="module")
def kernels():
    items = list(sources().items())
    with ThreadPoolExecutor(2) as pool:  # two translation units, one per core
        modules = list(pool.map(lambda part: build_module(dict(part), tag="ranged"),
                                [items[0::2], items[1::2]]))
    return {name: m for m in modules for name in m.suffixes}


@pytest.fixture(scope="module")
def data():
    return clustered()


def run(kernels, name, axis, data, **kw):
    x, y, weights, ranges, _ = data
    spec = ranged_spec(name, axis)
    arrays = (x, y, weights[axis])[:len(spec.args)]
    return emulate_ranged(kernels[f"{name.lower()}_{axis}"], f"{name.lower()}_{axis}", spec,
                          arrays, ranges, **kw)


# ----------------------------------------------------------------------------------------------
# The data exercise what they should.
def test_the_tuple_has_rows_in_no_range_and_blocks_across_ranges(data):
    x, y, weights, ranges, mask = data
    for rows, slices, n in ((ranges[0], ranges[1], M), (ranges[3], ranges[4], N)):
        covered = np.zeros(n, bool)
        for a, b in rows:
            covered[a:b] = True
        assert not covered.all()  # rows in no range
        assert (np.diff(np.concatenate([[0], slices])) == 0).any()  # a range keeping nothing
        for start in range(0, n, BLOCK):  # every block meets several non-empty ranges
            met = [(a, b) for a, b in rows if a < min(start + BLOCK, n) and b > start and b > a]
            assert len(met) >= 2
    assert mask.any(1).sum() < M and mask.any(0).sum() < N and mask.mean() > 0.2


# ----------------------------------------------------------------------------------------------
# Emulation against the dense float64 reference of the kept pairs.
@needs_gpp
@pytest.mark.parametrize("order", [0, 2])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_ranged_reduction_under_emulation(kernels, data, name, axis, order):
    x, y, weights, ranges, mask = data
    got = run(kernels, name, axis, data, order=order)
    compare(got, reference(name, axis, x, y, weights[axis], mask), name)


def fine_ranges(rng, n_out: int, n_red: int):
    """A hand-made half of a tuple with ranges of 1 to 3 rows (so that range ends fall on every
    row of a block) and gaps, each range with 0 to 3 sorted disjoint intervals; and the
    (n_out, n_red) mask of kept pairs."""
    rows, slices, red = [], [], []
    mask = np.zeros((n_out, n_red), bool)
    start = 0
    while start < n_out:
        end = min(n_out, start + int(rng.integers(1, 4)))
        if rng.uniform() < 0.8:
            cuts = np.sort(rng.choice(n_red + 1, size=2 * int(rng.integers(0, 4)), replace=False))
            for a, b in cuts.reshape(-1, 2):
                red.append((a, b))
                mask[start:end, a:b] = True
            rows.append((start, end))
            slices.append(len(red))
        start = end
    arrays = (np.array(rows, np.int32).reshape(-1, 2), np.array(slices, np.int32),
              np.array(red, np.int32).reshape(-1, 2))
    return arrays, mask


@needs_gpp
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["Sum", "KMin_ArgKMin"])
def test_short_ranges_ending_anywhere_in_a_block(kernels, data, name, axis):
    x, y, weights, _, _ = data
    rng = np.random.default_rng(10 + axis)
    arrays, mask = fine_ranges(rng, M if axis == 1 else N, N if axis == 1 else M)
    got = run(kernels, name, axis, data, range_arrays=arrays)
    compare(got, reference(name, axis, x, y, weights[axis], mask if axis == 1 else mask.T),
            name)


@needs_gpp
@pytest.mark.parametrize("name", ["Sum", "KMin_ArgKMin"])
def test_split_schedule_cuts_intervals_at_chunks(kernels, data, name):
    """The lowering uses the rows schedule for ranged calls, but the kernel is right split too:
    chunks of one tile cut most intervals."""
    x, y, weights, ranges, mask = data
    for axis in (0, 1):
        got = run(kernels, name, axis, data, schedule="split", order=1)
        compare(got, reference(name, axis, x, y, weights[axis], mask), name)


@needs_gpp
def test_batch_elements_share_the_tuple(kernels, data):
    x, y, weights, ranges, mask = data
    xb = np.stack([x, x + 0.05, x[::-1]])  # (3, M, 2) against one y: every element is ranged
    spec = ranged_spec("LogSumExp", 1)
    got = emulate_ranged(kernels["logsumexp_1"], "logsumexp_1", spec, (xb, y, weights[1]),
                         ranges)[0]
    for b in range(3):
        compare(got[b], reference("LogSumExp", 1, xb[b], y, weights[1], mask), "LogSumExp")


@needs_gpp
@pytest.mark.parametrize("corrupt", [
    lambda r: (r[0][::-1].copy(), r[1], r[2]),  # unsorted row ranges
    lambda r: (r[0] + 1000, r[1], r[2]),  # row ranges past the end
    lambda r: (r[0], r[1] * 0 + 10**6, r[2]),  # slices past the end of redranges
    lambda r: (r[0], r[1][::-1].copy(), r[2]),  # decreasing slices
    lambda r: (r[0], r[1], np.stack([r[2][:, 0] - 500, r[2][:, 1] + 10**9], 1)),
    lambda r: (r[0], r[1], r[2][:, ::-1].copy()),  # reversed intervals
])
def test_bad_values_never_read_outside_a_buffer(kernels, data, corrupt):
    """The host cannot read the tuple: the kernel clamps every bound (results unspecified, but
    the emulation checks every global and shared memory access)."""
    x, y, weights, ranges, _ = data
    for name in ("Sum", "ArgMin"):
        bad = [np.ascontiguousarray(a, np.int32) for a in corrupt(ranges[:3])]
        got = run(kernels, name, 1, data, range_arrays=bad)
        if name == "ArgMin":
            assert ((got[0] >= -1) & (got[0] < N)).all()


@needs_gpp
def test_bad_range_shapes_are_reported_by_the_launcher(kernels, data):
    x, y, weights, ranges, _ = data
    with pytest.raises(EmulationError, match=r"slices has shape \(\d+,\) but ranges"):
        run(kernels, "Sum", 1, data, range_arrays=[ranges[0], ranges[1][:-1], ranges[2]])
    with pytest.raises(EmulationError, match="redranges must be int32 of shape"):
        run(kernels, "Sum", 1, data,
            range_arrays=[ranges[0], ranges[1], ranges[2].astype(np.int64)])


# ----------------------------------------------------------------------------------------------
# Compilation for the GPU.
def test_nvrtc_compiles_the_ranged_kernels():
    nvrtc = find_nvrtc()
    if nvrtc is None:
        pytest.skip('NVRTC not found (pip install "jaxkeops[cuda12]")')
    options = [*cuda_build.OPTIONS, "-arch=sm_90", f"-I{INCLUDE}"]
    result = nvrtc.compile(bundle(sources()), "ranged_sm90.cu", options)
    assert result.ok, result.log[-8000:]
    assert result.image.startswith(b"\x7fELF")


@pytest.mark.slow
def test_nvcc_compiles_the_ranged_kernels(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    path = tmp_path / "ranged.cu"
    path.write_text(bundle(sources()))
    cmd = [nvcc, "--fatbin", "-gencode=arch=compute_80,code=sm_80", *cuda_build.OPTIONS,
           f"-I{INCLUDE}", str(path), "-o", str(tmp_path / "ranged.fatbin")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]


# ----------------------------------------------------------------------------------------------
# Lowering for platform "cuda" (no GPU needed).
def cuda_calls(f, *args) -> list[str]:
    text = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    return [line for line in text.splitlines() if "stablehlo.custom_call @jaxkeops_cuda" in line]


def test_lowering_passes_the_ranges_of_the_reduced_axis():
    """The 3 arrays of the reduced axis follow the kernel's operands; with 5 output rows and
    4000 reduced ones the dense call takes the split schedule, the ranged one the rows one."""
    short, long = np.array([[0, 2], [2, 5]]), np.array([[0, 1000], [1000, 2500], [2500, 4000]])
    rng = np.random.default_rng(0)
    for axis in (0, 1):
        x = rng.normal(size=(5 if axis == 1 else 4000, 2)).astype(np.float32)
        y = rng.normal(size=(4000 if axis == 1 else 5, 2)).astype(np.float32)
        rx, ry = (short, long) if axis == 1 else (long, short)
        keep = np.arange(len(rx) * len(ry)).reshape(len(rx), len(ry)) % 3 != 1
        ranges = from_matrix(rx, ry, keep)
        (call,) = cuda_calls(lambda x, y, r=ranges, a=axis: genred("Sum", a)(x, y, ranges=r),
                             x, y)
        operands = re.search(r"@jaxkeops_cuda\(([^)]*)\)", call).group(1).split(", ")
        assert len(operands) == 5  # x, y, then ranges, slices, redranges
        assert re.search(r"\branged = 1\b", call) and re.search(r"\bn_chunks = 1\b", call)
        rows, slices, red = ranges[:3] if axis == 1 else ranges[3:]
        types = re.search(r":\s*\((.*)\)\s*->", call).group(1).split(", ")
        assert types[2:] == [f"tensor<{rows.shape[0]}x2xi32>", f"tensor<{slices.shape[0]}xi32>",
                             f"tensor<{red.shape[0]}x2xi32>"]
        (dense,) = cuda_calls(lambda x, y, a=axis: genred("Sum", a)(x, y), x, y)
        assert len(re.search(r"@jaxkeops_cuda\(([^)]*)\)", dense).group(1).split(", ")) == 2
        assert re.search(r"\branged = 0\b", dense)
        assert not re.search(r"\bn_chunks = 1\b", dense)  # split: the ranged call chose rows
