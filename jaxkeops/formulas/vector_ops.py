"""Vector ops: reductions over the last dim, norms and distances, and the helpers the other op
modules build on (`vector_op`, `folding_op`, `dims_error`). Slicing is in slicing_ops.py.

Matrices live in formula vectors in row-major order, as in KeOps.
"""

from __future__ import annotations

from .algebra import add, div, dot, mul, scale, sub, total, widen
from .nodes import Const, Node, Op
from .optable import (
    Access,
    EmitContext,
    Fold,
    OpSpec,
    attach_rules,
    broadcast_dims,
    make,
    nonnegative,
    product_sign,
    register,
    same_sign,
    zero_jvp,
)


def dims_error(name: str, message: str, dims: tuple[int, ...]) -> ValueError:
    return ValueError(f"{name}: {message} (operand dims {', '.join(map(str, dims))})")


def fold_lines(d: int, term, combine: str = "{a} + {b}") -> list[str]:
    """Lines leaving `acc` = term(0) (+) term(1) (+) ... (+) term(d-1).

    Long folds use several partial accumulators (4, or 8 from 32 terms on): one chain of d
    dependent additions would make the kernel wait on latency rather than throughput.
    """
    def join(a, b):
        return combine.format(a=a, b=b)

    n = 8 if d >= 32 else 4
    if d < 2 * n:
        lines = [f"V acc = {term('0')};"]
        if d > 1:
            lines.append(f"for (int k = 1; k < {d}; ++k) acc = {join('acc', term('k'))};")
        return lines
    whole = d // n * n
    lines = [f"V acc{q} = {term(str(q))};" for q in range(n)]
    body = " ".join(f"acc{q} = {join(f'acc{q}', term(f'k + {q}'))};" for q in range(n))
    lines.append(f"for (int k = {n}; k < {whole}; k += {n}) {{ {body} }}")
    if whole < d:
        lines.append(f"for (int k = {whole}; k < {d}; ++k) acc0 = {join('acc0', term('k'))};")
    partial = [f"acc{q}" for q in range(n)]
    while len(partial) > 1:
        partial = [f"({join(partial[i], partial[i + 1])})" for i in range(0, len(partial), 2)]
    lines.append(f"V acc = {partial[0]};")
    return lines


def _reduce_dims(ctx: EmitContext, a: int, term, combine: str = "{a} + {b}",
                 length: int | None = None) -> list[str]:
    """`out[0] = term(0) (+) term(1) (+) ...` over the dims of operand `a` (or `length`)."""
    body = fold_lines(ctx.args[a].dim if length is None else length, term, combine)
    return ["{", *("  " + line for line in body), f"  {ctx.out}[0] = acc;", "}"]


def _scalar(dims: tuple[int, ...], params: tuple) -> int:
    return 1


def _emit_fold(fold: Fold):
    return lambda c: _reduce_dims(c, 0, lambda k: fold.term(c, k), fold.combine, fold.length(c))


def folding_op(name: str, arity: int, out_dim, fold: Fold, reference, **meta) -> OpSpec:
    """An op whose value is a fold over its operands' components."""
    return vector_op(name, arity, out_dim, _emit_fold(fold), reference, fold=fold, **meta)


def _own_dim(c: EmitContext) -> int:
    return c.args[0].dim


def _pair_dim(c: EmitContext) -> int:
    return max(a.dim for a in c.args)


def vector_op(name: str, arity: int, out_dim, emit, reference, simplify=None, **meta) -> OpSpec:
    return register(OpSpec(name=name, arity=arity, out_dim=out_dim, emit=emit,
                           reference=reference, **meta), simplify)


# Symbolic gradients sum and read injections (ElemT, ExtractT: the transposes of Elem and
# Extract, and the basis vectors of GradMatrix, Divergence, ...): those need no op.
def injection_of(node: Node) -> tuple[Node, int] | None:
    """(x, position) if node is ElemT(x, n, position) or ExtractT(x, position, n)."""
    if isinstance(node, Op) and node.name == "ElemT":
        return node.args[0], node.params[1]
    if isinstance(node, Op) and node.name == "ExtractT":
        return node.args[0], node.params[0]
    return None


def _simplify_sum(x: Node, params: tuple, dim: int) -> Node | None:
    injected = injection_of(x)
    if injected is not None:
        return make("Sum", injected[0]) if injected[0].dim > 1 else injected[0]
    return Const(x.value * x.dim) if isinstance(x, Const) else None


# Reductions over the last dimension.
folding_op(
    "Sum", 1, _scalar, Fold(lambda c, k: c.args[0].at(k), _own_dim),
    lambda xp, x: xp.sum(x, axis=-1, keepdims=True), method="sum", simplify=_simplify_sum,
    sign=same_sign,
)
folding_op(
    "Max", 1, _scalar, Fold(lambda c, k: c.args[0].at(k), _own_dim, "jk::max_nan({a}, {b})"),
    lambda xp, x: xp.max(x, axis=-1, keepdims=True), method="max", smooth=False,
)
folding_op(
    "Min", 1, _scalar, Fold(lambda c, k: c.args[0].at(k), _own_dim, "jk::min_nan({a}, {b})"),
    lambda xp, x: xp.min(x, axis=-1, keepdims=True), method="min", smooth=False,
)


def _emit_arg_extremum(ctx: EmitContext, better: str) -> list[str]:
    x = ctx.args[0]
    lines = ["{", f"  V best = {x.at(0)};", "  V arg = jk::cst<V>(0);"]
    if x.dim > 1:
        lines.append(
            f"  for (int k = 1; k < {x.dim}; ++k) "
            f"jk::arg_update<{better}>(best, arg, {x.at('k')}, k);"
        )
    lines += [f"  {ctx.out}[0] = arg;", "}"]
    return lines


def _argext_reference(kind):
    def ref(xp, x):
        idx = xp.argmax(x, axis=-1) if kind == "max" else xp.argmin(x, axis=-1)
        return idx[..., None].astype(x.dtype)

    return ref


vector_op("ArgMax", 1, _scalar, lambda c: _emit_arg_extremum(c, "true"), _argext_reference("max"),
          method="argmax", smooth=False)
vector_op("ArgMin", 1, _scalar, lambda c: _emit_arg_extremum(c, "false"),
          _argext_reference("min"), method="argmin", smooth=False)

# Norms and distances.
folding_op(
    "SqNorm2", 1, _scalar, Fold(lambda c, k: f"{c.args[0].at(k)} * {c.args[0].at(k)}", _own_dim),
    lambda xp, x: xp.sum(x * x, axis=-1, keepdims=True), method="sqnorm2", sign=nonnegative,
)
vector_op(
    "Norm2", 1, _scalar,
    lambda c: _reduce_dims(c, 0, lambda k: f"{c.args[0].at(k)} * {c.args[0].at(k)}")[:-2]
    + [f"  {c.out}[0] = jk::sqrt(acc);", "}"],
    lambda xp, x: xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True)), method="norm2",
    domain=(0.2, 2.0), sign=nonnegative,
)


def _emit_normalize(c: EmitContext) -> list[str]:
    x = c.args[0]
    lines = _reduce_dims(c, 0, lambda k: f"{x.at(k)} * {x.at(k)}")[:-2]
    lines += ["  V scale = jk::rsqrt(acc);",
              f"  for (int k = 0; k < {c.dim}; ++k) {c.out}[k] = {x.at('k')} * scale;", "}"]
    return lines


def _normalize_reference(xp, x):
    sq = xp.sum(x * x, axis=-1, keepdims=True)
    return x * xp.where(sq == 0, 0.0 * sq, 1.0 / xp.sqrt(xp.where(sq == 0, 1.0, sq)))


vector_op("Normalize", 1, lambda d, p: d[0], _emit_normalize, _normalize_reference,
          method="normalize", domain=(0.2, 2.0))


def _equal_dims(name):
    def out_dim(dims, params):
        broadcast_dims(name, dims)
        return 1

    return out_dim


def _squared_difference(c: EmitContext, k: int | str) -> str:
    """(a - b)^2, printed as (b - a)^2 (the same value, exactly) when a is a broadcast scalar:
    x86 reads it from memory as the second operand, where the register tile keeps its rows'
    values (measured on the Gaussian sum at M = N = 3e3, D = 3, one core: 7% faster)."""
    a, b = c.args
    if a.broadcast and not b.broadcast:
        a, b = b, a
    return f"jk::square({a.bcast(k)} - {b.bcast(k)})"


folding_op("SqDist", 2, _equal_dims("SqDist"), Fold(_squared_difference, _pair_dim),
           lambda xp, a, b: xp.sum((a - b) ** 2, axis=-1, keepdims=True), method="sqdist",
           sign=nonnegative)


def _scalprod_dims(dims, params):
    if dims[0] != dims[1]:
        raise dims_error("Scalprod", "operands must have the same dimension", dims)
    return 1


folding_op("Scalprod", 2, _scalprod_dims,
           Fold(lambda c, k: f"{c.args[0].bcast(k)} * {c.args[1].bcast(k)}", _pair_dim),
           lambda xp, a, b: xp.sum(a * b, axis=-1, keepdims=True), method="__or__",
           sign=product_sign)


def _weight_kind(name, s_dim, x_dim, dims):
    if s_dim == 1:
        return "iso"
    if s_dim == x_dim:
        return "diag"
    if s_dim == x_dim * x_dim:
        return "full"
    raise dims_error(name, f"weight dim must be 1, {x_dim} or {x_dim * x_dim}", dims)


def _weighted_dims(name):
    def out_dim(dims, params):
        if len(dims) == 3 and dims[1] != dims[2]:
            raise dims_error(name, "x and y must have the same dimension", dims)
        _weight_kind(name, dims[0], dims[1], dims)
        return 1

    return out_dim


def _emit_weighted(c: EmitContext) -> list[str]:
    s, v = c.args[0], c.args[1]
    d = v.dim
    lines = ["{"]
    if len(c.args) == 3:
        y = c.args[2]
        lines.append(f"  V diff[{d}];")
        lines.append(f"  for (int k = 0; k < {d}; ++k) diff[k] = {v.at('k')} - {y.at('k')};")
        v = Access(None, "diff", d)
    kind = _weight_kind("weighted", s.dim, d, (s.dim, d))
    if kind == "iso":
        lines += ["  " + line for line in fold_lines(d, lambda k: f"{v.at(k)} * {v.at(k)}")]
        lines.append(f"  {c.out}[0] = {s.at(0)} * acc;")
    elif kind == "diag":
        lines += ["  " + line for line in
                  fold_lines(d, lambda k: f"{s.at(k)} * {v.at(k)} * {v.at(k)}")]
        lines.append(f"  {c.out}[0] = acc;")
    else:
        lines += ["  V acc = jk::cst<V>(0);",
                  f"  for (int k = 0; k < {d}; ++k)",
                  f"    for (int l = 0; l < {d}; ++l) acc = acc + {v.at('k')} * "
                  f"{s.at(f'k * {d} + l')} * {v.at('l')};",
                  f"  {c.out}[0] = acc;"]
    return lines + ["}"]


def _weighted_reference(xp, s, x, y=None):
    v = x if y is None else x - y
    d = v.shape[-1]
    if s.shape[-1] == 1:
        return s * xp.sum(v * v, axis=-1, keepdims=True)
    if s.shape[-1] == d:
        return xp.sum(s * v * v, axis=-1, keepdims=True)
    S = s.reshape(s.shape[:-1] + (d, d))
    return xp.einsum("...k,...kl,...l->...", v, S, v)[..., None]


vector_op("WeightedSqNorm", 2, _weighted_dims("WeightedSqNorm"), _emit_weighted,
          _weighted_reference, method="weightedsqnorm", example_dims=(3, 3))
vector_op("WeightedSqDist", 3, _weighted_dims("WeightedSqDist"), _emit_weighted,
          _weighted_reference, method="weightedsqdist", example_dims=(3, 3, 3))


# Derivative rules.
def _jvp_extremum(args, ts, out, params):
    """The tangent flows through the selected component, as in jnp.max."""
    x, dx = args[0], ts[0]
    pick = make("OneHot", make("ArgMax" if out.name == "Max" else "ArgMin", x),
                params=(x.dim,))
    return dot(pick, dx)


def _jvp_norm2(args, ts, out, params):
    return div(dot(args[0], ts[0]), out)


def _jvp_normalize(args, ts, out, params):
    x, dx = args[0], ts[0]
    return div(sub(dx, mul(out, dot(out, dx))), make("Norm2", x))


def _jvp_sqdist(args, ts, out, params):
    x, y = args
    return scale(dot(sub(x, y), sub(ts[0], ts[1])), 2.0)


def _jvp_scalprod(args, ts, out, params):
    a, b = args
    return add(dot(ts[0], b), dot(a, ts[1]))


def _t_scalprod(args, linear, ct, out, params):
    a, b = args
    if linear[0] and linear[1]:
        raise ValueError("Scalprod of two tangent-dependent vectors is not linear")
    return (mul(ct, b) if linear[0] else None, mul(ct, a) if linear[1] else None)


def _weighted_jvp(s, x, ds, dx):
    kind = _weight_kind("weighted", s.dim, x.dim, (s.dim, x.dim))
    if kind == "iso":
        return add(mul(ds, make("SqNorm2", x)), scale(mul(s, dot(x, dx)), 2.0))
    if kind == "diag":
        return add(total(mul(ds, mul(x, x))), scale(total(mul(s, mul(x, dx))), 2.0))
    # d(x^T S x) = dx^T S x + x^T S dx + x^T dS x, exact for any S.
    quad = add(dot(dx, make("MatVecMult", s, x)), dot(x, make("MatVecMult", s, dx)
                                                      if dx is not None else None))
    return add(quad, dot(x, make("MatVecMult", ds, x) if ds is not None else None))


def _jvp_weightedsqnorm(args, ts, out, params):
    return _weighted_jvp(args[0], args[1], ts[0], ts[1])


def _jvp_weightedsqdist(args, ts, out, params):
    s, x, y = args
    return _weighted_jvp(s, make("Subtract", x, y), ts[0], sub(ts[1], ts[2]))


def _t_sum(args, linear, ct, out, params):
    return (widen(ct, args[0].dim),)


attach_rules("Sum", jvp=lambda args, ts, out, p: total(ts[0]), transpose=_t_sum)
attach_rules("Max", jvp=_jvp_extremum)
attach_rules("Min", jvp=_jvp_extremum)
attach_rules("ArgMax", jvp=zero_jvp)
attach_rules("ArgMin", jvp=zero_jvp)
attach_rules("SqNorm2", jvp=lambda args, ts, out, p: scale(dot(args[0], ts[0]), 2.0))
attach_rules("Norm2", jvp=_jvp_norm2)
attach_rules("Normalize", jvp=_jvp_normalize)
attach_rules("SqDist", jvp=_jvp_sqdist)
attach_rules("Scalprod", jvp=_jvp_scalprod, transpose=_t_scalprod)
attach_rules("WeightedSqNorm", jvp=_jvp_weightedsqnorm)
attach_rules("WeightedSqDist", jvp=_jvp_weightedsqdist)
