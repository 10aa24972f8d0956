"""Workloads, the methods that compute them, and their float64 references.

Every method is prepared once per (workload, D, M = N) and returns a `call()` that runs the
computation to completion (inputs already in place, compilation already done) and returns its
output; `rows(out, k)` turns the first k rows of that output into a numpy array.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxkeops import Vi, Vj, _demo

SIGMA = _demo.SIGMA  # the demo's Gaussian width, so its blocked baselines are reused as they are
EPS = 0.1            # LogSumExp (Sinkhorn) temperature
K = 10               # neighbours of the argKmin workload

WORKLOADS = {
    "gauss": "Gaussian sum: out_i = sum_j exp(-|x_i-y_j|^2 / 2 sigma^2) b_j",
    "grad": "Gradient: d/dx_i of sum_i of the Gaussian sum (jax.grad)",
    "lse": "LogSumExp step: out_i = -eps log sum_j exp((g_j - |x_i-y_j|^2) / eps)",
    "knn": "argKmin, K = 10, on squared distances",
}
METHODS = ("jaxkeops", "ref kernel", "blocked JAX", "dense JAX", "pykeops")
GPU_METHODS = ("jaxkeops", "blocked JAX", "dense JAX", "pykeops")
MEM_LIMIT = 4e9  # bytes: dense JAX is skipped when M N D float32 exceed it, blocked JAX similarly


@dataclass
class Setup:
    """Where the methods run and what they may use."""
    device: object = None         # jax device of the inputs; None: JAX's default (the CPU)
    mem_limit: float = MEM_LIMIT  # bytes of intermediates dense and blocked JAX may hold
    ref_lib: ctypes.CDLL | None = None
    has_ref: bool = False         # the reference kernel exists (built, or its source in a plan)
    pykeops: str | None = "not installed"  # why pykeops cannot run; None when it can
    pykeops_gpu: object = None    # gpu.PykeopsGPU: how pykeops runs on the GPU


def make_data(workload: str, n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """x, y ~ N(0, 1/D) (so |x - y|^2 is about 2 at every D) and the j-weights b or g."""
    rng = np.random.default_rng(seed)
    data = {k: (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32) for k in "xy"}
    if workload in ("gauss", "grad"):
        data["b"] = rng.standard_normal((n, 1)).astype(np.float32)
    elif workload == "lse":
        data["g"] = (0.1 * rng.standard_normal((n, 1))).astype(np.float32)
    return data


# ---------------------------------------------------------------- jaxkeops: LazyTensor formulas
def jk_grad(x, y, b):
    return jax.grad(lambda x: _demo.gaussian_jaxkeops(x, y, b).sum())(x)


def jk_lse(x, y, g):
    d2 = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    return -EPS * ((Vj(g) - d2) / EPS).logsumexp(axis=1)


JAXKEOPS = {"gauss": _demo.gaussian_jaxkeops, "grad": jk_grad, "lse": jk_lse,
            "knn": _demo.knn_jaxkeops}


# ---------------------------------------------------------------- dense and blocked JAX
def _sqdist(x, y):
    return jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def dense_gauss(x, y, b):
    return jnp.exp(-_sqdist(x, y) / (2 * SIGMA**2)) @ b


def dense_grad(x, y, b):
    return jax.grad(lambda x: dense_gauss(x, y, b).sum())(x)


def dense_lse(x, y, g):
    return -EPS * jax.nn.logsumexp((g[:, 0] - _sqdist(x, y)) / EPS, axis=1, keepdims=True)


def dense_knn(x, y):
    return jax.lax.top_k(-_sqdist(x, y), K)[1]


def _over_row_blocks(fn):
    """lax.map of `fn(x_block, *rest)` over the demo's blocks of rows of x."""
    def blocked(x, *rest):
        blocks, m = _demo._row_blocks(x, _demo.BLOCK)
        out = jax.lax.map(lambda xb: fn(xb, *rest), blocks)
        return out.reshape(-1, out.shape[-1])[:m]
    return blocked


DENSE = {"gauss": dense_gauss, "grad": dense_grad, "lse": dense_lse, "knn": dense_knn}
# The demo's own blocked baselines; the gradient is jax.grad taken per block of rows (rows are
# independent), which keeps its memory at one block instead of saving every block's residuals.
BLOCKED = {"gauss": _demo.gaussian_blocked, "grad": _over_row_blocks(dense_grad),
           "lse": _over_row_blocks(dense_lse), "knn": _demo.knn_blocked}


def _args(workload, data):
    return (data["x"], data["y"]) + tuple(data[k] for k in ("b", "g") if k in data)


def _prepare_jax(fn, workload, data, device=None):
    args = [jax.device_put(a, device) for a in _args(workload, data)]
    jitted = jax.jit(fn)
    jitted.lower(*args).compile()  # traces and compiles without running; the calls reuse it
    # The jitted function, as users call it: its C++ fast path costs 1-2.5 us less per call
    # than calling the Compiled object (measured at M = N = 30).
    return lambda: jax.block_until_ready(jitted(*args))


# ---------------------------------------------------------------- pykeops (optional)
def pykeops_version() -> str | None:
    try:
        import pykeops
    except Exception:
        return None
    return pykeops.__version__


def _pykeops_fn(workload, LT, **kw):
    """The workload with pykeops LazyTensors LT (numpy or torch); kw go to the reduction."""
    def d2(x, y):
        return ((LT(x[:, None, :]) - LT(y[None, :, :])) ** 2).sum(-1)

    def gauss(x, y):
        return (-d2(x, y) / (2 * SIGMA**2)).exp()

    if workload == "gauss":
        return lambda x, y, b: (gauss(x, y) * LT(b[None])).sum(axis=1, **kw)
    if workload == "grad":  # written out (pykeops.numpy has no autodiff), on the GPU as well
        return lambda x, y, b: ((LT(y[None]) - LT(x[:, None])) / SIGMA**2 * gauss(x, y)
                                * LT(b[None])).sum(axis=1, **kw)
    if workload == "lse":
        return lambda x, y, g: -EPS * ((LT(g[None]) - d2(x, y)) / EPS).logsumexp(axis=1, **kw)
    return lambda x, y: d2(x, y).argKmin(K=K, axis=1, **kw)


def _prepare_pykeops(workload, data, gpu=None):
    """On the CPU with pykeops.numpy, or as `gpu` (a gpu.PykeopsGPU) says."""
    if gpu is None:
        from pykeops.numpy import LazyTensor
        fn, args = _pykeops_fn(workload, LazyTensor), _args(workload, data)
        fn(*(a[:8] for a in args))  # compiles (or loads) the formula on a tiny input
        return lambda: fn(*args)
    fn = _pykeops_fn(workload, gpu.LazyTensor, **gpu.reduce_kw)
    args = [gpu.to_device(a) for a in _args(workload, data)]
    fn(*(a[:8] for a in args))
    gpu.sync()

    def call():
        out = fn(*args)
        gpu.sync()  # torch.cuda.synchronize(): pykeops.torch returns before the kernel ends
        return out
    return call


# ---------------------------------------------------------------- reference kernel (optional)
REF_DIMS = {"gauss": (3, 64), "grad": (3, 64), "lse": (3,), "knn": (3, 64)}


def cpu_has_avx512() -> bool:
    """Whether this CPU runs AVX-512 (Linux /proc/cpuinfo; False where it cannot tell)."""
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def build_ref(repo: Path, workdir: str) -> tuple[ctypes.CDLL | None, str]:
    """Compile <repo>/../shared/perf/refkern.cpp into workdir; (library, or None and why)."""
    src = repo.parent / "shared" / "perf" / "refkern.cpp"
    if not src.exists():
        return None, f"not found: {src}"
    cxx = os.environ.get("CXX") or shutil.which("g++")
    out = Path(workdir) / "librefkern.so"
    cmd = [cxx or "g++", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    if not cpu_has_avx512():  # the kernel as it is, on pairs of AVX2 registers
        cmd += ["-include", str(Path(__file__).with_name("avx512_on_avx2.h"))]
    cmd += [str(src), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return None, f"build failed: {proc.stderr.strip()[:300]}"
    lib = ctypes.CDLL(str(out))
    fp, lng, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for name in ("ref_gauss_fwd", "ref_gauss_grad", "ref_lse"):
        getattr(lib, name).argtypes = [fp, fp, fp, fp, lng, lng, i32, ctypes.c_float]
    lib.ref_knn.argtypes = [fp, fp, fp, fp, lng, lng, i32, i32]
    return lib, " ".join(cmd[:-3] + [src.name]).replace(str(Path(__file__).parent) + "/", "")


def _prepare_ref(lib, workload, data):
    x, y = data["x"], data["y"]
    m, d = x.shape
    n = y.shape[0]
    p = lambda a: a.ctypes.data

    def call():
        if workload == "knn":
            idx, dist = np.empty((m, K), np.int32), np.empty((m, K), np.float32)
            rc = lib.ref_knn(p(x), p(y), p(idx), p(dist), m, n, d, K)
            out = idx
        else:
            out = np.empty((m, d) if workload == "grad" else (m, 1), np.float32)
            fn = {"gauss": lib.ref_gauss_fwd, "grad": lib.ref_gauss_grad, "lse": lib.ref_lse}
            w = data["g"] if workload == "lse" else data["b"]
            rc = fn[workload](p(x), p(y), p(w), p(out), m, n, d,
                              EPS if workload == "lse" else SIGMA)
        if rc:
            raise RuntimeError(f"ref kernel returned {rc}")
        return out
    return call


# ---------------------------------------------------------------- availability and preparation
def skip_reason(method: str, workload: str, n: int, d: int, setup: Setup) -> str | None:
    """Why `method` cannot run this point at all (memory, missing dependency), or None."""
    if method == "dense JAX" and n * n * d * 4 > setup.mem_limit:
        return f"needs {n * n * d * 4 / 1e9:.0f} GB"
    # XLA fuses the blocked forward passes down to a (block, N) matrix; the gradient keeps the
    # (block, N, D) differences for its backward pass (both measured on the CPU).
    block = min(n, _demo.BLOCK) * n * (d if workload == "grad" else 1) * 4
    if method == "blocked JAX" and block > setup.mem_limit:
        return f"needs {block / 1e9:.0f} GB per block"
    if method == "pykeops" and setup.pykeops:
        return setup.pykeops
    if method == "ref kernel" and (not setup.has_ref or d not in REF_DIMS[workload]):
        return "n/a" if setup.has_ref else "not available"
    return None


def prepare(method: str, workload: str, data, setup: Setup):
    if method in ("jaxkeops", "dense JAX", "blocked JAX"):
        fns = {"jaxkeops": JAXKEOPS, "dense JAX": DENSE, "blocked JAX": BLOCKED}[method]
        return _prepare_jax(fns[workload], workload, data, setup.device)
    if method == "pykeops":
        return _prepare_pykeops(workload, data, setup.pykeops_gpu)
    return _prepare_ref(setup.ref_lib, workload, data)


# ---------------------------------------------------------------- float64 references, errors
def exact(workload: str, data, rows: int, chunk: int = 50_000) -> np.ndarray:
    """The first `rows` outputs in float64 numpy, sweeping j in chunks."""
    x = data["x"][:rows].astype(np.float64)
    x2 = (x**2).sum(1, keepdims=True)
    acc, acc_y, lse, best = 0.0, 0.0, -np.inf, None
    for s in range(0, data["y"].shape[0], chunk):
        y = data["y"][s:s + chunk].astype(np.float64)
        d2 = np.maximum(x2 + (y**2).sum(1) - 2 * x @ y.T, 0.0)
        if workload in ("gauss", "grad"):
            w = np.exp(-d2 / (2 * SIGMA**2)) * data["b"][s:s + chunk, 0]
            acc = acc + w.sum(1, keepdims=True)
            acc_y = acc_y + w @ y
        elif workload == "lse":
            z = (data["g"][s:s + chunk, 0] - d2) / EPS
            zmax = z.max(1, keepdims=True)
            lse = np.logaddexp(lse, zmax + np.log(np.exp(z - zmax).sum(1, keepdims=True)))
        else:
            cand = np.concatenate([best[0], d2], 1) if best is not None else d2
            ids = np.arange(s, s + d2.shape[1])
            ids = np.concatenate([best[1], np.broadcast_to(ids, d2.shape)], 1) \
                if best is not None else np.broadcast_to(ids, d2.shape)
            top = np.argsort(cand, axis=1, kind="stable")[:, :K]
            best = (np.take_along_axis(cand, top, 1), np.take_along_axis(ids, top, 1))
    if workload == "gauss":
        return acc
    if workload == "grad":
        return (acc_y - acc * x) / SIGMA**2
    return -EPS * lse if workload == "lse" else best[1]


def error(workload: str, out: np.ndarray, ref: np.ndarray) -> float:
    """knn: fraction of the float64 neighbours found; else max |out - ref| / max |ref|."""
    if workload == "knn":
        return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(out, ref)]))
    out = np.asarray(out, np.float64).reshape(ref.shape)
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def rows(out, k: int) -> np.ndarray:
    out = out[:k]
    if type(out).__module__.startswith("torch"):
        out = out.cpu()  # a CUDA tensor from pykeops.torch
    return np.asarray(out)
