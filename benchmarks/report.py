"""The markdown report and the plot."""

from __future__ import annotations

from pathlib import Path

import gpu
from methods import EPS, METHODS, SIGMA, WORKLOADS, K
from points import find_point, fmt_err, fmt_mb, fmt_n, fmt_s


def _header(info) -> list[str]:
    cfg = info["cfg"]
    return [
        "# jaxkeops benchmarks", "", "```", info["command"], "```", "",
        f"- Date: {info['date']}; total wall time {info['elapsed'] / 60:.1f} min "
        f"({info['mode']} mode).",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM; load average "
        f"{info['load']} at the start, {info['load_end']} at the end (1, 5, 15 min).",
        f"- Software: jax {info['jax']}, jaxkeops {info['jaxkeops']}, pykeops "
        f"{info['pykeops'] or 'not installed'}; OMP_NUM_THREADS={info['omp']}.",
        f"- Reference kernel: {info['ref']}.",
        f"- Times are **medians** of up to {cfg['max_runs']} runs per method (fewer for slow "
        f"calls: about {cfg['point_budget']:g} s of runs per method and point; the count is in "
        "the `runs` column), with all methods of a point run in alternation in one process, "
        "after compilation. Calls estimated (quadratically, from the method's previous size) to "
        f"take over {cfg['max_call']:g} s are skipped and marked with their estimate.",
        "- Data: float32, x and y drawn from N(0, I/D), so |x - y|^2 is about 2 at every D; "
        f"sigma = {SIGMA}, eps = {EPS}, K = {K}; b and g drawn from N(0, 1) and N(0, 0.01).", ""]


def _summary(info, points) -> list[str]:
    ratio = info["cfg"]["ratio"]
    lines = ["## Summary", "",
             "Reference ratio = reference kernel time / jaxkeops time (1 = as fast as the "
             "hand-written AVX-512 kernel). CPU/wall = CPU time over wall time of the calls "
             f"(thread use; {info['cores']} at best).", "",
             "| workload | D | M = N | ref kernel | jaxkeops | ref / jaxkeops "
             "| CPU/wall jaxkeops | CPU/wall ref |", "|---|---|---|---|---|---|---|---|"]
    for d in sorted({p.d for p in points}):
        for w in WORKLOADS:
            both = [n for n in sorted({p.n for p in points if (p.workload, p.d) == (w, d)})
                    if all(getattr(find_point(points, w, d, n, m), "timing", None)
                           for m in ("jaxkeops", "ref kernel"))]
            if not both:
                continue
            n = ratio.get(d) if ratio.get(d) in both else both[-1]
            jk, ref = (find_point(points, w, d, n, m).timing for m in ("jaxkeops", "ref kernel"))
            lines.append(f"| {w} | {d} | {n:,} | {fmt_s(ref.median)} | {fmt_s(jk.median)} | "
                         f"{ref.median / jk.median:.2f} | {jk.threads:.2f} | "
                         f"{ref.threads:.2f} |")
    big = [p for p in points if p.method == "jaxkeops" and p.timing]
    if big:
        p = max(big, key=lambda p: p.timing.median)
        lines += ["", f"Thread use: the longest jaxkeops call ({p.workload}, D = {p.d}, M = N = "
                  f"{p.n:,}, {fmt_s(p.timing.median)}) used {p.timing.threads:.2f} CPU seconds "
                  f"per second on {info['cores']} cores (a busy machine lowers both columns)."]
    n = ratio[3]
    rows = []
    for w in WORKLOADS:
        jk, bl = find_point(points, w, 3, n, "jaxkeops"), find_point(points, w, 3, n, "blocked JAX")
        if jk is None or jk.timing is None or bl is None or (bl.timing is None and not bl.est):
            continue
        t_bl = bl.timing.median if bl.timing else bl.est
        approx = "" if bl.timing else "~"
        rows.append(f"| {w} | {approx}{fmt_s(t_bl)}{'' if bl.timing else ' (estimated)'} | "
                    f"{fmt_s(jk.timing.median)} | {approx}{t_bl / jk.timing.median:.1f}x |")
    if rows:
        lines += ["", f"Speed-up over blocked JAX (`lax.map` over 1,000-row blocks), M = N = "
                  f"{n:,}, D = 3:", "", "| workload | blocked JAX | jaxkeops | speed-up |",
                  "|---|---|---|---|", *rows]
    return lines + [""]


def _time_tables(points, info) -> list[str]:
    limit = f"{info.get('mem_limit', 4e9) / 1e9:.3g} GB"
    lines = ["## Time against M = N", "",
             "Median wall time. `~X` = skipped, it would take about X (extrapolated "
             "quadratically); `needs X GB`: dense JAX is skipped when M N D float32 numbers "
             f"exceed {limit}, blocked JAX when one block's (1000, N) matrix does (its gradient: "
             "the (1000, N, D) differences)" + ("." if info.get("gpu") else
                                                "; `n/a` = the reference kernel has no such D."),
             ""]
    for d in sorted({p.d for p in points}):
        sizes = sorted({p.n for p in points if p.d == d})
        lines += [f"### D = {d}", "", "| workload | method | " + " | ".join(
            f"M = N = {fmt_n(n)}" for n in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
        for w in WORKLOADS:
            for m in METHODS:
                cells = []
                for n in sizes:
                    p = find_point(points, w, d, n, m)
                    cells.append("" if p is None else fmt_s(p.timing.median) if p.timing
                                 else f"~{fmt_s(p.est)}" if p.est else p.note)
                if set(cells) - {"", "not installed", "not available"}:
                    lines.append(f"| {w} | {m} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _details(points, gpu: bool = False) -> list[str]:
    host = "" if gpu else (
        "Peak memory = the largest resident memory the call added "
        "to the process (Linux VmHWM reset before the call, inputs already in memory; "
        "memory the allocator kept from earlier calls is reused unseen, so small values "
        "are lower bounds within a few tens of MB). ")
    lines = ["## Details", "", "pairs/s = M N / time. " + host +
             "Error on the first 100 rows against float64 numpy: max |out - exact| / max "
             "|exact|; for argKmin the fraction of the exact float64 neighbours found.", ""]
    cols = ["D", "M = N", "method", "median", "runs", "pairs/s"] + (
        [] if gpu else ["CPU/wall", "peak memory"]) + ["error"]
    for w, title in WORKLOADS.items():
        mine = [p for p in points if p.workload == w]
        if not mine:
            continue
        lines += [f"### {title}", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        for p in sorted(mine, key=lambda p: (p.d, p.n, METHODS.index(p.method))):
            if p.timing is None:
                if p.note not in ("n/a", "not installed", "not available"):
                    lines.append(f"| {p.d} | {p.n:,} | {p.method} | {p.note} |"
                                 + " |" * (len(cols) - 4))
                continue
            t = p.timing
            host = [] if gpu else [f"{t.threads:.2f}", fmt_mb(t.peak_mb)]
            lines.append("| " + " | ".join([
                str(p.d), f"{p.n:,}", p.method, fmt_s(t.median), str(len(t.walls)),
                f"{p.n * p.n / t.median:.2e}", *host, fmt_err(w, p.err)]) + " |")
        lines.append("")
    return lines


def _extras(extras) -> list[str]:
    lines = []
    fc = extras.get("first_call")
    if fc:
        lines += ["## First call of a new formula", "",
                  "Each in a new process, jitted, M = N = 1,000, D = 3. Empty cache: tracing, "
                  "XLA compilation, kernel generation and compilation (C++, or CUDA by NVRTC on "
                  "the GPU). Kernel on disk: a "
                  "second new process with the same JAXKEOPS_CACHE_DIR, which loads the "
                  f"compiled kernels ({fc['kernels']} for these formulas) instead. The first "
                  "row also pays the process's one-time set-up.", "",
                  "| workload | first call, empty cache | first call, kernel on disk "
                  "| later call |", "|---|---|---|---|"]
        for w in WORKLOADS:
            if w in fc["cold"]:
                c, h = fc["cold"][w], fc["warm"][w]
                lines.append(f"| {w} | {fmt_s(c['first'])} | {fmt_s(h['first'])} | "
                             f"{fmt_s(h['second'])} |")
        lines += ["", f"For scale: the first call of a trivial jitted op (`x * 2 + 1`) in the "
                  f"same processes took {fmt_s(fc['cold']['trivial'])} / "
                  f"{fmt_s(fc['warm']['trivial'])}; `import jax, jaxkeops` took "
                  f"{fmt_s(fc['warm']['import'])}.", ""]
    ov = extras.get("overhead")
    if ov:
        (a, ta), (b, tb) = ov.items()
        lines += ["## Call overhead", "", "Median wall time of a jitted call on 8 points "
                  "(D = 3), inputs already on the device.", "", "| call | median |",
                  "|---|---|", f"| {a} | {ta:.1f} µs |", f"| {b} | {tb:.1f} µs |", "",
                  f"jaxkeops adds {ta - tb:.1f} µs per call over a trivial jitted op.", ""]
    ld = extras.get("large_d")
    if ld:
        base = ld[0]["pdps"]
        lines += ["## Gaussian sum at large D", "",
                  "Throughput per unit of work (pairs x D / s) should not collapse as D grows.",
                  "", "| D | M = N | median | runs | pairs/s | pairs x D / s | vs D = 64 "
                  "| CPU/wall |", "|---|---|---|---|---|---|---|---|"]
        for r in ld:
            lines.append(f"| {r['d']} | {r['n']:,} | {fmt_s(r['time'])} | {r['runs']} | "
                         f"{r['n'] ** 2 / r['time']:.2e} | {r['pdps']:.2e} | "
                         f"{r['pdps'] / base:.2f} | {r['threads']:.2f} |")
        lines.append("")
    return lines


METHOD_NOTES = [
    "## Methods", "",
    "- **jaxkeops**: ordinary LazyTensor formulas under `jax.jit` (Gaussian sum and argKmin "
    "are `jaxkeops._demo`'s; the gradient is `jax.grad` of the sum of the Gaussian sum; "
    "LogSumExp is `-eps * ((Vj(g) - D_ij) / eps).logsumexp(axis=1)`).",
    "- **ref kernel**: the hand-written AVX-512 OpenMP kernel `../shared/perf/refkern.cpp`, "
    "built at benchmark time, called through ctypes on numpy arrays (a measuring stick only).",
    "- **blocked JAX**: `lax.map` over blocks of 1,000 rows (`jaxkeops._demo`'s baselines; the "
    "gradient and LogSumExp apply the dense formulas below per block), jitted.",
    "- **dense JAX**: the whole (M, N) matrix through `(x[:, None] - y[None]) ** 2`, jitted; "
    "the gradient is `jax.grad`, argKmin `lax.top_k`.",
    "- **pykeops**: the same formulas with `pykeops.numpy.LazyTensor` on the CPU (its own "
    "compiler flags; the gradient formula is written out, pykeops.numpy has no autodiff).", ""]


def markdown(info, points, extras, png: Path | None) -> str:
    if info.get("gpu"):
        head, summary, notes = gpu.header(info), gpu.summary(info, points), gpu.METHOD_NOTES
    else:
        head, summary, notes = _header(info), _summary(info, points), METHOD_NOTES
    lines = head + summary + ([f"![time against M = N]({png.name})", ""] if png else [])
    lines += _time_tables(points, info) + _details(points, bool(info.get("gpu")))
    return "\n".join(lines + _extras(extras) + notes)


def plot(points, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    dims = sorted({p.d for p in points})
    works = [w for w in WORKLOADS if any(p.workload == w for p in points)]
    if not dims or not works:
        return None
    fig, axes = plt.subplots(len(dims), len(works), figsize=(3.6 * len(works), 3.2 * len(dims)),
                             squeeze=False, sharex=True)
    colors = dict(zip(METHODS, ("C0", "k", "C1", "C2", "C3")))
    for i, d in enumerate(dims):
        for j, w in enumerate(works):
            ax = axes[i][j]
            for m in METHODS:
                mine = sorted((p for p in points if (p.workload, p.d, p.method) == (w, d, m)),
                              key=lambda p: p.n)
                done = [(p.n, p.timing.median) for p in mine if p.timing]
                est = [(p.n, p.est) for p in mine if p.timing is None and p.est]
                if done:
                    ax.plot(*zip(*done), "o-", color=colors[m], label=m, ms=4)
                if est:
                    ax.plot(*zip(*(done[-1:] + est)), ":", color=colors[m])
                    ax.plot(*zip(*est), "o", mfc="none", color=colors[m], ms=4)
            ax.set(xscale="log", yscale="log", title=f"{w}, D = {d}")
            ax.grid(True, which="major", alpha=0.3)
            if j == 0:
                ax.set_ylabel("median time (s)")
            if i == len(dims) - 1:
                ax.set_xlabel("M = N")
    legend = {}
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)
    fig.text(0.99, 0.01, "hollow markers: skipped, estimated", ha="right", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
