"""`python -m jaxkeops doctor`: what jaxkeops will build with, and where it caches kernels."""

from __future__ import annotations

import jax

from . import _ext
from ._version import __version__
from .errors import CompilerNotFoundError
from .runtime import cache_dir, cpu_features, find_toolchain, include_dir

_INTERESTING = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "neon", "sve")


def run_doctor() -> int:
    print(f"jaxkeops {__version__}, jax {jax.__version__}, devices: {jax.devices()}")
    ok = True
    try:
        tc = find_toolchain()
        print(f"C++ compiler: {tc.compiler} ({tc.version})")
        print(f"flags: {' '.join(tc.flags)}")
    except CompilerNotFoundError as e:
        print(f"C++ compiler: NOT FOUND. {e}")
        ok = False
    folder = cache_dir()
    kernels = list(folder.glob("*.so"))
    print(f"kernel cache: {folder} ({len(kernels)} compiled kernels; "
          "set JAXKEOPS_CACHE_DIR to move it, jaxkeops.clear_cache() to empty it)")
    print(f"kernel headers: {include_dir()}")
    print(f"native extension: {_ext.__file__} (kernel ABI {_ext.abi_version()})")
    features = set(cpu_features().split())
    shown = [f for f in _INTERESTING if f in features]
    listed = ", ".join(shown) or "none of " + ", ".join(_INTERESTING)
    print(f"CPU features used by -march=native: {listed}")
    return 0 if ok else 1
