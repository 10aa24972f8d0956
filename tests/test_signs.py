"""The ops' sign rules (OpSpec.sign), generated from the op table, against their dense references.

The code generator drops the clamp against overflow from 2^a where a rule says a <= 0 (or NaN),
so a rule that claims too much would give inf or garbage. For every op with a rule and every
combination of operand signs the rule settles, the reference is evaluated in float64 on operands
of those signs (their edge values +-0, +-inf and NaN included) and must have the claimed sign.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxkeops.formulas import CAT_I, OPS, Const, Var, make
from jaxkeops.formulas.optable import known_sign

RULED = sorted(name for name, spec in OPS.items() if spec.sign is not None)


def operand(rng, sign: int, shape: tuple[int, ...]) -> np.ndarray:
    """Values of `sign` (1: >= 0 or NaN, -1: <= 0 or NaN, 0: any), edge values first."""
    edges = np.array([0.0, -0.0, np.inf, np.nan, 1e-310, 1e300, 1.0])
    size = int(np.prod(shape))
    magnitudes = np.concatenate([edges, rng.exponential(3.0, size=size - edges.size)])
    values = magnitudes * (sign if sign else rng.choice([-1.0, 1.0], size))
    return rng.permutation(values).reshape(shape)


def holds(sign: int, out: np.ndarray) -> bool:
    nan = np.isnan(out)
    return bool(np.all(nan | (out >= 0))) if sign > 0 else bool(np.all(nan | (out <= 0)))


def test_the_rules_cover_the_ops_the_code_generator_relies_on():
    assert {"SqDist", "SqNorm2", "Square", "Exp", "Exp2", "Abs", "Minus", "Mult", "Add", "Sum",
            "Subtract"} <= set(RULED)


@pytest.mark.parametrize("name", RULED)
def test_sign_rule_holds_on_the_reference(name, rng):
    spec = OPS[name]
    dims = tuple(spec.example_dims) if spec.example_dims is not None else (3,) * spec.arity
    settled = 0
    for signs in itertools.product((-1, 0, 1), repeat=spec.arity):
        claim = spec.sign(signs)
        if claim == 0:
            continue
        settled += 1
        for _ in range(20):
            arrays = [operand(rng, s, (40, d)) for s, d in zip(signs, dims)]
            with np.errstate(all="ignore"):
                out = np.asarray(spec.reference(np, *arrays, *spec.example_params), np.float64)
            assert holds(claim, out), f"{name} of operand signs {signs} claims {claim}"
    assert settled, f"{name}'s rule settles no combination of operand signs"


def test_known_sign_composes_the_rules():
    x, y = Var(0, 3, CAT_I), Var(1, 3, CAT_I)
    scaled = make("Mult", make("SqDist", x, y), Const(-0.5))
    assert known_sign(scaled, {}) == -1
    assert known_sign(make("Minus", scaled), {}) == 1
    assert known_sign(make("Add", scaled, Const(-1.0)), {}) == -1
    assert known_sign(make("Add", scaled, Const(1.0)), {}) == 0
    assert known_sign(make("Subtract", x, y), {}) == 0
    assert known_sign(make("Exp", x), {}) == 1
    assert known_sign(Const(float("nan")), {}) == 0
