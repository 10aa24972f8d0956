"""Symbolic derivatives of formulas and reductions (pure symbolic: no JAX tracing)."""

from .calculus import (
    CALCULUS,
    adjoint_operator,
    diff,
    divergence,
    grad,
    grad_matrix,
    laplacian,
    trace_operator,
)
from .formula_ad import depends_on, jvp, transpose
from .reduction_ad import sum_tangent_formula

__all__ = ["CALCULUS", "adjoint_operator",
           "depends_on", "diff", "divergence", "grad", "grad_matrix", "jvp", "laplacian",
           "sum_tangent_formula", "trace_operator", "transpose"]
