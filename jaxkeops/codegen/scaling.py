"""Products and constant factors, rearranged so that the pair loop multiplies as little as it can.

Formulas from users and from autodiff carry constant factors all over: the Gaussian exponent
-|x - y|^2 / (2 s^2), or the x-gradient's -(b_j a_i e^(...) / 2) * 1[3] * (2 (x - y)). Each of
those multiplies once per pair, or once per pair and component. This pass:

- flattens every product (Mult, Minus, division by a constant) into its factors and one constant;
- multiplies the factors that depend only on the output row, or only on the reduced row, into
  their own groups, which hoist.py then computes once per row instead of once per pair;
- puts the constant where it is free: into such a group, or, through `absorb`, into the
  operands of a squared distance (c |x - y|^2 = |sqrt(c) x - sqrt(c) y|^2, whose scaled
  operands hoist) or of sums and differences of them;
- multiplies the scalar factors together before the vector ones, so that a scalar chain costs
  one multiply per factor rather than one per component.

Products are reassociated, which rounds differently (relative 1e-7 in float32) and may move
where an overflow happens in extreme products; inf and NaN operands still give inf or NaN.
The dense reference and the derivatives always see the formula as written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from ..formulas import Const, Node, Op, make, walk
from .hoist import INNER, OUTER

PAIR = OUTER | INNER


def use_counts(formulas: tuple[Node, ...]) -> Counter:
    """How many distinct parent nodes (or formula outputs) use each node."""
    uses: Counter = Counter(formulas)
    for node in walk(*formulas):
        if isinstance(node, Op):
            for a in set(node.args):
                uses[a] += 1
    return uses


class Scaler:
    """Rewrites the products of one set of formulas.

    `side(node)` is OUTER, INNER, PAIR or 0 (parameters and constants); `uses` counts the
    parents of each node of the formulas; `new` maps the nodes already rewritten to their new
    form, so that untouched subtrees keep their own rewrites.
    """

    def __init__(self, side: Callable[[Node], int], uses: Counter, new: dict[Node, Node]):
        self.side, self.uses, self.new = side, uses, new

    def absorb(self, node: Node, c: float) -> Node | None:
        """A formula equal to c * node whose pair-loop cost is no more than node's, or None."""
        if c == 0.0 or not math.isfinite(c):
            return None
        current = self.new.get(node, node)
        if c == 1.0:
            return current
        if isinstance(node, Const):
            return Const(node.value * c, node.dim)
        if self.side(node) != PAIR:
            return make("Mult", current, Const(c))  # hoisted: computed once per row
        if not isinstance(node, Op) or self.uses[node] > 1:
            return None  # scaling a shared pair value would compute it twice
        if is_product(node):
            # The whole product, with its own constants and hoisted factors: c joins them.
            return self.product(node, scale=c, must_place=True)
        name, args = node.name, node.args
        if name == "Minus":
            return self.absorb(args[0], -c)
        if name in ("Add", "Subtract") and args[0].dim == args[1].dim:
            a, b = self.absorb(args[0], c), self.absorb(args[1], c)
            return None if a is None or b is None else make(name, a, b)
        if name in ("Mult", "Divide") and isinstance(args[1], Const) and args[1].dim == 1:
            k = args[1].value if name == "Mult" else 1.0 / args[1].value
            return self.absorb(args[0], c * k)
        if name == "Mult" and isinstance(args[0], Const) and args[0].dim == 1:
            return self.absorb(args[1], c * args[0].value)
        if (name == "Mult" and args[0].dim == args[1].dim) or name == "Scalprod":
            return self._scale_hoisted_operand(name, args, c)
        if name == "ReLU":  # relu(c a) = c relu(a) for c > 0
            inner = self.absorb(args[0], abs(c))
            if inner is None:
                return None
            return make("ReLU", inner) if c > 0 else make("Minus", make("ReLU", inner))
        if name == "SqDist" and all(self.side(a) != PAIR for a in args):
            root = math.sqrt(abs(c))
            a, b = (self.new.get(x, x) for x in args)
            scaled = make("SqDist", make("Mult", a, Const(root)), make("Mult", b, Const(root)))
            return scaled if c > 0 else make("Minus", scaled)
        return None

    def _scale_hoisted_operand(self, name: str, args: tuple[Node, ...], c: float) -> Node | None:
        """c * op(a, b) for a bilinear op, with c on whichever operand is row- or column-only
        (it hoists), or None when both depend on the pair."""
        scaled = [self.new.get(x, x) for x in args]
        for t in (0, 1):
            if self.side(args[t]) != PAIR:
                scaled[t] = make("Mult", scaled[t], Const(c))
                return make(name, *scaled)
        return None

    def factors(self, node: Node, top: bool, out: list[Node]) -> float:
        """Appends the non-constant factors of a product to `out`; returns the constant."""
        if isinstance(node, Const) and node.dim == 1:
            return node.value
        if isinstance(node, Op) and (top or self.uses[node] == 1):
            name, args = node.name, node.args
            if name == "Minus":
                return -self.factors(args[0], False, out)
            if name == "Mult":
                return self.factors(args[0], False, out) * self.factors(args[1], False, out)
            if name == "Divide" and isinstance(args[1], Const) and args[1].dim == 1:
                return self.factors(args[0], False, out) / args[1].value
        out.append(node)
        return 1.0

    def product(self, node: Op, scale: float = 1.0, must_place: bool = False) -> Node | None:
        """`scale` times `node` (a Mult, Minus or Divide by a constant), rearranged. With
        `must_place`, None unless every constant lands in a hoisted group or a pair factor
        (what `absorb` promises: no multiply added to the pair loop)."""
        factors: list[Node] = []
        coef = self.factors(node, True, factors) * scale
        if not math.isfinite(coef) or coef == 0.0:
            return None if must_place else self.new.get(node, node)
        # Constant vectors (c in every component, from broadcasting) join the constant.
        kept: list[Node] = []
        for f in factors:
            if isinstance(f, Const):
                coef *= f.value
            else:
                kept.append(f)
        groups: dict[tuple[bool, int], list[Node]] = {}
        for f in kept:
            side = self.side(f)
            key = (f.dim > 1, PAIR if side == PAIR else (side or OUTER))
            groups.setdefault(key, []).append(f)
        current = {key: [self.new.get(f, f) for f in group] for key, group in groups.items()}
        # The constant goes where it is free: a group that hoists, else into a pair factor.
        if coef != 1.0:
            for key in ((False, OUTER), (False, INNER), (True, OUTER), (True, INNER)):
                if key in current:
                    current[key][0] = make("Mult", current[key][0], Const(coef))
                    coef = 1.0
                    break
        for key in ((False, PAIR), (True, PAIR)):
            for t, f in enumerate(groups.get(key, [])):
                if coef == 1.0:
                    break
                scaled = self.absorb(f, coef)
                if scaled is not None:
                    current[key][t] = scaled
                    coef = 1.0
        if must_place and coef != 1.0:
            return None
        scalar = multiply([multiply(current.get((False, side), []))
                            for side in (OUTER, INNER, PAIR)])
        if coef != 1.0:
            if scalar is None:
                scalar = Const(coef)
            elif coef == -1.0:
                scalar = make("Minus", scalar)
            else:
                scalar = make("Mult", scalar, Const(coef))
        vector = multiply([multiply(current.get((True, side), []))
                            for side in (OUTER, INNER, PAIR)])
        if vector is None:
            result = scalar if scalar is not None else Const(1.0)
            if node.dim > 1:
                result = make("Mult", result, Const(1.0, node.dim))
        else:
            result = vector if scalar is None else make("Mult", scalar, vector)
        if result.dim == node.dim:
            return result
        return None if must_place else self.new.get(node, node)


def multiply(nodes: list[Node | None]) -> Node | None:
    result = None
    for f in nodes:
        if f is not None:
            result = f if result is None else make("Mult", result, f)
    return result


def is_product(node: Node) -> bool:
    return isinstance(node, Op) and (node.name in ("Mult", "Minus") or (
        node.name == "Divide" and isinstance(node.args[1], Const) and node.args[1].dim == 1))


def _interior_products(formulas: tuple[Node, ...], uses: Counter) -> set[Node]:
    """The single-use products that the product above them flattens."""
    interior = set()
    for node in walk(*formulas):
        if is_product(node):
            operands = node.args[:1] if node.name == "Divide" else node.args
            interior.update(a for a in operands if is_product(a) and uses[a] == 1)
    interior.difference_update(formulas)
    return interior


def rearrange_products(formulas: tuple[Node, ...], side: Callable[[Node], int]
                       ) -> tuple[Node, ...]:
    """Every maximal product over pairs in `formulas`, rearranged by `Scaler.product`."""
    uses = use_counts(formulas)
    interior = _interior_products(formulas, uses)
    new: dict[Node, Node] = {}
    scaler = Scaler(side, uses, new)
    for node in walk(*formulas):
        if not isinstance(node, Op):
            new[node] = node
            continue
        args = tuple(new[a] for a in node.args)
        new[node] = node if args == node.args else make(node.name, *args, params=node.params)
        if is_product(node) and node not in interior and side(node) == PAIR:
            new[node] = scaler.product(node)
    return tuple(new[f] for f in formulas)


def prescale_shared_differences(formulas: tuple[Node, ...], side: Callable[[Node], int]
                                ) -> tuple[Node, ...] | None:
    """The formulas with each difference d = a - b of operands that hoist, shared by a scaled
    squared norm c |d|^2 (a Gaussian's exponent) and other uses (its gradient's d), computed
    scaled: d' = r a - r b with r = sqrt|c|, so that c |d|^2 = +-|d'|^2 multiplies by nothing
    in the pair loop, and the other uses read d' / r. None if there is no such difference.

    `absorb` cannot scale d in place, as that would compute the shared d twice. The constant
    1 / r of the other uses is free only where the product above them places it (in a hoisted
    factor, or the row factor of row_factor.py), so the caller keeps these formulas only if
    they multiply less per pair (`row_factor.pair_multiplies`)."""
    uses = use_counts(formulas)
    interior = _interior_products(formulas, uses)
    scaler = Scaler(side, uses, {})
    norms: dict[Node, list[tuple[Node, float]]] = {}  # d -> [(its scaled norm's product, c)]
    for node in walk(*formulas):
        if not is_product(node) or node in interior or side(node) != PAIR:
            continue
        factors: list[Node] = []
        c = scaler.factors(node, True, factors)
        if len(factors) != 1 or not isinstance(factors[0], Op) or factors[0].name != "SqNorm2":
            continue
        d = factors[0].args[0]
        if uses[factors[0]] == 1 and uses[d] > 1 and _hoisting_difference(d, side) and \
                math.isfinite(c) and abs(c) not in (0.0, 1.0):
            norms.setdefault(d, []).append((node, c))
    scaled = {d: found[0] for d, found in norms.items() if len(found) == 1}
    if not scaled:
        return None
    products = {product: (d, c) for d, (product, c) in scaled.items()}
    primed: dict[Node, Node] = {}
    new: dict[Node, Node] = {}
    for node in walk(*formulas):
        if node in scaled:
            root = math.sqrt(abs(scaled[node][1]))
            a, b = (new[x] for x in node.args)
            primed[node] = make(node.name, make("Mult", a, Const(root)),
                                make("Mult", b, Const(root)))
            new[node] = make("Mult", primed[node], Const(1.0 / root))
        elif node in products:
            d, c = products[node]
            norm = make("SqNorm2", primed[d])
            new[node] = norm if c > 0 else make("Minus", norm)
        elif isinstance(node, Op):
            args = tuple(new[a] for a in node.args)
            new[node] = node if args == node.args else make(node.name, *args, params=node.params)
        else:
            new[node] = node
    return tuple(new[f] for f in formulas)


def _hoisting_difference(node: Node, side: Callable[[Node], int]) -> bool:
    """a - b or a + b of equal dims, neither depending on the pair: scaled, both hoist."""
    return isinstance(node, Op) and node.name in ("Subtract", "Add") and \
        node.args[0].dim == node.args[1].dim and all(side(a) != PAIR for a in node.args)
