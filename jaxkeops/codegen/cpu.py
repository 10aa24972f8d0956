"""The C++ source of a CPU kernel: the printed formula plus the CPU schedule and a reduction."""

from __future__ import annotations

from ..formulas import OPS, Const, Op, Var, make, walk
from ..reductions import CppOptions, reduction
from .hoist import hoist
from .linear import LinearPlan, plan_linear_sum
from .printer import print_body, print_tile_body
from .rewrite import LOG2E, for_codegen
from .row_factor import split_row_factor
from .spec import ROLE_INNER, ROLE_OUTER, ROLE_PARAM, KernelSpec

SCALAR_TYPES = {"float32": "float", "float64": "double"}
INDEX_TYPES = {"int32": "int32_t", "int64": "int64_t"}


def row_block(formulas, plan: LinearPlan | None) -> int:
    """How many output rows share each vector of inner values (the rows of the register tile).

    Eight when each pair yields one scalar: more independent chains of work, and each load of
    an inner value serves more rows (single thread, AVX-512: the Gaussian sum 0.87 -> 0.96 of
    the reference kernel at D = 3, 0.92 -> 1.03 at D = 64; argKmin alike). Four otherwise: with
    vector values (the gradient at D = 3: 0.85 -> 0.77 with eight) or the matrix-product
    reduction (its 4 x 4 accumulator vectors) eight rows spill registers.
    """
    return 8 if plan is None and sum(f.dim for f in formulas) == 1 else 4


def column_block(formulas) -> int:
    """How many vectors of inner values each row meets per step (the other side of the tile).

    Two, when the formula folds over a long dimension (a dot product of D >= 16) into a small
    result: with 4 rows that makes a 4 x 2 register tile whose 8 chains share every load, as in
    a GEMM micro-kernel. Otherwise one: more pairs in flight only add register pressure.
    """
    if sum(f.dim for f in formulas) > 2:
        return 1
    for node in walk(*formulas):
        if isinstance(node, Op) and OPS[node.name].fold is not None and \
                max(a.dim for a in node.args) >= 16:
            return 2
    return 1


# The CPU log-sum-exp reductions (ReductionSpec.base2) take their exponent in base 2 (f log2 e):
# the constant joins the formula's own constants (scaling.py), and the kernel calls 2^x instead
# of e^x.
def _kernel_formulas(spec: KernelSpec, plan: LinearPlan | None) -> tuple:
    if plan is not None:
        return plan.coefs
    formulas = spec.formulas
    if reduction(spec.reduction).base2:
        formulas = (make("Mult", formulas[0], Const(LOG2E)),) + formulas[1:]
    return formulas


def _reduction(spec: KernelSpec, plan: LinearPlan | None) -> tuple[str, list[str]]:
    """The C++ reduction type, and the declarations it needs."""
    if plan is None:
        options = CppOptions("V_RED", INDEX_TYPES[spec.index_dtype], spec.sum_scheme,
                             SCALAR_TYPES[spec.accumulator] if spec.accumulator else None)
        return spec.reduction_spec.cpp(spec.formula_dims, spec.k, options), []
    rows = [f"    {{{t.coef}, {spec.args.index(t.var)}, "
            f"{str(spec.role(t.var) == ROLE_INNER).lower()}, {t.factor!r}}},  // {t.var!r}"
            for t in plan.terms]
    decl = ["struct LinearTerms {", f"  static constexpr int COUNT = {len(plan.terms)};",
            f"  static constexpr jk::LinearTermInfo TERMS[{len(plan.terms)}] = {{", *rows,
            "  };", "};", ""]
    return f"jk::LinearSumReduction<V_RED, {plan.dim}, LinearTerms>", decl


def _indent(lines: list[str], depth: int = 4) -> str:
    return "\n".join(" " * depth + line for line in lines)


def render_cpu(spec: KernelSpec) -> str:
    dims = {ROLE_OUTER: 0, ROLE_INNER: 0, ROLE_PARAM: 0}
    layout: dict[Var, tuple[int, int]] = {}
    arg_rows = []
    for var, role in zip(spec.args, spec.roles):
        layout[var] = (role, dims[role])
        arg_rows.append(f"    {{{role}, {var.dim}, {dims[role]}}},  // {var!r}")
        dims[role] += var.dim
    raw_outer, raw_inner = dims[ROLE_OUTER], dims[ROLE_INNER]
    # The matrix-product schedule of linear.py sums in the compute dtype.
    plan = plan_linear_sum(spec) if spec.accumulator is None else None
    rewritten = for_codegen(spec, _kernel_formulas(spec, plan))
    epilogue: list[str] = []
    if plan is None:
        rewritten, row_factor = split_row_factor(spec, rewritten)
        if row_factor is not None:
            formulas, reduced = row_factor
            epilogue = print_body(formulas, {**layout, reduced[0]: (ROLE_INNER, 0)})
    h = hoist(spec, rewritten)
    pre_outer = print_body(h.outer, layout) if h.outer else []
    pre_inner = print_body(h.inner, layout) if h.inner else []
    for var in h.outer_vars:
        layout[var] = (ROLE_OUTER, dims[ROLE_OUTER])
        dims[ROLE_OUTER] += var.dim
    for var in h.inner_vars:
        layout[var] = (ROLE_INNER, dims[ROLE_INNER])
        dims[ROLE_INNER] += var.dim
    body = print_tile_body(h.formulas, layout)
    scalar = SCALAR_TYPES[spec.dtype]
    red, red_decl = _reduction(spec, plan)
    n_args = len(spec.args)
    arg_table = "\n".join(arg_rows) if arg_rows else "    {0, 0, 0},"
    unused = "(void)o; (void)n; (void)p;"
    return f"""// Generated by jaxkeops: {spec.describe()}
#include "jaxkeops/cpu_kernel.h"

namespace {{

struct Formula {{
  using S = {scalar};
  static constexpr int DIM = {sum(f.dim for f in h.formulas)};
  static constexpr int OUTER_RAW = {raw_outer};
  static constexpr int INNER_RAW = {raw_inner};
  static constexpr int OUTER_DIM = {dims[ROLE_OUTER]};  // raw, then hoisted per-row values
  static constexpr int INNER_DIM = {dims[ROLE_INNER]};
  static constexpr int PARAM_DIM = {dims[ROLE_PARAM]};
  static constexpr int ROW_BLOCK = {row_block(h.formulas, plan)};
  static constexpr int COL_BLOCK = {column_block(h.formulas)};
  static constexpr int N_ARGS = {n_args};
  static constexpr jk::ArgInfo ARGS[{max(n_args, 1)}] = {{
{arg_table}
  }};

  // Subexpressions of the outer variables only: once per output row, in scalars.
  JK_FN static void pre_outer(const S* o, const S* p, S* out) {{
    using V = S;
    const V* n = nullptr;
    {unused} (void)out;
{_indent(pre_outer)}
  }}

  // Subexpressions of the inner variables only: once per reduced row, when packing a tile.
  template <class V>
  JK_FN static void pre_inner(const V* n, const V* p, V* out) {{
    const S* o = nullptr;
    {unused} (void)out;
{_indent(pre_inner)}
  }}

  // The outputs of a row from its reduced values `n`: the factors of the formula that depend
  // on the row only, applied once per row (row_factor.py).
  static constexpr bool EPILOGUE = {str(bool(epilogue)).lower()};
  JK_FN static void epilogue(const S* o, const S* n, const S* p, S* out) {{
    using V = S;
    {unused} (void)out;
{_indent(epilogue)}
  }}

  // The formula for a tile of NR output rows x NG vectors of reduced rows: pair q = g NR + r.
  template <int NR, int NG, class V>
  JK_FN static void evaluate_tile(const S (*orow)[OUTER_DIM > 0 ? OUTER_DIM : 1],
                                  const V* const* ngrp, const V* p, V (*out)[DIM]) {{
    constexpr int NQ = NR * NG;
    (void)orow; (void)ngrp; (void)p;
{_indent(body)}
  }}
}};

using V_RED = jk::simd_t<Formula::S>;
{chr(10).join(red_decl)}using Reduction = {red};

}}  // namespace

extern "C" int jk_run(const jk_task* task) {{ return jk::run_cpu<Formula, Reduction>(task); }}
extern "C" int jk_abi_version(void) {{ return JK_ABI_VERSION; }}
"""
