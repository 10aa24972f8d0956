"""jax.export across processes, and JAX's persistent compilation cache across processes.

An exported computation carries each kernel's id and source in its custom calls; a process that
deserializes it builds (or finds in its own disk cache) every kernel at the first execution.
Each scenario runs the artifact in a new Python process and compares with the exporting
process's own results (themselves checked against the dense reference).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import jaxkeops
from jaxkeops import Vi, Vj
from jaxkeops.runtime import cache_dir
from jaxkeops.testing import dense_reduce  # noqa: F401  (the module the references come from)

pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")

M, N, D = 23, 31, 3


def _loss(x, y, b):
    """A Gaussian-sum energy: its gradient needs derivative kernels over both axes."""
    k = (-Vi(x).sqdist(Vj(y)) / 2).exp()
    return jnp.sum((k @ b) ** 2)


def _program(x, y, b):
    """Values, a gradient, a log-sum-exp and a K-nearest-neighbour query: 5 distinct kernels."""
    value, grads = jax.value_and_grad(_loss, argnums=(0, 1))(x, y, b)
    lse = (-Vi(x).sqdist(Vj(y))).logsumexp(axis=1)
    knn = Vi(x).sqdist(Vj(y)).argKmin(K=3, axis=1)
    return value, grads[0], grads[1], lse, knn


def _dense_program(x, y, b):
    sq = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)

    def loss(x, y):
        s = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)
        return jnp.sum((jnp.exp(-s / 2) @ b) ** 2)

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(x, y)
    lse = jax.nn.logsumexp(-sq, axis=1, keepdims=True)
    knn = jnp.argsort(sq, axis=1)[:, :3]
    return value, grads[0], grads[1], lse, knn


_RUNNER = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import jaxkeops  # registers the FFI handlers that the artifact calls
    blob, inputs, output = sys.argv[1:4]
    exported = jax.export.deserialize(bytearray(open(blob, "rb").read()))
    args = np.load(inputs)
    results = exported.call(*(args[f"a{i}"] for i in range(len(args.files))))
    np.savez(output, *[np.asarray(r) for r in results])
    from jaxkeops.runtime import loaded_kernels
    print("loaded", len(loaded_kernels()))
""")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The exported program, its inputs and this process's results, on disk."""
    folder = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(7)
    args = (rng.normal(size=(M, D)), rng.normal(size=(N, D)), rng.normal(size=(N, 2)))
    exported = jaxkeops.export(jax.jit(_program))(*args)
    (folder / "program.bin").write_bytes(exported.serialize())
    np.savez(folder / "inputs.npz", **{f"a{i}": a for i, a in enumerate(args)})
    expected = [np.asarray(r) for r in jax.jit(_program)(*args)]
    return folder, args, expected


def _run_in_new_process(folder: Path, tmp_path: Path, **env: str) -> tuple[list, str]:
    output = tmp_path / "out.npz"
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER)
    full_env = {**os.environ, **env}
    proc = subprocess.run(
        [sys.executable, str(script), str(folder / "program.bin"), str(folder / "inputs.npz"),
         str(output)], capture_output=True, text=True, env=full_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(output) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))], proc.stdout + proc.stderr


def _check(results, expected):
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        if np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want)
        else:
            assert_close(got, want, "float64")


def test_exporting_process_matches_the_dense_reference(artifact):
    _, args, expected = artifact
    dense = _dense_program(*(jnp.asarray(a) for a in args))
    for got, want in zip(expected, dense):
        if np.issubdtype(np.asarray(want).dtype, np.integer):
            np.testing.assert_array_equal(got, want)
        else:
            assert_close(got, want, "float64")


def test_export_runs_in_a_new_process_with_the_cache_kept(artifact, tmp_path):
    folder, _, expected = artifact
    results, log = _run_in_new_process(folder, tmp_path,
                                       JAXKEOPS_CACHE_DIR=str(cache_dir()))
    _check(results, expected)
    assert "loaded 5" in log


def test_export_runs_in_a_new_process_with_the_cache_cleared(artifact, tmp_path):
    folder, _, expected = artifact
    empty = tmp_path / "empty-cache"
    results, _ = _run_in_new_process(folder, tmp_path, JAXKEOPS_CACHE_DIR=str(empty))
    _check(results, expected)
    assert len(list(empty.glob("*.so"))) == 5  # built there from the sources in the artifact


def test_export_runs_where_its_kernels_were_never_compiled(artifact, tmp_path):
    """Another optimization level gives every kernel another content key (as another compiler
    would): nothing in any cache has the ids the artifact names, so each is built from the
    source it carries and registered under the artifact's id."""
    folder, _, expected = artifact
    other = "2" if os.environ.get("JAXKEOPS_OPT_LEVEL") != "2" else "1"
    fresh = tmp_path / "fresh-cache"
    results, _ = _run_in_new_process(folder, tmp_path, JAXKEOPS_CACHE_DIR=str(fresh),
                                     JAXKEOPS_OPT_LEVEL=other)
    _check(results, expected)
    assert len(list(fresh.glob("*.so"))) == 5


def test_export_without_a_working_compiler_names_the_kernel_and_the_compiler(artifact,
                                                                             tmp_path):
    folder, _, _ = artifact
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER)
    env = {**os.environ, "JAXKEOPS_CACHE_DIR": str(tmp_path / "c"), "CXX": "/bin/false"}
    proc = subprocess.run(
        [sys.executable, str(script), str(folder / "program.bin"), str(folder / "inputs.npz"),
         str(tmp_path / "out.npz")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert "of an exported computation could not be built" in proc.stderr
    assert "/bin/false" in proc.stderr
    assert "Fatal Python error" not in proc.stderr and "Segmentation" not in proc.stderr


def test_export_needs_the_disabled_custom_call_checks():
    f = jax.jit(lambda x: Vi(x).sqdist(Vj(x)).sum(axis=1))
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="jaxkeops_cpu"):
        jax.export.export(f)(x)
    checks = jaxkeops.export_disabled_checks()
    exported = jax.export.export(f, disabled_checks=checks)(x)
    assert exported.out_avals[0].shape == (4, 1)


def test_export_lowers_for_cuda_on_a_machine_without_a_gpu():
    """The CUDA call carries its source too: the GPU process compiles it on first use."""
    f = jax.jit(lambda x, y: (-Vi(x).sqdist(Vj(y))).exp().sum(axis=1))
    x = jax.ShapeDtypeStruct((8, 3), jnp.float32)
    exported = jaxkeops.export(f, platforms=("cpu", "cuda"))(x, x)
    text = exported.mlir_module()
    assert "jaxkeops_cuda" in text and "jaxkeops_cpu" in text
    assert text.count("source = ") >= 2
    assert exported.platforms == ("cpu", "cuda")


_CACHE_RUNNER = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
    from jaxkeops import Vi, Vj
    x = np.linspace(0, 1, 30, dtype=np.float32).reshape(10, 3)
    f = jax.jit(lambda x: (-Vi(x).sqdist(Vj(x))).exp().sum(axis=1))
    value = float(f(x)[0, 0])
    print("hits", len(hits), "value", value)
""")


def test_persistent_compilation_cache_serves_a_second_process(tmp_path):
    script = tmp_path / "cache_runner.py"
    script.write_text(_CACHE_RUNNER)
    xla_cache = tmp_path / "xla-cache"

    def run():
        proc = subprocess.run([sys.executable, str(script), str(xla_cache)], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _, hits, _, value = proc.stdout.split()
        return int(hits), float(value)

    first_hits, first = run()
    assert first_hits == 0 and any(xla_cache.iterdir())
    second_hits, second = run()
    assert second_hits >= 1
    x = np.linspace(0, 1, 30).reshape(10, 3)
    expected = np.exp(-((x[0] - x) ** 2).sum(-1)).sum()
    assert abs(first - expected) < 1e-5 * expected and second == first
