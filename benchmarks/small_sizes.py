"""Small problems against the hand-written reference kernel: the ratio table.

    python benchmarks/small_sizes.py                      # D = 3, M = N = 1e3, 3e3, 1e4, 3e4
    python benchmarks/small_sizes.py --sizes 1e3 --workloads gauss,lse --seconds 2

For each workload and size, jaxkeops (jit-compiled, inputs on the device) and the reference
kernel (../shared/perf/refkern.cpp, OpenMP on every core) are timed in alternation in this
process: batches of calls, one method after the other (each batch after a 50 ms pause), for
about --seconds per point. The
table gives the median call, the reference ratio (reference time / jaxkeops time: 1 = as fast
as the hand-written kernel) and both methods' CPU/wall (how many cores they kept busy). Every
output is checked against float64 numpy on its first rows before it is timed.

On a machine without AVX-512 the reference is compiled through avx512_on_avx2.h (its 16-wide
vectors as pairs of AVX2 registers): a weaker stick, reported as such.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # before OpenMP is loaded

import jax  # noqa: E402
import methods  # noqa: E402
import numpy as np  # noqa: E402
from measure import machine, run_once  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# A pause before each batch: the other method's idle threads (OpenMP's, XLA's pool) spin for a
# few milliseconds after their last call, and would compete with this batch's first calls.
SETTLE = 0.05
TOLERANCE = {"gauss": 1e-4, "grad": 1e-4, "lse": 1e-4, "knn": 0.99}  # knn: neighbours found


def check(workload: str, data, out) -> float:
    """Relative error on the first rows against float64 (knn: the fraction of exact
    neighbours found), raising if it is out of tolerance."""
    rows = min(50, data["x"].shape[0])
    err = methods.error(workload, np.asarray(out)[:rows], methods.exact(workload, data, rows))
    bad = err < TOLERANCE[workload] if workload == "knn" else err > TOLERANCE[workload]
    if bad:
        raise AssertionError(f"{workload}: error {err:.3g} against float64")
    return err


def time_point(calls: dict, seconds: float) -> dict[str, tuple[float, float]]:
    """(median call in s, CPU/wall) of each call, timed in alternating batches."""
    first = {name: run_once(call)[0].wall for name, call in calls.items()}
    batch = {name: max(1, min(50, int(0.05 / max(t, 1e-6)))) for name, t in first.items()}
    walls = {name: [] for name in calls}
    cpus = {name: [] for name in calls}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or min(len(w) for w in walls.values()) < 5:
        for name, call in calls.items():
            time.sleep(SETTLE)
            for _ in range(batch[name]):
                sample, _ = run_once(call)
                walls[name].append(sample.wall)
                cpus[name].append(sample.cpu)
    return {name: (statistics.median(walls[name]), sum(cpus[name]) / sum(walls[name]))
            for name in calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e3,3e3,1e4,3e4")
    parser.add_argument("--workloads", default="gauss,grad,lse,knn")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per point")
    parser.add_argument("--sync-dispatch", action="store_true",
                        help="jax_cpu_enable_async_dispatch=False: every jitted program runs "
                             "in the calling thread (see docs/performance.md)")
    args = parser.parse_args()
    if args.sync_dispatch:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    workloads = args.workloads.split(",")

    lib, how = methods.build_ref(REPO, tempfile.mkdtemp(prefix="jaxkeops-small-"))
    if lib is None:
        sys.exit(f"the reference kernel is not available: {how}")
    setup = methods.Setup(ref_lib=lib, has_ref=True)
    info = machine()
    print(f"- Machine: {info['cpu']}, {info['cores']} cores; reference kernel: `{how}`"
          + ("" if methods.cpu_has_avx512() else " (no AVX-512 here: through the adapter)"))
    print(f"- Median call over about {args.seconds:g} s per point, the two methods in "
          "alternating batches in one process; D = 3, float32"
          + ("; JAX's CPU async dispatch off" if args.sync_dispatch else "") + ".\n")
    print("| workload | M = N | ref kernel | jaxkeops | ref / jaxkeops | CPU/wall ref | "
          "CPU/wall jaxkeops |")
    print("|---|---|---|---|---|---|---|")
    for workload in workloads:
        for n in sizes:
            data = methods.make_data(workload, n, 3)
            calls = {m: methods.prepare(m, workload, data, setup)
                     for m in ("ref kernel", "jaxkeops")}
            for call in calls.values():
                check(workload, data, call())
            t = time_point(calls, args.seconds)
            (ref, ref_cpu), (jk, jk_cpu) = t["ref kernel"], t["jaxkeops"]
            print(f"| {workload} | {n:,} | {fmt(ref)} | {fmt(jk)} | {ref / jk:.2f} | "
                  f"{ref_cpu:.2f} | {jk_cpu:.2f} |", flush=True)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    main()
