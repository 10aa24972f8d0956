"""Exceptions raised by jaxkeops."""

from __future__ import annotations


class JaxKeOpsError(Exception):
    """Base class of jaxkeops errors that are not plain ValueError/TypeError input errors.

    Example:
        >>> from jaxkeops import CompilerNotFoundError, JaxKeOpsError, KernelCompileError
        >>> issubclass(CompilerNotFoundError, JaxKeOpsError)
        True
        >>> issubclass(KernelCompileError, JaxKeOpsError)
        True
    """


class CompilerNotFoundError(JaxKeOpsError):
    """No C++ compiler (or CUDA compiler) could be found to build a kernel.

    `python -m jaxkeops doctor` says which compiler jaxkeops found and where its cache is.

    Example:
        >>> from jaxkeops import CompilerNotFoundError
        >>> try:
        ...     raise CompilerNotFoundError("no C++ compiler: set CXX or install g++")
        ... except CompilerNotFoundError as error:
        ...     print(error)
        no C++ compiler: set CXX or install g++
    """


class KernelCompileError(JaxKeOpsError):
    """The compiler rejected a generated kernel: the message carries its log and the source.

    Example:
        >>> from jaxkeops import KernelCompileError
        >>> error = KernelCompileError("kernel failed", log="error: ...", source_path="k.cpp")
        >>> error.source_path, error.log
        ('k.cpp', 'error: ...')
    """

    def __init__(self, message: str, log: str, source_path: str):
        super().__init__(f"{message}\n  generated source: {source_path}\n  compiler log:\n{log}")
        self.log = log
        self.source_path = source_path


class KernelCacheWarning(RuntimeWarning):
    """A cached kernel, precompiled header or CUDA image did not match its digest record (it is
    deleted and rebuilt, never loaded), or the cache folder cannot be used (a private temporary
    one is used instead). Filter it like any warning.

    Example:
        >>> import warnings
        >>> from jaxkeops import KernelCacheWarning
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("k.so: size 10, expected 20", KernelCacheWarning)
        >>> caught[0].category.__name__
        'KernelCacheWarning'
    """
