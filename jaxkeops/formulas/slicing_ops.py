"""Slicing and assembling formula vectors: Elem, Extract, their transposes ElemT and ExtractT
(the injections that symbolic gradients and basis vectors are made of), Concat and OneHot.
"""

from __future__ import annotations

import numpy as np

from .algebra import zeros_or
from .elementwise import round_half_away as _round_half_away
from .nodes import Const, Node, Op
from .optable import OPS, EmitContext, OpSpec, attach_rules, make, register, zero_jvp
from .vector_ops import dims_error, injection_of, vector_op


def _is_zero(node: Node) -> bool:
    return isinstance(node, Const) and node.value == 0.0


def _elem_dims(dims, params):
    (m,) = params
    if not 0 <= m < dims[0]:
        raise dims_error("Elem", f"index {m} is out of range for a vector of dim {dims[0]}", dims)
    return 1


def _simplify_elem(x: Node, params: tuple, dim: int) -> Node | None:
    """Reading a component of a constant, of a concatenation or of an injection needs no op;
    an elementwise op whose operands reach an injection is evaluated at that component only
    (what the basis vectors of symbolic calculus simplify through)."""
    (m,) = params
    if isinstance(x, Const):
        return Const(x.value)
    if x.dim == 1:
        return x
    if not isinstance(x, Op):
        return None
    injected = injection_of(x)
    if injected is not None:
        inner, start = injected
        if start <= m < start + inner.dim:
            return make("Elem", inner, params=(m - start,))
        return Const(0.0)
    if x.name == "Concat":
        a, b = x.args
        return make("Elem", a, params=(m,)) if m < a.dim else make("Elem", b,
                                                                    params=(m - a.dim,))
    if OPS[x.name].elementwise and _reaches_injection(x):
        return make(x.name, *(make("Elem", a, params=(m,)) if a.dim > 1 else a for a in x.args),
                    params=x.params)
    return None


def _reaches_injection(node: Node) -> bool:
    """Whether an injection is among the vector operands of node, through elementwise ops."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n in seen or not isinstance(n, Op):
            continue
        seen.add(n)
        if injection_of(n) is not None:
            return True
        if OPS[n.name].elementwise:
            stack.extend(a for a in n.args if a.dim > 1)
    return False


register(OpSpec(name="Elem", arity=1, out_dim=_elem_dims,
                emit=lambda c: [f"{c.out}[0] = {c.args[0].at(c.params[0])};"],
                reference=lambda xp, x, m: x[..., m:m + 1], param_kinds=("int",),
                example_params=(1,), example_dims=(3,)),
         simplify=_simplify_elem)


def _extract_dims(dims, params):
    start, length = params
    if length < 1 or start < 0 or start + length > dims[0]:
        raise dims_error("Extract", f"slice [{start}:{start + length}] is out of range for a "
                    f"vector of dim {dims[0]}", dims)
    return length


def _simplify_extract(x: Node, params: tuple, dim: int) -> Node | None:
    start, length = params
    if start == 0 and length == x.dim:
        return x
    if isinstance(x, Const):
        return Const(x.value, length)
    injected = injection_of(x) if isinstance(x, Op) and x.name == "ExtractT" else None
    if injected is not None:
        inner, offset = injected
        if start >= offset and start + length <= offset + inner.dim:
            return make("Extract", inner, params=(start - offset, length))
        if start + length <= offset or start >= offset + inner.dim:
            return Const(0.0, length)
    if isinstance(x, Op) and x.name == "Concat":
        a, b = x.args
        if start + length <= a.dim:
            return make("Extract", a, params=(start, length))
        if start >= a.dim:
            return make("Extract", b, params=(start - a.dim, length))
    return None


register(OpSpec(name="Extract", arity=1, out_dim=_extract_dims,
                emit=lambda c: c.loop(lambda k: c.args[0].at(f"{c.params[0]} + {k}")),
                reference=lambda xp, x, start, length: x[..., start:start + length],
                param_kinds=("int", "int"), example_params=(1, 2), example_dims=(4,)),
         simplify=_simplify_extract)


def _zeros_around(xp, x, before: int, after: int):
    """x with `before` zeros in front of and `after` zeros behind its last axis."""
    shape = x.shape[:-1]
    parts = [xp.zeros(shape + (before,), x.dtype), x, xp.zeros(shape + (after,), x.dtype)]
    return xp.concatenate(parts, axis=-1)


def _elemt_dims(dims, params):
    n, m = params
    if dims[0] != 1:
        raise dims_error("ElemT", "the operand must be a scalar", dims)
    if not 0 <= m < n:
        raise dims_error("ElemT", f"position {m} is out of range for a vector of dim {n}", dims)
    return n


def _simplify_elemt(x: Node, params: tuple, dim: int) -> Node | None:
    if dim == 1:
        return x
    return Const(0.0, dim) if _is_zero(x) else None


def _emit_elemt(c: EmitContext) -> list[str]:
    n, m = c.params
    return [f"for (int k = 0; k < {n}; ++k) {c.out}[k] = jk::cst<V>(0);",
            f"{c.out}[{m}] = {c.args[0].at(0)};"]


register(OpSpec(name="ElemT", arity=1, out_dim=_elemt_dims, emit=_emit_elemt,
                reference=lambda xp, x, n, m: _zeros_around(xp, x, m, n - m - 1),
                param_kinds=("int", "int"), method="elemT", example_dims=(1,),
                example_params=(4, 2),
                doc="ElemT(x, n, m): the scalar x at component m of a zero vector of dim n "
                    "(the transpose of Elem)"),
         simplify=_simplify_elemt)


def _extractt_dims(dims, params):
    start, dim = params
    if start < 0 or start + dims[0] > dim:
        raise dims_error("ExtractT", f"components [{start}:{start + dims[0]}] do not fit in a "
                         f"vector of dim {dim}", dims)
    return dim


def _simplify_extractt(x: Node, params: tuple, dim: int) -> Node | None:
    if x.dim == dim:
        return x
    return Const(0.0, dim) if _is_zero(x) else None


def _emit_extractt(c: EmitContext) -> list[str]:
    start, dim = c.params
    x = c.args[0]
    lines = []
    if start:
        lines.append(f"for (int k = 0; k < {start}; ++k) {c.out}[k] = jk::cst<V>(0);")
    lines.append(f"for (int k = 0; k < {x.dim}; ++k) {c.out}[{start} + k] = {x.at('k')};")
    if start + x.dim < dim:
        lines.append(f"for (int k = {start + x.dim}; k < {dim}; ++k) "
                     f"{c.out}[k] = jk::cst<V>(0);")
    return lines


register(OpSpec(name="ExtractT", arity=1, out_dim=_extractt_dims, emit=_emit_extractt,
                reference=lambda xp, x, start, dim: _zeros_around(
                    xp, x, start, dim - start - x.shape[-1]),
                param_kinds=("int", "int"), method="extractT", example_dims=(2,),
                example_params=(1, 4),
                doc="ExtractT(x, start, dim): x at components start..start+x.dim-1 of a zero "
                    "vector of dim `dim` (the transpose of Extract)"),
         simplify=_simplify_extractt)


def _emit_concat(c: EmitContext) -> list[str]:
    a, b = c.args
    return [f"for (int k = 0; k < {a.dim}; ++k) {c.out}[k] = {a.at('k')};",
            f"for (int k = 0; k < {b.dim}; ++k) {c.out}[{a.dim} + k] = {b.at('k')};"]


def _concat_reference(xp, a, b):
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    a = xp.broadcast_to(a, shape + a.shape[-1:])
    b = xp.broadcast_to(b, shape + b.shape[-1:])
    return xp.concatenate([a, b], axis=-1)


vector_op("Concat", 2, lambda d, p: d[0] + d[1], _emit_concat, _concat_reference,
          method="concat")


def _onehot_dims(dims, params):
    if dims[0] != 1:
        raise dims_error("OneHot", "the operand must be a scalar", dims)
    if params[0] < 1:
        raise ValueError(f"OneHot: dimension must be >= 1, got {params[0]}")
    return params[0]


def _onehot_reference(xp, x, d):
    idx = _round_half_away(xp, x)
    return (idx == xp.arange(d)).astype(x.dtype)


vector_op("OneHot", 1, _onehot_dims,
          lambda c: c.loop(lambda k: f"jk::onehot({c.args[0].at(0)}, {k})"),
          _onehot_reference, param_kinds=("int",), method="one_hot", smooth=False,
          example_params=(4,), example_dims=(1,), domain=(-0.4, 4.4),
          doc="1 at the component round(x), 0 elsewhere")



# Derivative rules.
def _t_elem(args, linear, ct, out, params):
    return (make("ElemT", ct, params=(args[0].dim, params[0])),)


def _t_extract(args, linear, ct, out, params):
    return (make("ExtractT", ct, params=(params[0], args[0].dim)),)


def _t_elemt(args, linear, ct, out, params):
    return (make("Elem", ct, params=(params[1],)),)


def _t_extractt(args, linear, ct, out, params):
    return (make("Extract", ct, params=(params[0], args[0].dim)),)


def _jvp_concat(args, ts, out, params):
    a, b = args
    return make("Concat", zeros_or(ts[0], a.dim), zeros_or(ts[1], b.dim))


def _t_concat(args, linear, ct, out, params):
    a, b = args
    return (make("Extract", ct, params=(0, a.dim)) if linear[0] else None,
            make("Extract", ct, params=(a.dim, b.dim)) if linear[1] else None)


attach_rules("Elem", jvp=lambda args, ts, out, p: make("Elem", ts[0], params=p),
             transpose=_t_elem)
attach_rules("Extract", jvp=lambda args, ts, out, p: make("Extract", ts[0], params=p),
             transpose=_t_extract)
attach_rules("ElemT", jvp=lambda args, ts, out, p: make("ElemT", ts[0], params=p),
             transpose=_t_elemt)
attach_rules("ExtractT", jvp=lambda args, ts, out, p: make("ExtractT", ts[0], params=p),
             transpose=_t_extractt)
attach_rules("Concat", jvp=_jvp_concat, transpose=_t_concat)
attach_rules("OneHot", jvp=zero_jvp)
