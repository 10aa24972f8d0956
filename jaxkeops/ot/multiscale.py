"""GeomLoss's multiscale Sinkhorn (`backend="multiscale"`): coarse-to-fine, with kernel
truncation, on block-sparse jaxkeops reductions.

1. Both clouds are clustered on one regular grid over their joint bounding box (cells of side
   `cluster_scale`; by default GeomLoss's diameter / (sqrt(D) 2000^(1/D)), about 2,000 cells)
   and sorted by cell, so that every cluster is a contiguous range of points.
2. The epsilon-scaling loop starts on the clusters (centroids weighted by their total mass)
   while the temperature is coarser than the cells (GeomLoss's jump: the first step k >= 1
   after which eps_{k+1} < cluster_scale**p).
3. At the jump, the coarse potentials are extrapolated to the points (one softmin of each
   point against the clusters), and the loop goes on over the points with kernel truncation
   at every step: cluster k of x reduces only over the clusters l of y where some pair may
   have f_i + g_j - C(x_i, y_j) > -truncate * eps, a test on cluster-level bounds (the
   largest potentials of each cluster, and the distance of the centroids minus the clusters'
   radii as a lower bound of C), so every dropped term weighs less than exp(-truncate) of its
   row's mass. GeomLoss truncates once, at the jump, from the coarse potentials; the bounds
   here are safe at every temperature and keep fewer blocks as eps shrinks (in the benchmark
   of docs/benchmarks.md: 4.0% of the cluster pairs at the first fine step, 1.2% at the last,
   where GeomLoss's one truncation kept 40% of the point pairs).
4. With `tol`, the online backend's convergence loop follows at the target temperature
   (alternating updates, until no potential moves by more than tol), truncated as above.
5. The last, differentiable update (the envelope-theorem step) runs on the truncated kernel too.

Batch dims: the clouds of the batch are flattened into one problem whose clusters only pair
within their batch element (a block-diagonal sparsity pattern), which GeomLoss cannot do.

Every shape is static (the grid has a fixed number of cells, empty ones included, and the
sparsity pattern a fixed capacity), so the whole solver runs under `jax.jit` and `jax.grad`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from .costs import DEFAULT_COSTS, LazyCostMatrix
from .inputs import Measures
from .solver import (
    CostMatrices,
    DualPotentials,
    SinkhornInfo,
    converging_step,
    epsilon_scaling,
    extrapolate,
    log_weights,
)

Array = jax.Array
stop_gradient = jax.lax.stop_gradient
TARGET_CLUSTERS = 2000  # GeomLoss's default: about 2,000 cells over the bounding box


@dataclass(frozen=True)
class RangedCostMatrix(LazyCostMatrix):
    """A `LazyCostMatrix` whose reductions only visit the kept blocks of `ranges` (KeOps's
    6-tuple, over the rows of x and of y as stored here)."""

    ranges: tuple = ()

    def _exponent(self, h, inv_eps, over):
        exponent = super()._exponent(h, inv_eps, over)
        exponent.ranges = self.ranges
        return exponent


# ----------------------------------------------------------------------------------------------
# Clustering on a static grid.
@dataclass(frozen=True)
class Clusters:
    """One cloud's points sorted by cell, with its clusters (all cells, empty ones included)."""

    order: Array  # (B * N,) the sort permutation of the flattened points
    points: Array  # (B * N, D) sorted
    weights: Array  # (B * N,) sorted
    ranges: Array  # (B * cells, 2) int32: rows of each cluster in `points`
    centroids: Array  # (B, cells, D) (0 for empty cells)
    masses: Array  # (B, cells) total weight (0 for empty cells)
    labels: Array  # (B * N,) int32: the cluster of each sorted point


def grid_side(params: Any, dim: int, lower: Array, upper: Array,
              cluster_scale: float | None) -> tuple[Array, int]:
    """(cell side, cells per dim): a static number of cells per dim over the box."""
    extent = jnp.max(upper - lower)
    if cluster_scale is None:
        per_dim = max(1, round(TARGET_CLUSTERS ** (1 / dim)))
        side = jnp.maximum(extent / per_dim, jnp.finfo(extent.dtype).tiny)
        return side, per_dim
    if params.diameter is None:
        raise ValueError("backend='multiscale' with cluster_scale= needs diameter= too: the grid "
                         "has a fixed number of cells (diameter / cluster_scale per dim), so that "
                         "the solver runs under jit; or leave cluster_scale=None (about 2,000 "
                         "cells over the bounding box, as GeomLoss)")
    per_dim = max(1, math.ceil(params.diameter / cluster_scale))
    return jnp.asarray(cluster_scale, lower.dtype), per_dim


def cluster(weights: Array, points: Array, lower: Array, side: Array, per_dim: int) -> Clusters:
    """Labels every point by its cell (per batch element), sorts, and sums the clusters."""
    batch, n, dim = points.shape
    cells = per_dim**dim
    index = jnp.clip(jnp.floor((points - lower) / side).astype(jnp.int32), 0, per_dim - 1)
    label = jnp.zeros((batch, n), jnp.int32)
    for d in range(dim):
        label = label * per_dim + index[..., d]
    label = (label + cells * jnp.arange(batch, dtype=jnp.int32)[:, None]).reshape(-1)
    label = stop_gradient(label)
    order = jnp.argsort(label, stable=True)
    flat_points, flat_weights = points.reshape(-1, dim), weights.reshape(-1)
    counts = jnp.bincount(label, length=batch * cells).astype(jnp.int32)
    ends = jnp.cumsum(counts)
    ranges = jnp.stack([ends - counts, ends], axis=1)
    masses = jax.ops.segment_sum(flat_weights, label, batch * cells)
    moments = jax.ops.segment_sum(flat_weights[:, None] * flat_points, label, batch * cells)
    centroids = moments / jnp.where(masses > 0, masses, 1)[:, None]
    return Clusters(order, flat_points[order], flat_weights[order], ranges.astype(jnp.int32),
                    centroids.reshape(batch, cells, dim), masses.reshape(batch, cells),
                    label[order])


# ----------------------------------------------------------------------------------------------
# Kernel truncation: the kept blocks, in KeOps's ranges format, with a static capacity.
def _half(keep: Array, rows_ranges: Array, columns_ranges: Array) -> tuple[Array, Array, Array]:
    """(ranges, slices, redranges) of a block-diagonal keep (B, P, Q): cluster k of batch b
    reduces over the kept clusters l of the same batch, as few intervals as possible: clusters
    are contiguous in memory, so a run of kept clusters is one interval (an empty cluster never
    breaks a run). redranges has B * P * Q rows (its capacity); the rows past slices[-1] are
    empty intervals, never read."""
    batch, p, q = keep.shape
    empty = (columns_ranges[:, 1] == columns_ranges[:, 0]).reshape(batch, 1, q)
    run = keep | empty
    before = jnp.pad(run, ((0, 0), (0, 0), (1, 0)))[..., :-1]
    after = jnp.pad(run, ((0, 0), (0, 0), (0, 1)))[..., 1:]
    starts, ends = (run & ~before).reshape(-1), (run & ~after).reshape(-1)
    slices = jnp.cumsum((run & ~before).sum(-1).reshape(-1)).astype(jnp.int32)
    columns = jnp.broadcast_to(jnp.arange(batch)[:, None, None] * q + jnp.arange(q), keep.shape)
    columns = columns.reshape(-1)
    capacity = batch * p * q
    redranges = jnp.zeros((capacity, 2), jnp.int32)
    for side, flags in ((0, starts), (1, ends)):  # the k-th start and the k-th end pair up
        target = jnp.where(flags, jnp.cumsum(flags.astype(jnp.int32)) - 1, capacity)
        redranges = redranges.at[target, side].set(columns_ranges[columns, side], mode="drop")
    return rows_ranges, slices, redranges


def truncated_ranges(keep: Array, x_ranges: Array, y_ranges: Array) -> tuple:
    """The 6-tuple of a block-diagonal (B, Px, Py) keep of clusters of x against clusters of
    y: reductions over y (first half) and over x (second half)."""
    return (*_half(keep, x_ranges, y_ranges),
            *_half(jnp.swapaxes(keep, -1, -2), y_ranges, x_ranges))


# ----------------------------------------------------------------------------------------------
# The solver.
def multiscale_solve(m: Measures, params: Any) -> tuple[DualPotentials, Clusters, Clusters,
                                                       SinkhornInfo]:
    """The differentiable potentials of OT(a, b), and of OT(a, a) and OT(b, b) with
    params.debias, on the sorted points of the returned Clusters (flattened over the batch),
    with params.cluster_scale and params.truncate as in GeomLoss."""
    cluster_scale, truncate = params.cluster_scale, params.truncate
    if params.cost is not None:
        raise NotImplementedError("backend='multiscale' supports the default costs (cost=None, "
                                  "p=1 or 2) only: kernel truncation evaluates the cost on the "
                                  "cluster centroids")
    p, dim = params.p, m.x.shape[-1]
    batch = math.prod(m.batch_shape)
    xs, ys = (a.reshape(batch, -1, dim) for a in (m.x, m.y))
    a, b = m.a.reshape(batch, -1), m.b.reshape(batch, -1)
    both = jnp.concatenate([xs.reshape(-1, dim), ys.reshape(-1, dim)])
    lower, upper = stop_gradient(both.min(0)), stop_gradient(both.max(0))
    side, per_dim = grid_side(params, dim, lower, upper, cluster_scale)
    cx, cy = cluster(a, xs, lower, side, per_dim), cluster(b, ys, lower, side, per_dim)
    schedule = params.schedule(m.x, m.y)
    rho, debias = params.rho, params.debias
    # The jump: the first k >= 1 after which eps_{k+1} < cluster_scale**p (else the last step).
    k = jnp.arange(1, 256)
    after = (k + 1 < schedule.length) & (schedule.eps(k + 1) < side**p)
    jump = jnp.where(after.any(), k[jnp.argmax(after)], schedule.length - 1)

    # Coarse: the clusters as weighted points (empty ones weigh 0: log weight -100000).
    coarse_a, coarse_b = log_weights(cx.masses), log_weights(cy.masses)

    def coarse_cost(u, v):
        return LazyCostMatrix(stop_gradient(u), stop_gradient(v), DEFAULT_COSTS[p])
    coarse = CostMatrices(coarse_cost(cx.centroids, cy.centroids),
                          coarse_cost(cy.centroids, cx.centroids),
                          coarse_cost(cx.centroids, cx.centroids) if debias else None,
                          coarse_cost(cy.centroids, cy.centroids) if debias else None)
    eps0 = schedule.eps(0)
    start = extrapolate(coarse, coarse_a, coarse_b, DualPotentials(
        jnp.zeros_like(coarse_a), jnp.zeros_like(coarse_b),
        jnp.zeros_like(coarse_a) if debias else None,
        jnp.zeros_like(coarse_b) if debias else None), eps0, rho)
    coarse_potentials = epsilon_scaling(coarse, coarse_a, coarse_b, start, schedule, 0,
                                        jump + 1, rho)
    eps_jump = schedule.eps(jump)

    # The coarse potentials extrapolated to the points.
    f_c, g_c, f_cc, g_cc = coarse_potentials
    fine_a, fine_b = log_weights(cx.weights), log_weights(cy.weights)

    def to_points(points, centroids, log_mass, h):
        """-eps log sum_l m_l exp((h_l - C(point, centroid_l)) / eps) over the clusters of the
        point's batch element (a dense reduction with one batch dim)."""
        points_b = points.reshape(batch, -1, dim)
        cost = LazyCostMatrix(stop_gradient(points_b), stop_gradient(centroids),
                              DEFAULT_COSTS[p])
        return cost.softmin(eps_jump, log_mass + h / eps_jump).reshape(-1)

    damping = 1.0 if rho is None else 1 / (1 + eps_jump / rho)
    fine = DualPotentials(
        damping * to_points(cx.points, cy.centroids, coarse_b, g_c),
        damping * to_points(cy.points, cx.centroids, coarse_a, f_c),
        damping * to_points(cx.points, cx.centroids, coarse_a, f_cc) if debias else None,
        damping * to_points(cy.points, cy.centroids, coarse_b, g_cc) if debias else None)

    # The fine steps, each on the blocks that the current potentials keep.
    bounds = Bounds.create(p, cx, cy, debias)

    def costs_for(potentials, eps, points_x, points_y):
        f, g, f_aa, g_bb = potentials
        xy = bounds.ranges("xy", cx, cy, f, g, truncate, eps)

        def ranged(u, v, ranges):
            return RangedCostMatrix(u, stop_gradient(v), DEFAULT_COSTS[p], ranges)

        return CostMatrices(
            ranged(points_x, points_y, xy), ranged(points_y, points_x, _swap(xy)),
            ranged(points_x, points_x, bounds.ranges("xx", cx, cx, f_aa, f_aa, truncate, eps))
            if debias else None,
            ranged(points_y, points_y, bounds.ranges("yy", cy, cy, g_bb, g_bb, truncate, eps))
            if debias else None)

    def fine_step(state):
        k, potentials = state
        costs = costs_for(potentials, schedule.eps(k), stop_gradient(cx.points),
                          stop_gradient(cy.points))
        return k + 1, epsilon_scaling(costs, fine_a, fine_b, potentials, schedule, k, k + 1, rho)

    steps, fine = jax.lax.while_loop(lambda state: state[0] < schedule.length, fine_step,
                                     (jump + 1, stop_gradient(fine)))
    error = jnp.asarray(jnp.nan, m.x.dtype)
    if params.tol is not None:
        # The online backend's convergence loop at the target temperature, with the truncation
        # re-evaluated from the potentials at every step.
        def converge(state):
            costs = costs_for(state[1], schedule.target, stop_gradient(cx.points),
                              stop_gradient(cy.points))
            return converging_step(costs, fine_a, fine_b, schedule.target, rho, state)

        steps, fine, error = jax.lax.while_loop(
            lambda state: (state[0] < schedule.length + params.max_extra_iter)
            & (state[2] > params.tol),
            converge, (steps, fine, jnp.asarray(jnp.inf, m.x.dtype)))
    final_costs = costs_for(fine, schedule.target, cx.points, cy.points)
    potentials = extrapolate(final_costs, fine_a, fine_b, fine, schedule.target, rho)
    info = SinkhornInfo(steps, error, None if params.tol is None else error <= params.tol)
    return potentials, cx, cy, info


@dataclass(frozen=True)
class Bounds:
    """What kernel truncation needs to bound C(x_i, y_j) from below for every pair of points
    of two clusters: the distance between their centroids minus their radii."""

    p: int
    gaps: dict  # "xy", "xx", "yy" -> (B, clusters, clusters) lower bounds of the cost

    @classmethod
    def create(cls, p: int, cx: Clusters, cy: Clusters, debias: bool) -> Bounds:
        rx, ry = _radii(cx), _radii(cy)
        pairs = {"xy": (cx, rx, cy, ry)}
        if debias:
            pairs.update(xx=(cx, rx, cx, rx), yy=(cy, ry, cy, ry))
        gaps = {}
        for name, (u, ru, v, rv) in pairs.items():
            distance = jnp.sqrt(jnp.sum((u.centroids[..., :, None, :]
                                         - v.centroids[..., None, :, :]) ** 2, -1))
            # (ru + rv) in one sum: for a cloud against itself the gaps are exactly symmetric.
            gap = jnp.maximum(distance - (ru[..., :, None] + rv[..., None, :]), 0)
            gaps[name] = stop_gradient(gap if p == 1 else gap**2 / 2)
        return cls(p, gaps)

    def ranges(self, name: str, u: Clusters, v: Clusters, f: Array, g: Array,
               truncate: float | None, eps: Array) -> tuple:
        """The 6-tuple of the blocks (k, l) where some pair may have f_i + g_j - C_ij >
        -truncate * eps: every dropped term weighs less than exp(-truncate) of its row's total
        mass, so the softmin moves by at most about eps * exp(-truncate)."""
        gap = self.gaps[name]
        if truncate is None:
            keep = jnp.ones(gap.shape, bool)
        else:
            f_max, g_max = _cluster_max(u, f), _cluster_max(v, g)
            keep = f_max[..., :, None] + g_max[..., None, :] - gap > -truncate * eps
        if name in ("xx", "yy"):
            # A cloud against itself: keep is symmetric, so both halves of the tuple are one.
            half = _half(keep, u.ranges, u.ranges)
            return (*half, *half)
        return truncated_ranges(keep, u.ranges, v.ranges)


def _radii(c: Clusters) -> Array:
    """(B, clusters): the largest distance from a cluster's centroid to one of its points."""
    batch, cells, dim = c.centroids.shape
    offsets = c.points - c.centroids.reshape(-1, dim)[c.labels]
    radius = jax.ops.segment_max(jnp.sqrt(jnp.sum(offsets**2, -1)), c.labels, batch * cells)
    return stop_gradient(jnp.maximum(radius, 0).reshape(batch, cells))


def _cluster_max(c: Clusters, values: Array) -> Array:
    """(B, clusters): the largest value of each cluster's points (-inf for an empty one)."""
    batch, cells, _ = c.centroids.shape
    return jax.ops.segment_max(stop_gradient(values), c.labels, batch * cells,
                               indices_are_sorted=True).reshape(batch, cells)


def _swap(ranges: tuple) -> tuple:
    return (*ranges[3:], *ranges[:3])


__all__ = ["Bounds", "Clusters", "RangedCostMatrix", "multiscale_solve", "truncated_ranges"]
