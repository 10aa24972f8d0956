"""jaxkeops benchmark suite: writes a markdown report and a log-log plot of time against M = N.

    python benchmarks/run.py                 # full run, < 20 min on 2 cores -> docs/benchmarks.md
    python benchmarks/run.py --quick         # < 2 min
    python benchmarks/run.py --only gauss --sizes 1e5 --dims 3 --out /tmp/b.md

Every (workload, D, M = N) point times all its methods in alternation in this process and
reports medians. A method is skipped when its intermediates would exceed the memory limit, or
when the time extrapolated (quadratically) from its last measured size exceeds --max-call.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # before OpenMP is loaded

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import measure  # noqa: E402
import methods  # noqa: E402
import report  # noqa: E402
from report import Point  # noqa: E402

import jaxkeops  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

MODES = {  # sizes per D, reference-ratio sizes, repeats, per-point and per-call time limits
    "full": dict(sizes={3: [1e3, 1e4, 1e5, 1e6], 64: [1e3, 1e4, 3e4, 1e5, 1e6]},
                 ratio={3: 100_000, 64: 30_000}, max_runs=5, point_budget=10.0, max_call=30.0,
                 budget=1080.0, large_d_n=10_000, overhead_calls=2000),
    "quick": dict(sizes={3: [1e3, 1e4], 64: [1e3, 3e3]}, ratio={3: 10_000, 64: 3_000},
                  max_runs=3, point_budget=1.0, max_call=3.0, budget=100.0, large_d_n=2_000,
                  overhead_calls=300),
}
# Rough throughputs (pairs * D / s) to estimate a method's time before it was measured at all.
NOMINAL = {"jaxkeops": 1e10, "ref kernel": 2e10, "blocked JAX": 2e8, "dense JAX": 2e8,
           "pykeops": 2e8}
ERROR_ROWS = 100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Sweep:
    def __init__(self, cfg: dict, ref_lib, has_pykeops: bool, t_start: float):
        self.cfg, self.ref_lib, self.has_pykeops, self.t_start = cfg, ref_lib, has_pykeops, t_start
        self.points: list[Point] = []

    def _last(self, workload, d, method):
        done = [p for p in self.points if (p.workload, p.d, p.method) == (workload, d, method)
                and p.timing is not None]
        return done[-1] if done else None

    def estimate(self, workload, d, n, method) -> float:
        last = self._last(workload, d, method)
        if last is None:
            return n * n * d / NOMINAL[method]
        return last.timing.median * (n / last.n) ** 2

    def forced(self, workload, d, n, method) -> bool:
        """The points the summary needs are run whatever their estimated time."""
        if n != self.cfg["ratio"].get(d):
            return False
        return method in ("jaxkeops", "ref kernel") or (
            method == "blocked JAX" and workload == "gauss" and d == 3)

    def point(self, workload: str, d: int, n: int, only_methods) -> None:
        plan = {}
        for m in only_methods:
            why = methods.skip_reason(m, workload, n, d, self.ref_lib, self.has_pykeops)
            est = self.estimate(workload, d, n, m)
            left = self.cfg["budget"] - (time.perf_counter() - self.t_start)
            if why is None and not self.forced(workload, d, n, m):
                if est > self.cfg["max_call"]:
                    why = f"skipped (would take ~{report.fmt_s(est)})"
                elif est > left:
                    why = f"skipped (time budget; ~{report.fmt_s(est)})"
            if why:
                self.points.append(Point(workload, d, n, m, note=why,
                                         est=est if why.startswith("skipped") else None))
            else:
                plan[m] = est
        if not plan:
            return
        log(f"  {workload} D={d} M=N={n:,}: " + ", ".join(plan))
        data = methods.make_data(workload, n, d)
        calls = {m: methods.prepare(m, workload, data, self.ref_lib) for m in plan}
        timings, outs = measure.alternate(calls, self.cfg["max_runs"], self.cfg["point_budget"])
        exact = methods.exact(workload, data, ERROR_ROWS)
        for m, t in timings.items():
            err = methods.error(workload, methods.rows(outs[m], ERROR_ROWS), exact)
            self.points.append(Point(workload, d, n, m, timing=t, err=err))
            log(f"    {m:12s} {report.fmt_s(t.median):>9s} x{len(t.walls)}  err {err:.1e}")


def first_call_probe(workloads) -> dict:
    """First-call times in new processes: with an empty kernel cache, then with it filled."""
    cache = tempfile.mkdtemp(prefix="jaxkeops-cache-")
    env = dict(os.environ, JAXKEOPS_CACHE_DIR=cache)
    out = {}
    try:
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, str(HERE / "probes.py"), "first-call",
                                   *workloads], capture_output=True, text=True, env=env)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-2000:])
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        out["kernels"] = len(list(Path(cache).glob("*.so")))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def call_overhead(n_calls: int) -> dict:
    """Median wall time of a jitted call on a tiny input (8 points): jaxkeops vs x * 2 + 1."""
    data = methods.make_data("gauss", 8, 3)
    x, y, b = (jax.device_put(data[k]) for k in "xyb")
    gauss = jax.jit(methods.JAXKEOPS["gauss"])
    trivial = jax.jit(lambda x: x * 2.0 + 1.0)
    res = {}
    for name, fn, args in (("jaxkeops Gaussian sum", gauss, (x, y, b)),
                           ("jnp: x * 2 + 1", trivial, (x,))):
        call = lambda fn=fn, args=args: jax.block_until_ready(fn(*args))
        for _ in range(50):
            call()
        res[name] = measure.median_call_us(call, n_calls)
    return res


def large_d(cfg) -> list[dict]:
    """Gaussian sum throughput at D = 64, 256, 1024 (same M = N)."""
    n, rows = cfg["large_d_n"], []
    for d in (64, 256, 1024):
        data = methods.make_data("gauss", n, d)
        call = methods.prepare("jaxkeops", "gauss", data, None)
        timings, _ = measure.alternate({"jaxkeops": call}, cfg["max_runs"], cfg["point_budget"])
        t = timings["jaxkeops"]
        rows.append(dict(d=d, n=n, time=t.median, runs=len(t.walls), threads=t.threads,
                         pdps=n * n * d / t.median))
        log(f"  large D: D={d} {report.fmt_s(t.median)}")
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (< 2 min)")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"),
                    help="markdown report; the plot goes next to it as .png")
    ap.add_argument("--only", choices=list(methods.WORKLOADS), action="append",
                    help="run only this workload (repeatable)")
    ap.add_argument("--sizes", type=lambda s: [float(v) for v in s.split(",")],
                    help="comma-separated M = N values, e.g. 1e3,1e4 (both D)")
    ap.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")],
                    help="comma-separated D values (default 3,64)")
    ap.add_argument("--methods", type=lambda s: s.split(","),
                    help=f"comma-separated subset of: {', '.join(methods.METHODS)}")
    ap.add_argument("--max-call", type=float, help="skip calls estimated to take longer (s)")
    ap.add_argument("--budget", type=float,
                    help="skip calls that would end the sweep after this many seconds")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip first-call, overhead and large-D measurements")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    cfg = dict(MODES["quick" if args.quick else "full"])
    cfg["max_call"] = args.max_call or cfg["max_call"]
    cfg["budget"] = args.budget or cfg["budget"]
    workloads = args.only or list(methods.WORKLOADS)
    dims = args.dims or [3, 64]
    sizes = {d: [int(s) for s in (args.sizes or cfg["sizes"].get(d, cfg["sizes"][64]))]
             for d in dims}
    chosen = args.methods or list(methods.METHODS)
    unknown = set(chosen) - set(methods.METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {methods.METHODS}")

    info = {"command": "python " + shlex.join(sys.argv),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            **measure.machine(), "jax": jax.__version__, "jaxkeops": jaxkeops.__version__,
            "pykeops": methods.pykeops_version(), "omp": os.environ["OMP_NUM_THREADS"],
            "mode": "quick" if args.quick else "full", "cfg": cfg}
    scratch = tempfile.mkdtemp(prefix="jaxkeops-bench-")
    try:
        ref_lib, info["ref"] = methods.build_ref(REPO, scratch)
        log(f"reference kernel: {info['ref']}; pykeops: {info['pykeops'] or 'not installed'}")
        sweep = Sweep(cfg, ref_lib, info["pykeops"] is not None, t_start)
        extras = {}
        if not args.no_extras:
            log("first call of each formula (new processes, empty then filled kernel cache)")
            extras["first_call"] = first_call_probe(workloads)
            log("call overhead")
            extras["overhead"] = call_overhead(cfg["overhead_calls"])
            if "gauss" in workloads:
                extras["large_d"] = large_d(cfg)
        for d in dims:
            for w in workloads:
                for n in sizes[d]:
                    sweep.point(w, d, n, [m for m in methods.METHODS if m in chosen])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info["elapsed"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = report.plot(sweep.points, out.with_suffix(".png"))
    out.write_text(report.markdown(info, sweep.points, extras, png))
    log(f"wrote {out}" + (f" and {png}" if png else "") + f" in {info['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    jnp.zeros(1).block_until_ready()  # initialise the backend before any timing
    sys.exit(main())
