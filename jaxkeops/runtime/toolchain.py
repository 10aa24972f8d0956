"""Which C++ compiler builds CPU kernels, with which flags, for which CPU."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import signal
import subprocess
from dataclasses import dataclass

from ..errors import CompilerNotFoundError

# -O3 -march=native is where the speed comes from; -fno-math-errno lets sqrt and friends
# vectorise. No -ffast-math: LogSumExp, Min and friends need IEEE inf and NaN.
BASE_FLAGS = ("-std=c++17", "-fPIC", "-shared", "-fno-math-errno", "-fno-plt")
# GCC places loops 64 bytes and jump targets 32 bytes apart: the K-min kernels' branchy inner
# loop otherwise ran 7-12% slower or faster with unrelated edits (10-NN at M = N = 3e3 and 1e4,
# both builds A/B in one process on 2 AVX2 cores: 1.07 and 1.12 with the flags); the Gaussian
# sum, its gradient and the LSE step stayed within 1.5% either way.
# And it breaks up structures of up to 1 KiB into registers (scalar replacement of aggregates):
# with its default limit, the reduction states that a sweep copies to locals stayed in memory,
# and the one-row sweep's sum went through a store and a load every step (kernel alone, one
# core: Gaussian sum 1-1.3% faster at M = N = 1e3 and 3e3, 6% at M = 10 and N = 1e7 on two
# threads; gradient, 10-NN 1%; LSE unchanged; compile time unchanged).
GCC_TUNING_FLAGS = ("-falign-loops=64", "-falign-jumps=32",
                    "--param=sra-max-scalarization-size-Ospeed=1024")
OPT_LEVELS = ("0", "1", "2", "3", "g")
DEFAULT_OPT_LEVEL = "3"


def optimization_flag() -> str:
    """-O3, or the level in $JAXKEOPS_OPT_LEVEL (0-3 or g), read once per process with the
    toolchain.

    Lower levels build the same kernels, with the same IEEE semantics, in a fraction of the time
    but run slower (measured on the Gaussian sum and the log-sum-exp at 1e4 points: -O2 1.35x,
    -O1 1.8x slower to run; -O1 builds large derivative kernels about 3x faster). -Og builds
    another 30% faster than -O1 (0.82-0.87 s against 1.12-1.25 s a kernel, 12 kernels of the
    test suite) and runs about 2x slower than -O1 (the Gaussian sum at 2e3 points, one thread).
    The test suite uses -Og, where each kernel runs on a few dozen points. The level is part of
    the cache key.

    Example:
        >>> from jaxkeops.runtime.toolchain import optimization_flag
        >>> optimization_flag() in ("-O0", "-O1", "-O2", "-O3", "-Og")
        True
    """
    level = os.environ.get("JAXKEOPS_OPT_LEVEL", DEFAULT_OPT_LEVEL).strip().removeprefix("-O")
    if level not in OPT_LEVELS:
        raise ValueError(f"JAXKEOPS_OPT_LEVEL must be one of {', '.join(OPT_LEVELS)} (the C++ "
                         f"optimisation level of CPU kernels), got "
                         f"{os.environ['JAXKEOPS_OPT_LEVEL']!r}")
    return f"-O{level}"


DEFAULT_COMPILE_TIMEOUT = 600.0


def compile_timeout() -> float | None:
    """Seconds a compiler may run before it is stopped: $JAXKEOPS_COMPILE_TIMEOUT, default 600
    (ten minutes, far above the half second of a typical kernel); 0 means no limit.

    Example:
        >>> from jaxkeops.runtime.toolchain import compile_timeout
        >>> compile_timeout() is None or compile_timeout() > 0
        True
    """
    text = os.environ.get("JAXKEOPS_COMPILE_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_COMPILE_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"JAXKEOPS_COMPILE_TIMEOUT must be a number of seconds (0 for no limit), "
                         f"got {text!r}")
    return seconds or None


def run_tool(command: list[str], timeout: float | None,
             input_text: str | None = None) -> subprocess.CompletedProcess:
    """Runs a compiler and captures its output, stopping it (and every process it started,
    such as cc1plus) after `timeout` seconds with subprocess.TimeoutExpired."""
    # A session of its own, so that a timeout ends the whole process group: killing only the
    # driver would leave its children running and holding our pipes open. Ctrl-C no longer
    # reaches the group either, so an interrupted compile is ended here too.
    with subprocess.Popen(command, stdin=subprocess.PIPE if input_text is not None else
                          subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            _end_group(process)
            try:
                stdout, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a grandchild left the group with our pipes
                stdout, stderr = "", ""
            raise subprocess.TimeoutExpired(command, expired.timeout, stdout, stderr) from None
        except BaseException:
            _end_group(process)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _end_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# `--version` and flag probes answer at once; a compiler that hangs on them is broken.
PROBE_TIMEOUT = 60.0


def probe_timeout() -> float:
    return min(PROBE_TIMEOUT, compile_timeout() or PROBE_TIMEOUT)


@dataclass(frozen=True)
class Toolchain:
    compiler: str
    version: str
    flags: tuple[str, ...]
    cpu_features: str

    @property
    def is_gcc(self) -> bool:
        return _is_gcc(self.version)

    def fingerprint(self) -> str:
        return "|".join([self.compiler, self.version, " ".join(self.flags), self.cpu_features])


def _is_gcc(version: str) -> bool:
    return "g++" in version or "GCC" in version


def _compiler_candidates() -> tuple[list[str], str | None]:
    """The compilers to try, and the environment variable that named them (if any)."""
    for variable in ("JAXKEOPS_CXX", "CXX"):
        if os.environ.get(variable):
            return [os.environ[variable]], variable
    return ["g++", "c++", "clang++"], None


def _arch_flags(compiler: str) -> tuple[str, ...]:
    if platform.machine().lower() in ("x86_64", "amd64", "i686"):
        return ("-march=native",)
    return ("-mcpu=native",) if _accepts(compiler, "-mcpu=native") else ()


def _accepts(compiler: str, flag: str) -> bool:
    try:
        probe = run_tool([compiler, flag, "-x", "c++", "-E", "-"], probe_timeout(), "")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _probe_version(path: str) -> tuple[str | None, str | None]:
    """(first line of `path --version`, None), or (None, why the compiler does not work)."""
    try:
        out = run_tool([path, "--version"], probe_timeout())
    except subprocess.TimeoutExpired as expired:
        return None, f"{path} exists but `{path} --version` did not answer in {expired.timeout:g} s"
    except OSError as error:
        return None, f"{path} exists but cannot be run ({error.strerror or error})"
    if out.returncode != 0:
        lines = [line for line in (out.stderr or out.stdout or "").splitlines() if line.strip()]
        said = ("; it printed:\n" + "\n".join("    " + line[:200] for line in lines[:4])
                if lines else " and printed nothing")
        return None, f"{path} exists but `{path} --version` failed with exit code " \
                     f"{out.returncode}{said}"
    return (out.stdout.splitlines()[0] if out.stdout.strip() else "unknown"), None


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
    candidates, variable = _compiler_candidates()
    missing, broken = [], []
    for name in candidates:
        path = shutil.which(name)
        if path is None:
            missing.append(name)
            continue
        version, failure = _probe_version(path)
        if failure is not None:
            broken.append(failure)
            continue
        flags = BASE_FLAGS[:1] + (optimization_flag(),) + BASE_FLAGS[1:] + _arch_flags(path)
        if _is_gcc(version):
            flags += GCC_TUNING_FLAGS
        return Toolchain(path, version, flags, cpu_features())
    origin = f" (from ${variable})" if variable else ""
    advice = ("Install one, e.g. `apt-get install g++` on Debian/Ubuntu, or point JAXKEOPS_CXX "
              "at a working compiler.")
    if not broken:
        raise CompilerNotFoundError(
            "jaxkeops needs a C++17 compiler to build its CPU kernels and found none (tried: "
            f"{', '.join(missing)}{origin}). {advice}")
    details = broken + ([f"not found: {', '.join(missing)}"] if missing else [])
    raise CompilerNotFoundError(
        f"jaxkeops needs a C++17 compiler to build its CPU kernels and none works{origin}. "
        f"{advice}\n" + "\n".join("  " + detail for detail in details))
