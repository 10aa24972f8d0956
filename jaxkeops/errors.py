"""Exceptions raised by jaxkeops."""

from __future__ import annotations


class JaxKeOpsError(Exception):
    """Base class of jaxkeops errors that are not plain ValueError/TypeError input errors."""


class CompilerNotFoundError(JaxKeOpsError):
    """No C++ compiler (or CUDA compiler) could be found to build a kernel."""


class KernelCompileError(JaxKeOpsError):
    """The compiler rejected a generated kernel: the message carries its log and the source."""

    def __init__(self, message: str, log: str, source_path: str):
        super().__init__(f"{message}\n  generated source: {source_path}\n  compiler log:\n{log}")
        self.log = log
        self.source_path = source_path
