"""Symbolic formulas: immutable nodes, the op table, and the KeOps formula-string parser."""

from . import complex_ops as _complex_ops  # noqa: F401  (registers the complex ops)
from . import elementwise as _elementwise  # noqa: F401  (registers the elementwise ops)
from . import sequence_ops as _sequence_ops  # noqa: F401  (registers BSpline, SoftDTW_SqDist)
from . import slicing_ops as _slicing_ops  # noqa: F401  (registers Elem, Extract, Concat, ...)
from . import tensor_ops as _tensor_ops  # noqa: F401  (registers the tensor-algebra ops)
from . import vector_ops as _vector_ops  # noqa: F401  (registers the vector ops)
from .nodes import CAT_I, CAT_J, CAT_P, Const, Node, Op, Var, variables, walk
from .optable import OPS, OpSpec, make

__all__ = [
    "CAT_I", "CAT_J", "CAT_P", "Const", "Node", "Op", "Var", "OPS", "OpSpec", "make",
    "variables", "walk",
]
