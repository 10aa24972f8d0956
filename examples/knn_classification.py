"""k-nearest-neighbour classification of two interleaved spirals with jaxkeops.ops.knn.

The training and test points are two noisy spirals in 2-D, with 5% of the training labels
flipped. Each test point gets the majority label of its k nearest training points, found by
one jaxkeops arg-K-min reduction (no test x train distance matrix). The test accuracy is
printed for several k: k = 1 copies the flipped labels and the noise into ragged islands,
larger k average them out and draw smooth spiral-shaped regions (the test labels are not
flipped; the spirals' noise makes them overlap, so no classifier reaches accuracy 1). The
decision regions of three values of k are drawn on a grid. With --quick: fewer points and a
coarser grid.

    python examples/knn_classification.py [--quick] [--out DIR]

Prints the accuracy for each k and the time of the largest query; saves
DIR/knn_classification.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from jaxkeops.ops import knn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

CLASSES = 2
KS = (1, 3, 7, 15, 31, 63, 127)
FLIPPED = 0.05


def spirals(rng: np.random.Generator, n: int, noise: float = 0.9):
    """n points (float32) on two interleaved spirals, and their labels 0 / 1."""
    label = rng.integers(0, CLASSES, n)
    t = np.sqrt(rng.uniform(0.02, 1.0, n)) * 3.5 * np.pi
    radius = t + noise * rng.normal(size=n)
    angle = t + np.pi * label
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return x.astype(np.float32), label


def knn_classify(x_train, labels, queries, k: int):
    """The majority label among the k nearest training points of every query (ties go to the
    smaller label), and the fraction of those neighbours that voted for label 1."""
    _, neighbours = knn(queries, x_train, k)
    votes = jax.nn.one_hot(labels[neighbours], CLASSES).sum(axis=1)        # (m, classes)
    return jnp.argmax(votes, axis=1), votes[:, 1] / k


def plot(path: Path, x_train, y_train, grid_axes, regions, accuracies, shown_ks) -> None:
    fig, axes = plt.subplots(1, len(shown_ks) + 1, figsize=(5 * (len(shown_ks) + 1), 4.6))
    colours = ListedColormap(["#f4a582", "#92c5de"])
    points = ListedColormap(["#b2182b", "#2166ac"])
    subset = np.random.default_rng(1).choice(len(x_train), min(len(x_train), 1500),
                                             replace=False)
    for ax, k, (labels, share) in zip(axes, shown_ks, regions):
        ax.pcolormesh(*grid_axes, labels, cmap=colours, shading="auto", rasterized=True)
        ax.contour(*grid_axes, share, levels=[0.5], colors="k", linewidths=0.8)
        ax.scatter(x_train[subset, 0], x_train[subset, 1], c=y_train[subset], cmap=points,
                   s=4, linewidths=0)
        ax.set(title=f"k = {k}: test accuracy {accuracies[k]:.3f}", aspect="equal",
               xticks=[], yticks=[])
    ax = axes[-1]
    ks = sorted(accuracies)
    ax.semilogx(ks, [accuracies[k] for k in ks], "o-", base=2)
    ax.set(xlabel="k (neighbours)", ylabel="test accuracy", title="Accuracy against k")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 10 s)")
    parser.add_argument("--out", type=Path, default=Path("examples/output"),
                        help="folder for the PNG (default: examples/output)")
    args = parser.parse_args(argv)
    n_train, n_test, side = (4_000, 4_000, 150) if args.quick else (20_000, 10_000, 300)
    start = time.perf_counter()

    rng = np.random.default_rng(0)
    x_train, y_clean = spirals(rng, n_train)
    flip = rng.uniform(size=n_train) < FLIPPED
    y_train = np.where(flip, 1 - y_clean, y_clean)
    x_test, y_test = spirals(rng, n_test)
    train, labels = jnp.asarray(x_train), jnp.asarray(y_train)
    print(f"KNN classification of two spirals: {n_train:,} training points ({FLIPPED:.0%} "
          f"of their labels flipped), {n_test:,} test points")

    accuracies = {}
    for k in KS:
        predicted, _ = knn_classify(train, labels, jnp.asarray(x_test), k)
        accuracies[k] = float(jnp.mean(predicted == jnp.asarray(y_test)))
        print(f"  k = {k:3d}: test accuracy {accuracies[k]:.3f}")
    best = max(accuracies, key=accuracies.get)
    print(f"  best: k = {best}")

    limit = np.abs(x_train).max() * 1.05
    axis = np.linspace(-limit, limit, side, dtype=np.float32)
    grid = jnp.asarray(np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2))
    shown_ks = (1, best, KS[-1])
    regions = []
    for k in shown_ks:
        timer = time.perf_counter()
        predicted, share = jax.block_until_ready(knn_classify(train, labels, grid, k))
        regions.append((np.asarray(predicted).reshape(side, side),
                        np.asarray(share).reshape(side, side)))
    print(f"  decision regions: {side * side:,} grid queries against {n_train:,} points "
          f"with k = {KS[-1]}: {time.perf_counter() - timer:.2f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "knn_classification.png"
    plot(path, x_train, y_train, (axis, axis), regions, accuracies, shown_ks)
    print(f"Saved {path} (total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
