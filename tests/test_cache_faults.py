"""Nothing on disk or in the toolchain makes jaxkeops crash or lie (issue 12): damaged kernel
cache entries, compilers that write junk or hang, an unwritable cache folder, a broken compiler.

Every damaged-cache case corrupts one file of a cache that an earlier process filled, in one of
three ways (truncated to half, 16 bytes flipped in the middle, replaced by another kernel's
binary), then runs the NEXT process on it: that process must report the file, rebuild it,
compute the right numbers (against numpy in float64) and exit normally, never loading the
damaged file (a damaged shared library dies in dlopen with SIGBUS, SIGILL or SIGSEGV, or runs
and returns another kernel's numbers). Kernels: one Gaussian sum in float32 at two scales.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from jaxkeops.codegen.cpu import render_cpu
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.errors import CompilerNotFoundError, KernelCacheWarning, KernelCompileError
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.runtime import build, cuda_build, toolchain
from jaxkeops.runtime.cache import (
    cache_dir,
    digest_path,
    install,
    verify_entry,
)

SCALES = (0.5, 0.25)  # kernel A, and kernel B whose binary is swapped in for A's

GAUSS_SCRIPT = """
    import json, sys
    import numpy as np
    from jaxkeops import Vi, Vj
    from jaxkeops.runtime import BuildStats, loaded_kernels

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.normal(size=(70, 3)).astype(np.float32)
    b = rng.normal(size=(70, 2)).astype(np.float32)
    d2 = ((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)
    runs = []
    for scale in map(float, sys.argv[1:]):
        before = set(loaded_kernels().values())
        out = np.asarray((-((Vi(x) - Vj(y)) ** 2).sum(-1) * scale).exp() @ b)
        want = np.exp(-d2 * scale) @ b
        error = float(np.max(np.abs(out - want)) / np.max(np.abs(want)))
        new = [str(p) for p in loaded_kernels().values() if p not in before]
        runs.append({"error": error, "kernel": new[0] if new else None})
    print(json.dumps({"runs": runs, "compiled": BuildStats.compiled}))
"""

CUDA_SCRIPT = """
    import hashlib, json, sys
    from jaxkeops.codegen.cuda import render_cuda
    from jaxkeops.codegen.spec import KernelSpec
    from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, Var, make
    from jaxkeops.runtime.cuda_build import CudaBuildStats, build_cuda_kernel, cuda_kernel_key

    x, y, b, s = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 2, CAT_J), Var(3, 1, CAT_P)
    sq = make("SqDist", x, y)
    formulas = {"sum": ("Sum", make("Mult", make("Exp", make("Minus", make("Mult", sq, s))), b)),
                "min": ("Min", make("Mult", sq, b))}
    images = {}
    for name in sys.argv[1:]:
        reduction, formula = formulas[name]
        spec = KernelSpec((formula,), reduction, 1, "float32", args=(x, y, b, s))
        source = render_cuda(spec)
        path, target = build_cuda_kernel(source, cuda_kernel_key(source), 80)
        images[name] = {"path": str(path),
                        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    print(json.dumps({"images": images, "compiled": CudaBuildStats.compiled}))
"""


def _run(script: str, cache: Path, *args, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, JAXKEOPS_CACHE_DIR=str(cache), **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, env=environment, timeout=600)


def _report(result: subprocess.CompletedProcess) -> dict:
    if result.returncode < 0:
        pytest.fail(f"the process died of {signal.Signals(-result.returncode).name}:\n"
                    f"{result.stderr[-3000:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _gauss(cache: Path, *scales, **env) -> tuple[dict, str]:
    result = _run(GAUSS_SCRIPT, cache, *scales, **env)
    report = _report(result)
    for run in report["runs"]:
        assert run["error"] < 1e-4, report  # float32 against numpy float64
    return report, result.stderr


# ---------------------------------------------------------------------------------------------
# The three faults, applied to a file; `other` is another kernel's binary.

def truncate(path: Path, other: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip(path: Path, other: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(byte ^ 0xFF for byte in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def swap(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


def swap_with_digest(path: Path, other: Path) -> None:
    """The other kernel's binary AND its digest record: the record names the other key."""
    shutil.copyfile(other, path)
    shutil.copyfile(digest_path(other), digest_path(path))


FAULTS = {"truncate": truncate, "flip": flip, "swap": swap}


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    """A cache holding kernels A and B (and the precompiled header when the compiler is GCC),
    filled by one process: {"root", "a", "b", "pch"}."""
    root = tmp_path_factory.mktemp("filled")
    report, _ = _gauss(root, *SCALES)
    a, b = (Path(run["kernel"]) for run in report["runs"])
    assert a.parent == root and b.parent == root and a != b
    pch = sorted(root.glob("pch-*/jaxkeops/cpu_kernel.h.gch"))
    return {"root": root, "a": a, "b": b, "pch": pch[0] if pch else None}


@pytest.fixture
def cache(filled_cache, tmp_path):
    """A private copy of the filled cache, and the paths of its files."""
    root = tmp_path / "cache"
    shutil.copytree(filled_cache["root"], root)
    files = {name: root / path.relative_to(filled_cache["root"])
             for name, path in filled_cache.items() if name != "root" and path is not None}
    return root, files


def _assert_reported_once(stderr: str, path: Path) -> None:
    lines = [line for line in stderr.splitlines() if "KernelCacheWarning" in line]
    assert len(lines) == 1 and str(path) in lines[0], stderr[-3000:]


@pytest.mark.parametrize("fault", ["truncate", "flip", "swap", "swap_with_digest"])
def test_damaged_cpu_kernel_is_rebuilt_by_the_next_process(cache, fault):
    root, files = cache
    kernel = files["a"]
    {**FAULTS, "swap_with_digest": swap_with_digest}[fault](kernel, files["b"])
    report, stderr = _gauss(root, SCALES[0])
    assert report["compiled"] == 1, "the damaged kernel was not rebuilt"
    assert report["runs"][0]["kernel"] == str(kernel)
    _assert_reported_once(stderr, kernel)
    assert verify_entry(kernel, kernel.stem) is None
    assert verify_entry(files["b"], files["b"].stem) is None, "the other kernel was touched"
    # healed on disk: a third process loads it without a word
    report, stderr = _gauss(root, SCALES[0])
    assert report["compiled"] == 0 and "KernelCacheWarning" not in stderr


def _pch(files) -> tuple[Path, str]:
    if "pch" not in files:
        pytest.skip("the C++ compiler is not GCC: no precompiled header")
    gch = files["pch"]
    return gch, gch.parent.parent.name.removeprefix("pch-")


def _forget_kernel(kernel: Path) -> None:
    """So that the next process compiles it, through the precompiled header."""
    kernel.unlink()
    digest_path(kernel).unlink()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_precompiled_header_is_rebuilt_by_the_next_process(cache, fault):
    root, files = cache
    gch, tag = _pch(files)
    FAULTS[fault](gch, files["b"])
    _forget_kernel(files["a"])
    report, stderr = _gauss(root, SCALES[0])
    assert report["compiled"] == 1
    _assert_reported_once(stderr, gch)
    assert verify_entry(gch, tag) is None and gch.read_bytes()[:4] == b"gpch"


def test_precompiled_header_that_breaks_compiles_is_dropped(cache, tmp_path):
    """A header whose digest matches but that GCC cannot use (recorded damaged, or from a
    compiler that changed under the same version string): the kernel is compiled without it,
    and the header is deleted so that the next compile rebuilds it."""
    root, files = cache
    gch, tag = _pch(files)
    damaged = tmp_path / "damaged.gch"
    shutil.copyfile(gch, damaged)
    truncate(damaged, files["b"])
    install(damaged, gch, tag)  # a digest that matches the damaged header
    _forget_kernel(files["a"])
    report, stderr = _gauss(root, SCALES[0])
    assert report["compiled"] == 1
    _assert_reported_once(stderr, gch)
    assert "failed with it" in stderr
    _forget_kernel(files["a"])
    report, stderr = _gauss(root, SCALES[0])  # rebuilds the header, then uses it
    assert report["compiled"] == 1 and "KernelCacheWarning" not in stderr
    assert verify_entry(gch, tag) is None


# ---------------------------------------------------------------------------------------------
# CUDA images: no GPU here, so the next process must rebuild the identical image.

@pytest.fixture(scope="module")
def filled_cuda_cache(tmp_path_factory):
    try:
        cuda_build.find_cuda_compiler()
    except CompilerNotFoundError:
        pytest.skip("no CUDA compiler (NVRTC or nvcc)")
    root = tmp_path_factory.mktemp("filled_cuda")
    report = _report(_run(CUDA_SCRIPT, root, "sum", "min"))
    return root, report["images"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_cuda_image_is_rebuilt_by_the_next_process(filled_cuda_cache, tmp_path, fault):
    filled, images = filled_cuda_cache
    root = tmp_path / "cache"
    shutil.copytree(filled, root)
    image = root / Path(images["sum"]["path"]).name
    FAULTS[fault](image, root / Path(images["min"]["path"]).name)
    result = _run(CUDA_SCRIPT, root, "sum")
    report = _report(result)
    assert report["compiled"] == 1
    assert report["images"]["sum"] == {"path": str(image), "sha256": images["sum"]["sha256"]}
    _assert_reported_once(result.stderr, image)
    assert verify_entry(image, image.name.split(".")[0]) is None


# ---------------------------------------------------------------------------------------------
# Compilers that exit 0 with junk, that hang, or that do not work at all.

def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


# Sets $out to the file after -o, and logs each call to calls.log beside the script.
_ARGS = """
    echo "$@" >> "$(dirname "$0")/calls.log"
    out=""; prev=""
    for arg in "$@"; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; done
    [ "$1" = "--version" ] && { echo "fake-c++ 1.0"; exit 0; }
"""


def _calls(compiler: Path) -> list[str]:
    log = compiler.parent / "calls.log"
    return [line for line in log.read_text().splitlines() if "-o" in line.split()]


def _lone_source() -> str:
    x, y = Var(0, 3, CAT_I), Var(1, 3, CAT_J)
    spec = KernelSpec(formulas=(make("Exp", make("Minus", make("SqDist", x, y))),),
                      reduction="Sum", axis=1, dtype="float32")
    return render_cpu(spec)


def _fake_toolchain(compiler: Path, version: str = "fake-c++ 1.0") -> toolchain.Toolchain:
    real = toolchain.find_toolchain()
    return toolchain.Toolchain(str(compiler), version, real.flags, real.cpu_features)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(root))
    return root


def test_junk_writing_compiler_is_retried_once_then_reported(private_cache, tmp_path):
    junk = _script(tmp_path, "junk-c++", _ARGS + 'echo "not a library" > "$out"\n')
    key = "0123abcd" * 8
    start = time.monotonic()
    with pytest.raises(KernelCompileError) as info:
        build.build_cpu_kernel(_lone_source(), key, _fake_toolchain(junk))
    message = str(info.value)
    assert "exited with code 0 but wrote no usable shared library" in message
    assert "not an ELF file" in message and "twice in a row" in message and str(junk) in message
    assert info.value.source_path == str(private_cache / f"{key}.cpp") and \
        Path(info.value.source_path).read_text() == _lone_source()
    assert len(_calls(junk)) == 2
    assert not list(private_cache.glob("*.so*")), "junk was left in the cache"
    assert time.monotonic() - start < 60


def test_junk_writing_compiler_that_recovers_heals_through_the_api(tmp_path):
    """A compiler (set by JAXKEOPS_CXX) that writes junk once, then works: the kernel is
    rebuilt once, computes the right numbers and is cached."""
    real = toolchain.find_toolchain().compiler
    flaky = _script(tmp_path, "flaky-c++", _ARGS + f"""
        if [ ! -e "$(dirname "$0")/spoiled" ]; then
            touch "$(dirname "$0")/spoiled"; echo junk > "$out"; exit 0
        fi
        exec {real} "$@"
    """)
    root = tmp_path / "cache"
    report, stderr = _gauss(root, SCALES[0], JAXKEOPS_CXX=str(flaky))
    assert report["compiled"] == 1 and len(_calls(flaky)) == 2
    kernel = Path(report["runs"][0]["kernel"])
    assert kernel.parent == root and verify_entry(kernel, kernel.stem) is None


def test_junk_writing_compiler_through_the_api_raises_with_the_log(tmp_path):
    junk = _script(tmp_path, "junk-c++", _ARGS + 'echo "warning: all is fine" >&2\n'
                   'printf "\\177ELF" > "$out"\n')
    root = tmp_path / "cache"
    result = _run(GAUSS_SCRIPT, root, SCALES[0], JAXKEOPS_CXX=str(junk))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "KernelCompileError" in result.stderr and "all is fine" in result.stderr
    assert "no usable shared library" in result.stderr
    assert not list(root.glob("*.so*"))


_HANG = _ARGS + """
    if [ -n "$out" ]; then
        sleep 60 &
        echo $! > "$(dirname "$0")/sleeper.pid"
        wait
    fi
"""


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("stage", ["kernel", "precompiled header", "nvcc"])
def test_hung_compiler_is_stopped_after_the_timeout(private_cache, tmp_path, monkeypatch, stage):
    monkeypatch.setenv("JAXKEOPS_COMPILE_TIMEOUT", "1.5")
    hung = _script(tmp_path, "hung-compiler", _HANG)
    source = _lone_source()
    start = time.monotonic()
    with pytest.raises(KernelCompileError) as info:
        if stage == "nvcc":
            compiler = cuda_build.CudaCompiler("nvcc", str(hung), "fake")
            cuda_build.build_cuda_kernel(source, "feed" * 16, 80, compiler)
        else:
            version = "g++ (fake) 1.0" if stage == "precompiled header" else "fake-c++ 1.0"
            build.build_cpu_kernel(source, "beef" * 16, _fake_toolchain(hung, version))
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert f"{hung} did not finish" in message and "within 1.5 s" in message
    assert "JAXKEOPS_COMPILE_TIMEOUT" in message and "raise it" in message
    if stage == "precompiled header":
        assert "precompiling the kernel header" in message
        assert info.value.source_path.endswith("cpu_kernel.h")
    else:
        assert Path(info.value.source_path).parent == private_cache
    assert elapsed < 30, f"the timeout took {elapsed:.1f} s"
    pid = int((tmp_path / "sleeper.pid").read_text())
    assert _gone(pid), "the compiler's child process survived the timeout"


@pytest.mark.parametrize("value", ["soon", "-5", "nan", "inf"])
def test_bad_compile_timeout_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("JAXKEOPS_COMPILE_TIMEOUT", value)
    with pytest.raises(ValueError, match="JAXKEOPS_COMPILE_TIMEOUT must be a number"):
        toolchain.compile_timeout()


@pytest.mark.parametrize("value, seconds", [("", 600.0), ("30", 30.0), ("0", None)])
def test_compile_timeout_default_and_no_limit(monkeypatch, value, seconds):
    monkeypatch.setenv("JAXKEOPS_COMPILE_TIMEOUT", value)
    assert toolchain.compile_timeout() == seconds


# ---------------------------------------------------------------------------------------------
# An unwritable cache folder: a private temporary cache, with one warning.

def _assert_falls_back(configured: Path) -> None:
    report, stderr = _gauss(configured, SCALES[0])
    lines = [line for line in stderr.splitlines() if "KernelCacheWarning" in line]
    assert len(lines) == 1, stderr[-3000:]
    assert "JAXKEOPS_CACHE_DIR" in lines[0] and str(configured) in lines[0]
    private = Path(lines[0].split("temporary folder ")[1].split(" ")[0])
    assert Path(report["runs"][0]["kernel"]).parent == private
    assert not private.exists(), "the private cache outlived its process"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_folder_falls_back_to_a_private_one(tmp_path):
    configured = tmp_path / "read-only"
    configured.mkdir()
    configured.chmod(0o555)
    try:
        _assert_falls_back(configured)
        assert list(configured.iterdir()) == []
    finally:
        configured.chmod(0o755)


def test_uncreatable_cache_folder_falls_back_to_a_private_one(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _assert_falls_back(blocker / "cache")


@pytest.mark.parametrize("reason", ["cannot be created", "is not writable"])
def test_fallback_warns_once_per_process(tmp_path, monkeypatch, reason):
    """In-process, and also as root: "is not writable" is what os.access says of a read-only
    folder or file system to any other user."""
    if reason == "cannot be created":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        configured = blocker / "cache"
    else:
        configured = tmp_path / "read-only"
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == configured
                            else real_access(path, mode))
    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(configured))
    with pytest.warns(KernelCacheWarning, match=f"{configured} {reason}.*JAXKEOPS_CACHE_DIR"):
        private = cache_dir()
    assert private.is_dir() and private != configured and os.access(private, os.W_OK)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache_dir() == private


# ---------------------------------------------------------------------------------------------
# A compiler that exists but does not work.

@pytest.fixture
def fresh_toolchain(monkeypatch):
    monkeypatch.delenv("JAXKEOPS_CXX", raising=False)
    toolchain.find_toolchain.cache_clear()
    yield
    toolchain.find_toolchain.cache_clear()


def test_cxx_bin_false_says_it_exists_but_fails(fresh_toolchain, monkeypatch):
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(CompilerNotFoundError) as info:
        toolchain.find_toolchain()
    message = str(info.value)
    assert "/bin/false exists but `/bin/false --version` failed with exit code 1" in message
    assert "$CXX" in message and "found none" not in message and "JAXKEOPS_CXX" in message


def test_broken_compiler_shows_its_exit_code_and_stderr(fresh_toolchain, monkeypatch, tmp_path):
    broken = _script(tmp_path, "licensed-c++", 'echo "license expired" >&2\nexit 3\n')
    monkeypatch.setenv("JAXKEOPS_CXX", str(broken))
    with pytest.raises(CompilerNotFoundError) as info:
        toolchain.find_toolchain()
    message = str(info.value)
    assert "none works (from $JAXKEOPS_CXX)" in message
    assert f"{broken} exists but `{broken} --version` failed with exit code 3" in message
    assert "printed:\n    license expired" in message
