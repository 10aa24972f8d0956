"""Runs every SPMD case on 4 forced host devices and prints one JSON record per case.

Started by tests/test_spmd.py in a subprocess (the device count is fixed when JAX starts). Each
record holds the largest error against the same reduction on one device and against a dense
numpy float64 reference, the all-gathers in the compiled program, and the pairs (i, j) that
each device's kernel calls visit.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4")

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if os.environ.get("JAXKEOPS_TEST_GSPMD") == "1":
    jax.config.update("jax_use_shardy_partitioner", False)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxkeops import Genred, Vi, Vj  # noqa: E402

M, N, B, K = 16, 24, 4, 3
rng = np.random.default_rng(11)
X = rng.normal(size=(M, 3))
Y = rng.normal(size=(N, 3))
W = rng.normal(size=(N, 2))
WPOS = rng.uniform(0.5, 2.0, size=(N, 2))
XB = rng.normal(size=(B, M, 3))


def sq(x, y):
    return np.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)


def dense_lse(v, w=None):
    m = np.max(v, axis=1, keepdims=True)
    e = np.exp(v - m)
    if w is None:
        return np.log(e.sum(1, keepdims=True)) + m
    return np.log(e @ w) + m


# name -> (function of (x, y, w), dense reference or None)
REDUCTIONS = {
    "Sum": (lambda x, y, w: (-Vi(x).sqdist(Vj(y))).exp() @ w,
            lambda x, y, w: np.exp(-sq(x, y)) @ w),
    "Sum_axis0": (lambda x, y, w: ((-Vi(x).sqdist(Vj(y))).exp() * Vi(x)).sum(axis=0),
                  lambda x, y, w: np.exp(-sq(x, y)).T @ x),
    "LogSumExp": (lambda x, y, w: (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1),
                  lambda x, y, w: dense_lse(-sq(x, y))),
    "LogSumExp_weighted": (
        lambda x, y, w: (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1, weight=Vj(jnp.abs(w) + 0.5)),
        lambda x, y, w: dense_lse(-sq(x, y), np.abs(w) + 0.5)),
    "LogSumExpSigned": (
        lambda x, y, w: (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1, weight=Vj(w),
                                                         return_sign=True), None),
    "SumSoftMaxWeight": (lambda x, y, w: (-Vi(x).sqdist(Vj(y))).sumsoftmaxweight(Vj(w), axis=1),
                         None),
    "Min": (lambda x, y, w: Vi(x).sqdist(Vj(y)).min(axis=1),
            lambda x, y, w: sq(x, y).min(1, keepdims=True)),
    "ArgMin": (lambda x, y, w: Vi(x).sqdist(Vj(y)).argmin(axis=1),
               lambda x, y, w: sq(x, y).argmin(1)[:, None]),
    "Max_ArgMax": (lambda x, y, w: Vi(x).sqdist(Vj(y)).max_argmax(axis=1), None),
    "KMin": (lambda x, y, w: Vi(x).sqdist(Vj(y)).Kmin(K=K, axis=1),
             lambda x, y, w: np.sort(sq(x, y), 1)[:, :K]),
    "ArgKMin": (lambda x, y, w: Vi(x).sqdist(Vj(y)).argKmin(K=K, axis=1),
                lambda x, y, w: np.argsort(sq(x, y), 1, kind="stable")[:, :K]),
    "KMin_ArgKMin_vector": (lambda x, y, w: (Vi(x) - Vj(y)).abs().Kmin_argKmin(K=K, axis=1),
                            None),
    "KMax_ArgKMax": (lambda x, y, w: Genred("SqDist(x, y)", ["x = Vi(3)", "y = Vj(3)"],
                                            reduction_op="KMax_ArgKMax", axis=1,
                                            opt_arg=K)(x, y),
                     lambda x, y, w: (-np.sort(-sq(x, y), 1)[:, :K],
                                      np.argsort(-sq(x, y), 1, kind="stable")[:, :K])),
}


def _gaussian_energy(x, y, w):
    return jnp.sum(((-Vi(x).sqdist(Vj(y))).exp() @ w) ** 2)


TRANSFORMS = {
    "grad": jax.grad(_gaussian_energy, argnums=(0, 1, 2)),
    "jvp": lambda x, y, w: jax.jvp(lambda x: (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1),
                                   (x,), (jnp.ones_like(x),))[1],
    "grad_of_lse": jax.grad(lambda x, y, w: jnp.sum((-Vi(x).sqdist(Vj(y))).logsumexp(axis=1)),
                            argnums=(0, 1)),
}

# jax.make_mesh gives explicit axes (shardings in the array types); the auto meshes check the
# other mode, where only XLA's propagation knows the shardings.
MESH_1D = jax.make_mesh((4,), ("a",), axis_types=(AxisType.Explicit,))
MESH_2D = jax.make_mesh((2, 2), ("r", "c"), axis_types=(AxisType.Explicit,) * 2)
AUTO_1D = jax.make_mesh((4,), ("a",), axis_types=(AxisType.Auto,))
AUTO_2D = jax.make_mesh((2, 2), ("r", "c"), axis_types=(AxisType.Auto,) * 2)


def put(a, mesh, spec):
    return jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))


SPLITS = {
    "i": lambda x, y, w: (put(x, MESH_1D, P("a")), put(y, MESH_1D, P()), put(w, MESH_1D, P())),
    "j": lambda x, y, w: (put(x, MESH_1D, P()), put(y, MESH_1D, P("a")),
                          put(w, MESH_1D, P("a"))),
    "ij": lambda x, y, w: (put(x, MESH_2D, P("r")), put(y, MESH_2D, P("c")),
                           put(w, MESH_2D, P("c"))),
}
# x and y split over the same axis: i takes it, and y is gathered (it must be, to pair every
# x_i with every y_j without a ring of collective permutes).
SAME_AXIS = {
    "same-axis": lambda x, y, w: (put(x, MESH_1D, P("a")), put(y, MESH_1D, P("a")),
                                  put(w, MESH_1D, P("a"))),
    "same-axis-auto": lambda x, y, w: (put(x, AUTO_1D, P("a")), put(y, AUTO_1D, P("a")),
                                       put(w, AUTO_1D, P("a"))),
}
AUTO = {
    "i-auto": lambda x, y, w: (put(x, AUTO_1D, P("a")), put(y, AUTO_1D, P()),
                               put(w, AUTO_1D, P())),
    "j-auto": lambda x, y, w: (put(x, AUTO_1D, P()), put(y, AUTO_1D, P("a")),
                               put(w, AUTO_1D, P("a"))),
    "ij-auto": lambda x, y, w: (put(x, AUTO_2D, P("r")), put(y, AUTO_2D, P("c")),
                                put(w, AUTO_2D, P("c"))),
}


def kernel_calls(hlo: str) -> list[dict]:
    """Local result shape and n_red of every jaxkeops custom call in compiled HLO text."""
    calls = []
    for line in hlo.splitlines():
        if 'custom_call_target="jaxkeops_cpu"' not in line:
            continue
        shape = re.search(r"= \(?[a-z0-9]+\[([0-9,]*)\]", line).group(1)
        dims = [int(d) for d in shape.split(",") if d]
        n_red = int(re.search(r"n_red = (\d+)", line).group(1))
        calls.append({"dims": dims, "n_red": n_red,
                      "pairs": int(np.prod(dims[:-1], dtype=np.int64)) * n_red})
    return calls


def gathers(hlo: str) -> list[str]:
    return [line.split("=")[1].split("all-gather")[0].strip()
            for line in hlo.splitlines() if " all-gather(" in line]


def max_error(got, want) -> float:
    worst = 0.0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            return float("inf")
        same_nan = np.isnan(g) & np.isnan(w)
        diff = np.where(same_nan, 0.0, np.abs(g - w) / np.maximum(1.0, np.abs(w)))
        worst = max(worst, float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0)
        if np.any(np.isnan(diff)):
            return float("inf")
    return worst


def run_case(name: str, f, args, sharded_args, dense=None, on_one_device=None) -> dict:
    single = jax.jit(on_one_device or f)(*(jnp.asarray(a) for a in args))
    compiled = jax.jit(f).lower(*sharded_args).compile()
    hlo = compiled.as_text()
    got = compiled(*sharded_args)
    record = {"case": name, "error": max_error(got, single), "gathers": gathers(hlo),
              "calls": kernel_calls(hlo)}
    if dense is not None:
        record["dense_error"] = max_error(got, dense(*args))
    return record


def cases():
    """(name, function, unsharded arguments, sharded arguments, dense reference or None[, the
    function to run on one device instead])."""
    for split, shard in SPLITS.items():
        for name, (f, dense) in REDUCTIONS.items():
            yield f"{name}-{split}", f, (X, Y, W), lambda s=shard: s(X, Y, W), dense
        for name, f in TRANSFORMS.items():
            yield f"{name}-{split}", f, (X, Y, W), lambda s=shard: s(X, Y, W), None
    for split, shard in {**SAME_AXIS, **AUTO}.items():
        for name in ("Sum", "LogSumExp", "ArgKMin", "grad"):
            f, dense = REDUCTIONS.get(name, (TRANSFORMS.get(name), None))
            yield f"{name}-{split}", f, (X, Y, W), lambda s=shard: s(X, Y, W), dense
    # vmap: the mapped axis sharded, and a batch of point clouds against one sharded over j.
    vlse = jax.vmap(REDUCTIONS["LogSumExp"][0], in_axes=(0, None, None))
    yield "vmap-batch", vlse, (XB, Y, W), lambda: (put(XB, MESH_1D, P("a")),
                                                   put(Y, MESH_1D, P()), put(W, MESH_1D, P())), None
    yield "vmap-j", vlse, (XB, Y, W), lambda: (put(XB, MESH_1D, P()), put(Y, MESH_1D, P("a")),
                                               put(W, MESH_1D, P("a"))), None
    # Inside shard_map each device already holds its block: the reduction runs as is.
    mapped = jax.shard_map(REDUCTIONS["LogSumExp"][0], mesh=MESH_1D, in_specs=(P("a"), P(), P()),
                           out_specs=P("a"))
    yield ("shard_map-i", mapped, (X, Y, W), lambda: SPLITS["i"](X, Y, W), None,
           REDUCTIONS["LogSumExp"][0])
    # inf and NaN in the reduced rows, spread over different devices.
    ys = Y.copy()
    ys[2, 0], ys[13, 1], ys[20, 2] = np.inf, np.nan, -np.inf
    for name in ("LogSumExp", "Min", "ArgMin", "KMin_ArgKMin_vector", "SumSoftMaxWeight"):
        yield (f"{name}-j-inf-nan", REDUCTIONS[name][0], (X, ys, W),
               lambda: SPLITS["j"](X, ys, W), None)


def main() -> None:
    wanted = os.environ.get("JAXKEOPS_TEST_SPMD_CASES")
    for name, f, args, sharded, dense, *on_one_device in cases():
        if wanted is None or name in wanted.split(","):
            record = run_case(name, f, args, sharded(), dense, *on_one_device)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
