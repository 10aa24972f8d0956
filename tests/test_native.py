"""Tests of the prebuilt native extension (jaxkeops._ext) with hand-written kernels.

The kernels here are compiled with g++ at test time against cuda_src/include, so these tests
exercise the C ABI, the registry and the generic FFI handler without any code generation.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_ext = pytest.importorskip("jaxkeops._ext")

INCLUDE_DIR = Path(__file__).resolve().parents[1] / "cuda_src" / "include"
TARGET = "jaxkeops_cpu"
DIM = 2

# out[i, d] = sum_j x[i, d] * y[j, d] + p, with roles [outer, inner, param].
KERNEL_SRC = r"""
#include "jaxkeops/kernel_abi.h"

#ifndef ABI_VERSION
#define ABI_VERSION JK_ABI_VERSION
#endif

extern "C" int jk_abi_version(void) { return ABI_VERSION; }

extern "C" int jk_run(const jk_task* t) {
  const float* x = static_cast<const float*>(t->args[0]);
  const float* y = static_cast<const float*>(t->args[1]);
  const float* p = static_cast<const float*>(t->args[2]);
  float* out = static_cast<float*>(t->outs[0]);
#ifdef FAIL_CODE
  if (t->row_end > t->row_begin) return FAIL_CODE;
#endif
  for (int64_t i = t->row_begin; i < t->row_end; ++i) {
    for (int d = 0; d < DIM; ++d) {
      double acc = 0.0;
      for (int64_t j = 0; j < t->n_red; ++j) acc += double(x[i * DIM + d]) * y[j * DIM + d];
      out[i * DIM + d] = float(acc + p[0]);
    }
  }
  return 0;
}
"""

# Ids are 64-bit content hashes in the real package; one is >= 2**63 on purpose.
GOOD_ID = 0xC0FFEE0000000001
OOM_ID = 0x0BAD000000000001
CODE7_ID = 0x0BAD000000000007
UNKNOWN_ID = 0x1234567890ABCDEF

pytestmark = pytest.mark.cpu_only


def as_attr(kernel_id: int) -> np.int64:
    """The FFI attribute is an int64: reinterpret the unsigned hash."""
    return np.uint64(kernel_id).view(np.int64)


def _compile(tmp: Path, name: str, *defines: str) -> str:
    src = tmp / f"{name}.cc"
    src.write_text(KERNEL_SRC)
    so = tmp / f"{name}.so"
    cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{INCLUDE_DIR}", f"-DDIM={DIM}"]
    cmd += [f"-D{d}" for d in defines] + [str(src), "-o", str(so)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return str(so)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not available")
    tmp = tmp_path_factory.mktemp("kernels")
    paths = {
        "good": _compile(tmp, "good"),
        "oom": _compile(tmp, "oom", "FAIL_CODE=1"),
        "code7": _compile(tmp, "code7", "FAIL_CODE=7"),
        "old_abi": _compile(tmp, "old_abi", "ABI_VERSION=999"),
    }
    # Registration may already have been done by `import jaxkeops`; doing it again must be
    # harmless for the handler table.
    jax.ffi.register_ffi_target(TARGET, _ext.cpu_handler(), platform="cpu")
    _ext.register_kernel(GOOD_ID, paths["good"])
    _ext.register_kernel(OOM_ID, paths["oom"])
    _ext.register_kernel(CODE7_ID, paths["code7"])
    return paths


def call(x, y, p, kernel_id=GOOD_ID, n_batch=0, n_red=None, roles=(0, 1, 2), out_shape=None,
         source=""):
    if n_red is None:
        n_red = y.shape[-2]
    if out_shape is None:
        out_shape = (*np.broadcast_shapes(x.shape[:-2], y.shape[:-2]), x.shape[-2], DIM)
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32))(
        x,
        y,
        p,
        kernel_id=as_attr(kernel_id),
        source=source,
        roles=np.array(roles, np.int64),
        n_batch=np.int64(n_batch),
        n_red=np.int64(n_red),
        ranged=np.int64(0),
    )


def reference(x, y, p):
    x, y, p = (np.asarray(a, np.float64) for a in (x, y, p))
    # sum_j x[..., i, d] * y[..., j, d] = x[..., i, d] * sum_j y[..., j, d]
    return x * y.sum(axis=-2, keepdims=True) + p[..., :1, :1]


def data(rng, batch_x, batch_y, m, n):
    x = rng.standard_normal((*batch_x, m, DIM)).astype(np.float32)
    y = rng.standard_normal((*batch_y, n, DIM)).astype(np.float32)
    p = np.full((*batch_x, 1, 1), 0.5, np.float32) if batch_x else np.float32([[0.5]])
    return x, y, p


def test_module_info(kernels):
    assert _ext.abi_version() == 3  # 3: jk_task carries a mode (pre-packing) and scratch
    assert _ext.is_registered(GOOD_ID)
    assert _ext.is_registered(int(as_attr(GOOD_ID)))  # the signed view names the same kernel
    assert not _ext.is_registered(UNKNOWN_ID)
    count = _ext.registered_count()
    assert count >= 3
    _ext.register_kernel(GOOD_ID, kernels["good"])  # same id again: no-op
    _ext.register_kernel(GOOD_ID, "/nonexistent/path.so")  # no-op, not even dlopen'ed
    assert _ext.registered_count() == count


@pytest.mark.parametrize("jit", [False, True])
def test_small_inline(kernels, jit):
    x, y, p = data(np.random.default_rng(0), (), (), 7, 5)
    f = jax.jit(call) if jit else call
    out = f(x, y, p)
    assert out.shape == (7, DIM) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference(x, y, p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_large_threaded(kernels, jit):
    x, y, p = data(np.random.default_rng(1), (), (), 4000, 3000)
    f = jax.jit(call) if jit else call
    out = np.asarray(f(x, y, p))
    np.testing.assert_allclose(out, reference(x, y, p), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("m, n", [(6, 4), (1500, 400)])  # inline, threaded
def test_batch_broadcast(kernels, jit, m, n):
    rng = np.random.default_rng(2)
    x, _, _ = data(rng, (2, 3), (), m, n)
    y = rng.standard_normal((1, 3, n, DIM)).astype(np.float32)  # broadcast over batch dim 0
    p = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)  # broadcast over batch dim 1
    f = jax.jit(call, static_argnames="n_batch") if jit else call
    out = np.asarray(f(x, y, p, n_batch=2))
    assert out.shape == (2, 3, m, DIM)
    np.testing.assert_allclose(out, reference(x, y, p), rtol=1e-5, atol=1e-4)


def test_big_batch_few_rows(kernels):
    # Work above the threading threshold that can only be split across batch elements.
    rng = np.random.default_rng(3)
    x, _, _ = data(rng, (300,), (), 2, 1000)
    y = rng.standard_normal((1, 1000, DIM)).astype(np.float32)
    p = np.float32([[[0.25]]])
    out = np.asarray(call(x, y, p, n_batch=1))
    np.testing.assert_allclose(out, reference(x, y, p), rtol=1e-5, atol=1e-4)


def test_empty_reduction_still_calls_kernel(kernels):
    x = np.ones((3, DIM), np.float32)
    y = np.ones((0, DIM), np.float32)
    out = np.asarray(call(x, y, np.float32([[2.0]])))
    np.testing.assert_array_equal(out, np.full((3, DIM), 2.0, np.float32))


def test_empty_output(kernels):
    x = np.ones((0, DIM), np.float32)
    y = np.ones((4, DIM), np.float32)
    # The failing kernel proves the handler does not call into the kernel at all.
    out = call(x, y, np.float32([[2.0]]), kernel_id=OOM_ID)
    assert out.shape == (0, DIM)
    out = call(np.ones((0, 3, DIM), np.float32), y[None], np.float32([[[1.0]]]), n_batch=1)
    assert out.shape == (0, 3, DIM)


def test_unknown_kernel(kernels):
    x, y, p = data(np.random.default_rng(4), (), (), 3, 3)
    with pytest.raises(Exception, match="not loaded"):
        np.asarray(call(x, y, p, kernel_id=UNKNOWN_ID))


@pytest.fixture
def resolver():
    """Replaces jaxkeops's resolver (which builds generated sources) for one test."""
    from jaxkeops import _lowering

    calls = []
    yield calls
    _ext.set_resolver(_lowering.resolve_exported_kernel)


def test_an_unknown_kernel_with_a_source_is_resolved_once_then_runs(kernels, resolver):
    """The path of a jax.export artifact in a new process: the handler hands the call's id and
    source to the resolver, which registers a kernel under that id."""
    new_id = 0xE0000000000000AB

    def resolve(kernel_id, source):
        resolver.append((kernel_id, source))
        _ext.register_kernel(kernel_id, kernels["good"])

    _ext.set_resolver(resolve)
    x, y, p = data(np.random.default_rng(8), (), (), 5, 6)
    out = call(x, y, p, kernel_id=new_id, source="// the kernel's source")
    np.testing.assert_allclose(np.asarray(out), reference(x, y, p), rtol=1e-5)
    assert resolver == [(as_attr(new_id), "// the kernel's source")]
    call(x, y, p, kernel_id=new_id, source="// the kernel's source").block_until_ready()
    assert len(resolver) == 1


def test_a_failing_resolver_gives_an_error_not_a_crash(kernels, resolver):
    def resolve(kernel_id, source):
        raise RuntimeError("no compiler here")

    _ext.set_resolver(resolve)
    x, y, p = data(np.random.default_rng(9), (), (), 3, 3)
    with pytest.raises(Exception, match="could not be built: .*no compiler here"):
        np.asarray(call(x, y, p, kernel_id=0xE0000000000000AC, source="int x;"))


def test_a_resolver_that_registers_nothing_is_reported(kernels, resolver):
    _ext.set_resolver(lambda kernel_id, source: None)
    x, y, p = data(np.random.default_rng(10), (), (), 3, 3)
    with pytest.raises(Exception, match="did not register kernel 0xe0000000000000ad"):
        np.asarray(call(x, y, p, kernel_id=0xE0000000000000AD, source="int x;"))


@pytest.mark.parametrize("m, n", [(4, 4), (4000, 3000)])  # inline, threaded
@pytest.mark.parametrize("kernel_id, message", [(OOM_ID, "out of memory"), (CODE7_ID, "code 7")])
def test_kernel_failure(kernels, m, n, kernel_id, message):
    x, y, p = data(np.random.default_rng(5), (), (), m, n)
    with pytest.raises(Exception, match=message):
        np.asarray(call(x, y, p, kernel_id=kernel_id))


def test_back_to_back_threaded_calls_from_several_threads_are_each_correct(kernels):
    """Pool threads linger after a call and join the next one, whichever Python thread made
    it: calls of different sizes from 4 threads, back to back, with failing calls between, must
    each give their own result (or their own error)."""
    rng = np.random.default_rng(7)
    cases = [data(rng, (), (), m, n) for m, n in [(700, 600), (1500, 400), (300, 2000)]]
    f = jax.jit(call, static_argnames="kernel_id")
    errors = []

    def worker(seed):
        for k in range(30):
            x, y, p = cases[(seed + k) % len(cases)]
            if k % 7 == 3:
                try:
                    np.asarray(f(x, y, p, kernel_id=CODE7_ID))
                    errors.append("a failing kernel gave no error")
                except Exception as e:  # noqa: BLE001 - the message is what is checked
                    if "code 7" not in str(e):
                        errors.append(str(e))
                continue
            out = np.asarray(f(x, y, p))
            if not np.allclose(out, reference(x, y, p), rtol=1e-5, atol=1e-4):
                errors.append(f"wrong result for shapes {x.shape}, {y.shape}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_bad_rank(kernels):
    x, y, p = data(np.random.default_rng(6), (), (), 3, 3)
    with pytest.raises(Exception, match=r"input 0 has shape \(1, 3, 2\), expected rank 2"):
        np.asarray(call(x[None], y, p, out_shape=(3, DIM)))


def test_bad_rows(kernels):
    x, y, p = data(np.random.default_rng(7), (), (), 3, 5)
    with pytest.raises(Exception, match=r"input 1 has shape \(5, 2\) but 4 rows"):
        np.asarray(call(x, y, p, n_red=4))


def test_bad_batch(kernels):
    rng = np.random.default_rng(8)
    x, _, _ = data(rng, (3,), (), 4, 4)
    y = rng.standard_normal((2, 4, DIM)).astype(np.float32)
    with pytest.raises(Exception, match=r"input 1 has shape \(2, 4, 2\) whose batch dim 0"):
        np.asarray(call(x, y, np.float32([[[0.0]]]), n_batch=1, out_shape=(3, 4, DIM)))


def test_bad_roles(kernels):
    x, y, p = data(np.random.default_rng(9), (), (), 3, 3)
    with pytest.raises(Exception, match="3 kernel inputs but 2 roles"):
        np.asarray(call(x, y, p, roles=(0, 1)))
    with pytest.raises(Exception, match="unknown role 5"):
        np.asarray(call(x, y, p, roles=(0, 1, 5)))


def test_register_errors(kernels, tmp_path):
    with pytest.raises(RuntimeError, match="cannot load kernel library '/nonexistent/k.so'"):
        _ext.register_kernel(0xDEAD, "/nonexistent/k.so")
    with pytest.raises(RuntimeError, match="ABI version 999"):
        _ext.register_kernel(0xDEAE, kernels["old_abi"])
    empty = tmp_path / "empty.cc"
    empty.write_text('extern "C" int unrelated(void) { return 0; }\n')
    so = tmp_path / "empty.so"
    subprocess.run(["g++", "-shared", "-fPIC", str(empty), "-o", str(so)], check=True)
    with pytest.raises(RuntimeError, match="does not export jk_run"):
        _ext.register_kernel(0xDEAF, str(so))
    assert not any(_ext.is_registered(i) for i in (0xDEAD, 0xDEAE, 0xDEAF))
