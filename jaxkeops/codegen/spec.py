"""What one kernel computes: formulas, reduction, axis, dtypes and argument roles.

A `KernelSpec` is immutable and hashable; its `key` (a content hash, also covering how the
kernel is built) names the generated source, the cached binary and the kernel id the FFI handler
looks up, so all three are stable across processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..formulas import CAT_I, CAT_J, CAT_P, Node, Var, variables
from ..reductions import (
    DEFAULT_SUM_SCHEME,
    REDUCTIONS,
    SUM_SCHEME_ALIASES,
    SUM_SCHEMES,
    Output,
    ReductionSpec,
    check_k_rows,
    sum_type_reductions,
)

ROLE_OUTER, ROLE_INNER, ROLE_PARAM = 0, 1, 2
DTYPES = ("float32", "float64")
HALF_DTYPES = ("float16", "bfloat16")  # stored in half precision, computed in float32
INDEX_DTYPES = ("int32", "int64")
ACCUMULATORS = ("float32", "float64")  # and "auto" / None: the compute dtype


@dataclass(frozen=True)
class KernelSpec:
    formulas: tuple[Node, ...]
    reduction: str
    axis: int  # 1: reduce over j (output indexed by i); 0: reduce over i
    dtype: str
    index_dtype: str = "int32"
    k: int | None = None
    sum_scheme: str = "block"
    args: tuple[Var, ...] = ()  # kernel argument order; defaults to the formulas' variables
    storage_dtype: str | None = None  # float16/bfloat16 inputs and outputs, computed in dtype
    # The dtype sum-type reductions add their terms in (KeOps' dtype_acc): None or "auto" for
    # the compute dtype, "float64" for float32 (or float16/bfloat16-stored) data. Normalised:
    # an accumulator equal to the compute dtype becomes None, so it names the same kernel.
    accumulator: str | None = None
    # Block-sparse (KeOps's `ranges`): the primitive takes the 6 range arrays after the kernel
    # operands, and the kernel call the 3 of its axis. The kernel source is the same.
    ranged: bool = False

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}")
        if self.axis not in (0, 1):
            raise ValueError(
                f"axis must be 0 (reduce over i) or 1 (reduce over j), got {self.axis}"
            )
        if self.dtype not in DTYPES:
            raise TypeError(f"formulas compute in float32 or float64, not {self.dtype}")
        if self.storage_dtype is not None and (
            self.storage_dtype not in HALF_DTYPES or self.dtype != "float32"
        ):
            raise TypeError(f"half-precision storage is float16 or bfloat16 computed in float32, "
                            f"not {self.storage_dtype} computed in {self.dtype}")
        if self.index_dtype not in INDEX_DTYPES:
            raise TypeError(f"indices are int32 or int64, not {self.index_dtype}")
        spec = self.reduction_spec
        object.__setattr__(self, "sum_scheme", self._checked_sum_scheme(spec))
        object.__setattr__(self, "accumulator", self._checked_accumulator(spec))
        if spec.needs_k and (self.k is None or self.k < 1):
            raise ValueError(f"{self.reduction} needs K >= 1, got {self.k}")
        if spec.scalar_formula and self.formulas[0].dim != 1:
            raise ValueError(
                f"{self.reduction} needs a scalar formula, got one of dim {self.formulas[0].dim}: "
                f"{self.formulas[0]!r}"
            )
        if not self.args:
            object.__setattr__(self, "args", tuple(variables(*self.formulas)))

    def _checked_sum_scheme(self, spec: ReductionSpec) -> str:
        scheme = SUM_SCHEME_ALIASES.get(self.sum_scheme, self.sum_scheme)
        if scheme not in SUM_SCHEMES:
            raise ValueError(
                f"sum_scheme must be one of {SUM_SCHEMES} (or KeOps' "
                f"{tuple(SUM_SCHEME_ALIASES)}), got {self.sum_scheme!r}"
            )
        if spec.sum_type:
            return scheme
        # Reductions that add nothing have no sum scheme: their only valid value is the
        # default (KeOps: "auto", which is "direct_sum" for them).
        if scheme == "kahan":
            raise ValueError(
                f"sum_scheme={self.sum_scheme!r} only applies to the sum-type reductions "
                f"{sum_type_reductions()}, not to {self.reduction}; leave sum_scheme at its "
                f"default"
            )
        return DEFAULT_SUM_SCHEME

    def _checked_accumulator(self, spec: ReductionSpec) -> str | None:
        acc = self.accumulator
        if acc is None or acc == "auto":
            return None
        if acc not in ACCUMULATORS:
            raise ValueError(f"accumulator must be None, 'auto' or one of {ACCUMULATORS}, got "
                             f"{acc!r} (float16/bfloat16 data accumulate in float32 already)")
        if not spec.sum_type:
            raise ValueError(
                f"accumulator={acc!r} only applies to the sum-type reductions "
                f"{sum_type_reductions()}, not to {self.reduction}; leave accumulator None"
            )
        if self.dtype == "float64" and acc != "float64":
            raise ValueError(f"accumulator={acc!r} is narrower than the float64 data: float64 "
                             f"data accumulate in float64")
        return None if acc == self.dtype else acc

    def check_reduced_rows(self, n_red: int, pad: bool = False) -> None:
        """Raises a ValueError naming K and the reduced axis' size if a K-reduction asks for
        more than its n_red reduced rows, unless `pad` (see reductions.check_k_rows)."""
        check_k_rows(self.reduction, self.k, n_red, self.axis, pad)

    @property
    def reduction_spec(self) -> ReductionSpec:
        return REDUCTIONS[self.reduction]

    @property
    def formula_dims(self) -> tuple[int, ...]:
        return tuple(f.dim for f in self.formulas)

    @property
    def outputs(self) -> tuple[Output, ...]:
        return self.reduction_spec.outputs(self.formula_dims, self.k)

    def role(self, var: Var) -> int:
        if var.cat == CAT_P:
            return ROLE_PARAM
        reduced = CAT_J if self.axis == 1 else CAT_I
        return ROLE_INNER if var.cat == reduced else ROLE_OUTER

    @property
    def value_dtype(self) -> str:
        """The dtype of the inputs and of the value outputs."""
        return self.storage_dtype or self.dtype

    @property
    def roles(self) -> tuple[int, ...]:
        return tuple(self.role(v) for v in self.args)

    def describe(self) -> str:
        parts = ", ".join(repr(f) for f in self.formulas)
        k = f", K={self.k}" if self.k is not None else ""
        options = [self.dtype]
        if self.sum_scheme != DEFAULT_SUM_SCHEME:
            options.append(f"{self.sum_scheme} sum")
        if self.accumulator:
            options.append(f"{self.accumulator} accumulator")
        return f"{self.reduction}({parts}{k}) over {'ij'[self.axis]} [{', '.join(options)}]"

    def content(self) -> str:
        """A canonical text of everything that determines the generated source."""
        return "|".join([
            ";".join(repr(f) for f in self.formulas), self.reduction, str(self.axis),
            self.dtype, self.index_dtype, str(self.k), self.sum_scheme,
            ";".join(repr(v) for v in self.args), str(self.storage_dtype), str(self.accumulator),
        ])

    def digest(self) -> str:
        return hashlib.sha256(self.content().encode()).hexdigest()


__all__ = ["KernelSpec", "ROLE_INNER", "ROLE_OUTER", "ROLE_PARAM", "CAT_I", "CAT_J"]
