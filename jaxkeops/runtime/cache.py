"""The on-disk kernel cache: where generated sources and compiled kernels live.

Every file is written to a temporary name in the same folder and moved into place with
`os.replace`, so that concurrent processes building the same kernel all succeed and none ever
sees a half-written file.

Nothing on disk is trusted: each compiled file (CPU kernel, precompiled header, cubin or PTX)
has a sidecar `<file>.digest` recording the key it was built for, its size and its SHA-256,
written before the file is moved into place. A file is used only when its sidecar matches it;
anything else (truncated, overwritten, another key's binary copied in) is reported once with a
`KernelCacheWarning` naming the file, deleted and rebuilt, and never loaded.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import struct
import tempfile
import threading
import warnings
from pathlib import Path

from .._version import __version__
from ..errors import KernelCacheWarning

DIGEST_SUFFIX = ".digest"
_DIGEST_HEADER = "jaxkeops-digest 1"
_HASH = "sha256"  # faster than blake2b here (SHA extensions): 42 us against 58 us per kernel


_lock = threading.Lock()
_private_caches: dict[Path, Path] = {}  # unusable configured folder -> this process's fallback
_reported: set[Path] = set()
# (path, inode, size, mtime) of files this process verified or wrote: each is hashed once.
_verified: set[tuple[str, int, int, int]] = set()

# Problems that are no damage: the entry does not exist, or predates digests.
MISSING_FILE = "it does not exist"
MISSING_DIGEST = "it has no digest record"


def _configured_dir() -> Path:
    root = os.environ.get("JAXKEOPS_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "jaxkeops" / __version__


def _unusable(path: Path) -> str | None:
    """Why kernels cannot be written to `path`, or None when they can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot be created ({error.strerror or error})"
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


def cache_dir() -> Path:
    """The cache folder: $JAXKEOPS_CACHE_DIR, else ~/.cache/jaxkeops/<version>.

    Kernels compiled once are loaded from here by later processes: set JAXKEOPS_CACHE_DIR to
    share one folder between runs (CI caches, containers) or to keep it off a small home.
    When that folder cannot be written (read-only, or not creatable) the process warns once and
    uses a private temporary folder instead, deleted at exit.

    Example:
        >>> from jaxkeops import cache_dir
        >>> cache_dir().is_dir()
        True
    """
    path = _configured_dir()
    with _lock:
        private = _private_caches.get(path)
    if private is not None:
        return private
    problem = _unusable(path)
    if problem is None:
        return path
    with _lock:
        if path not in _private_caches:
            private = Path(tempfile.mkdtemp(prefix="jaxkeops-cache-"))
            atexit.register(shutil.rmtree, private, True)
            _private_caches[path] = private
            warnings.warn(
                f"jaxkeops: the kernel cache folder {path} {problem}; this process compiles "
                f"its kernels into a private temporary folder {private} instead, deleted at exit. "
                "Point JAXKEOPS_CACHE_DIR at a writable folder to keep compiled kernels between "
                "runs.", KernelCacheWarning, stacklevel=2)
        return _private_caches[path]


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Digests: binding each cached binary to its key, size and content.

def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, _HASH).hexdigest()


def _digest_record(key: str, name: str, size: int, content_hash: str) -> bytes:
    return (f"{_DIGEST_HEADER}\nkey {key}\nfile {name}\nsize {size}\n"
            f"{_HASH} {content_hash}\n").encode()


def _identity(path: Path, stat: os.stat_result) -> tuple[str, int, int, int]:
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _remember(final: Path, written: os.stat_result) -> None:
    with _lock:
        _verified.add(_identity(final, written))


def install(partial: Path, final: Path, key: str) -> None:
    """Moves the finished file `partial` to `final`, recording its digest first.

    The sidecar goes in before the binary, so a reader that sees the binary sees its sidecar.
    """
    written = partial.stat()  # os.replace keeps the inode, size and mtime
    record = _digest_record(key, final.name, written.st_size, _hash_file(partial))
    atomic_write(digest_path(final), record)
    os.replace(partial, final)
    _remember(final, written)


def install_bytes(final: Path, data: bytes, key: str) -> None:
    """Writes `data` to `final` atomically with its digest (see `install`)."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=final.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        install(Path(tmp), final, key)
    finally:
        Path(tmp).unlink(missing_ok=True)


def verify_entry(path: Path, key: str) -> str | None:
    """Why the cached `path` must not be used for `key`, or None when its digest matches.

    MISSING_DIGEST means an entry from before digests existed, or one whose sidecar was
    deleted: callers rebuild it without a warning. Checking costs a stat, a small read and one
    SHA-256 pass over the file (0.1 ms for a typical 23 KB kernel on the development machine,
    13 ms for the 16 MB precompiled header), once per process: a file this process verified or
    wrote and that has not changed since (same inode, size and mtime) is not hashed again.
    """
    try:
        stat = path.stat()
    except OSError:
        return MISSING_FILE
    identity = _identity(path, stat)
    with _lock:
        if identity in _verified:
            return None
    try:
        record = digest_path(path).read_text()
    except FileNotFoundError:
        return MISSING_DIGEST
    except (OSError, UnicodeDecodeError) as error:
        return f"its digest record {digest_path(path).name} cannot be read ({error})"
    fields = dict(line.split(" ", 1) for line in record.splitlines()[1:] if " " in line)
    if not record.startswith(_DIGEST_HEADER + "\n") or not {"key", "size", _HASH} <= set(fields):
        return f"its digest record {digest_path(path).name} is malformed"
    if fields["key"] != key or fields.get("file") != path.name:
        return (f"it was recorded for another cache entry ({fields.get('file')}, key "
                f"{fields['key'][:16]}...), not for this one")
    if fields["size"] != str(stat.st_size):
        return f"its size is {stat.st_size} bytes where {fields['size']} were written"
    try:
        content_hash = _hash_file(path)
    except OSError as error:
        return f"it cannot be read ({error})"
    if content_hash != fields[_HASH]:
        return "its content does not match the digest recorded when it was written"
    with _lock:
        _verified.add(identity)
    return None


def discard_entry(path: Path, problem: str) -> None:
    """Deletes a cache entry that must not be used, warning once per file unless it merely has
    no digest record."""
    if problem not in (MISSING_FILE, MISSING_DIGEST):
        with _lock:
            first = path not in _reported
            _reported.add(path)
        if first:
            warnings.warn(f"jaxkeops: ignoring the damaged cached file {path}: {problem}. "
                          "It is deleted and rebuilt.", KernelCacheWarning, stacklevel=3)
    for victim in (path, digest_path(path)):
        try:
            victim.unlink(missing_ok=True)
        except OSError:  # someone else's problem to clean; we rebuild under os.replace anyway
            pass


# ---------------------------------------------------------------------------------------------
# Is a compiler's output what it claims to be? (A compiler can exit 0 and write junk.)

ET_EXEC, ET_DYN = 2, 3


def elf_problem(path: Path, elf_type: int) -> str | None:
    """Why `path` is not a complete ELF file of type `elf_type` (ET_DYN for a shared library,
    ET_EXEC for a cubin), or None. Checks the header and that the program and section header
    tables lie inside the file, which catches truncation too."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(64)
    except OSError as error:
        return f"it cannot be read ({error})"
    if header[:4] != b"\x7fELF":
        return f"it is not an ELF file ({size} bytes starting with {header[:8]!r})"
    if len(header) < 6 or header[4] not in (1, 2) or header[5] not in (1, 2):
        return f"its ELF header is corrupt or cut short ({size} bytes)"
    wide, order = header[4] == 2, "<" if header[5] == 1 else ">"
    layout = "HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"
    if len(header) < 16 + struct.calcsize(order + layout):
        return f"it is too short for an ELF header ({size} bytes)"
    (kind, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
     _) = struct.unpack_from(order + layout, header, 16)
    if kind != elf_type:
        return f"its ELF type is {kind}, expected {elf_type}"
    if phoff + phentsize * phnum > size or shoff + shentsize * shnum > size:
        return f"it is truncated ({size} bytes, its headers point further)"
    return None


def header_problem(path: Path, magic: bytes, what: str, within: int | None = None) -> str | None:
    """Why `path` is not `what`: it must start with `magic` (a precompiled header), or hold it
    in its first `within` bytes (the `.version` line of PTX). None when it looks right."""
    try:
        with open(path, "rb") as f:
            head = f.read(max(within or 0, len(magic)))
    except OSError as error:
        return f"it cannot be read ({error})"
    found = magic in head if within else head.startswith(magic)
    if not found:
        return f"it is not {what} ({len(head)}+ bytes starting with {head[:8]!r})"
    return None


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
    with _lock:
        _verified.clear()
        _reported.clear()
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
