"""Sum schemes ("direct", "block", "kahan", and KeOps' spellings) and float64 accumulators of
the sum-type reductions (Sum, LogSumExp weighted or not, LogSumExpSigned, SumSoftMaxWeight) on
the CPU: what KernelSpec accepts and refuses, that every combination computes the dense
reference's result, and that their accuracy on float32 sums of 2e5 terms ranks as it should
against numpy float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, dense_reference

from jaxkeops.codegen.cpu import render_cpu
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Const, Var, make
from jaxkeops.lazy.reduce import run_reduction
from jaxkeops.primitive import reduction_p

X = Var(0, 3, CAT_I)
Y = Var(1, 3, CAT_J)
B = Var(2, 2, CAT_J)
GAUSS = make("Mult", make("Exp", make("Minus", make("SqDist", X, Y))), B)
F1 = make("Minus", make("SqDist", X, Y))
SCHEMES = ("direct", "block", "kahan")
ACCUMULATORS = (None, "float64")
SUM_TYPES = ("Sum", "LogSumExp", "LogSumExp_weighted", "LogSumExpSigned", "SumSoftMaxWeight")


def _case(name: str):
    """(reduction, formulas) of a sum-type test case over the variables X, Y, B."""
    if name == "Sum":
        return "Sum", (GAUSS,)
    if name == "LogSumExp":
        return "LogSumExp", (F1,)
    if name == "LogSumExp_weighted":
        return "LogSumExp", (F1, B)
    return name, (F1, B)


def _spec(name="Sum", dtype="float32", **options) -> KernelSpec:
    reduction, formulas = _case(name)
    return KernelSpec(formulas, reduction, 1, dtype, args=(X, Y, B), **options)


# ----------------------------------------------------------------------------------------------
# What KernelSpec accepts.

@pytest.mark.parametrize("alias, scheme", [("direct_sum", "direct"), ("block_sum", "block"),
                                           ("kahan_scheme", "kahan"), ("auto", "block")])
def test_keops_spellings_are_aliases(alias, scheme):
    assert _spec(sum_scheme=alias) == _spec(sum_scheme=scheme)
    assert _spec(sum_scheme=alias).sum_scheme == scheme


def test_unknown_sum_scheme_is_refused():
    with pytest.raises(ValueError, match="sum_scheme must be one of .*'pairwise'"):
        _spec(sum_scheme="pairwise")


@pytest.mark.parametrize("reduction", ["Min", "ArgKMin", "Max_ArgMax"])
def test_other_reductions_take_only_the_default_scheme(reduction):
    k = 3 if "K" in reduction else None
    for default in ("block", "auto", "direct", "direct_sum"):
        assert KernelSpec((GAUSS,), reduction, 1, "float32", k=k,
                          sum_scheme=default).sum_scheme == "block"
    for scheme in ("kahan", "kahan_scheme"):
        with pytest.raises(ValueError, match=f"sum_scheme='{scheme}'.*not to {reduction}"):
            KernelSpec((GAUSS,), reduction, 1, "float32", k=k, sum_scheme=scheme)
    for acc in ("float64", "float32"):
        with pytest.raises(ValueError, match=f"accumulator='{acc}'.*not to {reduction}"):
            KernelSpec((GAUSS,), reduction, 1, "float32", k=k, accumulator=acc)


def test_accumulator_rules():
    assert _spec(accumulator="float64").accumulator == "float64"
    # The compute dtype itself (also for half-precision storage, computed in float32) is the
    # default: the same spec, the same kernel.
    assert _spec(accumulator="float32") == _spec() == _spec(accumulator="auto")
    assert _spec(dtype="float64", accumulator="float64") == _spec(dtype="float64")
    assert _spec(storage_dtype="float16", accumulator="float32").accumulator is None
    assert _spec(storage_dtype="bfloat16", accumulator="float64").accumulator == "float64"
    with pytest.raises(ValueError, match="accumulator='float32' is narrower than the float64"):
        _spec(dtype="float64", accumulator="float32")
    with pytest.raises(ValueError, match="accumulator must be .*'float16'"):
        _spec(storage_dtype="float16", accumulator="float16")
    with pytest.raises(ValueError, match="accumulator must be"):
        _spec(accumulator="double")


def test_options_are_part_of_the_kernel_identity():
    default = _spec()
    others = [_spec(sum_scheme="direct"), _spec(sum_scheme="kahan"),
              _spec(accumulator="float64")]
    assert len({default.content(), *(s.content() for s in others)}) == 4
    assert len({render_cpu(default), *(render_cpu(s) for s in others)}) == 4
    assert "float64 accumulator" in others[2].describe()


def test_default_source_is_the_block_scheme_in_the_compute_dtype():
    for name in ("Sum", "LogSumExp"):
        source = render_cpu(_spec(name))
        assert "jk::BLOCK_SUM>;" in source and "double" not in source
    assert "jk::SumReduction<V_RED, 2, jk::KAHAN_SUM, double>" in render_cpu(
        _spec(sum_scheme="kahan", accumulator="float64"))


def test_float64_accumulator_skips_the_float_matrix_product_schedule():
    x, y = Var(0, 64, CAT_I), Var(1, 64, CAT_J)
    w = make("Exp", make("Minus", make("SqDist", x, y)))
    spec = KernelSpec((make("Mult", w, make("Subtract", x, y)),), "Sum", 1, "float32")
    assert "LinearSumReduction" in render_cpu(spec)
    wide = KernelSpec(spec.formulas, "Sum", 1, "float32", accumulator="float64")
    assert "LinearSumReduction" not in render_cpu(wide)


# ----------------------------------------------------------------------------------------------
# Every combination computes the dense reference's result.

def _arrays(rng, m, n, dtype="float32"):
    return [rng.uniform(-1, 1, (m, 3)).astype(dtype), rng.uniform(-1, 1, (n, 3)).astype(dtype),
            rng.uniform(-1, 2, (n, 2)).astype(dtype)]


def _check(name, arrays, sum_scheme="block", accumulator=None):
    reduction, formulas = _case(name)
    got = run_reduction(formulas, reduction, 1, (X, Y, B), arrays, ["x", "y", "b"],
                        sum_scheme=sum_scheme, accumulator=accumulator)
    dtype = np.asarray(arrays[0]).dtype.name
    spec = KernelSpec(formulas, reduction, 1, dtype, args=(X, Y, B))
    ref = dense_reference(spec)(*arrays)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.dtype(dtype)
        assert_close(g, r, dtype)


@pytest.mark.parametrize("accumulator", ACCUMULATORS)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ["Sum", "LogSumExp_weighted"])
def test_every_scheme_and_accumulator(name, scheme, accumulator, rng):
    # 4100 reduced rows: two CPU tiles, the last one short, with a masked last vector
    for m, n in [(13, 4100), (1, 1)]:
        _check(name, _arrays(rng, m, n), scheme, accumulator)


@pytest.mark.parametrize("scheme, accumulator", [("direct", None), ("kahan", "float64")])
@pytest.mark.parametrize("name", ["LogSumExp", "LogSumExpSigned", "SumSoftMaxWeight"])
def test_other_sum_type_reductions(name, scheme, accumulator, rng):
    _check(name, _arrays(rng, 13, 4100), scheme, accumulator)


def test_float64_data_take_every_scheme(rng):
    for scheme in SCHEMES:
        _check("Sum", _arrays(rng, 9, 4100, "float64"), scheme, "float64")


# ----------------------------------------------------------------------------------------------
# Accuracy: float32 sums of 2e5 terms with large cancellation.

A = Var(0, 1, CAT_I)
G = Var(1, 1, CAT_J)
N_TERMS = 200_003


def _cancelling(rng, n=N_TERMS, dim=1):
    """Runs of 5000 terms near +1e4 then near -1e4: the sum (~1e5) is 2e4 times smaller than
    the sum of the magnitudes, and float32 partial sums reach 5e7 (ulp 4)."""
    runs = np.where((np.arange(n) // 5000) % 2 == 0, 1e4, -1e4)[:, None]
    return (runs + rng.uniform(0, 1, (n, dim))).astype(np.float32)


def _ulps(got, exact):
    """|got - exact| in units in the last place of the float32 nearest to exact."""
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return float((np.abs(np.asarray(got, np.float64) - exact) / ulp).max())


def _sum_errors(a, g, schemes=SCHEMES, accumulators=ACCUMULATORS):
    """Error in ulps of Sum_j a_i g_j for each (scheme, accumulator). With a_i powers of two,
    every term is exact in float32, so numpy's float64 sum is the exact result."""
    exact = a.astype(np.float64) * g.astype(np.float64).sum()
    errors = {}
    for scheme in schemes:
        for acc in accumulators:
            (got,) = run_reduction([make("Mult", A, G)], "Sum", 1, [A, G], [a, g], ["a", "g"],
                                   sum_scheme=scheme, accumulator=acc)
            assert got.dtype == np.float32
            errors[scheme, acc] = _ulps(got, exact)
    return errors


POWERS_OF_TWO = np.array([[1.0], [2.0], [0.5], [4.0]], np.float32)


def test_sum_schemes_rank_on_a_constant_offset(rng):
    """Terms 0.1 (1 + 1e-3 u): every float32 addition into a growing sum rounds the same way.
    One running sum per SIMD lane (direct) drifts by ~1000 ulps, tile sums (block) stay within
    a few, Kahan within rounding; float64 accumulators only round the result."""
    g = (0.1 * (1 + 1e-3 * rng.uniform(0, 1, (N_TERMS, 1)))).astype(np.float32)
    errors = _sum_errors(POWERS_OF_TWO, g)
    for scheme in SCHEMES:
        assert errors[scheme, "float64"] <= 0.5, errors
    assert errors["kahan", None] <= 0.55, errors
    assert errors["block", None] <= 4, errors
    assert errors["direct", None] > 100, errors


def test_float64_accumulator_survives_cancellation(rng):
    """Runs of +-1e4: float32 partial sums reach 5e7 (ulp 4) for a result of ~1e5 (ulp 1/128).
    Float64 accumulators keep it to the final rounding; float32 sums lose hundreds of ulps or
    more, except Kahan's compensated sums (merged exactly across lanes)."""
    errors = _sum_errors(POWERS_OF_TWO, _cancelling(rng))
    for scheme in SCHEMES:
        assert errors[scheme, "float64"] <= 0.5, errors
    assert errors["kahan", None] <= 1.0, errors
    assert min(errors["block", None], errors["direct", None]) > 30, errors


def test_signed_logsumexp_accuracy_with_cancelling_weights(rng):
    """f_ij = a_i + 0 g_j is constant along j, so every term is exactly exp(0) w_j = w_j and
    log|sum w| is known exactly: the float64 accumulator gets it to float32 rounding, float32
    block sums lose 4 digits of the sum (1e-4 on the log)."""
    a = np.array([[0.0], [1.5], [-2.0]], np.float32)
    g = np.zeros((N_TERMS, 1), np.float32)
    w = _cancelling(rng, dim=2)
    w[:, 1] *= -1
    total = w.astype(np.float64).sum(0)
    expected = np.log(np.abs(total))[None, :] + a.astype(np.float64)
    formula = make("Add", A, make("Mult", G, Const(0.0)))
    weight = Var(2, 2, CAT_J)
    errors = {}
    for scheme, acc in [("block", None), ("kahan", None), ("block", "float64")]:
        value, sign = run_reduction([formula, weight], "LogSumExpSigned", 1, [A, G, weight],
                                    [a, g, w], ["a", "g", "w"], sum_scheme=scheme,
                                    accumulator=acc)
        np.testing.assert_array_equal(np.asarray(sign), np.broadcast_to(np.sign(total), (3, 2)))
        errors[scheme, acc] = float(np.abs(np.asarray(value, np.float64) - expected).max())
    assert errors["block", "float64"] < 1e-6 and errors["kahan", None] < 1e-6, errors
    assert errors["block", None] > 1e-5, errors


def test_softmax_and_logsumexp_accumulate_in_float64(rng):
    """Same construction for SumSoftMaxWeight (the mean of w) and a weighted LogSumExp with a
    large positive offset (log of the sum)."""
    a = np.zeros((2, 1), np.float32)
    g = np.zeros((N_TERMS, 1), np.float32)
    w = _cancelling(rng, dim=2)
    w[:, 1] = 1e3 + rng.uniform(0, 1, N_TERMS).astype(np.float32)
    mean = w.astype(np.float64).mean(0)
    formula = make("Add", A, make("Mult", G, Const(0.0)))
    weight = Var(2, 2, CAT_J)
    args = ([formula, weight], [A, G, weight], [a, g, w], ["a", "g", "w"])
    wide = run_reduction(args[0], "SumSoftMaxWeight", 1, *args[1:], accumulator="float64")[0]
    narrow = run_reduction(args[0], "SumSoftMaxWeight", 1, *args[1:])[0]
    assert _ulps(wide[0], mean) <= 1.0 < 30 < _ulps(narrow[0, :1], mean[:1])
    lse = run_reduction(args[0], "LogSumExp", 1, *args[1:], accumulator="float64")[0]
    expected = np.log(w[:, 1].astype(np.float64).sum())
    assert abs(float(lse[0, 1]) - expected) <= np.spacing(np.float32(expected))


def test_half_precision_storage_with_float64_accumulator(rng):
    """float16 data: computed in float32, summed in float64, returned in float16."""
    a = np.ones((3, 1), np.float16)
    g = rng.uniform(0, 0.2, (N_TERMS, 1)).astype(np.float16)  # sum ~2e4 < 65504
    exact = g.astype(np.float64).sum()
    (got,) = run_reduction([make("Mult", A, G)], "Sum", 1, [A, G], [a, g], ["a", "g"],
                           accumulator="float64")
    assert got.dtype == jnp.float16
    assert abs(float(got[0, 0]) - exact) <= np.spacing(np.float16(exact)) / 2


# ----------------------------------------------------------------------------------------------
# Derivatives keep the options.

def _specs_in(fn, *args) -> list[KernelSpec]:
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive is reduction_p:
                found.append(eqn.params["spec"])
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("name", ["Sum", "LogSumExp_weighted", "SumSoftMaxWeight"])
def test_gradients_keep_scheme_and_accumulator(name, rng):
    reduction, formulas = _case(name)
    x, y, b = (jnp.asarray(a) for a in _arrays(rng, 11, 300))
    options = dict(sum_scheme="kahan", accumulator="float64")

    def loss(x, y, b, **kw):
        outs = run_reduction(formulas, reduction, 1, (X, Y, B), [x, y, b], ["x", "y", "b"],
                             **kw)
        return jnp.sum(jnp.sin(outs[0]))

    grads = jax.grad(lambda *a: loss(*a, **options), argnums=(0, 1, 2))(x, y, b)
    specs = _specs_in(jax.grad(lambda *a: loss(*a, **options), argnums=(0, 1, 2)), x, y, b)
    assert len(specs) >= 3
    assert all(s.sum_scheme == "kahan" and s.accumulator == "float64" for s in specs)
    spec = KernelSpec(formulas, reduction, 1, "float32", args=(X, Y, B))
    dense = jax.grad(lambda x, y, b: jnp.sum(jnp.sin(dense_reference(spec)(x, y, b)[0])),
                     argnums=(0, 1, 2))(x, y, b)
    for g, r in zip(grads, dense):
        assert_close(g, r, "float32", rtol=1e-3)
