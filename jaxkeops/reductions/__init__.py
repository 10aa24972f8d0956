"""Reductions over the i or j axis: Sum, LogSumExp (and its signed variant), Min/Max/Arg*,
KMin/ArgKMin, SumSoftMaxWeight; the sum schemes of the sum-type ones."""

from .table import (
    DEFAULT_SUM_SCHEME,
    INDEX,
    REDUCTIONS,
    SCHEME_ENUMS,
    SUM_SCHEME_ALIASES,
    SUM_SCHEMES,
    VALUE,
    CppOptions,
    Output,
    ReductionSpec,
    check_k_rows,
    reduction,
    sum_type_reductions,
)

__all__ = ["DEFAULT_SUM_SCHEME", "INDEX", "REDUCTIONS", "SCHEME_ENUMS", "SUM_SCHEMES",
           "SUM_SCHEME_ALIASES", "VALUE", "CppOptions", "Output", "ReductionSpec", "check_k_rows",
           "reduction", "sum_type_reductions"]
