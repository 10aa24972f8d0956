"""`python -m jaxkeops demo`: a Gaussian kernel sum and a 10-NN query on random 3-D points,
timed against blocked JAX (`lax.map` over row blocks). Dense JAX is skipped: it would need the
whole N x N matrix."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from .lazy.lazytensor import Vi, Vj

SIGMA = 0.5
BLOCK = 1000


def gaussian_jaxkeops(x, y, b):
    d2 = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    return (-d2 / (2 * SIGMA**2)).exp() @ b


def knn_jaxkeops(x, y, k=10):
    return ((Vi(x) - Vj(y)) ** 2).sum(-1).argKmin(K=k, axis=1)


def _row_blocks(x, block):
    pad = (-x.shape[0]) % block
    xp = jnp.pad(x, ((0, pad), (0, 0)))
    return xp.reshape(-1, block, x.shape[1]), x.shape[0]


def gaussian_blocked(x, y, b):
    blocks, m = _row_blocks(x, BLOCK)

    def one(xb):
        d2 = jnp.sum((xb[:, None, :] - y[None, :, :]) ** 2, axis=-1)
        return jnp.exp(-d2 / (2 * SIGMA**2)) @ b

    return jax.lax.map(one, blocks).reshape(-1, b.shape[1])[:m]


def knn_blocked(x, y, k=10):
    blocks, m = _row_blocks(x, BLOCK)

    def one(xb):
        d2 = jnp.sum((xb[:, None, :] - y[None, :, :]) ** 2, axis=-1)
        return jax.lax.top_k(-d2, k)[1]

    return jax.lax.map(one, blocks).reshape(-1, k)[:m]


def _time(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, 3)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((n, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((n, 1)), jnp.float32)
    return x, y, b


def _gaussian_float64(x, y, b, rows):
    x64, y64, b64 = (np.asarray(a, np.float64) for a in (x[:rows], y, b))
    d2 = ((x64[:, None, :] - y64[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * SIGMA**2)) @ b64


def _say(text: str = "") -> None:
    print(text, flush=True)


def _gaussian_stage(gk, gb, n: int, with_blocked: bool) -> None:
    x, y, b = _data(n)
    dense_gb = n * n * 4 / 1e9 * 4  # the N x N x 3 difference array and the N x N distances
    _say(f"\n[1] Gaussian kernel sum, M = N = {n:,}: out_i = sum_j exp(-|x_i - y_j|^2 / "
         "2 sigma^2) b_j")
    t_first, _ = _time(gk, x, y, b)
    t_jk, out_jk = _time(gk, x, y, b)
    exact = _gaussian_float64(x, y, b, 200)
    err_jk = float(np.max(np.abs(np.asarray(out_jk[:200], np.float64) - exact)))
    _say(f"  jaxkeops      {t_jk:8.3f} s   (first call, compile included: {t_first:.2f} s)")
    if with_blocked:
        t_bl, out_bl = _time(gb, x, y, b)
        err_bl = float(np.max(np.abs(np.asarray(out_bl[:200], np.float64) - exact)))
        _say(f"  blocked JAX   {t_bl:8.3f} s   (lax.map over blocks of {BLOCK} rows)")
        _say(f"  max abs error vs float64 (first 200 rows): jaxkeops {err_jk:.2e}, "
             f"blocked JAX {err_bl:.2e}; |out| <= {np.abs(exact).max():.1f}")
    else:
        _say("  blocked JAX   skipped at this size (tens of seconds; run with --full)")
        _say(f"  max abs error vs float64 (first 200 rows): {err_jk:.2e}; "
             f"|out| <= {np.abs(exact).max():.1f}")
    _say(f"  dense JAX     skipped: the N x N intermediates would need about {dense_gb:.0f} GB")


def _knn_stage(kk, kb, n: int, with_blocked: bool) -> None:
    x, y, _ = _data(n)
    _say(f"\n[2] 10-nearest neighbours, M = N = {n:,}")
    t_first, _ = _time(kk, x, y)
    t_jk, idx_jk = _time(kk, x, y)
    xs, ys = np.asarray(x[:200], np.float64), np.asarray(y, np.float64)
    d_exact = np.sort(((xs[:, None, :] - ys[None]) ** 2).sum(-1), axis=1)[:, :10]
    d_jk = np.sort(((xs[:, None, :] - ys[np.asarray(idx_jk[:200])]) ** 2).sum(-1), axis=1)
    _say(f"  jaxkeops      {t_jk:8.3f} s   (first call, compile included: {t_first:.2f} s)")
    if with_blocked:
        t_bl, idx_bl = _time(kb, x, y)
        agree = float(np.mean(np.asarray(idx_jk) == np.asarray(idx_bl)))
        _say(f"  blocked JAX   {t_bl:8.3f} s   (lax.map + lax.top_k); indices identical: "
             f"{agree:.4%}")
    else:
        _say("  blocked JAX   skipped at this size (about a minute or more; run with --full)")
    _say(f"  neighbour distances vs brute force in float64 (first 200 rows): max difference "
         f"{float(np.max(np.abs(d_jk - d_exact))):.2e}")


def _speedup_stage(gk, gb, n: int, repeats: int) -> None:
    _say(f"\n[3] Speed-up on the Gaussian sum at M = N = {n:,} (medians of {repeats} "
         "alternating runs)")
    x, y, b = _data(n, seed=1)
    jax.block_until_ready(gk(x, y, b))
    jax.block_until_ready(gb(x, y, b))
    jk_times, bl_times = [], []
    for _ in range(repeats):
        jk_times.append(_time(gk, x, y, b)[0])
        bl_times.append(_time(gb, x, y, b)[0])
    t_jk, t_bl = statistics.median(jk_times), statistics.median(bl_times)
    pairs = n * n / t_jk
    _say(f"  jaxkeops {t_jk:.3f} s ({pairs / 1e9:.2f} G pairs/s), blocked JAX {t_bl:.3f} s: "
         f"jaxkeops is {t_bl / t_jk:.1f}x faster")


def _dense_stage(gk, n: int) -> None:
    _say(f"\n[4] Against dense JAX at M = N = {n:,} (the N x N matrix fits in memory here)")
    x, y, b = _data(n, seed=2)
    gd = jax.jit(gaussian_dense)
    jax.block_until_ready(gd(x, y, b))
    jax.block_until_ready(gk(x, y, b))
    t_d, out_d = _time(gd, x, y, b)
    t_jk, out_jk = _time(gk, x, y, b)
    diff = float(jnp.max(jnp.abs(out_d - out_jk)))
    _say(f"  jaxkeops {t_jk:.4f} s, dense JAX {t_d:.4f} s ({n * n * 16 / 1e9:.1f} GB of "
         f"intermediates); max difference {diff:.1e}")


def gaussian_dense(x, y, b):
    d2 = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    return jnp.exp(-d2 / (2 * SIGMA**2)) @ b


def run_demo(full: bool = False, n: int | None = None) -> int:
    """The demo: about half a minute by default; `full` times blocked JAX at 100,000 points
    too (15 minutes on 2 busy cores)."""
    n = n or 100_000
    _say(f"jaxkeops demo on {jax.devices()[0].platform.upper()}: random 3-D points, float32"
         + (" (full size)" if full else " (quick: python -m jaxkeops demo --full for the full "
                                        "comparison)"))
    gk, gb = jax.jit(gaussian_jaxkeops), jax.jit(gaussian_blocked)
    kk, kb = jax.jit(knn_jaxkeops), jax.jit(knn_blocked)
    _gaussian_stage(gk, gb, n, with_blocked=full)
    _knn_stage(kk, kb, n, with_blocked=full)
    _speedup_stage(gk, gb, 50_000 if full else 10_000, repeats=3)
    _dense_stage(gk, 3_000)
    return 0
