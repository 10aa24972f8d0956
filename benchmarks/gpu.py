"""GPU mode of run.py (`--gpu`): the device, its memory, pykeops on the GPU, the sizes, and the
parts of the report that differ from the CPU report.

Not yet run on a GPU: the development machine has none (see docs/gpu.md).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import jax
from methods import WORKLOADS, Setup
from points import find_point, fmt_s

# Sizes per D, summary sizes, repeats, per-point and per-call time limits, as run.MODES.
MODES = {
    "full": dict(sizes={3: [1e3, 1e4, 3e4, 1e5, 1e6, 1e7], 64: [1e3, 3e3, 1e4, 1e5, 1e6]},
                 ratio={3: 1_000_000, 64: 100_000}, max_runs=5, point_budget=10.0,
                 max_call=30.0, budget=1800.0, large_d_n=30_000, overhead_calls=2000),
    "quick": dict(sizes={3: [1e3, 1e4, 1e5], 64: [1e3, 1e4]}, ratio={3: 100_000, 64: 10_000},
                  max_runs=3, point_budget=1.0, max_call=3.0, budget=120.0, large_d_n=10_000,
                  overhead_calls=300),
}
# Rough throughputs (pairs * D / s) for a method's first estimate, before it was measured.
NOMINAL = {"jaxkeops": 3e12, "pykeops": 3e12, "dense JAX": 1e11, "blocked JAX": 5e10}
ASSUMED_MEMORY = 16 * 2**30  # bytes, when the device does not report its memory (or in a plan)
INSTALL = 'pip install -e ".[cuda12,bench]"'


def device_or_none():
    """(the first CUDA device JAX sees, or None, and why there is none)."""
    try:
        return jax.devices("cuda")[0], ""
    except RuntimeError as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    try:
        seen = repr(jax.devices())
    except RuntimeError as e:
        seen = f"none ({e})"
    env = os.environ.get("JAX_PLATFORMS")
    env = f"; JAX_PLATFORMS={env!r}" if env else ""
    return None, (f"no CUDA device visible to JAX: jax.devices() = {seen} ({why}{env}). "
                  f"On a machine with an NVIDIA GPU and driver, install JAX's CUDA plugin "
                  f"with `{INSTALL}` (jaxkeops[cuda12]); `--gpu --dry-run` prints the plan "
                  "without a GPU.")


def memory_limit(device) -> tuple[float, str]:
    """Bytes the dense and blocked intermediates may take: half the memory XLA may use on the
    device (the dense gradient holds about twice its M N D differences)."""
    stats = None
    try:
        stats = device.memory_stats() if device is not None else None
    except Exception:  # not implemented by some backends
        pass
    if stats and stats.get("bytes_limit"):
        total, how = float(stats["bytes_limit"]), "reported by the device"
    else:
        total = ASSUMED_MEMORY
        how = "assumed: no device" if device is None else "assumed: the device reported none"
    return total / 2, (f"{total / 2**30:.1f} GiB usable by XLA ({how}), dense and blocked JAX "
                       f"intermediates limited to {total / 2e9:.1f} GB")


@dataclass
class PykeopsGPU:
    """How pykeops runs on the GPU: with torch CUDA tensors, or numpy with backend="GPU"."""
    kind: str
    LazyTensor: type
    to_device: object = lambda a: a
    sync: object = lambda: None
    reduce_kw: dict = field(default_factory=dict)


def pykeops_gpu() -> tuple[PykeopsGPU | None, str]:
    """(how pykeops runs on the GPU, its description) or (None, why it cannot)."""
    try:
        import pykeops
    except Exception:
        return None, "not installed"
    if not pykeops.config.gpu_available:
        return None, ("pykeops found no CUDA (pykeops.config.gpu_available is False; it needs "
                      "the NVIDIA driver, NVRTC and the CUDA headers; see pykeops's install notes)")
    try:
        import torch
        cuda = torch.cuda.is_available()
    except Exception:
        cuda = False
    if cuda:
        from pykeops.torch import LazyTensor
        return PykeopsGPU(f"pykeops {pykeops.__version__} with torch {torch.__version__} CUDA "
                          "tensors (torch.cuda.synchronize() after each call)", LazyTensor,
                          lambda a: torch.from_numpy(a).cuda(), torch.cuda.synchronize), ""
    from pykeops.numpy import LazyTensor
    return PykeopsGPU(f"pykeops {pykeops.__version__} numpy arrays with backend=\"GPU\" (no "
                      "torch with CUDA: every call copies its inputs to the GPU and its output "
                      "back)", LazyTensor, reduce_kw={"backend": "GPU"}), ""


def setup(device, info: dict | None) -> Setup:
    """The GPU methods' setup, and the report's GPU lines in `info`. device None (a plan on a
    machine without a GPU): the assumed memory, pykeops if it is installed."""
    mem_limit, memory = memory_limit(device)
    if device is None:
        found = importlib.util.find_spec("pykeops") is not None
        return Setup(mem_limit=mem_limit, pykeops=None if found else "not installed")
    pk, why = pykeops_gpu()
    if info is not None:
        info.update(gpu=describe(device, memory), pykeops_gpu=pk.kind if pk else why,
                    mem_limit=mem_limit)
    return Setup(device=device, mem_limit=mem_limit, pykeops_gpu=pk,
                 pykeops=None if pk else "not installed" if why == "not installed"
                 else "not available")


def _driver() -> str:
    smi = shutil.which("nvidia-smi")
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30) if smi else None
        if out and out.returncode == 0 and out.stdout.strip():
            return f"NVIDIA driver {out.stdout.split()[0]}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        v = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"CUDA driver API {v.value // 1000}.{v.value % 1000 // 10}"
    except (OSError, AttributeError):
        pass
    return "driver version unknown"


def _versions(*dists) -> str:
    found = []
    for d in dists:
        try:
            found.append(f"{d} {importlib.metadata.version(d)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def describe(device, memory: str) -> dict:
    """The report's GPU line."""
    try:
        from jaxkeops.runtime.cuda_build import find_cuda_compiler
        c = find_cuda_compiler()
        compiler = f"{c.kind} {c.version}"
    except Exception as e:
        compiler = f"none found ({type(e).__name__})"
    cc = getattr(device, "compute_capability", None)
    return {"name": device.device_kind + (f" (compute capability {cc})" if cc else ""),
            "count": len(jax.devices(device.platform)), "memory": memory, "driver": _driver(),
            "plugin": _versions("jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt",
                                "jax-cuda13-plugin", "jax-cuda13-pjrt")
            or "jaxlib version unknown", "compiler": compiler}


# ---------------------------------------------------------------- report
def header(info) -> list[str]:
    cfg, g = info["cfg"], info["gpu"]
    return [
        "# jaxkeops benchmarks on the GPU", "", "```", info["command"], "```", "",
        f"- Date: {info['date']}; total wall time {info['elapsed'] / 60:.1f} min "
        f"({info['mode']} mode).",
        f"- GPU: {g['name']}, {g['memory']}; {g['count']} CUDA device(s) visible, the first "
        f"used; {g['driver']}.",
        f"- Host: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM; load average "
        f"{info['load']} at the start, {info['load_end']} at the end.",
        f"- Software: jax {info['jax']} ({g['plugin']}), jaxkeops {info['jaxkeops']} (CUDA "
        f"kernels compiled by {g['compiler']}); pykeops: {info['pykeops_gpu']}.",
        f"- Times are **medians** of up to {cfg['max_runs']} runs per method (about "
        f"{cfg['point_budget']:g} s of runs per method and point; the count is in the `runs` "
        "column), all methods of a point run in alternation in one process after compilation "
        "and one warm-up call; every call waits for the GPU (`jax.block_until_ready`, "
        "`torch.cuda.synchronize()`). Inputs are on the GPU before the call (except pykeops "
        "without torch, see above). Calls estimated (quadratically, from the method's previous "
        f"size) to take over {cfg['max_call']:g} s are skipped and marked with their estimate.",
        "- Data: float32, x and y drawn from N(0, I/D), as in the CPU report "
        "([benchmarks.md](benchmarks.md)).", ""]


def summary(info, points) -> list[str]:
    ratio = info["cfg"]["ratio"]
    lines = ["## Summary", "",
             "Time of each method and its ratio to jaxkeops (> 1: jaxkeops is faster); "
             "`~` = estimated, skipped.", "",
             "| workload | D | M = N | jaxkeops | pykeops | blocked JAX | dense JAX "
             "| pykeops / jaxkeops | blocked / jaxkeops |", "|---|---|---|---|---|---|---|---|---|"]
    for d in sorted({p.d for p in points}):
        for w in WORKLOADS:
            done = [p.n for p in points if (p.workload, p.d, p.method) == (w, d, "jaxkeops")
                    and p.timing]
            if not done:
                continue
            n = ratio.get(d) if ratio.get(d) in done else max(done)
            t_jk = find_point(points, w, d, n, "jaxkeops").timing.median
            cells, ratios = [fmt_s(t_jk)], []
            for m in ("pykeops", "blocked JAX", "dense JAX"):
                p = find_point(points, w, d, n, m)
                t = None if p is None else p.timing.median if p.timing else p.est
                approx = "~" if p is not None and p.timing is None and t else ""
                cells.append(f"{approx}{fmt_s(t)}" if t else p.note if p else "")
                if m != "dense JAX":
                    ratios.append(f"{approx}{t / t_jk:.1f}" if t else "")
            lines.append(f"| {w} | {d} | {n:,} | " + " | ".join(cells + ratios) + " |")
    return lines + [""]


METHOD_NOTES = [
    "## Methods", "",
    "- **jaxkeops**: the CPU report's LazyTensor formulas under `jax.jit`, inputs on the GPU: "
    "generated CUDA kernels launched on XLA's stream.",
    "- **blocked JAX**: `lax.map` over blocks of 1,000 rows, jitted, on the GPU.",
    "- **dense JAX**: the whole (M, N) matrix through `(x[:, None] - y[None]) ** 2`, jitted, on "
    "the GPU; the gradient is `jax.grad`, argKmin `lax.top_k`. Skipped when M N D float32 "
    "numbers exceed half the device memory.",
    "- **pykeops**: the CPU report's pykeops formulas on the GPU (the gradient formula "
    "written out, as on the CPU).",
    "- The hand-written CPU reference kernel of the CPU report is not a GPU method.", ""]
