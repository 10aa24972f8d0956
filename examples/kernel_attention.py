"""A kernel-attention layer trained on a toy task: 1-D regression from context points.

Each task is a random smooth function f (a sum of three sines). The model sees context points
(x_j, f(x_j) + noise) and predicts f at target points x_i: a jaxkeops.nn.KernelAttention layer
lets each target attend to the contexts (queries from x_i, keys and values from (x_j, y_j)), and
an MLP reads the result. It learns a data-driven smoother, compared here with the mean of the
context and with the best Gaussian kernel smoother (Nadaraya-Watson, bandwidth picked on the
test set, so a strong baseline). The trained model is then run with 20,000 contexts and targets
(4,000 with --quick), where dense attention's score matrices would take gigabytes, and the
attention layer is timed against dense attention (jax.nn.dot_product_attention).

    python examples/kernel_attention.py [--quick] [--out DIR]

Prints the loss curve, the test errors and the timings; saves DIR/kernel_attention.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx

from jaxkeops import Vi, Vj
from jaxkeops.nn import KernelAttention, dot_product_attention

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

X_RANGE = 4.0
NOISE = 0.1


def random_functions(rng: np.random.Generator, tasks: int):
    """f(x) = sum_m a_m sin(w_m x + phi_m), one per task, applied to x of shape (tasks, L, 1)."""
    a = rng.normal(size=(tasks, 1, 3)) / np.sqrt(3)
    w = rng.uniform(0.5, 2.5, size=(tasks, 1, 3))
    phi = rng.uniform(0, 2 * np.pi, size=(tasks, 1, 3))
    return lambda x: np.sum(a * np.sin(w * x + phi), axis=-1, keepdims=True, dtype=np.float32)


def sample_tasks(rng: np.random.Generator, tasks: int, contexts: int, targets: int):
    """(x_ctx, y_ctx, x_tgt, f(x_tgt)) of random functions f, noisy values at the contexts.
    Sampled with NumPy: random numbers inside the jitted step triple its compile time."""
    f = random_functions(rng, tasks)
    x_ctx = rng.uniform(-X_RANGE, X_RANGE, size=(tasks, contexts, 1)).astype(np.float32)
    x_tgt = rng.uniform(-X_RANGE, X_RANGE, size=(tasks, targets, 1)).astype(np.float32)
    y_ctx = f(x_ctx) + NOISE * rng.normal(size=x_ctx.shape).astype(np.float32)
    return x_ctx, y_ctx, x_tgt, f(x_tgt)


def fourier(x):
    frequencies = 2.0 ** jnp.arange(-1.0, 4.0)
    return jnp.concatenate([jnp.sin(x * frequencies), jnp.cos(x * frequencies)], axis=-1)


class MLP(nnx.Module):
    def __init__(self, widths, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = nnx.gelu(layer(x))
        return self.layers[-1](x)


class ContextRegressor(nnx.Module):
    """y(x_i) = MLP([attention(e(x_i), e(x_j, y_j)), e(x_i)])."""

    def __init__(self, width: int = 64, heads: int = 4, *, rngs: nnx.Rngs):
        self.embed_target = MLP((10, width, width), rngs)
        self.embed_context = MLP((11, width, width), rngs)
        self.attention = KernelAttention(heads, width, rngs=rngs)
        self.readout = MLP((2 * width, width, 1), rngs)

    def __call__(self, x_ctx, y_ctx, x_tgt):
        queries = self.embed_target(fourier(x_tgt))
        contexts = self.embed_context(jnp.concatenate([fourier(x_ctx), y_ctx], axis=-1))
        attended = self.attention(queries, contexts)
        return self.readout(jnp.concatenate([attended, queries], axis=-1))

    def weights(self, x_ctx, y_ctx, x_tgt):
        """Dense attention weights (heads, targets, contexts) of one task, for the plot."""
        queries = self.embed_target(fourier(x_tgt))
        contexts = self.embed_context(jnp.concatenate([fourier(x_ctx), y_ctx], axis=-1))
        return self.attention.attention_weights(queries, contexts)


def rmse(prediction, truth):
    return jnp.sqrt(jnp.mean((prediction - truth) ** 2))


def train(model, args):
    schedule = optax.cosine_decay_schedule(3e-3, args.steps)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x_ctx, y_ctx, x_tgt, y_tgt):
        loss_fn = lambda m: jnp.mean((m(x_ctx, y_ctx, x_tgt) - y_tgt) ** 2)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    start = time.perf_counter()
    rng = np.random.default_rng(1)
    for number in range(args.steps):
        data = sample_tasks(rng, args.tasks, args.contexts, args.targets)
        losses.append(float(step(model, optimizer, *data)))
        if number % max(1, args.steps // 8) == 0 or number == args.steps - 1:
            print(f"  step {number:5d}  train MSE {np.mean(losses[-20:]):.4f}")
    print(f"  {args.steps} steps in {time.perf_counter() - start:.1f} s (with compilation)")
    return np.array(losses)


BANDWIDTHS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


def kernel_smoothers(x_ctx, y_ctx, x_tgt):
    """Nadaraya-Watson: sum_j exp(-|x_i - x_j|^2 / 2h^2) y_j / sum_j exp(...) for every
    bandwidth h of BANDWIDTHS at once, by one jaxkeops reduction: the bandwidths are a batch
    dim of the points, scaled by 1 / (sqrt(2) h). Returns (bandwidths, *x_tgt.shape)."""
    scales = 1 / (np.sqrt(2) * np.array(BANDWIDTHS, np.float32))[:, None, None, None]
    scores = -Vi(x_tgt[None] * scales).sqdist(Vj(x_ctx[None] * scales))
    return scores.sumsoftmaxweight(Vj(y_ctx[None]), axis=-2)


@nnx.jit(static_argnums=(5,))
def test_errors(model, x_ctx, y_ctx, x_tgt, y_tgt, contexts: tuple[int, ...]):
    """RMSE of f at the targets, for each context count of `contexts` (the first ones of
    x_ctx, so the work grows with the count; one compiled program serves every count):
    (model, smoothers (one per bandwidth), context mean)."""
    model_errors, smoother_errors, mean_errors = [], [], []
    for n in contexts:
        xs, ys = x_ctx[:, :n], y_ctx[:, :n]
        model_errors.append(rmse(model(xs, ys, x_tgt), y_tgt))
        smoothed = kernel_smoothers(xs, ys, x_tgt)
        smoother_errors.append(jnp.sqrt(jnp.mean((smoothed - y_tgt) ** 2, axis=(1, 2, 3))))
        mean_errors.append(rmse(ys.mean(axis=1, keepdims=True), y_tgt))
    return jnp.array(model_errors), jnp.array(smoother_errors), jnp.array(mean_errors)


def evaluate(model, seed: int, contexts: tuple[int, ...], tasks: int, targets: int = 64):
    """Print and return the test errors of the model, the best Gaussian smoother (bandwidth
    picked on these very functions) and the context mean, on held-out functions."""
    data = sample_tasks(np.random.default_rng(seed), tasks, max(contexts), targets)
    model_errors, smoother_errors, mean_errors = test_errors(model, *data, contexts)
    rows = []
    for n, model_error, smoothers, mean_error in zip(contexts, model_errors, smoother_errors,
                                                     mean_errors):
        best = int(jnp.argmin(smoothers))
        print(f"  {n:6,d} contexts: model {model_error:.4f}   best Gaussian smoother "
              f"(h = {BANDWIDTHS[best]}) {smoothers[best]:.4f}   context mean {mean_error:.4f}")
        rows.append({"contexts": n, "model": float(model_error),
                     "smoother": float(smoothers[best]), "mean": float(mean_error)})
    return rows


def median_time(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


ATTENTIONS = {"jaxkeops": dot_product_attention, "dense": jax.nn.dot_product_attention}


def attention_gradient(attention):
    loss = lambda q, k, v: jnp.sum(attention(q, k, v) ** 2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def time_and_memory(timed, compiled_only, forward: bool, heads: int = 4, head_dim: int = 16):
    """Seconds of the forward + backward pass of self-attention (and of the forward pass alone
    if `forward`) at the lengths `timed`, and bytes of XLA temporaries of the compiled forward
    + backward pass at the lengths `timed + compiled_only` (those are compiled, never run)."""
    timings, memory = [], []
    for length in (*timed, *compiled_only):
        spec = jax.ShapeDtypeStruct((1, length, heads, head_dim), jnp.float32)
        q, k, v = (jax.random.normal(jax.random.key(length), (3, 1, length, heads, head_dim))
                   if length in timed else (None,) * 3)
        timing, bytes_used = {"length": length}, {"length": length}
        for name, attention in ATTENTIONS.items():
            gradient = attention_gradient(attention).lower(spec, spec, spec).compile()
            bytes_used[name] = gradient.memory_analysis().temp_size_in_bytes
            if q is not None:
                timing[name + "_grad"] = median_time(gradient, q, k, v)
                if forward:
                    timing[name] = median_time(jax.jit(attention), q, k, v)
        memory.append(bytes_used)
        if q is not None:
            timings.append(timing)
            forward_times = (f"forward: jaxkeops {timing['jaxkeops'] * 1e3:7.1f} ms, dense "
                             f"{timing['dense'] * 1e3:7.1f} ms   " if forward else "")
            print(f"  L = {length:6,d}  {forward_times}forward + backward: jaxkeops "
                  f"{timing['jaxkeops_grad'] * 1e3:7.1f} ms, dense "
                  f"{timing['dense_grad'] * 1e3:7.1f} ms")
        print(f"  L = {length:6,d}  XLA temporaries of forward + backward: jaxkeops "
              f"{bytes_used['jaxkeops'] / 2**20:8.2f} MiB, dense "
              f"{bytes_used['dense'] / 2**20:9.1f} MiB")
    return timings, memory


def plot(path, losses, model, errors, timings, memory):
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    window = max(1, len(losses) // 40)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.semilogy(losses, color="0.8", lw=0.8, label="per step")
    ax.semilogy(np.arange(window - 1, len(losses)), smooth, color="C0", label="moving average")
    ax.axhline(NOISE**2, color="k", ls=":", label="noise variance of the contexts")
    ax.set(xlabel="step", ylabel="train MSE at the targets", title="Training loss (adamw)")
    ax.legend()

    x_ctx, y_ctx, _, _ = sample_tasks(np.random.default_rng(123), 3, 40, 1)
    grid = np.broadcast_to(np.linspace(-X_RANGE, X_RANGE, 300, dtype=np.float32)[:, None],
                           (3, 300, 1))
    truth = random_functions(np.random.default_rng(123), 3)(grid)
    prediction = nnx.jit(lambda m, *a: m(*a))(model, x_ctx, y_ctx, grid)
    ax = axes[0, 1]
    for task in range(3):
        offset = 2.5 * task
        ax.plot(grid[task, :, 0], truth[task, :, 0] + offset, color="k", lw=1,
                label="true f" if task == 0 else None)
        ax.plot(grid[task, :, 0], prediction[task, :, 0] + offset, color="C1", lw=2,
                label="model" if task == 0 else None)
        ax.scatter(x_ctx[task, :, 0], y_ctx[task, :, 0] + offset, s=12, color="C0",
                   label="40 noisy contexts" if task == 0 else None, zorder=3)
    ax.set(xlabel="x", ylabel="y (tasks shifted by 2.5)", title="Held-out functions",
           ylim=(-2.0, 7.0))
    ax.legend(loc="upper left", fontsize=8, ncol=3)

    order = np.argsort(x_ctx[0, :, 0])
    x_sorted, y_sorted = x_ctx[0, order], y_ctx[0, order]
    targets = jnp.linspace(-X_RANGE, X_RANGE, 161)[:, None]
    weights = nnx.jit(lambda m, *a: m.weights(*a))(model, x_sorted, y_sorted, targets)
    weights = weights.mean(axis=0)  # mean over the heads
    xs = np.asarray(x_sorted[:, 0])
    edges = np.concatenate([[-X_RANGE], (xs[1:] + xs[:-1]) / 2, [X_RANGE]])
    ax = axes[0, 2]
    mesh = ax.pcolormesh(edges, np.linspace(-X_RANGE, X_RANGE, 162), weights, cmap="viridis")
    ax.plot(xs, np.full_like(xs, -X_RANGE), "|", color="w", ms=10)
    ax.set(xlabel="context x_j (white ticks)", ylabel="target x_i",
           title="Attention weights of the targets over\nthe contexts (mean of heads), task 1")
    fig.colorbar(mesh, ax=ax)

    ax = axes[1, 0]
    counts = [e["contexts"] for e in errors]
    for name, label, style in (("model", "model (trained with 64)", "o-"),
                               ("smoother", "best Gaussian smoother", "s--"),
                               ("mean", "context mean", "^:")):
        ax.loglog(counts, [e[name] for e in errors], style, label=label)
    ax.axhline(NOISE, color="k", lw=0.5)
    ax.set(xlabel="contexts per function", ylabel="test RMSE",
           title=f"Error vs context size (up to {counts[-1]:,} contexts\nand targets)")
    ax.legend(fontsize=8)

    timed_keys = ("", "_grad") if "jaxkeops" in timings[0] else ("_grad",)
    for ax, rows, keys, ylabel, title in (
            (axes[1, 1], timings, timed_keys, "seconds",
             "Self-attention time (4 heads of 16, float32)"),
            (axes[1, 2], memory, ("",), "XLA temporaries (bytes)",
             "Memory of forward + backward (compiled)")):
        lengths = [r["length"] for r in rows]
        for name, color in (("jaxkeops", "C0"), ("dense", "C3")):
            for suffix, style in zip(keys, ("o-", "s--")):
                label = name + (" forward + backward" if suffix else
                                (" forward" if len(keys) > 1 else ""))
                ax.loglog(lengths, [r[name + suffix] for r in rows], style, color=color,
                          label=label)
        ax.set(xlabel="sequence length L", ylabel=ylabel, title=title)
        ax.set_xticks(lengths, [f"{length:,}" for length in lengths])
        ax.xaxis.set_minor_formatter(NullFormatter())
        if len(lengths) > 4:
            ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "output",
                        help="folder for the PNG (default: examples/output)")
    args = parser.parse_args(argv)
    args.steps = 120 if args.quick else 3000
    args.tasks, args.contexts, args.targets = 16, 64, 64
    long_length = 4_000 if args.quick else 20_000
    timed = (256, 1024) if args.quick else (256, 1024, 2048, 4096, 8192)
    compiled_only = (8192,) if args.quick else (16384, 65536)
    start = time.perf_counter()

    print(f"Training a KernelAttention regressor ({args.steps} steps, {args.tasks} functions "
          f"of {args.contexts} contexts and {args.targets} targets per step):")
    model = ContextRegressor(rngs=nnx.Rngs(0))
    losses = train(model, args)

    print(f"Held-out functions, RMSE at the targets (contexts have noise std {NOISE}):")
    counts = (8, 64, 512, long_length) if args.quick else (8, 16, 64, 256, 1024, long_length)
    errors = evaluate(model, 1007, counts, tasks=16, targets=256)
    print(f"One function with {long_length:,} contexts and {long_length:,} targets (dense "
          f"attention would store {4 * long_length**2 * 4 / 1e9:.1f} GB of scores):")
    long_start = time.perf_counter()
    evaluate(model, 1008, (long_length,), tasks=1, targets=long_length)
    print(f"  {time.perf_counter() - long_start:.1f} s, compilation included")

    print("Self-attention, 4 heads of 16, float32, median of 3 calls:")
    timings, memory = time_and_memory(timed, compiled_only, forward=not args.quick)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "kernel_attention.png"
    plot(path, losses, model, errors, timings, memory)
    print(f"Saved {path} (total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
