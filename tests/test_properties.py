"""Random formula trees from the op table, reduced by jaxkeops and by the dense reference.

Trees use the smooth ops (elementwise ops with their example parameters, and a few vector ops),
depth <= 3, with Vi/Vj variables of dim 1 or 3 and constants as leaves. Every op's operands stay
inside its sampling domain: a leaf is sampled from its parent's domain, and an inner node is
squashed into it by `lo + (hi - lo) * (1/2 + 0.9 / pi * Atan(child))`.

The search is derandomized and bounded, so the same few kernels are compiled (and then cached)
on every run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, run_both
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jaxkeops.formulas import CAT_I, CAT_J, OPS, Const, Var, make

MAX_DEPTH = 3
ELEMENTWISE = sorted(n for n, s in OPS.items() if s.elementwise and s.smooth)
TO_SCALAR = ["Sum", "SqNorm2", "Norm2"]  # one operand of any dim -> dim 1
PAIR_TO_SCALAR = ["SqDist", "Scalprod"]  # two operands of the same dim -> dim 1
SAME_DIM = ["Normalize"]
DEFAULT_DOMAIN = (-2.0, 2.0)


def squash(node, domain):
    """`node` mapped smoothly into the open interval `domain` (a leaf is left alone)."""
    if isinstance(node, (Var, Const)):
        return node
    lo, hi = domain
    scaled = make("Mult", make("Atan", node), Const((hi - lo) * 0.9 / math.pi))
    return make("Add", scaled, Const((lo + hi) / 2))


class Builder:
    def __init__(self, draw):
        self.draw = draw
        self.variables: list[Var] = []
        self.domains: dict[Var, tuple[float, float]] = {}

    def leaf(self, dim, domain):
        if self.draw(st.integers(0, 7)) == 0:
            lo, hi = domain
            t = self.draw(st.sampled_from([0.2, 0.5, 0.7]))
            return Const(round(lo + t * (hi - lo), 3), dim)
        var = Var(len(self.variables), dim, self.draw(st.sampled_from([CAT_I, CAT_J])))
        self.variables.append(var)
        self.domains[var] = domain
        return var

    def operand(self, depth, dim, domain):
        if depth >= MAX_DEPTH or self.draw(st.integers(0, 9)) < 3:
            return self.leaf(dim, domain)
        return squash(self.node(depth + 1, dim), domain)

    def node(self, depth, dim):
        choices = list(ELEMENTWISE) + (TO_SCALAR + PAIR_TO_SCALAR if dim == 1 else SAME_DIM)
        name = self.draw(st.sampled_from(choices))
        spec = OPS[name]
        domain = spec.domain
        if name in TO_SCALAR:
            dims = (self.draw(st.sampled_from([1, 3])),)
        elif name in PAIR_TO_SCALAR:
            dims = (self.draw(st.sampled_from([1, 3])),) * 2
        elif spec.arity > 1 and dim == 3:  # elementwise: operands of dim 3, or scalars
            dims = tuple(self.draw(st.sampled_from([1, 3])) for _ in range(spec.arity))
            if 3 not in dims:
                dims = (3,) + dims[1:]
        else:
            dims = (dim,) * spec.arity
        args = [self.operand(depth, d, domain) for d in dims]
        return make(name, *args, params=spec.example_params)


@st.composite
def formulas(draw):
    b = Builder(draw)
    dim = draw(st.sampled_from([1, 3]))
    f = b.node(1, dim)
    return f, b.variables, b.domains


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(formulas())
def test_random_formula_sum_over_j_matches_dense_reference(case):
    formula, variables, domains = case
    assume(variables)  # not a constant formula
    rng = np.random.default_rng(len(repr(formula)))
    m, n = 7, 11
    # every call has an i- and a j-variable, used by the formula or not (then the sum over j
    # is n times the formula)
    extra = [Var(len(variables), 1, CAT_I), Var(len(variables) + 1, 1, CAT_J)]
    args = list(variables) + extra
    arrays = []
    for v in args:
        lo, hi = domains.get(v, DEFAULT_DOMAIN)
        rows = m if v.cat == CAT_I else n
        arrays.append(rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), (rows, v.dim)))
    (got,), (ref,) = run_both([formula], "Sum", 1, args, arrays)
    assert got.shape == (m, formula.dim)
    assert np.all(np.isfinite(np.asarray(ref))), f"non-finite reference for {formula!r}"
    assert_close(got, ref, "float64")
