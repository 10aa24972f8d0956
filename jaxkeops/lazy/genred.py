"""Genred: a reduction from a KeOps formula string, with pykeops's signature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._shapes import require_arrays
from ..autodiff import CALCULUS
from ..formulas import Node, variables
from ..formulas.parser import parse_aliases, parse_formula
from ..reductions import reduction as reduction_spec
from ._checks import check_flag, check_integer, check_string, check_strings
from .options import (
    accuracy_options,
    check_build_keywords,
    check_out,
    kernel_options,
    place,
    placement,
)
from .reduce import run_reduction

# pykeops's other names for reductions (older spellings, and LogSumExp with weights).
REDUCTION_ALIASES = {
    "SoftMax": "SumSoftMaxWeight",
    "LogSumExpWeight": "LogSumExp",
    "MinArgMin": "Min_ArgMin",
    "MaxArgMax": "Max_ArgMax",
    "KMinArgKMin": "KMin_ArgKMin",
}


class Genred:
    """A generic reduction of a formula string, compiled on first call, as pykeops's Genred.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops import Genred
        >>> gauss = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"],
        ...                reduction_op="Sum", axis=1)
        >>> gauss(jnp.ones((5, 3)), jnp.zeros((4, 3)), jnp.ones((4, 2))).shape
        (5, 2)

    Arguments are passed in the order of `aliases` (or of the variables' indices):
    i-variables as (*batch, M, dim), j-variables as (*batch, N, dim), parameters as
    (*batch, dim). `axis=1` reduces over j (one output row per i), `axis=0` over i. `opt_arg` is
    the K of KMin/ArgKMin/KMin_ArgKMin (at most the reduced axis' size, unless `pad=True`: the
    entries past it are then +inf with index -1); `formula2` the weight of SumSoftMaxWeight (or of a
    weighted LogSumExp). The accuracy keywords (`sum_scheme`, `dtype_acc`, `use_double_acc`)
    and the call keywords (`backend`, `device_id`) have pykeops's meanings; `enable_chunks`,
    `use_fast_math` and `rec_multVar_highdim` are accepted performance hints that change
    nothing here; `dtype` and `cuda_type` are ignored with a warning, as in pykeops; `out=`
    raises (JAX arrays are immutable). See `jaxkeops.lazy.options`.
    """

    def __init__(
        self,
        formula: str,
        aliases: Sequence[str],
        reduction_op: str = "Sum",
        axis: int = 0,
        dtype: Any = None,
        opt_arg: int | None = None,
        formula2: str | None = None,
        cuda_type: Any = None,
        dtype_acc: str = "auto",
        use_double_acc: bool = False,
        sum_scheme: str = "auto",
        enable_chunks: bool = True,
        rec_multVar_highdim: Any = False,
        use_fast_math: bool = True,
        pad: bool = False,
    ):
        check_string(formula, "formula", "'Exp(-SqDist(x, y)) * b'")
        aliases = check_strings(aliases, "aliases", "['x = Vi(3)', 'y = Vj(3)']")
        check_string(reduction_op, "reduction_op", "'Sum'")
        if formula2 is not None:
            check_string(formula2, "formula2", "'b' (the weights)")
        if reduction_op == "LogSumExpWeight" and formula2 is None:
            raise ValueError("reduction_op='LogSumExpWeight' needs formula2 (the weights)")
        spec = reduction_spec(REDUCTION_ALIASES.get(reduction_op, reduction_op))
        axis = check_integer(axis, "axis", meaning="0 reduces over i, 1 over j")
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
        check_build_keywords("Genred", {"dtype": dtype, "cuda_type": cuda_type,
                                        "enable_chunks": enable_chunks,
                                        "use_fast_math": use_fast_math})
        self.accuracy = accuracy_options(spec.name, sum_scheme, dtype_acc, use_double_acc)
        self.reduction = spec.name
        self.axis = axis
        if spec.needs_k:
            if opt_arg is None:
                raise ValueError(f"{spec.name} needs opt_arg (the number K of neighbours)")
            opt_arg = check_integer(opt_arg, "opt_arg", minimum=1,
                                    meaning=f"the number K of neighbours of {spec.name}")
        elif opt_arg is not None:
            raise ValueError(f"opt_arg={opt_arg!r} has no meaning for {spec.name}: only KMin, "
                             "ArgKMin and KMin_ArgKMin take one (the number K of neighbours)")
        self.k = opt_arg if spec.needs_k else None
        self.pad = check_flag(pad, "pad")
        self._aliases = parse_aliases(aliases)
        formulas: list[Node] = [parse_formula(formula, self._aliases, functions=CALCULUS)]
        if formula2 is not None:
            if spec.n_formulas < 2:
                raise ValueError(f"{spec.name} takes one formula; formula2={formula2!r} has no "
                                 "meaning for it")
            formulas.append(parse_formula(formula2, self._aliases, functions=CALCULUS))
        elif spec.n_formulas == 2 and not spec.weight_optional:
            raise ValueError(f"{spec.name} needs formula2 (the weights)")
        if spec.scalar_formula and formulas[0].dim != 1:
            raise ValueError(f"{spec.name} needs a scalar formula, but formula={formula!r} has "
                             f"dimension {formulas[0].dim}")
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

    def __call__(self, *args: Any, backend: str = "auto", device_id: int = -1,
                 ranges: Any = None, out: Any = None) -> Any:
        """Runs the reduction on one array per variable; returns one array, or a tuple for
        reductions with several outputs (Min_ArgMin, KMin_ArgKMin, ...)."""
        check_out(out)
        if len(args) != len(self.variables):
            raise ValueError(f"this Genred takes {len(self.variables)} arrays "
                             f"({', '.join(self.names)}), got {len(args)}")
        require_arrays(args, self.names)
        arrays = place(args, placement(backend, device_id))
        options = kernel_options(self.accuracy, arrays)
        outs = run_reduction(self.formulas, self.reduction, self.axis, self.variables, arrays,
                             self.names, k=self.k, pad=self.pad, ranges=ranges, **options)
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        body = ", ".join(repr(f) for f in self.formulas)
        return f"Genred({self.reduction}({body}), axis={self.axis})"

