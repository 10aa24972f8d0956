"""KMin / ArgKMin on CUDA keep their K-lists in registers (issue 14), without a GPU.

The sorted list of each thread is only ever indexed by compile-time constants (unrolled
insertion, and a bitonic merge network for the split schedule, cuda_reductions.h), so NVRTC's
PTX for K = 10 (and up to 64 entries per thread) has no local memory at all: the
shift-from-the-end insertion it replaces made 375 ld.local / st.local in an ArgKMin kernel.
Under the CPU emulation, the K = 10 kernels (and a K = 40 one, whose 80 entries stay in local
memory) still give lax.top_k's order: ties kept in index order within and across tiles and
chunks (the split schedule merges up to 15 lists per row), NaN ranked last, padding when fewer
than K rows, over i and j, int32 and int64 indices.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import assert_close
from cuda_emulator.harness import build_module, emulate, nvrtc_ptx

from jaxkeops.codegen.cuda import render_cuda
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.reductions import INDEX
from jaxkeops.testing import dense_reduce

K = 10
X, Y, B = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 2, CAT_J)
VECTOR = make("Mult", make("SqDist", X, Y), B)  # two components, each with its own list
SCALAR = make("SqDist", X, Y)
M, N, BLOCK = 37, 453, 32


def kmin_spec(reduction="ArgKMin", formula=VECTOR, dtype="float32", index="int32", axis=1,
              k=K) -> KernelSpec:
    args = (X, Y, B) if formula is VECTOR else (X, Y)
    return KernelSpec((formula,), reduction, axis, dtype, index_dtype=index, k=k, args=args)


KERNELS = {
    "argkmin": kmin_spec(),
    "argkmin_k40_rolled": kmin_spec(k=40),  # 80 entries: not in registers
    "kmin": kmin_spec("KMin"),
    "both_f64_int64": kmin_spec("KMin_ArgKMin", dtype="float64", index="int64"),
    "both_axis0": kmin_spec("KMin_ArgKMin", SCALAR, axis=0),
}


def local_memory_accesses(source: str) -> dict[str, int]:
    ptx = nvrtc_ptx(source)
    assert ".entry jk_main_v2" in ptx and ".entry jk_combine_v2" in ptx
    return {op: len(re.findall(rf"\b{op}\.local\b", ptx)) for op in ("ld", "st")} | {
        "depot": len(re.findall(r"__local_depot", ptx))}


@pytest.mark.parametrize("name", [*(k for k in KERNELS if "rolled" not in k), "k32_scalar"])
def test_no_local_memory_in_the_ptx(name):
    spec = KERNELS.get(name) or kmin_spec(formula=SCALAR, k=32)
    assert local_memory_accesses(render_cuda(spec)) == {"ld": 0, "st": 0, "depot": 0}


def test_beyond_64_entries_the_lists_are_in_local_memory():
    """K * DIM > 64 cannot stay in registers (K = 64 already takes 152 of them): the loops are
    left rolled, which keeps such kernels as quick to compile as before."""
    accesses = local_memory_accesses(render_cuda(KERNELS["argkmin_k40_rolled"]))
    assert accesses["ld"] > 0 and accesses["depot"] > 0


def test_int32_indices_keep_int32_lists():
    assert "KMinReduction<float, 2, 10, false, true, int32_t>" in render_cuda(KERNELS["argkmin"])
    assert "int64_t>" in render_cuda(KERNELS["both_f64_int64"])


# ----------------------------------------------------------------------------------------------
# Emulation against the dense reference (lax.top_k order).
@pytest.fixture(scope="module")
def kernels():
    if shutil.which("g++") is None:
        pytest.skip("the emulation needs g++")
    return build_module({k: render_cuda(s) for k, s in KERNELS.items()}, tag="kmin")


def arrays_for(spec: KernelSpec, rng, m=M, n=N, integers=False):
    rows = {CAT_I: m, CAT_J: n}
    out = []
    for v in spec.args:
        shape = (rows[v.cat], v.dim)
        a = rng.integers(-1, 2, shape) if integers else rng.normal(size=shape)
        out.append(a.astype(spec.dtype))
    return out


def check(got, spec, arrays):
    ref = dense_reduce(spec, arrays)
    for g, r, out in zip(got, ref, spec.outputs):
        r = np.asarray(r)
        if out.kind == INDEX:
            np.testing.assert_array_equal(g, r)
        else:
            assert_close(g, r, spec.dtype)


SCHEDULES = [("rows", None, 0), ("split", None, 2), ("split", 4, 1)]


@pytest.mark.parametrize("schedule, chunks, order", SCHEDULES)
@pytest.mark.parametrize("name", list(KERNELS))
def test_k10_against_the_dense_reference(kernels, name, schedule, chunks, order):
    spec = KERNELS[name]
    rng = np.random.default_rng(7)
    for integers in (False, True):  # integers: ties everywhere, across tiles and chunks
        arrays = arrays_for(spec, rng, integers=integers)
        got = emulate(kernels, name, spec, arrays, schedule=schedule, block=BLOCK,
                      chunks=chunks, order=order)
        check(got, spec, arrays)


@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_k10_nan_ranks_last_and_short_axes_pad(kernels, schedule):
    spec = KERNELS["both_f64_int64"]
    rng = np.random.default_rng(8)
    arrays = arrays_for(spec, rng)
    arrays[1][[3, 100, 200]] = np.nan  # three NaN rows: never among the 10 smallest
    values, indices = emulate(kernels, "both_f64_int64", spec, arrays, schedule=schedule,
                              block=BLOCK)
    assert np.isfinite(values).all() and not np.isin(indices, [3, 100, 200]).any()
    check((values, indices), spec, arrays)
    short = arrays_for(spec, rng, n=6)  # 6 rows for K = 10: 4 padding slots
    values, indices = emulate(kernels, "both_f64_int64", spec, short, schedule=schedule,
                              block=BLOCK)
    assert (indices[:, 6:] == -1).all() and (values[:, 6:] == np.inf).all()
    assert indices.dtype == np.int64
    ref = dense_reduce(spec, short)  # pads the same way
    np.testing.assert_array_equal(indices, np.asarray(ref[1]))
