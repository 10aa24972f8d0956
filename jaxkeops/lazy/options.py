"""pykeops's reduction keywords, mapped onto what jaxkeops does with them.

Genred, the LazyTensor reductions and KernelSolve accept the same keywords as pykeops. Each one
either has the same meaning here, or is refused with an error that says why:

- `sum_scheme` ("auto", "direct_sum", "block_sum", "kahan_scheme"; also our short "direct",
  "block", "kahan") picks how sum-type reductions add their terms.
- `dtype_acc` / `use_double_acc` accumulate the terms of a sum-type reduction in float64.
- `backend` ("auto", "CPU", "GPU", "GPU_1D", "GPU_2D", with KeOps's "_host"/"_device" suffixes)
  and `device_id` run the reduction on that device, or raise when it does not exist. The CUDA
  schedule (KeOps's 1D or 2D scheme) is chosen per call from the sizes, so "GPU_1D" and
  "GPU_2D" both mean "on the GPU".
- `enable_chunks`, `use_fast_math` and `rec_multVar_highdim` are performance hints of KeOps's
  code generator. They never change results: jaxkeops picks its kernel schedule itself and
  always keeps IEEE semantics, so they are accepted and have no effect.
- `out=` is refused: JAX arrays are immutable, the result is returned instead.
- `ranges=` (block-sparse reductions): the 6-tuple of jaxkeops.cluster, checked by `check_ranges`
  in reduce.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..reductions import sum_type_reductions

# Reductions that add terms up, for which the sum scheme and the accumulator dtype mean something.
SUM_TYPE_REDUCTIONS = sum_type_reductions()

_SUM_SCHEMES = {
    "direct_sum": "direct", "block_sum": "block", "kahan_scheme": "kahan",
    "direct": "direct", "block": "block", "kahan": "kahan",
}
_ACCUMULATORS = ("float16", "float32", "float64")
_GPU_BACKENDS = ("GPU", "GPU_1D", "GPU_2D", "GPU_1D_host", "GPU_1D_device", "GPU_2D_host",
                 "GPU_2D_device")
BACKENDS = ("auto", "CPU", *_GPU_BACKENDS)

# Keywords of pykeops's Genred constructor and of its call; LazyTensor reductions take both.
BUILD_KEYWORDS = ("dtype", "cuda_type", "dtype_acc", "use_double_acc", "sum_scheme",
                  "enable_chunks", "rec_multVar_highdim", "use_fast_math", "optional_flags")
CALL_KEYWORDS = ("backend", "device_id", "ranges", "out")


@dataclass(frozen=True)
class AccuracyOptions:
    """How a sum-type reduction adds its terms: a sum scheme and an accumulator dtype (None:
    the default of the reduction and the data's own dtype)."""

    sum_scheme: str | None = None
    accumulator: str | None = None


def accuracy_options(reduction: str, sum_scheme: Any = "auto", dtype_acc: Any = "auto",
                     use_double_acc: Any = False) -> AccuracyOptions:
    """Validates pykeops's accuracy keywords for `reduction` and returns what they ask for."""
    if not isinstance(sum_scheme, str):
        raise TypeError(f"sum_scheme must be a string, got {sum_scheme!r}")
    if sum_scheme != "auto" and sum_scheme not in _SUM_SCHEMES:
        known = ", ".join(repr(s) for s in ("auto", "direct_sum", "block_sum", "kahan_scheme"))
        raise ValueError(f"sum_scheme={sum_scheme!r} is not one of {known}")
    if not isinstance(use_double_acc, (bool, np.bool_)):
        raise TypeError(f"use_double_acc must be True or False, got {use_double_acc!r}")
    if not isinstance(dtype_acc, str):
        raise TypeError(f"dtype_acc must be a string such as 'float64', got {dtype_acc!r}")
    if dtype_acc != "auto" and dtype_acc not in _ACCUMULATORS:
        raise ValueError(f"dtype_acc={dtype_acc!r} is not one of 'auto', "
                         + ", ".join(repr(a) for a in _ACCUMULATORS))
    if use_double_acc and dtype_acc != "auto":
        raise ValueError("use_double_acc=True and dtype_acc are two ways of asking for the same "
                         "thing: set only one of them")
    scheme = None if sum_scheme == "auto" else _SUM_SCHEMES[sum_scheme]
    accumulator = "float64" if use_double_acc else (None if dtype_acc == "auto" else dtype_acc)
    if reduction not in SUM_TYPE_REDUCTIONS:
        if scheme not in (None, "direct"):
            raise ValueError(f"sum_scheme={sum_scheme!r} only applies to sum-type reductions "
                             f"({', '.join(SUM_TYPE_REDUCTIONS)}), not to {reduction}")
        if accumulator is not None:
            which = "use_double_acc=True" if use_double_acc else f"dtype_acc={dtype_acc!r}"
            raise ValueError(f"{which} only applies to sum-type reductions "
                             f"({', '.join(SUM_TYPE_REDUCTIONS)}), not to {reduction}")
        scheme = None
    return AccuracyOptions(scheme, accumulator)


def resolve_accumulator(accumulator: str | None, data_dtype: str) -> str | None:
    """The accumulator dtype to use for data of `data_dtype`, None when it is the default.

    As in pykeops: float64 data accumulate in float64, float32 data in float32 or float64;
    half-precision data are computed in float32 by jaxkeops (a float16 accumulator would be
    less accurate than what we do, so it is refused rather than silently upgraded)."""
    if accumulator is None:
        return None
    if data_dtype == "float64":
        if accumulator != "float64":
            raise ValueError(f"dtype_acc={accumulator!r} is less precise than the float64 data: "
                             "float64 data accumulate in float64")
        return None
    if data_dtype == "float32":
        if accumulator == "float16":
            raise ValueError("dtype_acc='float16' is only allowed for float16 data (as in "
                             "pykeops); float32 data accumulate in float32 or float64")
        return None if accumulator == "float32" else "float64"
    # float16 / bfloat16: computed and accumulated in float32 by jaxkeops.
    if accumulator == "float16":
        raise ValueError("dtype_acc='float16' is not supported: jaxkeops computes and "
                         "accumulates half-precision data in float32; use 'auto' or 'float32'")
    if accumulator == "float64":
        raise ValueError(f"dtype_acc='float64' is not allowed for {data_dtype} data (as in "
                         "pykeops); they accumulate in float32")
    return None


def kernel_options(accuracy: AccuracyOptions, arrays: Sequence) -> dict[str, str]:
    """The keyword arguments of `run_reduction` that carry `accuracy` for these arrays."""
    options = {}
    if accuracy.sum_scheme is not None:
        options["sum_scheme"] = accuracy.sum_scheme
    if accuracy.accumulator is not None and arrays:
        accumulator = resolve_accumulator(accuracy.accumulator, str(jnp.result_type(*arrays)))
        if accumulator is not None:
            options["accumulator"] = accumulator
    return options


def check_build_keywords(where: str, options: Mapping[str, Any]) -> None:
    """Warns about pykeops's deprecated `dtype`/`cuda_type` (ignored there too), and checks the
    types of the performance hints that have no effect here."""
    for name in ("dtype", "cuda_type"):
        if options.get(name) is not None:
            warnings.warn(f"{where}: the keyword {name}={options[name]!r} is deprecated in pykeops "
                          "and ignored; the dtype comes from the arrays", stacklevel=3)
    for name in ("enable_chunks", "use_fast_math"):
        value = options.get(name, True)
        if not isinstance(value, (bool, np.bool_, int)):
            raise TypeError(f"{where}: {name} must be True or False, got {value!r}")


def check_out(out: Any) -> None:
    if out is not None:
        raise TypeError("out= is not supported: JAX arrays are immutable, so a reduction cannot "
                        "write into an existing array; use the array it returns")


@dataclass(frozen=True)
class Placement:
    """Where a reduction runs: None for wherever its inputs are (backend="auto")."""

    device: Any = None


def _platform_devices(platform: str) -> list:
    try:
        return jax.devices(platform)
    except RuntimeError:
        return []


def placement(backend: Any = "auto", device_id: Any = -1) -> Placement:
    """The device asked for by pykeops's `backend` and `device_id`, or an error saying why it
    cannot be used."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, one of {', '.join(map(repr, BACKENDS))}; "
                        f"got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(map(repr, BACKENDS))}")
    if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)):
        raise TypeError(f"device_id must be an integer, got {device_id!r}")
    device_id = int(device_id)
    if backend == "auto":
        if device_id < 0:
            return Placement()
        devices = jax.devices()
        platform = devices[0].platform
    else:
        platform = "cpu" if backend == "CPU" else "gpu"
        devices = _platform_devices(platform)
        if not devices:
            seen = ", ".join(sorted({d.platform for d in jax.devices()}))
            hint = (' install JAX\'s CUDA plugin (pip install "jaxkeops[cuda12]") on a machine '
                    "with an NVIDIA GPU, or use backend='auto'" if platform == "gpu" else "")
            raise RuntimeError(f"backend={backend!r} asks for a {platform.upper()} device, but "
                               f"JAX has none (it sees: {seen});{hint}")
    index = max(device_id, 0)
    if index >= len(devices):
        raise ValueError(f"device_id={device_id} is out of range: JAX has {len(devices)} "
                         f"{platform.upper()} device(s) {devices}")
    return Placement(devices[index])


def place(arrays: Sequence, where: Placement) -> list:
    """The arrays on the device of `where`. Inside a traced function (jit, grad, vmap), arrays
    stay where the enclosing computation runs: asking for another platform there is an error,
    since one XLA computation runs on one platform."""
    if where.device is None:
        return list(arrays)
    tracing = [a for a in arrays if isinstance(a, jax.core.Tracer)]
    if tracing:
        platform = jax.default_backend()
        wanted = where.device.platform
        if (platform == "cpu") != (wanted == "cpu"):
            raise RuntimeError(
                f"backend asks for {wanted.upper()}, but this reduction is traced inside a "
                f"computation (jit, grad or vmap) that runs on {platform.upper()}: place the "
                "inputs with jax.device_put, or jit for that device, instead of using backend=")
        return list(arrays)
    return [jax.device_put(a, where.device) for a in arrays]
