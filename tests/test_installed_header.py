"""The precompiled kernel header that `pip install` builds (cuda_src/precompile_header.py): its
folder must carry the tag the runtime computes, or the first kernel of a new machine would wait
for a second header build."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from jaxkeops.runtime import build
from jaxkeops.runtime.cache import verify_entry
from jaxkeops.runtime.toolchain import DEFAULT_OPT_LEVEL, find_toolchain

SCRIPT = Path(__file__).resolve().parent.parent / "cuda_src" / "precompile_header.py"
GCH = build.PCH_HEADER + ".gch"

pytestmark = pytest.mark.cpu_only


def _gcc():
    toolchain = find_toolchain()
    if not build.uses_precompiled_header(toolchain):
        pytest.skip(f"{toolchain.compiler} is not GCC: no precompiled header")
    return toolchain


def kernel_tag_folder() -> str:
    return f"pch-{build.precompiled_header_tag(find_toolchain())}"


@pytest.fixture(scope="module")
def script_output(tmp_path_factory) -> tuple[Path, str]:
    """The install-time script run here, with this process's environment (the suite's -Og)."""
    out = tmp_path_factory.mktemp("installed")
    said = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True,
                          text=True, check=True, timeout=600)
    return out, said.stdout


def test_install_script_writes_the_tag_the_runtime_looks_for(script_output):
    toolchain = _gcc()
    out, said = script_output
    tag = build.precompiled_header_tag(toolchain)
    assert f"built pch-{tag}" in said, said
    gch = out / f"pch-{tag}" / GCH
    assert verify_entry(gch, tag) is None
    assert gch.read_bytes()[:4] == b"gpch"


def test_first_kernel_uses_the_installed_header_and_builds_none(script_output, tmp_path,
                                                              monkeypatch):
    _gcc()
    out, _ = script_output
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(cache))
    monkeypatch.setattr(build, "installed_header_root", lambda: out)
    source = ('#include "jaxkeops/cpu_kernel.h"\n'
              f'extern "C" int jk_probe_{tmp_path.name.replace("-", "_")}(void) {{ return 7; }}\n')
    kernel = build.build_cpu_kernel(source, "installed-header-probe")
    assert kernel.parent == cache and kernel.is_file()
    assert not list(cache.glob("pch-*")), "the kernel built a header of its own"
    assert build.precompiled_header_dir(find_toolchain()) == out / kernel_tag_folder()


def test_installed_header_that_fails_its_digest_is_not_used(script_output, tmp_path,
                                                           monkeypatch):
    toolchain = _gcc()
    out, _ = script_output
    damaged = tmp_path / "installed"
    folder = damaged / kernel_tag_folder()
    (folder / GCH).parent.mkdir(parents=True)
    for name in (GCH, GCH + ".digest"):
        (folder / name).write_bytes((out / kernel_tag_folder() / name).read_bytes())
    with open(folder / GCH, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 8)
    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "installed_header_root", lambda: damaged)
    monkeypatch.setattr(build, "_pch_unusable", set())
    monkeypatch.setattr(build, "build_precompiled_header", lambda *args: False)
    with pytest.warns(Warning, match="damaged cached file"):
        assert build.precompiled_header_dir(toolchain) is None
    assert not (folder / GCH).exists()


def test_pip_install_built_the_header_for_default_flags():
    """What `pip install` left next to the extension serves a kernel built with the default
    flags (this suite builds at -Og, so its own kernels use a header in the kernel cache)."""
    toolchain = _gcc()
    installed = build.installed_header_root()
    assert installed is not None
    default_flag = f"-O{DEFAULT_OPT_LEVEL}"
    flags = tuple(default_flag if f.startswith("-O") else f for f in toolchain.flags)
    tag = build.precompiled_header_tag(dataclasses.replace(toolchain, flags=flags))
    gch = installed / f"pch-{tag}" / GCH
    assert gch.is_file(), (f"no precompiled header for {' '.join(flags)} in {installed}: "
                           "reinstall (pip install -e .) after editing the kernel headers")
    assert verify_entry(gch, tag) is None
