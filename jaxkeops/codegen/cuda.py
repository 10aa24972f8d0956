"""The CUDA source of a kernel and its launch plan.

The formula body is the CPU backend's (`printer.print_body`, evaluated here over a scalar
value type, one thread per output row), after the CPU's rewrites (`kernel_formulas`):
constants folded into the operands that hoist (scaling.py), exp(c a) as 2^((c log2 e) a) and
the dot-product form of long squared distances (rewrite.py), log-sum-exp reductions in base 2,
Sums of scalars times whole vector variables in linear form (linear.py; an epilogue applies the
outer variables' terms once per row), the factors of a Sum's formula that depend on the output
row only (row_factor.py: the same epilogue applies them once per row), subexpressions of the
outer variables computed once per thread before the reduced rows stream by, and those of the
inner variables once per reduced row when a tile is loaded into shared memory, which holds what
the pair formulas read (hoist.py).
In formula bodies, float exp and exp2 are the GPU's approximate 2^x (exp.h); the reductions
keep IEEE semantics. Only the schedule differs from the CPU's, and it lives in
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

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..formulas import CAT_I, CAT_J, Const, Node, Var, make, variables
from ..reductions import CppOptions, reduction
from .hoist import Hoisted, hoist
from .linear import LinearPlan, plan_linear_sum
from .printer import print_body
from .rewrite import LOG2E, for_codegen
from .row_factor import split_row_factor
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


def accumulator_type(spec: KernelSpec) -> str:
    """The C++ scalar type sum-type reductions add their terms in."""
    return COMPUTE_TYPES[spec.accumulator] if spec.accumulator else compute_type(spec)


def _reduction(spec: KernelSpec, c: str) -> tuple[str, int, int]:
    """(C++ type, partial values, partial indices) of the spec's reduction on the GPU, from the
    reduction table."""
    rule = reduction(spec.reduction)
    if rule.cuda is None:
        raise NotImplementedError(f"no CUDA implementation of the {spec.reduction} reduction")
    acc = accumulator_type(spec)
    options = CppOptions(c, INDEX_TYPES[spec.index_dtype], spec.sum_scheme,
                         acc if acc != c else None)
    return rule.cuda(kernel_formulas(spec).reduced_dims, spec.k, options)


def partial_sizes(spec: KernelSpec) -> tuple[int, int]:
    """Values and int64 indices in one partial state of the split schedule."""
    _, values, indices = _reduction(spec, compute_type(spec))
    return values, indices


def partial_itemsize(spec: KernelSpec) -> int:
    """Bytes per value of a partial state: the accumulator's (the compute type otherwise)."""
    return ITEMSIZE[accumulator_type(spec)]


@dataclass(frozen=True)
class KernelFormulas:
    """The formulas a CUDA kernel evaluates, and where their values sit.

    The loaders fill a thread's `o` (outer variables) and `p` (parameters), and a row of inner
    variables in registers, at `raw_layout`'s offsets; `pre_outer` appends the per-row hoisted
    values to `o`, `pre_inner` the per-reduced-row ones to the inner row. A shared-memory tile
    row holds only what the pair formulas read of the inner row (`tile`), so that an inner
    variable replaced by a hoisted value (y scaled by a constant, say) takes no room there.
    `layout` places every variable of the pair formulas: outer ones in `o`, inner ones in the
    tile row `n`, parameters in `p`."""

    hoisted: Hoisted
    layout: dict[Var, tuple[int, int]]
    raw_layout: dict[Var, tuple[int, int]]
    raw_dims: dict[int, int]  # role -> width of the variables the loaders read
    dims: dict[int, int]  # role -> width of the register rows, with the hoisted values
    tile: tuple[tuple[int, int], ...]  # (offset in the inner row, count) runs, in tile order
    # The linear form of a Sum (see `_linear_formulas`): what turns the reduced values (read
    # from `n`) into the outputs, with the outer variables and parameters; None otherwise.
    epilogue: tuple[Node, ...] | None = None
    epilogue_layout: dict[Var, tuple[int, int]] | None = None

    @property
    def reduced_dims(self) -> tuple[int, ...]:
        """The dims of the formulas the reduction folds (the kernel's, not the spec's)."""
        return tuple(f.dim for f in self.hoisted.formulas)

    @property
    def tile_dim(self) -> int:
        return sum(count for _, count in self.tile)


@functools.lru_cache(maxsize=1024)
def kernel_formulas(spec: KernelSpec) -> KernelFormulas:
    """The rewritten, hoisted formulas of `spec` (see the module docstring); the dense
    reference and the derivatives always see the formulas as written."""
    formulas: tuple[Node, ...] = spec.formulas
    if reduction(spec.reduction).base2:  # the reduction takes its exponent in base 2
        formulas = (make("Mult", formulas[0], Const(LOG2E)),) + formulas[1:]
    plan = plan_linear_sum(spec)
    if plan is not None:
        formulas, epilogue = _linear_formulas(spec, plan)
        rewritten = for_codegen(spec, formulas)
    else:
        rewritten, epilogue = split_row_factor(spec, for_codegen(spec, formulas))
    hoisted = hoist(spec, rewritten)
    dims = {ROLE_OUTER: 0, ROLE_INNER: 0, ROLE_PARAM: 0}
    raw_layout: dict[Var, tuple[int, int]] = {}
    for var, role in zip(spec.args, spec.roles):
        raw_layout[var] = (role, dims[role])
        dims[role] += var.dim
    raw_dims = dict(dims)
    row_layout = dict(raw_layout)
    for role, pseudo in ((ROLE_OUTER, hoisted.outer_vars), (ROLE_INNER, hoisted.inner_vars)):
        for var in pseudo:
            row_layout[var] = (role, dims[role])
            dims[role] += var.dim
    read = set(variables(*hoisted.formulas))
    layout = {v: place for v, place in row_layout.items() if place[0] != ROLE_INNER}
    tile: list[tuple[int, int]] = []
    width = 0
    for var, (role, offset) in row_layout.items():
        if role == ROLE_INNER and var in read:
            layout[var] = (ROLE_INNER, width)
            width += var.dim
            if tile and sum(tile[-1]) == offset:  # contiguous with the previous run
                tile[-1] = (tile[-1][0], tile[-1][1] + var.dim)
            else:
                tile.append((offset, var.dim))
    epilogue_layout = None
    if epilogue is not None:
        epilogue, reduced = epilogue
        epilogue_layout = {v: place for v, place in raw_layout.items() if place[0] != ROLE_INNER}
        total = 0
        for var in reduced:
            epilogue_layout[var] = (ROLE_INNER, total)
            total += var.dim
    return KernelFormulas(hoisted, layout, raw_layout, raw_dims, dims, tuple(tile), epilogue,
                          epilogue_layout)


def _linear_formulas(spec: KernelSpec, plan: LinearPlan) -> tuple[tuple[Node, ...], tuple]:
    """A Sum of  F = sum_t factor_t s_t v_t  (linear.py) as the Sum of the scalars s_c of the
    terms whose v_t is an outer variable x, then of the inner terms' part, sum_t (factor_t /
    f) s_t y_t with f the first inner factor; the epilogue makes the outputs:  out = f (sum_j
    ...) + sum_t factor_t x_t (sum_j s_t). Each pair then costs one multiply-add per component
    of y (w (x - y) costs a subtraction more), the constants stay out of the pair loop, and x
    is only read again at the end.

    Returns (the kernel formulas, (the epilogue formula, the variables standing for the
    reduced values, in order))."""
    inner_vars = _inner_vars(spec)
    inner_terms = [t for t in plan.terms if t.var in inner_vars]
    outer_terms = [t for t in plan.terms if t.var not in inner_vars]
    outer_coefs = list(dict.fromkeys(t.coef for t in outer_terms))
    f = inner_terms[0].factor
    inner_part = None
    for t in inner_terms:
        term = plan.coefs[t.coef]
        if t.factor != f:
            term = make("Mult", term, Const(t.factor / f))
        term = make("Mult", term, t.var)
        inner_part = term if inner_part is None else make("Add", inner_part, term)
    formulas = (*(plan.coefs[c] for c in outer_coefs), inner_part)
    # Variables for the reduced values, placed by the epilogue's layout: their category is
    # irrelevant, their indices must not clash with the spec's.
    first = max((v.index for v in spec.args), default=-1) + 1
    reduced_cat = CAT_J if spec.axis == 1 else CAT_I
    sums = [Var(first + k, 1, reduced_cat) for k in range(len(outer_coefs))]
    inner_sum = Var(first + len(outer_coefs), plan.dim, reduced_cat)
    out: Node = inner_sum if f == 1.0 else make("Mult", inner_sum, Const(f))
    for t in outer_terms:
        scaled: Node = sums[outer_coefs.index(t.coef)]
        if t.factor != 1.0:
            scaled = make("Mult", scaled, Const(t.factor))
        out = make("Add", out, make("Mult", scaled, t.var))
    return formulas, ((out,), (*sums, inner_sum))


def _inner_vars(spec: KernelSpec) -> set[Var]:
    return {v for v, r in zip(spec.args, spec.roles) if r == ROLE_INNER}


def _loader(name: str, array: str, rows: str, loads: list[str]) -> list[str]:
    head = f"  JK_FN static void {name}(char* const* ptr, {rows}C* {array}) {{"
    if not loads:
        return [head, f"    (void)ptr; (void){array};" + (" (void)row;" if rows else ""), "  }"]
    return [head, *loads, "  }"]


def _precompute(name: str, reads: str, body: list[str]) -> list[str]:
    """A function computing hoisted values from the `reads` array and the parameters into
    `out` (the same printed text as a formula body, over V = C)."""
    return [f"  JK_FN static void {name}(const C* {reads}, const C* p, C* out) {{",
            "    using V = C;", f"    (void){reads}; (void)p; (void)out;",
            *("    " + line for line in body), "  }"]


def _pack(runs: tuple[tuple[int, int], ...]) -> list[str]:
    lines, at = [], 0
    for offset, count in runs:
        lines.append(f"    for (int k = 0; k < {count}; ++k) tile[{at} + k] = row[{offset} + k];")
        at += count
    return lines


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
    kf = kernel_formulas(spec)
    loads: dict[int, list[str]] = {ROLE_OUTER: [], ROLE_INNER: [], ROLE_PARAM: []}
    target = {ROLE_OUTER: ("o", "row"), ROLE_INNER: ("n", "row"), ROLE_PARAM: ("p", "0")}
    for a, var in enumerate(spec.args):
        role, offset = kf.raw_layout[var]
        array, row = target[role]
        loads[role].append(f"    jk::gpu::load_row<IN, {var.dim}>(ptr[{a}], {row}, "
                           f"{array} + {offset});  // {var!r}")
    h = kf.hoisted
    raw = kf.raw_layout
    pre_outer = print_body(h.outer, raw) if h.outer else []
    pre_inner = print_body(h.inner, raw) if h.inner else []
    body = print_body(h.formulas, kf.layout)
    epilogue = print_body(kf.epilogue, kf.epilogue_layout) if kf.epilogue else []
    out_dim = sum(f.dim for f in spec.formulas)
    reduction_type, n_values, n_indices = _reduction(spec, c)
    defines = "".join(f"#define {FAULTS[f]} 1\n" for f in faults)
    dims, raw_dims = kf.dims, kf.raw_dims
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
        f"  static constexpr int DIM = {sum(f.dim for f in h.formulas)};",
        f"  static constexpr int OUTER_RAW = {raw_dims[ROLE_OUTER]};",
        f"  static constexpr int INNER_RAW = {raw_dims[ROLE_INNER]};",
        f"  static constexpr int OUTER_DIM = {dims[ROLE_OUTER]};  // raw, then hoisted values",
        f"  static constexpr int INNER_DIM = {dims[ROLE_INNER]};",
        f"  static constexpr int PARAM_DIM = {dims[ROLE_PARAM]};",
        f"  static constexpr int TILE_DIM = {kf.tile_dim};  // inner values in shared memory",
        f"  static constexpr int TILE_STRIDE = {tile_stride(spec)};",
        f"  static constexpr int N_ARGS = {len(spec.args)};",
        f"  static constexpr int N_OUTS = {len(spec.outputs)};",
        f"  static constexpr int PARTIAL_VALUES = {n_values};",
        f"  static constexpr int PARTIAL_INDICES = {n_indices};",
        *_loader("load_outer", "o", "int64_t row, ", loads[ROLE_OUTER]),
        *_loader("load_inner", "n", "int64_t row, ", loads[ROLE_INNER]),
        *_loader("load_params", "p", "", loads[ROLE_PARAM]),
        "  // Subexpressions of the outer variables and parameters only: once per output row.",
        *_precompute("pre_outer", "o", pre_outer),
        "  // Subexpressions of the inner variables only: once per reduced row and block, when",
        "  // the row is loaded into shared memory.",
        *_precompute("pre_inner", "n", pre_inner),
        "  // What the pair formulas read of an inner row (raw, then hoisted values).",
        "  JK_FN static void pack_inner(const C* row, C* tile) {",
        "    (void)row; (void)tile;",
        *_pack(kf.tile),
        "  }",
        "  template <class V>",
        "  JK_FN static void evaluate_pair(const V* o, const V* n, const V* p, V* out) {",
        "    (void)o; (void)n; (void)p;",
        *("    " + line for line in body),
        "  }",
        "  // The outputs from the reduced values `n` (the linear form of a Sum; else unused).",
        f"  static constexpr bool EPILOGUE = {str(bool(epilogue)).lower()};",
        f"  static constexpr int OUT_DIM = {out_dim};",
        "  JK_FN static void epilogue(const C* o, const C* n, const C* p, C* out) {",
        "    using V = C;",
        "    (void)o; (void)n; (void)p; (void)out;",
        *("    " + line for line in epilogue),
        "  }",
        "};",
        "",
        f"using Reduction = {reduction_type};",
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


def tile_stride(spec: KernelSpec) -> int:
    """Values per row of a shared-memory tile: what the pair formulas read of the inner
    variables and their hoisted values (`KernelFormulas.tile`), padded to 8 or a multiple of
    16 bytes, so that the pair loop can read a row with vector loads (128-bit ones read 4
    floats; a row of 41 floats would take 41 scalar loads)."""
    dim = kernel_formulas(spec).tile_dim
    itemsize = ITEMSIZE[compute_type(spec)]
    align = 16 if dim * itemsize > 8 else 8 if dim * itemsize > 4 else itemsize
    return -(-dim * itemsize // align) * align // itemsize


def tile_row_bytes(spec: KernelSpec) -> int:
    """Shared memory taken by one reduced row of a tile (`tile_stride` values)."""
    return tile_stride(spec) * ITEMSIZE[compute_type(spec)]


def block_size(spec: KernelSpec) -> int:
    """KeOps' 192 threads, fewer if a tile of the inner variables would not fit."""
    row_bytes = tile_row_bytes(spec)
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
    smem = block * tile_row_bytes(spec)
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


__all__ = ["FAULTS", "KernelFormulas", "LaunchPlan", "accumulator_type", "block_size",
           "kernel_formulas", "partial_itemsize", "partial_sizes", "plan_launch", "render_cuda",
           "tile_row_bytes", "tile_stride"]
