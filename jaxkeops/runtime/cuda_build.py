"""The CUDA compile stage: kernel source -> cubin (or PTX) for one GPU architecture.

NVRTC is preferred (a fraction of a second per kernel, no toolkit needed); nvcc is the fallback
when it is on PATH. Results go to the same disk cache as the CPU kernels, written atomically,
keyed by the source, the headers, the package version, the compiler and the architecture.
The kernel *id* depends on the source alone (`cuda_kernel_key`): it is known at lowering time
on a machine without GPU or compiler, and is the same in every process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from ..errors import CompilerNotFoundError, KernelCompileError
from .build import headers_digest, include_dir, run_compiler
from .cache import (
    ET_EXEC,
    atomic_write,
    cache_dir,
    discard_entry,
    elf_problem,
    header_problem,
    install_bytes,
    verify_entry,
)
from .nvrtc import find_nvrtc
from .toolchain import probe_timeout, run_tool

# No fast-math: LogSumExp, Min and friends need IEEE inf and NaN.
OPTIONS = ("-std=c++17", "-DNDEBUG")
INSTALL_HINT = ('install NVRTC with `pip install "jaxkeops[cuda12]"` (or "jaxkeops[cuda13]"), '
                "or put a CUDA toolkit's nvcc on PATH")


class CudaBuildStats:
    """What this process compiled for the GPU and found in the cache (read by tests/tools)."""

    compiled = 0
    cache_hits = 0
    compile_seconds = 0.0


def cuda_kernel_key(source: str) -> str:
    """Content hash of a CUDA kernel: source, headers and package version (no compiler)."""
    h = hashlib.sha256()
    for part in ("cuda", source, headers_digest(include_dir(), "cuda"), __version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def write_cuda_source(source: str, key: str) -> Path:
    path = cache_dir() / f"{key}.cu"
    if not path.is_file():
        atomic_write(path, source.encode())
    return path


@dataclass(frozen=True)
class CudaCompiler:
    kind: str  # "nvrtc" or "nvcc"
    path: str
    version: str

    def fingerprint(self) -> str:
        return f"{self.kind}|{self.version}|{' '.join(OPTIONS)}"


def _nvcc_version(path: str) -> str:
    try:
        out = run_tool([path, "--version"], probe_timeout())
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CompilerNotFoundError(f"{path} exists but `{path} --version` failed ({error}): "
                                    f"{INSTALL_HINT}.") from None
    if out.returncode != 0:
        said = (out.stderr or out.stdout).strip()[:500] or "no output"
        raise CompilerNotFoundError(f"{path} exists but `{path} --version` failed with exit code "
                                    f"{out.returncode} ({said}): {INSTALL_HINT}.")
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown"


@functools.cache
def find_cuda_compiler(prefer: str | None = None) -> CudaCompiler:
    """NVRTC if it can be loaded, else nvcc on PATH (`prefer` picks one explicitly)."""
    if prefer in (None, "nvrtc"):
        nvrtc = find_nvrtc()
        if nvrtc is not None:
            return CudaCompiler("nvrtc", nvrtc.path, nvrtc.version_string)
    if prefer in (None, "nvcc"):
        nvcc = shutil.which("nvcc")
        if nvcc:
            return CudaCompiler("nvcc", nvcc, _nvcc_version(nvcc))
    wanted = prefer or "NVRTC or nvcc"
    raise CompilerNotFoundError(f"jaxkeops needs {wanted} to build its CUDA kernels and found "
                                f"none: {INSTALL_HINT}.")


@functools.cache
def _nvcc_archs(path: str) -> tuple[int, ...]:
    try:
        out = run_tool([path, "--list-gpu-code"], probe_timeout())
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(sorted(int(w[3:].rstrip("af")) for w in out.stdout.split()
                        if w.startswith("sm_") and w[3:].rstrip("af").isdigit()))


def _target(compiler: CudaCompiler, arch: int) -> tuple[str, bool]:
    """("sm_XY", False) for a cubin, or ("compute_XY", True) for PTX the driver compiles, when
    this compiler is older than the GPU."""
    archs = find_nvrtc().archs if compiler.kind == "nvrtc" else _nvcc_archs(compiler.path)
    if arch in archs or not archs:
        return f"sm_{arch}", False
    older = [a for a in archs if a <= arch]
    if not older:
        raise CompilerNotFoundError(f"{compiler.kind} {compiler.version} cannot compile for "
                                    f"sm_{arch} (it supports {archs}): {INSTALL_HINT}")
    return f"compute_{max(older)}", True


def _compile_nvcc(compiler: CudaCompiler, source_path: Path, target: str, ptx: bool,
                  out: Path) -> tuple[bool, str]:
    cmd = [compiler.path, "--ptx" if ptx else "--cubin", f"-arch={target}", *OPTIONS,
           f"-I{include_dir()}", str(source_path), "-o", str(out)]
    result = run_compiler(cmd, source_path, f"compiling a jaxkeops CUDA kernel for {target}")
    return result.returncode == 0, (result.stderr or result.stdout).strip()


def _image_problem(path: Path, ptx: bool) -> str | None:
    if ptx:
        return header_problem(path, b".version", "PTX", within=4096)
    return elf_problem(path, ET_EXEC)


def build_cuda_kernel(source: str, key: str, arch: int,
                      compiler: CudaCompiler | None = None) -> tuple[Path, str]:
    """(path, target) of the compiled kernel for compute capability `arch` (e.g. 80), with
    target "sm_80" for a cubin or "compute_XY" for PTX, compiling it unless the cache has it.

    A cached image is used only if it matches the digest recorded when it was written; a
    damaged one is reported (KernelCacheWarning), deleted and rebuilt. Raises
    KernelCompileError with the log, also when the compiler twice produced no valid image."""
    compiler = compiler or find_cuda_compiler()
    target, ptx = _target(compiler, arch)
    kind = "ptx" if ptx else "cubin"
    image_key = hashlib.sha256(f"{key}|{compiler.fingerprint()}|{target}".encode()).hexdigest()
    folder = cache_dir()
    image = folder / f"{image_key}.{target}.{kind}"
    if image.is_file():
        problem = verify_entry(image, image_key)
        if problem is None:
            CudaBuildStats.cache_hits += 1
            return image, target
        discard_entry(image, problem)
    source_path = write_cuda_source(source, key)
    start = time.perf_counter()
    what = f"{compiler.kind} {compiler.version}"
    for _attempt in range(2):  # a second try only when the compiler exited 0 with junk
        partial = folder / f"{image_key}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            if compiler.kind == "nvrtc":
                options = [*OPTIONS, f"-arch={target}", f"-I{include_dir()}"]
                result = find_nvrtc().compile(source, source_path.name, options, ptx=ptx)
                ok, log = result.ok, result.log
                if ok:
                    partial.write_bytes(result.image)
            else:
                ok, log = _compile_nvcc(compiler, source_path, target, ptx, partial)
            if not ok:
                raise KernelCompileError(f"{what} failed to compile a jaxkeops CUDA kernel for "
                                         f"{target}", log=log, source_path=str(source_path))
            problem = _image_problem(partial, ptx)
            data = partial.read_bytes() if problem is None else b""
        finally:
            partial.unlink(missing_ok=True)
        if problem is None:
            break
    else:
        raise KernelCompileError(
            f"{what} reported success but wrote no usable {kind} for {target} ({problem}), "
            "twice in a row; the compiler or the disk is broken",
            log=log or "(the compiler printed nothing)", source_path=str(source_path))
    install_bytes(image, data, image_key)
    CudaBuildStats.compiled += 1
    CudaBuildStats.compile_seconds += time.perf_counter() - start
    return image, target


__all__ = ["CudaBuildStats", "CudaCompiler", "build_cuda_kernel", "cuda_kernel_key",
           "find_cuda_compiler", "write_cuda_source"]
