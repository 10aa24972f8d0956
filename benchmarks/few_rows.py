"""Few output rows, a long reduced axis (M = 10, N = 1e7): one thread against the whole pool,
with and without the split of the reduced axis over the pool's threads.

    python benchmarks/few_rows.py                  # M = 10 (and 1), N = 1e7, D = 3, float32
    python benchmarks/few_rows.py --n 2000000 --rounds 2

Each round times every workload in this process (all cores, the reduced axis split, then not
split: the split disabled by patching jaxkeops.primitive.thread_split) and in a process pinned
to one core (`taskset -c 0`). The report gives medians over the rounds' calls, the speed-up
over one core and the CPU/wall ratio (how many cores were busy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from measure import machine, run_once

import jaxkeops.primitive as primitive
from jaxkeops import Vi, Vj

CALLS = 5  # timed calls per workload, layout and round


def workloads(n: int) -> dict:
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(size=(n, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)

    def gauss(x):
        return (-Vi(x).sqdist(Vj(y)) / 0.02).exp() @ b

    def lse(x):
        return ((Vj(g) - Vi(x).sqdist(Vj(y))) / 0.01).logsumexp(axis=1)

    def knn(x):
        return Vi(x).sqdist(Vj(y)).argKmin(10, axis=1)

    x10 = jnp.asarray(rng.uniform(size=(10, 3)), jnp.float32)
    return {"Gaussian sum, M = 10": (gauss, x10), "Gaussian sum, M = 1": (gauss, x10[:1]),
            "LSE step, M = 10": (lse, x10), "10-NN, M = 10": (knn, x10)}


def time_all(n: int, split: bool) -> dict[str, tuple[list[float], list[float]]]:
    """(walls, cpu seconds) of CALLS calls of each workload, compiled with or without the
    split."""
    original = primitive.thread_split
    if not split:
        primitive.thread_split = lambda *args: 1
    try:
        out = {}
        for name, (f, x) in workloads(n).items():
            jitted = jax.jit(lambda x, f=f: f(x))
            jitted(x).block_until_ready()  # compiles
            samples = [run_once(lambda j=jitted, x=x: j(x).block_until_ready())[0]
                       for _ in range(CALLS)]
            out[name] = ([s.wall for s in samples], [s.cpu for s in samples])
        return out
    finally:
        primitive.thread_split = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="N")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(time_all(args.n, split=True)))
        return
    layouts = ("all cores, split", "all cores, not split", "1 core")
    walls = {layout: {} for layout in layouts}
    cpus = {layout: {} for layout in layouts}
    for _ in range(args.rounds):
        pinned = subprocess.run(["taskset", "-c", "0", sys.executable, __file__, "--worker",
                                 "--n", str(args.n)], capture_output=True, text=True, check=True)
        results = {"all cores, split": time_all(args.n, True),
                   "all cores, not split": time_all(args.n, False),
                   "1 core": json.loads(pinned.stdout.strip().splitlines()[-1])}
        for layout, per_workload in results.items():
            for name, (w, c) in per_workload.items():
                walls[layout].setdefault(name, []).extend(w)
                cpus[layout].setdefault(name, []).extend(ci / wi for ci, wi in zip(c, w))
    print(f"# Few output rows, N = {args.n:,}, D = 3, float32, median of "
          f"{args.rounds * CALLS} calls\n")
    print(", ".join(f"{k}: {v}" for k, v in machine().items()) + "\n")
    print("| workload | 1 core | all cores, not split | all cores, split | split vs 1 core "
          "| CPU/wall (split) |")
    print("|---|---|---|---|---|---|")
    for name in walls["1 core"]:
        one, whole, split = (statistics.median(walls[layout][name])
                             for layout in ("1 core", "all cores, not split", "all cores, split"))
        cpu = statistics.median(cpus["all cores, split"][name])
        print(f"| {name} | {one * 1e3:.1f} ms | {whole * 1e3:.1f} ms ({one / whole:.2f}x) | "
              f"{split * 1e3:.1f} ms | {one / split:.2f}x | {cpu:.2f} |")


if __name__ == "__main__":
    main()
