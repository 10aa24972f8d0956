"""The on-disk kernel cache: where generated sources and compiled kernels live.

Every file is written to a temporary name in the same folder and moved into place with
`os.replace`, so that concurrent processes building the same kernel all succeed and none ever
sees a half-written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .._version import __version__


def cache_dir() -> Path:
    """The cache folder: $JAXKEOPS_CACHE_DIR, else ~/.cache/jaxkeops/<version>.

    Kernels compiled once are loaded from here by later processes: set JAXKEOPS_CACHE_DIR to
    share one folder between runs (CI caches, containers) or to keep it off a small home.

    Example:
        >>> from jaxkeops import cache_dir
        >>> cache_dir().is_dir()
        True
    """
    root = os.environ.get("JAXKEOPS_CACHE_DIR")
    if root:
        path = Path(root).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        path = base / "jaxkeops" / __version__
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clear_cache() -> None:
    """Delete every cached kernel on disk. Kernels already loaded in this process stay loaded.

    Example:
        >>> import os, tempfile
        >>> from jaxkeops import cache_dir, clear_cache
        >>> saved = os.environ.get("JAXKEOPS_CACHE_DIR")
        >>> os.environ["JAXKEOPS_CACHE_DIR"] = tempfile.mkdtemp()  # a scratch cache to clear
        >>> (cache_dir() / "kernel.so").write_bytes(b"")
        0
        >>> clear_cache()
        >>> list(cache_dir().iterdir())
        []
        >>> if saved is None:
        ...     del os.environ["JAXKEOPS_CACHE_DIR"]
        ... else:
        ...     os.environ["JAXKEOPS_CACHE_DIR"] = saved
    """
    path = cache_dir()
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
