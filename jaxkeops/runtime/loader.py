"""The load stage: a compiled kernel -> an id the XLA FFI handler can call.

Kernel ids derive from the kernel's content hash, so the same kernel has the same id in every
process. A loaded kernel is never unloaded, and a file is loaded only when it matches the digest
recorded when it was compiled: a damaged library would crash the process inside dlopen or
compute garbage, where an error can be raised instead.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .. import _ext
from ..errors import JaxKeOpsError
from .cache import verify_entry

_lock = threading.Lock()
_loaded: dict[int, Path] = {}


def kernel_id(key: str) -> int:
    """A signed 64-bit id from a hex content hash (the FFI attribute is an int64)."""
    value = int(key[:16], 16)
    return value - (1 << 64) if value >= (1 << 63) else value


def load_kernel(key: str, binary: Path) -> int:
    """Registers `binary` with the FFI handler under the id of `key`, once per process, after
    checking it against its digest (`build_cpu_kernel` has just checked or written it, so this
    costs no second hash unless the file changed in between)."""
    kid = kernel_id(key)
    with _lock:
        if kid not in _loaded:
            problem = verify_entry(binary, key)
            if problem is not None:
                raise JaxKeOpsError(f"jaxkeops will not load the kernel library {binary}: "
                                    f"{problem}. It changed on disk after it was built; call "
                                    "again to rebuild it.")
            _ext.register_kernel(kid & ((1 << 64) - 1), str(binary))
            _loaded[kid] = binary
    return kid


def loaded_kernels() -> dict[int, Path]:
    with _lock:
        return dict(_loaded)
