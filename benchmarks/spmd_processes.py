"""One device against two, where each device owns a core: a Gaussian sum under jax.jit in one
process pinned to one core, against two processes pinned to one core each and joined by
jax.distributed (gloo CPU collectives), the problem split by XLA's SPMD partitioner.

    python benchmarks/spmd_processes.py                   # M = N = 1e5, D = 3, float32
    python benchmarks/spmd_processes.py --n 20000 --rounds 2 --runs 2

This is the setting of several hosts or GPUs, where a device has its own compute; on one host,
XLA's host devices share one thread pool (see benchmarks/spmd.py). Layouts alternate round by
round; every process times `--runs` calls after a compiling one, and the report gives the
median over all the timed calls of the slowest process, with the ratio to one core. Needs
`taskset` (util-linux) and at least two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

LAYOUTS = {
    "1 process, 1 core": (1, None),
    "2 processes, 1 core each, x split over i": (2, "i"),
    "2 processes, 1 core each, y split over j": (2, "j"),
}


def worker(rank: int, processes: int, port: int, split: str | None, n: int, runs: int) -> None:
    import jax

    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=processes,
                                   process_id=rank)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxkeops import Vi, Vj

    rng = np.random.default_rng(0)  # the same data in every process
    x = rng.uniform(size=(n, 3)).astype(np.float32)
    y = rng.uniform(size=(n, 3)).astype(np.float32)
    b = rng.normal(size=(n, 1)).astype(np.float32)
    mesh = jax.make_mesh((processes,), ("d",))
    split_rows, whole = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    layout = {None: (whole, whole, whole), "i": (split_rows, whole, whole),
              "j": (whole, split_rows, split_rows)}[split]
    x, y, b = (jax.make_array_from_callback(a.shape, s, lambda index, a=a: a[index])
               for a, s in zip((x, y, b), layout))

    @jax.jit
    def gaussian_sum(x, y, b):
        return (-Vi(x).sqdist(Vj(y)) / 0.02).exp() @ b

    out = gaussian_sum(x, y, b).block_until_ready()  # compiles
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = gaussian_sum(x, y, b).block_until_ready()
        walls.append(time.perf_counter() - t0)
    local = sum(float(jnp.sum(s.data)) for s in out.addressable_shards)
    print(json.dumps({"rank": rank, "walls": walls, "local_sum": local}), flush=True)
    if processes > 1:
        jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_layout(processes: int, split: str | None, n: int, runs: int) -> list[dict]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen(
        ["taskset", "-c", str(rank), sys.executable, __file__, "--worker", str(rank),
         str(processes), str(port), split or "-", str(n), str(runs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in range(processes)]
    records = []
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed:\n{err[-4000:]}")
        records.append(json.loads(out.strip().splitlines()[-1]))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="M = N")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per process and round")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rank, processes, port, split, n, runs = args.worker
        worker(int(rank), int(processes), int(port), None if split == "-" else split, int(n),
               int(runs))
        return
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs at least two cores")
    walls = {name: [] for name in LAYOUTS}
    sums = {}
    for _ in range(args.rounds):
        for name, (processes, split) in LAYOUTS.items():
            records = run_layout(processes, split, args.n, args.runs)
            # A call is done when its slowest process is done.
            walls[name] += [max(w) for w in zip(*(r["walls"] for r in records))]
            # Each process holds the whole output (j) or its rows (i): compare the totals.
            total = (records[0]["local_sum"] if split == "j"
                     else sum(r["local_sum"] for r in records))
            sums.setdefault(name, total)
    reference = sums["1 process, 1 core"]
    for name, total in sums.items():
        assert abs(total - reference) <= 1e-4 * abs(reference), (name, total, reference)
    base = statistics.median(walls["1 process, 1 core"])
    print(f"# Gaussian sum, M = N = {args.n:,}, D = 3, float32, median of "
          f"{args.rounds * args.runs} calls per layout\n")
    print("| layout | time | vs 1 core |")
    print("|---|---|---|")
    for name in LAYOUTS:
        wall = statistics.median(walls[name])
        print(f"| {name} | {wall * 1e3:.0f} ms | {base / wall:.2f}x |")


if __name__ == "__main__":
    main()
