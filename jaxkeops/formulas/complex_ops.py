"""Complex ops, as KeOps's: a complex vector of dimension D is a real formula of dimension 2D whose
components interleave (re, im) pairs.

Binary ops (ComplexAdd, ComplexSubtract, ComplexMult, ComplexDivide) broadcast a complex scalar
(dim 2) against a complex vector (dim 2D); ComplexRealScal scales a complex vector by a real
scalar (dim 1). Real2Complex, Imag2Complex and ComplexExp1j turn a real formula of dim D into a
complex one (dim 2D); ComplexReal, ComplexImag, ComplexAbs, ComplexSquareAbs and ComplexAngle
go back. ComplexSum adds the complex components, ComplexSumT (its transpose) repeats a complex
scalar D times.

The dense references compute with jnp complex numbers, independently of the C printing, which
writes the real arithmetic out. Derivative rules treat each op as the real map it is on the
interleaved components: the transpose of multiplying by g is multiplying by conj(g).
"""

from __future__ import annotations

from collections.abc import Callable

from .algebra import add, div, dot, neg, scale
from .nodes import Const, Node, Op
from .optable import Access, EmitContext, OpSpec, make, register
from .vector_ops import dims_error

Maybe = Node | None

NAMES: list[str] = []  # the ops registered here, in order
# Ops whose value is real although an operand is complex (the LazyTensor layer returns a real
# LazyTensor for them); every other op here has a complex value.
REAL_VALUED = ("ComplexReal", "ComplexImag", "ComplexAbs", "ComplexSquareAbs", "ComplexAngle")


# ---------------------------------------------------------------------------------------------
# Dimension rules.
def _check_even(name: str, dims: tuple[int, ...], which: tuple[int, ...]) -> None:
    for t in which:
        if dims[t] % 2:
            raise dims_error(name, "a complex operand has an even dimension (interleaved re, im "
                             f"pairs), operand {t} has dim {dims[t]}", dims)


def _broadcast_complex(name: str) -> Callable[[tuple[int, ...], tuple], int]:
    def out_dim(dims: tuple[int, ...], params: tuple) -> int:
        _check_even(name, dims, tuple(range(len(dims))))
        vectors = {d for d in dims if d != 2}
        if len(vectors) > 1:
            raise dims_error(name, "complex operands must have the same dimension, or one of "
                             "them be a complex scalar (dim 2)", dims)
        return vectors.pop() if vectors else 2

    return out_dim


def _same_complex(name: str):
    def out_dim(dims, params):
        _check_even(name, dims, (0,))
        return dims[0]

    return out_dim


def _to_real(name: str):
    def out_dim(dims, params):
        _check_even(name, dims, (0,))
        return dims[0] // 2

    return out_dim


def _from_real(dims, params):
    return 2 * dims[0]


def _realscal_dims(dims, params):
    scalar, vector = dims if dims[0] == 1 else dims[::-1]
    if scalar != 1 or vector % 2:
        raise dims_error("ComplexRealScal", "operands are a real scalar (dim 1) and a complex "
                         "formula (even dim), in either order", dims)
    return vector


def _complexsum_dims(dims, params):
    _check_even("ComplexSum", dims, (0,))
    return 2


def _complexsumt_dims(dims, params):
    (dim,) = params
    if dims[0] != 2:
        raise dims_error("ComplexSumT", "the operand must be a complex scalar (dim 2)", dims)
    if dim < 2 or dim % 2:
        raise ValueError(f"ComplexSumT: the output dimension must be even and >= 2, got {dim}")
    return dim


# ---------------------------------------------------------------------------------------------
# C printing. Complex component k of an operand is (a[2k], a[2k+1]); a complex scalar operand
# is (a[0], a[1]) for every k. `k` is "0" when there is one component, so no loop is printed.
def _part(a: Access, k: str, part: int) -> str:
    if a.dim == 2 or k == "0":
        return a.at(part)
    return a.at(f"2 * {k} + {part}")


def _out(ctx: EmitContext, k: str, part: int) -> str:
    return f"{ctx.out}[{part if k == '0' else f'2 * {k} + {part}'}]"


def _for_each(count: int, body: Callable[[str], list[str]]) -> list[str]:
    if count == 1:
        return ["{", *("  " + line for line in body("0")), "}"]
    return [f"for (int k = 0; k < {count}; ++k) {{", *("  " + line for line in body("k")), "}"]


def _complex_emit(compute: Callable[..., tuple[list[str], str, str]]):
    """C printing of an op computed pair by pair: compute(ar, ai[, br, bi]) gives local
    statements and the (re, im) expressions of the result."""

    def emit(ctx: EmitContext) -> list[str]:
        def body(k: str) -> list[str]:
            names = []
            lines = []
            for t, a in enumerate(ctx.args):
                for part, suffix in ((0, "r"), (1, "i")):
                    name = f"{'ab'[t]}{suffix}"
                    lines.append(f"V {name} = {_part(a, k, part)};")
                    names.append(name)
            local, re, im = compute(*names)
            return [*lines, *local, f"{_out(ctx, k, 0)} = {re};", f"{_out(ctx, k, 1)} = {im};"]

        return _for_each(ctx.dim // 2, body)

    return emit


def _emit_to_real(expr: Callable[[str, str], str]):
    def emit(ctx: EmitContext) -> list[str]:
        a = ctx.args[0]
        return _for_each(ctx.dim, lambda k: [
            f"{ctx.out}[{k}] = {expr(_part(a, k, 0), _part(a, k, 1))};"])

    return emit


def _emit_from_real(re: Callable[[str], str], im: Callable[[str], str]):
    def emit(ctx: EmitContext) -> list[str]:
        a = ctx.args[0]

        def body(k: str) -> list[str]:
            return [f"V x = {a.at(k)};", f"{_out(ctx, k, 0)} = {re('x')};",
                    f"{_out(ctx, k, 1)} = {im('x')};"]

        return _for_each(a.dim, body)

    return emit


def _emit_realscal(ctx: EmitContext) -> list[str]:
    s, z = ctx.args
    return ctx.loop(lambda k: f"{s.at(0)} * {z.at(k)}")


def _emit_complexsum(ctx: EmitContext) -> list[str]:
    a = ctx.args[0]
    lines = ["{", f"  V re = {a.at(0)};", f"  V im = {a.at(1)};"]
    if a.dim > 2:
        lines.append(f"  for (int k = 1; k < {a.dim // 2}; ++k) {{ re = re + {a.at('2 * k')}; "
                     f"im = im + {a.at('2 * k + 1')}; }}")
    return [*lines, f"  {ctx.out}[0] = re;", f"  {ctx.out}[1] = im;", "}"]


def _emit_complexsumt(ctx: EmitContext) -> list[str]:
    a = ctx.args[0]
    return _for_each(ctx.dim // 2, lambda k: [f"{_out(ctx, k, 0)} = {a.at(0)};",
                                             f"{_out(ctx, k, 1)} = {a.at(1)};"])


_ZERO = "jk::cst<V>(0)"


# ---------------------------------------------------------------------------------------------
# Dense references, with the array module's complex numbers.
def as_complex(x):
    """The complex numbers of an interleaved (..., 2D) array: (..., D)."""
    return x[..., 0::2] + 1j * x[..., 1::2]


def interleave(xp, z):
    """The interleaved (..., 2D) real array of complex numbers (..., D)."""
    pairs = xp.stack([xp.real(z), xp.imag(z)], axis=-1)
    return pairs.reshape(pairs.shape[:-2] + (2 * pairs.shape[-2],))


def _ref_complex(f):
    return lambda xp, *args: interleave(xp, f(xp, *(as_complex(a) for a in args)))


def _ref_to_real(f):
    return lambda xp, a: f(xp, as_complex(a))


def _ref_realscal(xp, s, z):
    return s * z if s.shape[-1] == 1 else z * s


def _ref_complexsumt(xp, a, dim):
    z = as_complex(a)
    return interleave(xp, xp.broadcast_to(z, z.shape[:-1] + (dim // 2,)))


# ---------------------------------------------------------------------------------------------
# Simplifications: shapes that derivative rules and promotions of real operands produce.
def _is_const(node: Node, value: float) -> bool:
    return isinstance(node, Const) and node.value == value


def _name(node: Node) -> str | None:
    return node.name if isinstance(node, Op) else None


def _simplify_add(a, b, params, dim):
    return make("Add", a, b) if a.dim == b.dim else None


def _simplify_subtract(a, b, params, dim):
    return make("Subtract", a, b) if a.dim == b.dim else None


def _simplify_mult(a, b, params, dim):
    if _is_const(a, 0.0) or _is_const(b, 0.0):
        return Const(0.0, dim)
    for s, z in ((a, b), (b, a)):
        if _name(s) == "Real2Complex" and s.dim == 2:
            return make("ComplexRealScal", s.args[0], z)
    return None


def _simplify_realscal(a, b, params, dim):
    if a.dim != 1:  # the real scalar comes first
        return make("ComplexRealScal", b, a)
    if _is_const(a, 1.0):
        return b
    if _is_const(a, 0.0) or _is_const(b, 0.0):
        return Const(0.0, dim)
    if _is_const(a, -1.0):
        return make("Minus", b)
    return None


def _simplify_conj(a, params, dim):
    return a.args[0] if _name(a) == "Conj" else None


def _simplify_real(a, params, dim):
    if _name(a) == "Real2Complex":
        return a.args[0]
    if _name(a) == "Imag2Complex":
        return Const(0.0, dim)
    return None


def _simplify_imag(a, params, dim):
    if _name(a) == "Imag2Complex":
        return a.args[0]
    if _name(a) == "Real2Complex":
        return Const(0.0, dim)
    return None


def _simplify_from_real(a, params, dim):
    return Const(0.0, dim) if _is_const(a, 0.0) else None


def _simplify_complexsum(a, params, dim):
    return a if a.dim == 2 else None


def _simplify_complexsumt(a, params, dim):
    return a if params[0] == 2 else None


# ---------------------------------------------------------------------------------------------
# Formula helpers for the derivative rules (None is a symbolic zero).
def cmul(a: Maybe, b: Maybe) -> Maybe:
    return None if a is None or b is None else make("ComplexMult", a, b)


def conj(a: Maybe) -> Maybe:
    return None if a is None else make("Conj", a)


def spread(a: Maybe, dim: int) -> Maybe:
    """`a` as a complex formula of dimension `dim` (a complex scalar is repeated)."""
    return a if a is None or a.dim == dim else make("ComplexSumT", a, params=(dim,))


def gather(ct: Maybe, dim: int) -> Maybe:
    """The adjoint of `spread`: a cotangent of dimension `dim`."""
    return ct if ct is None or ct.dim == dim else make("ComplexSum", ct)


def _csub(a: Maybe, b: Maybe, dim: int) -> Maybe:
    if b is None:
        return spread(a, dim)
    if a is None:
        return spread(neg(b), dim)
    return make("ComplexSubtract", a, b)


def _real_of_conj_times(a: Node, t: Maybe) -> Maybe:
    """Re(conj(a) t) = a_re t_re + a_im t_im, componentwise."""
    return None if t is None else make("ComplexReal", cmul(conj(a), t))


def _jvp_add(args, ts, out, params):
    if ts[0] is None or ts[1] is None:
        return spread(ts[0] if ts[1] is None else ts[1], out.dim)
    return make("ComplexAdd", ts[0], ts[1])


def _t_add(args, linear, ct, out, params):
    return gather(ct, args[0].dim), gather(ct, args[1].dim)


def _jvp_sub(args, ts, out, params):
    return _csub(ts[0], ts[1], out.dim)


def _t_sub(args, linear, ct, out, params):
    return gather(ct, args[0].dim), gather(neg(ct), args[1].dim)


def _jvp_mult(args, ts, out, params):
    a, b = args
    return add(cmul(ts[0], b), cmul(a, ts[1]))


def _t_mult(args, linear, ct, out, params):
    a, b = args
    if linear[0] and linear[1]:
        raise ValueError("ComplexMult of two tangent-dependent factors is not linear")
    return (gather(cmul(conj(b), ct), a.dim) if linear[0] else None,
            gather(cmul(conj(a), ct), b.dim) if linear[1] else None)


def _jvp_divide(args, ts, out, params):
    numerator = _csub(ts[0], cmul(out, ts[1]), out.dim)
    return make("ComplexDivide", numerator, args[1])


def _t_divide(args, linear, ct, out, params):
    if linear[1]:
        raise ValueError("ComplexDivide by a tangent-dependent formula is not linear")
    return gather(make("ComplexDivide", ct, conj(args[1])), args[0].dim), None


def _jvp_realscal(args, ts, out, params):
    s, z = args
    first = None if ts[0] is None else make("ComplexRealScal", ts[0], z)
    second = None if ts[1] is None else make("ComplexRealScal", s, ts[1])
    return add(first, second)


def _t_realscal(args, linear, ct, out, params):
    s, z = args
    if linear[0] and linear[1]:
        raise ValueError("ComplexRealScal of two tangent-dependent factors is not linear")
    return (dot(z, ct) if linear[0] else None,
            make("ComplexRealScal", s, ct) if linear[1] else None)


def _linear(name: str, adjoint: Callable[[Node, Node], Node]):
    """jvp and transpose rules of a linear unary op whose adjoint is `adjoint(ct, arg)`."""
    def jvp(args, ts, out, params):
        return make(name, ts[0], params=params)

    def transpose(args, linear, ct, out, params):
        return (adjoint(ct, args[0]),)

    return {"jvp": jvp, "transpose": transpose}


# ---------------------------------------------------------------------------------------------
# The table entries.
def _op(name: str, arity: int, out_dim, emit, reference, method: str | None = None,
        simplify=None, **meta) -> OpSpec:
    """Registers a complex op. Ops without a pykeops method get a private LazyTensor method
    (`_complexmult`, ...) that applies the op to the raw interleaved formulas, as the op
    table gives every op a method; users go through ComplexLazyTensor's operators instead."""
    spec = OpSpec(name=name, arity=arity, out_dim=out_dim, emit=emit, reference=reference,
                  method=method or f"_{name.lower()}", **meta)
    NAMES.append(name)
    return register(spec, simplify)


_op("ComplexAdd", 2, _broadcast_complex("ComplexAdd"),
    _complex_emit(lambda ar, ai, br, bi: ([], f"{ar} + {br}", f"{ai} + {bi}")),
    _ref_complex(lambda xp, a, b: a + b), simplify=_simplify_add, example_dims=(2, 6),
    jvp=_jvp_add, transpose=_t_add,
    doc="a + b for complex a, b (equal dims are plain Add; a complex scalar broadcasts)")
_op("ComplexSubtract", 2, _broadcast_complex("ComplexSubtract"),
    _complex_emit(lambda ar, ai, br, bi: ([], f"{ar} - {br}", f"{ai} - {bi}")),
    _ref_complex(lambda xp, a, b: a - b), simplify=_simplify_subtract, example_dims=(6, 2),
    jvp=_jvp_sub, transpose=_t_sub, doc="a - b for complex a, b")
_op("ComplexMult", 2, _broadcast_complex("ComplexMult"),
    _complex_emit(lambda ar, ai, br, bi: ([], f"{ar} * {br} - {ai} * {bi}",
                                          f"{ar} * {bi} + {ai} * {br}")),
    _ref_complex(lambda xp, a, b: a * b), simplify=_simplify_mult, example_dims=(6, 6),
    jvp=_jvp_mult, transpose=_t_mult, doc="a * b for complex a, b")
_op("ComplexDivide", 2, _broadcast_complex("ComplexDivide"),
    _complex_emit(lambda ar, ai, br, bi: ([f"V d = {br} * {br} + {bi} * {bi};"],
                                          f"({ar} * {br} + {ai} * {bi}) / d",
                                          f"({ai} * {br} - {ar} * {bi}) / d")),
    _ref_complex(lambda xp, a, b: a / b), example_dims=(2, 6), domain=(0.5, 2.0),
    jvp=_jvp_divide, transpose=_t_divide, doc="a / b for complex a, b")
_op("ComplexRealScal", 2, _realscal_dims, _emit_realscal, _ref_realscal,
    simplify=_simplify_realscal, example_dims=(1, 6), jvp=_jvp_realscal, transpose=_t_realscal,
    doc="s * z for a real scalar s and a complex z (the operands may come in either order)")
_op("Conj", 1, _same_complex("Conj"),
    _complex_emit(lambda ar, ai: ([], ar, f"-{ai}")),
    _ref_complex(lambda xp, a: xp.conj(a)), simplify=_simplify_conj, example_dims=(6,),
    **_linear("Conj", lambda ct, a: make("Conj", ct)), doc="the complex conjugate")
_op("ComplexExp", 1, _same_complex("ComplexExp"),
    _complex_emit(lambda ar, ai: ([f"V r = jk::exp({ar});"], f"r * jk::cos({ai})",
                                  f"r * jk::sin({ai})")),
    _ref_complex(lambda xp, a: xp.exp(a)), example_dims=(6,),
    jvp=lambda args, ts, out, p: cmul(out, ts[0]), doc="the complex exponential")
_op("ComplexExp1j", 1, _from_real,
    _emit_from_real(lambda x: f"jk::cos({x})", lambda x: f"jk::sin({x})"),
    lambda xp, a: interleave(xp, xp.exp(1j * a)), method="exp1j", example_dims=(3,),
    jvp=lambda args, ts, out, p: cmul(out, make("Imag2Complex", ts[0])),
    doc="exp(1j x) for a real x")
_op("Real2Complex", 1, _from_real,
    _emit_from_real(lambda x: x, lambda x: _ZERO),
    lambda xp, a: interleave(xp, a + 0j), method="real2complex", example_dims=(3,),
    simplify=_simplify_from_real,
    **_linear("Real2Complex", lambda ct, a: make("ComplexReal", ct)),
    doc="a real x as complex numbers x + 0j")
_op("Imag2Complex", 1, _from_real,
    _emit_from_real(lambda x: _ZERO, lambda x: x),
    lambda xp, a: interleave(xp, 1j * a), method="imag2complex", example_dims=(3,),
    simplify=_simplify_from_real,
    **_linear("Imag2Complex", lambda ct, a: make("ComplexImag", ct)),
    doc="a real x as complex numbers 0 + xj")
_op("ComplexReal", 1, _to_real("ComplexReal"), _emit_to_real(lambda re, im: re),
    _ref_to_real(lambda xp, z: xp.real(z)), simplify=_simplify_real, example_dims=(6,),
    **_linear("ComplexReal", lambda ct, a: make("Real2Complex", ct)),
    doc="the real parts")
_op("ComplexImag", 1, _to_real("ComplexImag"), _emit_to_real(lambda re, im: im),
    _ref_to_real(lambda xp, z: xp.imag(z)), simplify=_simplify_imag, example_dims=(6,),
    **_linear("ComplexImag", lambda ct, a: make("Imag2Complex", ct)),
    doc="the imaginary parts")
_op("ComplexSquareAbs", 1, _to_real("ComplexSquareAbs"),
    _emit_to_real(lambda re, im: f"{re} * {re} + {im} * {im}"),
    _ref_to_real(lambda xp, z: xp.real(z * xp.conj(z))), example_dims=(6,),
    jvp=lambda args, ts, out, p: scale(_real_of_conj_times(args[0], ts[0]), 2.0),
    doc="|z|^2, componentwise")
_op("ComplexAbs", 1, _to_real("ComplexAbs"),
    _emit_to_real(lambda re, im: f"jk::sqrt({re} * {re} + {im} * {im})"),
    _ref_to_real(lambda xp, z: xp.abs(z)), example_dims=(6,), domain=(0.2, 2.0),
    jvp=lambda args, ts, out, p: div(_real_of_conj_times(args[0], ts[0]), out),
    doc="|z|, componentwise (its derivative is not defined at 0)")
_op("ComplexAngle", 1, _to_real("ComplexAngle"),
    _emit_to_real(lambda re, im: f"jk::atan2({im}, {re})"),
    _ref_to_real(lambda xp, z: xp.angle(z)), example_dims=(6,), domain=(0.2, 2.0),
    jvp=lambda args, ts, out, p: div(make("ComplexImag", cmul(conj(args[0]), ts[0])),
                                     make("ComplexSquareAbs", args[0])),
    doc="the argument atan2(im, re) in [-pi, pi], componentwise (not continuous across the "
        "negative real axis)")
_op("ComplexSum", 1, _complexsum_dims, _emit_complexsum,
    lambda xp, a: interleave(xp, xp.sum(as_complex(a), axis=-1, keepdims=True)),
    simplify=_simplify_complexsum, example_dims=(6,),
    **_linear("ComplexSum", lambda ct, a: spread(ct, a.dim)),
    doc="the sum of the complex components (a complex scalar)")
_op("ComplexSumT", 1, _complexsumt_dims, _emit_complexsumt, _ref_complexsumt,
    param_kinds=("int",), simplify=_simplify_complexsumt, example_dims=(2,),
    example_params=(6,), **_linear("ComplexSumT", lambda ct, a: gather(ct, 2)),
    doc="a complex scalar repeated to a complex vector of the given (real) dimension")
