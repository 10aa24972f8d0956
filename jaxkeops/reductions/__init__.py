"""Reductions over the i or j axis: Sum, LogSumExp, Min/Max/Arg*, KMin/ArgKMin, SumSoftMaxWeight."""

from .table import INDEX, REDUCTIONS, SUM_SCHEMES, VALUE, Output, ReductionSpec, reduction

__all__ = ["INDEX", "REDUCTIONS", "SUM_SCHEMES", "VALUE", "Output", "ReductionSpec", "reduction"]
