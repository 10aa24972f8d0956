"""Tests of the KeOps formula-string parser: aliases, grammar, precedence, every op, errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxkeops.formulas import OPS, Const, Node, Op, OpSpec, Var, make, walk
from jaxkeops.formulas.functions import FUNCTIONS
from jaxkeops.formulas.parser import (
    FormulaArgumentError,
    FormulaSyntaxError,
    parse_aliases,
    parse_formula,
)
from jaxkeops.formulas.tensor_ops import kron, tensordot_permuted

ALIASES = parse_aliases(["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "s = Pm(1)", "c = Vi(1)"])
x, y, b, s, c = (ALIASES[n] for n in "xybsc")


def p(text: str) -> Node:
    return parse_formula(text, ALIASES)


# Aliases.


def test_aliases_positional_explicit_and_var_forms():
    assert (x, y, b, s, c) == (Var(0, 3, 0), Var(1, 3, 1), Var(2, 1, 1), Var(3, 1, 2), Var(4, 1, 0))
    got = parse_aliases(["a=Vi(5,2)", "  u =Vj( 0 , 4 ) ", "w = Var(7, 1, 2)", "q = Pm(2)"])
    assert got == {"a": Var(5, 2, 0), "u": Var(0, 4, 1), "w": Var(7, 1, 2), "q": Var(3, 2, 2)}
    assert list(got) == ["a", "u", "w", "q"]
    # Two names for the same variable are fine.
    assert parse_aliases(["a = Vi(0, 3)", "b = Var(0, 3, 0)"]) == {"a": x, "b": x}


@pytest.mark.parametrize(
    "aliases, match",
    [
        (["x = Vi(3)", "x = Vj(3)"], r"alias 'x = Vj\(3\)'.*declared twice"),
        (["x = Vk(3)"], r"bad category 'Vk'(.|\n)*alias 'x = Vk\(3\)'"),
        (["x = Var(0, 3, 7)"], r"bad category 7(.|\n)*alias 'x = Var"),
        (["x = Vi(0, 3)", "y = Vj(0, 3)"], r"alias 'y = Vj\(0, 3\)'.*index 0 .*Vi\(0,3\)"),
        (["x = Vi(0, 3)", "y = Vi(0, 2)"], r"alias 'y = Vi\(0, 2\)'.*index 0"),
        (["x Vi(3)"], r"expected '='(.|\n)*alias 'x Vi\(3\)'"),
        (["x = Vi(3) + 1"], r"unexpected '\+' after the alias"),
        (["x = Vi(1, 2, 3)"], r"Vi takes Vi\(dim\) or Vi\(ind, dim\), got 3"),
        (["x = Var(1, 2)"], r"Var takes Var\(ind, dim, cat\), got 2"),
        (["x = Vi(d)"], r"alias 'x = Vi\(d\)': expected an integer literal"),
        (["x = Vi(0)"], r"alias 'x = Vi\(0\)'.*dimension must be >= 1"),
        (["x = Vi(3"], r"unbalanced parentheses"),
        (["3 = Vi(3)"], r"must look like 'name = Vi\(dim\)'"),
    ],
)
def test_alias_errors(aliases, match):
    with pytest.raises(ValueError, match=match):
        parse_aliases(aliases)


def test_aliases_must_be_a_sequence_of_strings():
    with pytest.raises(TypeError):
        parse_aliases("x = Vi(3)")


# Grammar and precedence.


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Exp(-SqDist(x,y)) * b",
            make("Mult", make("Exp", make("Minus", make("SqDist", x, y))), b),
        ),
        ("x + y * x", make("Add", x, make("Mult", y, x))),
        ("(x + y) * x", make("Mult", make("Add", x, y), x)),
        ("-x * y", make("Mult", make("Minus", x), y)),
        ("x * -y", make("Mult", x, make("Minus", y))),
        ("x - -y", make("Subtract", x, make("Minus", y))),
        ("+x", x),
        ("x - y - x", make("Subtract", make("Subtract", x, y), x)),
        ("x / y / x", make("Divide", make("Divide", x, y), x)),
        ("x - y * x / y", make("Subtract", x, make("Divide", make("Mult", y, x), y))),
        ("(x|y) * c", make("Mult", make("Scalprod", x, y), c)),
        ("x - y | x - y", make("Scalprod", make("Subtract", x, y), make("Subtract", x, y))),
        ("x * b | y", make("Scalprod", make("Mult", x, b), y)),
        ("-x[0]", make("Minus", make("Elem", x, params=(0,)))),
        ("(-x)[0]", make("Elem", make("Minus", x), params=(0,))),
        ("x[1]", make("Elem", x, params=(1,))),
        ("x[0:2]", make("Extract", x, params=(0, 2))),
        ("x[1:]", make("Extract", x, params=(1, 2))),
        ("x[:2]", make("Extract", x, params=(0, 2))),
        ("x[0:2][1]", make("Elem", make("Extract", x, params=(0, 2)), params=(1,))),
        ("(x + y)[2] * b", make("Mult", make("Elem", make("Add", x, y), params=(2,)), b)),
        ("Var(0,3,0)", x),
        ("Vi(0, 3) + Vj(1, 3) * Pm(3, 1)", make("Add", x, make("Mult", y, s))),
        ("Vi(7, 2)", Var(7, 2, 0)),
        ("IntCst(2) * x", make("Mult", Const(2.0), x)),
        ("IntCst(-2)", Const(-2.0)),
        ("Zero(3)", Const(0.0, 3)),
        ("x + Zero(3)", x),
        ("2 * x", make("Mult", Const(2.0), x)),
        ("-2", Const(-2.0)),
        ("Pow(x, 3)", make("Pow", x, params=(3,))),
        ("Pow(x, -1)", make("Pow", x, params=(-1,))),
        ("Pow(x, 2)", make("Square", x)),
        ("Powf(x, y)", make("Powf", x, y)),
        ("Sqrt(Sum(x * x))", make("Sqrt", make("Sum", make("Mult", x, x)))),
        ("Elem(x, 2)", make("Elem", x, params=(2,))),
        ("Extract(x, 1, 2)", make("Extract", x, params=(1, 2))),
        ("ClampInt(x, -1, 1)", make("ClampInt", x, params=(-1, 1))),
        ("OneHot(b, 4)", make("OneHot", b, params=(4,))),
        ("WeightedSqDist(s, x, y)", make("WeightedSqDist", s, x, y)),
        ("IfElse(x - y, x, y)", make("IfElse", make("Subtract", x, y), x, y)),
        ("Concat(x, b)[3]", make("Elem", make("Concat", x, b), params=(3,))),
        (
            "TensorDot(Vi(0,6), Vj(1,6), Ind(2,3), Ind(3,2), Ind(1), Ind(0))",
            make("TensorDot", Var(0, 6, 0), Var(1, 6, 1), params=((2, 3), (3, 2), (1,), (0,))),
        ),
        ("\n  Exp(\n\tx )\n", make("Exp", x)),
    ],
)
def test_round_trip(text, expected):
    assert p(text) == expected


@pytest.mark.parametrize(
    "text, value",
    [("2", 2.0), ("0.5", 0.5), (".25", 0.25), ("3.", 3.0), ("1e-3", 1e-3), ("2.5E+2", 250.0),
     ("1e400", math.inf), ("-0.0", -0.0)],
)
def test_numbers(text, value):
    assert p(text) == Const(value)
    assert p(f"{text} * x") == make("Mult", Const(value), x)


def test_ind_literals():
    assert p("Kron(x, y, Ind(3, 1, 3, 1))") == make("Kron", x, y, params=((3, 1, 3, 1),))
    assert p("Kron(x, y, Ind())") == make("Kron", x, y, params=((),))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Abs(x,)", make("Abs", x)),
        ("Pow(x, 3,)", make("Pow", x, params=(3,))),
        ("Var(0, 3, 0,)", x),
        ("IntCst(2,) * x", make("Mult", Const(2.0), x)),
        ("Kron(x, y, Ind(3, 1, 3, 1,),)", make("Kron", x, y, params=((3, 1, 3, 1),))),
        ("Kron(x, y, [3, 1, 3, 1,])", make("Kron", x, y, params=((3, 1, 3, 1),))),
        ("Kron(x, y, [])", make("Kron", x, y, params=((),))),
        ("Kron(x, y, [3, 1], [3, 1],)", make("Kron", x, y, params=((3, 1, 3, 1),))),
        ("Kron(x, y, [3], [3])", kron(x, y, (3,), (3,))),
        ("TensorDot(Vi(0,6), Vj(1,6), [2,3], [3,2], [1], [0])",
         make("TensorDot", Var(0, 6, 0), Var(1, 6, 1), params=((2, 3), (3, 2), (1,), (0,)))),
        ("TensorDot(Vi(0,6), Vj(1,6), [2, 3], Ind(3, 2), [1,], [0])",
         make("TensorDot", Var(0, 6, 0), Var(1, 6, 1), params=((2, 3), (3, 2), (1,), (0,)))),
        ("TensorDot(x, y, [3], [3], [], [], [1, 0],)",
         tensordot_permuted(x, y, (3,), (3,), (), (), (1, 0))),
        ("TensorDot(x, y, [3], [3], [0], [0], [])",
         make("TensorDot", x, y, params=((3,), (3,), (0,), (0,)))),
        ("RatCst(3, 4)", Const(0.75)),
        ("IntInv(8,)", Const(0.125)),
        ("SumT(b, 3)", make("Mult", b, Const(1.0, 3))),
    ],
)
def test_trailing_commas_lists_and_keops_signatures(text, expected):
    assert p(text) == expected


def test_tensordot_permutation_is_a_permute_of_the_tensordot():
    got = p("TensorDot(Vi(0,6), Vj(1,12), [2,3], [3,2,2], [1], [0], [2,0,1])")
    product = make("TensorDot", Var(0, 6, 0), Var(1, 12, 1),
                   params=((2, 3), (3, 2, 2), (1,), (0,)))
    # Kept axis t goes to position perm[t]: numpy.transpose with the inverse permutation.
    assert got == make("Permute", product, params=((2, 2, 2), (1, 2, 0)))
    assert p("TensorDot(x, y, [3], [3], [], [], [0, 1])") == make(
        "TensorDot", x, y, params=((3,), (3,), (), ()))


def test_every_op_parses_with_lists_and_trailing_commas():
    for name in OPS:
        text, expected = _example_call(name, lists=True)
        assert parse_formula(text, {}) == expected, text


def test_functions_injected_by_the_caller():
    def twice(f, scale=None):
        if f.dim != 3:
            raise FormulaArgumentError(0, "Twice: needs a 3-vector")
        return make("Add", f, f) if scale is None else make("Mult", scale, make("Add", f, f))

    functions = {"Twice": twice, "Exp": lambda f: make("Sin", f)}
    assert parse_formula("Twice(x + y,)", ALIASES, functions) == make(
        "Add", make("Add", x, y), make("Add", x, y))
    assert parse_formula("Twice(x, b)", ALIASES, functions) == make(
        "Mult", b, make("Add", x, x))
    # The caller's names take precedence over the ops.
    assert parse_formula("Exp(x)", ALIASES, functions) == make("Sin", x)
    with pytest.raises(FormulaSyntaxError, match=r"Twice takes 1 to 2 formula arguments, got 3"):
        parse_formula("Twice(x, b, b)", ALIASES, functions)
    with pytest.raises(FormulaSyntaxError, match=r"'Twice' needs arguments"):
        parse_formula("Twice + x", ALIASES, functions)
    with pytest.raises(FormulaSyntaxError, match=r"did you mean 'Twice'"):
        parse_formula("twice(x)", ALIASES, functions)
    with pytest.raises(ValueError, match=r"Twice: needs a 3-vector") as info:
        parse_formula("Exp(Twice(b))", ALIASES, functions)
    lines = str(info.value).splitlines()
    assert lines[-1].index("^") == lines[-2].index("b)")


@pytest.mark.parametrize(
    "text, match",
    [
        ("Kron(x, y)", r"Kron takes 3 arguments \(2 formulas, ints\) or 4 arguments "
                       r"\(2 formulas, ints, ints\), got 2"),
        ("Kron(x, y, [3], [1, 3])", r"Kron: shape_a \(3,\) and shape_b \(1, 3\) must have"),
        ("TensorDot(x, y, [3], [3], [], [], [1, 1])", r"perm \(1, 1\) is not a permutation"),
        ("Abs(x,,)", r"Abs takes 1 argument \(1 formula\), got 2"),
        ("Abs(,)", r"Abs takes 1 argument \(1 formula\), got 2"),
        ("Concat(x, ,)", r"unexpected ','"),
        ("Kron(x, y, [3, 1], [1, x])", r"in \[...\]: expected an integer literal"),
        ("Kron(x, y, [3, 1)", r"unbalanced parentheses"),
        ("Kron(x, y, [3, 1), [1])", r"expected '\]', found '\)'"),
        ("Sumt(b, 3)", r"did you mean 'SumT'"),
        ("IntInv(0)", r"IntInv: division by zero"),
        ("SqNormIso(x, x)", r"SqNormIso: the weight must have dim 1(.|\n)*\^"),
    ],
)
def test_signature_and_list_errors(text, match):
    with pytest.raises(ValueError, match=match):
        p(text)


def test_builtin_functions_are_listed_with_their_signatures():
    assert {"Kron", "TensorDot", "SumT", "SqNormIso", "SqNormDiag", "SymSqNorm", "DiffClampInt",
            "DifferenceMatrix", "Factorize", "AutoFactorize"} <= set(FUNCTIONS)


def test_float_parameters(monkeypatch):
    # No op of the table takes a "float" parameter yet: check the kind on a stand-in op.
    spec = OpSpec(name="Scaled", arity=1, out_dim=lambda dims, params: dims[0],
                  emit=lambda ctx: [], reference=lambda xp, a, k: a * k, param_kinds=("float",))
    monkeypatch.setitem(OPS, "Scaled", spec)
    assert p("Scaled(x, -2.5)") == Op("Scaled", (x,), (-2.5,), 3)
    assert p("Scaled(x, 3)") == Op("Scaled", (x,), (3.0,), 3)
    with pytest.raises(FormulaSyntaxError, match=r"Scaled: static parameter 2 \(float\): expected"):
        p("Scaled(x, y)")


def test_aliases_and_inline_variables_may_share_names_with_ops():
    aliases = {"Exp": x, "Sum": y}
    assert parse_formula("Exp(Exp - Sum)", aliases) == make("Exp", make("Subtract", x, y))


def test_long_chains_do_not_recurse():
    text = " + ".join(["x"] * 2000)
    assert p(text).dim == 3
    assert p("-" * 501 + "x") == make("Minus", x)


def _example_call(name: str, lists: bool = False) -> tuple[str, Node]:
    spec = OPS[name]
    dims = spec.example_dims if spec.example_dims is not None else (3,) * spec.arity
    variables = [Var(k, d, k % 3) for k, d in enumerate(dims)]
    args = [f"Var({v.index},{v.dim},{v.cat})" for v in variables]
    for param in spec.example_params:
        if isinstance(param, tuple):
            args.append(f"[{', '.join(map(str, param))}]" if lists else
                        "Ind(" + ",".join(map(str, param)) + ")")
        else:
            args.append(repr(param))
    trailing = "," if lists else ""
    return (f"{name}({', '.join(args)}{trailing})",
            make(name, *variables, params=spec.example_params))


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_parses(name):
    text, expected = _example_call(name)
    got = parse_formula(text, {})
    assert got == expected
    if isinstance(expected, Op):
        assert got.name == name


# Errors.


@pytest.mark.parametrize(
    "text, match",
    [
        ("x $ y", r"unexpected character '\$'(.|\n)*x \$ y\n    \s{2}\^"),
        ("x + * y", r"unexpected '\*'(.|\n)*column 5"),
        ("x +", r"unexpected end of formula"),
        ("", r"empty formula"),
        ("(x + y", r"unbalanced parentheses: '\(' is never closed(.|\n)*column 1"),
        ("Exp(x", r"unbalanced parentheses: '\(' is never closed(.|\n)*column 4"),
        ("x + y)", r"unbalanced parentheses: unmatched '\)'"),
        ("x[1", r"unbalanced parentheses: '\[' is never closed"),
        ("x y", r"unexpected 'y' after a complete formula"),
        ("Exp(x) 2", r"unexpected '2' after a complete formula"),
        ("Foo(x)", r"unknown variable or op 'Foo'"),
        ("exp(x)", r"unknown variable or op 'exp' \(did you mean 'Exp'"),
        ("sqdist(x, y)", r"did you mean 'SqDist'"),
        ("z + x", r"unknown variable or op 'z'"),
        ("xx + x", r"unknown variable or op 'xx' \(did you mean 'x'"),
        ("Exp", r"'Exp' needs arguments"),
        ("x(1)", r"'x' is a variable, not an op"),
        ("Exp(x, y)", r"Exp takes 1 argument \(1 formula\), got 2"),
        ("SqDist(x)", r"SqDist takes 2 arguments \(2 formulas\), got 1"),
        ("Pow(x)", r"Pow takes 2 arguments \(1 formula, int\), got 1"),
        ("Sum()", r"Sum takes 1 argument \(1 formula\), got 0"),
        ("Vi(0)", r"Vi takes 2 arguments \(ind, dim\), got 1"),
        ("Pow(x, y)", r"Pow: static parameter 2 \(int\): expected an integer literal, found 'y'"),
        ("Pow(x, 2.5)", r"Pow: static parameter 2 \(int\): expected an integer literal"),
        ("Pow(x, 1 + 1)", r"Pow: .*must be a single literal"),
        ("Elem(x, b)", r"Elem: static parameter 2 \(int\)"),
        ("TensorDot(x, y, 3, 3, 0, 0)",
         r"static parameter 3 \(ints\): expected a literal Ind\(i, j, ...\) or \[i, j, ...\], "
         r"found '3'"),
        ("TensorDot(x, y, Ind(3), Ind(3), Ind(b), Ind(0))", r"in Ind\(...\): expected an integer"),
        ("Ind(1, 2)", r"Ind\(...\) may only appear as a static parameter"),
        ("x[b]", r"the index in \[...\]: expected an integer literal"),
        ("Vi(i, 3)", r"Vi\(ind, dim\): expected an integer literal"),
        ("(" * 150 + "x" + ")" * 150, r"nested more than 100 levels"),
        ("1" + "0" * 400, r"too large"),
    ],
)
def test_syntax_errors(text, match):
    with pytest.raises(FormulaSyntaxError, match=match) as info:
        p(text)
    err = info.value
    assert err.text == text and 0 <= err.position <= len(text)
    assert isinstance(err, ValueError)


def test_error_message_quotes_the_formula_with_a_caret():
    with pytest.raises(FormulaSyntaxError) as info:
        p("Exp(-Foo(x))")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("unknown variable or op 'Foo'")
    assert lines[-2].strip() == "Exp(-Foo(x))"
    assert lines[-1].index("^") == lines[-2].index("Foo")


def test_error_position_in_multiline_formula():
    with pytest.raises(FormulaSyntaxError, match=r"line 3, column 3") as info:
        p("Exp(x)\n + \n  Foo")
    lines = str(info.value).splitlines()
    assert lines[-2].strip() == "Foo" and lines[-1].index("^") == lines[-2].index("Foo")


@pytest.mark.parametrize(
    "text, match",
    [
        ("x + Vi(5, 2)", r"Add: operand dims 3 and 2 are incompatible(.|\n)*x \+ Vi\(5, 2\)"),
        ("(x | b)", r"Scalprod(.|\n)*\(x \| b\)"),
        ("x[3]", r"Elem: index 3 is out of range"),
        ("x[2:1]", r"Extract"),
        ("x[-1]", r"Elem: index -1"),
        ("Zero(0)", r"Zero: dimension must be >= 1"),
        ("Var(0, 3, 5)", r"category"),
        ("OneHot(x, 3)", r"OneHot: the operand must be a scalar"),
        ("x + Vj(0, 3)", r"variable index 0 is used both as Vi\(0,3\) and as Vj\(0,3\)"),
    ],
)
def test_dimension_errors_are_value_errors_with_the_formula(text, match):
    with pytest.raises(ValueError, match=match) as info:
        p(text)
    assert not isinstance(info.value, FormulaSyntaxError)


def test_parser_never_evaluates_python():
    for text in ["__import__('os')", "x.__class__", "[x for x in y]", "lambda: 0", "x ** 2"]:
        with pytest.raises(FormulaSyntaxError):
            p(text)


# Property test: random formula trees, printed to strings, parse back to equal trees.

INFIX = {"Scalprod": ("|", 1), "Add": ("+", 2), "Subtract": ("-", 2), "Mult": ("*", 3),
         "Divide": ("/", 3)}
NAMES = {x: "x", y: "y", b: "b", s: "s"}


def show(node: Node, infix: bool, inline: bool, lists: bool = False) -> tuple[str, int]:
    """`node` as formula text, with the precedence of its outermost operator (6 = atom); with
    `lists`, integer tuples are written [i, j] and calls end with a trailing comma."""
    if isinstance(node, Var):
        if node in NAMES and not inline:
            return NAMES[node], 6
        return f"Var({node.index},{node.dim},{node.cat})", 6
    if isinstance(node, Const):
        if math.copysign(1.0, node.value) < 0:
            return "-" + show(Const(-node.value, node.dim), infix, inline, lists)[0], 4
        if node.dim == 1:
            return repr(node.value), 6
        return (f"Zero({node.dim})" if node.value == 0 else
                f"({node.value!r} + Zero({node.dim}))"), 6
    assert isinstance(node, Op)
    parts = [show(a, infix, inline, lists) for a in node.args]
    if infix and node.name in INFIX:
        symbol, prec = INFIX[node.name]
        (left, lp), (right, rp) = parts
        left = left if lp >= prec else f"({left})"
        right = right if rp > prec else f"({right})"
        return f"{left} {symbol} {right}", prec
    if infix and node.name == "Minus":
        text, prec = parts[0]
        return "-" + (text if prec >= 4 else f"({text})"), 4
    if infix and node.name in ("Elem", "Extract"):
        text, prec = parts[0]
        text = text if prec >= 5 else f"({text})"
        first = node.params[0]
        index = f"{first}" if node.name == "Elem" else f"{first}:{first + node.params[1]}"
        return f"{text}[{index}]", 5
    params = [(f"[{', '.join(map(str, q))}]" if lists else "Ind(" + ",".join(map(str, q)) + ")")
              if isinstance(q, tuple) else repr(q) for q in node.params]
    trailing = "," if lists else ""
    return f"{node.name}({', '.join([t for t, _ in parts] + params)}{trailing})", 6


LEAVES = st.one_of(
    st.sampled_from([x, y, b, s, c, Var(5, 2, 1)]),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False).map(Const),
    st.integers(1, 4).map(lambda d: Const(0.0, d)),
)


def _params(name: str, args: list[Node]):
    dim = args[0].dim if args else 1
    special = {
        "Elem": st.tuples(st.integers(0, dim - 1)),
        "Extract": st.integers(0, dim - 1).flatmap(
            lambda a: st.tuples(st.just(a), st.integers(1, dim - a))),
        "OneHot": st.tuples(st.integers(1, 4)),
        "Pow": st.tuples(st.integers(-3, 4)),
        "Round": st.tuples(st.integers(0, 3)),
        "ClampInt": st.tuples(st.integers(-2, 0), st.integers(0, 2)),
    }
    return special.get(name, st.just(OPS[name].example_params))


OPERATOR_OPS = [*INFIX, "Minus", "Elem", "Extract"]


@st.composite
def trees(draw, depth: int = 4) -> Node:
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(LEAVES)
    name = draw(st.one_of(st.sampled_from(sorted(OPS)), st.sampled_from(OPERATOR_OPS)))
    args = [draw(trees(depth - 1)) for _ in range(OPS[name].arity)]
    params = draw(_params(name, args))
    try:
        return make(name, *args, params=params)
    except ValueError:
        return args[0]


@settings(max_examples=300, deadline=None)
@given(tree=trees(), infix=st.booleans(), inline=st.booleans(), lists=st.booleans())
def test_printed_trees_parse_back(tree, infix, inline, lists):
    assume(all(math.isfinite(n.value) for n in walk(tree) if isinstance(n, Const)))
    text, _ = show(tree, infix, inline, lists)
    assert parse_formula(text, ALIASES) == tree, text
