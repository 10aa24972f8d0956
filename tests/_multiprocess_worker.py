"""One of 2 processes of tests/test_multiprocess.py: 2 CPU devices each, 4 in all, joined by
jax.distributed over localhost with gloo collectives. The reduced points y are split over all 4
devices (j), so every device reduces a quarter of them and the partial log-sum-exps are merged
across processes. Prints a JSON record of the errors against numpy float64."""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2")

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxkeops import Vi, Vj  # noqa: E402

M, N = 24, 40


def lse_reference(x, y):
    v = -np.sum((x[:, None] - y[None]) ** 2, -1)
    m = v.max(1, keepdims=True)
    lse = np.log(np.exp(v - m).sum(1, keepdims=True)) + m
    soft = np.exp(v - lse)  # d/dx sum_i lse_i = sum_j softmax_ij * (-2) (x_i - y_j)
    grad = -2 * (x * soft.sum(1, keepdims=True) - soft @ y)
    return lse, grad


def pairs(call: str) -> int:
    """The pairs (i, j) one device's kernel call visits: its local output rows times n_red."""
    dims = [int(d) for d in re.search(r"= \(?[a-z0-9]+\[([0-9,]*)\]", call).group(1).split(",")]
    return int(np.prod(dims[:-1])) * int(re.search(r"n_red = (\d+)", call).group(1))


def main(port: str, process_id: int) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(M, 3)), rng.normal(size=(N, 3))  # the same in both processes
    mesh = jax.make_mesh((4,), ("d",))
    shard = NamedSharding(mesh, P("d"))
    replicated = NamedSharding(mesh, P())
    y_global = jax.make_array_from_callback(y.shape, shard, lambda index: y[index])
    x_global = jax.make_array_from_callback(x.shape, replicated, lambda index: x[index])

    def loss(x, y):
        return (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1)

    f = jax.jit(lambda x, y: (loss(x, y), jax.grad(lambda x: loss(x, y).sum())(x)))
    hlo = f.lower(x_global, y_global).compile().as_text()
    lse, grad = f(x_global, y_global)
    lse, grad = (multihost_utils.process_allgather(a, tiled=True) for a in (lse, grad))
    want_lse, want_grad = lse_reference(x, y)
    calls = [line for line in hlo.splitlines() if 'custom_call_target="jaxkeops_cpu"' in line]
    print(json.dumps({
        "process": process_id,
        "lse_error": float(np.max(np.abs(np.asarray(lse) - want_lse))),
        "grad_error": float(np.max(np.abs(np.asarray(grad) - want_grad))),
        "kernel_calls": len(calls),
        "pairs_per_call": [pairs(line) for line in calls],
        "all_gathers": sum(" all-gather(" in line for line in hlo.splitlines()),
    }), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
