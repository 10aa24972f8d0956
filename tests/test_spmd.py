"""Reductions under XLA's SPMD partitioner, on 4 forced host devices (a subprocess: the device
count is fixed when JAX starts; tests/_spmd_worker.py runs the cases).

For every reduction, with x split over i, y over j, or both on a 2 x 2 mesh, and for gradients,
JVPs, vmap and shard_map: the result equals the same reduction on one device (and a dense numpy
float64 reference where there is one), the compiled program gathers nothing, and each device's
kernel calls visit a quarter of the pairs (i, j).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_spmd_worker.py")
M, N, B = 16, 24, 4
SPLITS = ("i", "j", "ij")
REDUCTIONS = ("Sum", "Sum_axis0", "LogSumExp", "LogSumExp_weighted", "LogSumExpSigned",
              "SumSoftMaxWeight", "Min", "ArgMin", "Max_ArgMax", "KMin", "ArgKMin",
              "KMin_ArgKMin_vector", "KMax_ArgKMax")
TRANSFORMS = ("grad", "jvp", "grad_of_lse")
OTHER_SPLITS = ("same-axis", "same-axis-auto", "i-auto", "j-auto", "ij-auto")
CASES = ([f"{r}-{s}" for s in SPLITS for r in REDUCTIONS + TRANSFORMS]
         + [f"{r}-{s}" for s in OTHER_SPLITS for r in ("Sum", "LogSumExp", "ArgKMin", "grad")]
         + ["vmap-batch", "vmap-j", "shard_map-i"]
         + [f"{r}-j-inf-nan" for r in ("LogSumExp", "Min", "ArgMin", "KMin_ArgKMin_vector",
                                       "SumSoftMaxWeight")])
GSPMD_CASES = ["Sum-ij", "LogSumExp-j", "ArgKMin-j", "grad-ij"]


def _run_worker(**env) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in records}


@pytest.fixture(scope="module")
def shardy():
    return _run_worker()


@pytest.fixture(scope="module")
def gspmd():
    return _run_worker(JAXKEOPS_TEST_GSPMD="1", JAXKEOPS_TEST_SPMD_CASES=",".join(GSPMD_CASES))


def _check(record: dict, case: str) -> None:
    assert record["error"] <= 1e-12, f"{case}: differs from one device by {record['error']}"
    if "dense_error" in record:
        assert record["dense_error"] <= 1e-12, f"{case}: dense error {record['dense_error']}"
    # With x and y split over one mesh axis, the output rows take it and the reduced operand
    # (y, or x for the reductions over i of a gradient) is gathered: pairing every x_i with
    # every y_j needs it. Otherwise nothing may be gathered.
    if "same-axis" not in case:
        assert record["gathers"] == [], f"{case}: all-gathers of {record['gathers']}"
    assert record["calls"], f"{case}: no kernel call in the compiled program"
    if case.startswith("shard_map"):  # one call per device, on its own rows
        expected = M * N // 4
    elif case.startswith("vmap"):
        expected = B * M * N // 4
    else:
        expected = M * N // 4
    for call in record["calls"]:
        assert call["pairs"] == expected, f"{case}: a device's call visits {call}"


def test_every_case_ran(shardy):
    assert sorted(shardy) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_partitioned_reduction(shardy, case):
    _check(shardy[case], case)


@pytest.mark.parametrize("case", GSPMD_CASES)
def test_partitioned_reduction_without_shardy(gspmd, case):
    """The batch partitioner is XLA's, so the older GSPMD propagation splits the calls too."""
    _check(gspmd[case], case)
