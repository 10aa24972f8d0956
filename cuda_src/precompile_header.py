"""Builds the precompiled CPU kernel header at install time: `python precompile_header.py OUT`.

CMake runs this during `pip install`, so that the first kernel compiled on a new machine does
not also wait ~0.9 s for the header (jaxkeops.runtime.build.precompiled_header_dir finds it
next to the native extension). It writes OUT/pch-<tag>/jaxkeops/cpu_kernel.h.gch with its digest
record, for the compiler and flags a kernel compile in the installing environment would use.

The build environment has no JAX, so jaxkeops/__init__.py cannot run: the compile stage, which
needs only the standard library, is imported under placeholder parent packages. Any failure
(no GCC, a compiler error) only prints why and exits 0: kernels then build the header on first
use, as before.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


def _import_compile_stage(package_dir: Path):
    for name, path in (("jaxkeops", package_dir), ("jaxkeops.runtime", package_dir / "runtime")):
        placeholder = types.ModuleType(name)
        placeholder.__path__ = [str(path)]
        sys.modules[name] = placeholder
    from jaxkeops.runtime import build, toolchain

    return build, toolchain


def main(out: Path) -> str:
    build, toolchain = _import_compile_stage(Path(__file__).resolve().parent.parent / "jaxkeops")
    compiler = toolchain.find_toolchain()
    if not build.uses_precompiled_header(compiler):
        return f"skipped: {compiler.compiler} is not GCC ({compiler.version})"
    tag = build.precompiled_header_tag(compiler)
    if not build.build_precompiled_header(compiler, out / f"pch-{tag}", tag):
        return f"skipped: {compiler.compiler} could not precompile the header"
    return f"built pch-{tag} for {compiler.compiler} {' '.join(compiler.flags)}"


if __name__ == "__main__":
    try:
        said = main(Path(sys.argv[1]))
    except Exception as error:  # noqa: BLE001 - the install must go on; kernels build it later
        said = f"skipped: {type(error).__name__}: {error}"
    print(f"jaxkeops: precompiled kernel header {said}")
