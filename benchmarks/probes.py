"""Measurements that need a fresh process, run by run.py as `python probes.py first-call ...`.

first-call: in this new process, the time of the first call of each workload's jitted
jaxkeops formula (tracing, XLA compilation, kernel generation and C++ compilation when
JAXKEOPS_CACHE_DIR is empty, or loading the kernel from that disk cache when it is not), then
of its second call. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import time

T0 = time.perf_counter()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import methods  # noqa: E402

N, D = 1000, 3


def first_call(workloads: list[str]) -> dict:
    result = {"import": time.perf_counter() - T0}
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
