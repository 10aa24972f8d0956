"""The CUDA source of a kernel and its launch plan.

The formula body is the CPU backend's (`printer.print_body`, evaluated here over a scalar
value type, one thread per output row); only the schedule differs, and it lives in
`cuda_src/include/jaxkeops/cuda_kernel.h`. Two schedules, chosen by `plan_launch`:

- rows: one thread per output row, the reduced rows streamed through shared memory in tiles of
  blockDim rows; batch elements on gridDim.y. Best when there are enough output rows to fill
  the GPU.
- split: the same over chunks of the reduced axis (gridDim.z), partial states written to a
  scratch output, and a second kernel that folds them in chunk order. For few output rows and
  many reduced rows, where the rows schedule would leave most of the GPU idle.

float16 and bfloat16 operands are stored as such and computed and accumulated in float32.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..reductions import SCHEME_ENUMS
from .printer import print_body
from .spec import ROLE_INNER, ROLE_OUTER, ROLE_PARAM, KernelSpec

COMPUTE_TYPES = {"float32": "float", "float64": "double", "float16": "float", "bfloat16": "float"}
STORAGE_TYPES = {"float32": "float", "float64": "double", "float16": "jk::f16",
                 "bfloat16": "jk::bf16"}
ITEMSIZE = {"float": 4, "double": 8}
INDEX_TYPES = {"int32": "int32_t", "int64": "int64_t"}

# Test-only: plant a known bug in the schedule (see cuda_kernel.h), to prove the CPU emulation
# of the tests catches it.
FAULTS = {
    "no_barrier_after_load": "JK_FAULT_NO_BARRIER_AFTER_LOAD",
    "no_barrier_after_tile": "JK_FAULT_NO_BARRIER_AFTER_TILE",
    "last_tile_short": "JK_FAULT_LAST_TILE_SHORT",
    "tile_overrun": "JK_FAULT_TILE_OVERRUN",
}

MAX_OPERANDS = 48  # JK_CUDA_MAX_OPERANDS: inputs + outputs + scratch in one parameter block
DEFAULT_BLOCK = 192  # threads per block, as in KeOps
SMEM_BUDGET = 48 * 1024  # dynamic shared memory per block without an opt-in, on every GPU
# Split heuristic: below SPLIT_BELOW row blocks (192 * 128 = 24576 output rows, all batch
# elements counted) a GPU with ~100 SMs is mostly idle, so the reduced axis is cut into chunks
# of at least MIN_CHUNK_TILES tiles until about TARGET_BLOCKS blocks run.
SPLIT_BELOW = 128
TARGET_BLOCKS = 512
MIN_CHUNK_TILES = 8
MAX_GRID_Z = 65535


def compute_type(spec: KernelSpec) -> str:
    return COMPUTE_TYPES[spec.dtype]


LSE_OUTPUTS = {"LogSumExp": "LSE_OUT", "LogSumExpSigned": "SIGNED_LSE_OUT",
               "SumSoftMaxWeight": "SOFTMAX_OUT"}


def accumulator_type(spec: KernelSpec) -> str:
    """The C++ scalar type sum-type reductions add their terms in."""
    return COMPUTE_TYPES[spec.accumulator] if spec.accumulator else compute_type(spec)


def _sum_args(spec: KernelSpec, c: str) -> str:
    """The trailing template arguments of a sum-type reduction: scheme and accumulator."""
    acc = accumulator_type(spec)
    return f"jk::{SCHEME_ENUMS[spec.sum_scheme]}" + (f", {acc}" if acc != c else "")


def _reduction(spec: KernelSpec, c: str) -> tuple[str, int, int]:
    """(C++ type, partial values, partial indices) of the spec's reduction on the GPU."""
    dims, name, k = spec.formula_dims, spec.reduction, spec.k
    d = dims[0]
    kahan = spec.sum_scheme == "kahan"
    if name == "Sum":
        return (f"jk::gpu::SumReduction<{c}, {d}, {_sum_args(spec, c)}>",
                2 * d if kahan else d, 0)
    extrema = {"Min": (False, True, False), "Max": (True, True, False),
               "ArgMin": (False, False, True), "ArgMax": (True, False, True),
               "Min_ArgMin": (False, True, True), "Max_ArgMax": (True, True, True)}
    if name in extrema:
        is_max, value, arg = (str(x).lower() for x in extrema[name])
        return (f"jk::gpu::ExtremumReduction<{c}, {d}, {is_max}, {value}, {arg}>", d,
                d if arg == "true" else 0)
    kmins = {"KMin": (True, False), "ArgKMin": (False, True), "KMin_ArgKMin": (True, True)}
    if name in kmins:
        value, arg = (str(x).lower() for x in kmins[name])
        return f"jk::gpu::KMinReduction<{c}, {d}, {k}, {value}, {arg}>", d * k, d * k
    if name in LSE_OUTPUTS:
        softmax = name == "SumSoftMaxWeight"
        weighted = len(dims) > 1
        wdim = dims[1] if weighted else 1
        acc = (wdim if weighted else 0) + (1 if softmax or not weighted else 0)
        return (f"jk::gpu::LogSumExpReduction<{c}, {wdim}, {str(weighted).lower()}, "
                f"jk::gpu::{LSE_OUTPUTS[name]}, {_sum_args(spec, c)}>",
                1 + (2 if kahan else 1) * acc, 0)
    raise NotImplementedError(f"no CUDA implementation of the {name} reduction")


def partial_sizes(spec: KernelSpec) -> tuple[int, int]:
    """Values and int64 indices in one partial state of the split schedule."""
    _, values, indices = _reduction(spec, compute_type(spec))
    return values, indices


def partial_itemsize(spec: KernelSpec) -> int:
    """Bytes per value of a partial state: the accumulator's (the compute type otherwise)."""
    return ITEMSIZE[accumulator_type(spec)]


def _loader(name: str, array: str, rows: str, loads: list[str]) -> list[str]:
    head = f"  JK_FN static void {name}(char* const* ptr, {rows}C* {array}) {{"
    if not loads:
        return [head, f"    (void)ptr; (void){array};" + (" (void)row;" if rows else ""), "  }"]
    return [head, *loads, "  }"]


def render_cuda(spec: KernelSpec, in_dtype: str | None = None, out_dtype: str | None = None,
                faults: Sequence[str] = ()) -> str:
    """The CUDA source of `spec`. Inputs are stored as `in_dtype` and value outputs as
    `out_dtype` (both default to spec.dtype; float16/bfloat16 compute in float32)."""
    in_dtype = in_dtype or spec.dtype
    out_dtype = out_dtype or spec.dtype
    if len(spec.args) + len(spec.outputs) + 1 > MAX_OPERANDS:
        raise NotImplementedError(
            f"{spec.describe()}: the CUDA backend takes at most "
            f"{MAX_OPERANDS - 1 - len(spec.outputs)} variables per reduction, this one has "
            f"{len(spec.args)}; concatenate variables of the same category into fewer arrays"
        )
    c = compute_type(spec)
    dims = {ROLE_OUTER: 0, ROLE_INNER: 0, ROLE_PARAM: 0}
    layout = {}
    loads: dict[int, list[str]] = {ROLE_OUTER: [], ROLE_INNER: [], ROLE_PARAM: []}
    target = {ROLE_OUTER: ("o", "row"), ROLE_INNER: ("n", "row"), ROLE_PARAM: ("p", "0")}
    for a, (var, role) in enumerate(zip(spec.args, spec.roles)):
        layout[var] = (role, dims[role])
        array, row = target[role]
        loads[role].append(f"    jk::gpu::load_row<IN, {var.dim}>(ptr[{a}], {row}, "
                           f"{array} + {dims[role]});  // {var!r}")
        dims[role] += var.dim
    body = print_body(spec.formulas, layout)
    reduction, n_values, n_indices = _reduction(spec, c)
    defines = "".join(f"#define {FAULTS[f]} 1\n" for f in faults)
    lines = [
        f"// Generated by jaxkeops (CUDA): {spec.describe()}",
        f"{defines}#include \"jaxkeops/cuda_kernel.h\"",
        "",
        "namespace {",
        "",
        "struct Formula {",
        f"  using C = {c};",
        f"  using IN = {STORAGE_TYPES[in_dtype]};",
        f"  using OUT = {STORAGE_TYPES[out_dtype]};",
        f"  using I = {INDEX_TYPES[spec.index_dtype]};",
        f"  static constexpr int DIM = {sum(spec.formula_dims)};",
        f"  static constexpr int OUTER_DIM = {dims[ROLE_OUTER]};",
        f"  static constexpr int INNER_DIM = {dims[ROLE_INNER]};",
        f"  static constexpr int PARAM_DIM = {dims[ROLE_PARAM]};",
        f"  static constexpr int N_ARGS = {len(spec.args)};",
        f"  static constexpr int N_OUTS = {len(spec.outputs)};",
        f"  static constexpr int PARTIAL_VALUES = {n_values};",
        f"  static constexpr int PARTIAL_INDICES = {n_indices};",
        *_loader("load_outer", "o", "int64_t row, ", loads[ROLE_OUTER]),
        *_loader("load_inner", "n", "int64_t row, ", loads[ROLE_INNER]),
        *_loader("load_params", "p", "", loads[ROLE_PARAM]),
        "  template <class V>",
        "  JK_FN static void evaluate_pair(const V* o, const V* n, const V* p, V* out) {",
        "    (void)o; (void)n; (void)p;",
        *("    " + line for line in body),
        "  }",
        "};",
        "",
        f"using Reduction = {reduction};",
        "",
        "}  // namespace",
        "",
        "JK_CUDA_KERNELS(Formula, Reduction)",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class LaunchPlan:
    block: int  # threads per block (also rows per shared-memory tile)
    smem_bytes: int  # dynamic shared memory per block
    n_chunks: int  # 1: rows schedule; > 1: split schedule
    chunk_len: int  # reduced rows per chunk
    scratch_bytes: int  # size of the scratch output of the split schedule (0 otherwise)

    @property
    def split(self) -> bool:
        return self.n_chunks > 1


def _inner_dim(spec: KernelSpec) -> int:
    return sum(v.dim for v, r in zip(spec.args, spec.roles) if r == ROLE_INNER)


def block_size(spec: KernelSpec) -> int:
    """KeOps' 192 threads, fewer if a tile of the inner variables would not fit."""
    row_bytes = _inner_dim(spec) * ITEMSIZE[compute_type(spec)]
    if row_bytes * DEFAULT_BLOCK <= SMEM_BUDGET:
        return DEFAULT_BLOCK
    block = SMEM_BUDGET // row_bytes
    if block < 1:
        raise ValueError(
            f"{spec.describe()}: one row of the reduced variables takes {row_bytes} bytes, more "
            f"than the {SMEM_BUDGET} bytes of shared memory a CUDA block may use"
        )
    return block // 32 * 32 if block >= 32 else block


def plan_launch(spec: KernelSpec, n_out: int, n_red: int, n_batch: int,
                schedule: str | None = None, block: int | None = None,
                chunks: int | None = None) -> LaunchPlan:
    """Block size and schedule for one call. `schedule` ("rows" or "split", with `chunks`
    chunks or one tile per chunk) and `block` force a choice (tests; $JAXKEOPS_CUDA_SCHEDULE
    does the same for a whole run)."""
    schedule = schedule or os.environ.get("JAXKEOPS_CUDA_SCHEDULE") or None
    if schedule not in (None, "rows", "split"):
        raise ValueError(f"schedule must be 'rows' or 'split', got {schedule!r}")
    block = block or block_size(spec)
    smem = block * _inner_dim(spec) * ITEMSIZE[compute_type(spec)]
    row_blocks = max(1, math.ceil(n_out / block)) * max(1, n_batch)
    min_chunk = MIN_CHUNK_TILES * block
    if schedule is None:
        split = row_blocks < SPLIT_BELOW and n_red >= 2 * min_chunk
        chunks = min(math.ceil(TARGET_BLOCKS / row_blocks), n_red // min_chunk) if split else 1
    else:
        split = schedule == "split" and n_red > 0
        chunks = (chunks or math.ceil(n_red / block)) if split else 1
    chunks = max(1, min(chunks, MAX_GRID_Z))
    # Whole tiles per chunk; rounding may leave fewer chunks than asked for.
    chunk_len = math.ceil(math.ceil(n_red / chunks) / block) * block if n_red else 0
    chunks = math.ceil(n_red / chunk_len) if split and chunk_len else 1
    if chunks <= 1:
        return LaunchPlan(block, smem, 1, n_red, 0)
    values, indices = partial_sizes(spec)
    records = n_batch * chunks * n_out
    value_bytes = records * values * partial_itemsize(spec)
    scratch = (value_bytes + 7) // 8 * 8 + records * indices * 8
    return LaunchPlan(block, smem, chunks, chunk_len, scratch)


__all__ = ["FAULTS", "LaunchPlan", "accumulator_type", "block_size", "partial_itemsize",
           "partial_sizes", "plan_launch", "render_cuda"]
