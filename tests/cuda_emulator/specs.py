"""The kernels the CUDA tests compile and run: every op, every reduction, and the derivative
kernels that jax.grad / jax.jvp of each reduction generate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxkeops.codegen.spec import KernelSpec
from jaxkeops.formulas import CAT_I, CAT_J, CAT_P, OPS, Var, make
from jaxkeops.reductions import INDEX, REDUCTIONS

X = Var(0, 3, CAT_I)
Y = Var(1, 3, CAT_J)
B = Var(2, 2, CAT_J)
S = Var(3, 1, CAT_P)
ARGS = (X, Y, B, S)
SQ = make("SqDist", X, Y)
SCALAR = make("Minus", make("Mult", SQ, S))  # -s |x - y|^2
VECTOR = make("Mult", SQ, B)  # |x - y|^2 b: two components
K = 3

# name -> (reduction, formulas, k)
CATALOG = {
    "sum": ("Sum", (make("Mult", make("Exp", SCALAR), B),), None),
    "min": ("Min", (VECTOR,), None),
    "max": ("Max", (VECTOR,), None),
    "argmin": ("ArgMin", (VECTOR,), None),
    "argmax": ("ArgMax", (VECTOR,), None),
    "min_argmin": ("Min_ArgMin", (VECTOR,), None),
    "max_argmax": ("Max_ArgMax", (VECTOR,), None),
    "kmin": ("KMin", (VECTOR,), K),
    "argkmin": ("ArgKMin", (VECTOR,), K),
    "kmin_argkmin": ("KMin_ArgKMin", (VECTOR,), K),
    "lse": ("LogSumExp", (SCALAR,), None),
    "lse_weighted": ("LogSumExp", (SCALAR, B), None),
    "ssw": ("SumSoftMaxWeight", (SCALAR, B), None),
    "lse_signed": ("LogSumExpSigned", (SCALAR, B), None),  # B has both signs
}


def _from_table(name: str) -> tuple:
    """A case for a reduction the catalogue above does not name, built from its table entry
    (so that a reduction added to the table is compiled and emulated at once)."""
    rule = REDUCTIONS[name]
    if rule.scalar_formula:
        weighted = rule.n_formulas == 2 and not rule.weight_optional
        formulas = (SCALAR, B) if weighted else (SCALAR,)
    elif rule.sum_type:
        formulas = (make("Mult", make("Exp", SCALAR), B),)
    else:
        formulas = (VECTOR,)
    return name, formulas, K if rule.needs_k else None


CATALOG.update({name.lower(): _from_table(name) for name in REDUCTIONS
                if all(name != reduction for reduction, _, _ in CATALOG.values())})


def reduction_spec(name: str, dtype: str = "float32", axis: int = 1, index_dtype: str = "int32",
                   sum_scheme: str = "block", k: int | None = None,
                   accumulator: str | None = None) -> KernelSpec:
    reduction, formulas, default_k = CATALOG[name]
    return KernelSpec(formulas, reduction, axis, dtype, index_dtype=index_dtype,
                      k=k or default_k, sum_scheme=sum_scheme, args=ARGS,
                      accumulator=accumulator)


def covers_every_reduction() -> bool:
    return {r for r, _, _ in CATALOG.values()} == set(REDUCTIONS)


def op_formulas(group: int = 10):
    """Every op of the op table, `group` ops per formula (a Concat of one application of each),
    as [(formula, variables)]: unary ops act on x_i + y_j, the others take alternately i and j
    variables."""
    names = sorted(OPS)
    out = []
    for start in range(0, len(names), group):
        variables, pieces = [], []

        def var(dim, cat, variables=variables):
            variables.append(Var(len(variables), dim, cat))
            return variables[-1]

        for name in names[start:start + group]:
            spec = OPS[name]
            dims = spec.example_dims or (3,) * spec.arity
            if spec.arity == 1:
                operands = [make("Add", var(dims[0], CAT_I), var(dims[0], CAT_J))]
            else:
                operands = [var(d, (CAT_I, CAT_J)[t % 2]) for t, d in enumerate(dims)]
            pieces.append(make(name, *operands, params=spec.example_params))
        formula = pieces[0]
        for p in pieces[1:]:
            formula = make("Concat", formula, p)
        out.append((formula, tuple(variables)))
    return out


def op_specs(dtype: str = "float32") -> list[KernelSpec]:
    return [KernelSpec((f,), "Sum", 1, dtype, args=v) for f, v in op_formulas()]


def random_arrays(spec: KernelSpec, m: int, n: int, rng, dtype=None, scale: float = 0.5):
    """Arrays for every variable of `spec` in the Genred layout."""
    dtype = dtype or spec.dtype
    out = []
    for v in spec.args:
        shape = {CAT_I: (m, v.dim), CAT_J: (n, v.dim), CAT_P: (v.dim,)}[v.cat]
        out.append((rng.standard_normal(shape) * scale).astype(dtype))
    if S in spec.args:  # a positive scale keeps exp(-s |x - y|^2) tame
        out[spec.args.index(S)] = np.full((1,), 0.7, dtype)
    return out


def _collect(jaxpr, found: list) -> None:
    from jaxkeops.primitive import reduction_p

    for eqn in jaxpr.eqns:
        if eqn.primitive is reduction_p:
            found.append(eqn.params["spec"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _collect(inner, found)


def traced_specs(fn, *args) -> list[KernelSpec]:
    """The kernel specs of every reduction in the jaxpr of fn(*args)."""
    found: list[KernelSpec] = []
    _collect(jax.make_jaxpr(fn)(*args).jaxpr, found)
    return found


def derivative_specs() -> dict[str, KernelSpec]:
    """The derivative kernels of every catalog reduction: reverse mode (w.r.t. every argument)
    and forward mode, plus a second order one. Keys are unique C identifiers."""
    from jaxkeops.lazy.reduce import run_reduction

    specs: dict[KernelSpec, None] = {}
    arrays = [jnp.asarray(a) for a in random_arrays(reduction_spec("sum"), 4, 5,
                                                    np.random.default_rng(0))]
    for name in CATALOG:
        base = reduction_spec(name)

        def loss(*a, base=base):
            outs = run_reduction(base.formulas, base.reduction, base.axis, base.args, list(a),
                                 [repr(v) for v in base.args], k=base.k)
            values = [o for o, out in zip(outs, base.outputs) if out.kind != INDEX]
            return sum(jnp.sum(jnp.sin(o)) for o in values) if values else jnp.float32(0)

        if all(out.kind == INDEX for out in base.outputs):
            continue
        for s in traced_specs(jax.grad(loss, argnums=(0, 1, 2, 3)), *arrays):
            specs[s] = None
        tangents = tuple(jnp.ones_like(a) for a in arrays)
        for s in traced_specs(lambda *a, loss=loss, t=tangents: jax.jvp(loss, a, t)[1], *arrays):
            specs[s] = None
    sum_loss = lambda x, *rest: jax.grad(lambda x: jnp.sum(jax.grad(
        lambda x: jnp.sum(jnp.sin(run_reduction(
            CATALOG["sum"][1], "Sum", 1, ARGS, [x, *rest], ["x", "y", "b", "s"])[0])))(x)))(x)
    for s in traced_specs(sum_loss, *arrays):
        specs[s] = None
    base_specs = {reduction_spec(n) for n in CATALOG}
    return {f"d{i}": s for i, s in enumerate(s for s in specs if s not in base_specs)}


HALF_DTYPES = ("float16", "bfloat16")
AXIS0 = ("sum", "min_argmin", "kmin_argkmin", "lse_weighted")


def catalog_specs() -> dict[str, tuple[KernelSpec, str]]:
    """name -> (spec, storage dtype) of every reduction in float32 and float64 (and in
    float16/bfloat16 storage), over j and, for some, over i; every sum scheme and float64
    accumulators; int64 indices."""
    out = {}
    for name in CATALOG:
        for dtype in ("float32", "float64"):
            out[f"{name}_{dtype}"] = (reduction_spec(name, dtype), dtype)
        for dtype in HALF_DTYPES:
            out[f"{name}_{dtype}"] = (reduction_spec(name, "float32"), dtype)
    for name in AXIS0:
        out[f"{name}_axis0"] = (reduction_spec(name, axis=0), "float32")
    out["sum_kahan"] = (reduction_spec("sum", sum_scheme="kahan"), "float32")
    out.update(accuracy_specs())
    out["argkmin_int64"] = (reduction_spec("argkmin", index_dtype="int64"), "float32")
    out["kmin_argkmin_int64"] = (reduction_spec("kmin_argkmin", "float64", index_dtype="int64"),
                                 "float64")
    return out


# The sum schemes and float64 accumulators of the sum-type reductions (float32 data): name ->
# (catalog name, sum scheme, accumulator).
ACCURACY = {
    "sum_direct": ("sum", "direct", None),
    "sum_acc64": ("sum", "block", "float64"),
    "sum_direct_acc64": ("sum", "direct", "float64"),
    "sum_kahan_acc64": ("sum", "kahan", "float64"),
    "lse_direct": ("lse", "direct", None),
    "lse_kahan_acc64": ("lse", "kahan", "float64"),
    "lse_weighted_kahan": ("lse_weighted", "kahan", None),
    "lse_weighted_acc64": ("lse_weighted", "block", "float64"),
    "ssw_direct": ("ssw", "direct", None),
    "ssw_kahan_acc64": ("ssw", "kahan", "float64"),
    "lse_signed_kahan": ("lse_signed", "kahan", None),
    "lse_signed_direct_acc64": ("lse_signed", "direct", "float64"),
}


def accuracy_specs() -> dict[str, tuple[KernelSpec, str]]:
    out = {key: (reduction_spec(name, sum_scheme=scheme, accumulator=acc), "float32")
           for key, (name, scheme, acc) in ACCURACY.items()}
    # half-precision storage with a float64 accumulator
    out["sum_acc64_float16"] = (reduction_spec("sum", accumulator="float64"), "float16")
    return out


# The reductions whose half-precision variants the compile tests build: the reduction code is
# the same for every storage type, only the loads and stores differ (the emulation runs them
# all).
HALF_COMPILED = ("sum", "min_argmin", "kmin_argkmin", "lse_weighted", "ssw", "lse_signed",
                 "sum_acc64")


def all_sources(derivatives: bool = True) -> dict[str, str]:
    """Every kernel the compile tests build, as name -> CUDA source."""
    from jaxkeops.codegen.cuda import render_cuda

    out = {}
    for key, (spec, dtype) in catalog_specs().items():
        if dtype in HALF_DTYPES and key.rsplit("_", 1)[0] not in HALF_COMPILED:
            continue
        out[key] = render_cuda(spec, in_dtype=dtype, out_dtype=dtype)
    for dtype in ("float32", "float64"):
        for i, spec in enumerate(op_specs(dtype)):
            out[f"ops{i}_{dtype}"] = render_cuda(spec)
    if derivatives:
        out.update({k: render_cuda(s) for k, s in derivative_specs().items()})
    return out
