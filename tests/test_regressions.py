"""Regression tests, each named after what broke."""

import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxkeops import Pm, Vi, Vj
from jaxkeops.formulas import CAT_I, Const, Var, make
from jaxkeops.runtime.build import headers_digest, include_dir


def test_scalar_passed_to_vi_is_an_error_not_a_constant():
    with pytest.raises(ValueError, match="scalar"):
        Vi(3.0)
    assert Pm(3.0).formula == Var(0, 1, 2)


def test_lazytensor_comparison_has_no_truth_value():
    with pytest.raises(TypeError, match="no truth value"):
        bool(Vi(np.ones((3, 2))) < 1.0)


def test_scalar_to_the_power_of_lazytensor_builds_powf():
    x = np.linspace(0.1, 1.0, 6).reshape(3, 2)
    got = (2.0 ** Vi(x)).formula
    assert got == make("Powf", Const(2.0), Var(0, 2, CAT_I))
    value = (2.0 ** Vi(x) + 0 * Vj(np.ones((4, 2)))).sum(axis=1)
    np.testing.assert_allclose(np.asarray(value), 4 * 2.0 ** x, rtol=1e-6)


def test_cuda_header_edits_do_not_change_cpu_kernel_keys(tmp_path):
    copy = tmp_path / "include"
    shutil.copytree(include_dir(), copy)
    before = headers_digest(copy)
    (copy / "jaxkeops" / "cuda_extra.h").write_text("// a CUDA-only header\n")
    headers_digest.cache_clear()
    assert headers_digest(copy) == before
    with open(copy / "jaxkeops" / "math.h", "a") as f:
        f.write("// a CPU header edit\n")
    headers_digest.cache_clear()
    assert headers_digest(copy) != before


def test_cuda_kernel_keys_follow_every_header(tmp_path):
    """CUDA kernels include the CUDA headers and the shared ones: an edit of either must give
    new keys (one digest function, two selections of headers)."""
    copy = tmp_path / "include"
    shutil.copytree(include_dir(), copy)
    before = headers_digest(copy, "cuda")
    for name in ("cuda_reductions.h", "math.h"):
        with open(copy / "jaxkeops" / name, "a") as f:
            f.write("// an edit\n")
        headers_digest.cache_clear()
        after = headers_digest(copy, "cuda")
        assert after != before, name
        before = after


def test_min_reference_keeps_nan_like_numpy():
    from jaxkeops.reductions import REDUCTIONS

    v = np.random.default_rng(0).random((1031, 10, 3)).astype(np.float32)
    v[500, :, 1] = np.nan
    (best,) = REDUCTIONS["Min"].reference(jnp, [jnp.asarray(v)], 0)
    assert np.isnan(np.asarray(best)[:, 1]).all()
    assert not np.isnan(np.asarray(best)[:, 0]).any()
