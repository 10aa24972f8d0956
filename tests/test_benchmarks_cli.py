"""benchmarks/run.py's command line: --gpu on a machine without a GPU, and the plans that
--dry-run prints. Each runs the script in a new process; nothing is timed or compiled."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
GPU_METHODS = ("jaxkeops", "blocked JAX", "dense JAX", "pykeops")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          timeout=120)


def plan_lines(stdout: str) -> list[tuple[str, str]]:
    """(methods to time, methods not timed) of every point of a --dry-run plan."""
    rows = [line for line in stdout.splitlines() if " M=N=" in line]
    return [(row.split(" | ")[0].split(" time: ")[1], row.partition(" | ")[2]) for row in rows]


def cuda_visible() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


@pytest.mark.skipif(cuda_visible(), reason="a CUDA device is visible: --gpu would run")
def test_gpu_without_a_gpu_exits_with_a_clear_message(tmp_path):
    out = tmp_path / "gpu.md"
    proc = run("--gpu", "--quick", "--no-extras", "--out", str(out))
    assert proc.returncode != 0
    assert "no CUDA device visible to JAX" in proc.stderr
    assert "jax.devices() = [" in proc.stderr
    assert 'pip install -e ".[cuda12,bench]"' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_gpu_plan_lists_the_gpu_methods_and_no_reference_kernel():
    proc = run("--gpu", "--dry-run", "--quick")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("GPU plan (quick)")
    rows = plan_lines(proc.stdout)
    assert len(rows) == 4 * (3 + 2)  # 4 workloads; quick GPU sizes: 3 at D = 3, 2 at D = 64
    timed = " ".join(t for t, _ in rows)
    expected = GPU_METHODS if importlib.util.find_spec("pykeops") else GPU_METHODS[:-1]
    for method in expected:
        assert method in timed, method
    assert "pykeops" in proc.stdout  # timed, or "pykeops: not installed"
    assert "ref kernel" not in proc.stdout
    assert "needs 120 GB" in proc.stdout  # dense JAX at M = N = 1e5, D = 3 does not fit
    assert "benchmarks-gpu.md" in proc.stdout


def test_cpu_plan_keeps_the_reference_kernel():
    proc = run("--dry-run", "--quick", "--only", "gauss", "--dims", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CPU plan (quick)")
    assert len(plan_lines(proc.stdout)) == 2
    assert "ref kernel" in proc.stdout  # timed, or "ref kernel: not available"
    assert "benchmarks-gpu.md" not in proc.stdout


def test_gpu_mode_rejects_cpu_only_methods():
    proc = run("--gpu", "--dry-run", "--methods", "ref kernel")
    assert proc.returncode != 0
    assert "unknown GPU methods ['ref kernel']" in proc.stderr
    assert "Traceback" not in proc.stderr
