"""Genred: a reduction from a KeOps formula string, as in pykeops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..formulas import Node, variables
from ..formulas.parser import parse_aliases, parse_formula
from ..reductions import reduction as reduction_spec
from .reduce import run_reduction


class Genred:
    """A generic reduction of a formula string, compiled on first call.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Genred
        >>> gauss = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"],
        ...                reduction_op="Sum", axis=1)
        >>> gauss(jnp.ones((5, 3)), jnp.zeros((4, 3)), jnp.ones((4, 2))).shape
        (5, 2)

    Arguments are passed in the order of `aliases` (or of the variables' indices):
    i-variables as (*batch, M, dim), j-variables as (*batch, N, dim), parameters as
    (*batch, dim). `opt_arg` is the K of KMin/ArgKMin/KMin_ArgKMin; `formula2` the weight of
    SumSoftMaxWeight (or of a weighted LogSumExp).
    """

    def __init__(
        self,
        formula: str,
        aliases: Sequence[str],
        reduction_op: str = "Sum",
        axis: int = 0,
        opt_arg: int | None = None,
        formula2: str | None = None,
        sum_scheme: str = "block",
    ):
        spec = reduction_spec(reduction_op)
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis}")
        self.reduction = spec.name
        self.axis = axis
        self.k = opt_arg
        self.sum_scheme = sum_scheme
        self._aliases = parse_aliases(aliases)
        formulas: list[Node] = [parse_formula(formula, self._aliases)]
        if formula2 is not None:
            formulas.append(parse_formula(formula2, self._aliases))
        elif spec.n_formulas == 2 and not spec.weight_optional:
            raise ValueError(f"{spec.name} needs formula2 (the weights)")
        if spec.needs_k and opt_arg is None:
            raise ValueError(f"{spec.name} needs opt_arg (the number K of neighbours)")
        self.formulas = tuple(formulas)
        declared = sorted(self._aliases.items(), key=lambda kv: kv[1].index)
        used = variables(*self.formulas)
        by_index = {v.index: name for name, v in declared}
        for v in used:
            by_index.setdefault(v.index, f"Var({v.index},{v.dim},{v.cat})")
        indices = sorted({v.index for v in used} | {v.index for _, v in declared})
        if indices != list(range(len(indices))):
            raise ValueError(f"variable indices must be 0, 1, 2, ... without gaps, got {indices}")
        self.variables = tuple(
            next((v for v in used if v.index == i), None) or self._aliases[by_index[i]]
            for i in indices
        )
        self.names = tuple(by_index[i] for i in indices)

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.variables):
            raise ValueError(f"this Genred takes {len(self.variables)} arrays "
                             f"({', '.join(self.names)}), got {len(args)}")
        outs = run_reduction(self.formulas, self.reduction, self.axis, self.variables, args,
                             self.names, k=self.k, sum_scheme=self.sum_scheme)
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        body = ", ".join(repr(f) for f in self.formulas)
        return f"Genred({self.reduction}({body}), axis={self.axis})"
