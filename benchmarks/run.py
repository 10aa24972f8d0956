"""jaxkeops benchmark suite: writes a markdown report and a log-log plot of time against M = N.

    python benchmarks/run.py                 # full run, < 20 min on 2 cores -> docs/benchmarks.md
    python benchmarks/run.py --quick         # < 2 min
    python benchmarks/run.py --only gauss --sizes 1e5 --dims 3 --out /tmp/b.md
    python benchmarks/run.py --gpu           # on an NVIDIA GPU -> docs/benchmarks-gpu.md
    python benchmarks/run.py --gpu --dry-run # the points it would time, no timing, no GPU needed

Every (workload, D, M = N) point times all its methods in alternation in this process and
reports medians. A method is skipped when its intermediates would exceed the memory limit, or
when the time extrapolated (quadratically) from its last measured size exceeds --max-call.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # before OpenMP is loaded
if "--gpu" in sys.argv[1:]:  # before JAX's GPU backend starts: leave device memory to pykeops
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gpu  # noqa: E402
import jax  # noqa: E402
import measure  # noqa: E402
import methods  # noqa: E402
import probes  # noqa: E402
import report  # noqa: E402
from points import Point, fmt_s  # noqa: E402

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
    def __init__(self, cfg: dict, setup: methods.Setup, t_start: float, dry_run=False):
        self.cfg, self.setup, self.t_start, self.dry_run = cfg, setup, t_start, dry_run
        self.points: list[Point] = []

    def _last(self, workload, d, method):
        done = [p for p in self.points if (p.workload, p.d, p.method) == (workload, d, method)
                and p.timing is not None]
        return done[-1] if done else None

    def _failed(self, workload, d, method) -> str | None:
        """A failure at a smaller size (out of device memory, most likely) stands for larger."""
        for p in self.points:
            if (p.workload, p.d, p.method) == (workload, d, method) and (
                    p.note == "out of memory" or p.note.startswith("failed")):
                return p.note if p.note == "out of memory" else "failed at a smaller size"
        return None

    def estimate(self, workload, d, n, method) -> float:
        last = self._last(workload, d, method)
        if last is None:
            return n * n * d / self.cfg["nominal"][method]
        return last.timing.median * (n / last.n) ** 2

    def forced(self, workload, d, n, method) -> bool:
        """The points the summary needs are run whatever their estimated time."""
        if n != self.cfg["ratio"].get(d):
            return False
        if method in ("jaxkeops", self.cfg["reference"]):
            return True
        # the CPU summary's speed-up over blocked JAX (the GPU summary shows an estimate)
        return (self.cfg["reference"], method, workload, d) == ("ref kernel", "blocked JAX",
                                                                "gauss", 3)

    def point(self, workload: str, d: int, n: int, only_methods) -> None:
        plan = {}
        for m in only_methods:
            why = methods.skip_reason(m, workload, n, d, self.setup) or self._failed(
                workload, d, m)
            est = self.estimate(workload, d, n, m)
            left = self.cfg["budget"] - (time.perf_counter() - self.t_start)
            if why is None and not self.forced(workload, d, n, m):
                if est > self.cfg["max_call"]:
                    why = f"skipped (would take ~{fmt_s(est)})"
                elif est > left:
                    why = f"skipped (time budget; ~{fmt_s(est)})"
            if why:
                self.points.append(Point(workload, d, n, m, note=why,
                                         est=est if why.startswith("skipped") else None))
            else:
                plan[m] = est
        if self.dry_run:
            skipped = [f"{p.method}: {p.note}" for p in self.points
                       if (p.workload, p.d, p.n) == (workload, d, n)]
            print(f"{workload:5s} D={d:<4d} M=N={n:<11,d} time: {', '.join(plan) or '-'}"
                  + (f" | not timed: {'; '.join(skipped)}" if skipped else ""), flush=True)
            return
        if not plan:
            return
        log(f"  {workload} D={d} M=N={n:,}: " + ", ".join(plan))
        data = methods.make_data(workload, n, d)
        calls = {}
        for m in plan:
            try:
                calls[m] = methods.prepare(m, workload, data, self.setup)
                if self.setup.device is not None:
                    calls[m]()  # warm-up: loads kernels into the CUDA context, grows allocators
            except Exception as e:  # out of device memory, a failing dependency: note it
                msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
                log(f"    {m:12s} failed: {msg}")
                oom = "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower()
                note = "out of memory" if oom else f"failed ({msg[:60]})"
                self.points.append(Point(workload, d, n, m, note=note))
        if not calls:
            return
        timings, outs = measure.alternate(calls, self.cfg["max_runs"], self.cfg["point_budget"],
                                          track_memory=self.setup.device is None)
        exact = methods.exact(workload, data, ERROR_ROWS)
        for m, t in timings.items():
            err = methods.error(workload, methods.rows(outs[m], ERROR_ROWS), exact)
            self.points.append(Point(workload, d, n, m, timing=t, err=err))
            log(f"    {m:12s} {fmt_s(t.median):>9s} x{len(t.walls)}  err {err:.1e}")


def call_overhead(n_calls: int, device) -> dict:
    """Median wall time of a jitted call on a tiny input (8 points): jaxkeops vs x * 2 + 1."""
    data = methods.make_data("gauss", 8, 3)
    x, y, b = (jax.device_put(data[k], device) for k in "xyb")
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


def large_d(cfg, setup) -> list[dict]:
    """Gaussian sum throughput at D = 64, 256, 1024 (same M = N)."""
    n, rows = cfg["large_d_n"], []
    for d in (64, 256, 1024):
        data = methods.make_data("gauss", n, d)
        call = methods.prepare("jaxkeops", "gauss", data, setup)
        if setup.device is not None:
            call()  # warm-up
        timings, _ = measure.alternate({"jaxkeops": call}, cfg["max_runs"], cfg["point_budget"],
                                       track_memory=setup.device is None)
        t = timings["jaxkeops"]
        rows.append(dict(d=d, n=n, time=t.median, runs=len(t.walls), threads=t.threads,
                         pdps=n * n * d / t.median))
        log(f"  large D: D={d} {fmt_s(t.median)}")
    return rows


def attempt(measurement, *args):
    """An extra measurement, or None when it fails (the report leaves its section out)."""
    try:
        return measurement(*args)
    except Exception as e:
        log(f"  {measurement.__name__} failed, left out of the report: {type(e).__name__}: "
            f"{str(e).strip()[-1500:]}")
        return None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (< 2 min)")
    ap.add_argument("--gpu", action="store_true",
                    help="time on the first CUDA GPU: jaxkeops, blocked and dense JAX, pykeops")
    ap.add_argument("--dry-run", "--plan", action="store_true",
                    help="print the points and methods the run would time; time nothing and "
                         "need no GPU (times estimated from nominal throughputs)")
    ap.add_argument("--out", help="markdown report, the plot next to it as .png (default "
                    "docs/benchmarks.md; with --gpu docs/benchmarks-gpu.md)")
    ap.add_argument("--only", choices=list(methods.WORKLOADS), action="append",
                    help="run only this workload (repeatable)")
    ap.add_argument("--sizes", type=lambda s: [float(v) for v in s.split(",")],
                    help="comma-separated M = N values, e.g. 1e3,1e4 (both D)")
    ap.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")],
                    help="comma-separated D values (default 3,64)")
    ap.add_argument("--methods", type=lambda s: s.split(","),
                    help=f"comma-separated subset of: {', '.join(methods.METHODS)} (with "
                         f"--gpu: {', '.join(methods.GPU_METHODS)})")
    ap.add_argument("--max-call", type=float, help="skip calls estimated to take longer (s)")
    ap.add_argument("--budget", type=float,
                    help="skip calls that would end the sweep after this many seconds")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip first-call, overhead and large-D measurements")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    mode = "quick" if args.quick else "full"
    cfg = dict((gpu.MODES if args.gpu else MODES)[mode],
               nominal=gpu.NOMINAL if args.gpu else NOMINAL,
               reference="pykeops" if args.gpu else "ref kernel")
    cfg["max_call"] = args.max_call or cfg["max_call"]
    cfg["budget"] = args.budget or cfg["budget"]
    workloads = args.only or list(methods.WORKLOADS)
    dims = args.dims or [3, 64]
    sizes = {d: [int(s) for s in (args.sizes or cfg["sizes"].get(d, cfg["sizes"][64]))]
             for d in dims}
    grid = [(w, d, n) for d in dims for w in workloads for n in sizes[d]]
    mode_methods = methods.GPU_METHODS if args.gpu else methods.METHODS
    chosen = [m for m in mode_methods if m in (args.methods or mode_methods)]
    unknown = set(args.methods or ()) - set(mode_methods)
    if unknown:
        raise SystemExit(f"unknown {'GPU ' * args.gpu}methods {sorted(unknown)}; choose from "
                         f"{', '.join(mode_methods)}")
    device = None
    if args.gpu:
        device, why = gpu.device_or_none()
        if device is None and not args.dry_run:
            raise SystemExit(f"run.py --gpu: {why}")
    out = Path(args.out or REPO / "docs" / f"benchmarks{'-gpu' * args.gpu}.md")

    if args.dry_run:
        if args.gpu:
            setup = gpu.setup(device, None)
            print(f"GPU plan ({mode}) on " + (device.device_kind if device else
                  f"no GPU: {gpu.memory_limit(None)[1]}; pykeops's CUDA support not checked"))
        else:
            setup = methods.Setup(has_ref=(REPO.parent / "shared/perf/refkern.cpp").exists(),
                                  pykeops=None if importlib.util.find_spec("pykeops")
                                  else "not installed")
            print(f"CPU plan ({mode})")
        sweep = Sweep(cfg, setup, t_start, dry_run=True)
        for point in grid:
            sweep.point(*point, chosen)
        print(f"Skips for time use nominal throughputs (the run re-estimates from its own "
              f"timings and stops at its {cfg['budget']:g} s budget). Report: {out}"
              + ("" if args.no_extras else "; also first-call, overhead and large-D runs."))
        return 0

    info = {"command": "python " + shlex.join(sys.argv),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            **measure.machine(), "jax": jax.__version__, "jaxkeops": jaxkeops.__version__,
            "pykeops": methods.pykeops_version(), "omp": os.environ["OMP_NUM_THREADS"],
            "mode": mode, "cfg": cfg}
    scratch = tempfile.mkdtemp(prefix="jaxkeops-bench-")
    try:
        if args.gpu:
            setup = gpu.setup(device, info)
            log(f"GPU: {info['gpu']['name']}; pykeops: {info['pykeops_gpu']}")
        else:
            ref_lib, info["ref"] = methods.build_ref(REPO, scratch)
            setup = methods.Setup(ref_lib=ref_lib, has_ref=ref_lib is not None,
                                  pykeops=None if info["pykeops"] else "not installed")
            log(f"reference kernel: {info['ref']}; pykeops: {info['pykeops'] or 'not installed'}")
        jax.device_put(0.0, device).block_until_ready()  # initialise the backend before timing
        sweep = Sweep(cfg, setup, t_start)
        extras = {}
        if not args.no_extras:
            log("first call of each formula (new processes, empty then filled kernel cache)")
            extras["first_call"] = attempt(probes.first_call_probe, workloads, args.gpu)
            log("call overhead")
            extras["overhead"] = attempt(call_overhead, cfg["overhead_calls"], device)
            if "gauss" in workloads:
                extras["large_d"] = attempt(large_d, cfg, setup)
        for point in grid:
            sweep.point(*point, chosen)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info["elapsed"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    png = report.plot(sweep.points, out.with_suffix(".png"))
    out.write_text(report.markdown(info, sweep.points, extras, png))
    log(f"wrote {out}" + (f" and {png}" if png else "") + f" in {info['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
