"""The user-facing API: LazyTensor, Vi/Vj/Pm and Genred."""

from . import complex as _complex  # noqa: F401
