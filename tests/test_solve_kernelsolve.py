"""KernelSolve: Genred-style conjugate gradient solves, against dense float64 solves, finite
differences and pykeops's own test_invkernel case."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkeops.lazy.solve as solve_module
from jaxkeops import Genred
from jaxkeops.lazy.solve import KernelSolve

GAUSS = "Exp(-SqDist(x,y)) * a"
GAUSS_ALIASES = ["x = Vi(3)", "y = Vj(3)", "a = Vj(2)"]
INVKERNEL = "Exp(-oos2*SqDist(x,y))*b"
INVKERNEL_ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(3)", "oos2 = Pm(1)"]
TIGHT = 1e-12


def dense_operator(x, y, oos2, alpha):
    """alpha I + exp(-oos2 |x_i - y_j|^2) in float64 numpy, batched over leading dims."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    K = np.exp(-np.asarray(oos2, np.float64)[..., None] *
               ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1))
    return K + np.asarray(alpha, np.float64)[..., None, None] * np.eye(K.shape[-1])


def jnp_invkernel(x, b, oos2, alpha):
    """The same solve with jnp.linalg.solve, for JAX's own (independent) gradients."""
    K = jnp.exp(-oos2 * ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return jnp.linalg.solve(K + alpha * jnp.eye(x.shape[0]), b)


@pytest.fixture
def points(rng):
    return jnp.asarray(rng.uniform(size=(40, 3))), jnp.asarray(rng.normal(size=(40, 2)))


def test_genred_style_formula_matches_dense_solve(points):
    x, b = points
    Kinv = KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=1)
    a = Kinv(x, x, b, alpha=0.2, eps=TIGHT)
    expected = np.linalg.solve(dense_operator(x, x, 1.0, 0.2), np.asarray(b))
    np.testing.assert_allclose(a, expected, rtol=1e-9, atol=1e-9)
    # pykeops's check: alpha a + K a = b, with K the matching Genred Sum.
    K = Genred(GAUSS, GAUSS_ALIASES, reduction_op="Sum", axis=1)
    np.testing.assert_allclose(0.2 * a + K(x, x, a), b, atol=1e-10)
    # The unknown may also be named by its "Var(index,dim,cat)" text.
    by_var = KernelSolve(GAUSS, GAUSS_ALIASES, "Var(2,2,1)", axis=1)(x, x, b, alpha=0.2,
                                                                       eps=TIGHT)
    np.testing.assert_allclose(by_var, a, rtol=1e-12)


def test_axis_zero_solves_for_an_i_variable(points):
    x, b = points
    Kinv = KernelSolve(GAUSS, ["x = Vi(3)", "y = Vj(3)", "a = Vi(2)"], "a", axis=0)
    a = Kinv(x, x, b, alpha=0.2, eps=TIGHT)
    expected = np.linalg.solve(dense_operator(x, x, 1.0, 0.2), np.asarray(b))
    np.testing.assert_allclose(a, expected, rtol=1e-9, atol=1e-9)


def test_pykeops_invkernel_case(rng):
    """pykeops's test_torch.py test_invkernel: M = 10, D = E = 3, oos2 = 0.4, alpha = 0.1,
    compared with a dense solve, and the gradient with respect to x for a cotangent e."""
    x = jnp.asarray(rng.uniform(size=(10, 3)))
    a = jnp.asarray(rng.uniform(size=(10, 3)))
    e = jnp.asarray(rng.uniform(size=(10, 3)))
    sigma, alpha = jnp.array([0.4]), jnp.array(0.1)
    Kinv = KernelSolve(INVKERNEL, INVKERNEL_ALIASES, "b", axis=1)
    c = Kinv(x, x, a, sigma, alpha=alpha, eps=TIGHT)
    expected = np.linalg.solve(dense_operator(x, x, 0.4, 0.1), np.asarray(a))
    np.testing.assert_allclose(c, expected, rtol=1e-10, atol=1e-10)
    _, pullback = jax.vjp(lambda x: Kinv(x, x, a, sigma, alpha=alpha, eps=TIGHT), x)
    _, dense_pullback = jax.vjp(lambda x: jnp_invkernel(x, a, sigma[0], alpha), x)
    np.testing.assert_allclose(pullback(e)[0], dense_pullback(e)[0], rtol=1e-8, atol=1e-10)


def test_gradients_match_finite_differences(rng):
    """With respect to the points (passed as x and as y), b, oos2 (a Pm) and alpha."""
    x = jnp.asarray(rng.uniform(size=(30, 3)))
    b = jnp.asarray(rng.normal(size=(30, 3)))
    weights = jnp.asarray(rng.normal(size=(30, 3)))
    Kinv = KernelSolve(INVKERNEL, INVKERNEL_ALIASES, "b", axis=1)

    def loss(x, b, oos2, alpha):
        return jnp.sum(weights * Kinv(x, x, b, oos2, alpha=alpha, eps=TIGHT))

    primals = (x, b, jnp.array([2.0]), jnp.array(0.3))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*primals)
    dense = jax.grad(lambda x, b, s, al: jnp.sum(weights * jnp_invkernel(x, b, s[0], al)),
                     argnums=(0, 1, 2, 3))(*primals)
    step = 1e-5
    for k, name in enumerate(("x", "b", "oos2", "alpha")):
        direction = jnp.asarray(rng.normal(size=np.shape(primals[k])))
        plus, minus = list(primals), list(primals)
        plus[k] = primals[k] + step * direction
        minus[k] = primals[k] - step * direction
        finite = (loss(*plus) - loss(*minus)) / (2 * step)
        np.testing.assert_allclose(jnp.sum(grads[k] * direction), finite, rtol=1e-6,
                                   atol=1e-8, err_msg=name)
        np.testing.assert_allclose(grads[k], dense[k], rtol=1e-7, atol=1e-9, err_msg=name)


def test_batch_dims_jit_and_vmap(rng):
    x = jnp.asarray(rng.uniform(size=(2, 30, 3)))
    b = jnp.asarray(rng.normal(size=(2, 30, 3)))
    oos2 = jnp.array([[20.0], [0.5]])  # a near-diagonal system and a hard one
    alpha = jnp.array([1.0, 1e-3])
    Kinv = KernelSolve(INVKERNEL, INVKERNEL_ALIASES, "b", axis=1)
    batched, info = Kinv(x, x, b, oos2, alpha=alpha, eps=1e-10, return_info=True)
    mapped = jax.jit(jax.vmap(lambda x, b, s, al: Kinv(x, x, b, s, alpha=al, eps=1e-10)))(
        x, b, oos2, alpha)
    for k in range(2):
        expected = np.linalg.solve(dense_operator(x[k], x[k], oos2[k, 0], alpha[k]),
                                   np.asarray(b[k]))
        scale = np.abs(expected).max()
        np.testing.assert_allclose(batched[k], expected, rtol=1e-6, atol=1e-6 * scale)
        np.testing.assert_allclose(mapped[k], expected, rtol=1e-6, atol=1e-6 * scale)
        _, alone = Kinv(x[k], x[k], b[k], oos2[k], alpha=alpha[k], eps=1e-10, return_info=True)
        assert abs(int(info.iterations[k]) - int(alone.iterations)) <= 1
    assert int(info.iterations[0]) * 3 < int(info.iterations[1])


class _RecordingGenred:
    """Stands in for Genred: records the options it is given and runs the real Genred
    without them (so that options today's Genred may not know yet can be checked)."""

    made: list[dict] = []
    called: list[dict] = []

    def __init__(self, formula, aliases, reduction_op, axis, **options):
        type(self).made.append(dict(reduction_op=reduction_op, axis=axis, **options))
        self.real = Genred(formula, aliases, reduction_op=reduction_op, axis=axis)

    def __call__(self, *args, **options):
        type(self).called.append(options)
        return self.real(*args)


def test_accuracy_and_call_options_reach_genred(monkeypatch, points):
    x, b = points
    monkeypatch.setattr(solve_module, "Genred", _RecordingGenred)
    _RecordingGenred.made, _RecordingGenred.called = [], []
    Kinv = KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=1, dtype_acc="float64",
                       use_double_acc=True, sum_scheme="kahan_scheme", enable_chunks=False,
                       use_fast_math=False, rec_multVar_highdim=2, dtype="float64", opt_arg=3)
    assert _RecordingGenred.made == [dict(
        reduction_op="Sum", axis=1, dtype_acc="float64", use_double_acc=True,
        sum_scheme="kahan_scheme", enable_chunks=False, use_fast_math=False,
        rec_multVar_highdim=2, dtype="float64")]
    ranges = (jnp.zeros((1, 2), jnp.int32),) * 6
    Kinv(x, x, b, alpha=0.2, backend="CPU", device_id=0, ranges=ranges, maxiter=3,
         on_nonconvergence="ignore")
    assert _RecordingGenred.called and all(
        set(c) == {"backend", "device_id", "ranges"} and c["backend"] == "CPU" and
        c["device_id"] == 0 and c["ranges"] is ranges for c in _RecordingGenred.called)
    # At pykeops's defaults nothing is forwarded (so that today's Genred accepts the call).
    _RecordingGenred.made, _RecordingGenred.called = [], []
    KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=1)(x, x, b, alpha=0.2, maxiter=3,
                                                   on_nonconvergence="ignore")
    assert _RecordingGenred.made == [dict(reduction_op="Sum", axis=1)]
    assert _RecordingGenred.called and all(c == {} for c in _RecordingGenred.called)


def test_float32_with_accuracy_and_call_options(points):
    x, b = (a.astype(jnp.float32) for a in points)
    expected = np.linalg.solve(dense_operator(x, x, 1.0, 0.2), np.asarray(b, np.float64))
    Kinv = KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=1, use_double_acc=True,
                       sum_scheme="kahan_scheme", enable_chunks=False, use_fast_math=False)
    a = Kinv(x, x, b, alpha=0.2, eps=1e-5, backend="CPU")
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_bad_input_raises_clear_errors(points):
    x, b = points
    with pytest.raises(ValueError, match="'w' is neither one of the aliases"):
        KernelSolve(GAUSS, GAUSS_ALIASES, "w", axis=1)
    with pytest.raises(ValueError, match="unknown 'a' must be an i-variable, not a j-variable"):
        KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=0)
    with pytest.raises(ValueError, match="axis must be 0"):
        KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=2)
    Kinv = KernelSolve(GAUSS, GAUSS_ALIASES, "a", axis=1)
    with pytest.raises(ValueError, match="argument number 2, but only 2 arrays"):
        Kinv(x, x)
    with pytest.raises(ValueError, match=r"shape \(40, 2\) to shape \(45, 2\).*square"):
        Kinv(jnp.ones((45, 3)), x, b)
    with pytest.raises(ValueError, match="b .argument 'a'. must have shape"):
        Kinv(x, x, b[:, 0])
    with pytest.raises(TypeError, match="must be a float array"):
        Kinv(x, x, jnp.ones((40, 2), jnp.int32))
