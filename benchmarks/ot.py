"""Sinkhorn benchmarks: OTT-JAX on its dense PointCloud, on its online `batch_size` mode and on
jaxkeops.ott.PointCloud; GeomLoss (tensorized, online); jaxkeops.ot when it exists.

    python benchmarks/ot.py --out docs/benchmarks-ot.md      # full: N = 1e3, 1e4, 1e5
    python benchmarks/ot.py --quick --out /tmp/ot.md         # < 2 min: N = 1e3, 1e4

D = 3, float32, x and y uniform in the unit cube, uniform weights, blur 0.05. GeomLoss's cost is
|x - y|^2 / 2 with epsilon = blur^2; OTT's squared Euclidean cost is |x - y|^2, so OTT runs with
epsilon = 2 blur^2: the same regularised problem. Every size times its methods in alternation in
one process (medians, after compilation). Every method is timed up to N = 1e4 (the size of the
comparison), and jaxkeops's at every size; beyond 1e4 a baseline is skipped, with its quadratic
extrapolation in the table, when that estimate exceeds --max-call.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # before torch loads OpenMP

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import measure  # noqa: E402
import numpy as np  # noqa: E402
from points import fmt_mb, fmt_n, fmt_s  # noqa: E402

import jaxkeops  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BLUR, SCALING, D = 0.05, 0.5, 3
OTT_EPSILON = 2 * BLUR ** 2
BATCH_SIZE = 1024  # rows per block of OTT's online mode
DENSE_LIMIT = 4e9  # bytes: an n x m float32 matrix above this is not built (tensorized methods)
MODES = {
    "full": dict(sizes=[1_000, 10_000, 100_000], iterations={1_000: 10, 10_000: 10, 100_000: 3},
                 max_runs=5, point_budget=20.0, max_call=60.0, measure_up_to=10_000,
                 grad_n=100_000, grad_iterations=3),
    "quick": dict(sizes=[1_000, 10_000], iterations={1_000: 10, 10_000: 5}, max_runs=3,
                  point_budget=1.0, max_call=4.0, measure_up_to=1_000, grad_n=10_000,
                  grad_iterations=3),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


@dataclass
class Row:
    """One method at one size: a timing (seconds per call) or why there is none."""
    seconds: float | None = None
    runs: int = 0
    cpu_wall: float | None = None
    per_call_units: int = 1  # iterations in one call
    note: str = ""
    estimate: float | None = None  # seconds per call, extrapolated, when skipped for time
    extra: dict = field(default_factory=dict)


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(n, D)).astype(np.float32),
            rng.uniform(size=(n, D)).astype(np.float32))


# ------------------------------------------------------------------------------ OTT solvers
def ott_batch_size_status() -> str | None:
    """None when OTT's PointCloud(batch_size=...) runs, else how it fails (on 40 points)."""
    from ott.geometry import pointcloud
    from ott.solvers import linear
    x, y = make_data(40)
    try:
        linear.solve(pointcloud.PointCloud(x, y, epsilon=0.1, batch_size=16))
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        where = next((f for f in reversed(frames) if "/ott/" in f.filename), frames[-1])
        return (f"`{first_line(error)}` raised at {Path(where.filename).name}:{where.lineno} "
                f"(`{where.line}`)")
    return None


def restore_is_vmappable() -> str | None:
    """OTT 0.6.0's batched_vmap calls jax.interpreters.batching.is_vmappable, which jax 0.10
    removed; for arrays it returned False. Put that back for OTT, check OTT's batch_size
    result against its dense one, and say what was done (None when it did not help)."""
    from jax.interpreters import batching
    from ott.geometry import pointcloud
    from ott.solvers import linear
    batching.is_vmappable = lambda x: False
    x, y = make_data(300)
    kw = dict(min_iterations=20, max_iterations=20)
    try:
        online = linear.solve(pointcloud.PointCloud(x, y, epsilon=0.1, batch_size=64), **kw)
    except Exception as error:
        log(f"  OTT batch_size still fails with is_vmappable restored: {first_line(error)}")
        return None
    dense = linear.solve(pointcloud.PointCloud(x, y, epsilon=0.1), **kw)
    gap = float(jnp.max(jnp.abs(online.f - dense.f)))
    return (f"restored as `lambda x: False` (its value for arrays); f then matches the dense "
            f"result to {gap:.1e}")


def iteration_methods(status: str | None, shim: str | None) -> dict:
    """name -> geometry factory (x, y) for the fixed-iteration Sinkhorn table."""
    from ott.geometry import pointcloud

    from jaxkeops.ott import PointCloud
    methods = {"OTT dense PointCloud":
               lambda x, y: pointcloud.PointCloud(x, y, epsilon=OTT_EPSILON)}
    if status is None or shim is not None:
        name = f"OTT PointCloud(batch_size={BATCH_SIZE})"
        name += " + restored is_vmappable" if shim else ""
        methods[name] = lambda x, y: pointcloud.PointCloud(x, y, epsilon=OTT_EPSILON,
                                                           batch_size=BATCH_SIZE)
    methods["jaxkeops.ott.PointCloud"] = lambda x, y: PointCloud(x, y, epsilon=OTT_EPSILON)
    return methods


def compiled(fn, *args):
    """fn jitted and compiled for args (no run): the call() the timing loop uses."""
    executable = jax.jit(fn).lower(*args).compile()
    return lambda: jax.block_until_ready(executable(*args))


def prepare_iterations(factory, x, y, k: int):
    from ott.solvers import linear
    # inner_iterations = k: OTT runs its iterations in blocks of inner_iterations (10 by
    # default), so a smaller max_iterations would run none at all.
    return compiled(lambda x, y: linear.solve(factory(x, y), min_iterations=k,
                                              max_iterations=k, inner_iterations=k).f, x, y)


def prepare_ott_divergence(geom_cls, x, y, **geometry_options):
    from ott.tools import sinkhorn_divergence as sd

    def divergence(x, y):
        value, out = sd.sinkhorn_divergence(geom_cls, x, y, epsilon=OTT_EPSILON,
                                            **geometry_options)
        return value, jnp.stack([jnp.asarray(i) for i in out.n_iters])
    return compiled(divergence, x, y)


# ---------------------------------------------------------------------- GeomLoss, jaxkeops.ot
def geomloss_iterations(x, y) -> int:
    """The length of GeomLoss's epsilon-scaling schedule for these clouds."""
    import torch
    from geomloss._legacy.sinkhorn_divergence import epsilon_schedule, max_diameter
    return len(epsilon_schedule(2, max_diameter(torch.from_numpy(x), torch.from_numpy(y)),
                                BLUR, SCALING))


def prepare_geomloss(backend: str, x, y):
    import torch
    from geomloss import SamplesLoss
    torch.set_num_threads(os.cpu_count())
    loss = SamplesLoss("sinkhorn", p=2, blur=BLUR, scaling=SCALING, backend=backend)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss(xt, yt)  # pykeops compiles its kernels on the first call: not part of the timing
    return lambda: float(loss(xt, yt))


def jaxkeops_ot_status() -> tuple[object | None, str]:
    """(the jaxkeops.ot module, '') or (None, why it is not timed)."""
    if importlib.util.find_spec("jaxkeops.ot") is None:
        return None, "jaxkeops.ot does not exist yet in this checkout"
    try:
        return importlib.import_module("jaxkeops.ot"), ""
    except Exception as error:
        return None, f"import jaxkeops.ot failed: {first_line(error)}"


def jaxkeops_ot_loss(module):
    """GeomLoss's signature: SamplesLoss("sinkhorn", p=2, blur=..., scaling=...)(x, y)."""
    return module.SamplesLoss("sinkhorn", p=2, blur=BLUR, scaling=SCALING)


def prepare_jaxkeops_ot(module, x, y):
    loss = jaxkeops_ot_loss(module)
    return compiled(lambda x, y: loss(x, y), x, y)


# --------------------------------------------------------------------------------- the sweep
class Sweep:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.last: dict[str, tuple[int, float]] = {}  # method -> (n, seconds per unit)
        # method -> iterations per call at its last size, for methods whose iteration count is
        # only known after the run (OTT): their estimates assume the same count again.
        self.last_units: dict[str, int] = {}

    def skipped(self, name: str, n: int, dense: bool, units: int = 1) -> Row | None:
        """A Row saying why `name` is not timed at n, or None to time it."""
        if dense and 4.0 * n * n > DENSE_LIMIT:
            return Row(note=f"needs {4.0 * n * n / 1e9:.0f} GB")
        # The comparison the report is for (every method at N <= 1e4) and jaxkeops's own
        # methods at every size are always timed; only baselines beyond 1e4 are extrapolated.
        always = n <= self.cfg["measure_up_to"] or name.startswith("jaxkeops")
        if name in self.last and not always:
            n0, t0 = self.last[name]
            estimate = t0 * (n / n0) ** 2 * units
            if estimate > self.cfg["max_call"]:
                return Row(note=f"~{fmt_s(estimate)} (estimated)", estimate=estimate,
                           per_call_units=units)
        return None

    def time(self, calls: dict, units: dict, n: int) -> dict[str, Row]:
        rows = {}
        ready = {}
        for name, prepare in calls.items():
            try:
                ready[name] = prepare()
            except Exception as error:
                log(f"    {name}: failed: {first_line(error)}")
                rows[name] = Row(note=f"failed ({first_line(error)})")
        timings, outputs = measure.alternate(ready, self.cfg["max_runs"],
                                             self.cfg["point_budget"])
        for name, t in timings.items():
            rows[name] = Row(seconds=t.median, runs=len(t.walls), cpu_wall=t.threads,
                             per_call_units=units.get(name, 1),
                             extra={"output": outputs[name]})
            self.last[name] = (n, t.median / units.get(name, 1))
            log(f"    {name:48s} {fmt_s(t.median):>9s} x{len(t.walls)}")
        return rows


def iteration_table(sweep: Sweep, cfg: dict, methods: dict) -> dict:
    table = {}
    for n in cfg["sizes"]:
        k = cfg["iterations"][n]
        log(f"  Sinkhorn iterations, N = {n:,} ({k} iterations per call)")
        x, y = (jnp.asarray(a) for a in make_data(n))
        calls, rows = {}, {}
        for name, factory in methods.items():
            skip = sweep.skipped(name, n, dense=name.startswith("OTT dense"), units=k)
            if skip:
                rows[name] = skip
                continue
            calls[name] = functools.partial(prepare_iterations, factory, x, y, k)
        rows.update(sweep.time(calls, dict.fromkeys(calls, k), n))
        reference = rows.get("OTT dense PointCloud")
        for row in rows.values():
            if row.seconds is not None and reference is not None and reference.seconds:
                gap = jnp.max(jnp.abs(row.extra["output"] - reference.extra["output"]))
                row.extra["gap"] = float(gap)
        table[n] = rows
    return table


def divergence_table(sweep: Sweep, cfg: dict, jk_ot, pykeops_note: str | None,
                     ott_online: str | None) -> dict:
    from ott.geometry import pointcloud

    from jaxkeops.ott import PointCloud
    table = {}
    for n in cfg["sizes"]:
        log(f"  Sinkhorn divergences, N = {n:,}")
        x_np, y_np = make_data(n)
        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
        schedule = geomloss_iterations(x_np, y_np)
        partial = functools.partial
        specs = {  # name -> (prepare, builds n x m, iterations known in advance)
            "GeomLoss tensorized": (partial(prepare_geomloss, "tensorized", x_np, y_np), True,
                                    schedule),
            "GeomLoss online (pykeops)": (partial(prepare_geomloss, "online", x_np, y_np), False,
                                          schedule),
            "jaxkeops.ot SamplesLoss": (partial(prepare_jaxkeops_ot, jk_ot, x, y), False,
                                        schedule),
            "OTT sinkhorn_divergence, dense PointCloud": (
                partial(prepare_ott_divergence, pointcloud.PointCloud, x, y), True, None),
            "OTT sinkhorn_divergence, jaxkeops.ott.PointCloud": (
                partial(prepare_ott_divergence, PointCloud, x, y), False, None),
        }
        if ott_online:
            specs[ott_online] = (partial(prepare_ott_divergence, pointcloud.PointCloud, x, y,
                                         batch_size=BATCH_SIZE), False, None)
        calls, rows = {}, {}
        for name, (prepare, dense, units) in specs.items():
            if name.startswith("GeomLoss online") and pykeops_note:
                rows[name] = Row(note=pykeops_note)
                continue
            if name.startswith("jaxkeops.ot") and jk_ot is None:
                rows[name] = Row(note="jaxkeops.ot missing (see below)")
                continue
            skip = sweep.skipped(name, n, dense, units=units or sweep.last_units.get(name, 1))
            if skip:
                rows[name] = skip
                continue
            calls[name] = prepare
        units = {name: specs[name][2] or 1 for name in calls}
        rows.update(sweep.time(calls, units, n))
        for name, row in rows.items():
            out = row.extra.get("output")
            if out is None:
                continue
            if name.startswith("OTT"):  # the iterations were only known after the run
                value, iterations = out
                row.per_call_units = int(np.sum(iterations))
                row.extra["value"] = float(value)
                sweep.last[name] = (n, row.seconds / row.per_call_units)
                sweep.last_units[name] = row.per_call_units
            else:
                row.extra["value"] = float(np.asarray(out if np.ndim(out) == 0 else out[0]))
        table[n] = rows
    return table


def gradient_memory(cfg: dict, jk_ot) -> list[tuple[str, ...]]:
    """Peak memory the gradient of a Sinkhorn divergence adds, at cfg['grad_n']."""
    from ott.tools import sinkhorn_divergence as sd

    from jaxkeops.ott import PointCloud
    n, k = cfg["grad_n"], cfg["grad_iterations"]
    x, y = (jnp.asarray(a) for a in make_data(n))
    solve = dict(min_iterations=k, max_iterations=k, implicit_diff=None)
    cases = {f"OTT sinkhorn_divergence on jaxkeops.ott.PointCloud, {k} unrolled iterations":
             lambda x: sd.sinkhorn_divergence(PointCloud, x, y, epsilon=OTT_EPSILON,
                                              solve_kwargs=solve)[0]}
    if jk_ot is not None:
        loss = jaxkeops_ot_loss(jk_ot)
        cases["jaxkeops.ot SamplesLoss"] = lambda x: loss(x, y)
    rows = []
    for name, fn in cases.items():
        log(f"  gradient memory, N = {n:,}: {name}")
        try:
            executable = jax.jit(jax.grad(fn)).lower(x).compile()
            analysis = executable.memory_analysis()
            temp_mb = analysis.temp_size_in_bytes / 2**20 if analysis is not None else None
            sample, _ = measure.run_once(lambda run=executable: jax.block_until_ready(run(x)),
                                         track_memory=True)
            rows.append((name, fmt_n(n), fmt_mb(sample.peak_mb),
                         fmt_mb(temp_mb) if temp_mb is not None else "n/a", fmt_s(sample.wall)))
        except Exception as error:
            rows.append((name, fmt_n(n), f"failed ({first_line(error)})", "", ""))
    rows.append(("(for scale: one dense n x n float32 matrix)", fmt_n(n),
                 fmt_mb(4.0 * n * n / 2**20), "", ""))
    return rows


# ------------------------------------------------------------------------------- the report
def cell(row: Row, per_unit: bool) -> str:
    if row.seconds is None:
        return row.note
    return fmt_s(row.seconds / row.per_call_units if per_unit else row.seconds)


def markdown(info: dict, iterations: dict, divergences: dict, memory, notes: list[str]) -> str:
    sizes = list(iterations)
    head = "| method | " + " | ".join(f"N = {fmt_n(n)}" for n in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)
    lines = ["# Sinkhorn benchmarks", "", "```", info["command"], "```", "",
             f"- Date: {info['date']}; total wall time {info['elapsed'] / 60:.1f} min "
             f"({info['mode']} mode).",
             f"- Machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM; load average "
             f"{info['load']} at the start, {info['load_end']} at the end.",
             f"- Software: {info['software']}.",
             f"- Data: D = {D}, float32, x and y uniform in the unit cube, uniform weights; "
             f"blur {BLUR} (GeomLoss: cost |x-y|^2/2, epsilon = blur^2, scaling {SCALING}; "
             f"OTT: cost |x-y|^2, epsilon = 2 blur^2 = {OTT_EPSILON:g}, the same problem).",
             "- Medians of up to {max_runs} runs per method (about {point_budget:g} s of runs "
             "per method and size), the methods of one size in alternation, after "
             "compilation. `~X (estimated)`: skipped, extrapolated quadratically from the "
             "method's previous size (OTT's divergences: with that size's iteration count); "
             "`needs X GB`: the n x m float32 matrix is not "
             "built.".format(**info["cfg"]), "",
             "## One Sinkhorn iteration (OTT's solver, fixed iterations)", "",
             "Time of `linear.solve(geom, min_iterations=k, max_iterations=k)` (jitted) divided "
             "by k (k = " + ", ".join(f"{info['cfg']['iterations'][n]} at {fmt_n(n)}"
                                       for n in sizes) + "). One iteration updates g then f: "
             "two n x m log-sum-exp passes; the call also evaluates the marginal error and the "
             "cost once (two more passes, for every method alike).", "", head, rule]
    for name in next(iter(iterations.values())):
        cells = [cell(iterations[n][name], True) for n in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Speed-up of jaxkeops.ott.PointCloud and max |f - f(OTT dense)|:", "",
              "| N | " + " | ".join(n for n in next(iter(iterations.values()))
                                    if n != "jaxkeops.ott.PointCloud") + " | max abs f gap |",
              "|---|" + "---|" * len(next(iter(iterations.values())))]
    for n in sizes:
        ours = iterations[n]["jaxkeops.ott.PointCloud"]
        cells = []
        for name, row in iterations[n].items():
            if name == "jaxkeops.ott.PointCloud":
                continue
            if row.seconds and ours.seconds:
                cells.append(f"{row.seconds / ours.seconds:.1f}x")
            elif row.estimate and ours.seconds:
                cells.append(f"~{row.estimate / ours.seconds:.0f}x (estimated)")
            else:
                cells.append("")
        gap = ours.extra.get("gap")
        gap_cell = "" if gap is None else f"{gap:.1e}"
        lines.append(f"| {fmt_n(n)} | " + " | ".join(cells) + f" | {gap_cell} |")
    lines += ["", "## Sinkhorn divergence (debiased, value only)", "",
              "GeomLoss and jaxkeops.ot use epsilon-scaling (one iteration = one epsilon step, "
              "updating the four potentials of the x-y, x-x and y-y problems); OTT uses the "
              "final epsilon from the start and stops at its default threshold 1e-3 (iterations "
              "summed over its three problems). Per divergence / per iteration / iterations / "
              "value.", "", head, rule]
    for name in next(iter(divergences.values())):
        cells = []
        for n in sizes:
            row = divergences[n][name]
            if row.seconds is None:
                cells.append(row.note)
            else:
                cells.append(f"{fmt_s(row.seconds)} / {fmt_s(row.seconds / row.per_call_units)} "
                             f"/ {row.per_call_units} / {row.extra['value']:.4g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ours_name = "jaxkeops.ot SamplesLoss"
    lines += ["", f"Speed-up of {ours_name} per divergence (time of the method / time of "
              f"{ours_name}; both solve the same problem, OTT without epsilon-scaling):", "",
              head, rule]
    for name in next(iter(divergences.values())):
        if name == ours_name:
            continue
        cells = []
        for n in sizes:
            row, ours = divergences[n][name], divergences[n].get(ours_name)
            if ours is None or ours.seconds is None:
                cells.append("")
            elif row.seconds:
                cells.append(f"{row.seconds / ours.seconds:.1f}x")
            elif row.estimate:
                cells.append(f"~{row.estimate / ours.seconds:.0f}x (estimated)")
            else:
                cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Memory of the gradient of a Sinkhorn divergence", "",
              "`jax.grad` with respect to x, jitted and compiled first. Peak resident memory "
              "the call adds (VmHWM, reset before the call), and the temporary buffers of the "
              "compiled XLA program (`memory_analysis().temp_size_in_bytes`; jaxkeops's kernels "
              "allocate no n x m buffer of their own).", "",
              "| computation | N | peak memory added | XLA temporaries | time |",
              "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in memory]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def software() -> str:
    versions = [f"jax {jax.__version__}", f"jaxkeops {jaxkeops.__version__}"]
    for name, module in (("ott-jax", "ott"), ("geomloss", "geomloss"), ("torch", "torch"),
                         ("pykeops", "pykeops")):
        try:
            versions.append(f"{name} {importlib.import_module(module).__version__}")
        except Exception:
            versions.append(f"{name} not installed")
    return ", ".join(versions)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 1e3 and 1e4, fewer runs (< 2 min)")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks-ot.md"),
                    help="markdown report (default docs/benchmarks-ot.md)")
    ap.add_argument("--sizes", type=lambda s: [int(float(v)) for v in s.split(",")],
                    help="comma-separated N values")
    ap.add_argument("--max-call", type=float, help="skip calls estimated to take longer (s)")
    ap.add_argument("--grad-n", type=lambda v: int(float(v)),
                    help="N of the gradient-memory measurement (default 1e5, 1e4 with --quick)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    mode = "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    if args.sizes:
        cfg["sizes"] = args.sizes
        cfg["iterations"] = {n: cfg["iterations"].get(n, 10 if n <= 10_000 else 3)
                             for n in args.sizes}
    cfg["max_call"] = args.max_call or cfg["max_call"]
    cfg["grad_n"] = args.grad_n or cfg["grad_n"]
    info = {"command": "python " + shlex.join(sys.argv), "mode": mode, "cfg": cfg,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            **measure.machine(), "software": software()}
    notes = []
    status = ott_batch_size_status()
    shim = None
    if status is None:
        notes.append(f"OTT's PointCloud(batch_size={BATCH_SIZE}) runs as it is.")
    else:
        log(f"OTT batch_size is broken: {status}")
        shim = restore_is_vmappable()
        notes.append(
            f"OTT {importlib.import_module('ott').__version__}'s `PointCloud(batch_size=...)` "
            f"does not run with jax {jax.__version__}: {status}. "
            + (f"Its online mode is timed with `jax.interpreters.batching.is_vmappable` "
               f"{shim} (OTT has no other matrix-free point-cloud mode)." if shim else
               "It is not timed: restoring the removed function did not make it run."))
    pykeops_note = None
    if importlib.util.find_spec("pykeops") is None:
        pykeops_note = "pykeops not installed"
        notes.append("GeomLoss's online backend needs pykeops, which is not installed here: "
                     "not timed (`pip install pykeops` to add it).")
    jk_ot, why = jaxkeops_ot_status()
    if jk_ot is None:
        notes.append(f"jaxkeops.ot SamplesLoss is not timed: {why}.")
    log(f"Sinkhorn benchmarks ({mode}): {info['software']}")
    sweep = Sweep(cfg)
    iterations = iteration_table(sweep, cfg, iteration_methods(status, shim))
    ott_online = (f"OTT sinkhorn_divergence, PointCloud(batch_size={BATCH_SIZE})"
                  if status is None or shim is not None else None)
    divergences = divergence_table(sweep, cfg, jk_ot, pykeops_note, ott_online)
    memory = gradient_memory(cfg, jk_ot)
    info["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info["elapsed"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(info, iterations, divergences, memory, notes))
    log(f"wrote {out} in {info['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
