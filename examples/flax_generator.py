"""A Flax generator trained to match a distribution with a kernel MMD loss built on jaxkeops.

A small nnx MLP maps 2-D Gaussian noise to points in the plane; the target is "two moons".
The loss is the squared maximum mean discrepancy between a batch of generated points x and a
batch of target points y,

    MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j),

with a multi-scale Gaussian kernel k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2)): three jaxkeops
kernel sums, differentiated by jax.grad without any N x N matrix. `--loss sinkhorn` trains
with jaxkeops.nn.SinkhornLoss (the debiased Sinkhorn divergence) instead, about 3x slower
per step.

    python examples/flax_generator.py [--quick] [--out DIR] [--loss mmd|sinkhorn]

Prints the loss curve, the final MMD on held-out samples (against the MMD between two target
samples, its floor) and how far generated and target points are from each other's cloud;
saves DIR/flax_generator.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np
import optax
from flax import nnx

from jaxkeops import Vi, Vj
from jaxkeops.nn import SinkhornLoss

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SCALES = (0.05, 0.2, 1.0)
MOON_NOISE = 0.06
STRAY = 0.2  # a point farther than this from the other cloud is a stray


def sample_target(rng: np.random.Generator, n: int) -> np.ndarray:
    """n points of two interleaved half circles ("two moons"), centred, with noise."""
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    moons = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1),
                     np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    points = 1.5 * (moons - np.array([0.5, 0.25])) + MOON_NOISE * rng.normal(size=(n, 2))
    return points.astype(np.float32)


class Generator(nnx.Module):
    """An MLP from noise (batch, noise_dim) to points (batch, 2)."""

    def __init__(self, noise_dim: int = 2, width: int = 128, depth: int = 3, *,
                 rngs: nnx.Rngs):
        widths = [noise_dim] + [width] * depth + [2]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, noise: jax.Array) -> jax.Array:
        h = noise
        for layer in self.layers[:-1]:
            h = nnx.gelu(layer(h))
        return self.layers[-1](h)


def kernel_mean(a: jax.Array, b: jax.Array) -> jax.Array:
    """mean_ij k(a_i, b_j) for the multi-scale Gaussian kernel, by a jaxkeops kernel sum."""
    sqdist = Vi(a).sqdist(Vj(b))
    kernel = sum((-sqdist * (1 / (2 * s**2))).exp() for s in SCALES)
    return kernel.sum(axis=1).mean() / b.shape[0]


def mmd2(x: jax.Array, y: jax.Array) -> jax.Array:
    """The (biased, V-statistic) squared MMD between the samples x and y."""
    return kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)


def train(generator: Generator, args) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    optimizer = nnx.Optimizer(generator, optax.adam(optax.cosine_decay_schedule(
        3e-3, args.steps, alpha=0.05)), wrt=nnx.Param)
    loss_fn = mmd2 if args.loss == "mmd" else SinkhornLoss(blur=0.05, scaling=0.7)

    @nnx.jit
    def step(generator, optimizer, noise, target):
        loss, grads = nnx.value_and_grad(lambda g: loss_fn(g(noise), target))(generator)
        optimizer.update(generator, grads)
        return loss

    rng = np.random.default_rng(1)
    plot_noise = rng.normal(size=(2000, args.noise_dim)).astype(np.float32)
    snapshots = {0: np.asarray(generator(plot_noise))}
    snapshot_steps = {args.steps // 8}
    losses = []
    start = time.perf_counter()
    for number in range(1, args.steps + 1):
        noise = rng.normal(size=(args.batch, args.noise_dim)).astype(np.float32)
        losses.append(float(step(generator, optimizer, noise, sample_target(rng, args.batch))))
        if number in snapshot_steps or number == args.steps:
            snapshots[number] = np.asarray(generator(plot_noise))
        if number % max(1, args.steps // 8) == 0 or number == 1:
            print(f"  step {number:5d}  {args.loss_name} {np.mean(losses[-20:]):.5f}")
    print(f"  {args.steps} steps in {time.perf_counter() - start:.1f} s (with compilation)")
    return np.array(losses), snapshots


def nearest_distance(a: jax.Array, b: jax.Array) -> np.ndarray:
    """The distance from each point of a to the nearest point of b (a jaxkeops Min)."""
    return np.sqrt(np.asarray(Vi(a).sqdist(Vj(b)).min(axis=1))[:, 0])


def stray_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of the points of a farther than STRAY from every point of b."""
    return float((nearest_distance(a, b) > STRAY).mean())


def plot(path: Path, losses, snapshots, target, loss_name, final_mmd, floor):
    steps = sorted(snapshots)
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for ax, step in zip(axes.flat, steps):
        ax.scatter(target[:, 0], target[:, 1], s=2, color="0.7", label="target (two moons)")
        ax.scatter(snapshots[step][:, 0], snapshots[step][:, 1], s=2, color="C0", alpha=0.6,
                   label="generated")
        ax.set(xlim=(-3, 3), ylim=(-2, 2), aspect="equal", xlabel="x_1", ylabel="x_2",
               title=f"Generated points after {step} steps")
        if step == steps[0]:
            ax.legend(loc="lower left", markerscale=5, fontsize=8)
    ax = axes.flat[-1]
    ax.semilogy(np.arange(1, len(losses) + 1), np.maximum(losses, 1e-7), color="C0", lw=0.8,
                label=f"training {loss_name} (batch)")
    ax.axhline(final_mmd, color="C1", ls="--", label=f"held-out MMD^2 {final_mmd:.1e}")
    ax.axhline(floor, color="k", ls=":", label=f"MMD^2 of two target samples {floor:.1e}")
    ax.set(xlabel="step", ylabel=loss_name, title="Training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "output",
                        help="folder for the PNG (default: examples/output)")
    parser.add_argument("--loss", choices=("mmd", "sinkhorn"), default="mmd",
                        help="the training loss (default: mmd)")
    args = parser.parse_args(argv)
    args.steps = 500 if args.quick else 2000
    args.batch = 512 if args.quick else 2048
    args.noise_dim = 2
    args.loss_name = "MMD^2" if args.loss == "mmd" else "Sinkhorn divergence"
    start = time.perf_counter()

    print(f"Training an MLP generator with the {args.loss_name} loss ({args.steps} steps, "
          f"{args.batch} generated and {args.batch} target points per step):")
    generator = Generator(args.noise_dim, rngs=nnx.Rngs(0))
    losses, snapshots = train(generator, args)

    rng = np.random.default_rng(2)
    held_out = 4_000 if args.quick else 10_000
    generated = np.asarray(generator(rng.normal(size=(held_out, args.noise_dim))
                                     .astype(np.float32)))
    target, other_target = sample_target(rng, held_out), sample_target(rng, held_out)
    final_mmd, floor = float(mmd2(generated, target)), float(mmd2(other_target, target))
    initial = float(mmd2(snapshots[0], target[:len(snapshots[0])]))
    print(f"Held-out MMD^2 ({held_out:,} points each): generator {final_mmd:.2e}, two target "
          f"samples {floor:.2e} (the floor), initial generator {initial:.2e}")
    strays = stray_fraction(generated, target), stray_fraction(other_target, target)
    uncovered = stray_fraction(target, generated), stray_fraction(target, other_target)
    print(f"Farther than {STRAY} from the other cloud: {strays[0]:.1%} of the generated points "
          f"(of a second target sample: {strays[1]:.1%}); {uncovered[0]:.1%} of the target "
          f"points (with the second target sample instead: {uncovered[1]:.1%})")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "flax_generator.png"
    plot(path, losses, snapshots, target[:3000], args.loss_name, final_mmd, floor)
    print(f"Saved {path} (total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
