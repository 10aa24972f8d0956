"""A Sinkhorn divergence and its gradient with the point clouds split over several devices.

The points are sharded by rows over a mesh of all devices (on a CPU-only machine, this script
asks XLA for 4 host devices), and `SamplesLoss("sinkhorn")` runs under `jax.jit` unchanged:
XLA's SPMD partitioner splits every reduction of the Sinkhorn loop and of its gradient, each
device visiting a quarter of the pairs (i, j), and merges the partial log-sum-exps with
all-reduces. The result is checked against the same computation on one device, and the plot
shows which device holds which points and the gradient flow that moves x towards y.

    python examples/sinkhorn_devices.py [--quick] [--out DIR] [--devices 4]

Prints the divergence on one device and on the mesh, their difference, the timings and the
pairs one device's kernel calls visit; saves DIR/sinkhorn_devices.png.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path


def _devices_argument() -> int:
    for k, arg in enumerate(sys.argv):
        if arg == "--devices" and k + 1 < len(sys.argv):
            return int(sys.argv[k + 1])
        if arg.startswith("--devices="):
            return int(arg.split("=", 1)[1])
    return 4


# The host device count is fixed when JAX starts: set it before importing jax.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={_devices_argument()}")

import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxkeops.ot import SamplesLoss  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def clouds(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.sort(rng.uniform(0, 2 * np.pi, n))  # sorted: each device holds an arc
    x = np.stack([np.cos(t), np.sin(t)], 1) * (0.5 + 0.1 * rng.normal(size=(n, 1)))
    y = rng.normal(size=(n, 2)) * [0.6, 0.25] + [1.2, 0.0]
    return x.astype(np.float32), y.astype(np.float32)


def pairs_per_device(compiled) -> list[int]:
    """The pairs (i, j) that each kernel call of one device visits (local rows x n_red)."""
    counts = []
    for line in compiled.as_text().splitlines():
        if re.search(r'custom_call_target="jaxkeops_(cpu|cuda)"', line):
            dims = re.search(r"= \(?[a-z0-9]+\[([0-9,]*)\]", line).group(1).split(",")
            n_red = int(re.search(r"n_red = (\d+)", line).group(1))
            counts.append(int(np.prod([int(d) for d in dims[:-1]])) * n_red)
    return counts


def timed(f, *args, runs: int) -> tuple[float, object]:
    out = jax.block_until_ready(f(*args))
    start = time.perf_counter()
    for _ in range(runs):
        out = jax.block_until_ready(f(*args))
    return (time.perf_counter() - start) / runs, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 points instead of 20,000")
    parser.add_argument("--out", type=Path, default=Path("examples/output"))
    parser.add_argument("--devices", type=int, default=4, help="host devices (CPU only)")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    runs = 2 if args.quick else 3
    x, y = clouds(np.random.default_rng(0), n)
    devices = jax.devices()
    print(f"{len(devices)} devices ({devices[0].platform}), N = M = {n:,} points in 2-D")

    loss = SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.7)
    value_and_grad = jax.jit(jax.value_and_grad(loss))

    one = devices[0]
    single_time, (single_value, single_grad) = timed(
        value_and_grad, jax.device_put(x, one), jax.device_put(y, one), runs=runs)

    mesh = jax.make_mesh((len(devices),), ("points",))
    rows = NamedSharding(mesh, P("points"))
    xs, ys = jax.device_put(x, rows), jax.device_put(y, rows)
    mesh_time, (value, grad) = timed(value_and_grad, xs, ys, runs=runs)
    pairs = pairs_per_device(value_and_grad.lower(xs, ys).compile())

    difference = abs(float(value) - float(single_value)) / abs(float(single_value))
    grad, single_grad = np.asarray(grad), np.asarray(single_grad)
    grad_difference = float(np.abs(grad - single_grad).max() / np.abs(single_grad).max())
    print(f"S(x, y) on one device:      {float(single_value):.6f}  ({single_time:.3f} s "
          "with its gradient)")
    print(f"S(x, y) on {len(devices)} devices:       {float(value):.6f}  ({mesh_time:.3f} s "
          "with its gradient)")
    print(f"relative difference: value {difference:.1e}, gradient {grad_difference:.1e}")
    print(f"each device's kernel calls visit "
          f"{sorted(set(pairs))} pairs of {n * n:,} ({len(pairs)} kernel calls)")
    if difference > 1e-4 or grad_difference > 1e-3:
        raise SystemExit("the sharded divergence differs from the one-device one")

    owner = np.repeat(np.arange(len(devices)), n // len(devices))
    g = grad * n  # the displacement field x_i -> x_i - grad_i / a_i
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.scatter(y[:, 0], y[:, 1], c="0.6", s=2, alpha=0.4, label="y")
    for device in range(len(devices)):
        held = owner == device
        left.scatter(x[held, 0], x[held, 1], s=4, label=f"x on device {device}")
    left.set_title("x and y, split by rows over the devices")
    left.legend(loc="lower right", markerscale=3, fontsize=8)
    step = max(1, n // 150)
    right.scatter(y[:, 0], y[:, 1], c="0.6", s=2, alpha=0.4)
    right.quiver(x[::step, 0], x[::step, 1], -g[::step, 0], -g[::step, 1],
                 np.hypot(g[::step, 0], g[::step, 1]), cmap="plasma", angles="xy",
                 scale_units="xy", scale=1.0, width=0.003)
    right.set_title(f"x_i -> x_i - grad_i S / a_i on {len(devices)} devices")
    for ax in (left, right):
        ax.set_aspect("equal")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "sinkhorn_devices.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
