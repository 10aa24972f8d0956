"""The C++ optimisation level of CPU kernels: -O3 by default, $JAXKEOPS_OPT_LEVEL to change it,
and kernels built at -O3 (the level users get; the rest of the suite builds at -Og for speed,
see conftest.py) match numpy in float64 for every kind of reduction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxkeops.runtime import toolchain
from jaxkeops.runtime.toolchain import optimization_flag


def _run(script: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "JAXKEOPS_OPT_LEVEL"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, env=environment, timeout=600)


def test_default_level_is_O3():
    result = _run("""
        from jaxkeops.runtime.toolchain import find_toolchain
        print(" ".join(find_toolchain().flags))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "-O3" in result.stdout.split()


@pytest.mark.parametrize("value, flag", [("2", "-O2"), ("-O0", "-O0"), (" 1 ", "-O1"),
                                                ("g", "-Og")])
def test_level_from_the_environment(monkeypatch, value, flag):
    monkeypatch.setenv("JAXKEOPS_OPT_LEVEL", value)
    assert optimization_flag() == flag


@pytest.mark.parametrize("value", ["fast", "4", "-Ofast", "", "s"])
def test_bad_level_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("JAXKEOPS_OPT_LEVEL", value)
    with pytest.raises(ValueError, match="JAXKEOPS_OPT_LEVEL must be one of 0, 1, 2, 3, g"):
        optimization_flag()


# Every kind of reduction (sums with and without the matrix-product schedule, the log-sum-exp
# family, selections with indices), float32 and float64, a batch dim, and a gradient, built at
# -O3 and compared with numpy in float64 inside the subprocess.
O3_SCRIPT = """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jaxkeops import Vi, Vj
    from jaxkeops.runtime.toolchain import find_toolchain

    rng = np.random.default_rng(0)
    errors = {"flags": " ".join(find_toolchain().flags)}
    for dtype in ("float32", "float64"):
        x = rng.normal(size=(2, 203, 3)).astype(dtype)
        y = rng.normal(size=(2, 301, 3)).astype(dtype)
        b = rng.normal(size=(2, 301, 2)).astype(dtype)
        d2 = ((x[:, :, None, :].astype(np.float64) - y[:, None]) ** 2).sum(-1)
        k = np.exp(-d2)
        lse = np.log(np.exp(-d2 + b[:, None, :, 0]).sum(-1))
        soft = np.einsum("bij,bjd->bid", np.exp(-d2 + b[:, None, :, 0] - lse[..., None]), b)
        D = Vi(x).sqdist(Vj(y))
        got = {
            "gauss_sum": ((-D).exp() * Vj(b)).sum(axis=2),
            "lse": (Vj(b[..., :1]) - D).logsumexp(axis=2)[..., 0],
            "softmax": (Vj(b[..., :1]) - D).sumsoftmaxweight(Vj(b), axis=2),
            "min": D.min(axis=2)[..., 0],
            "argkmin": D.argKmin(4, axis=2),
            "max_i": D.max(axis=1)[..., 0],
        }
        want = {
            "gauss_sum": k @ b, "lse": lse, "softmax": soft, "min": d2.min(-1),
            "argkmin": np.argsort(d2, -1)[..., :4], "max_i": d2.max(1),
        }
        grad = jax.grad(lambda x: ((-Vi(x).sqdist(Vj(y))).exp() * Vj(b)).sum(axis=2).sum())(x)
        want_grad = (-2 * (k * b.sum(-1)[:, None, :])[..., None]
                     * (x[:, :, None, :] - y[:, None])).sum(2)
        got["gauss_grad"], want["gauss_grad"] = grad, want_grad
        for name in got:
            a, e = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
            assert a.shape == e.shape, (name, a.shape, e.shape)
            scale = max(1.0, float(np.abs(e).max()))
            errors[f"{name}/{dtype}"] = float(np.abs(a - e).max() / scale)
    print(json.dumps(errors))
"""


def test_kernels_built_at_O3_match_numpy():
    result = _run(O3_SCRIPT, JAXKEOPS_OPT_LEVEL="3")
    assert result.returncode == 0, result.stderr[-4000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert "-O3" in errors.pop("flags").split()
    for name, error in errors.items():
        limit = 0 if name.startswith("argkmin") else 2e-5 if name.endswith("float32") else 1e-12
        assert error <= limit, (name, error)


@pytest.mark.parametrize("version,is_gcc", [("g++ (Debian 12.2.0-14) 12.2.0", True),
                                            ("Ubuntu clang version 17.0.6", False)])
def test_loop_alignment_and_sra_flags_only_for_gcc(monkeypatch, version, is_gcc):
    """GCC gets -falign-loops/-falign-jumps (the K-min kernels' speed depended on where their
    loop landed) and a larger limit for breaking structures into registers (the reduction
    states); other compilers get flags they are sure to know."""
    monkeypatch.setattr(toolchain, "_probe_version", lambda path: (version, None))
    flags = toolchain.find_toolchain.__wrapped__().flags
    tuning = toolchain.GCC_TUNING_FLAGS
    assert (flags[-len(tuning):] == tuning) is is_gcc
    assert is_gcc or not set(tuning) & set(flags)
