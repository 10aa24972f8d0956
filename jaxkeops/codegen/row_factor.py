"""Factors of a Sum's formula that depend only on the output row: applied once per row.

    sum_j a_i g_ij = a_i sum_j g_ij

A factor a_i of the formula's top product that reads no reduced variable (outer variables,
parameters, constants) multiplies the reduced value once per output row, in an epilogue, rather
than every pair in the loop. The typical case is a gradient: the cotangent of the output row
and the derivative's constants, as in -(a_i b_j e^(-c |x - y|^2)) * 2c (x_i - y_j), whose pair
loop then multiplies b_j e^(...) by (x_i - y_j) and nothing else: one multiply per pair fewer.
With the shared difference computed prescaled (scaling.prescale_shared_differences), which
this makes free, the Gaussian gradient's kernel at D = 3 is 9% faster on one core and 9-29%
on two (docs/benchmarks.md).

Only for reductions whose partial results add (merge "sum"): the few-rows split and the SPMD
blocks apply the factor to each partial sum, and the merge adds them. The product is
reassociated, so it rounds differently (relative 1e-7 in float32). An inf or NaN factor still
gives inf or NaN, except that a row which reduces over nothing (a block-sparse row in no
range) gives a_i * 0: NaN for such a factor, where the dense sum gives 0.
"""

from __future__ import annotations

import math

from ..formulas import CAT_I, CAT_J, Const, Node, Op, Var, make
from ..reductions import reduction
from .hoist import INNER, OUTER, dependencies
from .scaling import Scaler, is_product, multiply, use_counts
from .spec import KernelSpec

# (the epilogue's formulas, the variables standing for the reduced values in them), or None.
Epilogue = tuple[tuple[Node, ...], tuple[Var, ...]]


def split_row_factor(spec: KernelSpec, formulas: tuple[Node, ...]
                     ) -> tuple[tuple[Node, ...], Epilogue | None]:
    """(the formulas the kernel reduces, the epilogue making the outputs from them, or None).

    `formulas` are the kernel's, rewritten (rewrite.py); the result keeps their dims."""
    if reduction(spec.reduction).merge != "sum" or len(formulas) != 1:
        return formulas, None
    formula = formulas[0]
    if not is_product(formula):
        return formulas, None
    deps = dependencies(spec, formulas)
    factors: list[Node] = []
    coef = Scaler(deps.__getitem__, use_counts(formulas), {}).factors(formula, True, factors)
    row, pair = [], []
    for f in factors:
        if isinstance(f, Const):  # a constant vector (c in every component): part of coef
            coef *= f.value
        else:
            (pair if deps[f] & INNER else row).append(f)
    dim = formula.dim
    if dim > 1 and all(f.dim == 1 for f in pair):
        # The reduced value would be a scalar: a vector row factor stays in the pair loop.
        pair += [f for f in row if f.dim > 1]
        row = [f for f in row if f.dim == 1]
    if not pair or (not row and coef == 1.0) or coef == 0.0 or not math.isfinite(coef):
        return formulas, None
    # Scalar factors first: a scalar chain costs one multiply per factor, not one per component.
    summand = multiply([multiply([f for f in pair if f.dim == 1]),
                        multiply([f for f in pair if f.dim > 1])])
    if summand.dim != dim:
        summand = make("Mult", summand, Const(1.0, dim))
    factor = multiply(row)
    if coef != 1.0:
        factor = Const(coef) if factor is None else make("Mult", factor, Const(coef))
    # Its index must not clash with the spec's; the epilogue has a layout of its own.
    reduced = Var(max((v.index for v in spec.args), default=-1) + 1, dim,
                  CAT_J if spec.axis == 1 else CAT_I)
    return (summand,), ((make("Mult", factor, reduced),), (reduced,))


def pair_multiplies(spec: KernelSpec, formulas: tuple[Node, ...]) -> int:
    """Multiplies per pair (components counted) of the kernel's formulas once the row factor is
    out: what the rewrites compare when they have a choice."""
    kernel, _ = split_row_factor(spec, formulas)
    deps = dependencies(spec, kernel)
    return sum(n.dim for n, side in deps.items()
               if side == OUTER | INNER and isinstance(n, Op) and n.name in ("Mult", "Divide"))
