"""The entropic transport plan between two point clouds, and a Wasserstein gradient flow.

x is a noisy half moon, y a noisy ring, each with uniform weights. `jaxkeops.ot.sinkhorn_plan`
solves entropic OT (cost |x - y|^2 / 2, eps = blur^2) and returns a lazy TransportPlan
pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) that is never stored: its marginals pi 1 and
pi^T 1, its barycentric map x_i -> sum_j pi_ij y_j / sum_j pi_ij, and each point's strongest
link argmax_j pi_ij are all jaxkeops reductions, with memory linear in the number of points.
The marginals are checked against the weights, with the epsilon-scaling descent alone and with
the convergence loop (`tol`). Then x flows towards y along the gradient of the Sinkhorn
divergence `SamplesLoss("sinkhorn")`: x <- x - lr * grad_x S(x, y) / a.

    python examples/sinkhorn_transport.py [--quick] [--out DIR]

Prints the divergence, the solver's convergence, the marginal errors and the flow's losses;
saves DIR/sinkhorn_transport.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.collections import LineCollection

from jaxkeops import Vi, Vj
from jaxkeops.ot import SamplesLoss, sinkhorn_plan

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The convergence loop stops when no potential moves by more than tol (in units of the cost)
# in one update; the marginals' relative error is then about tol / eps: aim at 1%.
MARGINAL_ERROR = 0.01
LIMITS = dict(xlim=(-2.1, 1.8), ylim=(-1.0, 1.0))


def moon(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(0, np.pi, n)
    points = 0.8 * np.stack([np.cos(t) - 1.0, np.sin(t) - 0.3], axis=1)
    return (points + 0.05 * rng.normal(size=(n, 2))).astype(np.float32)


def ring(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, n)
    points = np.stack([0.6 * np.cos(t) + 1.0, 0.6 * np.sin(t)], axis=1)
    return (points + 0.03 * rng.normal(size=(n, 2))).astype(np.float32)


def strongest_links(plan) -> jax.Array:
    """argmax_j pi_ij for every i: with uniform b, the j minimising (C_ij - g_j) / eps, found
    by a jaxkeops ArgMin (the plan's scale factors of row i do not change its argmax)."""
    cost = Vi(plan.x).sqdist(Vj(plan.y)) / 2
    return (cost - Vj(plan.g[:, None])).argmin(axis=1)[:, 0]


def marginal_errors(plan) -> tuple[np.ndarray, np.ndarray]:
    """The relative errors (pi 1 - a) / a and (pi^T 1 - b) / b."""
    rows, columns = plan.marginals()
    return np.asarray(rows / plan.a - 1), np.asarray(columns / plan.b - 1)


def describe_marginals(name: str, plan) -> tuple[np.ndarray, np.ndarray]:
    row_error, column_error = marginal_errors(plan)
    print(f"  {name}: max |pi 1 - a| / a = {np.abs(row_error).max():.2e}, "
          f"max |pi^T 1 - b| / b = {np.abs(column_error).max():.2e}, "
          f"|pi 1 - a|_1 = {np.abs(row_error * np.asarray(plan.a)).sum():.2e}")
    return row_error, column_error


def gradient_flow(x: np.ndarray, y: np.ndarray, blur: float, steps: int,
                  learning_rate: float):
    """x_{k+1} = x_k - lr * grad S(x_k, y) / a (a = 1/N): each step moves every point a
    fraction lr of the way towards its target under the plan, as GeomLoss's tutorial does."""
    loss = SamplesLoss("sinkhorn", p=2, blur=blur)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    snapshots, losses = {0: x}, []
    for step in range(1, steps + 1):
        value, gradient = value_and_grad(jnp.asarray(x), y)
        losses.append(float(value))
        x = x - learning_rate * len(x) * np.asarray(gradient)
        snapshots[step] = x
        print(f"  step {step:3d}  S(x_k, y) = {losses[-1]:.5f} (before the step)")
    losses.append(float(loss(jnp.asarray(x), y)))
    print(f"  final     S(x, y) = {losses[-1]:.5f}")
    return snapshots, np.array(losses)


def draw_clouds(ax, x, y, title):
    ax.scatter(y[:, 0], y[:, 1], s=2, color="C1", alpha=0.5, label=f"y: ring ({len(y):,})")
    ax.scatter(x[:, 0], x[:, 1], s=2, color="C0", alpha=0.5, label=f"x: moon ({len(x):,})")
    ax.set(aspect="equal", xlabel="first coordinate", ylabel="second coordinate", title=title,
           **LIMITS)


def draw_lines(ax, starts, ends):
    """Segments from starts to ends, coloured by the first coordinate of the start, so that
    the order in which the map sends the moon onto the ring shows."""
    segments = np.stack([starts, ends], axis=1)
    lines = LineCollection(segments, cmap="viridis", linewidths=0.7, alpha=0.8)
    lines.set_array(starts[:, 0])
    ax.add_collection(lines)


def plot(path, x, y, blur, shown, images, partners, errors, snapshots, losses):
    fig, axes = plt.subplots(2, 3, figsize=(16, 7.6))
    ax = axes[0, 0]
    draw_clouds(ax, x, y, f"Barycentric map x_i -> sum_j pi_ij y_j / sum_j pi_ij\n"
                          f"({len(shown)} points shown, blur {blur})")
    draw_lines(ax, x[shown], images[shown])
    ax.legend(loc="lower left", markerscale=5, fontsize=8)

    ax = axes[0, 1]
    draw_clouds(ax, x, y, f"Strongest link x_i -> y_j, j = argmax_j pi_ij\n"
                          f"({len(shown)} points shown)")
    draw_lines(ax, x[shown], y[partners[shown]])

    ax = axes[0, 2]
    bins = np.linspace(-0.5, 0.5, 81)
    for (name, (row_error, _)), color in zip(errors.items(), ("C3", "C2")):
        worst = np.abs(row_error).max()
        ax.hist(np.clip(row_error, bins[0], bins[-1]), bins=bins, color=color, alpha=0.6,
                label=f"{name}: max {worst:.1e}")
    ax.set(xlabel="(pi 1)_i / a_i - 1 (clipped to +-0.5)", ylabel="points x_i",
           title="Marginal error of the plan", yscale="log")
    ax.legend(loc="upper left", fontsize=8)

    steps = sorted(snapshots)
    for ax, step in zip(axes[1, :2], (steps[len(steps) // 4], steps[-1])):
        draw_clouds(ax, snapshots[step], y, f"Gradient flow of S(x, y): x after {step} steps")
    ax = axes[1, 2]
    ax.semilogy(np.arange(len(losses)), losses, "o-")
    ax.set(xlabel="step", ylabel="S(x_k, y)", title="Sinkhorn divergence along the flow")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "output",
                        help="folder for the PNG (default: examples/output)")
    args = parser.parse_args(argv)
    n, m = (1000, 1500) if args.quick else (5000, 6000)
    # Convergence to a given marginal error slows down as eps = blur**2 shrinks.
    blur = 0.1 if args.quick else 0.05
    tol = MARGINAL_ERROR * blur**2
    steps = 8 if args.quick else 16
    learning_rate = 0.3 if args.quick else 0.2
    start = time.perf_counter()

    rng = np.random.default_rng(0)
    x, y = moon(rng, n), ring(rng, m)
    print(f"Entropic OT from a moon ({n:,} points) to a ring ({m:,} points), blur {blur} "
          f"(eps = {blur**2:g}), cost |x - y|^2 / 2:")
    errors = {}
    solve_start = time.perf_counter()
    rough, info = sinkhorn_plan(x, y, blur=blur, return_info=True)
    print(f"  epsilon-scaling only: {int(info.iterations)} iterations, last change of the "
          f"potentials {float(info.error):.1e} ({time.perf_counter() - solve_start:.1f} s)")
    errors["epsilon-scaling only"] = describe_marginals("epsilon-scaling only", rough)
    solve_start = time.perf_counter()
    plan, info = sinkhorn_plan(x, y, blur=blur, tol=tol, return_info=True)
    print(f"  with tol={tol:g}: {int(info.iterations)} iterations, last change "
          f"{float(info.error):.1e}, converged: {bool(info.converged)} "
          f"({time.perf_counter() - solve_start:.1f} s)")
    errors[f"converged to tol {tol:g}"] = describe_marginals(f"tol={tol:g}", plan)

    images = np.asarray(plan.barycentric_map())
    partners = np.asarray(strongest_links(plan))
    print(f"  barycentric map: mean displacement |T(x_i) - x_i| = "
          f"{np.linalg.norm(images - x, axis=1).mean():.3f}; distinct strongest partners "
          f"y_j: {len(np.unique(partners)):,} of {m:,}")

    print(f"Gradient flow of the Sinkhorn divergence (SamplesLoss, blur {blur}), lr "
          f"{learning_rate}:")
    snapshots, losses = gradient_flow(x, y, blur, steps, learning_rate)
    print(f"  Sinkhorn divergence S(x, y) = {losses[0]:.5f} at the start, {losses[-1]:.5f} "
          f"after {steps} steps")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "sinkhorn_transport.png"
    shown = np.random.default_rng(1).choice(n, size=min(n, 200), replace=False)
    plot(path, x, y, blur, shown, images, partners, errors, snapshots, losses)
    print(f"Saved {path} (total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
