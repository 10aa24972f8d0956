"""CUDA kernels without a GPU, part 3: lowering for platform "cuda" on this machine produces
the launcher's custom call with the expected attributes, for a reduction and its gradient,
without needing a GPU or a CUDA compiler; with a GPU present it compiles and registers the
kernel for each architecture (simulated here)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkeops._lowering_cuda as lowering_cuda
from jaxkeops import Vi, Vj
from jaxkeops._shapes import index_dtype
from jaxkeops.codegen.cuda import plan_launch, render_cuda
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.runtime import cache_dir, cuda_devices
from jaxkeops.runtime.cuda_build import CudaBuildStats, cuda_kernel_key
from jaxkeops.runtime.loader import kernel_id


def gauss(x, y, b):
    d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
    return ((-d).exp() * Vj(b)).sum(axis=1)


def lowered(f, *args, platforms=("cuda",)) -> str:
    return jax.jit(f).trace(*args).lower(lowering_platforms=platforms).as_text()


def custom_calls(text: str) -> list[str]:
    return [line for line in text.splitlines() if "stablehlo.custom_call" in line]


def attributes(line: str) -> dict[str, str]:
    config = re.search(r"mhlo.backend_config = \{(.*?)\}", line).group(1)
    return dict(re.findall(r"(\w+) = (dense<[^>]*>|-?\d+)", config))


def arrays(m=100, n=2000, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.standard_normal((m, 3)), dtype),
            jnp.asarray(rng.standard_normal((n, 3)), dtype),
            jnp.asarray(rng.standard_normal((n, 2)), dtype))


def gauss_spec(dtype="float32") -> KernelSpec:
    x, y, b = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 2, CAT_J)
    formula = make("Mult", make("Exp", make("Minus", make("Sum", make(
        "Square", make("Subtract", x, y))))), b)
    return KernelSpec((formula,), "Sum", 1, dtype, index_dtype=index_dtype(), args=(x, y, b))


def test_reduction_lowers_to_the_cuda_custom_call():
    compiled = CudaBuildStats.compiled
    (call,) = custom_calls(lowered(gauss, *arrays()))
    assert "@jaxkeops_cuda(%arg0, %arg1, %arg2)" in call
    assert call.endswith("-> tensor<100x2xf32>")
    attrs = attributes(call)
    plan = plan_launch(gauss_spec(), 100, 2000, 1)
    expected = {"n_batch": "0", "n_red": "2000", "block": str(plan.block), "n_chunks": "1",
                "chunk_len": "2000", "smem": str(plan.smem_bytes),
                "roles": "dense<[0, 1, 1]>"}
    assert {k: attrs[k] for k in expected} == expected
    if not cuda_devices.gpu_archs():  # no GPU: nothing compiled, the source is in the cache
        assert CudaBuildStats.compiled == compiled
        ids = {kernel_id(cuda_kernel_key(render_cuda(gauss_spec())))}
        assert int(attrs["kernel_id"]) in ids
        key = cuda_kernel_key(render_cuda(gauss_spec()))
        assert (cache_dir() / f"{key}.cu").is_file()


def test_gradient_lowers_to_cuda_custom_calls_only():
    loss = lambda x, y, b: jnp.sum(gauss(x, y, b) ** 2)
    text = lowered(jax.grad(loss, argnums=(0, 1, 2)), *arrays())
    calls = custom_calls(text)
    assert len(calls) >= 3  # the forward pass, then transposed reductions over i and j
    assert all("@jaxkeops_cuda(" in c for c in calls) and "jaxkeops_cpu" not in text
    n_reds = sorted(attributes(c)["n_red"] for c in calls)
    assert "100" in n_reds and "2000" in n_reds  # cotangents of y, b reduce over i


def test_few_rows_take_the_split_schedule_with_a_scratch_output():
    (call,) = custom_calls(lowered(gauss, *arrays(m=10, n=100_000)))
    attrs = attributes(call)
    plan = plan_launch(gauss_spec(), 10, 100_000, 1)
    assert plan.split and attrs["n_chunks"] == str(plan.n_chunks)
    assert attrs["chunk_len"] == str(plan.chunk_len)
    assert call.endswith(f"-> (tensor<10x2xf32>, tensor<{plan.scratch_bytes}xui8>)")


def test_index_outputs_and_batch_dims():
    def knn(x, y):
        d = ((Vi(x) - Vj(y)) ** 2).sum(-1)
        return d.argKmin(K=4, axis=1)

    x, y, _ = arrays()
    xb = jnp.stack([x, x + 1.0])
    (call,) = custom_calls(lowered(jax.vmap(knn, in_axes=(0, None)), xb, y))
    itype = "i64" if index_dtype() == "int64" else "i32"
    assert call.endswith(f"-> tensor<2x100x4x{itype}>")
    assert attributes(call)["n_batch"] == "1"


def test_the_platform_picks_the_lowering():
    text = lowered(gauss, *arrays(), platforms=("cpu", "cuda"))
    assert "@jaxkeops_cpu(" in text and "@jaxkeops_cuda(" in text
    text = lowered(gauss, *arrays(), platforms=("cpu",))
    assert "@jaxkeops_cuda(" not in text


@pytest.fixture
def fake_launcher(monkeypatch, tmp_path):
    """A CUDA compiler (or a skip), a fresh cache, and a launcher that records the images
    registered with it as (kernel_id, target, path); its `source_paths` attribute maps kernel
    ids to the source files registered for error messages."""
    from jaxkeops.runtime import cuda_build

    try:
        cuda_build.find_cuda_compiler()
    except Exception:
        pytest.skip("no CUDA compiler")
    registered = []

    class FakeLauncher:
        source_paths = {}

        @staticmethod
        def register_image(kid, target, path):
            registered.append((kid, target, path))

        @staticmethod
        def register_source_path(kid, path):
            FakeLauncher.source_paths[kid] = path

        @staticmethod
        def handlers():
            return {}

    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cuda_devices, "launcher", lambda: FakeLauncher)
    return registered


def test_with_a_gpu_lowering_compiles_and_registers(monkeypatch, fake_launcher):
    """The GPU path, with the devices and the launcher faked: one image per architecture."""
    registered = fake_launcher
    monkeypatch.setattr(cuda_devices, "gpu_archs", lambda: (80, 90))
    monkeypatch.setattr(cuda_devices, "register_cuda_target", lambda: None)
    monkeypatch.setattr(lowering_cuda, "_kernels", {})
    spec = gauss_spec("float64")
    kid = lowering_cuda.cuda_kernel_id(spec, "float64", "float64")
    assert [(k, t) for k, t, _ in registered] == [(kid, "sm_80"), (kid, "sm_90")]
    assert all(open(p, "rb").read() for _, _, p in registered)
    source_path = cuda_devices.launcher().source_paths[kid]  # named by the launcher's errors
    assert open(source_path).read() == lowering_cuda.cuda_kernel(spec, "float64", "float64")[1]
    assert lowering_cuda.cuda_kernel_id(spec, "float64", "float64") == kid
    assert len(registered) == 2  # once per process


def test_a_kernel_lowered_elsewhere_is_compiled_from_the_source_in_the_call(fake_launcher):
    """What the launcher does for a jax.export artifact whose kernel this process never lowered:
    the call's `source` attribute is compiled for the device's architecture and registered
    under the call's `kernel_id`."""
    text = lowered(gauss, *arrays(), platforms=("cuda",))
    (call,) = custom_calls(text)
    kid = int(attributes(call)["kernel_id"])
    source = render_cuda(gauss_spec("float32"), in_dtype="float32", out_dtype="float32")
    assert kid == kernel_id(cuda_kernel_key(source))
    lowering_cuda.resolve_cuda_kernel(kid, source, 90)
    [(got_id, target, path)] = fake_launcher
    assert (got_id, target) == (kid, "sm_90") and open(path, "rb").read()


def test_launcher_module():
    ext = pytest.importorskip("jaxkeops._ext_cuda")
    assert ext.abi_version() == 2
    assert set(ext.handlers()) == {"initialize", "execute"}
    assert ext.registered_targets(12345) == []
    with pytest.raises(RuntimeError, match="cannot read"):
        ext.register_image(12345, "sm_80", "/nonexistent/kernel.cubin")
    if not cuda_devices.gpu_archs():
        assert ext.driver_error()  # no GPU here: the launcher says why it cannot run
        assert ext.device_shared_memory_limits() == []
