"""The CPU code generator's rewrites on the CUDA kernels (issue 14), without a GPU.

`cuda.kernel_formulas` applies what the CPU backend does before printing: constants folded into
operands that hoist (scaling.py) and exp(c a) as 2^((c log2 e) a) (rewrite.py), the dot-product
form of long squared distances, subexpressions of one side hoisted out of the pair loop
(hoist.py: per thread, or per reduced row into the shared-memory tile, which then holds only
what the pair loop reads), log-sum-exp reductions in base 2, and the linear form of Sums of
scalar x vector variable (linear.py: x_i sum_j s - sum_j s y_j, with the output's x_i terms
applied once per row by an epilogue). For each, a formula where it triggers: the generated source
shows it applied, and the emulated kernel (rows and split schedules, both axes, batch dims for
the epilogue) matches the dense reference in float64 (`jaxkeops.testing.dense_reduce`).
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import assert_close
from cuda_emulator.harness import build_module, emulate

from jaxkeops.codegen.cuda import kernel_formulas, render_cuda
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, Const, Var, make
from jaxkeops.testing import dense_reduce

LOG2E = "1.4426950408889634"

X, Y, B = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 2, CAT_J)
BI = Var(2, 2, CAT_I)  # the weight of a reduction over i
S = Var(3, 1, CAT_P)
XL, YL = Var(0, 40, CAT_I), Var(1, 40, CAT_J)  # long enough for the dot form and linear form
SIGMA = 0.7


def gauss(x, y, scale=Const(1 / (2 * SIGMA**2))):
    return make("Exp", make("Minus", make("Mult", make("SqDist", x, y), scale)))


def spec(formulas, reduction="Sum", axis=1, dtype="float32", args=None) -> KernelSpec:
    return KernelSpec(tuple(formulas), reduction, axis, dtype, args=args or ())


# name -> (spec, what to look for in the source)
SCALED = make("Mult", gauss(X, Y), B)
HOISTED = make("Mult", make("Mult", make("Scalprod", make("Sin", X), make("Cos", Y)),
                            gauss(X, Y, make("Mult", S, S))), B)
DOT = make("Mult", gauss(XL, YL, Const(0.05)), B)
LINEAR = make("Mult", gauss(XL, YL, Const(0.05)), make("Subtract", XL, YL))
LINEAR_3_TERMS = make("Add", make("Mult", gauss(XL, YL, Const(0.05)),
                                  make("Subtract", XL, make("Mult", YL, Const(2.0)))),
                      make("Mult", make("Mult", make("Scalprod", XL, YL), Const(0.01)), YL))
# Row factors (row_factor.py): a gradient's cotangent a_i and constants, and a vector factor
# with a parameter; the difference x - y shared with the exponent, computed prescaled.
A1, B1 = Var(4, 1, CAT_I), Var(5, 1, CAT_J)
GRADIENT = make("Mult", make("Mult", make("Mult", A1, B1), gauss(X, Y)),
                make("Mult", Const(-2.0 / (2 * SIGMA**2)), make("Subtract", X, Y)))
VECTOR_FACTOR = make("Mult", make("Mult", make("Mult", S, make("Sin", X)), gauss(X, Y)),
                     make("Subtract", Y, X))
KERNELS = {
    "scaled": spec([SCALED]),
    "row_factor_j": spec([GRADIENT]),
    "row_factor_i": spec([GRADIENT], axis=0),
    "row_vector_factor": spec([VECTOR_FACTOR]),
    "hoisted_j": spec([HOISTED]),
    "hoisted_i": spec([HOISTED], axis=0),
    "dot_form": spec([DOT]),
    "lse_scalprod": spec([make("Scalprod", X, Y)], "LogSumExp"),
    "lse_sin": spec([make("Sin", make("Scalprod", X, Y))], "LogSumExp", axis=0),
    "lse_signed": spec([make("Mult", make("Scalprod", X, Y), Const(30.0)), B],
                       "LogSumExpSigned"),
    "softmax": spec([make("Minus", make("SqDist", X, Y)), BI], "SumSoftMaxWeight", axis=0),
    "linear_j": spec([LINEAR]),
    "linear_i": spec([LINEAR], axis=0),
    "linear_3_terms": spec([LINEAR_3_TERMS]),
    "linear_acc64": KernelSpec((LINEAR,), "Sum", 1, "float32", accumulator="float64"),
    "linear_float64": spec([LINEAR], dtype="float64"),
}


@pytest.fixture(scope="module")
def kernels():
    if shutil.which("g++") is None:
        pytest.skip("the emulation needs g++")
    items = [(k, render_cuda(s)) for k, s in KERNELS.items()]
    with ThreadPoolExecutor(2) as pool:  # two translation units, one per core
        modules = list(pool.map(lambda part: build_module(dict(part), tag="rewrites"),
                                [items[0::2], items[1::2]]))
    return {name: m for m in modules for name in m.suffixes}


def section(source: str, name: str) -> str:
    start = source.index(f" {name}(")
    return source[start:source.index("\n  }\n", start)]


def constants(text: str) -> set[str]:
    return set(re.findall(r"jk::cst<V>\((-?[0-9][0-9.e+-]*)\)", text))


def data(spec: KernelSpec, m=37, n=45, batch=(), seed=0):
    """Points of norm about 1, parameters in [0.3, 1.3]; the weights of the log-sum-exp
    reductions are positive (a sum that cancels would amplify its float32 rounding)."""
    rng = np.random.default_rng(seed)
    out = []
    for v in spec.args:
        rows = {CAT_I: (m,), CAT_J: (n,), CAT_P: ()}[v.cat]
        a = rng.normal(size=(*batch, *rows, v.dim)) * (0.15 if v.dim == 40 else 0.7)
        if v.cat == CAT_P or (spec.reduction != "Sum" and v.dim == 2):
            a = rng.uniform(0.3, 1.3, size=a.shape)
        out.append(a)
    return out


def check(kernels, name, schedule="rows", batch=(), seed=0, **tol):
    """The emulated kernel (float32 or float64 as its spec says) against the float64 dense
    reference on the same (rounded) inputs."""
    s = KERNELS[name]
    arrays = [a.astype(s.dtype) for a in data(s, batch=batch, seed=seed)]
    got = emulate(kernels[name], name, s, arrays, schedule=schedule, block=16, chunks=2)
    s64 = KernelSpec(s.formulas, s.reduction, s.axis, "float64", args=s.args)
    ref = dense_reduce(s64, [a.astype(np.float64) for a in arrays])
    for g, r in zip(got, ref):
        assert_close(g, np.asarray(r), s.dtype, **tol)


TIGHT = {"rtol": 2e-6, "atol": 2e-6}


# ----------------------------------------------------------------------------------------------
# Constant scaling and exp(c a) -> 2^((c log2 e) a).
def test_constants_move_into_the_hoisted_operands():
    """exp(-|x - y|^2 / (2 s^2)): sqrt(log2 e / (2 s^2)) scales x once per row and y once per
    reduced row; the pair loop multiplies by nothing and calls 2^x, and the tile holds the
    scaled y (and b), not y."""
    source = render_cuda(KERNELS["scaled"])
    root = repr((1.4426950408889634 / (2 * SIGMA**2)) ** 0.5)
    assert root in section(source, "pre_outer") and root in section(source, "pre_inner")
    pair = section(source, "evaluate_pair")
    assert not constants(pair) and "jk::exp2_neg_nonnegative(" in pair and "jk::exp(" not in pair
    kf = kernel_formulas(KERNELS["scaled"])
    assert kf.tile_dim == 5 and kf.dims[1] == 8  # the row: y, b, y scaled; the tile: b, y scaled
    assert "TILE_DIM = 5;" in source


@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_scaled_gaussian_sum_under_emulation(kernels, schedule):
    check(kernels, "scaled", schedule, **TIGHT)


# ----------------------------------------------------------------------------------------------
# Hoisting.
@pytest.mark.parametrize("name", ["hoisted_j", "hoisted_i"])
def test_one_sided_subexpressions_leave_the_pair_loop(name):
    """<sin x, cos y> exp(-s^2 |x - y|^2) b: sin of the outer variable once per thread, cos of
    the inner one once per reduced row (over j, x is outer; over i, y is), s^2 log2 e once."""
    source = render_cuda(KERNELS[name])
    outer, inner = ("jk::sin", "jk::cos") if name == "hoisted_j" else ("jk::cos", "jk::sin")
    assert outer in section(source, "pre_outer") and inner in section(source, "pre_inner")
    assert LOG2E in section(source, "pre_outer")
    pair = section(source, "evaluate_pair")
    assert "jk::sin" not in pair and "jk::cos" not in pair and not constants(pair)


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["hoisted_j", "hoisted_i"])
def test_hoisted_kernels_under_emulation(kernels, name, schedule):
    check(kernels, name, schedule, **TIGHT)


# ----------------------------------------------------------------------------------------------
# The dot-product form of |x - y|^2 for dim >= 32.
def test_long_distances_take_the_dot_product_form():
    source = render_cuda(KERNELS["dot_form"])
    assert "SqNorm2" in section(source, "pre_outer") and "SqNorm2" in section(source, "pre_inner")
    pair = section(source, "evaluate_pair")
    assert "Scalprod" in pair and "SqDist" not in pair
    # the tile: y, |y|^2 and b, 43 floats padded to 44 for 16-byte loads
    assert "TILE_DIM = 43;" in source and "TILE_STRIDE = 44;" in source


@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_dot_form_under_emulation(kernels, schedule):
    check(kernels, "dot_form", schedule, **TIGHT)


# ----------------------------------------------------------------------------------------------
# Log-sum-exp reductions in base 2.
def test_log_sum_exp_exponents_are_in_base_2():
    """log2 e joins the formula's constants where an operand hoists (x log2 e in <x, y>), and
    is a multiply in the pair loop where nothing can take it (sin <x, y>)."""
    source = render_cuda(KERNELS["lse_scalprod"])
    assert LOG2E in section(source, "pre_outer")
    assert not constants(section(source, "evaluate_pair"))
    assert constants(section(render_cuda(KERNELS["lse_sin"]), "evaluate_pair")) == {LOG2E}
    signed = render_cuda(KERNELS["lse_signed"])
    assert repr(30.0 * 1.4426950408889634) in section(signed, "pre_outer")


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["lse_scalprod", "lse_sin", "lse_signed", "softmax"])
def test_base_2_reductions_under_emulation(kernels, name, schedule):
    """Large exponents (30 <x, y> up to about 100) check the conversion back to base e."""
    check(kernels, name, schedule, **TIGHT)


# ----------------------------------------------------------------------------------------------
# The linear form of Sums of scalar x whole vector variable.
def test_linear_sum_accumulates_scalars_and_one_vector():
    """exp(-c |x - y|^2) (x - y), D = 40: the kernel sums [s, s y] (41 values), the epilogue
    makes x sum s - sum s y; the pair loop has no subtraction of vectors."""
    source = render_cuda(KERNELS["linear_j"])
    assert "using Reduction = jk::gpu::SumReduction<float, 41, jk::BLOCK_SUM>;" in source
    assert "EPILOGUE = true;" in source and "OUT_DIM = 40;" in source
    pair = section(source, "evaluate_pair")
    assert "Subtract" not in pair and "// Mult" in pair
    epilogue = section(source, "epilogue")
    assert "jk::cst<V>((o + 0)[k])" in epilogue  # x, read again once per row
    assert "EPILOGUE = false;" in render_cuda(KERNELS["scaled"])
    three = render_cuda(KERNELS["linear_3_terms"])  # s x - 2 s y + 0.01 <x, y> y
    assert "SumReduction<float, 41," in three and "-2.0" in section(three, "epilogue")
    assert "-0.005" in section(three, "pre_inner")  # 0.01 / -2, on y as on the CPU


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["linear_j", "linear_i", "linear_3_terms", "linear_acc64"])
def test_linear_sums_under_emulation(kernels, name, schedule):
    check(kernels, name, schedule, rtol=1e-5, atol=1e-6)


def test_linear_sum_in_float64_and_with_batch_dims(kernels):
    """The epilogue reads x through the batch element's pointers (both schedules)."""
    check(kernels, "linear_float64", rtol=1e-12, atol=1e-13)
    for schedule in ("rows", "split"):
        check(kernels, "linear_j", schedule, batch=(2,), seed=3, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Row factors, and the shared difference computed prescaled.
def test_row_factor_leaves_the_pair_loop():
    """a_i b_j e^(-c |x - y|^2) * (-2c) (x - y): the pair loop reads b_j, the prescaled x and y
    and no constant; the epilogue multiplies by a_i and the constants once per row."""
    source = render_cuda(KERNELS["row_factor_j"])
    assert "EPILOGUE = true;" in source and "OUT_DIM = 3;" in source
    pair = section(source, "evaluate_pair")
    assert not constants(pair) and "jk::exp2_neg_nonnegative(" in pair
    assert pair.count("// Subtract") == 1
    assert "(o + 3)[0]" in section(source, "epilogue")  # a_i: the outer row's 4th value
    vector = render_cuda(KERNELS["row_vector_factor"])
    assert "jk::sin" in section(vector, "epilogue")
    assert "jk::sin" not in section(vector, "pre_outer")


@pytest.mark.parametrize("schedule", ["rows", "split"])
@pytest.mark.parametrize("name", ["row_factor_j", "row_factor_i", "row_vector_factor"])
def test_row_factors_under_emulation(kernels, name, schedule):
    check(kernels, name, schedule, **TIGHT)
    check(kernels, name, schedule, batch=(2,), seed=5, **TIGHT)
