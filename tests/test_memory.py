"""Reverse mode never materialises the M x N matrix: the gradient of a Gaussian sum at
M = N = 100,000 (a dense kernel matrix would take 100k * 100k * 4 bytes = 40 GB in float32, more
than this machine has) adds less than 1 GB to the peak memory of the process.

The measurement runs in a fresh subprocess, so that nothing else the test session allocated
counts. Set JAXKEOPS_MEMORY_TEST_N to change the size (e.g. 20000 for a quick run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

N_DEFAULT = 100_000
LIMIT_BYTES = 1 << 30

SCRIPT = textwrap.dedent(
    """
    import json, sys, time

    import jax

    jax.config.update("jax_enable_x64", False)
    import jax.numpy as jnp
    import numpy as np

    from jaxkeops import Vi, Vj

    n = int(sys.argv[1])


    def loss(x, y, b):
        k = (-Vi(x).sqdist(Vj(y))).exp()
        return jnp.sum((k * Vj(b)).sum(axis=1))


    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


    def inputs(rows, seed):
        rng = np.random.default_rng(seed)
        return [jnp.asarray(rng.normal(size=(rows, d)), jnp.float32) for d in (3, 3, 1)]


    def status(field):  # kB values of /proc/self/status, for this process's memory only
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)


    # Compile (or load from the disk cache) every kernel of the gradient at a tiny size, then
    # lower and compile the XLA program at the real size: no compiler memory is measured.
    jax.block_until_ready(grad(*inputs(64, 0)))
    x, y, b = jax.block_until_ready(inputs(n, 1))
    compiled = grad.lower(x, y, b).compile()

    # Peak anonymous memory during the call, sampled every millisecond by a thread. Anonymous
    # memory is where a materialised matrix would live; file-backed pages (shared libraries
    # paged back in when the machine is busy) are not the call's allocations, so VmHWM, which
    # counts them, is not used.
    import threading

    peak = [status("RssAnon")]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status("RssAnon"))
            done.wait(0.001)

    before_current = status("RssAnon")
    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    gx, gy, gb = jax.block_until_ready(compiled(x, y, b))
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    after_peak = max(peak[0], status("RssAnon"))
    finite = all(bool(jnp.all(jnp.isfinite(g))) for g in (gx, gy, gb))
    print(json.dumps({
        "n": n, "seconds": seconds, "before_current": before_current, "after_peak": after_peak,
        "shapes": [list(g.shape) for g in (gx, gy, gb)], "finite": finite,
    }))
    """
)


@pytest.mark.slow
def test_gradient_of_gaussian_sum_at_100k_points_uses_little_memory():
    n = int(os.environ.get("JAXKEOPS_MEMORY_TEST_N", N_DEFAULT))
    # Built at the default -O3: the kernels run on 1e5 points, not the suite's few dozen.
    environment = dict(os.environ, JAXKEOPS_OPT_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(n)], capture_output=True,
                            text=True, timeout=900, env=environment)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shapes"] == [[n, 3], [n, 3], [n, 1]]
    assert report["finite"]
    # The peak during the call, minus what the process held just before it.
    added = report["after_peak"] - report["before_current"]
    dense = n * n * 4
    print(f"\ngrad of a Gaussian sum at M = N = {n}: {report['seconds']:.1f} s, "
          f"peak memory +{added / 2**20:.1f} MiB (a dense matrix: {dense / 2**30:.0f} GiB)")
    assert added < LIMIT_BYTES, f"the gradient added {added / 2**20:.0f} MiB of peak memory"
