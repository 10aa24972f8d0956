"""Measurements that need a fresh process: `first_call_probe` (called by run.py) runs this file
as `python probes.py first-call ...` in new processes.

first-call: in this new process, the time of the first call of each workload's jitted
jaxkeops formula (tracing, XLA compilation, kernel generation and C++ or CUDA compilation when
JAXKEOPS_CACHE_DIR is empty, or loading the kernel from that disk cache when it is not), then
of its second call, on JAX's default device. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import methods  # noqa: E402

N, D = 1000, 3


def first_call_probe(workloads, on_gpu: bool) -> dict:
    """First-call times in new processes: with an empty kernel cache, then with it filled."""
    cache = tempfile.mkdtemp(prefix="jaxkeops-cache-")
    env = dict(os.environ, JAXKEOPS_CACHE_DIR=cache)
    if on_gpu:
        env["JAX_PLATFORMS"] = "cuda,cpu"  # the GPU is the default device
    out = {}
    try:
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, __file__, "first-call", *workloads],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-2000:])
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            if on_gpu and out[label]["backend"] != "gpu":
                raise RuntimeError(f"the probe ran on {out[label]['backend']}, not the GPU")
        out["kernels"] = sum(1 for f in Path(cache).iterdir()
                             if f.suffix in (".so", ".cubin", ".ptx"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def first_call(workloads: list[str]) -> dict:
    result = {"import": time.perf_counter() - T0, "backend": jax.default_backend()}
    x = jnp.ones((N, D), jnp.float32)
    t0 = time.perf_counter()
    jax.block_until_ready(jax.jit(lambda x: x * 2.0 + 1.0)(x))  # a trivial jitted op
    result["trivial"] = time.perf_counter() - t0
    for w in workloads:
        args = [jax.device_put(a) for a in methods._args(w, methods.make_data(w, N, D))]
        fn = jax.jit(methods.JAXKEOPS[w])
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        t1 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        result[w] = {"first": t1 - t0, "second": time.perf_counter() - t1}
    return result


if __name__ == "__main__":
    if sys.argv[1] != "first-call":
        raise SystemExit(f"unknown probe {sys.argv[1]}")
    print(json.dumps(first_call(sys.argv[2:])))
