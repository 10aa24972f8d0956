"""The compile stage: C++ source -> shared library in the disk cache."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import subprocess
import time
from pathlib import Path

from .._version import __version__
from ..errors import KernelCompileError
from .cache import (
    ET_DYN,
    atomic_write,
    cache_dir,
    discard_entry,
    elf_problem,
    header_problem,
    install,
    verify_entry,
)
from .toolchain import (
    DEFAULT_COMPILE_TIMEOUT,
    Toolchain,
    compile_timeout,
    find_toolchain,
    run_tool,
)

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


@functools.cache
def headers_digest(root: Path, backend: str = "cpu") -> str:
    """The one digest of the kernel headers under `root` that kernel keys include: every header
    for "cuda", all but the CUDA-only `cuda_*.h` for "cpu" (CPU kernels never include them, so
    a CUDA edit leaves CPU kernels cached)."""
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend must be 'cpu' or 'cuda', got {backend!r}")
    h = hashlib.sha256()
    for path in sorted((root / "jaxkeops").rglob("*.h")):
        if backend == "cpu" and path.name.startswith("cuda_"):
            continue
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def kernel_key(source: str, toolchain: Toolchain) -> str:
    """Content hash of everything that decides the binary: source, headers, toolchain, version."""
    h = hashlib.sha256()
    for part in (source, headers_digest(include_dir()), toolchain.fingerprint(), __version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def run_compiler(command: list[str], source_path: Path, what: str) -> subprocess.CompletedProcess:
    """Runs a compiler under $JAXKEOPS_COMPILE_TIMEOUT; a hang or a compiler that cannot start
    becomes a KernelCompileError naming the compiler, the limit and the source."""
    timeout = compile_timeout()
    try:
        return run_tool(command, timeout)
    except subprocess.TimeoutExpired as expired:
        said = "\n".join(part.strip() for part in (expired.stderr, expired.stdout)
                         if isinstance(part, str) and part.strip())
        raise KernelCompileError(
            f"{command[0]} did not finish {what} within {timeout:g} s and was stopped (limit "
            f"set by JAXKEOPS_COMPILE_TIMEOUT, default {DEFAULT_COMPILE_TIMEOUT:g} s). If this "
            "machine is merely slow, raise it, e.g. JAXKEOPS_COMPILE_TIMEOUT=3600, or set 0 "
            "for no limit",
            log=said or "(no output before it was stopped)", source_path=str(source_path),
        ) from None
    except OSError as error:
        raise KernelCompileError(f"{command[0]} could not be started for {what}: "
                                 f"{error.strerror or error}", log="",
                                 source_path=str(source_path)) from None


class BuildStats:
    """Counts of what this process compiled and found in the cache (read by tests and tools)."""

    compiled = 0
    cache_hits = 0
    compile_seconds = 0.0


PCH_HEADER = "jaxkeops/cpu_kernel.h"


# Precompiled-header folders this process could not build or found broken: plain header.
_pch_unusable: set[Path] = set()


def precompiled_header_tag(toolchain: Toolchain) -> str:
    """Names the precompiled header's folder: the header digest, toolchain and version."""
    return hashlib.sha256(
        (headers_digest(include_dir()) + toolchain.fingerprint() + __version__).encode()
    ).hexdigest()[:20]


def uses_precompiled_header(toolchain: Toolchain) -> bool:
    """Only GCC reads `cpu_kernel.h.gch`; other compilers compile the plain header."""
    return toolchain.is_gcc


@functools.cache
def installed_header_root() -> Path | None:
    """Where `pip install` put the precompiled header it built for this machine (next to the
    native extension, which an editable install also keeps out of the source tree), or None."""
    try:
        spec = importlib.util.find_spec(f"{_PACKAGE_DIR.name}._ext")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _intact_header(folder: Path, tag: str) -> bool:
    """Whether `folder` holds a header that matches its digest; a damaged one is discarded."""
    target = folder / (PCH_HEADER + ".gch")
    if not target.is_file():
        return False
    problem = verify_entry(target, tag)
    if problem is not None:
        discard_entry(target, problem)
    return problem is None


def precompiled_header_dir(toolchain: Toolchain) -> Path | None:
    """A folder holding the precompiled CPU kernel header, built once per header version.

    Generated kernels start with `#include "jaxkeops/cpu_kernel.h"`; GCC looks for
    `cpu_kernel.h.gch` in this folder before the real header and uses it when the flags match,
    which halves each kernel's compile time. `pip install` builds one for the default flags
    (cuda_src/precompile_header.py), so that a new machine's first kernel does not wait for it;
    otherwise, or for other flags, the first kernel builds it in the cache. Other compilers, or
    any failure, fall back to the plain header. The header is verified against its digest like
    a kernel, and one that breaks a kernel compile is dropped (see `build_cpu_kernel`).
    """
    if not uses_precompiled_header(toolchain):
        return None
    tag = precompiled_header_tag(toolchain)
    installed = installed_header_root()
    if installed is not None:
        folder = installed / f"pch-{tag}"
        if folder not in _pch_unusable:
            if _intact_header(folder, tag):
                return folder
            _pch_unusable.add(folder)  # kernels never build into the install, only the cache
    folder = cache_dir() / f"pch-{tag}"
    if folder in _pch_unusable:
        return None
    if _intact_header(folder, tag) or build_precompiled_header(toolchain, folder, tag):
        return folder
    _pch_unusable.add(folder)
    return None


def build_precompiled_header(toolchain: Toolchain, folder: Path, tag: str) -> bool:
    """Compiles the kernel header into `folder` with its digest record; False if GCC fails."""
    root = include_dir()
    target = folder / (PCH_HEADER + ".gch")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    flags = [f for f in toolchain.flags if f != "-shared"]
    command = [toolchain.compiler, *flags, f"-I{root}", "-x", "c++-header",
               str(root / PCH_HEADER), "-o", str(partial)]
    try:
        result = run_compiler(command, root / PCH_HEADER, "precompiling the kernel header")
        if result.returncode == 0 and header_problem(partial, b"gpch", "a GCC PCH") is None:
            install(partial, target, tag)
            return True
    finally:
        partial.unlink(missing_ok=True)
    return False


def _drop_precompiled_header(folder: Path) -> None:
    _pch_unusable.add(folder)
    discard_entry(folder / (PCH_HEADER + ".gch"),
                  "a kernel compiled without this precompiled header failed with it")


def build_cpu_kernel(source: str, key: str, toolchain: Toolchain | None = None) -> Path:
    """The path of the compiled kernel for `source`, compiling it unless the cache has it.

    A cached kernel is used only if it matches the digest recorded when it was written; a
    damaged one is reported (KernelCacheWarning), deleted and rebuilt. Compiling fails with a
    KernelCompileError carrying the compiler's log and the source path, after one retry when
    the first attempt used the precompiled header or produced no valid shared library.
    """
    toolchain = toolchain or find_toolchain()
    folder = cache_dir()
    binary = folder / f"{key}.so"
    if binary.is_file():
        problem = verify_entry(binary, key)
        if problem is None:
            BuildStats.cache_hits += 1
            return binary
        discard_entry(binary, problem)
    source_path = folder / f"{key}.cpp"
    atomic_write(source_path, source.encode())
    start = time.perf_counter()
    _compile_kernel(toolchain, source_path, binary, key)
    BuildStats.compiled += 1
    BuildStats.compile_seconds += time.perf_counter() - start
    return binary


def _compile_kernel(toolchain: Toolchain, source_path: Path, binary: Path, key: str) -> None:
    pch = precompiled_header_dir(toolchain)
    # The second try goes without the precompiled header when the first used it (a broken
    # header must not fail every kernel), else repeats a build whose output was junk.
    attempts = (pch, None) if pch else (None, None)
    name = Path(toolchain.compiler).name
    error = None
    for number, pch_dir in enumerate(attempts):
        partial = binary.with_name(f"{key}.{os.getpid()}.{time.monotonic_ns()}.so.tmp")
        command = [
            toolchain.compiler, *toolchain.flags, *([f"-I{pch_dir}"] if pch_dir else []),
            f"-I{include_dir()}", str(source_path), "-o", str(partial),
        ]
        try:
            result = run_compiler(command, source_path, "compiling a jaxkeops kernel")
            log = (result.stderr or result.stdout).strip()
            if result.returncode != 0:
                error = KernelCompileError(
                    f"{name} failed to compile a jaxkeops kernel (exit code "
                    f"{result.returncode})", log=log, source_path=str(source_path))
                if pch_dir is None:
                    raise error
                continue
            problem = elf_problem(partial, ET_DYN)
            if problem is not None:
                error = KernelCompileError(
                    f"{toolchain.compiler} exited with code 0 but wrote no usable shared "
                    f"library ({problem}){' twice in a row' if number else ''}; the compiler "
                    "or the disk is broken",
                    log=log or "(the compiler printed nothing)", source_path=str(source_path))
                continue
            install(partial, binary, key)
        finally:
            partial.unlink(missing_ok=True)
        if pch is not None and pch_dir is None:
            _drop_precompiled_header(pch)
        return
    raise error
