"""Block-sparse reductions: a Gaussian sum on clustered 3-D points against the fraction of
cluster pairs kept, and SamplesLoss(backend="multiscale") against the online backend.

    python benchmarks/block_sparse.py                    # 1e6 points, and the OT part at 1e5
    python benchmarks/block_sparse.py --n 100000 --ot-n 20000

Part 1 clusters the points on a grid (`jaxkeops.cluster`), keeps the pairs of clusters whose
centroids are closer than a threshold, and times `K @ b` with those ranges (median of the
runs), against the dense reduction (timed at n / 10 points and scaled by 100 when n is large:
the dense time is quadratic). The error column compares the first 200 rows with a numpy
float64 sum over the kept pairs.
Part 2 times the Sinkhorn divergence of two clustered clouds with both backends, alternately.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxkeops import Vi, Vj
from jaxkeops.cluster import cluster_ranges_centroids, from_matrix, grid_cluster, sort_clusters
from jaxkeops.ot import SamplesLoss

SIGMA = 0.02


def clustered(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    centers = rng.uniform(size=(20, 3))
    points = centers[rng.integers(0, 20, n)] + 0.05 * rng.normal(size=(n, 3)) + shift
    return points.astype(np.float32)


def timed(call, runs: int) -> float:
    call()
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def gaussian_sum(ranges=None):
    def run(x, b):
        k = (-Vi(x).sqdist(Vj(x)) / (2 * SIGMA**2)).exp()
        if ranges is not None:
            k.ranges = ranges
        return k @ b
    return jax.jit(run)


def part_sparse(n: int, runs: int) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(clustered(rng, n))
    b = jnp.asarray(rng.normal(size=(n, 1)).astype(np.float32))
    x, labels = sort_clusters(x, grid_cluster(x, 0.05))
    ranges, centroids, _ = cluster_ranges_centroids(x, labels)
    sizes = np.diff(np.asarray(ranges), axis=1)[:, 0].astype(np.float64)
    c = np.asarray(centroids, np.float64)
    distance = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    dense_n = n if n <= 100_000 else n // 10
    dense = timed(lambda: gaussian_sum()(x[:dense_n], b[:dense_n]).block_until_ready(), runs)
    dense *= (n / dense_n) ** 2
    note = "" if dense_n == n else f" (timed at {dense_n:,} points, x {(n / dense_n) ** 2:.0f})"
    print(f"## Gaussian sum on {n:,} clustered 3-D points, sigma = {SIGMA}, "
          f"{len(c):,} clusters of side 0.05\n")
    print(f"Dense: {dense:.2f} s{note}.\n")
    print("| centroids closer than | cluster pairs kept | point pairs kept | time | vs dense "
          "| max rel. error (200 rows) |")
    print("|---|---|---|---|---|---|")
    x64 = np.asarray(x, np.float64)
    b64 = np.asarray(b, np.float64)
    for threshold in (0.1, 0.2, 0.4, 0.8) if n <= 100_000 else (0.05, 0.1, 0.2):
        keep = distance < threshold
        tuple6 = from_matrix(ranges, ranges, keep)
        f = gaussian_sum(tuple6)
        seconds = timed(lambda f=f: f(x, b).block_until_ready(), runs)
        pairs = float((keep * sizes[:, None] * sizes[None]).sum()) / n**2
        out = np.asarray(f(x, b), np.float64)[:200, 0]
        mask = keep[np.asarray(labels)[:200]][:, np.asarray(labels)]
        k = np.exp(-((x64[:200, None] - x64[None]) ** 2).sum(-1) / (2 * SIGMA**2)) * mask
        want = (k @ b64)[:, 0]
        error = np.max(np.abs(out - want) / np.maximum(np.abs(want), 1e-3))
        print(f"| {threshold} | {keep.mean():.2%} | {pairs:.2%} | {seconds:.3g} s | "
              f"{dense / seconds:.0f}x | {error:.1e} |")
    print()


def part_multiscale(n: int, runs: int) -> None:
    rng = np.random.default_rng(1)
    x, y = clustered(rng, n), clustered(rng, n, 0.1)
    losses = {backend: SamplesLoss("sinkhorn", p=2, blur=0.01, scaling=0.5, backend=backend)
              for backend in ("online", "multiscale")}
    values = {name: float(loss(x, y)) for name, loss in losses.items()}  # compiles
    walls = {name: [] for name in losses}
    for _ in range(runs):
        for name, loss in losses.items():
            start = time.perf_counter()
            float(loss(x, y))
            walls[name].append(time.perf_counter() - start)
    online = statistics.median(walls["online"])
    print(f"## Sinkhorn divergence, {n:,} clustered 3-D points per cloud, blur 0.01, "
          f"scaling 0.5, float32\n")
    print("| backend | time | speed-up | value |")
    print("|---|---|---|---|")
    for name in losses:
        wall = statistics.median(walls[name])
        print(f"| {name} | {wall:.3g} s | {online / wall:.1f}x | {values[name]:.6f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--ot-n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ot-runs", type=int, default=1)
    args = parser.parse_args()
    part_sparse(args.n, args.runs)
    part_multiscale(args.ot_n, args.ot_runs)


if __name__ == "__main__":
    main()
