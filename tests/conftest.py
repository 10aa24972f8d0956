"""Shared test configuration: float64 support, a seeded rng, tolerances, and the helpers that
run one reduction through jaxkeops and through the dense reference of `jaxkeops.testing`."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

# The suite builds about 1,600 kernels, each run on a few dozen points: -O1 builds them about
# 3x faster than the default -O3 (same generated code, same IEEE semantics), and -Og another 30%
# faster (test_autodiff.py + test_ott.py from an empty cache: 607 s at -O1, 491 s at -Og).
# test_opt_level.py checks kernels built at -O3; the examples and the memory test run at -O3
# in subprocesses.
os.environ.setdefault("JAXKEOPS_OPT_LEVEL", "g")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxkeops._shapes import index_dtype  # noqa: E402
from jaxkeops.codegen.spec import KernelSpec  # noqa: E402
from jaxkeops.lazy.reduce import run_reduction  # noqa: E402
from jaxkeops.testing import dense_reduce  # noqa: E402

TOLERANCES = {
    # (rtol, atol); atol is scaled by the magnitude of the expected result.
    "float32": (2e-4, 2e-5),
    "float64": (1e-10, 1e-12),
}


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed (a fresh one for every test)."""
    return np.random.default_rng(20240607)


def assert_close(actual, expected, dtype, rtol: float | None = None, atol: float | None = None):
    """Elementwise |actual - expected| <= atol * scale + rtol * |expected|, with scale the
    largest finite magnitude of `expected` (at least 1). inf and NaN must match exactly."""
    dtype = np.dtype(dtype).name
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    base_rtol, base_atol = TOLERANCES[dtype]
    rtol = base_rtol if rtol is None else rtol
    atol = base_atol if atol is None else atol
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(
        actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol * scale,
        equal_nan=True,
    )


def assert_tree_close(actual, expected, dtype, **kw):
    """assert_close on every leaf of two pytrees of the same structure."""
    a_leaves, a_tree = jax.tree.flatten(actual)
    e_leaves, e_tree = jax.tree.flatten(expected)
    assert a_tree == e_tree, f"{a_tree} != {e_tree}"
    for a, e in zip(a_leaves, e_leaves):
        assert_close(a, e, dtype, **kw)


def random_like(rng, tree):
    """Standard normal arrays shaped like the leaves of `tree` (tangents, cotangents)."""
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), tree)


def make_spec(formulas: Sequence, reduction: str, axis: int, variables: Sequence, dtype: str,
              k: int | None = None, sum_scheme: str = "block") -> KernelSpec:
    """The KernelSpec `run_reduction` builds for the same call (for the dense reference)."""
    return KernelSpec(
        formulas=tuple(formulas), reduction=reduction, axis=axis, dtype=dtype,
        index_dtype=index_dtype(), k=k, sum_scheme=sum_scheme, args=tuple(variables),
    )


def run_both(formulas: Sequence, reduction: str, axis: int, variables: Sequence,
             arrays: Sequence, k: int | None = None, sum_scheme: str = "block",
             pad: bool = False):
    """(jaxkeops outputs, dense reference outputs) of one reduction, as tuples of arrays."""
    dtype = np.asarray(arrays[0]).dtype.name
    names = [repr(v) for v in variables]
    got = run_reduction(tuple(formulas), reduction, axis, tuple(variables), list(arrays), names,
                        k=k, sum_scheme=sum_scheme, pad=pad)
    spec = make_spec(formulas, reduction, axis, variables, dtype, k=k, sum_scheme=sum_scheme)
    ref = dense_reference(spec)(*arrays)
    assert len(got) == len(ref)
    return got, ref


@functools.cache
def dense_reference(spec: KernelSpec):
    """`dense_reduce` for `spec`, jitted (one XLA program instead of one per jnp op)."""
    names = [repr(v) for v in spec.args]
    return jax.jit(lambda *arrays: dense_reduce(spec, list(arrays), names))


def pytest_collection_modifyitems(config, items):
    """`cpu_only` tests inspect the CPU backend itself; they skip under JAX_PLATFORMS=cuda."""
    if jax.default_backend() == "cpu":
        return
    skip = pytest.mark.skip(reason="inspects the CPU backend (kernels, FFI target, compile cache)")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)
