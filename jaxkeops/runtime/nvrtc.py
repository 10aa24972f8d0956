"""NVRTC through ctypes: CUDA kernel source -> cubin (or PTX) in a fraction of a second.

The library comes from the `nvidia-cuda-nvrtc-cu12` / `nvidia-cuda-nvrtc` (CUDA 13) wheels
(`pip install "jaxkeops[cuda12]"`), a CUDA toolkit, or $JAXKEOPS_NVRTC. NVRTC has no C library
headers, so the few that jaxkeops/math.h includes are supplied in memory (`STUB_HEADERS`):
generated kernels use only the CUDA math functions NVRTC declares itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STUB_HEADERS = {
    "math.h": "#pragma once\n"
              "#define INFINITY __int_as_float(0x7f800000)\n"
              "#define NAN __int_as_float(0x7fffffff)\n",
    "stdint.h": "#pragma once\n"
                "typedef signed char int8_t;\ntypedef short int16_t;\ntypedef int int32_t;\n"
                "typedef long long int64_t;\ntypedef unsigned char uint8_t;\n"
                "typedef unsigned short uint16_t;\ntypedef unsigned int uint32_t;\n"
                "typedef unsigned long long uint64_t;\n",
    "string.h": "#pragma once\n",
    "stddef.h": "#pragma once\n",
    "type_traits": "#pragma once\n",
}


def _candidates() -> list[str]:
    """Where libnvrtc may be, best first: explicit, pip wheels (newest CUDA first), toolkits."""
    found = []
    explicit = os.environ.get("JAXKEOPS_NVRTC")
    if explicit:
        found.append(explicit)
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    wheel_libs = []
    for root in roots:
        wheel_libs += glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so.*"))
    wheel_libs = [p for p in wheel_libs if ".alt." not in p and "builtins" not in p]
    found += sorted(wheel_libs, key=lambda p: p.rsplit(".so.", 1)[-1], reverse=True)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            found += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")), reverse=True)
    system = ctypes.util.find_library("nvrtc")
    if system:
        found.append(system)
    return found


@dataclass(frozen=True)
class CompileResult:
    ok: bool
    log: str
    image: bytes  # cubin or PTX


class Nvrtc:
    """One loaded libnvrtc."""

    def __init__(self, path: str):
        self.path = path
        self.lib = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        self.version = (major.value, minor.value)
        self.version_string = f"{major.value}.{minor.value}"

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            msg = self.lib.nvrtcGetErrorString(code)
            raise RuntimeError(f"NVRTC {what} failed: {msg.decode() if msg else code}")

    @functools.cached_property
    def archs(self) -> tuple[int, ...]:
        """The real architectures (e.g. 80 for sm_80) this NVRTC compiles cubins for."""
        n = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "arch query")
        values = (ctypes.c_int * n.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(values), "arch query")
        return tuple(values)

    def compile(self, source: str, name: str, options: Sequence[str], ptx: bool = False,
                headers: dict[str, str] | None = None) -> CompileResult:
        headers = STUB_HEADERS if headers is None else headers
        prog = ctypes.c_void_p()
        names = (ctypes.c_char_p * len(headers))(*(k.encode() for k in headers))
        texts = (ctypes.c_char_p * len(headers))(*(v.encode() for v in headers.values()))
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                                                name.encode(), len(headers), texts, names),
                    "program creation")
        try:
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            code = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log query")
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(prog, log), "log query")
            text = log.value.decode(errors="replace").strip()
            if code != 0:
                return CompileResult(False, text, b"")
            get_size, get = ((self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX) if ptx else
                             (self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN))
            self._check(get_size(prog, ctypes.byref(size)), "image query")
            image = ctypes.create_string_buffer(size.value)
            self._check(get(prog, image), "image query")
            return CompileResult(True, text, image.raw)
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


@functools.cache
def find_nvrtc() -> Nvrtc | None:
    """The first loadable NVRTC, or None."""
    for path in _candidates():
        if not Path(path).exists() and os.sep in path:
            continue
        try:
            return Nvrtc(path)
        except (OSError, RuntimeError, AttributeError):
            continue
    return None


__all__ = ["STUB_HEADERS", "CompileResult", "Nvrtc", "find_nvrtc"]
