"""A safe parser for KeOps formula strings and variable aliases, as pykeops' Genred takes them.

The tokenizer and the precedence-climbing parser are hand-written; user text is never evaluated.

Aliases: ``"x = Vi(3)"``, ``"y = Vj(3)"``, ``"p = Pm(1)"`` (the index is the alias's position in the
list), ``"x = Vi(0, 3)"`` (explicit index) or ``"x = Var(0, 3, 0)"`` (category 0 = i, 1 = j, 2 = p).

Formulas: numbers (``2``, ``0.5``, ``1e-3``) are dimension-1 constants and names are aliases.
``Var(ind, dim, cat)``, ``Vi(ind, dim)``, ``Vj(ind, dim)``, ``Pm(ind, dim)`` are inline variables,
``IntCst(n)``, ``RatCst(p, q)``, ``IntInv(n)`` and ``Zero(dim)`` constants. ``Name(args...)``
applies any op of the op table: its first ``arity`` arguments are formulas, the others literal
static parameters (an integer, a number, or a tuple of integers written ``Ind(i, j, ...)`` or
``[i, j, ...]``). KeOps's other names (`functions.FUNCTIONS`: SumT, SqNormIso, Kron with two
shape lists, TensorDot with a permutation, ...) are accepted too, and the caller may add its own
(`parse_formula`'s `functions`, e.g. the symbolic derivatives Grad, Diff, ...). Every call may end
with a trailing comma. Operators, from the loosest to the tightest binding (binary ones are
left-associative):

    1. ``a | b``                  Scalprod(a, b)
    2. ``a + b``, ``a - b``       Add, Subtract
    3. ``a * b``, ``a / b``       Mult, Divide
    4. ``-a``, ``+a``             Minus, nothing (prefix)
    5. ``a[k]``, ``a[i:j]``       Elem(a, k), Extract(a, i, j - i) (postfix)

This is Python's (and C++'s) ordering, so a formula means here what it means to KeOps, which
evaluates formula strings with those languages' operators: ``x - y | x - y`` is
``Scalprod(x - y, x - y)``, and ``-x[0]`` is ``Minus(Elem(x, 0))``. In ``a[i:j]`` either bound may
be omitted. Syntax errors raise `FormulaSyntaxError` (a `ValueError`) quoting the formula with a
caret under the offending position; dimension errors raise the `ValueError` of `make`, with the
same location added.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, NoReturn

from .functions import FUNCTIONS, FormulaArgumentError
from .nodes import CAT_I, CAT_J, CAT_P, CATEGORY_NAMES, Const, Node, Var, variables
from .optable import OPS, make

__all__ = ["FormulaArgumentError", "FormulaSyntaxError", "parse_aliases", "parse_formula"]

_VAR_CATS = {"Vi": CAT_I, "Vj": CAT_J, "Pm": CAT_P}
_SPECIAL_ARGS = {"Var": "ind, dim, cat", "Vi": "ind, dim", "Vj": "ind, dim", "Pm": "ind, dim",
                 "IntCst": "n", "RatCst": "p, q", "IntInv": "n", "Zero": "dim"}
_SPECIAL = (*_SPECIAL_ARGS, "Ind")
_BINARY = {"|": (1, "Scalprod"), "+": (2, "Add"), "-": (2, "Subtract"),
           "*": (3, "Mult"), "/": (3, "Divide")}
_MAX_DEPTH = 100
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PUNCT = "+-*/|()[],:="


def _located(reason: str, text: str, pos: int, what: str = "formula") -> str:
    """`reason`, then the line of `text` holding `pos` with a caret under that position."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start:] if end < 0 else text[start:end]
    col = pos - start
    if len(line) > 80:  # show a window of the line around the position
        lo = max(0, min(col - 40, len(line) - 80))
        head, tail = ("..." if lo else ""), ("..." if lo + 80 < len(line) else "")
        line, col = head + line[lo:lo + 80] + tail, col - lo + len(head)
    column = pos - start + 1
    where = f"line {text.count(chr(10), 0, pos) + 1}, column {column}" if "\n" in text \
        else f"column {column}"
    pad = "".join("\t" if c == "\t" else " " for c in line[:col])
    return f"{reason}\n  at {where} of the {what}:\n    {line}\n    {pad}^"


class FormulaSyntaxError(ValueError):
    """A malformed formula or alias; `reason`, `text` and `position` locate the problem."""

    def __init__(self, reason: str, text: str, position: int, what: str = "formula"):
        self.reason, self.text, self.position = reason, text, position
        super().__init__(_located(reason, text, position, what))


class _Token(NamedTuple):
    kind: str  # "name", "num", "punct" or "end"
    text: str
    pos: int
    value: int | float | None = None


def _tokenize(text: str, what: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif m := _NAME.match(text, i):
            tokens.append(_Token("name", m.group(), i))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            s = m.group()
            value = int(s) if s.isdigit() else float(s)
            if isinstance(value, int) and len(s) > 300:
                raise FormulaSyntaxError(f"number {s[:10]}... is too large", text, i, what)
            tokens.append(_Token("num", s, i, value))
            i = m.end()
        elif c in _PUNCT:
            tokens.append(_Token("punct", c, i))
            i += 1
        else:
            raise FormulaSyntaxError(f"unexpected character {c!r}", text, i, what)
    tokens.append(_Token("end", "", n))
    return tokens


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe(tok: _Token) -> str:
    return "end of input" if tok.kind == "end" else repr(tok.text)


class _Signature(NamedTuple):
    """One way of calling a name: formula arguments, then static parameters of these kinds,
    given to `build` (None: the op of the table of that name)."""

    arity: int
    kinds: tuple[str, ...]
    build: Callable[..., Node] | None

    @property
    def count(self) -> int:
        return self.arity + len(self.kinds)

    def describe(self) -> str:
        return _plural(self.arity, "formula") + "".join(f", {k}" for k in self.kinds)


def _signatures(name: str) -> list[_Signature]:
    found = []
    if name in OPS:
        found.append(_Signature(OPS[name].arity, OPS[name].param_kinds, None))
    found += [_Signature(f.arity, f.param_kinds, f.build) for f in FUNCTIONS.get(name, ())]
    return found


def _formula_arity(name: str, function: Callable) -> tuple[int, float]:
    """The least and the largest number of formula arguments a caller's function takes."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 0, float("inf")
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return sum(p.default is p.empty for p in positional), float("inf")
    return sum(p.default is p.empty for p in positional), len(positional)


class _Parser:
    def __init__(self, text: str, aliases: Mapping[str, Node], what: str = "formula",
                 functions: Mapping[str, Callable[..., Node]] | None = None):
        self.text, self.aliases, self.what = text, aliases, what
        self.functions = dict(functions or {})
        self.tokens = _tokenize(text, what)
        self.i = 0
        self.depth = 0

    # Token helpers.
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def fail(self, reason: str, pos: int) -> NoReturn:
        raise FormulaSyntaxError(reason, self.text, pos, self.what)

    def is_punct(self, text: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "punct" and tok.text == text

    def close_call(self, close: str, opener: _Token) -> None:
        """The end of an argument list: an optional trailing comma, then `close`."""
        if self.is_punct(",") and self.is_punct(close, 1):
            self.advance()
        self.expect_close(close, opener)

    def expect_close(self, close: str, opener: _Token) -> None:
        tok = self.advance()
        if tok.kind == "punct" and tok.text == close:
            return
        if tok.kind == "end":
            self.fail(f"unbalanced parentheses: {opener.text!r} is never closed", opener.pos)
        self.fail(f"expected {close!r}, found {_describe(tok)}", tok.pos)

    def located(self, err: Exception, pos: int) -> ValueError:
        return ValueError(_located(str(err), self.text, pos, self.what))

    def build(self, name: str, args: tuple[Node, ...], params: tuple, pos: int) -> Node:
        try:
            return make(name, *args, params=params)
        except ValueError as err:
            raise self.located(err, pos) from err

    # Grammar.
    def formula(self) -> Node:
        if self.peek().kind == "end":
            self.fail("empty formula", 0)
        node = self.expr(1)
        tok = self.peek()
        if tok.kind != "end":
            if tok.kind == "punct" and tok.text in ")]":
                self.fail(f"unbalanced parentheses: unmatched {tok.text!r}", tok.pos)
            self.fail(f"unexpected {_describe(tok)} after a complete formula", tok.pos)
        return node

    def expr(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            tok = self.peek()
            entry = _BINARY.get(tok.text) if tok.kind == "punct" else None
            if entry is None or entry[0] < min_prec:
                return left
            self.advance()
            right = self.expr(entry[0] + 1)
            left = self.build(entry[1], (left, right), (), tok.pos)

    def unary(self) -> Node:
        signs: list[_Token] = []
        while self.is_punct("-") or self.is_punct("+"):
            signs.append(self.advance())
        node = self.postfix()
        for tok in reversed(signs):
            if tok.text == "-":
                node = self.build("Minus", (node,), (), tok.pos)
        return node

    def postfix(self) -> Node:
        node = self.primary()
        while self.is_punct("["):
            opener = self.advance()
            start = None if self.is_punct(":") else self.int_literal("the index in [...]")
            if self.is_punct(":"):
                self.advance()
                stop = node.dim if self.is_punct("]") else self.int_literal("a slice bound")
                self.expect_close("]", opener)
                start = 0 if start is None else start
                node = self.build("Extract", (node,), (start, stop - start), opener.pos)
            else:
                self.expect_close("]", opener)
                node = self.build("Elem", (node,), (start,), opener.pos)
        return node

    def primary(self) -> Node:
        tok = self.advance()
        if tok.kind == "num":
            return Const(tok.value)
        if tok.kind == "name":
            if self.is_punct("("):
                return self.call(tok)
            if tok.text in self.aliases:
                return self.aliases[tok.text]
            if tok.text in OPS or tok.text in FUNCTIONS or tok.text in self.functions or \
                    tok.text in _SPECIAL:
                self.fail(f"{tok.text!r} needs arguments: write {tok.text}(...)", tok.pos)
            self.unknown(tok)
        if tok.kind == "punct" and tok.text == "(":
            self.enter(tok)
            node = self.expr(1)
            self.expect_close(")", tok)
            self.depth -= 1
            return node
        if tok.kind == "end":
            self.fail("unexpected end of formula", tok.pos)
        if tok.kind == "punct" and tok.text in ")]":
            self.fail(f"unbalanced parentheses: unmatched {tok.text!r}", tok.pos)
        self.fail(f"unexpected {_describe(tok)}", tok.pos)

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            self.fail(f"formula nested more than {_MAX_DEPTH} levels deep", tok.pos)

    def unknown(self, tok: _Token) -> NoReturn:
        name = tok.text
        pool = list(self.aliases) + sorted(OPS) + sorted(FUNCTIONS) + sorted(self.functions) \
            + list(_SPECIAL)
        close = [c for c in pool if c.lower() == name.lower()]
        close += [c for c in difflib.get_close_matches(name, pool, n=3) if c not in close]
        hint = f" (did you mean {', '.join(repr(c) for c in close[:3])}?)" if close else ""
        self.fail(f"unknown variable or op {name!r}{hint}", tok.pos)

    def count_args(self) -> int:
        """The number of top-level arguments between the '(' at the cursor and its ')'."""
        opener, depth, commas, j = self.peek(), 0, 0, self.i
        while True:
            tok = self.tokens[j]
            if tok.kind == "end":
                self.fail(f"unbalanced parentheses: {opener.text!r} is never closed", opener.pos)
            if tok.kind == "punct":
                if tok.text in "([":
                    depth += 1
                elif tok.text in ")]":
                    depth -= 1
                    if depth == 0:
                        if j == self.i + 1:
                            return 0
                        before = self.tokens[j - 1]
                        trailing = before.kind == "punct" and before.text == "," and commas > 0 \
                            and j - 1 > self.i + 1
                        return commas + 1 - trailing
                elif tok.text == "," and depth == 1:
                    commas += 1
            j += 1

    def comma(self) -> None:
        tok = self.advance()
        if not (tok.kind == "punct" and tok.text == ","):
            self.fail(f"expected ',', found {_describe(tok)}", tok.pos)

    def call(self, name_tok: _Token) -> Node:
        name, pos = name_tok.text, name_tok.pos
        if name in self.functions:
            return self.call_function(name_tok)
        signatures = _signatures(name)
        if not signatures and name in _SPECIAL_ARGS:
            return self.call_special(name_tok)
        if not signatures:
            if name == "Ind":
                self.fail("Ind(...) may only appear as a static parameter of an op", pos)
            if name in self.aliases:
                self.fail(f"{name!r} is a variable, not an op: it cannot be called", pos)
            self.unknown(name_tok)
        got = self.count_args()
        chosen = next((s for s in signatures if s.count == got), None)
        if chosen is None:
            forms = " or ".join(f"{_plural(s.count, 'argument')} ({s.describe()})"
                                for s in signatures)
            self.fail(f"{name} takes {forms}, got {got}", pos)
        opener = self.advance()
        self.enter(opener)
        args: list[Node] = []
        positions: list[int] = []
        for k in range(chosen.arity):
            if k:
                self.comma()
            positions.append(self.peek().pos)
            args.append(self.expr(1))
        params: list = []
        for kind in chosen.kinds:
            if args or params:
                self.comma()
            positions.append(self.peek().pos)
            params.append(self.param(name, len(args) + len(params) + 1, kind))
        if chosen.build is None:
            node = self.build(name, tuple(args), tuple(params), pos)
        else:
            node = self.apply(name, chosen.build, (*args, *params), positions, pos)
        self.close_call(")", opener)
        self.depth -= 1
        return node

    def call_special(self, name_tok: _Token) -> Node:
        described = _SPECIAL_ARGS[name_tok.text]
        expected = described.count(",") + 1
        got = self.count_args()
        if got != expected:
            self.fail(f"{name_tok.text} takes {_plural(expected, 'argument')} ({described}), "
                      f"got {got}", name_tok.pos)
        opener = self.advance()
        ints = self.int_list(expected, f"{name_tok.text}({described})")
        node = self.special(name_tok.text, ints, name_tok.pos)
        self.close_call(")", opener)
        return node

    def call_function(self, name_tok: _Token) -> Node:
        """A caller's function: every argument is a formula."""
        name, pos = name_tok.text, name_tok.pos
        function = self.functions[name]
        least, most = _formula_arity(name, function)
        got = self.count_args()
        if not least <= got <= most:
            count = f"{least}" if least == most else (
                f"at least {least}" if most == float("inf") else f"{least} to {int(most)}")
            self.fail(f"{name} takes {count} formula argument{'s' * (count != '1')}, got {got}",
                      pos)
        opener = self.advance()
        self.enter(opener)
        args: list[Node] = []
        positions: list[int] = []
        for k in range(got):
            if k:
                self.comma()
            positions.append(self.peek().pos)
            args.append(self.expr(1))
        node = self.apply(name, function, tuple(args), positions, pos)
        self.close_call(")", opener)
        self.depth -= 1
        return node

    def apply(self, name: str, build: Callable[..., Node], args: tuple, positions: list[int],
              pos: int) -> Node:
        """build(*args), with its errors located at the argument it blames, or at the call."""
        try:
            node = build(*args)
        except FormulaArgumentError as err:
            where = positions[err.index] if 0 <= err.index < len(positions) else pos
            raise self.located(err, where) from err
        except ValueError as err:
            raise self.located(err, pos) from err
        if not isinstance(node, Node):
            raise TypeError(f"{name} returned {type(node).__name__}, not a formula")
        return node

    def special(self, name: str, ints: list[int], pos: int) -> Node:
        try:
            if name == "IntCst":
                return Const(ints[0])
            if name in ("RatCst", "IntInv"):
                p, q = ints if name == "RatCst" else (1, ints[0])
                if q == 0:
                    raise ValueError(f"{name}: division by zero")
                return Const(p / q)
            if name == "Zero":
                if ints[0] < 1:
                    raise ValueError(f"Zero: dimension must be >= 1, got {ints[0]}")
                return Const(0.0, ints[0])
            if name == "Var":
                return Var(*ints)
            return Var(ints[0], ints[1], _VAR_CATS[name])
        except ValueError as err:
            raise self.located(err, pos) from err

    def int_list(self, count: int, what: str) -> list[int]:
        values = []
        for k in range(count):
            if k:
                self.comma()
            values.append(self.int_literal(what))
        return values

    def signed_number(self) -> tuple[_Token, _Token, int]:
        """The first token, the number token and the sign of an optionally signed literal."""
        start, sign = self.peek(), 1
        if self.is_punct("-") or self.is_punct("+"):
            sign = -1 if self.advance().text == "-" else 1
        return start, self.advance(), sign

    def int_literal(self, what: str) -> int:
        start, tok, sign = self.signed_number()
        if tok.kind != "num" or not isinstance(tok.value, int):
            self.fail(f"{what}: expected an integer literal, found {_describe(tok)}", start.pos)
        return sign * tok.value

    def param(self, op: str, position: int, kind: str) -> int | float | tuple[int, ...]:
        start = self.peek()
        subject = f"{op}: static parameter {position} ({kind})"
        value: int | float | tuple[int, ...]
        if kind == "ints":
            if start.kind == "name" and start.text == "Ind" and self.is_punct("(", 1):
                self.advance()
                close, inside = ")", "Ind(...)"
            elif self.is_punct("["):
                close, inside = "]", "[...]"
            else:
                self.fail(f"{subject}: expected a literal Ind(i, j, ...) or [i, j, ...], found "
                          f"{_describe(start)}", start.pos)
            count = self.count_args()
            opener = self.advance()
            value = tuple(self.int_list(count, f"{subject}, in {inside}"))
            self.close_call(close, opener)
        elif kind == "int":
            value = self.int_literal(subject)
        else:
            start, tok, sign = self.signed_number()
            if tok.kind != "num":
                self.fail(f"{subject}: expected a number literal, found {_describe(tok)}",
                          start.pos)
            value = sign * float(tok.value)
        if not (self.is_punct(",") or self.is_punct(")")):
            self.fail(f"{subject} must be a single literal", start.pos)
        return value


def parse_formula(text: str, aliases: Mapping[str, Node],
                  functions: Mapping[str, Callable[..., Node]] | None = None) -> Node:
    """Parse a KeOps formula string, with names resolved through `aliases` (see `parse_aliases`).

    `functions` maps more names to builders called with the parsed formula arguments (all of
    them formulas; a builder may raise `FormulaArgumentError` to blame one argument); they take
    precedence over the ops and built-in names.

    Raises `FormulaSyntaxError` for malformed text and `ValueError` for dimension mismatches or
    a variable index used with two different dims or categories.
    """
    if not isinstance(text, str):
        raise TypeError(f"a formula must be a string, got {type(text).__name__}")
    node = _Parser(text, aliases, functions=functions).formula()
    seen: dict[int, Var] = {}
    for var in variables(node):
        other = seen.setdefault(var.index, var)
        if other != var:
            raise ValueError(f"variable index {var.index} is used both as {_var_text(other)} and "
                             f"as {_var_text(var)} in formula {text!r}")
    return node


def _var_text(var: Var) -> str:
    return f"{CATEGORY_NAMES[var.cat]}({var.index},{var.dim})"


def parse_aliases(aliases: Sequence[str]) -> dict[str, Var]:
    """Parse pykeops aliases such as ``["x = Vi(3)", "y = Vj(1, 3)", "p = Var(2, 1, 2)"]``.

    A one-argument ``Vi(dim)``/``Vj(dim)``/``Pm(dim)`` takes its index from its position in the
    list. Raises `ValueError` naming the alias for malformed text, a duplicate name, a bad category,
    or one index declared with two different dims or categories.
    """
    if isinstance(aliases, str):
        raise TypeError("aliases must be a sequence of strings such as ['x = Vi(3)'], not a str")
    out: dict[str, Var] = {}
    by_index: dict[int, str] = {}
    for position, alias in enumerate(aliases):
        if not isinstance(alias, str):
            raise TypeError(f"alias {alias!r} is not a string")
        name, var = _parse_alias(alias, position)
        if name in out:
            raise ValueError(f"alias {alias!r}: the name {name!r} is declared twice")
        previous = by_index.get(var.index)
        if previous is not None and out[previous] != var:
            raise ValueError(f"alias {alias!r}: index {var.index} is already declared as "
                             f"{_var_text(out[previous])} by alias {previous!r}")
        out[name] = var
        by_index.setdefault(var.index, name)
    return out


def _parse_alias(alias: str, position: int) -> tuple[str, Var]:
    p = _Parser(alias, {}, what=f"alias {alias!r}")
    name = p.advance()
    if name.kind != "name":
        p.fail("an alias must look like 'name = Vi(dim)'", name.pos)
    if not p.is_punct("="):
        p.fail(f"expected '=' after the alias name, found {_describe(p.peek())}", p.peek().pos)
    p.advance()
    cat_tok = p.advance()
    if cat_tok.kind != "name" or cat_tok.text not in ("Var", *_VAR_CATS):
        p.fail(f"bad category {_describe(cat_tok)}: expected Vi, Vj, Pm or Var", cat_tok.pos)
    if not p.is_punct("("):
        p.fail(f"expected '(' after {cat_tok.text}", p.peek().pos)
    got = p.count_args()
    allowed = (3,) if cat_tok.text == "Var" else (1, 2)
    if got not in allowed:
        form = "Var(ind, dim, cat)" if cat_tok.text == "Var" else f"{cat_tok.text}(dim) or " \
            f"{cat_tok.text}(ind, dim)"
        p.fail(f"{cat_tok.text} takes {form}, got {got} argument(s)", cat_tok.pos)
    opener = p.advance()
    ints = p.int_list(got, f"alias {alias!r}")
    p.close_call(")", opener)
    if p.peek().kind != "end":
        p.fail(f"unexpected {_describe(p.peek())} after the alias", p.peek().pos)
    if cat_tok.text == "Var":
        index, dim, cat = ints
        if cat not in CATEGORY_NAMES:
            p.fail(f"bad category {cat}: expected 0 (Vi), 1 (Vj) or 2 (Pm)", cat_tok.pos)
    else:
        index, dim = ints if got == 2 else (position, ints[0])
        cat = _VAR_CATS[cat_tok.text]
    try:
        return name.text, Var(index, dim, cat)
    except ValueError as err:
        raise ValueError(f"alias {alias!r}: {err}") from err
