"""Fast exp in CUDA formula bodies (issue 14), without a GPU.

In the formula body of a CUDA kernel, float exp(x) is the GPU's ex2.approx.ftz.f32 of x log2(e),
and exp(c a) is rewritten to 2^((c log2 e) a) so that the constant absorbs log2(e); the
reductions (log-sum-exp, softmax) keep IEEE 2^x (ex2.approx.f32 without flush to zero) and
float64 keeps CUDA's exp. Checked here: the generated source and its PTX (NVRTC) show each path
where it belongs; the emulator's model of the instruction errs by up to the documented 2 ulp
(it must not hide errors a GPU makes); through a whole emulated kernel, exp stays within its
error bound, 2.5 ulp + |x| 2^-23 relative (the instruction, and the roundings of the exponent
x log2 e), keeps inf and NaN, and flushes results below 2^-126 to 0 (float64 does not)."""

from __future__ import annotations

import ctypes
import re
import shutil

import numpy as np
import pytest
from conftest import assert_close
from cuda_emulator.harness import INCLUDE, build_module, emulate, emulator, nvrtc_ptx

from jaxkeops.codegen.cuda import render_cuda
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Const, Var, make
from jaxkeops.runtime import cuda_build
from jaxkeops.runtime.nvrtc import find_nvrtc
from jaxkeops.testing import dense_reduce

needs_gpp = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulation needs g++")

ULP = 2.0**-23  # of a float in [1, 2): ulps below are relative to the float's own binade
MODEL_ULPS = 2.5  # the documented 2 ulp of ex2.approx, and the rounding to float
# Relative error per unit of |x| in exp(x) = 2^(x log2 e): the exponent is rounded twice, the
# constant (log2 e, or c log2 e when folded into the formula's c) and its product with x, by up
# to 2^-24 relatively each; 2^t turns an error d in t into ln 2 d relative.
EXPONENT_ROUNDING = 2.0**-23
FLUSHED_BELOW = -87.33654  # e^x < 2^-126 (the smallest normal float): flushed to +0
FAST = "ex2.approx.ftz.f32"
IEEE = "ex2.approx.f32"

X, Y, B = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 2, CAT_J)
SIGMA = 0.7
GAUSS = make("Exp", make("Divide", make("Minus", make("SqDist", X, Y)), Const(2 * SIGMA**2)))
# One reduced row (y = 0) makes each output the formula's own value: x_i -> exp(x_i - 0) and,
# through the rewrite to 2^((-0.3 log2 e) x), x_i -> exp(-0.3 x_i).
T, Z = Var(0, 1, CAT_I), Var(1, 1, CAT_J)
EXP_OF_X = make("Exp", make("Subtract", T, Z))
EXP_OF_SCALED_X = make("Exp", make("Mult", make("Subtract", T, Z), Const(-0.3)))


def gauss_spec(reduction: str, dtype: str = "float32") -> KernelSpec:
    distance = make("Minus", make("SqDist", X, Y))
    formulas, args = {"Sum": ((make("Mult", GAUSS, B),), (X, Y, B)),
                      "LogSumExp": ((distance,), (X, Y)),
                      "LogSumExp weighted by a Gaussian": ((distance, make("Mult", GAUSS, B)),
                                                           (X, Y, B))}[reduction]
    return KernelSpec(formulas, reduction.split()[0], 1, dtype, args=args)


def exp_spec(formula, dtype: str = "float32") -> KernelSpec:
    return KernelSpec((formula,), "Sum", 1, dtype, args=(T, Z))


def count(text: str, instruction: str) -> int:
    return len(re.findall(rf"\b{re.escape(instruction)}\s", text))


def evaluate_pair(source: str) -> str:
    start = source.index("evaluate_pair(")
    return source[start:source.index("\n  }\n", start)]


# ----------------------------------------------------------------------------------------------
# The generated source and its PTX.
def test_gaussian_sum_takes_the_fast_exp_in_the_formula_body():
    source = render_cuda(gauss_spec("Sum"))
    body = evaluate_pair(source)
    # log2 e folded, the Minus too, and no clamp (a squared distance is never negative)
    assert "jk::exp2_neg_nonnegative(" in body and "jk::exp(" not in body
    text = nvrtc_ptx(source)
    assert count(text, FAST) >= 1  # once per copy of the (unrolled) pair loop
    assert count(text, IEEE) == 0
    assert "cvt.sat.f32.f32" not in text  # no trace of the accurate expf's range reduction


def test_log_sum_exp_reduction_keeps_the_ieee_exp():
    source = render_cuda(gauss_spec("LogSumExp"))
    assert "jk::exp" not in evaluate_pair(source)
    text = nvrtc_ptx(source)
    assert count(text, FAST) == 0
    assert count(text, IEEE) >= 2  # per term in jk_main, rescaling in jk_combine


def test_both_paths_in_one_kernel_and_it_compiles_to_a_cubin():
    """LogSumExp weighted by a Gaussian: the weight's exp is fast, the reduction's is not."""
    source = render_cuda(gauss_spec("LogSumExp weighted by a Gaussian"))
    text = nvrtc_ptx(source)
    assert count(text, FAST) >= 1 and count(text, IEEE) >= 2
    result = find_nvrtc().compile(source, "kernel.cu",
                                  [*cuda_build.OPTIONS, "-arch=sm_90", f"-I{INCLUDE}"])
    assert result.ok and result.image.startswith(b"\x7fELF"), result.log[-8000:]


def test_float64_keeps_the_accurate_exp_and_half_storage_takes_the_float_path():
    assert count(nvrtc_ptx(render_cuda(gauss_spec("Sum", "float64"))), "ex2.approx") == 0
    half = render_cuda(gauss_spec("Sum"), in_dtype="float16", out_dtype="float16")
    assert count(nvrtc_ptx(half), FAST) >= 1 and count(nvrtc_ptx(half), IEEE) == 0


# ----------------------------------------------------------------------------------------------
# The emulator's model of ex2.approx.
def emulated_ex2(x: np.ndarray, ftz: bool) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty_like(x)
    emulator().jk_emu_ex2(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(out.ctypes.data),
                          ctypes.c_int64(x.size), ctypes.c_int(int(ftz)))
    return out


def ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in ulps of the float nearest to `exact`."""
    return np.abs(got.astype(np.float64) - exact) / np.spacing(exact.astype(np.float32))


@needs_gpp
@pytest.mark.parametrize("ftz", [True, False])
def test_the_model_errs_by_up_to_the_documented_two_ulp(ftz):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-125.9, 127.9, 400_001, dtype=np.float32),
                        rng.uniform(-1, 1, 100_000).astype(np.float32)])
    exact = np.exp2(x.astype(np.float64))
    err = ulps(emulated_ex2(x, ftz), exact)
    assert err.max() <= MODEL_ULPS
    assert err.max() > 2.0 and err.mean() > 0.8  # it errs, as a GPU may: no exact results


@needs_gpp
def test_the_model_keeps_ieee_values_and_flushes_only_with_ftz():
    special = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, -130.0, -149.0, -151.0, 1e-40])
    fast, ieee = emulated_ex2(special, True), emulated_ex2(special, False)
    np.testing.assert_array_equal(fast[:4], [1, 1, np.inf, 0])
    np.testing.assert_array_equal(ieee[:4], [1, 1, np.inf, 0])
    assert np.isnan(fast[4]) and np.isnan(ieee[4])
    assert (fast[5:8] == 0).all()  # subnormal results flushed to +0
    np.testing.assert_array_equal(ieee[5:8], np.exp2(special[5:8].astype(np.float64))
                                  .astype(np.float32))  # kept, correctly rounded
    assert fast[8] == 1.0  # a subnormal input is flushed to 0 first


# ----------------------------------------------------------------------------------------------
# The emulated kernels.
EXP_KERNELS = {"exp_f32": exp_spec(EXP_OF_X), "exp_scaled_f32": exp_spec(EXP_OF_SCALED_X),
               "exp_f64": exp_spec(EXP_OF_X, "float64"),
               "gauss_sum": gauss_spec("Sum"), "gauss_lse": gauss_spec("LogSumExp"),
               "gauss_lse_weighted": gauss_spec("LogSumExp weighted by a Gaussian")}


@pytest.fixture(scope="module")
def kernels():
    if shutil.which("g++") is None:
        pytest.skip("the emulation needs g++")
    return build_module({k: render_cuda(s) for k, s in EXP_KERNELS.items()}, tag="fast-exp")


def exp_through_the_kernel(kernels, name: str, t: np.ndarray) -> np.ndarray:
    spec = EXP_KERNELS[name]
    arrays = [t[:, None].astype(spec.dtype), np.zeros((1, 1), spec.dtype)]
    return emulate(kernels, name, spec, arrays, block=64)[0][:, 0]


@pytest.mark.parametrize("name, scale", [("exp_f32", 1.0), ("exp_scaled_f32", -0.3)])
def test_formula_exp_within_its_error_bound(kernels, name, scale):
    """exp(x) = 2^(x log2 e) over the whole range of normal results: 2.5 ulp from the
    instruction, and |x| EXPONENT_ROUNDING relative from the exponent (at most 2.5 + |x| ulp
    of 1 in all; CUDA documents 2 + 1.17 |x| ulp for __expf); the measured maxima are
    printed."""
    x = np.linspace(-87.0, 88.0, 20_001)
    t = (x / scale).astype(np.float32)
    got = exp_through_the_kernel(kernels, name, t)
    x = t.astype(np.float64) * scale
    relative = np.abs(got - np.exp(x)) / np.exp(x)
    bound = MODEL_ULPS * ULP + np.abs(x) * EXPONENT_ROUNDING
    assert (relative <= bound).all(), (relative / bound).max()
    small = np.abs(x) <= 1
    print(f"\n{name}: max relative error {relative.max():.3g} ({relative.max() / ULP:.1f} "
          f"ulp), {relative[small].max() / ULP:.2f} ulp for |x| <= 1, "
          f"{(relative / bound).max():.2f} of the bound")


def test_formula_exp_keeps_ieee_values_and_flushes_tiny_results(kernels):
    t = np.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.8, FLUSHED_BELOW - 0.01, -87.0])
    got = exp_through_the_kernel(kernels, "exp_f32", t)
    assert got[0] == np.inf and got[1] == 0 and np.isnan(got[2])
    assert got[3] == 1 and got[4] == 1  # exactly: a Gaussian kernel's diagonal is 1
    assert got[5] == np.inf and got[6] == 0 and got[7] > 0
    exact64 = exp_through_the_kernel(kernels, "exp_f64", t.astype(np.float64))
    assert exact64[6] > 0  # float64 keeps the full range


def test_float64_exp_is_the_accurate_one(kernels):
    t = np.linspace(-700.0, 700.0, 5001)
    got = exp_through_the_kernel(kernels, "exp_f64", t)
    np.testing.assert_allclose(got, np.exp(t), rtol=4e-16)


@pytest.mark.parametrize("name", ["gauss_sum", "gauss_lse", "gauss_lse_weighted"])
@pytest.mark.parametrize("schedule", ["rows", "split"])
def test_gaussian_kernels_against_the_float64_reference(kernels, name, schedule):
    spec = EXP_KERNELS[name]
    rng = np.random.default_rng(1)
    # positive weights: no cancellation, which would amplify the float32 rounding of the sums
    arrays = [rng.normal(size=(70, 3)), rng.normal(size=(300, 3)),
              rng.uniform(0.5, 1.5, size=(300, 2))]
    arrays = arrays[:len(spec.args)]
    got = emulate(kernels, name, spec, [a.astype(np.float32) for a in arrays],
                  schedule=schedule, block=32, chunks=3)
    spec64 = KernelSpec(spec.formulas, spec.reduction, 1, "float64", args=spec.args)
    ref = dense_reduce(spec64, [a.astype(np.float32).astype(np.float64) for a in arrays])
    for g, r in zip(got, ref):
        assert_close(g, np.asarray(r), "float32", rtol=2e-6, atol=1e-6)
