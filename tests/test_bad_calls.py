"""Bad calls of the public API: each raises the right exception type (TypeError for a wrong type,
ValueError for a wrong value or shape) with a message that names the argument and, where shapes
are involved, the shapes; and none of them gets as far as building a kernel. A few good calls at
the edge of what is allowed (numpy integers, negative axes) are checked against numpy."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

import jaxkeops.lazy.reduce as reduce_module
from jaxkeops import Genred, KernelSolve, LazyTensor, Pm, Vi, Vj

M, N, D, E = 5, 4, 3, 2
X = np.linspace(0.0, 1.0, M * D).reshape(M, D)
Y = np.linspace(0.2, 1.7, N * D).reshape(N, D) ** 2
B = np.linspace(-1.0, 1.0, N * E).reshape(N, E)
GAUSS = "Exp(-SqDist(x,y)) * b"
GAUSS_ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"]


def sqdist():
    """The symbolic (M, N) squared distances between X and Y."""
    return ((Vi(X) - Vj(Y)) ** 2).sum(-1)


def square_kernel():
    """A symbolic (M, M) Gaussian kernel, for solves."""
    return (-((Vi(X) - Vj(X)) ** 2).sum(-1)).exp()


def batched_sqdist():
    """Squared distances with one batch dim: internal shape (2, M, N, 1)."""
    return ((Vi(np.stack([X, X])) - Vj(Y)) ** 2).sum(-1)


def gauss(**options):
    return Genred(GAUSS, GAUSS_ALIASES, **{"reduction_op": "Sum", "axis": 1, **options})


def symbolic_reduction():
    """A reduction over j of a symbolic i-variable of dim 3, to be called with its array."""
    return ((LazyTensor((0, D, 0)) - Vj(Y)) ** 2).sum(-1).sum(axis=1, call=False)


class BadCall(NamedTuple):
    id: str
    call: Callable[[], object]
    error: type[Exception]
    message: str | Sequence[str]  # a regex, or substrings that must all appear


BAD_CALLS = [
    # K of the K-nearest reductions.
    BadCall("K-float", lambda: sqdist().argKmin(K=2.5, axis=1), TypeError, r"\bK\b.*2\.5"),
    BadCall("K-bool", lambda: sqdist().argKmin(K=True, axis=1), TypeError, r"\bK\b.*True"),
    BadCall("K-zero", lambda: sqdist().Kmin(K=0, axis=1), ValueError, r"K must be >= 1.*K=0"),
    BadCall("K-negative", lambda: sqdist().Kmin_argKmin(K=-3, axis=1), ValueError, r"K=-3"),
    BadCall("K-string", lambda: sqdist().argKmin(K="2", axis=1), TypeError, r"\bK\b.*'2'"),
    BadCall("K-none", lambda: sqdist().Kmin(K=None, axis=1), TypeError, r"\bK\b.*None"),
    BadCall("K-numpy-float", lambda: sqdist().argkmin(K=np.float64(2.0), axis=1), TypeError,
            r"\bK\b.*2\.0"),
    BadCall("K-without-axis", lambda: sqdist().argKmin(K=2), ValueError,
            r"give the axis.*\(5, 4, 1\)"),
    # axis and dim of the LazyTensor reductions.
    BadCall("axis-string", lambda: sqdist().sum(axis="1"), TypeError,
            r"axis must be an integer.*'1'"),
    BadCall("axis-float", lambda: sqdist().sum(axis=1.0), TypeError,
            r"axis must be an integer.*1\.0"),
    BadCall("axis-bool", lambda: sqdist().logsumexp(axis=True), TypeError,
            r"axis must be an integer.*True"),
    BadCall("axis-list", lambda: sqdist().min(axis=[1]), TypeError,
            r"axis must be an integer.*\[1\]"),
    BadCall("axis-too-large", lambda: sqdist().sum(axis=5), ValueError,
            r"axis=5.*\(5, 4, 1\)"),
    BadCall("axis-too-negative", lambda: sqdist().logsumexp(axis=-4), ValueError,
            r"axis=-4.*\(5, 4, 1\)"),
    BadCall("axis-vector-for-logsumexp", lambda: sqdist().logsumexp(axis=-1), ValueError,
            r"cannot reduce axis -1 \(axis=-1\).*\(5, 4, 1\)"),
    BadCall("axis-without-batch-shift", lambda: batched_sqdist().sum(axis=0), ValueError,
            r"axis=0.*\(2, 5, 4, 1\).*1 batch dims.*use 1 or -3"),
    BadCall("dim-string", lambda: sqdist().sum(dim="1"), TypeError,
            r"dim must be an integer.*'1'"),
    BadCall("dim-float", lambda: sqdist().min_argmin(dim=2.0), TypeError,
            r"dim must be an integer.*2\.0"),
    BadCall("dim-out-of-range", lambda: sqdist().argKmin(K=2, dim=3), ValueError,
            r"dim=3.*\(5, 4, 1\)"),
    BadCall("axis-and-dim-disagree", lambda: sqdist().sum(axis=0, dim=1), ValueError,
            r"axis=0 and dim=1 disagree"),
    # weight of logsumexp and sumsoftmaxweight.
    BadCall("weight-unplaceable-array", lambda: sqdist().sumsoftmaxweight(np.ones((7, E)), axis=1),
            ValueError, r"weight.*\(7, 2\).*Vj\(weight\).*\(5, 4, 1\)"),
    BadCall("weight-wrong-N", lambda: sqdist().logsumexp(axis=1, weight=Vj(np.ones((7, 1)))),
            ValueError, r"weight has N=7.*\(1, 7, 1\).*N=4.*\(5, 4, 1\)"),
    BadCall("weight-wrong-M", lambda: sqdist().sumsoftmaxweight(Vi(np.ones((6, E))), axis=0),
            ValueError, r"weight has M=6.*\(6, 1, 2\).*M=5"),
    BadCall("weight-batch-mismatch",
            lambda: batched_sqdist().sumsoftmaxweight(Vj(np.ones((3, N, E))), axis=2),
            ValueError, r"batch dims \(3,\) of weight.*\(2,\)"),
    BadCall("weight-string", lambda: sqdist().sumsoftmaxweight("w", axis=1), TypeError,
            r"weight must be an array.*'w'"),
    BadCall("weight-missing", lambda: sqdist().sumsoftmaxweight(None, axis=1), TypeError,
            r"needs weight"),
    BadCall("return-sign-string", lambda: sqdist().logsumexp(axis=1, return_sign="yes"),
            TypeError, r"return_sign must be True or False.*'yes'"),
    # pykeops's keywords.
    BadCall("sum-scheme-unknown", lambda: sqdist().sum(axis=1, sum_scheme="fast"), ValueError,
            r"sum_scheme='fast' is not one of.*'kahan_scheme'"),
    BadCall("sum-scheme-int", lambda: sqdist().sum(axis=1, sum_scheme=1), TypeError,
            r"sum_scheme must be a string.*1"),
    BadCall("sum-scheme-on-min", lambda: sqdist().min(axis=1, sum_scheme="kahan_scheme"),
            ValueError, r"sum_scheme='kahan_scheme' only applies to sum-type.*Min"),
    BadCall("backend-unknown", lambda: sqdist().sum(axis=1, backend="TPU"), ValueError,
            r"backend='TPU' is not one of.*'CPU'"),
    BadCall("backend-int", lambda: sqdist().sum(axis=1, backend=0), TypeError,
            r"backend must be a string.*got 0"),
    BadCall("device-id-string", lambda: sqdist().sum(axis=1, device_id="0"), TypeError,
            r"device_id must be an integer.*'0'"),
    BadCall("device-id-out-of-range", lambda: sqdist().sum(axis=1, device_id=99), ValueError,
            r"device_id=99 is out of range"),
    BadCall("unknown-keyword", lambda: sqdist().sum(axis=1, foo=1), TypeError,
            r"unexpected keyword argument.*'foo'"),
    BadCall("keepdim-string", lambda: sqdist().sum(axis=1, keepdim="yes"), TypeError,
            r"keepdim must be True or False.*'yes'"),
    BadCall("call-string", lambda: sqdist().sum(axis=1, call="no"), TypeError,
            r"call must be True or False.*'no'"),
    BadCall("dtype-acc-unknown", lambda: sqdist().sum(axis=1, dtype_acc="float8"), ValueError,
            r"dtype_acc='float8' is not one of"),
    BadCall("use-double-acc-string", lambda: sqdist().sum(axis=1, use_double_acc="yes"),
            TypeError, r"use_double_acc must be True or False.*'yes'"),
    BadCall("out-array", lambda: sqdist().sum(axis=1, out=np.zeros((M, 1))), TypeError,
            r"out= is not supported"),
    # Vi, Vj, Pm and LazyTensor(...).
    BadCall("Vi-rank-0", lambda: Vi(jnp.asarray(3.0)), ValueError,
            r"Vi\(x\): an i-variable needs shape.*got a scalar \(shape \(\)\)"),
    BadCall("Vj-string", lambda: Vj("abc"), TypeError, r"Vj\(x\): x must be an array.*'abc'"),
    BadCall("Pm-none", lambda: Pm(None), TypeError, r"Pm\(x\): x must be an array.*None"),
    BadCall("Vi-empty-vector-axis", lambda: Vi(np.ones((M, 0))), ValueError,
            r"Vi\(x\): x has shape \(5, 0\).*empty last axis"),
    BadCall("Vj-of-string-array", lambda: Vj(np.array([["a"]])), TypeError,
            r"Vj\(x\): x must hold numbers.*<U1"),
    BadCall("Vj-of-lazytensor", lambda: Vj(Vi(X)), TypeError,
            r"Vj\(x\): x is already a LazyTensor \(shape \(5, 1, 3\)\)"),
    BadCall("LazyTensor-ambiguous-shape", lambda: LazyTensor(np.ones((M, D))), ValueError,
            r"cannot tell the role of an array of shape \(5, 3\)"),
    BadCall("LazyTensor-axis-string", lambda: LazyTensor(X, axis="i"), TypeError,
            r"axis must be an integer.*'i'"),
    BadCall("LazyTensor-axis-3", lambda: LazyTensor(X, axis=3), ValueError,
            r"axis must be 0 \(i\), 1 \(j\) or 2 \(parameter\), got 3"),
    BadCall("LazyTensor-short-tuple", lambda: LazyTensor((0, 3)), ValueError,
            r"\(index, dim, cat\).*\(0, 3\)"),
    BadCall("LazyTensor-object", lambda: LazyTensor(object()), TypeError,
            r"LazyTensor\(x\): x must be an array.*object"),
    BadCall("integer-data", lambda: (Vi(X.astype(np.int64)) - Vj(Y)).sum(-1).sum(axis=1),
            TypeError, r"i-variable #0 \(5, 3\).*dtype int64"),
    BadCall("mixed-float-dtypes", lambda: (Vi(X) - Vj(Y.astype(np.float32))).sum(-1).sum(axis=1),
            TypeError, r"mixed dtypes.*float64.*float32"),
    # Operations between LazyTensors.
    BadCall("subtract-dims", lambda: Vi(X) - Vj(np.ones((N, 2))), ValueError,
            r"Subtract.*3 and 2.*\(5, 1, 3\), \(1, 4, 2\)"),
    BadCall("multiply-dims", lambda: Vi(X) * Vj(np.ones((N, 2))), ValueError,
            r"Mult.*3 and 2.*\(5, 1, 3\), \(1, 4, 2\)"),
    BadCall("scalar-product-dims", lambda: Vi(X) | Vj(np.ones((N, 2))), ValueError,
            r"Scalprod.*\(5, 1, 3\), \(1, 4, 2\)"),
    BadCall("batch-dims-do-not-broadcast",
            lambda: (Vi(np.ones((2, M, D))) + Vj(np.ones((3, N, D)))).sum(-1).sum(axis=1),
            ValueError, r"batch dimensions do not broadcast.*\(2, 5, 3\).*\(3, 4, 3\)"),
    BadCall("add-string", lambda: Vi(X) + "a", TypeError, r"Add: the other operand.*'a'"),
    BadCall("power-none", lambda: Vi(X) ** None, TypeError, r"the other operand.*None"),
    BadCall("index-string", lambda: Vi(X)["a"], TypeError, r"indexing takes an int.*'a'"),
    BadCall("different-M", lambda: (Vi(X) + Vi(np.ones((M + 1, D)))).sum(-1).sum(axis=1),
            ValueError, r"M differs.*\(5, 3\).*\(6, 3\)"),
    # K @ v.
    BadCall("matmul-vector-valued-K", lambda: (Vi(X) - Vj(Y)) @ np.ones(N), ValueError,
            r"scalar LazyTensor K.*\(5, 4, 3\)"),
    BadCall("matmul-wrong-N", lambda: sqdist() @ np.ones(N + 3), ValueError,
            r"N differs.*\(4, 3\).*\(7, 1\)"),
    BadCall("matmul-string", lambda: sqdist() @ "v", TypeError, r"v must be an array.*'v'"),
    BadCall("matmul-integer-v", lambda: sqdist() @ np.ones(N, np.int64), TypeError,
            r"v has dtype int64 \(shape \(4,\)\)"),
    BadCall("matmul-scalar", lambda: sqdist() @ 2.0, ValueError, r"array v of shape.*scalar"),
    # LazyTensor.solve and KernelSolve.
    BadCall("solve-not-square", lambda: sqdist().solve(Vi(np.ones((M, 1)))), ValueError,
            r"square K.*\[5\] rows.*\[4\] rows"),
    BadCall("solve-b-rows", lambda: square_kernel().solve(Vi(np.ones((M + 1, 1)))), ValueError,
            r"square K.*\[5\].*b has 6 rows"),
    BadCall("solve-alpha-string", lambda: square_kernel().solve(Vi(np.ones((M, 1))), alpha="a"),
            TypeError, r"alpha must be an array.*'a'"),
    BadCall("solve-alpha-negative", lambda: square_kernel().solve(Vi(np.ones((M, 1))), alpha=-1.0),
            ValueError, r"alpha.*must be >= 0.*-1"),
    BadCall("solve-eps-string", lambda: square_kernel().solve(Vi(np.ones((M, 1))), eps="tight"),
            TypeError, r"eps must be a positive number.*'tight'"),
    BadCall("solve-eps-negative", lambda: square_kernel().solve(Vi(np.ones((M, 1))), eps=-1.0),
            ValueError, r"eps must be > 0.*eps=-1\.0"),
    BadCall("solve-maxiter-float", lambda: square_kernel().solve(Vi(np.ones((M, 1))), maxiter=2.5),
            TypeError, r"maxiter must be an integer.*2\.5"),
    BadCall("solve-maxiter-zero", lambda: square_kernel().solve(Vi(np.ones((M, 1))), maxiter=0),
            ValueError, r"maxiter must be >= 1.*maxiter=0"),
    BadCall("solve-on-nonconvergence",
            lambda: square_kernel().solve(Vi(np.ones((M, 1))), on_nonconvergence="loud"),
            ValueError, r"on_nonconvergence must be one of.*'loud'"),
    BadCall("solve-var-array", lambda: square_kernel().solve(Vi(np.ones((M, 1))),
                                                             var=np.ones((M, 1))),
            TypeError, r"var must be a LazyTensor"),
    BadCall("solve-b-string", lambda: square_kernel().solve("b"), TypeError,
            r"solve: b must be an array.*'b'"),
    BadCall("solve-b-columns", lambda: (Vi(X) - Vj(X)).solve(Vi(np.ones((M, 2)))), ValueError,
            r"K has dimension 3.*b of 2 columns"),
    BadCall("KernelSolve-axis-string",
            lambda: KernelSolve(GAUSS, GAUSS_ALIASES, "b", axis="1"), TypeError,
            r"KernelSolve: axis must be an integer.*'1'"),
    BadCall("KernelSolve-b-string",
            lambda: KernelSolve(GAUSS, GAUSS_ALIASES, "b", axis=1)(X, X, "b"), TypeError,
            r"b \(argument 'b'\) must be an array.*'b'"),
    # Genred: the constructor.
    BadCall("Genred-unknown-reduction", lambda: gauss(reduction_op="Summ"), ValueError,
            r"unknown reduction 'Summ'.*Sum"),
    BadCall("Genred-reduction-int", lambda: gauss(reduction_op=1), TypeError,
            r"reduction_op must be a string.*got 1"),
    BadCall("Genred-alias-category", lambda: Genred("x", ["x = Vk(3)"]), ValueError,
            ["bad category 'Vk'", "alias 'x = Vk(3)'"]),
    BadCall("Genred-alias-dim-0", lambda: Genred("x", ["x = Vi(0)"]), ValueError,
            r"alias 'x = Vi\(0\)'.*dimension must be >= 1"),
    BadCall("Genred-alias-twice", lambda: Genred("x", ["x = Vi(3)", "x = Vj(3)"]), ValueError,
            r"alias 'x = Vj\(3\)'.*'x' is declared twice"),
    BadCall("Genred-aliases-string", lambda: Genred("x", "x = Vi(3)"), TypeError,
            r"aliases must be a list of strings.*'x = Vi\(3\)'"),
    BadCall("Genred-alias-not-string", lambda: Genred("x", ["x = Vi(3)", 3]), TypeError,
            r"aliases\[1\] must be a string.*got 3"),
    BadCall("Genred-formula-int", lambda: Genred(3, GAUSS_ALIASES), TypeError,
            r"formula must be a string.*got 3"),
    BadCall("Genred-formula2-int",
            lambda: Genred("-SqDist(x,y)", GAUSS_ALIASES, reduction_op="SumSoftMaxWeight",
                           formula2=3, axis=1), TypeError, r"formula2 must be a string.*got 3"),
    BadCall("Genred-axis-2", lambda: gauss(axis=2), ValueError,
            r"axis must be 0 \(reduce over i\) or 1 \(reduce over j\), got 2"),
    BadCall("Genred-axis-string", lambda: gauss(axis="1"), TypeError,
            r"axis must be an integer.*'1'"),
    BadCall("Genred-axis-float", lambda: gauss(axis=1.0), TypeError,
            r"axis must be an integer.*1\.0"),
    BadCall("Genred-opt-arg-float", lambda: gauss(reduction_op="ArgKMin", opt_arg=2.5), TypeError,
            r"opt_arg must be an integer.*ArgKMin.*2\.5"),
    BadCall("Genred-opt-arg-zero", lambda: gauss(reduction_op="KMin", opt_arg=0), ValueError,
            r"opt_arg must be >= 1.*opt_arg=0"),
    BadCall("Genred-opt-arg-missing", lambda: gauss(reduction_op="KMin"), ValueError,
            r"KMin needs opt_arg"),
    BadCall("Genred-opt-arg-for-sum", lambda: gauss(opt_arg=3), ValueError,
            r"opt_arg=3 has no meaning for Sum"),
    BadCall("Genred-vector-formula-for-softmax",
            lambda: Genred("x - y", GAUSS_ALIASES, reduction_op="SumSoftMaxWeight",
                           formula2="b", axis=1),
            ValueError, r"SumSoftMaxWeight needs a scalar formula.*'x - y' has dimension 3"),
    BadCall("Genred-sum-scheme", lambda: gauss(sum_scheme="fast"), ValueError,
            r"sum_scheme='fast'"),
    # Genred: the call.
    BadCall("Genred-too-few-arrays", lambda: gauss()(X, Y), ValueError,
            r"takes 3 arrays \(x, y, b\), got 2"),
    BadCall("Genred-last-dim", lambda: gauss()(X, Y, np.ones((N, 3))), ValueError,
            r"'b' \(Vj, dim 2\) has last dimension 3 instead of 2: shape \(4, 3\)"),
    BadCall("Genred-rank", lambda: gauss()(X, Y, np.ones(N)), ValueError,
            r"'b' \(Vj, dim 2\) must have shape \(\.\.\., rows, dim\), got \(4,\)"),
    BadCall("Genred-mixed-dtypes", lambda: gauss()(X, Y.astype(np.float32), B), TypeError,
            r"mixed dtypes.*'x': float64.*'y': float32"),
    BadCall("Genred-integer-array", lambda: gauss()(X, Y, B.astype(np.int32)), TypeError,
            r"'b' has dtype int32 \(shape \(4, 2\)\)"),
    BadCall("Genred-string-argument", lambda: gauss()(X, "y", B), TypeError,
            r"argument 'y' must be an array.*str"),
    BadCall("Genred-none-argument", lambda: gauss()(X, None, B), TypeError,
            r"argument 'y' must be an array.*None"),
    BadCall("Genred-list-argument", lambda: gauss()(X, Y.tolist(), B), TypeError,
            r"argument 'y' must be an array.*list"),
    BadCall("Genred-different-N", lambda: gauss()(X, Y, np.ones((N + 1, E))), ValueError,
            r"N differs.*'y' \(shape \(4, 3\)\).*'b' \(shape \(5, 2\)\)"),
    BadCall("Genred-batch-dims", lambda: gauss()(np.ones((2, M, D)), np.ones((3, N, D)), B),
            ValueError, r"batch dimensions do not broadcast.*'x': \(2,\).*'y': \(3,\)"),
    BadCall("Genred-backend", lambda: gauss()(X, Y, B, backend="TPU"), ValueError,
            r"backend='TPU'"),
    BadCall("Genred-device-id", lambda: gauss()(X, Y, B, device_id=1.5), TypeError,
            r"device_id must be an integer.*1\.5"),
    # A reduction called later with the arrays of its symbolic variables.
    BadCall("symbolic-wrong-dim", lambda: symbolic_reduction()(np.ones((M, 4))), ValueError,
            r"symbolic variable #0.*dim 3.*\(5, 4\)"),
    BadCall("symbolic-count", lambda: symbolic_reduction()(X, X), ValueError,
            r"takes 1 array\(s\).*got 2"),
    BadCall("symbolic-string", lambda: symbolic_reduction()("x"), TypeError,
            r"i-variable #0.*must be an array.*str"),
]


def test_the_table_is_large_and_its_ids_are_unique():
    ids = [row.id for row in BAD_CALLS]
    assert len(ids) >= 50
    assert len(set(ids)) == len(ids)


@pytest.fixture
def no_kernel(monkeypatch):
    """Fails any call that gets as far as building a kernel: bad input is caught before."""
    def fail(*args, **kwargs):
        raise AssertionError("a bad call reached the kernel instead of being refused")

    monkeypatch.setattr(reduce_module, "bind_reduction", fail)


@pytest.mark.parametrize("row", BAD_CALLS, ids=[row.id for row in BAD_CALLS])
def test_bad_call_is_refused_with_a_named_argument(row: BadCall, no_kernel):
    with pytest.raises(row.error) as caught:
        row.call()
    message = str(caught.value)
    if isinstance(row.message, str):
        assert re.search(row.message, message), f"{message!r} does not match {row.message!r}"
    else:
        missing = [part for part in row.message if part not in message]
        assert not missing, f"{message!r} lacks {missing}"
    # Right type, not a subclass standing for another kind of error (a ValueError that is
    # also a TypeError would satisfy both rows).
    assert not (isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError))


# ------------------------------------------------------------------------------------------------
# Good calls at the edge of what is allowed, against numpy.
def _numpy_sqdist() -> np.ndarray:
    return ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)


def test_numpy_integers_and_negative_axes_are_accepted():
    expected = np.argsort(_numpy_sqdist(), axis=1)[:, :2]
    d = sqdist()
    for out in (d.argKmin(K=np.int64(2), axis=-2),
                d.argKmin(np.int32(2), dim=np.int64(1)),
                d.argKmin(K=2, axis=1, call=np.bool_(True)),
                ((Vi(X) - Vj(Y)) ** 2).sum(axis=-1).argKmin(K=2, axis=1)):
        np.testing.assert_array_equal(np.asarray(out), expected)


def test_vector_axis_reductions_stay_symbolic():
    v = Vi(X) - Vj(Y)
    for out in (v.sum(axis=-1), v.sum(dim=np.int64(-1)), v.sum(axis=2, keepdim=np.bool_(False))):
        assert isinstance(out, LazyTensor) and out.shape == (M, N)


def test_genred_with_numpy_integer_options_against_numpy():
    expected = (np.exp(-_numpy_sqdist()) @ B)
    f = gauss(axis=np.int64(1), opt_arg=None)
    np.testing.assert_allclose(np.asarray(f(X, Y, B, backend="CPU", device_id=np.int64(0))),
                               expected, rtol=1e-12)


def test_lazy_gaussian_sum_with_keywords_at_their_edges_against_numpy():
    kernel = (-((Vi(X) - Vj(Y)) ** 2).sum(-1)).exp()
    expected = np.exp(-_numpy_sqdist()) @ B
    for out in (kernel @ B,
                (kernel * Vj(B)).sum(axis=-2, keepdim=True, backend="auto", device_id=-1),
                (kernel * Vj(B)).sum(dim=np.int64(1), use_double_acc=np.bool_(False))):
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-12)


def test_weight_given_as_an_array_with_pykeops_shape_against_numpy():
    d = sqdist()
    logits = -_numpy_sqdist()
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    out = (-d).sumsoftmaxweight(B[None], axis=np.int64(1))   # (1, N, E): a j-variable
    np.testing.assert_allclose(np.asarray(out), softmax @ B, rtol=1e-10)
    out_vj = (-d).sumsoftmaxweight(Vj(B), axis=1)
    np.testing.assert_allclose(np.asarray(out_vj), np.asarray(out), rtol=1e-14)
