"""Every op of the op table, in float32 and float64, against the dense reference.

One kernel per (op, dtype): the formula concatenates the op applied at several operand dims
(1, 3 and 100 by default, or the op's `example_dims`), plus a scalar-broadcast application for
elementwise ops of arity >= 2. Unary ops are applied to x_i + y_j so the kernel depends on both
i and j; ops of arity >= 2 take alternately i- and j-variables.

Non-smooth ops (comparisons, Floor, Round, Sign, OneHot, Mod, ArgMax, ...) get inputs on a
coarse dyadic grid: every intermediate value is then exact in float32, so the kernel and the
reference see the same ties and the same sides of every discontinuity (and ties are exercised).
"""

from __future__ import annotations

import math
import operator

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, run_both

from jaxkeops import LazyTensor, Vi, Vj
from jaxkeops.formulas import CAT_I, CAT_J, OPS, Const, Var, make

DTYPES = ["float32", "float64"]
DEFAULT_DIMS = (1, 3, 100)
# (M, N): not multiples of any SIMD width or tile, and the degenerate M = 1 and N = 1.
SIZES = [(37, 53), (1, 1)]
GRID_STEP = 1.0 / 16  # non-smooth ops: values are multiples of this (exact in float32)

# Extra operand dims to test beyond `example_dims` (no extra kernel: same formula).
EXTRA_VARIANTS = {
    "WeightedSqNorm": [(1, 3), (9, 3)],  # isotropic and full weights
    "WeightedSqDist": [(1, 3, 3), (9, 3, 3)],
}


def variants(name: str) -> list[tuple[int, ...]]:
    """The operand dims of each application of op `name` in its test formula."""
    spec = OPS[name]
    if spec.example_dims is not None:
        out = [tuple(spec.example_dims)]
    else:
        out = [(d,) * spec.arity for d in DEFAULT_DIMS]
        if spec.elementwise and spec.arity == 2:
            out.append((1, 3))
        elif spec.elementwise and spec.arity == 3:
            out.append((3, 1, 1))
    return out + EXTRA_VARIANTS.get(name, [])


def build_formula(name: str):
    """(formula, variables, operand_slots) where operand_slots[v] tells how variable v is used:
    'half' (one of the two addends of a unary op's operand) or 'full' (a direct operand)."""
    spec = OPS[name]
    variables, usage, pieces = [], [], []

    def new_var(dim, cat, use):
        v = Var(len(variables), dim, cat)
        variables.append(v)
        usage.append(use)
        return v

    for dims in variants(name):
        if spec.arity == 1:
            (d,) = dims
            operands = [make("Add", new_var(d, CAT_I, "half"), new_var(d, CAT_J, "half"))]
        else:
            operands = [new_var(d, (CAT_I, CAT_J)[t % 2], "full") for t, d in enumerate(dims)]
        pieces.append(make(name, *operands, params=spec.example_params))
    formula = pieces[0]
    for p in pieces[1:]:
        formula = make("Concat", formula, p)
    return formula, variables, usage


def sample(name: str, rng, shape, use: str, dtype: str) -> np.ndarray:
    spec = OPS[name]
    lo, hi = spec.domain
    if use == "half":
        lo, hi = lo / 2, hi / 2
    if spec.smooth:
        values = rng.uniform(lo, hi, size=shape)
    else:
        ks = np.arange(math.ceil(lo / GRID_STEP), math.floor(hi / GRID_STEP) + 1)
        values = rng.choice(ks, size=shape) * GRID_STEP
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_sum_over_j(name, dtype, rng):
    formula, variables, usage = build_formula(name)
    for m, n in SIZES:
        arrays = [sample(name, rng, (m if v.cat == CAT_I else n, v.dim), use, dtype)
                  for v, use in zip(variables, usage)]
        (got,), (ref,) = run_both([formula], "Sum", 1, variables, arrays)
        assert got.dtype == jnp.dtype(dtype)
        assert got.shape == (m, formula.dim)
        assert np.all(np.isfinite(np.asarray(ref))), "test inputs left the op's domain"
        assert_close(got, ref, dtype)


def test_every_op_is_tested_on_a_formula_that_uses_i_and_j():
    for name in OPS:
        _, variables, _ = build_formula(name)
        cats = {v.cat for v in variables}
        assert cats == {CAT_I, CAT_J}, name


# ---------------------------------------------------------------------------------------------
# Methods and operators build the same node as `make`.

OPERATORS = {
    "Add": operator.add, "Subtract": operator.sub, "Mult": operator.mul,
    "Divide": operator.truediv, "Minus": operator.neg, "Abs": abs, "Scalprod": operator.or_,
    "Equal": operator.eq, "NotEqual": operator.ne, "LessThan": operator.lt,
    "GreaterThan": operator.gt, "LessOrEqual": operator.le, "GreaterOrEqual": operator.ge,
    # Ops without a method in the table, spelled as LazyTensor methods or indexing.
    "Elem": lambda x: x[1], "Extract": lambda x: x[1:3],
}
EXPLICIT = {
    "Elem": lambda x: x.elem(1), "Extract": lambda x: x.extract(1, 2),
}


def _call_method(name: str, tensors: list[LazyTensor], params: tuple) -> LazyTensor:
    """Calls the LazyTensor method of op `name` the way a user would."""
    method = OPS[name].method
    first, rest = tensors[0], tensors[1:]
    if name in ("Sum", "Max", "Min", "ArgMax", "ArgMin"):
        return getattr(first, method)(-1)  # the vector axis: a symbolic op, not a reduction
    if name == "WeightedSqNorm":  # pykeops order: x.weightedsqnorm(s) = WeightedSqNorm(s, x)
        return tensors[1].weightedsqnorm(tensors[0])
    if name == "WeightedSqDist":  # x.weightedsqdist(y, s) = WeightedSqDist(s, x, y)
        return tensors[1].weightedsqdist(tensors[2], tensors[0])
    if name == "Kron":
        (p, q, r, s), = params
        return first.kron(rest[0], (p, q), (r, s))
    return getattr(first, method)(*rest, *params)


@pytest.mark.parametrize("name", sorted(OPS))
def test_method_builds_the_same_node_as_make(name):
    spec = OPS[name]
    dims = variants(name)[0]
    arrays = [jnp.ones((4 + t, d), jnp.float64) for t, d in enumerate(dims)]
    tensors = [Vi(a) if t % 2 == 0 else Vj(a) for t, a in enumerate(arrays)]
    results = []
    if spec.method and not spec.method.startswith("__"):
        assert hasattr(LazyTensor, spec.method), f"LazyTensor has no method {spec.method}"
        results.append(_call_method(name, tensors, spec.example_params))
    if name in OPERATORS:
        results.append(OPERATORS[name](*tensors))
    if name in EXPLICIT:
        results.append(EXPLICIT[name](*tensors))
    assert results, f"op {name} has neither a method nor an operator"
    for result in results:
        assert isinstance(result, LazyTensor)
        position = {id(a): p for p, (a, _) in enumerate(result._leaves)}
        operands = [Var(position[id(a)], d, t % 2) for t, (a, d) in enumerate(zip(arrays, dims))]
        assert result.formula == make(name, *operands, params=spec.example_params)


def test_table_methods_have_docs_and_names():
    for spec in OPS.values():
        if spec.method and not spec.method.startswith("__"):
            method = getattr(LazyTensor, spec.method)
            assert method.__name__ == spec.method


# ---------------------------------------------------------------------------------------------
# The references the kernels are checked against follow the KeOps conventions (spot checks
# with hand-computed values: the dense evaluator shares these reference functions).

CONVENTIONS = [
    ("Step", [[-1.0, 0.0, 2.0]], (), [0.0, 1.0, 1.0]),
    ("Sign", [[-2.0, 0.0, 3.0]], (), [-1.0, 0.0, 1.0]),
    ("ReLU", [[-2.0, 0.0, 3.0]], (), [0.0, 0.0, 3.0]),
    ("Round", [[1.25, -1.25, 2.5]], (1,), [1.3, -1.3, 2.5]),
    ("Round", [[0.5, -0.5, 1.5]], (0,), [1.0, -1.0, 2.0]),
    ("Mod", [[5.5, -0.5, 1.0], [2.0, 2.0, 2.0], [0.0, 0.0, 1.0]], (), [1.5, 1.5, 1.0]),
    ("IfElse", [[-1.0, 0.0, 1.0], [1.0, 2.0, 3.0], [7.0, 8.0, 9.0]], (), [7.0, 2.0, 3.0]),
    ("ClampInt", [[-3.0, 0.5, 3.0]], (-1, 1), [-1.0, 0.5, 1.0]),
    ("Rsqrt", [[0.0, 4.0, 0.25]], (), [0.0, 0.5, 2.0]),
    ("SinXDivX", [[0.0]], (), [1.0]),
    ("XLogX", [[0.0, 1.0]], (), [0.0, 0.0]),
    ("OneHot", [[2.4]], (4,), [0.0, 0.0, 1.0, 0.0]),
    ("OneHot", [[1.5]], (4,), [0.0, 0.0, 1.0, 0.0]),
    ("ArgMax", [[1.0, 3.0, 3.0]], (), [1.0]),
    ("ArgMin", [[2.0, 1.0, 1.0]], (), [1.0]),
    ("Elem", [[4.0, 5.0, 6.0]], (2,), [6.0]),
    ("Extract", [[4.0, 5.0, 6.0, 7.0]], (1, 2), [5.0, 6.0]),
    ("MatVecMult", [[1.0, 2.0, 3.0, 4.0], [1.0, 10.0]], (), [21.0, 43.0]),
    ("VecMatMult", [[1.0, 10.0], [1.0, 2.0, 3.0, 4.0]], (), [31.0, 42.0]),
    ("TensorProd", [[1.0, 2.0], [3.0, 4.0, 5.0]], (), [3.0, 4.0, 5.0, 6.0, 8.0, 10.0]),
    ("Kron", [[1.0, 2.0], [3.0, 4.0]], ((2, 1, 2, 1),), [3.0, 4.0, 6.0, 8.0]),
    ("WeightedSqNorm", [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0]], (), [10.0]),
    ("WeightedSqDist", [[2.0], [1.0, 1.0], [0.0, 3.0]], (), [10.0]),
]


@pytest.mark.parametrize("name,args,params,expected", CONVENTIONS)
def test_reference_follows_keops_conventions(name, args, params, expected):
    arrays = [np.asarray(a, np.float64) for a in args]
    out = OPS[name].reference(np, *arrays, *params)
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=1e-12)


def test_constant_folding_matches_reference():
    folded = make("Add", Const(2.0), make("Mult", Const(3.0), Const(4.0)))
    assert folded == Const(14.0)
