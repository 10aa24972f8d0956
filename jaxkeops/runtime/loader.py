"""The load stage: a compiled kernel -> an id the XLA FFI handler can call.

Kernel ids derive from the kernel's content hash, so the same kernel has the same id in every
process. A loaded kernel is never unloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .. import _ext

_lock = threading.Lock()
_loaded: dict[int, Path] = {}


def kernel_id(key: str) -> int:
    """A signed 64-bit id from a hex content hash (the FFI attribute is an int64)."""
    value = int(key[:16], 16)
    return value - (1 << 64) if value >= (1 << 63) else value


def load_kernel(key: str, binary: Path) -> int:
    """Registers `binary` with the FFI handler under the id of `key`, once per process."""
    kid = kernel_id(key)
    with _lock:
        if kid not in _loaded:
            _ext.register_kernel(kid & ((1 << 64) - 1), str(binary))
            _loaded[kid] = binary
    return kid


def loaded_kernels() -> dict[int, Path]:
    with _lock:
        return dict(_loaded)
