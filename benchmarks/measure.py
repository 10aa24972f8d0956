"""Timing, CPU use and peak memory of one call, and a description of the machine."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM) of this process
        return True
    except OSError:
        return False


@dataclass
class Sample:
    wall: float
    cpu: float
    peak_mb: float | None


def run_once(call, track_memory: bool = False):
    """(Sample, output) of one call: wall time, CPU time of all threads, and the peak resident
    memory the call added on top of what the process held before it (MB)."""
    peak_ok = track_memory and _reset_peak()
    # Read only when asked for: read before every timed call, it made a jitted call at
    # M = N = 1e3 16-19 us slower and the reference's ctypes call 4-6 us (why, not found).
    rss0 = _status_kb("VmRSS") if track_memory else 0
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    out = call()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    peak = None
    if track_memory:
        hwm = _status_kb("VmHWM") if peak_ok else ru1.ru_maxrss
        peak = max(hwm - rss0, 0) / 1024
    return Sample(wall, cpu, peak), out


@dataclass
class Timing:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def threads(self) -> float:
        return sum(self.cpus) / sum(self.walls)


def alternate(calls: dict, max_runs: int, budget: float, track_memory: bool = True):
    """Time every call in turn, round after round (the machine is shared: alternating spreads
    its noise over all methods). The first round measures memory (host memory, unless
    `track_memory` is False) and keeps the outputs; later rounds are limited per method so
    that runs x time stays within `budget` seconds."""
    timings = {name: Timing() for name in calls}
    outputs = {}
    for r in range(max_runs):
        for name, call in calls.items():
            t = timings[name]
            if r and r >= max(1, min(max_runs, int(budget / t.walls[0]))):
                continue
            sample, out = run_once(call, track_memory=track_memory and r == 0)
            t.walls.append(sample.wall)
            t.cpus.append(sample.cpu)
            if r == 0:
                t.peak_mb, outputs[name] = sample.peak_mb, out
            del out
    return timings, outputs


def median_call_us(call, n: int) -> float:
    """Median wall time of n calls, microseconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def machine() -> dict[str, str]:
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    model = model or platform.processor() or "unknown CPU"
    simd = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": f"{model} ({simd})", "cores": str(os.cpu_count()), "ram": f"{mem:.0f} GiB",
            "load": " ".join(f"{v:.2f}" for v in os.getloadavg())}
