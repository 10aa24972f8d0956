"""A measured (or skipped) benchmark point, and the formatting of times, sizes and errors that
every report shares (report.py for the CPU, gpu.py for the GPU, ot.py for optimal transport)."""

from __future__ import annotations

from dataclasses import dataclass

from measure import Timing


@dataclass
class Point:
    workload: str
    d: int
    n: int
    method: str
    timing: Timing | None = None
    note: str = ""            # why it was not measured
    est: float | None = None  # estimated seconds, when skipped for time
    err: float | None = None


def fmt_s(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.3g} ms"
    return f"{t:.3g} s" if t < 100 else f"{t:.0f} s"


def fmt_n(n: int) -> str:
    exp = len(str(n)) - 1
    mant = n / 10**exp
    return f"{mant:g}e{exp}" if mant != int(mant) or n >= 1000 else str(n)


def fmt_err(workload: str, err: float | None) -> str:
    if err is None:
        return ""
    return f"{err:.1%} found" if workload == "knn" else f"{err:.1e}"


def fmt_mb(mb: float | None) -> str:
    return "" if mb is None else f"{mb:.0f} MB" if mb >= 1 else "< 1 MB"


def find_point(points, workload, d, n, method):
    for p in points:
        if (p.workload, p.d, p.n, p.method) == (workload, d, n, method):
            return p
    return None
