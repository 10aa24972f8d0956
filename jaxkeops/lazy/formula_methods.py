"""The formula-building methods of LazyTensor with pykeops's names: vector operations, tensor
algebra, B-splines, soft-DTW and KeOps's symbolic calculus (Grad, Diff, GradMatrix, ...).

The elementwise functions (exp, log, sqnorm2, ...) are attached from the op table in
lazytensor.py; these are the methods whose arguments need more than the op table's generic
signature. Every one returns a LazyTensor (a mixin: it relies on LazyTensor's `_op`, `_merge`,
`_wrap` and `_make`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..autodiff import calculus
from ..formulas import Node, Var
from ..formulas.functions import difference_matrix
from ..formulas.tensor_ops import kron, tensordot_permuted
from ._checks import check_integer

if TYPE_CHECKING:  # lazytensor.py imports this module
    from .lazytensor import LazyTensor


class FormulaMethods:
    """pykeops's formula methods of LazyTensor."""

    def concat(self, other) -> LazyTensor:
        """self and other side by side on the vector axis (dimension self.ndim + other.ndim).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).concat(Vj(jnp.zeros((4, 1)))).shape
            (2, 4, 4)
        """
        return self._op("Concat", other)

    def sqdist(self, other) -> LazyTensor:
        """The squared euclidean distance |self - other|^2, a scalar formula.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> print(x_i.sqdist(y_j).sum(axis=1))   # 4 points at distance^2 3
            [[12.]
             [12.]]
        """
        return self._op("SqDist", other)

    def weightedsqnorm(self, s) -> LazyTensor:
        """The squared norm of self weighted by s: sum s x^2 for a diagonal s (dimension
        1 or self.ndim), x^T S x for a full matrix S flattened row-major (dimension
        self.ndim ** 2).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi
            >>> Vi(jnp.ones((2, 3))).weightedsqnorm(Pm(jnp.array([1.0, 2.0, 3.0]))).shape
            (2, 1)
        """
        return self._wrap(s)._op("WeightedSqNorm", self)

    def weightedsqdist(self, other, s) -> LazyTensor:
        """`(self - other).weightedsqnorm(s)`: a squared distance with weights or a metric s.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> x_i.weightedsqdist(y_j, Pm(jnp.full(3, 0.5))).shape
            (2, 4)
        """
        return self._wrap(s)._op("WeightedSqDist", self, other)

    def matvecmult(self, other) -> LazyTensor:
        """The matrix self (flattened row-major, other.ndim columns) times the vector other.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi
            >>> A = Pm(jnp.eye(3).ravel())   # a 3 x 3 matrix, flattened
            >>> A.matvecmult(Vi(jnp.ones((2, 3)))).shape
            (2, 1, 3)
        """
        return self._op("MatVecMult", other)

    def vecmatmult(self, other) -> LazyTensor:
        """The row vector self times the matrix other (flattened row-major, self.ndim rows).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi
            >>> Vi(jnp.ones((2, 3))).vecmatmult(Pm(jnp.ones(6))).shape   # 3 x 2 matrix
            (2, 1, 2)
        """
        return self._op("VecMatMult", other)

    def tensorprod(self, other) -> LazyTensor:
        """The outer product self other^T, flattened row-major (dimension self.ndim *
        other.ndim).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 2))).tensorprod(Vj(jnp.ones((4, 3)))).shape
            (2, 4, 6)
        """
        return self._op("TensorProd", other)

    def elem(self, k: int) -> LazyTensor:
        """Component k of the vector axis (as `x[k]`).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> Vi(jnp.ones((2, 3))).elem(1).shape
            (2, 1)
        """
        return self._op("Elem", params=(check_integer(k, "elem: k"),))

    def extract(self, start: int, length: int) -> LazyTensor:
        """Components start, ..., start + length - 1 of the vector axis (as
        `x[start:start + length]`).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> Vi(jnp.ones((2, 5))).extract(1, 3).shape
            (2, 1, 3)
        """
        return self._op("Extract", params=(check_integer(start, "extract: start"),
                                           check_integer(length, "extract: length", minimum=1)))

    def atan2(self, x) -> LazyTensor:
        """The angle atan2(self, x) of the point (x, self), in [-pi, pi].

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 1))).atan2(Vj(jnp.ones((4, 1)))).shape
            (2, 4)
        """
        return self._op("Atan2", x)

    def powf(self, y) -> LazyTensor:
        """self ** y for a formula (or float) y, defined for self > 0 (as `x ** y`).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.full((2, 1), 2.0)).powf(Vj(jnp.ones((4, 1)))).shape
            (2, 4)
        """
        return self._op("Powf", y)

    def ifelse(self, a, b) -> LazyTensor:
        """a where self >= 0, b elsewhere, componentwise.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 1))), Vj(jnp.zeros((4, 1)))
            >>> (x_i - y_j).ifelse(x_i, y_j).shape
            (2, 4)
        """
        return self._op("IfElse", a, b)

    def mod(self, modulus, offset=0.0) -> LazyTensor:
        """self - modulus * floor((self - offset) / modulus): the representative of self
        in [offset, offset + modulus).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> Vi(jnp.ones((2, 3))).mod(0.75, 0.1).shape
            (2, 1, 3)
        """
        return self._op("Mod", modulus, offset)

    def round(self, decimals: int = 0) -> LazyTensor:
        """Rounded to `decimals` decimals, halves away from zero.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> Vi(jnp.full((2, 1), 1.26)).round(1).shape
            (2, 1)
        """
        return self._op("Round", params=(check_integer(decimals, "round: decimals"),))

    def clampint(self, a: int, b: int) -> LazyTensor:
        """`clamp` with integer bounds a and b, fixed in the formula.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi
            >>> Vi(jnp.ones((2, 3))).clampint(-1, 1).shape
            (2, 1, 3)
        """
        return self._op("ClampInt", params=(check_integer(a, "clampint: a"),
                                            check_integer(b, "clampint: b")))

    def one_hot(self, dim: int) -> LazyTensor:
        """1 at component round(x) of a vector of dimension `dim`, 0 elsewhere.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.array([[0.0], [2.0]])).one_hot(3).shape
            (2, 1, 3)
        """
        return self._op("OneHot", params=(check_integer(dim, "one_hot: dim", minimum=1),))

    def clamp(self, a, b) -> LazyTensor:
        """a where x < a, b where x > b, x in between (integer bounds use ClampInt).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).clamp(0.0, 0.5).shape
            (2, 1, 3)
        """
        if all(isinstance(v, (int, np.integer)) for v in (a, b)):
            return self._op("ClampInt", params=(int(a), int(b)))
        return self._op("Clamp", a, b)

    def sinc(self) -> LazyTensor:
        """The normalised sinc, sin(pi x) / (pi x), and 1 at 0 (as torch.sinc and pykeops).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).sinc().shape
            (2, 1, 3)
        """
        return (math.pi * self)._op("SinXDivX")

    def norm(self, dim: int) -> LazyTensor:
        """The euclidean norm over the vector axis (`dim` must be -1, as in pykeops).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).norm(-1).shape
            (2, 1)
        """
        if dim not in (-1, len(self._shape) - 1):
            raise ValueError(f"norm takes dim=-1 (the vector axis), got dim={dim!r}")
        return self._op("Norm2")

    def kron(self, other, shape_a: Sequence[int] = (), shape_b: Sequence[int] = ()):
        """Kronecker product of self and other read as row-major tensors of shapes `shape_a`
        and `shape_b` (of the same length; vectors by default).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 2))).kron(Vj(jnp.ones((4, 3)))).shape
            (2, 4, 6)
        """
        return self._binary_formula(other, lambda a, b: kron(
            a, b, tuple(shape_a) or (a.dim,), tuple(shape_b) or (b.dim,)))

    def keops_kron(self, other, dimfself: Sequence[int], dimfother: Sequence[int]) -> LazyTensor:
        """pykeops's Kronecker product: the flattened np.kron of self and other read as
        row-major tensors of shapes `dimfself` and `dimfother` (of the same length).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 4))).keops_kron(Vj(jnp.ones((4, 4))), [2, 2], [2, 2]).shape
            (2, 4, 16)
        """
        return self._binary_formula(other, lambda a, b: kron(a, b, dimfself, dimfother))

    def tensordot(self, other, dimfa, dimfb, contfa, contfb):
        """numpy.tensordot of self (shape dimfa) and other (shape dimfb) over contfa, contfb.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 6))), Vj(jnp.zeros((4, 6)))
            >>> x_i.tensordot(y_j, (2, 3), (3, 2), (1,), (0,)).shape   # a 2 x 2 result
            (2, 4, 4)
        """
        params = tuple(tuple(int(v) for v in np.atleast_1d(p))
                       for p in (dimfa, dimfb, contfa, contfb))
        return self._op("TensorDot", other, params=params)

    def keops_tensordot(self, other, dimfa, dimfb, contfa, contfb, *permutation) -> LazyTensor:
        """pykeops's tensordot: as `tensordot`, then the optional `permutation` of the output
        axes with KeOps's meaning (kept axis t goes to output position permutation[t]).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 6))), Vj(jnp.zeros((4, 6)))
            >>> x_i.keops_tensordot(y_j, (2, 3), (3, 2), (1,), (0,), (1, 0)).shape
            (2, 4, 4)
        """
        perm = permutation[0] if permutation else None
        return self._binary_formula(other, lambda a, b: tensordot_permuted(
            a, b, dimfa, dimfb, contfa, contfb, perm))

    def permute(self, shape: Sequence[int], axes: Sequence[int]):
        """self read as a row-major tensor of `shape`, axes permuted as numpy.transpose does.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 6))).permute((2, 3), (1, 0)).shape   # a 2 x 3 matrix transposed
            (2, 1, 6)
        """
        return self._op("Permute", params=(tuple(shape), tuple(axes)))

    def difference_matrix(self, other) -> LazyTensor:
        """The differences self_i - other_j at component j * self.ndim + i (KeOps's
        DifferenceMatrix): dimension self.ndim * other.ndim.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 2))).difference_matrix(Vj(jnp.ones((4, 3)))).shape
            (2, 4, 6)
        """
        return self._binary_formula(other, difference_matrix)

    def bspline(self, x: Any, k: int = 0) -> LazyTensor:
        """The B-spline basis functions of order k for the knots `self` (dimension n),
        evaluated at the scalar x: dimension n - k - 1 (KeOps's BSpline).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi
            >>> knots = Pm(jnp.linspace(0.0, 1.0, 6))
            >>> knots.bspline(Vi(jnp.full((2, 1), 0.5)), k=2).shape
            (2, 1, 3)
        """
        return self._op("BSpline", x, params=(check_integer(k, "bspline: k", minimum=0),))

    def softdtw_sqdist(self, other, gamma) -> LazyTensor:
        """The soft-DTW discrepancy between the sequences self and other, with squared
        euclidean costs and smoothing `gamma` (KeOps's SoftDTW_SqDist).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> Vi(jnp.ones((2, 3))).softdtw_sqdist(Vj(jnp.ones((4, 2))), 0.1).shape
            (2, 4)
        """
        return self._op("SoftDTW_SqDist", other, gamma)

    @staticmethod
    def concatenate(tensors: Sequence[LazyTensor], axis: int = -1) -> LazyTensor:
        """Concatenation along the vector axis (the only one pykeops allows).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor, Vi, Vj
            >>> LazyTensor.concatenate([Vi(jnp.ones((2, 3))), Vj(jnp.ones((4, 1)))]).shape
            (2, 4, 4)
        """
        if axis not in (-1,) and not (tensors and axis == len(tensors[0]._shape) - 1):
            raise ValueError(f"LazyTensors are concatenated along the vector axis (-1), not "
                             f"axis={axis!r}")
        if not tensors:
            raise ValueError("concatenate needs at least one LazyTensor")
        out = tensors[0]
        for t in tensors[1:]:
            out = out.concat(t)
        return out

    @staticmethod
    def cat(tensors: Sequence[LazyTensor], dim: int) -> LazyTensor:
        """torch-style name of `concatenate`.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import LazyTensor, Vi
            >>> x_i = Vi(jnp.ones((2, 3)))
            >>> LazyTensor.cat([x_i, x_i], dim=-1).shape
            (2, 1, 6)
        """
        return FormulaMethods.concatenate(tensors, dim)

    # Symbolic calculus (KeOps's Grad, Diff, GradMatrix, Divergence, Laplacian, TraceOperator,
    # AdjointOperator): the results are ordinary formulas, built by jaxkeops's autodiff.
    def _with_variable(self, v: Any, *others: Any) -> tuple[list[Node], tuple, Var]:
        formulas, leaves = self._merge(self, self._wrap(v), *(self._wrap(o) for o in others))
        if not isinstance(formulas[1], Var):
            raise TypeError(f"the variable to differentiate with respect to must be a variable "
                            f"(Vi, Vj, Pm or a symbolic LazyTensor), got {formulas[1]!r}")
        return formulas, leaves, formulas[1]

    def grad(self, v: LazyTensor, e: Any) -> LazyTensor:
        """The gradient of <self, e> with respect to the variable `v` (KeOps's Grad).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> g = ((x_i - y_j) ** 2).sum(-1).grad(x_i, 1.0)   # 2 (x_i - y_j)
            >>> g.sum(axis=1)[0].tolist()
            [8.0, 8.0, 8.0]
        """
        f, leaves, var = self._with_variable(v, e)
        return self._make(calculus.grad(f[0], var, f[2]), leaves, self.ranges)

    def diff(self, v: LazyTensor, e: Any) -> LazyTensor:
        """The derivative of self with respect to the variable `v` along `e` (KeOps's Diff).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> ((x_i - y_j) ** 2).sum(-1).diff(x_i, Vi(jnp.ones((2, 3)))).shape
            (2, 4)
        """
        f, leaves, var = self._with_variable(v, e)
        return self._make(calculus.diff(f[0], var, f[2]), leaves, self.ranges)

    def grad_matrix(self, v: LazyTensor) -> LazyTensor:
        """The Jacobian of self with respect to `v`: component i * v.ndim + k is
        d self_i / d v_k (KeOps's GradMatrix).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i = Vi(jnp.ones((2, 3)))
            >>> (2.0 * x_i).grad_matrix(x_i).shape   # 2 I, flattened
            (2, 1, 9)
        """
        f, leaves, var = self._with_variable(v)
        return self._make(calculus.grad_matrix(f[0], var), leaves, self.ranges)

    def divergence(self, v: LazyTensor) -> LazyTensor:
        """sum_k d self_k / d v_k (self and v of the same dimension).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i = Vi(jnp.ones((2, 3)))
            >>> (2.0 * x_i).divergence(x_i).shape
            (2, 1)
        """
        f, leaves, var = self._with_variable(v)
        return self._make(calculus.divergence(f[0], var), leaves, self.ranges)

    def laplacian(self, v: LazyTensor) -> LazyTensor:
        """sum_k d^2 self / d v_k^2 for a scalar self.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i = Vi(jnp.ones((2, 3)))
            >>> (x_i ** 2).sum(-1).laplacian(x_i).shape
            (2, 1)
        """
        f, leaves, var = self._with_variable(v)
        return self._make(calculus.laplacian(f[0], var), leaves, self.ranges)

    def trace_operator(self, v: LazyTensor) -> LazyTensor:
        """The trace of self, a formula linear in the variable `v` (KeOps's TraceOperator).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi
            >>> v = Vi(jnp.ones((2, 3)))
            >>> Pm(jnp.eye(3).ravel()).matvecmult(v).trace_operator(v).shape
            (2, 1)
        """
        f, leaves, var = self._with_variable(v)
        return self._make(calculus.trace_operator(f[0], var), leaves, self.ranges)

    def adjoint_operator(self, v: LazyTensor, e: Any) -> LazyTensor:
        """The adjoint of self, a formula linear in the variable `v`, applied to `e` (KeOps's
        AdjointOperator).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Pm, Vi
            >>> v, e = Vi(jnp.ones((2, 3))), Vi(jnp.zeros((2, 3)))
            >>> Pm(jnp.eye(3).ravel()).matvecmult(v).adjoint_operator(v, e).shape
            (2, 1, 3)
        """
        f, leaves, var = self._with_variable(v, e)
        return self._make(calculus.adjoint_operator(f[0], var, f[2]), leaves, self.ranges)

    def factorize(self, other: Any) -> LazyTensor:
        """pykeops's factorization hint: the same values. jaxkeops's code generator shares
        common subexpressions by itself, so the formula is returned as it is.

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> D_ij = ((x_i - y_j) ** 2).sum(-1)
            >>> D_ij.factorize(x_i - y_j) is D_ij
            True
        """
        self._wrap(other)
        return self

    def auto_factorize(self) -> LazyTensor:
        """pykeops's automatic factorization hint: the same values (see `factorize`).

        Example:
            >>> import jax.numpy as jnp
            >>> from jaxkeops import Vi, Vj
            >>> x_i, y_j = Vi(jnp.ones((2, 3))), Vj(jnp.zeros((4, 3)))
            >>> D_ij = ((x_i - y_j) ** 2).sum(-1)
            >>> D_ij.auto_factorize() is D_ij
            True
        """
        return self
