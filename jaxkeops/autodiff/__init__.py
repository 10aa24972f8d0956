"""Symbolic derivatives of formulas and reductions (pure symbolic: no JAX tracing)."""

from .formula_ad import depends_on, jvp, transpose
from .reduction_ad import INDEX_ONLY, SELECTING, SUM_TANGENT, sum_tangent_formula

__all__ = ["INDEX_ONLY", "SELECTING", "SUM_TANGENT", "depends_on", "jvp",
           "sum_tangent_formula", "transpose"]
