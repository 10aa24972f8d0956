"""One device against two: a Gaussian sum under jax.jit, with the data on one host device, or
split over two host devices by rows (i) or by reduced rows (j) through XLA's SPMD partitioner.

    python benchmarks/spmd.py                 # M = N = 1e5, D = 3, float32, 7 runs each
    python benchmarks/spmd.py --n 20000 --runs 3

The three layouts run alternately in one process (with two host devices) and the report gives
medians, the ratio to one device and the CPU/wall ratio (how many cores were busy). Each host
device runs its kernel calls on XLA's intra-op thread pool, which has one thread per core.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from measure import machine, run_once  # noqa: E402

from jaxkeops import Vi, Vj  # noqa: E402


def gaussian_sum(x, y, b):
    return (-Vi(x).sqdist(Vj(y)) / 0.02).exp() @ b


def layouts(x, y, b):
    one = jax.devices()[0]
    mesh = jax.make_mesh((2,), ("d",))
    split, whole = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    return {
        "1 device": tuple(jax.device_put(a, one) for a in (x, y, b)),
        "2 devices, x split over i": (jax.device_put(x, split), jax.device_put(y, whole),
                                      jax.device_put(b, whole)),
        "2 devices, y split over j": (jax.device_put(x, whole), jax.device_put(y, split),
                                      jax.device_put(b, split)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="M = N")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(args.n, 3)), jnp.float32)
    y = jnp.asarray(rng.uniform(size=(args.n, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(args.n, 1)), jnp.float32)
    f = jax.jit(gaussian_sum)
    cases = layouts(x, y, b)
    reference = None
    for name, operands in cases.items():  # compile and check each layout once
        out = np.asarray(f(*operands))
        reference = out if reference is None else reference
        err = np.max(np.abs(out - reference)) / np.max(np.abs(reference))
        assert err < 1e-5, f"{name} differs from one device by {err:.1e}"
    walls = {name: [] for name in cases}
    cpus = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, operands in cases.items():
            sample, _ = run_once(lambda o=operands: f(*o).block_until_ready())
            walls[name].append(sample.wall)
            cpus[name].append(sample.cpu)
    base = statistics.median(walls["1 device"])
    print(f"# Gaussian sum, M = N = {args.n:,}, D = 3, float32, median of {args.runs} runs")
    print("\n" + ", ".join(f"{k}: {v}" for k, v in machine().items()) + "\n")
    print("| layout | time | vs 1 device | CPU/wall |")
    print("|---|---|---|---|")
    for name in cases:
        wall = statistics.median(walls[name])
        cpu = statistics.median(c / w for c, w in zip(cpus[name], walls[name]))
        print(f"| {name} | {wall * 1e3:.0f} ms | {base / wall:.2f}x | {cpu:.2f} |")


if __name__ == "__main__":
    main()
