"""Block-sparse reductions: a Gaussian sum on clustered 3-D points against the fraction of
cluster pairs kept, and SamplesLoss(backend="multiscale") against the online backend.

    python benchmarks/block_sparse.py                    # 1e6 points, and the OT part at 1e5
    python benchmarks/block_sparse.py --n 100000 --ot-n 20000

Part 1 clusters the points on a grid (`jaxkeops.cluster`), keeps the pairs of clusters whose
centroids are closer than a threshold, and times `K @ b` with those ranges (median of the
runs), against the dense reduction (timed at n / 10 points and scaled by 100 when n is large:
the dense time is quadratic). The error column compares the first 200 rows with a numpy
float64 sum over the kept pairs.
Part 2 times the Sinkhorn divergence of two clustered clouds with both backends, alternately,
after the epsilon-scaling schedule alone and run to convergence (`--ot-tol`).
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
from jaxkeops.ot import SinkhornParams, measures
from jaxkeops.ot.sinkhorn import run

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


def part_multiscale(n: int, runs: int, tol: float) -> None:
    """Two samples of the same 20 blobs (the same blob for the i-th point of each), y shifted
    by 0.05: each blob's mass stays in place, so Sinkhorn converges (where blob masses differ,
    mass crosses between far blobs, and no backend converges in hundreds of iterations)."""
    rng = np.random.default_rng(1)
    centers = rng.uniform(size=(20, 3))
    labels = rng.integers(0, 20, n)
    x, y = ((centers[labels] + 0.05 * rng.normal(size=(n, 3)) + shift).astype(np.float32)
            for shift in (0.0, 0.05))
    m = measures(None, x, None, y)
    settings = dict(p=2, blur=0.01, scaling=0.5)
    cases = {f"{backend}{label}": SinkhornParams(**settings, backend=backend, tol=case_tol,
                                                 max_extra_iter=500)
             for label, case_tol in (("", None), (f", tol = {tol:g}", tol))
             for backend in ("online", "multiscale")}
    results, walls = {}, {name: [] for name in cases}
    for name, params in cases.items():  # compiles; timed too with runs = 0 (long problems)
        start = time.perf_counter()
        results[name] = run("sinkhorn", m, params)
        float(results[name][0])
        if runs == 0:
            walls[name].append(time.perf_counter() - start)
    for _ in range(runs):
        for name, params in cases.items():
            start = time.perf_counter()
            float(run("sinkhorn", m, params)[0])
            walls[name].append(time.perf_counter() - start)
    print(f"## Sinkhorn divergence, {n:,} clustered 3-D points per cloud, blur 0.01, "
          f"scaling 0.5, float32\n")
    print("| backend | iterations | time | speed-up | value | vs online (same tol) |")
    print("|---|---|---|---|---|---|")
    for name in cases:
        online = name.replace("multiscale", "online")
        wall, base = statistics.median(walls[name]), statistics.median(walls[online])
        value, info = results[name]
        gap = abs(float(value) - float(results[online][0])) / abs(float(results[online][0]))
        print(f"| {name} | {int(info.iterations)} | {wall:.3g} s | {base / wall:.1f}x | "
              f"{float(value):.6f} | {gap:.1e} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--ot-n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ot-runs", type=int, default=1,
                        help="timed runs after a compiling one; 0: time the compiling run")
    parser.add_argument("--ot-tol", type=float, default=1e-5)
    parser.add_argument("--skip-sparse", action="store_true", help="the OT part only")
    args = parser.parse_args()
    if not args.skip_sparse:
        part_sparse(args.n, args.runs)
    part_multiscale(args.ot_n, args.ot_runs, args.ot_tol)


if __name__ == "__main__":
    main()
