"""CUDA runtime without a GPU: the block-size choice for the shared memory a GPU allows, the
launcher (jaxkeops._ext_cuda) against a fake CUDA driver, and its driver declarations against
the CUDA toolkit's cuda.h.

The fake driver is a small C library compiled here and handed to the launcher through
$JAXKEOPS_CUDA_DRIVER in a fresh process (the launcher loads its driver once per process). It
records what the launcher asks of it (module loads, launches and their shared memory, syncs,
opt-ins) and can play a stream being captured into a CUDA graph, a context created again with
a reused pointer, a kernel faulting on the device, or a GPU with less shared memory. The
launcher's test hooks run its Initialize and Execute stages past XLA's buffer decoding.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxkeops._lowering_cuda as lowering_cuda
from jaxkeops import Vi, Vj
from jaxkeops._shapes import index_dtype
from jaxkeops.codegen.cuda import block_size, plan_launch, render_cuda, tile_row_bytes
from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, Var, make
from jaxkeops.runtime import cuda_devices

KIB = 1024
H100_OPTIN = 227 * KIB  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100 / H200
REPO = Path(__file__).resolve().parents[1]


def gauss_spec(d: int, dtype: str = "float32") -> KernelSpec:
    """sum_j exp(-|x_i - y_j|^2) b_j with x, y of dimension d: the reduced rows hold y and b."""
    x, y, b = Var(0, d, CAT_I), Var(1, d, CAT_J), Var(2, 1, CAT_J)
    formula = make("Mult", make("Exp", make("Minus", make("Sum", make(
        "Square", make("Subtract", x, y))))), b)
    return KernelSpec((formula,), "Sum", 1, dtype, index_dtype=index_dtype(), args=(x, y, b))


# ---------------------------------------------------------------------------------------------
# Block size and the shared memory limit (pure functions)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d, limit, expected", [
    (3, 48 * KIB, 192), (64, 48 * KIB, 192), (1000, 48 * KIB, 12),
    (3, H100_OPTIN, 192), (64, H100_OPTIN, 192), (1000, H100_OPTIN, 32),
])
def test_block_size_for_the_shared_memory_limit(d, limit, expected):
    row_bytes = d * 4  # float32 rows of the reduced variable
    block = lowering_cuda.choose_block(row_bytes, limit)
    assert block == expected
    assert block * row_bytes <= limit  # the tile fits
    assert block == 192 or block % 32 == 0 or block < 32  # whole warps when one fits


def test_block_size_edge_cases():
    assert lowering_cuda.choose_block(0, 48 * KIB) == 192  # no reduced variables
    assert lowering_cuda.choose_block(256, 48 * KIB) == 192  # 192 rows of 256 B = 48 KiB exactly
    assert lowering_cuda.choose_block(257, 48 * KIB) == 160
    assert lowering_cuda.choose_block(8000, H100_OPTIN) == 29  # float64, D = 1000: < one warp
    assert lowering_cuda.choose_block(60 * KIB, 48 * KIB) == 0


@pytest.mark.parametrize("d", [3, 64, 65, 300, 1000, 12288])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_at_48_kib_the_choice_is_the_launch_plans(d, dtype):
    """Below the opt-in, the lowering keeps codegen's block size (one rule, not two)."""
    spec = gauss_spec(d, dtype)
    row_bytes = tile_row_bytes(spec)
    # The tile holds the reduced variables the pair loop reads, rows padded to 16 bytes.
    assert row_bytes >= d * (8 if dtype == "float64" else 4) and row_bytes % 16 == 0
    assert lowering_cuda.block_for_shared_memory(spec, 48 * KIB) is None
    if row_bytes <= 48 * KIB:
        assert lowering_cuda.choose_block(row_bytes, 48 * KIB) == block_size(spec)


def test_wide_rows_get_bigger_blocks_with_the_opt_in():
    spec = gauss_spec(1000)  # 1001 floats per reduced row: 12 rows in 48 KiB
    assert block_size(spec) == 12
    assert lowering_cuda.block_for_shared_memory(spec, H100_OPTIN) == 32
    assert lowering_cuda.block_for_shared_memory(gauss_spec(3), H100_OPTIN) is None
    with pytest.raises(ValueError, match="bytes of shared memory a CUDA block may use"):
        lowering_cuda.block_for_shared_memory(gauss_spec(60_000), H100_OPTIN)


def test_common_shared_memory_limit():
    assert cuda_devices.common_shared_memory_limit([]) == 48 * KIB
    assert cuda_devices.common_shared_memory_limit([H100_OPTIN, 99 * KIB]) == 99 * KIB
    assert cuda_devices.common_shared_memory_limit([16 * KIB]) == 48 * KIB
    if not cuda_devices.gpu_archs():  # a computation lowered here must run on any GPU
        assert cuda_devices.shared_memory_limit() == 48 * KIB


def _custom_call_attributes(f, *args) -> dict[str, str]:
    text = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    (line,) = [ln for ln in text.splitlines() if "stablehlo.custom_call" in ln]
    config = re.search(r"mhlo.backend_config = \{(.*?)\}", line).group(1)
    return dict(re.findall(r"(\w+) = (dense<[^>]*>|-?\d+)", config))


@pytest.mark.parametrize("limit, block", [(48 * KIB, 12), (H100_OPTIN, 32)])
def test_the_lowering_sizes_blocks_for_the_gpus_shared_memory(monkeypatch, limit, block):
    """D = 1000: the custom call asks for the block and the shared memory that fit the limit
    of this process's GPUs (faked; without GPUs nothing is compiled)."""
    monkeypatch.setattr(cuda_devices, "shared_memory_limit", lambda: limit)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 1000)).astype(np.float32)
    y = rng.standard_normal((700, 1000)).astype(np.float32)

    def f(x, y):
        return (-((Vi(x) - Vj(y)) ** 2).sum(-1)).exp().sum(axis=1)

    attrs = _custom_call_attributes(f, x, y)
    assert attrs["block"] == str(block)
    row_bytes = int(attrs["smem"]) // block
    assert row_bytes * block == int(attrs["smem"]) <= limit
    assert 1000 * 4 <= row_bytes <= 1008 * 4  # D = 1000 floats (and a norm), padded
    plan = plan_launch(gauss_spec(3), 500, 700, 1)  # narrow rows: untouched by the limit
    assert plan.block == 192


# ---------------------------------------------------------------------------------------------
# The launcher against a fake driver
# ---------------------------------------------------------------------------------------------

FAKE_DRIVER = r"""
#include <stdint.h>
#include <string.h>

typedef int CUresult;
enum { N = 64 };
static struct { const char* key; long long value; } state[] = {
  {"cc_major", 9}, {"cc_minor", 0}, {"optin0", 232448}, {"optin1", 101376}, {"devices", 1},
  {"static_smem", 0}, {"capturing", 0}, {"launch_result", 0}, {"fault_on_launch", 0},
  {"pending", 0}, {"loads", 0}, {"launches", 0}, {"syncs", 0}, {"opt_ins", 0},
  {"opt_in_value", -1}, {"last_smem", -1}, {"last_block", -1}, {"last_grid_x", -1},
  {"loads_without_context", 0},
};
static long long* at(const char* key) {
  for (unsigned k = 0; k < sizeof(state) / sizeof(state[0]); ++k)
    if (strcmp(state[k].key, key) == 0) return &state[k].value;
  return 0;
}
long long fake_get(const char* key) { long long* p = at(key); return p ? *p : -999; }
int fake_set(const char* key, long long value) {
  long long* p = at(key);
  if (!p) return 1;
  *p = value;
  return 0;
}
#define V(key) (*at(key))

static uintptr_t streams[N], stream_ctx[N], ctxs[N];
static unsigned long long ctx_ids[N];
static int n_streams, n_ctxs;
// stream -> context pointer, and that pointer's id from now on (a context created again).
void fake_bind(uintptr_t stream, uintptr_t ctx, unsigned long long id) {
  int k = 0;
  while (k < n_streams && streams[k] != stream) ++k;
  if (k == n_streams) ++n_streams;
  streams[k] = stream, stream_ctx[k] = ctx;
  k = 0;
  while (k < n_ctxs && ctxs[k] != ctx) ++k;
  if (k == n_ctxs) ++n_ctxs;
  ctxs[k] = ctx, ctx_ids[k] = id;
}
static uintptr_t ctx_stack[N];
static int depth;
static uintptr_t funcs[N];
static int func_max_smem[N], n_funcs;

CUresult cuInit(unsigned flags) { (void)flags; return 0; }
CUresult cuGetErrorString(CUresult e, const char** s) {
  *s = e == 700 ? "an illegal memory access was encountered"
     : e == 201 ? "invalid device context" : e == 1 ? "invalid argument" : "fake error";
  return 0;
}
CUresult cuDeviceGetCount(int* n) { *n = (int)V("devices"); return 0; }
CUresult cuDeviceGet(int* dev, int ordinal) { *dev = ordinal; return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
  if (attr == 75) *v = (int)V("cc_major");
  else if (attr == 76) *v = (int)V("cc_minor");
  else if (attr == 97) *v = (int)(dev == 0 ? V("optin0") : V("optin1"));
  else return 1;
  return 0;
}
CUresult cuStreamGetCtx(void* s, void** ctx) {
  for (int k = 0; k < n_streams; ++k)
    if (streams[k] == (uintptr_t)s) { *ctx = (void*)stream_ctx[k]; return 0; }
  return 400;
}
CUresult cuCtxGetId(void* ctx, unsigned long long* id) {
  for (int k = 0; k < n_ctxs; ++k)
    if (ctxs[k] == (uintptr_t)ctx) { *id = ctx_ids[k]; return 0; }
  return 201;
}
CUresult cuStreamIsCapturing(void* s, int* status) {
  (void)s;
  *status = (int)V("capturing");
  return 0;
}
CUresult cuStreamSynchronize(void* s) {
  (void)s;
  ++V("syncs");
  CUresult e = (CUresult)V("pending");
  V("pending") = 0;
  return e;
}
CUresult cuCtxPushCurrent_v2(void* ctx) { ctx_stack[depth++] = (uintptr_t)ctx; return 0; }
CUresult cuCtxPopCurrent_v2(void** ctx) { *ctx = (void*)ctx_stack[--depth]; return 0; }
CUresult cuCtxGetDevice(int* dev) { *dev = 0; return depth ? 0 : 201; }
CUresult cuModuleLoadData(void** module, const void* image) {
  (void)image;
  if (!depth) { ++V("loads_without_context"); return 201; }
  *module = (void*)(uintptr_t)(0x1000 * ++V("loads"));
  return 0;
}
CUresult cuModuleGetFunction(void** fn, void* module, const char* name) {
  if (strncmp(name, "jk_main", 7) != 0 && strncmp(name, "jk_combine", 10) != 0) return 500;
  funcs[n_funcs] = (uintptr_t)module + (name[3] == 'm' ? 1 : 2);
  func_max_smem[n_funcs] = 48 * 1024 - (int)V("static_smem");
  *fn = (void*)funcs[n_funcs++];
  return 0;
}
static int find_func(void* fn) {
  for (int k = 0; k < n_funcs; ++k) if (funcs[k] == (uintptr_t)fn) return k;
  return -1;
}
CUresult cuFuncGetAttribute(int* v, int attr, void* fn) {
  (void)fn;
  if (attr != 1) return 1;
  *v = (int)V("static_smem");
  return 0;
}
CUresult cuFuncSetAttribute(void* fn, int attr, int value) {
  int k = find_func(fn);
  if (attr != 8 || k < 0) return 1;
  ++V("opt_ins");
  V("opt_in_value") = value;
  func_max_smem[k] = value;
  return 0;
}
CUresult cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned smem, void* s, void** params,
                        void** extra) {
  (void)gy; (void)gz; (void)by; (void)bz; (void)s; (void)params; (void)extra;
  int k = find_func(fn);
  if (k < 0 || (int)smem > func_max_smem[k]) return 1;  // as the driver: past the opt-in
  if (V("launch_result")) return (CUresult)V("launch_result");
  ++V("launches");
  V("last_smem") = smem, V("last_block") = bx, V("last_grid_x") = gx;
  if (V("fault_on_launch")) V("pending") = V("fault_on_launch");
  return 0;
}
"""

# Runs in a fresh process with $JAXKEOPS_CUDA_DRIVER set: loads the launcher's shared library
# directly (no jax import), plays one scenario and prints its observations as JSON.
SCENARIO_RUNNER = r"""
import ctypes, importlib.util, json, sys
ext_path, driver_path, image_path, scenario = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("_ext_cuda", ext_path)
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
fake = ctypes.CDLL(driver_path)  # the same library the launcher opened: shared state
fake.fake_get.restype = ctypes.c_longlong
fake.fake_get.argtypes = [ctypes.c_char_p]
fake.fake_set.argtypes = [ctypes.c_char_p, ctypes.c_longlong]
fake.fake_bind.argtypes = [ctypes.c_size_t, ctypes.c_size_t, ctypes.c_ulonglong]
get = lambda key: fake.fake_get(key.encode())
def set_(key, value):
    assert fake.fake_set(key.encode(), value) == 0, key
KID = 0xDEED0000000000AB - (1 << 64)  # an int64 attribute, as in a custom call
SOURCE = "// Generated by jaxkeops (CUDA): Sum(Exp(Var(0,1000,0))) over j [float32]\n..."
M, N, D = 500, 700, 1000
def gauss_buffers(d=D):  # x (outer), y and b (inner), the output
    return [([M, d], 4, 0), ([N, d], 4, 1), ([N, 1], 4, 1), ([M, 1], 4, 3)]
def launch(stream, block, smem, source=SOURCE):
    return ext._launch_for_test(stream, KID, source, gauss_buffers(), [0, N, block, smem, 1, N])
out = {}
exec(sys.stdin.read())
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory):
    """(launcher library, fake driver library, a registered image file)."""
    ext = pytest.importorskip("jaxkeops._ext_cuda")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler for the fake CUDA driver")
    tmp = tmp_path_factory.mktemp("fake_cuda")
    (tmp / "fake_cuda.c").write_text(FAKE_DRIVER)
    driver = tmp / "libfakecuda.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", str(tmp / "fake_cuda.c"), "-o",
                    str(driver)], check=True, capture_output=True, text=True)
    image = tmp / "kernel.cubin"
    image.write_bytes(b"\x7fELF fake cubin")
    return ext.__file__, str(driver), str(image)


def run_scenario(fake_driver, code: str, sync: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAXKEOPS_CUDA_SYNC"}
    env["JAXKEOPS_CUDA_DRIVER"] = fake_driver[1]
    if sync:
        env["JAXKEOPS_CUDA_SYNC"] = "1"
    result = subprocess.run([sys.executable, "-c", SCENARIO_RUNNER, *fake_driver, "scenario"],
                            input=textwrap.dedent(code), env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def test_the_fake_driver_is_the_launchers(fake_driver):
    out = run_scenario(fake_driver, """
        out["driver_error"] = ext.driver_error()
        out["sync_mode"] = ext.sync_mode()
        set_("devices", 2)
        out["limits"] = ext.device_shared_memory_limits()
    """)
    assert out == {"driver_error": "", "sync_mode": False, "limits": [232448, 101376]}
    assert cuda_devices.common_shared_memory_limit(out["limits"]) == 101376


def test_initialize_loads_once_per_context_id_not_per_pointer(fake_driver):
    """A context destroyed and created again can reuse the pointer: its new id must load the
    module again (keying by the pointer would launch a function of the dead context)."""
    out = run_scenario(fake_driver, """
        ext.register_image(KID, "sm_90", image_path)
        fake.fake_bind(1, 0xA000, 7)
        out["first"] = ext._prepare_for_test(1, KID, SOURCE)
        out["again"] = ext._prepare_for_test(1, KID, SOURCE)
        out["loads_one_context"] = get("loads")
        fake.fake_bind(2, 0xA000, 8)  # same pointer, a new context
        out["new_context"] = ext._prepare_for_test(2, KID, SOURCE)
        out["loads_two_contexts"] = get("loads")
        out["launch"] = launch(2, 12, 12 * 1001 * 4)
        out["loads_after_launch"] = get("loads")
        out["without_context"] = get("loads_without_context")
    """)
    assert out["first"] == out["again"] == out["new_context"] == out["launch"] == ""
    assert out["loads_one_context"] == 1
    assert out["loads_two_contexts"] == out["loads_after_launch"] == 2
    assert out["without_context"] == 0  # the stream's context was made current to load


def test_no_module_is_loaded_while_the_stream_is_captured(fake_driver):
    out = run_scenario(fake_driver, """
        ext.register_image(KID, "sm_90", image_path)
        fake.fake_bind(1, 0xB000, 11)
        set_("capturing", 1)
        out["prepare_in_capture"] = ext._prepare_for_test(1, KID, SOURCE)
        out["launch_in_capture"] = launch(1, 12, 12 * 1001 * 4)
        out["loads_in_capture"] = get("loads")
        set_("capturing", 0)
        out["prepare"] = ext._prepare_for_test(1, KID, SOURCE)  # XLA's Initialize stage
        set_("capturing", 1)
        out["launch_captured"] = launch(1, 12, 12 * 1001 * 4)
        out["loads"], out["launches"] = get("loads"), get("launches")
    """)
    for key in ("prepare_in_capture", "launch_in_capture"):
        assert "captured into a CUDA graph" in out[key], out[key]
        assert "0xdeed0000000000ab" in out[key] and "Sum(Exp(Var(0,1000,0)))" in out[key]
    assert out["loads_in_capture"] == 0
    assert out["prepare"] == out["launch_captured"] == ""
    assert (out["loads"], out["launches"]) == (1, 1)


def test_kernels_opt_in_to_the_devices_shared_memory(fake_driver):
    out = run_scenario(fake_driver, """
        ext.register_image(KID, "sm_90", image_path)
        set_("static_smem", 1024)
        fake.fake_bind(1, 0xC000, 21)  # an H100: 227 KiB per block after the opt-in
        out["big_block"] = launch(1, 32, 32 * 1001 * 4)
        out["opt_in"], out["smem"] = get("opt_in_value"), get("last_smem")
        out["too_big"] = launch(1, 64, 64 * 1001 * 4)
        set_("optin0", 49152)  # a GPU without more shared memory
        fake.fake_bind(2, 0xD000, 22)
        out["small_gpu"] = launch(2, 32, 32 * 1001 * 4)
        out["small_gpu_48k"] = launch(2, 11, 11 * 1001 * 4)
        out["opt_ins"], out["launches"] = get("opt_ins"), get("launches")
    """)
    assert out["big_block"] == ""
    assert out["opt_in"] == 232448 - 1024  # the device's limit less the static shared memory
    assert out["smem"] == 32 * 1001 * 4
    assert "needs 256256 bytes of dynamic shared memory" in out["too_big"]
    assert "more than the 231424 this device allows" in out["too_big"]
    assert "more than the 48128 this device allows" in out["small_gpu"]
    assert out["small_gpu_48k"] == ""
    assert (out["opt_ins"], out["launches"]) == (1, 2)  # no opt-in where it gains nothing


def test_a_kernel_compiled_on_demand_by_the_resolver(fake_driver):
    """A call whose kernel this process never lowered (jax.export): the launcher asks Python
    to compile it for the device's compute capability, then loads it."""
    out = run_scenario(fake_driver, """
        asked = []
        def resolve(kid, source, cc):
            asked.append([kid, source, cc])
            ext.register_image(kid, "sm_%d" % cc, image_path)
        ext.set_resolver(resolve)
        set_("cc_major", 8), set_("cc_minor", 6)
        fake.fake_bind(1, 0xE000, 31)
        out["prepare"] = ext._prepare_for_test(1, KID, SOURCE)
        out["asked"], out["loads"] = asked, get("loads")
        out["targets"] = ext.registered_targets(KID)
        out["no_source"] = ext._prepare_for_test(1, KID + 1, "")
    """)
    assert out["prepare"] == ""
    assert out["asked"] == [[-(1 << 64) + 0xDEED0000000000AB, out["asked"][0][1], 86]]
    assert out["asked"][0][1].startswith("// Generated by jaxkeops (CUDA)")
    assert out["loads"] == 1 and out["targets"] == ["sm_86"]
    assert "carries no source" in out["no_source"]


def test_launch_errors_name_the_kernel(fake_driver):
    out = run_scenario(fake_driver, """
        ext.register_image(KID, "sm_90", image_path)
        ext.register_source_path(KID, "/cache/abc.cu")
        fake.fake_bind(1, 0xF000, 41)
        set_("launch_result", 1)
        out["failed"] = launch(1, 12, 12 * 1001 * 4)
        set_("launch_result", 0)
        set_("fault_on_launch", 700)  # without the sync mode a fault surfaces later
        out["faulted"] = launch(1, 12, 12 * 1001 * 4)
        out["syncs"] = get("syncs")
    """)
    assert out["failed"].startswith("launching CUDA kernel 0xdeed0000000000ab "
                                     "(Sum(Exp(Var(0,1000,0))) over j [float32]; source "
                                     "/cache/abc.cu) failed: CUDA error 1 (invalid argument)")
    assert "block 12" in out["failed"]
    assert out["faulted"] == "" and out["syncs"] == 0  # no host sync by default


def test_sync_mode_reports_the_faulting_kernel(fake_driver):
    out = run_scenario(fake_driver, """
        out["sync_mode"] = ext.sync_mode()
        ext.register_image(KID, "sm_90", image_path)
        ext.register_source_path(KID, "/cache/abc.cu")
        fake.fake_bind(1, 0xF100, 51)
        out["clean"] = launch(1, 12, 12 * 1001 * 4)
        out["clean_syncs"] = get("syncs")
        set_("fault_on_launch", 700)
        out["faulted"] = launch(1, 12, 12 * 1001 * 4)
        set_("fault_on_launch", 0)
        set_("pending", 700)  # an earlier operation on the stream failed
        out["earlier"] = launch(1, 12, 12 * 1001 * 4)
        syncs = get("syncs")
        set_("capturing", 1)  # a sync would break the capture: none
        out["captured"] = launch(1, 12, 12 * 1001 * 4)
        out["captured_syncs"] = get("syncs") - syncs
    """, sync=True)
    assert out["sync_mode"] is True
    assert out["clean"] == "" and out["clean_syncs"] == 2  # before and after the launch
    assert out["faulted"] == ("CUDA kernel 0xdeed0000000000ab (Sum(Exp(Var(0,1000,0))) over j "
                              "[float32]; source /cache/abc.cu) failed on the device: CUDA "
                              "error 700 (an illegal memory access was encountered) (reported "
                              "by the synchronisation after its launch, JAXKEOPS_CUDA_SYNC=1)")
    assert out["earlier"].startswith("an earlier operation on the stream failed before CUDA "
                                     "kernel 0xdeed0000000000ab")
    assert out["captured"] == "" and out["captured_syncs"] == 0


def test_sync_mode_names_a_real_kernels_formula(fake_driver):
    """The formula in the messages comes from the first line of the generated source."""
    source = render_cuda(gauss_spec(3))
    out = run_scenario(fake_driver, f"""
        ext.register_image(KID, "sm_90", image_path)
        fake.fake_bind(1, 0xF200, 61)
        set_("fault_on_launch", 700)
        out["faulted"] = ext._launch_for_test(1, KID, {source!r}, gauss_buffers(3),
                                              [0, N, 192, 192 * 16, 1, N])
    """, sync=True)
    assert "(Sum(Mult(Exp(Minus(Sum(Square(Subtract(Var(0,3,0),Var(1,3,1)))))),Var(2,1,1))) " \
           "over j [float32])" in out["faulted"]


# ---------------------------------------------------------------------------------------------
# The driver declarations against cuda.h
# ---------------------------------------------------------------------------------------------

def _cuda_include_dir() -> Path | None:
    nvcc = shutil.which("nvcc")
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if nvcc:
        roots.insert(0, str(Path(nvcc).resolve().parents[1]))
    for root in filter(None, roots):
        for sub in ("include", "targets/x86_64-linux/include"):
            if (Path(root) / sub / "cuda.h").is_file():
                return Path(root) / sub
    return None


@pytest.mark.parametrize("with_cuda_h", [True, False], ids=["cuda.h", "own declarations"])
def test_the_launcher_compiles_with_and_without_cuda_h(with_cuda_h):
    """With JAXKEOPS_WITH_CUDA_H the launcher static_asserts that each driver entry point it
    dlsym's has cuda.h's exact type, and each enum value it hard-codes cuda.h's value."""
    nanobind = pytest.importorskip("nanobind", reason="nanobind's headers are needed")
    cuda_include = _cuda_include_dir()
    if with_cuda_h and cuda_include is None:
        pytest.skip("no CUDA toolkit (cuda.h)")
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    cmd = [compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
           f"-I{REPO / 'cuda_src'}", f"-I{REPO / 'cuda_src' / 'include'}",
           f"-isystem{nanobind.include_dir()}", f"-isystem{sysconfig.get_paths()['include']}",
           f"-isystem{jax.ffi.include_dir()}"]
    if with_cuda_h:
        cmd += ["-DJAXKEOPS_WITH_CUDA_H", f"-isystem{cuda_include}"]
    result = subprocess.run([*cmd, str(REPO / "cuda_src" / "jaxkeops_cuda.cc")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
