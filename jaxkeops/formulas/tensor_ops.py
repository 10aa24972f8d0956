"""Tensor algebra over row-major formula vectors: matrix-vector products, tensor and Kronecker
products, tensordot and axis permutations.

The cotangent of every product here is again a product of this file (a tensordot's cotangents
are tensordots of the output cotangent, permuted back into the operand's axes), so reverse mode
to any order stays symbolic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .algebra import add
from .nodes import Node, Op
from .optable import EmitContext, OpSpec, attach_rules, make, register
from .vector_ops import dims_error, vector_op


def _matvec_dims(dims, params):
    a, v = dims
    if a % v:
        raise dims_error("MatVecMult", f"matrix dim {a} is not a multiple of vector dim {v}", dims)
    return a // v


def _emit_matvec(c: EmitContext) -> list[str]:
    A, v = c.args
    m = v.dim
    return [f"for (int k = 0; k < {c.dim}; ++k) {{",
            f"  V acc = {A.at(f'k * {m}')} * {v.at(0)};",
            f"  for (int l = 1; l < {m}; ++l) acc = acc + {A.at(f'k * {m} + l')} * {v.at('l')};",
            f"  {c.out}[k] = acc;", "}"]


def _matvec_reference(xp, A, v):
    m = v.shape[-1]
    A = A.reshape(A.shape[:-1] + (A.shape[-1] // m, m))
    return xp.einsum("...kl,...l->...k", A, v)


vector_op("MatVecMult", 2, _matvec_dims, _emit_matvec, _matvec_reference,
          method="matvecmult", example_dims=(6, 3))


def _vecmat_dims(dims, params):
    v, a = dims
    if a % v:
        raise dims_error("VecMatMult", f"matrix dim {a} is not a multiple of vector dim {v}", dims)
    return a // v


def _emit_vecmat(c: EmitContext) -> list[str]:
    v, A = c.args
    n, m = v.dim, c.dim
    return [f"for (int k = 0; k < {m}; ++k) {{",
            f"  V acc = {v.at(0)} * {A.at('k')};",
            f"  for (int l = 1; l < {n}; ++l) acc = acc + {v.at('l')} * {A.at(f'l * {m} + k')};",
            f"  {c.out}[k] = acc;", "}"]


def _vecmat_reference(xp, v, A):
    n = v.shape[-1]
    A = A.reshape(A.shape[:-1] + (n, A.shape[-1] // n))
    return xp.einsum("...l,...lk->...k", v, A)


vector_op("VecMatMult", 2, _vecmat_dims, _emit_vecmat, _vecmat_reference,
          method="vecmatmult", example_dims=(3, 6))


def _emit_tensorprod(c: EmitContext) -> list[str]:
    a, b = c.args
    return [f"for (int k = 0; k < {a.dim}; ++k)",
            f"  for (int l = 0; l < {b.dim}; ++l) "
            f"{c.out}[k * {b.dim} + l] = {a.at('k')} * {b.at('l')};"]


def _tensorprod_reference(xp, a, b):
    out = a[..., :, None] * b[..., None, :]
    return out.reshape(out.shape[:-2] + (a.shape[-1] * b.shape[-1],))


vector_op("TensorProd", 2, lambda d, p: d[0] * d[1], _emit_tensorprod, _tensorprod_reference,
          method="tensorprod", example_dims=(2, 3))


def _table_emit(c: EmitContext, table: list[list[tuple[int, int]]]) -> list[str]:
    """out[k] = sum over (ia, ib) in table[k] of a[ia] * b[ib], unrolled at generation time."""
    a, b = c.args
    lines = []
    for k, pairs in enumerate(table):
        terms = " + ".join(f"{a.at(ia)} * {b.at(ib)}" for ia, ib in pairs)
        lines.append(f"{c.out}[{k}] = {terms};")
    return lines


def _kron_shapes(dims, params) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of the two operands of Kron: its one parameter is the two shapes one after
    the other (equal lengths), or () for two vectors."""
    shapes = tuple(params[0]) if params else ()
    if not shapes:
        return (dims[0],), (dims[1],)
    if len(shapes) % 2:
        raise ValueError(f"Kron takes two shapes of the same length, one after the other, got "
                         f"{shapes}")
    half = len(shapes) // 2
    return shapes[:half], shapes[half:]


def _interleave(first, second) -> tuple[int, ...]:
    return tuple(d for pair in zip(first, second) for d in pair)


def _kron_dims(dims, params):
    shape_a, shape_b = _kron_shapes(dims, params)
    if any(d < 1 for d in shape_a + shape_b):
        raise dims_error("Kron", f"shapes {shape_a} and {shape_b} must have positive sizes", dims)
    if int(np.prod(shape_a)) != dims[0] or int(np.prod(shape_b)) != dims[1]:
        raise dims_error("Kron", f"shapes {shape_a} and {shape_b} do not match", dims)
    return dims[0] * dims[1]


def _kron_table(dims, params):
    """np.kron of the two reshaped operands: output axes (a0, b0, a1, b1, ...), row-major."""
    shape_a, shape_b = _kron_shapes(dims, params)
    ones = (1,) * len(shape_a)
    ia = np.arange(dims[0]).reshape(_interleave(shape_a, ones))
    ib = np.arange(dims[1]).reshape(_interleave(ones, shape_b))
    ia, ib = np.broadcast_arrays(ia, ib)
    return [[(int(a), int(b))] for a, b in zip(ia.reshape(-1), ib.reshape(-1))]


def _kron_reference(xp, a, b, shapes=()):
    shape_a, shape_b = _kron_shapes((a.shape[-1], b.shape[-1]), (shapes,))
    ones = (1,) * len(shape_a)
    A = a.reshape(a.shape[:-1] + _interleave(shape_a, ones))
    B = b.reshape(b.shape[:-1] + _interleave(ones, shape_b))
    out = A * B
    return out.reshape(out.shape[:out.ndim - 2 * len(shape_a)] + (-1,))


vector_op("Kron", 2, _kron_dims,
          lambda c: _table_emit(c, _kron_table((c.args[0].dim, c.args[1].dim), c.params)),
          _kron_reference, param_kinds=("ints",), method="kron", example_dims=(4, 4),
          example_params=((2, 2, 2, 2),),
          doc="Kronecker product (np.kron, flattened) of a and b read as tensors of the two "
              "shapes given one after the other; matrices (p, q, r, s) or vectors ()")


def kron(a: Node, b: Node, shape_a: Sequence[int], shape_b: Sequence[int]) -> Node:
    """KeOps's Kron(a, b, shape_a, shape_b): np.kron(a.reshape(shape_a), b.reshape(shape_b)),
    flattened, for two shapes of the same length."""
    shape_a, shape_b = _int_tuple(shape_a, "shape_a"), _int_tuple(shape_b, "shape_b")
    if len(shape_a) != len(shape_b):
        raise ValueError(f"Kron: shape_a {shape_a} and shape_b {shape_b} must have the same "
                         "number of axes")
    return make("Kron", a, b, params=(shape_a + shape_b,))


def _int_tuple(values, name: str) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)):
        values = (values,)
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of integers, got {values!r}") from None


def _tensordot_dims(dims, params):
    fa, fb, ca, cb = params
    if int(np.prod(fa)) != dims[0] or int(np.prod(fb)) != dims[1]:
        raise dims_error("TensorDot", f"shapes {fa} and {fb} do not match", dims)
    if len(ca) != len(cb) or any(fa[i] != fb[j] for i, j in zip(ca, cb)):
        raise dims_error("TensorDot", f"contracted axes {ca} of {fa} and {cb} of {fb} differ", dims)
    keep_a = [d for i, d in enumerate(fa) if i not in ca]
    keep_b = [d for i, d in enumerate(fb) if i not in cb]
    return int(np.prod(keep_a + keep_b, dtype=np.int64))


def _tensordot_table(params):
    fa, fb, ca, cb = params
    ia = np.arange(int(np.prod(fa))).reshape(fa)
    ib = np.arange(int(np.prod(fb))).reshape(fb)
    keep_a = [i for i in range(len(fa)) if i not in ca]
    keep_b = [i for i in range(len(fb)) if i not in cb]
    ta = np.transpose(ia, keep_a + list(ca)).reshape(-1, int(np.prod([fa[i] for i in ca])))
    tb = np.transpose(ib, list(cb) + keep_b).reshape(int(np.prod([fb[i] for i in cb])), -1)
    return [list(zip(ta[r].tolist(), tb[:, s].tolist()))
            for r in range(ta.shape[0]) for s in range(tb.shape[1])]


def _tensordot_reference(xp, a, b, fa, fb, ca, cb):
    A = a.reshape(a.shape[:-1] + tuple(fa))
    B = b.reshape(b.shape[:-1] + tuple(fb))
    nb = A.ndim - len(fa)
    letters = "abcdefghijklmnopqrstuvw"
    la = list(letters[: len(fa)])
    lb = list(letters[len(fa): len(fa) + len(fb)])
    for i, j in zip(ca, cb):
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in ca] + [c for i, c in enumerate(lb)
                                                          if i not in cb]
    spec = f"...{''.join(la)},...{''.join(lb)}->...{''.join(out)}"
    res = xp.einsum(spec, A, B)
    return res.reshape(res.shape[:nb] + (-1,))


vector_op("TensorDot", 2, _tensordot_dims,
          lambda c: _table_emit(c, _tensordot_table(c.params)), _tensordot_reference,
          param_kinds=("ints", "ints", "ints", "ints"), method="tensordot",
          example_dims=(6, 6), example_params=((2, 3), (3, 2), (1,), (0,)),
          doc="numpy-style tensordot of a (shape fa) and b (shape fb) over axes ca and cb")


def _permute_check(dims, params):
    shape, axes = params
    if int(np.prod(shape, dtype=np.int64)) != dims[0]:
        raise dims_error("Permute", f"shape {shape} does not hold {dims[0]} components", dims)
    if sorted(axes) != list(range(len(shape))):
        raise dims_error("Permute", f"axes {axes} do not permute the axes of {shape}", dims)
    return dims[0]


def _permute_sources(shape, axes) -> list[int]:
    """Component k of the output reads component sources[k] of the input."""
    index = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    return np.transpose(index, axes).reshape(-1).tolist()


def _emit_permute(c: EmitContext) -> list[str]:
    a, = c.args
    return [f"{c.out}[{k}] = {a.at(src)};" for k, src in enumerate(_permute_sources(*c.params))]


def _permute_reference(xp, a, shape, axes):
    A = a.reshape(a.shape[:-1] + tuple(shape))
    nb = a.ndim - 1
    out = xp.transpose(A, tuple(range(nb)) + tuple(nb + t for t in axes))
    return out.reshape(a.shape)


def _permute_simplify(a, params, dim):
    shape, axes = params
    if list(axes) == sorted(axes):
        return a
    if isinstance(a, Op) and a.name == "Permute":  # two permutations compose into one
        inner_shape, inner_axes = a.params
        if tuple(inner_shape[t] for t in inner_axes) == tuple(shape):
            return make("Permute", a.args[0],
                        params=(inner_shape, tuple(inner_axes[t] for t in axes)))
    return None


register(OpSpec(name="Permute", arity=1, out_dim=_permute_check, emit=_emit_permute,
                reference=_permute_reference, param_kinds=("ints", "ints"), method="permute",
                example_dims=(6,), example_params=((2, 3), (1, 0)),
                doc="a vector read as a row-major tensor of `shape`, with its axes permuted "
                    "as numpy.transpose(axes) does"),
         simplify=_permute_simplify)


def tensordot_permuted(a: Node, b: Node, dimfa, dimfb, contfa, contfb, perm=None) -> Node:
    """KeOps's TensorDot with its optional permutation: the TensorDot of a (shape dimfa) and b
    (shape dimfb) over the axes contfa and contfb, whose kept axis t (a's kept axes, then b's)
    then moves to position perm[t] of the result. That is numpy.transpose with the inverse
    permutation, so it is built as our TensorDot followed by Permute."""
    dimfa, dimfb = _int_tuple(dimfa, "dimfa"), _int_tuple(dimfb, "dimfb")
    contfa, contfb = _int_tuple(contfa, "contfa"), _int_tuple(contfb, "contfb")
    product = make("TensorDot", a, b, params=(dimfa, dimfb, contfa, contfb))
    if perm is None:
        return product
    perm = _int_tuple(perm, "perm")
    kept = tuple(d for t, d in enumerate(dimfa) if t not in contfa) + tuple(
        d for t, d in enumerate(dimfb) if t not in contfb)
    if sorted(perm) != list(range(len(kept))):
        raise ValueError(f"TensorDot: perm {perm} is not a permutation of the {len(kept)} "
                         f"axes left after the contraction (shape {kept})")
    axes = tuple(perm.index(p) for p in range(len(kept)))
    return make("Permute", product, params=(kept, axes))


def _bilinear_jvp(name):
    def jvp(args, ts, out, params):
        a, b = args
        left = make(name, ts[0], b, params=params) if ts[0] is not None else None
        right = make(name, a, ts[1], params=params) if ts[1] is not None else None
        return add(left, right)

    return jvp


def _t_matvec(args, linear, ct, out, params):
    A, v = args
    return (make("TensorProd", ct, v) if linear[0] else None,
            make("VecMatMult", ct, A) if linear[1] else None)


def _t_vecmat(args, linear, ct, out, params):
    v, A = args
    return (make("MatVecMult", A, ct) if linear[0] else None,
            make("TensorProd", v, ct) if linear[1] else None)


def _t_tensorprod(args, linear, ct, out, params):
    a, b = args
    return (make("MatVecMult", ct, b) if linear[0] else None,
            make("VecMatMult", a, ct) if linear[1] else None)


def _contract_back(ct, other, ct_shape, other_shape, ct_axes, other_axes, order):
    """TensorDot(ct, other) contracted over the given axes, then permuted so that result axis t
    is axis t of the operand being differentiated (`order` names the operand axis of each
    result axis before the permutation)."""
    out = make("TensorDot", ct, other,
               params=(ct_shape, other_shape, tuple(ct_axes), tuple(other_axes)))
    axes = tuple(order.index(t) for t in range(len(order)))
    shape = tuple(ct_shape[c] for c in range(len(ct_shape)) if c not in ct_axes) + tuple(
        other_shape[c] for c in range(len(other_shape)) if c not in other_axes)
    return make("Permute", out, params=(shape, axes))


def _t_tensordot(args, linear, ct, out, params):
    """out[ka, kb] = sum over the contracted axes of a[ka, ca] b[cb, kb]; each cotangent is
    again a TensorDot of the output cotangent with the other operand."""
    a, b = args
    fa, fb, ca, cb = params
    ka = [t for t in range(len(fa)) if t not in ca]
    kb = [t for t in range(len(fb)) if t not in cb]
    ct_shape = tuple(fa[t] for t in ka) + tuple(fb[t] for t in kb)
    da = db = None
    if linear[0]:
        # Result axes: the kept axes of a, then b's contracted axes in b's order.
        rest = [ca[cb.index(t)] for t in sorted(cb)]
        da = _contract_back(ct, b, ct_shape, fb, range(len(ka), len(ct_shape)), kb, ka + rest)
    if linear[1]:
        rest = [cb[ca.index(t)] for t in sorted(ca)]
        db = _contract_back(ct, a, ct_shape, fa, range(len(ka)), ka, kb + rest)
    return da, db


def _t_kron(args, linear, ct, out, params):
    """Kron is a TensorDot with nothing contracted, axes interleaved (a0, b0, a1, b1, ...):
    each cotangent contracts the output cotangent with the other operand over its axes."""
    a, b = args
    shape_a, shape_b = _kron_shapes((a.dim, b.dim), params)
    shape = _interleave(shape_a, shape_b)
    rank = len(shape_a)
    own = tuple(range(rank))
    return (make("TensorDot", ct, b, params=(shape, shape_b, tuple(range(1, 2 * rank, 2)), own))
            if linear[0] else None,
            make("TensorDot", ct, a, params=(shape, shape_a, tuple(range(0, 2 * rank, 2)), own))
            if linear[1] else None)


def _t_permute(args, linear, ct, out, params):
    shape, axes = params
    permuted = tuple(shape[t] for t in axes)
    inverse = tuple(axes.index(t) for t in range(len(axes)))
    return (make("Permute", ct, params=(permuted, inverse)),)


attach_rules("MatVecMult", jvp=_bilinear_jvp("MatVecMult"), transpose=_t_matvec)
attach_rules("VecMatMult", jvp=_bilinear_jvp("VecMatMult"), transpose=_t_vecmat)
attach_rules("TensorProd", jvp=_bilinear_jvp("TensorProd"), transpose=_t_tensorprod)
attach_rules("Kron", jvp=_bilinear_jvp("Kron"), transpose=_t_kron)
attach_rules("TensorDot", jvp=_bilinear_jvp("TensorDot"), transpose=_t_tensordot)
attach_rules("Permute", jvp=lambda args, ts, out, p: make("Permute", ts[0], params=p),
             transpose=_t_permute)
