"""Runs generated CUDA kernel sources on the CPU, under the emulation of cuda_emu.cc.

`build_module` compiles one or more kernel sources (as `render_cuda` writes them) into a shared
library with g++; `emulate` runs one reduction call through it exactly as the XLA FFI handler
would on a GPU (same parameter packing, same launches) and returns the outputs. Compiled
libraries are cached on disk (under the jaxkeops cache dir), with a lock so that parallel test
workers build each one once.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from jaxkeops.codegen.cuda import LaunchPlan, plan_launch
from jaxkeops.codegen.spec import ROLE_INNER, ROLE_OUTER, ROLE_PARAM, KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P
from jaxkeops.reductions import INDEX
from jaxkeops.runtime import cache_dir, cuda_build
from jaxkeops.runtime.nvrtc import find_nvrtc

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parents[1] / "cuda_src" / "include"
FLAGS = ["-std=c++17", "-O1", "-fPIC", "-shared", "-w", f"-I{INCLUDE}", f"-I{HERE}"]
KINDS = {ROLE_OUTER: 0, ROLE_INNER: 1, ROLE_PARAM: 2}
OUTPUT, SCRATCH = 3, 4


class EmulationError(RuntimeError):
    """The emulation caught the kernel doing something wrong (a race, a bad access, ...)."""


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _headers_text() -> str:
    parts = []
    for path in sorted([*INCLUDE.rglob("*.h"), HERE / "cuda_emu.h", HERE / "cuda_emu.cc"]):
        parts.append(path.name + "\0" + path.read_text())
    return "\0".join(parts)


def _compile(name: str, sources: Sequence[Path], text: str, extra: Sequence[str] = ()) -> Path:
    """Compiles `sources` (whose content is `text`) into a cached shared library."""
    key = hashlib.sha256((text + _headers_text() + " ".join(FLAGS + list(extra))).encode())
    folder = cache_dir() / "cuda-emulation"
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / f"{name}-{key.hexdigest()[:24]}.so"
    with open(folder / f"{library.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not library.is_file():
            partial = library.with_suffix(f".{os.getpid()}.tmp")
            cmd = ["g++", *FLAGS, *extra, *map(str, sources), "-o", str(partial)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                partial.unlink(missing_ok=True)
                raise RuntimeError(f"g++ failed on {sources}:\n{result.stderr[-6000:]}")
            os.replace(partial, library)
    return library


@functools.cache
def emulator() -> ctypes.CDLL:
    """The emulator itself, loaded globally so that kernel libraries resolve against it."""
    source = HERE / "cuda_emu.cc"
    path = _compile("emulator", [source], source.read_text())
    lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    lib.jk_emu_call.restype = ctypes.c_int
    return lib


class KernelModule:
    """Kernel sources compiled for the emulation; `names` picks one of them."""

    def __init__(self, lib: ctypes.CDLL, suffixes: Mapping[str, str]):
        self.lib = lib
        self.suffixes = dict(suffixes)

    def functions(self, name: str) -> tuple[int, int]:
        suffix = self.suffixes[name]
        return tuple(ctypes.cast(getattr(self.lib, f"{k}{suffix}"), ctypes.c_void_p).value
                     for k in ("jk_main", "jk_combine"))


def bundle(sources: Mapping[str, str]) -> str:
    """One translation unit holding several kernel sources: each in its own namespace, with
    kernel names suffixed by its key (keys must be C identifiers). The header is parsed once,
    which is what makes compiling many kernels at once cheap."""
    chunks = ['#include "jaxkeops/cuda_kernel.h"\n']
    for name, source in sources.items():
        chunks.append(f"#undef JK_CUDA_KERNEL_SUFFIX\n#define JK_CUDA_KERNEL_SUFFIX _{name}\n"
                      f"namespace ns_{name} {{\n{source}\n}}\n")
    return "".join(chunks)


def build_module(sources: Mapping[str, str], tag: str = "kernels") -> KernelModule:
    """One library holding every source of `sources` (name -> CUDA source).

    A source that plants a fault (JK_FAULT_* defines before its include) must come alone: the
    header is parsed once per translation unit.
    """
    emulator()
    folder = cache_dir() / "cuda-emulation"
    folder.mkdir(parents=True, exist_ok=True)
    if len(sources) == 1:
        ((name, text),) = sources.items()
        suffixes = {name: "_v2"}
    else:
        text = bundle(sources)
        suffixes = {name: f"_{name}" for name in sources}
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    path = folder / f"{tag}-{digest}.cc"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    library = _compile(tag, [path], text, ["-include", str(HERE / "cuda_emu.h")])
    return KernelModule(ctypes.CDLL(str(library)), suffixes)


def kernel_operands(spec: KernelSpec, arrays: Sequence[np.ndarray]):
    """(operands as (*batch, rows, dim) with a common rank, batch shape, n_i, n_j)."""
    arrays = [np.asarray(a) for a in arrays]
    batches, n = [], {CAT_I: -1, CAT_J: -1}
    for var, a in zip(spec.args, arrays):
        if var.cat == CAT_P:
            batches.append(a.shape[:-1])
        else:
            batches.append(a.shape[:-2])
            n[var.cat] = a.shape[-2]
    batch = tuple(np.broadcast_shapes(*batches)) if batches else ()
    ops = []
    for var, a in zip(spec.args, arrays):
        if var.cat == CAT_P:
            a = a[..., None, :]
        ops.append(np.ascontiguousarray(a.reshape((1,) * (len(batch) + 2 - a.ndim) + a.shape)))
    return ops, batch, n[CAT_I], n[CAT_J]


def call_emulator(module: KernelModule, name: str, bufs: Sequence[tuple[np.ndarray, int]],
                  config: Sequence[int], order: int) -> None:
    """Runs kernel `name` of `module` under the emulator on the (array, kind) buffers, with the
    launch `config` (n_batch, n_red, block, smem, n_chunks, chunk_len, max_grid_y); outputs are
    written into their arrays. Raises EmulationError if the emulation catches a misbehaviour."""
    arr = lambda ctype, values: (ctype * max(len(values), 1))(*values)
    err = ctypes.create_string_buffer(1024)
    main, combine = module.functions(name)
    rc = emulator().jk_emu_call(
        ctypes.c_void_p(main), ctypes.c_void_p(combine),
        ctypes.c_int(len(bufs)), arr(ctypes.c_int64, [d for a, _ in bufs for d in a.shape]),
        arr(ctypes.c_int32, [a.ndim for a, _ in bufs]),
        arr(ctypes.c_int64, [a.itemsize for a, _ in bufs]),
        arr(ctypes.c_int32, [k for _, k in bufs]),
        arr(ctypes.c_void_p, [a.ctypes.data for a, _ in bufs]),
        arr(ctypes.c_int64, list(config)), ctypes.c_int(order), err, ctypes.c_int(len(err)))
    if rc != 0:
        raise EmulationError(err.value.decode())


def emulate(module: KernelModule, name: str, spec: KernelSpec, arrays: Sequence[np.ndarray], *,
            out_dtype: str | None = None, schedule: str | None = None, block: int | None = None,
            chunks: int | None = None, order: int = 0, max_grid_y: int = 65535,
            plan: LaunchPlan | None = None):
    """The outputs of `spec` on `arrays` (Genred layout), computed by the emulated kernel
    `name` of `module`, shaped as jaxkeops returns them. Raises EmulationError if the emulation
    catches the kernel misbehaving."""
    out_dtype = out_dtype or spec.dtype
    ops, batch, n_i, n_j = kernel_operands(spec, arrays)
    n_out, n_red = (n_i, n_j) if spec.axis == 1 else (n_j, n_i)
    n_batch = int(np.prod(batch)) if batch else 1
    plan = plan or plan_launch(spec, n_out, n_red, n_batch, schedule=schedule, block=block,
                               chunks=chunks)
    outs = []
    for out in spec.outputs:
        if out.kind == INDEX:
            outs.append(np.full(batch + (n_out, out.width), -7, _np_dtype(spec.index_dtype)))
        else:  # a sentinel, so that an output the kernel forgets shows
            outs.append(np.full(batch + (n_out, out.width), 12345, _np_dtype(out_dtype)))
    bufs = [(a, KINDS[r]) for a, r in zip(ops, spec.roles)] + [(o, OUTPUT) for o in outs]
    if plan.split:
        bufs.append((np.full(plan.scratch_bytes, 0xFF, np.uint8), SCRATCH))
    config = [len(batch), n_red, plan.block, plan.smem_bytes, plan.n_chunks, plan.chunk_len,
              max_grid_y]
    call_emulator(module, name, bufs, config, order)
    return tuple(o.reshape(batch + (n_out,) + out.shape) for o, out in zip(outs, spec.outputs))


def convert(kind: str, values: np.ndarray) -> np.ndarray:
    """The kernels' float16/bfloat16 <-> float32 conversions (their emulated path)."""
    lib = emulator()
    values = np.ascontiguousarray(values)
    to_float = values.dtype == np.uint16
    out = np.empty(values.shape, np.float32 if to_float else np.uint16)
    lib.jk_emu_convert(ctypes.c_int(0 if kind == "float16" else 1), ctypes.c_int(int(to_float)),
                       ctypes.c_void_p(values.ctypes.data), ctypes.c_void_p(out.ctypes.data),
                       ctypes.c_int64(values.size))
    return out


def nvrtc_ptx(source: str, arch: int = 90) -> str:
    """The PTX NVRTC makes of a generated source for sm_`arch` (the test skips without NVRTC),
    to read what the compiler did with it (instructions, local memory)."""
    nvrtc = find_nvrtc()
    if nvrtc is None:
        pytest.skip('NVRTC not found (pip install "jaxkeops[cuda12]")')
    result = nvrtc.compile(source, "kernel.cu",
                           [*cuda_build.OPTIONS, f"-arch=sm_{arch}", f"-I{INCLUDE}"], ptx=True)
    assert result.ok, result.log[-8000:]
    return result.image.decode()
