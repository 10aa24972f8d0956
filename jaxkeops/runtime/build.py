"""The compile stage: C++ source -> shared library in the disk cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

from .._version import __version__
from ..errors import KernelCompileError
from .cache import atomic_write, cache_dir
from .toolchain import Toolchain, find_toolchain

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def include_dir() -> Path:
    """The headers generated kernels include (installed with the package, or in the checkout)."""
    candidates = [_PACKAGE_DIR / "include", _PACKAGE_DIR.parent / "cuda_src" / "include"]
    for path in candidates:
        if (path / "jaxkeops" / "kernel_abi.h").is_file():
            return path
    raise FileNotFoundError(
        "jaxkeops kernel headers not found; looked in " + ", ".join(map(str, candidates))
    )


def _headers_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((root / "jaxkeops").rglob("*.h")):
        if path.name.startswith("cuda_"):  # CPU kernels never include the CUDA headers
            continue
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


_HEADERS_DIGEST: dict[Path, str] = {}


def kernel_key(source: str, toolchain: Toolchain) -> str:
    """Content hash of everything that decides the binary: source, headers, toolchain, version."""
    root = include_dir()
    if root not in _HEADERS_DIGEST:
        _HEADERS_DIGEST[root] = _headers_digest(root)
    h = hashlib.sha256()
    for part in (source, _HEADERS_DIGEST[root], toolchain.fingerprint(), __version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class BuildStats:
    """Counts of what this process compiled and found in the cache (read by tests and tools)."""

    compiled = 0
    cache_hits = 0
    compile_seconds = 0.0


PCH_HEADER = "jaxkeops/cpu_kernel.h"


def precompiled_header_dir(toolchain: Toolchain) -> Path | None:
    """A folder holding the precompiled CPU kernel header, built once per header version.

    Generated kernels start with `#include "jaxkeops/cpu_kernel.h"`; GCC looks for
    `cpu_kernel.h.gch` in this folder before the real header and uses it when the flags match,
    which halves each kernel's compile time. Other compilers, or any failure, fall back to the
    plain header.
    """
    if "g++" not in toolchain.version and "GCC" not in toolchain.version:
        return None
    root = include_dir()
    if root not in _HEADERS_DIGEST:
        _HEADERS_DIGEST[root] = _headers_digest(root)
    tag = hashlib.sha256(
        (_HEADERS_DIGEST[root] + toolchain.fingerprint() + __version__).encode()
    ).hexdigest()[:20]
    folder = cache_dir() / f"pch-{tag}"
    target = folder / (PCH_HEADER + ".gch")
    if target.is_file():
        return folder
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    flags = [f for f in toolchain.flags if f != "-shared"]
    command = [toolchain.compiler, *flags, f"-I{root}", "-x", "c++-header",
               str(root / PCH_HEADER), "-o", str(partial)]
    try:
        ok = subprocess.run(command, capture_output=True, text=True).returncode == 0
        if ok:
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return folder if target.is_file() else None


def build_cpu_kernel(source: str, key: str, toolchain: Toolchain | None = None) -> Path:
    """The path of the compiled kernel for `source`, compiling it unless the cache has it."""
    toolchain = toolchain or find_toolchain()
    folder = cache_dir()
    binary = folder / f"{key}.so"
    if binary.is_file():
        BuildStats.cache_hits += 1
        return binary
    source_path = folder / f"{key}.cpp"
    atomic_write(source_path, source.encode())
    partial = folder / f"{key}.{os.getpid()}.{time.monotonic_ns()}.so.tmp"
    pch = precompiled_header_dir(toolchain)
    command = [
        toolchain.compiler, *toolchain.flags, *([f"-I{pch}"] if pch else []),
        f"-I{include_dir()}", str(source_path), "-o", str(partial),
    ]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise KernelCompileError(
                f"{Path(toolchain.compiler).name} failed to compile a jaxkeops kernel "
                f"(exit code {result.returncode})",
                log=(result.stderr or result.stdout).strip(),
                source_path=str(source_path),
            )
        os.replace(partial, binary)
    finally:
        partial.unlink(missing_ok=True)
    BuildStats.compiled += 1
    BuildStats.compile_seconds += time.perf_counter() - start
    return binary
