"""Which C++ compiler builds CPU kernels, with which flags, for which CPU."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import CompilerNotFoundError

# -O3 -march=native is where the speed comes from; -fno-math-errno lets sqrt and friends
# vectorise. No -ffast-math: LogSumExp, Min and friends need IEEE inf and NaN.
BASE_FLAGS = ("-std=c++17", "-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-plt")


@dataclass(frozen=True)
class Toolchain:
    compiler: str
    version: str
    flags: tuple[str, ...]
    cpu_features: str

    def fingerprint(self) -> str:
        return "|".join([self.compiler, self.version, " ".join(self.flags), self.cpu_features])


def _compiler_candidates() -> list[str]:
    explicit = os.environ.get("JAXKEOPS_CXX") or os.environ.get("CXX")
    if explicit:
        return [explicit]
    return ["g++", "c++", "clang++"]


def _arch_flags(compiler: str) -> tuple[str, ...]:
    if platform.machine().lower() in ("x86_64", "amd64", "i686"):
        return ("-march=native",)
    return ("-mcpu=native",) if _accepts(compiler, "-mcpu=native") else ()


def _accepts(compiler: str, flag: str) -> bool:
    probe = subprocess.run(
        [compiler, flag, "-x", "c++", "-E", "-"], input="", capture_output=True, text=True
    )
    return probe.returncode == 0


def cpu_features() -> str:
    """The CPU's feature flags (they decide what -march=native generates)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def find_toolchain() -> Toolchain:
    """The C++ compiler to use, or a `CompilerNotFoundError` that says how to get one."""
    tried = []
    for name in _compiler_candidates():
        path = shutil.which(name)
        tried.append(name)
        if path is None:
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True)
        if out.returncode != 0:
            continue
        version = out.stdout.splitlines()[0] if out.stdout else "unknown"
        flags = BASE_FLAGS + _arch_flags(path)
        return Toolchain(path, version, flags, cpu_features())
    raise CompilerNotFoundError(
        f"jaxkeops needs a C++17 compiler to build its CPU kernels and found none (tried: "
        f"{', '.join(tried)}). Install one, e.g. `apt-get install g++` on Debian/Ubuntu, or "
        "point JAXKEOPS_CXX at a compiler."
    )
