"""CUDA kernels without a GPU, part 1: the source of every op, every reduction and every
derivative kernel compiles with NVRTC (for sm_90) and with nvcc (for sm_80): every kernel with
both compilers, and for both architectures (the headers have no architecture-specific code, so
compiling each source for both with both compilers would double the time for no new coverage);
the CUDA build (disk cache, compile errors, PTX fallback) and the launch plans.

Sources are compiled in two bundles per compiler run (one translation unit each, see
`cuda_emulator.harness.bundle`), in parallel on two cores. A bundle that compiled is remembered
in the kernel cache, keyed by its full text, the headers and the compiler, so that re-runs on an
unchanged tree skip it (CI starts from an empty cache). In CI (CI=true) nvcc must be present.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from cuda_emulator import specs
from cuda_emulator.harness import INCLUDE, bundle

from jaxkeops.codegen import cuda
from jaxkeops.codegen.printer import print_body
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.errors import CompilerNotFoundError, KernelCompileError
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.reductions import REDUCTIONS
from jaxkeops.runtime import cache_dir, cuda_build
from jaxkeops.runtime.build import headers_digest
from jaxkeops.runtime.nvrtc import find_nvrtc

NVRTC_ARCHS = (90,)
NVCC_ARCHS = (80,)
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def sources():
    return specs.all_sources()


def _nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        if IN_CI:
            pytest.fail("nvcc is not on PATH in CI, where the CUDA compile tests must run")
        pytest.skip("nvcc is not on PATH")
    return path


def _nvrtc():
    nvrtc = find_nvrtc()
    if nvrtc is None:
        pytest.skip('NVRTC not found (pip install "jaxkeops[cuda12]")')
    return nvrtc


def _halves(sources: dict[str, str]) -> list[dict[str, str]]:
    items = list(sources.items())
    return [dict(items[0::2]), dict(items[1::2])]


def _marker(*parts: str):
    h = hashlib.sha256()
    for part in (*parts, headers_digest(INCLUDE, "cuda")):
        h.update(part.encode() + b"\0")
    folder = cache_dir() / "cuda-compile-checks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{h.hexdigest()}.ok"


def test_every_reduction_has_a_cuda_kernel():
    assert specs.covers_every_reduction()
    for name in REDUCTIONS:
        assert any(r == name for r, _, _ in specs.CATALOG.values())


def test_cuda_kernel_uses_the_shared_formula_printer():
    """The pair body and the hoisted per-row values are the CPU printer's text, over the
    rewritten formulas (the weighted LSE's exponent in base 2, its constant on the parameter)."""
    spec = specs.reduction_spec("lse_weighted")
    kf = cuda.kernel_formulas(spec)
    source = cuda.render_cuda(spec)
    body = "\n".join("    " + line for line in print_body(kf.hoisted.formulas, kf.layout))
    assert body in source
    pre_outer = "\n".join("    " + line for line in print_body(kf.hoisted.outer, kf.raw_layout))
    assert pre_outer in source and "-1.4426950408889634" in pre_outer


@pytest.mark.parametrize("arch", NVRTC_ARCHS)
def test_nvrtc_compiles_every_kernel(sources, arch):
    nvrtc = _nvrtc()
    options = [*cuda_build.OPTIONS, f"-arch=sm_{arch}", f"-I{INCLUDE}"]
    texts = [bundle(h) for h in _halves(sources)]
    marker = _marker("nvrtc", nvrtc.version_string, " ".join(options), *texts)
    if marker.is_file():
        return
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda t: nvrtc.compile(t, f"bundle_sm{arch}.cu", options), texts))
    for r in results:
        assert r.ok, r.log[-8000:]
        assert r.image.startswith(b"\x7fELF")  # a cubin
    marker.touch()


@pytest.mark.slow
def test_nvcc_compiles_every_kernel(sources, tmp_path):
    nvcc = _nvcc()
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in NVCC_ARCHS]
    texts = [bundle(h) for h in _halves(sources)]
    marker = _marker("nvcc", cuda_build._nvcc_version(nvcc), " ".join(gencode), *texts)
    if marker.is_file():
        return
    procs = []
    for i, text in enumerate(texts):
        path = tmp_path / f"bundle{i}.cu"
        path.write_text(text)
        cmd = [nvcc, "--fatbin", *gencode, *cuda_build.OPTIONS, f"-I{INCLUDE}", str(path),
               "-o", str(tmp_path / f"bundle{i}.fatbin")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0, out[-8000:]
    marker.touch()


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXKEOPS_CACHE_DIR", str(tmp_path))
    return tmp_path


def _compiler():
    try:
        return cuda_build.find_cuda_compiler()
    except CompilerNotFoundError:
        if IN_CI:
            raise
        pytest.skip("no CUDA compiler")


def test_build_cuda_kernel_caches_by_content(private_cache):
    compiler = _compiler()
    source = cuda.render_cuda(specs.reduction_spec("sum"))
    key = cuda_build.cuda_kernel_key(source)
    assert key == cuda_build.cuda_kernel_key(source)
    before = cuda_build.CudaBuildStats.compiled
    path, target = cuda_build.build_cuda_kernel(source, key, 80, compiler)
    assert target == "sm_80" and path.parent == private_cache and path.stat().st_size > 0
    assert (private_cache / f"{key}.cu").read_text() == source
    assert cuda_build.CudaBuildStats.compiled == before + 1
    hits = cuda_build.CudaBuildStats.cache_hits
    assert cuda_build.build_cuda_kernel(source, key, 80, compiler) == (path, target)
    assert cuda_build.CudaBuildStats.cache_hits == hits + 1
    assert not list(private_cache.glob("*.tmp"))


def test_compile_error_carries_log_and_source(private_cache):
    compiler = _compiler()
    source = cuda.render_cuda(specs.reduction_spec("min")).replace(
        "using Reduction", "this is not C++;\nusing Reduction")
    key = cuda_build.cuda_kernel_key(source)
    with pytest.raises(KernelCompileError) as info:
        cuda_build.build_cuda_kernel(source, key, 80, compiler)
    err = info.value
    assert "error" in err.log and err.source_path in str(err)
    assert open(err.source_path).read() == source
    assert not list(private_cache.glob("*.cubin"))


def test_nvrtc_falls_back_to_ptx_for_newer_gpus(private_cache):
    nvrtc = _nvrtc()
    compiler = cuda_build.CudaCompiler("nvrtc", nvrtc.path, nvrtc.version_string)
    source = cuda.render_cuda(specs.reduction_spec("argkmin"))
    path, target = cuda_build.build_cuda_kernel(source, cuda_build.cuda_kernel_key(source), 999,
                                                compiler)
    assert target == f"compute_{max(nvrtc.archs)}"
    assert b".entry jk_main_v2" in path.read_bytes()


def test_missing_compiler_says_how_to_install(monkeypatch):
    import jaxkeops.runtime.cuda_build as cb

    monkeypatch.setattr(cb, "find_nvrtc", lambda: None)
    monkeypatch.setattr(cb.shutil, "which", lambda name: None)
    cb.find_cuda_compiler.cache_clear()
    try:
        with pytest.raises(CompilerNotFoundError, match=r"jaxkeops\[cuda12\]"):
            cb.find_cuda_compiler()
    finally:
        cb.find_cuda_compiler.cache_clear()


# ----------------------------------------------------------------------------------------------
# Launch plans.
def _spec_with_inner_dim(dim: int, dtype: str = "float32") -> KernelSpec:
    x, y = Var(0, dim, CAT_I), Var(1, dim, CAT_J)
    return KernelSpec((make("SqDist", x, y),), "Sum", 1, dtype)


def test_block_size_follows_the_shared_memory_budget():
    assert cuda.plan_launch(_spec_with_inner_dim(3), 10**5, 10**5, 1).block == 192
    # 416 B per row: y and |y|^2 (the dot-product form of the distance hoists it), 101 floats
    # padded to 104 for 16-byte vector loads
    assert cuda.tile_stride(_spec_with_inner_dim(100)) == 104
    plan = cuda.plan_launch(_spec_with_inner_dim(100), 10**5, 10**5, 1)
    assert plan.block == 96 and plan.smem_bytes == 96 * 416 <= cuda.SMEM_BUDGET
    assert cuda.plan_launch(_spec_with_inner_dim(3000, "float64"), 10, 10, 1).block == 2
    with pytest.raises(ValueError, match="shared memory"):
        cuda.plan_launch(_spec_with_inner_dim(7000, "float64"), 10, 10, 1)


def test_split_heuristic():
    spec = _spec_with_inner_dim(3)
    assert not cuda.plan_launch(spec, 10**6, 10**6, 1).split  # enough rows to fill a GPU
    assert not cuda.plan_launch(spec, 100, 2000, 1).split  # too little to split
    assert not cuda.plan_launch(spec, 100, 10**6, 1000).split  # the batch fills the GPU
    for n_out, n_red, n_batch in [(100, 10**6, 1), (1, 5000, 1), (3000, 10**5, 2)]:
        plan = cuda.plan_launch(spec, n_out, n_red, n_batch)
        assert plan.split and plan.chunk_len % plan.block == 0
        assert (plan.n_chunks - 1) * plan.chunk_len < n_red <= plan.n_chunks * plan.chunk_len
        assert plan.chunk_len >= cuda.MIN_CHUNK_TILES * plan.block
        values, indices = cuda.partial_sizes(spec)
        records = n_batch * plan.n_chunks * n_out
        assert plan.scratch_bytes == (records * values * 4 + 7) // 8 * 8 + records * indices * 8


def test_forced_schedules(monkeypatch):
    spec = specs.reduction_spec("kmin_argkmin")
    plan = cuda.plan_launch(spec, 37, 453, 1, schedule="split", block=32)
    assert (plan.n_chunks, plan.chunk_len, plan.block) == (15, 32, 32)
    assert cuda.partial_sizes(spec) == (6, 6)
    assert not cuda.plan_launch(spec, 5, 10**6, 1, schedule="rows").split
    monkeypatch.setenv("JAXKEOPS_CUDA_SCHEDULE", "split")
    assert cuda.plan_launch(spec, 10**6, 1000, 1).split
    monkeypatch.setenv("JAXKEOPS_CUDA_SCHEDULE", "diagonal")
    with pytest.raises(ValueError, match="schedule"):
        cuda.plan_launch(spec, 10, 10, 1)


def test_too_many_variables_is_a_clear_error():
    variables = [Var(i, 1, CAT_J) for i in range(60)]
    formula = variables[0]
    for v in variables[1:]:
        formula = make("Add", formula, v)
    spec = KernelSpec((make("Mult", formula, Var(60, 1, CAT_I)),), "Sum", 1, "float32")
    with pytest.raises(NotImplementedError, match="at most"):
        cuda.render_cuda(spec)
